"""Event-loop latency while training on the CPU, printed as ONE JSON line.

A precise 10 ms QTimer runs on the GUI thread; each tick records how late it fired
(interval minus 10 ms). Meanwhile the real JobWorker trains a small U-Net in its thread
and the real Training panel and plots consume its signals, as in the window. The target
is p99 <= 50 ms: the window keeps answering clicks and brush strokes during a run.

Training data: the sample project (core/data/sample.py) through core.data.dataset and core.training.train.fit
when they exist; otherwise synthetic blobs and a plain training loop of core.model.unet (reported
as "engine": "fallback").

    python benchmarks/ui_latency.py [--seconds 20] [--crop 128] [--hidden 16] [--batch 4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _synthetic_samples(n: int = 6, size: int = 256) -> list:
    """Blobs on noise, shaped like core.data.dataset.Sample (name, image, target, n_classes)."""
    from types import SimpleNamespace

    import numpy as np

    rng = np.random.default_rng(0)
    out = []
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        target = np.zeros((size, size), np.uint8)
        for _ in range(12):
            cy, cx, r = rng.integers(20, size - 20, 2).tolist() + [int(rng.integers(6, 14))]
            target[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
        image = (target * 0.6 + rng.normal(0, 0.3, target.shape)).astype(np.float32)[None]
        out.append(SimpleNamespace(name=f"s{i}", image=image, target=target, n_classes=2,
                                   image_path=None, mask_path=None, sha256=str(i)))  # fmt: skip
    return out


def _fit_factory(args, token):
    """The real engine: on the sample project where core.data.sample and core.data.dataset exist,
    else on synthetic samples. None where core.training.train is not there."""
    try:
        from cellseg_gui.core.training.train import fit  # noqa: F401 - only checks it exists
    except ImportError:
        return None, None
    from cellseg_gui.core.config import TrainConfig

    folder = Path(tempfile.mkdtemp(prefix="cellseg-latency-"))
    cfg = TrainConfig()
    cfg.model.hidden, cfg.crop, cfg.batch_size = args.hidden, args.crop, args.batch
    cfg.epochs, cfg.patience, cfg.minutes, cfg.device = 1000, 0, None, "cpu"
    try:
        from cellseg_gui.core.data import sample as S
        from cellseg_gui.core.data.dataset import find_pairs, load_samples

        project_dir = Path(S.make_sample(folder / "sample"))
        data = "sample project"
    except (ImportError, AttributeError, TypeError):
        project_dir, data = None, "synthetic"

    def run():
        from cellseg_gui.core.training.train import fit

        if project_dir is not None:
            samples, _ = load_samples(
                find_pairs(project_dir), mask_mode=cfg.mask_mode, norm=cfg.norm
            )
        else:
            samples = _synthetic_samples()
        cfg.model.n_classes = max(s.n_classes for s in samples)
        yield from fit(samples, cfg, cancel=token, out_path=folder / "m.cellseg")

    return run, data


def _fallback_factory(args, token):
    def run():
        import numpy as np
        import torch

        from cellseg_gui.core.config import ModelConfig
        from cellseg_gui.core.events import CANCELLED, Finished, Started, StepEnded
        from cellseg_gui.core.model.unet import build_model

        model = build_model(ModelConfig(hidden=args.hidden, depth=4, n_classes=3))
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        rng = np.random.default_rng(0)
        yield Started(job="fit", device="cpu", precision="fp32")
        t0, step = time.monotonic(), 0
        while not token.cancelled:
            x = torch.from_numpy(rng.random((args.batch, 1, args.crop, args.crop), np.float32))
            y = torch.from_numpy(rng.integers(0, 3, (args.batch, args.crop, args.crop)))
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            yield StepEnded(0, step, step, float(loss.detach()), 1e-3, time.monotonic() - t0)
            step += 1
        yield Finished(CANCELLED)

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: cores - 1)")
    ap.add_argument("--switch-ms", type=float, default=None, help="sys.setswitchinterval, in ms")
    args = ap.parse_args(argv)
    if args.switch_ms:
        sys.setswitchinterval(args.switch_ms / 1000)

    import numpy as np
    from PySide6.QtCore import QElapsedTimer, Qt, QTimer
    from PySide6.QtWidgets import QApplication

    from cellseg_gui.core.jobs import CancelToken
    from cellseg_gui.widgets.training_panel import TrainingPanel
    from cellseg_gui.widgets.training_plots import TrainingPlots
    from cellseg_gui.workers.job_worker import JobWorker, default_torch_threads

    app = QApplication.instance() or QApplication([])
    panel, plots = TrainingPanel(), TrainingPlots()
    panel.show()
    plots.show()

    token = CancelToken()
    factory, data = _fit_factory(args, token)
    engine = "fit"
    if factory is None:
        factory, engine, data = _fallback_factory(args, token), "fallback", "random"
    threads = args.threads or default_torch_threads()
    worker = JobWorker(factory, token=token, name="latency", torch_threads=threads)
    steps = {"n": 0, "first": None}

    def on_steps(batch):
        steps["n"] += len(batch)
        if steps["first"] is None:
            steps["first"] = time.monotonic()
        panel.on_steps(batch)
        plots.add_steps(batch)

    worker.step.connect(on_steps)
    worker.epoch.connect(plots.add_epoch)
    worker.started.connect(panel.on_started)

    delays: list[float] = []
    clock = QElapsedTimer()
    state = {"last": None, "measuring": False}

    def tick() -> None:
        now = clock.nsecsElapsed() / 1e6
        if state["last"] is not None and state["measuring"]:
            delays.append(max(0.0, now - state["last"] - 10.0))
        state["last"] = now

    probe = QTimer()
    probe.setTimerType(Qt.TimerType.PreciseTimer)
    probe.setInterval(10)
    probe.timeout.connect(tick)
    clock.start()
    probe.start()
    worker.start()
    t_start = time.monotonic()
    # Measure once training steps flow (model built, torch loaded), for --seconds.
    while time.monotonic() - t_start < 300:
        app.processEvents()
        if steps["first"] is not None and not state["measuring"]:
            state["measuring"] = True
            t_measure = time.monotonic()
        if state["measuring"] and time.monotonic() - t_measure >= args.seconds:
            break
        if not worker.is_running():
            break
        time.sleep(0.001)
    n_steps = steps["n"]
    worker.cancel()
    while worker.is_running():
        app.processEvents()
        time.sleep(0.01)
    probe.stop()
    d = np.asarray(delays or [float("nan")])
    print(
        json.dumps(
            {
                "benchmark": "ui_latency",
                "engine": engine,
                "data": data,
                "seconds": args.seconds,
                "ticks": len(delays),
                "train_steps": n_steps,
                "torch_threads": threads,
                "switch_interval_ms": sys.getswitchinterval() * 1000,
                "cores": os.cpu_count(),
                "crop": args.crop,
                "hidden": args.hidden,
                "batch": args.batch,
                "p50_ms": round(float(np.percentile(d, 50)), 2),
                "p99_ms": round(float(np.percentile(d, 99)), 2),
                "max_ms": round(float(d.max()), 2),
                "targets": {"p99_ms": "<= 50"},
                "report": ["p50_ms", "max_ms", "train_steps"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
