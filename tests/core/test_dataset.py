"""Finding pairs in the folders users have, and loading a data set that contains bad
files: the bad ones are reported by name, the rest load."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from cellseg_gui.core.config import NormConfig
from cellseg_gui.core.data.dataset import (
    DatasetError,
    ImagePair,
    find_pairs,
    load_samples,
)
from cellseg_gui.core.data.fileio import file_sha256
from cellseg_gui.core.data.imageio import ImageReadError

RNG = np.random.default_rng(3)


def _img(h: int = 32, w: int = 40) -> np.ndarray:
    return RNG.integers(100, 4000, size=(h, w), dtype=np.uint16)


def _instances(h: int = 32, w: int = 40, n: int = 12) -> np.ndarray:
    m = np.zeros((h, w), np.uint16)
    for i in range(n):
        y, x = (i // 4) * 10 + 1, (i % 4) * 10 + 1
        m[y : y + 8, x : x + 8] = 3 * i + 5  # ids with gaps
    return m


def _layout(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    return root


# ----------------------------------------------------------------------------- find_pairs


def test_images_masks_layout_any_extension(tmp_path: Path) -> None:
    root = _layout(tmp_path / "data")
    tifffile.imwrite(root / "images" / "b.tif", _img())
    Image.fromarray(_img().astype(np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(_img().astype(np.uint8)).save(root / "images" / "c.jpg")
    Image.fromarray(_instances().astype(np.uint8)).save(root / "masks" / "a.png")
    tifffile.imwrite(root / "masks" / "b.tiff", _instances())
    (root / "images" / "._a.png").write_bytes(b"macOS junk")
    (root / "images" / "notes.txt").write_text("not an image")
    pairs = find_pairs(root)
    assert [p.name for p in pairs] == ["a", "b", "c"]
    assert pairs[0] == ImagePair("a", root / "images" / "a.png", root / "masks" / "a.png")
    assert pairs[1].mask_path == root / "masks" / "b.tiff"
    assert pairs[2].mask_path is None  # to be annotated


def test_masks_folder_accepts_name_mask(tmp_path: Path) -> None:
    root = _layout(tmp_path)
    tifffile.imwrite(root / "images" / "x.tif", _img())
    tifffile.imwrite(root / "masks" / "x_masks.tif", _instances())
    assert find_pairs(root)[0].mask_path == root / "masks" / "x_masks.tif"


def test_flat_layout_mask_and_masks_suffixes(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "cell1.tif", _img())
    tifffile.imwrite(tmp_path / "cell1_mask.tif", _instances())
    Image.fromarray(_img().astype(np.uint8)).save(tmp_path / "cell2.png")
    Image.fromarray(_instances().astype(np.uint8)).save(tmp_path / "cell2_masks.png")
    tifffile.imwrite(tmp_path / "cell3.tif", _img())
    pairs = find_pairs(tmp_path)
    assert [(p.name, p.mask_path) for p in pairs] == [
        ("cell1", tmp_path / "cell1_mask.tif"),
        ("cell2", tmp_path / "cell2_masks.png"),
        ("cell3", None),
    ]


def test_same_stem_two_images_get_unique_names(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "a.tif", _img())
    Image.fromarray(_img().astype(np.uint8)).save(tmp_path / "a.png")
    names = [p.name for p in find_pairs(tmp_path)]
    assert sorted(names) == ["a.png", "a.tif"]


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        find_pairs(tmp_path / "nowhere")
    assert str(info.value) == f"{tmp_path / 'nowhere'}: folder not found"
    with pytest.raises(DatasetError) as info:
        find_pairs(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: no images found")
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        find_pairs(tmp_path)
    (tmp_path / "file.tif").write_bytes(b"x")
    with pytest.raises(DatasetError, match="not a folder"):
        find_pairs(tmp_path / "file.tif")


# ----------------------------------------------------------------------------- load_samples


def test_load_good_pairs(tmp_path: Path) -> None:
    root = _layout(tmp_path)
    for name in ("a", "b"):
        tifffile.imwrite(root / "images" / f"{name}.tif", _img())
        tifffile.imwrite(root / "masks" / f"{name}.tif", _instances())
    samples, errors = load_samples(find_pairs(root), norm=NormConfig())
    assert errors == []
    s = samples[0]
    assert s.name == "a" and s.image.shape == (1, 32, 40) and s.image.dtype == np.float32
    assert s.target.dtype == np.uint8 and set(np.unique(s.target)) == {0, 1, 2}
    assert s.n_classes == 3 and s.mask_mode == "instances"
    assert s.sha256 == hashlib.sha256((root / "images" / "a.tif").read_bytes()).hexdigest()
    assert file_sha256(root / "images" / "a.tif") == s.sha256


def test_bad_files_reported_rest_loaded(tmp_path: Path) -> None:
    root = _layout(tmp_path)
    good, nan, text, size, nomask = (root / "images" / f"{n}.tif" for n in "abcde")
    tifffile.imwrite(good, _img())
    tifffile.imwrite(root / "masks" / "a.tif", _instances())
    tifffile.imwrite(nan, np.full((32, 40), np.nan, np.float32))
    tifffile.imwrite(root / "masks" / "b.tif", _instances())
    text.write_text("hello")
    tifffile.imwrite(root / "masks" / "c.tif", _instances())
    tifffile.imwrite(size, _img())
    tifffile.imwrite(root / "masks" / "d.tif", _instances(30, 40))
    tifffile.imwrite(nomask, _img())
    samples, errors = load_samples(find_pairs(root), norm=NormConfig())
    assert [s.name for s in samples] == ["a"]
    msgs = [str(e) for e in errors]
    assert len(errors) == 4 and all(isinstance(e, ImageReadError) for e in errors)
    assert msgs[0] == f"{nan}: image is all NaN"
    assert msgs[1].startswith(f"{text}: not a readable TIFF")
    assert errors[2].path == root / "masks" / "d.tif"  # the mask is the file at fault
    # sizes as the README gives them: height x width, said once
    assert msgs[2].endswith("mask is 30 x 40 but its image d.tif is 32 x 40 (height x width)")
    assert msgs[3] == f"{nomask}: no mask found for this image"
    # images still to be annotated are fine when masks are not required
    samples, errors = load_samples(find_pairs(root), require_masks=False)
    assert "e" in [s.name for s in samples]
    assert next(s for s in samples if s.name == "e").target is None
    assert len(errors) == 3


def test_mask_values_beyond_model_classes(tmp_path: Path) -> None:
    root = _layout(tmp_path)
    classes = np.zeros((32, 40), np.uint8)
    classes[5:10, 5:10], classes[20:25, 20:25] = 1, 4
    small = np.zeros((32, 40), np.uint8)
    small[5:10, 5:10] = 2
    for name, mask in (("big", classes), ("ok", small)):
        tifffile.imwrite(root / "images" / f"{name}.tif", _img())
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    samples, errors = load_samples(find_pairs(root), mask_mode="classes", n_classes=3)
    assert [s.name for s in samples] == ["ok"] and samples[0].n_classes == 3
    assert len(errors) == 1 and errors[0].path == root / "masks" / "big.png"
    assert "up to 4" in str(errors[0]) and "3 classes" in str(errors[0])
    # without a model, the data set decides: 5 classes for both
    samples, errors = load_samples(find_pairs(root))
    assert errors == [] and {s.n_classes for s in samples} == {5}
    assert {s.mask_mode for s in samples} == {"classes"}


def test_mode_decided_per_dataset_and_overridable(tmp_path: Path) -> None:
    root = _layout(tmp_path)
    few = np.zeros((32, 40), np.uint8)
    few[2:10, 2:10], few[12:20, 12:20] = 1, 2  # two cells: ids look like classes
    tifffile.imwrite(root / "images" / "few.tif", _img())
    Image.fromarray(few).save(root / "masks" / "few.png")
    tifffile.imwrite(root / "images" / "many.tif", _img())
    tifffile.imwrite(root / "masks" / "many.tif", _instances())
    samples, errors = load_samples(find_pairs(root))
    assert errors == [] and {s.mask_mode for s in samples} == {"instances"}
    few_sample = samples[0]
    assert few_sample.target[2, 2] == 2 and few_sample.target[5, 5] == 1  # rim + core
    samples, _ = load_samples(find_pairs(root), mask_mode="binary")
    assert {s.n_classes for s in samples} == {2} and samples[0].target.max() == 1


def test_rgb_images_kept_as_channels(tmp_path: Path) -> None:
    Image.fromarray(RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "c.png")
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(tmp_path / "c_mask.png")
    grey, _ = load_samples(find_pairs(tmp_path))
    keep, _ = load_samples(find_pairs(tmp_path), channels="keep")
    assert grey[0].image.shape == (1, 16, 16) and keep[0].image.shape == (3, 16, 16)
    assert grey[0].mask_mode == "binary" and grey[0].target.max() == 1


# ----------------------------------------------------------------------------- real data


def test_real_em_binary(em_dir: Path) -> None:
    pairs = find_pairs(em_dir)
    assert len(pairs) == 30 and pairs[0].name == "00"
    samples, errors = load_samples(pairs[:4], norm=NormConfig())
    assert errors == [] and len(samples) == 4
    assert samples[0].mask_mode == "binary" and samples[0].n_classes == 2
    assert set(np.unique(samples[0].target)) == {0, 1}
    assert samples[0].image.shape == (1, 512, 512)


def test_real_phase_contrast_instances(phc_dir: Path) -> None:
    pairs = find_pairs(phc_dir)
    assert [p.name for p in pairs][:2] == ["set01", "set05"] and len(pairs) == 15
    assert all(p.mask_path is not None for p in pairs)
    samples, errors = load_samples(pairs[:2], boundary_width=2)
    assert errors == []
    assert samples[0].mask_mode == "instances" and samples[0].n_classes == 3
    assert samples[0].image.shape == (1, 1022, 1024)
    assert set(np.unique(samples[0].target)) == {0, 1, 2}


def test_real_nuclei_uint16_instances(nuclei_dir: Path) -> None:
    samples, errors = load_samples(find_pairs(nuclei_dir))
    assert errors == [] and samples[0].mask_mode == "instances"
    assert samples[0].target.shape == (512, 512)
