"""Learning-rate finder: an exponential sweep with a smoothed loss (Smith 2015/fastai).

The sweep trains for real, so the model and optimiser are snapshotted first and put back
exactly afterwards (a test compares weights bit for bit): running the finder never
changes the model a later ``fit`` starts from.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator

import numpy as np
import torch

from cellseg_gui.core.config import ModelConfig, TrainConfig
from cellseg_gui.core.events import CANCELLED, DONE, FAILED, Finished, LRProbe, Started
from cellseg_gui.core.jobs import CancelToken
from cellseg_gui.core.model.precision import autocast_context, setup_device
from cellseg_gui.core.training.augment import Augmenter
from cellseg_gui.core.training.objective import build_optimizer, segmentation_loss
from cellseg_gui.core.training.sampling import _make_sampler, choose_downsample, distance_possible

__all__ = ["lr_find", "suggest"]

SMOOTHING = 0.9  # exponential smoothing of the loss (with bias correction)
STOP_FACTOR = 4.0  # stop once the smoothed loss exceeds this multiple of its minimum
MIN_POINTS = 5  # fewer points than this make no curve to read a learning rate from


CENTRED_HALF_WIDTH = 4  # points each side of the centred mean (0.3 decade at 100 steps)


def zero_lag(values: list[float], half_width: int = CENTRED_HALF_WIDTH) -> list[float]:
    """The losses as a centred moving mean (each point the plain mean of the points up to
    ``half_width`` either side): smooth, unbiased, and without the lag of the live,
    forward-only exponential mean. That curve trails the raw loss by about a decade of
    learning rate at the sweep's speed, so its minimum, and "minimum / 10" with it,
    landed late (0.017 on usiigaci-phc, where the default 3e-3 trained better). A
    forward-backward exponential mean, tried too, drags the exploding end of the sweep
    back over the minimum and lands early instead."""
    v = np.asarray(values, dtype=np.float64)
    if not v.size:
        return []
    c = np.concatenate([[0.0], np.cumsum(v)])
    i = np.arange(v.size)
    lo = np.maximum(i - half_width, 0)
    hi = np.minimum(i + half_width + 1, v.size)
    return [float(x) for x in (c[hi] - c[lo]) / (hi - lo)]


KNEE_SHARE = 0.9  # the share of the loss's fall that marks where it levels off


def suggest(lrs: list[float], smoothed: list[float]) -> tuple[float, float]:
    """(suggestion, steepest descent) from the smoothed curve. The suggestion is a tenth
    of the learning rate at the curve's minimum, or, where smaller, the learning rate at
    which the loss has made 90% of its fall from the start to that minimum. The second
    rule matters when the loss levels off instead of rising again: on isbi2012-em it
    kept creeping down to lr 4, and "minimum / 10" said 0.38 (validation Jaccard 0.82
    against 0.87 with the default)."""
    if not lrs:
        return float("nan"), float("nan")
    sm = np.asarray(smoothed, dtype=np.float64)
    lr = np.asarray(lrs, dtype=np.float64)
    i_min = int(np.nanargmin(sm))
    suggested = float(lr[i_min] / 10.0)
    fall = sm[0] - sm[i_min]
    if np.isfinite(fall) and fall > 0:
        knee = int(np.argmax(sm[: i_min + 1] <= sm[i_min] + (1 - KNEE_SHARE) * fall))
        suggested = min(suggested, float(lr[knee]))
    if len(sm) >= 3 and i_min >= 2:
        grad = np.gradient(sm[: i_min + 1], np.log(lr[: i_min + 1]))
        steepest = float(lr[int(np.nanargmin(grad))])
    else:
        steepest = suggested
    return suggested, steepest


def lr_find(
    samples: list,
    cfg: TrainConfig,
    *,
    cancel: CancelToken | None = None,
    min_lr: float = 1e-6,
    max_lr: float = 10.0,
    steps: int = 100,
    model: torch.nn.Module | None = None,
) -> Iterator:
    """Sweep the learning rate from ``min_lr`` to ``max_lr`` over ``steps`` batches of
    random crops (independent of how many images there are)."""
    from cellseg_gui.core.model.unet import build_model

    train = [s for s in samples if s.target is not None]
    if not train:
        yield Finished(reason=FAILED, message="no images with masks to sweep on")
        return
    device, precision = setup_device(cfg.device, cfg.amp)
    torch.manual_seed(cfg.seed)
    if model is None:
        mcfg = copy.deepcopy(cfg.model)
        mcfg.n_classes = max(int(s.n_classes) for s in train)
        mcfg.in_channels = int(train[0].image.shape[0])
        if not mcfg.downsample:  # the architecture fit would build
            mcfg.downsample = choose_downsample(train)
        mcfg.distance_head = mcfg.distance_head and distance_possible(train)
        mcfg.flow_head = mcfg.flow_head and distance_possible(train) and not mcfg.distance_head
        model = build_model(mcfg)
    model.to(device)
    saved_state = copy.deepcopy(model.state_dict())
    was_training = model.training
    model.train()
    opt = build_optimizer(model, cfg, lr=min_lr)
    saved_opt = copy.deepcopy(opt.state_dict())
    weights = (
        torch.tensor(cfg.class_weights, dtype=torch.float32, device=device)
        if cfg.class_weights
        else None
    )
    gen = torch.Generator().manual_seed(int(cfg.seed))
    # the objective fit trains on: separation weights and the distance term included
    run_cfg = copy.copy(cfg)
    run_cfg.model = model.cfg if isinstance(getattr(model, "cfg", None), ModelConfig) else cfg.model
    if (run_cfg.model.distance_head or run_cfg.model.flow_head) and not distance_possible(train):
        yield Finished(
            reason=FAILED,
            message=f"this model learns {'flows' if run_cfg.model.flow_head else 'a distance map'} "
            "from instance masks (one id per cell), and these masks are not",
        )
        return
    sampler = _make_sampler(
        train, cfg.crop, device, cfg.foreground_bias, gen, cfg=run_cfg,
        n_classes=int(run_cfg.model.n_classes),
    )  # fmt: skip
    aug = Augmenter(cfg.augment, seed=cfg.seed)
    steps = max(2, int(steps))
    ratio = (max_lr / min_lr) ** (1.0 / (steps - 1))
    yield Started(job="lr_find", device=str(device), precision=precision, total_steps=steps)
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    avg, best = 0.0, math.inf
    reason, t0 = DONE, time.perf_counter()
    try:
        for step in range(steps):
            if cancel is not None and cancel.cancelled:
                reason = CANCELLED
                break
            lr = min_lr * ratio**step
            for g in opt.param_groups:
                g["lr"] = lr
            idx = torch.randint(len(train), (cfg.batch_size,), generator=gen).tolist()
            x, y, _ = sampler.batch(idx)
            x, y = aug(x, y)
            y, pixel_w, dist_t, flow_t = sampler.decode(y, cfg.separation_weight)
            with autocast_context(device, precision):
                logits = model(x)
            loss, _ = segmentation_loss(
                logits, y, class_weights=weights, dice=cfg.dice, pixel_weights=pixel_w,
                distance=dist_t, flow=flow_t, flow_weight=cfg.flow_weight,
            )  # fmt: skip
            opt.zero_grad(set_to_none=True)
            lv = float(loss.detach())
            if not math.isfinite(lv):
                break  # past the useful range: the curve so far is the answer
            loss.backward()
            opt.step()
            avg = SMOOTHING * avg + (1 - SMOOTHING) * lv
            sm = avg / (1 - SMOOTHING ** (step + 1))
            lrs.append(lr)
            losses.append(lv)
            smoothed.append(sm)
            yield LRProbe(step=step, lr=lr, loss=lv, smoothed=sm)
            best = min(best, sm)
            if step > 5 and sm > STOP_FACTOR * best:
                break
    finally:
        model.load_state_dict(saved_state)
        opt.load_state_dict(saved_opt)
        model.train(was_training)
    # the suggestion reads the zero-lag curve; the live one was for the plot during the
    # sweep, and the result's curve (what the dock shows at the end) is the zero-lag one
    smoothed = zero_lag(losses)
    suggested, steepest = suggest(lrs, smoothed)
    why = ""
    if reason == CANCELLED:
        why = (
            f"stopped after {len(lrs)} of {steps} steps: no suggestion from part of a "
            "sweep (run it to the end)"
        )
    elif len(lrs) < MIN_POINTS:
        why = f"only {len(lrs)} usable point(s): too few for a suggestion"
    if why:  # Stop gave "1.2e-07" from 2-3 points, with the button enabled
        suggested = steepest = float("nan")
    result = {
        "lrs": lrs,
        "losses": losses,
        "smoothed": smoothed,
        "suggested_lr": suggested,
        "steepest_lr": steepest,
        "min_lr": min_lr,
        "max_lr": max_lr,
        "steps": len(lrs),
        "seconds": time.perf_counter() - t0,
        "no_suggestion": why,
    }
    msg = (
        why
        if why
        else f"suggested lr {suggested:.3g} (steepest descent at {steepest:.3g})"
        if lrs
        else ""
    )
    yield Finished(reason=reason, message=msg, result=result)
