"""What training minimises and how: the loss, the optimiser and the learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cellseg_gui.core.config import TrainConfig

# The distance term's weight beside cross-entropy + Dice. Its binary cross-entropy
# against a soft target keeps an entropy floor (about 0.3 here), so the weight sets
# how hard its gradient pulls, not a balance of values.
DISTANCE_WEIGHT = 1.0
# The flow term's default weight (``TrainConfig.flow_weight``): Cellpose's, half the mean
# squared error of the two planes against 5x the unit vectors (``core.model.flow``).
FLOW_WEIGHT = 0.5
# Early stopping in one-cycle and cosine runs counts once the rate is down to this share
# of its peak (``LRSchedule.patience_from``)
PATIENCE_RATE = 0.1


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    class_weights: torch.Tensor | None = None,
    dice: bool = True,
    pixel_weights: torch.Tensor | None = None,
    distance: torch.Tensor | None = None,
    flow: torch.Tensor | None = None,
    flow_weight: float = FLOW_WEIGHT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy (+ soft Dice over the foreground classes); with ``pixel_weights``
    (B, H, W) the cross-entropy is their weighted mean (separation borders). With
    ``distance`` (B, H, W) in [0, 1] (``core.model.distance``) the logits' last plane is the
    distance output, scored by binary cross-entropy against it and added. With ``flow``
    (B, 2, H, W) unit vectors the last two planes are the flows, scored by squared error
    against ``FLOW_SCALE`` times them, weighted by ``flow_weight``.

    Returns (loss, per-crop cross-entropy (B,)) — the second feeds the noisy-label finder
    at no extra cost.
    """
    logits = logits.float()
    extra = None  # the head's weighted term
    if flow is not None:
        from cellseg_gui.core.model.flow import FLOW_SCALE

        extra = flow_weight * F.mse_loss(logits[:, -2:], FLOW_SCALE * flow.float())
        logits = logits[:, :-2]
    elif distance is not None:
        bce = F.binary_cross_entropy_with_logits(logits[:, -1], distance.float())
        extra = DISTANCE_WEIGHT * bce
        logits = logits[:, :-1]
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
    if extra is not None:
        loss = loss + extra
    return loss, per_crop.detach()


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
        the end; validation is noisy and often flat before, so counting from the start
        stopped a 30-minute one-cycle run at 7 minutes, worse than a 10-minute run, and
        counting from half the peak rate stopped a 10-minute usiigaci run at 7.8 minutes
        with the rate still at 30% of it: AP@0.5 0.634 against 0.655 run to the end, with
        a third more steps (measured). They count once the rate is down to a tenth of its
        peak (85% of a one-cycle run, 81% of a cosine one), where the run is settling."""
        kind = self.kind.lower()
        if kind not in ("onecycle", "cosine"):
            return 0.0
        # the rate falls monotonically from its peak: bisect ``factor`` (past any warm-up)
        lo, hi = (0.25 if kind == "onecycle" else 0.0), 1.0
        for _ in range(30):
            mid = 0.5 * (lo + hi)
            if self.factor(mid, math.inf) > PATIENCE_RATE:
                lo = mid
            else:
                hi = mid
        return hi
