"""Overfit-one-image check: "can this model learn at all?"

A healthy pipeline fits one image almost perfectly in a few hundred steps; when it
cannot, something upstream is wrong (masks not matching images, normalisation, labels
shifted, learning rate) and more training will not help. To keep the check quick on a
CPU it trains a small U-Net on a 256-pixel region of the image (the window with the most
even mix of foreground and background), the whole region each step under a random flip
or transpose, with the learning rate decayed over the last 60% of the steps.

Measured on usiigaci-phc (2-core CPU, alone): set01 passes after 160 steps (18 s), set10
200, set35 250, set48 540 (55 s); set01 with set20's mask stays at 0.86 after 600 steps
(63 s) and fails, as it should: such a small model cannot memorise labels that do not
follow from the image in so few steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np
import torch

from cellseg_gui.core.config import ModelConfig, TrainConfig
from cellseg_gui.core.events import (
    CANCELLED,
    DIVERGED,
    DIVERGED_HINT,
    DONE,
    Finished,
    Started,
    StepEnded,
)
from cellseg_gui.core.jobs import CancelToken
from cellseg_gui.core.model.precision import autocast_context, setup_device
from cellseg_gui.core.model.predict import class_argmax
from cellseg_gui.core.training.objective import segmentation_loss

__all__ = ["overfit_check", "OVERFIT_DEFAULTS", "pick_region"]

# Chosen to pass on a usiigaci-phc image in well under 3 minutes on 2 CPU cores.
OVERFIT_DEFAULTS = {
    "region": 256,  # side of the image window trained on and scored
    "hidden": 8,
    "depth": 3,
    "lr": 1e-2,
    "eval_every": 10,
}


def _dihedral(x: torch.Tensor, y: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One of the 8 flips / transposes of an (N, C, H, W) image and (N, H, W) labels
    (k >= 4 transposes, so only for square regions)."""
    if k & 1:
        x, y = x.flip(-1), y.flip(-1)
    if k & 2:
        x, y = x.flip(-2), y.flip(-2)
    if k & 4:
        x, y = x.transpose(-1, -2), y.transpose(-1, -2)
    return x.contiguous(), y.contiguous()


def pick_region(target: np.ndarray, size: int, stride: int = 32) -> tuple[int, int, int, int]:
    """(y0, x0, h, w) of the window whose foreground share is closest to one half."""
    h, w = target.shape
    if h <= size and w <= size:
        return 0, 0, h, w
    sh, sw = min(size, h), min(size, w)
    fg = (target > 0).astype(np.float64)
    ii = np.pad(fg.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    best, where = 2.0, (0, 0)
    for y0 in range(0, h - sh + 1, stride):
        for x0 in range(0, w - sw + 1, stride):
            s = ii[y0 + sh, x0 + sw] - ii[y0, x0 + sw] - ii[y0 + sh, x0] + ii[y0, x0]
            d = abs(s / (sh * sw) - 0.5)
            if d < best:
                best, where = d, (y0, x0)
    return where[0], where[1], sh, sw


def _fg_jaccard(pred: torch.Tensor, target: torch.Tensor) -> float:
    p, t = pred > 0, target > 0
    union = int((p | t).sum())
    return 1.0 if union == 0 else float((p & t).sum()) / union


def overfit_check(
    sample,
    cfg: TrainConfig,
    *,
    cancel: CancelToken | None = None,
    max_steps: int = 600,
    target: float = 0.9,
) -> Iterator:
    """Train a small fresh model on one image; pass when the foreground Jaccard on the
    trained region reaches ``target``. Architecture width/depth and optimiser settings
    come from OVERFIT_DEFAULTS (the point is a quick yes/no, not the final model);
    device, precision, seed, loss settings and channels come from ``cfg``."""
    from cellseg_gui.core.model.unet import build_model

    d = OVERFIT_DEFAULTS
    if sample.target is None:
        yield Finished(reason="failed", message=f"{sample.name}: no mask to overfit")
        return
    side = 2 ** int(d["depth"])
    if min(sample.image.shape[-2:]) < side:
        h, w = sample.image.shape[-2:]
        yield Finished(
            reason="failed",
            message=f"{sample.name}: {w}x{h} pixels, smaller than the {side} pixels on a side "
            "the check's network needs; pick a larger image",
        )
        return
    device, precision = setup_device(cfg.device, cfg.amp)
    torch.manual_seed(cfg.seed)
    y0, x0, h, w = pick_region(np.asarray(sample.target), d["region"])
    image = np.ascontiguousarray(sample.image[:, y0 : y0 + h, x0 : x0 + w], dtype=np.float32)
    tgt = np.ascontiguousarray(sample.target[y0 : y0 + h, x0 : x0 + w])
    n_classes = max(int(sample.n_classes), int(tgt.max()) + 1)
    mcfg = ModelConfig(
        in_channels=int(image.shape[0]), n_classes=n_classes, hidden=d["hidden"],
        depth=d["depth"], dropout=0.0, batchnorm=True,
        downsample=1,  # full resolution: can the network learn these very pixels?
    )  # fmt: skip
    model = build_model(mcfg).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=d["lr"])
    # Every step sees the whole region (under a random flip / transpose): memorising one
    # image is what is asked, and random sub-crops made it several times slower. A mask
    # that belongs to another image still cannot be fitted by so small a model in so few
    # steps, which is what makes a failure meaningful.
    x_full = torch.from_numpy(image)[None].to(device)
    y_full = torch.from_numpy(tgt.astype(np.int64))[None].to(device)
    square = h == w
    gen = torch.Generator().manual_seed(int(cfg.seed))
    yield Started(
        job="overfit", device=str(device), precision=precision, total_steps=max_steps,
        message=f"{sample.name}: region y={y0} x={x0} {h}x{w}, hidden {d['hidden']}",
    )  # fmt: skip
    t0 = time.perf_counter()
    best, steps, reason = 0.0, 0, DONE
    for step in range(max_steps):
        if cancel is not None and cancel.cancelled:
            reason = CANCELLED
            break
        x, y = _dihedral(
            x_full, y_full, int(torch.randint(0, 8 if square else 4, (1,), generator=gen))
        )
        # cosine decay over the last 60% of the budget sharpens the fit at the end
        frac = max(0.0, (step - 0.4 * max_steps) / (0.6 * max_steps))
        lr_now = d["lr"] * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
        for g in opt.param_groups:
            g["lr"] = lr_now
        with autocast_context(device, precision):
            logits = model(x)
        loss, _ = segmentation_loss(logits, y, dice=cfg.dice)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lv = float(loss.detach())
        steps = step + 1
        now = time.perf_counter() - t0
        yield StepEnded(
            epoch=0, step=step, global_step=step, loss=lv, lr=lr_now, seconds=now,
            eta_seconds=now / steps * (max_steps - steps),
        )  # fmt: skip
        if not np.isfinite(lv):
            reason = DIVERGED
            break
        if steps % d["eval_every"] == 0 or steps == max_steps:
            # scored in train mode: batch statistics of the region itself, because the
            # running averages lag far behind in a run this short
            with torch.no_grad(), autocast_context(device, precision):
                pred = class_argmax(model(x_full), 1)[0]
            best = max(best, _fg_jaccard(pred, y_full[0]))
            if best >= target:
                break
    passed = best >= target
    if reason == DIVERGED:
        yield Finished(
            reason=DIVERGED, message="the loss became NaN or infinite on one image",
            hint=DIVERGED_HINT,
            result={"passed": False, "jaccard": best, "steps": steps, "advice": DIVERGED_HINT},
        )  # fmt: skip
        return
    if passed:
        advice = (
            f"The model fits this image (foreground Jaccard {best:.2f} after {steps} steps): "
            "the data and the training loop work. Next: find a learning rate, then train on "
            "all images."
        )
    else:
        advice = (
            f"The model could not fit even this one image (foreground Jaccard {best:.2f} "
            f"after {steps} steps, target {target:.2f}). Check that the mask matches the "
            "image (same size, not shifted or from another image), that the mask mode is "
            "right (instances vs classes vs binary), and that the normalised image shows "
            "the cells; then try the learning-rate finder."
        )
    if reason == CANCELLED:
        advice = f"stopped after {steps} steps (best foreground Jaccard {best:.2f})."
    yield Finished(
        reason=reason, message=("passed" if passed else "failed") if reason == DONE else advice,
        result={"passed": bool(passed), "jaccard": float(best), "steps": steps, "advice": advice},
    )  # fmt: skip
