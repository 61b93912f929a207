"""Percentile normalisation: the numbers the model sees, for every kind of image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cellseg_gui.core.config import NormConfig
from cellseg_gui.core.data.imageio import read_image
from cellseg_gui.core.data.normalize import display_levels, normalize, percentile_normalize


def test_grey_becomes_one_channel_float32() -> None:
    img = np.arange(100, dtype=np.uint16).reshape(10, 10)
    out = percentile_normalize(img)
    assert out.shape == (1, 10, 10) and out.dtype == np.float32


def test_percentiles_map_to_zero_and_one() -> None:
    img = np.arange(1000, dtype=np.float64).reshape(25, 40)
    lo, hi = np.percentile(img, [1.0, 99.8])
    out = percentile_normalize(img, 1.0, 99.8)[0]
    np.testing.assert_allclose(out, (img - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    # outside the percentiles values are kept, not clipped
    assert out.min() < 0 and out.max() > 1


def test_channels_last_become_first_and_scale_independently() -> None:
    rng = np.random.default_rng(1)
    rgb = np.stack(
        [
            rng.uniform(0, 10, (20, 20)),
            rng.uniform(1000, 5000, (20, 20)),
            rng.uniform(0, 1, (20, 20)),
        ],
        -1,
    )
    out = percentile_normalize(rgb, 0, 100)
    assert out.shape == (3, 20, 20)
    for c in range(3):
        assert out[c].min() == pytest.approx(0.0, abs=1e-6)
        assert out[c].max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(out[1], percentile_normalize(rgb[..., 1], 0, 100)[0])


def test_nan_ignored_and_zeroed() -> None:
    img = np.arange(100, dtype=np.float32).reshape(10, 10)
    with_nan = img.copy()
    with_nan[0, :5] = np.nan
    out = percentile_normalize(with_nan, 0, 100)[0]
    assert np.isfinite(out).all()
    assert (out[0, :5] == 0).all()
    finite = img[~np.isnan(with_nan)]
    np.testing.assert_allclose(
        out[1:], (img[1:] - finite.min()) / (finite.max() - finite.min()), rtol=1e-6
    )


def test_infinities_give_finite_output() -> None:
    img = np.arange(64, dtype=np.float32).reshape(8, 8)
    img[0, 0], img[0, 1] = np.inf, -np.inf
    out = percentile_normalize(img)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("fill", [np.nan, np.inf])
def test_all_nan_raises_clear_error(fill: float) -> None:
    img = np.full((6, 6), fill, np.float32)
    with pytest.raises(ValueError, match="image is all NaN"):
        percentile_normalize(img)
    with pytest.raises(ValueError, match="image is all NaN"):
        normalize(img, NormConfig())


def test_constant_image_gives_zeros() -> None:
    out = percentile_normalize(np.full((5, 7), 1234, np.uint16))
    assert (out == 0).all() and out.dtype == np.float32


def test_sparse_image_equal_percentiles_stays_finite() -> None:
    img = np.zeros((100, 100), np.uint16)
    img[5, 5] = 900  # one bright spot: 1st and 99.8th percentiles are both 0
    out = percentile_normalize(img)
    assert np.isfinite(out).all()
    assert out.max() == pytest.approx(1.0) and out.min() == 0.0


def test_normalize_methods() -> None:
    img = np.arange(1000, dtype=np.uint16).reshape(20, 50)
    np.testing.assert_array_equal(
        normalize(img, NormConfig(low=2.0, high=98.0)), percentile_normalize(img, 2.0, 98.0)
    )
    mm = normalize(img, NormConfig(method="minmax"))
    assert mm.min() == 0.0 and mm.max() == pytest.approx(1.0)
    raw = normalize(img, NormConfig(method="none"))
    np.testing.assert_array_equal(raw[0], img.astype(np.float32))
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize(img, NormConfig(method="zscore-typo"))
    with pytest.raises(ValueError, match="percentiles"):
        percentile_normalize(img, 50, 10)


def test_display_levels() -> None:
    img = np.arange(10000, dtype=np.float32).reshape(100, 100)
    lo, hi = display_levels(img)
    assert lo == pytest.approx(np.percentile(img, 0.5), rel=1e-3)
    assert hi == pytest.approx(np.percentile(img, 99.5), rel=1e-3)
    lo, hi = display_levels(np.full((4, 4), 7, np.uint8))
    assert hi > lo
    lo, hi = display_levels(np.full((4, 4), np.nan))
    assert (lo, hi) == (0.0, 1.0)
    big = np.tile(np.arange(4000, dtype=np.uint16), (4000, 1))  # subsampled, still right
    lo, hi = display_levels(big)
    assert lo == pytest.approx(20, abs=10) and hi == pytest.approx(3980, abs=10)


def test_real_phase_contrast_range(phc_dir: Path) -> None:
    img = read_image(phc_dir / "images" / "set46.tif")
    out = normalize(img, NormConfig())
    assert out.shape == (1, 1022, 1024) and np.isfinite(out).all()
    inside = np.mean((out >= 0) & (out <= 1))
    assert inside > 0.98  # 1..99.8 percentiles: almost every pixel in [0, 1]
