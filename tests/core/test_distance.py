"""The learned distance output: its target parts touching cells, it rides through the
sampler and augmentation with the classes, the loss and the probabilities treat it as one
plane beside the classes, and its markers split cells that the class map joins."""

from __future__ import annotations

import numpy as np
import torch

from cellseg_gui.core.model.distance import (
    DISTANCE_LEVELS,
    distance_levels,
    distance_target,
    outputs_to_probs,
)
from cellseg_gui.core.model.postprocess import (
    MIN_SIZES,
    PostProcess,
    prediction_to_instances,
    tune_postprocess,
)
from cellseg_gui.core.scores.instances import score_instances
from cellseg_gui.core.training.objective import segmentation_loss
from cellseg_gui.core.training.sampling import CropSampler


def _touching_squares() -> np.ndarray:
    ids = np.zeros((20, 30), np.int32)
    ids[4:15, 3:14] = 1
    ids[4:15, 14:25] = 2  # shares an edge with cell 1
    return ids


def test_the_target_has_one_peak_per_cell_however_branched_and_falls_to_its_far_end() -> None:
    ids = _touching_squares()
    ids[15:19, 3:6] = 1  # a branch hanging off cell 1
    d = distance_target(ids)
    assert d.dtype == np.float32 and d.shape == ids.shape
    assert d[ids == 0].max() == 0.0
    for k in (1, 2):
        cell = d[ids == k]
        assert cell.max() == 1.0 and (cell == 1.0).sum() == 1  # one centre
        assert np.isclose(cell.min(), 0.0)  # the farthest pixel along the cell
    # one regional maximum per cell: no second peak in the branch
    from scipy import ndimage as ndi

    peaks = (d == ndi.maximum_filter(d, size=3)) & (d > 0)
    assert sorted(np.unique(ids[peaks])) == [1, 2] and peaks.sum() == 2
    # the cells' meeting line lies far from both centres: low on both sides
    assert d[4:15, 13:15].max() < 0.6
    # a cell twice the size has the same profile: the share does not change with scale
    big = distance_target(np.kron(ids, np.ones((2, 2), np.int32)))
    assert abs(big[big > 0].mean() - d[d > 0].mean()) < 0.05
    assert not distance_target(np.zeros((5, 5), np.uint8)).any()
    one = np.zeros((5, 5), np.uint8)
    one[2, 2] = 3  # a one-pixel cell is all centre
    assert distance_target(one)[2, 2] == 1.0


def test_the_sampler_carries_classes_weights_and_distance_together() -> None:
    ids = _touching_squares()
    target = (ids > 0).astype(np.uint8)
    levels = np.zeros(ids.shape, np.uint8)
    levels[:, 13:15] = 15  # separation weights at the contact
    dist = distance_target(ids)
    sampler = CropSampler(
        [np.zeros((1, 20, 30), np.float32)], [target], crop=16, device=torch.device("cpu"),
        foreground_bias=0.0, gen=torch.Generator().manual_seed(0), levels=[levels],
        n_classes=3, distances=[dist],
    )  # fmt: skip
    y = sampler.targets[0]
    classes, weights, got, flow = sampler.decode(y, w0=10.0)
    assert flow is None
    np.testing.assert_array_equal(classes.numpy(), target)
    np.testing.assert_allclose(weights.numpy(), 1 + levels * (10.0 / 15), rtol=1e-6)
    np.testing.assert_allclose(
        got.numpy(), distance_levels(dist) / (DISTANCE_LEVELS - 1), atol=1e-6
    )
    assert abs(got.numpy() - dist).max() <= 0.5 / (DISTANCE_LEVELS - 1) + 1e-6


def test_probabilities_and_loss_keep_the_distance_plane_apart() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8)
    p = outputs_to_probs(logits, 3)
    torch.testing.assert_close(p[:, :3].sum(1), torch.ones(2, 8, 8))
    torch.testing.assert_close(p[:, 3], torch.sigmoid(logits[:, 3]))
    assert outputs_to_probs(logits, None).sum(1).allclose(torch.ones(2, 8, 8))
    y = torch.randint(0, 3, (2, 8, 8))
    want = torch.rand(2, 8, 8)
    with_d, ce = segmentation_loss(logits, y, distance=want)
    classes_only, ce2 = segmentation_loss(logits[:, :3], y)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 3], want)
    torch.testing.assert_close(with_d, classes_only + bce)
    torch.testing.assert_close(ce, ce2)  # the noisy-label figure is the classes' alone


def _pair_with_a_sure_join() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two discs joined at a neck, both 'cell' with the same confidence (no class
    threshold parts them), with a distance plane that has a valley at the neck."""
    yy, xx = np.mgrid[:40, :70]
    d1, d2 = np.hypot(yy - 20, xx - 24), np.hypot(yy - 20, xx - 46)
    union = (d1 <= 12) | (d2 <= 12)
    truth = np.where(union, np.where(d1 <= d2, 1, 2), 0).astype(np.int32)
    p_cell = np.where(union, 0.95, 0.02)
    dist = distance_target(truth)
    probs = np.stack([1 - p_cell, p_cell, np.zeros_like(p_cell), dist]).astype(np.float32)
    return truth, union.astype(np.uint8), probs


def test_learned_markers_split_the_pair_and_tuning_offers_them() -> None:
    truth, labels, probs = _pair_with_a_sure_join()
    assert prediction_to_instances(labels, probs, "instances", PostProcess(0.9, 15)).max() == 1
    pp = PostProcess(marker_threshold=0.5, min_size=15, method="learned")
    cells = prediction_to_instances(labels, probs, "instances", pp)
    assert cells.max() == 2 and score_instances(truth, cells).ap(0.9) == 1.0
    assert PostProcess.from_dict(pp.to_dict()) == pp
    assert "learned distance markers" in pp.describe()
    tuned, trials, _ = tune_postprocess([(labels, probs, truth)], "instances")
    assert tuned.val_ap50 == 1.0
    assert sum(t["method"] == "learned" for t in trials) == 5 * len(MIN_SIZES)
    # a model without the plane is not offered the learned grid, and falls back
    _, trials3, _ = tune_postprocess([(labels, probs[:3], truth)], "instances")
    assert not any(t["method"] == "learned" for t in trials3)
    assert prediction_to_instances(labels, probs[:3], "instances", pp).max() >= 1
