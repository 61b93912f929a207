"""Crops per second of ``fit`` against a bare torch loop, same process, same model,
batch and crop size; prints one JSON line.

Ratios, not absolute numbers, are the figures: the machine may be shared. Each
configuration runs ``--repeats`` times, interleaved with the bare loop, and the medians
of the per-step rates are compared (one step slowed by another process moves a median
little). fit's per-step times come from its StepEnded timestamps inside an epoch
(validation and start-up excluded, as the bare loop has neither). Both run the U-Net at
full resolution. Also fp32 vs bf16 autocast on this CPU (bare loops, batch 2 of
128-pixel crops: bf16 can be very slow without AMX).

    python benchmarks/train_throughput.py [--hidden 16 --depth 4 --crop 256 --batch 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cellseg_gui.core.config import AugmentConfig, ModelConfig, TrainConfig  # noqa: E402
from cellseg_gui.core.data.dataset import Sample  # noqa: E402
from cellseg_gui.core.events import StepEnded  # noqa: E402
from cellseg_gui.core.model.predict import tune_cpu_allocator  # noqa: E402
from cellseg_gui.core.model.unet import build_model  # noqa: E402
from cellseg_gui.core.training.train import fit  # noqa: E402


def synthetic(n: int, size: int, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = (rng.random((size // 16, size // 16)) > 0.6).astype(np.uint8)
        t = np.kron(t, np.ones((16, 16), np.uint8))
        img = (t + rng.normal(0, 0.3, t.shape)).astype(np.float32)[None]
        out.append(Sample(f"s{i}", img, t, None, None, f"{i}", 2))
    return out


def bare_loop(samples, cfg: TrainConfig, steps: int, precision: str = "fp32") -> list[float]:
    """The reference: random crops by slicing, forward, CE(+Dice as fit), AdamW step.
    Returns each step's crops per second (the first step, allocator warm-up, dropped)."""
    torch.manual_seed(0)
    mc = ModelConfig(**{**cfg.model.to_dict(), "n_classes": 2})
    model = build_model(mc).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    imgs = [torch.from_numpy(s.image) for s in samples]
    tgts = [torch.from_numpy(s.target).long() for s in samples]
    c, g = cfg.crop, torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        xs, ys = [], []
        for _ in range(cfg.batch_size):
            i = int(torch.randint(len(imgs), (1,), generator=g))
            h, w = tgts[i].shape
            y0 = int(torch.randint(h - c + 1, (1,), generator=g))
            x0 = int(torch.randint(w - c + 1, (1,), generator=g))
            xs.append(imgs[i][:, y0 : y0 + c, x0 : x0 + c])
            ys.append(tgts[i][y0 : y0 + c, x0 : x0 + c])
        x, y = torch.stack(xs), torch.stack(ys)
        ctx = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if precision == "bf16"
            else torch.autocast("cpu", enabled=False)
        )
        with ctx:
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        if cfg.dice:
            p = logits.float().softmax(1)[:, 1:]
            oh = F.one_hot(y, 2).permute(0, 3, 1, 2)[:, 1:].float()
            loss = loss + (1 - (2 * (p * oh).sum() + 1) / (p.sum() + oh.sum() + 1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        float(loss.detach())
        times.append(time.perf_counter() - t)
    return [cfg.batch_size / t for t in times[1:]]


def fit_rate(samples, cfg: TrainConfig, steps: int) -> list[float]:
    cfg.steps_per_epoch = steps
    cfg.epochs = 1
    events = list(fit(samples, cfg, val_names=["val"]))
    stamps = [e.seconds for e in events if isinstance(e, StepEnded)]
    if len(stamps) < 2:
        raise RuntimeError(f"fit did not run: {events[-1]}")
    # StepEnded.seconds is taken after each step: per-step rates over steps 2..n
    return [cfg.batch_size / (b - a) for a, b in zip(stamps, stamps[1:], strict=False)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    # fit sets this process-wide on its first CPU run; set it first so every bare loop,
    # not only those after the first fit, runs with the same allocator
    tune_cpu_allocator()
    samples = synthetic(4, max(512, a.crop * 2))
    val = synthetic(1, 64, seed=1)
    val[0].name = "val"

    def cfg(augment: AugmentConfig) -> TrainConfig:
        return TrainConfig(
            # full resolution in both loops (auto could pick another architecture)
            model=ModelConfig(hidden=a.hidden, depth=a.depth, downsample=1), crop=a.crop,
            batch_size=a.batch, augment=augment, device="cpu", amp="off", patience=0,
            foreground_bias=0.0, schedule="constant",
        )  # fmt: skip

    data = samples + val
    bare, plain, aug, bf16 = [], [], [], []
    # per-step rates pooled over the interleaved repeats; the median step shrugs off the
    # occasional step slowed by another process on a shared machine
    for _ in range(a.repeats):
        bare += bare_loop(samples, cfg(AugmentConfig.none()), a.steps + 1)
        plain += fit_rate(data, cfg(AugmentConfig.none()), a.steps + 1)
        aug += fit_rate(data, cfg(AugmentConfig.all()), a.steps + 1)
    # bf16 vs fp32 on a small batch: without AMX / AVX512-BF16, bf16 convolutions can run
    # 20x slower than fp32 (0.13 against 3 crops/s here), so the full batch would take
    # minutes per step
    small = cfg(AugmentConfig.none())
    small.crop, small.batch_size = 128, 2
    med = statistics.median
    fp32_small = med(bare_loop(samples, small, 4))
    bf16.append(med(bare_loop(samples, small, 4, "bf16")) / fp32_small)
    print(
        json.dumps(
            {
                "benchmark": "train_throughput",
                "model": f"hidden {a.hidden} depth {a.depth}",
                "crop": a.crop,
                "batch": a.batch,
                "repeats": a.repeats,
                "bare_crops_per_s": round(med(bare), 3),
                "fit_crops_per_s": round(med(plain), 3),
                "fit_all_aug_crops_per_s": round(med(aug), 3),
                "ratio_no_aug": round(med(plain) / med(bare), 3),
                "ratio_all_aug": round(med(aug) / med(bare), 3),
                "bf16_over_fp32_bare": round(med(bf16), 3),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "threads": torch.get_num_threads(),
                "targets": {"ratio_no_aug": ">= 0.97", "ratio_all_aug": ">= 0.9"},
                "report": ["bare_crops_per_s", "fit_crops_per_s", "bf16_over_fp32_bare"],
            }
        )
    )


if __name__ == "__main__":
    main()
