"""Entry point ``cellseg-gui [FOLDER_OR_PROJECT] [--sample] [--run ACTION] [--screenshot PNG]``.

Start-up speed matters (the window must show in under a second): nothing here imports
torch; the project is opened after the window is on screen, and a ``--run`` job starts
after that (torch loads in the job's thread).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cellseg_gui.app.training import TrainingController
    from cellseg_gui.workers.job_worker import JobWorker

_T0 = time.time()

# --run ACTION: the training controller's method, and the dock that shows the result.
# --run NAME: what it starts on the training controller, and the dock it raises
RUN_ACTIONS: dict[str, tuple[Callable[[TrainingController], JobWorker | None], str]] = {
    "lr-find": (lambda ctrl: ctrl.find_lr(), "LR finder"),
    "predict-all": (lambda ctrl: ctrl.predict_all(), "Gallery"),
    "train": (lambda ctrl: ctrl.train(), "Plots"),
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cellseg-gui", description="Segment microscopy images.")
    p.add_argument("path", nargs="?", help="folder of images (images/ + masks/) or project file")
    p.add_argument("--sample", action="store_true", help="open the built-in synthetic sample")
    p.add_argument(
        "--run",
        metavar="ACTION",
        choices=tuple(RUN_ACTIONS),
        help="once the project is open, start lr-find, predict-all (needs a model) or train; "
        "with --screenshot, wait for it, show its result and save the picture then",
    )
    p.add_argument("--screenshot", metavar="PNG", help="save a picture of the window and exit")
    return p.parse_args(argv)


def _error(text: str) -> None:
    """One line on stderr, never a traceback."""
    print("error: " + " ".join(str(text).split()), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.run and not (args.sample or args.path):
        _error(f"--run {args.run} needs a project: give a folder or project file, or --sample")
        return 1
    if args.run and not args.sample and not Path(args.path).exists():
        _error(f"{args.path}: no such folder or project file")
        return 1
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    from cellseg_gui.workers.gui_gc import collect_on_gui_thread

    collect_on_gui_thread()  # before any job or save thread exists (see gui_gc)
    app.setApplicationName("cellseg-gui")
    app.setOrganizationName("cellseg_gui")
    app.setDesktopFileName("cellseg-gui")
    from PySide6.QtGui import QIcon

    from cellseg_gui import resource_path

    icon = resource_path("cellseg-gui.svg")
    if icon.exists():
        app.setWindowIcon(QIcon(str(icon)))
    from cellseg_gui.app.main_window import MainWindow

    win = MainWindow(deferred=True)
    win.show()
    status = {"rc": 0}

    if os.environ.get("CELLSEG_STARTUP_PROBE"):
        # benchmarks/gui_startup.py: when the window is on screen (shell painted) and when
        # it is complete (canvas and docks built), then quit.
        info: dict = {"t0": _T0}

        def shown() -> None:
            win.repaint()  # painted now, not at some later turn of the loop
            info.update(shown=time.time(), torch_imported="torch" in sys.modules,
                        scipy_imported="scipy" in sys.modules,
                        pyqtgraph_imported="pyqtgraph" in sys.modules)  # fmt: skip
            win.finish_setup()
            win.repaint()
            info["ready"] = time.time()
            print(json.dumps(info), flush=True)
            app.quit()

        QTimer.singleShot(0, shown)
        app.exec()
        return 0

    def build() -> None:
        win.repaint()  # the shell is on screen before the canvas and docks are built
        win.finish_setup()
        load()

    def load() -> None:
        ok = True
        if args.sample:
            ok = win.open_sample()
        elif args.path:
            ok = win.open_project(args.path)
        if args.run:
            if not ok:
                fail(f"--run {args.run}: the project could not be opened")
            else:
                run_action()
        elif args.screenshot:
            QTimer.singleShot(200, shoot if ok else lambda: finish(1))

    def fail(text: str) -> None:
        """With --screenshot the run ends (exit 1); otherwise the window stays open."""
        _error(text)
        if args.screenshot:
            finish(1)

    def run_action() -> None:
        start, dock_title = RUN_ACTIONS[args.run]
        ctrl = win.training
        if ctrl is None or win.project is None:
            fail(f"--run {args.run}: no project is open")
            return
        if args.run == "predict-all" and not ctrl.active_model:
            folder = win.project.folder
            fail(
                f"--run predict-all needs a model, and {folder} has none yet: "
                "train one first (--run train) or load one in the Models dock"
            )
            return
        worker = start(ctrl)
        if worker is None:
            fail(f"--run {args.run} could not start (another job may be running)")
            return
        worker.done.connect(lambda: job_done(worker, dock_title))

    def job_done(worker, dock_title: str) -> None:
        ev = worker.result
        if ev is None or not ev.ok:
            message = ev.message if ev is not None else "the job ended without a result"
            fail(f"{args.run} failed: {message or ev.reason}")
            return
        print(f"{args.run}: {' '.join((ev.message or 'done').split())}", flush=True)
        dock = win.docks.get(dock_title)
        if dock is not None:
            dock.show()
            dock.raise_()
        if args.screenshot:
            app.processEvents()
            QTimer.singleShot(300, shoot)

    def shoot() -> None:
        app.processEvents()
        saved = win.screenshot(args.screenshot)
        finish(0 if saved else 1)

    def finish(rc: int) -> None:
        status["rc"] = rc
        win.close()
        app.quit()

    QTimer.singleShot(0, build)
    app.exec()
    _join_background_jobs()
    return status["rc"]


def _join_background_jobs() -> None:
    """A job thread still running when Python tears down could be cut off mid-step, so
    wait for every job (the device probe may still be importing torch when a quick
    --screenshot run quits)."""
    worker_mod = sys.modules.get("cellseg_gui.workers.job_worker")
    if worker_mod is not None:
        worker_mod.stop_all(30000)


if __name__ == "__main__":
    raise SystemExit(main())
