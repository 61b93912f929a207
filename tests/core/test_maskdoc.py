"""Editing documents save in the format they were loaded in, keep the original, and restore."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from cellseg_gui.core.data.imageio import read_mask
from cellseg_gui.core.data.masks import instances_to_classes
from cellseg_gui.core.data.maskwrite import write_mask
from cellseg_gui.core.editing import edits as E
from cellseg_gui.core.editing.maskdoc import (
    MaskDocument,
    has_original,
    original_path,
    restore_original_file,
)


def test_binary_255_png_keeps_its_values_and_dtype(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    m = np.zeros((20, 30), np.uint8)
    m[5:10, 5:10] = 255
    write_mask(path, m)
    doc = MaskDocument.load(path)
    assert doc.mode == "binary" and set(np.unique(doc.display)) == {0, 1}
    E.brush(doc.data, (20, 15), None, 3, 1).apply(doc.data)
    doc.save()
    back = read_mask(path)
    assert back.dtype == np.uint8 and set(np.unique(back)) == {0, 255}
    np.testing.assert_array_equal(back, doc.data * 255)


def test_first_save_keeps_the_original_and_restore_brings_it_back(tmp_path: Path) -> None:
    path = tmp_path / "b.tif"
    m = np.zeros((16, 16), np.uint16)
    m[2:6, 2:6] = 3
    write_mask(path, m)
    original_bytes = path.read_bytes()
    doc = MaskDocument.load(path, mode="classes")
    E.clear(doc.data).apply(doc.data)
    doc.save()
    assert has_original(path) and original_path(path).read_bytes() == original_bytes
    assert read_mask(path).dtype == np.uint16 and not read_mask(path).any()
    E.brush(doc.data, (8, 8), None, 3, 1).apply(doc.data)
    doc.save()  # later saves never overwrite the kept original
    assert original_path(path).read_bytes() == original_bytes
    assert restore_original_file(path)
    np.testing.assert_array_equal(read_mask(path), m)


def test_new_mask_has_no_original(tmp_path: Path) -> None:
    path = tmp_path / "masks" / "c.tif"
    doc = MaskDocument.empty(path, (10, 12, 3), mode="classes")
    E.brush(doc.data, (3, 3), None, 3, 2).apply(doc.data)
    doc.save()
    assert not has_original(path)
    np.testing.assert_array_equal(read_mask(path), doc.data)


def test_instance_masks_edit_ids_and_derive_classes_locally(tmp_path: Path) -> None:
    path = tmp_path / "d.tif"
    m = np.zeros((60, 60), np.int32)
    m[10:30, 10:30] = 4
    m[10:30, 30:50] = 9
    write_mask(path, m)
    doc = MaskDocument.load(path, mode="instances")
    new_id = doc.next_instance_id()
    assert new_id == 10
    p = E.brush(doc.data, (20, 45), None, 9, new_id)
    p.apply(doc.data)
    doc.refresh_display(*p.bbox)
    np.testing.assert_array_equal(doc.display, instances_to_classes(doc.data, 2))
    doc.save()
    back = read_mask(path)
    np.testing.assert_array_equal(back, doc.data)
    assert 10 in np.unique(back)


def test_instance_ids_beyond_uint8_widen_instead_of_wrapping(tmp_path: Path) -> None:
    path = tmp_path / "e.png"
    m = np.zeros((10, 10), np.uint8)
    m[1:3, 1:3] = 255
    m[5:7, 5:7] = 254
    write_mask(path, m)
    doc = MaskDocument.load(path, mode="instances")
    E.brush(doc.data, (8, 8), None, 1, doc.next_instance_id()).apply(doc.data)
    doc.save()
    assert read_mask(path).max() == 256


_SESSION = textwrap.dedent(
    """
    import sys, numpy as np
    from cellseg_gui.core.editing import edits as E
    from cellseg_gui.core.editing.maskdoc import MaskDocument
    folder = sys.argv[1]
    docs = [MaskDocument.empty(f"{folder}/m{i}.{ext}", (512, 512), "classes")
            for i, ext in enumerate(["tif", "png", "tif"])]
    for d in docs:
        d.save()
    print("ready", flush=True)
    k = 0
    while True:
        k += 1
        for d in docs:
            # Each saved state is "every pixel of row 0..k% is class k%": checkable.
            v = k % 5 + 1
            E.accept_prediction(d.data, np.full(d.data.shape, v, np.uint8)).apply(d.data)
            d.save()
    """
)


@pytest.mark.slow
def test_killing_the_process_mid_save_leaves_every_mask_readable(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for _round in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", _SESSION, str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(float(rng.uniform(0.05, 0.6)))
        finally:
            proc.kill()
            proc.wait()
        for i, ext in enumerate(["tif", "png", "tif"]):
            m = read_mask(tmp_path / f"m{i}.{ext}")
            assert m.shape == (512, 512)
            # A complete file holds one state: a single value everywhere.
            assert len(np.unique(m)) == 1


def test_a_checked_save_writes_only_over_the_version_read_and_survives_a_lockless_share(
    tmp_path, monkeypatch
) -> None:
    """The hash check and the write are one step; a changed file is left alone and is not
    taken as the user's original; a folder where flock fails (NFS without lockd) still
    saves."""
    import errno

    from cellseg_gui.core.editing.maskdoc import (
        MaskConflict,
        disk_hash,
        original_path,
        save_mask_checked,
    )

    path = tmp_path / "masks" / "a.tif"
    path.parent.mkdir()
    first = np.zeros((8, 8), np.uint8)
    write_mask(path, first)
    seen = disk_hash(path)
    outside = first.copy()
    outside[0, 0] = 2
    write_mask(path, outside)  # another program changed it after we read it
    mine = first.copy()
    mine[4, 4] = 1
    with pytest.raises(MaskConflict):
        save_mask_checked(path, mine, seen)
    assert read_mask(path)[0, 0] == 2 and not original_path(path).exists()

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr("fcntl.flock", no_locks)
    new = save_mask_checked(path, mine, disk_hash(path))
    assert new == disk_hash(path) and read_mask(path)[4, 4] == 1
    assert read_mask(original_path(path))[0, 0] == 2  # the version on disk before our save
