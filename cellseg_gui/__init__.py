"""cellseg_gui: segment microscopy images, fix masks, train and debug a U-Net.

Importing this package must stay cheap: no torch, no Qt. The window relies on that to
appear before torch (about 1.5 s to import) has loaded.
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def resource_path(name: str) -> Path:
    """Path of a file in resources/, from a source checkout or an installed wheel."""
    here = Path(__file__).resolve().parent
    checkout = here.parent / "resources" / name
    if checkout.exists():
        return checkout
    from importlib.resources import files

    return Path(str(files("cellseg_gui.resources").joinpath(name)))
