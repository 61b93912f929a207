"""Reading microscopy images and label masks, and writing masks safely.

Torch-free on purpose: the window lists and shows images before torch has loaded, and the
CLI reports a bad file without paying for a torch import.

Every problem with an input file becomes an :class:`ImageReadError` whose message is
``"<file>: <problem>"``, one line a biologist can act on (never a traceback), so the CLI,
the window and ``load_samples`` can all report bad files the same way and go on with the
rest.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

# One atomic writer for every file the program writes lives in core.data.fileio; masks are
# this module's business, so its callers may import the writers from here too.
from cellseg_gui.core.data.fileio import atomic_write_bytes as atomic_write_bytes
from cellseg_gui.core.data.fileio import atomic_write_text as atomic_write_text
from cellseg_gui.core.data.fileio import remove_stale_temporaries as remove_stale_temporaries

IMAGE_EXTS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
TIFF_EXTS = (".tif", ".tiff")
MASK_WRITE_EXTS = (".tif", ".tiff", ".png")

# Dtypes a raw image or mask may have once read. float16 is widened to float32 and bool to
# uint8 on reading; anything else (complex, 64-bit unsigned beyond int64, structured...)
# cannot be an intensity or a label and is refused with a clear message.
_SUPPORTED_KINDS = ("u", "i", "f")

# ITU-R BT.601 luma, the weights most imaging software uses for RGB -> grey.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


class ImageReadError(ValueError):
    """A file that cannot be used as an image or mask; ``str()`` is ``"path: problem"``."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes
        return (type(self), (str(self.path), self.problem))


# --------------------------------------------------------------------------- helpers


def size_text(shape: tuple[int, ...]) -> str:
    """An image's size as every message and the README give it: height x width
    ("1022 x 1024"); callers add "(height x width)" once per message."""
    return f"{int(shape[0])} x {int(shape[1])}"


def _plane_index(path, plane: int | None, n: int) -> int:
    """The plane to read (the first by default), or ImageReadError naming the range."""
    index = 0 if plane is None else int(plane)
    if not 0 <= index < n:
        raise ImageReadError(
            path,
            f"plane {index} is out of range (the file has {n} plane{'s' if n != 1 else ''}: "
            f"0..{n - 1})",
        )
    return index


def _short(exc: BaseException) -> str:
    """One line describing a library exception, without its traceback."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if len(text) > 160:
        text = text[:157] + "..."
    return text


def _check_file(path: Path) -> None:
    """The problems common to every format, checked before any decoder sees the file."""
    if not path.exists():
        raise ImageReadError(path, "file not found")
    if path.is_dir():
        raise ImageReadError(path, "is a folder, not an image file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({_short(exc)})") from None
    if size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTS:
        raise ImageReadError(
            path, f"unsupported file type '{path.suffix}' (supported: {', '.join(IMAGE_EXTS)})"
        )


def _native(arr: np.ndarray, path: Path) -> np.ndarray:
    """Native byte order and a supported dtype; float16 -> float32, bool -> uint8."""
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype.kind not in _SUPPORTED_KINDS or arr.dtype.itemsize > 8:
        raise ImageReadError(
            path,
            f"unsupported pixel type {arr.dtype} (expected 8/16/32-bit integer or float)",
        )
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in TIFF_EXTS


# --------------------------------------------------------------------------- TIFF


def _tiff_page(tf: Any, path: Path, plane: int | None) -> Any:
    """The page for ``plane`` (page number, as Fiji counts stack slices from 0)."""
    tf.pages.useframes = False
    n = len(tf.pages)
    if n == 0:
        raise ImageReadError(path, "truncated or corrupt TIFF (no readable image in it)")
    return tf.pages[_plane_index(path, plane, n)]


def _check_tiff_complete(page: Any, path: Path) -> None:
    """A TIFF cut short (interrupted copy or download) would otherwise read as zeros or a
    cryptic buffer error; compare where its data should end with the file size."""
    size = path.stat().st_size
    offsets = tuple(page.dataoffsets or ())
    counts = tuple(page.databytecounts or ())
    if offsets and counts:
        end = max(o + c for o, c in zip(offsets, counts, strict=False))
        if end > size:
            raise ImageReadError(
                path, f"TIFF is truncated (image data needs {end} bytes, the file has {size})"
            )


class _ThisThread(logging.Filter):
    """Drops the records logged by one thread: the one reading a file whose problems we
    report ourselves. Other threads' reads (the window loads in the background) still log."""

    def __init__(self) -> None:
        super().__init__()
        self.ident = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.ident


@contextmanager
def _quiet_tifffile() -> Iterator[None]:
    """tifffile logs what it finds wrong with a damaged file ("invalid offset to first
    page ...") before raising or returning no pages; the ImageReadError says it in the
    user's words, so the logger's line would only repeat it, cryptically."""
    log = logging.getLogger("tifffile")
    quiet = _ThisThread()
    log.addFilter(quiet)
    try:
        yield
    finally:
        log.removeFilter(quiet)


def _read_tiff(path: Path, plane: int | None) -> np.ndarray:
    import tifffile

    try:
        with _quiet_tifffile(), tifffile.TiffFile(path) as tf:
            page = _tiff_page(tf, path, plane)
            _check_tiff_complete(page, path)
            arr = page.asarray()
            axes = str(getattr(page, "axes", ""))
    except ImageReadError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise ImageReadError(path, f"not a readable TIFF ({_short(exc)})") from None
    arr = np.asarray(arr)
    # Planar RGB / multi-sample pages come as (S, Y, X): make the channels last.
    if arr.ndim == 3 and axes.startswith("S"):
        arr = np.moveaxis(arr, 0, -1)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim not in (2, 3):
        raise ImageReadError(path, f"unexpected TIFF plane shape {arr.shape} (axes {axes})")
    return _native(arr, path)


# --------------------------------------------------------------------------- Pillow


def _open_pillow(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    kind = path.suffix.lower().lstrip(".").upper()
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        raise ImageReadError(path, f"not a valid {kind} image (unrecognised content)") from None
    except Exception as exc:
        raise ImageReadError(path, f"not a readable {kind} image ({_short(exc)})") from None


def _read_pillow(path: Path, plane: int | None, *, as_mask: bool) -> np.ndarray:
    kind = path.suffix.lower().lstrip(".").upper()
    with _open_pillow(path) as im:
        n_frames = int(getattr(im, "n_frames", 1) or 1)
        index = _plane_index(path, plane, n_frames)
        try:
            if index:
                im.seek(index)
            im.load()
            mode = im.mode
            if mode == "P" and not as_mask:
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode == "PA":
                im = im.convert("P") if as_mask else im.convert("RGBA")
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            elif mode == "1":
                im = im.convert("L")
                if not as_mask:
                    return _native(np.asarray(im), path)
                return (np.asarray(im) > 0).astype(np.uint8)
            arr = np.array(im)
            mode = im.mode
        except ImageReadError:
            raise
        except Exception as exc:
            problem = _short(exc)
            if "truncated" in problem.lower():
                raise ImageReadError(path, f"{kind} file is truncated") from None
            raise ImageReadError(path, f"not a readable {kind} image ({problem})") from None
    # Alpha is opacity, not signal: drop it (RGBA -> RGB, LA -> L).
    if mode in ("RGBA", "LA") and arr.ndim == 3:
        arr = arr[..., :-1]
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
    return _native(arr, path)


# --------------------------------------------------------------------------- public


def _read_plane(path: Path, plane: int | None, *, as_mask: bool) -> np.ndarray:
    _check_file(path)
    if _is_tiff(path):
        return _read_tiff(path, plane)
    return _read_pillow(path, plane, as_mask=as_mask)


def to_grey(arr: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H, W) keeping the dtype, so raw images stay raw.

    Grey stored as RGB (R == G == B) returns the first channel exactly; true colour uses
    BT.601 luma on the first three channels (alpha ignored); other channel counts average.
    """
    if arr.ndim == 2:
        return arr
    if arr.shape[-1] == 1:
        return arr[..., 0]
    if arr.shape[-1] in (2,):  # grey + alpha
        return arr[..., 0]
    first = arr[..., 0]
    if (
        arr.shape[-1] in (3, 4)
        and np.array_equal(first, arr[..., 1])
        and np.array_equal(first, arr[..., 2])
    ):
        return first.copy()
    if arr.shape[-1] in (3, 4):
        grey = arr[..., :3].astype(np.float64) @ _LUMA
    else:
        grey = arr.astype(np.float64).mean(axis=-1)
    if arr.dtype.kind in "ui":
        info = np.iinfo(arr.dtype)
        return np.clip(np.rint(grey), info.min, info.max).astype(arr.dtype)
    return grey.astype(arr.dtype)


def read_image(
    path: str | os.PathLike[str], *, plane: int | None = None, channels: str = "grey"
) -> np.ndarray:
    """Read one 2D plane of an image in its original dtype.

    ``channels="grey"`` turns colour into (H, W); ``"keep"`` returns (H, W, C) for colour
    images (alpha dropped) and (H, W) for grey ones. ``plane`` is the page of a multi-page
    TIFF (default 0). NaN in float images is kept: reading succeeds and normalisation
    reports an all-NaN image, since NaN marks missing pixels in some pipelines.
    """
    if channels not in ("grey", "keep"):
        raise ValueError(f"channels must be 'grey' or 'keep', not {channels!r}")
    p = Path(path)
    arr = _read_plane(p, plane, as_mask=False)
    if channels == "grey":
        arr = to_grey(arr)
    return arr


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a label image as an integer (H, W) array in its stored dtype.

    Palette PNGs give their indices (the labels, not the display colours). A mask saved
    as grey RGB is accepted; a truly coloured one is refused, since its colours are not
    class ids. Float masks are accepted when every value is a whole number (int32 then).
    """
    p = Path(path)
    arr = _read_plane(p, 0, as_mask=True)
    if arr.ndim == 3:
        first = arr[..., 0]
        if all(np.array_equal(first, arr[..., i]) for i in range(1, arr.shape[-1])):
            arr = first.copy()
        else:
            raise ImageReadError(
                p,
                f"mask has {arr.shape[-1]} colour channels; expected a single-channel "
                "label image (one integer per pixel)",
            )
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            raise ImageReadError(p, "mask holds NaN or infinite values")
        if not np.array_equal(arr, np.round(arr)):
            raise ImageReadError(
                p, f"mask holds non-integer values ({arr.dtype}); expected integer labels"
            )
        if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
            raise ImageReadError(p, "mask values do not fit 32-bit integers")
        arr = arr.astype(np.int32)
    return arr


def image_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Shape, dtype and page count from the header only (no pixel decoding), for lists.

    Keys: ``shape`` (one plane as read with channels kept), ``dtype`` (str), ``pages``
    (int), ``format`` ("TIFF", "PNG", ...).
    """
    p = Path(path)
    _check_file(p)
    if _is_tiff(p):
        import tifffile

        try:
            with _quiet_tifffile(), tifffile.TiffFile(p) as tf:
                page = _tiff_page(tf, p, 0)
                shape = tuple(int(s) for s in page.shape)
                axes = str(page.axes)
                dtype = np.dtype(page.dtype)
                pages = len(tf.pages)
        except ImageReadError:
            raise
        except Exception as exc:
            raise ImageReadError(p, f"not a readable TIFF ({_short(exc)})") from None
        if len(shape) == 3 and axes.startswith("S"):
            shape = (shape[1], shape[2], shape[0])
        while len(shape) > 2 and shape[0] == 1:
            shape = shape[1:]
        if dtype == np.float16:
            dtype = np.dtype(np.float32)
        return {"shape": shape, "dtype": str(dtype), "pages": pages, "format": "TIFF"}
    with _open_pillow(p) as im:
        w, h = im.size
        mode = im.mode
        pages = int(getattr(im, "n_frames", 1) or 1)
        fmt = str(im.format or p.suffix.lstrip(".").upper())
    dtype = {
        "1": "uint8",
        "L": "uint8",
        "P": "uint8",
        "LA": "uint8",
        "RGB": "uint8",
        "RGBA": "uint8",
        "CMYK": "uint8",
        "YCbCr": "uint8",
        "I;16": "uint16",
        "I;16B": "uint16",
        "I;16L": "uint16",
        "I": "int32",
        "F": "float32",
    }.get(mode, "uint8")
    channels = {"RGB": 3, "RGBA": 3, "P": 3, "CMYK": 3, "YCbCr": 3}.get(mode, 1)
    shape: tuple[int, ...] = (h, w, channels) if channels > 1 else (h, w)
    return {"shape": shape, "dtype": dtype, "pages": pages, "format": fmt}
