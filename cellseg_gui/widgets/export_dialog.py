"""Export dialog: which formats (bundle, TorchScript, ONNX) and where. A short model card
(markdown: data, settings, metrics) is written beside the files; the app does the work."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

SUFFIXES = {
    "bundle": ".cellseg",
    "torchscript": ".pt",
    "onnx": ".onnx",
    "bioimageio": ".bioimageio.zip",
}


@dataclass
class ExportRequest:
    folder: Path
    stem: str
    formats: list[str] = field(default_factory=list)  # "bundle" | "torchscript" | "onnx"
    model_card: bool = True

    def paths(self) -> dict[str, Path]:
        out = {f: self.folder / f"{self.stem}{SUFFIXES[f]}" for f in self.formats}
        if self.model_card:
            out["card"] = self.folder / f"{self.stem}.md"
        return out


class ExportDialog(QDialog):
    def __init__(
        self,
        model_name: str,
        folder: str | Path,
        parent: QWidget | None = None,
        onnx_available: bool = True,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export model")
        self.folder_edit = QLineEdit(str(folder))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder_edit, 1)
        folder_row.addWidget(browse)
        self.stem_edit = QLineEdit(model_name)
        self.bundle_box = QCheckBox(
            "cellseg bundle (.cellseg): weights and settings, for this app and `cellseg predict`"
        )
        self.ts_box = QCheckBox("TorchScript (.pt): for Python/C++ without this package")
        self.onnx_box = QCheckBox("ONNX (.onnx): for onnxruntime, Fiji/DeepImageJ, other tools")
        self.bioimageio_box = QCheckBox(
            "bioimage.io package (.bioimageio.zip): for ilastik, deepImageJ and QuPath"
        )
        self.bioimageio_box.setEnabled(onnx_available)
        self.card_box = QCheckBox("Model card (.md) beside the files: data, settings, metrics")
        for box in (self.bundle_box, self.ts_box, self.card_box):
            box.setChecked(True)
        self.onnx_box.setChecked(onnx_available)
        self.onnx_box.setEnabled(onnx_available)
        if not onnx_available:
            self.onnx_box.setToolTip("Install onnx and onnxruntime to export ONNX")
        self.paths_label = QLabel()
        self.paths_label.setWordWrap(True)
        for w in (self.bundle_box, self.ts_box, self.onnx_box, self.bioimageio_box, self.card_box):
            w.toggled.connect(self._update)
        self.folder_edit.textChanged.connect(self._update)
        self.stem_edit.textChanged.connect(self._update)

        form = QFormLayout()
        form.addRow("Folder", folder_row)
        form.addRow("Name", self.stem_edit)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Export")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.ok_button = buttons.button(QDialogButtonBox.StandardButton.Ok)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        for w in (self.bundle_box, self.ts_box, self.onnx_box, self.bioimageio_box, self.card_box):
            layout.addWidget(w)
        layout.addWidget(QLabel("Files written (each export is checked against the model):"))
        layout.addWidget(self.paths_label)
        layout.addWidget(buttons)
        self._update()

    def request(self) -> ExportRequest:
        formats = [
            name
            for name, box in (
                ("bundle", self.bundle_box),
                ("torchscript", self.ts_box),
                ("onnx", self.onnx_box),
                ("bioimageio", self.bioimageio_box),
            )
            if box.isChecked()
        ]
        return ExportRequest(
            folder=Path(self.folder_edit.text().strip() or "."),
            stem=self.stem_edit.text().strip() or "model",
            formats=formats,
            model_card=self.card_box.isChecked(),
        )

    def _update(self) -> None:
        req = self.request()
        paths = req.paths()
        self.paths_label.setText("<br>".join(str(p) for p in paths.values()) or "nothing selected")
        self.ok_button.setEnabled(bool(req.formats))

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export to", self.folder_edit.text())
        if folder:
            self.folder_edit.setText(folder)
