"""Main window: sample project, overlays seen in grabbed pixels, broken files, projects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyqtgraph  # noqa: E402,F401 - a test dependency: missing, the tests fail, never skip
import pytest
from PySide6.QtCore import QPointF, Qt  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

from cellseg_gui.core.data.imageio import read_mask  # noqa: E402
from cellseg_gui.core.data.maskwrite import write_mask  # noqa: E402
from cellseg_gui.core.data.project import open_project  # noqa: E402
from cellseg_gui.core.data.sample import make_sample  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
GREEN = (46, 204, 113)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Keep settings and generated data out of the user's folders."""
    monkeypatch.setenv("CELLSEG_SETTINGS_DIR", str(tmp_path / "settings"))
    monkeypatch.setenv("CELLSEG_NO_WARMUP", "1")


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return make_sample(tmp_path_factory.mktemp("sample"))


@pytest.fixture
def window(qtbot):
    from cellseg_gui.app.main_window import MainWindow

    win = MainWindow()
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.close()


def _colour_at(win, x: int, y: int) -> tuple[int, int, int]:
    """Screen colour of image pixel (x=column, y=row) in a grab of the canvas viewport."""
    c = win.canvas
    pt = c.view.mapFromScene(c.image_item.mapToScene(QPointF(x + 0.5, y + 0.5)))
    img = c.view.viewport().grab().toImage()
    col = img.pixelColor(pt)
    return col.red(), col.green(), col.blue()


def _near(a, b, tol=12) -> bool:
    return all(abs(int(p) - int(q)) <= tol for p, q in zip(a, b, strict=True))


def _inside(labels: np.ndarray, cls: int = 1, margin: int = 6) -> tuple[int, int]:
    core = ndi.binary_erosion(labels == cls, iterations=margin)
    ys, xs = np.nonzero(core)
    assert len(ys), "no cell interior to test on"
    return int(xs[len(xs) // 2]), int(ys[len(ys) // 2])


def _background(labels: np.ndarray) -> tuple[int, int]:
    far = ndi.binary_erosion(labels == 0, iterations=8)
    ys, xs = np.nonzero(far)
    return int(xs[len(xs) // 2]), int(ys[len(ys) // 2])


def _set(win, layer: str, visible: bool, opacity: int = 100, filled: bool = True) -> None:
    o = win.overlays
    o.checks[layer].setChecked(visible)
    o.sliders[layer].setValue(opacity)
    if layer in o.styles:
        o.styles[layer].setCurrentIndex(0 if filled else 1)


def test_sample_overlays_appear_where_the_mask_is_and_vanish_when_hidden(qtbot, window, sample):
    assert window.open_project(sample)
    assert len(window.project.names) == 14
    gt = window.canvas.gt
    assert gt is not None
    x, y = _inside(gt)
    bx, by = _background(gt)
    _set(window, "pred", False)
    _set(window, "gt", True)
    qtbot.wait(50)
    assert _near(_colour_at(window, x, y), GREEN)
    assert not _near(_colour_at(window, bx, by), GREEN, 40)
    _set(window, "gt", False)
    qtbot.wait(50)
    r, g, b = _colour_at(window, x, y)
    assert abs(r - g) < 10 and abs(g - b) < 10, "grey image expected once GT is hidden"

    # Prediction: an identical map shows green; an empty one with the difference view shows
    # the false-negative colour where the GT has cells.
    window.set_prediction(window.current_name, gt.copy(), None)
    _set(window, "pred", True, filled=True)
    qtbot.wait(50)
    assert _near(_colour_at(window, x, y), GREEN)
    _set(window, "pred", False)
    qtbot.wait(50)
    assert not _near(_colour_at(window, x, y), GREEN, 40)
    from cellseg_gui.widgets.canvas import FN_COLOR, FP_COLOR

    window.set_prediction(window.current_name, np.zeros_like(gt), None)
    _set(window, "diff", True)
    qtbot.wait(50)
    assert _near(_colour_at(window, x, y), FN_COLOR)
    fp = np.zeros_like(gt)
    fp[by - 3 : by + 4, bx - 3 : bx + 4] = 1
    window.set_prediction(window.current_name, fp, None)
    qtbot.wait(50)
    assert _near(_colour_at(window, bx, by), FP_COLOR)
    _set(window, "diff", False)
    qtbot.wait(50)
    assert not _near(_colour_at(window, bx, by), FP_COLOR, 40)


def test_page_down_moves_through_images_and_status_shows_pixel(qtbot, window, sample):
    window.open_project(sample)
    names = window.project.names
    seen = [window.current_name]
    for _ in range(3):
        with qtbot.waitSignal(window.currentImageChanged, timeout=5000):
            qtbot.keyClick(window.image_list, Qt.Key.Key_PageDown)
        seen.append(window.current_name)
    assert seen == names[:4]
    qtbot.keyClick(window.image_list, Qt.Key.Key_PageUp)
    assert window.current_name == names[2]
    window.show_image(names[-1])  # an image without a mask
    assert window.canvas.gt is None
    assert window.image_list.model_.entries[-1].has_gt is False
    assert "value" in window.canvas.describe(10, 20)


def test_refresh_region_recolours_only_that_rectangle(window, sample):
    window.open_project(sample)
    c = window.canvas
    window.overlays.checks["gt"].setChecked(True)
    assert c._shown["gt"] is c.gt  # filled: the label map itself, an edit needs only a redraw
    window.overlays.styles["gt"].setCurrentIndex(1)  # outline: a derived buffer
    before = c._shown["gt"].copy()
    c.gt[0:50, 0:50] = 1
    c.gt[100:110, 100:110] = 1  # changed outside the refreshed rectangle
    c.refresh_region("gt", 0, 0, 50, 50)
    after = c._shown["gt"]
    assert (after[49, 5:45] == 1).all() and (after[5:45, 49] == 1).all()
    assert (after[5:45, 5:45] == 0).all()
    np.testing.assert_array_equal(after[100:110, 100:110], before[100:110, 100:110])


def test_folder_with_a_corrupt_file_marks_it_and_loads_the_rest(window, tmp_path):
    folder = tmp_path / "data"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    img = (np.arange(64 * 80).reshape(64, 80) % 251).astype(np.uint8)
    write_mask(folder / "images" / "a.tif", img)
    write_mask(folder / "masks" / "a.tif", (img > 100).astype(np.uint8))
    (folder / "images" / "b.tif").write_bytes(b"II*\x00 this is not a tiff")
    write_mask(folder / "images" / "c.png", img)
    assert window.open_project(folder)
    model = window.image_list.model_
    model.make_all()
    errors = {e.name: e.error for e in model.entries}
    assert errors["b"] and "b.tif" in errors["b"]
    assert errors["a"] is None and errors["c"] is None
    row = model.row_of("b")
    assert "b.tif" in model.data(model.index(row), Qt.ItemDataRole.ToolTipRole)
    assert window.show_image("c") and window.current_name == "c"
    assert not window.show_image("b")
    assert window.current_name == "c"


def test_unreadable_folder_gives_a_dialog(window, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: shown.append(a[2]))
    assert not window.open_project(tmp_path / "missing")
    assert shown and "missing" in shown[0]


def _broken_project(tmp_path, sample) -> Path:
    import shutil

    folder = tmp_path / "broken"
    shutil.copytree(sample, folder)
    data = json.loads((folder / "cellseg-project.json").read_text())
    data["classes"] = "abc"
    data["settings"] = [1, 2]
    (folder / "cellseg-project.json").write_text(json.dumps(data))
    return folder


def test_a_broken_project_file_opens_with_defaults_and_says_what(window, tmp_path, sample):
    """ "classes": "abc" gave a traceback and an empty window with no message."""
    folder = _broken_project(tmp_path, sample)
    before = (folder / "cellseg-project.json").read_text()
    assert window.open_project(folder)
    assert window.image_list.model_.rowCount() == len(window.project.pairs) > 0
    assert window.current_name is not None
    notice = window.project_notice
    assert notice is not None and notice.isVisible() and not notice.isModal()
    said = notice.informativeText()
    assert "classes: Input should be a valid list (found 'abc')" in said
    assert "settings: Input should be a valid dictionary" in said
    assert "classes" in window.statusBar().currentMessage()
    assert (folder / "cellseg-project.json").read_text() == before


def test_a_broken_project_file_does_not_stop_a_screenshot(tmp_path, sample):
    folder = _broken_project(tmp_path, sample)
    shot = tmp_path / "shot.png"
    out = _run_gui([str(folder), "--screenshot", str(shot)], {"CELLSEG_NO_WARMUP": "1"}, tmp_path)
    assert out.returncode == 0, out.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_project_file_round_trip(tmp_path, sample):
    import shutil

    folder = tmp_path / "proj"
    shutil.copytree(sample, folder)
    p = open_project(folder)
    p.set_split({"cells_01": "val", "cells_02": "excluded"})
    p.verified["cells_03"] = True
    p.classes[1]["name"] = "nucleus"
    p.classes[1]["color"] = [1, 2, 3]
    p.settings["training"] = {"epochs": 3}
    p.models.append({"path": "models/run1.cellseg", "val_fg_jaccard": 0.8})
    p.extra["custom"] = "kept"
    p.save()
    q = open_project(folder / "cellseg-project.json")
    assert q.to_dict() == p.to_dict()
    assert q.get_split("cells_01") == "val" and q.excluded() == ["cells_02"]
    assert q.colors()[1] == (1, 2, 3)
    added = q.add_images([str(folder / "images" / "cells_01.tif").replace("proj", "proj")])
    assert added == ["cells_01"]


def test_dock_layout_persists(qtbot, tmp_path):
    from PySide6.QtWidgets import QLabel

    from cellseg_gui.app.main_window import MainWindow

    win = MainWindow()
    qtbot.addWidget(win)
    dock = win.add_dock("Extra", QLabel("x"), "left")
    win.show()
    dock.hide()
    win.close()
    win2 = MainWindow()
    qtbot.addWidget(win2)
    d2 = win2.add_dock("Extra", QLabel("x"), "left")
    win2._restore_layout()
    win2.show()
    assert not d2.isVisible()
    assert win2.docks["Display"].isVisible()
    win2.close()


def _run_gui(
    args: list[str], env_extra: dict[str, str], tmp_path: Path
) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", CELLSEG_SETTINGS_DIR=str(tmp_path / "s"))
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "cellseg_gui", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_window_code_does_not_import_torch_or_scipy_before_showing(tmp_path):
    out = _run_gui([], {"CELLSEG_STARTUP_PROBE": "1", "CELLSEG_NO_WARMUP": "1"}, tmp_path)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["torch_imported"] is False
    assert info["scipy_imported"] is False  # about 0.6 s of the one-second start-up
    assert info["pyqtgraph_imported"] is False  # the canvas comes in the second phase
    assert info["t0"] < info["shown"] < info["ready"]


def test_deferred_window_shows_a_shell_then_builds_the_canvas_and_docks(qtbot, sample):
    from cellseg_gui.app.main_window import MainWindow

    win = MainWindow(deferred=True)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    assert win.canvas is None and not win.ready
    assert "Loading" in win.splitter.widget(1).text()
    assert set(win.docks) == {"Display"}
    win.finish_setup()
    assert win.ready and win.splitter.widget(1) is win.canvas
    qtbot.wait(50)
    assert win.image_list.width() >= 240  # the docks took their room from the image
    assert {"Training", "Plots", "LR finder", "Gallery"} <= set(win.docks)
    assert win.open_project(sample) and win.canvas.raw is not None
    win.finish_setup()  # a second call changes nothing
    assert win.splitter.widget(1) is win.canvas
    win.close()


def test_closing_the_shell_before_it_is_built_keeps_the_saved_layout(qtbot):
    from cellseg_gui.app import settings as S
    from cellseg_gui.app.main_window import MainWindow

    full = MainWindow()
    qtbot.addWidget(full)
    full.show()
    qtbot.waitExposed(full)
    full.close()  # saves geometry and the dock layout
    saved = bytes(S.settings().value("state"))
    assert saved
    shell = MainWindow(deferred=True)
    qtbot.addWidget(shell)
    shell.show()
    qtbot.waitExposed(shell)
    shell.close()  # quit within the first second: no docks yet, nothing to save
    assert bytes(S.settings().value("state")) == saved


def test_torch_is_not_imported_when_the_window_first_shows(tmp_path):
    out = _run_gui([], {"CELLSEG_STARTUP_PROBE": "1", "CELLSEG_NO_WARMUP": "0"}, tmp_path)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["torch_imported"] is False


def test_screenshot_writes_a_png(tmp_path, sample):
    shot = tmp_path / "shot.png"
    out = _run_gui([str(sample), "--screenshot", str(shot)], {"CELLSEG_NO_WARMUP": "1"}, tmp_path)
    assert out.returncode == 0, out.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(shot).size[0] >= 800


def test_sample_is_deterministic_and_has_unmasked_images(tmp_path, sample):
    again = make_sample(tmp_path / "again")
    a = read_mask(sample / "masks" / "cells_03.png")
    b = read_mask(again / "masks" / "cells_03.png")
    np.testing.assert_array_equal(a, b)
    assert len(list((again / "images").iterdir())) == 14
    assert len(list((again / "masks").iterdir())) == 12
    assert a.max() > 5  # instance ids


def test_display_panel_keeps_to_its_rows_and_the_training_settings_get_the_height(qtbot, window):
    """The display options are four rows; the training settings were squeezed into about
    five rows below the run buttons. They have a dock of their own now (Settings, a tab
    beside Models), below the buttons, and extra height goes to it."""
    display, settings = window.docks["Display"], window.docks["Settings"]
    training = window.docks["Training"]
    assert settings.isVisible() and training.isVisible()
    assert window.tabifiedDockWidgets(training) == []  # the buttons stay in view
    assert window.docks["Models"] in window.tabifiedDockWidgets(settings)
    assert settings.widget().widget() is window.training.panel.form
    before = settings.height()
    window.resize(1400, 1000)  # taller: the extra height must go to the settings
    qtbot.waitUntil(lambda: settings.height() > before)
    qtbot.wait(50)
    assert display.widget().height() <= display.widget().sizeHint().height()
    assert settings.height() - before >= 100
    assert settings.height() > training.height()


def test_help_guide_and_shortcuts_come_from_the_real_menus(qtbot, window, sample):
    """The Help menu held only About; help.md was never shown and named menus that do not
    exist ("File > Export"). Every **Menu > Item** in the guide must be a real action."""
    import re

    from PySide6.QtWidgets import QTableWidget, QTextBrowser

    from cellseg_gui.app.help import guide_markdown, menu_paths

    window.open_project(sample)
    paths = {p for p, _ in menu_paths(window)}
    text = guide_markdown(window)
    named = re.findall(r"\*\*([A-Z][\w ]*(?: > [^*]+)+)\*\*", text)
    assert len(named) >= 15
    missing = [n for n in named if n not in paths]
    assert not missing, f"the guide names menu items that do not exist: {missing}"
    help_menu = window.menu("Help")
    by_text = {a.text().replace("&", ""): a for a in help_menu.actions()}
    assert by_text["Guide"].shortcut().toString() == "F1"
    by_text["Guide"].trigger()
    browser = next(w for w in window.findChildren(QTextBrowser) if w.objectName() == "guide")
    assert browser.isVisible() and "Training, step by step" in browser.toPlainText()
    assert "Ctrl+T" in browser.toPlainText()  # the shortcut table, made from the actions
    by_text["Keyboard shortcuts"].trigger()
    table = next(w for w in window.findChildren(QTableWidget) if w.objectName() == "shortcuts")
    rows = {table.item(r, 0).text(): table.item(r, 1).text() for r in range(table.rowCount())}
    assert rows["Train > Train"] == "Ctrl+T" and rows["File > Quit"] == "Ctrl+Q"
    assert rows["Edit > Undo"] == "Ctrl+Z"


def test_about_names_the_qt_binding_that_is_installed():
    from cellseg_gui.app.about import versions

    v = versions()
    assert v["PySide6"] != "not installed" and "Qt 6" in v["PySide6"]


def test_with_no_project_the_legend_names_no_classes(window, sample):
    window._update_legend()
    assert window.legend.entries == []  # it listed cell and boundary before any project
    window.open_project(sample)
    assert [n for n, _ in window.legend.entries][:1] == ["cell"]
    window.overlays.checks["diff"].setChecked(True)
    names = [n for n, _ in window.legend.entries]
    assert "extra (false positive)" in names and "missed (false negative)" in names


def test_the_list_and_canvas_redraw_from_the_workspace(qtbot, window, sample):
    """A prediction set on the Qt-free Workspace (as a training run or Predict all sets
    it) reaches the list and the canvas without anyone pushing into the widgets; one set
    for another image changes only that image's row; opening a project forgets them."""
    assert window.open_project(sample)
    names = window.project.names
    current, other = window.current_name, next(n for n in names if n != window.current_name)
    shape = window.canvas.gt.shape
    cells = np.zeros(shape, np.int32)
    cells[5:25, 5:25], cells[40:60, 40:60] = 1, 2
    window.workspace.set_prediction(current, (cells > 0).astype(np.uint8), None, cells)
    entry = {e.name: e for e in window.image_list.model_.entries}
    assert entry[current].n_cells == 2 and entry[current].has_pred
    assert window.canvas.cells is not None and int(window.canvas.cells.max()) == 2
    assert "2 cells predicted" in window.statusBar().currentMessage()
    window.workspace.set_prediction(other, np.zeros(shape, np.uint8), None, np.zeros(shape))
    assert entry[other].n_cells == 0 and int(window.canvas.cells.max()) == 2
    window.workspace.set_prediction(current, None)
    assert window.canvas.pred is None and not entry[current].has_pred
    assert window.open_project(sample) and window.predictions == {}


def test_reset_layout_after_the_shell_showed_first_keeps_every_panel(
    qtbot, monkeypatch, tmp_path
) -> None:
    """`cellseg-gui FOLDER` shows the window before its docks exist; the default layout
    was recorded then, with every dock and toolbar not yet shown, so View > Reset layout
    stripped the window to the Display panel, and the stripped layout came back on the
    next start (a helper trying the window found it)."""
    from PySide6.QtWidgets import QToolBar

    from cellseg_gui.app.main_window import MainWindow

    monkeypatch.setenv("CELLSEG_SETTINGS_DIR", str(tmp_path / "settings"))
    win = MainWindow(deferred=True)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    win.finish_setup()
    qtbot.wait(20)
    bars = win.findChildren(QToolBar)
    assert bars and all(b.isVisible() for b in bars)
    assert all(d.isVisible() for d in win.docks.values())
    win._reset_layout()
    qtbot.wait(20)
    hidden = [t for t, d in win.docks.items() if not d.isVisible()]
    hidden += [b.windowTitle() for b in bars if not b.isVisible()]
    assert hidden == []
    # a toolbar closed from its context menu comes back from View > Panels
    switches = {a.text(): a for a in win.docks_menu.actions()}
    for bar in bars:
        bar.hide()
        switches[bar.windowTitle()].trigger()
        assert bar.isVisible()
    win.editor.shutdown()
    win.training.shutdown()
    win.close()


def test_one_tab_bar_per_tab_group_after_restoring_a_layout(qtbot, monkeypatch, tmp_path) -> None:
    """Each restoreState (a start with a saved layout, View > Reset layout) left Qt's tab
    bar of the group before it on screen, at its old place: a second "Settings | Models |
    Advice" bar across the Models panel, one more with each reset (a helper saw three)."""
    from PySide6.QtWidgets import QTabBar

    from cellseg_gui.app.main_window import MainWindow

    monkeypatch.setenv("CELLSEG_SETTINGS_DIR", str(tmp_path / "settings"))

    def shown_bars(win) -> list[list[str]]:
        return sorted([b.tabText(i) for i in range(b.count())]
                      for b in win.findChildren(QTabBar) if b.isVisible() and b.count())  # fmt: skip

    groups = [["Advice", "Models", "Noisy labels", "Settings"], ["Gallery", "LR finder", "Plots"]]
    for _start in range(2):  # the second start restores the layout the first one saved
        win = MainWindow()
        qtbot.addWidget(win)
        win.resize(1400, 900)
        win.show()
        qtbot.waitExposed(win)
        assert sorted(sorted(t) for t in shown_bars(win)) == groups
        for _ in range(2):
            win._reset_layout()
            qtbot.wait(20)
            assert sorted(sorted(t) for t in shown_bars(win)) == groups
        win.editor.shutdown()
        win.training.shutdown()
        win.close()
