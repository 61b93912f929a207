"""Persistent GUI settings (window layout, recent projects).

Tests isolate them with CELLSEG_SETTINGS_DIR (an INI file there instead of the user's)."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QSettings

ORG = "cellseg_gui"
APP = "cellseg-gui"
MAX_RECENT = 8


def settings() -> QSettings:
    folder = os.environ.get("CELLSEG_SETTINGS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        return QSettings(str(Path(folder) / "cellseg-gui.ini"), QSettings.Format.IniFormat)
    return QSettings(ORG, APP)


def recent_projects() -> list[str]:
    value = settings().value("recent", [])
    if isinstance(value, str):
        value = [value]
    return [v for v in (value or []) if v]


def add_recent(path: str | os.PathLike[str]) -> list[str]:
    path = str(Path(path).resolve())
    items = [path] + [p for p in recent_projects() if p != path]
    s = settings()
    s.setValue("recent", items[:MAX_RECENT])
    return items[:MAX_RECENT]
