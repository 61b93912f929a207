"""The mask-editing toolbar: tool buttons, brush size, class, and the one-shot clean-ups.

Pure UI: it announces what the user chose (signals) and exposes its actions; the editing
controller in ``app/editing.py`` decides what they do to the mask.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QActionGroup, QColor, QIcon, QKeySequence, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QLabel,
    QSlider,
    QSpinBox,
    QToolBar,
    QWidget,
)

# (tool id, label, shortcut, tip). "pan" leaves the mouse to the canvas (pan and zoom).
TOOLS: tuple[tuple[str, str, str, str], ...] = (
    ("pan", "Pan", "H", "Look around: drag to pan, wheel to zoom (H)"),
    ("brush", "Brush", "B", "Paint the chosen class (B); [ and ] change the size"),
    ("eraser", "Eraser", "E", "Paint background (E)"),
    ("fill", "Fill", "G", "Flood-fill the connected region under the cursor (G)"),
    ("lasso", "Lasso", "L", "Draw an outline to fill it with the chosen class (L)"),
    ("picker", "Pick", "I", "Take the class (or cell) under the cursor (I)"),
    ("smooth", "Smooth", "S", "Smooth the mask's edges where you brush (S)"),
    (
        "accept",
        "Paint prediction",
        "A",
        "Brush the prediction into the mask: where you brush, the mask becomes the "
        "prediction, replacing what is there, hand-drawn cells included (A). To add the "
        "predicted cells without touching yours, use 'Accept prediction'.",
    ),
)

# Tools whose cursor is the brush disc.
BRUSH_TOOLS = frozenset({"brush", "eraser", "smooth", "accept"})


def _swatch(color: Sequence[int]) -> QIcon:
    pm = QPixmap(12, 12)
    pm.fill(QColor(*[int(c) for c in color[:3]]))
    return QIcon(pm)


class EditToolbar(QToolBar):
    """Tools and settings for editing the ground-truth mask."""

    toolChanged = Signal(str)
    sizeChanged = Signal(int)
    classChanged = Signal(int)
    onlyBackgroundChanged = Signal(bool)
    regionShapeChanged = Signal(str)

    MAX_SIZE = 300

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Edit mask", parent)
        self.setObjectName("EditToolbar")  # restoreState() needs a name
        self.tool_actions: dict[str, QAction] = {}
        group = QActionGroup(self)
        group.setExclusive(True)
        for tool, label, key, tip in TOOLS:
            act = QAction(label, self)
            act.setCheckable(True)
            act.setShortcut(QKeySequence(key))
            act.setToolTip(tip)
            act.setData(tool)
            group.addAction(act)
            self.addAction(act)
            self.tool_actions[tool] = act
        self.tool_actions["pan"].setChecked(True)
        group.triggered.connect(lambda a: self.toolChanged.emit(a.data()))

        self.addSeparator()
        self.addWidget(QLabel(" Size "))
        self.size_slider = QSlider(Qt.Orientation.Horizontal)
        self.size_slider.setRange(1, self.MAX_SIZE)
        self.size_slider.setValue(15)
        self.size_slider.setFixedWidth(110)
        self.size_slider.setToolTip("Brush diameter in image pixels ([ smaller, ] bigger)")
        self.size_label = QLabel("15")
        self.size_label.setMinimumWidth(28)
        self.size_slider.valueChanged.connect(self._size_changed)
        self.addWidget(self.size_slider)
        self.addWidget(self.size_label)
        self.smaller = QAction("Smaller brush", self, shortcut=QKeySequence("["))
        self.bigger = QAction("Bigger brush", self, shortcut=QKeySequence("]"))
        self.smaller.triggered.connect(lambda: self.step_size(-1))
        self.bigger.triggered.connect(lambda: self.step_size(+1))
        # [ and ] have no buttons: the window adds these actions so their shortcuts work.
        self.shortcut_actions = [self.smaller, self.bigger]

        self.addWidget(QLabel(" Class "))
        self.class_combo = QComboBox()
        self.class_combo.setToolTip("Class to paint (number keys 1-9)")
        self.class_combo.currentIndexChanged.connect(self._class_changed)
        self.addWidget(self.class_combo)
        self.only_background = QAction("Only over background", self)
        self.only_background.setCheckable(True)
        self.only_background.setToolTip("Paint only where the mask is background")
        self.only_background.toggled.connect(self.onlyBackgroundChanged)
        self.addAction(self.only_background)

        self.addWidget(QLabel(" Region "))
        self.region_combo = QComboBox()
        self.region_combo.addItem("Brush", "brush")
        self.region_combo.addItem("Lasso", "lasso")
        self.region_combo.setToolTip("How Smooth and Paint prediction mark the area they act on")
        self.region_combo.currentIndexChanged.connect(
            lambda _i: self.regionShapeChanged.emit(self.region_shape)
        )
        self.addWidget(self.region_combo)
        self.addWidget(QLabel(" Strength "))
        self.strength = QDoubleSpinBox()
        self.strength.setRange(0.5, 10.0)
        self.strength.setSingleStep(0.5)
        self.strength.setValue(2.0)
        self.strength.setToolTip("Edge smoothing strength (blur width in pixels)")
        self.addWidget(self.strength)

        # One-shot clean-ups live on a second bar so the first fits a laptop screen.
        self.cleanup_bar = QToolBar("Mask clean-up", parent)
        self.cleanup_bar.setObjectName("MaskCleanupToolbar")
        self.smooth_all = QAction("Smooth all", self)
        self.smooth_all.setToolTip("Smooth the edges of the whole mask")
        self.fill_holes = QAction("Fill holes", self)
        self.fill_holes.setToolTip("Fill background holes enclosed by a cell")
        self.remove_specks = QAction("Remove specks", self)
        self.remove_specks.setToolTip("Remove pieces smaller than the speck size")
        self.speck_size = QSpinBox()
        self.speck_size.setRange(2, 100000)
        self.speck_size.setValue(20)
        self.speck_size.setSuffix(" px")
        self.speck_size.setToolTip("Pieces smaller than this are specks")
        self.accept_all = QAction("Accept prediction", self)
        self.accept_all.setToolTip(
            "Add the predicted cells to the mask where it is background: cells already in "
            "the mask stay as they are, and a predicted cell mostly covered by one is left "
            "out (one undo step). 'Paint prediction' replaces what you brush over instead."
        )
        self.clear = QAction("Clear mask", self)
        self.new_mask = QAction("New mask", self)
        self.new_mask.setToolTip("Start an empty mask for an image that has none")
        self.save = QAction("Save mask", self, shortcut=QKeySequence.StandardKey.Save)
        self.restore = QAction("Restore original annotation", self)
        bar = self.cleanup_bar
        for act in (self.smooth_all, self.fill_holes, self.remove_specks):
            bar.addAction(act)
        bar.addWidget(self.speck_size)
        bar.addSeparator()
        for act in (self.accept_all, self.clear, self.new_mask, self.save):
            bar.addAction(act)
        self.set_classes([("background", (0, 0, 0)), ("class 1", (46, 204, 113))])

    # ------------------------------------------------------------------ state
    @property
    def tool(self) -> str:
        for tool, act in self.tool_actions.items():
            if act.isChecked():
                return tool
        return "pan"

    def set_tool(self, tool: str) -> None:
        act = self.tool_actions[tool]
        if not act.isChecked():
            act.setChecked(True)
            self.toolChanged.emit(tool)

    @property
    def brush_size(self) -> int:
        return self.size_slider.value()

    def step_size(self, direction: int) -> None:
        """[ and ]: about 15% per press, at least one pixel, so big brushes change quickly."""
        size = self.size_slider.value()
        step = max(1, round(size * 0.15))
        self.size_slider.setValue(size + direction * step)

    @property
    def region_shape(self) -> str:
        return self.region_combo.currentData() or "brush"

    @property
    def current_class(self) -> int:
        data = self.class_combo.currentData()
        return int(data) if data is not None else 1

    def set_classes(self, classes: Sequence[tuple[str, Sequence[int]]]) -> None:
        """(name, colour) per class id; background (0) is listed too, painting it erases."""
        keep = self.current_class
        self.class_combo.blockSignals(True)
        self.class_combo.clear()
        for i, (name, color) in enumerate(classes):
            label = f"{i}: {name}" if i > 9 else f"{i} {name}"
            self.class_combo.addItem(_swatch(color), label, i)
        self.class_combo.blockSignals(False)
        self.set_class(keep if keep < len(classes) else min(1, len(classes) - 1))

    def set_class(self, value: int) -> None:
        idx = self.class_combo.findData(int(value))
        if idx >= 0 and idx != self.class_combo.currentIndex():
            self.class_combo.setCurrentIndex(idx)
        elif idx >= 0:
            self.classChanged.emit(int(value))

    def _size_changed(self, value: int) -> None:
        self.size_label.setText(str(value))
        self.sizeChanged.emit(value)

    def _class_changed(self, _index: int) -> None:
        self.classChanged.emit(self.current_class)
