"""Per-cell measurements and Fiji ROI sets: what a biologist does with the cells once they
are counted. Measurements come from ``skimage.measure.regionprops_table``; ROI sets are
written with ``roifile`` so Fiji's ROI Manager opens them as they are. Torch-free.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from cellseg_gui.core.data.imageio import atomic_write_bytes, atomic_write_text

__all__ = ["COLUMNS", "measure_cells", "summary_row", "write_csv", "write_rois"]

# regionprops_table names -> the CSV's column names, in order
_PROPS = (
    "label", "area", "centroid", "bbox", "perimeter", "eccentricity", "solidity",
    "intensity_mean", "intensity_min", "intensity_max",
)  # fmt: skip
# sizes name their unit (pixels); coordinates are pixel rows and columns
COLUMNS = (
    "label", "area_px", "centroid_y", "centroid_x", "bbox_min_y", "bbox_min_x", "bbox_max_y",
    "bbox_max_x", "perimeter_px", "eccentricity", "solidity", "mean_intensity",
    "min_intensity", "max_intensity",
)  # fmt: skip
# counts of pixels and pixel indices: written as integers, not "667.0"
_INTEGER = ("label", "area_px", "bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x")
# every other figure, in the per-cell and the summary files alike: 4 decimals, or below 1
# 6 significant digits (intensities of a float image in small units read 0.0005 for
# 0.000512 with 4 decimals)
_DECIMALS = 4
_SIGNIFICANT = 6
_RENAME = {
    "area": "area_px", "perimeter": "perimeter_px",
    "centroid-0": "centroid_y", "centroid-1": "centroid_x", "bbox-0": "bbox_min_y",
    "bbox-1": "bbox_min_x", "bbox-2": "bbox_max_y", "bbox-3": "bbox_max_x",
    "intensity_mean": "mean_intensity", "intensity_min": "min_intensity",
    "intensity_max": "max_intensity",
}  # fmt: skip


def _grey(image: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    if image is None:
        return None
    from cellseg_gui.core.data.imageio import size_text, to_grey

    img = np.asarray(image)
    if img.ndim == 3:  # colour: the same grey as the models see (imageio.to_grey)
        img = to_grey(img)
    if img.shape != shape:
        raise ValueError(f"image is {size_text(img.shape)} but the cells are "
                         f"{size_text(shape)} (height x width)")  # fmt: skip
    return img


def measure_cells(cells: np.ndarray, image: np.ndarray | None) -> dict[str, np.ndarray]:
    """One row per cell id: area (pixels), centroid and bounding box (row/column, bbox max
    exclusive), perimeter, eccentricity, solidity and the raw image's mean/min/max inside
    the cell (empty when no image is given)."""
    from skimage.measure import regionprops_table

    lab = np.asarray(cells)
    if lab.ndim != 2 or lab.dtype.kind not in "ui":
        raise ValueError(f"cells must be a 2D integer id map, got {lab.dtype} {lab.shape}")
    grey = _grey(image, lab.shape)
    props = _PROPS if grey is not None else _PROPS[:-3]
    table = regionprops_table(lab.astype(np.int32, copy=False), grey, properties=props)
    out = {_RENAME.get(k, k): np.asarray(v) for k, v in table.items()}
    n = len(out["label"])
    for col in COLUMNS:
        out.setdefault(col, np.full(n, np.nan))
    integer = _INTEGER
    if grey is not None and grey.dtype.kind in "ui":  # an integer image's own values
        integer += ("min_intensity", "max_intensity")
    for col in integer:
        out[col] = np.rint(out[col]).astype(np.int64)
    return {c: out[c] for c in COLUMNS}


def summary_row(name: str, table: dict[str, np.ndarray]) -> dict[str, object]:
    """One image's line of ``cells_summary.csv``; ``name`` is the image's file name."""
    n = int(len(table["label"]))
    area = table["area_px"]
    return {
        "image": name,
        "cells": n,
        "mean_area_px": _plain(float(np.mean(area))) if n else "",
        "median_area_px": _plain(float(np.median(area))) if n else "",
        "total_area_px": int(np.sum(area)) if n else 0,
    }


def write_csv(path: str | os.PathLike[str], rows: list[dict[str, object]] | dict) -> None:
    """A measurement table (dict of columns) or a list of row dicts, written atomically."""
    if isinstance(rows, dict):
        cols = list(rows)
        n = len(rows[cols[0]]) if cols else 0
        items = [{c: _plain(rows[c][i]) for c in cols} for i in range(n)]
    else:
        cols = list(rows[0]) if rows else ["image", "cells"]
        items = [{c: _plain(v) for c, v in row.items()} for row in rows]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(items)
    atomic_write_text(Path(path), buf.getvalue())


def _plain(v: object) -> object:
    """A CSV cell: integers as integers, other numbers to ``_DECIMALS`` decimals, or below
    1 to ``_SIGNIFICANT`` significant digits."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        if np.isnan(v):
            return ""
        f = float(v)
        return round(f, _DECIMALS) if abs(f) >= 1 else float(f"{f:.{_SIGNIFICANT}g}")
    return v


def write_rois(path: str | os.PathLike[str], cells: np.ndarray) -> int:
    """A Fiji/ImageJ ROI set (.zip): one ROI per cell, named by the cell id. A cell of one
    piece without holes is a polygon along its edge; a cell in several pieces or with
    holes (a hand-drawn mask holds such: 134 cells of the 15 usiigaci masks) is a
    composite ROI of all its edges, filled even-odd as ImageJ fills one, so Fiji measures
    the cell's own pixels, as ``area_px`` counts them. Returns the number of ROIs."""
    import zipfile

    from roifile import ImagejRoi
    from skimage.measure import find_contours

    from cellseg_gui.core.lazy import ndimage as ndi

    lab = np.asarray(cells)
    buf = io.BytesIO()
    n = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, box in enumerate(ndi.find_objects(lab), start=1):
            if box is None:
                continue
            y0, x0 = box[0].start, box[1].start
            sub = np.pad(lab[box] == k, 1).astype(np.float32)
            # each edge on the pixels' corners: x, y from the image's top-left corner
            edges = [np.stack([c[:, 1] + x0 - 1 + 0.5, c[:, 0] + y0 - 1 + 0.5], axis=1)
                     for c in find_contours(sub, 0.5)]  # fmt: skip
            if not edges:
                continue
            if len(edges) == 1:
                roi = ImagejRoi.frompoints(edges[0])
            else:
                roi = _composite_roi(edges, box)
            roi.name = f"cell-{k:04d}"
            zf.writestr(f"{roi.name}.roi", roi.tobytes())
            n += 1
    atomic_write_bytes(Path(path), buf.getvalue())
    return n


def _composite_roi(edges: list[np.ndarray], box: tuple[slice, slice]) -> object:
    """An ImageJ composite (shape) ROI of closed ``edges`` (x, y arrays): its path as
    ImageJ stores one, a MOVETO, LINETOs and a CLOSE per edge (``ShapeRoi``'s segment
    codes 0, 1 and 4), in image coordinates, with the cell's bounding box."""
    from roifile import ROI_TYPE, ImagejRoi

    path: list[float] = []
    for xy in edges:
        path += [0.0, float(xy[0, 0]), float(xy[0, 1])]
        for x, y in xy[1:]:
            path += [1.0, float(x), float(y)]
        path.append(4.0)
    roi = ImagejRoi()
    roi.roitype = ROI_TYPE.RECT  # a composite ROI is stored as type 1 with a shape
    roi.multi_coordinates = np.asarray(path, np.float32)
    roi.shape_roi_size = len(path)
    roi.top, roi.left = box[0].start, box[1].start
    roi.bottom, roi.right = box[0].stop, box[1].stop
    return roi


def export_cells(
    folder: str | os.PathLike[str],
    stem: str,
    cells: np.ndarray,
    image: np.ndarray | None,
    *,
    measure: bool = True,
    rois: bool = True,
    image_name: str | None = None,
) -> tuple[dict[str, object], list[Path]]:
    """``STEM_cells.csv`` and ``STEM_rois.zip`` in ``folder``: what ``cellseg predict
    --measure --rois`` and the window's export both write. An image without cells gets no
    ROI set (Fiji's ROI Manager refuses an empty one); one left from an earlier export of
    the same image is removed. Returns the image's summary row
    (for ``cells_summary.csv``, the image named by ``image_name``, its file name, or by
    ``stem`` when not given) and the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    table = measure_cells(cells, image)
    if measure:
        write_csv(folder / f"{stem}_cells.csv", table)
        written.append(folder / f"{stem}_cells.csv")
    if rois:
        zpath = folder / f"{stem}_rois.zip"
        if len(table["label"]):
            write_rois(zpath, cells)
            written.append(zpath)
        else:  # Fiji refuses a ROI set without ROIs, and an older one would show other cells
            zpath.unlink(missing_ok=True)
    return summary_row(image_name or stem, table), written
