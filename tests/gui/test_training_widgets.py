"""Training widgets on their own, fed with events as the worker would send them."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402

from cellseg_gui.core.config import TrainConfig
from cellseg_gui.core.events import (
    DIVERGED,
    DIVERGED_HINT,
    EpochEnded,
    Finished,
    LRProbe,
    Started,
    StepEnded,
)  # noqa: E402
from cellseg_gui.core.model.model_registry import ModelRecord
from cellseg_gui.widgets.advice import AdvicePanel  # noqa: E402
from cellseg_gui.widgets.export_dialog import ExportDialog  # noqa: E402
from cellseg_gui.widgets.gallery import Gallery, GalleryItem, difference_rgb  # noqa: E402
from cellseg_gui.widgets.lr_plot import LRPlot  # noqa: E402
from cellseg_gui.widgets.models_list import ModelsList, settings_summary  # noqa: E402
from cellseg_gui.widgets.noisy_labels import NoisyLabels  # noqa: E402
from cellseg_gui.widgets.training_form import GROUPS, TrainingForm  # noqa: E402
from cellseg_gui.widgets.training_panel import TrainingPanel  # noqa: E402
from cellseg_gui.widgets.training_plots import TrainingPlots  # noqa: E402


def _epoch(e, tl=0.5, vl=0.6, tj=0.7, vj=0.6, ap=None):
    return EpochEnded(
        val_ap50=ap,
        epoch=e,
        epochs=3,
        train_loss=tl,
        val_loss=vl,
        train_jaccard=(1, tj),
        val_jaccard=(1, vj),
        train_fg_jaccard=tj,
        val_fg_jaccard=vj,
        seconds=1,
        lr=1e-3,
    )


def test_form_round_trips_every_field_and_defaults_fit_the_device(qtbot):
    form = TrainingForm("cpu")
    qtbot.addWidget(form)
    assert form.get_config() == TrainConfig.for_device("cpu")
    gpu = TrainingForm("cuda")
    qtbot.addWidget(gpu)
    assert gpu.get_config() == TrainConfig.for_device("cuda")
    assert gpu.get_config().model.hidden > form.get_config().model.hidden
    for _, fields in GROUPS:
        for f in fields:
            assert f.tip and form.editor(f.key).toolTip() == f.tip
    cfg = TrainConfig(
        lr=0.0123, epochs=7, minutes=2.5, steps_per_epoch=11, class_weights=[1.0, 2.0, 5.0]
    )
    cfg.model.hidden, cfg.model.dropout, cfg.augment.elastic, cfg.schedule = 8, 0.2, False, "cosine"
    form.set_config(cfg)
    assert form.get_config() == cfg
    # downsample: 0 is shown as "auto" and read back as 0; a number stays that number
    ds = form.editor("model.downsample")
    assert cfg.model.downsample == 0 and ds.text() == "auto"
    cfg.model.downsample = 2
    form.set_config(cfg)
    assert ds.text() == "2" and form.get_config().model.downsample == 2
    # flows: ticked by default, also for a form saved before they existed; unticking holds
    flows = form.editor("model.flow_head")
    form.set_config(TrainConfig())
    assert flows.isChecked() and form.get_config().model.flow_head
    old = TrainConfig().to_dict()
    del old["model"]["flow_head"]
    form.set_config(TrainConfig.from_saved(old))
    assert flows.isChecked()
    flows.setChecked(False)
    assert form.get_config().model.flow_head is False


def test_form_set_field_and_changed_signal(qtbot):
    form = TrainingForm()
    qtbot.addWidget(form)
    with qtbot.waitSignal(form.changed, timeout=1000):
        form.set_field("augment.affine", False)  # on by default
    form.apply_changes({"model.dropout": 0.2, "lr": 1e-4})
    cfg = form.get_config()
    assert (
        not cfg.augment.affine
        and cfg.model.dropout == pytest.approx(0.2)
        and cfg.lr == pytest.approx(1e-4)
    )
    assert form.editor("lr").text() == "0.0001"


def test_panel_progress_and_failure_message(qtbot):
    panel = TrainingPanel()
    qtbot.addWidget(panel)
    assert panel.train_action.shortcut().toString() == "Ctrl+T"
    assert panel.lr_action.shortcut().toString() == "Ctrl+L"
    assert panel.stop_action.shortcut().isEmpty()  # Esc is the editor's pan tool when idle
    panel.set_running("fit")
    assert panel.stop_action.shortcut().toString() == "Esc"
    assert panel.stop_action.isEnabled() and not panel.train_action.isEnabled()
    panel.on_started(
        Started(
            job="fit",
            device="cuda:0",
            precision="bf16",
            total_steps=20,
            epochs=2,
            steps_per_epoch=10,
        )
    )
    assert "cuda:0" in panel.device_label.text() and "bf16" in panel.device_label.text()
    panel.on_steps([StepEnded(epoch=1, step=2, global_step=12, loss=0.3, lr=1e-3, eta_seconds=75)])
    text = panel.progress.format()
    assert "epoch 2/2" in text and "step 3/10" in text and "1:15 left" in text
    assert panel.progress.value() == 13
    panel.on_finished(
        Finished(reason=DIVERGED, message="loss is NaN at step 12", hint=DIVERGED_HINT)
    )
    assert panel.message_label.isVisibleTo(panel)
    assert "NaN" in panel.message_label.text() and "LR finder" in panel.message_label.text()
    assert panel.train_action.isEnabled() and not panel.stop_action.isEnabled()
    assert "snapshot" in panel.note.text()


def test_plots_throttle_redraws_and_fade_earlier_runs(qtbot):
    plots = TrainingPlots(redraw_ms=100)
    qtbot.addWidget(plots)
    for i in range(50):  # 50 batches arriving faster than redraws
        plots.add_steps([StepEnded(epoch=0, step=i, global_step=i, loss=1.0 / (i + 1), lr=1e-3)])
    plots.add_epoch(_epoch(0))
    assert plots.point_count("step_loss") == 0  # nothing drawn before the timer fires
    qtbot.waitUntil(lambda: plots.point_count("step_loss") == 50, timeout=2000)
    assert plots.redraws <= 2
    assert plots.point_count("step_smooth") == 50 and plots.point_count("val_j") == 1
    plots.new_run()
    assert len(plots.faded) == 1 and plots.point_count("step_loss") == 0
    plots.add_epoch(_epoch(0))
    plots.redraw()
    assert plots.point_count("train_loss") == 1
    plots.clear_faded()
    assert plots.faded == []


def test_validation_ap_is_drawn_beside_the_jaccard(qtbot):
    plots = TrainingPlots(redraw_ms=10_000)
    qtbot.addWidget(plots)
    for e, ap in enumerate((0.1, 0.3, 0.45)):
        plots.add_epoch(_epoch(e, ap=ap))
    plots.add_epoch(_epoch(3))  # a run without cell ids: no AP point, no gap filler
    plots.redraw()
    x, y = plots.curves["val_ap"].getData()
    assert list(x) == [1, 2, 3] and list(y) == pytest.approx([0.1, 0.3, 0.45])
    assert plots.point_count("val_j") == 4
    # the key is in the title, not a legend on top of the curves
    title = plots.plots["jaccard"].titleLabel.text
    assert "val cell AP@0.5" in title and "— val<" in title
    assert plots.plots["jaccard"].legend is None


def test_lr_plot_marks_suggestion_and_button_emits_it(qtbot):
    w = LRPlot()
    qtbot.addWidget(w)
    w.set_steps(30)
    w.reset()
    assert w.progress.isVisibleTo(w) and w.progress.maximum() == 30
    lrs = np.logspace(-6, 1, 30)
    for i, lr in enumerate(lrs):
        w.add_probe(LRProbe(step=i, lr=float(lr), loss=1.0, smoothed=1.0))
        if i == 4:  # the dock itself says how far the sweep is (it only said "Sweeping…")
            assert w.progress.value() == 5 and "Sweeping: lr" in w.label.text()
    w.redraw()
    assert w.point_count() == 30
    assert not w.use_button.isEnabled()
    w.set_result(
        {
            "lrs": list(lrs),
            "losses": [1.0] * 30,
            "smoothed": [1.0] * 30,
            "suggested_lr": 3e-3,
            "steepest_lr": 1e-2,
        }
    )
    assert w.marker.isVisible() and w.marker.value() == pytest.approx(np.log10(3e-3))
    with qtbot.waitSignal(w.useLearningRate, timeout=1000) as sig:
        qtbot.mouseClick(w.use_button, Qt.MouseButton.LeftButton)
    assert sig.args[0] == pytest.approx(3e-3)
    # a stopped sweep afterwards: no suggestion, and the earlier one is not offered
    w.set_result({"lrs": list(lrs[:3]), "losses": [1.0] * 3, "smoothed": [1.0] * 3,
                  "suggested_lr": float("nan"),
                  "no_suggestion": "stopped after 3 of 30 steps: no suggestion"})  # fmt: skip
    assert not w.use_button.isEnabled() and not w.marker.isVisible()
    assert "stopped after 3 of 30" in w.label.text()


def test_gallery_sorts_worst_first_and_click_names_image(qtbot):
    g = Gallery()
    qtbot.addWidget(g)
    img = np.random.default_rng(0).random((64, 80)).astype(np.float32)
    gt = np.zeros((64, 80), np.uint8)
    gt[10:30, 10:30] = 1
    pred = np.zeros_like(gt)
    pred[15:35, 15:35] = 1
    g.set_items(
        [
            GalleryItem("good", 0.9, img, gt, gt),
            GalleryItem("bad", 0.1, img, gt, pred),
            GalleryItem("nogt", None, img, None, pred),
        ]
    )
    assert g.names() == ["bad", "good", "nogt"]
    g.update_item(GalleryItem("mid", 0.5, img, gt, pred))
    assert g.names() == ["bad", "mid", "good", "nogt"]
    rgb = difference_rgb(img, gt, pred, 160)
    assert rgb.shape == (64, 80, 3)
    assert tuple(rgb[12, 12]) != tuple(rgb[20, 20]) != tuple(rgb[32, 32])  # FN, TP, FP differ
    with qtbot.waitSignal(g.imageClicked, timeout=1000) as sig:
        g._clicked(g.list.item(0))
    assert sig.args == ["bad"]


def test_noisy_labels_flags_outliers_and_click_gives_region(qtbot):
    w = NoisyLabels()
    qtbot.addWidget(w)
    w.set_ranking([("a", 2.5, True), ("b", 0.3, False)], {"a": (5, 6, 64, 64)}, epoch=0)
    assert w.names() == ["a", "b"] and w.flagged() == ["a"]
    with qtbot.waitSignal(w.regionClicked, timeout=1000) as sig:
        w._clicked(w.tree.topLevelItem(0))
    assert sig.args == ["a", (5, 6, 64, 64)]


def test_advice_apply_button_emits_changes(qtbot):
    w = AdvicePanel()
    qtbot.addWidget(w)
    w.set_advice(
        [
            {
                "code": "val_lag",
                "text": "Validation lags: add augmentation",
                "changes": {"augment.affine": True},
            },
            {"code": "ok", "text": "Looks fine", "changes": {}},
        ]
    )
    assert len(w.buttons) == 1
    with qtbot.waitSignal(w.applyRequested, timeout=1000) as sig:
        qtbot.mouseClick(w.buttons[0], Qt.MouseButton.LeftButton)
    assert sig.args == [{"augment.affine": True}]
    assert w.empty.text() == "2 suggestions:"
    w.set_advice([{"code": "ok", "text": "Looks fine", "changes": {}}])
    assert w.empty.text() == "1 suggestion:"  # not "1 suggestion(s)"


def test_gallery_and_canvas_name_the_errors_alike(qtbot):
    from cellseg_gui.core.palette import FN_WORDS, FP_WORDS
    from cellseg_gui.widgets.overlay_controls import OverlayControls

    g = Gallery()
    qtbot.addWidget(g)
    assert FP_WORDS in g.legend.text() and FN_WORDS in g.legend.text()
    o = OverlayControls()
    qtbot.addWidget(o)
    labels = [w.text() for w in o.findChildren(type(g.legend))]
    assert "extra / missed" in labels and "FP / FN" not in labels


def test_list_thumbnails_average_blocks_instead_of_picking_pixels():
    """Phase-contrast grain the size of a pixel looked like noise when decimated."""
    from cellseg_gui.widgets.image_list import thumbnail

    yy, xx = np.mgrid[:640, :640]
    checker = ((yy + xx) % 2 * 200 + 20).astype(np.uint16)  # pixel-sized grain
    checker[:, 320:] += 30  # and a real, large-scale difference
    q = thumbnail(checker, size=64)
    ptr = q.constBits()
    arr = np.frombuffer(ptr, np.uint8, count=q.bytesPerLine() * q.height())
    arr = arr.reshape(q.height(), q.bytesPerLine())[:, : q.width()]
    left, right = arr[:, :30], arr[:, 34:]
    assert left.std() < 2 and right.std() < 2  # the grain averages out
    assert right.mean() > left.mean() + 100  # the large-scale difference stays


def test_models_list_marks_active_and_emits_paths(qtbot):
    w = ModelsList()
    qtbot.addWidget(w)
    recs = [
        ModelRecord(
            name="run2",
            path="/p/run2.cellseg",
            created="2026-01-02T10:00:00",
            best_val=0.8,
            best_ap50=0.55,
            training={"settings": TrainConfig().to_dict()},
        ),
        ModelRecord(name="run1", path="/p/run1.cellseg", created="2026-01-01T10:00:00"),
    ]
    w.set_models(recs, active="/p/run1.cellseg")
    assert w.table.item(1, 0).text() == "★" and w.table.item(0, 2).text() == "0.800"
    assert w.table.item(0, 3).text() == "0.550" and w.table.item(1, 3).text() == ""
    assert "h16" in w.table.item(0, 5).text()
    assert not w.finetune_button.isEnabled()
    w.select("/p/run2.cellseg")
    with qtbot.waitSignal(w.fineTuneRequested, timeout=1000) as sig:
        qtbot.mouseClick(w.finetune_button, Qt.MouseButton.LeftButton)
    assert sig.args == ["/p/run2.cellseg"]
    with qtbot.waitSignal(w.activateRequested, timeout=1000):
        qtbot.mouseClick(w.activate_button, Qt.MouseButton.LeftButton)


def test_export_dialog_paths(qtbot, tmp_path):
    d = ExportDialog("run1", tmp_path)
    qtbot.addWidget(d)
    req = d.request()
    assert req.formats == ["bundle", "torchscript", "onnx"]
    paths = req.paths()
    assert paths["bundle"] == tmp_path / "run1.cellseg" and paths["card"] == tmp_path / "run1.md"
    d.bundle_box.setChecked(False)
    d.ts_box.setChecked(False)
    d.onnx_box.setChecked(False)
    assert not d.ok_button.isEnabled()


def test_training_ui_imports_load_no_torch():
    """The window must open before torch loads: the training UI, its worker and its
    wiring import no torch (jobs import it inside the worker thread)."""
    import subprocess
    import sys

    mods = [
        "cellseg_gui.widgets." + m
        for m in ("training_form", "training_panel", "training_plots", "lr_plot", "gallery",
                  "noisy_labels", "advice", "models_list", "export_dialog")
    ] + ["cellseg_gui.workers.job_worker", "cellseg_gui.app.training"]  # fmt: skip
    code = "import sys\n" + "".join(f"import {m}\n" for m in mods)
    code += "print('torch' in sys.modules, any(m.startswith('cellseg_gui.workers') for m in sys.modules if 'widgets' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "False"
    widgets_code = "import sys\nimport cellseg_gui.widgets.training_panel, cellseg_gui.widgets.training_plots\n"
    widgets_code += "print(any(m.startswith('cellseg_gui.workers') for m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", widgets_code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_export_dialog_offers_bioimageio(qtbot, tmp_path):
    d = ExportDialog("run1", tmp_path)
    qtbot.addWidget(d)
    d.bioimageio_box.setChecked(True)
    req = d.request()
    assert "bioimageio" in req.formats
    assert req.paths()["bioimageio"] == tmp_path / "run1.bioimageio.zip"


def test_models_list_summary_names_the_resolution():
    """A half-resolution model says so in the list; a full-resolution one (or an older
    bundle without the key) does not clutter its line."""
    half = settings_summary({"settings": {"model": {"hidden": 16, "depth": 4, "downsample": 2}}})
    full = settings_summary({"settings": {"model": {"hidden": 16, "depth": 4, "downsample": 1}}})
    old = settings_summary({"settings": {"model": {"hidden": 16, "depth": 4}}})
    assert half.startswith("h16 d4") and "1/2 res" in half
    assert "res" not in full and "res" not in old


def test_the_mouse_wheel_scrolls_the_form_instead_of_changing_settings(qtbot):
    """Scrolling over the form turned Depth 4 into 5 and saved it; a box takes the wheel
    only once the user has clicked into it."""
    from PySide6.QtCore import QPoint, QPointF
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication, QScrollArea

    from cellseg_gui.widgets.training_form import TrainingForm

    form = TrainingForm()
    area = QScrollArea()
    area.setWidget(form)
    area.setWidgetResizable(True)
    area.resize(400, 200)  # shorter than the form: it scrolls
    qtbot.addWidget(area)
    area.show()
    qtbot.waitExposed(area)
    depth = form.editor("model.depth")
    before, bar = depth.value(), area.verticalScrollBar()
    changed = []
    form.changed.connect(lambda: changed.append(1))

    def wheel(widget, dy):
        pos = QPointF(widget.rect().center())
        ev = QWheelEvent(pos, QPointF(widget.mapToGlobal(pos.toPoint())), QPoint(0, dy),
                         QPoint(0, dy), Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                         Qt.ScrollPhase.NoScrollPhase, False)  # fmt: skip
        QApplication.sendEvent(widget, ev)

    wheel(depth, -120)
    assert depth.value() == before and not changed
    assert bar.value() > 0  # the form scrolled instead
    depth.setFocus()
    qtbot.waitUntil(depth.hasFocus)
    wheel(depth, 120)
    assert depth.value() == before + 1 and changed  # clicked into: the wheel edits it


def test_models_list_headers_say_which_definition_each_figure_is(qtbot):
    """'Best val J' and 'Val AP@0.5' are the figures info and evaluate name pooled over
    pixels and mean over images: hovering the header says so."""
    w = ModelsList()
    qtbot.addWidget(w)
    tips = [w.table.horizontalHeaderItem(c).toolTip() for c in range(w.table.columnCount())]
    assert "pooled over the validation pixels" in tips[2]
    assert "mean over the validation images" in tips[3]


def test_gallery_thumbnails_follow_its_height_squeezed_and_grown_again(qtbot):
    """Squeezed (the Display panel's legend grew) and grown again, the gallery kept the
    thumbnails of the height before, and the score line under each stayed cut in half."""
    g = Gallery()
    qtbot.addWidget(g)
    g.resize(600, 320)
    g.show()
    qtbot.waitExposed(g)
    qtbot.waitUntil(lambda: g.list.iconSize().width() == g.thumb, timeout=2000)
    g.resize(600, 170)
    text = 2 * g.fontMetrics().height() + 24
    qtbot.waitUntil(lambda: g.list.iconSize().width() < g.thumb, timeout=2000)
    cell = g.list.gridSize().height()
    assert cell <= g.list.viewport().height() + 16  # a thumbnail and its text fit the list
    assert g.list.iconSize().width() + text - 16 == cell
    g.resize(600, 320)
    qtbot.waitUntil(lambda: g.list.iconSize().width() == g.thumb, timeout=2000)
