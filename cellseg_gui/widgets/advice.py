"""Advice after a run: the diagnostics in plain words, each with a button that applies
its settings changes to the training form (the app connects ``applyRequested``)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)


def _field(advice: Any, name: str, default: Any = None) -> Any:
    if isinstance(advice, dict):
        return advice.get(name, default)
    return getattr(advice, name, default)


def describe_changes(changes: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in changes.items())


class AdvicePanel(QWidget):
    """``applyRequested(dict)``: TrainConfig field updates, dotted names."""

    applyRequested = Signal(dict)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.body = QWidget()
        self.rows = QVBoxLayout(self.body)
        self.rows.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self.body)
        self.empty = QLabel("Advice appears here after a run.")
        self.empty.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.empty)
        layout.addWidget(scroll, 1)
        self.buttons: list[QPushButton] = []

    def set_advice(self, items: list[Any]) -> None:
        """Items with ``code``, ``text`` and ``changes`` (diagnostics.Advice or dicts)."""
        while self.rows.count() > 1:
            w = self.rows.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        self.buttons = []
        for advice in items:
            self.rows.insertWidget(self.rows.count() - 1, self._row(advice))
        self.empty.setText(
            ("1 suggestion:" if len(items) == 1 else f"{len(items)} suggestions:")
            if items
            else "No advice after the last run: nothing in its curves calls for a change."
        )

    def _row(self, advice: Any) -> QWidget:
        frame = QFrame()
        frame.setFrameShape(QFrame.Shape.StyledPanel)
        row = QHBoxLayout(frame)
        text = QLabel(str(_field(advice, "text", "")))
        text.setWordWrap(True)
        row.addWidget(text, 1)
        changes = dict(_field(advice, "changes", {}) or {})
        if changes:
            button = QPushButton("Apply")
            button.setToolTip(f"Set {describe_changes(changes)} in the training settings")
            button.clicked.connect(lambda _=False, c=changes, b=button: self._apply(c, b))
            row.addWidget(button)
            self.buttons.append(button)
        return frame

    def _apply(self, changes: dict[str, Any], button: QPushButton) -> None:
        self.applyRequested.emit(dict(changes))
        button.setText("Applied")
        button.setEnabled(False)
