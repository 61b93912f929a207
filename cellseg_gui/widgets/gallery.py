"""Successes and failures: images sorted by Jaccard, worst first, each drawn as a
difference view (agreement green, extra (false positive) magenta, missed (false negative)
cyan, as the canvas's difference layer draws them)
so one glance says how each image fails. A click opens the image on the canvas."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
    QWidget,
)

from cellseg_gui.core.palette import FN_COLOR, FN_WORDS, FP_COLOR, FP_WORDS
from cellseg_gui.core.scores.thumbnails import THUMB_SIZE, difference_rgb, overlay_difference


def _hex(rgb: tuple[int, int, int]) -> str:
    r, g, b = rgb
    return f"#{r:02x}{g:02x}{b:02x}"


@dataclass
class GalleryItem:
    name: str
    jaccard: float | None
    image: Any  # np.ndarray (H, W) or (C, H, W) float, for the background
    gt: Any | None  # uint8 (H, W) class map
    pred: Any | None  # uint8 (H, W) class map
    ap50: float | None = None  # cell AP@0.5 where ground truth exists
    # the difference thumbnail made where the image was predicted (core.scores.thumbnails), so
    # the GUI thread need not read the image and mask from disk again
    thumbnail: Any | None = None
    grey: Any | None = None  # uint8 (h, w): the grey under ``thumbnail`` (``grey_thumbnail``)


def to_pixmap(rgb: np.ndarray) -> QPixmap:
    h, w, _ = rgb.shape
    qimg = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(qimg.copy())  # copy: the numpy buffer goes away


class Gallery(QWidget):
    """``imageClicked(name)`` asks the window to show that image."""

    imageClicked = Signal(str)

    def __init__(self, parent: QWidget | None = None, thumb: int = 160) -> None:
        super().__init__(parent)
        self.thumb = thumb
        self.list = QListWidget()
        self.list.setViewMode(QListView.ViewMode.IconMode)
        self.list.setIconSize(QSize(thumb, thumb))
        self.list.setResizeMode(QListView.ResizeMode.Adjust)
        self.list.setMovement(QListView.Movement.Static)
        self.list.setSpacing(4)
        self.list.setWordWrap(True)
        self.list.itemClicked.connect(self._clicked)
        self.list.itemActivated.connect(self._clicked)
        self.legend = QLabel(
            "Worst first. <span style='color:#2ecc71'>■</span> agree "
            f"<span style='color:{_hex(FP_COLOR)}'>■</span> {FP_WORDS} "
            f"<span style='color:{_hex(FN_COLOR)}'>■</span> {FN_WORDS}. "
            "Click one to open it in the viewer."
        )
        self.legend.setWordWrap(True)
        self.sort = QComboBox()
        self.sort.addItem("Sort by Jaccard", "jaccard")
        self.sort.addItem("Sort by cell AP@0.5", "ap50")
        self.sort.setToolTip(
            "Jaccard: how well the cell pixels were found; cell AP@0.5: how many cells came "
            "out whole and separate (touching cells merged count against it)"
        )
        self.sort.currentIndexChanged.connect(lambda _i: self._rebuild())
        self.empty = QLabel("Train a model to see where it succeeds and fails.")
        self.items: dict[str, GalleryItem] = {}
        top = QHBoxLayout()
        top.addWidget(self.legend, 1)
        top.addWidget(self.sort)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(top)
        layout.addWidget(self.empty)
        layout.addWidget(self.list, 1)

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        # the list gets its new height when the layout runs, after this event: measured
        # here, the thumbnails followed the size before, and a dock squeezed and grown
        # again kept them cut
        QTimer.singleShot(0, self, self._fit_thumbnails)

    def _fit_thumbnails(self) -> None:
        """Thumbnails fit the list's height (the bottom dock is short), up to ``thumb``,
        with room for the two lines of text under each."""
        text = 2 * self.fontMetrics().height() + 24
        side = max(48, min(self.thumb, self.list.viewport().height() - text))
        if side != self.list.iconSize().width():
            self.list.setIconSize(QSize(side, side))
            self.list.setGridSize(QSize(max(side + 16, 124), side + text - 16))

    @property
    def sort_key(self) -> str:
        return str(self.sort.currentData())

    def set_sort(self, key: str) -> None:
        self.sort.setCurrentIndex(self.sort.findData(key))

    def _score(self, it: GalleryItem) -> float | None:
        return it.ap50 if self.sort_key == "ap50" else it.jaccard

    def set_items(self, items: list[GalleryItem]) -> None:
        """Replace the gallery. Items without the sort's score (no ground truth) go last."""
        self.items = {it.name: it for it in items}
        self._rebuild()

    def update_item(self, item: GalleryItem) -> None:
        """Add or replace one image, keeping the worst-first order."""
        self.items[item.name] = item
        for row in range(self.list.count()):
            if self.list.item(row).data(Qt.ItemDataRole.UserRole) == item.name:
                self.list.takeItem(row)
                break
        self._add(item)
        self.empty.setVisible(False)

    def rescore(
        self, name: str, jaccard: float | None, ap50: float | None, gt: Any | None, pred: Any | None
    ) -> None:
        """``name``'s mask or prediction changed (an edit, an accepted prediction): its
        figures, its place in the order and, where ``gt`` and ``pred`` are given and the
        grey under the thumbnail is kept, its difference view follow."""
        it = self.items.get(name)
        if it is None:
            return
        thumbnail = it.thumbnail
        if it.grey is not None and gt is not None and pred is not None:
            thumbnail = overlay_difference(it.grey, gt, pred, THUMB_SIZE)  # the grey's size
        self.update_item(replace(it, jaccard=jaccard, ap50=ap50, thumbnail=thumbnail))

    def _rebuild(self) -> None:
        self.list.clear()
        ranked = sorted(
            self.items.values(),
            key=lambda it: (self._score(it) is None, self._score(it) or 0.0, it.name),
        )
        for it in ranked:
            self._add(it)
        self.empty.setVisible(not ranked)

    def _add(self, it: GalleryItem) -> None:
        lines = [it.name]
        scores = []
        if it.jaccard is not None:
            scores.append(f"J {it.jaccard:.2f}")
        if it.ap50 is not None:
            scores.append(f"AP {it.ap50:.2f}")
        if scores:
            lines.append(" · ".join(scores))
        text = "\n".join(lines)
        entry = QListWidgetItem(
            QIcon(
                to_pixmap(
                    it.thumbnail
                    if it.thumbnail is not None
                    else difference_rgb(it.image, it.gt, it.pred, self.thumb)
                )
            ),
            text,  # fmt: skip
        )
        entry.setData(Qt.ItemDataRole.UserRole, it.name)
        score = self._score(it)
        entry.setData(Qt.ItemDataRole.UserRole + 1, score)
        entry.setToolTip(text.replace("\n", " · "))
        row = self.list.count()
        for r in range(self.list.count()):
            j = self.list.item(r).data(Qt.ItemDataRole.UserRole + 1)
            if score is not None and (j is None or j > score):
                row = r
                break
        self.list.insertItem(row, entry)

    def names(self) -> list[str]:
        """Names in display order (worst first)."""
        return [self.list.item(r).data(Qt.ItemDataRole.UserRole) for r in range(self.list.count())]

    def _clicked(self, item: QListWidgetItem) -> None:
        self.imageClicked.emit(item.data(Qt.ItemDataRole.UserRole))
