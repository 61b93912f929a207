"""GUI start-up and image-switch figures, printed as one JSON line.

startup_median_s: from just before the process is spawned to the window on screen (its
shell painted at the first event-loop turn after show()), median of --runs.
ready_median_s: to the complete window (canvas, docks and saved layout built, painted).
switch_*_s: median time of show_image() plus the
repaint for a 1024^2 and an 8192^2 16-bit image (read from disk, contrast, overlays).
Run: python benchmarks/gui_startup.py [--runs 5] [--no-large]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def startup(runs: int, settings_dir: str) -> tuple[list[float], bool]:
    env = dict(os.environ, CELLSEG_STARTUP_PROBE="1", CELLSEG_SETTINGS_DIR=settings_dir)
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    times, ready, torch_seen = [], [], False
    for _ in range(runs):
        t0 = time.time()
        out = subprocess.run(
            [sys.executable, "-m", "cellseg_gui"], cwd=ROOT, env=env, capture_output=True,
            text=True, timeout=120, check=True,
        )  # fmt: skip
        info = json.loads(out.stdout.strip().splitlines()[-1])
        times.append(info["shown"] - t0)
        ready.append(info["ready"] - t0)
        torch_seen |= bool(info["torch_imported"])
    return times, ready, torch_seen


def switch_times(sizes: list[int], repeats: int = 3) -> dict[str, float]:
    import numpy as np

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("CELLSEG_NO_WARMUP", "1")
    from PySide6.QtWidgets import QApplication

    from cellseg_gui.app.main_window import MainWindow
    from cellseg_gui.core.data.maskwrite import write_mask

    app = QApplication.instance() or QApplication([])
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "images").mkdir()
        (folder / "masks").mkdir()
        for n in sizes:
            yy, xx = np.mgrid[:n, :n].astype(np.uint16)
            img = ((yy * 7 + xx * 3) % 4096 + 500).astype(np.uint16)
            mask = (((yy // 64) + (xx // 64)) % 2).astype(np.uint8)
            for k in "ab":
                write_mask(folder / "images" / f"s{n}_{k}.tif", img)
                write_mask(folder / "masks" / f"s{n}_{k}.tif", mask)
            del yy, xx, img, mask
        win = MainWindow()
        win.resize(1400, 900)
        win.show()
        app.processEvents()
        win.open_project(folder)
        for n in sizes:
            ts = []
            for i in range(repeats * 2):
                name = f"s{n}_{'ab'[i % 2]}"
                t = time.perf_counter()
                win.show_image(name)
                win.repaint()
                app.processEvents()
                ts.append(time.perf_counter() - t)
            out[f"switch_{n}_s"] = round(statistics.median(ts), 3)
        win.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-large", action="store_true", help="skip the 8192^2 image")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as settings_dir:
        times, ready, torch_seen = startup(args.runs, settings_dir)
    result = {
        "benchmark": "gui_startup",
        "startup_median_s": round(statistics.median(times), 3),
        "startup_runs_s": [round(t, 3) for t in times],
        "ready_median_s": round(statistics.median(ready), 3),
        "torch_imported_at_show": torch_seen,
        "cpu_count": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    result.update(switch_times([1024] if args.no_large else [1024, 8192]))
    result["targets"] = {"startup_median_s": "< 1", "torch_imported_at_show": "== false"}
    result["report"] = ["ready_median_s"] + [k for k in result if k.startswith("switch_")]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
