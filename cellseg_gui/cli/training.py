"""``cellseg train``: settings from the options (and the project's saved form), the
split, and the run."""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Any

from cellseg_gui.cli.common import (
    _Cancel,
    _dist_context,
    _drive,
    _existing,
    _find_pairs,
    _finished_code,
    _writable_folder,
)
from cellseg_gui.cli.output import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CLIError,
    Output,
)


def _load_training_samples(
    args: argparse.Namespace, cfg: Any, out: Output, *, names: list[str] | None = None
) -> tuple[list[Any], str, int]:
    """Samples with masks, the data set's mask mode and the number of bad files."""
    from cellseg_gui.core.data.dataset import load_samples

    pairs = _find_pairs(args.data)
    if names is not None:
        pairs = [p for p in pairs if p.name in set(names)]
    with_masks = [p for p in pairs if p.mask_path]
    if not with_masks:
        raise CLIError(args.data, "no image has a mask (training needs masks)")
    n_classes = getattr(args, "classes", None)
    samples, errors = load_samples(
        with_masks,
        mask_mode=cfg.mask_mode,
        boundary_width=cfg.boundary_width,
        norm=cfg.norm,
        channels=cfg.channels,
        n_classes=n_classes,
        require_masks=True,
    )
    for e in errors:
        out.error(e)
    if not samples:
        raise CLIError(args.data, "no usable image with a mask")
    if cfg.mask_mode in ("instances", "classes"):  # the user's choice, checked against masks
        _say_mode_doubts(samples, cfg.mask_mode, out)
    from cellseg_gui.core.training.sampling import too_small

    small, text = too_small(samples, cfg)
    if len(small) == len(samples):  # bad input: said before the run, not by its failure
        raise CLIError(args.data, text.replace("are left out", "and no other image remains"))
    # load_samples decides one mode for the whole set ("auto"); the bundle records it
    mode = str(getattr(samples[0], "mask_mode", None) or cfg.mask_mode)
    return samples, mode, len(errors)


def _say_mode_doubts(samples: list[Any], mode: str, out: Output) -> None:
    """A warning for masks that look like another kind than the mode the user chose (the
    first three named, then how many more)."""
    from cellseg_gui.core.data.masks import mode_doubt

    doubts = []
    for s in samples:
        mask = s.instances if mode == "instances" else s.target
        why = mode_doubt(mask, mode) if mask is not None else None
        if why:
            doubts.append(f"{s.mask_path}: {why}")
    for line in doubts[:3]:
        out.err(f"warning: {line}")
    if len(doubts) > 3:
        out.err(f"warning: {len(doubts) - 3} more mask(s) like these")


# the settings an advice may change, as `cellseg train` options (the window applies the
# same changes to its training form)
_ADVICE_OPTIONS = {
    "epochs": "--epochs", "minutes": "--minutes", "lr": "--lr", "model.hidden": "--hidden",
    "model.dropout": "--dropout", "weight_decay": "--weight-decay",
}  # fmt: skip


def advice_options(changes: dict[str, Any], cfg: Any = None) -> str:
    """An advice's changes as options to type: ``--minutes 20 --hidden 32``; switched-on
    augmentations become one ``--augment`` list: those the run used (``cfg``) and those."""
    parts = [f"{_ADVICE_OPTIONS[k]} {v:g}" if isinstance(v, float) else f"{_ADVICE_OPTIONS[k]} {v}"
             for k, v in changes.items() if k in _ADVICE_OPTIONS]  # fmt: skip
    augs = [k.split(".", 1)[1] for k, v in changes.items() if k.startswith("augment.") and v]
    if augs and cfg is not None:
        from dataclasses import fields

        used = [f.name for f in fields(cfg.augment) if getattr(cfg.augment, f.name)]
        augs = used + [a for a in augs if a not in used]
    if augs:
        parts.append("--augment " + ",".join(augs))
    rest = [f"{k}={v}" for k, v in changes.items()
            if k not in _ADVICE_OPTIONS and not k.startswith("augment.")]  # fmt: skip
    if rest:
        parts.append("in the window's training form: " + ", ".join(rest))
    return " ".join(parts)


def _train_config(args: argparse.Namespace, base: dict[str, Any] | None = None) -> Any:
    """The run's settings: ``base`` (the project's saved training form) or the defaults,
    then every option the user gave."""
    from cellseg_gui.core.config import TrainConfig

    if base:
        cfg = TrainConfig.from_saved(base)
    else:
        cfg = TrainConfig()
        if args.device in ("cuda", "mps"):
            cfg = TrainConfig.for_device(args.device)
    cfg.device = args.device
    for attr, field in (
        ("hidden", "model.hidden"),
        ("depth", "model.depth"),
        ("downsample", "model.downsample"),
        ("distance_head", "model.distance_head"),
        ("flow_head", "model.flow_head"),
        ("dropout", "model.dropout"),
        ("crop", "crop"),
        ("batch", "batch_size"),
        ("optimizer", "optimizer"),
        ("schedule", "schedule"),
        ("seed", "seed"),
        ("mask_mode", "mask_mode"),
        ("weight_decay", "weight_decay"),
        ("steps_per_epoch", "steps_per_epoch"),
        ("patience", "patience"),
        ("val_fraction", "val_fraction"),
        ("boundary", "boundary_mode"),
        ("boundary_width", "boundary_width"),
        ("separation_weight", "separation_weight"),
    ):
        value = getattr(args, attr, None)
        if value is None:
            continue
        if "." in field:
            outer, inner = field.split(".")
            setattr(getattr(cfg, outer), inner, value)
        else:
            setattr(cfg, field, value)
    if getattr(args, "augment", None):
        from cellseg_gui.core.config import AugmentConfig

        preset = {"default": AugmentConfig, "none": AugmentConfig.none, "all": AugmentConfig.all}
        if args.augment in preset:
            cfg.augment = preset[args.augment]()
        else:  # a list of names (checked by _augment): these on, the rest off
            cfg.augment = AugmentConfig.none()
            for name in args.augment:
                setattr(cfg.augment, name, True)
    amp = getattr(args, "amp", None)
    if amp is not None:
        cfg.amp = amp
    return cfg


def write_history_csv(path: Path, history: dict[str, Any]) -> None:
    """One row per epoch; per-class Jaccards spread into columns (train_jaccard_0, ...).
    Epochs are counted from 1, as the epoch lines, the plots and ``info`` count them (the
    history stores the 0-based index)."""
    from cellseg_gui.core.data.imageio import atomic_write_text

    n = len(history.get("epoch") or [])
    cols: list[str] = []
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, values in history.items():
        values = list(values or [])
        if any(isinstance(v, list | tuple) for v in values):
            width = max((len(v) for v in values if isinstance(v, list | tuple)), default=0)
            names = [f"{key}_{k}" for k in range(width)]
            cols.extend(names)
            for i, v in enumerate(values[:n]):
                for k, name in enumerate(names):
                    rows[i][name] = v[k] if isinstance(v, list | tuple) and k < len(v) else ""
        else:
            cols.append(key)
            for i, v in enumerate(values[:n]):
                if key == "epoch" and isinstance(v, int):
                    v += 1
                rows[i][key] = "" if v is None else v
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _run_lr_find(samples: list[Any], cfg: Any, out: Output, args: argparse.Namespace) -> Any:
    from cellseg_gui.core.jobs import CancelToken
    from cellseg_gui.core.training.lrfind import lr_find

    token = CancelToken()
    with _Cancel(token, out):
        fin = _drive(
            lr_find(
                samples,
                cfg,
                cancel=token,
                min_lr=args.min_lr,
                max_lr=args.max_lr,
                steps=args.lr_steps,
            ),
            out,
            label="learning-rate finder",
        )
    return fin


USELESS_JACCARD = 0.01  # a best validation Jaccard below this: the run found nothing


def _learned_nothing(best: float, res: dict, samples: list[Any]) -> bool:
    """Whether the run found nothing: its best validation foreground Jaccard is below
    ``USELESS_JACCARD``, or it ended below that and its best was no better than calling
    every pixel a cell (a run at ``--lr 1000`` scored 0.109 that way after its first
    epoch on one machine, 0 on another, then 0). A short run whose only epoch calls
    everything a cell is not flagged: it has not finished learning."""
    if best < USELESS_JACCARD:
        return True
    last = [v for v in ((res.get("history") or {}).get("val_fg_jaccard") or []) if v is not None]
    if not last or not last[-1] < USELESS_JACCARD:
        return False
    import numpy as np

    val = set((res.get("split") or {}).get("val") or ())
    fg = total = 0
    for s in samples:
        if s.name in val:
            t = np.asarray(s.target)
            fg += int((t > 0).sum())
            total += int(t.size)
    return total > 0 and best <= fg / total + USELESS_JACCARD


def _folder_project(data: str, out: Output) -> Any:
    """The project of a data folder that has a ``cellseg-project.json`` (the window's
    split and settings), else None. A project file that cannot be read is said, and the
    run goes on without it."""
    from cellseg_gui.core.data.project import PROJECT_FILE, ProjectError, open_project

    folder = Path(data)
    if not (folder / PROJECT_FILE).is_file():
        return None
    try:
        project = open_project(folder)
    except ProjectError as exc:
        out.err(f"warning: {exc}; its split and settings are not used")
        return None
    for problem in project.problems:
        out.err(f"warning: {problem}")
    return project


def _project_split(args, project, samples, out: Output) -> tuple[list[str] | None, list]:
    """Validation names and the samples to train on, and a first line saying where the
    split comes from: --val, the project's 'val' images, or drawn by the run."""
    if args.val:
        names = [n.strip() for n in args.val.split(",") if n.strip()]
        unknown = [n for n in names if n not in {s.name for s in samples}]
        if unknown:
            raise CLIError(args.data, f"--val names not in the data: {', '.join(unknown)}")
        out.err(f"validation: {len(names)} image(s) given by --val")
        return names, samples
    if project is not None:
        excluded = set(project.excluded())
        kept = [s for s in samples if s.name not in excluded]
        if len(kept) < len(samples):
            out.err(
                f"{len(samples) - len(kept)} image(s) marked 'excluded' in the project: left out"
            )
        val = [s.name for s in kept if project.split.get(s.name) == "val"]
        if val and len(val) < len(kept):
            shown = ", ".join(val[:8]) + (", ..." if len(val) > 8 else "")
            out.err(f"validation: {len(val)} image(s) marked 'val' in {project.path} ({shown})")
            return val, kept
        if val:
            out.err(f"warning: every image is marked 'val' in {project.path}; drawing a split")
        samples = kept
    share = getattr(args, "val_fraction", None)
    out.err(
        "validation: drawn by this run"
        + (f" ({share:g} of the images)" if share is not None else "")
        + (" (the project marks no image 'val')" if project is not None else "")
    )
    return None, samples


def cmd_train(args: argparse.Namespace, out: Output) -> int:
    project = _folder_project(args.data, out)
    saved = project.training_settings().get("config") if project is not None else None
    cfg = _train_config(args, saved if isinstance(saved, dict) else None)
    if project is not None and isinstance(saved, dict):
        out.err(f"settings: the training form saved in {project.path}, with the options given here")
    if args.minutes is not None:
        cfg.minutes = args.minutes
        cfg.epochs = args.epochs or 0
    elif args.epochs is not None:
        cfg.epochs = args.epochs
        cfg.minutes = None  # a saved time budget would otherwise cut the epochs asked for
    target = Path(args.out)
    if target.suffix.lower() != ".cellseg":
        target = target.with_name(target.name + ".cellseg")
    _writable_folder(target.parent)  # before the run, not when its minutes are spent
    if target.is_dir():
        raise CLIError(target, "is a folder; --out names the model file to write")
    if args.resume:
        _existing(args.resume)
    if args.init:
        from cellseg_gui.core.model.bundle_meta import read_bundle_meta

        read_bundle_meta(_existing(args.init))  # a bad model is bad input, reported early
    ctx = _dist_context()
    out.quiet = out.quiet or not ctx.is_main
    samples, mode, n_bad = _load_training_samples(args, cfg, out)
    val_names, samples = _project_split(args, project, samples, out)
    lr_result = None
    if args.lr == "auto":
        fin = _run_lr_find(samples, cfg, out, args)
        code = _finished_code(fin, out)
        if code != EXIT_OK:
            return code
        lr_result = dict(fin.result)
        if not math.isfinite(float(lr_result["suggested_lr"])):
            out.error(f"--lr auto: {lr_result.get('no_suggestion') or 'the sweep found no rate'}")
            return EXIT_FAILED
        cfg.lr = float(lr_result["suggested_lr"])
        if ctx.world_size > 1:  # every rank must train with rank 0's choice
            import torch.distributed as tdist

            box = [cfg.lr, lr_result]
            tdist.broadcast_object_list(box, src=0)
            cfg.lr, lr_result = float(box[0]), box[1]
        out.err(f"learning-rate finder suggests {cfg.lr:.3g}: training with it")
    elif args.lr is not None:
        cfg.lr = float(args.lr)
    from cellseg_gui.core.jobs import CancelToken
    from cellseg_gui.core.training.train import fit

    token = CancelToken()
    ckpt = Path(args.checkpoint) if args.checkpoint else target.with_suffix(".ckpt")
    seen: dict[str, Any] = {}
    with _Cancel(token, out):
        fin = _drive(
            fit(
                samples,
                cfg,
                cancel=token,
                val_names=val_names,
                init_bundle=args.init,
                resume=args.resume,
                out_path=target,
                checkpoint_path=ckpt if ctx.is_main else None,
                lr_finder=lr_result,
                mask_mode=mode,
            ),
            out,
            label="training",
            seen=seen,
        )
    if fin is None and not ctx.is_main:
        return EXIT_OK  # only rank 0 gets the Finished event (it reports for everyone)
    code = _finished_code(fin, out)
    if fin is None:
        return code
    res = fin.result or {}
    history = res.get("history") or {}
    if ctx.is_main and history.get("epoch"):
        csv_path = target.with_name(target.stem + "_history.csv")
        write_history_csv(csv_path, history)
        out.out(f"history: {csv_path}")
    if fin.bundle_path:
        precision = str(res.get("precision") or "fp32")
        from cellseg_gui.core.events import CANCELLED, DIVERGED

        # a stopped run ends at once, unscored again (core.training.train)
        rescored = (
            f"; scored again in fp32, as predictions run (the epoch lines' figures are under {precision})"
            if precision != "fp32" and fin.reason not in (CANCELLED, DIVERGED)
            else ""
        )
        from cellseg_gui.core.model.scoring import figure, mean_over_images

        mean = mean_over_images(res.get("per_image_val_jaccard"))
        mean_text = f"; {figure(mean)} mean over images" if mean is not None else ""
        out.out(
            f"model: {fin.bundle_path} (best at epoch "
            f"{(res.get('best_epoch') if res.get('best_epoch') is not None else -1) + 1}: "
            f"validation foreground Jaccard {figure(res.get('best_val_fg_jaccard'))}, "
            f"pooled over pixels{rescored}{mean_text})"
        )
        val_names = list((res.get("split") or {}).get("val") or [])
        if val_names:  # a drawn split is named only here; evaluate them, not the others
            shown = ", ".join(val_names[:10]) + (", ..." if len(val_names) > 10 else "")
            out.out(f"validation images ({len(val_names)}): {shown}")
        pp = res.get("postprocess")
        if pp:
            from cellseg_gui.core.model.postprocess import PostProcess

            chosen = PostProcess.from_dict(pp)
            out.out(
                f"cells: {chosen.describe()}, validation AP@0.5 {figure(chosen.val_ap50)} "
                "(mean over images; the epoch lines' AP uses the default post-processing)"
            )
    elif code == EXIT_INTERRUPTED:
        out.err("stopped before the first epoch ended: no model written")
    guard = res.get("guard_rail")
    if guard:
        verdict = guard.get("text") or guard.get("verdict") or guard.get("message") or guard
        out.out(f"guard-rail: {verdict}")
    losses = seen.get("sample_losses")
    if losses is not None and losses.losses:
        from cellseg_gui.core.training.diagnostics import noisy_labels

        flagged = [(n, v) for n, v, o in noisy_labels(losses.losses) if o]
        if flagged:
            shown = ", ".join(f"{n} ({v:.3g})" for n, v in flagged[:10])
            out.out(f"possibly noisy labels (training loss far above the rest): {shown}")
    if history:
        from cellseg_gui.core.training.diagnostics import advise

        for a in advise(history, cfg):
            tried = advice_options(a.changes, cfg)
            out.out(f"advice: {a.text}" + (f" (try: {tried})" if tried else ""))
    best = res.get("best_val_fg_jaccard")
    if code == EXIT_OK and isinstance(best, (int, float)) and _learned_nothing(best, res, samples):
        # "--lr 1000" trained to a model that finds nothing, and the run exited 0
        out.error(
            f"{fin.bundle_path or target}: the model learned nothing usable (best validation "
            f"foreground Jaccard {best:.4f}); lower the learning rate (--lr auto finds one) "
            "or check the masks (cellseg check)"
        )
        return EXIT_FAILED
    if code == EXIT_OK and n_bad:
        return EXIT_BAD_INPUT
    return code
