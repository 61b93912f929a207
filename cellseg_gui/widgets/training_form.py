"""A form for every training setting, grouped as a user thinks about them.

The form edits a TrainConfig through its dict form (``to_dict``), field by dotted name
("model.hidden", "augment.affine"), so advice from diagnostics can be applied with
``set_field`` and the project can store the settings as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt, Signal
from PySide6.QtGui import QDoubleValidator
from PySide6.QtWidgets import (
    QAbstractScrollArea,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from cellseg_gui.core.config import TrainConfig


@dataclass(frozen=True)
class Field:
    """One row of the form. ``kind``: int, float, sci (float typed as 1e-3), bool, choice,
    opt_int / opt_float (the minimum means "none"), floats (comma-separated list)."""

    key: str
    label: str
    kind: str
    tip: str
    lo: float = 0
    hi: float = 1e6
    step: float = 1
    choices: tuple[str, ...] = ()
    special: str = ""  # int: what the minimum is shown as (its value stays the number)


_AUG = {
    "flips": "Random horizontal and vertical flips. Cheap and almost always right.",
    "rot90": "Random 90-degree rotations. Right unless your images have a preferred direction.",
    "affine": "Small random rotations and scaling. Helps when validation lags training.",
    "elastic": "Elastic deformations (the original U-Net trick). Slower; helps on few images.",
    "intensity": "Random brightness, contrast and gamma, for images whose exposure varies.",
    "noise": "Adds Gaussian noise, so the model copes with noisier images.",
    "blur": "Random slight blur, for images whose focus varies.",
}

# fmt: off
GROUPS: list[tuple[str, list[Field]]] = [
    (
        "Model",
        [
            Field("model.hidden", "Hidden size", "int", "Width of the first U-Net level; each level below doubles it. Larger learns more but is slower (16 on the CPU, 32 on a GPU).", 2, 256),
            Field("model.depth", "Depth", "int", "Number of down-sampling levels. Deeper sees more context (larger cells) but needs crops of at least 2^depth pixels.", 1, 7),
            Field("model.downsample", "Downsample", "int", "The network works on the image shrunk by this factor and scales its answer back up. 2 trains about 4x faster and sees twice the context; 1 keeps the finest edges and thin structures. 'auto' picks 2 when everything in the masks is thick enough.", 0, 8, special="auto"),
            Field("model.distance_head", "Distance output", "bool", "Instance masks: the network also learns how close each pixel lies to its cell's centre, and the end-of-run search may seed cells at its peaks. Off by default: in 10-minute CPU runs it did not beat the seeds derived from the cell probability. Replaces the flows when ticked. Ignored for other masks."),
            Field("model.flow_head", "Flows", "bool", "Instance masks: the network also learns, at every cell pixel, the direction towards its cell's centre (Cellpose's flows); cells are the pixels whose paths meet, so touching cells come apart. On by default: in 10-minute CPU runs it lifted AP@0.5 from 0.53 to 0.62. The distance output replaces it when ticked. Ignored for other masks."),
            Field("model.dropout", "Dropout", "float", "Share of features dropped at random while training. 0.1-0.3 helps when the model overfits (validation lags training).", 0, 0.9, 0.05),
            Field("model.batchnorm", "Batch-norm", "bool", "Normalise activations per batch. Trains faster and more stably; turn off only for batch size 1."),
            Field("model.init", "Initialisation", "choice", "How the weights start. Kaiming suits ReLU networks (the default).", choices=("kaiming", "xavier")),
        ],
    ),
    (
        "Data",
        [
            Field("crop", "Crop size", "int", "Side of the random square crops the model trains on, in pixels. Larger sees more context but uses more memory.", 16, 2048, 16),
            Field("batch_size", "Batch size", "int", "Crops per step. Larger is smoother but needs more memory; halve it after an out-of-memory error.", 1, 256),
            Field("val_fraction", "Validation share", "float", "Share of the images held out for validation. The split is stored in the project, so runs compare on the same images.", 0, 0.9, 0.05),
            Field("foreground_bias", "Foreground crops", "float", "Share of crops centred on a labelled pixel, so sparse cells are not drowned in background.", 0, 1, 0.05),
            Field("steps_per_epoch", "Steps per epoch", "opt_int", "Steps in one epoch; 'auto' makes one epoch about one pass over the training pixels, longer when the validation images would take over a tenth of it.", 0, 100000),
            Field("mask_mode", "Mask type", "choice", "How masks are read. 'instances' (one id per cell) becomes background / cell / boundary, so touching cells separate. 'auto' guesses.", choices=("auto", "binary", "classes", "instances")),
            Field("boundary_width", "Boundary width", "int", "Width in pixels of the boundary class made from instance masks.", 1, 10),
            Field("boundary_mode", "Boundary drawn", "choice", "Instance masks: 'touching' draws the boundary class only where two cells touch (the lines that keep them apart; measured better on phase contrast), 'all' around every cell.", choices=("touching", "all")),
            Field("channels", "Channels", "choice", "'grey' turns colour images grey; 'keep' trains on every channel.", choices=("grey", "keep")),
            Field("norm.method", "Normalisation", "choice", "Per-image percentile normalisation of intensities, stored with the model.", choices=("percentile",)),
            Field("norm.low", "Low percentile", "float", "Intensity percentile mapped to 0.", 0, 50, 0.5),
            Field("norm.high", "High percentile", "float", "Intensity percentile mapped to 1.", 50, 100, 0.1),
            *[Field(f"augment.{k}", f"Augment: {k}", "bool", tip) for k, tip in _AUG.items()],
            Field("dice", "Dice loss", "bool", "Add a Dice term to the cross-entropy, which helps when cells cover little of the image."),
            Field("class_weights", "Class weights", "floats", "Optional loss weight per class, comma-separated (e.g. 1, 1, 5 to stress boundaries). Empty: equal weights."),
        ],
    ),
    (
        "Optimiser",
        [
            Field("optimizer", "Optimiser", "choice", "AdamW is a safe default; SGD with momentum can generalise slightly better with a tuned schedule.", choices=("adamw", "adam", "sgd")),
            Field("lr", "Learning rate", "sci", "Step size. Too high diverges, too low crawls. Use Find LR (Ctrl+L) to pick it.", 1e-7, 10),
            Field("weight_decay", "Weight decay", "sci", "Pulls weights towards zero; a mild regulariser (1e-4 is typical).", 0, 1),
            Field("momentum", "Momentum", "float", "Momentum for SGD (ignored by Adam/AdamW).", 0, 0.999, 0.01),
            Field("schedule", "Schedule", "choice", "How the learning rate changes over the run. One-cycle warms up then anneals and works well for short runs.", choices=("onecycle", "constant", "step", "cosine", "sgdr")),
            Field("warmup_epochs", "Warm-up epochs", "int", "Epochs of linearly rising learning rate at the start.", 0, 1000),
            Field("step_epochs", "Step every", "int", "For the 'step' schedule: epochs between learning-rate drops.", 1, 1000),
            Field("step_gamma", "Step factor", "float", "For the 'step' schedule: factor applied at each drop.", 0.01, 1, 0.05),
            Field("sgdr_period", "SGDR period", "int", "For 'sgdr': epochs of the first warm-restart cycle.", 1, 1000),
        ],
    ),
    (
        "Stopping",
        [
            Field("epochs", "Epochs", "int", "Most epochs to train.", 1, 100000),
            Field("minutes", "Time limit (min)", "opt_float", "Stop after this many minutes, whatever the epoch ('none': no limit).", 0, 100000, 1),
            Field("patience", "Early-stop patience", "int", "Stop after this many epochs without a better validation Jaccard; 0 turns it off. One-cycle and cosine runs count them once the learning rate is down to a tenth of its peak.", 0, 10000),
        ],
    ),
    (
        "Device",
        [
            Field("device", "Device", "choice", "Where to train. 'auto' takes a CUDA GPU, then Apple MPS, then the CPU.", choices=("auto", "cpu", "cuda", "mps")),
            Field("amp", "Mixed precision", "choice", "Half-precision arithmetic on GPUs: faster and lighter. 'auto' uses bf16 where supported, fp32 on the CPU.", choices=("auto", "off", "fp16", "bf16")),
            Field("seed", "Random seed", "int", "Same seed and settings give the same crops and starting weights.", 0, 2**31 - 1),
            Field("tile", "Prediction tile", "int", "Tile size for validation and prediction of large images; lower it if memory runs out.", 64, 8192, 64),
        ],
    ),
]
# fmt: on


def _get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        d = d[part]
    return d


def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        d = d.setdefault(part, {})
    d[last] = value


class _WheelOnlyWhenFocused(QObject):
    """Spin and combo boxes take the mouse wheel only once clicked or tabbed into, as Qt
    forms that scroll do: scrolling over the form must scroll it, never change Depth 4
    into 5 behind the user's back. The wheel goes on to the scroll area instead."""

    def eventFilter(self, obj: QObject, ev: QEvent) -> bool:  # noqa: N802 - Qt API
        if ev.type() != QEvent.Type.Wheel or not isinstance(obj, QWidget) or obj.hasFocus():
            return False
        area = obj.parentWidget()
        while area is not None and not isinstance(area, QAbstractScrollArea):
            area = area.parentWidget()
        if area is not None:
            QCoreApplication.sendEvent(area.viewport(), ev)
        return True


class TrainingForm(QWidget):
    """Edits a TrainConfig. ``changed`` fires after any user edit (to persist settings)."""

    changed = Signal()

    def __init__(self, device_type: str = "cpu", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._fields: dict[str, Field] = {}
        self._editors: dict[str, QWidget] = {}
        self._loading = False
        self._wheel_guard = _WheelOnlyWhenFocused(self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.groups: dict[str, QGroupBox] = {}
        for title, fields in GROUPS:
            box = QGroupBox(title)
            form = QFormLayout(box)
            form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
            for f in fields:
                editor = self._make_editor(f)
                editor.setToolTip(f.tip)
                self._fields[f.key] = f
                self._editors[f.key] = editor
                if f.kind == "bool":
                    form.addRow(editor)
                else:
                    form.addRow(f.label, editor)
                    form.labelForField(editor).setToolTip(f.tip)
            self.groups[title] = box
            layout.addWidget(box)
        layout.addStretch(1)
        self._base = TrainConfig.for_device(device_type).to_dict()
        self.set_config(TrainConfig.for_device(device_type))

    # --- editors ----------------------------------------------------------------------
    def _make_editor(self, f: Field) -> QWidget:
        if f.kind == "bool":
            w = QCheckBox(f.label)
            w.toggled.connect(self._emit_changed)
        elif f.kind == "choice":
            w = QComboBox()
            w.addItems(list(f.choices))
            w.currentIndexChanged.connect(self._emit_changed)
        elif f.kind in ("int", "opt_int"):
            w = QSpinBox()
            w.setRange(int(f.lo), int(f.hi))
            w.setSingleStep(int(f.step))
            if f.kind == "opt_int" or f.special:
                w.setSpecialValueText(f.special or "auto")
            w.valueChanged.connect(self._emit_changed)
        elif f.kind in ("float", "opt_float"):
            w = QDoubleSpinBox()
            w.setDecimals(3)
            w.setRange(f.lo, f.hi)
            w.setSingleStep(f.step)
            if f.kind == "opt_float":
                w.setSpecialValueText("none")
            w.valueChanged.connect(self._emit_changed)
        else:  # sci, floats
            w = QLineEdit()
            if f.kind == "sci":
                v = QDoubleValidator(f.lo, f.hi, 12, w)
                v.setNotation(QDoubleValidator.Notation.ScientificNotation)
                w.setValidator(v)
            w.editingFinished.connect(self._emit_changed)
        if isinstance(w, (QComboBox, QSpinBox, QDoubleSpinBox)):
            w.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # not WheelFocus
            w.installEventFilter(self._wheel_guard)
        return w

    def _emit_changed(self, *_: Any) -> None:
        if not self._loading:
            self.changed.emit()

    def editor(self, dotted: str) -> QWidget:
        """The editor of one field (for tests and for focusing a field from advice)."""
        return self._editors[dotted]

    def _write(self, key: str, value: Any) -> None:
        f, w = self._fields[key], self._editors[key]
        if f.kind == "bool":
            w.setChecked(bool(value))
        elif f.kind == "choice":
            idx = w.findText(str(value))
            if idx < 0:
                w.addItem(str(value))
                idx = w.findText(str(value))
            w.setCurrentIndex(idx)
        elif f.kind in ("int", "opt_int"):
            w.setValue(w.minimum() if value is None else int(value))
        elif f.kind in ("float", "opt_float"):
            w.setValue(w.minimum() if value is None else float(value))
        elif f.kind == "sci":
            w.setText(f"{float(value):.6g}")
        else:
            w.setText("" if not value else ", ".join(f"{float(x):g}" for x in value))

    def _read(self, key: str) -> Any:
        f, w = self._fields[key], self._editors[key]
        if f.kind == "bool":
            return w.isChecked()
        if f.kind == "choice":
            return w.currentText()
        if f.kind == "int":
            return int(w.value())
        if f.kind == "opt_int":
            return None if w.value() == w.minimum() else int(w.value())
        if f.kind == "float":
            return float(w.value())
        if f.kind == "opt_float":
            return None if w.value() == w.minimum() else float(w.value())
        text = w.text().strip()
        if f.kind == "sci":
            try:
                return float(text)
            except ValueError:
                return float(_get(self._base, key))
        try:
            values = [float(x) for x in text.replace(";", ",").split(",") if x.strip()]
        except ValueError:
            return _get(self._base, key)
        return values or None

    # --- public API ---------------------------------------------------------------------
    def get_config(self) -> TrainConfig:
        """The settings as shown; fields the form does not show (e.g. the number of classes,
        set from the data) keep the values of the last ``set_config``."""
        d = TrainConfig.from_dict(self._base).to_dict()
        for key in self._fields:
            _set(d, key, self._read(key))
        return TrainConfig.from_dict(d)

    def set_config(self, cfg: TrainConfig | dict[str, Any]) -> None:
        d = cfg.to_dict() if isinstance(cfg, TrainConfig) else TrainConfig.from_dict(cfg).to_dict()
        self._base = d
        self._loading = True
        try:
            for key in self._fields:
                self._write(key, _get(d, key))
        finally:
            self._loading = False

    def set_field(self, dotted: str, value: Any) -> None:
        """Set one setting by dotted name, as advice does (``{"augment.affine": True}``)."""
        if dotted not in self._fields:
            d = self.get_config().to_dict()
            _set(d, dotted, value)
            self.set_config(d)
        else:
            self._write(dotted, value)
        self.changed.emit()

    def apply_changes(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            self.set_field(key, value)
