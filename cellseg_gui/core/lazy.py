"""Modules imported on first use.

scipy.ndimage costs about 0.6 s to import (it pulls in numpy.f2py and more), and the
window imports the mask and edit modules before it shows; the first edit or mask
conversion pays for it instead.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class LazyModule:
    """Stands for a module and imports it at the first attribute access."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str):
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


ndimage = LazyModule("scipy.ndimage")
