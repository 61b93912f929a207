"""Project model (torch-free, Qt-free): a folder of images/masks plus cellseg-project.json.

Why a separate model: the window, the training panel and the CLI all need the same answers
(which images, which masks, which split, which classes) and the file must survive crashes,
so it is written atomically and unknown keys are kept.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellseg_gui.core.dataset import DatasetError, ImagePair, find_pairs
from cellseg_gui.core.imageio import IMAGE_EXTS, atomic_write_text
from cellseg_gui.core.palette import PALETTE

PROJECT_FILE = "cellseg-project.json"
SPLITS = ("train", "val", "excluded")
DEFAULT_CLASSES = [
    {"name": "background", "color": [0, 0, 0]},
    {"name": "cell", "color": [46, 204, 113]},
    {"name": "boundary", "color": [241, 196, 15]},
]


class ProjectError(ValueError):
    """A folder or project file that cannot be opened; str() says which and why."""


@dataclass
class Project:
    folder: Path
    name: str = ""
    classes: list[dict[str, Any]] = field(
        default_factory=lambda: [dict(c) for c in DEFAULT_CLASSES]
    )
    split: dict[str, str] = field(default_factory=dict)
    verified: dict[str, bool] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    pairs: dict[str, ImagePair] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- paths
    @property
    def path(self) -> Path:
        return self.folder / PROJECT_FILE

    def models_dir(self) -> Path:
        return self.folder / "models"

    @property
    def names(self) -> list[str]:
        return sorted(self.pairs)

    def image_path(self, name: str) -> Path:
        return self.pairs[name].image_path

    def mask_path(self, name: str) -> Path | None:
        pair = self.pairs.get(name)
        return pair.mask_path if pair else None

    @property
    def mask_mode(self) -> str:
        return str(self.settings.get("mask_mode", "auto"))

    @property
    def boundary_width(self) -> int:
        return int(self.settings.get("boundary_width", 2))

    def colors(self) -> list[tuple[int, int, int]]:
        """Class colours (RGB), padded with the default palette for unnamed classes."""
        cols = [tuple(int(v) for v in c.get("color", (0, 0, 0)))[:3] for c in self.classes]
        return cols + PALETTE[len(cols) :]

    # ---------------------------------------------------------------- split
    def get_split(self, name: str) -> str:
        return self.split.get(name, "train")

    def set_split(self, mapping: dict[str, str]) -> None:
        for name, role in mapping.items():
            if role not in SPLITS:
                raise ValueError(f"{name}: split must be one of {SPLITS}, not {role!r}")
            self.split[name] = role

    def excluded(self) -> list[str]:
        return [n for n, r in self.split.items() if r == "excluded"]

    # ---------------------------------------------------------------- io
    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        out.update(
            format="cellseg-project",
            version=1,
            name=self.name or self.folder.name,
            classes=self.classes,
            images={
                n: {"split": self.get_split(n), "verified": bool(self.verified.get(n, False))}
                for n in sorted(set(self.pairs) | set(self.split))
            },
            settings=self.settings,
            models=self.models,
        )
        return out

    def save(self) -> None:
        """Write the project file atomically (temporary file, then rename)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.to_dict(), indent=1, sort_keys=False))

    def rescan(self) -> None:
        try:
            self.pairs = {p.name: p for p in find_pairs(self.folder)}
        except DatasetError:
            self.pairs = {}

    def add_images(self, paths: list[str | os.PathLike[str]]) -> list[str]:
        """Copy image files into images/ (a flat project gets one); returns the new names."""
        dest = self.folder / "images"
        if not dest.is_dir() and self.pairs:
            dest = self.folder
        dest.mkdir(parents=True, exist_ok=True)
        added = []
        for src in map(Path, paths):
            if src.suffix.lower() not in IMAGE_EXTS or not src.is_file():
                continue
            target = dest / src.name
            if target.resolve() != src.resolve():
                shutil.copy2(src, target)
            added.append(src.stem)
        self.rescan()
        return [n for n in added if n in self.pairs]


def open_project(path: str | os.PathLike[str]) -> Project:
    """Open a folder (images/ + masks/, or flat NAME_mask files) or a project file."""
    path = Path(path)
    folder = path.parent if path.suffix.lower() == ".json" else path
    if not folder.is_dir():
        raise ProjectError(f"{folder}: no such folder")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise ProjectError(f"{folder}: permission denied")
    project = Project(folder=folder, name=folder.name)
    # saves killed mid-write leave .NAME.XXXXXXXX.tmp files beside masks and project file
    from cellseg_gui.core.imageio import remove_stale_temporaries

    for where in (folder, folder / "masks"):
        remove_stale_temporaries(where)
    pfile = folder / PROJECT_FILE
    if pfile.exists():
        try:
            data = json.loads(pfile.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ProjectError(f"{pfile}: not a readable project file ({exc})") from exc
        if not isinstance(data, dict):
            raise ProjectError(f"{pfile}: not a project file")
        known = {"format", "version", "name", "classes", "images", "settings", "models"}
        project.extra = {k: v for k, v in data.items() if k not in known}
        project.name = str(data.get("name") or folder.name)
        if data.get("classes"):
            project.classes = list(data["classes"])
        for n, info in (data.get("images") or {}).items():
            if isinstance(info, dict):
                if info.get("split") in SPLITS:
                    project.split[n] = info["split"]
                project.verified[n] = bool(info.get("verified", False))
        project.settings = dict(data.get("settings") or {})
        project.models = list(data.get("models") or [])
    try:
        project.pairs = {p.name: p for p in find_pairs(folder)}
    except DatasetError as exc:
        raise ProjectError(str(exc)) from exc
    if not project.pairs:
        raise ProjectError(f"{folder}: no images found (expected images/ + masks/ or NAME.tif)")
    return project


def make_sample_project() -> Project:
    """Generate (first use) and open the built-in synthetic sample."""
    from cellseg_gui.core.sample import make_sample

    return open_project(make_sample())
