"""The flow field's training target (``core.model.flow``), in torch: it is taken after
augmentation, on the training device, from the augmented potential and cell ids."""

from __future__ import annotations

import numpy as np
import torch


def flow_target(centre: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(B, H, W) centre map and cell ids -> (B, 2, H, W) unit vectors (y, x) up the map,
    differences taken only between pixels of the same cell (each pixel averages the one
    or two it has along each axis); 0 on the background and where the map is flat.
    About 25 ms for a batch of 8 x 256 x 256 on one CPU thread."""
    m = centre.float()
    g = torch.zeros((m.shape[0], 2, *m.shape[1:]), dtype=m.dtype, device=m.device)
    for axis, plane in ((1, 0), (2, 1)):
        n = m.shape[axis]
        a, b = ids.narrow(axis, 1, n - 1), ids.narrow(axis, 0, n - 1)
        same = (a == b) & (a > 0)
        d = (m.narrow(axis, 1, n - 1) - m.narrow(axis, 0, n - 1)) * same
        total = g[:, plane]
        count = torch.zeros_like(m)
        total.narrow(axis, 0, n - 1).add_(d)
        total.narrow(axis, 1, n - 1).add_(d)
        same = same.to(m.dtype)
        count.narrow(axis, 0, n - 1).add_(same)
        count.narrow(axis, 1, n - 1).add_(same)
        total.div_(count.clamp_min_(1.0))
    norm = torch.sqrt(g[:, 0] ** 2 + g[:, 1] ** 2)
    scale = torch.where(norm > 1e-6, 1.0 / norm.clamp_min(1e-6), torch.zeros_like(norm))
    return g * scale[:, None]


def cached_flow_target(instances: np.ndarray) -> np.ndarray:
    """The flows' target (2, H, W) of a validation id map, made once rather than each
    epoch (the potential was remembered before; its gradient, 19 ms a megapixel, now
    is too)."""
    from cellseg_gui.core.model.distance import distance_target, remembered
    from cellseg_gui.core.model.flow import FLOW_EDGE_WEIGHT

    def make() -> np.ndarray:
        return flow_target_np(distance_target(instances, FLOW_EDGE_WEIGHT), instances)

    return remembered(instances, "flow", make)


def flow_target_np(centre: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``flow_target`` of one image: (2, H, W) float32."""
    t = flow_target(
        torch.from_numpy(np.ascontiguousarray(centre, np.float32))[None],
        torch.from_numpy(np.ascontiguousarray(ids).astype(np.int64))[None],
    )
    return t[0].numpy()


def cell_colours(ids: np.ndarray) -> np.ndarray:
    """Cell ids (H, W) -> colours 1..C (int64, 0 on the background) such that no two cells
    within ``reach`` pixels (``COLOUR_REACH``) share one: the flow target only asks
    whether two neighbouring pixels lie in one cell, so the colours carry that for any
    number of cells in a few values (``CELL_COLOURS - 1`` at most). Greedy colouring,
    the cells with the most neighbours first: 2-3 colours an image on usiigaci and on
    the DSB nuclei. Where a cell has so many neighbours that the colours run out (not
    seen), the extra ones fold back, as the ids did before."""
    from cellseg_gui.core.model.flow import CELL_COLOURS, COLOUR_REACH

    reach, most = COLOUR_REACH, CELL_COLOURS - 1
    ids = np.asarray(ids)
    out = np.zeros(ids.shape, np.int64)
    cells = np.unique(ids[ids > 0])
    if not len(cells):
        return out
    dense = np.zeros(ids.shape, np.int64)
    inside = ids > 0
    dense[inside] = np.searchsorted(cells, ids[inside]) + 1
    n = len(cells)
    h, w = ids.shape
    pairs = []
    for dy in range(0, reach + 1):  # half the offsets: each pair is seen once either way
        for dx in range(-reach, reach + 1):
            if (dy == 0 and dx <= 0) or dy * dy + dx * dx > reach * reach:
                continue
            a = dense[: h - dy, max(0, -dx) : w - max(0, dx)]
            b = dense[dy:, max(0, dx) : w - max(0, -dx)]  # a's pixels moved by (dy, dx)
            m = (a != b) & (a > 0) & (b > 0)
            if m.any():
                lo, hi = np.minimum(a[m], b[m]), np.maximum(a[m], b[m])
                pairs.append(np.unique(lo * (n + 1) + hi))
    colour = np.zeros(n + 1, np.int64)
    if pairs:
        keys = np.unique(np.concatenate(pairs))
        lo, hi = keys // (n + 1), keys % (n + 1)
        both = np.concatenate([lo, hi])
        other = np.concatenate([hi, lo])
        order = np.argsort(both, kind="stable")
        both, other = both[order], other[order]
        starts = np.searchsorted(both, np.arange(n + 2))
        degree = np.diff(starts)[1:]
        for c in np.argsort(-degree, kind="stable") + 1:
            taken = set(colour[other[starts[c] : starts[c + 1]]].tolist())
            k = 1
            while k in taken:
                k += 1
            colour[c] = (k - 1) % most + 1
    colour[1:][colour[1:] == 0] = 1
    return colour[dense]
