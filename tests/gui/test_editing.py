"""Mask editing in the real main window: real mouse events on the canvas's viewport."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")
pg = pytest.importorskip("pyqtgraph")

from PySide6.QtCore import QPoint, QPointF, Qt  # noqa: E402
from PySide6.QtWidgets import QGraphicsView  # noqa: E402

from cellseg_gui.app import main_window  # noqa: E402
from cellseg_gui.core.data.imageio import read_mask  # noqa: E402
from cellseg_gui.core.data.maskwrite import write_mask  # noqa: E402
from cellseg_gui.core.editing import edits as E  # noqa: E402

H, W = 120, 160
LEFT = Qt.MouseButton.LeftButton


def _project(folder: Path, masks: dict[str, np.ndarray | None]) -> Path:
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rng = np.random.default_rng(0)
    for name, mask in masks.items():
        img = (rng.random((H, W)) * 200).astype(np.uint8)
        write_mask(folder / "images" / f"{name}.tif", img)
        if mask is not None:
            write_mask(folder / "masks" / f"{name}.tif", mask)
    return folder


@pytest.fixture
def class_mask() -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[20:50, 20:60] = 1
    m[30:40, 30:40] = 0  # a hole
    m[70:100, 90:140] = 2
    return m


def _open(qtbot, monkeypatch, folder: Path, name: str, *, edit_anyway: bool = False):
    monkeypatch.setenv("CELLSEG_NO_WARMUP", "1")  # no torch-loading thread in these tests
    win = main_window.MainWindow()
    qtbot.addWidget(win)
    win.resize(900, 700)
    win.show()
    qtbot.waitExposed(win)
    win.open_project(folder)
    if edit_anyway:
        assert win.project.read_only
        next(b for b in win.lock_notice.buttons() if b.text() == "Edit anyway").click()
    assert not win.project.read_only, "the project was locked by another window"
    win.show_image(name)
    qtbot.waitUntil(lambda: win.current_name == name)
    return win


def _close(win) -> None:
    win.editor.shutdown()
    win.training.shutdown()
    win.close()  # and the project's lock goes with the window


@pytest.fixture
def window(qtbot, monkeypatch, tmp_path: Path, class_mask: np.ndarray):
    folder = _project(tmp_path / "proj", {"a": class_mask, "b": None})
    win = _open(qtbot, monkeypatch, folder, "a")
    win.editor.document("a")
    yield win
    _close(win)


# --------------------------------------------------------------------------- helpers


def _view(canvas) -> QGraphicsView:
    if isinstance(canvas, QGraphicsView):
        return canvas
    views = canvas.findChildren(QGraphicsView)
    assert views, "the canvas has no graphics view"
    return views[0]


def _image_item(canvas):
    view = _view(canvas)
    items = [i for i in view.scene().items() if isinstance(i, pg.ImageItem)]
    assert items, "no ImageItem on the canvas"
    return items[-1]


def _pos(canvas, x: float, y: float) -> QPoint:
    """Viewport position of image coordinate (x=column, y=row)."""
    view = _view(canvas)
    scene_pt = _image_item(canvas).mapToScene(QPointF(x, y))
    return view.mapFromScene(scene_pt)


def _drag(qtbot, canvas, points: list[tuple[float, float]]) -> None:
    vp = _view(canvas).viewport()
    qtbot.mousePress(vp, LEFT, pos=_pos(canvas, *points[0]))
    for p in points[1:]:
        qtbot.mouseMove(vp, _pos(canvas, *p))
    qtbot.mouseRelease(vp, LEFT, pos=_pos(canvas, *points[-1]))


def _click(qtbot, canvas, x: float, y: float) -> None:
    qtbot.mouseClick(_view(canvas).viewport(), LEFT, pos=_pos(canvas, x, y))


def _data(win) -> np.ndarray:
    return win.editor.docs[win.current_name].data


# --------------------------------------------------------------------------- tests


def test_drag_paints_the_pixels_under_it_and_nothing_else(qtbot, window, class_mask) -> None:
    ed = window.editor
    ed.toolbar.set_tool("brush")
    ed.toolbar.size_slider.setValue(5)
    ed.toolbar.set_class(2)
    _drag(qtbot, window.canvas, [(70.5, 60.5), (100.5, 60.5), (130.5, 60.5)])
    m = _data(window)
    expected = class_mask.copy()
    yy, xx = np.mgrid[:H, :W]
    d2 = np.where(xx < 70, (xx - 70) ** 2, np.where(xx > 130, (xx - 130) ** 2, 0))
    expected[d2 + (yy - 60) ** 2 <= 2.5**2] = 2
    np.testing.assert_array_equal(m, expected)
    assert ed.group.canUndo()


def test_undo_redo_restore_bit_for_bit(qtbot, window, class_mask) -> None:
    ed = window.editor
    ed.toolbar.set_tool("brush")
    ed.toolbar.size_slider.setValue(9)
    states = [class_mask.copy()]
    for y in (15.5, 55.5, 105.5):
        _drag(qtbot, window.canvas, [(10.5, y), (80.5, y + 5), (150.5, y)])
        states.append(_data(window).copy())
    assert ed.stacks["a"].count() == 3  # one step per stroke
    for want in reversed(states[:-1]):
        ed.undo_action.trigger()
        np.testing.assert_array_equal(_data(window), want)
    for want in states[1:]:
        ed.redo_action.trigger()
        np.testing.assert_array_equal(_data(window), want)


def test_fill_lasso_smooth_and_accept_prediction(qtbot, window, class_mask) -> None:
    ed = window.editor
    ed.toolbar.set_tool("fill")
    ed.toolbar.set_class(1)
    _click(qtbot, window.canvas, 35.5, 35.5)  # inside the hole
    assert (_data(window)[20:50, 20:60] == 1).all()
    assert _data(window)[0, 0] == 0

    ed.toolbar.set_tool("lasso")
    ed.toolbar.set_class(2)
    _drag(qtbot, window.canvas, [(100, 10), (150, 10), (150, 40), (100, 40)])
    m = _data(window)
    assert (m[12:38, 102:148] == 2).all() and m[5, 120] == 0 and m[45, 120] == 0

    noisy = _data(window).copy()
    noisy[20, 60:63] = 1  # a spike on an edge
    ed.push("a", E.accept_prediction(_data(window), noisy), "spike")
    ed.toolbar.strength.setValue(1.5)
    ed.toolbar.smooth_all.trigger()
    assert (_data(window)[20, 60:63] == 0).all()
    assert abs(int((_data(window) == 1).sum()) - 30 * 40) < 40

    pred = np.zeros((H, W), np.uint8)
    pred[60:110, 10:50] = 1
    window.set_prediction("a", pred, None)
    ed.toolbar.set_tool("accept")
    ed.toolbar.size_slider.setValue(11)
    before = _data(window).copy()
    _drag(qtbot, window.canvas, [(15.5, 85.5), (45.5, 85.5)])
    after = _data(window)
    assert (after[85, 12:48] == 1).all()
    assert (after[60:75] == before[60:75]).all()  # outside the brushed band: unchanged
    drawn = _data(window).copy()
    ed.toolbar.accept_all.trigger()  # the whole prediction, on background only
    np.testing.assert_array_equal(_data(window), np.where(drawn == 0, pred, drawn))


def _unsaveable(monkeypatch) -> None:
    """The folder refuses writes (tests run as root, whom chmod does not stop)."""

    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    # every mask write (the project's saves, the originals' copies, "save elsewhere")
    monkeypatch.setattr("cellseg_gui.core.editing.maskdoc.atomic_write_bytes", refuse)


def _paint(qtbot, window) -> None:
    """One brush stroke of class 2 across background, then every save attempted."""
    window.editor.toolbar.set_tool("brush")
    window.editor.toolbar.size_slider.setValue(5)
    window.editor.toolbar.set_class(2)
    _drag(qtbot, window.canvas, [(70.5, 60.5), (100.5, 60.5)])
    window.editor.flush()


@pytest.mark.parametrize("choice", ["cancel", "elsewhere", "discard"])
def test_quitting_with_masks_that_could_not_be_saved_asks_first(
    qtbot, window, class_mask, tmp_path, monkeypatch, choice
) -> None:
    """In a read-only folder the list showed '00 *' and Ctrl+Q closed without a word."""
    _unsaveable(monkeypatch)
    _paint(qtbot, window)
    assert window.editor.unsaved() == ["a"]
    painted = _data(window).copy()
    asked: list[list[str]] = []
    elsewhere = tmp_path / "rescue"
    elsewhere.mkdir()

    def ask(names):
        asked.append(names)
        if len(asked) > 1:
            return "cancel"
        monkeypatch.undo()  # the other folder is writable
        return choice

    window.editor.ask_unsaved = ask
    window.editor.choose_folder = lambda: elsewhere
    closed = window.close()
    assert asked[0] == ["a"]
    assert closed == (choice != "cancel")
    if choice == "cancel":
        assert window.isVisible() and window.editor.unsaved() == ["a"]
        assert window.training is not None and not window.training._closing
    if choice == "elsewhere":
        assert np.array_equal(read_mask(elsewhere / "a.tif"), painted)
        assert not np.array_equal(read_mask(window.project.mask_path("a")), painted)
    if choice == "discard":
        assert not list(elsewhere.iterdir())
    window.editor.ask_unsaved = lambda names: "discard"  # let the fixture close it


def test_a_mask_saved_elsewhere_failing_asks_again(qtbot, window, tmp_path, monkeypatch) -> None:
    _unsaveable(monkeypatch)
    _paint(qtbot, window)
    answers = iter(["elsewhere", "cancel"])
    window.editor.ask_unsaved = lambda names: next(answers)
    window.editor.choose_folder = lambda: tmp_path
    assert not window.close()  # the second folder failed too: asked again, then cancelled
    assert window.editor.unsaved() == ["a"]
    assert "Could not save the masks in" in window.statusBar().currentMessage()
    window.editor.ask_unsaved = lambda names: "discard"  # let the fixture close it


@pytest.mark.parametrize("choice", ["cancel", "discard"])
def test_opening_another_project_with_masks_that_could_not_be_saved_asks_first(
    qtbot, window, tmp_path, monkeypatch, choice
) -> None:
    """Switching projects asked nothing: the failed save's message was replaced by the new
    project's, and without a crash journal the edits were gone."""
    _unsaveable(monkeypatch)
    _paint(qtbot, window)
    other = _project(tmp_path / "other", {"c": None})
    asked: list[list[str]] = []
    window.editor.ask_unsaved = lambda names: asked.append(names) or choice
    opened = window.open_project(other)
    assert asked == [["a"]] and opened == (choice == "discard")
    if choice == "cancel":  # still here, edits and all
        assert window.project.names == ["a", "b"] and window.editor.unsaved() == ["a"]
        assert window.isWindowModified()
    else:
        assert window.project.names == ["c"] and not window.isWindowModified()
    window.editor.ask_unsaved = lambda names: "discard"  # let the fixture close it


def test_the_list_and_title_follow_the_workspace(qtbot, window, tmp_path) -> None:
    """Scores and modified marks set on the Workspace reach the list row and the title's
    [*]; opening another project clears both."""
    ws, model = window.workspace, window.image_list.model_
    ws.set_scores("b", jaccard=0.5, ap50=0.25)
    row = next(e for e in model.entries if e.name == "b")
    assert (row.val_jaccard, row.val_ap50) == (0.5, 0.25)
    _paint(qtbot, window)  # saved at once: clean again
    assert not window.isWindowModified()
    ws.set_modified("a", True)
    assert window.isWindowModified()
    window.editor.stacks["a"].setClean()  # what a save does
    ws.set_modified("a", False)
    assert not window.isWindowModified()
    ws.set_modified("a", True)
    window.editor.stacks["a"].setClean()
    window.open_project(_project(tmp_path / "other", {"c": None}))
    assert not window.isWindowModified() and window.project.names == ["c"]
    assert next(e for e in model.entries if e.name == "c").val_jaccard is None


def test_saved_file_equals_mask_in_memory_and_clean_marker(qtbot, window, tmp_path) -> None:
    ed = window.editor
    ed.toolbar.set_tool("eraser")
    _drag(qtbot, window.canvas, [(25.5, 25.5), (55.5, 45.5)])
    assert window.isWindowModified()
    qtbot.waitUntil(lambda: not window.isWindowModified(), timeout=5000)  # autosave
    path = tmp_path / "proj" / "masks" / "a.tif"
    np.testing.assert_array_equal(read_mask(path), _data(window))
    assert (tmp_path / "proj" / "masks" / ".cellseg-originals" / "a.tif").exists()
    ed.toolbar.restore.trigger()
    qtbot.waitUntil(lambda: not window.isWindowModified(), timeout=5000)
    np.testing.assert_array_equal(read_mask(path), _data(window))


def test_zoomed_and_panned_view_paints_under_the_cursor(qtbot, window, class_mask) -> None:
    view = _view(window.canvas)
    vb = next(i for i in view.scene().items() if isinstance(i, pg.ViewBox))
    vb.setRange(xRange=(100, 140), yRange=(5, 35), padding=0)  # zoomed in on a corner
    qtbot.wait(50)
    ed = window.editor
    ed.toolbar.set_tool("brush")
    ed.toolbar.size_slider.setValue(1)
    ed.toolbar.set_class(2)
    _drag(qtbot, window.canvas, [(110.5, 20.5), (130.5, 20.5)])
    changed = np.argwhere(_data(window) != class_mask)
    assert changed[:, 0].tolist() == [20] * 21
    assert changed[:, 1].tolist() == list(range(110, 131))


def test_new_mask_for_an_image_without_one(qtbot, window, tmp_path) -> None:
    window.show_image("b")
    qtbot.waitUntil(lambda: window.current_name == "b")
    ed = window.editor
    ed.toolbar.new_mask.trigger()
    path = tmp_path / "proj" / "masks" / "b.tif"
    assert path.exists() and not read_mask(path).any()
    ed.toolbar.set_tool("brush")
    _drag(qtbot, window.canvas, [(50.5, 50.5), (60.5, 50.5)])
    ed.save_current()
    np.testing.assert_array_equal(read_mask(path), _data(window))
    # Undo stacks are per image.
    window.show_image("a")
    qtbot.waitUntil(lambda: window.current_name == "a")
    assert not ed.group.canUndo()


def test_instance_masks_paint_cells(qtbot, monkeypatch, tmp_path: Path) -> None:
    inst = np.zeros((H, W), np.int32)
    inst[20:50, 20:50] = 50
    inst[20:50, 50:80] = 70
    folder = _project(tmp_path / "inst", {"c": inst})
    win = _open(qtbot, monkeypatch, folder, "c")
    ed = win.editor
    ed.toolbar.set_tool("brush")
    ed.toolbar.size_slider.setValue(5)
    doc = ed.document("c")
    assert doc.is_instances
    # The overlay shows the derived classes: cell 50's rim is boundary (2), its inside cell (1).
    assert win.canvas.gt is doc.display and doc.display[35, 35] == 1 and doc.display[20, 35] == 2
    _drag(qtbot, win.canvas, [(30.5, 45.5), (30.5, 60.5)])  # from inside cell 50: extends it
    assert doc.data[58, 30] == 50
    _drag(qtbot, win.canvas, [(120.5, 100.5), (130.5, 100.5)])  # on background: a new cell
    assert doc.data[100, 125] == 71
    ed.save_current()
    np.testing.assert_array_equal(read_mask(folder / "masks" / "c.tif"), doc.data)
    _close(win)


_SESSION = textwrap.dedent(
    """
    import os, sys
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    os.environ["CELLSEG_NO_WARMUP"] = "1"
    import numpy as np
    from PySide6.QtWidgets import QApplication
    from cellseg_gui.app.main_window import MainWindow
    from cellseg_gui.core.editing import edits as E
    app = QApplication([])
    win = MainWindow()
    win.open_project(sys.argv[1])
    names = ["a", "b"]
    ed = win.editor
    ed._timer.setInterval(1)
    print("ready", flush=True)
    k = 0
    while True:
        for name in names:
            k += 1
            win.show_image(name)
            app.processEvents()
            doc = ed.document(name, create=True)
            full = np.full(doc.data.shape, k % 4, doc.data.dtype)
            ed.push(name, E.accept_prediction(doc.data, full), "fill")
            app.processEvents()
    """
)


@pytest.mark.slow
def test_killing_the_app_mid_session_leaves_masks_readable(tmp_path: Path) -> None:
    folder = _project(tmp_path / "kill", {"a": np.zeros((H, W), np.uint8), "b": None})
    rng = np.random.default_rng(1)
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", _SESSION, str(folder)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(float(rng.uniform(0.3, 1.5)))
        finally:
            proc.kill()
            proc.wait()
        for name in ("a", "b"):
            path = folder / "masks" / f"{name}.tif"
            if path.exists():
                m = read_mask(path)
                assert m.shape == (H, W) and len(np.unique(m)) == 1


def test_a_mask_changed_by_another_program_is_merged_not_overwritten(
    qtbot, window, class_mask, tmp_path
) -> None:
    """Fiji (here: a plain write) changes the open mask; the window's next save used to
    replace it with the window's stale copy."""
    _paint(qtbot, window)  # saved: the window knows this version
    path = window.project.mask_path("a")
    outside = read_mask(path)
    outside[100:110, 0:20] = 1  # someone else's stroke, away from ours
    outside[60, 80] = 1  # and one pixel that our next stroke paints over too
    write_mask(path, outside)
    window.editor.toolbar.set_class(1)
    _drag(qtbot, window.canvas, [(70.5, 60.5), (90.5, 60.5)])  # our second stroke
    ours = _data(window).copy()
    window.editor.flush()
    on_disk = read_mask(path)
    assert (on_disk[100:110, 0:20] == 1).all()  # their stroke survived
    assert (on_disk[60, 72:89] == 1).all()  # ours too
    assert "changed outside this window" in window.editor.merged["a"]
    assert "changed outside this window" in window.statusBar().currentMessage()
    assert np.array_equal(_data(window), on_disk) and window.editor.unsaved() == []
    assert not np.array_equal(ours, on_disk)  # the window now shows their change as well


def test_undo_after_a_merge_cannot_take_the_other_writers_change_back_out(
    qtbot, window, class_mask
) -> None:
    _paint(qtbot, window)
    path = window.project.mask_path("a")
    outside = read_mask(path)
    outside[100:110, 0:20] = 1
    write_mask(path, outside)
    _drag(qtbot, window.canvas, [(70.5, 80.5), (90.5, 80.5)])
    window.editor.flush()
    assert "changed outside this window" in window.editor.merged["a"]
    assert not window.editor.stack("a").canUndo()  # the merge is not an undo step
    window.editor.undo_action.trigger()
    window.editor.flush()
    assert (read_mask(path)[100:110, 0:20] == 1).all()  # their stroke stays on disk


def test_a_second_save_while_one_is_running_does_not_crash(qtbot, window, monkeypatch) -> None:
    """A save asked for while a background save was pending swapped the future and the
    index, and raised inside a Qt slot."""
    _paint(qtbot, window)
    ed = window.editor
    _drag(qtbot, window.canvas, [(70.5, 80.5), (90.5, 80.5)])
    ed.save("a", wait=False)
    ed.save("a")  # the pending one is finished first, then this one
    ed.flush()
    assert ed.unsaved() == [] and "changed outside" not in window.statusBar().currentMessage()
    assert np.array_equal(read_mask(window.project.mask_path("a")), _data(window))


def test_a_normal_quit_leaves_no_crash_journal(qtbot, monkeypatch, tmp_path, class_mask) -> None:
    folder = _project(tmp_path / "quit", {"a": class_mask})
    win = _open(qtbot, monkeypatch, folder, "a")
    _paint(qtbot, win)
    journal = folder / "masks" / ".cellseg-journal" / "a.tif.journal"
    assert journal.exists()
    assert win.close()
    assert not journal.exists()  # nothing to recover: reopening says nothing
    again = _open(qtbot, monkeypatch, folder, "a")
    try:
        assert again.editor.recovered == {}
    finally:
        _close(again)


def test_two_windows_on_one_project_keep_both_windows_strokes(
    qtbot, monkeypatch, tmp_path, class_mask
) -> None:
    """Window B paints and saves; window A, which had the mask open, paints again: B's
    511 changed pixels became 0."""
    folder = _project(tmp_path / "two", {"a": class_mask})
    a = _open(qtbot, monkeypatch, folder, "a")
    b = _open(qtbot, monkeypatch, folder, "a", edit_anyway=True)
    try:
        a.editor.document("a")
        _paint(qtbot, b)  # B: class 2 along row 60, saved
        b_pixels = read_mask(folder / "masks" / "a.tif") == 2
        assert b_pixels.sum() > 100
        a.editor.toolbar.set_tool("brush")
        a.editor.toolbar.set_class(1)
        _drag(qtbot, a.canvas, [(20.5, 100.5), (60.5, 100.5)])  # A: elsewhere
        a.editor.flush()
        final = read_mask(folder / "masks" / "a.tif")
        assert (final[b_pixels] == 2).all()  # B's stroke kept
        assert (final[100, 25:55] == 1).all()  # and A's
        assert "changed outside this window" in a.editor.merged["a"]
        # one journal per mask, kept by the window that holds the project: B (editing
        # anyway) neither replayed A's live strokes as a crash's nor replaced A's file
        assert b.editor.journals == {} and "a" not in b.editor.recovered
    finally:
        _close(a)
        _close(b)


def test_a_second_window_is_told_and_opens_read_only(qtbot, monkeypatch, tmp_path,
                                                     class_mask) -> None:  # fmt: skip
    """Two windows on one project overwrote each other and neither said a word."""
    folder = _project(tmp_path / "two", {"a": class_mask})
    first = _open(qtbot, monkeypatch, folder, "a")
    second = main_window.MainWindow()
    qtbot.addWidget(second)
    second.show()
    try:
        assert second.open_project(folder)
        notice = second.lock_notice
        assert notice is not None and notice.isVisible() and not notice.isModal()
        assert f"process {os.getpid()}" in notice.text()  # it names the other window
        assert "read-only" in second.windowTitle() and second.project.read_only
        assert second.read_only_label.isVisible()
        second.show_image("a")
        before = (folder / "masks" / "a.tif").read_bytes()
        project_file = folder / "cellseg-project.json"
        had = project_file.read_bytes() if project_file.exists() else None
        _paint(qtbot, second)
        assert (folder / "masks" / "a.tif").read_bytes() == before  # nothing painted or saved
        second.project.save()
        assert (project_file.read_bytes() if project_file.exists() else None) == had
        edit = next(b for b in notice.buttons() if b.text() == "Edit anyway")
        edit.click()
        assert not second.project.read_only and not second.read_only_label.isVisible()
        _paint(qtbot, second)
        assert (folder / "masks" / "a.tif").read_bytes() != before
    finally:
        _close(second)
        _close(first)
    third = main_window.MainWindow()  # both windows have gone: not read-only now
    qtbot.addWidget(third)
    assert third.open_project(folder) and not third.project.read_only


def test_a_lock_left_by_a_killed_window_is_recovered(qtbot, tmp_path, class_mask) -> None:
    folder = _project(tmp_path / "stale", {"a": class_mask})
    code = (
        "import sys; from PySide6.QtCore import QLockFile\n"
        f"lock = QLockFile({str(folder / '.cellseg.lock')!r}); assert lock.tryLock(0)\n"
        "print('locked', flush=True); import time; time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
    finally:
        proc.kill()
        proc.wait()
    assert (folder / ".cellseg.lock").exists()
    win = main_window.MainWindow()
    qtbot.addWidget(win)
    assert win.open_project(folder) and not win.project.read_only  # not taken for a live one


_STROKES = textwrap.dedent(
    """
    import os, sys, time
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    os.environ["CELLSEG_NO_WARMUP"] = "1"
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication
    from cellseg_gui.app.main_window import MainWindow
    app = QApplication([])
    win = MainWindow()
    win.open_project(sys.argv[1])
    win.show_image(sys.argv[2])
    ed = win.editor
    ed._timer.setInterval(60_000)  # the worst moment: the stroke is over, no save yet
    ed.set_tool("brush")
    ed.toolbar.size_slider.setValue(5)
    ed.toolbar.set_class(2)
    left = {"buttons": Qt.MouseButton.LeftButton, "modifiers": Qt.KeyboardModifier.NoModifier}
    for k in range(int(sys.argv[3])):
        y = 10.5 + 12 * k
        ed._on_press(20.5, y, left)
        ed._on_drag(60.5, y, left)
        ed._on_release(100.5, y, left)
        print("stroke", k, flush=True)  # the stroke has ended: from here it must survive
    while True:
        app.processEvents()
        time.sleep(0.01)
    """
)


@pytest.mark.parametrize("name, strokes", [("a", 1), ("a", 3), ("b", 2)])
def test_kill_9_right_after_a_stroke_loses_no_stroke(qtbot, monkeypatch, tmp_path, class_mask,
                                                      name, strokes) -> None:  # fmt: skip
    """14 of 24 kills within a second of a stroke lost it, and reopening offered nothing.
    'b' has no mask file yet: the crash takes a new mask before its first save."""
    folder = _project(tmp_path / "crash", {"a": class_mask, "b": None})
    proc = subprocess.Popen(
        [sys.executable, "-c", _STROKES, str(folder), name, str(strokes)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for k in range(strokes):
            assert proc.stdout.readline().split() == ["stroke", str(k)]
    finally:
        proc.kill()  # SIGKILL at once, the moment the last stroke ended
        proc.wait()
    before = read_mask(folder / "masks" / "a.tif")
    assert np.array_equal(before, class_mask)  # nothing was saved: only the journal has it
    assert not (folder / "masks" / "b.tif").exists()

    win = _open(qtbot, monkeypatch, folder, name)
    try:
        data = _data(win)
        for k in range(strokes):
            row = int(10.5 + 12 * k)
            assert (data[row, 25:95] == 2).all(), k
        assert "restored" in win.editor.recovered[name] and win.editor.unsaved() == [name]
        assert "restored" in win.statusBar().currentMessage()
        win.editor.flush()  # saved into the project, and the journal emptied
        assert np.array_equal(read_mask(folder / "masks" / f"{name}.tif"), data)
    finally:
        _close(win)
    again = _open(qtbot, monkeypatch, folder, name)
    try:
        assert name not in again.editor.recovered  # nothing replayed twice
        assert np.array_equal(again.editor.document(name).data, data)
    finally:
        _close(again)


def test_a_journal_for_another_version_of_the_mask_is_set_aside(qtbot, monkeypatch, tmp_path,
                                                                 class_mask) -> None:  # fmt: skip
    folder = _project(tmp_path / "crash", {"a": class_mask})
    proc = subprocess.Popen([sys.executable, "-c", _STROKES, str(folder), "a", "1"],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().split() == ["stroke", "0"]
    finally:
        proc.kill()
        proc.wait()
    other = class_mask.copy()
    other[100:110, 0:20] = 1  # another program changed the mask after the crash
    write_mask(folder / "masks" / "a.tif", other)
    win = _open(qtbot, monkeypatch, folder, "a")
    try:
        assert np.array_equal(_data(win), other)  # never applied to the wrong mask
        assert "not applied" in win.editor.recovered["a"]
        assert (folder / "masks" / ".cellseg-journal" / "a.tif.journal.unused").is_file()
    finally:
        _close(win)


def test_predicted_cells_are_shown_counted_accepted_and_exported(
    qtbot, monkeypatch, tmp_path: Path
) -> None:
    """A prediction's cells in the real window: each cell its own colour (not the ground
    truth's), the count in the status bar and the list, 'Accept prediction' adds them with
    new ids, and File > Export writes their measurements and a Fiji ROI set."""
    import csv

    import roifile

    from cellseg_gui.app.cell_export import export_cells_to
    from cellseg_gui.widgets.canvas import CELL_LUT

    inst = np.zeros((H, W), np.int32)
    inst[20:50, 20:50] = 50  # an existing cell
    folder = _project(tmp_path / "inst", {"c": inst})
    win = _open(qtbot, monkeypatch, folder, "c")
    cells = np.zeros((H, W), np.int32)
    cells[70:100, 90:120], cells[70:100, 120:150] = 1, 2  # two touching predicted cells
    labels = (cells > 0).astype(np.uint8)
    win.set_prediction("c", labels, None, cells)
    # the predicted count beside the mask's own (one hand-drawn cell)
    assert win.statusBar().currentMessage() == "c: 2 cells predicted, 1 in the mask"
    row = win.image_list.model_.row_of("c")
    assert "2 cells" in win.image_list.model_.entries[row].name + win.image_list.model_.state_text(
        win.image_list.model_.entries[row]
    )
    win.overlays.styles["pred"].setCurrentIndex(0)  # filled
    assert win.canvas.filled["pred"]
    shown = win.canvas._shown["pred"]
    a, b = shown[85, 105], shown[85, 135]
    assert a != b and a and b
    assert tuple(CELL_LUT[a, :3]) != tuple(CELL_LUT[b, :3])
    assert tuple(CELL_LUT[a, :3]) != tuple(win.canvas.lut[1, :3])  # not the GT's colour
    from cellseg_gui.core.editing import edits as E

    ed = win.editor
    # accepting inside a region (the lasso) keeps the cells outside it...
    assert ed.accept_prediction(E.Region(60, 80, np.ones((50, 80), bool)))
    data = ed.docs["c"].data
    assert data[35, 35] == 50
    # ...and the accepted cells get new ids that collide with none already there
    assert {int(data[85, 105]), int(data[85, 135])} == {51, 52}
    written, problems, notes = export_cells_to(win, tmp_path / "out", ["c"])
    assert problems == [] and notes == []
    rows = list(csv.DictReader(open(tmp_path / "out" / "c_cells.csv")))
    assert [r["area_px"] for r in rows] == ["900", "900"]
    assert len(roifile.roiread(tmp_path / "out" / "c_rois.zip")) == 2
    summary = list(csv.DictReader(open(tmp_path / "out" / "cells_summary.csv")))
    assert summary[0]["cells"] == "2"
    assert summary[0]["image"] == win.project.image_path("c").name  # the CLI's naming
    # a prediction without cells: no ROI set (Fiji refuses an empty one), and the old goes
    none = np.zeros((H, W), np.int32)
    win.set_prediction("c", none.astype(np.uint8), None, none)
    written, problems, notes = export_cells_to(win, tmp_path / "out", ["c"])
    assert problems == [] and notes == ["c: no cells, so no ROI set"]
    assert not (tmp_path / "out" / "c_rois.zip").exists()
    assert list(csv.DictReader(open(tmp_path / "out" / "c_cells.csv"))) == []
    _close(win)


def test_export_cells_of_the_corrected_masks_on_a_thread_with_the_edits_as_they_stand(
    qtbot, monkeypatch, tmp_path: Path
) -> None:
    """Export cells wrote the raw prediction only, so the corrected segmentation could
    not be measured in the window, and exporting all images froze it (2 s for 15). The
    masks' cells are exported too (an edited mask as it stands, saved or not; another
    image's from its file), and more than one image is written on a thread of its own."""
    import csv
    import threading

    from PySide6.QtWidgets import QFileDialog

    from cellseg_gui.app import cell_export

    first = np.zeros((H, W), np.int32)
    first[20:50, 20:50], first[5:10, 100:110] = 17, 23  # ids, not class numbers
    second = np.zeros((H, W), np.int32)
    second[10:20, 10:20], second[60:80, 60:90] = 30, 40
    folder = _project(tmp_path / "inst", {"c": first, "d": second})
    win = _open(qtbot, monkeypatch, folder, "c")
    cells = np.zeros((H, W), np.int32)
    cells[70:100, 90:120] = 1
    win.set_prediction("c", (cells > 0).astype(np.uint8), None, cells)
    assert win.editor.accept_prediction()  # added on background; not saved yet
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(out))
    threads: list[str] = []
    real = cell_export._write

    def spy(*args):
        threads.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(cell_export, "_write", spy)
    cell_export.export_cells_dialog(win, True, "mask")
    qtbot.waitUntil(lambda: "Wrote" in win.statusBar().currentMessage(), timeout=10000)
    assert threads and threads[0].startswith("cell-export")
    rows = list(csv.DictReader(open(out / "c_cells.csv")))
    assert [(r["label"], r["area_px"]) for r in rows] == [
        ("17", "900"),
        ("23", "50"),
        ("24", "900"),
    ]
    rows = list(csv.DictReader(open(out / "d_cells.csv")))
    assert [(r["label"], r["area_px"]) for r in rows] == [("30", "100"), ("40", "600")]
    summary = list(csv.DictReader(open(out / "cells_summary.csv")))
    assert [(r["image"], r["cells"]) for r in summary] == [("c.tif", "3"), ("d.tif", "2")]
    assert win.statusBar().currentMessage() == f"Wrote 5 file(s) to {out}."
    win.editor.flush()
    _close(win)


def test_clicking_a_noisy_label_opens_its_image_zoomed_to_its_worst_region(qtbot, window):
    """README step 6: the noisy-labels list opens each image at its worst region (this
    raised a TypeError from the canvas and left the old zoom)."""
    window.show_image("b")
    window.canvas.fit()
    window.training.noisy.set_ranking([("a", 2.0, True)], {"a": (10, 20, 30, 40)}, 3)
    window.training.noisy.regionClicked.emit("a", (10, 20, 30, 40))
    assert window.current_name == "a"
    (x0, x1), (y0, y1) = window.canvas.vb.viewRange()
    # the crop (x 20..60, y 10..40) fills the view, with a little margin
    assert x0 <= 20 and x1 >= 60 and y0 <= 10 and y1 >= 40
    assert (x1 - x0) < W / 2  # zoomed in (the locked aspect may widen the other axis)


def test_the_editor_and_the_training_controller_need_only_a_workspace(
    qtbot, monkeypatch, tmp_path: Path, class_mask: np.ndarray
) -> None:
    """No window: a Workspace, a canvas and a parent widget are all they take, and what
    they change is on the Workspace for whoever draws it."""
    from PySide6.QtWidgets import QWidget

    from cellseg_gui.app.editing import Editor
    from cellseg_gui.app.training import TrainingController
    from cellseg_gui.core.data.imageio import read_image
    from cellseg_gui.core.data.project import open_project
    from cellseg_gui.core.workspace import Workspace
    from cellseg_gui.widgets.canvas import ImageCanvas

    monkeypatch.setenv("CELLSEG_NO_WARMUP", "1")
    folder = _project(tmp_path / "p", {"a": class_mask, "b": None})
    ws = Workspace()
    host = QWidget()
    qtbot.addWidget(host)
    canvas = ImageCanvas(host)
    ed = Editor(ws, canvas, host)
    tc = TrainingController(ws, host, save_edits=ed.flush)
    # no docks hold its panels here: let qtbot delete them while Qt is still up
    for w in (tc.panel, tc.panel.settings_view, tc.models, tc.advice, tc.noisy, tc.plots,
              tc.lr_plot, tc.gallery):  # fmt: skip
        qtbot.addWidget(w)
    said: list[str] = []
    ed.message.connect(said.append)
    ws.open(open_project(folder))
    ws.set_current("a")
    canvas.set_image(read_image(folder / "images" / "a.tif"))
    assert tc.panel.train_button.isEnabled()  # the controller heard of the project

    ed.set_tool("brush")
    ed.toolbar.set_class(2)
    left = {"buttons": LEFT, "modifiers": Qt.KeyboardModifier.NoModifier}
    canvas.mousePressed.emit(5.0, 110.0, left)
    canvas.mouseDragged.emit(60.0, 110.0, left)
    canvas.mouseReleased.emit(60.0, 110.0, left)
    doc = ws.document("a")
    assert doc is not None and (doc.data[110, 8:58] == 2).all()
    assert ws.modified == {"a"}  # the list and the title read this
    tc._snapshot()  # a run saves the edits first, through the callback it was given
    assert ws.modified == frozenset() and np.array_equal(
        read_mask(folder / "masks" / "a.tif")[110, 8:58], np.full(50, 2, np.uint8)
    )
    ed.accept_prediction()
    assert said == ["There is no prediction for this image yet."]
    shown: list[tuple[str, object]] = []
    tc.showRequested.connect(lambda name, region: shown.append((name, region)))
    tc.noisy.regionClicked.emit("b", (1, 2, 3, 4))
    assert shown == [("b", (1, 2, 3, 4))]
    canvas.mousePressed.emit(5.0, 100.0, left)  # a second stroke, not saved yet
    canvas.mouseReleased.emit(60.0, 100.0, left)
    assert ws.modified == {"a"}
    ws.close()  # the editor saves it and lets go while the project is still open
    assert (read_mask(folder / "masks" / "a.tif")[100, 8:58] == 2).all()
    assert ed.stacks == {}
    ed.shutdown()
    tc.shutdown()


def test_hovering_names_the_ground_truth_cell_under_the_mouse(qtbot, monkeypatch, tmp_path):
    """The status line named the predicted cell under the mouse ("cell 18 of 67") but
    only "GT cell" for the ground truth: its id in the mask is named too, from the file,
    and from the mask being edited as it stands."""
    mask = np.zeros((H, W), np.int32)
    mask[20:50, 20:50], mask[60:90, 60:90] = 17, 23
    folder = _project(tmp_path / "p", {"c": mask})
    win = _open(qtbot, monkeypatch, folder, "c")
    assert "GT cell, cell 17" in win.canvas.describe(30.5, 30.5)
    assert "GT cell, cell 23" in win.canvas.describe(70.5, 70.5)
    assert "cell 1" not in win.canvas.describe(5.5, 5.5)  # background: no id
    win.editor.toolbar.set_tool("brush")
    win.editor.toolbar.size_slider.setValue(5)
    _drag(qtbot, win.canvas, [(110.5, 100.5), (150.5, 100.5)])  # a new cell, id 24
    assert "cell 24" in win.canvas.describe(130.5, 100.5)
    win.editor.flush()
    _close(win)
