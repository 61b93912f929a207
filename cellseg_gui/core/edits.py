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
from dataclasses import dataclass

import numpy as np

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
    "pick",
    "polygon_fill",
    "polygon_region",
    "remove_specks",
    "smooth",
    "smooth_labels",
]

_INDEX_LIMIT = np.iinfo(np.int32).max


@dataclass(frozen=True, eq=False)
class Patch:
    """The changed pixels of one edit, inside the bounding box ``[y0:y1, x0:x1]``.

    Changed pixels are stored either as sorted flat indices within the box (``index``, for
    sparse edits) or as a bit-packed boolean mask of the box (``packed``, for dense ones),
    whichever is smaller. ``old``/``new`` list the values in row-major order of those pixels;
    ``new`` may be 0-d when every pixel gets the same value (a brush stroke).
    """

    y0: int
    x0: int
    y1: int
    x1: int
    old: np.ndarray
    new: np.ndarray
    index: np.ndarray | None = None
    packed: np.ndarray | None = None

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        return self.y0, self.x0, self.y1, self.x1

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def count(self) -> int:
        """Number of changed pixels."""
        return int(self.old.size)

    @property
    def nbytes(self) -> int:
        """Memory held by the patch's arrays (what an undo step costs)."""
        extra = self.index.nbytes if self.index is not None else 0
        extra += self.packed.nbytes if self.packed is not None else 0
        return int(self.old.nbytes + self.new.nbytes + extra)

    def changed_mask(self) -> np.ndarray:
        """Boolean array of the bounding box, True where the patch changes a pixel."""
        h, w = self.shape
        if self.packed is not None:
            return np.unpackbits(self.packed, count=h * w).view(bool).reshape(h, w)
        out = np.zeros(h * w, dtype=bool)
        out[self.index] = True
        return out.reshape(h, w)

    def pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """Global (rows, cols) of the changed pixels, row-major order."""
        if self.index is not None:
            r, c = np.divmod(self.index, self.x1 - self.x0)
        else:
            r, c = np.nonzero(self.changed_mask())
        return r + self.y0, c + self.x0

    def global_index(self, width: int) -> np.ndarray:
        """Flat indices into the whole mask (int64), row-major order."""
        r, c = self.pixels()
        return r.astype(np.int64) * width + c

    def _write(self, mask: np.ndarray, values: np.ndarray) -> None:
        view = mask[self.y0 : self.y1, self.x0 : self.x1]
        if self.packed is not None:
            view[self.changed_mask()] = values
        else:
            r, c = np.divmod(self.index, self.x1 - self.x0)
            view[r, c] = values

    def apply(self, mask: np.ndarray) -> None:
        """Write the new values into ``mask`` (in place)."""
        self._write(mask, self.new)

    def revert(self, mask: np.ndarray) -> None:
        """Write the old values back into ``mask`` (in place): undo."""
        self._write(mask, self.old)


@dataclass(frozen=True, eq=False)
class Region:
    """A boolean area of the mask: ``mask[y0:y0+h, x0:x0+w]`` where ``inside`` is True."""

    y0: int
    x0: int
    inside: np.ndarray

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        h, w = self.inside.shape
        return self.y0, self.x0, self.y0 + h, self.x0 + w

    @classmethod
    def whole(cls, shape: tuple[int, int]) -> Region:
        return cls(0, 0, np.ones(shape, dtype=bool))


# --------------------------------------------------------------------------- patch builders


def _compact(values: np.ndarray) -> np.ndarray:
    """A 0-d array when all values are equal: a brush stroke stores its colour once."""
    if values.size and values.ndim == 1 and np.all(values == values[0]):
        return values[:1].reshape(()).copy()
    return values


def _from_local(
    y0: int, x0: int, changed: np.ndarray, old: np.ndarray, new: np.ndarray
) -> Patch | None:
    """Patch from a boolean ``changed`` box at (y0, x0) and the old/new values of its pixels.

    Crops the box to the changed pixels, then keeps indices or packed bits, whichever is smaller.
    """
    if old.size == 0:
        return None
    rows = np.flatnonzero(changed.any(axis=1))
    cols = np.flatnonzero(changed.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    changed = changed[r0:r1, c0:c1]
    h, w = changed.shape
    new = _compact(np.ascontiguousarray(new))
    old = np.ascontiguousarray(old)
    box = (int(y0 + r0), int(x0 + c0), int(y0 + r1), int(x0 + c1))
    if h * w / 8 < 4 * old.size or h * w > _INDEX_LIMIT:
        return Patch(*box, old=old, new=new, packed=np.packbits(changed.reshape(-1)))
    index = np.flatnonzero(changed).astype(np.int32)
    return Patch(*box, old=old, new=new, index=index)


def _from_pixels(
    mask: np.ndarray, rows: np.ndarray, cols: np.ndarray, new: np.ndarray | int
) -> Patch | None:
    """Patch from global pixel coordinates (row-major sorted) and their new values.

    Pixels whose value would not change are dropped, so a patch lists only real changes.
    """
    if rows.size == 0:
        return None
    old = mask[rows, cols]
    new_arr = np.asarray(new, dtype=mask.dtype)
    keep = old != new_arr
    if not keep.any():
        return None
    rows, cols, old = rows[keep], cols[keep], old[keep]
    new_arr = new_arr if new_arr.ndim == 0 else new_arr[keep]
    y0, x0 = int(rows.min()), int(cols.min())
    y1, x1 = int(rows.max()) + 1, int(cols.max()) + 1
    h, w = y1 - y0, x1 - x0
    new_arr = new_arr.copy() if new_arr.ndim == 0 else _compact(new_arr)
    if h * w / 8 < 4 * old.size or h * w > _INDEX_LIMIT:
        changed = np.zeros((h, w), dtype=bool)
        changed[rows - y0, cols - x0] = True
        return Patch(y0, x0, y1, x1, old=old, new=new_arr, packed=np.packbits(changed.reshape(-1)))
    index = ((rows - y0) * w + (cols - x0)).astype(np.int32)
    return Patch(y0, x0, y1, x1, old=old, new=new_arr, index=index)


def patch_from_block(
    mask: np.ndarray, y0: int, x0: int, block: np.ndarray, where: np.ndarray | None = None
) -> Patch | None:
    """Patch that turns ``mask[y0:, x0:]`` (block-sized) into ``block`` where ``where`` is True."""
    h, w = block.shape
    current = mask[y0 : y0 + h, x0 : x0 + w]
    changed = current != block
    if where is not None:
        changed &= where
    if not changed.any():
        return None
    return _from_local(y0, x0, changed, current[changed], block[changed].astype(mask.dtype))


def merge(patches: Sequence[Patch | None], width: int) -> Patch | None:
    """One patch equivalent to applying ``patches`` in order (a whole stroke as one undo step).

    Each pixel keeps its value from before the first patch and after the last; pixels that end
    where they started are dropped.
    """
    patches = [p for p in patches if p is not None]
    if not patches:
        return None
    if len(patches) == 1:
        return patches[0]
    idx = np.concatenate([p.global_index(width) for p in patches])
    old = np.concatenate([p.old for p in patches])
    new = np.concatenate([np.broadcast_to(p.new, p.old.shape) for p in patches])
    uniq, first = np.unique(idx, return_index=True)
    _, last_rev = np.unique(idx[::-1], return_index=True)
    last = idx.size - 1 - last_rev
    old, new = old[first], new[last]
    keep = old != new
    if not keep.any():
        return None
    rows, cols = np.divmod(uniq[keep], width)
    y0, x0 = int(rows.min()), int(cols.min())
    h, w = int(rows.max()) + 1 - y0, int(cols.max()) + 1 - x0
    changed = np.zeros((h, w), dtype=bool)
    changed[rows - y0, cols - x0] = True
    return _from_local(y0, x0, changed, old[keep], new[keep])


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


# --------------------------------------------------------------------------- clean-up


def _halo(sigma: float) -> int:
    return int(np.ceil(4.0 * sigma)) + 1


def smooth_labels(block: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth region edges without shrinking them: blur each label's indicator, take argmax.

    Every distinct value (class or instance id) competes for each pixel with its blurred
    indicator; background's score is what the others leave (the indicators sum to one). A
    jagged edge between two regions moves to where both blurred indicators are 0.5, which for
    a straight edge is the edge itself, so areas are kept (convex cells lose only about
    sigma^2 / (2 R) in radius) while spikes and notches narrower than about sigma vanish.
    Each label is blurred only within its own padded bounding box, so instance masks with
    thousands of cells cost about as much as a class map.
    """
    sigma = float(sigma)
    if sigma <= 0:
        return block.copy()
    lab = block.astype(np.int64, copy=False)
    if lab.min() < 0:
        raise ValueError("labels must be non-negative")
    objs = ndimage.find_objects(lab) if lab.max() > 0 else []
    h, w = block.shape
    best = np.zeros((h, w), dtype=np.float32)
    total = np.zeros((h, w), dtype=np.float32)
    out = np.zeros((h, w), dtype=block.dtype)
    pad = _halo(sigma)
    for i, sl in enumerate(objs):
        if sl is None:
            continue
        label = i + 1
        win = (
            slice(max(sl[0].start - pad, 0), min(sl[0].stop + pad, h)),
            slice(max(sl[1].start - pad, 0), min(sl[1].stop + pad, w)),
        )
        score = ndimage.gaussian_filter(
            (lab[win] == label).astype(np.float32), sigma, mode="nearest", truncate=4.0
        )
        total[win] += score
        b = best[win]
        better = score > b
        b[better] = score[better]
        out[win][better] = label
    background = 1.0 - total
    out[background >= best] = 0
    return out


def _tiled_labels(mask: np.ndarray, sigma: float, tile: int = 1024) -> np.ndarray:
    """:func:`smooth_labels` over the whole mask in tiles with a halo: bounded memory."""
    h, w = mask.shape
    if h * w <= tile * tile * 2:
        return smooth_labels(mask, sigma)
    pad = _halo(sigma) * 2
    out = np.empty_like(mask)
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            Y0, X0 = max(y - pad, 0), max(x - pad, 0)
            Y1, X1 = min(y + tile + pad, h), min(x + tile + pad, w)
            res = smooth_labels(mask[Y0:Y1, X0:X1], sigma)
            yy, xx = min(y + tile, h), min(x + tile, w)
            out[y:yy, x:xx] = res[y - Y0 : yy - Y0, x - X0 : xx - X0]
    return out


def smooth(mask: np.ndarray, strength: float = 2.0, region: Region | None = None) -> Patch | None:
    """Smooth jagged edges (whole mask, or only inside ``region``) without shrinking cells.

    ``strength`` is the Gaussian sigma in pixels: structures thinner than about
    1.4 * strength (one-pixel spurs, a thin boundary line) are absorbed by their neighbours.
    """
    if region is None:
        return patch_from_block(mask, 0, 0, _tiled_labels(mask, strength))
    y0, x0, y1, x1 = region.bbox
    pad = _halo(strength) * 2
    Y0, X0 = max(y0 - pad, 0), max(x0 - pad, 0)
    Y1, X1 = min(y1 + pad, mask.shape[0]), min(x1 + pad, mask.shape[1])
    res = smooth_labels(mask[Y0:Y1, X0:X1], strength)
    return patch_from_block(mask, y0, x0, res[y0 - Y0 : y1 - Y0, x0 - X0 : x1 - X0], region.inside)


def _window(region: Region | None, shape: tuple[int, int]) -> tuple[slice, slice]:
    if region is None:
        return slice(0, shape[0]), slice(0, shape[1])
    y0, x0, y1, x1 = region.bbox
    return slice(y0, y1), slice(x0, x1)


def fill_holes(
    mask: np.ndarray, max_size: int | None = None, region: Region | None = None
) -> Patch | None:
    """Fill background holes enclosed by foreground; each hole pixel takes the value of the
    nearest foreground pixel (so a hole inside a cell joins that cell, and a gap between two
    touching instances is split between them). Holes larger than ``max_size`` stay.
    With ``region``, only holes lying entirely inside the region's box are considered."""
    win = _window(region, mask.shape)
    block = mask[win]
    fg = block != 0
    holes = ndimage.binary_fill_holes(fg) & ~fg
    if region is not None:
        holes &= region.inside
    if not holes.any():
        return None
    lab, n = ndimage.label(holes)
    out = block.copy()
    h, w = block.shape
    sizes = np.bincount(lab.ravel())
    for i, sl in enumerate(ndimage.find_objects(lab)):
        if sl is None or (max_size is not None and sizes[i + 1] > max_size):
            continue
        y0, y1 = max(sl[0].start - 1, 0), min(sl[0].stop + 1, h)
        x0, x1 = max(sl[1].start - 1, 0), min(sl[1].stop + 1, w)
        sub = block[y0:y1, x0:x1]
        hole = lab[y0:y1, x0:x1] == i + 1
        _, (ir, ic) = ndimage.distance_transform_edt(sub == 0, return_indices=True)
        out[y0:y1, x0:x1][hole] = sub[ir[hole], ic[hole]]
    return patch_from_block(mask, win[0].start, win[1].start, out)


def remove_specks(mask: np.ndarray, min_size: int, region: Region | None = None) -> Patch | None:
    """Set connected pieces of any non-zero value smaller than ``min_size`` pixels to 0.

    Pieces are 8-connected per value, so a detached fragment of an instance goes even when the
    rest of that instance is large; pieces touching the region's edge are judged in full only
    when ``region`` is None.
    """
    if min_size <= 1:
        return None
    win = _window(region, mask.shape)
    block = mask[win]
    lab = block.astype(np.int64, copy=False)
    if lab.max() <= 0:
        return None
    remove = np.zeros(block.shape, dtype=bool)
    eight = np.ones((3, 3), dtype=bool)
    for i, sl in enumerate(ndimage.find_objects(lab)):
        if sl is None:
            continue
        pieces, n = ndimage.label(lab[sl] == i + 1, structure=eight)
        sizes = np.bincount(pieces.ravel(), minlength=n + 1)
        small = sizes < min_size
        small[0] = False
        if small.any():
            remove[sl] |= small[pieces]
    if region is not None:
        remove &= region.inside
    if not remove.any():
        return None
    rows, cols = np.nonzero(remove)
    return _from_pixels(mask, rows + win[0].start, cols + win[1].start, 0)
