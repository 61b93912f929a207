"""Numpy and torch only; never Qt. Keep this file free of imports so that
``import cellseg_gui.core`` does not load torch (modules that need torch import it
themselves and are imported only where used)."""
