"""Overlay controls: visibility, opacity and filled/outline for GT, prediction, difference."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QGridLayout, QLabel, QSlider, QWidget

LAYERS = (("gt", "Ground truth", 45), ("pred", "Prediction", 80), ("diff", "Difference", 80))


class OverlayControls(QWidget):
    """Emits what the user picks; the window forwards it to the canvas."""

    visibilityChanged = Signal(str, bool)
    opacityChanged = Signal(str, float)
    filledChanged = Signal(str, bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        grid = QGridLayout(self)
        grid.setContentsMargins(8, 6, 8, 6)
        self.checks: dict[str, QCheckBox] = {}
        self.sliders: dict[str, QSlider] = {}
        self.styles: dict[str, QComboBox] = {}
        for row, (key, title, opacity) in enumerate(LAYERS):
            check = QCheckBox(title)
            check.setChecked(key != "diff")
            check.toggled.connect(lambda on, k=key: self.visibilityChanged.emit(k, on))
            slider = QSlider(Qt.Orientation.Horizontal)
            slider.setRange(0, 100)
            slider.setValue(opacity)
            slider.setToolTip(f"{title} opacity")
            slider.valueChanged.connect(lambda v, k=key: self.opacityChanged.emit(k, v / 100))
            grid.addWidget(check, row, 0)
            grid.addWidget(slider, row, 1)
            if key != "diff":
                combo = QComboBox()
                combo.addItems(["Filled", "Outline"])
                combo.setCurrentIndex(0 if key == "gt" else 1)
                combo.currentIndexChanged.connect(
                    lambda i, k=key: self.filledChanged.emit(k, i == 0)
                )
                grid.addWidget(combo, row, 2)
                self.styles[key] = combo
            else:
                grid.addWidget(QLabel("extra / missed"), row, 2)
            self.checks[key], self.sliders[key] = check, slider
        grid.setColumnStretch(1, 1)

    def toggle(self, key: str) -> None:
        self.checks[key].toggle()
