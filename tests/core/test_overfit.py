"""Overfit-one-image check: passes on a real image, fails when the mask is scrambled."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cellseg_gui.core.config import NormConfig, TrainConfig
from cellseg_gui.core.events import Finished, Started, StepEnded
from cellseg_gui.core.training.overfit import overfit_check, pick_region


def _phc(phc_dir, names=("set01", "set20")):
    from cellseg_gui.core.data.dataset import find_pairs, load_samples

    pairs = [p for p in find_pairs(phc_dir) if p.name in names]
    samples, errors = load_samples(pairs, mask_mode="instances", norm=NormConfig())
    assert not errors and len(samples) == len(names)
    return samples


def _finish(sample) -> tuple[Finished, float, list]:
    t0 = time.perf_counter()
    events = list(overfit_check(sample, TrainConfig(device="cpu")))
    assert isinstance(events[0], Started) and isinstance(events[-1], Finished)
    return events[-1], time.perf_counter() - t0, events


def test_pick_region_prefers_an_even_mix() -> None:
    t = np.zeros((512, 512), np.uint8)
    t[256:, 256:] = 1
    y0, x0, h, w = pick_region(t, 256)
    assert (h, w) == (256, 256)
    share = t[y0 : y0 + h, x0 : x0 + w].mean()
    assert abs(share - 0.5) < 0.1


@pytest.mark.slow
def test_passes_on_a_real_phase_contrast_image_within_three_minutes(phc_dir) -> None:
    sample = _phc(phc_dir)[0]
    fin, seconds, events = _finish(sample)
    assert fin.result["passed"], fin.result
    assert fin.result["jaccard"] >= 0.9
    assert seconds < 180
    assert any(isinstance(e, StepEnded) for e in events)


@pytest.mark.slow
def test_fails_when_the_mask_belongs_to_another_image(phc_dir) -> None:
    from dataclasses import replace

    a, b = _phc(phc_dir)
    scrambled = replace(a, target=b.target)
    fin, _, _ = _finish(scrambled)
    assert not fin.result["passed"], fin.result
    assert "mask" in fin.result["advice"]


def test_an_image_too_small_for_the_network_is_refused_by_name() -> None:
    """A 1x1 image made batch-norm raise (a traceback) instead of a sentence."""
    from pathlib import Path

    from cellseg_gui.core.data.dataset import Sample

    speck = Sample(
        name="speck", image=np.ones((1, 1, 1), np.float32), target=np.ones((1, 1), np.uint8),
        image_path=Path("speck.tif"), mask_path=Path("speck_mask.tif"), sha256="",
        n_classes=2, mask_mode="binary",
    )  # fmt: skip
    fin = list(overfit_check(speck, TrainConfig(device="cpu")))[-1]
    assert isinstance(fin, Finished) and fin.reason == "failed"
    assert fin.message.startswith("speck: 1x1 pixels, smaller than")
