"""The models a project knows: the bundles in its ``models/`` folder and those it lists
from elsewhere, with the figures the Models list shows. Torch-free (bundle metadata is
read by ``core.model.bundle_meta``), so the window lists models before torch has loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cellseg_gui.core.data.project import Project
from cellseg_gui.core.model.bundle_meta import BundleError, read_bundle_meta
from cellseg_gui.core.model.scoring import model_scores

__all__ = ["ModelRecord", "model_record", "model_records", "new_model_path", "register_model"]


@dataclass(frozen=True)
class ModelRecord:
    """One model as the Models list shows it."""

    name: str
    path: str
    created: str
    training: dict[str, Any] = field(default_factory=dict)
    best_val: float | None = None  # best validation foreground Jaccard
    best_ap50: float | None = None  # its validation AP@0.5, tuned post-processing


def _listed_models(project: Project) -> list[Path]:
    """Models the project lists that live outside its models folder (loaded from disk)."""
    out = []
    for m in project.models:
        raw = m.get("path", "") if isinstance(m, dict) else ""
        if not raw:
            continue
        p = Path(raw)
        p = p if p.is_absolute() else project.folder / p
        if p.suffix == ".cellseg" and p.is_file():
            out.append(p)
    return out


def display_name(meta: dict, path: str | Path) -> str:
    """What the window calls a model: its file's name, which the user gave or sees, with
    the run's own beside it when they differ (a colleague's "run3" saved as seed0.cellseg
    was listed as "run3" and could not be found)."""
    stem, recorded = Path(path).stem, str(meta.get("name") or "")
    plain = ("", stem, "cellseg model")  # no name of its own (bundle_meta's default)
    return stem if recorded in plain else f"{stem} ({recorded})"


def model_record(path: str | Path) -> ModelRecord:
    """The record of one bundle (raises BundleError when it cannot be read)."""
    meta = read_bundle_meta(path)
    best_val, best_ap50 = model_scores(meta)
    training = meta.get("training")
    return ModelRecord(
        name=display_name(meta, path),
        path=str(path),
        created=str(meta.get("created", "")),
        training=training if isinstance(training, dict) else {},
        best_val=best_val,
        best_ap50=best_ap50,
    )


def model_records(project: Project) -> list[ModelRecord]:
    """One record per readable bundle, newest first (unreadable ones are left out)."""
    paths = sorted(project.models_dir().glob("*.cellseg"))
    seen = {q.resolve() for q in paths}
    paths += [p for p in _listed_models(project) if p.resolve() not in seen]
    out = []
    for path in paths:
        try:
            out.append(model_record(path))
        except (BundleError, OSError):
            continue
    out.sort(key=lambda r: r.created, reverse=True)
    return out


def register_model(project: Project, path: str | Path) -> None:
    """Add a model to the project's models list (the project file), once."""
    path = Path(path)
    try:
        rel = str(path.resolve().relative_to(project.folder.resolve()))
    except ValueError:
        rel = str(path.resolve())
    if any(m.get("path") in (rel, str(path)) for m in project.models if isinstance(m, dict)):
        return
    try:
        meta = read_bundle_meta(path)
    except (BundleError, OSError):
        meta = {}
    best_val, best_ap50 = model_scores(meta)
    project.models.append(
        {
            "name": meta.get("name") or path.stem,
            "path": rel,
            "created": meta.get("created", datetime.now().isoformat(timespec="seconds")),
            "best_val_fg_jaccard": best_val,
            "best_val_ap50": best_ap50,
        }
    )
    project.save()


def new_model_path(project: Project, prefix: str = "run") -> Path:
    """A new, unused bundle path in the project's models folder (made here, not before:
    looking at a folder leaves it as it was, so a read-only one opens)."""
    folder = project.models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = folder / f"{prefix}-{stamp}.cellseg"
    i = 2
    while path.exists():
        path = folder / f"{prefix}-{stamp}-{i}.cellseg"
        i += 1
    return path
