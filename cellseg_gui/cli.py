"""``cellseg``: the headless commands (predict, evaluate, export, info, train, lr-find,
check, inspect).

Imports ``cellseg_gui.core`` only, never Qt, and imports torch lazily inside the commands
that need it, so ``cellseg --help`` and ``cellseg inspect`` answer at once.

Exit codes, the same for every command:
  0  success
  1  the job ran but did not succeed (training diverged or failed, the overfit check did
     not pass, an export did not match the model)
  2  bad input: one line ``error: <file>: <problem>`` on stderr per bad file, never a
     traceback. Where a folder holds some bad files the rest are still processed and
     the exit code is 2 (partial failure), so scripts notice.
  130  interrupted (Ctrl+C); ``train`` still keeps the best model so far.

Under ``torchrun`` only rank 0 prints and writes files.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

EXIT_HELP = """exit codes: 0 success; 1 the job ran but failed (diverged, check not passed, export
mismatch); 2 bad input, including partial failure (some files of a folder were bad: the
rest are processed, each bad one reported as 'error: <file>: <problem>'); 130 Ctrl+C."""


class CLIError(Exception):
    """An expected problem with the user's input: printed as one line, exit code 2."""

    def __init__(self, path: str | os.PathLike[str] | None, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


# --------------------------------------------------------------------------- output


class Output:
    """Printing that respects torchrun ranks: only rank 0 talks (errors included, so a
    bad file is not reported N times)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._bar_shown = False
        self._last_plain = 0.0

    def out(self, text: str = "") -> None:
        if not self.quiet:
            self.clear_bar()
            print(text, flush=True)

    def err(self, text: str) -> None:
        if not self.quiet:
            self.clear_bar()
            print(text, file=sys.stderr, flush=True)

    def error(self, exc_or_text: BaseException | str) -> None:
        self.err(f"error: {_one_line(exc_or_text)}")

    def bar(self, fraction: float | None, text: str) -> None:
        """A progress bar on stderr: redrawn in place on a terminal, else a plain line
        at most every 30 s (logs of batch jobs stay readable)."""
        if self.quiet:
            return
        if fraction is not None:
            fraction = min(max(fraction, 0.0), 1.0)
            filled = int(round(24 * fraction))
            line = f"[{'#' * filled}{'.' * (24 - filled)}] {100 * fraction:3.0f}% {text}"
        else:
            line = text
        if sys.stderr.isatty():
            width = 100
            sys.stderr.write("\r" + line[:width].ljust(width))
            sys.stderr.flush()
            self._bar_shown = True
        else:
            now = time.monotonic()
            if now - self._last_plain >= 30.0:
                self._last_plain = now
                print(line, file=sys.stderr, flush=True)

    def clear_bar(self) -> None:
        if self._bar_shown:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()
            self._bar_shown = False


def _one_line(exc_or_text: BaseException | str) -> str:
    text = str(exc_or_text).strip()
    if not text and isinstance(exc_or_text, BaseException):
        text = type(exc_or_text).__name__
    return " ".join(text.split())


def _fmt_time(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "--:--"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _fmt(x: Any, spec: str = ".4f") -> str:
    if x is None:
        return "-"
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return str(x)
    return format(xf, spec) if math.isfinite(xf) else str(xf)


# --------------------------------------------------------------------------- helpers


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "bad input" and carry a "path: problem" message.

    Looked up in sys.modules so that catching them never imports torch."""
    from cellseg_gui.core.imageio import ImageReadError

    types: list[type[BaseException]] = [CLIError, ImageReadError]
    for mod, name in (
        ("cellseg_gui.core.dataset", "DatasetError"),
        ("cellseg_gui.core.bundle", "BundleError"),
    ):
        cls = getattr(sys.modules.get(mod), name, None)
        if isinstance(cls, type):
            types.append(cls)
    return tuple(types)


def _existing(path: str, what: str = "file") -> Path:
    p = Path(path)
    if not p.exists():
        raise CLIError(p, f"{what} not found")
    return p


def _find_pairs(data: str) -> list[Any]:
    from cellseg_gui.core.dataset import find_pairs

    folder = _existing(data, "folder")
    if not folder.is_dir():
        raise CLIError(folder, "not a folder (expected a folder with images/ and masks/)")
    pairs = find_pairs(folder)
    if not pairs:
        raise CLIError(folder, "no images found")
    return pairs


def _collect_images(inputs: Iterable[str]) -> tuple[list[Path], list[CLIError]]:
    """Image files from files and folders given on the command line. A folder with an
    ``images/`` sub-folder is a data set: its images are used (not its masks)."""
    from cellseg_gui.core.imageio import IMAGE_EXTS

    files: list[Path] = []
    errors: list[CLIError] = []
    for arg in inputs:
        p = Path(arg)
        if not p.exists():
            errors.append(CLIError(p, "file not found"))
            continue
        if p.is_dir():
            folder = p / "images" if (p / "images").is_dir() else p
            found = sorted(
                f
                for f in folder.iterdir()
                if f.is_file()
                and f.suffix.lower() in IMAGE_EXTS
                and not f.stem.lower().endswith(("_mask", "_masks"))
                and not f.name.startswith(".")
            )
            if not found:
                errors.append(CLIError(p, "no images found in this folder"))
            files.extend(found)
        else:
            files.append(p)
    return files, errors


def _load_model(path: str, device: str | None = None) -> Any:
    from cellseg_gui.core.bundle import load_predictor

    p = _existing(path)
    return load_predictor(p, device=None if device in (None, "auto") else device)


def _check_finite(raw: Any, path: Path) -> None:
    import numpy as np

    if raw.dtype.kind == "f" and raw.size and not np.isfinite(raw).any():
        raise CLIError(path, "image is all NaN (no finite pixel)")


def _dist_context() -> Any:
    """torchrun's rank, or a single-process stand-in (imports torch)."""
    from cellseg_gui.core import distributed

    return distributed.context()


def _is_main_rank_env() -> bool:
    """Rank 0 or not launched by torchrun; cheap (no torch), for early output."""
    return os.environ.get("RANK", "0") == "0"


# --------------------------------------------------------------------------- predict


def cmd_predict(args: argparse.Namespace, out: Output) -> int:
    import numpy as np

    from cellseg_gui.core.imageio import read_image, write_mask

    if (args.measure or args.rois) and not args.instances:
        raise CLIError(None, "--measure and --rois need --instances (they describe cells)")
    predictor = _load_model(args.model, args.device)
    files, errors = _collect_images(args.inputs)
    for e in errors:
        out.error(e)
    if not files:
        return EXIT_BAD_INPUT
    summary: list[dict[str, Any]] = []
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = predictor.meta
    channels = meta.get("channels", "grey")
    n_bad = len(errors)
    stems: set[str] = set()
    if args.instances:
        pp, note = predictor.postprocess
        out.err(f"note: {note}" if note else f"cells: {pp.describe()}")
    for i, path in enumerate(files):
        try:
            raw = read_image(path, channels=channels)
            _check_finite(raw, path)
            try:
                if args.instances:
                    labels, pred = predictor.predict_cells(raw, tile=args.tile, tta=args.tta)
                else:
                    pred = predictor.predict(raw, tile=args.tile, tta=args.tta, return_probs=False)
            except ValueError as exc:  # normalisation or channel mismatch: the file's fault
                raise CLIError(path, _one_line(exc)) from None
        except _expected_errors() as exc:
            out.error(exc)
            n_bad += 1
            continue
        stem = path.stem
        if stem in stems:  # same stem from two folders: do not overwrite
            stem = f"{path.parent.name}_{stem}"
        stems.add(stem)
        target = out_dir / f"{stem}.{args.ext}"
        if args.instances:
            n = int(labels.max()) if labels.size else 0  # ids are 1..N
            write_mask(target, labels.astype(np.int32 if args.ext != "png" else np.uint16))
            extra = ""
            if args.measure or args.rois:
                from cellseg_gui.core.measure import export_cells

                row, written = export_cells(
                    out_dir, stem, labels, raw, measure=args.measure, rois=args.rois
                )
                if args.measure:
                    summary.append(dict(row, image=path.name))
                extra = "".join(f", {p.name}" for p in written)
            out.out(f"{path.name} -> {target}  ({n} cells{extra})")
        else:
            write_mask(target, pred.labels.astype(np.uint8))
            fg = float((pred.labels > 0).mean())
            out.out(f"{path.name} -> {target}  (foreground {100 * fg:.1f}%)")
        out.bar((i + 1) / len(files), f"{i + 1}/{len(files)} images")
    out.clear_bar()
    if summary:
        from cellseg_gui.core.measure import write_csv

        write_csv(out_dir / "cells_summary.csv", summary)
        out.out(f"summary: {out_dir / 'cells_summary.csv'}")
    if n_bad:
        out.err(f"{n_bad} of {len(files) + len(errors)} input(s) failed")
        return EXIT_BAD_INPUT
    return EXIT_OK


# --------------------------------------------------------------------------- evaluate


def cmd_evaluate(args: argparse.Namespace, out: Output) -> int:
    from cellseg_gui.core.imageio import read_image, read_mask
    from cellseg_gui.core.instances import truth_cells
    from cellseg_gui.core.masks import mask_to_classes
    from cellseg_gui.core.scoring import score_dataset, score_image

    predictor = _load_model(args.model, args.device)
    pairs = [p for p in _find_pairs(args.data) if p.mask_path]
    meta = predictor.meta
    n_classes = int(predictor.n_classes)
    mode = meta.get("mask_mode") or "auto"
    width = int(meta.get("boundary_width", 2))
    channels = meta.get("channels", "grey")
    pp, note = predictor.postprocess
    if note:
        out.err(f"note: {note}")
    n_bad = 0
    scores = []
    for pair in pairs:
        try:
            raw = read_image(pair.image_path, channels=channels)
            _check_finite(raw, Path(pair.image_path))
            mask = read_mask(pair.mask_path)
            if mask.shape[:2] != raw.shape[:2]:
                raise CLIError(
                    pair.mask_path,
                    f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                    f"{raw.shape[1]}x{raw.shape[0]}",
                )
            try:
                target, _, used = mask_to_classes(mask, mode=mode, boundary_width=width)
                truth, source = truth_cells(mask, used)
            except ValueError as exc:
                raise CLIError(pair.mask_path, _one_line(exc)) from None
            top = int(target.max()) if target.size else 0
            if top >= n_classes:
                raise CLIError(
                    pair.mask_path,
                    f"mask has class {top} but the model knows {n_classes} classes "
                    f"(0..{n_classes - 1})",
                )
            try:
                pred = predictor.predict(raw, tile=args.tile, tta=args.tta, return_probs=True)
            except ValueError as exc:
                raise CLIError(pair.image_path, _one_line(exc)) from None
        except _expected_errors() as exc:
            out.error(exc)
            n_bad += 1
            continue
        model_mode = mode if mode != "auto" else used
        scores.append(
            score_image(
                pair.name, pred.labels, pred.probs, target, truth, model_mode, pp, source=source
            )
        )
        out.bar(len(scores) / len(pairs), f"evaluated {len(scores)} of {len(pairs)} image(s)")
    out.clear_bar()
    if not scores:
        if n_bad == 0:
            out.error(CLIError(args.data, "no images with masks to evaluate"))
        return EXIT_BAD_INPUT
    result = score_dataset(scores)
    if n_bad:
        out.err(f"{n_bad} image(s) could not be evaluated")
    if args.json:
        d = result.to_dict()
        d["postprocess"] = pp.to_dict()
        out.out(json.dumps(d, indent=2))
    else:
        for line in evaluation_lines(result, pp):
            out.out(line)
    return EXIT_BAD_INPUT if n_bad else EXIT_OK


def evaluation_lines(result: Any, pp: Any) -> list[str]:
    """The table and summary of ``cellseg evaluate``: one row per image, then one line
    per figure naming how it was combined; the last two are the headline figures."""
    summ = result.instances
    rows = [
        f"{'image':<28} {'fg jaccard':>10} {'AP@0.5':>7} {'AP@0.75':>7} "
        f"{'true':>6} {'pred':>6} {'merged':>6} {'split':>6}"
    ]
    for s in result.images:
        name = s.name if len(s.name) <= 28 else s.name[:25] + "..."
        i = s.instances
        rows.append(
            f"{name:<28} {s.fg_jaccard:>10.4f} {i.ap(0.5):>7.4f} {i.ap(0.75):>7.4f} "
            f"{i.n_true:>6} {i.n_pred:>6} {i.merged:>6} {i.split:>6}"
        )
    if summ.sources != ("instances",):
        rows.append("note: these are not instance masks; cells are their connected components")
    rows += [
        f"cells from the prediction: {pp.describe()}",
        f"true cells (total): {summ.n_true}",
        f"predicted cells (total): {summ.n_pred}",
        f"matched at IoU 0.5 (total): {summ.matched}",
        f"merged, one prediction over several true cells (total): {summ.merged}",
        f"split, one true cell in several predictions (total): {summ.split}",
        f"foreground jaccard (pooled over pixels): {result.fg_jaccard_pooled:.4f}",
        f"AP@0.5 (pooled over cells): {summ.ap(0.5, pooled=True):.4f}",
        f"AP@0.9 (mean over images): {summ.ap(0.9):.4f}",
        f"AP@0.75 (mean over images): {summ.ap(0.75):.4f}",
        f"foreground jaccard (mean over images): {result.fg_jaccard_mean:.4f}",
        f"AP@0.5 (mean over images): {summ.ap(0.5):.4f}",
    ]
    return rows


# --------------------------------------------------------------------------- export, info


def cmd_export(args: argparse.Namespace, out: Output) -> int:
    from cellseg_gui.core.bundle import ExportError, export_onnx, export_torchscript, load_bundle

    bundle = load_bundle(_existing(args.model), device="cpu")
    target = Path(args.out)
    if target.parent and not target.parent.exists():
        raise CLIError(target.parent, "output folder does not exist")
    try:
        if args.format == "torchscript":
            export_torchscript(bundle, target)
        elif args.format == "bioimageio":
            from cellseg_gui.core.bioimageio import export_bioimageio

            target = export_bioimageio(bundle, target, sample_image=args.sample)
        else:
            export_onnx(bundle, target)
    except ExportError as exc:
        out.error(exc)
        return EXIT_FAILED
    out.out(f"wrote {target} ({args.format}, checked against the torch model)")
    return EXIT_OK


def cmd_info(args: argparse.Namespace, out: Output) -> int:
    path = _existing(args.model)
    if path.suffix.lower() == ".cellseg":
        from cellseg_gui.core.bundle_meta import read_bundle_meta

        meta = read_bundle_meta(path)
    else:
        meta = _load_model(args.model, "cpu").meta
    if args.json:
        out.out(json.dumps(meta, indent=2, default=str))
        return EXIT_OK
    for line in describe_meta(meta, path):
        out.out(line)
    return EXIT_OK


def describe_meta(meta: dict[str, Any], path: Path | None = None) -> list[str]:
    """A model's record in plain lines (also useful for the window's model list)."""
    arch = meta.get("architecture") or {}
    lines = [f"model: {meta.get('name') or (path.name if path else '?')}"]
    if path is not None:
        size = path.stat().st_size
        shown = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"
        lines.append(f"file: {path} ({shown})")
    lines.append(
        "architecture: U-Net, hidden {h}, depth {d}, downsample {s}, {c} input channel(s), "
        "{k} classes, dropout {p}, batch-norm {bn}".format(
            h=arch.get("hidden"),
            d=arch.get("depth"),
            s=arch.get("downsample") or 1,
            c=arch.get("in_channels"),
            k=arch.get("n_classes"),
            p=arch.get("dropout"),
            bn="on" if arch.get("batchnorm") else "off",
        )
    )
    classes = meta.get("classes") or []
    if classes:
        lines.append("classes: " + ", ".join(str(c.get("name")) for c in classes))
    lines.append(
        f"masks: {meta.get('mask_mode')} (boundary width {meta.get('boundary_width')}), "
        f"channels: {meta.get('channels')}"
    )
    norm = meta.get("normalization") or {}
    if norm:
        lines.append(
            f"normalisation: {norm.get('method')} {norm.get('low')}..{norm.get('high')} percentiles"
        )
    from cellseg_gui.core.scoring import shown_metrics

    metrics = shown_metrics(meta)
    if metrics:
        lines.append("metrics: " + ", ".join(f"{k} {_fmt(v, '.4g')}" for k, v in metrics.items()))
    if meta.get("mask_mode") == "instances" or "postprocess" in meta:
        from cellseg_gui.core.postprocess import postprocess_from_meta

        pp, note = postprocess_from_meta(meta)
        lines.append(f"cells: {note}" if note else f"cells: {pp.describe()}")
    training = meta.get("training") or {}
    if training:
        hist = training.get("history") or {}
        split = training.get("split") or {}
        settings = training.get("settings") or {}
        parts = []
        if hist.get("epoch"):
            parts.append(f"{len(hist['epoch'])} epochs")
        if split:
            parts.append(
                f"{len(split.get('train', []))} train / {len(split.get('val', []))} val images"
            )
        if settings:
            parts.append(
                f"{settings.get('optimizer')} lr {_fmt(settings.get('lr'), '.3g')}, "
                f"{settings.get('schedule')}, crop {settings.get('crop')}, "
                f"batch {settings.get('batch_size')}, seed {settings.get('seed')}"
            )
        if training.get("device"):
            parts.append(f"on {training.get('device')} ({training.get('precision', '?')})")
        if parts:
            lines.append("training: " + "; ".join(parts))
    versions = meta.get("versions") or {}
    if versions:
        lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if meta.get("created"):
        lines.append(f"created: {meta['created']}")
    return lines


# --------------------------------------------------------------------------- data loading


def _load_training_samples(
    args: argparse.Namespace, cfg: Any, out: Output, *, names: list[str] | None = None
) -> tuple[list[Any], str, int]:
    """Samples with masks, the data set's mask mode and the number of bad files."""
    from cellseg_gui.core.dataset import load_samples

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
    # load_samples decides one mode for the whole set ("auto"); the bundle records it
    mode = str(getattr(samples[0], "mask_mode", None) or cfg.mask_mode)
    return samples, mode, len(errors)


def _train_config(args: argparse.Namespace, base: dict[str, Any] | None = None) -> Any:
    """The run's settings: ``base`` (the project's saved training form) or the defaults,
    then every option the user gave."""
    from cellseg_gui.core.config import TrainConfig

    if base:
        cfg = TrainConfig.from_dict(base)
    else:
        cfg = TrainConfig()
        if args.device in ("cuda", "mps"):
            cfg = TrainConfig.for_device(args.device)
    cfg.device = args.device
    for attr, field in (
        ("hidden", "model.hidden"),
        ("depth", "model.depth"),
        ("downsample", "model.downsample"),
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


def _parse_lr(text: str) -> float | str:
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError("learning rate must be a positive number")
    return value


def _positive(text: str, cast: type, what: str):
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _positive_int(text: str) -> int:
    return _positive(text, int, "a whole number")


def _positive_float(text: str) -> float:
    return _positive(text, float, "a number")


def _augmentation_names() -> tuple[str, ...]:
    from dataclasses import fields

    from cellseg_gui.core.config import AugmentConfig  # no torch: keeps --help fast

    return tuple(f.name for f in fields(AugmentConfig))


AUGMENTATIONS = _augmentation_names()
AUGMENT_PRESETS = ("default", "none", "all")


def _augment(text: str) -> str | tuple[str, ...]:
    """A preset (default, none, all) or a comma-separated list of augmentations to use."""
    text = text.strip().lower()
    if text in AUGMENT_PRESETS:
        return text
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown augmentation {', '.join(unknown) or repr(text)}: use "
            f"{', '.join(AUGMENT_PRESETS)} or a comma-separated list of {', '.join(AUGMENTATIONS)}"
        )
    return names


def _downsample(text: str) -> int:
    value = _positive_int(text)
    if value > 8:
        raise argparse.ArgumentTypeError(f"expected 1 to 8, got {value}")
    return value


# --------------------------------------------------------------------------- events


class _Cancel:
    """Ctrl+C cancels the job through its CancelToken (the loop ends within a step and
    keeps the best model); a second Ctrl+C interrupts at once."""

    def __init__(self, token: Any, out: Output) -> None:
        self.token = token
        self.out = out
        self._old: Any = None

    def __enter__(self) -> _Cancel:
        try:
            self._old = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread (embedded use): no handler
            self._old = None
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        if self.token.cancelled:
            raise KeyboardInterrupt
        self.token.cancel()
        self.out.err("\nstopping after this step (Ctrl+C again to abort at once)...")

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _drive(
    events: Iterator[Any], out: Output, *, label: str, seen: dict[str, Any] | None = None
) -> Any:
    """Run a job generator, drawing progress; returns its Finished event. ``seen`` gets
    the last SampleLosses event (key "sample_losses") for the noisy-label report."""
    from cellseg_gui.core.events import (
        EpochEnded,
        Finished,
        LRProbe,
        Message,
        SampleLosses,
        Started,
        StepEnded,
    )

    total: int | None = None
    finished = None
    t0 = time.monotonic()
    for ev in events:
        if isinstance(ev, Started):
            total = ev.total_steps
            out.err(
                f"{label} on {ev.device} ({ev.precision})"
                + (
                    f": {ev.n_train} train / {ev.n_val} val image(s)"
                    if ev.n_train and not ev.message
                    else ""
                )
                + (f", {ev.epochs} epochs x {ev.steps_per_epoch} steps" if ev.epochs else "")
                + (f" - {ev.message}" if ev.message else "")
            )
        elif isinstance(ev, StepEnded):
            frac = (ev.global_step + 1) / total if total else None
            eta = ev.eta_seconds
            if eta is None and frac:
                el = time.monotonic() - t0
                eta = el / frac - el
            out.bar(
                frac,
                f"epoch {ev.epoch + 1} step {ev.step + 1} loss {_fmt(ev.loss)} "
                f"lr {_fmt(ev.lr, '.2e')} ETA {_fmt_time(eta)}",
            )
        elif isinstance(ev, LRProbe):
            frac = (ev.step + 1) / total if total else None
            out.bar(frac, f"lr {_fmt(ev.lr, '.2e')} loss {_fmt(ev.smoothed)}")
        elif isinstance(ev, EpochEnded):
            of = f"/{ev.epochs}" if ev.epochs else ""
            out.out(
                f"epoch {ev.epoch + 1}{of}  train loss {_fmt(ev.train_loss)}  "
                f"val loss {_fmt(ev.val_loss)}  train J {_fmt(ev.train_fg_jaccard)}  "
                f"val J {_fmt(ev.val_fg_jaccard)}  "
                + (f"val AP@0.5 {_fmt(ev.val_ap50)}  " if ev.val_ap50 is not None else "")
                + f"lr {_fmt(ev.lr, '.2e')}  "
                f"{ev.seconds:.1f}s  ETA {_fmt_time(ev.eta_seconds)}"
                + ("  *best" if ev.is_best else "")
            )
        elif isinstance(ev, Message):
            out.err(f"{'warning' if ev.level == 'warning' else 'note'}: {ev.text}")
        elif isinstance(ev, SampleLosses):
            if seen is not None:
                seen["sample_losses"] = ev
        elif isinstance(ev, Finished):
            finished = ev
    out.clear_bar()
    return finished


def _finished_code(fin: Any, out: Output) -> int:
    from cellseg_gui.core.events import CANCELLED

    if fin is None:
        out.error("the job ended without a result")
        return EXIT_FAILED
    if fin.reason == CANCELLED:
        return EXIT_INTERRUPTED
    if not fin.ok:
        out.error(fin.message or fin.reason)
        if fin.hint:
            out.err(f"hint: {fin.hint}")
        return EXIT_FAILED
    return EXIT_OK


# --------------------------------------------------------------------------- train


def write_history_csv(path: Path, history: dict[str, Any]) -> None:
    """One row per epoch; per-class Jaccards spread into columns (train_jaccard_0, ...)."""
    from cellseg_gui.core.imageio import atomic_write_text

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
                rows[i][key] = "" if v is None else v
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _run_lr_find(samples: list[Any], cfg: Any, out: Output, args: argparse.Namespace) -> Any:
    from cellseg_gui.core.jobs import CancelToken
    from cellseg_gui.core.lrfind import lr_find

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


def _folder_project(data: str, out: Output) -> Any:
    """The project of a data folder that has a ``cellseg-project.json`` (the window's
    split and settings), else None. A project file that cannot be read is said, and the
    run goes on without it."""
    from cellseg_gui.core.project import PROJECT_FILE, ProjectError, open_project

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
    if not target.parent.exists():
        raise CLIError(target.parent, "output folder does not exist")
    if args.resume:
        _existing(args.resume)
    if args.init:
        from cellseg_gui.core.bundle_meta import read_bundle_meta

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
    from cellseg_gui.core.train import fit

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
        out.out(
            f"model: {fin.bundle_path} (best validation foreground Jaccard "
            f"{_fmt(res.get('best_val_fg_jaccard'))} at epoch "
            f"{(res.get('best_epoch') if res.get('best_epoch') is not None else -1) + 1})"
        )
        pp = res.get("postprocess")
        if pp:
            from cellseg_gui.core.postprocess import PostProcess

            chosen = PostProcess.from_dict(pp)
            out.out(
                f"cells: {chosen.describe()}, validation AP@0.5 {_fmt(chosen.val_ap50)} "
                "(the epoch lines' AP uses the default post-processing)"
            )
    elif code == EXIT_INTERRUPTED:
        out.err("stopped before the first epoch ended: no model written")
    guard = res.get("guard_rail")
    if guard:
        verdict = guard.get("text") or guard.get("verdict") or guard.get("message") or guard
        out.out(f"guard-rail: {verdict}")
    losses = seen.get("sample_losses")
    if losses is not None and losses.losses:
        from cellseg_gui.core.diagnostics import noisy_labels

        flagged = [(n, v) for n, v, o in noisy_labels(losses.losses) if o]
        if flagged:
            shown = ", ".join(f"{n} ({v:.3g})" for n, v in flagged[:10])
            out.out(f"possibly noisy labels (training loss far above the rest): {shown}")
    if history:
        from cellseg_gui.core.diagnostics import advise

        for a in advise(history, cfg):
            changes = ", ".join(f"{k}={v}" for k, v in a.changes.items())
            out.out(f"advice: {a.text}" + (f" [{changes}]" if changes else ""))
    if code == EXIT_OK and n_bad:
        return EXIT_BAD_INPUT
    return code


# --------------------------------------------------------------------------- lr-find


def cmd_lr_find(args: argparse.Namespace, out: Output) -> int:
    cfg = _train_config(args)
    samples, _mode, n_bad = _load_training_samples(args, cfg, out)
    fin = _run_lr_find(samples, cfg, out, args)
    code = _finished_code(fin, out)
    if code != EXIT_OK or not fin.result:
        return code
    res = fin.result
    lrs = [float(v) for v in res.get("lrs", [])]
    losses = [float(v) for v in res.get("losses", [])]
    smoothed = [float(v) for v in res.get("smoothed", [])]
    base = Path(args.out)
    if not base.parent.exists():
        raise CLIError(base.parent, "output folder does not exist")
    csv_path = base.with_suffix(".csv")
    png_path = base.with_suffix(".png")
    from cellseg_gui.core.imageio import atomic_write_text

    lines = ["lr,loss,smoothed"]
    for lr, lo, sm in zip(lrs, losses, smoothed, strict=False):
        lines.append(f"{lr:.6g},{lo:.6g},{sm:.6g}")
    atomic_write_text(csv_path, "\n".join(lines) + "\n")
    suggested = float(res["suggested_lr"])
    steepest = res.get("steepest_lr")
    draw_lr_curve(png_path, lrs, losses, smoothed, suggested, steepest)
    finite = [(s, lr) for s, lr in zip(smoothed, lrs, strict=False) if math.isfinite(s)]
    if finite:
        best, at = min(finite)
        out.out(
            f"swept {len(lrs)} learning rates from {lrs[0]:.2g} to {lrs[-1]:.2g}; "
            f"smoothed loss from {finite[0][0]:.4f} to a minimum of {best:.4f} at lr {at:.3g}"
        )
    if steepest is not None:
        out.out(f"steepest descent at lr {float(steepest):.3g}")
    out.out(f"curve: {csv_path}, {png_path}")
    out.out(f"suggested lr: {suggested:.3g}")
    return EXIT_BAD_INPUT if n_bad else EXIT_OK


def draw_lr_curve(
    path: Path,
    lrs: list[float],
    losses: list[float],
    smoothed: list[float],
    suggested: float | None,
    steepest: float | None = None,
    size: tuple[int, int] = (640, 400),
) -> None:
    """The loss-vs-learning-rate curve as a PNG, drawn with Pillow (no matplotlib):
    log-scaled x, raw losses as grey dots, the smoothed loss as a line, the suggestion
    as a red vertical line."""
    from PIL import Image, ImageDraw

    w, h = size
    left, right, top, bottom = 60, 20, 20, 40
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    pts = [
        (lr, lo, sm)
        for lr, lo, sm in zip(lrs, losses, smoothed, strict=False)
        if lr > 0 and math.isfinite(lo) and math.isfinite(sm)
    ]
    d.rectangle([left, top, w - right, h - bottom], outline="black")
    if len(pts) >= 2:
        xs = [math.log10(p[0]) for p in pts]
        ys = [p[2] for p in pts] + [p[1] for p in pts]
        x0, x1 = min(xs), max(xs)
        sm_vals = [p[2] for p in pts]
        y0 = min(ys)
        # cap the top at 4x the smoothed minimum's range: the blown-up end hides the curve
        y1 = min(max(ys), min(sm_vals) + 4 * (sm_vals[0] - min(sm_vals) + 1e-12) + 1e-12)
        y1 = max(y1, max(sm_vals[: max(2, len(sm_vals) // 2)]))
        if x1 <= x0:
            x1 = x0 + 1
        if y1 <= y0:
            y1 = y0 + 1

        def px(lr: float) -> float:
            return left + (math.log10(lr) - x0) / (x1 - x0) * (w - left - right)

        def py(v: float) -> float:
            v = min(max(v, y0), y1)
            return h - bottom - (v - y0) / (y1 - y0) * (h - top - bottom)

        for lr, lo, _ in pts:
            x, y = px(lr), py(lo)
            d.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(170, 170, 170))
        d.line([(px(lr), py(sm)) for lr, _, sm in pts], fill=(41, 128, 185), width=2)
        for dec in range(math.ceil(x0), math.floor(x1) + 1):
            x = px(10.0**dec)
            d.line([(x, h - bottom), (x, h - bottom + 4)], fill="black")
            d.text((x - 12, h - bottom + 8), f"1e{dec}", fill="black")
        for frac in (0.0, 0.5, 1.0):
            v = y0 + frac * (y1 - y0)
            d.text((4, py(v) - 6), f"{v:.3g}", fill="black")
        if steepest:
            x = px(float(steepest))
            d.line([(x, top), (x, h - bottom)], fill=(39, 174, 96), width=1)
        if suggested:
            x = px(float(suggested))
            d.line([(x, top), (x, h - bottom)], fill=(231, 76, 60), width=2)
            d.text((min(x + 4, w - 120), top + 4), f"suggested {suggested:.2g}", fill=(231, 76, 60))
    d.text((w // 2 - 40, h - 16), "learning rate (log)", fill="black")
    import io

    from cellseg_gui.core.imageio import atomic_write_bytes

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- check, inspect


def cmd_inspect(args: argparse.Namespace, out: Output) -> int:
    from cellseg_gui.core.inspect import inspect_dataset

    pairs = _find_pairs(args.data)
    report = inspect_dataset(pairs, n_classes=args.classes, folder=args.data)
    if args.json:
        out.out(json.dumps(report.to_dict(), indent=2))
    else:
        out.out(report.to_text())
    for p in report.errors:
        out.err(f"error: {p.path}: {p.text}")
    return EXIT_BAD_INPUT if report.errors else EXIT_OK


def cmd_check(args: argparse.Namespace, out: Output) -> int:
    from cellseg_gui.core.inspect import inspect_dataset

    pairs = _find_pairs(args.data)
    report = inspect_dataset(pairs, n_classes=args.classes, folder=args.data)
    out.out(report.to_text())
    for p in report.errors:
        out.err(f"error: {p.path}: {p.text}")
    bad_paths = {p.path for p in report.errors}
    usable = [
        p
        for p in pairs
        if p.mask_path and str(p.image_path) not in bad_paths and str(p.mask_path) not in bad_paths
    ]
    if args.image:
        usable = [p for p in usable if p.name == args.image]
        if not usable:
            raise CLIError(args.data, f"no usable image named {args.image!r} with a mask")
    if not usable:
        out.error(CLIError(args.data, "no usable image with a mask for the overfit check"))
        return EXIT_BAD_INPUT
    cfg = _train_config(args)
    samples, _mode, _ = _load_training_samples(args, cfg, out, names=[usable[0].name])
    from cellseg_gui.core.jobs import CancelToken
    from cellseg_gui.core.overfit import overfit_check

    out.out("")
    out.out(f"overfit-one-image check on {samples[0].name} (can the model learn at all?)")
    token = CancelToken()
    with _Cancel(token, out):
        fin = _drive(
            overfit_check(samples[0], cfg, cancel=token, max_steps=args.max_steps),
            out,
            label="overfit check",
        )
    code = _finished_code(fin, out)
    if code != EXIT_OK:
        return code
    r = fin.result or {}
    verdict = "passed" if r.get("passed") else "FAILED"
    out.out(
        f"overfit check {verdict}: foreground Jaccard {_fmt(r.get('jaccard'))} after "
        f"{r.get('steps')} steps"
    )
    if r.get("advice"):
        out.out(str(r["advice"]))
    if report.errors:
        return EXIT_BAD_INPUT
    return EXIT_OK if r.get("passed") else EXIT_FAILED


# --------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line ``error: ...`` (exit 2) like every other
    bad input, with a pointer to --help instead of the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and training settings")
    g.add_argument("--hidden", type=_positive_int, help="width of the first U-Net level")
    g.add_argument("--depth", type=_positive_int, help="number of down-sampling levels")
    g.add_argument(
        "--downsample",
        type=_downsample,
        help="the network runs at 1/N resolution, 1-8 (default: 2 when the masks' objects "
        "are large, else 1)",
    )
    g.add_argument("--dropout", type=float, help="dropout in the U-Net blocks (0-1)")
    g.add_argument("--crop", type=_positive_int, help="side of the random training crops")
    g.add_argument("--batch", type=_positive_int, help="crops per batch")
    g.add_argument("--optimizer", choices=("sgd", "adam", "adamw"))
    g.add_argument("--weight-decay", type=float, dest="weight_decay")
    g.add_argument(
        "--schedule", choices=("constant", "step", "cosine", "sgdr", "onecycle"), help="LR schedule"
    )
    g.add_argument(
        "--augment", type=_augment, metavar="PRESET|LIST",
        help="default, none, all, or the ones to use, e.g. flips,rot90,elastic "
        f"(of {', '.join(AUGMENTATIONS)})",
    )  # fmt: skip
    g.add_argument(
        "--mask-mode",
        dest="mask_mode",
        choices=("auto", "binary", "classes", "instances"),
        help="how to read masks (default: auto-detect)",
    )
    g.add_argument("--classes", type=_positive_int, help="number of classes (default: from masks)")
    g.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda", "mps"), help="default: auto"
    )
    g.add_argument(
        "--amp",
        nargs="?",
        const="on",
        choices=("auto", "on", "off", "fp16", "bf16"),
        help="mixed precision; bare --amp turns it on (bf16/fp16 on CUDA, bf16 on the CPU); "
        "default auto: on where it is faster",
    )
    g.add_argument("--seed", type=int, help="random seed (default 0)")


def build_parser() -> argparse.ArgumentParser:
    from cellseg_gui import __version__

    parser = _Parser(
        prog="cellseg",
        description="Segment microscopy images with a U-Net, headless.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cellseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    kw: dict[str, Any] = {
        "epilog": EXIT_HELP,
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }

    p = sub.add_parser("predict", help="write label masks for images", **kw)
    p.add_argument("model", help="model file (.cellseg, TorchScript .pt or .onnx)")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="images or folders")
    p.add_argument("--out", required=True, help="output folder (masks keep the inputs' stems)")
    p.add_argument(
        "--instances", action="store_true", help="write instance labels (one id per cell)"
    )
    p.add_argument("--tile", type=_positive_int, default=512, help="tile size (default 512)")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--ext", default="tif", choices=("tif", "png"), help="mask format (default tif)")
    p.add_argument(
        "--measure",
        action="store_true",
        help="with --instances: NAME_cells.csv per image (area, centroid, bounding box, "
        "perimeter, eccentricity, solidity, mean/min/max intensity) and cells_summary.csv",
    )
    p.add_argument(
        "--rois",
        action="store_true",
        help="with --instances: NAME_rois.zip per image, a Fiji/ImageJ ROI set (ROI Manager)",
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "evaluate",
        help="foreground Jaccard and cell AP of a model on a labelled folder",
        **kw,
    )
    p.add_argument("model")
    p.add_argument("data", help="folder with images/ and masks/")
    p.add_argument("--tile", type=_positive_int, default=512)
    p.add_argument("--tta", action="store_true")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--json", action="store_true", help="the same figures as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "export",
        help="export to TorchScript, ONNX or a bioimage.io package (checked after writing)",
        **kw,
    )
    p.add_argument("model")
    p.add_argument("--format", required=True, choices=("torchscript", "onnx", "bioimageio"))
    p.add_argument("--out", required=True, help="output file")
    p.add_argument(
        "--sample",
        metavar="IMAGE",
        help="bioimageio: image for the test tensors and cover (default: a generated one)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("info", help="show what a model file records", **kw)
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="the whole record as JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "train",
        help="train a U-Net on a labelled folder",
        description="Train a U-Net. Ctrl+C stops cleanly and keeps the best model so far. "
        "Writes MODEL.cellseg, MODEL_history.csv and a resumable MODEL.ckpt.",
        **kw,
    )
    p.add_argument("data", help="folder with images/ and masks/")
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.cellseg)")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--epochs", type=_positive_int, help="number of epochs (default 40)")
    stop.add_argument("--minutes", type=_positive_float, help="train for this long instead")
    p.add_argument(
        "--lr", type=_parse_lr, help="learning rate, or 'auto' to run the LR finder first"
    )
    p.add_argument("--steps-per-epoch", type=_positive_int, dest="steps_per_epoch")
    p.add_argument(
        "--patience",
        type=int,
        help="early-stopping patience in epochs (0: off); one-cycle and cosine runs count "
        "them once the learning rate is down to half its peak",
    )
    p.add_argument("--val", metavar="NAMES", help="comma-separated validation image names")
    p.add_argument("--val-fraction", type=float, dest="val_fraction")
    p.add_argument(
        "--boundary",
        choices=("touching", "all"),
        help="instance masks: boundary class only where cells touch (default) or around every cell",
    )
    p.add_argument(
        "--boundary-width", type=_positive_int, dest="boundary_width",
        help="boundary width in pixels (default 3)",
    )  # fmt: skip
    p.add_argument(
        "--separation-weight", type=float, dest="separation_weight",
        help="U-Net paper's loss weight w0 on pixels between touching cells (default 0: off)",
    )  # fmt: skip
    p.add_argument("--resume", metavar="CKPT", help="continue an interrupted run")
    p.add_argument("--init", metavar="MODEL", help="fine-tune: start from this model's weights")
    p.add_argument("--checkpoint", metavar="CKPT", help="checkpoint file (default MODEL.ckpt)")
    _add_lr_sweep_options(p)
    _add_model_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("lr-find", help="learning-rate finder (CSV and PNG of the curve)", **kw)
    p.add_argument("data")
    p.add_argument("--out", default="lr_find", help="writes OUT.csv and OUT.png (default lr_find)")
    _add_lr_sweep_options(p)
    _add_model_options(p)
    p.set_defaults(func=cmd_lr_find)

    p = sub.add_parser("check", help="inspect the data and run the overfit-one-image check", **kw)
    p.add_argument("data")
    p.add_argument("--image", help="image to overfit (default: the first usable one)")
    p.add_argument("--max-steps", type=_positive_int, default=600, dest="max_steps")
    _add_model_options(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("inspect", help="statistics and problems of a data set", **kw)
    p.add_argument("data")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--classes", type=_positive_int, help="flag mask values >= this many classes")
    p.set_defaults(func=cmd_inspect)
    return parser


def _add_lr_sweep_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("learning-rate finder")
    g.add_argument("--min-lr", type=_positive_float, default=1e-6, dest="min_lr")
    g.add_argument("--max-lr", type=_positive_float, default=10.0, dest="max_lr")
    g.add_argument("--lr-steps", type=_positive_int, default=100, dest="lr_steps")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output(quiet=not _is_main_rank_env())
    try:
        return int(args.func(args, out))
    except KeyboardInterrupt:
        out.clear_bar()
        out.err("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if isinstance(exc, _expected_errors()):
            out.error(exc)
            return EXIT_BAD_INPUT
        raise
    finally:
        if "torch.distributed" in sys.modules:
            try:
                from cellseg_gui.core import distributed

                distributed.cleanup()
            except Exception:  # noqa: BLE001 - never mask the command's own result
                pass


if __name__ == "__main__":
    sys.exit(main())
