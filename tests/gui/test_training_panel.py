"""Training in the real main window with the real engine, on the sample project with
tiny settings (hidden 4, depth 2, crop 64): what a user sees after clicking the buttons."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402

from cellseg_gui.app import main_window  # noqa: E402
from cellseg_gui.core.events import CANCELLED  # noqa: E402
from cellseg_gui.widgets.export_dialog import ExportRequest  # noqa: E402

TINY = {
    "model.hidden": 4,
    "model.depth": 2,
    "crop": 64,
    "batch_size": 2,
    "steps_per_epoch": 4,
    "epochs": 2,
    "patience": 0,
    "device": "cpu",
    "tile": 256,
}


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSEG_DATA_HOME", str(tmp_path / "data-home"))
    monkeypatch.setenv("CELLSEG_NO_WARMUP", "1")
    from cellseg_gui.core.data.sample import make_sample

    folder = make_sample(tmp_path / "sample")
    w = main_window.MainWindow()
    qtbot.addWidget(w)
    w.open_project(folder)
    t = w.training
    t.panel.form.apply_changes(TINY)
    calls: list[str] = []  # each image whose prediction the Workspace announced as set
    w.workspace.subscribe(
        lambda ch: ch.kind == "prediction" and w.workspace.prediction(ch.name) is not None
        and calls.append(ch.name)
    )  # fmt: skip
    w.prediction_calls = calls
    yield w
    t.shutdown()


def _train(qtbot, w, timeout=120000):
    t = w.training
    with qtbot.waitSignal(
        t.jobFinished, timeout=timeout, check_params_cb=lambda k, ev: k == "fit"
    ) as sig:
        qtbot.mouseClick(t.panel.train_button, Qt.MouseButton.LeftButton)
    return sig.args[1]


def test_train_adds_points_and_ends_with_a_model(window, qtbot):
    t = window.training
    model = window.image_list.model_
    before = {e.name: model.state_text(e) for e in model.entries}
    ev = _train(qtbot, window)
    assert ev.ok, ev.message
    qtbot.waitUntil(
        lambda: t.plots.point_count("step_loss") >= 8 and t.plots.point_count("train_loss") == 2,
        timeout=3000,
    )
    assert t.active_model and Path(t.active_model).is_file()
    assert Path(t.active_model).parent.name == "models"
    # the first run's automatic split is written to the project and the list shows it
    held = set(ev.result["split"]["val"])
    after = {e.name: model.state_text(e) for e in model.entries}
    assert held and not any(" · val" in before[n] for n in held)
    assert all(" · val" in after[n] for n in held)
    assert all(" · train" in after[n] for n in ev.result["split"]["train"])
    assert t.models.table.rowCount() >= 1
    # after the run every image is predicted in the background, overlays updated
    qtbot.waitUntil(lambda: t.bg_worker is not None and t.bg_worker.is_done(), timeout=120000)
    assert len(set(window.prediction_calls)) >= 2
    assert t.gallery.names()


def test_stop_ends_a_run_within_two_seconds(window, qtbot):
    t = window.training
    t.panel.form.apply_changes({"epochs": 1000, "steps_per_epoch": 1000})
    qtbot.mouseClick(t.panel.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: t.plots.point_count("step_loss") > 2, timeout=60000)
    t0 = time.monotonic()
    with qtbot.waitSignal(t.jobFinished, timeout=5000) as sig:
        qtbot.keyClick(window, Qt.Key.Key_Escape)
        if t.running:  # Esc may be taken by a focused editor; the button does the same
            qtbot.mouseClick(t.panel.stop_button, Qt.MouseButton.LeftButton)
    assert time.monotonic() - t0 < 2.0
    assert sig.args[1].reason == CANCELLED
    assert not t.running


def test_find_lr_draws_its_curve_and_sets_the_learning_rate(window, qtbot):
    t = window.training
    with qtbot.waitSignal(t.jobFinished, timeout=120000) as sig:
        t.panel.lr_action.trigger()
    assert sig.args[0] == "lr_find" and sig.args[1].ok, sig.args[1].message
    qtbot.waitUntil(lambda: t.lr_plot.point_count() > 10, timeout=3000)
    assert t.lr_plot.use_button.isEnabled()
    qtbot.mouseClick(t.lr_plot.use_button, Qt.MouseButton.LeftButton)
    assert t.panel.form.get_config().lr == pytest.approx(t.lr_plot.suggested, rel=0.05)


@pytest.mark.slow
def test_check_passes_on_a_sample_image_and_says_so(window, qtbot):
    t = window.training
    names = [p.name for p in window.project.training_pairs()]
    window.show_image(names[0])
    with qtbot.waitSignal(t.jobFinished, timeout=300000) as sig:
        t.panel.check_action.trigger()
    assert sig.args[0] == "overfit"
    assert sig.args[1].result["passed"], sig.args[1].result
    assert "Overfit check passed" in t.panel.message_label.text()


def test_predict_updates_the_overlay_and_export_works_with_the_cli(window, qtbot, tmp_path):
    t = window.training
    assert _train(qtbot, window).ok
    qtbot.waitUntil(lambda: t.bg_worker is not None and t.bg_worker.is_done(), timeout=120000)
    window.prediction_calls.clear()
    name = window.current_name or t.gallery.names()[0]
    window.show_image(name)
    with qtbot.waitSignal(t.jobFinished, timeout=60000):
        t.panel.predict_action.trigger()
    assert window.prediction_calls == [window.current_name]

    out = tmp_path / "export"
    req = ExportRequest(
        folder=out, stem="tiny", formats=["bundle", "torchscript", "onnx"], model_card=True
    )
    with qtbot.waitSignal(t.jobFinished, timeout=120000) as sig:
        t.export(req)
    assert sig.args[1].ok, sig.args[1].message
    for suffix in (".cellseg", ".pt", ".onnx", ".md"):
        assert (out / f"tiny{suffix}").is_file()
    assert "## Metrics" in (out / "tiny.md").read_text()
    from cellseg_gui import cli

    image = window.project.training_pairs()[0].image_path
    for suffix in (".cellseg", ".pt", ".onnx"):
        dest = tmp_path / f"pred{suffix.strip('.')}"
        assert (
            cli.main(["predict", str(out / f"tiny{suffix}"), str(image), "--out", str(dest)]) == 0
        )
        assert any(dest.iterdir())


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(folder.rglob("*"))}  # fmt: skip


def test_looking_at_a_folder_and_closing_leaves_it_as_it_was(qtbot, tmp_path, monkeypatch):
    """Opening a folder made models/ and closing wrote a project file into it: a shared
    or read-only data folder must stay as it was until the user changes something."""
    monkeypatch.setenv("CELLSEG_NO_WARMUP", "1")
    from cellseg_gui.core.data.sample import make_sample

    folder = make_sample(tmp_path / "sample")
    before = _snapshot(folder)
    w = main_window.MainWindow()
    qtbot.addWidget(w)
    assert w.open_project(folder)
    w.show()
    qtbot.waitExposed(w)
    w.show_image(w.image_list.model_.entries[1].name)
    qtbot.wait(200)
    w.close()
    assert _snapshot(folder) == before
    # a change of setting is kept
    w2 = main_window.MainWindow()
    qtbot.addWidget(w2)
    w2.open_project(folder)
    w2.training.panel.form.apply_changes({"crop": 192})
    w2.close()
    w3 = main_window.MainWindow()
    qtbot.addWidget(w3)
    w3.open_project(folder)
    assert w3.training.panel.form.get_config().crop == 192
    w3.close()


def test_train_in_a_read_only_folder_says_so_and_starts_nothing(window, qtbot, monkeypatch):
    # tests run as root, whom a read-only folder does not stop: the folder refuses here
    def read_only(project, prefix="run"):
        folder = project.models_dir()
        raise PermissionError(13, "Permission denied", str(folder))

    monkeypatch.setattr("cellseg_gui.core.model.model_registry.new_model_path", read_only)
    t = window.training
    qtbot.mouseClick(t.panel.train_button, Qt.MouseButton.LeftButton)
    assert t.worker is None or not t.running
    text = t.panel.message_label.text()
    assert "Cannot train here" in text and "models" in text and "not writable" in text


def test_a_jobs_late_results_never_reach_the_next_project(window, qtbot, tmp_path):
    """A prediction job's last results, still queued when another project opened, were
    shown on the new project's images of the same names (two samples, cells_01...); the
    gallery and the noisy labels kept the old project's images."""
    from cellseg_gui.core.data.sample import make_sample

    t = window.training
    assert _train(qtbot, window).ok
    qtbot.waitUntil(lambda: t.bg_worker is not None and t.bg_worker.is_done(), timeout=120000)
    first_model = t.active_model
    other = make_sample(tmp_path / "other")  # the same image names
    worker = t.predict(None)
    assert worker is not None and worker.wait(60000)  # ended; its results wait in the queue
    assert window.open_project(other)
    qtbot.wait(300)  # the event loop runs: nothing of the old job may arrive now
    ws = window.workspace
    assert ws.project.folder == other and ws.predictions == {}
    assert all(ws.scores(n).jaccard is None for n in ws.project.names)
    assert t.active_model != first_model and not t.running
    assert t.gallery.names() == [] and t.noisy.tree.topLevelItemCount() == 0
