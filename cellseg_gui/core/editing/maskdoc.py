"""One mask being edited, and saving it safely (torch-free, Qt-free).

What is edited is the mask in the meaning it was stored with, so a saved file keeps its
format: a class map (uint8 class ids) for "classes" and "binary" masks, and the instance
label image itself (int32 ids) for "instances" masks. The canvas shows a class map
(``display``): for class masks it is the edited array itself, so painting needs no copy;
for instance masks it is derived (background / cell / boundary, as the training target is)
and refreshed only around the changed rectangle.

Saving goes through :func:`cellseg_gui.core.data.maskwrite.write_mask`, which writes a temporary
file and renames it over the mask, so a crash at any moment leaves either the old or the new
mask, never half of one. Before the first save over a user's annotation, a byte-for-byte copy
is kept in ``masks/.cellseg-originals/`` so it can be restored.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cellseg_gui.core.data.fileio import bytes_sha256, file_sha256
from cellseg_gui.core.data.imageio import atomic_write_bytes, read_mask
from cellseg_gui.core.data.masks import detect_mask_mode, instances_to_classes
from cellseg_gui.core.data.maskwrite import encode_mask

ORIGINALS_DIR = ".cellseg-originals"
_MODES = ("binary", "classes", "instances")


def original_path(mask_path: str | os.PathLike[str]) -> Path:
    """Where the untouched copy of ``mask_path`` is kept."""
    p = Path(mask_path)
    return p.parent / ORIGINALS_DIR / p.name


def keep_original(mask_path: str | os.PathLike[str]) -> bool:
    """Copy the mask file aside unless a copy exists already; True if a copy was made.

    Only the first edit copies, so the copy is always the user's own annotation, however
    many autosaves follow. A mask that does not exist yet (a new mask) has no original.
    """
    src = Path(mask_path)
    dst = original_path(src)
    if dst.exists() or not src.exists():
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(dst, src.read_bytes())
    return True


def has_original(mask_path: str | os.PathLike[str]) -> bool:
    return original_path(mask_path).is_file()


def restore_original_file(mask_path: str | os.PathLike[str]) -> bool:
    """Put the original bytes back over the mask (atomically); False if there is no copy."""
    src = original_path(mask_path)
    if not src.is_file():
        return False
    atomic_write_bytes(mask_path, src.read_bytes())
    return True


def _encoded(path: Path, stored: np.ndarray, like: Path | None) -> bytes:
    keep_original(path)
    if like is None:
        orig = original_path(path)
        like = orig if orig.is_file() else None
    path.parent.mkdir(parents=True, exist_ok=True)
    return encode_mask(path, stored, like=like)


def save_mask(
    mask_path: str | os.PathLike[str], stored: np.ndarray, *, like: Path | None = None
) -> None:
    """Keep the original if needed, then write ``stored`` atomically in the file's format.

    Safe to call from a worker thread with an array nobody else modifies (a snapshot).
    """
    path = Path(mask_path)
    atomic_write_bytes(path, _encoded(path, stored, like))


@contextlib.contextmanager
def _save_lock(path: Path) -> Iterator[None]:
    """An advisory lock on the mask folder around check-and-write, so two cellseg windows
    (or processes) saving the same mask take turns; a no-op where flock is missing."""
    try:
        import fcntl
    except ImportError:  # Windows: the check before the write still stands
        yield
        return
    lock = path.parent / ".cellseg-save.lock"
    try:
        fh = open(lock, "a+b")  # noqa: SIM115 - closed below
    except OSError:  # a read-only folder: the write below names the mask, not the lock
        yield
        return
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        except OSError:  # e.g. NFS without lockd (ENOLCK): the check still stands
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class MaskConflict(RuntimeError):
    """The mask file is no longer what this window read or last wrote: another window or
    program changed it. Nothing was written."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: changed on disk since it was opened")


def disk_hash(path: str | os.PathLike[str]) -> str | None:
    """The file's SHA-256, or None when there is no file."""
    try:
        return file_sha256(path)
    except FileNotFoundError:
        return None


def save_mask_checked(
    mask_path: str | os.PathLike[str], stored: np.ndarray, expected: str | None
) -> str:
    """Write the mask only if the file is still the one with hash ``expected`` (None: no
    file); returns the new file's hash. Raises MaskConflict and writes nothing otherwise,
    so a stale copy never replaces someone else's strokes."""
    path = Path(mask_path)
    orig = original_path(path)
    like = orig if orig.is_file() else (path if path.is_file() else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = encode_mask(path, stored, like=like)  # the slow part, before taking the lock
    # Check and write as one step for cellseg: under the lock no other cellseg save can
    # land between them, and the hash returned is that of the bytes written, never a
    # re-read that another writer could have changed meanwhile. The user's original is
    # kept only once the file is known to be the one this window read.
    with _save_lock(path):
        if disk_hash(path) != expected:
            raise MaskConflict(path)
        keep_original(path)
        atomic_write_bytes(path, data)
    return bytes_sha256(data)


class MaskDocument:
    """The edited mask of one image: ``data`` (what tools change), ``display`` (what the
    canvas shows), and how to turn ``data`` back into the file's values."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        data: np.ndarray,
        mode: str,
        *,
        boundary_width: int = 2,
        binary_value: int = 1,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"unknown mask mode {mode!r}")
        self.path = Path(path)
        self.mode = mode
        self.boundary_width = int(boundary_width)
        self.binary_value = int(binary_value)
        self.data = data
        self.display = data if mode != "instances" else instances_to_classes(data, boundary_width)
        # the file as this document last read or wrote it: its hash, and its content in
        # this document's values (what an outside change is merged against)
        self.disk_sha: str | None = disk_hash(self.path)
        self.disk_data: np.ndarray = data.copy()

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], mode: str = "auto", boundary_width: int = 2
    ) -> MaskDocument:
        """Read a mask file; ``mode`` is the project's mask mode, or "auto" to guess from
        this file (an instance mask with two cells would look like classes: prefer the
        project's mode)."""
        stored = read_mask(path)
        if mode == "auto":
            mode = detect_mask_mode(stored)
        if mode == "instances":
            if stored.size and stored.min() < 0:
                raise ValueError(f"{path}: instance ids must be >= 0")
            return cls(path, stored.astype(np.int32), mode, boundary_width=boundary_width)
        if mode == "binary":
            value = int(stored.max()) if stored.size and stored.max() > 1 else 1
            data = (stored != 0).astype(np.uint8)
            return cls(path, data, mode, boundary_width=boundary_width, binary_value=value)
        if stored.size and (stored.min() < 0 or stored.max() > 255):
            raise ValueError(f"{path}: class ids must be 0..255")
        return cls(path, stored.astype(np.uint8), mode, boundary_width=boundary_width)

    @classmethod
    def empty(
        cls,
        path: str | os.PathLike[str],
        shape: tuple[int, ...],
        mode: str = "classes",
        boundary_width: int = 2,
    ) -> MaskDocument:
        """A new all-background mask for an image that has none (saved on first edit)."""
        dtype = np.int32 if mode == "instances" else np.uint8
        return cls(path, np.zeros(shape[:2], dtype=dtype), mode, boundary_width=boundary_width)

    @property
    def is_instances(self) -> bool:
        return self.mode == "instances"

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape  # type: ignore[return-value]

    def next_instance_id(self) -> int:
        return int(self.data.max()) + 1 if self.data.size else 1

    def refresh_display(self, y0: int, x0: int, y1: int, x1: int) -> tuple[int, int, int, int]:
        """Bring ``display`` up to date after ``data`` changed inside the box; returns the box
        of ``display`` that may have changed (larger for instances: boundaries move)."""
        if not self.is_instances:
            return y0, x0, y1, x1
        h, w = self.data.shape
        bw = self.boundary_width + 1
        Y0, X0, Y1, X1 = max(y0 - bw, 0), max(x0 - bw, 0), min(y1 + bw, h), min(x1 + bw, w)
        pad = bw + 1
        P0, Q0, P1, Q1 = max(Y0 - pad, 0), max(X0 - pad, 0), min(Y1 + pad, h), min(X1 + pad, w)
        classes = instances_to_classes(self.data[P0:P1, Q0:Q1], self.boundary_width)
        self.display[Y0:Y1, X0:X1] = classes[Y0 - P0 : Y1 - P0, X0 - Q0 : X1 - Q0]
        return Y0, X0, Y1, X1

    def stored(self) -> np.ndarray:
        """A copy of the mask in the file's values (0/255 binary kept), safe to hand to a
        saving thread while editing goes on."""
        if self.mode == "binary" and self.binary_value != 1:
            return self.data * np.uint8(self.binary_value)
        return self.data.copy()

    def values_from_stored(self, stored: np.ndarray) -> np.ndarray:
        """File values (e.g. a restored original) -> this document's edited values."""
        if self.mode == "binary":
            return (stored != 0).astype(self.data.dtype)
        return stored.astype(self.data.dtype)

    def save(self) -> None:
        """Write the mask now (synchronously)."""
        save_mask(self.path, self.stored())
