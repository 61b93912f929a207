"""About box with versions; torch's version comes from package metadata, not an import."""

from __future__ import annotations

import platform
from importlib import metadata

from PySide6.QtWidgets import QMessageBox, QWidget

import cellseg_gui


def versions() -> dict[str, str]:
    """Versions of what the window runs on. Qt's binding comes from the imported module:
    the distribution may be PySide6 or PySide6-Essentials (the About box said "PySide6
    not installed" under the latter)."""
    import pyqtgraph
    import PySide6

    out = {
        "cellseg_gui": cellseg_gui.__version__,
        "python": platform.python_version(),
        "PySide6": f"{PySide6.__version__} (Qt {PySide6.QtCore.qVersion()})",
        "pyqtgraph": pyqtgraph.__version__,
    }
    for dist in ("torch", "numpy", "tifffile", "scipy", "scikit-image"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def show_about(parent: QWidget) -> None:
    rows = "".join(f"<tr><td>{k}</td><td>&nbsp;{v}</td></tr>" for k, v in versions().items())
    QMessageBox.about(
        parent,
        "About cellseg-gui",
        "<h3>cellseg-gui</h3><p>Segment microscopy images: look at the data, fix masks, "
        f"train and debug a U-Net, export it.</p><table>{rows}</table>",
    )
