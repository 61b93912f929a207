"""Predicted cells are drawn a colour each: the legend must show several colours, and no
cell may be drawn in (or near) a colour the ground truth's overlay uses."""

from __future__ import annotations

import colorsys
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtWidgets import QLabel  # noqa: E402

from cellseg_gui.core.data.maskwrite import write_mask  # noqa: E402

H, W = 60, 80


def _hue(rgb) -> float:
    return colorsys.rgb_to_hsv(*(int(c) / 255 for c in rgb[:3]))[0]


def _hue_distance(a: float, b: float) -> float:
    d = abs(a - b) % 1.0
    return min(d, 1.0 - d)


def _window(qtbot, monkeypatch, folder: Path):
    from cellseg_gui.app.main_window import MainWindow

    monkeypatch.setenv("CELLSEG_NO_WARMUP", "1")
    monkeypatch.setenv("CELLSEG_SETTINGS_DIR", str(folder.parent / "settings"))
    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(1000, 700)
    w.show()
    assert w.open_project(folder)
    w.show_image("a")
    qtbot.waitUntil(lambda: w.current_name == "a")
    return w


def _project(folder: Path, classes: list[dict] | None = None) -> Path:
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    write_mask(folder / "images" / "a.tif", np.full((H, W), 50, np.uint8))
    mask = np.zeros((H, W), np.uint8)
    mask[5:20, 5:20] = 1
    write_mask(folder / "masks" / "a.tif", mask)
    if classes is not None:
        proj = {"format": "cellseg-project", "version": 1, "name": "p", "classes": classes}
        (folder / "cellseg-project.json").write_text(json.dumps(proj))
    return folder


def _drawn_cell_colours(w) -> list[tuple[int, int, int]]:
    """Every colour the prediction layer draws a cell id in (its colour table, as painted)."""
    table = w.canvas.layers["pred"]._table
    return [((v >> 16) & 255, (v >> 8) & 255, v & 255) for v in table[1:]]


def _predict(w) -> None:
    cells = np.zeros((H, W), np.int32)
    for i in range(12):
        cells[30:50, 2 + 6 * i : 7 + 6 * i] = i + 1
    w.set_prediction("a", (cells > 0).astype(np.uint8), None, cells)


def _legend_swatch(w, text: str) -> set[tuple[int, int, int]]:
    grid = w.legend.grid
    for row in range(grid.rowCount()):
        label = grid.itemAtPosition(row, 1)
        if label is not None and label.widget().text() == text:
            swatch: QLabel = grid.itemAtPosition(row, 0).widget()
            img = swatch.pixmap().toImage()
            return {
                (c.red(), c.green(), c.blue())
                for x in range(img.width())
                for c in [img.pixelColor(x, img.height() // 2)]
            }
    raise AssertionError(f"no legend row {text!r}: {w.legend.entries}")


def test_the_legend_shows_the_cells_in_several_colours(qtbot, monkeypatch, tmp_path) -> None:
    w = _window(qtbot, monkeypatch, _project(tmp_path / "p"))
    _predict(w)
    colours = _legend_swatch(w, "predicted cells (a colour each)")
    assert len(colours) >= 3  # not one red square
    w.editor.shutdown()
    w.training.shutdown()
    w.close()


def test_no_cell_is_drawn_near_a_ground_truth_colour(qtbot, monkeypatch, tmp_path) -> None:
    """The default project: green cells and a yellow boundary class; predicted cells came
    out yellow and read as the ground truth's boundary."""
    w = _window(qtbot, monkeypatch, _project(tmp_path / "p"))
    _predict(w)
    shown = w.canvas._shown["pred"]
    drawn = {int(v) for v in np.unique(shown) if v}
    assert len(drawn) >= 10
    gt = [w.canvas.lut[k, :3] for k in (1, 2)]  # cell green, boundary yellow
    for idx, rgb in enumerate(_drawn_cell_colours(w), 1):  # every colour a cell can get
        for c in gt:
            assert _hue_distance(_hue(rgb), _hue(c)) > 0.08, (idx, rgb)
    w.editor.shutdown()
    w.training.shutdown()
    w.close()


def test_cells_keep_clear_of_a_projects_own_class_colours(qtbot, monkeypatch, tmp_path) -> None:
    classes = [
        {"name": "background", "color": [0, 0, 0]},
        {"name": "cell", "color": [230, 40, 40]},  # red
        {"name": "edge", "color": [40, 90, 230]},  # blue
    ]
    w = _window(qtbot, monkeypatch, _project(tmp_path / "p", classes))
    _predict(w)
    for idx, rgb in enumerate(_drawn_cell_colours(w), 1):
        for c in ((230, 40, 40), (40, 90, 230)):
            assert _hue_distance(_hue(rgb), _hue(c)) > 0.08, (idx, rgb)
    w.editor.shutdown()
    w.training.shutdown()
    w.close()


def test_neighbouring_cells_differ_and_no_cell_looks_like_the_difference_view(
    qtbot, monkeypatch, tmp_path
) -> None:
    """Colours followed the ids alone, so two touching cells could be two blues a user
    could not tell apart (found on set46 of usiigaci-phc), and a magenta or cyan cell read
    as an extra or missed pixel of the difference view shown over it."""
    from cellseg_gui.core.palette import FN_COLOR, FP_COLOR

    w = _window(qtbot, monkeypatch, _project(tmp_path / "p"))
    _predict(w)  # twelve cells side by side, one pixel apart
    shown, table = w.canvas._shown["pred"], w.canvas.cell_lut
    drawn = [int(shown[40, 2 + 6 * i]) for i in range(12)]  # each outline's left edge
    assert all(drawn)
    rgb = table[drawn, :3].astype(float)
    apart = np.sqrt(((rgb[1:] - rgb[:-1]) ** 2).sum(1))
    assert apart.min() >= 100, apart  # RGB distance of side-by-side cells
    for idx, colour in enumerate(_drawn_cell_colours(w), 1):
        for c in (FP_COLOR, FN_COLOR):
            assert _hue_distance(_hue(colour), _hue(c)) > 0.045, (idx, colour)
    w.editor.shutdown()
    w.training.shutdown()
    w.close()


def test_two_touching_cells_whose_ids_share_a_colour_are_drawn_apart() -> None:
    """The two ids whose own colours are the closest, touching: drawn far apart."""
    from cellseg_gui.widgets.canvas import CELL_LUT, cell_index

    rgb = CELL_LUT[1:, :3].astype(float)
    dist = np.sqrt(((rgb[:, None] - rgb[None]) ** 2).sum(-1)) + np.eye(255) * 1e9
    a, b = (int(i) + 1 for i in np.unravel_index(np.argmin(dist), dist.shape))
    assert dist[a - 1, b - 1] < 40  # by id alone they look alike
    cells = np.zeros((20, 20), np.int32)
    cells[:, :10], cells[:, 10:] = a, b
    idx = cell_index(cells, CELL_LUT)
    got = CELL_LUT[[idx[5, 5], idx[5, 15]], :3].astype(float)
    assert np.sqrt(((got[0] - got[1]) ** 2).sum()) >= 100


def test_a_prediction_shown_again_keeps_its_colours_without_working_them_out_again(
    qtbot, monkeypatch
) -> None:
    """Every image switch worked the neighbours out again (0.5 s for 1500 cells on a
    4096^2 image): the colours of the last predictions shown are remembered."""
    import cellseg_gui.widgets.canvas as C

    c = C.ImageCanvas()
    qtbot.addWidget(c)
    c.set_image(np.zeros((H, W), np.uint16))
    calls = []
    real = C.cell_index
    monkeypatch.setattr(C, "cell_index", lambda *a: calls.append(1) or real(*a))
    one, two = np.zeros((H, W), np.int32), np.zeros((H, W), np.int32)
    one[5:20, 5:20], two[30:50, 30:50] = 1, 1
    for cells in (one, two, one, two):
        c.set_prediction((cells > 0).astype(np.uint8), None, cells)
    assert len(calls) == 2
    shown = c._cells_index
    c.set_palette([(0, 0, 0), (230, 40, 40), (40, 90, 230)], ["bg", "a", "b"])  # new colours
    assert len(calls) == 3 and c._cells_index is not shown
