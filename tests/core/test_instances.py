"""Instance scores: AP at IoU thresholds with one-to-one matching, merged/split counts."""

from __future__ import annotations

import numpy as np
import pytest

from cellseg_gui.core.data.masks import as_instances
from cellseg_gui.core.scores.instances import score_instances, summarize


def test_ap_hand_computed() -> None:
    gt = np.zeros((20, 20), np.int32)
    gt[0:10, 0:10] = 1  # 100 px
    gt[12:16, 12:16] = 2  # 16 px, missed
    pred = np.zeros((20, 20), np.int32)
    pred[0:10, 2:12] = 5  # overlap 80, union 120: IoU 2/3
    pred[17:19, 0:3] = 9  # a false positive
    s = score_instances(gt, pred)
    assert (s.n_true, s.n_pred, s.matched) == (2, 2, 1)
    assert s.ap(0.5) == pytest.approx(1 / 3)  # 1 / (1 + 1 + 1)
    assert s.ap(0.75) == 0.0 and s.ap(0.9) == 0.0
    assert s.mean_matched_iou == pytest.approx(2 / 3)


def test_matching_is_one_to_one_and_optimal() -> None:
    gt = np.zeros((4, 4), np.int32)
    gt[:2, :] = 1  # 8 px
    pred = np.zeros((4, 4), np.int32)
    pred[:2, :2], pred[:2, 2:] = 1, 2  # each IoU exactly 0.5 with the one cell
    s = score_instances(gt, pred)
    assert s.matched == 1 and s.ap(0.5) == pytest.approx(1 / 2)
    # a greedy match on the highest IoU would take (A, x) and leave B unmatched;
    # the optimal assignment matches both
    gt = np.zeros((1, 20), np.int32)
    gt[0, 0:10], gt[0, 10:20] = 1, 2
    pred = np.zeros((1, 20), np.int32)
    pred[0, 2:12], pred[0, 12:20] = 7, 8
    s = score_instances(gt, pred, thresholds=(0.5,))
    assert s.matched == 2


def test_merged_and_split_counts() -> None:
    gt = np.zeros((10, 30), np.int32)
    gt[:, 0:5], gt[:, 5:10] = 1, 2  # two touching cells...
    gt[:, 20:30] = 3
    pred = np.zeros((10, 30), np.int32)
    pred[:, 0:10] = 1  # ...predicted as one
    pred[:, 20:25], pred[:, 25:30] = 2, 3  # one cell predicted as two
    s = score_instances(gt, pred)
    assert (s.merged, s.split) == (1, 1)
    assert s.matched == 2  # each half-size piece reaches IoU 0.5 exactly with one cell
    assert s.ap(0.75) == 0.0


def test_empty_images() -> None:
    empty = np.zeros((5, 5), np.uint16)
    one = empty.copy()
    one[1:3, 1:3] = 4
    assert score_instances(empty, empty).ap(0.5) == 1.0
    assert score_instances(empty, one).ap(0.5) == 0.0
    assert score_instances(one, empty).ap(0.9) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        score_instances(empty, empty[:4])


def test_binary_masks_are_scored_on_connected_components() -> None:
    binary = np.zeros((10, 10), np.uint8)
    binary[1:3, 1:3] = 255
    binary[6:9, 6:9] = 255
    inst, source = as_instances(binary, "binary")
    assert source == "connected components" and inst.max() == 2
    assert as_instances(binary, "instances")[1] == "instances"
    with pytest.raises(ValueError, match="cannot count cells"):
        as_instances(binary, "rgb")


def test_summary_mean_over_images_differs_from_pooled() -> None:
    a = np.zeros((10, 10), np.int32)
    a[0:2, 0:2] = 1  # one cell, found
    crowded_t = np.zeros((10, 40), np.int32)
    crowded_p = np.zeros((10, 40), np.int32)
    for k in range(10):
        crowded_t[0:3, 4 * k : 4 * k + 3] = k + 1  # ten cells, none found
    scores = [score_instances(a, a), score_instances(crowded_t, crowded_p)]
    summary = summarize(scores)
    assert summary.ap(0.5) == pytest.approx(0.5)  # (1 + 0) / 2
    assert summary.ap(0.5, pooled=True) == pytest.approx(1 / 11)
    assert (summary.n_true, summary.n_pred, summary.matched) == (11, 1, 1)


def _touching_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two touching discs that a model called 'cell' throughout, with its confidence
    falling towards the contact line: argmax markers merge them."""
    yy, xx = np.mgrid[:40, :60]
    truth = np.zeros((40, 60), np.int32)
    d1 = np.hypot(yy - 20, xx - 20)
    d2 = np.hypot(yy - 20, xx - 39)
    truth[d1 < 10] = 1
    truth[(d2 < 10) & (truth == 0)] = 2
    labels = (truth > 0).astype(np.uint8)
    p_cell = np.where(truth > 0, 0.95 - 0.04 * np.minimum(d1, d2), 0.05)
    p_cell[(truth > 0) & (np.abs(xx - 29.5) < 2)] = 0.55  # the neck: cell, but unsure
    probs = np.stack([1 - p_cell, p_cell, np.zeros_like(p_cell)]).astype(np.float32)
    return truth, labels, probs


def test_tuning_finds_the_marker_threshold_that_separates_touching_cells() -> None:
    from cellseg_gui.core.model.postprocess import (
        MIN_SIZES,
        PostProcess,
        prediction_to_instances,
        tune_postprocess,
    )

    truth, labels, probs = _touching_pair()
    argmax = PostProcess(marker_threshold=None, min_size=15)
    merged = prediction_to_instances(labels, probs, "instances", argmax)
    assert merged.max() == 1  # argmax markers merge the pair
    pp, trials, per_image = tune_postprocess([(labels, probs, truth)], "instances")
    assert pp.marker_threshold is not None and pp.val_ap50 == 1.0 and per_image == [1.0]
    assert pp.chosen == "tuned on 1 validation image(s)"
    assert len(trials) == (5 + 3 * 3) * len(MIN_SIZES)  # class grid + distance grid, x sizes
    cells = prediction_to_instances(labels, probs, "instances", pp)
    assert score_instances(truth, cells).ap(0.5) == 1.0


def _sure_touching_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two discs (radius 12) overlapping at a neck, both predicted 'cell' with the same
    confidence: no probability threshold can split them, their shape can."""
    yy, xx = np.mgrid[:40, :70]
    d1 = np.hypot(yy - 20, xx - 24)
    d2 = np.hypot(yy - 20, xx - 46)
    union = (d1 <= 12) | (d2 <= 12)
    truth = np.where(union, np.where(d1 <= d2, 1, 2), 0).astype(np.int32)
    p_cell = np.where(union, 0.95, 0.02)
    probs = np.stack([1 - p_cell, p_cell, np.zeros_like(p_cell)]).astype(np.float32)
    return truth, union.astype(np.uint8), probs


def test_distance_markers_split_cells_that_no_threshold_splits() -> None:
    from cellseg_gui.core.model.postprocess import (
        PostProcess,
        prediction_to_instances,
        tune_postprocess,
    )

    truth, labels, probs = _sure_touching_pair()
    for thr in (None, 0.6, 0.9):
        merged = prediction_to_instances(labels, probs, "instances", PostProcess(thr, 15))
        assert merged.max() == 1
    pp = PostProcess(marker_threshold=0.7, min_size=15, method="distance", peak_height=4)
    cells = prediction_to_instances(labels, probs, "instances", pp)
    assert cells.max() == 2 and score_instances(truth, cells).ap(0.9) == 1.0
    assert PostProcess.from_dict(pp.to_dict()) == pp  # the bundle round trip
    assert "distance markers" in pp.describe()
    tuned, _, _ = tune_postprocess([(labels, probs, truth)], "instances")
    assert tuned.method == "distance" and tuned.val_ap50 == 1.0
    # without the distance grid (the 2-class path, or asked), the class method is kept
    assert tune_postprocess([(labels, probs, truth)], "instances", distance=False)[0].method == (
        "classes"
    )


def test_stored_postprocess_is_validated() -> None:
    from cellseg_gui.core.model.postprocess import DEFAULT_POSTPROCESS, postprocess_from_meta

    pp, note = postprocess_from_meta({"postprocess": {"marker_threshold": 7, "min_size": 5}})
    assert pp == DEFAULT_POSTPROCESS and "between 0 and 1" in note
    pp, note = postprocess_from_meta({"postprocess": {"marker_threshold": 0.8, "min_size": 5}})
    assert (pp.marker_threshold, pp.min_size, pp.method, note) == (0.8, 5, "classes", "")
    for bad, words in (
        ({"method": "flows"}, "postprocess.method"),
        ({"method": "distance", "peak_height": "high"}, "postprocess.peak_height"),
        ({"method": "distance", "marker_threshold": None}, "needed by the distance method"),
    ):
        pp, note = postprocess_from_meta({"postprocess": {"marker_threshold": 0.8, **bad}})
        assert pp == DEFAULT_POSTPROCESS and words in note, bad


def test_huge_and_sparse_ids_and_binary_truth() -> None:
    from cellseg_gui.core.data.masks import truth_cells

    gt = np.zeros((8, 8), np.uint32)
    gt[1:3, 1:3] = 4_000_000_000  # an id that bincount would need 30 GB for
    gt[5:7, 5:7] = 7
    pred = np.zeros((8, 8), np.int64)
    pred[1:3, 1:3] = 2**40
    assert score_instances(gt, pred).matched == 1
    binary = (gt > 0).astype(np.uint8) * 255  # a 0/255 mask given to an instance model
    cells, source = truth_cells(binary, "instances")
    assert cells.max() == 2 and source == "connected components"
    assert truth_cells(gt.astype(np.int64), "instances")[1] == "instances"


def test_a_bundles_mean_figure_is_given_only_when_every_image_has_one() -> None:
    """The Jaccard's mean over images that info, train and the window give beside the
    pooled one: from the per-image figures a bundle records; a missing, boolean or NaN
    value (a hand-edited or damaged file) gives no mean rather than a wrong one."""
    from cellseg_gui.core.model.scoring import figure, mean_over_images

    assert mean_over_images({"a": 0.5, "b": 0.75}) == 0.625
    assert figure(mean_over_images({"a": 0.5, "b": 0.75})) == "0.6250"
    for bad in ({}, None, {"a": 0.5, "b": None}, {"a": True}, {"a": float("nan")}):
        assert mean_over_images(bad) is None
    assert figure(None) == "-" and figure(float("nan")) == "-"
