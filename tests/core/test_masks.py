"""Mask modes, instances <-> three classes, and instance matching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cellseg_gui.core.data.imageio import read_mask
from cellseg_gui.core.data.masks import (
    classes_to_instances,
    detect_dataset_mode,
    detect_mask_mode,
    instances_to_classes,
    mask_to_classes,
)
from cellseg_gui.core.scores.instances import score_instances


def _two_touching_cells() -> np.ndarray:
    inst = np.zeros((40, 60), np.uint16)
    inst[10:30, 10:30] = 7
    inst[10:30, 30:50] = 12  # shares an edge with cell 7
    return inst


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to renumbering."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = {(int(x), int(y)) for x, y in zip(a[a > 0], b[b > 0], strict=True)}
    return len(pairs) == len({x for x, _ in pairs}) == len({y for _, y in pairs})


# ----------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    "values,dtype,mode",
    [
        ((0, 255), np.uint8, "binary"),
        ((0, 1), np.uint8, "binary"),
        ((0,), np.uint8, "binary"),
        ((0, 1, 2), np.uint8, "classes"),
        ((0, 2, 4), np.uint8, "classes"),
        ((0, 3, 17, 183, 4000), np.uint16, "instances"),
        (tuple(range(0, 40)), np.uint8, "instances"),
        ((0, 5, 70000), np.uint32, "instances"),
    ],
)
def test_detect_mask_mode(values: tuple[int, ...], dtype: type, mode: str) -> None:
    mask = np.zeros((20, 40), dtype)
    for i, v in enumerate(values):
        mask[:, i] = v
    assert detect_mask_mode(mask) == mode


def test_dataset_mode_few_cells_image_follows_the_rest() -> None:
    few = np.zeros((10, 10), np.uint8)
    few[1:3, 1:3], few[5:7, 5:7] = 1, 2  # two cells: looks like class ids alone
    many = np.arange(100, dtype=np.uint8).reshape(10, 10)
    assert detect_mask_mode(few) == "classes"
    assert detect_dataset_mode([few, many]) == "instances"
    assert detect_dataset_mode([few, few]) == "classes"
    assert detect_dataset_mode([np.zeros((3, 3), np.uint8)]) == "binary"


def test_real_masks_detected(phc_dir: Path, em_dir: Path, nuclei_dir: Path) -> None:
    for path in sorted((phc_dir / "masks").iterdir()):
        assert detect_mask_mode(read_mask(path)) == "instances", path
    for path in sorted((em_dir / "masks").iterdir()):
        assert detect_mask_mode(read_mask(path)) == "binary", path
    assert detect_mask_mode(read_mask(nuclei_dir / "masks" / "img2d.tif")) == "instances"


# ----------------------------------------------------------------------------- to classes


def test_binary_0_255_becomes_0_1() -> None:
    mask = np.array([[0, 255], [255, 0]], np.uint8)
    labels, n, mode = mask_to_classes(mask)
    assert mode == "binary" and n == 2 and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, [[0, 1], [1, 0]])


def test_classes_mode_and_override() -> None:
    mask = np.array([[0, 1], [2, 4]], np.uint8)
    labels, n, mode = mask_to_classes(mask)
    assert (mode, n) == ("classes", 5)
    np.testing.assert_array_equal(labels, mask)
    labels, n, mode = mask_to_classes(mask, mode="binary")
    assert (mode, n) == ("binary", 2)
    np.testing.assert_array_equal(labels, [[0, 1], [1, 1]])


def test_mask_to_classes_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="negative"):
        mask_to_classes(np.array([[0, -1]], np.int32))
    with pytest.raises(ValueError, match="instance mask"):
        mask_to_classes(np.array([[0, 300]], np.uint16), mode="classes")
    with pytest.raises(ValueError, match="unknown mask mode"):
        mask_to_classes(np.zeros((2, 2), np.uint8), mode="instance")


@pytest.mark.parametrize("width", [1, 2, 3])
def test_boundary_is_an_inner_rim_of_the_given_width(width: int) -> None:
    inst = np.zeros((40, 40), np.uint16)
    inst[10:30, 10:30] = 5
    labels, n, mode = mask_to_classes(inst, mode="instances", boundary_width=width)
    assert (n, mode) == (3, "instances")
    inner = 20 - 2 * width
    assert (labels == 1).sum() == inner * inner
    assert (labels[10 + width : 30 - width, 10 + width : 30 - width] == 1).all()
    # the rim is corner-rounded (Euclidean distance), so it is at most the square ring
    assert (labels == 2).sum() <= 20 * 20 - inner * inner
    assert (labels[10:30, 10] == 2).all() and (labels[:10] == 0).all()


def test_touching_cells_are_separated_and_image_border_is_no_edge() -> None:
    inst = _two_touching_cells()
    labels = instances_to_classes(inst, boundary_width=2)
    assert (labels[10:30, 28:32] == 2).all()  # 2 + 2 px between the two cells
    edge = np.zeros((10, 10), np.uint8)
    edge[:, :5] = 3  # cell cut by the left image border
    lab = instances_to_classes(edge, boundary_width=1)
    assert lab[5, 0] == 1 and lab[5, 4] == 2


# ----------------------------------------------------------------------------- back to instances


def test_round_trip_recovers_touching_cells_exactly() -> None:
    inst = _two_touching_cells()
    back = classes_to_instances(instances_to_classes(inst))
    assert back.dtype == np.int32 and back.max() == 2
    assert _same_partition(inst, back)


def test_without_boundaries_touching_cells_merge() -> None:
    """Why the boundary class exists: plain foreground loses the split."""
    inst = _two_touching_cells()
    back = classes_to_instances(instances_to_classes(inst, boundary_width=0))
    assert back.max() == 1


def test_small_specks_dropped_and_boundary_only_cell_kept() -> None:
    labels = np.zeros((40, 40), np.uint8)
    labels[2:4, 2:4] = 1  # 4-pixel speck of noise
    labels[20:36, 20:36] = 2
    labels[22:34, 22:34] = 1  # a normal cell
    labels[5:25, 8:11] = 2  # a thin cell, predicted all boundary
    inst = classes_to_instances(labels, min_size=15)
    assert inst.max() == 2
    assert inst[3, 3] == 0
    assert inst[21, 21] != 0 and inst[21, 21] == inst[30, 30]
    assert inst[10, 9] != 0 and inst[10, 9] != inst[30, 30]


def test_binary_prediction_gives_components() -> None:
    labels = np.zeros((20, 20), np.uint8)
    labels[1:6, 1:6] = 1
    labels[10:18, 10:18] = 1
    inst = classes_to_instances(labels)
    assert inst.max() == 2


def test_probabilities_steer_the_growth() -> None:
    """A boundary pixel between two cores joins the one reachable through low boundary
    probability, not merely the nearest."""
    labels = np.full((5, 11), 2, np.uint8)
    labels[:, :3] = 1
    labels[:, 8:] = 1
    probs = np.zeros((3, 5, 11), np.float32)
    probs[2] = 0.9
    probs[2][:, 3:7] = 0.1  # easy way from the left core up to column 6
    flat = classes_to_instances(labels, min_size=1)
    steered = classes_to_instances(labels, probs=probs, min_size=1)
    assert flat[2, 6] == flat[2, 10]  # nearest core is the right one
    assert steered[2, 6] == steered[2, 0]


# ----------------------------------------------------------------------------- matching


def test_real_round_trip_recovers_cells(phc_dir: Path) -> None:
    """instances -> 3 classes -> instances on all 15 hand-drawn usiigaci masks."""
    tp = n_gt = 0
    for path in sorted((phc_dir / "masks").glob("*.png")):
        gt = read_mask(path)
        labels, n, _ = mask_to_classes(gt, mode="auto", boundary_width=2)
        assert n == 3
        r = score_instances(gt, classes_to_instances(labels))
        assert r.matched / r.n_true >= 0.95, (path.name, r)
        assert r.mean_matched_iou > 0.9, (path.name, r)
        tp += r.matched
        n_gt += r.n_true
    assert n_gt == 1000  # 15 images, 41..114 cells each
    assert tp / n_gt >= 0.95


def test_real_nuclei_round_trip(nuclei_dir: Path) -> None:
    gt = read_mask(nuclei_dir / "masks" / "img2d.tif")
    back = classes_to_instances(instances_to_classes(gt))
    r = score_instances(gt, back)
    assert r.matched / r.n_true >= 0.95 and r.n_true == 125


def test_using_the_data_layer_loads_no_torch(tmp_path: Path) -> None:
    """The lazily imported helpers (watershed, assignment, tifffile, Pillow) must not pull
    torch in either: the window reads and converts masks before torch has loaded."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from cellseg_gui.core.data import imageio, masks, maskwrite, normalize\n"
        "from cellseg_gui.core.scores import instances\n"
        "inst = np.zeros((20, 20), np.uint16); inst[2:9, 2:9] = 40; inst[9:18, 9:18] = 77\n"
        f"maskwrite.write_mask({str(tmp_path / 'm.tif')!r}, inst)\n"
        f"m = imageio.read_mask({str(tmp_path / 'm.tif')!r})\n"
        "back = masks.classes_to_instances(masks.mask_to_classes(m)[0], min_size=1)\n"
        "assert instances.score_instances(m, back).matched == 2\n"
        "normalize.percentile_normalize(m)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_touching_only_boundary_marks_just_the_contact() -> None:
    inst = np.zeros((10, 30), np.uint8)
    inst[2:8, 2:10], inst[2:8, 10:18] = 5, 9  # two touching cells
    inst[2:8, 21:28] = 3  # one alone
    c = instances_to_classes(inst, 1, touching_only=True)
    assert set(np.unique(c[:, 9:11])) == {0, 2}  # the contact line, both sides
    assert (c[2:8, 21:28] == 1).all()  # a lone cell has no boundary
    assert (c[2:8, 2:9] == 1).all() and (c[2:8, 11:18] == 1).all()
    full = instances_to_classes(inst, 1)
    assert (full[2:8, 21:28] == 2).sum() > 0


def test_count_cells_counts_the_ids_present_however_they_are_numbered() -> None:
    from cellseg_gui.core.data.masks import count_cells

    m = np.zeros((10, 10), np.int32)
    m[1, 1], m[2, 2], m[3, 3] = 4, 9, 9  # gaps, a cell of two pixels
    assert count_cells(m) == 2
    assert count_cells(np.array([[0, 70000], [5, 0]])) == 2  # ids beyond the mask's size
    assert count_cells(np.zeros((3, 3), np.uint8)) == 0 and count_cells(np.zeros((0, 0))) == 0
