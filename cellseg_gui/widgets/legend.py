"""Legend: class colours by name, plus the difference view's two colours when it is on."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPixmap
from PySide6.QtWidgets import QGridLayout, QLabel, QWidget


class Legend(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(8, 6, 8, 6)
        self.grid.setHorizontalSpacing(8)
        self.entries: list[tuple[str, tuple[int, int, int]]] = []

    def set_entries(self, entries: list[tuple[str, tuple[int, int, int]]]) -> None:
        """Replace the legend rows ((name, rgb) pairs)."""
        while self.grid.count():
            w = self.grid.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        self.entries = list(entries)
        for row, (name, rgb) in enumerate(self.entries):
            pix = QPixmap(16, 16)
            pix.fill(QColor(*rgb))
            swatch = QLabel()
            swatch.setPixmap(pix)
            self.grid.addWidget(swatch, row, 0)
            self.grid.addWidget(QLabel(name), row, 1)
        self.grid.setColumnStretch(1, 1)
        self.grid.setRowStretch(len(self.entries), 1)
