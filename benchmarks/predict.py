"""Tiled prediction on the CPU: time and peak extra memory, printed as ONE JSON line.

Cases: 1024^2 and 8192^2 single-channel images, U-Net hidden 16 and 32 (depth 4, 3
classes), tile 512, overlap 64, batch 4, probabilities returned. Each case runs in its own
subprocess so its peak memory is measured cleanly: after the model and the image exist,
the kernel's RSS high-water mark is reset (``/proc/self/clear_refs``), and the reported
``peak_extra_mb`` is ``VmHWM - VmRSS`` around the prediction call, i.e. what prediction
itself needed on top of the input. Where the whole image fits one forward (1024^2) the
ratio of tiled time to a single whole-image forward is reported too (medians of
``--repeats`` runs; the 8192^2 cases run once, they take minutes).

    python benchmarks/predict.py [--sizes 1024 8192] [--hidden 16 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WHOLE_LIMIT = 2048  # largest side predicted in one forward for the ratio


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def run_case(size: int, hidden: int, repeats: int) -> dict:
    """One case, in this (fresh) process."""
    import numpy as np
    import torch

    from cellseg_gui.core.config import ModelConfig
    from cellseg_gui.core.model.predict import predict_tiled, predict_whole
    from cellseg_gui.core.model.unet import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(in_channels=1, n_classes=3, hidden=hidden, depth=4)).eval()
    # Warm-up on a small image: first-call allocator and kernel set-up are not prediction.
    predict_tiled(model, np.zeros((1, 256, 256), np.float32), tile=512)
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, size, size), dtype=np.float32)
    reset_ok = _reset_peak()
    base = _status_kb("VmRSS")
    t0 = time.perf_counter()
    pred = predict_tiled(model, image, tile=512, overlap=64, batch_size=4, return_probs=True)
    first = time.perf_counter() - t0
    peak = _status_kb("VmHWM")
    assert pred.probs is not None and pred.probs.shape == (3, size, size)
    del pred
    out = {
        "size": size,
        "hidden": hidden,
        "peak_extra_mb": round((peak - base) / 1024, 1),
        "peak_reset": reset_ok,
        "tiled_s_runs": [round(first, 3)],
    }
    if size <= WHOLE_LIMIT:
        for _ in range(repeats - 1):
            t0 = time.perf_counter()
            predict_tiled(model, image, tile=512, overlap=64, batch_size=4)
            out["tiled_s_runs"].append(round(time.perf_counter() - t0, 3))
        whole = []
        predict_whole(model, image)  # warm-up at this size
        for _ in range(repeats):
            t0 = time.perf_counter()
            predict_whole(model, image)
            whole.append(round(time.perf_counter() - t0, 3))
        out["whole_s_runs"] = whole
        out["whole_s"] = statistics.median(whole)
    out["tiled_s"] = statistics.median(out["tiled_s_runs"])
    out["mpix_per_s"] = round(size * size / 1e6 / out["tiled_s"], 3)
    if "whole_s" in out:
        out["tiled_over_whole"] = round(out["tiled_s"] / out["whole_s"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 8192])
    ap.add_argument("--hidden", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--case", nargs=2, type=int, help=argparse.SUPPRESS)  # internal
    args = ap.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case[0], args.case[1], args.repeats)))
        return 0
    import torch

    cases = []
    for size in args.sizes:
        for hidden in args.hidden:
            proc = subprocess.run(
                [sys.executable, __file__, "--case", str(size), str(hidden)]
                + ["--repeats", str(args.repeats)],
                capture_output=True,
                text=True,
                env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
            )
            if proc.returncode != 0:
                cases.append({"size": size, "hidden": hidden, "error": proc.stderr[-500:]})
            else:
                cases.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    result = {
        "benchmark": "predict_tiled_cpu",
        "tile": 512,
        "overlap": 64,
        "batch_size": 4,
        "depth": 4,
        "n_classes": 3,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "cases": cases,
        "peak_under_2gb_8192": all(
            c.get("peak_extra_mb", 1e9) < 2048 for c in cases if c.get("size") == 8192
        )
        if any(c.get("size") == 8192 for c in cases)
        else None,
    }
    if result["peak_under_2gb_8192"] is not None:
        result["targets"] = {"peak_under_2gb_8192": "== true"}
    # the table shows each case's time, memory and tiled/whole ratio, not every run
    result["report"] = [
        f"cases.{i}.{k}"
        for i, c in enumerate(cases)
        for k in ("tiled_s", "peak_extra_mb", "tiled_over_whole")
        if k in c
    ]
    print(json.dumps(result))
    return 0 if all("error" not in c for c in cases) else 1


if __name__ == "__main__":
    raise SystemExit(main())
