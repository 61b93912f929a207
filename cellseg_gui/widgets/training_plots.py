"""Live training plots: step loss (raw and smoothed), loss per epoch, Jaccard per epoch,
learning rate.

Data arrive on the GUI thread from the worker's signals and are only appended to lists;
a QTimer redraws at most about 10 times a second with one curve per series and
``setData`` (DESIGN.md). Earlier runs stay on the plots, faded, until ``clear()``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QHBoxLayout, QPushButton, QVBoxLayout, QWidget

# series name -> (plot key, colour, line style, legend text)
SERIES: dict[str, tuple[str, tuple[int, int, int], str, str]] = {
    "step_loss": ("step", (160, 160, 160), "solid", "raw"),
    "step_smooth": ("step", (52, 152, 219), "solid", "smoothed"),
    "train_loss": ("loss", (52, 152, 219), "solid", "train"),
    "val_loss": ("loss", (231, 76, 60), "solid", "val"),
    "train_j": ("jaccard", (52, 152, 219), "solid", "train"),
    "val_j": ("jaccard", (231, 76, 60), "solid", "val"),
    "val_ap": ("jaccard", (39, 174, 96), "dash", "val cell AP@0.5"),
    "lr": ("lr", (155, 89, 182), "solid", ""),  # the plot's title says it
}
PLOTS = {
    "step": ("Loss per step", "step", "loss"),
    "loss": ("Loss per epoch", "epoch", "loss"),
    "jaccard": ("Jaccard per epoch", "epoch", "score"),
    "lr": ("Learning rate", "step", "lr"),
}
MAX_FADED_RUNS = 4
SMOOTHING = 0.9  # exponential moving average weight for the smoothed step loss


def _title(key: str, compact: bool) -> str:
    """A plot's title with the key to its curves in it, in their colours: legends inside
    the plots sat on top of the curves."""
    title, xlabel, _ = PLOTS[key]
    if compact and "per" not in title:
        title = f"{title} (by {xlabel})"
    key_html = " ".join(
        f"<span style='color:#{c[0]:02x}{c[1]:02x}{c[2]:02x}'>"
        f"{'- -' if style == 'dash' else '—'} {text}</span>"
        for plot, c, style, text in SERIES.values()
        if plot == key and text
    )
    return f"{title}: {key_html}" if key_html else title


class TrainingPlots(QWidget):
    def __init__(self, parent: QWidget | None = None, redraw_ms: int = 100) -> None:
        super().__init__(parent)
        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground("w")
        self.plots: dict[str, pg.PlotItem] = {}
        self._columns = 2
        for i, (key, (title, xlabel, ylabel)) in enumerate(PLOTS.items()):
            p = self.view.addPlot(row=i // 2, col=i % 2, title=title)
            p.setLabel("bottom", xlabel)
            p.setLabel("left", ylabel)
            p.showGrid(x=True, y=True, alpha=0.2)
            p.setTitle(_title(key, compact=False))
            self.plots[key] = p
        # Linear, without SI prefixes: schedules read better than on a cramped log axis.
        self.plots["lr"].getAxis("left").enableAutoSIPrefix(False)
        self.plots["jaccard"].setYRange(0, 1)

        self.data: dict[str, tuple[list[float], list[float]]] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.faded: list[list[pg.PlotDataItem]] = []
        self._ema: float | None = None
        self._ema_n = 0
        self._dirty: set[str] = set()
        self.redraws = 0  # counted for tests of the throttle
        self._new_curves()

        clear = QPushButton("Clear\nearlier\nruns")
        clear.setToolTip("Remove the faded curves of earlier runs")
        clear.clicked.connect(self.clear_faded)
        self.clear_button = clear
        side = QVBoxLayout()  # beside the plots, not below: the bottom dock is short
        side.addWidget(clear)
        side.addStretch(1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.view, 1)
        layout.addLayout(side)

        self.timer = QTimer(self)
        self.timer.setInterval(redraw_ms)
        self.timer.timeout.connect(self.redraw)
        self.timer.start()

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        """Four plots in a row in a wide, short dock (the bottom of the window), 2 x 2
        when there is height for it."""
        super().resizeEvent(event)
        size = event.size()
        columns = 4 if size.width() > 2.5 * size.height() else 2
        if columns != self._columns:
            self._columns = columns
            layout = self.view.ci
            for p in self.plots.values():
                layout.removeItem(p)
            compact = columns == 4
            for i, (key, p) in enumerate(self.plots.items()):
                layout.addItem(p, row=i // columns, col=i % columns)
                # short dock: small titles that name the x axis, no x-axis label
                p.setTitle(_title(key, compact), size="9pt" if compact else None)
                p.showLabel("bottom", not compact)

    def _new_curves(self, legend: bool = True) -> None:
        self.data = {k: ([], []) for k in SERIES}
        self.curves = {}
        for key, (plot, colour, _style, _text) in SERIES.items():
            width = 1 if key == "step_loss" else 2
            symbol = "o" if plot in ("loss", "jaccard") else None
            style = Qt.PenStyle.DashLine if _style == "dash" else Qt.PenStyle.SolidLine
            curve = self.plots[plot].plot(
                [], [],
                pen=pg.mkPen(colour, width=width, style=style),
                symbol=symbol, symbolSize=5, symbolBrush=colour, symbolPen=None,
            )  # fmt: skip
            self.curves[key] = curve
        self._ema, self._ema_n = None, 0

    # --- data in ------------------------------------------------------------------------
    def add_steps(self, steps: list[Any]) -> None:
        """StepEnded events (a coalesced batch from the worker)."""
        xs, ys = self.data["step_loss"]
        sx, sy = self.data["step_smooth"]
        lx, ly = self.data["lr"]
        for ev in steps:
            loss = float(ev.loss)
            xs.append(ev.global_step)
            ys.append(loss)
            if math.isfinite(loss):
                # Bias-corrected moving average, as in the LR finder (no drag towards 0).
                self._ema = SMOOTHING * (self._ema or 0.0) + (1 - SMOOTHING) * loss
                self._ema_n += 1
                sx.append(ev.global_step)
                sy.append(self._ema / (1 - SMOOTHING**self._ema_n))
            if ev.lr > 0:
                lx.append(ev.global_step)
                ly.append(float(ev.lr))
        self._dirty.update(("step_loss", "step_smooth", "lr"))

    def add_epoch(self, ev: Any) -> None:
        """An EpochEnded event: x is the 1-based epoch."""
        x = ev.epoch + 1
        for key, value in (
            ("train_loss", ev.train_loss),
            ("val_loss", ev.val_loss),
            ("train_j", ev.train_fg_jaccard),
            ("val_j", ev.val_fg_jaccard),
            ("val_ap", ev.val_ap50),
        ):
            if value is not None and math.isfinite(value):
                self.data[key][0].append(x)
                self.data[key][1].append(float(value))
                self._dirty.add(key)

    def point_count(self, key: str) -> int:
        """Points drawn on a curve (what a user would see)."""
        x, _ = self.curves[key].getData()
        return 0 if x is None else len(x)

    # --- runs ---------------------------------------------------------------------------
    def new_run(self) -> None:
        """Fade the current curves (if any have data) and start fresh ones."""
        if any(xs for xs, _ in self.data.values()):
            faded = []
            for key, (xs, ys) in self.data.items():
                plot, colour = SERIES[key][0], SERIES[key][1]
                curve = self.plots[plot].plot(
                    np.asarray(xs, float), np.asarray(ys, float),
                    pen=pg.mkPen((*colour, 60), width=1),
                )  # fmt: skip
                curve.setZValue(-1)
                faded.append(curve)
            self.faded.append(faded)
            while len(self.faded) > MAX_FADED_RUNS:
                self._remove(self.faded.pop(0))
        self.data = {k: ([], []) for k in SERIES}
        self._ema, self._ema_n = None, 0
        self._dirty.update(SERIES)
        self.redraw()

    def clear_faded(self) -> None:
        for curves in self.faded:
            self._remove(curves)
        self.faded = []

    def clear(self) -> None:
        """Remove every run, the current one included."""
        self.clear_faded()
        self.data = {k: ([], []) for k in SERIES}
        self._ema, self._ema_n = None, 0
        self._dirty.update(SERIES)
        self.redraw()

    def _remove(self, curves: list[pg.PlotDataItem]) -> None:
        for key, curve in zip(SERIES, curves, strict=True):
            self.plots[SERIES[key][0]].removeItem(curve)

    def redraw(self) -> None:
        """Push changed series to their curves; called by the timer."""
        if not self._dirty:
            return
        for key in self._dirty:
            xs, ys = self.data[key]
            self.curves[key].setData(np.asarray(xs, float), np.asarray(ys, float))
        self._dirty.clear()
        self.redraws += 1
