"""Instance scores: how many cells came out whole and separate, the way the field counts.

The figure is the average precision of the 2018 Data Science Bowl and Cellpose,
``AP@t = TP / (TP + FP + FN)``: predicted and true cells are matched one to one
(``scipy.optimize.linear_sum_assignment`` on the IoU matrix) and a pair counts as a true
positive when its IoU is at least ``t``. Beside it, the counts a biologist reads: true
cells, predicted cells, matched, merged (one prediction covering several true cells) and
split (one true cell covered by several predictions).

Conventions, the same as the Jaccard metrics: an image with no cells on either side
scores 1.0; no cells on one side only scores 0.0. Masks that are not instances (binary,
class ids) are scored on their connected components, and the score says so (``source``).
Numpy and scipy only; no torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "AP_THRESHOLDS",
    "InstanceScore",
    "InstanceSummary",
    "score_instances",
    "summarize",
]

AP_THRESHOLDS: tuple[float, ...] = (0.5, 0.75, 0.9)
# "covers": more than this share of a cell's pixels lie inside the other object.
_COVER = 0.5


@dataclass(frozen=True)
class InstanceScore:
    """One image's instance counts. ``tp[i]`` is the number of true positives at
    ``thresholds[i]``."""

    n_true: int
    n_pred: int
    thresholds: tuple[float, ...]
    tp: tuple[int, ...]
    merged: int
    split: int
    mean_matched_iou: float
    source: str = "instances"

    def ap(self, threshold: float = 0.5) -> float:
        """TP / (TP + FP + FN) at ``threshold``; 1.0 when both sides are empty."""
        tp = self.tp[self._index(threshold)]
        denom = self.n_true + self.n_pred - tp  # tp + fp + fn
        return 1.0 if denom == 0 else tp / denom

    @property
    def matched(self) -> int:
        """Cells matched at IoU 0.5 (the threshold biologists quote)."""
        return self.tp[self._index(0.5)] if 0.5 in self.thresholds else 0

    def _index(self, threshold: float) -> int:
        for i, t in enumerate(self.thresholds):
            if abs(t - threshold) < 1e-9:
                return i
        raise KeyError(f"no score at IoU {threshold} (have {self.thresholds})")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["thresholds"] = list(self.thresholds)
        d["tp"] = list(self.tp)
        d["ap"] = {f"{t:g}": self.ap(t) for t in self.thresholds}
        return d


def _compact(ids: np.ndarray) -> np.ndarray:
    """Ids renumbered 0..N (0 stays 0) when they are sparse or huge (an id of 4e9 would
    make bincount allocate 30 GB); the counts do not depend on the numbering."""
    if ids.size == 0 or int(ids.max()) <= 4 * ids.size:
        return ids
    values, inverse = np.unique(ids, return_inverse=True)
    if values[0] != 0:  # no background: keep 0 free
        inverse = inverse + 1
    return inverse.reshape(ids.shape).astype(np.int64)


def _overlaps(true: np.ndarray, pred: np.ndarray):
    """Sizes of every true and predicted id, and the overlapping pairs with their
    intersections (sparse: only pairs that touch are listed)."""
    t = true.ravel()
    p = pred.ravel()
    if t.dtype.kind == "i" and t.size and int(t.min()) < 0:
        raise ValueError("instance ids must be >= 0")
    if p.dtype.kind == "i" and p.size and int(p.min()) < 0:
        raise ValueError("instance ids must be >= 0")
    t = _compact(t.astype(np.int64, copy=False))
    p = _compact(p.astype(np.int64, copy=False))
    t_sizes = np.bincount(t) if t.size else np.zeros(1, np.int64)
    p_sizes = np.bincount(p) if p.size else np.zeros(1, np.int64)
    both = (t > 0) & (p > 0)
    base = int(p_sizes.size)
    codes, inter = np.unique(t[both] * base + p[both], return_counts=True)
    return t_sizes, p_sizes, codes // base, codes % base, inter


def score_instances(
    true: np.ndarray,
    pred: np.ndarray,
    thresholds: Iterable[float] = AP_THRESHOLDS,
    *,
    source: str = "instances",
) -> InstanceScore:
    """Match ``pred`` cells to ``true`` cells one to one and count, at each IoU
    threshold. Both are integer id maps of the same shape, 0 = background; ids need not
    be consecutive."""
    from scipy.optimize import linear_sum_assignment

    true = np.asarray(true)
    pred = np.asarray(pred)
    if true.shape != pred.shape:
        raise ValueError(f"shapes differ: ground truth {true.shape}, prediction {pred.shape}")
    ths = tuple(float(t) for t in thresholds)
    t_sizes, p_sizes, ti, pi, inter = _overlaps(true, pred)
    n_true = int(np.count_nonzero(t_sizes[1:]))
    n_pred = int(np.count_nonzero(p_sizes[1:]))
    iou = inter / (t_sizes[ti] + p_sizes[pi] - inter) if inter.size else np.zeros(0)
    tps: list[int] = []
    matched_iou = 0.0
    if iou.size:
        tu, tidx = np.unique(ti, return_inverse=True)
        pu, pidx = np.unique(pi, return_inverse=True)
        mat = np.zeros((tu.size, pu.size))
        mat[tidx, pidx] = iou
        n_min = min(tu.size, pu.size)
        for th in ths:
            # Most pairs at or above the threshold first, then the highest IoU among
            # equally many (the IoU term sums to less than 1): Cellpose's criterion.
            ok = mat >= th
            rows, cols = linear_sum_assignment(ok + mat / (2 * n_min + 1), maximize=True)
            good = ok[rows, cols]
            tps.append(int(np.count_nonzero(good)))
            if abs(th - 0.5) < 1e-9 and good.any():
                matched_iou = float(mat[rows, cols][good].mean())
        # merged / split: a prediction covering (more than half of) several true cells,
        # a true cell covered by several predictions
        covers_true = inter / t_sizes[ti] > _COVER
        covers_pred = inter / p_sizes[pi] > _COVER
        merged = int(np.count_nonzero(np.bincount(pi[covers_true]) >= 2))
        split = int(np.count_nonzero(np.bincount(ti[covers_pred]) >= 2))
    else:
        tps = [0] * len(ths)
        merged = split = 0
    if n_true == 0 and n_pred == 0:
        matched_iou = 1.0
    return InstanceScore(
        n_true=n_true,
        n_pred=n_pred,
        thresholds=ths,
        tp=tuple(tps),
        merged=merged,
        split=split,
        mean_matched_iou=matched_iou,
        source=source,
    )


@dataclass(frozen=True)
class InstanceSummary:
    """A data set's instance figures. ``mean_ap`` is the mean over images (each image
    weighs the same, as Cellpose reports it); ``pooled_ap`` sums TP, FP and FN over
    all images first (crowded images weigh more)."""

    n_images: int
    thresholds: tuple[float, ...]
    mean_ap: tuple[float, ...]
    pooled_ap: tuple[float, ...]
    n_true: int
    n_pred: int
    matched: int
    merged: int
    split: int
    sources: tuple[str, ...]

    def ap(self, threshold: float = 0.5, *, pooled: bool = False) -> float:
        i = [abs(t - threshold) < 1e-9 for t in self.thresholds].index(True)
        return (self.pooled_ap if pooled else self.mean_ap)[i]

    def to_dict(self) -> dict:
        return {
            "n_images": self.n_images,
            "ap_mean_over_images": {
                f"{t:g}": v for t, v in zip(self.thresholds, self.mean_ap, strict=True)
            },
            "ap_pooled_over_cells": {
                f"{t:g}": v for t, v in zip(self.thresholds, self.pooled_ap, strict=True)
            },
            "true_cells": self.n_true,
            "predicted_cells": self.n_pred,
            "matched_at_0.5": self.matched,
            "merged": self.merged,
            "split": self.split,
            "scored_on": list(self.sources),
        }


def summarize(scores: list[InstanceScore]) -> InstanceSummary:
    """Mean-over-images and pooled AP at each threshold, and the summed counts."""
    if not scores:
        raise ValueError("no images to summarize")
    ths = scores[0].thresholds
    mean_ap = tuple(float(np.mean([s.ap(t) for s in scores])) for t in ths)
    n_true = sum(s.n_true for s in scores)
    n_pred = sum(s.n_pred for s in scores)
    pooled = []
    for i, _ in enumerate(ths):
        tp = sum(s.tp[i] for s in scores)
        denom = n_true + n_pred - tp
        pooled.append(1.0 if denom == 0 else tp / denom)
    return InstanceSummary(
        n_images=len(scores),
        thresholds=ths,
        mean_ap=mean_ap,
        pooled_ap=tuple(pooled),
        n_true=n_true,
        n_pred=n_pred,
        matched=sum(s.matched for s in scores),
        merged=sum(s.merged for s in scores),
        split=sum(s.split for s in scores),
        sources=tuple(sorted({s.source for s in scores})),
    )
