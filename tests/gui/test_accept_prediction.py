"""'Accept prediction' in the real window must never destroy hand annotation: predicted
cells are added on background only, as one undo step, with a message; the mask keeps the
dtype it was loaded in; the list's figures follow the new mask."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pytestqt")

from test_editing import _close, _open  # noqa: E402  (the real window, opened on a project)

from cellseg_gui.core.data.imageio import read_mask  # noqa: E402
from cellseg_gui.core.data.maskwrite import write_mask  # noqa: E402

H, W = 120, 160


def _png_project(folder: Path, mask: np.ndarray) -> Path:
    """One image and its instance mask, a uint8 PNG as hand-annotation tools write it."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    img = (np.random.default_rng(0).random(mask.shape) * 200).astype(np.uint8)
    write_mask(folder / "images" / "a.tif", img)
    Image.fromarray(mask.astype(np.uint8)).save(folder / "masks" / "a.png")
    return folder


def _row_text(win, name: str) -> str:
    m = win.image_list.model_
    return m.state_text(m.entries[m.row_of(name)])


def test_accept_adds_predicted_cells_on_background_and_keeps_hand_drawn_ones(
    qtbot, monkeypatch, tmp_path: Path
) -> None:
    hand = np.zeros((H, W), np.uint8)
    hand[10:40, 10:40] = 11  # two hand-drawn cells (ids as an annotation tool left them)
    hand[10:40, 60:90] = 17
    folder = _png_project(tmp_path / "p", hand)
    win = _open(qtbot, monkeypatch, folder, "a")
    cells = np.zeros((H, W), np.int32)
    cells[12:38, 12:38] = 1  # inside hand-drawn cell 11: left out
    cells[10:40, 84:104] = 2  # 30% over cell 17, 70% on background: added
    cells[60:90, 20:50] = 3  # on background: added
    cells[60:90, 100:130] = 4  # on background: added
    win.set_prediction("a", (cells > 0).astype(np.uint8), None, cells)
    win.workspace.set_scores("a", jaccard=0.5, ap50=0.25)  # as prediction scored the file
    assert "J 0.50" in _row_text(win, "a")
    said: list[str] = []
    win.editor.message.connect(said.append)

    win.editor.toolbar.accept_all.trigger()
    data = win.editor.docs["a"].data
    assert (data[10:40, 10:40] == 11).all() and (data[10:40, 60:90] == 17).all()  # untouched
    assert set(np.unique(data).tolist()) == {0, 11, 17, 18, 19, 20}  # new ids after the max
    assert (data[10:40, 90:104] == data[20, 95]).all() and data[20, 95] == 18
    assert "added 3 predicted cell(s)" in said[-1]
    assert "1 left out because cells already in the mask cover" in said[-1]
    assert said[-1] in win.statusBar().currentMessage()
    # the list's figures are those of the new mask, not the old "J 0.50 · AP 0.25"
    qtbot.waitUntil(lambda: "J 0.50" not in _row_text(win, "a"), timeout=3000)
    assert "AP 0.80" in _row_text(win, "a")  # 4 predicted cells match 4 of the 5 true

    win.editor.toolbar.accept_all.trigger()  # a second accept adds nothing
    assert np.array_equal(win.editor.docs["a"].data, data)
    assert "no cells added" in said[-1]
    win.editor.flush()
    on_disk = np.asarray(Image.open(folder / "masks" / "a.png"))
    assert on_disk.dtype == np.uint8  # the dtype it was loaded in (ids fit)
    assert np.array_equal(on_disk, data)

    win.editor.stack("a").undo()  # one undo step takes the whole accept back
    assert np.array_equal(win.editor.docs["a"].data, hand)
    _close(win)


def test_accept_says_when_the_ids_no_longer_fit_the_files_dtype(
    qtbot, monkeypatch, tmp_path: Path
) -> None:
    hand = np.zeros((H, W), np.uint8)
    hand[0:5, 0:5] = 250
    folder = _png_project(tmp_path / "p", hand)
    win = _open(qtbot, monkeypatch, folder, "a")
    cells = np.zeros((H, W), np.int32)
    for i in range(10):
        cells[20 + 9 * i : 27 + 9 * i, 40:60] = i + 1
    win.set_prediction("a", (cells > 0).astype(np.uint8), None, cells)
    win.editor.accept_prediction()
    msg = win.statusBar().currentMessage()
    assert "ids 251-260" in msg
    # first, where a status bar that cuts a long message keeps it; all of it on hover
    assert msg.startswith("Cell ids now reach 260, more than a 8-bit PNG holds (255): the mask "
                          "is saved as 16-bit.")  # fmt: skip
    assert win.statusBar().toolTip() == msg
    win.editor.flush()
    assert read_mask(folder / "masks" / "a.png").dtype == np.uint16
    _close(win)


def test_accept_on_a_class_mask_labels_background_only(qtbot, monkeypatch, tmp_path: Path):
    (tmp_path / "p" / "images").mkdir(parents=True)
    (tmp_path / "p" / "masks").mkdir()
    write_mask(tmp_path / "p" / "images" / "a.tif", np.full((H, W), 100, np.uint8))
    hand = np.zeros((H, W), np.uint8)
    hand[10:40, 10:40] = 2
    write_mask(tmp_path / "p" / "masks" / "a.tif", hand)
    win = _open(qtbot, monkeypatch, tmp_path / "p", "a")
    pred = np.zeros((H, W), np.uint8)
    pred[0:60, 0:60] = 1
    win.set_prediction("a", pred, None)
    win.editor.accept_prediction()
    data = win.editor.docs["a"].data
    assert (data[10:40, 10:40] == 2).all()  # the drawn class stays
    assert data[50, 50] == 1 and data[100, 100] == 0
    assert "labelled 2700 predicted pixel(s)" in win.statusBar().currentMessage()
    _close(win)


def test_accept_on_a_real_hand_annotated_mask_adds_nothing_it_already_has(
    qtbot, monkeypatch, tmp_path: Path, phc_dir: Path
) -> None:
    """set46 of usiigaci-phc (73 hand-drawn cells, a uint8 PNG): a prediction of those
    same cells (renumbered, as a model numbers them) adds no cell and destroys none."""
    folder = tmp_path / "phc"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    shutil.copy(phc_dir / "images" / "set46.tif", folder / "images")
    shutil.copy(phc_dir / "masks" / "set46.png", folder / "masks")
    hand = read_mask(folder / "masks" / "set46.png")
    win = _open(qtbot, monkeypatch, folder, "set46")
    ids = np.unique(hand[hand != 0])
    renumber = np.zeros(int(hand.max()) + 1, np.int32)
    renumber[ids] = np.arange(len(ids), 0, -1)
    cells = renumber[hand]
    win.set_prediction("set46", (cells > 0).astype(np.uint8), None, cells)
    win.editor.accept_prediction()
    assert np.array_equal(win.editor.docs["set46"].data, hand)
    assert f"all {len(ids)} predicted cell(s) are already covered" in (
        win.statusBar().currentMessage()
    )
    win.editor.flush()
    assert np.array_equal(np.asarray(Image.open(folder / "masks" / "set46.png")), hand)
    _close(win)


def test_a_predicted_cell_cut_by_a_hand_drawn_one_is_added_as_one_piece() -> None:
    """A hand-drawn cell across a predicted one left it in two pieces under one id (a
    reviewer's find): the added cell is its larger piece, if that is most of it."""
    from scipy import ndimage as ndi

    from cellseg_gui.app.accept_cells import add_cells

    mask = np.zeros((8, 12), np.uint8)
    mask[:, 7:9] = 5  # a hand-drawn cell, a vertical bar
    cells = np.zeros((8, 12), np.int32)
    cells[2:5, 0:11] = 1  # predicted across it: 7 columns left of it, 2 right of it
    got = add_cells(mask, cells, min_kept=0.5)
    new = got.values == 6
    assert got.added == 1 and ndi.label(new)[1] == 1
    assert new.sum() == 3 * 7 and not new[:, 9:].any()
    assert (got.values == 5).sum() == 16  # the hand-drawn cell untouched


def test_the_lists_figures_after_an_edit_read_the_mask_as_prediction_did(tmp_path) -> None:
    """An instance model scored against a 0..2 class mask: prediction reads the mask as
    the model was trained (each value one cell), and the list's figures after an edit
    read it the same way (they read it by the document's mode, the connected components,
    so the AP jumped from 0.33 to 1.0 with nothing changed: a reviewer's find)."""
    import tifffile

    from cellseg_gui.core.config import ModelConfig, NormConfig
    from cellseg_gui.core.editing.maskdoc import MaskDocument
    from cellseg_gui.core.model.bundle import make_meta
    from cellseg_gui.core.model.scoring import edited_mask_scores, score_image, truth_for_model

    meta = make_meta(ModelConfig(hidden=4, depth=2, n_classes=3), mask_mode="instances",
                     boundary_width=2, channels="grey", norm=NormConfig())  # fmt: skip
    stored = np.zeros((40, 60), np.uint8)
    stored[5:15, 5:15] = stored[25:37, 40:52] = 1  # two blobs, both of class 1
    stored[5:15, 15:17] = 2  # a strip of class 2 along the first
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, stored)
    doc = MaskDocument.load(path, mode="classes")
    cells = np.zeros_like(stored, np.int32)
    cells[5:15, 5:15], cells[25:37, 40:52] = 1, 2
    labels = (cells > 0).astype(np.uint8)
    target, truth, source, used = truth_for_model(stored, meta)
    predicted = score_image("m", labels, None, target, truth, "instances", source=source,
                            cells=cells)  # fmt: skip  # as core.model.batch scores it
    jaccard, ap = edited_mask_scores(doc.stored(), doc.mode, labels, cells, meta)
    assert ap == pytest.approx(predicted.ap50) == pytest.approx(1 / 3)
    assert jaccard == pytest.approx(predicted.fg_jaccard)
    assert edited_mask_scores(doc.stored(), doc.mode, labels, cells)[1] == 1.0 != ap  # own reading


def _scored_project(qtbot, monkeypatch, tmp_path: Path):
    """The window on an image with two hand-drawn cells, a prediction of both and the
    list's figures as prediction gave them (J 0.50 · AP 0.25, to see them change)."""
    from test_editing import _drag  # noqa: PLC0415

    hand = np.zeros((H, W), np.uint8)
    hand[10:40, 10:40], hand[60:90, 60:90] = 1, 2
    win = _open(qtbot, monkeypatch, _png_project(tmp_path / "p", hand), "a")
    cells = hand.astype(np.int32)
    win.set_prediction("a", (cells > 0).astype(np.uint8), None, cells)
    win.workspace.set_scores("a", jaccard=0.5, ap50=0.25)
    win.editor.toolbar.set_tool("brush")
    win.editor.toolbar.size_slider.setValue(5)

    def stroke(y: float) -> None:  # a new cell drawn on background, from x 110 to 150
        _drag(qtbot, win.canvas, [(110.5, y), (150.5, y)])

    return win, stroke


def test_the_lists_figures_after_a_stroke_are_figured_while_the_window_goes_on(
    qtbot, monkeypatch, tmp_path: Path
) -> None:
    """Matching the cells ran on the GUI thread after every stroke (on a 1-megapixel image
    0.59 s the first time, 10-23 ms after). The figures are now worked out on another
    thread: while they are (held here for 0.4 s), the window keeps handling events, and
    then the list shows the new mask's figures (a third true cell the prediction misses:
    AP 2/3)."""
    import threading
    import time

    from PySide6.QtCore import QTimer

    from cellseg_gui.app import rescoring

    win, stroke = _scored_project(qtbot, monkeypatch, tmp_path)
    threads: list[str] = []
    real = rescoring.edited_mask_scores

    def slow(*args, **kw):
        threads.append(threading.current_thread().name)
        time.sleep(0.4)
        return real(*args, **kw)

    monkeypatch.setattr(rescoring, "edited_mask_scores", slow)
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(20)
    stroke(110.5)
    qtbot.waitUntil(lambda: bool(threads), timeout=3000)  # the figures are being worked out
    started = time.perf_counter()
    qtbot.waitUntil(lambda: "AP 0.67" in _row_text(win, "a"), timeout=5000)
    timer.stop()
    assert threads == ["rescore_0"]  # one pass, and not on the GUI thread
    during = [t for t in ticks if started <= t <= started + 0.35]
    assert len(during) >= 5  # the GUI thread ran its timer all the while (20 ms)
    win.editor.flush()
    _close(win)


def test_figures_of_a_mask_changed_meanwhile_are_not_shown(qtbot, monkeypatch, tmp_path) -> None:
    """A stroke made while the figures of the one before are worked out: those figures
    describe a mask that no longer exists and are dropped; the list ends on the figures
    of the mask as it stands (two new cells the prediction misses: AP 2/4)."""
    win, stroke = _scored_project(qtbot, monkeypatch, tmp_path)
    gate, calls = _held_scoring(monkeypatch)
    shown: list[float | None] = []
    real_set = win.workspace.set_scores

    def record(name, **kw):
        shown.append(kw.get("ap50"))
        real_set(name, **kw)

    monkeypatch.setattr(win.workspace, "set_scores", record)
    stroke(110.5)
    qtbot.waitUntil(lambda: len(calls) == 1, timeout=3000)  # the first mask is being scored
    stroke(70.5)  # a second new cell meanwhile
    gate.set()
    qtbot.waitUntil(lambda: not win.editor.rescorer.busy, timeout=5000)
    assert len(calls) == 2
    assert shown == [0.5]  # 2 of 4 true cells; the first pass's 2/3 was never shown
    assert "AP 0.50" in _row_text(win, "a")
    win.editor.flush()
    _close(win)


def _held_scoring(monkeypatch):
    """The figures' function, made to wait on the first call until ``gate`` is set."""
    import threading

    from cellseg_gui.app import rescoring

    gate, calls = threading.Event(), []
    real = rescoring.edited_mask_scores

    def held(*args, **kw):
        calls.append(1)
        if len(calls) == 1:
            gate.wait(5)
        return real(*args, **kw)

    monkeypatch.setattr(rescoring, "edited_mask_scores", held)
    return gate, calls


def test_figures_of_a_prediction_replaced_meanwhile_are_not_shown(
    qtbot, monkeypatch, tmp_path
) -> None:
    """A new prediction arrives while the figures of the old one against the edited mask
    are worked out: those figures are dropped (the new prediction brings its own)."""
    win, stroke = _scored_project(qtbot, monkeypatch, tmp_path)
    gate, calls = _held_scoring(monkeypatch)
    stroke(110.5)
    qtbot.waitUntil(lambda: len(calls) == 1, timeout=3000)
    fresh = np.zeros((H, W), np.int32)
    win.set_prediction("a", fresh.astype(np.uint8), None, fresh)
    win.workspace.set_scores("a", jaccard=0.125, ap50=0.0)  # as prediction scored it
    gate.set()
    qtbot.waitUntil(lambda: not win.editor.rescorer.busy, timeout=5000)
    assert "J 0.12" in _row_text(win, "a")  # not the old prediction's 2/3
    win.editor.flush()
    _close(win)


def test_opening_another_project_drops_the_figures_under_way(qtbot, monkeypatch, tmp_path):
    """Figures still being worked out when another project opens never reach its list,
    even for an image of the same name; closing the window leaves no thread behind."""
    import threading

    win, stroke = _scored_project(qtbot, monkeypatch, tmp_path)
    gate, calls = _held_scoring(monkeypatch)
    stroke(110.5)
    qtbot.waitUntil(lambda: len(calls) == 1, timeout=3000)
    hand = np.zeros((H, W), np.uint8)
    hand[50:70, 50:70] = 1
    win.open_project(_png_project(tmp_path / "q", hand))  # its image is named "a" too
    qtbot.waitUntil(lambda: win.current_name == "a", timeout=3000)
    win.set_prediction("a", (hand > 0).astype(np.uint8), None, hand.astype(np.int32))
    win.workspace.set_scores("a", jaccard=0.5, ap50=0.25)
    gate.set()
    qtbot.wait(300)
    assert not win.editor.rescorer.busy
    assert "J 0.50" in _row_text(win, "a") and "AP 0.25" in _row_text(win, "a")
    _close(win)
    assert not [t for t in threading.enumerate() if t.name.startswith("rescore")]


def test_figures_that_fail_leave_the_list_as_it_was_and_say_why(
    qtbot, monkeypatch, tmp_path, caplog
) -> None:
    from cellseg_gui.app import rescoring

    win, stroke = _scored_project(qtbot, monkeypatch, tmp_path)

    def broken(*args, **kw):
        raise MemoryError("no room for the IoU matrix")

    monkeypatch.setattr(rescoring, "edited_mask_scores", broken)
    with caplog.at_level("WARNING", logger="cellseg_gui.app.rescoring"):
        stroke(110.5)
        qtbot.waitUntil(lambda: not win.editor.rescorer.busy, timeout=5000)
        qtbot.wait(50)
    assert "J 0.50" in _row_text(win, "a")
    assert "figuring a's scores after an edit failed: no room" in caplog.text
    win.editor.flush()
    _close(win)


def test_the_gallery_follows_the_lists_figures_and_difference_after_an_edit(
    qtbot, monkeypatch, tmp_path: Path
) -> None:
    """The gallery kept the figures and difference view of the prediction after the mask
    changed, beside the list's new ones (a user trying the window found set48 at "J 0.62 ·
    AP 0.55" in the gallery and "J 0.67 · AP 0.64" in the list after an accept). Now a
    stroke that draws a cell the prediction misses shows the list's AP in the gallery and
    the new cell as missed (cyan) in its thumbnail, and the order follows."""
    from cellseg_gui.core.events import Predicted
    from cellseg_gui.core.palette import FN_COLOR
    from cellseg_gui.core.scores.thumbnails import grey_thumbnail, overlay_difference

    win, stroke = _scored_project(qtbot, monkeypatch, tmp_path)
    doc, pred = win.editor.document("a"), win.workspace.prediction("a")
    grey = grey_thumbnail(win.read_raw("a"))
    win.training._on_predicted(Predicted(
        0, 1, "a", pred.labels, None, 0.5, cells=pred.cells, ap50=0.25,
        thumbnail=overlay_difference(grey, doc.stored(), pred.labels), thumbnail_grey=grey,
    ))  # fmt: skip
    gallery = win.training.gallery
    before = gallery.items["a"].thumbnail.copy()
    stroke(110.5)
    qtbot.waitUntil(lambda: "AP 0.67" in _row_text(win, "a"), timeout=5000)
    item = gallery.items["a"]
    assert (item.jaccard, item.ap50) == (win.workspace.scores("a").jaccard, pytest.approx(2 / 3))
    assert "AP 0.67" in gallery.list.item(0).text()
    missed = item.thumbnail[110, 130].astype(int)
    assert not np.array_equal(missed, before[110, 130])
    grey_px = int(grey[110, 130])
    assert np.abs(missed - (0.45 * grey_px + 0.55 * np.array(FN_COLOR))).max() <= 1
    win.editor.flush()
    _close(win)
