"""Mask edits as reversible diffs: :class:`Patch` (the pixels an edit changes, their old
and new values, inside a bounding box) and :class:`Region` (where an edit may act), with
the constructors every operation in ``core.editing.edits`` and ``core.editing.cleanup`` builds them with.

Undo memory grows with what the user changed, not with the image size (DESIGN.md, "Edits
are diffs"). Torch-free, Qt-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Patch", "Region", "merge", "patch_from_block"]

_INDEX_LIMIT = np.iinfo(np.int32).max


@dataclass(frozen=True, eq=False)
class Patch:
    """The changed pixels of one edit, inside the bounding box ``[y0:y1, x0:x1]``.

    Changed pixels are stored either as sorted flat indices within the box (``index``, for
    sparse edits) or as a bit-packed boolean mask of the box (``packed``, for dense ones),
    whichever is smaller. ``old``/``new`` list the values in row-major order of those pixels;
    ``new`` may be 0-d when every pixel gets the same value (a brush stroke).
    """

    y0: int
    x0: int
    y1: int
    x1: int
    old: np.ndarray
    new: np.ndarray
    index: np.ndarray | None = None
    packed: np.ndarray | None = None

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        return self.y0, self.x0, self.y1, self.x1

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def count(self) -> int:
        """Number of changed pixels."""
        return int(self.old.size)

    @property
    def nbytes(self) -> int:
        """Memory held by the patch's arrays (what an undo step costs)."""
        extra = self.index.nbytes if self.index is not None else 0
        extra += self.packed.nbytes if self.packed is not None else 0
        return int(self.old.nbytes + self.new.nbytes + extra)

    def changed_mask(self) -> np.ndarray:
        """Boolean array of the bounding box, True where the patch changes a pixel."""
        h, w = self.shape
        if self.packed is not None:
            return np.unpackbits(self.packed, count=h * w).view(bool).reshape(h, w)
        out = np.zeros(h * w, dtype=bool)
        out[self.index] = True
        return out.reshape(h, w)

    def pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """Global (rows, cols) of the changed pixels, row-major order."""
        if self.index is not None:
            r, c = np.divmod(self.index, self.x1 - self.x0)
        else:
            r, c = np.nonzero(self.changed_mask())
        return r + self.y0, c + self.x0

    def global_index(self, width: int) -> np.ndarray:
        """Flat indices into the whole mask (int64), row-major order."""
        r, c = self.pixels()
        return r.astype(np.int64) * width + c

    def _write(self, mask: np.ndarray, values: np.ndarray) -> None:
        view = mask[self.y0 : self.y1, self.x0 : self.x1]
        if self.packed is not None:
            view[self.changed_mask()] = values
        else:
            r, c = np.divmod(self.index, self.x1 - self.x0)
            view[r, c] = values

    def apply(self, mask: np.ndarray) -> None:
        """Write the new values into ``mask`` (in place)."""
        self._write(mask, self.new)

    def revert(self, mask: np.ndarray) -> None:
        """Write the old values back into ``mask`` (in place): undo."""
        self._write(mask, self.old)


@dataclass(frozen=True, eq=False)
class Region:
    """A boolean area of the mask: ``mask[y0:y0+h, x0:x0+w]`` where ``inside`` is True."""

    y0: int
    x0: int
    inside: np.ndarray

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        h, w = self.inside.shape
        return self.y0, self.x0, self.y0 + h, self.x0 + w

    @classmethod
    def whole(cls, shape: tuple[int, int]) -> Region:
        return cls(0, 0, np.ones(shape, dtype=bool))


# --------------------------------------------------------------------------- patch builders


def _compact(values: np.ndarray) -> np.ndarray:
    """A 0-d array when all values are equal: a brush stroke stores its colour once."""
    if values.size and values.ndim == 1 and np.all(values == values[0]):
        return values[:1].reshape(()).copy()
    return values


def _from_local(
    y0: int, x0: int, changed: np.ndarray, old: np.ndarray, new: np.ndarray
) -> Patch | None:
    """Patch from a boolean ``changed`` box at (y0, x0) and the old/new values of its pixels.

    Crops the box to the changed pixels, then keeps indices or packed bits, whichever is smaller.
    """
    if old.size == 0:
        return None
    rows = np.flatnonzero(changed.any(axis=1))
    cols = np.flatnonzero(changed.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    changed = changed[r0:r1, c0:c1]
    h, w = changed.shape
    new = _compact(np.ascontiguousarray(new))
    old = np.ascontiguousarray(old)
    box = (int(y0 + r0), int(x0 + c0), int(y0 + r1), int(x0 + c1))
    if h * w / 8 < 4 * old.size or h * w > _INDEX_LIMIT:
        return Patch(*box, old=old, new=new, packed=np.packbits(changed.reshape(-1)))
    index = np.flatnonzero(changed).astype(np.int32)
    return Patch(*box, old=old, new=new, index=index)


def _from_pixels(
    mask: np.ndarray, rows: np.ndarray, cols: np.ndarray, new: np.ndarray | int
) -> Patch | None:
    """Patch from global pixel coordinates (row-major sorted) and their new values.

    Pixels whose value would not change are dropped, so a patch lists only real changes.
    """
    if rows.size == 0:
        return None
    old = mask[rows, cols]
    new_arr = np.asarray(new, dtype=mask.dtype)
    keep = old != new_arr
    if not keep.any():
        return None
    rows, cols, old = rows[keep], cols[keep], old[keep]
    new_arr = new_arr if new_arr.ndim == 0 else new_arr[keep]
    y0, x0 = int(rows.min()), int(cols.min())
    y1, x1 = int(rows.max()) + 1, int(cols.max()) + 1
    h, w = y1 - y0, x1 - x0
    new_arr = new_arr.copy() if new_arr.ndim == 0 else _compact(new_arr)
    if h * w / 8 < 4 * old.size or h * w > _INDEX_LIMIT:
        changed = np.zeros((h, w), dtype=bool)
        changed[rows - y0, cols - x0] = True
        return Patch(y0, x0, y1, x1, old=old, new=new_arr, packed=np.packbits(changed.reshape(-1)))
    index = ((rows - y0) * w + (cols - x0)).astype(np.int32)
    return Patch(y0, x0, y1, x1, old=old, new=new_arr, index=index)


def patch_from_block(
    mask: np.ndarray, y0: int, x0: int, block: np.ndarray, where: np.ndarray | None = None
) -> Patch | None:
    """Patch that turns ``mask[y0:, x0:]`` (block-sized) into ``block`` where ``where`` is True."""
    h, w = block.shape
    current = mask[y0 : y0 + h, x0 : x0 + w]
    changed = current != block
    if where is not None:
        changed &= where
    if not changed.any():
        return None
    return _from_local(y0, x0, changed, current[changed], block[changed].astype(mask.dtype))


def merge(patches: Sequence[Patch | None], width: int) -> Patch | None:
    """One patch equivalent to applying ``patches`` in order (a whole stroke as one undo step).

    Each pixel keeps its value from before the first patch and after the last; pixels that end
    where they started are dropped.
    """
    patches = [p for p in patches if p is not None]
    if not patches:
        return None
    if len(patches) == 1:
        return patches[0]
    idx = np.concatenate([p.global_index(width) for p in patches])
    old = np.concatenate([p.old for p in patches])
    new = np.concatenate([np.broadcast_to(p.new, p.old.shape) for p in patches])
    uniq, first = np.unique(idx, return_index=True)
    _, last_rev = np.unique(idx[::-1], return_index=True)
    last = idx.size - 1 - last_rev
    old, new = old[first], new[last]
    keep = old != new
    if not keep.any():
        return None
    rows, cols = np.divmod(uniq[keep], width)
    y0, x0 = int(rows.min()), int(cols.min())
    h, w = int(rows.max()) + 1 - y0, int(cols.max()) + 1 - x0
    changed = np.zeros((h, w), dtype=bool)
    changed[rows - y0, cols - x0] = True
    return _from_local(y0, x0, changed, old[keep], new[keep])
