"""File > Export cells: per-cell measurements (CSV) and Fiji ROI sets, of the predicted
cells or of the cells in the masks (what a biologist measures after correcting them), for
the current image or all of them; the same files, through the same function
(``core.scores.measure.export_cells``), as ``cellseg predict --measure --rois``.

What to export is gathered on the GUI thread (the predictions, the masks being edited as
they stand); reading the images and the masks on disk, measuring and writing run on a
thread of their own when there is more than one image (15 usiigaci images froze the window
2 s), and the status bar says when they are done.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtWidgets import QFileDialog, QMainWindow, QMessageBox

from cellseg_gui.core.data.imageio import ImageReadError

SOURCES = ("prediction", "mask")


@dataclass(frozen=True)
class _Item:
    """One image to export: its cells, or the mask file to read them from."""

    name: str
    image_path: Path
    cells: np.ndarray | None = None  # the cells as they are (a prediction, an open mask)
    mask: np.ndarray | None = None  # a mask being edited, in its file's values
    mask_path: Path | None = None  # else the mask on disk
    mode: str = "auto"  # how the mask is read (the project's mask mode)


def _gather(window, names: list[str], source: str) -> tuple[list[_Item], list[str]]:
    """What to export of each of ``names``, and a problem line for each that has none."""
    items, problems = [], []
    project = window.project
    for name in names:
        image_path = Path(project.image_path(name))
        if source == "prediction":
            pred = window.prediction(name)
            if pred is None or pred.cells is None:
                problems.append(f"{name}: no predicted cells yet")
                continue
            items.append(_Item(name, image_path, cells=pred.cells))
            continue
        doc = window.workspace.document(name)
        if doc is not None:  # being edited: as it stands, saved or not
            items.append(_Item(name, image_path, mask=doc.stored(), mode=doc.mode))
        elif project.mask_path(name) is not None:
            items.append(_Item(name, image_path, mask_path=Path(project.mask_path(name)),
                               mode=project.mask_mode))  # fmt: skip
        else:
            problems.append(f"{name}: no mask")
    return items, problems


def _write(folder: Path, items: list[_Item]) -> tuple[list[Path], list[str], list[str]]:
    """Measure and write ``items`` into ``folder`` (any thread). Returns the files written,
    a problem line per image that could not be, and notes."""
    from cellseg_gui.core.data.imageio import read_image, read_mask
    from cellseg_gui.core.data.masks import as_instances, truth_cells
    from cellseg_gui.core.scores.measure import export_cells, write_csv

    written: list[Path] = []
    problems: list[str] = []
    notes: list[str] = []
    summary = []
    for it in items:
        try:
            raw = read_image(it.image_path, channels="keep")
            cells = it.cells
            if cells is None:
                mask = it.mask if it.mask is not None else read_mask(it.mask_path)
                if it.mode == "instances":  # the mask's own ids, whatever values it holds
                    cells, how = as_instances(mask, "instances")
                else:  # "auto": as scoring reads it (one value: a binary mask)
                    cells, how = truth_cells(mask, it.mode)
                if how != "instances":
                    notes.append(f"{it.name}: its {how} mask's cells are its connected pieces")
            # named by the image's file name, as the CLI names it
            row, files = export_cells(folder, it.name, cells, raw, image_name=it.image_path.name)
        except (ImageReadError, OSError, ValueError) as exc:
            problems.append(f"{it.name}: {exc}")
            continue
        summary.append(row)
        written += files
        if not row["cells"]:
            notes.append(f"{it.name}: no cells, so no ROI set")
    if summary:
        try:
            write_csv(folder / "cells_summary.csv", summary)
            written.append(folder / "cells_summary.csv")
        except OSError as exc:
            problems.append(f"cells_summary.csv: {exc}")
    return written, problems, notes


def export_cells_to(
    window, folder: Path, names: list[str], source: str = "prediction"
) -> tuple[list[Path], list[str], list[str]]:
    """Write the exports of ``names`` into ``folder`` now: the predicted cells, or with
    ``source="mask"`` the cells of their masks (instance ids; a binary or class mask's
    connected pieces). Returns the files written, one problem line per image that could
    not be, and notes (an image without cells gets no ROI set)."""
    items, problems = _gather(window, names, source)
    written, more, notes = _write(folder, items)
    return written, problems + more, notes


def _report(window: QMainWindow, folder: str, result: tuple) -> None:
    written, problems, notes = result
    text = f"Wrote {len(written)} file(s) to {folder}" + (
        f" ({'; '.join(notes)})." if notes else "."
    )
    if problems:
        text += "\n" + "\n".join(problems[:10])
    window.statusBar().showMessage(text.splitlines()[0], 8000)
    if problems:
        QMessageBox.warning(window, "Export cells", text)


def export_cells_dialog(window: QMainWindow, all_images: bool, source: str = "prediction") -> None:
    """Ask for a folder and export there; more than one image on a thread of its own."""
    from cellseg_gui.workers.background import BackgroundCalls

    if window.project is None:
        QMessageBox.information(window, "Export cells", "Open a folder of images first.")
        return
    if source == "prediction":
        names = list(window.predictions) if all_images else [window.current_name or ""]
    else:
        project = window.project
        names = project.names if all_images else [window.current_name or ""]
        names = [n for n in names if n and (project.mask_path(n) is not None
                                            or window.workspace.document(n) is not None)]  # fmt: skip
    names = [n for n in names if n]
    if not names:
        what = "Predict images first (Train or Predict)." if source == "prediction" else (
            "No image has a mask yet.")  # fmt: skip
        QMessageBox.information(window, "Export cells", what)
        return
    start = str(window.project.folder)
    folder = QFileDialog.getExistingDirectory(window, "Export cells to folder", start)
    if not folder:
        return
    items, problems = _gather(window, names, source)
    if len(items) <= 1:
        written, more, notes = _write(Path(folder), items)
        _report(window, folder, (written, problems + more, notes))
        return
    window.statusBar().showMessage(f"Exporting the cells of {len(items)} images to {folder}…")
    calls = BackgroundCalls("cell-export", parent=window)

    def done(fut) -> None:
        calls.shutdown()
        calls.deleteLater()
        error = fut.exception()
        if error is not None:
            _report(window, folder, ([], problems + [str(error)], []))
            return
        written, more, notes = fut.result()
        _report(window, folder, (written, problems + more, notes))

    calls.submit(_write, Path(folder), items, done=done)
