"""What the commands share: finding inputs, loading models, the distributed context
and driving a core job to its end with Ctrl+C handled."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cellseg_gui.cli.output import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CLIError,
    Output,
    _fmt,
    _fmt_time,
)


def _existing(path: str, what: str = "file") -> Path:
    p = Path(path)
    if not p.exists():
        raise CLIError(p, f"{what} not found")
    return p


def _find_pairs(data: str) -> list[Any]:
    from cellseg_gui.core.data.dataset import find_pairs

    folder = _existing(data, "folder")
    if not folder.is_dir():
        raise CLIError(folder, "not a folder (expected a folder with images/ and masks/)")
    pairs = find_pairs(folder)
    if not pairs:
        raise CLIError(folder, "no images found")
    from cellseg_gui.core.data.dataset import dead_links

    for link in dead_links(folder):
        print(f"warning: {link}: a symbolic link that loops or points nowhere; skipped",
              file=sys.stderr)  # fmt: skip
    return pairs


def _collect_images(inputs: Iterable[str]) -> tuple[list[Path], list[CLIError]]:
    """Image files from files and folders given on the command line. A folder with an
    ``images/`` sub-folder is a data set: its images are used (not its masks)."""
    from cellseg_gui.core.data.imageio import IMAGE_EXTS

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
            if not found:  # say where and what was looked for, as evaluate does
                where = "its images/ folder" if folder != p else "this folder"
                kinds = ", ".join(IMAGE_EXTS)
                errors.append(CLIError(p, f"no images found in {where} (looked for {kinds})"))
            files.extend(found)
        else:
            files.append(p)
    return files, errors


def _writable_folder(folder: Path, *, create: bool = False) -> Path:
    """``folder``, checked before any work is done: a folder this user may write in (made
    when ``create``), else a CLIError naming it and the problem (a run that wrote nothing
    at its end because ``--out`` named a file lost all its minutes)."""
    import os

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CLIError(folder, "is a file, not a folder")
    if not folder.exists():
        if not create:
            raise CLIError(folder, "output folder does not exist")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CLIError(
                folder, f"cannot create the output folder ({exc.strerror or exc})"
            ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CLIError(folder, "output folder is not writable")
    return folder


def _load_model(path: str, device: str | None = None) -> Any:
    from cellseg_gui.core.model.bundle import load_predictor

    p = _existing(path)
    return load_predictor(p, device=None if device in (None, "auto") else device)


def _check_finite(raw: Any, path: Path) -> None:
    import numpy as np

    if raw.dtype.kind == "f" and raw.size and not np.isfinite(raw).any():
        raise CLIError(path, "image is all NaN (no finite pixel)")


def _dist_context() -> Any:
    """torchrun's rank, or a single-process stand-in (imports torch)."""
    from cellseg_gui.core.training import distributed

    return distributed.context()


def _is_main_rank_env() -> bool:
    """Rank 0 or not launched by torchrun; cheap (no torch), for early output."""
    return os.environ.get("RANK", "0") == "0"


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
    job = ""
    t0 = time.monotonic()
    for ev in events:
        if isinstance(ev, Started):
            total, job = ev.total_steps, ev.job
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
            # the overfit check stops as soon as it passes: its step budget only bounds it
            left = (
                f"at most {_fmt_time(eta)} left (ends when it passes)"
                if job == "overfit"
                else f"ETA {_fmt_time(eta)}"
            )
            out.bar(
                frac,
                f"epoch {ev.epoch + 1} step {ev.step + 1} loss {_fmt(ev.loss)} "
                f"lr {_fmt(ev.lr, '.2e')} {left}",
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
