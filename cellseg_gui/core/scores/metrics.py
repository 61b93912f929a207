"""Jaccard (intersection over union) for class maps; numpy only, no torch.

Conventions, chosen so that numbers stay comparable between the GUI, the CLI and training:

- Inputs are integer class maps of the *same shape*. A shape mismatch is a ``ValueError``;
  we never flatten, broadcast or transpose to make shapes fit, because the classic
  ``view``/``permute`` bug would then produce a plausible but wrong score.
- A class that is absent from both prediction and target ("empty vs empty") scores 1.0:
  the model was right not to predict it. Without this convention an image with no cells
  would score 0 (or NaN) however good the model is.
- Over a data set, intersections and unions are summed over the images first and divided
  once (``JaccardAccumulator``), so large images weigh more and a tiny image with one
  missed cell cannot dominate the mean.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "JaccardAccumulator",
    "confusion_matrix",
    "foreground_jaccard",
    "jaccard_from_confusion",
    "jaccard_per_class",
    "mean_foreground_jaccard",
]

_CHUNK = 1 << 22  # pixels per bincount pass (bounds the int64 temporaries to 32 MB)


def _check_pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction shape {pred.shape} differs from target shape {target.shape}; "
            "a transposed or reshaped target would give a wrong score"
        )
    for name, arr in (("prediction", pred), ("target", target)):
        if arr.dtype.kind not in "iub":
            raise ValueError(f"{name} must hold integer class ids, not {arr.dtype}")
    return pred, target


def confusion_matrix(pred: np.ndarray, target: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``cm[t, p]`` of pixels with target class ``t`` predicted as ``p``.

    Values outside ``0..n_classes-1`` raise: silently dropping them would hide a mask
    that has more classes than the model.
    """
    pred, target = _check_pair(pred, target)
    k = int(n_classes)
    if k < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    p_all = pred.reshape(-1)
    t_all = target.reshape(-1)
    if p_all.size:
        for name, arr in (("prediction", p_all), ("target", t_all)):
            lo, hi = int(arr.min()), int(arr.max())
            if lo < 0 or hi >= k:
                raise ValueError(f"{name} has class ids {lo}..{hi}, outside 0..{k - 1}")
    cm = np.zeros(k * k, dtype=np.int64)
    # In chunks: an 8192^2 image would otherwise need three 512 MB int64 temporaries.
    for i in range(0, p_all.size, _CHUNK):
        t = t_all[i : i + _CHUNK].astype(np.int64)
        t *= k
        t += p_all[i : i + _CHUNK]
        cm += np.bincount(t, minlength=k * k)
    return cm.reshape(k, k)


def _iou(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    inter = np.asarray(intersection, dtype=np.float64)
    uni = np.asarray(union, dtype=np.float64)
    out = np.ones_like(uni)  # empty vs empty = 1.0
    nz = uni > 0
    out[nz] = inter[nz] / uni[nz]
    return out


def _inter_union(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    inter = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - inter
    return inter, union


def jaccard_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU from a confusion matrix; a class absent from both sides scores 1.0."""
    inter, union = _inter_union(cm)
    return _iou(inter, union)


def jaccard_per_class(pred: np.ndarray, target: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class IoU, float64 of length ``n_classes``; empty vs empty = 1.0."""
    return jaccard_from_confusion(confusion_matrix(pred, target, n_classes))


def _mean_fg(per_class: np.ndarray) -> float:
    fg = per_class[1:]
    # With a single class there is no foreground; report the background score instead
    # of NaN so callers never have to special-case it.
    return float(fg.mean()) if fg.size else float(per_class[0])


def mean_foreground_jaccard(pred: np.ndarray, target: np.ndarray, n_classes: int) -> float:
    """Mean IoU over the foreground classes ``1..K-1`` (background excluded: it dominates
    microscopy images and would make every model look good)."""
    return _mean_fg(jaccard_per_class(pred, target, n_classes))


def _fg_counts(pred: np.ndarray, target: np.ndarray) -> tuple[int, int]:
    pred, target = _check_pair(pred, target)
    p = pred > 0
    t = target > 0
    inter = int(np.count_nonzero(p & t))
    union = int(np.count_nonzero(p | t))
    return inter, union


def foreground_jaccard(pred: np.ndarray, target: np.ndarray) -> float:
    """IoU of all non-background classes taken together (``pred > 0`` vs ``target > 0``):
    did the model find the cells, whatever it called their pixels. Empty vs empty = 1.0."""
    inter, union = _fg_counts(pred, target)
    return 1.0 if union == 0 else inter / union


class JaccardAccumulator:
    """Data-set Jaccard: sums intersections and unions over images, divides at the end."""

    def __init__(self, n_classes: int) -> None:
        self.n_classes = int(n_classes)
        self.reset()

    def reset(self) -> None:
        self.cm = np.zeros((self.n_classes, self.n_classes), dtype=np.int64)
        self.fg_inter = 0
        self.fg_union = 0
        self.n_images = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Add one image (or a batch of equally-shaped images); returns its per-class IoU."""
        cm = confusion_matrix(pred, target, self.n_classes)
        self.cm += cm
        inter, union = _fg_counts(pred, target)
        self.fg_inter += inter
        self.fg_union += union
        self.n_images += 1
        return jaccard_from_confusion(cm)

    def per_class(self) -> np.ndarray:
        return jaccard_from_confusion(self.cm)

    def mean_foreground(self) -> float:
        return _mean_fg(self.per_class())

    def foreground(self) -> float:
        return 1.0 if self.fg_union == 0 else self.fg_inter / self.fg_union
