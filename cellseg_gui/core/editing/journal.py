"""A stroke journal per open mask, so that no finished stroke dies with a crash.

Masks are saved about a second after a stroke, on a background thread. A ``kill -9``, a
power cut or a crash inside that second used to lose the stroke. Now every change to an
open mask (a stroke, an undo, a redo) is appended to a small journal beside the mask and
flushed to disk (``fsync``) the moment the stroke ends, before the save is even queued:

    masks/.cellseg-journal/NAME.tif.journal

The journal starts with a header naming the SHA-256 of the mask file it applies to, then
one record per change (the bounding-box patch of :mod:`core.editing.edits`, the direction, a CRC).
When a save has written the mask, the records it contains are dropped and the header
names the new file. Opening a mask whose journal still holds records for exactly the file
on disk replays them: the strokes come back, and the user is told. A journal for another
version of the file (changed elsewhere since) is set aside, never applied to the wrong
mask. A record cut short by the crash ends the replay; everything before it is used.

Numpy and the standard library only: torch-free and Qt-free.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellseg_gui.core.data.fileio import atomic_write_bytes, file_sha256
from cellseg_gui.core.editing.edits import Patch

__all__ = ["JOURNAL_DIR", "MaskJournal", "Recovered", "journal_path", "recover"]

JOURNAL_DIR = ".cellseg-journal"
_MAGIC = b"CSJ1"
_HEAD = struct.Struct("<4sBI")  # magic, op (1 apply, 2 revert), payload length
_CRC = struct.Struct("<I")
APPLY, REVERT = 1, 2


def journal_path(mask_path: str | os.PathLike[str]) -> Path:
    p = Path(mask_path)
    return p.parent / JOURNAL_DIR / f"{p.name}.journal"


def _file_hash(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except FileNotFoundError:
        return None


def _encode(op: int, patch: Patch) -> bytes:
    buf = io.BytesIO()
    arrays = {
        "box": np.array([patch.y0, patch.x0, patch.y1, patch.x1], np.int64),
        "old": patch.old,
        "new": patch.new,
    }
    if patch.index is not None:
        arrays["index"] = patch.index
    if patch.packed is not None:
        arrays["packed"] = patch.packed
    np.savez(buf, **arrays)
    payload = buf.getvalue()
    return _HEAD.pack(_MAGIC, op, len(payload)) + payload + _CRC.pack(zlib.crc32(payload))


def _decode(payload: bytes) -> Patch:
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        y0, x0, y1, x1 = (int(v) for v in z["box"])
        return Patch(
            y0, x0, y1, x1, old=z["old"], new=z["new"],
            index=z["index"] if "index" in z.files else None,
            packed=z["packed"] if "packed" in z.files else None,
        )  # fmt: skip


def _header(base: str | None, shape: tuple[int, int]) -> bytes:
    head = {"format": "cellseg-journal", "version": 1, "base_sha256": base, "shape": list(shape)}
    return json.dumps(head).encode() + b"\n"


@dataclass
class Recovered:
    """What a journal held for a mask: the changes to replay, or why none are."""

    changes: list[tuple[int, Patch]]
    message: str = ""


_UNSET = object()  # "hash the file here"; a caller that has hashed it passes the hash


def recover(
    mask_path: str | os.PathLike[str], shape: tuple[int, int], current: object = _UNSET
) -> Recovered:
    """The changes a journal holds for the mask file as it is on disk now (none when there
    is no journal, or it belongs to another version of the file: it is set aside then)."""
    jpath = journal_path(mask_path)
    try:
        raw = jpath.read_bytes()
    except FileNotFoundError:
        return Recovered([])
    except OSError as exc:
        return Recovered([], f"{jpath}: cannot read the crash journal ({exc.strerror or exc})")
    line, _, body = raw.partition(b"\n")
    try:
        head = json.loads(line)
        base, jshape = head["base_sha256"], tuple(head["shape"])
    except (ValueError, KeyError, TypeError):
        return _set_aside(jpath, "its header is damaged")
    if jshape != tuple(shape):
        return _set_aside(jpath, f"it is for a {jshape} mask, this one is {tuple(shape)}")
    if base != (_file_hash(Path(mask_path)) if current is _UNSET else current):
        return _set_aside(jpath, "the mask was changed since (by a save or another program)")
    changes: list[tuple[int, Patch]] = []
    pos, cut = 0, False
    while pos < len(body):
        if len(body) - pos < _HEAD.size:
            cut = True
            break
        magic, op, n = _HEAD.unpack_from(body, pos)
        start, end = pos + _HEAD.size, pos + _HEAD.size + n
        if magic != _MAGIC or op not in (APPLY, REVERT) or end + _CRC.size > len(body):
            cut = True
            break
        payload = body[start:end]
        if _CRC.unpack_from(body, end)[0] != zlib.crc32(payload):
            cut = True
            break
        try:
            changes.append((op, _decode(payload)))
        except (ValueError, KeyError, OSError):
            cut = True
            break
        pos = end + _CRC.size
    if not changes:  # a journal with nothing to replay (a clean exit cut short)
        with contextlib.suppress(OSError):
            jpath.unlink()
        return Recovered([])
    note = " (the last one was cut short by the crash)" if cut else ""
    return Recovered(changes, f"{len(changes)} change(s) found in the crash journal{note}")


def _set_aside(jpath: Path, why: str) -> Recovered:
    aside = jpath.with_suffix(".journal.unused")
    with contextlib.suppress(OSError):
        os.replace(jpath, aside)
    return Recovered([], f"{jpath.name}: not applied, {why}; kept as {aside.name}")


class MaskJournal:
    """The journal of one open mask (see the module docstring)."""

    def __init__(self, mask_path: str | os.PathLike[str], shape: tuple[int, int]) -> None:
        self.mask_path = Path(mask_path)
        self.path = journal_path(mask_path)
        self.shape = (int(shape[0]), int(shape[1]))
        self.base: str | None = None
        self.records: list[bytes] = []
        self._fh: io.BufferedWriter | None = None

    def begin(self, base: object = _UNSET) -> None:
        """Start from the mask file as it is on disk now, with no changes."""
        self.base = _file_hash(self.mask_path) if base is _UNSET else base  # type: ignore[assignment]
        self.records = []
        self._rewrite()

    def append(self, op: int, patch: Patch) -> None:
        """Record a change and make it durable before returning (flush + fsync)."""
        rec = _encode(op, patch)
        self.records.append(rec)
        if self._fh is None:
            self._rewrite()
            return
        self._fh.write(rec)
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def restart(self, base: str | None, changes: list[tuple[int, Patch]]) -> None:
        """Start again from the file with hash ``base`` plus these changes (after this
        window's edits were merged onto a file changed elsewhere)."""
        self.base = base
        self.records = [_encode(op, p) for op, p in changes]
        self._rewrite()

    def saved(self, upto: int, base: str | None) -> None:
        """A save wrote the first ``upto`` records' state into the file whose hash is
        ``base``: keep only the changes made since."""
        self.records = self.records[upto:]
        self.base = base
        self._rewrite()

    def close(self, *, discard: bool = False) -> None:
        """Stop journalling; the file goes when it holds nothing to recover (or the user
        discarded the edits)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if discard or not self.records:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def _rewrite(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, _header(self.base, self.shape) + b"".join(self.records))
        self._fh = open(self.path, "ab")  # noqa: SIM115 - kept open for appends
