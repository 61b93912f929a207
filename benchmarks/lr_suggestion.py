"""Does the learning-rate finder's suggestion earn its place? For each data set, sweep the
learning rate on its training split (as Find LR does), then train for the same short
budget with the suggestion and with the default learning rate, and score the validation
split (foreground Jaccard, mean over images). Repeats with seeds 0..N-1 and prints one
JSON line per data set (medians and ranges) and a summary line.

Data: usiigaci-phc (set01..set45 / set46..set50), isbi2012-em (00..23 / 24..29), and the
built-in synthetic sample (cells_01..08 / 09..12; 13 and 14 have no mask).

    python benchmarks/lr_suggestion.py [--minutes 2] [--runs 2] [--threads 1]
        [--only usiigaci-phc]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from accuracy import DEFAULT_DATA  # noqa: E402

from cellseg_gui.core.config import TrainConfig  # noqa: E402
from cellseg_gui.core.data.dataset import find_pairs, load_samples  # noqa: E402
from cellseg_gui.core.events import Finished  # noqa: E402
from cellseg_gui.core.training.lrfind import lr_find  # noqa: E402
from cellseg_gui.core.training.train import fit  # noqa: E402


def _sets() -> dict[str, tuple[Path, list[str]]]:
    from cellseg_gui.core.data.sample import make_sample

    sample = make_sample(Path(tempfile.mkdtemp()) / "sample")
    return {
        "usiigaci-phc": (DEFAULT_DATA / "usiigaci-phc", [f"set{i}" for i in range(46, 51)]),
        "isbi2012-em": (DEFAULT_DATA / "isbi2012-em", [f"{i:02d}" for i in range(24, 30)]),
        "sample": (sample, [f"cells_{i:02d}" for i in range(9, 13)]),  # 13, 14: no mask
    }


def _final(events) -> Finished:
    fin = None
    for ev in events:
        if isinstance(ev, Finished):
            fin = ev
    assert fin is not None
    return fin


def one(samples, val: list[str], cfg: TrainConfig, lr: float) -> float:
    run = TrainConfig.from_dict(cfg.to_dict())
    run.lr = lr
    fin = _final(fit(samples, run, val_names=val))
    if fin.reason not in ("done", "early_stop"):
        return 0.0  # a run that diverged scores nothing
    return float(fin.result.get("best_val_fg_jaccard") or 0.0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--only", action="append", default=[])
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    summary = {}
    for name, (folder, val) in _sets().items():
        if a.only and name not in a.only:
            continue
        if not (folder / "images").is_dir():
            print(json.dumps({"data": name, "skipped": f"{folder} is absent"}))
            continue
        base = TrainConfig.for_device("cpu")
        base.minutes, base.epochs = a.minutes, 0
        samples, _ = load_samples(
            find_pairs(folder), mask_mode=base.mask_mode, boundary_width=base.boundary_width,
            norm=base.norm,
        )  # fmt: skip
        train = [s for s in samples if s.name not in val]
        rows = []
        for seed in range(a.runs):
            cfg = TrainConfig.from_dict(base.to_dict())
            cfg.seed = seed
            t0 = time.perf_counter()
            sweep = _final(lr_find(train, cfg)).result
            sweep_s = time.perf_counter() - t0
            suggested = float(sweep["suggested_lr"])
            rows.append(
                {
                    "seed": seed,
                    "suggested_lr": suggested,
                    "sweep_seconds": round(sweep_s, 1),
                    "val_fg_jaccard_suggested": one(samples, val, cfg, suggested),
                    "val_fg_jaccard_default": one(samples, val, cfg, base.lr),
                }
            )
            print(json.dumps({"data": name, **rows[-1]}), file=sys.stderr, flush=True)

        def stat(key: str, rows: list[dict] = rows) -> dict:
            vals = [r[key] for r in rows]
            return {"median": round(statistics.median(vals), 4), "min": round(min(vals), 4),
                    "max": round(max(vals), 4)}  # fmt: skip

        out = {
            "data": name, "minutes": a.minutes, "runs": len(rows), "default_lr": base.lr,
            "suggested_lr": stat("suggested_lr"),
            "val_fg_jaccard_suggested": stat("val_fg_jaccard_suggested"),
            "val_fg_jaccard_default": stat("val_fg_jaccard_default"),
        }  # fmt: skip
        print(json.dumps(out), flush=True)
        summary[name] = out
    s, d = "val_fg_jaccard_suggested", "val_fg_jaccard_default"
    verdict = {
        n: {
            "suggested_minus_default": round(o[s]["median"] - o[d]["median"], 4),
            "default_spread": round(o[d]["max"] - o[d]["min"], 4),
        }
        for n, o in summary.items()
    }
    print(json.dumps({"benchmark": "lr_suggestion", "threads": torch.get_num_threads(),
                      "verdict": verdict}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
