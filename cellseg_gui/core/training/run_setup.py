"""Setting a training run up, and writing its bundles: what ``core/training/train.py``'s loop needs
before the first step and after each best epoch.

``prepare_run`` checks the samples, reads a checkpoint to resume (its own settings, except
when and where to stop and run), decides the split (the checkpoint's, the caller's
validation names, else ``core.data.split``'s), builds the training targets, and makes the model:
new (auto-downsample chosen here), fine-tuned from a bundle (its architecture, checked
against the data) or resumed. It yields the messages a user should read and returns a
typed :class:`RunSetup`. ``BundleWriter`` writes the best weights so far with the run's
record; the post-processing chosen at the end goes in the last one.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellseg_gui.core.config import TrainConfig
from cellseg_gui.core.data.split import split_train_val
from cellseg_gui.core.events import Message
from cellseg_gui.core.model.bundle import architecture, load_bundle, make_meta, save_bundle
from cellseg_gui.core.model.postprocess import PostProcess, default_postprocess
from cellseg_gui.core.model.precision import resolve_precision, setup_device
from cellseg_gui.core.training.checkpoint import load_checkpoint
from cellseg_gui.core.training.distributed import DistContext
from cellseg_gui.core.training.memory import check_training_memory
from cellseg_gui.core.training.sampling import (
    _check_samples,
    _downsample_message,
    choose_downsample,
    distance_possible,
    training_targets,
)

__all__ = ["BundleWriter", "RunSetup", "prepare_run"]


@dataclass
class RunSetup:
    """What a run trains, on what, with which model."""

    cfg: TrainConfig  # the run's own copy (a resumed run's from its checkpoint)
    device: torch.device
    precision: str
    train_names: list[str]
    val_names: list[str]
    train_s: list  # training samples, with their targets
    val_s: list  # validation samples; the training ones when there is no other image
    n_classes: int
    model: torch.nn.Module  # on the device, in training mode
    init_model: torch.nn.Module | None = None  # the fine-tuned bundle's (for the guard-rail)
    ckpt: dict | None = None  # the checkpoint resumed from
    chosen: str = ""  # what auto-downsample decided, said once the run has started


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _resume(cfg: TrainConfig, resume: str | Path) -> tuple[TrainConfig, dict]:
    """The checkpoint's settings, except when and where to stop and run, which the caller
    may change (e.g. "train 20 more epochs")."""
    ckpt = load_checkpoint(Path(resume))
    keep = {k: getattr(cfg, k) for k in ("epochs", "minutes", "patience", "device")}
    cfg = TrainConfig.from_dict(ckpt["cfg"])
    if "boundary_mode" not in ckpt["cfg"]:  # from before the setting: it drew them all
        cfg.boundary_mode = "all"
    for k, v in keep.items():
        setattr(cfg, k, v)
    return cfg, ckpt


def _split(
    names: list[str], cfg: TrainConfig, val_names: list[str] | None, ckpt: dict | None
) -> tuple[list[str], list[str]]:
    known = set(names)
    if ckpt is not None:
        train = [n for n in ckpt["split"]["train"] if n in known]
        val = [n for n in ckpt["split"]["val"] if n in known]
    elif val_names:
        unknown = [n for n in val_names if n not in known]
        if unknown:
            raise ValueError(f"validation images not in the data: {', '.join(unknown)}")
        held = set(val_names)
        val = [n for n in names if n in held]
        train = [n for n in names if n not in held]
    else:
        train, val = split_train_val(names, cfg.val_fraction, cfg.seed)
    if not train:
        raise ValueError("no training images left after the validation split")
    return train, val


def _fine_tune_model(
    cfg: TrainConfig, init_bundle: str | Path, train_s: list, n_classes: int, is_main: bool
) -> Generator[Message, None, torch.nn.Module]:
    """Take the bundle's architecture (checked against the data) into ``cfg.model`` and
    return its model."""
    b = load_bundle(init_bundle, device="cpu")
    arch = architecture(b.meta)
    channels = int(train_s[0].image.shape[0])
    if arch.n_classes != n_classes or arch.in_channels != channels:
        raise ValueError(
            f"{init_bundle}: its model has {arch.n_classes} classes and "
            f"{arch.in_channels} channel(s); the data has {n_classes} and {channels}"
        )
    wanted = copy.deepcopy(cfg.model)
    wanted.downsample = wanted.downsample or arch.downsample  # auto accepts any
    wanted.n_classes, wanted.in_channels = arch.n_classes, arch.in_channels
    if not wanted.distance_head:  # the default flows: a model without them is no surprise
        wanted.flow_head = arch.flow_head
    if arch.to_dict() != wanted.to_dict() and is_main:
        yield Message(f"fine-tuning: using the architecture of {Path(init_bundle).name}")
    if (arch.distance_head or arch.flow_head) and not distance_possible(train_s):
        raise ValueError(
            f"{init_bundle}: its model learns {'flows' if arch.flow_head else 'a distance map'} from instance masks (one "
            "id per cell), and these masks are not; fine-tune it on instance masks, or "
            "train a new model"
        )
    cfg.model = arch
    return b.model


def prepare_run(
    samples: list,
    cfg: TrainConfig,
    ctx: DistContext,
    *,
    val_names: list[str] | None,
    init_bundle: str | Path | None,
    resume: str | Path | None,
) -> Generator[Message, None, RunSetup]:
    """Everything before the first step (see the module docstring). Raises ValueError for
    data the run cannot train on, with the reason in one sentence."""
    given = {s.name for s in samples}
    samples, too_small = _check_samples(samples, cfg)
    if too_small:
        yield Message(level="warning", text=too_small)
        kept = {s.name for s in samples}
        if val_names:  # a too-small validation image is left out, not "unknown"
            val_names = [n for n in val_names if n in kept or n not in given]
    cfg = TrainConfig.from_dict(copy.deepcopy(cfg.to_dict()))  # never mutate the caller's
    device, precision = setup_device(cfg.device, cfg.amp, ctx.device)
    ckpt = None
    if resume is not None:
        cfg, ckpt = _resume(cfg, resume)
        precision = resolve_precision(cfg.amp, device)
    train_names, val_list = _split([s.name for s in samples], cfg, val_names, ckpt)
    by_name = {s.name: s for s in training_targets(samples, cfg)}
    train_s = [by_name[n] for n in train_names]
    val_s = [by_name[n] for n in val_list]
    n_classes = max(int(s.n_classes) for s in samples)
    if not val_s:
        val_s = train_s
        if ctx.is_main:
            yield Message(
                "only one image: validating on the training image, so the scores say "
                "nothing about new images",
                level="warning",
            )
    _seed_everything(cfg.seed)
    from cellseg_gui.core.model.unet import build_model

    init_model, chosen = None, ""
    if init_bundle is not None and ckpt is None:
        init_model = yield from _fine_tune_model(cfg, init_bundle, train_s, n_classes, ctx.is_main)
    else:
        cfg.model.n_classes = n_classes
        cfg.model.in_channels = int(train_s[0].image.shape[0])
        if not cfg.model.downsample:
            cfg.model.downsample = choose_downsample(train_s)
            chosen = _downsample_message(cfg.model.downsample)
        if cfg.model.distance_head and cfg.model.flow_head:
            cfg.model.flow_head = False
            if ctx.is_main:
                yield Message(
                    "the distance output replaces the flows (a model has one or the other)"
                )
        if (cfg.model.distance_head or cfg.model.flow_head) and not distance_possible(train_s):
            # the flows are on by default and only ever apply to instance masks: they go
            # quietly; the distance output is asked for, so its absence is said
            asked = cfg.model.distance_head
            cfg.model.distance_head = cfg.model.flow_head = False
            if ctx.is_main and asked:
                yield Message(
                    "no distance output: it is learned from instance masks (one id per "
                    "cell), and these masks are not"
                )
    model = build_model(cfg.model)
    n_params = sum(p.numel() for p in model.parameters())
    too_big = check_training_memory(cfg.model, cfg.batch_size, cfg.crop, n_params, device)
    if too_big:  # before the first step allocates it: say so instead of swapping
        raise ValueError(too_big)
    if init_model is not None:
        model.load_state_dict(init_model.state_dict())
    model.to(device)
    model.train()
    return RunSetup(
        cfg=cfg, device=device, precision=precision, train_names=train_names,
        val_names=val_list, train_s=train_s, val_s=val_s, n_classes=n_classes, model=model,
        init_model=init_model, ckpt=ckpt, chosen=chosen,
    )  # fmt: skip


@dataclass
class BundleWriter:
    """Writes a run's bundle (rank 0 only, where a path was given): the weights given, the
    run's record and history, and the post-processing (the defaults until the end of the
    run chooses ``postprocess`` on the validation images)."""

    out_path: str | Path | None
    cfg: TrainConfig
    record: dict[str, Any]  # the run's record: images, split, settings, device...
    classes: list[dict] | None
    mask_mode: str
    is_main: bool
    postprocess: PostProcess | None = None
    history: dict[str, list] = field(default_factory=dict)

    def write(self, state: dict | None, metrics: dict, extra: dict | None = None) -> str | None:
        if self.out_path is None or not self.is_main or state is None:
            return None
        from cellseg_gui.core.model.unet import model_from_state

        cfg = self.cfg
        pp = self.postprocess or default_postprocess(
            bool(cfg.model.distance_head), bool(cfg.model.flow_head)
        )
        m = model_from_state(cfg.model, state)
        training = dict(self.record, history=copy.deepcopy(self.history), **(extra or {}))
        meta = make_meta(
            cfg.model, classes=self.classes, mask_mode=self.mask_mode,
            boundary_width=cfg.boundary_width, channels=cfg.channels, norm=cfg.norm,
            training=training, metrics=metrics, name=Path(self.out_path).stem,
            postprocess=pp.to_dict(),
        )  # fmt: skip
        save_bundle(self.out_path, m, meta)
        return str(self.out_path)
