"""'Accept prediction' on the whole image: add what the model found where the mask is
still background, never over what is already annotated, and say what happened.

A user's hand-drawn cells are the most expensive thing in a project. Accepting used to
copy the prediction over the whole mask: 73 hand-drawn cells became the 74 predicted
ones, renumbered after the old maximum, with no message, and every further accept pushed
the ids higher. Here the existing cells stay as they are; a predicted cell keeps only
its background pixels and is left out when less than half of it is left (so accepting
twice adds nothing the second time); new ids follow the current maximum, one per added
cell. The brush tool "Paint prediction" is the explicit way to replace what is there.

Pure numpy (the policy; the editor pushes the result as one undo step). It would sit
with ``core.editing.edit_session.prediction_values``; it lives here while core is
edited by others.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "Accepted",
    "accept_message",
    "add_cells",
    "add_classes",
    "add_prediction",
    "stored_dtype",
    "widened_note",
]

MIN_KEPT = 0.5  # a predicted cell with less than this share of it on background is left out


@dataclass(frozen=True)
class Accepted:
    """What accepting a prediction would make of the mask."""

    values: np.ndarray  # the whole mask after accepting, in the mask's own values and dtype
    added: int  # cells added (instance masks) or pixels labelled (class masks)
    left_out: int  # predicted cells left out: cells already in the mask cover most of them
    first_id: int = 0  # the first new cell id (instance masks with cells added)
    kept_cells: int = 0  # cells that were in the mask already (instance masks)
    cells: bool = True  # instance masks (counts are cells) or class masks (counts are pixels)


def add_cells(mask: np.ndarray, cells: np.ndarray, min_kept: float = MIN_KEPT) -> Accepted:
    """Predicted ``cells`` (int ids, 0 = background) added to the instance ``mask`` where it
    is background. Each added cell gets a new id above the mask's maximum."""
    mask = np.asarray(mask)
    inst = np.asarray(cells).astype(np.int64, copy=False)
    if inst.shape != mask.shape:
        raise ValueError(f"prediction shape {inst.shape} != mask shape {mask.shape}")
    free = mask == 0
    total = np.bincount(inst.ravel())
    # a hand-drawn cell may cut a predicted one in two: it keeps its largest piece, as
    # every predicted cell is one piece (its measurements and ROI describe one region)
    from cellseg_gui.core.model.flow import largest_pieces

    inst = largest_pieces(np.where(free, inst, 0))
    on_free = np.bincount(inst.ravel(), minlength=total.size)
    present = total > 0
    present[0] = False
    keep = present & (on_free > 0) & (on_free >= min_kept * total)
    n_added = int(keep.sum())
    first = int(mask.max(initial=0)) + 1
    new_id = np.zeros(total.size, np.int64)
    new_id[keep] = np.arange(first, first + n_added)
    out = mask.copy()
    where = (inst > 0) & keep[inst]
    out[where] = new_id[inst[where]].astype(mask.dtype)
    existing = int(np.unique(mask[mask != 0]).size)
    return Accepted(out, n_added, int(present.sum()) - n_added, first, existing)


def add_classes(mask: np.ndarray, labels: np.ndarray) -> Accepted:
    """A predicted class map written into a class (or 0/1) ``mask`` on background only."""
    mask = np.asarray(mask)
    labels = np.asarray(labels)
    if labels.shape != mask.shape:
        raise ValueError(f"prediction shape {labels.shape} != mask shape {mask.shape}")
    where = (mask == 0) & (labels != 0)
    out = mask.copy()
    out[where] = labels[where].astype(mask.dtype)
    covered = int(np.count_nonzero((mask != 0) & (labels != 0) & (mask != labels)))
    return Accepted(out, int(where.sum()), covered, cells=False)


def add_prediction(
    mask: np.ndarray, mode: str, labels: np.ndarray, cells: np.ndarray | None
) -> Accepted:
    """The prediction added to a mask of ``mode`` ("instances", "binary", "classes")."""
    if mode == "instances":
        if cells is None:
            from cellseg_gui.core.data.masks import classes_to_instances

            cells = classes_to_instances(np.asarray(labels))
        return add_cells(mask, cells)
    if mode == "binary":
        return add_classes(mask, (np.asarray(labels) != 0).astype(np.uint8))
    return add_classes(mask, labels)


def stored_dtype(path: Path) -> np.dtype | None:
    """The dtype the mask file was loaded in (its kept original's, which the saver keeps),
    or None for a mask not written yet."""
    from cellseg_gui.core.data.imageio import image_info
    from cellseg_gui.core.editing.maskdoc import original_path

    for p in (original_path(path), path):
        if p.is_file():
            try:
                return np.dtype(image_info(p)["dtype"])
            except (OSError, ValueError):
                return None
    return None


def widened_note(path: Path, highest: int) -> str:
    """What the user must be told when the new ids no longer fit the file's dtype."""
    dtype = stored_dtype(path)
    if dtype is None or dtype.kind not in "ui" or highest <= np.iinfo(dtype).max:
        return ""
    png = path.suffix.lower() == ".png"
    wide = "16-bit" if png or highest <= np.iinfo(np.uint16).max else "32-bit"
    return (
        f" Cell ids now reach {highest}, more than a {dtype.itemsize * 8}-bit "
        f"{'PNG' if png else 'TIFF'} holds ({np.iinfo(dtype).max}): the mask is saved as {wide}."
    )


def accept_message(name: str, acc: Accepted) -> str:
    """The status-bar line after accepting: how much was added, and what was left out."""
    if not acc.cells:
        if not acc.added:
            return f"{name}: nothing added; the mask already labels every predicted pixel."
        kept = (
            f" {acc.left_out} predicted pixel(s) already labelled otherwise were kept as drawn."
            if acc.left_out
            else ""
        )
        return (
            f"{name}: labelled {acc.added} predicted pixel(s) where the mask was background;"
            f" what was drawn is kept.{kept} Ctrl+Z undoes."
        )
    if not acc.added and not acc.left_out:
        return f"{name}: the prediction has no cells to add."
    if not acc.added:
        return (
            f"{name}: no cells added; all {acc.left_out} predicted cell(s) are already "
            "covered by cells in the mask."
        )
    last = acc.first_id + acc.added - 1
    ids = f"id {acc.first_id}" if acc.added == 1 else f"ids {acc.first_id}-{last}"
    out = f"{name}: added {acc.added} predicted cell(s) ({ids}) where the mask was background"
    if acc.kept_cells:
        out += f"; the {acc.kept_cells} cell(s) already there are kept"
    if acc.left_out:
        out += f"; {acc.left_out} left out because cells already in the mask cover most of them"
    return out + ". Ctrl+Z undoes."
