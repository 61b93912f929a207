"""Jaccard: hand-computed cases, the empty-vs-empty convention, data-set summing, and
the classic transposed/reshaped-target bug being caught rather than scored."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from cellseg_gui.core.scores.metrics import (
    JaccardAccumulator,
    confusion_matrix,
    foreground_jaccard,
    jaccard_from_confusion,
    jaccard_per_class,
    mean_foreground_jaccard,
)

# 3x4 hand example.  target / pred, classes 0..2
TARGET = np.array([[0, 0, 1, 1], [0, 2, 1, 1], [2, 2, 0, 0]], dtype=np.uint8)
PRED = np.array([[0, 1, 1, 1], [0, 2, 2, 1], [2, 0, 0, 0]], dtype=np.uint8)
# class 0: target {00,01,10,22,23}, pred {00,10,21,22,23}: I=4 (00,10,22,23) U=6 -> 2/3
# class 1: target {02,03,12,13}, pred {01,02,03,13}: I=3 U=5 -> 3/5
# class 2: target {11,20,21}, pred {11,12,20}: I=2 U=4 -> 1/2
# foreground: target>0 {02,03,11,12,13,20,21} (7), pred>0 {01,02,03,11,12,13,20} (7): I=6 U=8


def test_confusion_matrix_by_hand() -> None:
    cm = confusion_matrix(PRED, TARGET, 3)
    expected = np.array([[4, 1, 0], [0, 3, 1], [1, 0, 2]])
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.int64
    assert cm.sum() == TARGET.size


def test_jaccard_per_class_by_hand() -> None:
    np.testing.assert_allclose(jaccard_per_class(PRED, TARGET, 3), [2 / 3, 3 / 5, 1 / 2])
    assert mean_foreground_jaccard(PRED, TARGET, 3) == pytest.approx((3 / 5 + 1 / 2) / 2)
    assert foreground_jaccard(PRED, TARGET) == pytest.approx(6 / 8)
    np.testing.assert_allclose(
        jaccard_from_confusion(confusion_matrix(PRED, TARGET, 3)), [2 / 3, 3 / 5, 1 / 2]
    )


def test_perfect_and_disjoint() -> None:
    assert mean_foreground_jaccard(TARGET, TARGET, 3) == 1.0
    inverted = (TARGET == 0).astype(np.uint8)  # foreground exactly where there is none
    assert foreground_jaccard(inverted, TARGET) == 0.0


def test_empty_vs_empty_is_one() -> None:
    """A class absent from both prediction and target scores 1.0 (documented)."""
    bg = np.zeros((5, 5), np.uint8)
    np.testing.assert_array_equal(jaccard_per_class(bg, bg, 3), [1.0, 1.0, 1.0])
    assert foreground_jaccard(bg, bg) == 1.0
    assert mean_foreground_jaccard(bg, bg, 3) == 1.0
    # Class 2 is empty on both sides, class 1 is predicted where there is none.
    pred = bg.copy()
    pred[0, 0] = 1
    np.testing.assert_allclose(jaccard_per_class(pred, bg, 3), [24 / 25, 0.0, 1.0])


def test_predicting_nothing_on_cells_scores_zero() -> None:
    target = np.zeros((4, 4), np.uint8)
    target[1:3, 1:3] = 1
    empty = np.zeros_like(target)
    assert foreground_jaccard(empty, target) == 0.0
    assert jaccard_per_class(empty, target, 2)[1] == 0.0


def test_dataset_sums_intersections_and_unions() -> None:
    """Summed I / summed U, not the mean of per-image scores."""
    t1 = np.zeros((10, 10), np.uint8)
    t1[:5] = 1  # 50 foreground pixels, perfectly predicted
    p1 = t1.copy()
    t2 = np.zeros((2, 2), np.uint8)
    t2[0, 0] = 1  # 1 foreground pixel, missed
    p2 = np.zeros_like(t2)
    acc = JaccardAccumulator(2)
    np.testing.assert_allclose(acc.update(p1, t1), [1.0, 1.0])
    np.testing.assert_allclose(acc.update(p2, t2), [3 / 4, 0.0])
    assert acc.per_class()[1] == pytest.approx(50 / 51)
    assert acc.mean_foreground() == pytest.approx(50 / 51)
    assert acc.foreground() == pytest.approx(50 / 51)
    assert acc.n_images == 2
    # The per-image mean would have been 0.5: the data-set score must differ.
    assert acc.mean_foreground() != pytest.approx(0.5)


def test_accumulator_empty_dataset_is_one() -> None:
    acc = JaccardAccumulator(3)
    assert acc.foreground() == 1.0
    np.testing.assert_array_equal(acc.per_class(), [1.0, 1.0, 1.0])


def _elongated_cells(h: int, w: int) -> np.ndarray:
    """Horizontal bars: not symmetric under transposition, like most real cell layouts."""
    t = np.zeros((h, w), np.uint8)
    for r in range(2, h - 4, 8):
        t[r : r + 3, 4 : w - 4] = 1
    return t


def test_transposed_square_target_scores_low() -> None:
    """The view/permute bug on a square image: same shape, so it must show as a low score."""
    target = _elongated_cells(64, 64)
    pred = target.copy()  # a perfect prediction ...
    assert foreground_jaccard(pred, target) == 1.0
    # ... compared with the transposed target must not look good.
    assert foreground_jaccard(pred, target.T) < 0.3
    assert mean_foreground_jaccard(pred, target.T, 2) < 0.3


def test_transposed_or_reshaped_non_square_target_raises() -> None:
    target = _elongated_cells(48, 64)
    pred = target.copy()
    with pytest.raises(ValueError, match="shape"):
        foreground_jaccard(pred, target.T)
    with pytest.raises(ValueError, match="shape"):
        jaccard_per_class(pred, target.reshape(64, 48), 2)
    with pytest.raises(ValueError, match="shape"):
        JaccardAccumulator(2).update(pred, target.reshape(-1))


def test_batch_reshaped_wrongly_scores_low() -> None:
    """Two (32, 64) targets stacked (2, 32, 64) and flattened with the wrong axis order
    (the permute-before-view bug) give a same-sized image with scrambled rows."""
    batch = np.stack([_elongated_cells(32, 64), _elongated_cells(32, 64)[:, ::-1]])
    right = batch.reshape(64, 64)
    wrong = batch.transpose(1, 0, 2).reshape(64, 64)  # rows interleaved between images
    pred = right.copy()
    assert foreground_jaccard(pred, right) == 1.0
    assert foreground_jaccard(pred, wrong) < 0.5


def test_out_of_range_classes_raise() -> None:
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([[0, 3]]), np.array([[0, 1]]), 3)
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8), 2)


def test_metrics_module_is_torch_free() -> None:
    code = "import sys, cellseg_gui.core.scores.metrics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_chunked_confusion_matrix_matches_direct(monkeypatch) -> None:
    """Large images are counted in chunks; chunk boundaries must not lose pixels."""
    import cellseg_gui.core.scores.metrics as M

    rng = np.random.default_rng(0)
    pred = rng.integers(0, 4, (37, 53)).astype(np.uint8)
    target = rng.integers(0, 4, (37, 53)).astype(np.uint16)
    direct = np.zeros((4, 4), np.int64)
    np.add.at(direct, (target.ravel(), pred.ravel()), 1)
    monkeypatch.setattr(M, "_CHUNK", 100)  # 1961 pixels -> 20 chunks, last one partial
    np.testing.assert_array_equal(M.confusion_matrix(pred, target, 4), direct)
