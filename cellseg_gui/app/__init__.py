"""Main window, actions and settings: composes widgets and wires signals."""
