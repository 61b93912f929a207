"""The training controller's settings and models: the form as the project stored it (or
the device's defaults), saved back as it changes; the device probe that picks GPU
defaults; the Models list from the Workspace's registry and the active model. A mixin of
:class:`~cellseg_gui.app.training.TrainingController`, which owns the widgets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cellseg_gui.app import training_jobs as J
from cellseg_gui.core.config import TrainConfig
from cellseg_gui.core.events import Finished
from cellseg_gui.core.workspace import Change, Workspace
from cellseg_gui.workers.job_worker import JobWorker

if TYPE_CHECKING:
    from PySide6.QtCore import QTimer

    from cellseg_gui.core.data.project import Project
    from cellseg_gui.widgets.advice import AdvicePanel
    from cellseg_gui.widgets.gallery import Gallery
    from cellseg_gui.widgets.lr_plot import LRPlot
    from cellseg_gui.widgets.models_list import ModelsList
    from cellseg_gui.widgets.noisy_labels import NoisyLabels
    from cellseg_gui.widgets.training_panel import TrainingPanel
    from cellseg_gui.widgets.training_plots import TrainingPlots


class TrainingSettings:
    """Settings and models of the training controller (see the module docstring)."""

    workspace: Workspace
    panel: TrainingPanel
    models: ModelsList
    gallery: Gallery
    noisy: NoisyLabels
    advice: AdvicePanel
    plots: TrainingPlots
    lr_plot: LRPlot
    val_jaccard: dict[str, float]
    last_result: Finished | None
    device_type: str
    probe_worker: JobWorker | None
    worker: JobWorker | None
    bg_worker: JobWorker | None
    _save_timer: QTimer
    _has_saved_config: bool
    _leaving: bool

    def _probe_device(self) -> None:
        """Find the device in the background; GPU defaults replace the CPU ones unless the
        project has saved settings."""
        worker = JobWorker(J.device_probe_job(), name="device_probe")
        self.probe_worker = worker

        def done(ev: Finished) -> None:
            info = ev.result or {}
            if not info:
                return
            self.device_type = info["device_type"]
            if not self.running:
                self.panel.device_label.setText(f"Device: {info['device']} (auto)")
            if self.device_type != "cpu" and not self._has_saved_config:
                self.panel.form.set_config(TrainConfig.for_device(self.device_type))

        worker.finished.connect(done)
        worker.start()

    # --- project ----------------------------------------------------------------------
    @property
    def project(self) -> Project | None:
        return self.workspace.project

    @property
    def active_model(self) -> str | None:
        """The bundle that predicts and exports (the Workspace's)."""
        return self.workspace.active_model

    def _on_workspace_change(self, change: Change) -> None:
        if change.kind == "closing":
            self._leave_project()
        elif change.kind == "project":
            self._on_project_opened(self.workspace.project)
        elif change.kind == "models":
            self.refresh_models()
        elif change.kind == "scores" and change.name:
            self._gallery_rescore(change.name)

    def _leave_project(self) -> None:
        """Another project is opening: store a form change not saved yet, and end every job
        while this project is still open, so nothing of it reaches the next one (a stopped
        run registers its best model here; queued predictions are dropped)."""
        if self._save_timer.isActive():
            self._save_timer.stop()
            self.save_settings()
        self._leaving = True
        try:
            self.stop(wait=True)
            if self.worker is not None and not self.worker.is_running():
                self.worker.flush()  # a run's result, while its project is open
            for worker in (self.worker, self.bg_worker):
                if worker is not None:
                    worker.abandon()
        finally:
            self._leaving = False

    def _on_project_opened(self, project: Project | None) -> None:
        # the last project's jobs ended on "closing" (_leave_project)
        self._set_enabled(project is not None)
        if project is None:
            return
        # the last project's results describe its images, not these: the gallery, the
        # noisy labels, the advice and the curves start empty (they showed the old
        # project's images, some under the same names)
        self.gallery.set_items([])
        self.noisy.set_ranking([])
        self.advice.set_advice([])
        self.plots.clear()
        self.lr_plot.reset()
        self.val_jaccard = {}
        self.last_result = None
        saved = project.training_settings()
        self._has_saved_config = bool(saved.get("config"))
        if saved.get("config"):
            self.panel.form.set_config(TrainConfig.from_saved(saved["config"]))
        else:
            self.panel.form.set_config(TrainConfig.for_device(self.device_type))
        self.refresh_models()

    def save_settings(self, only_if_changed: bool = False) -> None:
        """Store the form and the active model in the project. ``only_if_changed`` (on
        close): leave the folder untouched when nothing differs from what is stored, or
        from the defaults in a folder that has stored nothing."""
        if self.project is None:
            return
        saved = self.project.training_settings()
        data = dict(saved)
        data.update(config=self.panel.form.get_config().to_dict(), active_model=self.active_model)
        if only_if_changed:
            defaults = TrainConfig.for_device(self.device_type).to_dict()
            untouched = not saved and data["config"] == defaults and not self.active_model
            if data == saved or untouched:
                return
        self._has_saved_config = True
        try:
            self.project.set_training_settings(data)
        except OSError as exc:
            self.panel.show_message(f"Could not save the training settings: {exc}", "warning")

    def refresh_models(self) -> None:
        before = self.active_model
        records = self.workspace.models()
        self.models.set_models(records, self.active_model)
        self.panel.set_models_available(self.active_model is not None)
        if self.active_model != before:  # the newest was chosen, or a vanished one forgotten:
            self.workspace.set_active_model(self.active_model)  # say so (the list's roles)

    def _set_enabled(self, enabled: bool) -> None:
        for a in self.panel.actions_list:
            a.setEnabled(enabled and a is not self.panel.stop_action)
        if enabled:
            self.panel.set_models_available(self.active_model is not None)
