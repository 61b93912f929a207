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
