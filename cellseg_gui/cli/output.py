"""How every command speaks: exit codes, one-line errors, progress bars and the
quiet mode of the non-zero ranks under torchrun."""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

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
        at most every 30 s (logs of batch jobs stay readable), and always at 100%, so a
        log does not end on '20% evaluated 1 of 5 image(s)' as if cut short."""
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
            if now - self._last_plain >= 30.0 or (fraction is not None and fraction >= 1.0):
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


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "bad input" and carry a "path: problem" message.

    Looked up in sys.modules so that catching them never imports torch."""
    from cellseg_gui.core.data.imageio import ImageReadError

    types: list[type[BaseException]] = [CLIError, ImageReadError]
    for mod, name in (
        ("cellseg_gui.core.data.dataset", "DatasetError"),
        ("cellseg_gui.core.model.bundle", "BundleError"),
        ("cellseg_gui.core.model.bundle_meta", "BundleError"),  # what info and --init read
    ):
        cls = getattr(sys.modules.get(mod), name, None)
        if isinstance(cls, type):
            types.append(cls)
    return tuple(types)
