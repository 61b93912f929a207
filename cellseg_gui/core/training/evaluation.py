"""Scoring a model during and after training: whole-image validation (loss, Jaccard,
AP), the post-processing search and the fine-tuning guard-rail."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from cellseg_gui.core.model.distance import (
    cached_distance_target,
    output_classes,
    outputs_to_probs,
)
from cellseg_gui.core.model.postprocess import PostProcess, default_postprocess, tune_postprocess
from cellseg_gui.core.model.precision import autocast_context
from cellseg_gui.core.model.predict import (
    class_argmax,
    predict_tiled,
    whole_image_fits,
)
from cellseg_gui.core.model.scoring import score_image
from cellseg_gui.core.model.unet import model_from_state
from cellseg_gui.core.scores.metrics import JaccardAccumulator, jaccard_from_confusion
from cellseg_gui.core.training import distributed as dist
from cellseg_gui.core.training.checkpoint import _unwrap
from cellseg_gui.core.training.objective import DISTANCE_WEIGHT, FLOW_WEIGHT, segmentation_loss


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
    if whole_image_fits(h, w, device):  # as prediction does, so the figures agree
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(device)
        with autocast_context(device, precision):
            logits = model(x)
        return outputs_to_probs(logits.float(), output_classes(getattr(model, "cfg", None)))[0]
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
    postprocess: PostProcess | None = None,
    keep_predictions: bool = False,
    flow_weight: float = FLOW_WEIGHT,
) -> EvalResult:
    """Score whole images: loss (same formula as training), per-class and foreground
    Jaccard summed over images, each image's own foreground Jaccard and, where the
    samples carry cell ids, AP@0.5 (``core.model.scoring``, the definition the CLI uses)."""
    was_training = model.training
    model.eval()
    if postprocess is None:  # the untuned settings for this model (learned markers with a
        # distance output): what the per-epoch AP reads
        arch = getattr(model, "cfg", None)
        # A flow model's per-epoch AP keeps the class seeds: following its flows every
        # epoch took validation from 2.2 s to 2.8 s of a 12 s epoch on usiigaci, and the
        # runs made 47-48 epochs instead of 52 in 10 minutes (9% fewer steps). The flows
        # are scored by the end-of-run search.
        postprocess = default_postprocess(bool(getattr(arch, "distance_head", False)))
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
            has_distance = probs.shape[0] > n_classes
            logp = probs[:n_classes].clamp_min(1e-8).log()
            loss, _ = segmentation_loss(
                logp[None], tgt[None], class_weights=class_weights, dice=dice
            )
            if probs.shape[0] == n_classes + 2 and s.instances is not None:
                from cellseg_gui.core.model.flow import FLOW_SCALE
                from cellseg_gui.core.training.flow_target import cached_flow_target

                want = torch.from_numpy(cached_flow_target(s.instances)).to(device)
                got = probs[n_classes:]
                loss = loss + flow_weight * FLOW_SCALE**2 * F.mse_loss(got, want)
            elif has_distance and s.instances is not None:
                # the training loss's distance term, from the probability it output
                want = torch.from_numpy(cached_distance_target(s.instances)).to(device)
                p_dist = probs[n_classes].clamp(1e-6, 1 - 1e-6)
                loss = loss + DISTANCE_WEIGHT * F.binary_cross_entropy(p_dist, want)
            npx = int(tgt.numel())
            loss_sum += float(loss) * npx
            pixels += npx
            pred = class_argmax(probs[:n_classes], 0).to(torch.uint8).cpu().numpy()
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


def _distributed_evaluate(model, val_s, n_classes, device, precision, cfg, weights, world, rank):
    """Each rank scores its share of the validation images; sums are combined."""
    mine = val_s[rank::world] if world > 1 else val_s
    ev = evaluate(
        _unwrap(model), mine, n_classes, device, precision=precision, tile=cfg.tile,
        dice=cfg.dice, class_weights=weights, flow_weight=cfg.flow_weight,
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


def rescore_in_fp32(best_state, cfg, val_s, n_classes, device, weights) -> EvalResult:
    """The best weights scored on the validation images in fp32, the precision every
    prediction is made in (``Predictor``, ``cellseg evaluate``, the exports). A run under
    autocast validates each epoch in its own precision, a trend at 0.56x the time (bf16
    on an AVX-512 BF16 CPU, 1022 x 1024); what it records for its model must be what a
    user gets back from the bundle (on usiigaci the tuned AP@0.5 was 0.007 off, each
    image's foreground Jaccard 1e-4; 0.004 on the test's tiny model). Rank 0 alone."""
    return evaluate(
        model_from_state(cfg.model, best_state, device), val_s, n_classes, device, precision="fp32", tile=cfg.tile, dice=cfg.dice,
        class_weights=weights, flow_weight=cfg.flow_weight,
    )  # fmt: skip


def _tune_postprocess(
    best_state, cfg, val_s, n_classes, device, precision, mask_mode, cancel
) -> tuple[PostProcess | None, dict[str, float]]:
    """Post-processing settings chosen on the validation images with the best weights,
    and each image's AP@0.5 with them. Rank 0 alone; one image's probabilities in memory
    at a time; Stop during the search keeps the defaults."""
    scored = [s for s in val_s if s.instances is not None]
    if not scored:
        return None, {}
    m = model_from_state(cfg.model, best_state, device).eval()

    def images():
        with torch.no_grad():
            for s in scored:
                probs = _forward_probs(m, s.image, device, precision, cfg.tile)
                lab = class_argmax(probs[:n_classes], 0).to(torch.uint8).cpu().numpy()
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
    new = model_from_state(cfg.model, best_state, device)
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
