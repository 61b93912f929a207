"""Image canvas: raw image, GT / prediction / difference overlays as RGBA colour lookups.

Why a pyqtgraph ImageItem for the image: levels are applied on the fast path with
autoDownsample, so an 8192x8192 16-bit image pans smoothly. Overlays are ``LabelLayer``
items: uint8 index images drawn through a colour table, redrawn only in the changed
rectangle (``refresh_region``) after a brush move and only at screen resolution.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QPointF, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QHBoxLayout, QWidget

from cellseg_gui.core.data.normalize import display_levels
from cellseg_gui.core.palette import FN_COLOR, FP_COLOR
from cellseg_gui.core.palette import PALETTE as DEFAULT_PALETTE
from cellseg_gui.widgets.label_layer import LabelLayer

DIFF_LUT = np.zeros((256, 4), np.uint8)
DIFF_LUT[1] = (*FP_COLOR, 255)
DIFF_LUT[2] = (*FN_COLOR, 255)


def make_lut(colors: list[tuple[int, int, int]]) -> np.ndarray:
    """256x4 uint8 RGBA lookup: class 0 transparent, others opaque in their colour."""
    lut = np.zeros((256, 4), np.uint8)
    cols = list(colors) + DEFAULT_PALETTE[len(colors) :]
    for k in range(1, 256):
        lut[k, :3] = cols[k % len(cols)] if k < len(cols) else cols[1 + (k - 1) % (len(cols) - 1)]
        lut[k, 3] = 255
    return lut


HUE_MARGIN = 0.09  # a twelfth of the colour wheel either side of a ground-truth colour
# ... and less beside the difference view's two colours (magenta extra, cyan missed), so
# enough of the wheel is left: a magenta cell read as an extra pixel
DIFF_HUE_MARGIN = 0.05
_MIN_GAP = 0.1  # a sliver of hue between two avoided colours looks like both: left out


def _free_hues(
    avoid: list[tuple[int, int, int]], margins: list[float] | None = None
) -> list[tuple[float, float]]:
    """The hue intervals (0..1) left after taking out those near each saturated colour in
    ``avoid`` (``margins`` either side of each, ``HUE_MARGIN`` by default; greys and black
    take no hue)."""
    import colorsys

    cuts = []
    for i, rgb in enumerate(avoid):
        margin = HUE_MARGIN if margins is None else margins[i]
        h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb[:3]))
        if s > 0.3 and v > 0.2:
            cuts.append(((h - margin) % 1.0, 2 * margin))
    if not cuts:
        return [(0.0, 1.0)]
    taken = np.zeros(3600, bool)  # tenths of a degree
    for start, width in cuts:
        i = np.arange(int(start * 3600), int((start + width) * 3600)) % 3600
        taken[i] = True
    free: list[tuple[float, float]] = []
    order = np.roll(np.arange(3600), -int(np.argmax(taken)))  # start inside a cut
    run: list[int] = []
    for k in order:
        if taken[k]:
            if len(run) >= _MIN_GAP * 3600:
                free.append((run[0] / 3600, len(run) / 3600))
            run = []
        else:
            run.append(int(k))
    if len(run) >= _MIN_GAP * 3600:
        free.append((run[0] / 3600, len(run) / 3600))
    return free or [(0.0, 1.0)]


def make_cell_lut(avoid: list[tuple[int, int, int]] | None = None) -> np.ndarray:
    """256x4 RGBA lookup for cell ids: bright, saturated hues spaced by the golden angle,
    every other one a little darker, none near a colour of the ground truth's overlay
    (``avoid``, default the default cell green and boundary yellow: a yellow predicted
    outline read as the ground truth's boundary) or of the difference view (magenta,
    cyan). Which entry a cell gets is ``cell_index``'s choice."""
    import colorsys

    avoid = list(DEFAULT_PALETTE[1:3]) if avoid is None else list(avoid)
    margins = [HUE_MARGIN] * len(avoid) + [DIFF_HUE_MARGIN] * 2
    free = _free_hues(avoid + [FP_COLOR, FN_COLOR], margins)
    total = sum(w for _, w in free)
    lut = np.zeros((256, 4), np.uint8)
    for k in range(1, 256):
        t = ((0.62 + k * 0.381966) % 1.0) * total  # a place on the free part of the wheel
        hue = free[-1][0]
        for start, width in free:
            if t < width:
                hue = (start + t) % 1.0
                break
            t -= width
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0 if k % 2 else 0.72)
        lut[k] = (int(r * 255), int(g * 255), int(b * 255), 255)
    return lut


CELL_LUT = make_cell_lut()
# cells whose pixels lie within this many pixels of each other (touching, or apart by a
# one-pixel boundary line) are neighbours that must differ in colour
NEIGHBOUR_REACH = 2
# beyond this many cells or pixels the colours follow the ids alone: the greedy pass is
# per cell, and finding the neighbours of an 8192^2 image took seconds
COLOURED_CELLS_MAX = 5000
COLOURED_PIXELS_MAX = 4096 * 4096


def _neighbour_pairs(cells: np.ndarray) -> np.ndarray:
    """(P, 2) int64: pairs of different cell ids within ``NEIGHBOUR_REACH`` pixels."""
    c = np.asarray(cells)
    h, w = c.shape
    found = []
    shifts = [(0, d) for d in range(1, NEIGHBOUR_REACH + 1)]
    shifts += [(d, 0) for d in range(1, NEIGHBOUR_REACH + 1)] + [(1, 1), (1, -1)]
    for dy, dx in shifts:
        a = c[0 : h - dy, max(0, -dx) : w - max(0, dx)]
        b = c[dy:h, max(0, dx) : w + min(0, dx)]
        m = (a != b) & (a > 0) & (b > 0)
        if m.any():
            found.append(np.stack([a[m], b[m]], 1).astype(np.int64))
    if not found:
        return np.zeros((0, 2), np.int64)
    pairs = np.sort(np.concatenate(found), axis=1)
    base = int(pairs.max()) + 1  # one integer a pair: a 1-D unique, not a row-wise one
    keys = np.unique(pairs[:, 0] * base + pairs[:, 1])
    return np.stack([keys // base, keys % base], 1)


def cell_index(cells: np.ndarray, lut: np.ndarray | None = None) -> np.ndarray:
    """uint8 index image of int cell ids into a cell colour table (0 stays background).
    Given the table, neighbouring cells get entries far apart in colour (a greedy pass:
    each cell keeps the entry of its id unless a neighbour's is close, then takes the one
    farthest from its neighbours'): by id alone, two touching cells were drawn in two
    blues a user could not tell apart."""
    c = np.asarray(cells)
    by_id = ((c.astype(np.int64) - 1) % 255 + 1).astype(np.uint8)
    by_id[c == 0] = 0
    if lut is None or not c.size or c.size > COLOURED_PIXELS_MAX:
        return by_id
    top = int(c.max())
    if top < 1:
        return by_id
    if top <= 4 * COLOURED_CELLS_MAX:  # ids 1..N as prediction writes them: counted fast
        ids = np.flatnonzero(np.bincount(c.ravel().astype(np.int64), minlength=top + 1))
        ids = ids[ids > 0]
    else:
        ids = np.unique(c)
        ids = ids[ids > 0]
    if len(ids) > COLOURED_CELLS_MAX:
        return by_id
    pairs = _neighbour_pairs(c)
    if not len(pairs):
        return by_id
    rgb = lut[:, :3].astype(np.float32)
    dist = np.sqrt(((rgb[:, None, :] - rgb[None, :, :]) ** 2).sum(-1))  # 256 x 256
    enough = 0.9 * float(np.median(dist[1:, 1:]))
    neighbours: dict[int, list[int]] = {}
    for a, b in pairs.tolist():
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    chosen: dict[int, int] = {}
    for cell in ids.tolist():
        own = (cell - 1) % 255 + 1
        taken = [chosen[n] for n in neighbours.get(cell, ()) if n in chosen]
        if taken:
            nearest = dist[1:, taken].min(axis=1)  # each entry's closest neighbour colour
            if nearest[own - 1] < enough:
                own = int(np.argmax(nearest)) + 1
        chosen[cell] = own
    table = np.zeros(int(ids.max()) + 1, np.uint8)
    table[ids] = [chosen[i] for i in ids.tolist()]
    return table[c]


def _outline(labels: np.ndarray) -> np.ndarray:
    """Pixels whose 4-neighbour differs (the edge of each class region)."""
    edge = np.zeros(labels.shape, bool)
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    return edge & (labels > 0)


class ImageCanvas(QWidget):
    """The central image view. Signals are in image coordinates (x=column, y=row)."""

    mousePressed = Signal(float, float, object)
    mouseDragged = Signal(float, float, object)
    mouseReleased = Signal(float, float, object)
    hovered = Signal(float, float)
    info = Signal(str)  # status-bar text for the pixel under the cursor

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = pg.GraphicsView(self)  # created first: tests find it as the first view
        self.view.setBackground(QColor(24, 24, 28))
        self.vb = pg.ViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.view.setCentralItem(self.vb)
        self.image_item = pg.ImageItem(axisOrder="row-major", autoDownsample=True)
        self.layers: dict[str, LabelLayer] = {}
        self.vb.addItem(self.image_item)
        for z, key in enumerate(("gt", "pred", "diff"), start=1):
            item = LabelLayer()
            item.setZValue(z)
            self.vb.addItem(item)
            self.layers[key] = item
        self.hist = pg.HistogramLUTWidget(self, image=self.image_item)
        self.hist.setBackground(QColor(32, 32, 36))
        self.hist.setFixedWidth(110)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.view, 1)
        lay.addWidget(self.hist)
        self.raw: np.ndarray | None = None
        self.gt: np.ndarray | None = None
        self.pred: np.ndarray | None = None
        self.prob: np.ndarray | None = None
        self.cells: np.ndarray | None = None  # predicted cell ids, int32
        self.gt_ids: np.ndarray | None = None  # the ground truth's cell ids (instance masks)
        # (weak reference to the cells, colour table, index image) of the last shown
        self._colour_cache: list[tuple] = []
        self._cells_index: np.ndarray | None = None
        self.lut = make_lut(DEFAULT_PALETTE)
        self.cell_lut = CELL_LUT  # the predicted cells' colours (see set_palette)
        self.class_names: list[str] = ["background", "cell", "boundary"]
        self.visible = {"gt": True, "pred": True, "diff": False}
        self.filled = {"gt": True, "pred": False}
        self._shown: dict[str, np.ndarray] = {}
        self._tool = False
        self._pressed = False
        self._brush: pg.ROI | None = None
        self._brush_r = 0.0
        self.set_opacity("gt", 0.45)
        self.set_opacity("pred", 0.8)
        self.set_opacity("diff", 0.8)
        self.view.viewport().installEventFilter(self)
        self.view.viewport().setMouseTracking(True)

    # ---------------------------------------------------------------- data
    def set_image(self, raw: np.ndarray) -> None:
        """Show ``raw`` with percentile contrast (computed on a subsample for big images)."""
        first = self.raw is None or self.raw.shape[:2] != raw.shape[:2]
        self.raw = raw
        step = max(1, int(np.sqrt(raw.shape[0] * raw.shape[1] / 1e6)))
        lo, hi = display_levels(raw[::step, ::step])
        if hi <= lo:
            hi = lo + 1
        self.image_item.setImage(raw, autoLevels=False, levels=(lo, hi))
        self.hist.setLevels(lo, hi)
        self.gt = self.pred = self.prob = self.cells = self._cells_index = None
        self.gt_ids = None
        self._shown.clear()
        for item in self.layers.values():
            item.clear()
        if first:
            self.fit()

    def set_gt(self, labels: np.ndarray | None, ids: np.ndarray | None = None) -> None:
        """The ground truth's class map to draw, and for an instance mask its cell ids
        (the status line names the cell under the mouse)."""
        self.gt = None if labels is None else np.asarray(labels, np.uint8)
        self.gt_ids = None if ids is None or labels is None else np.asarray(ids)
        self._recolor_all(("gt", "diff"))

    def set_prediction(
        self,
        labels: np.ndarray | None,
        prob: np.ndarray | None = None,
        cells: np.ndarray | None = None,
    ) -> None:
        """A class prediction and, where the model gives them, its cells: these are drawn
        each in its own colour (outlined or filled), so predictions never share the
        ground truth's class colours."""
        self.pred = None if labels is None else np.asarray(labels, np.uint8)
        self.prob = prob
        self.cells = None if cells is None or labels is None else np.asarray(cells)
        self._cells_index = None if self.cells is None else self._cell_colours(self.cells)
        self._recolor_all(("pred", "diff"))

    def set_palette(self, colors: list[tuple[int, int, int]], names: list[str] | None = None):
        self.lut = make_lut(colors)
        if names:
            self.class_names = list(names)
        # the cells keep clear of every colour the ground truth is drawn in
        n = len(names) if names else 3
        self.cell_lut = make_cell_lut([tuple(c) for c in list(colors)[1:n]])
        if self.cells is not None:  # neighbours kept apart in the new colours
            self._cells_index = self._cell_colours(self.cells)
        self._recolor_all()

    def _cell_colours(self, cells: np.ndarray) -> np.ndarray:
        """``cell_index`` of ``cells`` in the current colours, remembered for the last few
        predictions shown (the same arrays come back on every image switch)."""
        import weakref

        # a weak reference: a prediction replaced or forgotten takes its entry with it
        live = [e for e in self._colour_cache if e[0]() is not None]
        for i, (seen, lut, index) in enumerate(live):
            if seen() is cells and lut is self.cell_lut:
                live.append(live.pop(i))  # the newest last
                self._colour_cache = live
                return index
        index = cell_index(cells, self.cell_lut)
        self._colour_cache = [*live[-7:], (weakref.ref(cells), self.cell_lut, index)]
        return index

    # ---------------------------------------------------------------- display options
    def set_layer_visible(self, layer: str, on: bool) -> None:
        self.visible[layer] = bool(on)
        self._recolor(layer)

    def set_filled(self, layer: str, filled: bool) -> None:
        self.filled[layer] = bool(filled)
        self._recolor(layer)

    def set_opacity(self, layer: str, value: float) -> None:
        self.layers[layer].setOpacity(float(value))

    def fit(self) -> None:
        self.vb.autoRange(padding=0.02)

    def zoom_to(self, y0: int, x0: int, y1: int, x1: int) -> None:
        """Show the image rectangle [y0:y1, x0:x1] (e.g. a noisy label's worst crop)."""
        self.vb.setRange(xRange=(x0, x1), yRange=(y0, y1), padding=0.1)

    def one_to_one(self) -> None:
        """Zoom so one image pixel is one screen pixel, keeping the centre."""
        rect = self.vb.viewRect()
        w, h = self.vb.width() or 1, self.vb.height() or 1
        c = rect.center()
        self.vb.setRange(xRange=(c.x() - w / 2, c.x() + w / 2),
                         yRange=(c.y() - h / 2, c.y() + h / 2), padding=0)  # fmt: skip

    # ---------------------------------------------------------------- colouring
    # Each overlay is a uint8 index image drawn through a 256-entry RGBA lookup, only for
    # the part on screen and at screen resolution: no full-size RGBA copy of a big mask.
    # A filled overlay shows the label array itself, so an in-place edit needs only a
    # redraw.
    def _index(self, layer: str, y0: int, x0: int, y1: int, x1: int) -> np.ndarray | None:
        """Index image of ``layer`` in the rectangle (None when there is nothing to show)."""
        if layer == "diff":
            if self.gt is None or self.pred is None or self.gt.shape != self.pred.shape:
                return None
            g, p = self.gt[y0:y1, x0:x1] > 0, self.pred[y0:y1, x0:x1] > 0
            out = (p & ~g).view(np.uint8)
            out[g & ~p] = 2
            return out
        labels = self.gt if layer == "gt" else self.pred
        if layer == "pred" and self._cells_index is not None:
            labels = self._cells_index
        if labels is None:
            return None
        if self.filled[layer]:
            whole = (y0, x0, y1, x1) == (0, 0, *labels.shape)
            return labels if whole else labels[y0:y1, x0:x1]
        py0, px0 = max(y0 - 1, 0), max(x0 - 1, 0)
        block = labels[py0 : y1 + 1, px0 : x1 + 1]
        out = np.where(_outline(block), block, 0).astype(np.uint8)
        return out[y0 - py0 : y0 - py0 + (y1 - y0), x0 - px0 : x0 - px0 + (x1 - x0)]

    def _recolor(self, layer: str) -> None:
        item = self.layers[layer]
        shape = self.raw.shape[:2] if self.raw is not None else None
        idx = self._index(layer, 0, 0, *shape) if shape and self.visible[layer] else None
        if idx is None or idx.shape[:2] != shape:
            self._shown.pop(layer, None)
            item.clear()
            return
        self._shown[layer] = idx
        item.thin = layer != "diff" and not self.filled[layer]  # outlines: kept when zoomed out
        lut = DIFF_LUT if layer == "diff" else self.lut
        if layer == "pred" and self._cells_index is not None:
            lut = self.cell_lut
        item.set_data(idx, lut)

    def _recolor_all(self, layers=("gt", "pred", "diff")) -> None:
        for layer in layers:
            self._recolor(layer)

    def refresh_region(self, layer: str, y0: int, x0: int, y1: int, x1: int) -> None:
        """Recolour only the rectangle [y0:y1, x0:x1] of ``layer`` (after a brush stroke)."""
        for name in [layer] + (["diff"] if self.visible["diff"] else []):
            buf = self._shown.get(name)
            if buf is None:
                self._recolor(name)
                continue
            h, w = buf.shape[:2]
            y0c, x0c, y1c, x1c = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
            src = self.gt if name == "gt" else self.pred
            if not (name != "diff" and self.filled[name] and buf is src):
                idx = self._index(name, y0c, x0c, y1c, x1c)
                if idx is not None:
                    buf[y0c:y1c, x0c:x1c] = idx
            self.layers[name].update_rect(y0c, x0c, y1c, x1c)

    # ---------------------------------------------------------------- mouse
    def set_tool_active(self, active: bool) -> None:
        """When active, left drags paint (signals) instead of panning."""
        self._tool = bool(active)

    def set_brush_cursor(self, radius: float) -> None:
        self._brush_r = float(radius or 0)
        if self._brush is None:
            self._brush = pg.CircleROI((0, 0), (1, 1), movable=False, pen=pg.mkPen("w", width=1))
            for h in self._brush.getHandles():
                self._brush.removeHandle(h)
            self._brush.setZValue(10)
            self._brush.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
            self.vb.addItem(self._brush)
        self._brush.setVisible(self._brush_r > 0)

    def _image_pos(self, pos) -> QPointF:
        return self.image_item.mapFromScene(self.view.mapToScene(pos.toPoint()))

    def eventFilter(self, obj: QObject, ev: QEvent) -> bool:  # noqa: N802
        et = ev.type()
        if et == QEvent.Type.Leave and self._brush is not None:
            self._brush.setVisible(False)  # it stayed on the image after the pointer left
            return False
        if et not in (QEvent.Type.MouseButtonPress, QEvent.Type.MouseMove,
                      QEvent.Type.MouseButtonRelease):  # fmt: skip
            return False
        p = self._image_pos(ev.position())
        x, y = p.x(), p.y()
        mods = {"buttons": ev.buttons() | ev.button(), "modifiers": ev.modifiers()}
        left = bool((ev.buttons() | ev.button()) & Qt.MouseButton.LeftButton)
        if et == QEvent.Type.MouseButtonPress:
            self._pressed = True
            self.mousePressed.emit(x, y, mods)
        elif et == QEvent.Type.MouseMove:
            self._hover(x, y)
            if self._pressed and ev.buttons() != Qt.MouseButton.NoButton:
                self.mouseDragged.emit(x, y, mods)
        else:
            self._pressed = False
            self.mouseReleased.emit(x, y, mods)
        return self._tool and left

    def _hover(self, x: float, y: float) -> None:
        self.hovered.emit(x, y)
        if self._brush is not None and self._brush_r > 0:
            r = self._brush_r
            self._brush.setPos((x - r, y - r))
            self._brush.setSize((2 * r, 2 * r))
            self._brush.setVisible(True)
        self.info.emit(self.describe(x, y))

    def describe(self, x: float, y: float) -> str:
        """Status text: position, raw value, GT class, predicted class and probability."""
        if self.raw is None:
            return ""
        r, c = int(np.floor(y)), int(np.floor(x))
        h, w = self.raw.shape[:2]
        if not (0 <= r < h and 0 <= c < w):
            return f"{w} x {h}"
        v = self.raw[r, c]
        parts = [f"x {c}  y {r}", f"value {v if np.ndim(v) == 0 else tuple(v.tolist())}"]
        if self.gt is not None and self.gt.shape == (h, w):
            text = f"GT {self._name(self.gt[r, c])}"
            if self.gt_ids is not None and self.gt_ids.shape == (h, w) and self.gt_ids[r, c]:
                text += f", cell {int(self.gt_ids[r, c])}"  # its id in the mask file
            parts.append(text)
        if self.pred is not None and self.pred.shape == (h, w):
            k = int(self.pred[r, c])
            text = f"pred {self._name(k)}"
            if self.prob is not None:
                pr = self.prob[k, r, c] if self.prob.ndim == 3 else self.prob[r, c]
                text += f" ({float(pr):.2f})"
            if self.cells is not None and self.cells.shape == (h, w) and self.cells[r, c]:
                text += f", cell {int(self.cells[r, c])} of {int(self.cells.max())}"
            parts.append(text)
        return "   ".join(parts)

    def _name(self, k) -> str:
        k = int(k)
        return self.class_names[k] if k < len(self.class_names) else f"class {k}"
