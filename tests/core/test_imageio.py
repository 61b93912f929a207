"""Reading images and masks from every supported format, and every bad input a user
may hand the app, with files written to disk as real tools write them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from cellseg_gui.core.data import imageio
from cellseg_gui.core.data.imageio import (
    ImageReadError,
    atomic_write_bytes,
    atomic_write_text,
    image_info,
    read_image,
    read_mask,
)
from cellseg_gui.core.data.maskwrite import write_mask

RNG = np.random.default_rng(0)


def _ramp(dtype: str, shape: tuple[int, int] = (23, 31)) -> np.ndarray:
    data = np.arange(shape[0] * shape[1]).reshape(shape) % 200
    return (data * 3 - 100).astype(dtype) if np.dtype(dtype).kind != "u" else data.astype(dtype)


def _assert_clear(err: ImageReadError, path: Path, *words: str) -> None:
    """The message a user sees: "<file>: <problem>", one line, no traceback."""
    msg = str(err)
    assert msg.startswith(f"{path}: ")
    assert err.path == path
    assert "\n" not in msg and "Traceback" not in msg
    for word in words:
        assert word.lower() in msg.lower(), msg


# ----------------------------------------------------------------------------- TIFF


@pytest.mark.parametrize(
    "dtype", ["uint8", "uint16", "uint32", "int8", "int16", "int32", "float32", "float64"]
)
def test_tiff_keeps_values_and_dtype(tmp_path: Path, dtype: str) -> None:
    data = _ramp(dtype)
    if np.dtype(dtype).kind == "f":
        data = data / 7.0
        data = data.astype(dtype)
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, data)
    out = read_image(path)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, data)


def test_float16_tiff_widens_to_float32(tmp_path: Path) -> None:
    data = (_ramp("float32") / 10).astype(np.float16)
    tifffile.imwrite(tmp_path / "h.tif", data)
    out = read_image(tmp_path / "h.tif")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, data.astype(np.float32))


def _stack(tmp_path: Path, n: int = 3) -> tuple[Path, np.ndarray]:
    planes = np.stack([np.full((16, 20), 10 * (i + 1), np.uint16) for i in range(n)])
    planes[:, 0, 0] = np.arange(n)
    path = tmp_path / "stack.tif"
    with tifffile.TiffWriter(path) as tw:  # one page per plane, as Fiji saves stacks
        for p in planes:
            tw.write(p, photometric="minisblack")
    return path, planes


def test_multipage_tiff_plane_index(tmp_path: Path) -> None:
    path, planes = _stack(tmp_path)
    np.testing.assert_array_equal(read_image(path), planes[0])  # default plane 0
    np.testing.assert_array_equal(read_image(path, plane=2), planes[2])
    assert image_info(path)["pages"] == 3


@pytest.mark.parametrize("plane", [3, 17, -1])
def test_plane_out_of_range_is_clear(tmp_path: Path, plane: int) -> None:
    path, _ = _stack(tmp_path)
    with pytest.raises(ImageReadError) as info:
        read_image(path, plane=plane)
    _assert_clear(info.value, path, f"plane {plane}", "3 planes")


def test_ome_tiff_planes(tmp_path: Path) -> None:
    data = RNG.integers(0, 4000, size=(2, 3, 24, 32), dtype=np.uint16)
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "TCYX"})
    with tifffile.TiffFile(path) as tf:
        assert tf.is_ome
    assert image_info(path)["pages"] == 6
    # planes are numbered as stored: T-major, then C
    np.testing.assert_array_equal(read_image(path, plane=4), data[1, 1])
    np.testing.assert_array_equal(read_image(path, plane=0), data[0, 0])


def test_rgb_tiff_grey_by_default_or_kept(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    grey = read_image(tmp_path / "rgb.tif")
    assert grey.shape == (20, 24) and grey.dtype == np.uint8
    expected = np.rint(rgb.astype(float) @ [0.299, 0.587, 0.114])
    np.testing.assert_allclose(grey, expected, atol=0.51)
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.tif", channels="keep"), rgb)


def test_planar_rgb_tiff_channels_last(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, size=(3, 20, 24), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "p.tif", rgb, photometric="rgb", planarconfig="separate")
    out = read_image(tmp_path / "p.tif", channels="keep")
    np.testing.assert_array_equal(out, np.moveaxis(rgb, 0, -1))
    assert image_info(tmp_path / "p.tif")["shape"] == (20, 24, 3)


def test_bad_channels_argument(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "a.tif", _ramp("uint8"))
    with pytest.raises(ValueError, match="channels"):
        read_image(tmp_path / "a.tif", channels="rgb")


def test_all_nan_image_reads(tmp_path: Path) -> None:
    """Reading succeeds; normalisation reports it (see test_normalize / test_dataset)."""
    tifffile.imwrite(tmp_path / "nan.tif", np.full((8, 8), np.nan, np.float32))
    assert np.isnan(read_image(tmp_path / "nan.tif")).all()


# ----------------------------------------------------------------------------- Pillow


def test_png_8_and_16_bit(tmp_path: Path) -> None:
    a8 = _ramp("uint8")
    a16 = (_ramp("uint16") * 300).astype(np.uint16)
    Image.fromarray(a8).save(tmp_path / "a8.png")
    Image.fromarray(a16).save(tmp_path / "a16.png")
    out8, out16 = read_image(tmp_path / "a8.png"), read_image(tmp_path / "a16.png")
    assert out8.dtype == np.uint8 and out16.dtype == np.uint16
    np.testing.assert_array_equal(out8, a8)
    np.testing.assert_array_equal(out16, a16)
    assert image_info(tmp_path / "a16.png") == {
        "shape": a16.shape,
        "dtype": "uint16",
        "pages": 1,
        "format": "PNG",
    }


def test_rgba_png_drops_alpha(tmp_path: Path) -> None:
    rgba = RNG.integers(0, 256, size=(10, 12, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "c.png")
    kept = read_image(tmp_path / "c.png", channels="keep")
    np.testing.assert_array_equal(kept, rgba[..., :3])
    assert read_image(tmp_path / "c.png").shape == (10, 12)


def test_grey_saved_as_rgb_stays_exact(tmp_path: Path) -> None:
    grey = RNG.integers(0, 256, size=(10, 12), dtype=np.uint8)
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "g.bmp")
    np.testing.assert_array_equal(read_image(tmp_path / "g.bmp"), grey)


def test_bmp_rgb_and_jpeg(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.bmp")
    np.testing.assert_array_equal(read_image(tmp_path / "c.bmp", channels="keep"), rgb)
    smooth = np.tile(np.linspace(0, 250, 64).astype(np.uint8), (32, 1))
    Image.fromarray(smooth).save(tmp_path / "g.jpeg", quality=95)
    out = read_image(tmp_path / "g.jpeg")
    assert out.shape == (32, 64) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - smooth).max() <= 6  # lossy, but the same picture


def test_palette_png_image_gives_colours_mask_gives_indices(tmp_path: Path) -> None:
    idx = np.zeros((8, 8), np.uint8)
    idx[2:5, 2:5] = 1
    idx[6:, 6:] = 2
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10] + [0] * (256 * 3 - 9))
    im.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png"), idx)
    colour = read_image(tmp_path / "p.png", channels="keep")
    assert colour.shape == (8, 8, 3)
    assert tuple(colour[3, 3]) == (200, 10, 10)


# ----------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.tif"
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    _assert_clear(info.value, path, "not found")


@pytest.mark.parametrize("name", ["empty.tif", "empty.png", "empty.jpg"])
def test_zero_byte_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    _assert_clear(info.value, path, "empty", "0 bytes")
    with pytest.raises(ImageReadError):
        read_mask(path)


def test_truncated_tiff(tmp_path: Path) -> None:
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, RNG.integers(0, 60000, size=(128, 128), dtype=np.uint16))
    data = full.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as info:
        read_image(cut)
    _assert_clear(info.value, cut, "truncated")


def test_tiff_with_broken_header(tmp_path: Path) -> None:
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, np.zeros((64, 64), np.uint8))
    cut = tmp_path / "cut.tif"
    cut.write_bytes(full.read_bytes()[:40])  # header points past the end
    with pytest.raises(ImageReadError) as info:
        read_image(cut)
    _assert_clear(info.value, cut, "TIFF")
    with pytest.raises(ImageReadError):
        image_info(cut)


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("these are my notes, not an image\n")
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    _assert_clear(info.value, path, "not a valid PNG")
    with pytest.raises(ImageReadError):
        image_info(path)


def test_truncated_png(tmp_path: Path) -> None:
    full = tmp_path / "full.png"
    Image.fromarray(RNG.integers(0, 256, size=(256, 256), dtype=np.uint8)).save(full)
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[:20000])
    with pytest.raises(ImageReadError) as info:
        read_image(cut)
    _assert_clear(info.value, cut, "truncated")


def test_unsupported_dtype(tmp_path: Path) -> None:
    path = tmp_path / "complex.tif"
    tifffile.imwrite(path, np.ones((8, 8), np.complex64))
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    _assert_clear(info.value, path, "unsupported pixel type", "complex64")


def test_unsupported_extension_and_folder(tmp_path: Path) -> None:
    gif = tmp_path / "a.gif"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(gif)
    with pytest.raises(ImageReadError) as info:
        read_image(gif)
    _assert_clear(info.value, gif, "unsupported file type", ".gif")
    folder = tmp_path / "dir.tif"
    folder.mkdir()
    with pytest.raises(ImageReadError) as info:
        read_image(folder)
    _assert_clear(info.value, folder, "folder")


def test_error_str_and_attributes() -> None:
    err = ImageReadError("a/b.tif", "file is empty (0 bytes)")
    assert str(err) == "a/b.tif: file is empty (0 bytes)"
    assert err.problem == "file is empty (0 bytes)" and err.path == Path("a/b.tif")
    assert isinstance(err, ValueError)


# ----------------------------------------------------------------------------- masks


def test_read_mask_dtypes_kept(tmp_path: Path) -> None:
    m16 = np.zeros((10, 10), np.uint16)
    m16[2:5, 2:5] = 183
    m16[6:9, 6:9] = 4000
    tifffile.imwrite(tmp_path / "m.tif", m16)
    out = read_mask(tmp_path / "m.tif")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, m16)


def test_coloured_mask_refused_grey_rgb_mask_accepted(tmp_path: Path) -> None:
    lab = np.zeros((8, 8), np.uint8)
    lab[2:6, 2:6] = 3
    Image.fromarray(np.stack([lab] * 3, -1)).save(tmp_path / "grey_rgb.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "grey_rgb.png"), lab)
    colour = np.stack([lab, lab * 2, lab], -1)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(ImageReadError) as info:
        read_mask(tmp_path / "colour.png")
    _assert_clear(info.value, tmp_path / "colour.png", "colour channels")


def test_float_mask_whole_numbers_only(tmp_path: Path) -> None:
    good = np.array([[0, 1], [2, 7]], np.float32)
    tifffile.imwrite(tmp_path / "good.tif", good)
    out = read_mask(tmp_path / "good.tif")
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, good.astype(np.int32))
    tifffile.imwrite(tmp_path / "bad.tif", good + 0.5)
    with pytest.raises(ImageReadError) as info:
        read_mask(tmp_path / "bad.tif")
    _assert_clear(info.value, tmp_path / "bad.tif", "non-integer")


# ----------------------------------------------------------------------------- writing


def _labels(dtype: str, top: int) -> np.ndarray:
    m = np.zeros((30, 40), dtype)
    m[3:10, 3:10] = 1
    m[12:20, 20:35] = top
    return m


@pytest.mark.parametrize(
    "name,dtype,top",
    [
        ("m.png", "uint8", 255),
        ("m.png", "uint16", 40000),
        ("m.tif", "uint8", 200),
        ("m.tif", "uint16", 60000),
        ("m.tif", "uint32", 100000),
        ("m.tiff", "int32", 70000),
    ],
)
def test_write_mask_round_trip_keeps_dtype(tmp_path: Path, name: str, dtype: str, top: int):
    mask = _labels(dtype, top)
    path = tmp_path / name
    write_mask(path, mask)
    back = read_mask(path)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, mask)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


def test_write_mask_like_keeps_users_dtype_and_widens_when_needed(tmp_path: Path) -> None:
    original = tmp_path / "orig.png"
    Image.fromarray(_labels("uint8", 9)).save(original)
    edited = _labels("int32", 9)  # the editor works in int32
    write_mask(original, edited, like=original)
    assert read_mask(original).dtype == np.uint8
    np.testing.assert_array_equal(read_mask(original), edited)
    # cell 300 added: must not wrap around to 44 in a uint8 file
    edited[25:28, 1:4] = 300
    write_mask(original, edited, like=original)
    back = read_mask(original)
    assert back.dtype == np.uint16
    assert back[26, 2] == 300


def test_write_mask_refuses_lossy_and_oversized(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lossless"):
        write_mask(tmp_path / "m.jpg", _labels("uint8", 2))
    with pytest.raises(ValueError, match="PNG"):
        write_mask(tmp_path / "m.png", _labels("uint32", 70000))
    assert list(tmp_path.iterdir()) == []


def test_write_mask_failure_keeps_old_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "m.tif"
    old = _labels("uint16", 5)
    write_mask(path, old)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", boom)
    with pytest.raises(OSError, match="disk full"):
        write_mask(path, _labels("uint16", 7))
    np.testing.assert_array_equal(read_mask(path), old)
    assert [p.name for p in tmp_path.iterdir()] == ["m.tif"]


def test_written_files_have_normal_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        write_mask(tmp_path / "m.png", _labels("uint8", 2))
        atomic_write_text(tmp_path / "p.json", "{}")
    finally:
        os.umask(umask)
    for name in ("m.png", "p.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644


def test_atomic_write_helpers(tmp_path: Path) -> None:
    path = tmp_path / "project.json"
    atomic_write_text(path, '{"a": 1}')
    atomic_write_text(path, '{"a": 2, "name": "Zellkern"}')
    assert path.read_text(encoding="utf-8") == '{"a": 2, "name": "Zellkern"}'
    atomic_write_bytes(tmp_path / "w.bin", b"\x00\x01")
    assert (tmp_path / "w.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project.json", "w.bin"]


def test_image_extensions_contract() -> None:
    assert imageio.IMAGE_EXTS == (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


# ----------------------------------------------------------------------------- real data


def test_real_phase_contrast_tiff(phc_dir: Path) -> None:
    path = phc_dir / "images" / "set01.tif"
    img = read_image(path)
    assert img.shape == (1022, 1024) and img.dtype == np.uint16
    assert image_info(path) == {
        "shape": (1022, 1024),
        "dtype": "uint16",
        "pages": 1,
        "format": "TIFF",
    }
    mask = read_mask(phc_dir / "masks" / "set01.png")
    assert mask.dtype == np.uint8 and mask.shape == img.shape and mask.max() > 40


def test_real_nuclei_uint16_mask(nuclei_dir: Path) -> None:
    mask = read_mask(nuclei_dir / "masks" / "img2d.tif")
    assert mask.dtype == np.uint16
    assert len(np.unique(mask)) - 1 == 125 and mask.max() == 183


def test_a_damaged_tiff_is_reported_once_without_tifffiles_log_line(tmp_path: Path, caplog):
    """tifffile logged "<tifffile.TiffPages @N> invalid offset to first page N" beside our
    one-line error (twice under predict: header, then pixels); only ours is wanted, and
    tifffile's logger speaks again once the read is over."""
    import logging

    # as a writer that puts the page header after the pixels leaves a file cut short:
    # the TIFF header points to a first page beyond the end of the file
    cut = tmp_path / "cut.tif"
    pixels = RNG.integers(0, 60000, size=(64, 64), dtype=np.uint16).tobytes()
    cut.write_bytes(b"II*\x00" + (8 + 2 * len(pixels)).to_bytes(4, "little") + pixels)
    caplog.set_level(logging.DEBUG, logger="tifffile")
    with pytest.raises(ImageReadError) as info:
        image_info(cut)
    _assert_clear(info.value, cut, "TIFF")
    with pytest.raises(ImageReadError) as info:
        read_image(cut)
    _assert_clear(info.value, cut, "TIFF")
    assert [r for r in caplog.records if r.name.startswith("tifffile")] == []
    logging.getLogger("tifffile").warning("after the read")
    assert [r.getMessage() for r in caplog.records] == ["after the read"]
