"""One prepared check of the CUDA path, for a lent GPU machine (prints one JSON line).

Device auto-selection, the precision `fit` picks, crops/s of fit in fp32 / bf16 / fp16,
the LR finder and the overfit check on the GPU, and tiled prediction of an 8192^2 image.
Uses the built-in sample (generated into a temporary folder), so it needs no shared data.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _fit_rate(samples, cfg, fit) -> dict:
    started, last, first_t = None, None, None
    n = 0
    for ev in fit(samples, cfg):
        name = type(ev).__name__
        if name == "Started":
            started = ev
        elif name == "StepEnded":
            n += 1
            if n == 5:
                first_t = ev.seconds  # skip warm-up steps
            last = ev
        elif name == "Finished":
            fin = ev
    steps = n - 5
    rate = steps * cfg.batch_size / (last.seconds - first_t) if last and steps > 0 else None
    return {
        "device": started.device,
        "precision": started.precision,
        "crops_per_s": rate,
        "reason": fin.reason,
        "message": fin.message[:200],
        "best_val_fg_jaccard": fin.result.get("best_val_fg_jaccard"),
    }


def main() -> None:
    import numpy as np
    import torch

    from cellseg_gui.core.config import TrainConfig
    from cellseg_gui.core.data.dataset import find_pairs, load_samples
    from cellseg_gui.core.data.sample import make_sample
    from cellseg_gui.core.model.predict import predict_tiled, select_device
    from cellseg_gui.core.model.unet import build_model
    from cellseg_gui.core.training.lrfind import lr_find
    from cellseg_gui.core.training.overfit import overfit_check
    from cellseg_gui.core.training.train import fit

    out: dict = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    dev = select_device("auto")
    out["auto_device"] = str(dev)
    if dev.type != "cuda":
        print(json.dumps(out))
        return
    out["gpu"] = torch.cuda.get_device_name(0)
    root = make_sample(Path(tempfile.mkdtemp()) / "sample")
    samples, errors = load_samples(find_pairs(root))
    out["samples"] = len(samples)

    base = TrainConfig.for_device("cuda")
    base.epochs, base.steps_per_epoch, base.patience = 2, 40, 0
    for amp in ("off", "bf16", "fp16", "auto"):
        cfg = TrainConfig.from_dict(base.to_dict())
        cfg.amp = amp
        out[f"fit_{amp}"] = _fit_rate(samples, cfg, fit)

    t = time.time()
    fin = None
    for ev in lr_find(samples, base, steps=60):
        fin = ev
    out["lr_find"] = {
        "reason": fin.reason,
        "suggested_lr": fin.result.get("suggested_lr"),
        "seconds": time.time() - t,
    }

    t = time.time()
    for ev in overfit_check(samples[0], TrainConfig.for_device("cuda")):
        fin = ev
    out["overfit"] = {
        "passed": fin.result.get("passed"),
        "jaccard": fin.result.get("jaccard"),
        "steps": fin.result.get("steps"),
        "seconds": time.time() - t,
    }

    model = build_model(base.model).to(dev).eval()
    img = np.random.default_rng(0).random((1, 8192, 8192), dtype=np.float32)
    for amp in (False, True):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t = time.time()
        pred = predict_tiled(model, img, tile=1024, batch_size=8, device=dev, amp=amp)
        torch.cuda.synchronize()
        out[f"predict_8192_amp_{amp}"] = {
            "seconds": time.time() - t,
            "gpu_peak_gb": torch.cuda.max_memory_allocated() / 2**30,
            "shape": list(pred.labels.shape),
        }
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
