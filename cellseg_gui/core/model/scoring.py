"""One image's scores and a data set's summary: the single definition behind every figure
that ``cellseg evaluate``, training's validation, the benchmarks and the window show.

Per image: foreground Jaccard (cell pixels found, whatever class the model called them),
AP at IoU 0.5 / 0.75 / 0.9 and the cell counts. Over a data set each figure is named by
how it is combined: "mean over images" (each image weighs the same) or "pooled" (pixels
or cells summed over the images first). Numpy and scipy only; no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cellseg_gui.core.model.postprocess import (
    DEFAULT_POSTPROCESS,
    PostProcess,
    prediction_to_instances,
)
from cellseg_gui.core.scores.instances import (
    InstanceScore,
    InstanceSummary,
    score_instances,
    summarize,
)

__all__ = ["DatasetScore", "ImageScore", "edited_mask_scores", "score_image", "score_dataset"]


@dataclass(frozen=True)
class ImageScore:
    name: str
    fg_inter: int
    fg_union: int
    instances: InstanceScore

    @property
    def fg_jaccard(self) -> float:
        return 1.0 if self.fg_union == 0 else self.fg_inter / self.fg_union

    @property
    def ap50(self) -> float:
        return self.instances.ap(0.5)

    def to_dict(self) -> dict:
        return {"name": self.name, "fg_jaccard": self.fg_jaccard, **self.instances.to_dict()}


def score_image(
    name: str,
    pred_labels: np.ndarray,
    pred_probs: np.ndarray | None,
    true_classes: np.ndarray,
    true_instances: np.ndarray,
    mask_mode: str,
    pp: PostProcess = DEFAULT_POSTPROCESS,
    *,
    source: str = "instances",
    cells: np.ndarray | None = None,
) -> ImageScore:
    """Scores of one predicted image against its mask (as classes and as cell ids).
    ``cells``: the prediction's cell ids when the caller already has them."""
    p = np.asarray(pred_labels) > 0
    t = np.asarray(true_classes) > 0
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} differs from the mask's {t.shape}")
    if cells is None:
        cells = prediction_to_instances(pred_labels, pred_probs, mask_mode, pp)
    return ImageScore(
        name=name,
        fg_inter=int(np.count_nonzero(p & t)),
        fg_union=int(np.count_nonzero(p | t)),
        instances=score_instances(true_instances, cells, source=source),
    )


@dataclass(frozen=True)
class DatasetScore:
    images: tuple[ImageScore, ...]

    @property
    def fg_jaccard_mean(self) -> float:
        """Foreground Jaccard, mean over images."""
        return float(np.mean([s.fg_jaccard for s in self.images])) if self.images else 0.0

    @property
    def fg_jaccard_pooled(self) -> float:
        """Foreground Jaccard with pixels pooled over all images."""
        union = sum(s.fg_union for s in self.images)
        return 1.0 if union == 0 else sum(s.fg_inter for s in self.images) / union

    @property
    def instances(self) -> InstanceSummary:
        return summarize([s.instances for s in self.images])

    @property
    def ap50_mean(self) -> float:
        """AP@0.5, mean over images."""
        return self.instances.ap(0.5) if self.images else 0.0

    def to_dict(self) -> dict:
        return {
            "n_images": len(self.images),
            "fg_jaccard_mean_over_images": self.fg_jaccard_mean,
            "fg_jaccard_pooled_over_pixels": self.fg_jaccard_pooled,
            **(self.instances.to_dict() if self.images else {}),
            "images": [s.to_dict() for s in self.images],
        }


def truth_for_model(mask: np.ndarray, meta: dict) -> tuple[np.ndarray, np.ndarray, str, str]:
    """A stored mask as a model's predictions are scored against it: (classes, true cell
    ids, where the ids come from, the mode the classes were read in), the mask read as
    the model was trained on them (its bundle's ``mask_mode`` and ``boundary_width``).
    Prediction's figures (``core.model.batch``) and the window's, figured again after an
    edit, both read it so: an instance model on a 0..2 class mask counts two cells in
    both, not two in one and the connected components in the other."""
    from cellseg_gui.core.data.masks import mask_to_classes, truth_cells

    target, _, used = mask_to_classes(
        mask,
        mode=meta.get("mask_mode") or "auto",
        boundary_width=int(meta.get("boundary_width", 2)),
    )
    truth, source = truth_cells(mask, used)
    return target, truth, source, used


def score_dataset(images: list[ImageScore]) -> DatasetScore:
    return DatasetScore(tuple(images))


def model_scores(meta: dict) -> tuple[float | None, float | None]:
    """(validation foreground Jaccard, validation AP@0.5) a bundle records, wherever it
    shows them (models list, project file, info): training writes ``metrics.val_fg_jaccard``
    and ``metrics.val_ap50``; files from before may say ``best_val_fg_jaccard``."""
    metrics = meta.get("metrics") or {}

    def num(key: str) -> float | None:
        v = metrics.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    fg = num("val_fg_jaccard")
    return (fg if fg is not None else num("best_val_fg_jaccard")), num("val_ap50")


def recorded_mean_jaccard(meta: dict) -> float | None:
    """A bundle's validation foreground Jaccard as the mean over its validation images
    (from ``training.per_image_val_jaccard``), beside the pooled one ``model_scores``
    gives: the figure ``cellseg evaluate`` ends on for those images."""
    training = meta.get("training") if isinstance(meta.get("training"), dict) else {}
    return mean_over_images(training.get("per_image_val_jaccard"))


def mean_over_images(per_image: object) -> float | None:
    """The mean of a run's per-image figures (``training.per_image_val_jaccard``): the
    definition ``cellseg evaluate``'s headline uses, beside the pooled one a run keeps."""
    if not isinstance(per_image, dict) or not per_image:
        return None
    values = [
        float(v)
        for v in per_image.values()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ]
    return float(np.mean(values)) if len(values) == len(per_image) else None


def figure(value: object) -> str:
    """A score (Jaccard, AP) as every message shows it: 4 decimals, so the end of train,
    ``info``, the window and ``evaluate`` print the same digits for the same figure."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{float(value):.4f}"
    return "-"


def shown_metrics(meta: dict) -> dict[str, str]:
    """A bundle's metrics as every place shows them (``cellseg info``, the model card):
    readable names, scores through ``figure``, epochs counted from 1 as the plots count
    them (the bundle stores the 0-based index)."""
    metrics = dict(meta.get("metrics") or {})
    fg, ap = model_scores(meta)
    out: dict[str, str] = {}
    if fg is not None:  # the names say which definition, as `cellseg evaluate` does
        out["validation foreground Jaccard (pooled over pixels)"] = figure(fg)
        mean = recorded_mean_jaccard(meta)
        if mean is not None:  # what evaluate's last-but-one line gives on those images
            out["validation foreground Jaccard (mean over images)"] = figure(mean)
    if ap is not None:
        # the cells the model's own (tuned) post-processing draws, which the per-epoch AP
        # of the epoch lines (untuned class seeds, a trend) is not
        out["validation AP@0.5 (mean over images, with its post-processing)"] = figure(ap)
    epoch = metrics.get("best_epoch")
    if isinstance(epoch, int) and not isinstance(epoch, bool):
        out["best epoch"] = str(epoch + 1)
    for key, value in metrics.items():
        if key not in ("val_fg_jaccard", "best_val_fg_jaccard", "val_ap50", "best_epoch"):
            out[key] = figure(value) if isinstance(value, float) else str(value)
    return out


def edited_mask_scores(
    stored: np.ndarray,
    mode: str,
    labels: np.ndarray,
    cells: np.ndarray | None,
    meta: dict | None = None,
) -> tuple[float, float | None]:
    """Foreground Jaccard and cell AP@0.5 of a prediction against a mask being edited,
    in its file's values (``MaskDocument.stored``): the figures prediction gives against
    the file (``core.model.batch``), the mask read as the model ``meta`` reads it
    (``truth_for_model``), or by the document's ``mode`` when no model is known. The
    image list shows them again after each edit (``app.rescoring``)."""
    from cellseg_gui.core.data.masks import truth_cells

    p, t = np.asarray(labels) != 0, stored != 0
    union = int(np.count_nonzero(p | t))
    jaccard = 1.0 if union == 0 else int(np.count_nonzero(p & t)) / union
    if cells is None:
        return jaccard, None
    if meta is not None:
        truth = truth_for_model(stored, meta)[1]
    else:
        truth = stored if mode == "instances" else truth_cells(stored, mode)[0]
    return jaccard, float(score_instances(truth, cells).ap(0.5))
