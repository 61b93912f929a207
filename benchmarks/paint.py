"""Painting latency on large masks and the memory of the undo history.

For 4096^2 and 8192^2 masks, a brush drag is replayed as mouse moves of a few pixels each;
each move is timed from the event to the updated overlay: the stroke segment's patch, the
palette recolour of the changed rectangle and the redraw of the view (the real
``ImageCanvas`` offscreen when it exists, else a QImage-backed item that recolours the same
way). Then 100 ordinary strokes are painted and the undo patches' bytes summed.

Prints one JSON line: {"4096": {"p50_ms", "p95_ms", "max_ms"}, "8192": {...},
"undo_100_strokes_mb", "target_p95_ms": 16, "path": "canvas" | "qimage", "moves"}; with the
canvas, also "qimage_rect_redraw": the same figures for a QImage item that redraws only the
changed rectangle (what ``refresh_region`` should cost). PAINT_MOVES sets the moves timed.
Run: ``QT_QPA_PLATFORM=offscreen python benchmarks/paint.py``.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from PySide6.QtCore import QRectF  # noqa: E402
from PySide6.QtGui import QImage, QPainter  # noqa: E402
from PySide6.QtWidgets import (  # noqa: E402
    QApplication,
    QGraphicsItem,
    QGraphicsScene,
    QGraphicsView,
)

from cellseg_gui.core import edits as E  # noqa: E402

PALETTE = np.array(
    [[0, 0, 0, 0], [46, 204, 113, 128], [241, 196, 15, 128], [52, 152, 219, 128]], np.uint8
)


class _LabelItem(QGraphicsItem):
    """Labels shown through a palette: an RGBA buffer that a QImage wraps without copying."""

    def __init__(self, labels: np.ndarray) -> None:
        super().__init__()
        self.labels = labels
        self.rgba = PALETTE[labels]
        h, w = labels.shape
        self.qimage = QImage(self.rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888)

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt API
        h, w = self.labels.shape
        return QRectF(0, 0, w, h)

    def paint(self, painter: QPainter, option, widget=None) -> None:  # noqa: ANN001
        r = option.exposedRect.toAlignedRect().intersected(self.boundingRect().toRect())
        painter.drawImage(r.topLeft(), self.qimage, r)

    def refresh_region(self, layer: str, y0: int, x0: int, y1: int, x1: int) -> None:
        self.rgba[y0:y1, x0:x1] = PALETTE[self.labels[y0:y1, x0:x1]]
        self.update(QRectF(x0, y0, x1 - x0, y1 - y0))


def _fallback_view(labels: np.ndarray):  # noqa: ANN202
    scene = QGraphicsScene()
    item = _LabelItem(labels)
    scene.addItem(item)
    view = QGraphicsView(scene)
    view._keep = (scene, item)  # the scene and item must outlive this function
    view.resize(1200, 900)
    view.show()
    view.scale(0.5, 0.5)  # a zoomed-in working view, as when painting
    view.centerOn(labels.shape[1] / 2, labels.shape[0] / 2)
    return view, item.refresh_region, view


def _canvas_view(labels: np.ndarray):  # noqa: ANN202
    from cellseg_gui.widgets.canvas import ImageCanvas

    canvas = ImageCanvas()
    canvas.resize(1200, 900)
    canvas.set_image(np.zeros(labels.shape, np.uint8))
    canvas.set_gt(labels)
    canvas.show()
    return canvas, canvas.refresh_region, canvas


def _drag(n: int, size: int, cx: float, cy: float) -> list[tuple[float, float]]:
    t = np.linspace(0, 4 * np.pi, n)
    return [(cx + 300 * np.cos(a) * a / 8, cy + 200 * np.sin(a)) for a in t]


def latency(side: int, app: QApplication, use_canvas: bool, moves: int = 400) -> dict[str, float]:
    labels = np.zeros((side, side), np.uint8)
    view, refresh, widget = (_canvas_view if use_canvas else _fallback_view)(labels)
    app.processEvents()
    stroke = E.Stroke(labels, 25, 1)
    times, patch_times = [], []
    for i, (x, y) in enumerate(_drag(moves, 25, side / 2, side / 2)):
        t0 = time.perf_counter()
        p = stroke.move_to(x, y)
        if i >= 5:
            patch_times.append((time.perf_counter() - t0) * 1e3)
        if p is not None:
            refresh("gt", *p.bbox)
        widget.repaint()  # synchronous paint of what changed
        app.processEvents()
        if i >= 5:  # first paints warm caches
            times.append((time.perf_counter() - t0) * 1e3)
    widget.close()
    ms = np.array(times)
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "max_ms": round(float(ms.max()), 2),
        "patch_p95_ms": round(float(np.percentile(patch_times, 95)), 2),
    }


def undo_memory(side: int = 4096, strokes: int = 100) -> float:
    """MB held by 100 strokes of 20 px width, ~400 px long, each stored as one patch."""
    rng = np.random.default_rng(0)
    mask = np.zeros((side, side), np.uint8)
    total = 0
    for _ in range(strokes):
        s = E.Stroke(mask, 20, int(rng.integers(1, 3)))
        x, y = rng.uniform(200, side - 200, 2)
        for _k in range(40):
            x, y = x + rng.uniform(-4, 12), y + rng.uniform(-8, 8)
            s.move_to(x, y)
        total += s.finish().nbytes
    return total / 2**20


def main() -> int:
    app = QApplication.instance() or QApplication(sys.argv)
    try:
        import cellseg_gui.widgets.canvas  # noqa: F401

        use_canvas = True
    except ImportError:
        use_canvas = False
    moves = int(os.environ.get("PAINT_MOVES", "60" if use_canvas else "400"))
    out: dict[str, object] = {"path": "canvas" if use_canvas else "qimage", "moves": moves}
    for side in (4096, 8192):
        out[str(side)] = latency(side, app, use_canvas, moves)
    if use_canvas:  # the same work with a rectangle-only redraw, for comparison
        out["qimage_rect_redraw"] = {
            str(side): latency(side, app, False, 400) for side in (4096, 8192)
        }
    out["undo_100_strokes_mb"] = round(undo_memory(), 2)
    out["target_p95_ms"] = 16
    print(json.dumps(out), flush=True)
    # pyqtgraph/PySide teardown at interpreter exit can crash after the figures are out;
    # leave without it so the exit status reflects the benchmark.
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
