"""Image list (model/view) with lazily made thumbnails and per-image state.

Why lazy: start-up must not read every image; thumbnails are made one per timer tick
after the window shows, visible rows first as the view asks for them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QPersistentModelIndex,
    QSize,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QAction, QColor, QIcon, QImage, QKeySequence, QPixmap
from PySide6.QtWidgets import QListView, QMenu, QStyle, QWidget

THUMB = 56


def _protect_none_refcount() -> None:
    """PySide6 6.12 on Python < 3.12 drops a reference to None each time a Python
    override (model ``data()`` for unused roles) returns it; a long session then aborts at
    exit ("none_dealloc"). Python 3.12 made None immortal; here it gets a huge count."""
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return
    import ctypes

    ctypes.c_ssize_t.from_address(id(None)).value += 1 << 40


_protect_none_refcount()


@dataclass
class Entry:
    name: str
    has_gt: bool = False
    has_pred: bool = False
    split: str = "train"  # the project's role for the next run
    model_role: str | None = None  # the active model's: "train" | "val" | "unseen" | None
    val_jaccard: float | None = None
    val_ap50: float | None = None  # cell AP@0.5 of the latest prediction
    n_cells: int | None = None  # cells in the latest prediction
    unsaved: bool = False
    error: str | None = None
    thumb: QIcon | None = None


def thumbnail(image: np.ndarray, size: int = THUMB) -> QImage:
    """Grey uint8 thumbnail with percentile contrast. Each thumbnail pixel is the mean of
    its block of image pixels: a strided subsample kept one pixel in each block, and
    phase-contrast images (grain the size of a pixel) looked like noise."""
    if image.ndim == 3:
        image = image[..., :3].mean(axis=2)
    step = max(1, max(image.shape) // size)
    h, w = (image.shape[0] // step) * step, (image.shape[1] // step) * step
    if step > 1 and h and w:
        small = (
            np.asarray(image[:h, :w], np.float32)
            .reshape(h // step, step, w // step, step)
            .mean(axis=(1, 3))
        )
    else:
        small = np.asarray(image, np.float32)
    lo, hi = np.percentile(small, (0.5, 99.5)) if small.size else (0, 1)
    grey = np.clip((small - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    grey = np.ascontiguousarray(grey)
    h, w = grey.shape
    return QImage(grey.data, w, h, w, QImage.Format.Format_Grayscale8).copy()


class ImageListModel(QAbstractListModel):
    def __init__(self, loader: Callable[[str], np.ndarray] | None = None, parent=None) -> None:
        super().__init__(parent)
        self.entries: list[Entry] = []
        self.loader = loader
        self._pending: list[str] = []
        self._timer = QTimer(self)
        self._timer.setInterval(15)
        self._timer.timeout.connect(self._make_one)

    def set_entries(self, entries: list[Entry]) -> None:
        self.beginResetModel()
        self.entries = entries
        self._pending = []
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self.entries)

    def row_of(self, name: str) -> int:
        for i, e in enumerate(self.entries):
            if e.name == name:
                return i
        return -1

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        e = self.entries[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{e.name}{' *' if e.unsaved else ''}\n{self.state_text(e)}"
        if role == Qt.ItemDataRole.DecorationRole:
            if e.error:
                return QWidget().style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
            if e.thumb is None and e.name not in self._pending:
                self._pending.append(e.name)
                self._timer.start()
            return e.thumb
        if role == Qt.ItemDataRole.ToolTipRole:
            if e.error:
                return e.error
            tip = f"{e.name}: {self.state_text(e)}\n{self.role_tip(e)}"
            if e.n_cells is not None:  # the list's line is short; say what the count is
                tip += f"\n{e.n_cells} cells in the latest prediction"
            return tip
        if role == Qt.ItemDataRole.ForegroundRole:
            if e.error:
                return QColor(231, 76, 60)
            if e.split == "excluded":
                return QColor(140, 140, 140)
        if role == Qt.ItemDataRole.UserRole:
            return e.name
        return None

    @staticmethod
    def state_text(e: Entry) -> str:
        if e.error:
            return "error: " + e.error.split(": ")[-1][:40]
        parts = ["GT" if e.has_gt else "no GT"]
        if e.has_pred:
            parts.append("pred")
        parts.append(ImageListModel.role_text(e))
        scores = []
        if e.val_jaccard is not None:
            scores.append(f"J {e.val_jaccard:.2f}")
        if e.val_ap50 is not None:
            scores.append(f"AP {e.val_ap50:.2f}")
        if e.n_cells is not None:
            scores.append(f"{e.n_cells} cells")  # the tooltip says whose: the width is short
        # scores on a line of their own: the list is narrow
        return " · ".join(parts) + ("\n" + " · ".join(scores) if scores else "")

    @staticmethod
    def role_text(e: Entry) -> str:
        """The active model's role for the image (its figures are that model's), else the
        project's; a project role that differs for the next run is added after it."""
        if e.model_role is None:
            return e.split
        if e.split in ("val", "excluded") and e.split != e.model_role:
            return f"{e.model_role} · next run: {e.split}"
        return e.model_role

    @staticmethod
    def role_tip(e: Entry) -> str:
        model = {
            "train": "the active model was trained on this image",
            "val": "a validation image of the active model (it did not train on it)",
            "unseen": "the active model never saw this image",
        }.get(e.model_role or "", "")
        nxt = {
            "train": "the next run trains on it",
            "val": "the next run validates on it",
            "excluded": "excluded from training",
        }[e.split]
        return f"{model}; {nxt}" if model else nxt

    def update(self, name: str, **changes) -> None:
        row = self.row_of(name)
        if row < 0:
            return
        for k, v in changes.items():
            setattr(self.entries[row], k, v)
        idx = self.index(row)
        self.dataChanged.emit(idx, idx)

    def sort_by(self, key: str) -> None:
        """Order the list: "name", or "jaccard" / "ap50" worst first (images without the
        score last, by name)."""
        if key == "name":
            order = sorted(self.entries, key=lambda e: e.name)
        else:
            attr = {"jaccard": "val_jaccard", "ap50": "val_ap50"}[key]

            def score(e: Entry) -> tuple[bool, float, str]:
                v = getattr(e, attr)
                return (v is None, 0.0 if v is None else float(v), e.name)

            order = sorted(self.entries, key=score)
        self.layoutAboutToBeChanged.emit()
        self.entries = order
        self.layoutChanged.emit()

    def _make_one(self) -> None:
        if not self._pending or self.loader is None:
            self._timer.stop()
            return
        name = self._pending.pop(0)
        try:
            icon = QIcon(QPixmap.fromImage(thumbnail(self.loader(name))))
        except Exception as exc:  # noqa: BLE001 - any unreadable file becomes an error mark
            self.update(name, error=str(exc))
            return
        self.update(name, thumb=icon)

    def make_all(self) -> None:
        """Make every missing thumbnail now (for --screenshot and tests)."""
        self._pending = [e.name for e in self.entries if e.thumb is None and not e.error]
        while self._pending:
            self._make_one()


SORT_KEYS = {
    "name": "name",
    "jaccard": "Jaccard, worst first",
    "ap50": "cell AP@0.5, worst first",
}


class ImageList(QListView):
    """The list view: Page Up/Down move, a context menu sets the split."""

    currentNameChanged = Signal(str)
    splitRequested = Signal(list, str)  # names, "train" | "val" | "excluded"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model_ = ImageListModel(parent=self)
        self.setModel(self.model_)
        self.setIconSize(QSize(THUMB, THUMB))
        self.setSpacing(2)
        self.setUniformItemSizes(True)
        self.setSelectionMode(QListView.SelectionMode.ExtendedSelection)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._menu)
        self.selectionModel().currentChanged.connect(self._current)
        self.prev_action = QAction("Previous image", self, shortcut=QKeySequence("PgUp"))
        self.next_action = QAction("Next image", self, shortcut=QKeySequence("PgDown"))
        self.prev_action.triggered.connect(lambda: self.step(-1))
        self.next_action.triggered.connect(lambda: self.step(1))

    def _current(self, cur: QModelIndex | QPersistentModelIndex, _prev=None) -> None:
        if cur.isValid():
            self.currentNameChanged.emit(self.model_.entries[cur.row()].name)

    def select(self, name: str) -> None:
        row = self.model_.row_of(name)
        if row >= 0 and self.currentIndex().row() != row:
            self.setCurrentIndex(self.model_.index(row))

    def step(self, delta: int) -> None:
        n = self.model_.rowCount()
        if n:
            row = min(max(self.currentIndex().row() + delta, 0), n - 1)
            self.setCurrentIndex(self.model_.index(row))

    def set_modified(self, name: str, modified: bool) -> None:
        self.model_.update(name, unsaved=modified)

    def selected_names(self) -> list[str]:
        return [self.model_.entries[i.row()].name for i in self.selectedIndexes()]

    def _menu(self, pos) -> None:
        names = self.selected_names()
        if not names:
            return
        menu = QMenu(self)
        for role, title in (("train", "Training"), ("val", "Validation"), ("excluded", "Excluded")):
            act = menu.addAction(f"Use for {title.lower()}" if role != "excluded" else "Exclude")
            act.triggered.connect(lambda _c=False, r=role: self.splitRequested.emit(names, r))
        menu.addSeparator()
        for key, title in SORT_KEYS.items():
            act = menu.addAction(f"Sort by {title}")
            act.triggered.connect(lambda _c=False, k=key: self.sort_by(k))
        menu.exec(self.viewport().mapToGlobal(pos))

    def sort_by(self, key: str) -> None:
        """Re-order the list (see ``ImageListModel.sort_by``), keeping the current image."""
        current = self.currentIndex()
        name = self.model_.entries[current.row()].name if current.isValid() else None
        self.model_.sort_by(key)
        if name is not None:
            self.setCurrentIndex(self.model_.index(self.model_.row_of(name)))
