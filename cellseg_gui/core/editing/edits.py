"""Mask edits as reversible diffs (torch-free, Qt-free).

Every editing operation computes a :class:`Patch` (the pixels it changes, their old values and
the new ones) instead of keeping a copy of the mask, so undo memory grows with what the user
changed, not with the image size (DESIGN.md, "Edits are diffs"). Operations do *not* modify the
mask they are given; the caller applies the patch (``patch.apply(mask)``), which lets an undo
command own the only copy of the history. The one exception is :class:`Stroke`, which applies
each segment as the mouse moves because the next segment must see the pixels already painted.

Coordinates follow the canvas: floats ``x`` (column) and ``y`` (row), pixel ``(row i, col j)``
covering ``[j, j + 1) x [i, i + 1)``. Brush positions snap to the pixel under the cursor, so a
size-1 brush paints exactly the pixels the cursor passed over.

Masks may be class maps (uint8) or instance label images (int32); nothing here cares which,
except :func:`smooth` and :func:`fill_holes`, which treat every distinct value as its own
region so neighbouring instances never merge.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# The diffs and the clean-up operations live in their own modules; ``edits`` stays the one
# name the window and the tests edit through.
from cellseg_gui.core.editing.cleanup import fill_holes, remove_specks, smooth, smooth_labels
from cellseg_gui.core.editing.patches import (
    Patch,
    Region,
    _from_pixels,
    merge,
    patch_from_block,
)
from cellseg_gui.core.lazy import ndimage  # scipy.ndimage, imported on first use

__all__ = [
    "Patch",
    "Region",
    "Stroke",
    "accept_prediction",
    "brush",
    "brush_region",
    "capsule_pixels",
    "clear",
    "fill_holes",
    "flood_fill",
    "merge",
    "new_mask",
    "patch_from_block",
    "pick",
    "polygon_fill",
    "polygon_region",
    "remove_specks",
    "smooth",
    "smooth_labels",
]


# --------------------------------------------------------------------------- brush


def _snap(v: float) -> float:
    """Pixel-centre coordinate (integer index) of the pixel containing canvas coordinate v."""
    return float(np.floor(v))


def capsule_pixels(
    p0: tuple[float, float], p1: tuple[float, float], radius: float, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose centres lie within ``radius`` of the segment p0-p1: a disc swept along it.

    Points are (x, y) in pixel-index coordinates (pixel centres at integers). Computed row by
    row from the capsule's exact horizontal extent, so the cost is proportional to the painted
    area however long a fast drag makes the segment (no gaps, no per-pixel distance grid).
    Returns (rows, cols) in row-major order.
    """
    h, w = shape
    (ax, ay), (bx, by) = p0, p1
    r = float(radius)
    ylo = max(int(np.ceil(min(ay, by) - r - 1e-9)), 0)
    yhi = min(int(np.floor(max(ay, by) + r + 1e-9)), h - 1)
    empty = np.zeros(0, dtype=np.intp)
    if yhi < ylo:
        return empty, empty
    y = np.arange(ylo, yhi + 1, dtype=np.float64)
    lo = np.full(y.shape, np.inf)
    hi = np.full(y.shape, -np.inf)
    for cx, cy in ((ax, ay), (bx, by)):
        q = r * r - (y - cy) ** 2
        ok = q >= -1e-9
        s = np.sqrt(np.clip(q, 0, None))
        lo = np.where(ok, np.minimum(lo, cx - s), lo)
        hi = np.where(ok, np.maximum(hi, cx + s), hi)
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    if length2 > 0:
        # Band between the end discs: 0 <= (p-a).d <= |d|^2 and |(p-a) x d| <= r |d|.
        band_lo = np.full(y.shape, -np.inf)
        band_hi = np.full(y.shape, np.inf)
        rl = r * np.sqrt(length2)
        for c, u, v in (
            (dx, ax * dx - (y - ay) * dy, ax * dx - (y - ay) * dy + length2),
            (dy, ax * dy + (y - ay) * dx - rl, ax * dy + (y - ay) * dx + rl),
        ):
            if c > 0:
                band_lo, band_hi = np.maximum(band_lo, u / c), np.minimum(band_hi, v / c)
            elif c < 0:
                band_lo, band_hi = np.maximum(band_lo, v / c), np.minimum(band_hi, u / c)
            else:
                inside = (u <= 1e-9) & (v >= -1e-9)
                band_lo = np.where(inside, band_lo, np.inf)
        ok = band_lo <= band_hi
        lo = np.where(ok, np.minimum(lo, band_lo), lo)
        hi = np.where(ok, np.maximum(hi, band_hi), hi)
    valid = np.isfinite(lo) & np.isfinite(hi)
    c0 = np.where(valid, np.ceil(np.where(valid, lo, 0) - 1e-9), 1).astype(np.int64)
    c1 = np.where(valid, np.floor(np.where(valid, hi, 0) + 1e-9), 0).astype(np.int64)
    c0 = np.maximum(c0, 0)
    c1 = np.minimum(c1, w - 1)
    counts = np.maximum(c1 - c0 + 1, 0)
    total = int(counts.sum())
    if total == 0:
        return empty, empty
    rows = np.repeat(y.astype(np.intp), counts)
    starts = np.cumsum(counts) - counts
    cols = np.arange(total, dtype=np.intp) - np.repeat(starts - c0, counts)
    return rows, cols


def brush(
    mask: np.ndarray,
    p0: tuple[float, float],
    p1: tuple[float, float] | None,
    size: float,
    value: int,
    *,
    only_background: bool = False,
) -> Patch | None:
    """Paint ``value`` with a round brush of diameter ``size`` from p0 to p1 (canvas coords).

    ``value`` 0 is the eraser. ``only_background`` leaves non-zero pixels alone, so painting
    next to a neighbouring cell cannot eat into it.
    """
    p1 = p0 if p1 is None else p1
    a = (_snap(p0[0]), _snap(p0[1]))
    b = (_snap(p1[0]), _snap(p1[1]))
    rows, cols = capsule_pixels(a, b, max(size, 1.0) / 2.0, mask.shape[:2])
    if only_background and rows.size:
        bg = mask[rows, cols] == 0
        rows, cols = rows[bg], cols[bg]
    return _from_pixels(mask, rows, cols, value)


def brush_region(
    points: Sequence[tuple[float, float]], size: float, shape: tuple[int, int]
) -> Region | None:
    """The area a brush of ``size`` sweeps along ``points``: where smoothing or accept-
    prediction by brush should act."""
    if not points:
        return None
    pts = [(_snap(x), _snap(y)) for x, y in points]
    if len(pts) == 1:
        pts = pts * 2
    rr, cc = [], []
    for a, b in zip(pts[:-1], pts[1:], strict=True):
        r, c = capsule_pixels(a, b, max(size, 1.0) / 2.0, shape)
        rr.append(r)
        cc.append(c)
    rows, cols = np.concatenate(rr), np.concatenate(cc)
    if rows.size == 0:
        return None
    return _region_from_pixels(rows, cols)


def _region_from_pixels(rows: np.ndarray, cols: np.ndarray) -> Region:
    """The bounding-box Region of a set of (row, col) pixels."""
    y0, x0 = int(rows.min()), int(cols.min())
    inside = np.zeros((int(rows.max()) + 1 - y0, int(cols.max()) + 1 - x0), dtype=bool)
    inside[rows - y0, cols - x0] = True
    return Region(y0, x0, inside)


class Stroke:
    """One brush or eraser drag: paints as the mouse moves, one merged patch at the end.

    ``move_to`` applies the new segment to ``mask`` at once (the canvas shows it) and returns
    that segment's patch, whose bounding box is the rectangle to recolour. ``finish`` returns
    the whole stroke as a single patch (already applied) for the undo stack.
    """

    def __init__(
        self, mask: np.ndarray, size: float, value: int, *, only_background: bool = False
    ) -> None:
        self.mask = mask
        self.size = float(size)
        self.value = int(value)
        self.only_background = only_background
        self._last: tuple[float, float] | None = None
        self._parts: list[Patch] = []

    def move_to(self, x: float, y: float) -> Patch | None:
        p = brush(
            self.mask,
            (x, y),
            self._last,
            self.size,
            self.value,
            only_background=self.only_background,
        )
        self._last = (x, y)
        if p is not None:
            p.apply(self.mask)
            self._parts.append(p)
        return p

    def finish(self) -> Patch | None:
        patch = merge(self._parts, self.mask.shape[1])
        self._parts = []
        return patch


# --------------------------------------------------------------------------- region tools


def pick(mask: np.ndarray, x: float, y: float) -> int | None:
    """The value under the cursor, or None outside the mask."""
    r, c = int(np.floor(y)), int(np.floor(x))
    if 0 <= r < mask.shape[0] and 0 <= c < mask.shape[1]:
        return int(mask[r, c])
    return None


def flood_fill(
    mask: np.ndarray, x: float, y: float, value: int, *, connectivity: int = 1
) -> Patch | None:
    """Give the connected region of equal value under the cursor the value ``value``."""
    r, c = int(np.floor(y)), int(np.floor(x))
    if not (0 <= r < mask.shape[0] and 0 <= c < mask.shape[1]):
        return None
    if mask[r, c] == value:
        return None
    region = component_at(mask, x, y, connectivity=connectivity)
    return fill_region(mask, region, value)


def component_at(mask: np.ndarray, x: float, y: float, *, connectivity: int = 1) -> Region | None:
    """The connected equal-value region under the cursor (what :func:`flood_fill` would fill)."""
    r, c = int(np.floor(y)), int(np.floor(x))
    if not (0 <= r < mask.shape[0] and 0 <= c < mask.shape[1]):
        return None
    lab, _ = ndimage.label(
        mask == mask[r, c], structure=ndimage.generate_binary_structure(2, connectivity)
    )
    comp = lab == lab[r, c]
    del lab
    rows = np.flatnonzero(comp.any(axis=1))
    cols = np.flatnonzero(comp.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return Region(int(y0), int(x0), comp[y0:y1, x0:x1].copy())


def touching_value(mask: np.ndarray, region: Region) -> int:
    """The non-zero value that borders ``region`` most, or 0 if none: the cell enclosing a hole."""
    y0, x0, y1, x1 = region.bbox
    Y0, X0 = max(y0 - 1, 0), max(x0 - 1, 0)
    Y1, X1 = min(y1 + 1, mask.shape[0]), min(x1 + 1, mask.shape[1])
    inside = np.zeros((Y1 - Y0, X1 - X0), dtype=bool)
    inside[y0 - Y0 : y1 - Y0, x0 - X0 : x1 - X0] = region.inside
    ring = ndimage.binary_dilation(inside) & ~inside
    vals = mask[Y0:Y1, X0:X1][ring]
    vals = vals[vals != 0]
    if vals.size == 0:
        return 0
    uniq, counts = np.unique(vals, return_counts=True)
    return int(uniq[np.argmax(counts)])


def polygon_region(
    xs: Sequence[float], ys: Sequence[float], shape: tuple[int, int]
) -> Region | None:
    """Pixels whose centres lie inside the polygon (canvas coordinates), for lasso tools."""
    from skimage.draw import polygon

    if len(xs) < 3:
        return None
    rows, cols = polygon(np.asarray(ys) - 0.5, np.asarray(xs) - 0.5, shape=shape)
    if rows.size == 0:
        return None
    return _region_from_pixels(rows, cols)


def polygon_fill(
    mask: np.ndarray,
    xs: Sequence[float],
    ys: Sequence[float],
    value: int,
    *,
    only_background: bool = False,
) -> Patch | None:
    """Fill the polygon (lasso) with ``value``."""
    region = polygon_region(xs, ys, mask.shape[:2])
    return fill_region(mask, region, value, only_background=only_background)


def fill_region(
    mask: np.ndarray, region: Region | None, value: int, *, only_background: bool = False
) -> Patch | None:
    """Set every pixel of ``region`` to ``value`` (optionally background pixels only)."""
    if region is None:
        return None
    y0, x0, y1, x1 = region.bbox
    current = mask[y0:y1, x0:x1]
    where = region.inside & (current == 0) if only_background else region.inside
    block = np.full(current.shape, value, dtype=mask.dtype)
    return patch_from_block(mask, y0, x0, block, where)


def clear(mask: np.ndarray, region: Region | None = None) -> Patch | None:
    """Set the mask (or a region of it) to background."""
    if region is None:
        return patch_from_block(mask, 0, 0, np.zeros_like(mask))
    return fill_region(mask, region, 0)


def new_mask(shape: tuple[int, int], dtype: np.dtype | type = np.uint8) -> np.ndarray:
    """An empty (all background) mask for an image that has none."""
    return np.zeros(shape[:2], dtype=dtype)


def accept_prediction(
    mask: np.ndarray, prediction: np.ndarray, region: Region | None = None
) -> Patch | None:
    """Copy ``prediction`` (same shape, already in the mask's value space) into the mask,
    everywhere or only inside ``region``."""
    if prediction.shape != mask.shape:
        raise ValueError(f"prediction shape {prediction.shape} != mask shape {mask.shape}")
    if region is None:
        return patch_from_block(mask, 0, 0, prediction.astype(mask.dtype, copy=False))
    y0, x0, y1, x1 = region.bbox
    return patch_from_block(mask, y0, x0, prediction[y0:y1, x0:x1], region.inside)
