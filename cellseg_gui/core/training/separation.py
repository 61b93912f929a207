"""The U-Net paper's separation-border weights (Ronneberger et al. 2015, eq. 2): pixels
between two touching cells weigh up to ``1 + w0`` in the loss, so the network learns the
thin lines that keep the cells apart, which an unweighted loss treats as a rounding error.

``w(x) = 1 + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))``, with d1 and d2 the distances to
the nearest and the second-nearest cell (a pixel's own cell is at distance 0). Far from
any contact d1 + d2 is large and the weight is 1. Numpy and scipy only.
"""

from __future__ import annotations

import math

import numpy as np

from cellseg_gui.core.lazy import ndimage as ndi

# weights travel with the class map through augmentation as integer levels
WEIGHT_LEVELS = 15


def separation_weights(instances: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """float32 (H, W) weights >= 1 for an instance id map (0 = background)."""
    inst = np.asarray(instances)
    h, w = inst.shape
    reach = int(math.ceil(3 * sigma))  # beyond this d1 + d2 makes the weight negligible
    d1 = np.full((h, w), np.inf, np.float32)
    d2 = np.full((h, w), np.inf, np.float32)
    boxes = ndi.find_objects(inst)
    for k, box in enumerate(boxes, start=1):
        if box is None:
            continue
        ys = slice(max(0, box[0].start - reach), min(h, box[0].stop + reach))
        xs = slice(max(0, box[1].start - reach), min(w, box[1].stop + reach))
        d = ndi.distance_transform_edt(inst[ys, xs] != k).astype(np.float32)
        a, b = d1[ys, xs], d2[ys, xs]
        b[...] = np.minimum(b, np.maximum(a, d))
        a[...] = np.minimum(a, d)
    total = d1 + d2
    out = np.ones((h, w), np.float32)
    near = np.isfinite(total)
    out[near] += w0 * np.exp(-(total[near] ** 2) / (2 * sigma * sigma))
    return out


def weight_levels(weights: np.ndarray, w0: float) -> np.ndarray:
    """Weights as uint8 levels 0..WEIGHT_LEVELS (0 = weight 1, top = weight 1 + w0)."""
    if w0 <= 0:
        return np.zeros(weights.shape, np.uint8)
    lv = np.rint((np.asarray(weights) - 1.0) / w0 * WEIGHT_LEVELS)
    return np.clip(lv, 0, WEIGHT_LEVELS).astype(np.uint8)
