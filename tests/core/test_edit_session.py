"""The tools' edit policy, in core: what a brush, fill or accept-prediction paints, on real
mask documents of each mode."""

from __future__ import annotations

import numpy as np

from cellseg_gui.core.editing import edits as E
from cellseg_gui.core.editing.edit_session import fill_patch, paint_value, prediction_values
from cellseg_gui.core.editing.maskdoc import MaskDocument


def _cells(tmp_path) -> MaskDocument:
    ids = np.zeros((30, 40), np.int32)
    ids[5:15, 5:15] = 3
    ids[8:12, 8:12] = 0  # a hole in cell 3
    ids[5:15, 20:30] = 7
    return MaskDocument(tmp_path / "m.tif", ids, "instances")


def test_the_brush_extends_the_cell_it_starts_in_or_starts_a_new_one(tmp_path) -> None:
    doc = _cells(tmp_path)
    assert paint_value(doc, "brush", 2, 6.5, 6.5) == 3
    assert paint_value(doc, "brush", 2, 35.5, 25.5) == 8  # background: after the largest id
    assert paint_value(doc, "eraser", 2, 6.5, 6.5) == 0
    classes = MaskDocument(tmp_path / "c.tif", np.zeros((10, 10), np.uint8), "classes")
    assert paint_value(classes, "brush", 2, 3.5, 3.5) == 2


def test_the_fill_gives_a_hole_to_its_cell_and_merges_a_clicked_cell(tmp_path) -> None:
    doc = _cells(tmp_path)
    hole = fill_patch(doc, 1, None, 9.5, 9.5)
    hole.apply(doc.data)
    assert (doc.data[8:12, 8:12] == 3).all()
    merged = fill_patch(doc, 1, 3, 25.5, 10.5)  # cell 3 picked, click on cell 7
    merged.apply(doc.data)
    assert set(np.unique(doc.data)) == {0, 3}
    assert fill_patch(doc, 1, 3, 6.5, 6.5) is None  # the picked cell itself: nothing


def test_accepted_cells_get_ids_after_those_in_the_mask_and_respect_the_region(tmp_path) -> None:
    doc = _cells(tmp_path)
    cells = np.zeros((30, 40), np.int32)
    cells[20:28, 2:10] = 1
    cells[20:28, 30:38] = 2
    labels = (cells > 0).astype(np.uint8)
    values = prediction_values(doc, labels, cells)
    assert set(np.unique(values)) == {0, 8, 9}  # never 3 or 7, the cells already there
    region = E.brush_region([(5.5, 24.5)], 9, (30, 40))
    inside = prediction_values(doc, labels, cells, region)
    assert set(np.unique(inside)) == {0, 8} and (inside[20:28, 30:38] == 0).all()
    binary = MaskDocument(tmp_path / "b.tif", np.zeros((30, 40), np.uint8), "binary")
    assert set(np.unique(prediction_values(binary, labels * 2, None))) == {0, 1}
