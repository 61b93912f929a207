"""Predicting an image too large to hold its probabilities: band by band, into its output.

A 20000 x 20000 image has 400 megapixels: its float32 probabilities alone take 4.8 GB, the
cells' watershed several times that. Here the image is cut into bands of whole rows. Each
band is predicted with a margin of rows above and below (so the tiles and the cells near
its edges see their context), turned into cells, and its own rows are handed on and
forgotten. Memory beyond the image itself is that of one band window (about
``WINDOW_PIXELS`` pixels), whatever the image's height.

Cells that cross from one band into the next: a cell belongs to the band in which its
top row lies. That band keeps the whole cell, including its rows in the next band's
margin (the "spill"); the next band keeps its own cells only where the spill left the
pixels free, and drops the cells whose top lies above it (they were the band above's).
A cell taller than the margin is cut at the margin; the margin is set well above the
cells this program is trained on (``margin``).

Normalisation uses the whole image's percentiles (from a regular subsample,
``core.normalize.image_levels``), never a band's own, so every band sees the intensities
the model was trained on. Qt-free.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cellseg_gui.core.lazy import ndimage as ndi
from cellseg_gui.core.normalize import image_levels, normalize_with_levels
from cellseg_gui.core.postprocess import prediction_to_instances

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
    tile: int = 512,
    tta: bool = False,
    margin: int = MARGIN,
    window_pixels: int = WINDOW_PIXELS,
    cancelled: Callable[[], bool] | None = None,
) -> Iterator[Band]:
    """Bands of the prediction of ``raw`` (H, W) or (H, W, C), top to bottom, with
    ``predictor`` (a loaded bundle or export). Stops early when ``cancelled()``."""
    arr = predictor.model_channels(raw)
    height, width = int(arr.shape[0]), int(arr.shape[1])
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
        own, next_id = _own_cells(ids, start - top, stop - top, next_id)
        del ids
        core = own[start - top : stop - top]
        if spill is not None:
            n = min(spill.shape[0], core.shape[0])
            taken = spill[:n] > 0
            core[:n][taken] = spill[:n][taken]
        spill = own[stop - top :].copy() if stop < height else None
        core = core.copy()  # the window's arrays go now, not when the band is written
        del own
        yield Band(index, count, start, stop, labels, core)


def _own_cells(ids: np.ndarray, start: int, stop: int, next_id: int) -> tuple[np.ndarray, int]:
    """The window's cells whose top row lies in ``start:stop`` (window rows), renumbered
    from ``next_id`` in order of their top row; other cells removed."""
    boxes = ndi.find_objects(ids)
    mapping = np.zeros(len(boxes) + 1, np.uint32)
    owned = [
        (box[0].start, box[1].start, k)
        for k, box in enumerate(boxes, start=1)
        if box is not None and start <= box[0].start < stop
    ]
    for _, _, k in sorted(owned):
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

    from cellseg_gui.core.fileio import atomic_file

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
            tile=(TILE, TILE), compression="zlib", bigtiff=True,
        )  # fmt: skip
        if stats["rows"] < height:  # cancelled: the file must not look complete
            raise InterruptedError("prediction stopped")
    stats["foreground"] /= float(height * width)
    return stats
