"""The training controller in the real main window, on a real project, with stand-in jobs
(the engine's events, quickly): plots fill, Stop is quick, the model lands in the models
list and predictions reach the overlay. (The real engine: test_training_real.py.)"""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt  # noqa: E402

from cellseg_gui.app import training_jobs as J  # noqa: E402
from cellseg_gui.core.events import (  # noqa: E402
    CANCELLED,
    DONE,
    EpochEnded,
    Finished,
    LRProbe,
    Predicted,
    SampleLosses,
    Started,
    StepEnded,
)


def real_project(folder: Path, n: int = 5):
    """A real Project on a real folder: n tiny images img0.. with masks."""
    from cellseg_gui.core.data.maskwrite import write_mask
    from cellseg_gui.core.data.project import open_project

    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i in range(n):
        mask = np.zeros((16, 16), np.uint16)
        mask[4:10, 4:10] = 1
        write_mask(folder / "images" / f"img{i}.tif", (mask * 200 + 20).astype(np.uint8))
        write_mask(folder / "masks" / f"img{i}.tif", mask)
    return open_project(folder)


def real_window(qtbot, monkeypatch, folder: Path, *, warmup: bool = False):
    """The real main window on a real project (its training controller included);
    ``warmup``: let it probe the device (torch loads in the background)."""
    from cellseg_gui.app.main_window import MainWindow

    monkeypatch.setenv("CELLSEG_NO_WARMUP", "0" if warmup else "1")
    monkeypatch.setenv("CELLSEG_SETTINGS_DIR", str(folder.parent / "settings"))
    w = MainWindow()
    qtbot.addWidget(w)
    assert w.open_project(folder)
    return w


def write_bundle(path: Path, best: float) -> None:
    """A bundle's record as training writes it (the weights are not read here)."""
    from cellseg_gui.core.config import ModelConfig, NormConfig
    from cellseg_gui.core.model.bundle_meta import make_meta

    meta = make_meta(
        ModelConfig(hidden=4, depth=2, downsample=1), mask_mode="instances", boundary_width=2,
        channels="grey", norm=NormConfig(), name=path.stem,
        training={"settings": {"crop": 64}}, metrics={"val_fg_jaccard": best},
    )  # fmt: skip
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("cellseg.json", json.dumps(meta))


def fake_fit(pairs, cfg, token, *, out_path, val_names, **kw):
    def run():
        yield Started(
            job="fit",
            device="cpu",
            precision="fp32",
            total_steps=2000,
            epochs=2,
            steps_per_epoch=1000,
        )
        g = 0
        for e in range(2):
            for s in range(1000 if kw.get("init_bundle") != "slow" else 10**6):
                if token.cancelled:
                    write_bundle(out_path, 0.3)
                    yield Finished(CANCELLED, "stopped", bundle_path=str(out_path))
                    return
                time.sleep(0.0005)
                yield StepEnded(epoch=e, step=s, global_step=g, loss=1 / (g + 1), lr=1e-3)
                g += 1
            yield EpochEnded(
                epoch=e,
                epochs=2,
                train_loss=0.5,
                val_loss=0.7,
                train_jaccard=(1, 0.8),
                val_jaccard=(1, 0.5),
                train_fg_jaccard=0.8,
                val_fg_jaccard=0.5,
                seconds=1,
                lr=1e-3,
            )
            yield SampleLosses(
                epoch=e,
                losses={p.name: float(i) for i, p in enumerate(pairs)},
                regions={"img4": (1, 2, 32, 32)},
            )
        write_bundle(out_path, 0.5)
        hist = {"epoch": [0, 1], "train_fg_jaccard": [0.8, 0.8], "val_fg_jaccard": [0.5, 0.5]}
        yield Finished(
            DONE,
            bundle_path=str(out_path),
            result={"history": hist, "split": {"val": val_names}, "best_val_fg_jaccard": 0.5},
        )

    return run


def fake_predict(bundle_path, pairs, token, tile=512):
    def run():
        for i, p in enumerate(pairs):
            yield Predicted(i, len(pairs), p.name, np.ones((16, 16), np.uint8), None, 0.5 + i / 10)
        yield Finished(DONE)

    return run


def fake_lr(pairs, cfg, token):
    def run():
        lrs = list(np.logspace(-6, 0, 40))
        for i, lr in enumerate(lrs):
            yield LRProbe(i, float(lr), 1.0, 1.0)
        yield Finished(
            DONE,
            result={
                "lrs": lrs,
                "losses": [1.0] * 40,
                "smoothed": [1.0] * 40,
                "suggested_lr": 0.002,
            },
        )

    return run


@pytest.fixture
def win(qtbot, tmp_path, monkeypatch):
    monkeypatch.setattr(J, "fit_job", fake_fit)
    monkeypatch.setattr(J, "predict_job", fake_predict)
    monkeypatch.setattr(J, "lr_job", fake_lr)
    monkeypatch.setattr("cellseg_gui.app.training.default_torch_threads", lambda: None)
    w = real_window(qtbot, monkeypatch, real_project(tmp_path / "p").folder)
    yield w
    w.training.shutdown()


def test_train_fills_plots_and_ends_with_an_active_model(win, qtbot):
    t = win.training
    assert [a.text() for a in win.menu("Train").actions() if a.text()][:3] == [
        "Train",
        "Stop",
        "Find LR",
    ]
    with qtbot.waitSignal(t.jobFinished, timeout=20000) as fin:
        t.train()
    assert fin.args[1].reason == DONE
    qtbot.waitUntil(
        lambda: t.plots.point_count("step_loss") == 2000 and t.plots.point_count("val_j") == 2,
        timeout=3000,
    )
    assert t.active_model and Path(t.active_model).exists()
    assert t.models.table.rowCount() == 1 and t.models.table.item(0, 2).text() == "0.500"
    qtbot.waitUntil(lambda: len(win.predictions) == 5, timeout=5000)  # background prediction
    qtbot.waitUntil(lambda: len(t.gallery.names()) == 0 or True, timeout=100)
    assert t.noisy.names()[0] == "img4"
    assert win.project.split and sum(v == "val" for v in win.project.split.values()) == 1
    assert win.project.settings["training"]["active_model"] == t.active_model
    t.noisy._clicked(t.noisy.tree.topLevelItem(0))
    assert win.current_name == "img4"


def test_stop_ends_a_run_within_two_seconds_and_keeps_the_model(win, qtbot):
    t = win.training
    worker = t.train(init_bundle="slow")
    qtbot.waitUntil(lambda: t.plots.point_count("step_loss") > 0, timeout=5000)
    t0 = time.monotonic()
    with qtbot.waitSignal(t.jobFinished, timeout=2000) as fin:
        t.panel.stop_action.trigger()
    assert time.monotonic() - t0 < 2
    assert fin.args[1].reason == CANCELLED and worker.wait(2000)
    assert t.active_model is not None and t.panel.train_action.isEnabled()


def test_find_lr_and_use_it(win, qtbot):
    t = win.training
    with qtbot.waitSignal(t.jobFinished, timeout=5000):
        t.find_lr()
    # the sweep's progress reached the dock it raised and the status bar
    assert t.lr_plot.progress.value() == 40
    assert "LR sweep: step 40 of 100" in win.statusBar().currentMessage()
    qtbot.waitUntil(lambda: t.lr_plot.point_count() == 40, timeout=2000)
    assert not t.lr_plot.progress.isVisibleTo(t.lr_plot)  # done: the result replaces it
    qtbot.mouseClick(t.lr_plot.use_button, Qt.MouseButton.LeftButton)
    assert t.panel.form.get_config().lr == pytest.approx(0.002)


def test_closing_during_a_run_asks_and_stops(win, qtbot):
    t = win.training
    worker = t.train(init_bundle="slow")
    qtbot.waitUntil(lambda: t.plots.point_count("step_loss") > 0, timeout=5000)
    t.ask_to_stop = lambda: False
    assert not win.close() and worker.is_running()
    t.ask_to_stop = lambda: True
    assert win.close()
    assert not worker.is_running()
    # "The best model so far is kept": the stopped run's bundle became the active model
    # before the window went, and no prediction job was started on the way out
    assert t.active_model and Path(t.active_model).exists()
    assert win.project.settings["training"]["active_model"] == t.active_model
    assert t.bg_worker is None and worker.is_done()


def test_esc_stops_a_run_even_with_the_editor_using_esc(win, qtbot):
    from PySide6.QtGui import QAction, QKeySequence

    pan = QAction("Pan", win)  # the mask editor's pan tool also answers Esc
    pan.setShortcut(QKeySequence("Esc"))
    win.addAction(pan)
    win.show()
    win.activateWindow()
    qtbot.waitUntil(win.isActiveWindow, timeout=2000)
    t = win.training
    worker = t.train(init_bundle="slow")
    qtbot.waitUntil(lambda: t.plots.point_count("step_loss") > 0, timeout=5000)
    with qtbot.waitSignal(t.jobFinished, timeout=2000) as fin:
        qtbot.keyClick(win, Qt.Key.Key_Escape)
    assert fin.args[1].reason == CANCELLED and worker.wait(2000)
