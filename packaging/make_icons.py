"""Render resources/cellseg-gui.svg to the PNG sizes desktops and PyInstaller want.

Run after editing the SVG (the PNGs are committed so installs need no renderer):

    QT_QPA_PLATFORM=offscreen python packaging/make_icons.py

Uses QtSvg from PySide6-Essentials, so the PNGs are exactly the SVG's geometry.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SVG = ROOT / "resources" / "cellseg-gui.svg"
SIZES = (16, 32, 48, 64, 128, 256)


def render(svg: Path, out_dir: Path, sizes: tuple[int, ...] = SIZES) -> list[Path]:
    """Write ``cellseg-gui-<size>.png`` for each size; returns the paths written."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"{svg}: not a valid SVG")
    written = []
    for size in sizes:
        image = QImage(size, size, QImage.Format.Format_ARGB32)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        renderer.render(painter)
        painter.end()
        path = out_dir / f"cellseg-gui-{size}.png"
        if not image.save(str(path), "PNG"):
            raise SystemExit(f"{path}: could not write")
        written.append(path)
    return written


def write_ico(out_dir: Path) -> Path:
    """A Windows .ico (for PyInstaller's ``icon=``) from the rendered PNGs, via Pillow."""
    from PIL import Image

    big = Image.open(out_dir / "cellseg-gui-256.png")
    path = out_dir / "cellseg-gui.ico"
    big.save(path, sizes=[(s, s) for s in SIZES])
    return path


if __name__ == "__main__":
    out = SVG.parent
    for p in render(SVG, out):
        print(p.relative_to(ROOT), p.stat().st_size, "bytes")
    ico = write_ico(out)
    print(ico.relative_to(ROOT), ico.stat().st_size, "bytes")
