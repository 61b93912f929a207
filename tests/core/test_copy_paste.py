"""Copy-paste augmentation: cells of one training image pasted onto another crop's
background, with their halo, as cells the flows point into, never over existing cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cellseg_gui.core.config import TrainConfig
from cellseg_gui.core.data.dataset import Sample
from cellseg_gui.core.training.sampling import _make_sampler, training_targets

S = 64


def _samples() -> list[Sample]:
    """Image 0: one bright diamond-ish cell (value 5) with a rim (value 3) on a 0
    background; image 1: two touching cells (value -1) at the top-left, empty elsewhere."""
    ids0 = np.zeros((S, S), np.int32)
    ids0[20:30, 22:34] = 7
    img0 = np.zeros((S, S), np.float32)
    img0[18:32, 20:36] = 3.0  # the halo
    img0[ids0 == 7] = 5.0
    ids1 = np.zeros((S, S), np.int32)
    ids1[0:12, 0:10], ids1[0:12, 10:20] = 1, 2
    img1 = np.where(ids1 > 0, -1.0, 0.0).astype(np.float32)
    cfg = TrainConfig()
    out = [
        Sample(
            name=f"im{i}",
            image=img[None],
            target=(ids > 0).astype(np.uint8),
            image_path=Path(f"im{i}.tif"),
            mask_path=None,
            sha256="",
            n_classes=3,
            mask_mode="instances",
            instances=ids,
        )  # fmt: skip
        for i, (img, ids) in enumerate(((img0, ids0), (img1, ids1)))
    ]
    return training_targets(out, cfg)


def _sampler(seed: int = 0, paste: bool = True):
    cfg = TrainConfig()
    cfg.augment.copy_paste = paste
    gen = torch.Generator().manual_seed(seed)
    return _make_sampler(_samples(), S, torch.device("cpu"), 0.0, gen, cfg, n_classes=3)


def test_cells_are_pasted_on_background_with_their_halo_and_flows() -> None:
    sampler = _sampler()
    assert sampler.bank is not None and len(sampler.bank) == 3  # every cell fits
    pasted = 0
    for _ in range(20):
        x, y, _ = sampler.batch([1])
        classes, _, _, flow = sampler.decode(y.clone(), 0.0)
        img, cls = x[0, 0].numpy(), classes[0].numpy()
        # the two drawn cells are untouched: nothing is pasted over a cell
        assert (img[0:12, 0:20] == -1.0).all() and (cls[0:12, 0:20] > 0).all()
        bright = img == 5.0
        if not bright.any():
            continue
        pasted += 1
        # the pasted cell is labelled cell where its pixels are, and brings its rim
        assert (cls[bright] == 1).all()
        ring = img == 3.0
        assert ring.sum() > 0 and (cls[ring] == 0).all()
        # its flows point into it: non-zero unit vectors on its pixels, none outside
        f = flow[0].numpy()
        norm = np.hypot(f[0], f[1])
        assert np.median(norm[bright]) > 0.9 and (norm[cls == 0] == 0).all()
    assert pasted >= 5  # most crops of an empty image get the bright cell (0..3 draws)


def test_pasting_is_off_by_default_and_repeatable_with_a_seed() -> None:
    assert _sampler(paste=False).bank is None
    a = [_sampler(seed=3).batch([1, 0]) for _ in range(2)]
    assert torch.equal(a[0][0], a[1][0]) and torch.equal(a[0][1], a[1][1])


def test_cells_pasted_against_others_get_the_boundary_and_a_colour_of_their_own() -> None:
    """With ``paste_touching`` a cell may land beside the drawn ones: the boundary class is
    drawn on both sides where they meet, and its colour (what keeps its flows its own)
    differs from its neighbours', so the two are still told apart."""
    cfg = TrainConfig()
    cfg.augment.copy_paste = cfg.augment.paste_touching = True
    samples = _samples()
    ids1 = np.zeros((S, S), np.int32)  # image 1 crowded: cells everywhere but a corridor
    ids1[:, :30], ids1[:, 46:] = 1, 2
    samples[1].instances[:] = ids1
    samples[1].image[0] = np.where(ids1 > 0, -1.0, 0.0)
    samples = training_targets(samples, cfg)
    gen = torch.Generator().manual_seed(0)
    sampler = _make_sampler(samples, S, torch.device("cpu"), 0.0, gen, cfg, n_classes=3)
    span = sampler.n_classes * sampler.w_span * sampler.d_span
    met = 0
    for _ in range(40):
        x, y, _ = sampler.batch([1])
        img, cls = x[0, 0].numpy(), (y[0] % 3).numpy()
        colour = (y[0] // span).numpy()
        mine = img == 5.0
        if not mine.any():
            continue
        assert (cls[mine] > 0).all()  # a pasted cell lands on background only
        others = (img == -1.0) & (cls > 0)
        grown = np.zeros_like(mine)
        grown[1:] |= mine[:-1]
        grown[:-1] |= mine[1:]
        grown[:, 1:] |= mine[:, :-1]
        grown[:, :-1] |= mine[:, 1:]
        contact = grown & others
        if not contact.any():
            continue
        met += 1
        assert (cls[contact] == 2).all()  # the neighbour's side of the contact
        assert (cls[mine & np.roll(others, 1, 1)] == 2).all()  # and the pasted cell's
        assert set(np.unique(colour[mine])).isdisjoint(np.unique(colour[contact]))
    assert met >= 3
