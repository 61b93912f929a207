"""What each tool paints: the edit policy of the brush, the fill and "accept prediction",
decided here in core from the document and the tool's settings, so the window only
forwards pointer positions (it used to decide, and core only carried out).

Pure functions of a :class:`~cellseg_gui.core.editing.maskdoc.MaskDocument` (its values and
mode) and plain settings; each returns a value or a :class:`~cellseg_gui.core.editing.patches.Patch`
that the caller pushes as one undo step. Qt-free, torch-free.
"""

from __future__ import annotations

import numpy as np

from cellseg_gui.core.editing import edits as E
from cellseg_gui.core.editing.maskdoc import MaskDocument

__all__ = ["fill_patch", "paint_value", "prediction_values"]


def paint_value(doc: MaskDocument, tool: str, current_class: int, x: float, y: float) -> int:
    """What a brush stroke starting at (x, y) paints: 0 for the eraser; the chosen class;
    for instance masks the cell the stroke starts in (extend it), or a new cell when it
    starts on background."""
    if tool == "eraser":
        return 0
    if not doc.is_instances:
        return int(current_class)
    under = E.pick(doc.data, x, y)
    if under:
        return int(under)
    return doc.next_instance_id()


def fill_patch(
    doc: MaskDocument, current_class: int, current_instance: int | None, x: float, y: float
) -> E.Patch | None:
    """A click of the fill tool. Class masks: flood the region with the chosen class.
    Instance masks: a hole or gap goes to the cell around it (else a new cell); a click
    on another cell merges it into the picked one; a click on the picked cell does
    nothing."""
    if not doc.is_instances:
        return E.flood_fill(doc.data, x, y, int(current_class))
    under = E.pick(doc.data, x, y)
    if under is None:
        return None
    if under == 0:
        comp = E.component_at(doc.data, x, y)
        value = E.touching_value(doc.data, comp) or doc.next_instance_id()
        return E.fill_region(doc.data, comp, value)
    if current_instance and current_instance != under:
        return E.flood_fill(doc.data, x, y, int(current_instance))
    return None


def prediction_values(
    doc: MaskDocument,
    labels: np.ndarray,
    cells: np.ndarray | None,
    region: E.Region | None = None,
) -> np.ndarray:
    """A prediction in the document's values: class ids, foreground for binary masks, or
    for instance masks the predicted cells (the model's own post-processing, as shown and
    as the CLI writes them), numbered after the ids already in the mask so none collide.
    Cells cut by ``region``'s edge keep only their inside part."""
    pred = np.asarray(labels)
    if doc.mode == "binary":
        return (pred != 0).astype(doc.data.dtype)
    if not doc.is_instances:
        return pred.astype(doc.data.dtype)
    if cells is not None:
        inst = np.array(cells, dtype=np.int32)
    else:
        from cellseg_gui.core.data.masks import classes_to_instances

        inst = classes_to_instances(pred).astype(np.int32)
    if region is not None:
        y0, x0, y1, x1 = region.bbox
        keep = np.zeros(inst.shape, bool)
        keep[y0:y1, x0:x1] = region.inside
        inst[~keep] = 0
    fg = inst != 0
    inst[fg] += doc.next_instance_id() - 1
    return inst
