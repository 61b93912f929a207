"""Training in the main window: docks, Train menu, and the jobs behind the buttons.

The window makes one ``TrainingController(workspace, parent, save_edits=...)`` and places
its widgets (``training_layout.arrange_training_docks``, the Train menu). The controller
knows no window: it reads and changes the
:class:`~cellseg_gui.core.workspace.Workspace` (the project, the image looked at, the
split, the models and the active one, predictions and validation scores) and asks for
what only the window can do through signals (``status``, ``panelWanted``,
``showRequested``). Jobs run through ``workers.JobWorker``; this module turns their
signals into widget updates, on the GUI thread.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

from cellseg_gui.app import training_jobs as J
from cellseg_gui.app.training_results import TrainingResults
from cellseg_gui.app.training_settings import TrainingSettings
from cellseg_gui.core.config import TrainConfig
from cellseg_gui.core.data.project import ImagePair, ProjectError
from cellseg_gui.core.events import Finished
from cellseg_gui.core.workspace import Workspace
from cellseg_gui.widgets.advice import AdvicePanel
from cellseg_gui.widgets.export_dialog import ExportDialog
from cellseg_gui.widgets.gallery import Gallery
from cellseg_gui.widgets.lr_plot import LRPlot
from cellseg_gui.widgets.models_list import ModelsList
from cellseg_gui.widgets.noisy_labels import NoisyLabels
from cellseg_gui.widgets.training_panel import TrainingPanel
from cellseg_gui.widgets.training_plots import TrainingPlots
from cellseg_gui.workers.job_worker import JobWorker, default_torch_threads, protect_bool_refcounts

if TYPE_CHECKING:
    from cellseg_gui.core.jobs import CancelToken, JobFactory
    from cellseg_gui.widgets.export_dialog import ExportRequest

log = logging.getLogger(__name__)


class TrainingController(TrainingSettings, TrainingResults, QObject):
    """``jobFinished(kind, Finished)`` fires on the GUI thread after a job's own handlers."""

    jobFinished = Signal(str, object)
    status = Signal(str, int)  # a line for the status bar, and for how long (ms)
    panelWanted = Signal(str)  # bring this panel (dock title) to the front
    showRequested = Signal(str, object)  # show this image, zoomed to (y, x, h, w) or None

    def __init__(
        self,
        workspace: Workspace,
        parent: QWidget,
        *,
        save_edits: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(parent)
        protect_bool_refcounts()
        self._host = parent  # the parent of dialogs; Esc stops a run while it is active
        self.workspace = workspace
        self.save_edits = save_edits  # writes pending mask edits before a job reads masks
        self.panel = TrainingPanel("cpu")
        self.plots = TrainingPlots()
        self.lr_plot = LRPlot()
        self.gallery = Gallery()
        self.noisy = NoisyLabels()
        self.advice = AdvicePanel()
        self.models = ModelsList()
        self.worker: JobWorker | None = None
        self.bg_worker: JobWorker | None = None  # background prediction after a run
        self.last_result: Finished | None = None
        self.val_jaccard: dict[str, float] = {}
        self.ask_to_stop = self._ask_to_stop  # replaced in tests
        self._finetune_from: str | None = None
        self._run_cfg: TrainConfig | None = None
        self.device_type = "cpu"
        self._has_saved_config = False
        self.probe_worker: JobWorker | None = None
        self._closing = False  # shutdown has begun: start no new job
        self._leaving = False  # another project is opening: start no new job
        self._regions: dict[str, tuple[int, int, int, int]] = {}
        self._save_timer = QTimer(self, singleShot=True, interval=500)
        self._save_timer.timeout.connect(self.save_settings)
        self._connect()
        workspace.subscribe(self._on_workspace_change)
        if workspace.project is not None:
            self._on_project_opened(workspace.project)
        else:
            self._set_enabled(False)
        if os.environ.get("CELLSEG_NO_WARMUP", "0") != "1":
            # After the window is on screen: the probe imports torch (about 1.5 s), which
            # must not delay the first paint. The context object cancels it if the window
            # goes first.
            QTimer.singleShot(1500, self, self._probe_device)

    def _connect(self) -> None:
        p = self.panel
        p.trainRequested.connect(self.train)
        p.stopRequested.connect(self.stop)
        p.findLrRequested.connect(self.find_lr)
        p.checkRequested.connect(self.check)
        p.predictCurrentRequested.connect(self.predict_current)
        p.predictAllRequested.connect(self.predict_all)
        p.exportRequested.connect(self.export)
        p.form.changed.connect(self._save_timer.start)
        self.lr_plot.useLearningRate.connect(self._use_lr)
        self.advice.applyRequested.connect(self._apply_advice)
        self.gallery.imageClicked.connect(self._show)
        self.noisy.regionClicked.connect(self._show_region)
        self.models.activateRequested.connect(self.set_active_model)
        self.models.loadRequested.connect(self.load_model)
        self.models.fineTuneRequested.connect(self.fine_tune)

    # --- running jobs -----------------------------------------------------------------
    @property
    def running(self) -> bool:
        """A job is running, or its last signals (its result) have not reached the
        window yet."""
        w = self.worker
        return w is not None and w.is_active()

    def _start(
        self,
        kind: str,
        factory: JobFactory,
        token: CancelToken,
        *,
        on_oom: Callable[[], tuple[JobFactory, str] | None] | None = None,
    ) -> JobWorker | None:
        if self._closing or self._leaving:
            return None
        if self.running:
            self.panel.show_message("A job is already running; stop it first.", "warning")
            return None
        if self.worker is not None:
            self.worker.wait(5000)  # the last job has finished; let its thread end
        self.stop_background()
        worker = JobWorker(factory, token=token, name=kind,
                           on_oom=on_oom, torch_threads=default_torch_threads())  # fmt: skip
        self.worker = worker
        self.panel.clear_message()
        self.panel.set_running(kind)
        worker.started.connect(self.panel.on_started)
        worker.message.connect(self.panel.show_message)
        worker.finished.connect(self.panel.on_finished)
        worker.done.connect(lambda: self.panel.set_models_available(self.active_model is not None))
        worker.done.connect(lambda: self.jobFinished.emit(kind, worker.result))
        app = QApplication.instance()
        app.installEventFilter(self)  # Esc stops the run, whatever has the focus
        worker.done.connect(lambda: app.removeEventFilter(self))
        return worker

    def stop(self, wait: bool = False) -> None:
        """Stop button: set the cancel token directly (not through a queued signal)."""
        for worker in (self.worker, self.bg_worker):
            if worker is not None and worker.is_running():
                worker.cancel()
                if wait:
                    worker.wait(10000)

    def stop_background(self) -> None:
        if self.bg_worker is not None and self.bg_worker.is_running():
            self.bg_worker.stop(10000)

    def _config(self) -> TrainConfig:
        cfg = self.panel.form.get_config()
        mode = self.project.mask_mode if self.project is not None else None
        if cfg.mask_mode == "auto" and mode in ("binary", "classes", "instances"):
            cfg.mask_mode = mode
        return cfg

    def _snapshot(self) -> list[ImagePair]:
        """Save pending mask edits, then list the images and masks a run will read."""
        self.save_edits()
        return self.project.training_pairs()

    def train(self, init_bundle: str | None = None) -> JobWorker | None:
        if self.project is None or self.running:
            return None
        from cellseg_gui.core.jobs import CancelToken

        cfg = self._config()
        pairs = [p for p in self._snapshot() if p.mask_path]
        names = [p.name for p in pairs]
        try:
            # a first run draws the split and stores it: the list shows it from the news
            _, val = self.workspace.training_split(names, cfg.val_fraction, cfg.seed)
            out = self.workspace.new_model_path("finetune" if init_bundle else "run")
        except ProjectError as exc:  # every image marked 'val'
            self.panel.show_message(str(exc), "warning")
            return None
        except OSError as exc:  # a read-only folder: say so, start nothing
            where = exc.filename or self.project.folder
            self.panel.show_message(
                f"Cannot train here: {where} is not writable ({exc.strerror or exc}). "
                "Copy the folder somewhere you can write to, and open the copy.",
                "warning",
            )
            return None
        token = CancelToken()
        kw = dict(val_names=val, init_bundle=init_bundle, out_path=out,
                  checkpoint_path=out.with_suffix(".ckpt"), mask_mode=cfg.mask_mode)  # fmt: skip
        classes = self.project.classes
        if classes:
            kw["classes"] = [
                c if isinstance(c, dict) else {"name": c.name, "color": list(c.color)}
                for c in classes
            ]

        def on_oom(cfg: TrainConfig = cfg) -> tuple[JobFactory, str] | None:
            if cfg.batch_size <= 1:
                return None
            cfg.batch_size //= 2
            return J.fit_job(
                pairs, cfg, token, **kw
            ), f"GPU out of memory: retrying once with batch size {cfg.batch_size}."

        factory = J.fit_job(pairs, cfg, token, **kw)
        worker = self._start("fit", factory, token, on_oom=on_oom)
        if worker is None:
            return None
        self._finetune_from = init_bundle
        self._run_cfg = cfg
        self.plots.new_run()
        worker.step.connect(self.panel.on_steps)
        worker.step.connect(self.plots.add_steps)
        worker.epoch.connect(self.plots.add_epoch)
        worker.sampleLosses.connect(self._on_sample_losses)
        worker.finished.connect(self._on_fit_finished)
        worker.start()
        self.panelWanted.emit("Plots")
        return worker

    def fine_tune(self, path: str) -> JobWorker | None:
        return self.train(init_bundle=path)

    def find_lr(self) -> JobWorker | None:
        if self.project is None:
            return None
        from cellseg_gui.core.jobs import CancelToken

        token = CancelToken()
        factory = J.lr_job(self._snapshot(), self._config(), token)
        worker = self._start("lr_find", factory, token)
        if worker is None:
            return None
        self.lr_plot.reset()
        worker.lrProbe.connect(self.lr_plot.add_probe)
        worker.started.connect(lambda ev: self.lr_plot.set_steps(ev.total_steps or 100))

        def progress(ev) -> None:
            text = f"LR sweep: step {ev.step + 1} of {self.lr_plot.steps}, lr {ev.lr:.2g}"
            self.panel.on_progress(ev.step + 1, self.lr_plot.steps, text)
            self.status.emit(text, 3000)  # seen from any tab

        worker.lrProbe.connect(progress)
        worker.finished.connect(self._on_lr_finished)
        worker.start()
        self.panelWanted.emit("LR finder")
        return worker

    def check(self) -> JobWorker | None:
        name = self.workspace.current
        pair = (
            next((p for p in self._snapshot() if p.name == name and p.mask_path), None)
            if self.project
            else None
        )
        if pair is None:
            self.panel.show_message("Check needs an image with a mask: open one first.", "warning")
            return None
        from cellseg_gui.core.jobs import CancelToken

        token = CancelToken()
        factory = J.overfit_job(pair, self._config(), token)
        worker = self._start("overfit", factory, token)
        if worker is not None:
            worker.step.connect(self.panel.on_steps)
            worker.finished.connect(self._on_check_finished)
            worker.start()
        return worker

    def predict_current(self) -> JobWorker | None:
        name = self.workspace.current
        return self.predict([name] if name else [])

    def predict_all(self) -> JobWorker | None:
        return self.predict(None)

    def predict(self, names: list[str] | None, background: bool = False) -> JobWorker | None:
        """Predict some images (None: all) with the active model."""
        if self._closing or self._leaving:
            return None
        if self.project is None or not self.active_model:
            self.panel.show_message("No model yet: train one or load one in Models.", "warning")
            return None
        from cellseg_gui.core.jobs import CancelToken

        pairs = self.project.training_pairs()
        if names is not None:
            pairs = [p for p in pairs if p.name in names]
        token = CancelToken()
        # whole images where they fit, as validation scored them (tiles above that)
        factory = J.predict_job(self.active_model, pairs, token)
        if background:
            worker = JobWorker(
                factory, token=token, name="predict_bg", torch_threads=default_torch_threads()
            )
            self.bg_worker = worker
            worker.finished.connect(
                lambda ev: self._status("Predictions updated" if ev.ok else ev.message)
            )
        else:
            worker = self._start("predict", factory, token)
            if worker is None:
                return None
        worker.predicted.connect(self._on_predicted)
        worker.start()
        return worker

    def export(self, request: ExportRequest | None = None) -> JobWorker | None:
        if not self.active_model:
            self.panel.show_message("No model to export yet.", "warning")
            return None
        if request is None:
            dialog = ExportDialog(
                Path(self.active_model).stem, self.project.folder / "export", self._host
            )
            if not dialog.exec():
                return None
            request = dialog.request()
        from cellseg_gui.core.jobs import CancelToken

        factory = J.export_job(self.active_model, request.paths())
        worker = self._start("export", factory, CancelToken())
        if worker is not None:
            worker.start()
        return worker

    # --- closing ----------------------------------------------------------------------
    def _ask_to_stop(self) -> bool:
        answer = QMessageBox.question(
            self._host, "Training is running",
            "A job is still running. Stop it and close? The best model so far is kept.",
        )  # fmt: skip
        return answer == QMessageBox.StandardButton.Yes

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if (
            event.type() == QEvent.Type.ShortcutOverride
            and event.key() == Qt.Key.Key_Escape
            and self.running
            and self._host.isActiveWindow()
        ):
            # During a run Esc means Stop, ahead of the editor's Esc (pan tool) shortcut.
            event.accept()
            self.stop()
            return True
        return False

    def may_close(self) -> bool:
        """The window is asked to close: with a job running, ask (False: stay open)."""
        return not self.running or self.ask_to_stop()

    def shutdown(self) -> None:
        """Stop every job and wait, so no thread outlives the window, and drop what the
        jobs had not delivered yet, so no late signal reaches a closed window."""
        self._save_timer.stop()
        if self.project is not None:
            self.save_settings(only_if_changed=True)
        self._closing = True
        self.stop(wait=True)
        if self.probe_worker is not None:
            self.probe_worker.wait(15000)
        if self.worker is not None and not self.worker.is_running():
            # The window still exists: let a stopped run register the best model it kept
            # (the close dialog promises that), but start nothing after it.
            self.worker.flush()
        for worker in (self.worker, self.bg_worker, self.probe_worker):
            if worker is not None:
                worker.abandon()


__all__ = ["TrainingController"]
