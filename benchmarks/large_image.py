"""A very large image through ``cellseg predict``'s band path: time and peak memory beyond
the image itself, printed as ONE JSON line.

The image is a real phase-contrast field (usiigaci set46, 1022 x 1024) repeated to
SIZE x SIZE (uint16), so the model finds real cells everywhere and the watershed works as
hard as on real data. The model is a trained bundle (``--model``). The case runs in a
subprocess: after the image is read, the kernel's RSS high-water mark is reset
(``predict.py``'s method) and ``peak_extra_mb`` is the high-water mark above the RSS at
that moment, i.e. what predicting the cells and writing them needed on top of the input.

    python benchmarks/large_image.py --model M.cellseg [--size 20000] [--classes]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from predict import _reset_peak, _status_kb  # noqa: E402

FIELD = ROOT.parent / "shared" / "data" / "usiigaci-phc" / "images" / "set46.tif"


def run_case(model: str, size: int, cells: bool) -> dict:
    import numpy as np

    from cellseg_gui.core.data.imageio import read_image
    from cellseg_gui.core.model.bands import predict_bands, write_bands
    from cellseg_gui.core.model.bundle import load_predictor

    predictor = load_predictor(model, "cpu")
    field = read_image(FIELD)
    reps = (-(-size // field.shape[0]), -(-size // field.shape[1]))
    raw = np.ascontiguousarray(np.tile(field, reps)[:size, :size])
    del field
    reset = _reset_peak()
    base = _status_kb("VmRSS")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.tif"
        bands = predict_bands(predictor, raw, cells=cells)
        stats = write_bands(out, bands, raw.shape, cells=cells)
        file_mb = out.stat().st_size / 1e6
    seconds = time.perf_counter() - t0
    peak = _status_kb("VmHWM")
    return {
        "size": size,
        "megapixels": round(size * size / 1e6, 1),
        "image_mb": round(raw.nbytes / 1e6),
        "cells": int(stats["cells"]) if cells else None,
        "foreground": round(stats["foreground"], 3),
        "seconds": round(seconds, 1),
        "seconds_per_megapixel": round(seconds / (size * size / 1e6), 3),
        "peak_extra_mb": round((peak - base) / 1024) if reset else None,
        "output_mb": round(file_mb, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--classes", action="store_true", help="class map only, no cells")
    ap.add_argument("--case", action="store_true", help=argparse.SUPPRESS)  # internal
    a = ap.parse_args(argv)
    if a.case:
        print(json.dumps(run_case(a.model, a.size, not a.classes)))
        return 0
    cmd = [sys.executable, __file__, "--case", "--model", a.model, "--size", str(a.size)]
    if a.classes:
        cmd.append("--classes")
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        sys.stderr.write(res.stderr)
        return res.returncode
    row = json.loads(res.stdout.strip().splitlines()[-1])
    print(json.dumps({"benchmark": "large_image", "target_peak_extra_mb": 2048, **row}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
