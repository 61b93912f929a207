"""Entry point ``cellseg-gui [FOLDER_OR_PROJECT] [--sample] [--screenshot PNG]``.

Start-up speed matters (the window must show in under a second): nothing here imports
torch; the project is opened after the window is on screen.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

_T0 = time.time()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cellseg-gui", description="Segment microscopy images.")
    p.add_argument("path", nargs="?", help="folder of images (images/ + masks/) or project file")
    p.add_argument("--sample", action="store_true", help="open the built-in synthetic sample")
    p.add_argument("--screenshot", metavar="PNG", help="save a picture of the window and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("cellseg-gui")
    app.setOrganizationName("cellseg_gui")
    app.setDesktopFileName("cellseg-gui")
    from PySide6.QtGui import QIcon

    from cellseg_gui import resource_path

    icon = resource_path("cellseg-gui.svg")
    if icon.exists():
        app.setWindowIcon(QIcon(str(icon)))
    from cellseg_gui.app.main_window import MainWindow

    win = MainWindow()
    win.show()
    status = {"rc": 0}

    if os.environ.get("CELLSEG_STARTUP_PROBE"):
        # benchmarks/gui_startup.py: report when the window is on screen, then quit.
        def probe() -> None:
            shown = time.time()
            info = {"shown": shown, "t0": _T0, "torch_imported": "torch" in sys.modules,
                    "scipy_imported": "scipy" in sys.modules}  # fmt: skip
            print(json.dumps(info), flush=True)
            app.quit()

        QTimer.singleShot(0, probe)
        app.exec()
        return 0

    def load() -> None:
        ok = True
        if args.sample:
            ok = win.open_sample()
        elif args.path:
            ok = win.open_project(args.path)
        if args.screenshot:
            QTimer.singleShot(200, shoot if ok else lambda: finish(1))

    def shoot() -> None:
        app.processEvents()
        saved = win.screenshot(args.screenshot)
        finish(0 if saved else 1)

    def finish(rc: int) -> None:
        status["rc"] = rc
        win.close()
        app.quit()

    QTimer.singleShot(0, load)
    app.exec()
    _join_background_jobs()
    return status["rc"]


def _join_background_jobs() -> None:
    """A QThread still running when Python tears down aborts the process, so wait for
    every job (the device probe may still be importing torch when a quick --screenshot
    run quits)."""
    worker_mod = sys.modules.get("cellseg_gui.workers.job_worker")
    if worker_mod is not None:
        worker_mod.stop_all(30000)


if __name__ == "__main__":
    raise SystemExit(main())
