"""The training helper with the real engine and data layer, in a stand-in window (the real
window is covered by test_training_panel.py): Train ends with a model in models/, every
image is predicted after the run, Find LR fills its plot, Predict updates the overlay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from test_training_controller import real_window  # noqa: E402

TINY = {"model.hidden": 4, "model.depth": 2, "crop": 64, "batch_size": 2, "steps_per_epoch": 3,
        "epochs": 2, "patience": 0, "device": "cpu", "tile": 128}  # fmt: skip


def make_folder(root: Path, n: int = 4, size: int = 80) -> Path:
    from cellseg_gui.core.data.maskwrite import write_mask

    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        inst = np.zeros((size, size), np.uint16)
        for k in range(1, 6):
            cy, cx = rng.integers(12, size - 12, 2)
            inst[(yy - cy) ** 2 + (xx - cx) ** 2 < 64] = k
        img = (inst > 0) * 120 + rng.integers(0, 60, (size, size))
        write_mask(root / "images" / f"cell{i}.tif", img.astype(np.uint16))
        write_mask(root / "masks" / f"cell{i}.tif", inst)
    return root


@pytest.fixture
def win(qtbot, tmp_path, monkeypatch):
    w = real_window(qtbot, monkeypatch, make_folder(tmp_path / "proj"))
    w.show_image("cell0")
    t = w.training
    t.panel.form.apply_changes(TINY)
    yield w
    t.shutdown()


def test_train_predict_all_and_find_lr_with_the_real_engine(win, qtbot):
    t = win.training
    with qtbot.waitSignal(
        t.jobFinished, timeout=120000, check_params_cb=lambda k, e: k == "fit"
    ) as sig:
        qtbot.mouseClick(t.panel.train_button, Qt.MouseButton.LeftButton)
    ev = sig.args[1]
    assert ev.ok, ev.message
    qtbot.waitUntil(
        lambda: t.plots.point_count("step_loss") >= 6 and t.plots.point_count("val_j") == 2,
        timeout=3000,
    )
    assert Path(t.active_model).parent == win.project.folder / "models"
    assert t.models.table.rowCount() == 1
    assert t.noisy.names()  # per-image losses arrived
    # every image is predicted in the background after the run
    qtbot.waitUntil(lambda: len(win.predictions) == 4 and t.bg_worker.is_done(), timeout=120000)
    assert set(win.predictions) == {f"cell{i}" for i in range(4)}
    assert len(t.gallery.names()) == 4
    # the split lives in the project folder and is reused
    first_val = list(ev.result["split"]["val"])
    assert first_val

    win.workspace.clear_predictions()
    assert win.predictions == {}
    with qtbot.waitSignal(t.jobFinished, timeout=60000):
        t.panel.predict_action.trigger()
    assert list(win.predictions) == ["cell0"]

    with qtbot.waitSignal(t.jobFinished, timeout=120000) as sig:
        t.panel.lr_action.trigger()
    assert sig.args[1].ok, sig.args[1].message
    t.lr_plot.redraw()
    assert t.lr_plot.point_count() > 10
    qtbot.mouseClick(t.lr_plot.use_button, Qt.MouseButton.LeftButton)
    assert t.panel.form.get_config().lr == pytest.approx(t.lr_plot.suggested, rel=0.05)

    with qtbot.waitSignal(
        t.jobFinished, timeout=120000, check_params_cb=lambda k, e: k == "fit"
    ) as sig:
        t.train()
    assert sig.args[1].result["split"]["val"] == first_val  # same validation images
    assert len(t.plots.faded) == 1  # the first run stays, faded
