"""Noisy labels: training images ranked by their loss, outliers flagged. An image the
model cannot fit when it fits the others often has a wrong mask; a click opens it at its
worst region, ready to fix."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QHeaderView,
    QLabel,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

OUTLIER_BG = QColor(250, 219, 216)


class NoisyLabels(QWidget):
    """``regionClicked(name, region)``: region is (y, x, h, w) in image pixels, or None."""

    regionClicked = Signal(str, object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.info = QLabel("Training images by loss, worst first. Train to fill this list.")
        self.info.setWordWrap(True)
        self.tree = QTreeWidget()
        self.tree.setColumnCount(3)
        self.tree.setHeaderLabels(["Image", "Loss", ""])
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        header = self.tree.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.itemClicked.connect(self._clicked)
        self.tree.itemActivated.connect(self._clicked)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.info)
        layout.addWidget(self.tree, 1)
        self._regions: dict[str, tuple[int, int, int, int]] = {}

    def set_ranking(
        self,
        ranked: list[tuple[str, float, bool]],
        regions: dict[str, Any] | None = None,
        epoch: int | None = None,
    ) -> None:
        """``ranked`` as diagnostics.noisy_labels returns it (sorted worst first)."""
        self._regions = {k: tuple(int(v) for v in r) for k, r in (regions or {}).items()}
        self.tree.clear()
        n_out = 0
        for name, loss, outlier in ranked:
            item = QTreeWidgetItem([name, f"{loss:.4g}", "outlier" if outlier else ""])
            item.setData(0, Qt.ItemDataRole.UserRole, name)
            item.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if outlier:
                n_out += 1
                for c in range(3):
                    item.setBackground(c, QBrush(OUTLIER_BG))
                item.setToolTip(0, "Loss far above the others: check this mask")
            self.tree.addTopLevelItem(item)
        when = f" after epoch {epoch + 1}" if epoch is not None else ""
        self.info.setText(
            f"{len(ranked)} training images by loss{when}, worst first; "
            f"{n_out} flagged as outliers. Click one to open it at its worst region."
        )

    def names(self) -> list[str]:
        return [self.tree.topLevelItem(i).text(0) for i in range(self.tree.topLevelItemCount())]

    def flagged(self) -> list[str]:
        return [
            self.tree.topLevelItem(i).text(0)
            for i in range(self.tree.topLevelItemCount())
            if self.tree.topLevelItem(i).text(2)
        ]

    def _clicked(self, item: QTreeWidgetItem, _col: int = 0) -> None:
        name = item.data(0, Qt.ItemDataRole.UserRole)
        self.regionClicked.emit(name, self._regions.get(name))
