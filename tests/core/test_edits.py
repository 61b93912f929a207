"""Mask edits as diffs: each tool changes what it should, and undo restores bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import perimeter

from cellseg_gui.core.editing import edits as E
from cellseg_gui.core.editing.cleanup import _tiled_labels


def _disc(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _roundtrip(mask: np.ndarray, patch: E.Patch) -> np.ndarray:
    """Apply then revert: the mask must come back identical; returns the edited copy."""
    before = mask.copy()
    patch.apply(mask)
    after = mask.copy()
    patch.revert(mask)
    np.testing.assert_array_equal(mask, before)
    patch.apply(mask)
    np.testing.assert_array_equal(mask, after)
    return after


def test_brush_paints_a_disc_of_the_chosen_size() -> None:
    m = np.zeros((50, 50), np.uint8)
    p = E.brush(m, (25.5, 25.5), None, 11, 2)
    after = _roundtrip(m, p)
    assert set(np.unique(after)) == {0, 2}
    np.testing.assert_array_equal(after == 2, _disc(m.shape, 25, 25, 5.5))
    assert p.count == int((after == 2).sum())


def test_fast_drag_leaves_no_gaps() -> None:
    m = np.zeros((100, 400), np.uint8)
    s = E.Stroke(m, 3, 1)
    for x in (5.0, 150.0, 390.0):  # two mouse events 145+ px apart
        s.move_to(x, 50.5)
    assert (m[50, 5:391] == 1).all()
    assert (m[48, :] == 0).all() and (m[52, :] == 0).all()


def test_size_one_brush_paints_exactly_the_pixels_passed_over() -> None:
    m = np.zeros((10, 10), np.uint8)
    s = E.Stroke(m, 1, 1)
    s.move_to(0.2, 0.7)
    s.move_to(9.9, 9.1)
    np.testing.assert_array_equal(m, np.eye(10, dtype=np.uint8))


def test_capsule_matches_brute_force_distance() -> None:
    rng = np.random.default_rng(0)
    shape = (60, 70)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for _ in range(30):
        a = rng.uniform(-5, 75, 2)
        b = rng.uniform(-5, 75, 2)
        r = rng.uniform(0.5, 9)
        rows, cols = E.capsule_pixels(tuple(a), tuple(b), r, shape)
        got = np.zeros(shape, bool)
        got[rows, cols] = True
        d = b - a
        t = np.clip(((xx - a[0]) * d[0] + (yy - a[1]) * d[1]) / max(d @ d, 1e-12), 0, 1)
        dist2 = (xx - a[0] - t * d[0]) ** 2 + (yy - a[1] - t * d[1]) ** 2
        want = dist2 <= r * r
        # Only pixels sitting exactly on the rim may differ (floating-point ties).
        differ = got != want
        assert np.all(np.abs(np.sqrt(dist2[differ]) - r) < 1e-6)


def test_stroke_is_one_patch_and_undo_restores_bit_for_bit() -> None:
    rng = np.random.default_rng(1)
    m = rng.integers(0, 3, (64, 64)).astype(np.uint8)
    before = m.copy()
    s = E.Stroke(m, 7, 2)
    for x, y in [(3, 3), (30, 10), (60, 60), (10, 50)]:
        s.move_to(x, y)
    after = m.copy()
    p = s.finish()
    assert p is not None and p.new.ndim == 0
    p.revert(m)
    np.testing.assert_array_equal(m, before)
    p.apply(m)
    np.testing.assert_array_equal(m, after)


def test_merge_keeps_first_old_and_last_new() -> None:
    m = np.zeros((20, 20), np.uint8)
    p1 = E.brush(m, (5, 5), None, 5, 1)
    p1.apply(m)
    p2 = E.brush(m, (6, 5), None, 5, 0)  # erase most of it again
    p2.apply(m)
    merged = E.merge([p1, p2], m.shape[1])
    # Pixels painted then erased are not changes at all.
    assert merged.count == int((m != 0).sum())
    merged.revert(m)
    assert not m.any()


def test_only_background_keeps_neighbours_intact() -> None:
    m = np.zeros((40, 40), np.uint8)
    m[:, 20:] = 2
    p = E.brush(m, (20, 20), None, 15, 1, only_background=True)
    after = _roundtrip(m, p)
    assert (after[:, 20:] == 2).all()
    assert (after[:, :20] == 1).sum() > 50


def test_eraser_paints_background() -> None:
    m = np.full((30, 30), 5, np.int32)
    after = _roundtrip(m, E.brush(m, (15, 15), (25, 15), 5, 0))
    assert after[15, 15] == 0 and after[15, 25] == 0 and after[0, 0] == 5


def test_patch_memory_is_proportional_to_changed_area() -> None:
    m = np.zeros((8192, 8192), np.uint8)
    p = E.brush(m, (100, 100), (400, 130), 20, 1)
    assert p.count > 5000
    assert p.nbytes < 6 * p.count  # 4-byte index or 1 bit per box pixel, plus 1-byte old
    big = E.clear(np.ones((2000, 2000), np.uint8))
    assert big.packed is not None and big.nbytes < 2000 * 2000 * 1.2


def test_flood_fill_fills_only_the_connected_region() -> None:
    m = np.zeros((30, 30), np.uint8)
    m[10:20, 10:20] = 1
    m[13:17, 13:17] = 0  # a hole
    after = _roundtrip(m, E.flood_fill(m, 15.5, 15.5, 1))
    assert (after[10:20, 10:20] == 1).all() and after[0, 0] == 0
    assert E.flood_fill(m, 12.5, 12.5, 1) is None
    assert E.flood_fill(m, -1, 5, 1) is None


def test_polygon_fill_fills_inside_the_lasso() -> None:
    m = np.zeros((40, 40), np.uint8)
    after = _roundtrip(m, E.polygon_fill(m, [10, 30, 30, 10], [5, 5, 25, 25], 3))
    assert (after[5:25, 10:30] == 3).all()
    assert after.sum() == 3 * 20 * 20
    assert E.polygon_fill(m, [1, 2], [1, 2], 3) is None


def test_pick_returns_value_under_cursor() -> None:
    m = np.zeros((5, 5), np.uint8)
    m[2, 3] = 4
    assert E.pick(m, 3.9, 2.1) == 4
    assert E.pick(m, 9, 9) is None


def _noisy_disc(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:160, :160]
    ang = np.arctan2(yy - 80, xx - 80)
    radius = 40 + rng.normal(0, 1, 64)[((ang + np.pi) / (2 * np.pi) * 63).astype(int)] * 1.5
    return (np.hypot(yy - 80, xx - 80) <= radius).astype(np.uint8)


def test_smoothing_removes_jagged_edges_without_shrinking() -> None:
    m = _noisy_disc()
    area0, per0 = m.sum(), perimeter(m)
    after = _roundtrip(m, E.smooth(m, 2.0))
    assert abs(int(after.sum()) - int(area0)) / area0 < 0.02
    assert perimeter(after) < 0.9 * per0
    ideal = 2 * np.pi * np.sqrt(area0 / np.pi)
    assert perimeter(after) < 1.1 * ideal


def test_smoothing_keeps_instances_apart_and_their_areas() -> None:
    m = np.zeros((160, 240), np.int32)  # two touching noisy cells
    m[:, :160][_noisy_disc(1) == 1] = 7
    m[:, 78:238][_noisy_disc(2) == 1] = 9
    areas = {v: int((m == v).sum()) for v in (7, 9)}
    after = _roundtrip(m, E.smooth(m, 2.0))
    assert set(np.unique(after)) == {0, 7, 9}
    for v, a in areas.items():
        assert abs(int((after == v).sum()) - a) / a < 0.03


def test_smoothing_under_a_brush_changes_only_that_region() -> None:
    m = _noisy_disc()
    region = E.brush_region([(40, 80), (40, 60)], 20, m.shape)
    p = E.smooth(m, 2.0, region)
    assert p is not None
    changed = np.zeros(m.shape, bool)
    changed[p.pixels()] = True
    inside = np.zeros(m.shape, bool)
    y0, x0, y1, x1 = region.bbox
    inside[y0:y1, x0:x1] = region.inside
    assert not (changed & ~inside).any()


def test_whole_mask_smoothing_in_tiles_matches_one_pass() -> None:
    m = np.zeros((2100, 1100), np.uint8)
    for k, (cy, cx) in enumerate([(100, 100), (1020, 540), (2050, 1000)]):
        m[_disc(m.shape, cy, cx, 60)] = k % 2 + 1
    m[1000:1040:3, 500:560] = 0
    np.testing.assert_array_equal(_tiled_labels(m, 2.0, tile=512), E.smooth_labels(m, 2.0))


def test_fill_holes_uses_surrounding_value() -> None:
    m = np.zeros((40, 60), np.int32)
    m[5:35, 5:25] = 3
    m[5:35, 25:45] = 4
    m[15:20, 10:15] = 0  # hole in 3
    m[15:20, 22:28] = 0  # hole across the 3/4 border
    m[30:40, 50:55] = 6  # touches the border, its inside is not a hole
    after = _roundtrip(m, E.fill_holes(m))
    assert (after[15:20, 10:15] == 3).all()
    assert (after[15:20, 22:25] == 3).all() and (after[15:20, 25:28] == 4).all()
    assert after[0, 0] == 0
    assert E.fill_holes(after) is None
    # max_size keeps big holes
    assert E.fill_holes(m, max_size=10) is None


def test_remove_specks_removes_small_pieces_only() -> None:
    m = np.zeros((50, 50), np.int32)
    m[10:30, 10:30] = 1
    m[40, 40] = 1  # detached fragment of instance 1
    m[2:4, 2:4] = 2  # 4-px instance
    m[45:49, 2:6] = 3  # 16-px instance
    after = _roundtrip(m, E.remove_specks(m, 5))
    assert after[40, 40] == 0 and (after[2:4, 2:4] == 0).all()
    assert (after[45:49, 2:6] == 3).all() and (after[10:30, 10:30] == 1).all()
    assert E.remove_specks(after, 5) is None


def test_accept_prediction_whole_and_in_region() -> None:
    m = np.zeros((30, 30), np.uint8)
    pred = np.zeros_like(m)
    pred[5:25, 5:25] = 1
    np.testing.assert_array_equal(_roundtrip(m.copy(), E.accept_prediction(m, pred)), pred)
    region = E.polygon_region([0, 15, 15, 0], [0, 0, 30, 30], m.shape)
    after = _roundtrip(m, E.accept_prediction(m, pred, region))
    assert (after[5:25, 5:15] == 1).all() and not after[:, 15:].any()
    with pytest.raises(ValueError):
        E.accept_prediction(m, pred[:10])


def test_clear_and_new_mask() -> None:
    m = np.zeros((10, 10), np.uint16)
    assert E.clear(m) is None
    m[3:5, 3:5] = 9
    after = _roundtrip(m, E.clear(m))
    assert not after.any()
    n = E.new_mask((7, 8, 3), np.int32)
    assert n.shape == (7, 8) and n.dtype == np.int32 and not n.any()


def test_component_and_touching_value_find_the_enclosing_cell() -> None:
    m = np.zeros((20, 20), np.int32)
    m[2:12, 2:12] = 5
    m[5:8, 5:8] = 0
    comp = E.component_at(m, 6.5, 6.5)
    assert comp.inside.sum() == 9
    assert E.touching_value(m, comp) == 5


def test_edit_modules_load_neither_torch_nor_qt() -> None:
    import subprocess
    import sys

    code = (
        "import sys, cellseg_gui.core.editing.edits, cellseg_gui.core.editing.maskdoc\n"
        "print('\\n'.join(sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    mods = set(out.stdout.split())
    assert "torch" not in mods
    assert not any(m.startswith(("PySide6", "pyqtgraph")) for m in mods)
