"""What ``cellseg-project.json`` may hold, as a pydantic schema, and reading it part by part.

A project file is often edited by hand or by a script, or written by a newer version. One
wrong value must not cost the user the rest of the project: each top-level part
(``classes``, ``images``, ``settings``, ``models``) is checked on its own, and a part that
does not fit is replaced by its default with one sentence naming the key and the problem.
Keys this version does not know are kept as they are. Torch-free and Qt-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

__all__ = ["PROJECT_VERSION", "ProjectFileData", "read_project_data"]

PROJECT_VERSION = 1

Channel = Annotated[int, Field(ge=0, le=255, strict=True)]


class ClassEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: Annotated[str, Field(strict=True, min_length=1)]
    color: tuple[Channel, Channel, Channel]


class ImageEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    split: Literal["train", "val", "excluded"] = "train"
    verified: Annotated[bool, Field(strict=True)] = False


class SettingsPart(BaseModel):
    """The settings the program reads itself; the rest (the training form) is kept."""

    model_config = ConfigDict(extra="allow")
    mask_mode: Literal["auto", "binary", "classes", "instances"] = "auto"
    boundary_width: Annotated[int, Field(strict=True, ge=0, le=64)] = 2


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    path: Annotated[str, Field(strict=True, min_length=1)]


_PARTS: dict[str, TypeAdapter[Any]] = {
    "name": TypeAdapter(Annotated[str, Field(strict=True)]),
    "classes": TypeAdapter(Annotated[list[ClassEntry], Field(min_length=1)]),
    "images": TypeAdapter(dict[str, ImageEntry]),
    "settings": TypeAdapter(SettingsPart),
    "models": TypeAdapter(list[ModelEntry]),
}
_DEFAULT_SAYS = {
    "name": "the folder's name is used",
    "classes": "the default classes are used",
    "images": "every image is in training, none verified",
    "settings": "the default settings are used",
    "models": "the models folder is listed instead",
}


@dataclass
class ProjectFileData:
    """The usable parts of a project file, and a sentence per part that was not."""

    name: str | None = None
    classes: list[dict[str, Any]] | None = None
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = PROJECT_VERSION
    problems: list[str] = field(default_factory=list)


def _problem(exc: ValidationError, key: str) -> str:
    """``key.path.in.it: what is wrong (found VALUE)`` for the first error."""
    err = exc.errors()[0]
    where = ".".join([key, *(str(p) for p in err.get("loc", ()))])
    got = err.get("input")
    shown = repr(got) if len(repr(got)) <= 40 else repr(got)[:37] + "..."
    return f"{where}: {err.get('msg', 'invalid')} (found {shown})"


def read_project_data(data: Any) -> ProjectFileData:
    """Check a parsed project file part by part (see the module docstring)."""
    out = ProjectFileData()
    if not isinstance(data, dict):
        out.problems.append(f"the file holds a {type(data).__name__}, not a project table")
        return out
    fmt = data.get("format", "cellseg-project")
    if fmt != "cellseg-project":
        out.problems.append(f"format is {fmt!r}, not 'cellseg-project'; read as a project")
    version = data.get("version", PROJECT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        out.problems.append(f"version {version!r} is not a whole number >= 1; read as 1")
    elif version > PROJECT_VERSION:
        out.version = version
        out.problems.append(
            f"written by a newer cellseg-gui (project version {version}, this one reads "
            f"{PROJECT_VERSION}): parts it does not know are kept as they are"
        )
    known = {"format", "version", *_PARTS}
    out.extra = {k: v for k, v in data.items() if k not in known}
    for key, adapter in _PARTS.items():
        if key not in data or data[key] is None:
            continue
        try:
            value = adapter.validate_python(data[key])
        except ValidationError as exc:
            if key == "images" and isinstance(data[key], dict):
                value = _good_images(data[key], out.problems)
            else:
                out.problems.append(f"{_problem(exc, key)}; {_DEFAULT_SAYS[key]}")
                continue
        if key == "name":
            out.name = value
        elif key == "classes":
            out.classes = [c.model_dump() for c in value]
            for c in out.classes:
                c["color"] = list(c["color"])
        elif key == "images":
            out.images = {
                n: (e.model_dump() if isinstance(e, ImageEntry) else e) for n, e in value.items()
            }
        elif key == "settings":
            out.settings = {k: v for k, v in value.model_dump().items() if k in data[key]}
        else:
            out.models = [m.model_dump() for m in value]
    return out


def _good_images(raw: dict[str, Any], problems: list[str]) -> dict[str, dict[str, Any]]:
    """The image entries that fit; one sentence for those that do not."""
    entry = TypeAdapter(ImageEntry)
    good: dict[str, dict[str, Any]] = {}
    bad: list[str] = []
    first = ""
    for name, value in raw.items():
        try:
            good[name] = entry.validate_python(value).model_dump()
        except ValidationError as exc:
            bad.append(name)
            first = first or _problem(exc, f"images.{name}")
    shown = ", ".join(bad[:5]) + (", ..." if len(bad) > 5 else "")
    problems.append(f"{first}; {len(bad)} image entr{'y' if len(bad) == 1 else 'ies'} ({shown}) "
                    "read as training images, not verified")  # fmt: skip
    return good
