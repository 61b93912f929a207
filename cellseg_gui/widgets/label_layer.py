"""A label overlay that redraws only what changed and only at screen resolution.

Why not a pyqtgraph ``ImageItem``: after every brush move it re-renders the whole layer
(an 8192x8192 index image converted for drawing on each mouse move: 20-25 ms, more than a
frame), and its ``autoDownsample`` crashes on label layers from about 2048^2. This item
keeps a reference to the uint8 index image (for a filled overlay, the label array itself)
and, in ``paint``, draws only the exposed rectangle, sampled with a stride so that at most
about one source pixel per screen pixel is converted: a stroke costs its own rectangle,
a full redraw of a zoomed-out 8192^2 mask costs the window's size.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QGraphicsItem


class LabelLayer(pg.GraphicsObject):
    """Shows a 2-D uint8 index image through a 256-entry RGBA lookup (row-major, one
    image pixel per scene unit, origin at the top-left corner, like the image item)."""

    def __init__(self) -> None:
        super().__init__()
        self.index: np.ndarray | None = None
        self._table: list[int] = [0] * 256
        # outlines one pixel wide: zoomed out, each screen pixel shows the most of the block
        # of image pixels under it, so a line is kept (sampled, at fit-to-window zoom most
        # of an outline fell between the samples and the cells' outlines broke up)
        self.thin = False
        # (k, the reduced index image) for ``thin`` layers: reduced once per zoom level and
        # kept up to date block by block, not per repaint (110-190 ms for an 8192^2 mask)
        self._blocks: tuple[int, np.ndarray] | None = None
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)

    # ------------------------------------------------------------------ data
    def set_data(self, index: np.ndarray | None, lut: np.ndarray | None = None) -> None:
        """Show ``index`` (kept by reference, not copied) through ``lut`` (256 x 4 RGBA)."""
        if lut is not None:
            lut = np.asarray(lut, np.uint32)
            argb = (lut[:, 3] << 24) | (lut[:, 0] << 16) | (lut[:, 1] << 8) | lut[:, 2]
            self._table = [int(v) for v in argb]
        old = None if self.index is None else self.index.shape
        self.index = None if index is None else np.asarray(index, np.uint8)
        self._blocks = None
        if (None if self.index is None else self.index.shape) != old:
            self.prepareGeometryChange()
        self.update()

    def clear(self) -> None:
        self.set_data(None)

    def update_rect(self, y0: int, x0: int, y1: int, x1: int) -> None:
        """Redraw the rectangle [y0:y1, x0:x1] after its pixels changed in place."""
        if self._blocks is not None and self.index is not None:
            k, reduced = self._blocks
            h, w = self.index.shape[:2]
            by0, bx0 = max(0, y0) // k, max(0, x0) // k
            by1, bx1 = min(-(-y1 // k), reduced.shape[0]), min(-(-x1 // k), reduced.shape[1])
            if by1 > by0 and bx1 > bx0:
                reduced[by0:by1, bx0:bx1] = _block_max(
                    self.index[by0 * k : min(by1 * k, h), bx0 * k : min(bx1 * k, w)], k
                )
        self.update(QRectF(x0, y0, x1 - x0, y1 - y0))

    # ------------------------------------------------------------------ Qt
    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt API
        if self.index is None:
            return QRectF()
        h, w = self.index.shape[:2]
        return QRectF(0, 0, w, h)

    def dataBounds(self, ax: int, frac: float = 1.0, orthoRange=None):  # noqa: N802, N803
        if self.index is None:
            return None
        return (0, self.index.shape[1 - ax])

    def paint(self, painter: QPainter, option, widget=None) -> None:  # noqa: ANN001
        idx = self.index
        if idx is None:
            return
        h, w = idx.shape[:2]
        r = option.exposedRect.intersected(QRectF(0, 0, w, h))
        if r.isEmpty():
            return
        t = painter.worldTransform()
        scale = math.hypot(t.m11(), t.m12()) or 1.0  # device pixels per image pixel
        if self.thin and scale < 1.0:
            self._paint_blocks(painter, idx, r, math.ceil(1.0 / scale))
            return
        s = max(1, int(1.0 / scale))  # stride: about one sample per device pixel
        # snap to the stride's grid so partial redraws sample the same pixels as full ones
        x0 = max(0, int(math.floor(r.left())) // s * s)
        y0 = max(0, int(math.floor(r.top())) // s * s)
        x1 = min(w, int(math.ceil(r.right())))
        y1 = min(h, int(math.ceil(r.bottom())))
        if x1 <= x0 or y1 <= y0:
            return
        sub = np.ascontiguousarray(idx[y0:y1:s, x0:x1:s])
        sh, sw = sub.shape
        img = QImage(sub.data, sw, sh, sub.strides[0], QImage.Format.Format_Indexed8)
        img.setColorTable(self._table)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        # the last sample's block may reach past the edge: draw only its part inside
        tw, th = min(sw * s, w - x0), min(sh * s, h - y0)
        painter.drawImage(QRectF(x0, y0, tw, th), img, QRectF(0, 0, tw / s, th / s))

    def _paint_blocks(self, painter: QPainter, idx: np.ndarray, r: QRectF, k: int) -> None:
        """Draw the rectangle ``r`` of ``idx`` reduced by the largest index in each k x k
        block (``thin``): a one-pixel line anywhere in a block shows."""
        h, w = idx.shape[:2]
        if self._blocks is None or self._blocks[0] != k:
            self._blocks = (k, _block_max(idx, k))
        reduced = self._blocks[1]
        bx0, by0 = max(0, int(math.floor(r.left())) // k), max(0, int(math.floor(r.top())) // k)
        bx1 = min(reduced.shape[1], -(-int(math.ceil(r.right())) // k))
        by1 = min(reduced.shape[0], -(-int(math.ceil(r.bottom())) // k))
        if bx1 <= bx0 or by1 <= by0:
            return
        sub = np.ascontiguousarray(reduced[by0:by1, bx0:bx1])
        bh, bw = sub.shape
        img = QImage(sub.data, bw, bh, sub.strides[0], QImage.Format.Format_Indexed8)
        img.setColorTable(self._table)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        x0, y0 = bx0 * k, by0 * k
        tw, th = min(bw * k, w - x0), min(bh * k, h - y0)
        painter.drawImage(QRectF(x0, y0, tw, th), img, QRectF(0, 0, tw / k, th / k))


def _block_max(a: np.ndarray, k: int) -> np.ndarray:
    """The largest value of each k x k block of ``a`` (the last blocks may be smaller):
    the maximum of the k * k strided views, 39 ms for an 8192^2 mask at k = 10 (a reshape
    took 0.17 s, ``np.maximum.reduceat`` 0.6 s)."""
    h, w = a.shape[:2]
    out = np.zeros((-(-h // k), -(-w // k)), a.dtype)
    for i in range(min(k, h)):
        for j in range(min(k, w)):
            v = a[i::k, j::k]
            part = out[: v.shape[0], : v.shape[1]]
            np.maximum(part, v, out=part)
    return out
