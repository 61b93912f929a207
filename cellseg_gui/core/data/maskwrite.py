"""Writing label masks: one atomic writer for every mask file (the editor's saves, the
sample project, ``cellseg predict``), in the dtype the mask needs and never wrapped, and the
mark that tells a mask ``cellseg predict`` wrote from one a person drew. Reading is
``core.data.imageio``'s."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from cellseg_gui.core.data.fileio import atomic_file as _atomic_file
from cellseg_gui.core.data.imageio import MASK_WRITE_EXTS, image_info

_WIDEN = (np.uint8, np.uint16, np.uint32)


def _mask_dtype(mask: np.ndarray, wanted: np.dtype, *, png: bool) -> np.dtype:
    """``wanted`` when every label fits it, else the smallest unsigned type that does:
    an edit that adds cell 256 to a uint8 mask must not wrap around to 0."""
    lo = int(mask.min()) if mask.size else 0
    hi = int(mask.max()) if mask.size else 0
    if wanted.kind in "ui":
        info = np.iinfo(wanted)
        if info.min <= lo and hi <= info.max:
            return wanted
    if lo < 0:
        if png:
            raise ValueError("PNG masks cannot hold negative labels; save as .tif")
        return np.dtype(np.int32)
    for cand in _WIDEN:
        if hi <= np.iinfo(cand).max and (not png or cand != np.uint32):
            return np.dtype(cand)
    raise ValueError(f"labels up to {hi} do not fit a {'16-bit PNG' if png else 'TIFF'} mask")


# What a mask file written by ``cellseg predict`` says it is (a TIFF's Software tag, a PNG's
# "Software" text): predict replaces such files without asking, and no other
PREDICTION_SOFTWARE = "cellseg_gui prediction"


def is_prediction_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a mask that ``cellseg predict`` wrote (``PREDICTION_SOFTWARE``);
    False for anything else, also a file that cannot be read."""
    p = Path(path)
    try:
        if p.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(p) as im:
                return im.info.get("Software") == PREDICTION_SOFTWARE
        import tifffile

        with tifffile.TiffFile(p) as tf:
            return tf.pages[0].software == PREDICTION_SOFTWARE
    except Exception:  # noqa: BLE001 - any unreadable file is not ours
        return False


def write_mask(
    path: str | os.PathLike[str],
    mask: np.ndarray,
    *,
    like: str | os.PathLike[str] | None = None,
    software: str | None = None,
) -> None:
    """Write a label mask atomically, as .tif or .png (from ``path``'s suffix); see
    ``encode_mask`` for the dtype. ``software`` is written into the file (TIFF tag, PNG
    text): ``PREDICTION_SOFTWARE`` marks a prediction."""
    data = encode_mask(path, mask, like=like, software=software)
    with _atomic_file(Path(path)) as fh:
        fh.write(data)


def encode_mask(
    path: str | os.PathLike[str],
    mask: np.ndarray,
    *,
    like: str | os.PathLike[str] | None = None,
    software: str | None = None,
) -> bytes:
    """The bytes of a label mask file, .tif or .png (from ``path``'s suffix).

    The dtype is the mask's own, or that of ``like`` (the user's original file) so an
    edited uint8 PNG stays a uint8 PNG; labels that do not fit are widened, never wrapped.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in MASK_WRITE_EXTS:
        raise ValueError(
            f"{target}: masks are saved as .tif or .png (lossless), not '{target.suffix}'"
        )
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{target}: a mask must be 2D (H, W), got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "ui":
        if (
            arr.dtype.kind == "f"
            and np.all(np.isfinite(arr))
            and np.array_equal(arr, np.round(arr))
        ):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{target}: a mask must hold integer labels, got {arr.dtype}")
    png = suffix == ".png"
    wanted = np.dtype(image_info(like)["dtype"]) if like is not None else arr.dtype
    if wanted.kind not in "ui":  # e.g. a float TIFF as ``like``
        wanted = np.dtype(np.int32)
    if png and wanted not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        wanted = np.dtype(np.uint16)  # PNG stores 8 or 16 bits only
    elif wanted.itemsize > 4:
        wanted = np.dtype(np.uint32 if wanted.kind == "u" else np.int32)
    dtype = _mask_dtype(arr, np.dtype(wanted), png=png)
    out = np.ascontiguousarray(arr.astype(dtype))
    buf = io.BytesIO()
    if png:
        from PIL import Image

        info = None
        if software:
            from PIL.PngImagePlugin import PngInfo

            info = PngInfo()
            info.add_text("Software", software)
        # uint8 -> "L", uint16 -> "I;16"
        Image.fromarray(out).save(buf, format="PNG", pnginfo=info)
    else:
        import tifffile

        tifffile.imwrite(
            buf, out, photometric="minisblack", compression="zlib", software=software or None
        )
    return buf.getvalue()
