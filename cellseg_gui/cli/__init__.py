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

import os
import sys

from cellseg_gui.cli.common import _is_main_rank_env
from cellseg_gui.cli.lr import draw_lr_curve
from cellseg_gui.cli.models import describe_meta, evaluation_lines
from cellseg_gui.cli.output import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Output,
    _expected_errors,
)
from cellseg_gui.cli.parser import build_parser
from cellseg_gui.cli.training import write_history_csv

__all__ = [
    "build_parser",
    "describe_meta",
    "draw_lr_curve",
    "evaluation_lines",
    "main",
    "write_history_csv",
]


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush into a closed pipe
    prints no "Exception ignored" traceback (the recipe of Python's signal docs)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (a test's capture)
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output(quiet=not _is_main_rank_env())
    ended = False  # normally, or with an error this command reports: ranks leave together
    try:
        code = int(args.func(args, out))
        ended = True
        return code
    except KeyboardInterrupt:
        out.clear_bar()
        out.err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `cellseg info m.cellseg | head -3`: the reader has enough
        _quiet_stdout()
        return EXIT_OK
    except Exception as exc:
        if isinstance(exc, _expected_errors()):
            out.error(exc)
            return EXIT_BAD_INPUT
        raise
    finally:
        if "torch.distributed" in sys.modules:
            try:
                from cellseg_gui.core.training import distributed

                distributed.cleanup(together=ended)
            except Exception:  # noqa: BLE001 - never mask the command's own result
                pass
