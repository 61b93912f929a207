"""Predicting an image too large to hold its probabilities: band by band, into its output.

A 20000 x 20000 image has 400 megapixels: its float32 probabilities alone take 4.8 GB, the
cells' watershed several times that. Here the image is cut into bands of whole rows. Each
band is predicted with a margin of rows above and below (so the tiles and the cells near
its edges see their context), turned into cells, and its own rows are handed on and
forgotten. Memory beyond the image itself is that of one band window (about
``WINDOW_PIXELS`` pixels), whatever the image's height.

Cells that cross from one band into the next: a band keeps every cell of its window that
has pixels in its own rows, including the cell's rows in the next band's margin (the
"spill"), unless the band above already holds most of it: a cell whose pixels in the
band's rows are mostly spill is the band above's and is dropped, and a kept cell fills
only the pixels the spill left free. So a cell the two windows see alike is kept once,
whole; one they see differently is still kept once (never lost, never doubled). An
object taller than the margin (160 rows; the cells this program is trained on are far
smaller, but a binary model's confluent foreground may not be) is split where the band
above's spill ends, into two ids.

Normalisation uses the whole image's percentiles (from a regular subsample,
``core.data.normalize.image_levels``), never a band's own, so every band sees the intensities
the model was trained on. Qt-free.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cellseg_gui.core.data.normalize import image_levels, normalize_with_levels
from cellseg_gui.core.lazy import ndimage as ndi
from cellseg_gui.core.model.postprocess import prediction_to_instances

__all__ = [
    "BAND_PIXELS",
    "Band",
    "WINDOW_PIXELS",
    "needs_bands",
    "predict_bands",
    "write_bands",
]

# Images above this go band by band (about 7200 x 7200): below it the whole-image path
# fits in a few GB and gives exactly the same result as before.
BAND_PIXELS = 52_000_000
# One band window: its probabilities (4 planes float32), the watershed's arrays and the
# tiles' activations came to 74 bytes a pixel at most (measured: a 20000-wide image,
# 4 output planes, distance seeds), so 24 MP stays under 2 GB.
WINDOW_PIXELS = 24_000_000
MARGIN = 160  # rows above and below a band: more than the cells seen so far are tall
# The output is a tiled, zlib-compressed BigTIFF (tifffile, Bio-Formats, napari and QuPath
# read it) written tile row by tile row, so bands are whole tile rows.
TILE = 256


def needs_bands(shape: tuple[int, ...]) -> bool:
    return len(shape) >= 2 and int(shape[0]) * int(shape[1]) > BAND_PIXELS


@dataclass
class Band:
    """Rows ``start:stop`` of the result: the class map (uint8) and, when cells were
    asked for, their ids (uint32, unique over the whole image, 1..N in order of rows)."""

    index: int
    count: int
    start: int
    stop: int
    labels: np.ndarray
    cells: np.ndarray | None = None


def _band_rows(height: int, width: int, margin: int, window_pixels: int, multiple: int) -> int:
    rows = max(window_pixels // max(width, 1) - 2 * margin, 1)
    # down to whole tile rows, so the window stays within its budget (rounding up made a
    # 24 MP window 27 MP on a 20000-wide image); at least one tile row
    rows = max(multiple, rows // multiple * multiple)
    return min(rows, height)


def predict_bands(
    predictor: Any,
    raw: np.ndarray,
    *,
    cells: bool,
    tile: int | None = None,
    tta: bool = False,
    margin: int = MARGIN,
    window_pixels: int = WINDOW_PIXELS,
    cancelled: Callable[[], bool] | None = None,
) -> Iterator[Band]:
    """Bands of the prediction of ``raw`` (H, W) or (H, W, C), top to bottom, with
    ``predictor`` (a loaded bundle or export). Stops early when ``cancelled()``."""
    arr = predictor.model_channels(raw)
    height, width = int(arr.shape[0]), int(arr.shape[1])
    want = int(predictor.model_config.in_channels)
    have = 1 if arr.ndim == 2 else int(arr.shape[-1])
    if have != want:
        raise ValueError(f"the model expects {want} channel(s) but the image has {have}")
    levels = image_levels(arr, predictor.norm)
    multiple = math.lcm(int(predictor.model_config.size_multiple), TILE)
    rows = _band_rows(height, width, margin, window_pixels, multiple)
    count = int(math.ceil(height / rows))
    pp, _ = predictor.postprocess
    mode = str(predictor.meta.get("mask_mode") or "instances")
    next_id = 1
    spill: np.ndarray | None = None  # ids of cells kept by the band above, in our rows
    for index in range(count):
        if cancelled is not None and cancelled():
            return
        start, stop = index * rows, min(height, (index + 1) * rows)
        top, bottom = max(0, start - margin), min(height, stop + margin)
        image = normalize_with_levels(arr[top:bottom], levels)
        pred = predictor.predict_preprocessed(image, tile=tile, tta=tta, return_probs=cells)
        del image
        labels = pred.labels[start - top : stop - top].copy()
        if not cells:
            yield Band(index, count, start, stop, labels)
            continue
        ids = prediction_to_instances(pred.labels, pred.probs, mode, pp)
        del pred
        taken = np.zeros((stop - start, width), bool)
        if spill is not None:
            n = min(spill.shape[0], stop - start)
            taken[:n] = spill[:n] > 0
        own, next_id = _own_cells(ids, start - top, stop - top, taken, next_id)
        del ids
        core = own[start - top : stop - top]
        if spill is not None:
            core[:n][taken[:n]] = spill[:n][taken[:n]]
        spill = own[stop - top :].copy() if stop < height else None
        core = core.copy()  # the window's arrays go now, not when the band is written
        del own
        yield Band(index, count, start, stop, labels, core)


def _own_cells(
    ids: np.ndarray, start: int, stop: int, taken: np.ndarray, next_id: int
) -> tuple[np.ndarray, int]:
    """The window's cells that this band keeps: those with pixels in rows ``start:stop``
    (window rows) of which at most half are ``taken`` (the band above's spill), renumbered
    from ``next_id`` in order of their top row; other cells removed."""
    core = ids[start:stop]
    n = int(ids.max()) if ids.size else 0
    in_core = np.bincount(core.ravel(), minlength=n + 1)
    in_taken = np.bincount(core[taken].ravel(), minlength=n + 1)
    boxes = ndi.find_objects(ids)
    mapping = np.zeros(n + 1, np.uint32)
    kept = [
        (box[0].start, box[1].start, k)
        for k, box in enumerate(boxes, start=1)
        if box is not None and in_core[k] and 2 * in_taken[k] <= in_core[k]
    ]
    for _, _, k in sorted(kept):
        mapping[k] = next_id
        next_id += 1
    return mapping[ids], next_id


def write_bands(
    target: Any,
    bands: Iterator[Band],
    shape: tuple[int, int],
    *,
    cells: bool,
    on_band: Callable[[Band], None] | None = None,
) -> dict[str, float]:
    """Write the bands' cell ids (uint32) or class map (uint8) into ``target`` atomically
    as a tiled BigTIFF, band by band; returns ``cells`` (their count) or ``foreground``
    (its share). Nothing is left at ``target`` when a band fails or is cancelled."""
    import tifffile

    from cellseg_gui.core.data.fileio import atomic_file
    from cellseg_gui.core.data.maskwrite import PREDICTION_SOFTWARE

    height, width = shape
    stats = {"cells": 0.0, "foreground": 0.0, "rows": 0.0}

    def tiles() -> Iterator[np.ndarray]:
        for band in bands:
            data = band.cells if cells else band.labels
            assert data is not None
            if cells and data.size:
                stats["cells"] = max(stats["cells"], float(data.max()))
            stats["foreground"] += float(np.count_nonzero(band.labels))
            stats["rows"] = float(band.stop)
            if on_band is not None:  # computed; writing its tiles takes a moment more
                on_band(band)
            for r in range(0, data.shape[0], TILE):
                for c in range(0, width, TILE):
                    yield data[r : r + TILE, c : c + TILE]

    with atomic_file(target) as fh:
        tifffile.imwrite(
            fh, data=tiles(), shape=(height, width), dtype=np.uint32 if cells else np.uint8,
            tile=(TILE, TILE), compression="zlib", bigtiff=True, software=PREDICTION_SOFTWARE,
        )  # fmt: skip
        if stats["rows"] < height:  # cancelled: the file must not look complete
            raise InterruptedError("prediction stopped")
    stats["foreground"] /= float(height * width)
    return stats
