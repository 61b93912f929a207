"""QtCore adapters: run a core job in a thread and turn its events into signals on the
GUI thread; keep Python's cycle collector on the GUI thread (``gui_gc``)."""
