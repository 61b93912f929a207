"""Settings as plain dataclasses, torch-free, so forms in the window and the CLI can
build them and bundles can store them as JSON (``to_dict`` / ``from_dict``)."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def _from_dict(cls: type[T], data: dict[str, Any] | None) -> T:
    """Build a dataclass from a dict, ignoring unknown keys (old/new bundle versions)."""
    data = dict(data or {})
    kwargs: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        value = data[f.name]
        sub = f.default_factory if f.default_factory is not MISSING else None
        if sub is not None and isinstance(value, dict):
            probe = sub()
            if is_dataclass(probe):
                value = _from_dict(type(probe), value)
        kwargs[f.name] = value
    return cls(**kwargs)


@dataclass
class ModelConfig:
    """U-Net architecture. ``hidden`` is the width of the first level ("hidden size");
    each level down doubles it."""

    in_channels: int = 1
    n_classes: int = 3
    hidden: int = 16
    depth: int = 4
    dropout: float = 0.0
    batchnorm: bool = True
    init: str = "kaiming"  # "kaiming" | "xavier"
    # The network runs on the image averaged over downsample x downsample blocks and its
    # logits are upsampled back: 4x cheaper per pixel at 2, with twice the context.
    # 0 = auto: training picks 2 when every class in the masks is thick enough to survive
    # it, else 1 (``train.choose_downsample``); a bundle records the number used, and an
    # architecture without one (older bundles) runs at full resolution.
    downsample: int = 0
    # One output plane more than the classes: how close each pixel lies to its cell's
    # centre along the cell (core.model.distance), learned from instance masks; its peaks are
    # offered as seeds to the post-processing search. Off by default (measured: no gain
    # in 10-minute CPU runs) and in older bundles.
    distance_head: bool = False
    # Two output planes more: Cellpose-style flows, the unit vector towards each cell
    # pixel's centre along the cell (core.model.flow), learned from instance masks; cells
    # are the pixels whose flows meet. Not with distance_head. On in TrainConfig's
    # default model; ignored (and said) for masks without cell ids.
    flow_head: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def n_outputs(self) -> int:
        """Planes the network outputs: the classes, and the distance or the two flow
        planes when it has them."""
        return int(self.n_classes) + int(bool(self.distance_head)) + 2 * int(bool(self.flow_head))

    @property
    def size_multiple(self) -> int:
        """Input sizes the network handles without padding: 2**depth * downsample."""
        return 2 ** int(self.depth) * self.scale

    @property
    def scale(self) -> int:
        """The downsampling factor in effect (auto, not yet resolved, counts as 1)."""
        return max(1, int(self.downsample or 1))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ModelConfig:
        return _from_dict(cls, data)


@dataclass
class NormConfig:
    """Per-image percentile normalisation, stored with every model so prediction
    repeats it exactly."""

    method: str = "percentile"
    low: float = 1.0
    high: float = 99.8

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> NormConfig:
        return _from_dict(cls, data)


@dataclass
class AugmentConfig:
    """Which augmentations a run uses. All on by default: on usiigaci in 10 minutes
    (benchmarks/instances.py, seeds 0-2) they gave validation AP@0.5 0.666 median against
    0.629 with flips, rot90 and intensity alone, higher for every seed, for about 15% fewer
    steps (the elastic grid costs); 0.652 over nine runs, since one run moves by up to
    0.04 with nothing changed (README, accuracy section)."""

    flips: bool = True
    rot90: bool = True
    affine: bool = True  # small rotation and scaling
    elastic: bool = True
    intensity: bool = True  # brightness / contrast / gamma
    noise: bool = True
    blur: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> AugmentConfig:
        return _from_dict(cls, data)

    @classmethod
    def none(cls) -> AugmentConfig:
        return cls(**{f.name: False for f in fields(cls)})

    @classmethod
    def all(cls) -> AugmentConfig:
        return cls(**{f.name: True for f in fields(cls)})


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data. Defaults are for the CPU;
    ``for_device`` gives larger ones on a GPU."""

    # flows on for new runs (measured on usiigaci, 10 minutes: AP@0.5 0.62 against 0.53);
    # ModelConfig's own default stays off, since a bundle's architecture without the key
    # (older bundles) has none
    model: ModelConfig = field(default_factory=lambda: ModelConfig(flow_head=True))
    norm: NormConfig = field(default_factory=NormConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # data
    mask_mode: str = "auto"  # "auto" | "binary" | "classes" | "instances"
    # instance masks: the boundary class drawn only where cells touch ("touching"), the
    # lines that keep them apart, or around every cell ("all"); its width in pixels.
    # Measured on usiigaci (benchmarks/instances.py): touching, 3 px.
    boundary_width: int = 3
    boundary_mode: str = "touching"
    channels: str = "grey"  # "grey" | "keep"
    crop: int = 256
    batch_size: int = 4  # CPU: more optimiser steps per minute; step cost grows with batch
    val_fraction: float = 0.2
    foreground_bias: float = 0.5  # share of crops centred on foreground
    # None: about one pass over the training pixels, or more when validation would take
    # over a tenth of the epoch (``sampling._steps_per_epoch``)
    steps_per_epoch: int | None = None
    # loss
    class_weights: list[float] | None = None
    dice: bool = True
    # the U-Net paper's separation-border weight w0 on pixels between touching cells
    # (instance masks only; 0 turns it off) and its width sigma in pixels
    separation_weight: float = 0.0
    separation_sigma: float = 5.0
    # a flow model's flow term beside cross-entropy + Dice (core.training.objective)
    flow_weight: float = 0.5
    # optimiser and schedule
    optimizer: str = "adamw"  # "sgd" | "adam" | "adamw"
    lr: float = 3e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "onecycle"  # "constant" | "step" | "cosine" | "sgdr" | "onecycle"
    warmup_epochs: int = 0
    step_epochs: int = 10  # for "step"
    step_gamma: float = 0.3
    sgdr_period: int = 10  # epochs of the first cycle, for "sgdr"
    # stopping
    epochs: int = 40
    minutes: float | None = None
    patience: int = 10  # epochs without validation improvement; 0 turns it off
    # run
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "mps"
    amp: str = "auto"  # "auto" | "off" | "fp16" | "bf16"
    seed: int = 0
    tile: int = 512  # validation / prediction tile size
    # cells: pick the post-processing (marker threshold, minimum size) on the validation
    # images at the end of the run and store it in the bundle
    tune_postprocess: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TrainConfig:
        return _from_dict(cls, data)

    @classmethod
    def from_saved(cls, data: dict[str, Any] | None) -> TrainConfig:
        """A training form saved in a project: a setting it predates gets today's default
        (flows on, for a form saved before they existed), where ``from_dict`` (checkpoints,
        bundles) gives the field's own default, which keeps an old architecture as it was."""
        data = dict(data or {})
        model = data.get("model")
        if isinstance(model, dict) and "flow_head" not in model:
            data["model"] = {**model, "flow_head": cls().model.flow_head}
        return _from_dict(cls, data)

    @classmethod
    def for_device(cls, device_type: str) -> TrainConfig:
        """Defaults that fit the device: small on the CPU, larger on a GPU."""
        cfg = cls()
        if device_type in ("cuda", "mps"):
            cfg.model.hidden = 32
            cfg.batch_size = 16
            cfg.crop = 256
            cfg.epochs = 100
            cfg.augment = AugmentConfig(affine=True, elastic=True, noise=True, blur=True)
        return cfg
