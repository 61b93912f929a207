"""Training (``fit``): a generator of events, with no Qt, shared by the window and the CLI.

The loop is kept as close to a bare torch loop as possible (the throughput benchmark
holds it to >= 0.97 of one): crops are sliced from images already on the device, the
per-step bookkeeping is a handful of tensor ops, and anything that needs a device sync
(loss as a Python float) is read one step late on accelerators. Validation runs on whole
images, once per epoch, with one forward per image where it fits (cheaper than tiles on a
CPU) and the tiled predictor otherwise.
"""

from __future__ import annotations

import copy
import io
import math
import random
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cellseg_gui.core import distributed as dist
from cellseg_gui.core.augment import Augmenter
from cellseg_gui.core.bundle import architecture, load_bundle, make_meta, save_bundle
from cellseg_gui.core.config import TrainConfig
from cellseg_gui.core.events import (
    CANCELLED,
    DIVERGED,
    DIVERGED_HINT,
    DONE,
    EARLY_STOP,
    FAILED,
    EpochEnded,
    Finished,
    Message,
    SampleLosses,
    Started,
    StepEnded,
)
from cellseg_gui.core.fileio import atomic_write_bytes
from cellseg_gui.core.jobs import CancelToken
from cellseg_gui.core.metrics import JaccardAccumulator, jaccard_from_confusion
from cellseg_gui.core.postprocess import DEFAULT_POSTPROCESS, PostProcess, tune_postprocess
from cellseg_gui.core.predict import (
    class_argmax,
    predict_tiled,
    select_device,
    tune_cpu_allocator,
)
from cellseg_gui.core.scoring import score_image
from cellseg_gui.core.split import split_train_val

__all__ = [
    "fit",
    "split_train_val",
    "resolve_precision",
    "CropSampler",
    "build_optimizer",
    "LRSchedule",
    "segmentation_loss",
    "evaluate",
]

# Largest image (pixels) validated with one forward pass instead of tiles.
WHOLE_FORWARD_MAX_PIXELS = {"cpu": 2048 * 2048, "cuda": 2048 * 2048, "mps": 1024 * 1024}


# --------------------------------------------------------------------------- precision


def _cpu_has_fast_bf16() -> bool:
    """bf16 autocast only pays on CPUs with AMX or AVX512-BF16; on AVX2 it is slower."""
    try:
        cap = torch.backends.cpu.get_cpu_capability().upper()
    except Exception:  # pragma: no cover - very old torch
        cap = ""
    if "AMX" in cap or "BF16" in cap:
        return True
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="ignore") as fh:
            flags = fh.read(200_000)
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(amp: str, device: torch.device) -> str:
    """Map the user's ``amp`` setting to "fp32" | "bf16" | "fp16" for this device."""
    amp = (amp or "auto").lower()
    if amp in ("off", "fp32", "none", "false"):
        return "fp32"
    if device.type == "cuda":
        if amp == "fp16":
            return "fp16"
        if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
            return "bf16"
        return "fp16"
    if device.type == "cpu":
        if amp in ("bf16", "fp16", "on", "true"):
            return "bf16"  # fp16 autocast on CPU is slow and fragile; bf16 is the CPU path
        return "bf16" if _cpu_has_fast_bf16() else "fp32"
    return "fp32"  # mps: autocast support varies; keep it exact


def autocast_context(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# --------------------------------------------------------------------------- data


class CropSampler:
    """Random crops from images held as tensors on the training device.

    Images smaller than the crop are reflect-padded once up front. Each epoch walks a
    fresh permutation of the images (so every training image is seen), and a share of
    crops (``foreground_bias``) is centred on a random foreground pixel so sparse
    images still teach the model what a cell looks like.
    """

    def __init__(
        self,
        images: list[np.ndarray],
        targets: list[np.ndarray],
        crop: int,
        device: torch.device,
        foreground_bias: float,
        gen: torch.Generator,
        levels: list[np.ndarray] | None = None,
        n_classes: int = 0,
    ) -> None:
        self.crop = int(crop)
        self.bias = float(foreground_bias)
        self.gen = gen
        self.images: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.fg: list[np.ndarray] = []
        self.offsets: list[tuple[int, int]] = []
        self.widths: list[int] = []  # original widths: foreground indices are flat in them
        for i, (img, tgt) in enumerate(zip(images, targets, strict=True)):
            h, w = tgt.shape
            self.widths.append(int(w))
            ph, pw = max(0, self.crop - h), max(0, self.crop - w)
            x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
            y = torch.from_numpy(np.ascontiguousarray(tgt, dtype=np.uint8)).long()
            if levels is not None:
                # separation weights ride in the class map (class + K * level), so every
                # geometric augmentation moves them with the classes; see split_weights
                y = y + int(n_classes) * torch.from_numpy(levels[i]).long()
            if ph or pw:
                # reflect where the image is large enough, else repeat the edge
                mode = "reflect" if ph < h and pw < w else "replicate"
                x = F.pad(x[None], (0, pw, 0, ph), mode=mode)[0]
                y = F.pad(y, (0, pw, 0, ph), value=0)
            self.images.append(x.to(device))
            self.targets.append(y.to(device))
            self.fg.append(np.flatnonzero(np.asarray(tgt) > 0).astype(np.int64))
            self.offsets.append((int(y.shape[-2]), int(y.shape[-1])))
        self.weighted = levels is not None

    def positions(self, idx: int) -> tuple[int, int]:
        h, w = self.offsets[idx]
        c = self.crop
        fg = self.fg[idx]
        r = torch.rand(3, generator=self.gen)
        if len(fg) and float(r[0]) < self.bias:
            p = int(fg[int(r[1] * len(fg)) % len(fg)])
            cy, cx = divmod(p, self.widths[idx])
            y0 = min(max(0, cy - c // 2), h - c)
            x0 = min(max(0, cx - c // 2), w - c)
        else:
            y0 = int(r[1] * (h - c + 1))
            x0 = int(r[2] * (w - c + 1))
        return y0, x0

    def batch(self, order: list[int]) -> tuple[torch.Tensor, torch.Tensor, list[tuple]]:
        """Crops for the given image indices: x (B, C, c, c), y (B, c, c) long, boxes."""
        c = self.crop
        xs, ys, boxes = [], [], []
        for i in order:
            y0, x0 = self.positions(i)
            xs.append(self.images[i][:, y0 : y0 + c, x0 : x0 + c])
            ys.append(self.targets[i][y0 : y0 + c, x0 : x0 + c])
            boxes.append((i, y0, x0))
        return torch.stack(xs), torch.stack(ys), boxes


def training_targets(samples: list, cfg: TrainConfig) -> list:
    """The samples with the class maps this run trains on: with ``boundary_mode``
    "touching", instance masks get their boundary class only where cells touch."""
    if cfg.boundary_mode not in ("all", "touching"):
        raise ValueError(f"boundary_mode must be 'all' or 'touching', not {cfg.boundary_mode!r}")
    from dataclasses import replace

    from cellseg_gui.core.masks import instances_to_classes

    touching = cfg.boundary_mode == "touching"
    # rebuilt from the cell ids with this run's width too: a resumed run keeps its own
    return [
        replace(
            s,
            target=instances_to_classes(s.instances, cfg.boundary_width, touching_only=touching),
        )
        if s.instances is not None and s.mask_mode == "instances"
        else s
        for s in samples
    ]


def _make_sampler(samples, crop, device, bias, gen, cfg=None, n_classes=0) -> CropSampler:
    levels = None
    if cfg is not None and cfg.separation_weight > 0:
        if all(s.instances is not None and s.mask_mode == "instances" for s in samples):
            from cellseg_gui.core.separation import separation_weights, weight_levels

            levels = [
                weight_levels(
                    separation_weights(s.instances, cfg.separation_weight, cfg.separation_sigma),
                    cfg.separation_weight,
                )
                for s in samples
            ]
    return CropSampler(
        [x.image for x in samples], [x.target for x in samples], crop, device, bias, gen,
        levels=levels, n_classes=n_classes,
    )  # fmt: skip


def split_weights(y: torch.Tensor, n_classes: int, w0: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoded targets (class + K * level) -> (classes, per-pixel loss weights)."""
    from cellseg_gui.core.separation import WEIGHT_LEVELS

    level = torch.div(y, n_classes, rounding_mode="floor")
    return y - level * n_classes, 1.0 + level.float() * (w0 / WEIGHT_LEVELS)


# --------------------------------------------------------------------------- resolution

# A class whose pixels lie within 2 px of another class more often than this is too thin
# to survive a 2x2 average. Measured: EM membranes 0.5-0.6, dsb2018 nuclei 0.29, usiigaci
# phase-contrast cells 0.13-0.33 per image, about 0.2 over a set.
THIN_SHARE = 0.25


def edge_counts(target: np.ndarray, mask_mode: str = "") -> dict[int, tuple[int, int]]:
    """Per class: (pixels within 2 px of another class, all its pixels); image borders do
    not count as edges. Instance masks count as cell vs background: their boundary class
    is derived and thin by construction."""
    from cellseg_gui.core.lazy import ndimage as ndi

    t = np.asarray(target)
    if mask_mode == "instances":
        t = (t > 0).astype(np.uint8)
    out: dict[int, tuple[int, int]] = {}
    for c in np.unique(t):
        m = t == c
        core = ndi.binary_erosion(m, iterations=2, border_value=1)
        total = int(np.count_nonzero(m))
        out[int(c)] = (total - int(np.count_nonzero(core)), total)
    return out


def choose_downsample(samples: list) -> int:
    """``downsample`` for ``ModelConfig.downsample = 0`` (auto): 2 when every class,
    over all training masks together, has at most THIN_SHARE of its pixels near an edge,
    else 1. On usiigaci phase contrast 2 gave validation Jaccard 0.635 against 0.602 at
    full resolution in the same 10 minutes on one CPU thread (3.6x the steps)."""
    near: dict[int, int] = {}
    total: dict[int, int] = {}
    with_masks = [s for s in samples if s.target is not None]
    step = max(1, len(with_masks) // 16)  # 16 images tell; a large set need not be read
    for s in with_masks[::step]:
        for c, (n, t) in edge_counts(s.target, str(getattr(s, "mask_mode", "") or "")).items():
            near[c] = near.get(c, 0) + n
            total[c] = total.get(c, 0) + t
    if not total:
        return 1
    worst = max(near[c] / total[c] for c in total)
    return 2 if worst <= THIN_SHARE else 1


def _downsample_message(ds: int) -> str:
    if ds > 1:
        return (
            f"downsample {ds}: the objects in the masks are large, so the network works at "
            f"1/{ds} resolution (about {ds * ds}x faster); set it to 1 for finer edges"
        )
    return "downsample 1: some structures in the masks are thin, so full resolution"


# --------------------------------------------------------------------------- loss


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    class_weights: torch.Tensor | None = None,
    dice: bool = True,
    pixel_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy (+ soft Dice over the foreground classes); with ``pixel_weights``
    (B, H, W) the cross-entropy is their weighted mean (separation borders).

    Returns (loss, per-crop cross-entropy (B,)) — the second feeds the noisy-label finder
    at no extra cost.
    """
    logits = logits.float()
    ce_map = F.cross_entropy(logits, target, weight=class_weights, reduction="none")
    per_crop = ce_map.mean(dim=(1, 2))
    if pixel_weights is None:
        loss = per_crop.mean()
    else:
        loss = (ce_map * pixel_weights).sum() / pixel_weights.sum()
    if dice and logits.shape[1] > 1:
        probs = logits.softmax(1)[:, 1:]
        onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(probs.dtype)
        dims = (0, 2, 3)
        inter = (probs * onehot).sum(dims)
        denom = probs.sum(dims) + onehot.sum(dims)
        loss = loss + (1 - (2 * inter + 1.0) / (denom + 1.0)).mean()
    return loss, per_crop.detach()


# --------------------------------------------------------------------------- optimiser


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, lr: float | None = None):
    lr = cfg.lr if lr is None else lr
    params = [p for p in model.parameters() if p.requires_grad]
    name = cfg.optimizer.lower()
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True
        )
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r} (sgd, adam, adamw)")


@dataclass
class LRSchedule:
    """Learning rate as a function of progress, so epoch- and time-limited runs share it.

    ``progress`` is the fraction of the run done (steps or minutes, whichever is
    further); ``epoch_pos`` is epochs done as a float (for step and SGDR schedules).
    Stateless apart from the config: resuming restores progress and so the rate.
    """

    kind: str
    base_lr: float
    warmup_epochs: float = 0.0
    step_epochs: int = 10
    step_gamma: float = 0.3
    sgdr_period: int = 10

    def factor(self, progress: float, epoch_pos: float) -> float:
        p = min(max(progress, 0.0), 1.0)
        kind = self.kind.lower()
        if kind == "constant":
            f = 1.0
        elif kind == "step":
            f = self.step_gamma ** int(epoch_pos // max(1, self.step_epochs))
        elif kind == "cosine":
            f = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * p))
        elif kind == "sgdr":
            period, start = float(max(1, self.sgdr_period)), 0.0
            while epoch_pos >= start + period:
                start, period = start + period, period * 2
            q = (epoch_pos - start) / period
            f = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * q))
        elif kind == "onecycle":
            up = 0.25
            if p < up:
                f = 0.04 + 0.96 * 0.5 * (1 - math.cos(math.pi * p / up))
            else:
                q = (p - up) / (1 - up)
                f = 1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * q))
        else:
            raise ValueError(f"unknown schedule {self.kind!r}")
        if self.warmup_epochs > 0 and epoch_pos < self.warmup_epochs:
            f *= max(0.01, epoch_pos / self.warmup_epochs)
        return f

    def lr(self, progress: float, epoch_pos: float) -> float:
        return self.base_lr * self.factor(progress, epoch_pos)

    def patience_from(self) -> float:
        """The progress from which early stopping counts epochs without improvement.

        One-cycle and cosine runs do most of their improving while the rate comes down at
        the end; validation is noisy and often flat while the rate is high, so counting
        then stopped a 30-minute one-cycle run at 7 minutes, worse than a 10-minute run
        (measured). They count from where the rate is half its peak on the way down."""
        kind = self.kind.lower()
        return {"onecycle": 0.25 + 0.75 * 0.5, "cosine": 0.5}.get(kind, 0.0)


# --------------------------------------------------------------------------- evaluation


@dataclass
class EvalResult:
    loss: float
    per_class: list[float]
    fg_jaccard: float
    per_image: dict[str, float] = field(default_factory=dict)
    confusion: np.ndarray | None = None
    loss_sum: float = 0.0
    pixels: int = 0
    # instance scores (None when the images carry no cell ids): AP@0.5, mean over images
    ap50: float | None = None
    per_image_ap50: dict[str, float] = field(default_factory=dict)
    # with keep_predictions: each image's (class map, probabilities), for tuning
    predictions: list = field(default_factory=list)


def _forward_probs(model, image: np.ndarray, device, precision: str, tile: int) -> torch.Tensor:
    """Class probabilities (K, H, W) on the device for one whole image."""
    h, w = image.shape[-2:]
    if h * w <= WHOLE_FORWARD_MAX_PIXELS.get(device.type, 1024 * 1024):
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(device)
        with autocast_context(device, precision):
            logits = model(x)
        return logits.float().softmax(1)[0]
    pred = predict_tiled(
        model, image, tile=tile, device=device, amp=precision != "fp32", return_probs=True
    )
    return torch.from_numpy(pred.probs).to(device)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    samples: list,
    n_classes: int,
    device: torch.device,
    *,
    precision: str = "fp32",
    tile: int = 512,
    dice: bool = True,
    class_weights: torch.Tensor | None = None,
    postprocess: PostProcess = DEFAULT_POSTPROCESS,
    keep_predictions: bool = False,
) -> EvalResult:
    """Score whole images: loss (same formula as training), per-class and foreground
    Jaccard summed over images, each image's own foreground Jaccard and, where the
    samples carry cell ids, AP@0.5 (``core.scoring``, the definition the CLI uses)."""
    was_training = model.training
    model.eval()
    acc = JaccardAccumulator(n_classes)
    per_image: dict[str, float] = {}
    per_image_ap: dict[str, float] = {}
    predictions: list = []
    cells = any(s.instances is not None for s in samples)
    loss_sum, pixels = 0.0, 0
    try:
        for s in samples:
            probs = _forward_probs(model, s.image, device, precision, tile)
            tgt = torch.from_numpy(np.ascontiguousarray(s.target, dtype=np.uint8)).to(device).long()
            logp = probs.clamp_min(1e-8).log()
            loss, _ = segmentation_loss(
                logp[None], tgt[None], class_weights=class_weights, dice=dice
            )
            npx = int(tgt.numel())
            loss_sum += float(loss) * npx
            pixels += npx
            pred = class_argmax(probs, 0).to(torch.uint8).cpu().numpy()
            target = np.asarray(s.target)
            acc.update(pred, target)
            probs_np = probs.cpu().numpy() if (cells or keep_predictions) else None
            if keep_predictions:
                predictions.append((pred, probs_np))
            if s.instances is not None:
                score = score_image(
                    s.name, pred, probs_np, target, s.instances, s.mask_mode or "instances",
                    postprocess, source=s.instance_source or "instances",
                )  # fmt: skip
                per_image[s.name] = score.fg_jaccard
                per_image_ap[s.name] = score.ap50
            else:
                p, t = pred > 0, target > 0
                union = int((p | t).sum())
                per_image[s.name] = 1.0 if union == 0 else float((p & t).sum()) / union
    finally:
        model.train(was_training)
    return EvalResult(
        loss=loss_sum / max(pixels, 1),
        per_class=[float(v) for v in acc.per_class()],
        fg_jaccard=float(acc.foreground()),
        per_image=per_image,
        confusion=acc.cm.copy() if hasattr(acc, "cm") else None,
        loss_sum=loss_sum,
        pixels=pixels,
        ap50=float(np.mean(list(per_image_ap.values()))) if per_image_ap else None,
        per_image_ap50=per_image_ap,
        predictions=predictions,
    )


def _fg_from_confusion(cm: np.ndarray) -> float:
    union = cm.sum() - cm[0, 0]
    return 1.0 if union == 0 else float(cm[1:, 1:].sum() / union)


# --------------------------------------------------------------------------- helpers


def _empty_history() -> dict[str, list]:
    return {
        "epoch": [],
        "train_loss": [],
        "val_loss": [],
        "train_fg_jaccard": [],
        "val_fg_jaccard": [],
        "val_ap50": [],
        "train_jaccard": [],
        "val_jaccard": [],
        "lr": [],
        "seconds": [],
    }


def _state_cpu(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in _unwrap(model).state_dict().items()}


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _atomic_torch_save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _plain(obj: Any) -> Any:
    """Numpy scalars and arrays as Python numbers and lists, recursively, so that the
    checkpoint loads with ``weights_only=True`` (which refuses numpy objects)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def load_checkpoint(path: Path) -> dict:
    """A training checkpoint, read as data only (``weights_only=True``): a checkpoint from
    a colleague is untrusted input, and a pickle holding an object would run its code.

    Checkpoints hold tensors, numbers, strings, lists and dicts only, so nothing else
    is needed. Anything else is refused with one sentence naming the file; torch's own
    advice to retry with ``weights_only=False`` is not passed on.
    """
    path = Path(path)
    # Checkpoints written before numbers were stored as plain floats hold numpy scalars:
    # allowed by name (they carry a dtype and bytes, nothing callable).
    safe = [np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.float32))]
    try:
        safe.append(np._core.multiarray.scalar)  # numpy >= 2
    except AttributeError:  # pragma: no cover - numpy 1.x
        safe.append(np.core.multiarray.scalar)
    try:
        with torch.serialization.safe_globals(safe):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # UnpicklingError, RuntimeError from a damaged zip, ...
        kind = "holds objects other than tensors and plain data"
        if "weights_only" not in str(exc) and "Unsupported" not in str(exc):
            kind = "is damaged or not a cellseg checkpoint"
        raise ValueError(f"{path}: checkpoint {kind}; refused (nothing in it was run)") from None
    if not isinstance(ckpt, dict) or not {"cfg", "model", "split"} <= set(ckpt):
        raise ValueError(f"{path}: not a cellseg training checkpoint")
    return ckpt


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _steps_per_epoch(cfg: TrainConfig, samples: list, world: int) -> int:
    if cfg.steps_per_epoch:
        total = int(cfg.steps_per_epoch)
    else:
        pixels = sum(int(s.target.size) for s in samples)
        total = max(1, round(pixels / (cfg.crop * cfg.crop * cfg.batch_size)))
    return max(1, math.ceil(total / world))


def _check_samples(samples: list) -> None:
    if not samples:
        raise ValueError("no images to train on")
    for s in samples:
        if s.target is None:
            raise ValueError(f"{s.name}: no mask (training needs a mask for every image)")


# --------------------------------------------------------------------------- fit


def fit(
    samples: list,
    cfg: TrainConfig,
    *,
    cancel: CancelToken | None = None,
    val_names: list[str] | None = None,
    init_bundle: str | Path | None = None,
    resume: str | Path | None = None,
    out_path: str | Path | None = None,
    checkpoint_path: str | Path | None = None,
    lr_finder: dict | None = None,
    classes: list[dict] | None = None,
    mask_mode: str = "instances",
) -> Iterator:
    """Train a U-Net; yields Started, StepEnded, EpochEnded, SampleLosses, Message and
    one Finished. See the module docstring and the API contract for the result dict."""
    try:
        yield from _fit(
            samples, cfg, cancel=cancel, val_names=val_names, init_bundle=init_bundle,
            resume=resume, out_path=out_path, checkpoint_path=checkpoint_path,
            lr_finder=lr_finder, classes=classes, mask_mode=mask_mode,
        )  # fmt: skip
    except (ValueError, OSError, RuntimeError) as exc:
        yield Finished(reason=FAILED, message=f"training failed: {exc}")


def _fit(
    samples, cfg: TrainConfig, *, cancel, val_names, init_bundle, resume, out_path,
    checkpoint_path, lr_finder, classes, mask_mode,
):  # fmt: skip
    _check_samples(samples)
    cfg = TrainConfig.from_dict(copy.deepcopy(cfg.to_dict()))  # never mutate the caller's
    ctx = dist.context()
    world, rank, is_main = ctx.world_size, ctx.rank, ctx.is_main
    device = ctx.device if ctx.device is not None else select_device(cfg.device)
    if device.type == "cpu":
        tune_cpu_allocator()  # activations reuse heap memory instead of fresh mappings
    precision = resolve_precision(cfg.amp, device)
    names = [s.name for s in samples]
    by_name = {s.name: s for s in samples}
    ckpt: dict | None = None
    if resume is not None:
        ckpt = load_checkpoint(Path(resume))
        # the run's own settings, except when and where to stop and run, which the
        # caller may change (e.g. "train 20 more epochs")
        keep = {k: getattr(cfg, k) for k in ("epochs", "minutes", "patience", "device")}
        cfg = TrainConfig.from_dict(ckpt["cfg"])
        if "boundary_mode" not in ckpt["cfg"]:  # from before the setting: it drew them all
            cfg.boundary_mode = "all"
        for k, v in keep.items():
            setattr(cfg, k, v)
        precision = resolve_precision(cfg.amp, device)
    # split
    if ckpt is not None:
        train_names = [n for n in ckpt["split"]["train"] if n in by_name]
        val_list = [n for n in ckpt["split"]["val"] if n in by_name]
    elif val_names:
        unknown = [n for n in val_names if n not in by_name]
        if unknown:
            raise ValueError(f"validation images not in the data: {', '.join(unknown)}")
        val_list = [n for n in names if n in set(val_names)]
        train_names = [n for n in names if n not in set(val_names)]
    else:
        train_names, val_list = split_train_val(names, cfg.val_fraction, cfg.seed)
    if not train_names:
        raise ValueError("no training images left after the validation split")
    by_name = {s.name: s for s in training_targets(list(by_name.values()), cfg)}
    train_s = [by_name[n] for n in train_names]
    val_s = [by_name[n] for n in val_list]
    n_classes = max(int(s.n_classes) for s in samples)
    if not val_s:
        val_s = train_s
        if is_main:
            yield Message(
                "only one image: validating on the training image, so the scores say "
                "nothing about new images",
                level="warning",
            )
    # model
    _seed_everything(cfg.seed)
    from cellseg_gui.core.unet import build_model

    init_model = None
    chosen = ""  # what auto-downsample decided, said once the run has started
    if init_bundle is not None and ckpt is None:
        b = load_bundle(init_bundle, device="cpu")
        arch = architecture(b.meta)
        if arch.n_classes != n_classes or arch.in_channels != int(train_s[0].image.shape[0]):
            raise ValueError(
                f"{init_bundle}: its model has {arch.n_classes} classes and "
                f"{arch.in_channels} channel(s); the data has {n_classes} and "
                f"{train_s[0].image.shape[0]}"
            )
        wanted = copy.deepcopy(cfg.model)
        wanted.downsample = wanted.downsample or arch.downsample  # auto accepts any
        wanted.n_classes, wanted.in_channels = arch.n_classes, arch.in_channels
        if arch.to_dict() != wanted.to_dict() and is_main:
            yield Message(f"fine-tuning: using the architecture of {Path(init_bundle).name}")
        cfg.model = arch
        init_model = b.model
    else:
        cfg.model.n_classes = n_classes
        cfg.model.in_channels = int(train_s[0].image.shape[0])
        if not cfg.model.downsample:
            cfg.model.downsample = choose_downsample(train_s)
            chosen = _downsample_message(cfg.model.downsample)
    model = build_model(cfg.model)
    if init_model is not None:
        model.load_state_dict(init_model.state_dict())
    model.to(device)
    model.train()
    train_model = dist.wrap(model, device) if world > 1 else model
    opt = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=(precision == "fp16"))
    sched = LRSchedule(
        cfg.schedule, cfg.lr, cfg.warmup_epochs, cfg.step_epochs, cfg.step_gamma, cfg.sgdr_period
    )
    weights = (
        torch.tensor(cfg.class_weights, dtype=torch.float32, device=device)
        if cfg.class_weights
        else None
    )
    gen = torch.Generator().manual_seed(int(cfg.seed) * 1000 + rank)
    sampler = _make_sampler(
        train_s, cfg.crop, device, cfg.foreground_bias, gen, cfg=cfg, n_classes=n_classes
    )
    weighted = sampler.weighted
    augmenter = Augmenter(cfg.augment, seed=int(cfg.seed) * 1000 + 7 + rank)
    spe = _steps_per_epoch(cfg, train_s, world)
    time_limit = float(cfg.minutes) * 60.0 if cfg.minutes else None
    max_epochs = int(cfg.epochs) if cfg.epochs else (10**6 if time_limit else 1)
    total_steps = None if time_limit and not cfg.epochs else max_epochs * spe
    history = _empty_history()
    best_score, best_epoch, best_state = -1.0, -1, None
    best_per_image: dict[str, float] = {}
    best_ap50: float | None = None
    best_per_image_ap: dict[str, float] = {}
    postprocess: PostProcess | None = None  # chosen on the validation images at the end
    start_epoch, global_step, elapsed_before = 0, 0, 0.0
    resumed_bad_epochs = None
    np_rng = np.random.default_rng(cfg.seed + rank)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        history = ckpt["history"]
        history.setdefault("val_ap50", [None] * len(history.get("epoch", [])))
        start_epoch = int(ckpt["epoch"]) + 1
        global_step = int(ckpt["global_step"])
        elapsed_before = float(ckpt.get("elapsed", 0.0))
        best_score, best_epoch = float(ckpt["best_score"]), int(ckpt["best_epoch"])
        best_state = ckpt.get("best_state")
        best_per_image = ckpt.get("best_per_image", {})
        best_ap50 = ckpt.get("best_ap50")
        best_per_image_ap = ckpt.get("best_per_image_ap", {})
        gen.set_state(ckpt["rng"]["sampler"])
        augmenter.load_state_dict(ckpt["rng"]["augment"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        np_rng.bit_generator.state = ckpt["rng"]["numpy"]
        lr_finder = lr_finder or ckpt.get("lr_finder")
        resumed_bad_epochs = ckpt.get("bad_epochs")
    record_base = {
        "images": [
            {"name": s.name, "sha256": getattr(s, "sha256", ""), "split": "train"} for s in train_s
        ]
        + [
            {"name": s.name, "sha256": getattr(s, "sha256", ""), "split": "val"}
            for s in (val_s if val_s is not train_s else [])
        ],
        "split": {"train": list(train_names), "val": list(val_list)},
        "seed": int(cfg.seed),
        "settings": cfg.to_dict(),
        "device": str(device),
        "precision": precision,
        "world_size": world,
        "init_bundle": str(init_bundle) if init_bundle else None,
        "resumed_from": str(resume) if resume else None,
        "lr_finder": lr_finder,
    }

    def write_bundle(state, metrics: dict, extra: dict | None = None) -> str | None:
        pp = postprocess or DEFAULT_POSTPROCESS
        if out_path is None or not is_main or state is None:
            return None
        m = build_model(cfg.model)
        m.load_state_dict(state)
        training = dict(record_base, history=copy.deepcopy(history), **(extra or {}))
        meta = make_meta(
            cfg.model, classes=classes, mask_mode=mask_mode, boundary_width=cfg.boundary_width,
            channels=cfg.channels, norm=cfg.norm, training=training, metrics=metrics,
            name=Path(out_path).stem, postprocess=pp.to_dict(),
        )  # fmt: skip
        save_bundle(out_path, m, meta)
        return str(out_path)

    if is_main:
        yield Started(
            job="fit", device=str(device), precision=precision, total_steps=total_steps,
            epochs=None if (time_limit and not cfg.epochs) else max_epochs,
            steps_per_epoch=spe, n_train=len(train_s), n_val=len(val_list),
            message=f"{len(train_s)} training, {len(val_list)} validation images; "
            f"{world} process(es)" if world > 1 else "",
        )  # fmt: skip
        if chosen:
            yield Message(chosen)
    t0 = time.perf_counter()
    accel = device.type != "cpu"
    reason, message, hint = DONE, "", ""
    bad_epochs = 0

    def progress(elapsed: float) -> float:
        """Fraction of the run done: steps or time, whichever is further."""
        return max(
            global_step / total_steps if total_steps else 0.0,
            elapsed / time_limit if time_limit else 0.0,
        )

    if resumed_bad_epochs is not None:  # as counted when the checkpoint was written
        bad_epochs = int(resumed_bad_epochs)
    elif (  # a checkpoint from before the count was saved
        best_epoch >= 0
        and history["val_fg_jaccard"]
        and progress(elapsed_before) >= sched.patience_from()
    ):
        bad_epochs = len(history["epoch"]) - 1 - history["epoch"].index(best_epoch)
    epoch = start_epoch - 1
    stop = False
    n_train = len(train_s)
    for epoch in range(start_epoch, max_epochs):
        te = time.perf_counter()
        # every image appears; the rest of the slots are a fresh random mix
        need = spe * cfg.batch_size
        order: list[int] = []
        while len(order) < need:
            order.extend(torch.randperm(n_train, generator=gen).tolist())
        order = order[:need]
        cm = torch.zeros(n_classes * n_classes, dtype=torch.long, device=device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        img_loss = np.zeros(n_train)
        img_count = np.zeros(n_train)
        worst: dict[int, tuple[float, tuple[int, int, int, int]]] = {}
        pending: list = []  # accelerators: read back step i's numbers at step i + 1

        def flush(pending_item, img_loss=img_loss, img_count=img_count, worst=worst) -> float:
            loss_t, per_crop_t, boxes, s_idx, e_idx, lr_now = pending_item
            lv = float(loss_t)
            pc = per_crop_t.float().cpu().numpy()
            for (i, y0, x0), v in zip(boxes, pc, strict=True):
                img_loss[i] += v
                img_count[i] += 1
                if v > worst.get(i, (-1.0, None))[0]:
                    worst[i] = (float(v), (y0, x0, cfg.crop, cfg.crop))
            return lv

        for step in range(spe):
            # one collective: any rank cancelled, and the clock that has run furthest
            cancelled, elapsed = dist.max_values(
                [
                    cancel is not None and cancel.cancelled,
                    elapsed_before + time.perf_counter() - t0,
                ],
                world,
            )
            if cancelled:
                reason, stop = CANCELLED, True
                break
            if time_limit is not None and elapsed >= time_limit:
                stop = True
                message = f"time limit of {cfg.minutes:g} minutes reached"
                break
            lr = sched.lr(progress(elapsed), epoch + step / spe)
            for g in opt.param_groups:
                g["lr"] = lr
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            x, y, boxes = sampler.batch(idx)
            if augmenter.enabled:
                x, y = augmenter(x, y)
            pixel_w = None
            if weighted:
                y, pixel_w = split_weights(y, n_classes, cfg.separation_weight)
            with autocast_context(device, precision):
                logits = train_model(x)
            loss, per_crop = segmentation_loss(
                logits, y, class_weights=weights, dice=cfg.dice, pixel_weights=pixel_w
            )
            opt.zero_grad(set_to_none=True)
            if precision == "fp16":
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            with torch.no_grad():
                pred = class_argmax(logits.detach(), 1)
                cm += torch.bincount(
                    (y * n_classes + pred).flatten(), minlength=n_classes * n_classes
                )
                loss_sum += loss.detach()
            pending.append((loss.detach(), per_crop, boxes, step, epoch, lr))
            if accel and len(pending) < 2 and step < spe - 1:
                global_step += 1
                continue
            item = pending.pop(0)
            lv = flush(item)
            bad = not math.isfinite(lv)
            if dist.any_flag(bad, world):
                reason, stop = DIVERGED, True
                hint = DIVERGED_HINT
                message = f"loss became {lv} at epoch {item[4] + 1}, step {item[3] + 1}"
                break
            now = elapsed_before + time.perf_counter() - t0
            done = global_step + 1
            eta = None
            if total_steps:
                eta = now / done * (total_steps - done) if done else None
            if time_limit:
                eta = max(0.0, time_limit - now) if eta is None else min(eta, time_limit - now)
            global_step += 1
            if is_main:
                yield StepEnded(
                    epoch=item[4], step=item[3], global_step=done - 1 - len(pending),
                    loss=lv, lr=item[5], seconds=now, eta_seconds=eta,
                )  # fmt: skip
        for item in pending:  # drain (accelerators)
            lv = flush(item)
            if not math.isfinite(lv) and reason != CANCELLED:
                reason, stop, hint = DIVERGED, True, DIVERGED_HINT
                message = f"loss became {lv} at epoch {item[4] + 1}"
        # a rank's drained loss may be the only bad one: every rank must stop with it
        if dist.any_flag(reason == DIVERGED, world) and reason != DIVERGED:
            reason, stop, hint = DIVERGED, True, DIVERGED_HINT
            message = f"the loss diverged on another process at epoch {epoch + 1}"
        steps_done = int(img_count.sum() // max(1, cfg.batch_size))
        if reason in (CANCELLED, DIVERGED) or steps_done == 0:
            break
        # ---- end of epoch: train stats, validation, bookkeeping
        dist.sync_buffers(_unwrap(model), world)
        cm_np = dist.all_reduce_sum(cm, world).cpu().numpy().reshape(n_classes, n_classes)
        train_loss = float(dist.all_reduce_sum(loss_sum, world)) / max(1, steps_done * world)
        train_pc = [float(v) for v in jaccard_from_confusion(cm_np)]
        train_fg = _fg_from_confusion(cm_np)
        tv = time.perf_counter()
        ev = _distributed_evaluate(
            model, val_s, n_classes, device, precision, cfg, weights, world, rank
        )
        val_secs = time.perf_counter() - tv
        (epoch_elapsed,) = dist.max_values([elapsed_before + time.perf_counter() - t0], world)
        val_fg = ev.fg_jaccard
        is_best = val_fg > best_score
        if is_best:
            best_score, best_epoch = val_fg, epoch
            best_state = _state_cpu(model)
            best_per_image = dict(ev.per_image)
            best_ap50, best_per_image_ap = ev.ap50, dict(ev.per_image_ap50)
            bad_epochs = 0
        elif progress(epoch_elapsed) >= sched.patience_from():
            bad_epochs += 1
        secs = time.perf_counter() - te
        history["epoch"].append(epoch)
        history["train_loss"].append(train_loss)
        history["val_loss"].append(ev.loss)
        history["train_fg_jaccard"].append(train_fg)
        history["val_fg_jaccard"].append(val_fg)
        history["val_ap50"].append(ev.ap50)
        history["train_jaccard"].append(train_pc)
        history["val_jaccard"].append(ev.per_class)
        history["lr"].append(float(opt.param_groups[0]["lr"]))
        history["seconds"].append(secs)
        now = elapsed_before + time.perf_counter() - t0
        eta = None
        if total_steps:
            eta = now / max(1, global_step) * (total_steps - global_step)
        if time_limit:
            eta = max(0.0, time_limit - now) if eta is None else min(eta, time_limit - now)
        if is_main:
            yield EpochEnded(
                epoch=epoch, epochs=None if (time_limit and not cfg.epochs) else max_epochs,
                train_loss=train_loss, val_loss=ev.loss, train_jaccard=tuple(train_pc),
                val_jaccard=tuple(ev.per_class), train_fg_jaccard=train_fg,
                val_fg_jaccard=val_fg, seconds=secs, lr=history["lr"][-1], is_best=is_best,
                eta_seconds=eta, val_ap50=ev.ap50, val_seconds=val_secs,
            )  # fmt: skip
            losses = {
                train_s[i].name: float(img_loss[i] / img_count[i])
                for i in range(n_train)
                if img_count[i]
            }
            regions = {train_s[i].name: worst[i][1] for i in worst}
            yield SampleLosses(epoch=epoch, losses=losses, regions=regions)
        if is_best:
            write_bundle(
                best_state,
                {"val_fg_jaccard": best_score, "val_ap50": best_ap50, "best_epoch": best_epoch},
                {
                    "best_epoch": best_epoch,
                    "per_image_val_jaccard": best_per_image,
                    "per_image_val_ap50": best_per_image_ap,
                },
            )
        if checkpoint_path is not None and is_main:
            _atomic_torch_save(
                _plain(
                    {
                        "cfg": cfg.to_dict(),
                        "model": _state_cpu(model),
                        "optimizer": opt.state_dict(),
                        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                        "epoch": epoch,
                        "global_step": global_step,
                        "elapsed": now,
                        "history": history,
                        "best_score": best_score,
                        "best_epoch": best_epoch,
                        "best_state": best_state,
                        "best_per_image": best_per_image,
                        "best_ap50": best_ap50,
                        "best_per_image_ap": best_per_image_ap,
                        "bad_epochs": bad_epochs,
                        "split": {"train": train_names, "val": val_list},
                        "lr_finder": lr_finder,
                        "rng": {
                            "sampler": gen.get_state(),
                            "augment": augmenter.state_dict(),
                            "torch": torch.get_rng_state(),
                            "numpy": np_rng.bit_generator.state,
                        },
                    }
                ),
                Path(checkpoint_path),
            )
        if stop:
            break
        if cfg.patience and bad_epochs >= cfg.patience:
            reason = EARLY_STOP
            message = f"no validation improvement for {bad_epochs} epochs"
            break
        if time_limit is not None and epoch_elapsed >= time_limit:  # the same on every rank
            message = f"time limit of {cfg.minutes:g} minutes reached"
            break
    # ---- finish: best weights, guard-rail, final bundle
    if best_state is None and reason == CANCELLED:
        best_state = _state_cpu(model)  # stopped before any validation: keep what we have
        message = "stopped before the first validation; saved the current (unvalidated) model"
    guard = None
    if init_model is not None and best_state is not None and reason != DIVERGED:
        guard = _guard_rail(
            init_model, best_state, cfg, val_s, n_classes, device, precision, weights, world, rank
        )
        if guard["new_is_worse"]:
            message = (message + " " if message else "") + guard["text"]
    if reason == CANCELLED and not message:
        message = "stopped by the user; kept the best model so far"
    # A stopped run ends at once (Stop must answer within seconds): its bundle keeps the
    # default post-processing, and says so.
    if best_state is not None and is_main and reason not in (DIVERGED, CANCELLED):
        if cfg.tune_postprocess:
            postprocess, tuned_ap = _tune_postprocess(
                best_state, cfg, val_s, n_classes, device, precision, mask_mode, cancel
            )
            if postprocess is not None:
                # what users get: AP with the chosen settings (per-epoch figures use the
                # defaults, a trend; these are chosen on the same images, so optimistic)
                best_ap50, best_per_image_ap = postprocess.val_ap50, tuned_ap
    result = {
        "best_val_fg_jaccard": best_score if best_epoch >= 0 else None,
        "best_epoch": best_epoch if best_epoch >= 0 else None,
        "history": history,
        "split": {"train": list(train_names), "val": list(val_list)},
        "guard_rail": guard,
        "per_image_val_jaccard": best_per_image,
        "best_val_ap50": best_ap50,
        "per_image_val_ap50": best_per_image_ap,
        "postprocess": postprocess.to_dict() if postprocess else None,
        "precision": precision,
        "device": str(device),
        "steps": global_step,
        "seconds": elapsed_before + time.perf_counter() - t0,
    }
    bundle = None
    if best_state is not None:
        bundle = write_bundle(
            best_state,
            {
                "val_fg_jaccard": result["best_val_fg_jaccard"],
                "val_ap50": best_ap50,
                "best_epoch": result["best_epoch"],
            },
            {
                "best_epoch": result["best_epoch"],
                "per_image_val_jaccard": best_per_image,
                "per_image_val_ap50": best_per_image_ap,
                "guard_rail": guard,
                "finished": reason,
            },
        )
    if is_main or world == 1:
        yield Finished(
            reason=reason, message=message.strip(), hint=hint, bundle_path=bundle, result=result
        )


def _distributed_evaluate(model, val_s, n_classes, device, precision, cfg, weights, world, rank):
    """Each rank scores its share of the validation images; sums are combined."""
    mine = val_s[rank::world] if world > 1 else val_s
    ev = evaluate(
        _unwrap(model), mine, n_classes, device, precision=precision, tile=cfg.tile,
        dice=cfg.dice, class_weights=weights,
    )  # fmt: skip
    if world == 1:
        return ev
    cm = torch.from_numpy(
        ev.confusion if ev.confusion is not None else np.zeros((n_classes, n_classes), np.int64)
    ).to(device)
    cm = dist.all_reduce_sum(cm, world).cpu().numpy()
    sums = dist.all_reduce_sum(
        torch.tensor([ev.loss_sum, float(ev.pixels)], dtype=torch.float64, device=device), world
    ).cpu()
    per_image = dist.gather_dict(ev.per_image, world)
    per_image_ap = dist.gather_dict(ev.per_image_ap50, world)
    return EvalResult(
        loss=float(sums[0] / max(sums[1], 1.0)),
        per_class=[float(v) for v in jaccard_from_confusion(cm)],
        fg_jaccard=_fg_from_confusion(cm),
        per_image=per_image,
        confusion=cm,
        ap50=float(np.mean(list(per_image_ap.values()))) if per_image_ap else None,
        per_image_ap50=per_image_ap,
    )


def _tune_postprocess(
    best_state, cfg, val_s, n_classes, device, precision, mask_mode, cancel
) -> tuple[PostProcess | None, dict[str, float]]:
    """Post-processing settings chosen on the validation images with the best weights,
    and each image's AP@0.5 with them. Rank 0 alone; one image's probabilities in memory
    at a time; Stop during the search keeps the defaults."""
    from cellseg_gui.core.unet import build_model

    scored = [s for s in val_s if s.instances is not None]
    if not scored:
        return None, {}
    m = build_model(cfg.model)
    m.load_state_dict(best_state)
    m.to(device).eval()

    def images():
        with torch.no_grad():
            for s in scored:
                probs = _forward_probs(m, s.image, device, precision, cfg.tile)
                lab = class_argmax(probs, 0).to(torch.uint8).cpu().numpy()
                yield lab, probs.cpu().numpy(), s.instances

    pp, trials, per_image = tune_postprocess(
        images(), mask_mode, cancelled=lambda: cancel is not None and cancel.cancelled
    )
    if not trials:
        return None, {}
    return pp, {s.name: v for s, v in zip(scored, per_image, strict=True)}


def _guard_rail(
    init_model, best_state, cfg, val_s, n_classes, device, precision, weights, world, rank
):
    """Score the starting model and the new one on the same validation images."""
    from cellseg_gui.core.unet import build_model

    new = build_model(cfg.model)
    new.load_state_dict(best_state)
    new.to(device)
    old = copy.deepcopy(init_model).to(device)
    e_old = _distributed_evaluate(
        old, val_s, n_classes, device, precision, cfg, weights, world, rank
    )
    e_new = _distributed_evaluate(
        new, val_s, n_classes, device, precision, cfg, weights, world, rank
    )
    worse = e_new.fg_jaccard < e_old.fg_jaccard
    if worse:
        text = (
            f"The new model is WORSE than the one it started from on the same validation "
            f"images: foreground Jaccard {e_new.fg_jaccard:.3f} vs {e_old.fg_jaccard:.3f}. "
            "Keep the old model, or train longer / with a lower learning rate."
        )
    else:
        text = (
            f"The new model is at least as good as the one it started from: foreground "
            f"Jaccard {e_new.fg_jaccard:.3f} vs {e_old.fg_jaccard:.3f}."
        )
    return {
        "init_val_fg_jaccard": e_old.fg_jaccard,
        "new_val_fg_jaccard": e_new.fg_jaccard,
        "init_per_image": e_old.per_image,
        "new_per_image": e_new.per_image,
        "new_is_worse": bool(worse),
        "text": text,
    }
