"""The learning-rate finder's plot: loss against learning rate on a log axis, the
suggestion marked, and a button that hands the suggestion to the settings form."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)


class LRPlot(QWidget):
    """``useLearningRate(float)`` fires when the user accepts the suggestion."""

    useLearningRate = Signal(float)

    def __init__(self, parent: QWidget | None = None, redraw_ms: int = 100) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget(background="w")
        item = self.plot.getPlotItem()
        item.setLogMode(x=True, y=False)
        item.setLabel("bottom", "learning rate")
        item.setLabel("left", "loss")
        item.showGrid(x=True, y=True, alpha=0.2)
        # the key in the title: a legend inside this short plot sat on the curve
        item.setTitle(
            "Loss against learning rate: <span style='color:#aaaaaa'>— raw</span> "
            "<span style='color:#3498db'>— smoothed</span> "
            "<span style='color:#e74c3c'>- - suggested</span>",
            size="9pt",
        )
        item.setXRange(-6, 1)  # log10 of the sweep's default range, before any data
        self.raw_curve = item.plot([], [], pen=pg.mkPen((170, 170, 170), width=1))
        self.smooth_curve = item.plot([], [], pen=pg.mkPen((52, 152, 219), width=2))
        self.marker = pg.InfiniteLine(
            angle=90,
            movable=False,
            pen=pg.mkPen((231, 76, 60), width=2, style=pg.QtCore.Qt.DashLine),
        )
        self.marker.setVisible(False)
        item.addItem(self.marker)

        self.label = QLabel("Run Find LR (Ctrl+L) to sweep the learning rate.")
        self.label.setWordWrap(True)
        self.use_button = QPushButton("Use this learning rate")
        self.use_button.setEnabled(False)
        self.use_button.setToolTip("Put the suggested learning rate into the training settings")
        self.use_button.clicked.connect(self._use)
        # the sweep's progress where the user looks (Find LR raises this dock; the Training
        # tab's bar may be hidden behind another tab)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setFormat("step %v of %m")
        self.progress.setMaximumWidth(220)
        self.progress.hide()
        self.steps = 100  # the sweep's length (lrfind's default), set by set_steps
        bar = QHBoxLayout()
        bar.addWidget(self.label, 1)
        bar.addWidget(self.progress)
        bar.addWidget(self.use_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.plot, 1)
        layout.addLayout(bar)

        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.suggested: float | None = None
        self._dirty = False
        self.timer = QTimer(self)
        self.timer.setInterval(redraw_ms)
        self.timer.timeout.connect(self.redraw)
        self.timer.start()

    def reset(self) -> None:
        self.lrs, self.losses, self.smoothed = [], [], []
        self.suggested = None
        self.marker.setVisible(False)
        self.use_button.setEnabled(False)
        self.label.setText("Sweeping the learning rate…")
        self.progress.setRange(0, self.steps)
        self.progress.setValue(0)
        self.progress.show()
        self._dirty = True
        self.redraw()

    def set_steps(self, steps: int) -> None:
        self.steps = max(1, int(steps))
        self.progress.setRange(0, self.steps)

    def add_probe(self, ev: Any) -> None:
        """An LRProbe event. Non-finite losses (the sweep's end) are left out."""
        self.progress.setValue(min(int(ev.step) + 1, self.progress.maximum()))
        if math.isfinite(ev.loss):
            self.label.setText(f"Sweeping: lr {ev.lr:.2g}, loss {ev.loss:.3g}")
        if ev.lr > 0 and math.isfinite(ev.loss):
            self.lrs.append(float(ev.lr))
            self.losses.append(float(ev.loss))
            self.smoothed.append(
                float(ev.smoothed) if math.isfinite(ev.smoothed) else float(ev.loss)
            )
            self._dirty = True

    def set_result(self, result: dict[str, Any]) -> None:
        """The finder's result: replaces the probes (same data, complete) and marks the
        suggested learning rate."""
        self.progress.hide()
        lrs = [float(x) for x in result.get("lrs", [])]
        if lrs:
            losses = [float(x) for x in result.get("losses", [])]
            smoothed = [float(x) for x in result.get("smoothed", losses)]
            keep = [
                i
                for i, (a, b) in enumerate(zip(lrs, losses, strict=False))
                if a > 0 and math.isfinite(b)
            ]
            self.lrs = [lrs[i] for i in keep]
            self.losses = [losses[i] for i in keep]
            self.smoothed = [smoothed[i] if i < len(smoothed) else losses[i] for i in keep]
            self._dirty = True
        lr = result.get("suggested_lr")
        if lr is not None and math.isfinite(lr) and lr > 0:
            self.suggested = float(lr)
            self.marker.setValue(math.log10(self.suggested))
            self.marker.setVisible(True)
            self.use_button.setEnabled(True)
            steep = result.get("steepest_lr")
            extra = f" (steepest descent at {steep:.2g})" if steep else ""
            self.label.setText(f"Suggested learning rate: {self.suggested:.2g}{extra}")
        else:
            self.suggested = None
            self.marker.setVisible(False)
            self.use_button.setEnabled(False)
            why = result.get("no_suggestion") or "the loss never fell. Check the data."
            self.label.setText(f"No suggestion: {why}")
        self.redraw()

    def set_failed(self, text: str) -> None:
        self.progress.hide()
        self.label.setText(text)

    def point_count(self) -> int:
        x, _ = self.smooth_curve.getData()
        return 0 if x is None else len(x)

    def redraw(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        x = np.asarray(self.lrs, float)
        self.raw_curve.setData(x, np.asarray(self.losses, float))
        self.smooth_curve.setData(x, np.asarray(self.smoothed, float))
        if self.smoothed:
            # Sweeps end in an exploding loss; keep the interesting part in view, raw
            # points included (the range once came from the smoothed curve alone and cut
            # off the raw losses around it)
            both = np.concatenate(
                [np.asarray(self.losses, float), np.asarray(self.smoothed, float)]
            )
            lo = float(np.nanmin(both))
            hi = min(
                float(np.nanmax(both)),
                4 * self.smoothed[0] if self.smoothed[0] > 0 else np.inf,
            )
            if math.isfinite(lo) and math.isfinite(hi) and hi > lo:
                self.plot.getPlotItem().setYRange(lo, hi, padding=0.05)

    def _use(self) -> None:
        if self.suggested is not None:
            self.useLearningRate.emit(self.suggested)
