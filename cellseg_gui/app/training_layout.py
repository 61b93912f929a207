"""Where the training docks go: the run buttons on the right, the settings below them
with the height the form needs (in a tab beside Models, Advice and Noisy labels), and the
plots, LR finder and gallery as tabs along the bottom."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget, QWidget

if TYPE_CHECKING:
    from cellseg_gui.app.main_window import MainWindow
    from cellseg_gui.widgets.training_panel import TrainingPanel


def arrange_training_docks(
    w: MainWindow, panel: TrainingPanel, models: QWidget, advice: QWidget, noisy: QWidget,
    plots: QWidget, lr_plot: QWidget, gallery: QWidget,
) -> dict[str, QDockWidget]:  # fmt: skip
    d: dict[str, QDockWidget] = {}
    for title, widget, area in (
        ("Training", panel, "right"),
        ("Settings", panel.settings_view, "right"),
        ("Models", models, "right"),
        ("Advice", advice, "right"),
        ("Noisy labels", noisy, "right"),
        ("Plots", plots, "bottom"),
        ("LR finder", lr_plot, "bottom"),
        ("Gallery", gallery, "bottom"),
    ):
        d[title] = w.add_dock(title, widget, area, tabbed=False)
    w.splitDockWidget(d["Training"], d["Settings"], Qt.Orientation.Vertical)
    # the buttons need little height: the form gets the rest
    w.resizeDocks(
        [d["Training"], d["Settings"]], [panel.sizeHint().height() + 30, 1000],
        Qt.Orientation.Vertical,
    )  # fmt: skip
    for a, b in (("Settings", "Models"), ("Models", "Advice"), ("Advice", "Noisy labels")):
        w.tabifyDockWidget(d[a], d[b])
    for a, b in (("Plots", "LR finder"), ("LR finder", "Gallery")):
        w.tabifyDockWidget(d[a], d[b])
    for name in ("Settings", "Training", "Plots"):
        d[name].raise_()
    return d
