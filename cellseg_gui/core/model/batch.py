"""Predicting a batch of images with a model: the one job behind ``cellseg predict`` and
the window's Predict / Predict all, so both give the same cells, scores and errors for
the same files.

A generator of events (``core.events``): ``Started``, then one ``Predicted`` per image
(its class map, the probability of the chosen class, the cells, and where a mask exists
the foreground Jaccard, cell AP@0.5 and the gallery's difference thumbnail), then
``Finished``. A bad image is reported in its own event (``error``: one line naming the
file) and the batch goes on. Qt-free.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cellseg_gui.core.events import CANCELLED, DONE, Finished, Message, Predicted, Started
from cellseg_gui.core.jobs import CancelToken

__all__ = ["BatchItem", "predict_batch"]


@dataclass(frozen=True)
class BatchItem:
    """One image to predict, and its mask when there is one (then it is scored)."""

    name: str
    image_path: Path
    mask_path: Path | None = None


def _error(path: Path, exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if text.startswith(str(path)) else f"{path}: {text}"


def predict_batch(
    predictor: Any,
    items: Sequence[Any],
    *,
    cancel: CancelToken | None = None,
    tile: int | None = None,
    tta: bool = False,
    score: bool = True,
    cells: bool = True,
    keep_image: bool = False,
) -> Iterator[Any]:
    """Predict ``items`` (anything with ``name``, ``image_path`` and ``mask_path``) with a
    loaded bundle or export (``core.model.bundle.load_predictor``). ``score``: compare with the
    masks that exist; ``cells``: turn the prediction into cells (the bundle's
    post-processing); ``keep_image``: put the raw image in each event (measurements)."""
    from cellseg_gui.core.data.imageio import image_info, read_image, read_mask
    from cellseg_gui.core.model.bands import needs_bands
    from cellseg_gui.core.model.scoring import score_image, truth_for_model
    from cellseg_gui.core.scores.thumbnails import grey_thumbnail, overlay_difference

    meta = predictor.meta
    pp, note = predictor.postprocess
    device = getattr(predictor, "device", "cpu")  # TorchScript / ONNX predictors: CPU
    yield Started(job="predict", device=str(device), precision="fp32", total_steps=len(items))
    if note:
        yield Message(note, level="warning")
    n = len(items)
    for i, item in enumerate(items):
        if cancel is not None and cancel.cancelled:
            yield Finished(CANCELLED, "prediction stopped")
            return
        path = Path(item.image_path)
        try:
            shape = tuple(image_info(path)["shape"])
            if needs_bands(shape):
                raise ValueError(
                    f"{shape[1]}x{shape[0]} pixels is too large to predict whole here; "
                    "`cellseg predict` predicts it band by band into a file"
                )
            raw = read_image(path, channels=meta.get("channels", "grey"))
            if raw.dtype.kind == "f" and raw.size and not np.isfinite(raw).any():
                raise ValueError("image is all NaN (no finite pixel)")
            for note in input_notes(path, raw):
                yield Message(note, level="warning")
            if cells or score:
                ids, pred = predictor.predict_cells(raw, tile=tile, tta=tta)
            else:  # a class map is all that is asked for: no probabilities kept
                ids, pred = None, predictor.predict(raw, tile=tile, tta=tta, return_probs=False)
            prob = (  # the confidence of the class map (a distance plane is no class)
                None if pred.probs is None
                else pred.probs[: predictor.n_classes].max(axis=0).astype(np.float16)
            )  # fmt: skip
            jac = ap = thumb = grey = None
            mask_path = getattr(item, "mask_path", None)
            if score and mask_path:
                mask = read_mask(mask_path)
                target, truth, source, used = truth_for_model(mask, meta)
                if target.shape == pred.labels.shape:
                    s = score_image(
                        item.name, pred.labels, pred.probs, target, truth,
                        meta.get("mask_mode") or used, pp, source=source, cells=ids,
                    )  # fmt: skip
                    jac, ap = s.fg_jaccard, s.ap50
                    grey = grey_thumbnail(raw)
                    thumb = overlay_difference(grey, target, pred.labels)
            yield Predicted(
                i, n, item.name, pred.labels, prob, jac, cells=ids, ap50=ap,
                thumbnail=thumb, thumbnail_grey=grey, image=raw if keep_image else None,
            )  # fmt: skip
        except (OSError, ValueError, RuntimeError, MemoryError) as exc:
            # one bad image must not stop the batch; the event names the file
            yield Predicted(i, n, item.name, None, None, None, error=_error(path, exc))
    yield Finished(DONE, f"predicted {n} image(s)")


def input_notes(path: Path, raw: np.ndarray) -> list[str]:
    """What a user must know about an image predicted as it is: a stack read as its first
    plane (an ImageJ hyperstack's empty first channel gave 0 cells without a word), and
    pixels that are not numbers (predicted from the image's other pixels)."""
    from cellseg_gui.core.data.imageio import image_info

    notes = []
    try:
        pages = int(image_info(path).get("pages", 1))
    except (OSError, ValueError):
        pages = 1
    if pages > 1:
        notes.append(f"{path}: holds {pages} planes (channels, a stack or a time series); "
                     "only plane 0 is predicted: save the plane you mean as its own image")  # fmt: skip
    if raw.dtype.kind == "f" and raw.size:
        bad = int(raw.size - np.count_nonzero(np.isfinite(raw)))
        if bad:
            notes.append(f"{path}: {100 * bad / raw.size:.2g}% of its pixels are NaN or "
                         "infinite; its cells there are guesses")  # fmt: skip
    return notes


def items_from_paths(paths: Sequence[str | os.PathLike[str]]) -> list[BatchItem]:
    """Items for image files given on their own (no masks): named by their stem."""
    return [BatchItem(Path(p).stem, Path(p)) for p in paths]
