"""One training epoch: the steps, the per-step events and the epoch's training figures.

``run_epoch`` is the inner loop of ``core.training.train.fit``: crops, augmentation, forward,
loss, step, and the bookkeeping the window and the noisy-label finder read (loss per
image, each image's worst crop). It yields ``StepEnded`` events and returns an
:class:`EpochResult`; everything that stays the same for a whole run comes in one
:class:`EpochContext`. On accelerators a step's loss is read one step late (no device
sync per step); a non-finite loss on any process stops every process.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cellseg_gui.core.config import TrainConfig
from cellseg_gui.core.events import CANCELLED, DIVERGED, DIVERGED_HINT, DONE, StepEnded
from cellseg_gui.core.jobs import CancelToken
from cellseg_gui.core.model.precision import autocast_context
from cellseg_gui.core.model.predict import class_argmax
from cellseg_gui.core.scores.metrics import jaccard_from_confusion
from cellseg_gui.core.training import distributed as dist
from cellseg_gui.core.training.checkpoint import _unwrap
from cellseg_gui.core.training.objective import LRSchedule, segmentation_loss
from cellseg_gui.core.training.sampling import CropSampler

__all__ = ["EpochContext", "EpochResult", "run_epoch"]


@dataclass
class EpochContext:
    """What every epoch of one run shares."""

    cfg: TrainConfig
    model: torch.nn.Module  # the plain module (buffers are synchronised on it)
    train_model: torch.nn.Module  # what steps run (DDP-wrapped on several processes)
    opt: torch.optim.Optimizer
    scaler: Any  # torch.amp.GradScaler
    sched: LRSchedule
    sampler: CropSampler
    augmenter: Any  # core.training.augment.Augmenter
    gen: torch.Generator
    weights: torch.Tensor | None
    device: torch.device
    precision: str
    n_classes: int
    n_train: int
    steps_per_epoch: int
    world: int
    is_main: bool
    cancel: CancelToken | None
    time_limit: float | None  # seconds, or None
    total_steps: int | None
    clock: Callable[[], float]  # seconds of training so far, resumed runs included

    def progress(self, elapsed: float, global_step: int) -> float:
        """Fraction of the run done: steps or time, whichever is further."""
        return max(
            global_step / self.total_steps if self.total_steps else 0.0,
            elapsed / self.time_limit if self.time_limit else 0.0,
        )


@dataclass
class EpochResult:
    """How an epoch ended, and what it learned on its training crops."""

    reason: str = DONE  # DONE, CANCELLED or DIVERGED
    stop: bool = False  # the run ends after this epoch
    message: str = ""
    hint: str = ""
    global_step: int = 0
    steps_done: int = 0
    train_loss: float = 0.0
    train_per_class: list[float] = field(default_factory=list)
    train_fg: float = 0.0
    image_loss: np.ndarray | None = None  # summed crop loss per training image
    image_count: np.ndarray | None = None  # crops per training image
    worst: dict[int, tuple[float, tuple[int, int, int, int]]] = field(default_factory=dict)

    def losses(self, names: list[str]) -> dict[str, float]:
        """Mean crop loss of each training image seen this epoch."""
        assert self.image_loss is not None and self.image_count is not None
        return {
            names[i]: float(self.image_loss[i] / self.image_count[i])
            for i in range(len(names))
            if self.image_count[i]
        }


def _fg_from_confusion(cm: np.ndarray) -> float:
    union = cm.sum() - cm[0, 0]
    return 1.0 if union == 0 else float(cm[1:, 1:].sum() / union)


def run_epoch(
    ctx: EpochContext, epoch: int, global_step: int
) -> Generator[StepEnded, None, EpochResult]:
    """Run the steps of ``epoch`` from ``global_step``; yields StepEnded (main process)."""
    cfg, k = ctx.cfg, ctx.n_classes
    spe, n_train = ctx.steps_per_epoch, ctx.n_train
    res = EpochResult(image_loss=np.zeros(n_train), image_count=np.zeros(n_train))
    # every image appears; the rest of the slots are a fresh random mix
    need = spe * cfg.batch_size
    order: list[int] = []
    while len(order) < need:
        order.extend(torch.randperm(n_train, generator=ctx.gen).tolist())
    order = order[:need]
    cm = torch.zeros(k * k, dtype=torch.long, device=ctx.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
    pending: list = []  # accelerators: read back step i's numbers at step i + 1
    accel = ctx.device.type != "cpu"

    def flush(item) -> float:
        loss_t, per_crop_t, boxes, _, _, _ = item
        pc = per_crop_t.float().cpu().numpy()
        for (i, y0, x0), v in zip(boxes, pc, strict=True):
            res.image_loss[i] += v
            res.image_count[i] += 1
            if v > res.worst.get(i, (-1.0, None))[0]:
                res.worst[i] = (float(v), (y0, x0, cfg.crop, cfg.crop))
        return float(loss_t)

    for step in range(spe):
        # one collective: any rank cancelled, and the clock that has run furthest
        cancelled, elapsed = dist.max_values(
            [ctx.cancel is not None and ctx.cancel.cancelled, ctx.clock()], ctx.world
        )
        if cancelled:
            res.reason, res.stop = CANCELLED, True
            break
        if ctx.time_limit is not None and elapsed >= ctx.time_limit:
            res.stop = True
            res.message = f"time limit of {cfg.minutes:g} minutes reached"
            break
        lr = ctx.sched.lr(ctx.progress(elapsed, global_step), epoch + step / spe)
        for g in ctx.opt.param_groups:
            g["lr"] = lr
        x, y, boxes = ctx.sampler.batch(order[step * cfg.batch_size : (step + 1) * cfg.batch_size])
        if ctx.augmenter.enabled:
            x, y = ctx.augmenter(x, y)
        y, pixel_w, dist_t, flow_t = ctx.sampler.decode(y, cfg.separation_weight)
        with autocast_context(ctx.device, ctx.precision):
            logits = ctx.train_model(x)
        loss, per_crop = segmentation_loss(
            logits, y, class_weights=ctx.weights, dice=cfg.dice, pixel_weights=pixel_w,
            distance=dist_t, flow=flow_t, flow_weight=cfg.flow_weight,
        )  # fmt: skip
        ctx.opt.zero_grad(set_to_none=True)
        if ctx.precision == "fp16":
            ctx.scaler.scale(loss).backward()
            ctx.scaler.step(ctx.opt)
            ctx.scaler.update()
        else:
            loss.backward()
            ctx.opt.step()
        with torch.no_grad():
            pred = class_argmax(logits.detach()[:, :k], 1)
            cm += torch.bincount((y * k + pred).flatten(), minlength=k * k)
            loss_sum += loss.detach()
        pending.append((loss.detach(), per_crop, boxes, step, epoch, lr))
        if accel and len(pending) < 2 and step < spe - 1:
            global_step += 1
            continue
        item = pending.pop(0)
        lv = flush(item)
        if dist.any_flag(not math.isfinite(lv), ctx.world):
            res.reason, res.stop, res.hint = DIVERGED, True, DIVERGED_HINT
            res.message = f"loss became {lv} at epoch {item[4] + 1}, step {item[3] + 1}"
            break
        now = ctx.clock()
        done = global_step + 1
        eta = None
        if ctx.total_steps:
            eta = now / done * (ctx.total_steps - done) if done else None
        if ctx.time_limit:
            left = ctx.time_limit - now
            eta = max(0.0, left) if eta is None else min(eta, left)
        global_step += 1
        if ctx.is_main:
            yield StepEnded(
                epoch=item[4], step=item[3], global_step=done - 1 - len(pending),
                loss=lv, lr=item[5], seconds=now, eta_seconds=eta,
            )  # fmt: skip
    for item in pending:  # drain (accelerators)
        lv = flush(item)
        if not math.isfinite(lv) and res.reason != CANCELLED:
            res.reason, res.stop, res.hint = DIVERGED, True, DIVERGED_HINT
            res.message = f"loss became {lv} at epoch {item[4] + 1}"
    # a rank's drained loss may be the only bad one: every rank must stop with it
    if dist.any_flag(res.reason == DIVERGED, ctx.world) and res.reason != DIVERGED:
        res.reason, res.stop, res.hint = DIVERGED, True, DIVERGED_HINT
        res.message = f"the loss diverged on another process at epoch {epoch + 1}"
    res.global_step = global_step
    res.steps_done = int(res.image_count.sum() // max(1, cfg.batch_size))
    if res.reason in (CANCELLED, DIVERGED) or res.steps_done == 0:
        return res
    # the epoch's training figures, summed over every process
    dist.sync_buffers(_unwrap(ctx.model), ctx.world)
    cm_np = dist.all_reduce_sum(cm, ctx.world).cpu().numpy().reshape(k, k)
    res.train_loss = float(dist.all_reduce_sum(loss_sum, ctx.world)) / max(
        1, res.steps_done * ctx.world
    )
    res.train_per_class = [float(v) for v in jaccard_from_confusion(cm_np)]
    res.train_fg = _fg_from_confusion(cm_np)
    return res
