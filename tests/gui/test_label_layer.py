"""The label overlay draws what the mask holds: after an in-place edit and a partial
redraw, at 1:1 and zoomed far out (where it samples with a stride), and not elsewhere."""

from __future__ import annotations

import numpy as np
import pyqtgraph  # noqa: E402,F401 - a test dependency: missing, the tests fail, never skip
import pytest
from PySide6.QtCore import QPointF, QRectF  # noqa: E402

GREEN = (46, 204, 113)


def _make_canvas(qtbot):
    from cellseg_gui.widgets.canvas import ImageCanvas

    c = ImageCanvas()
    qtbot.addWidget(c)
    c.resize(700, 500)
    c.show()
    qtbot.waitExposed(c)
    c.set_opacity("gt", 1.0)
    return c


@pytest.fixture
def canvas(qtbot):
    return _make_canvas(qtbot)


def _grab(c):
    return c.view.viewport().grab().toImage()


def _colour(c, img, x: float, y: float) -> tuple[int, int, int]:
    pt = c.view.mapFromScene(c.image_item.mapToScene(QPointF(x, y)))
    col = img.pixelColor(pt)
    return col.red(), col.green(), col.blue()


def _near(a, b, tol=12) -> bool:
    return all(abs(int(p) - int(q)) <= tol for p, q in zip(a, b, strict=True))


@pytest.mark.parametrize("side", [300, 6000])  # 1:1-ish and a stride of about 12
def test_screen_shows_an_in_place_edit_and_nothing_else(canvas, qtbot, side):
    """What is drawn, at 1:1 and sampled with a stride (a grab redraws everything; the
    test below checks that a real update redraws only the edit)."""
    c = canvas
    c.set_image(np.zeros((side, side), np.uint16))
    gt = np.zeros((side, side), np.uint8)
    c.set_gt(gt)
    qtbot.wait(20)
    before = _grab(c)
    a, b = side // 5, side // 5 + max(20, side // 8)  # a square an eighth of the side
    c.gt[a:b, a:b] = 1
    c.refresh_region("gt", a, a, b, b)
    qtbot.wait(20)
    after = _grab(c)
    mid = (a + b) / 2
    assert not _near(_colour(c, before, mid, mid), GREEN)
    assert _near(_colour(c, after, mid, mid), GREEN)
    far = side * 0.75  # untouched: same colour as before
    assert _colour(c, after, far, far) == _colour(c, before, far, far)
    # the whole-layer path agrees with the partial one
    c.set_gt(c.gt)
    qtbot.wait(20)
    assert _near(_colour(c, _grab(c), mid, mid), GREEN)


def test_hidden_layer_draws_nothing(canvas, qtbot):
    c = canvas
    c.set_image(np.zeros((200, 200), np.uint16))
    gt = np.zeros((200, 200), np.uint8)
    gt[50:150, 50:150] = 1
    c.set_gt(gt)
    qtbot.wait(20)
    assert _near(_colour(c, _grab(c), 100, 100), GREEN)
    c.set_layer_visible("gt", False)
    qtbot.wait(20)
    assert not _near(_colour(c, _grab(c), 100, 100), GREEN)


def test_a_brush_edit_repaints_its_rectangle_not_the_layer(qtbot, monkeypatch):
    """What keeps painting on an 8192^2 mask under a frame: only the edit is redrawn."""
    from cellseg_gui.widgets.label_layer import LabelLayer

    exposed = []
    real_paint = LabelLayer.paint

    def spy(self, painter, option, widget=None):
        if self.index is not None and self.index.shape == (4096, 4096):
            exposed.append(QRectF(option.exposedRect))  # Qt deletes the option's own
        return real_paint(self, painter, option, widget)

    # before the first paint: PySide keeps the method it found for each Qt virtual
    monkeypatch.setattr(LabelLayer, "paint", spy)
    c = _make_canvas(qtbot)
    side = 4096
    c.set_image(np.zeros((side, side), np.uint8))
    c.set_gt(np.zeros((side, side), np.uint8))
    c.vb.setRange(xRange=(1000, 1600), yRange=(1000, 1400), padding=0)  # a working zoom
    qtbot.waitUntil(lambda: bool(exposed), timeout=2000)
    for _ in range(20):  # let the view settle: no repaint for 200 ms
        exposed.clear()
        qtbot.wait(200)
        if not exposed:
            break
    assert not exposed
    c.gt[1000:1010, 1000:1010] = 1  # the first update after showing may repaint it all
    c.refresh_region("gt", 1000, 1000, 1010, 1010)
    qtbot.waitUntil(lambda: bool(exposed), timeout=2000)
    qtbot.wait(100)
    exposed.clear()
    c.gt[1200:1230, 1300:1330] = 1
    c.refresh_region("gt", 1200, 1300, 1230, 1330)
    qtbot.waitUntil(lambda: bool(exposed), timeout=2000)
    union = exposed[0]
    for r in exposed[1:]:
        union = union.united(r)
    assert union.contains(QPointF(1315, 1215))
    assert union.width() * union.height() < 0.1 * 600 * 400  # a small part of the view


def test_the_brush_circle_goes_when_the_pointer_leaves(canvas, qtbot):
    from PySide6.QtCore import QEvent

    canvas.set_brush_cursor(5)
    canvas._hover(10.0, 10.0)
    assert canvas._brush.isVisible()
    canvas.eventFilter(canvas.view.viewport(), QEvent(QEvent.Type.Leave))
    assert not canvas._brush.isVisible()
    canvas._hover(12.0, 10.0)  # and comes back with it
    assert canvas._brush.isVisible()


@pytest.mark.parametrize("side", [800, 3000])  # zoomed a little and far out
def test_an_outline_one_pixel_wide_stays_whole_when_zoomed_out(canvas, qtbot, side):
    """Zoomed out (fit to window), outlines were sampled every n-th pixel and broke up
    under the samples: a user trying the window could not see the predicted outlines.
    Along a one-pixel line the whole length is drawn."""
    c = canvas
    c.set_image(np.zeros((side, side), np.uint16))
    c.set_layer_visible("pred", True)
    c.set_opacity("pred", 1.0)
    labels = np.zeros((side, side), np.uint8)
    x = side // 4 + 1  # the square's left edge, one image pixel wide, off any stride
    labels[side // 4 : 3 * side // 4, x : 3 * side // 4] = 1  # a square cell
    c.set_prediction(labels, None)
    assert not c.filled["pred"]  # outlines, the default
    c.fit()
    qtbot.wait(30)

    def drawn(img, x, y0, y1) -> float:  # share of the rows where the edge shows
        rows = np.linspace(y0 + 5, y1 - 5, 60)
        # the edge's screen pixel lies within an image pixel of it at these zooms
        return float(np.mean([any(sum(_colour(c, img, x + dx, y)) > 60
                                  for dx in (-1.0, -0.5, 0.0, 0.5, 1.0)) for y in rows]))  # fmt: skip

    assert drawn(_grab(c), x, side // 4, 3 * side // 4) == 1.0
    # an edit redrawn in place (a reduced copy is kept per zoom level): the new edge shows
    x2 = 3 * side // 4 + side // 10 + 1
    c.pred[side // 8 : side // 2, x2 : x2 + side // 10] = 1
    c.refresh_region("pred", side // 8, x2 - 1, side // 2 + 1, x2 + side // 10 + 1)
    qtbot.wait(30)
    assert drawn(_grab(c), x2, side // 8, side // 2) == 1.0
