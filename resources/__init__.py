"""Icons, desktop entry and help text, shipped as package data (see pyproject)."""
