"""Every file the program writes goes through one atomic writer that honours the umask:
a colleague on a shared lab drive can read an export as well as a mask, and a failed write
leaves the old file whole and no temporary behind."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from cellseg_gui.core.config import ModelConfig, NormConfig
from cellseg_gui.core.data.fileio import atomic_file, atomic_path, atomic_write_text
from cellseg_gui.core.data.maskwrite import write_mask
from cellseg_gui.core.data.project import Project
from cellseg_gui.core.export import formats as F
from cellseg_gui.core.export.bioimageio import export_bioimageio
from cellseg_gui.core.model import bundle as B
from cellseg_gui.core.scores.measure import write_csv, write_rois
from cellseg_gui.core.training.checkpoint import _atomic_torch_save


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(in_channels=1, n_classes=3, hidden=4, depth=2)
    meta = B.make_meta(
        cfg, mask_mode="instances", boundary_width=2, channels="grey", norm=NormConfig(), name="t"
    )
    path = tmp_path_factory.mktemp("b") / "t.cellseg"
    from cellseg_gui.core.model.unet import build_model

    B.save_bundle(path, build_model(cfg).eval(), meta)
    return path


def _cells() -> np.ndarray:
    cells = np.zeros((40, 50), np.int32)
    cells[5:15, 5:15] = 1
    cells[20:30, 25:40] = 2
    return cells


def _project(p: Path) -> None:
    (p.parent / "images").mkdir(exist_ok=True)
    Project(p.parent).save()


WRITERS: dict[str, tuple[str, Callable[[Path, Path], None]]] = {
    "mask png": ("m.png", lambda p, b: write_mask(p, _cells())),
    "mask tif": ("m.tif", lambda p, b: write_mask(p, _cells())),
    "project": ("cellseg-project.json", lambda p, b: _project(p)),
    "bundle": (
        "copy.cellseg",
        lambda p, b: B.save_bundle(p, B.load_bundle(b).model, B.read_bundle_meta(b)),
    ),
    "checkpoint": ("last.ckpt", lambda p, b: _atomic_torch_save({"x": torch.ones(2)}, p)),
    "torchscript": ("m.pt", lambda p, b: F.export_torchscript(b, p)),
    "onnx": ("m.onnx", lambda p, b: F.export_onnx(b, p)),
    "bioimage.io": ("m.bioimageio.zip", lambda p, b: export_bioimageio(b, p)),
    "cells csv": ("c.csv", lambda p, b: write_csv(p, [{"label": 1, "area": 3}])),
    "rois": ("c.zip", lambda p, b: write_rois(p, _cells())),
}


@pytest.mark.parametrize("kind", list(WRITERS))
def test_every_writer_honours_the_umask(kind, tmp_path, bundle_path) -> None:
    name, write = WRITERS[kind]
    if kind == "onnx":
        pytest.importorskip("onnxruntime")  # an optional extra, not our own module
    old = os.umask(0o022)
    try:
        target = tmp_path / name
        write(target, bundle_path)
        assert stat.S_IMODE(target.stat().st_mode) == 0o644, kind
        os.umask(0o027)
        write(target, bundle_path)  # a rewrite keeps the file's own mode
        assert stat.S_IMODE(target.stat().st_mode) == 0o644, kind
        (tmp_path / "second").mkdir()
        fresh = tmp_path / "second" / name
        write(fresh, bundle_path)
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o640, kind
    finally:
        os.umask(old)
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    target = tmp_path / "p.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_file(target) as fh:
        fh.write(b"half a fi")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    with pytest.raises(OSError), atomic_path(target) as tmp:
        tmp.write_text("new")
        raise OSError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs, where the test may mount one (root with CAP_SYS_ADMIN)."""
    import shutil
    import subprocess

    where = tmp_path / "tiny"
    where.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True)


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tiny_disk) -> None:
    target = tiny_disk / "m.png"
    write_mask(target, _cells())
    before = target.read_bytes()
    big = np.random.default_rng(0).integers(0, 2**31, (400, 400), dtype=np.int64)
    with pytest.raises(OSError) as err:
        atomic_write_text(target, big.tobytes().hex())  # about 2.5 MB into 64 KiB
    assert err.value.errno == 28 and str(target) in str(err.value)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["m.png"]
