"""From a class prediction to cells: the settings, the one function every path calls, and
the search that picks the settings on a run's validation images.

A 3-class model (background / cell / boundary) gives cells by a marker-controlled
watershed, in one of two ways (``method``):

- ``"classes"``: markers are the connected pixels whose cell probability reaches
  ``marker_threshold`` (argmax when it is None), grown through the predicted foreground
  along the boundary probability. A higher threshold keeps smaller markers, so touching
  cells whose cores the boundary class only thinned still get one marker each.
- ``"distance"``: the pixels whose cell probability reaches ``marker_threshold`` are the
  cell cores; their distance to the nearest non-core pixel (smoothed, sigma 2 px) rises
  towards each cell's centre. One marker per peak that stands at least ``peak_height``
  pixels above the saddle to its neighbours (h-maxima), grown through the foreground down
  the distance. Two touching cells whose cores still meet at a neck get two markers, as
  long as the neck is narrower than the cells by ``peak_height``.

- ``"learned"``: for a model with a distance output (``core.model.distance``: how close each
  pixel lies to its cell's centre along the cell, learned from the masks). Markers are
  the connected pixels whose predicted value reaches ``marker_threshold``, grown through
  the foreground down the map. Each cell has one peak however branched it is, so touching
  cells come apart even where the cell probability joins them.

- ``"flow"``: for a model with flows (``core.model.flow``: the unit vector towards each
  pixel's cell centre, learned from the masks). Each foreground pixel follows the flows;
  the pixels whose paths meet at one sink, where at least ``sink_size`` of them end, are
  one cell. No threshold on a learned height: two touching cells have two sinks.

Objects under ``min_size`` pixels are dropped as noise. A 2-class or class-id model gives
the connected components of its foreground.

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

from cellseg_gui.core.data.masks import classes_to_instances, relabel
from cellseg_gui.core.lazy import ndimage as ndi
from cellseg_gui.core.scores.instances import score_instances

__all__ = [
    "DEFAULT_POSTPROCESS",
    "LEARNED_DEFAULT",
    "PostProcess",
    "default_postprocess",
    "postprocess_from_meta",
    "prediction_to_instances",
    "tune_postprocess",
]

MARKER_THRESHOLDS: tuple[float | None, ...] = (None, 0.6, 0.7, 0.8, 0.9)
# up to 500: flow cells on usiigaci scored best at 400 (0.635 / 0.592 against 0.616 / 0.579
# at 300, two 10-minute models)
MIN_SIZES: tuple[int, ...] = (0, 15, 40, 100, 200, 300, 400, 500)
# the distance method's grid: core threshold x peak height (min sizes as above)
DISTANCE_THRESHOLDS: tuple[float, ...] = (0.6, 0.7, 0.8)
PEAK_HEIGHTS: tuple[float, ...] = (3.0, 4.0, 5.0)
# the learned method's grid: the share of a cell's peak distance a marker needs
LEARNED_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
# the flow method's grid: the least pixels that must meet at a sink to seed a cell
SINK_SIZES: tuple[int, ...] = (10, 40, 120)
METHODS = ("classes", "distance", "learned", "flow")
# an instance model's classes (background, cell, boundary); a distance plane comes after
INSTANCE_CLASSES = 3
SMOOTHING_SIGMA = 2.0
MARKER_STEP = 2


@dataclass(frozen=True)
class PostProcess:
    # None: markers are the pixels whose most likely class is 'cell'. 0.9 as the default:
    # on usiigaci it lifted untuned AP@0.5 from 0.19-0.30 to 0.42-0.43 (tuning then adds the
    # minimum size); the size stays small so that small nuclei are kept
    marker_threshold: float | None = 0.9
    min_size: int = 15
    method: str = "classes"
    peak_height: float = 4.0  # distance method: pixels a centre must rise above its saddle
    sink_size: int = 40  # flow method: pixels whose paths must end at a sink to seed a cell
    # how the values were chosen, for the user: "default", "tuned on 5 validation images"
    chosen: str = "default"
    val_ap50: float | None = None  # mean AP@0.5 on those images, when tuned

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "marker_threshold": self.marker_threshold,
            "min_size": int(self.min_size),
            "peak_height": float(self.peak_height),
            "sink_size": int(self.sink_size),
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
        method = d.get("method", "classes")  # bundles from before the distance method
        if method not in METHODS:
            raise ValueError(f"postprocess.method must be one of {METHODS}, not {method!r}")
        height = d.get("peak_height", 4.0)
        if not (isinstance(height, (int, float)) and not isinstance(height, bool)) or not (
            0.0 < float(height) <= 1000.0
        ):
            raise ValueError(f"postprocess.peak_height must be a number of pixels, not {height!r}")
        sink = d.get("sink_size", 40)
        if not isinstance(sink, int) or isinstance(sink, bool) or sink < 1:
            raise ValueError(f"postprocess.sink_size must be a whole number >= 1, not {sink!r}")
        if method in ("distance", "learned") and thr is None:
            raise ValueError(f"postprocess.marker_threshold is needed by the {method} method")
        ap = d.get("val_ap50")
        return cls(
            marker_threshold=None if thr is None else float(thr),
            min_size=size,
            method=method,
            peak_height=float(height),
            sink_size=sink,
            chosen=str(d.get("chosen", "stored")),
            val_ap50=float(ap) if isinstance(ap, (int, float)) else None,
        )

    def describe(self) -> str:
        thr = "argmax" if self.marker_threshold is None else f"{self.marker_threshold:g}"
        if self.method == "flow":
            return (
                f"flows (cells where at least {self.sink_size} pixels' paths meet), "
                f"minimum size {self.min_size} px ({self.chosen})"
            )
        if self.method == "learned":
            return (
                f"learned distance markers (threshold {thr} of a cell's peak), "
                f"minimum size {self.min_size} px ({self.chosen})"
            )
        if self.method == "distance":
            return (
                f"distance markers (core threshold {thr}, peak height {self.peak_height:g} px), "
                f"minimum size {self.min_size} px ({self.chosen})"
            )
        return f"marker threshold {thr}, minimum size {self.min_size} px ({self.chosen})"


DEFAULT_POSTPROCESS = PostProcess()
# for a model with a distance output, before tuning (and for the per-epoch AP)
LEARNED_DEFAULT = PostProcess(marker_threshold=0.5, min_size=15, method="learned")
FLOW_DEFAULT = PostProcess(marker_threshold=None, min_size=15, method="flow", sink_size=40)


def default_postprocess(distance_head: bool, flow_head: bool = False) -> PostProcess:
    """The untuned settings: learned markers for a model with a distance output, the
    flows for one with flows."""
    if flow_head:
        return FLOW_DEFAULT
    return LEARNED_DEFAULT if distance_head else DEFAULT_POSTPROCESS


def postprocess_from_meta(meta: dict[str, Any]) -> tuple[PostProcess, str]:
    """The bundle's post-processing and a note for the user when there is none (bundles
    from before it was stored) or it is unusable: today's defaults are used then."""
    raw = meta.get("postprocess")
    arch = meta.get("architecture")
    arch = arch if isinstance(arch, dict) else {}
    default = default_postprocess(arch.get("distance_head") is True, arch.get("flow_head") is True)
    if raw is None:
        return default, (
            "this model has no post-processing settings (made before they were stored, "
            f"or its run stopped before tuning): using the defaults, {default.describe()}"
        )
    if not isinstance(raw, dict):
        return (
            default,
            "the model's post-processing entry is not a table: defaults used",
        )
    try:
        return PostProcess.from_dict(raw), ""
    except ValueError as exc:
        return default, f"{exc}: the defaults are used instead"


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
    if mask_mode == "instances" and pp.method in ("distance", "learned", "flow"):
        grown = _grown_cells(lab, probs, pp)
        if grown is not None:
            return relabel(_drop_small(grown, pp.min_size))
    if mask_mode == "instances":
        markers = None
        if pp.marker_threshold is not None and probs is not None:
            p = np.asarray(probs)
            if p.ndim == 3 and p.shape[0] >= 2 and p.shape[1:] == lab.shape:
                markers = (p[1] >= pp.marker_threshold) & (lab > 0)
        return classes_to_instances(lab, probs, min_size=pp.min_size, markers=markers)
    comps, _ = ndi.label(lab > 0, structure=np.ones((3, 3), bool))
    return relabel(_drop_small(comps.astype(np.int32, copy=False), pp.min_size))


def _extra_planes(probs: np.ndarray | None, shape: tuple[int, ...], n: int) -> np.ndarray | None:
    """The ``n`` planes after an instance model's classes, or None when its probabilities
    have another number of planes (or another size)."""
    if probs is None:
        return None
    p = np.asarray(probs)
    if p.ndim != 3 or p.shape[0] != INSTANCE_CLASSES + n or p.shape[1:] != tuple(shape):
        return None
    return p[INSTANCE_CLASSES:]


def learned_distance(probs: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """The predicted distance plane of an instance model's probabilities, or None when
    the model has no distance output."""
    extra = _extra_planes(probs, shape, 1)
    return None if extra is None else extra[0]


def learned_flow(probs: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """The predicted flow planes (2, H, W) of an instance model's probabilities, or None
    when the model has no flows."""
    return _extra_planes(probs, shape, 2)


def _grown_cells(
    lab: np.ndarray, probs: np.ndarray | None, pp: PostProcess, followed: dict | None = None
) -> np.ndarray | None:
    if pp.method == "flow":
        flow = learned_flow(probs, lab.shape)
        if flow is None:
            return None
        from cellseg_gui.core.model.flow import flow_cells, follow

        fg = lab > 0
        if followed is None:
            followed = {}
        if "paths" not in followed:  # one following serves every sink size
            followed["paths"] = follow(flow, fg)
        return flow_cells(flow, fg, pp.sink_size, followed["paths"])
    if pp.method == "learned":
        return _learned_cells(lab, probs, pp)
    return _distance_cells(lab, probs, pp)


def _learned_cells(lab: np.ndarray, probs: np.ndarray | None, pp: PostProcess) -> np.ndarray | None:
    """Cells by the learned method, before the size filter; None without a distance
    output (the class method is used then)."""
    dist = learned_distance(probs, lab.shape)
    if dist is None or pp.marker_threshold is None:
        return None
    from skimage.segmentation import watershed

    fg = lab > 0
    markers, n = ndi.label((dist >= pp.marker_threshold) & fg)
    if not n:
        return np.zeros(lab.shape, np.int32)
    return watershed(-dist, markers=markers, mask=fg).astype(np.int32, copy=False)


def _distance_cells(
    lab: np.ndarray, probs: np.ndarray | None, pp: PostProcess
) -> np.ndarray | None:
    """Cells by the distance method, before the size filter; None when the probabilities
    do not fit (the class method is used then)."""
    if probs is None or pp.marker_threshold is None:
        return None
    p = np.asarray(probs)
    if p.ndim != 3 or p.shape[0] < 2 or p.shape[1:] != lab.shape:
        return None
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    fg = lab > 0
    core = (p[1] >= pp.marker_threshold) & fg
    if not core.any():
        return np.zeros(lab.shape, np.int32)
    dist = ndi.gaussian_filter(ndi.distance_transform_edt(core).astype(np.float32), SMOOTHING_SIGMA)
    # Peaks are searched on every second pixel: the smoothed distance changes slowly at
    # that scale, and h-maxima costs four times less (0.3 s instead of 1.1 s a megapixel,
    # the same AP@0.5 on usiigaci: 0.527 / 0.498 / 0.492 against 0.524 / 0.499 / 0.483).
    step = MARKER_STEP if min(lab.shape) >= 8 * MARKER_STEP else 1
    peaks = h_maxima(dist[::step, ::step], pp.peak_height).astype(bool)
    if step > 1:
        peaks = np.repeat(np.repeat(peaks, step, 0), step, 1)[: lab.shape[0], : lab.shape[1]]
    markers, _ = ndi.label(peaks & fg)
    return watershed(-dist, markers=markers, mask=fg).astype(np.int32, copy=False)


def _grid(
    mask_mode: str,
    thresholds,
    min_sizes,
    distance: bool,
    learned: bool = False,
    flows: bool = False,
) -> list[PostProcess]:
    if mask_mode != "instances":
        return [PostProcess(marker_threshold=None, min_size=m) for m in min_sizes]
    grid = []
    if flows:
        grid += [
            PostProcess(marker_threshold=None, min_size=m, method="flow", sink_size=k)
            for k, m in itertools.product(SINK_SIZES, min_sizes)
        ]
    if learned:
        grid += [
            PostProcess(marker_threshold=t, min_size=m, method="learned")
            for t, m in itertools.product(LEARNED_THRESHOLDS, min_sizes)
        ]
    grid += [
        PostProcess(marker_threshold=t, min_size=m)
        for t, m in itertools.product(thresholds, min_sizes)
    ]
    if distance:
        grid += [
            PostProcess(marker_threshold=t, min_size=m, method="distance", peak_height=h)
            for t, h, m in itertools.product(DISTANCE_THRESHOLDS, PEAK_HEIGHTS, min_sizes)
        ]
    return grid


def _score_grid(
    lab, probs, truth, mask_mode: str, grid: list[PostProcess], cancelled: Callable[[], bool]
) -> list[float] | None:
    """AP@0.5 of every setting on one image (None when cancelled on the way). The distance
    watershed depends on the thresholds only; the minimum size is applied to its result,
    so it runs once for all sizes."""
    out: list[float] = []
    grown: dict[tuple, np.ndarray | None] = {}
    followed: dict = {}
    for pp in grid:
        if cancelled():
            return None
        key = (pp.method, pp.marker_threshold, pp.peak_height, pp.sink_size)
        if pp.method in ("distance", "learned", "flow") and mask_mode == "instances":
            if key not in grown:
                grown[key] = _grown_cells(np.asarray(lab), probs, pp, followed)
            cells = grown[key]
            if cells is not None:
                pred = relabel(_drop_small(cells, pp.min_size))
                out.append(score_instances(truth, pred).ap(0.5))
                continue
        out.append(
            score_instances(truth, prediction_to_instances(lab, probs, mask_mode, pp)).ap(0.5)
        )
    return out


def tune_postprocess(
    images: Iterable[tuple[np.ndarray, np.ndarray | None, np.ndarray]],
    mask_mode: str,
    *,
    thresholds: tuple[float | None, ...] = MARKER_THRESHOLDS,
    min_sizes: tuple[int, ...] = MIN_SIZES,
    distance: bool = True,
    cancelled: Callable[[], bool] | None = None,
) -> tuple[PostProcess, list[dict[str, Any]], list[float]]:
    """The settings with the best mean AP@0.5 over ``images`` (class map, probabilities,
    true cell ids; consumed one at a time, so a caller can predict them lazily and memory
    holds one image's probabilities). Ties go to the default, then to the earlier grid
    point. Returns the choice, every setting tried with its mean AP, and the choice's AP
    per image. When ``cancelled()`` turns true the defaults are returned."""
    stop = cancelled if cancelled is not None else (lambda: False)
    rows: list[list[float]] = []
    grid: list[PostProcess] = []
    fallback = DEFAULT_POSTPROCESS  # the model's own untuned settings, once known
    for lab, probs, truth in images:
        if not grid:  # the first image tells whether the model has a distance output
            shape = np.asarray(lab).shape
            learned = learned_distance(probs, shape) is not None
            flows = learned_flow(probs, shape) is not None
            grid = _grid(mask_mode, thresholds, min_sizes, distance, learned, flows)
            if mask_mode == "instances":
                fallback = default_postprocess(learned, flows)
        row = None if stop() else _score_grid(lab, probs, truth, mask_mode, grid, stop)
        if row is None:
            return fallback, [], []
        rows.append(row)
    if not rows:
        return fallback, [], []
    table = np.asarray(rows)  # images x settings
    means = table.mean(axis=0)
    trials = [{**pp.to_dict(), "val_ap50": float(m)} for pp, m in zip(grid, means, strict=True)]
    default = [pp == fallback for pp in grid]
    best = max(range(len(grid)), key=lambda i: (means[i], default[i], -i))
    chosen = replace(
        grid[best],
        chosen=f"tuned on {len(rows)} validation image(s)",
        val_ap50=float(means[best]),
    )
    return chosen, trials, [float(v) for v in table[:, best]]
