"""Legend: class colours by name, plus the difference view's two colours when it is on.

An entry drawn in many colours (the predicted cells, a colour each) gets a swatch of
several stripes: a single swatch of the first cell's colour read as "cells are red"."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtGui import QColor, QPainter, QPixmap
from PySide6.QtWidgets import QGridLayout, QLabel, QWidget

Color = tuple[int, int, int]
SWATCH = 16


def swatch_pixmap(colors: Color | list[Color]) -> QPixmap:
    """A square of one colour, or vertical stripes of several."""
    cols = [colors] if colors and isinstance(colors[0], int) else list(colors)
    pix = QPixmap(SWATCH, SWATCH)
    pix.fill(QColor(*cols[0]))
    if len(cols) > 1:
        painter = QPainter(pix)
        for i, rgb in enumerate(cols):
            x0, x1 = i * SWATCH // len(cols), (i + 1) * SWATCH // len(cols)
            painter.fillRect(x0, 0, x1 - x0, SWATCH, QColor(*rgb))
        painter.end()
    return pix


class Legend(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(8, 6, 8, 6)
        self.grid.setHorizontalSpacing(8)
        self.entries: list[tuple[str, Color | list[Color]]] = []

    def set_entries(self, entries: Sequence[tuple[str, Color | list[Color]]]) -> None:
        """Replace the legend rows: (name, rgb) pairs, or (name, [rgb, ...]) for an entry
        drawn in several colours."""
        while self.grid.count():
            w = self.grid.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        self.entries = list(entries)
        for row, (name, rgb) in enumerate(self.entries):
            pix = swatch_pixmap(rgb)
            swatch = QLabel()
            swatch.setPixmap(pix)
            self.grid.addWidget(swatch, row, 0)
            self.grid.addWidget(QLabel(name), row, 1)
        self.grid.setColumnStretch(1, 1)
        self.grid.setRowStretch(len(self.entries), 1)
