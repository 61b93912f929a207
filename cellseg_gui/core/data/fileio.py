"""Writing files so that a crash, a full disk or a kill never leaves half a file, and
hashing them: the one place for both.

Every file the program writes (masks, project files, bundles, checkpoints, exports, CSVs,
ROI sets) goes through :func:`atomic_file` or :func:`atomic_path`: the bytes go to a
temporary file beside the target (``.NAME.XXXXXXXX.tmp``), are flushed to disk, and the
temporary is renamed over the target. The result gets the permissions a plain ``open(...,
"w")`` would give (the target's own mode when it exists, else 0666 minus the umask), so an
export on a shared lab drive is as readable as any other file there, not 0600 as
``tempfile.mkstemp`` makes it. Standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = [
    "atomic_file",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "bytes_sha256",
    "file_sha256",
    "remove_stale_temporaries",
]

_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")  # mkstemp's 8 characters


def _plain_mode(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):  # directory fsync: POSIX only
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield the path of a new temporary file beside ``path`` for a writer that wants a
    file name (``torch.jit.save``, ``onnx.save``, a zip); when the block ends without an
    exception the temporary is synced and renamed over ``path``. On an exception it is
    removed and ``path`` is untouched. The folder is created when missing."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _plain_mode(target))
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if exc.filename is None or str(exc.filename) == str(tmp):
            # "No space left on device" from a write names no file: name the target
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(directory)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Yield a binary file object whose content replaces ``path`` atomically when the block
    ends without an exception (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        yield fh
        fh.flush()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_file(path) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Replace ``path`` with ``text`` atomically."""
    atomic_write_bytes(path, text.encode(encoding))


def remove_stale_temporaries(
    folder: str | os.PathLike[str], older_than_s: float = 600.0
) -> list[Path]:
    """Delete our own temporary files (``.NAME.XXXXXXXX.tmp``, left by a save that was
    killed) in ``folder``. Only those untouched for ``older_than_s``: a second window may
    be writing one right now. Returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    now = time.time()
    for p in entries:
        if not _TEMP_NAME.match(p.name):
            continue
        try:
            if p.is_file() and now - p.stat().st_mtime > older_than_s:
                p.unlink()
                removed.append(p)
        except OSError:
            continue
    return removed


def bytes_sha256(data: bytes) -> str:
    """Hex SHA-256 of some bytes."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks (images can be gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
