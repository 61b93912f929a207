"""The real engine (core.training.train.fit) through the real worker, on synthetic samples:
steps reach the GUI thread, and Stop ends a run within 2 seconds keeping the best model."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from cellseg_gui.core.config import TrainConfig  # noqa: E402
from cellseg_gui.core.data.dataset import Sample  # noqa: E402
from cellseg_gui.core.events import CANCELLED  # noqa: E402
from cellseg_gui.core.jobs import CancelToken  # noqa: E402
from cellseg_gui.workers.job_worker import JobWorker  # noqa: E402


def samples(n=4, size=96):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        t = np.zeros((size, size), np.uint8)
        t[10:40, 10:40] = 1
        t[50:80, 45:90] = 1
        img = (t * 0.7 + rng.normal(0, 0.2, t.shape)).astype(np.float32)[None]
        out.append(Sample(name=f"s{i}", image=img, target=t, n_classes=2,
                          image_path=Path(f"s{i}.tif"), mask_path=None, sha256=str(i)))  # fmt: skip
    return out


def tiny_cfg(**kw):
    cfg = TrainConfig(
        crop=64, batch_size=2, epochs=1000, patience=0, device="cpu", steps_per_epoch=3, tile=128
    )
    cfg.model.hidden, cfg.model.depth, cfg.model.n_classes = 4, 2, 2
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_stop_ends_a_real_run_within_two_seconds_and_keeps_the_best_model(qtbot, tmp_path):
    from cellseg_gui.core.training.train import fit

    token = CancelToken()
    out = tmp_path / "m.cellseg"
    data, cfg = samples(), tiny_cfg()
    w = JobWorker(
        lambda: fit(data, cfg, cancel=token, val_names=["s3"], out_path=out),
        token=token,
        torch_threads=1,
    )
    epochs = []
    w.epoch.connect(epochs.append)
    w.start()
    qtbot.waitUntil(lambda: len(epochs) >= 2, timeout=60000)
    t0 = time.monotonic()
    with qtbot.waitSignal(w.finished, timeout=5000) as fin:
        w.cancel()
    assert time.monotonic() - t0 < 2.0
    assert fin.args[0].reason == CANCELLED
    assert fin.args[0].bundle_path and out.is_file()
    assert w.wait(5000)


@pytest.fixture
def dataset(tmp_path):
    """The synthetic samples as real files (16-bit images, 0/1 masks) and the project's
    own pairs, so the jobs load them through core.data.dataset as the window does."""
    import tifffile

    from cellseg_gui.core.data.dataset import ImagePair

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    pairs = []
    for s in samples():
        image, mask = tmp_path / "images" / f"{s.name}.tif", tmp_path / "masks" / f"{s.name}.tif"
        tifffile.imwrite(image, np.clip(s.image[0] * 20000 + 20000, 0, 65535).astype(np.uint16))
        tifffile.imwrite(mask, s.target)
        pairs.append(ImagePair(s.name, image, mask))
    return pairs


def test_lr_job_draws_the_finder_curve(qtbot, dataset):
    from cellseg_gui.app.training_jobs import lr_job
    from cellseg_gui.widgets.lr_plot import LRPlot

    token = CancelToken()
    plot = LRPlot()
    qtbot.addWidget(plot)
    w = JobWorker(lr_job(dataset, tiny_cfg(), token), token=token, torch_threads=1)
    w.lrProbe.connect(plot.add_probe)
    w.finished.connect(lambda ev: plot.set_result(ev.result))
    with qtbot.waitSignal(w.done, timeout=120000):
        w.start()
    assert w.result.ok, w.result.message
    plot.redraw()
    assert plot.point_count() > 10 and plot.suggested and plot.use_button.isEnabled()


def test_overfit_job_reports_a_result(qtbot, dataset):
    from cellseg_gui.app.training_jobs import overfit_job

    token = CancelToken()
    w = JobWorker(
        overfit_job(dataset[0], tiny_cfg(), token, max_steps=60), token=token, torch_threads=1
    )
    with qtbot.waitSignal(w.done, timeout=120000):
        w.start()
    assert w.result.ok, w.result.message
    assert {"passed", "jaccard", "steps"} <= set(w.result.result)
