"""The project's models: one row per run (name, date, settings, best validation Jaccard),
the active one marked. Buttons choose the active model, load a bundle from disk and
start a new run from the selected model (fine-tune)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from cellseg_gui.core.model.model_registry import ModelRecord

COLUMNS = ["", "Name", "Best val J", "Val AP@0.5", "Date", "Settings"]
# what each figure is, in the words `cellseg info` and `evaluate` use
COLUMN_TIPS = {
    2: "Validation foreground Jaccard of the kept epoch, pooled over the validation pixels",
    3: "Validation cell AP@0.5 with the tuned post-processing, mean over the validation images",
}


def settings_summary(training: dict[str, Any] | None) -> str:
    """A one-line summary of TrainConfig.to_dict() for the table."""
    s = (training or {}).get("settings", training) or {}
    if not isinstance(s, dict) or not s:
        return ""
    model = s.get("model", {}) or {}
    parts = []
    if model:
        parts.append(f"h{model.get('hidden', '?')} d{model.get('depth', '?')}")
        if int(model.get("downsample", 1) or 1) > 1:
            parts.append(f"1/{model['downsample']} res")
        if model.get("distance_head") is True:
            parts.append("distance")
        if model.get("flow_head") is True:
            parts.append("flows")
    for key, fmt in (
        ("crop", "crop {}"),
        ("batch_size", "batch {}"),
        ("lr", "lr {:.2g}"),
        ("epochs", "{} ep"),
    ):
        if s.get(key) is not None:
            parts.append(fmt.format(s[key]))
    aug = [k for k, v in (s.get("augment") or {}).items() if v]
    if aug:
        parts.append("aug " + "+".join(aug))
    return ", ".join(parts)


class ModelsList(QWidget):
    """Records are dicts: name, path, created (ISO), training (dict), best_val (float|None).
    Signals carry the model file's path."""

    activateRequested = Signal(str)
    loadRequested = Signal(str)
    fineTuneRequested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        for column, tip in COLUMN_TIPS.items():
            self.table.horizontalHeaderItem(column).setToolTip(tip)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(5, QHeaderView.ResizeMode.Stretch)  # settings: elided
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.setWordWrap(False)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemDoubleClicked.connect(lambda *_: self._activate())

        self.activate_button = QPushButton("Set active")
        self.activate_button.setToolTip("Use the selected model for prediction and export")
        self.load_button = QPushButton("Load from disk…")
        self.load_button.setToolTip("Add a .cellseg bundle from elsewhere to this project")
        self.finetune_button = QPushButton("Fine-tune from selected")
        self.finetune_button.setToolTip(
            "Start a new run from the selected model's weights; a guard-rail compares it "
            "with the original on the validation images when it ends"
        )
        self.activate_button.clicked.connect(self._activate)
        self.load_button.clicked.connect(self._browse)
        self.finetune_button.clicked.connect(self._finetune)
        bar = QHBoxLayout()
        for b in (self.activate_button, self.load_button, self.finetune_button):
            bar.addWidget(b)
        bar.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.table, 1)
        layout.addLayout(bar)
        self._records: list[ModelRecord] = []
        self._active: str | None = None
        self._update_buttons()

    def set_models(self, records: list[ModelRecord], active: str | None = None) -> None:
        """Newest first, as given."""
        self._records = list(records)
        self._active = active
        self.table.setRowCount(len(records))
        bold = QFont()
        bold.setBold(True)
        for row, rec in enumerate(records):
            best = rec.best_val
            ap = rec.best_ap50
            created = rec.created[5:16].replace("T", " ")
            summary = settings_summary(rec.training)
            cells = [
                "★" if rec.path == active else "",
                rec.name,
                "" if best is None else f"{best:.3f}",
                "" if ap is None else f"{ap:.3f}",
                created,
                summary,
            ]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(f"{rec.path}\n{summary}" if summary else rec.path)
                if rec.path == active:
                    item.setFont(bold)
                self.table.setItem(row, col, item)
        self._update_buttons()

    def selected_path(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self._records[rows[0].row()].path

    def select(self, path: str) -> None:
        for row, rec in enumerate(self._records):
            if rec.path == path:
                self.table.selectRow(row)

    def _update_buttons(self) -> None:
        has = self.selected_path() is not None
        self.activate_button.setEnabled(has)
        self.finetune_button.setEnabled(has)

    def _activate(self) -> None:
        path = self.selected_path()
        if path:
            self.activateRequested.emit(path)

    def _finetune(self) -> None:
        path = self.selected_path()
        if path:
            self.fineTuneRequested.emit(path)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Load a model", "", "cellseg bundles (*.cellseg);;All files (*)"
        )
        if path:
            self.loadRequested.emit(path)
