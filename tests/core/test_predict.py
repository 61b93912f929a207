"""Tiled prediction: exact where one tile suffices, seamless where tiles blend, any size,
flip TTA, device selection, and the model's mode left as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellseg_gui.core.config import ModelConfig
from cellseg_gui.core.model.predict import (
    Prediction,
    class_argmax,
    predict_tiled,
    predict_whole,
    select_device,
    tile_grid,
)
from cellseg_gui.core.model.unet import build_model


@pytest.fixture(scope="module", params=[1, 2], ids=["full-res", "downsample2"])
def model(request) -> torch.nn.Module:
    """Every tiling test runs on a full-resolution U-Net and on one that works at half
    resolution (its tiles must be rounded to 2**depth * 2, not 2**depth)."""
    torch.manual_seed(0)
    cfg = ModelConfig(in_channels=1, n_classes=3, hidden=4, depth=2, downsample=request.param)
    m = build_model(cfg)
    # Non-trivial BN statistics, so eval mode matters.
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.randn(2, 1, 64, 64) * 2 + 0.5)
    return m.eval()


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    blobs = np.sin(yy / 7.0) * np.cos(xx / 5.0)
    return (blobs + 0.3 * rng.standard_normal((h, w))).astype(np.float32)[None]


@pytest.mark.parametrize("hw", [(96, 80), (67, 131)])
def test_single_tile_equals_whole_image(model, hw) -> None:
    img = _image(*hw)
    tiled = predict_tiled(model, img, tile=256, overlap=32)
    whole = predict_whole(model, img)
    assert isinstance(tiled, Prediction)
    assert tiled.probs.dtype == np.float32 and tiled.labels.dtype == np.uint8
    assert np.abs(tiled.probs - whole.probs).max() < 1e-5
    np.testing.assert_array_equal(tiled.labels, whole.labels)


def test_many_tiles_non_square_non_multiple(model) -> None:
    img = _image(203, 157, seed=1)
    pred = predict_tiled(model, img, tile=64, overlap=16, batch_size=3)
    assert pred.labels.shape == (203, 157)
    assert pred.probs.shape == (3, 203, 157)
    np.testing.assert_allclose(pred.probs.sum(0), 1.0, atol=1e-5)
    assert pred.labels.max() < 3
    np.testing.assert_array_equal(pred.labels, pred.probs.argmax(0))
    # Blended tiles stay close to the whole-image answer: the overlap hides tile borders.
    whole = predict_whole(model, img)
    assert (pred.labels == whole.labels).mean() > 0.9
    assert np.abs(pred.probs - whole.probs).mean() < 0.08


def test_no_seams(model) -> None:
    """Across a tile border the probabilities change no more than inside a tile."""
    img = np.zeros((1, 128, 256), np.float32) + np.linspace(-1, 1, 256, dtype=np.float32)
    pred = predict_tiled(model, img, tile=96, overlap=32)
    starts, length = tile_grid(256, 96, 32, 4)
    assert len(starts) > 1
    steps = np.abs(np.diff(pred.probs[:, 40:90], axis=2)).max(axis=(0, 1))
    tile_edges = [s + length - 1 for s in starts[:-1]] + [s - 1 for s in starts[1:]]
    inside = np.delete(steps, tile_edges)
    assert steps[tile_edges].max() <= 2 * inside.max() + 1e-4


def test_tile_grid_covers_with_overlap() -> None:
    for size, tile, overlap in [(1024, 512, 64), (1000, 256, 32), (513, 512, 64), (300, 64, 16)]:
        starts, length = tile_grid(size, tile, overlap, 16)
        assert length <= tile
        assert starts[0] == 0 and starts[-1] + length == size
        for a, b in zip(starts, starts[1:], strict=False):
            assert a + length - b >= overlap  # neighbours overlap enough
    assert tile_grid(1024, 512, 64, 16) == ([0, 320, 640], 384)
    assert tile_grid(100, 512, 64) == ([0], 100)
    starts, length = tile_grid(1000, 64, 64)  # overlap >= tile: clamped to half the tile
    assert starts[-1] + length == 1000 and length == 64
    assert all(a + length - b >= 32 for a, b in zip(starts, starts[1:], strict=False))


def test_return_probs_false(model) -> None:
    img = _image(70, 90)
    pred = predict_tiled(model, img, tile=48, overlap=8, return_probs=False)
    assert pred.probs is None
    full = predict_tiled(model, img, tile=48, overlap=8)
    np.testing.assert_array_equal(pred.labels, full.labels)


def test_flip_tta(model) -> None:
    img = _image(75, 61)
    plain = predict_tiled(model, img, tile=48, overlap=16)
    tta = predict_tiled(model, img, tile=48, overlap=16, tta=True)
    assert tta.labels.shape == (75, 61)
    assert tta.probs.shape == (3, 75, 61)
    np.testing.assert_allclose(tta.probs.sum(0), 1.0, atol=1e-5)
    assert not np.allclose(tta.probs, plain.probs)
    # TTA output is flip-equivariant: predicting the flipped image gives the flipped answer.
    # (Sizes a multiple of 2**depth, so the U-Net's bottom/right padding is not involved.)
    img = _image(64, 48)
    flipped = predict_tiled(model, img[:, :, ::-1].copy(), tile=128, tta=True)
    single = predict_tiled(model, img, tile=128, tta=True)
    assert np.abs(flipped.probs[:, :, ::-1] - single.probs).max() < 1e-5


def test_restores_training_mode_and_accepts_2d(model) -> None:
    model.train()
    try:
        pred = predict_tiled(model, _image(40, 40)[0])  # (H, W) accepted as one channel
        assert pred.labels.shape == (40, 40)
        assert model.training
    finally:
        model.eval()


def test_select_device() -> None:
    assert select_device("cpu").type == "cpu"
    auto = select_device("auto")
    if torch.cuda.is_available():
        assert auto.type == "cuda"
    elif auto.type != "mps":
        assert auto.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            select_device("cuda")


def test_batch_size_does_not_change_result(model) -> None:
    img = _image(130, 100)
    a = predict_tiled(model, img, tile=48, overlap=16, batch_size=1)
    b = predict_tiled(model, img, tile=48, overlap=16, batch_size=7)
    assert np.abs(a.probs - b.probs).max() < 1e-5


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_class_argmax_equals_torch_argmax_ties_included(k: int) -> None:
    g = torch.Generator().manual_seed(k)
    # values from a small set, so ties are common: the lower class must win, as in argmax
    x = torch.randint(0, 3, (2, k, 17, 9), generator=g).float()
    for dim in (0, 1):
        assert torch.equal(class_argmax(x, dim), x.argmax(dim))
    assert torch.equal(class_argmax(x[0], 0), x[0].argmax(0))
