"""File > Export cells: per-cell measurements (CSV) and Fiji ROI sets of the predicted
cells, for the current image or every predicted one; the same files, through the same
function (``core.scores.measure.export_cells``), as ``cellseg predict --measure --rois``."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QMainWindow, QMessageBox

from cellseg_gui.core.data.imageio import ImageReadError


def export_cells_to(
    window, folder: Path, names: list[str]
) -> tuple[list[Path], list[str], list[str]]:
    """Write the exports of ``names`` (those with predicted cells) into ``folder``.
    Returns the files written, one problem line per image that could not be, and notes
    (an image without cells, which gets no ROI set)."""
    from cellseg_gui.core.scores.measure import export_cells, write_csv

    written: list[Path] = []
    problems: list[str] = []
    notes: list[str] = []
    summary = []
    for name in names:
        pred = window.prediction(name)
        if pred is None or pred.cells is None:
            problems.append(f"{name}: no predicted cells yet")
            continue
        try:
            raw = window.read_raw(name)
            image_name = Path(window.project.image_path(name)).name  # as the CLI names it
            row, files = export_cells(folder, name, pred.cells, raw, image_name=image_name)
        except (ImageReadError, OSError, ValueError) as exc:
            problems.append(f"{name}: {exc}")
            continue
        summary.append(row)
        written += files
        if not row["cells"]:
            notes.append(f"{name}: no cells, so no ROI set")
    if summary:
        write_csv(folder / "cells_summary.csv", summary)
        written.append(folder / "cells_summary.csv")
    return written, problems, notes


def export_cells_dialog(window: QMainWindow, all_images: bool) -> None:
    names = [n for n in window.predictions] if all_images else [window.current_name or ""]
    names = [n for n in names if n]
    if not names:
        QMessageBox.information(window, "Export cells", "Predict images first (Train or Predict).")
        return
    start = str(window.project.folder) if window.project else ""
    folder = QFileDialog.getExistingDirectory(window, "Export cells to folder", start)
    if not folder:
        return
    written, problems, notes = export_cells_to(window, Path(folder), names)
    text = f"Wrote {len(written)} file(s) to {folder}" + (
        f" ({'; '.join(notes)})." if notes else "."
    )
    if problems:
        text += "\n" + "\n".join(problems[:10])
    window.statusBar().showMessage(text.splitlines()[0], 8000)
    if problems:
        QMessageBox.warning(window, "Export cells", text)
