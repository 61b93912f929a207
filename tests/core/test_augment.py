"""Augmentations move image and class map together and keep class maps valid."""

from __future__ import annotations

import pytest
import torch

from cellseg_gui.core.config import AugmentConfig
from cellseg_gui.core.training.augment import Augmenter, augment_batch


def _batch(n: int = 4, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 3, (n, size, size), generator=g)
    x = y[:, None].float()  # the image *is* the label: geometry must keep them equal
    return x, y


@pytest.mark.parametrize("name", ["flips", "rot90", "affine", "elastic"])
def test_geometric_moves_image_and_labels_together(name: str) -> None:
    cfg = AugmentConfig.none()
    setattr(cfg, name, True)
    x, y = _batch()
    xa, ya = augment_batch(x, y, cfg, torch.Generator().manual_seed(0))
    assert xa.shape == x.shape and ya.shape == y.shape and ya.dtype == y.dtype
    assert set(ya.unique().tolist()) <= {0, 1, 2}
    if name in ("flips", "rot90"):
        assert torch.equal(xa[:, 0], ya.float())
    else:  # bilinear image vs nearest labels: equal away from label edges
        agree = (xa[:, 0].round() == ya.float()).float().mean()
        assert agree > 0.6
    assert not torch.equal(ya, y)  # something actually changed


def test_intensity_noise_blur_change_image_only_and_stay_finite() -> None:
    x, y = _batch()
    x = x - 0.5  # negative values must not break gamma
    cfg = AugmentConfig.none()
    cfg.intensity = cfg.noise = cfg.blur = True
    xa, ya = augment_batch(x, y, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(ya, y)
    assert torch.isfinite(xa).all()
    assert not torch.allclose(xa, x)


def test_same_seed_same_result_and_none_is_identity() -> None:
    x, y = _batch()
    a = Augmenter(AugmentConfig.all(), seed=3)(x, y)
    b = Augmenter(AugmentConfig.all(), seed=3)(x, y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    off = Augmenter(AugmentConfig.none(), seed=3)
    assert not off.enabled
    xo, yo = off(x, y)
    assert xo is x and yo is y
