"""QtCore adapters: run a core job in a QThread and turn its events into signals."""
