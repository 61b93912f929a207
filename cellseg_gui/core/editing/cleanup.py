"""Clean-up operations on masks, each returning a :class:`~cellseg_gui.core.editing.patches.Patch`:
smoothing edges without shrinking them, filling holes and removing specks. Every distinct
value is its own region, so neighbouring instances never merge. Torch-free, Qt-free.
"""

from __future__ import annotations

import numpy as np

from cellseg_gui.core.editing.patches import Patch, Region, _from_pixels, patch_from_block
from cellseg_gui.core.lazy import ndimage  # scipy.ndimage, imported on first use

__all__ = ["fill_holes", "remove_specks", "smooth", "smooth_labels"]


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
