"""Data inspection on small files written in tmp_path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from cellseg_gui.core.data.dataset import ImagePair as Pair  # the project's own pairs
from cellseg_gui.core.data.inspect import inspect_dataset


def _img(seed: int, shape=(32, 40)) -> np.ndarray:
    return np.random.default_rng(seed).integers(10, 200, shape, dtype=np.uint8)


def _mask(shape=(32, 40), value=1) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[4:12, 5:20] = value
    return m


def _write(tmp: Path, name: str, image: np.ndarray, mask: np.ndarray | None) -> Pair:
    (tmp / "images").mkdir(exist_ok=True)
    (tmp / "masks").mkdir(exist_ok=True)
    ip = tmp / "images" / f"{name}.tif"
    tifffile.imwrite(ip, image)
    mp = None
    if mask is not None:
        mp = tmp / "masks" / f"{name}.png"
        Image.fromarray(mask).save(mp)
    return Pair(name, ip, mp)


def test_clean_set_has_statistics_and_no_problems(tmp_path):
    pairs = [_write(tmp_path, f"a{i}", _img(i), _mask()) for i in range(3)]
    rep = inspect_dataset(pairs)
    assert rep.problems == []
    assert rep.mask_mode == "binary" and rep.n_classes == 2
    s = rep.images[0]
    assert s.shape == (32, 40) and s.dtype == "uint8"
    assert 10 <= s.min <= s.percentiles["p1"] <= s.percentiles["p99"] <= s.max < 200
    assert abs(s.class_fractions["1"] - 8 * 15 / (32 * 40)) < 1e-9
    assert s.saturated == 0.0
    text = rep.to_text()
    assert "3 image(s), 3 with masks" in text and "no problems found" in text
    assert "a0" in text and "32 x 40" in text


def test_every_problem_kind_is_found(tmp_path):
    pairs = [
        _write(tmp_path, "good", _img(1), _mask()),
        _write(tmp_path, "nomask", _img(2), None),
        _write(tmp_path, "wrongsize", _img(3), _mask((30, 40))),
        _write(tmp_path, "empty", _img(4), np.zeros((32, 40), np.uint8)),
        _write(tmp_path, "dup", _img(1), _mask()),
        _write(tmp_path, "classes", _img(5), _mask(value=5)),
    ]
    sat = _img(6)
    sat[:8] = 255
    pairs.append(_write(tmp_path, "saturated", sat, _mask()))
    nan = np.full((32, 40), np.nan, np.float32)
    pairs.append(_write(tmp_path, "nan", nan, _mask()))
    bad = tmp_path / "images" / "text.png"
    bad.write_text("not an image")
    pairs.append(Pair("text", bad, None))
    mixed = _write(tmp_path, "mixed", _img(7), None)
    inst = np.zeros((32, 40), np.uint16)
    inst[1:5, 1:5], inst[10:15, 10:15] = 40, 41
    tifffile.imwrite(tmp_path / "masks" / "mixed.tif", inst)
    pairs.append(Pair("mixed", mixed.image_path, tmp_path / "masks" / "mixed.tif"))
    full = _write(tmp_path, "full", _img(8), np.ones((32, 40), np.uint8))
    pairs.append(full)
    stack = tmp_path / "images" / "stack.tif"
    tifffile.imwrite(stack, np.stack([_img(k) for k in range(9, 14)]))
    pairs.append(Pair("stack", stack, _write(tmp_path, "stackmask", _img(9), _mask()).mask_path))
    rep = inspect_dataset(pairs, n_classes=3)
    by_kind = {}
    for p in rep.problems:
        by_kind.setdefault(p.kind, []).append(Path(p.path).name)
    assert by_kind["no_mask"] == ["nomask.tif", "text.png"]
    assert by_kind["size_mismatch"] == ["wrongsize.png"]
    assert by_kind["empty_mask"] == ["empty.png"]
    assert by_kind["duplicate"] == ["dup.tif"]
    assert by_kind["values_outside"] == ["classes.png"]
    assert by_kind["saturated"] == ["saturated.tif"]
    assert by_kind["nan"] == ["nan.tif"]
    # a 100% foreground mask and a stack read as its first plane were not said
    assert by_kind["full_mask"] == ["full.png"]
    assert by_kind["stack"] == ["stack.tif"]
    assert by_kind["unreadable"] == ["text.png"]
    assert len(by_kind["mixed_modes"]) == 1  # binary, classes and instance masks together
    assert {Path(p.path).name for p in rep.errors} >= {
        "wrongsize.png",
        "classes.png",
        "nan.tif",
        "text.png",
    }
    text = rep.to_text()
    # sizes as every other message gives them: height x width, said once
    assert "mask is 30 x 40 but its image is 32 x 40 (height x width)" in text
    row = next(line for line in text.splitlines() if line.startswith("wrongsize "))
    assert "(mask of another size: see below)" in row  # its row does not read as fine
    assert "size (h x w)" in text and "   32 x 40 " in text
    assert "values 5 outside the model's 3 classes" in text
    assert "same file content as" in text
    assert "holds 5 planes" in text and "mask is all foreground" in text
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["n_images"] == 12 and len(d["problems"]) == len(rep.problems)


def test_instance_masks_count_cells_and_sixteen_bit_saturation(tmp_path):
    inst = np.zeros((32, 40), np.uint16)
    inst[2:10, 2:10] = 17
    inst[12:20, 12:20] = 300
    img = np.random.default_rng(0).integers(0, 4000, (32, 40)).astype(np.uint16)
    img[0, :20] = 4095  # 12-bit camera saturation in a 16-bit file
    rep = inspect_dataset([_write(tmp_path, "cells", img, None)])
    mp = tmp_path / "masks" / "cells.tif"
    tifffile.imwrite(mp, inst)
    rep = inspect_dataset([Pair("cells", tmp_path / "images" / "cells.tif", mp)])
    s = rep.images[0]
    assert s.mask_mode == "instances" and s.n_instances == 2 and rep.n_classes == 3
    assert abs(s.class_fractions["cells"] - 128 / 1280) < 1e-9
    assert abs(s.saturated - 20 / 1280) < 1e-9
    assert "2 cells" in rep.to_text()


def test_inspect_stays_torch_free():
    code = "import sys, cellseg_gui.core.data.inspect, cellseg_gui.core.training.diagnostics; "
    code += "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_large_image_is_inspected_on_a_subsample(tmp_path, monkeypatch):
    """A 20000 x 20000 slide took 82 s and 4.3 GB: large images are sampled, from a
    memory map where the TIFF allows it, and the report says so."""
    import cellseg_gui.core.data.inspect as insp

    monkeypatch.setattr(insp, "SAMPLE_ABOVE", 100_000)  # "large", at test size
    monkeypatch.setattr(insp, "SAMPLE_TARGET", 10_000)
    big = _img(3, shape=(600, 500)).astype(np.uint16) * 10
    pair = _write(tmp_path, "slide", big, _mask((600, 500)))
    read = []
    monkeypatch.setattr(insp, "read_image", lambda *a, **k: read.append(a) or big)
    rep = inspect_dataset([pair], n_classes=3)
    stats = rep.images[0]
    assert stats.shape == (600, 500) and stats.sampled == 6
    assert read == []  # the memory map was enough: the image was never decoded whole
    assert abs(stats.percentiles["p50"] - float(np.median(big))) < 0.05 * float(np.ptp(big))
    assert "inspected on a regular subsample: slide (every 6th pixel)" in rep.to_text()
    assert not rep.of_kind("size_mismatch")


def test_16_bit_values_read_whole_and_an_instance_masks_background_is_named(tmp_path):
    """'6.554e+04' read as more than a 16-bit image holds; and an instance mask's
    fractions said '0:75.0%, cells:25.0%', leaving a new user to guess what 0 is."""
    img = np.linspace(4000, 65535, 32 * 40).reshape(32, 40).astype(np.uint16)
    ids = np.zeros((32, 40), np.uint8)
    for k in range(20):  # twenty cells, as an instance mask numbers them
        r, c = divmod(k, 5)
        ids[1 + 8 * r : 6 + 8 * r, 1 + 8 * c : 6 + 8 * c] = k + 1
    rep = inspect_dataset([_write(tmp_path, "cells", img, ids)])
    row = next(line for line in rep.to_text().splitlines() if line.startswith("cells "))
    assert " 65535 " in row and " 4000 " in row and "e+04" not in row
    assert "background:" in row and "cells:" in row and " 0:" not in row
