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

from cellseg_gui.core.data.dataset import DatasetError, ImagePair, find_pairs
from cellseg_gui.core.data.fileio import atomic_write_bytes, atomic_write_text
from cellseg_gui.core.data.imageio import IMAGE_EXTS
from cellseg_gui.core.data.project_schema import PROJECT_VERSION, read_project_data
from cellseg_gui.core.data.split import split_train_val
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
    version: int = PROJECT_VERSION
    # what was wrong with the project file when it was opened, one sentence each; the
    # file is copied to cellseg-project.json.bak before it is first rewritten then
    problems: list[str] = field(default_factory=list)
    _backed_up: bool = field(default=False, repr=False, compare=False)
    _needs_backup: bool = field(default=False, repr=False, compare=False)
    # opened read-only (another window has the project): nothing here is written
    read_only: bool = field(default=False, compare=False)

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

    def training_pairs(self) -> list[ImagePair]:
        """The images that take part in training (all but the excluded), in name order."""
        excluded = set(self.excluded())
        return [self.pairs[n] for n in self.names if n not in excluded]

    def training_split(
        self, names: list[str], val_fraction: float, seed: int
    ) -> tuple[list[str], list[str]]:
        """Train / validation names among ``names``. The split lives in the project so the
        validation images stay the same from run to run and between the window and the
        CLI: images marked 'val' are validation, the rest train. With none marked yet, one
        is drawn by ``core.data.split`` (the CLI's function: at least one image of each kind)
        and stored. Raises ProjectError when every image is marked 'val'."""
        val = [n for n in names if self.split.get(n) == "val"]
        if not val:
            train, val = split_train_val(names, val_fraction, seed)
            self.set_split({n: ("val" if n in val else "train") for n in names})
            self.save()
            return train, val
        train = [n for n in names if n not in val]
        if not train:
            raise ProjectError(
                f"{self.path}: every image with a mask is marked 'val'; "
                "mark at least one as 'train' (right-click it in the image list)"
            )
        return train, val

    # ---------------------------------------------------------------- settings
    def training_settings(self) -> dict[str, Any]:
        """The training form and state the window saved ({"config": ..., "active_model"})."""
        saved = self.settings.get("training")
        return dict(saved) if isinstance(saved, dict) else {}

    def set_training_settings(self, data: dict[str, Any]) -> None:
        self.settings["training"] = data
        self.save()

    # ---------------------------------------------------------------- io
    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        out.update(
            format="cellseg-project",
            version=max(self.version, PROJECT_VERSION),
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
        """Write the project file atomically (temporary file, then rename). A file that
        had problems when opened is first kept as ``cellseg-project.json.bak``, so what the
        user wrote by hand is never lost to the defaults that replaced its broken parts."""
        if self.read_only:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._needs_backup and not self._backed_up and self.path.is_file():
            atomic_write_bytes(self.path.with_name(PROJECT_FILE + ".bak"), self.path.read_bytes())
            self._backed_up = True
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
    from cellseg_gui.core.data.fileio import remove_stale_temporaries

    for where in (folder, folder / "masks"):
        remove_stale_temporaries(where)
    pfile = folder / PROJECT_FILE
    if pfile.exists():
        try:
            raw = json.loads(pfile.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ProjectError(f"{pfile}: not a readable project file ({exc})") from exc
        data = read_project_data(raw)
        project.problems = [f"{pfile}: {p}" for p in data.problems]
        project._needs_backup = bool(data.problems)  # what a rewrite would replace
        project.extra = data.extra
        project.version = data.version
        project.name = data.name or folder.name
        if data.classes:
            project.classes = data.classes
        for n, info in data.images.items():
            project.split[n] = info["split"]
            project.verified[n] = info["verified"]
        project.settings = data.settings
        project.models = data.models
    try:
        project.pairs = {p.name: p for p in find_pairs(folder)}
    except DatasetError as exc:
        raise ProjectError(str(exc)) from exc
    if not project.pairs:
        raise ProjectError(f"{folder}: no images found (expected images/ + masks/ or NAME.tif)")
    from cellseg_gui.core.data.dataset import dead_links

    for link in dead_links(folder):
        project.problems.append(f"{link}: a symbolic link that loops or points nowhere; skipped")
    missing = sorted(n for n in project.split if n not in project.pairs)
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        project.problems.append(
            f"{pfile}: {len(missing)} image(s) it names are not in the folder ({shown}); "
            "their entries are kept in case the files come back"
        )
    return project
