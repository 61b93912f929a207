"""Training (``fit``): a generator of events, with no Qt, shared by the window and the CLI.

The loop is kept as close to a bare torch loop as possible (the throughput benchmark
holds it to >= 0.97 of one): crops are sliced from images already on the device, the
per-step bookkeeping is a handful of tensor ops, and anything that needs a device sync
(loss as a Python float) is read one step late on accelerators. Validation runs on whole
images, once per epoch, with one forward per image where it fits (cheaper than tiles on a
CPU) and the tiled predictor otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch

from cellseg_gui.core.config import TrainConfig
from cellseg_gui.core.data.split import split_train_val
from cellseg_gui.core.events import (
    CANCELLED,
    DIVERGED,
    DONE,
    EARLY_STOP,
    FAILED,
    OUT_OF_MEMORY,
    EpochEnded,
    Finished,
    Message,
    SampleLosses,
    Started,
    is_out_of_memory,
)
from cellseg_gui.core.jobs import CancelToken
from cellseg_gui.core.model.postprocess import PostProcess
from cellseg_gui.core.model.precision import autocast_context, resolve_precision, setup_device  # noqa: F401
from cellseg_gui.core.training import distributed as dist
from cellseg_gui.core.training.augment import Augmenter
from cellseg_gui.core.training.checkpoint import (  # noqa: F401
    BestSoFar,
    Resumable,
    _atomic_torch_save,
    _plain,
    _state_cpu,
    _unwrap,
    load_checkpoint,
)
from cellseg_gui.core.training.epoch import EpochContext, run_epoch
from cellseg_gui.core.training.evaluation import (  # noqa: F401
    EvalResult,
    _distributed_evaluate,
    _fg_from_confusion,
    _guard_rail,
    _tune_postprocess,
    evaluate,
    rescore_in_fp32,
)
from cellseg_gui.core.training.objective import LRSchedule, build_optimizer, segmentation_loss  # noqa: F401
from cellseg_gui.core.training.run_setup import BundleWriter, RunSetup, prepare_run
from cellseg_gui.core.training.sampling import (  # noqa: F401
    THIN_SHARE,
    CropSampler,
    _check_samples,
    _downsample_message,
    _make_sampler,
    _steps_per_epoch,
    choose_downsample,
    distance_possible,
    edge_counts,
    min_image_side,
    split_weights,
    training_targets,
)

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
        reason = OUT_OF_MEMORY if is_out_of_memory(exc) else FAILED
        yield Finished(reason=reason, message=f"training failed: {exc}")


def _fit(
    samples, cfg: TrainConfig, *, cancel, val_names, init_bundle, resume, out_path,
    checkpoint_path, lr_finder, classes, mask_mode,
):  # fmt: skip
    ctx = dist.context()
    world, rank, is_main = ctx.world_size, ctx.rank, ctx.is_main
    setup = yield from prepare_run(
        samples, cfg, ctx, val_names=val_names, init_bundle=init_bundle, resume=resume
    )
    cfg, device, precision, model = setup.cfg, setup.device, setup.precision, setup.model
    train_s, val_s, n_classes = setup.train_s, setup.val_s, setup.n_classes
    train_names, val_list, ckpt = setup.train_names, setup.val_names, setup.ckpt
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
    augmenter = Augmenter(cfg.augment, seed=int(cfg.seed) * 1000 + 7 + rank)
    spe = _steps_per_epoch(cfg, train_s, world, val_s)
    time_limit = float(cfg.minutes) * 60.0 if cfg.minutes else None
    max_epochs = int(cfg.epochs) if cfg.epochs else (10**6 if time_limit else 1)
    total_steps = None if time_limit and not cfg.epochs else max_epochs * spe
    history = _empty_history()
    best = BestSoFar()
    start_epoch, global_step, elapsed_before = 0, 0, 0.0
    resumed_bad_epochs = None
    np_rng = np.random.default_rng(cfg.seed + rank)
    live = Resumable(model, opt, scaler, gen, augmenter, np_rng)
    if ckpt is not None:
        live.restore(ckpt)
        history = ckpt["history"]
        history.setdefault("val_ap50", [None] * len(history.get("epoch", [])))
        start_epoch = int(ckpt["epoch"]) + 1
        global_step = int(ckpt["global_step"])
        elapsed_before = float(ckpt.get("elapsed", 0.0))
        best = BestSoFar.from_checkpoint(ckpt)
        lr_finder = lr_finder or ckpt.get("lr_finder")
        resumed_bad_epochs = ckpt.get("bad_epochs")
    record = {
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
    bundles = BundleWriter(out_path, cfg, record, classes, mask_mode, is_main, history=history)

    if is_main:
        yield Started(
            job="fit", device=str(device), precision=precision, total_steps=total_steps,
            epochs=None if (time_limit and not cfg.epochs) else max_epochs,
            steps_per_epoch=spe, n_train=len(train_s), n_val=len(val_list),
            message=f"{len(train_s)} training, {len(val_list)} validation images; "
            f"{world} process(es)" if world > 1 else "",
        )  # fmt: skip
        if setup.chosen:
            yield Message(setup.chosen)
    t0 = time.perf_counter()
    reason, message, hint = DONE, "", ""
    bad_epochs = 0
    loop = EpochContext(
        cfg=cfg, model=model, train_model=train_model, opt=opt, scaler=scaler, sched=sched,
        sampler=sampler, augmenter=augmenter, gen=gen, weights=weights, device=device,
        precision=precision, n_classes=n_classes, n_train=len(train_s), steps_per_epoch=spe,
        world=world, is_main=is_main, cancel=cancel, time_limit=time_limit,
        total_steps=total_steps, clock=lambda: elapsed_before + time.perf_counter() - t0,
    )  # fmt: skip
    if resumed_bad_epochs is not None:  # as counted when the checkpoint was written
        bad_epochs = int(resumed_bad_epochs)
    elif (  # a checkpoint from before the count was saved
        best.epoch >= 0
        and history["val_fg_jaccard"]
        and loop.progress(elapsed_before, global_step) >= sched.patience_from()
    ):
        bad_epochs = len(history["epoch"]) - 1 - history["epoch"].index(best.epoch)
    epoch = start_epoch - 1
    for epoch in range(start_epoch, max_epochs):
        te = time.perf_counter()
        er = yield from run_epoch(loop, epoch, global_step)
        global_step = er.global_step
        stop = er.stop
        if er.reason != DONE:
            reason = er.reason
        if er.message:
            message, hint = er.message, er.hint or hint
        if reason in (CANCELLED, DIVERGED) or er.steps_done == 0:
            break
        # ---- end of epoch: validation, bookkeeping
        train_loss, train_pc, train_fg = er.train_loss, er.train_per_class, er.train_fg
        tv = time.perf_counter()
        ev = _distributed_evaluate(
            model, val_s, n_classes, device, precision, cfg, weights, world, rank
        )
        val_secs = time.perf_counter() - tv
        (epoch_elapsed,) = dist.max_values([elapsed_before + time.perf_counter() - t0], world)
        val_fg = ev.fg_jaccard
        is_best = val_fg > best.score
        if is_best:
            best.score, best.epoch = val_fg, epoch
            best.state = _state_cpu(model)
            best.per_image = dict(ev.per_image)
            best.ap50, best.per_image_ap = ev.ap50, dict(ev.per_image_ap50)
            bad_epochs = 0
        elif loop.progress(epoch_elapsed, global_step) >= sched.patience_from():
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
            losses = er.losses([t.name for t in train_s])
            regions = {train_s[i].name: er.worst[i][1] for i in er.worst}
            yield SampleLosses(epoch=epoch, losses=losses, regions=regions)
        if is_best:
            bundles.write(
                best.state,
                {"val_fg_jaccard": best.score, "val_ap50": best.ap50, "best_epoch": best.epoch},
                {
                    "best_epoch": best.epoch,
                    "per_image_val_jaccard": best.per_image,
                    "per_image_val_ap50": best.per_image_ap,
                },
            )
        if checkpoint_path is not None and is_main:
            live.save(
                Path(checkpoint_path), cfg=cfg.to_dict(), epoch=epoch, global_step=global_step,
                elapsed=now, history=history, **best.to_checkpoint(), bad_epochs=bad_epochs,
                split={"train": train_names, "val": val_list}, lr_finder=lr_finder,
            )  # fmt: skip
        if stop:
            break
        if cfg.patience and bad_epochs >= cfg.patience:
            reason = EARLY_STOP
            message = f"no validation improvement for {bad_epochs} epochs"
            break
        if time_limit is not None and epoch_elapsed >= time_limit:  # the same on every rank
            message = f"time limit of {cfg.minutes:g} minutes reached"
            break
    # ---- finish: best weights, guard-rail, post-processing, final bundle
    end = RunEnd(reason, message, hint, global_step, loop.clock)
    done = _finish(setup, end, best, bundles, history, weights, ctx, mask_mode, cancel)
    if is_main or world == 1:
        yield done


@dataclass(frozen=True)
class RunEnd:
    """How the epoch loop ended."""

    reason: str  # DONE, CANCELLED, EARLY_STOP, DIVERGED
    message: str
    hint: str
    steps: int
    clock: Callable[[], float]  # seconds since the run began (a resumed run's included)


class FitResult(TypedDict):
    """``Finished.result`` of a run: JSON-able, as ``cellseg train --json`` writes it."""

    best_val_fg_jaccard: float | None
    best_epoch: int | None
    history: dict[str, list]
    split: dict[str, list[str]]
    guard_rail: dict | None
    per_image_val_jaccard: dict[str, float]
    best_val_ap50: float | None
    per_image_val_ap50: dict[str, float]
    postprocess: dict | None
    precision: str
    device: str
    steps: int
    seconds: float


def _finish(
    setup: RunSetup, end: RunEnd, best: BestSoFar, bundles: BundleWriter,
    history: dict[str, list], weights: torch.Tensor | None, ctx: dist.DistContext,
    mask_mode: str, cancel: CancelToken | None,
) -> Finished:  # fmt: skip
    """After the loop: keep the best weights (the current ones if stopped before any
    validation), compare a fine-tune with its starting model (the guard-rail), choose the
    post-processing on the validation images, write the last bundle."""
    cfg, val_s, n_classes = setup.cfg, setup.val_s, setup.n_classes
    device, precision, reason, message = setup.device, setup.precision, end.reason, end.message
    if best.state is None and reason == CANCELLED:
        best.state = _state_cpu(setup.model)  # stopped before any validation: keep it
        message = "stopped before the first validation; saved the current (unvalidated) model"
    guard = None
    if setup.init_model is not None and best.state is not None and reason != DIVERGED:
        guard = _guard_rail(
            setup.init_model, best.state, cfg, val_s, n_classes, device, precision, weights,
            ctx.world_size, ctx.rank,
        )  # fmt: skip
        if guard["new_is_worse"]:
            message = (message + " " if message else "") + guard["text"]
    if reason == CANCELLED and not message:
        message = "stopped by the user; kept the best model so far"
    # A stopped run ends at once (Stop must answer within seconds): its bundle keeps the
    # default post-processing, and says so.
    postprocess: PostProcess | None = None
    if best.state is not None and ctx.is_main and reason not in (DIVERGED, CANCELLED):
        if precision != "fp32" and best.epoch >= 0:  # record what predictions will give
            final = rescore_in_fp32(best.state, cfg, val_s, n_classes, device, weights)
            best.score, best.per_image = final.fg_jaccard, dict(final.per_image)
            best.ap50, best.per_image_ap = final.ap50, dict(final.per_image_ap50)
        if cfg.tune_postprocess:  # in fp32 too, for the same reason
            postprocess, tuned_ap = _tune_postprocess(
                best.state, cfg, val_s, n_classes, device, "fp32", mask_mode, cancel
            )
            if postprocess is not None:
                # what users get: AP with the chosen settings (per-epoch figures use the
                # defaults, a trend; these are chosen on the same images, so optimistic)
                best.ap50, best.per_image_ap = postprocess.val_ap50, tuned_ap
                bundles.postprocess = postprocess  # the last bundle carries it
    best_score = best.score if best.epoch >= 0 else None
    best_epoch = best.epoch if best.epoch >= 0 else None
    result = FitResult(
        best_val_fg_jaccard=best_score, best_epoch=best_epoch, history=history,
        split={"train": list(setup.train_names), "val": list(setup.val_names)},
        guard_rail=guard, per_image_val_jaccard=best.per_image, best_val_ap50=best.ap50,
        per_image_val_ap50=best.per_image_ap,
        postprocess=postprocess.to_dict() if postprocess else None, precision=precision,
        device=str(device), steps=end.steps, seconds=end.clock(),
    )  # fmt: skip
    bundle = bundles.write(
        best.state,
        {"val_fg_jaccard": best_score, "val_ap50": best.ap50, "best_epoch": best_epoch},
        {
            "best_epoch": best_epoch,
            "per_image_val_jaccard": best.per_image,
            "per_image_val_ap50": best.per_image_ap,
            "guard_rail": guard,
            "finished": reason,
        },
    )
    return Finished(
        reason=reason, message=message.strip(), hint=end.hint, bundle_path=bundle,
        result=result,
    )  # fmt: skip
