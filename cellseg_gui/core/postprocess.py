"""From a class prediction to cells: the settings, the one function every path calls, and
the search that picks the settings on a run's validation images.

A 3-class model (background / cell / boundary) gives cells by a marker-controlled
watershed: markers are the pixels whose cell probability reaches ``marker_threshold``
(argmax when it is None), grown through the predicted foreground. A higher threshold
keeps smaller markers, so touching cells whose cores the boundary class only thinned
still get one marker each. Objects under ``min_size`` pixels are dropped as noise.
A 2-class or class-id model gives the connected components of its foreground.

The settings live in a bundle's ``postprocess`` entry and travel with it into the
TorchScript and ONNX metadata and the bioimage.io package, so the CLI, the window and the
exports give the same cells for the same image. Numpy and scipy only; no torch.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from cellseg_gui.core.instances import score_instances
from cellseg_gui.core.lazy import ndimage as ndi
from cellseg_gui.core.masks import classes_to_instances, relabel

__all__ = [
    "DEFAULT_POSTPROCESS",
    "PostProcess",
    "postprocess_from_meta",
    "prediction_to_instances",
    "tune_postprocess",
]

MARKER_THRESHOLDS: tuple[float | None, ...] = (None, 0.6, 0.7, 0.8, 0.9)
MIN_SIZES: tuple[int, ...] = (0, 15, 40, 100, 200)


@dataclass(frozen=True)
class PostProcess:
    # None: markers are the pixels whose most likely class is 'cell'. 0.9 as the default:
    # on usiigaci it lifted untuned AP@0.5 from 0.19-0.30 to 0.42-0.43 (tuning then adds the
    # minimum size); the size stays small so that small nuclei are kept
    marker_threshold: float | None = 0.9
    min_size: int = 15
    # how the values were chosen, for the user: "default", "tuned on 5 validation images"
    chosen: str = "default"
    val_ap50: float | None = None  # mean AP@0.5 on those images, when tuned

    def to_dict(self) -> dict[str, Any]:
        return {
            "marker_threshold": self.marker_threshold,
            "min_size": int(self.min_size),
            "chosen": self.chosen,
            "val_ap50": self.val_ap50,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PostProcess:
        thr = d.get("marker_threshold")
        if thr is not None and not (isinstance(thr, (int, float)) and 0.0 < float(thr) < 1.0):
            raise ValueError(f"postprocess.marker_threshold must be between 0 and 1, not {thr!r}")
        size = d.get("min_size", 15)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"postprocess.min_size must be a whole number >= 0, not {size!r}")
        ap = d.get("val_ap50")
        return cls(
            marker_threshold=None if thr is None else float(thr),
            min_size=size,
            chosen=str(d.get("chosen", "stored")),
            val_ap50=float(ap) if isinstance(ap, (int, float)) else None,
        )

    def describe(self) -> str:
        thr = "argmax" if self.marker_threshold is None else f"{self.marker_threshold:g}"
        return f"marker threshold {thr}, minimum size {self.min_size} px ({self.chosen})"


DEFAULT_POSTPROCESS = PostProcess()


def postprocess_from_meta(meta: dict[str, Any]) -> tuple[PostProcess, str]:
    """The bundle's post-processing and a note for the user when there is none (bundles
    from before it was stored) or it is unusable: today's defaults are used then."""
    raw = meta.get("postprocess")
    if raw is None:
        return DEFAULT_POSTPROCESS, (
            "this model has no post-processing settings (made before they were stored): "
            f"using the defaults, {DEFAULT_POSTPROCESS.describe()}"
        )
    if not isinstance(raw, dict):
        return (
            DEFAULT_POSTPROCESS,
            "the model's post-processing entry is not a table: defaults used",
        )
    try:
        return PostProcess.from_dict(raw), ""
    except ValueError as exc:
        return DEFAULT_POSTPROCESS, f"{exc}: the defaults are used instead"


def _drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    if not min_size or not labels.size:
        return labels
    sizes = np.bincount(labels.ravel())
    small = sizes < int(min_size)
    small[0] = False
    if small.any():
        labels = np.where(small[labels], 0, labels)
    return labels


def prediction_to_instances(
    labels: np.ndarray,
    probs: np.ndarray | None,
    mask_mode: str,
    pp: PostProcess = DEFAULT_POSTPROCESS,
) -> np.ndarray:
    """A model's class map (and probabilities, (K, H, W)) -> int32 cell ids 1..N."""
    lab = np.asarray(labels)
    if mask_mode == "instances":
        markers = None
        if pp.marker_threshold is not None and probs is not None:
            p = np.asarray(probs)
            if p.ndim == 3 and p.shape[0] >= 2 and p.shape[1:] == lab.shape:
                markers = (p[1] >= pp.marker_threshold) & (lab > 0)
        return classes_to_instances(lab, probs, min_size=pp.min_size, markers=markers)
    comps, _ = ndi.label(lab > 0, structure=np.ones((3, 3), bool))
    return relabel(_drop_small(comps.astype(np.int32, copy=False), pp.min_size))


def tune_postprocess(
    images: Iterable[tuple[np.ndarray, np.ndarray | None, np.ndarray]],
    mask_mode: str,
    *,
    thresholds: tuple[float | None, ...] = MARKER_THRESHOLDS,
    min_sizes: tuple[int, ...] = MIN_SIZES,
    cancelled: Callable[[], bool] | None = None,
) -> tuple[PostProcess, list[dict[str, Any]], list[float]]:
    """The settings with the best mean AP@0.5 over ``images`` (class map, probabilities,
    true cell ids; consumed one at a time, so a caller can predict them lazily and memory
    holds one image's probabilities). Ties go to the default, then to the earlier grid
    point. Returns the choice, every setting tried with its mean AP, and the choice's AP
    per image. When ``cancelled()`` turns true the defaults are returned."""
    if mask_mode != "instances":
        thresholds = (None,)
    grid = [
        PostProcess(marker_threshold=t, min_size=m)
        for t, m in itertools.product(thresholds, min_sizes)
    ]
    rows: list[list[float]] = []
    for lab, probs, truth in images:
        if cancelled is not None and cancelled():
            return DEFAULT_POSTPROCESS, [], []
        rows.append(
            [
                score_instances(truth, prediction_to_instances(lab, probs, mask_mode, pp)).ap(0.5)
                for pp in grid
            ]
        )
    if not rows:
        return DEFAULT_POSTPROCESS, [], []
    table = np.asarray(rows)  # images x settings
    means = table.mean(axis=0)
    trials = [{**pp.to_dict(), "val_ap50": float(m)} for pp, m in zip(grid, means, strict=True)]
    default = [pp == DEFAULT_POSTPROCESS for pp in grid]
    best = max(range(len(grid)), key=lambda i: (means[i], default[i], -i))
    chosen = replace(
        grid[best],
        chosen=f"tuned on {len(rows)} validation image(s)",
        val_ap50=float(means[best]),
    )
    return chosen, trials, [float(v) for v in table[:, best]]
