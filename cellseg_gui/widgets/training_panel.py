"""The Training dock: settings form, run buttons, progress, device and messages.

The panel only shows state and asks for things through signals; the app runs the jobs.
Its QActions carry the shortcuts (Train Ctrl+T, Stop Esc, Find LR Ctrl+L) so the app can
put the same actions in the Train menu.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QGridLayout,
    QLabel,
    QProgressBar,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from cellseg_gui.widgets.training_form import TrainingForm

SNAPSHOT_NOTE = (
    "A run trains on a snapshot of the masks taken when it starts; "
    "edits made meanwhile are used by the next run."
)


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class TrainingPanel(QWidget):
    """Signals: trainRequested, stopRequested, findLrRequested, checkRequested,
    predictCurrentRequested, predictAllRequested, exportRequested."""

    trainRequested = Signal()
    stopRequested = Signal()
    findLrRequested = Signal()
    checkRequested = Signal()
    predictCurrentRequested = Signal()
    predictAllRequested = Signal()
    exportRequested = Signal()

    def __init__(self, device_type: str = "cpu", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.form = TrainingForm(device_type)
        self._running: str | None = None
        self._epochs: int | None = None
        self._steps_per_epoch: int | None = None
        self._total_steps: int | None = None

        def action(text: str, signal: Any, shortcut: str | None, tip: str) -> QAction:
            a = QAction(text, self)
            if shortcut:
                a.setShortcut(QKeySequence(shortcut))
                tip = f"{tip} ({QKeySequence(shortcut).toString(QKeySequence.NativeText)})"
            a.setToolTip(tip)
            a.setStatusTip(tip)
            a.triggered.connect(signal.emit)
            return a

        self.train_action = action(
            "Train", self.trainRequested, "Ctrl+T", "Train a model on the project's images"
        )
        self.stop_action = action(
            "Stop", self.stopRequested, "Esc", "Stop the run; the best model so far is kept"
        )
        self.lr_action = action(
            "Find LR", self.findLrRequested, "Ctrl+L", "Sweep the learning rate to find a good one"
        )
        self.check_action = action(
            "Check",
            self.checkRequested,
            None,
            "Overfit the current image: a model that cannot learn one image has a bug or bad data",
        )
        self.predict_action = action(
            "Predict",
            self.predictCurrentRequested,
            None,
            "Predict the current image with the active model",
        )
        self.predict_all_action = action(
            "Predict all",
            self.predictAllRequested,
            None,
            "Predict every image with the active model",
        )
        self.export_action = action(
            "Export…",
            self.exportRequested,
            None,
            "Export the active model (bundle, TorchScript, ONNX)",
        )
        self.stop_action.setEnabled(False)
        self.stop_action.setShortcut(QKeySequence())  # Esc only while running, see set_running
        self.actions_list = [
            self.train_action, self.stop_action, self.lr_action, self.check_action,
            self.predict_action, self.predict_all_action, self.export_action,
        ]  # fmt: skip

        buttons = QGridLayout()
        for i, a in enumerate(self.actions_list):
            b = QToolButton()
            b.setDefaultAction(a)
            b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            b.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            buttons.addWidget(b, i // 4, i % 4)
        self.train_button = buttons.itemAtPosition(0, 0).widget()
        self.stop_button = buttons.itemAtPosition(0, 1).widget()

        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("idle")
        self.device_label = QLabel("Device: not started yet")
        self.device_label.setToolTip("Where the last job ran, and the arithmetic precision used")
        self.note = QLabel(SNAPSHOT_NOTE)
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: palette(mid); font-size: small;")
        self.message_label = QLabel("")
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message_label.setVisible(False)

        # The settings get a dock of their own (the window puts ``settings_view`` beside
        # this one): below the buttons and messages only about five rows showed.
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.form)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self.settings_view = scroll

        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.device_label)
        layout.addWidget(self.message_label)
        layout.addWidget(self.note)
        layout.addStretch(1)
        # as tall as its buttons and messages, no taller and no shorter (see
        # minimumSizeHint): extra height goes to the Settings dock below
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        """The buttons never squeeze: when a message appears the dock grows to fit it
        (with only a maximum, the buttons were crushed to a few pixels)."""
        return QSize(super().minimumSizeHint().width(), self.sizeHint().height())

    # --- state --------------------------------------------------------------------------
    @property
    def running(self) -> str | None:
        """The kind of job running ("fit", "lr_find", ...), or None."""
        return self._running

    def set_running(self, job: str | None) -> None:
        self._running = job
        busy = job is not None
        for a in self.actions_list:
            a.setEnabled(not busy)
        self.stop_action.setEnabled(busy and job != "predict_bg")
        # Esc also picks the pan tool of the mask editor: hold the shortcut only during a
        # run, so the two never compete (an ambiguous shortcut fires neither).
        self.stop_action.setShortcut(QKeySequence("Esc") if busy else QKeySequence())
        if busy:
            self.progress.setRange(0, 0)  # busy until the job says how long it is
            self.progress.setFormat(f"{_JOB_NAMES.get(job, job)}: starting…")

    def set_models_available(self, available: bool) -> None:
        """Predict and Export need a model."""
        if self._running is None:
            for a in (self.predict_action, self.predict_all_action, self.export_action):
                a.setEnabled(available)

    # --- events -------------------------------------------------------------------------
    def on_started(self, ev: Any) -> None:
        self._epochs = ev.epochs
        self._steps_per_epoch = ev.steps_per_epoch
        self._total_steps = ev.total_steps
        self.device_label.setText(f"Device: {ev.device} · precision {ev.precision}")
        if ev.total_steps:
            self.progress.setRange(0, int(ev.total_steps))
            self.progress.setValue(0)
        self.progress.setFormat(f"{_JOB_NAMES.get(ev.job, ev.job)}: started")
        if ev.message:
            self.show_message(ev.message)

    def on_steps(self, steps: list[Any]) -> None:
        if not steps:
            return
        ev = steps[-1]
        if self._total_steps:
            self.progress.setRange(0, int(self._total_steps))
            self.progress.setValue(min(ev.global_step + 1, int(self._total_steps)))
        parts = []
        if self._epochs:
            parts.append(f"epoch {ev.epoch + 1}/{self._epochs}")
        else:
            parts.append(f"epoch {ev.epoch + 1}")
        spe = f"/{self._steps_per_epoch}" if self._steps_per_epoch else ""
        parts.append(f"step {ev.step + 1}{spe}")
        parts.append(f"loss {ev.loss:.3g}")
        if ev.eta_seconds is not None:
            parts.append(f"{format_duration(ev.eta_seconds)} left")
        self.progress.setFormat(" · ".join(parts))

    def on_progress(self, done: int, total: int, text: str) -> None:
        """Generic progress (LR probes, predictions)."""
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.progress.setFormat(text)

    def on_finished(self, ev: Any) -> None:
        self.set_running(None)
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if ev.ok else 0)
        self.progress.setFormat(_REASONS.get(ev.reason, ev.reason))
        if not ev.ok:
            text = ev.message or "The job failed."
            self.show_message(f"{text}\n{ev.hint}" if ev.hint else text, "error")
        elif ev.message:
            self.show_message(ev.message)

    def show_message(self, text: str, level: str = "info") -> None:
        """Messages and hints for the user (diverged runs, out-of-memory retries...)."""
        colour = {"error": "#c0392b", "warning": "#b9770e"}.get(level, "")
        self.message_label.setStyleSheet(f"color: {colour};" if colour else "")
        self.message_label.setText(text)
        self.message_label.setVisible(bool(text))

    def clear_message(self) -> None:
        self.show_message("")


_JOB_NAMES = {
    "fit": "Training",
    "lr_find": "LR sweep",
    "overfit": "Check",
    "predict": "Predicting",
    "predict_bg": "Predicting",
}
_REASONS = {
    "done": "finished",
    "cancelled": "stopped",
    "early_stop": "stopped early (no more improvement)",
    "diverged": "diverged",
    "failed": "failed",
}
