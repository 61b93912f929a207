"""A learned flow field (Cellpose's idea): at every cell pixel, the unit vector pointing
along the cell towards its centre. Following the vectors from each foreground pixel
brings all the pixels of one cell to one sink, so cells are the groups of pixels that
meet; seeds never depend on how high a learned map stands, which is what failed for the
distance output (``core.model.distance``: soft maps, one plateau over two touching cells).

The target is the gradient of the centre map of ``core.model.distance`` (1 at the pixel
farthest from the edge, falling along the cell), taken between pixels of the same cell
only, so the vectors of two touching cells point away from each other at their contact.
It is computed after augmentation from the augmented centre map and cell ids (both ride
in the class map), so flips, rotations and warps turn the vectors exactly.

Numpy and scipy only (bundle metadata and the window's start-up read this module's
settings without torch); the target, in torch, is ``core.training.flow_target``.
"""

from __future__ import annotations

import numpy as np

from cellseg_gui.core.lazy import ndimage as ndi

# Cellpose's convention: the network regresses 5x the unit vectors, so the flow term
# pulls beside cross-entropy (mean squared error against 5u, halved).
FLOW_SCALE = 5.0
# the most levels of the potential while it rides in the class map for a flow model (the
# gradient needs finer steps than the distance output's 16; fewer when the float32 budget
# of the encoding is short, ``CropSampler``): 256 levels already bent the vectors of a cell
# 600 px long by over 37 degrees at a fifth of its pixels
FLOW_LEVELS = 4096
# the potential's edge-distance weight (``distance_target``'s ``edge_weight``): with 0 the
# paths hug the cells' bends and stall outside them (AP@0.5 0.56 with the true field on
# usiigaci), with 0.5 or 0.8 they reach the centre (0.975, both)
FLOW_EDGE_WEIGHT = 0.5
# Cell ids ride in the class map as colours (``cell_colours``): only whether two
# neighbouring pixels share a cell matters, so cells within ``COLOUR_REACH`` pixels of each
# other get different ones and a few colours serve any number of cells. (Ids modulo 1021
# rode before: two touching cells whose ids differed by a multiple of it shared a contact,
# which images of over a thousand cells, such as nuclei, can hold.)
CELL_COLOURS = 64
# cells closer than this (pixels) get different colours: a warp or a zoom-out may close a
# gap of a pixel or two before the target compares neighbours
COLOUR_REACH = 3
# Following: every second pixel, one step of about one (subsampled) pixel each
FOLLOW_STRIDE = 2
FOLLOW_STEPS = 200
# ... or twice as many as the largest foreground patch is tall plus wide, up to this: a
# path along a cell over about 400 px long did not reach its sink in 200 steps, and the
# cell came out in pieces; paths zig-zag, and a learned field's steps are shorter than a
# pixel (points that settle stop early, so the extra steps cost little)
FOLLOW_MAX_STEPS = 2000
# sinks: peaks of the end-point counts over this window of the subsampled grid (9-25
# scored 0.002-0.03 lower on usiigaci)
PEAK_WINDOW = 5
SETTLE_EVERY = 20
SETTLE_PX = 1.0


def follow_steps(fg: np.ndarray) -> int:
    """Steps to follow on ``fg``: ``FOLLOW_STEPS``, or twice the height plus width of its
    largest connected patch when that is more, up to ``FOLLOW_MAX_STEPS``."""
    boxes = ndi.find_objects(ndi.label(np.asarray(fg, bool))[0])
    extent = max((b[0].stop - b[0].start + b[1].stop - b[1].start for b in boxes if b), default=0)
    return int(min(max(FOLLOW_STEPS, 2 * extent), FOLLOW_MAX_STEPS))


def follow(flow: np.ndarray, fg: np.ndarray, stride: int = FOLLOW_STRIDE, steps: int | None = None):
    """Follow ``flow`` (2, H, W; unit vectors) from every ``stride``-th foreground pixel
    for ``steps`` steps (``follow_steps``: enough for the largest patch),
    one pixel a step on the full-resolution field (a subsampled field loses the thin
    necks of a cell), bilinear (nearest lookups cycle between two pixels). Every
    ``SETTLE_EVERY`` steps the points that moved less than ``SETTLE_PX`` since the last
    check stop: they sit at their sink (half the time on usiigaci: 0.14 s instead of 0.28 s
    an image, AP@0.5 0.631 / 0.595 instead of 0.635 / 0.592 on two models).
    Returns (the points' indices on the subsampled grid (P,), their end positions on it
    (P, 2), rounded, and the grid's shape)."""
    h, w = fg.shape
    if steps is None:
        steps = follow_steps(fg)
    m = fg[::stride, ::stride]
    gh, gw = m.shape
    start = np.flatnonzero(m)
    pos = (np.stack(np.divmod(start, gw), 1) * stride).astype(np.float32)
    if not len(start):
        return start, pos.astype(np.int64), (gh, gw)
    # a NaN or infinite vector (a broken model) stays put rather than index anywhere
    fy = np.nan_to_num(np.asarray(flow[0], np.float32), nan=0.0, posinf=0.0, neginf=0.0).ravel()
    fx = np.nan_to_num(np.asarray(flow[1], np.float32), nan=0.0, posinf=0.0, neginf=0.0).ravel()
    dy, dx = (1 if h > 1 else 0), (1 if w > 1 else 0)
    active = np.arange(len(start))
    py, px = pos[:, 0].copy(), pos[:, 1].copy()
    last_y, last_x = py.copy(), px.copy()
    for step in range(1, int(steps) + 1):
        y0 = np.minimum(py.astype(np.int64), h - 1 - dy)  # positions are >= 0: floor
        x0 = np.minimum(px.astype(np.int64), w - 1 - dx)
        ty = py - y0
        tx = px - x0
        k = y0 * w + x0
        a, b = (1 - ty) * (1 - tx), (1 - ty) * tx
        c, d = ty * (1 - tx), ty * tx
        k01, k10 = k + dx, k + w * dy
        k11 = k10 + dx
        py = np.clip(py + a * fy[k] + b * fy[k01] + c * fy[k10] + d * fy[k11], 0, h - 1)
        px = np.clip(px + a * fx[k] + b * fx[k01] + c * fx[k10] + d * fx[k11], 0, w - 1)
        if step % SETTLE_EVERY == 0 and step < steps:
            moving = np.abs(py - last_y) + np.abs(px - last_x) >= SETTLE_PX
            if not moving.all():
                pos[active[~moving], 0] = py[~moving]
                pos[active[~moving], 1] = px[~moving]
                active, py, px = active[moving], py[moving], px[moving]
                if not len(active):
                    break
            last_y, last_x = py.copy(), px.copy()
    pos[active, 0], pos[active, 1] = py, px
    end = np.clip(np.rint(pos / stride), 0, [gh - 1, gw - 1]).astype(np.int64)
    return start, end, (gh, gw)


def flow_cells(
    flow: np.ndarray,
    fg: np.ndarray,
    sink_size: int,
    followed: tuple | None = None,
) -> np.ndarray:
    """Cell ids (H, W) int32: the foreground pixels grouped by the sink their flow leads
    to. A sink seeds a cell when at least ``sink_size`` pixels (full resolution) end
    there, counted over a 5x5 neighbourhood peak; the pixels that end near it, through the
    landscape of end points, join it (a watershed on their counts). Each cell is one
    connected piece (``largest_pieces``). Pass ``followed``
    (``follow``'s result) to reuse one following for several sink sizes."""
    from skimage.segmentation import expand_labels, watershed

    fg = np.asarray(fg, bool)
    out = np.zeros(fg.shape, np.int32)
    if not fg.any():
        return out
    start, end, (gh, gw) = followed if followed is not None else follow(flow, fg)
    if not len(start):
        return out
    flat = end[:, 0] * gw + end[:, 1]
    counts = np.bincount(flat, minlength=gh * gw).reshape(gh, gw).astype(np.float32)
    smooth = ndi.uniform_filter(counts, 3, mode="constant") * 9.0  # within one grid step
    need = float(sink_size) / (FOLLOW_STRIDE * FOLLOW_STRIDE)
    peaks = (smooth >= ndi.maximum_filter(smooth, PEAK_WINDOW) - 1e-6) & (smooth >= max(need, 1.0))
    markers, n = ndi.label(peaks)
    if not n:
        return out
    basin = watershed(-smooth, markers=markers, mask=ndi.binary_dilation(counts > 0))
    grid = np.zeros(gh * gw, np.int32)
    grid[start] = basin.ravel()[flat]
    small = grid.reshape(gh, gw)
    s = FOLLOW_STRIDE
    big = np.repeat(np.repeat(small, s, 0), s, 1)[: fg.shape[0], : fg.shape[1]]
    big = expand_labels(big, distance=s) * fg  # the pixels between the followed ones
    return largest_pieces(big.astype(np.int32, copy=False))


def largest_pieces(cells: np.ndarray) -> np.ndarray:
    """Each cell reduced to its largest 8-connected piece; the other pieces go to the
    background. Pixels that follow to one sink need not touch: on usiigaci 41 of 340 flow
    cells came in several pieces, so a cell's measurements and its Fiji ROI (one outline)
    described different pixels. Keeping the largest piece also scored higher (AP@0.5
    0.657 against 0.651 on that model; pieces as cells of their own: 0.655)."""
    from skimage.measure import label

    cells = np.asarray(cells)
    if not cells.any():
        return cells
    comps = label(cells, background=0, connectivity=2)  # pieces of one value each
    n = int(comps.max())
    if n == int(np.count_nonzero(np.bincount(cells.ravel())[1:])):  # one piece per cell
        return cells
    flat, ids = comps.ravel(), cells.ravel()
    owner = np.zeros(n + 1, dtype=np.int64)
    owner[flat] = ids
    sizes = np.bincount(flat, minlength=n + 1)
    pieces = np.arange(1, n + 1)
    order = np.lexsort((-sizes[1:], owner[1:]))  # by cell, then largest first
    first = np.ones(n, dtype=bool)
    first[1:] = owner[1:][order][1:] != owner[1:][order][:-1]
    keep = np.zeros(n + 1, dtype=bool)
    keep[pieces[order][first]] = True
    return np.where(keep[comps], cells, 0).astype(cells.dtype, copy=False)
