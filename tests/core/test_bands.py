"""Very large images: band by band gives the cells and classes of the whole-image path,
writes them into a tiled TIFF that reads back, and keeps only one band in memory."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from cellseg_gui.core.config import ModelConfig, NormConfig
from cellseg_gui.core.model import bands as B
from cellseg_gui.core.model.bundle import Bundle, make_meta
from cellseg_gui.core.scores.instances import score_instances


class _Brightness(torch.nn.Module):
    """A network that calls bright pixels 'cell': every pixel's answer is its own, so a
    band sees exactly what the whole image does and the two paths must agree."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cell = 12.0 * (x[:, :1] - 0.5)
        return torch.cat([torch.zeros_like(cell), cell, torch.full_like(cell, -20.0)], dim=1)


def _predictor() -> Bundle:
    cfg = ModelConfig(in_channels=1, n_classes=3, hidden=2, depth=2, downsample=1)
    meta = make_meta(
        cfg, mask_mode="instances", boundary_width=2, channels="grey",
        norm=NormConfig(low=1.0, high=99.8), name="bright",
        postprocess={"marker_threshold": 0.9, "min_size": 5, "chosen": "test"},
    )  # fmt: skip
    return Bundle(_Brightness(cfg), meta, torch.device("cpu"), path=None)  # type: ignore[arg-type]


def _discs(h: int = 1100, w: int = 700) -> np.ndarray:
    """Round cells, some of them lying across the band edges (multiples of 256 rows)."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:h, :w]
    img = rng.normal(300, 20, (h, w))
    centres = [(256, 100), (512, 350), (768, 600), (20, 20), (1090, 690)]
    centres += [tuple(rng.integers(0, (h, w))) for _ in range(40)]
    for cy, cx in centres:
        r = rng.integers(6, 30)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 3000
    return img.astype(np.uint16)


def test_bands_give_the_whole_image_cells_and_classes(tmp_path) -> None:
    pred = _predictor()
    raw = _discs()
    whole_cells, whole = pred.predict_cells(raw, tile=256)
    # a window of 256 rows + margins: five bands for 1100 rows
    got = list(B.predict_bands(pred, raw, cells=True, tile=256, margin=48, window_pixels=700 * 352))
    assert [b.start for b in got] == [0, 256, 512, 768, 1024] and got[-1].stop == 1100
    assert all(b.count == 5 for b in got)
    labels = np.concatenate([b.labels for b in got])
    cells = np.concatenate([b.cells for b in got])
    np.testing.assert_array_equal(labels, whole.labels)
    s = score_instances(whole_cells, cells)
    assert s.n_true == s.n_pred and s.ap(0.9) == 1.0, (s.n_true, s.n_pred, s.ap(0.9))
    assert cells.dtype == np.uint32 and sorted(np.unique(cells))[1:] == list(
        range(1, int(cells.max()) + 1)
    )  # ids unique over the image, 1..N

    target = tmp_path / "cells.tif"
    seen = []
    stats = B.write_bands(
        target, B.predict_bands(pred, raw, cells=True, tile=256, margin=48, window_pixels=700 * 352),
        raw.shape, cells=True, on_band=lambda b: seen.append(b.index),
    )  # fmt: skip
    assert seen == [0, 1, 2, 3, 4] and stats["cells"] == cells.max()
    back = tifffile.imread(target)
    np.testing.assert_array_equal(back, cells)
    assert [p.name for p in tmp_path.iterdir()] == ["cells.tif"]  # no temporary left


def test_a_stopped_band_run_leaves_no_file(tmp_path) -> None:
    pred = _predictor()
    raw = _discs()
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    target = tmp_path / "labels.tif"
    with pytest.raises((InterruptedError, ValueError, StopIteration, RuntimeError)):
        B.write_bands(
            target, B.predict_bands(pred, raw, cells=False, tile=256, margin=48,
                                    window_pixels=700 * 352, cancelled=stop),
            raw.shape, cells=False,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_only_images_above_the_limit_go_band_by_band() -> None:
    assert not B.needs_bands((7000, 7000))
    assert B.needs_bands((20000, 20000)) and B.needs_bands((20000, 20000, 3))


def test_the_windows_batch_refuses_an_image_above_the_limit_and_goes_on(tmp_path, monkeypatch):
    """Predict all in the window (core.model.batch) does not try a whole-image prediction of a
    huge image: that image gets one line naming the command that can, the next is done."""
    from cellseg_gui.core.events import Predicted
    from cellseg_gui.core.model.batch import BatchItem, predict_batch

    raw = _discs(300, 200)
    tifffile.imwrite(tmp_path / "huge.tif", np.tile(raw, (2, 2)))
    tifffile.imwrite(tmp_path / "small.tif", raw[:100, :100])
    monkeypatch.setattr(B, "BAND_PIXELS", 50_000)
    items = [BatchItem("huge", tmp_path / "huge.tif"), BatchItem("small", tmp_path / "small.tif")]
    got = [e for e in predict_batch(_predictor(), items, tile=256) if isinstance(e, Predicted)]
    assert got[0].error and "huge.tif" in got[0].error and "cellseg predict" in got[0].error
    assert got[1].error is None and got[1].cells is not None and got[1].cells.max() > 0
