"""A model bundle's JSON record (``cellseg.json``): making it, reading it from a bundle
and checking it, without torch. ``cellseg info``, the window's model list and the
project's model registry read models through this module, so listing models never pays
for a torch import; ``core.model.bundle`` adds the weights, the predictors and the exports.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from cellseg_gui import __version__
from cellseg_gui.core.config import ModelConfig, NormConfig
from cellseg_gui.core.model.postprocess import default_postprocess
from cellseg_gui.core.palette import class_color

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "BundleError",
    "ExportError",
    "architecture",
    "default_classes",
    "make_meta",
    "read_bundle_meta",
]

BUNDLE_FORMAT = "cellseg-bundle"
BUNDLE_VERSION = 1
META_NAME = "cellseg.json"
WEIGHTS_NAME = "weights.pt"
ONNX_META_KEY = "cellseg"


class BundleError(ValueError):
    """A model file that cannot be used; ``str()`` is ``"<path>: <problem>"`` for the CLI."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ExportError(BundleError):
    """An export that does not reproduce the torch model (or could not be written)."""


# ----------------------------------------------------------------------------- meta


def default_classes(mask_mode: str, n_classes: int) -> list[dict[str, Any]]:
    """Class names and palette colours for a mask mode; extra classes get "class N"."""
    names = {
        "instances": ["background", "cell", "boundary"],
        "binary": ["background", "foreground"],
    }.get(mask_mode, ["background"])
    out = []
    for k in range(int(n_classes)):
        name = names[k] if k < len(names) else f"class {k}"
        color = class_color(k)
        out.append({"name": name, "color": list(color)})
    return out


def _torch_version() -> str:
    """The torch that made the model: already imported whenever a model is saved, so
    reading it from ``sys.modules`` keeps this module torch-free."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return str(torch.__version__)
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _versions() -> dict[str, str]:
    return {
        "cellseg_gui": __version__,
        "torch": _torch_version(),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def make_meta(
    model_cfg: ModelConfig,
    *,
    classes: list[dict[str, Any]] | None = None,
    mask_mode: str,
    boundary_width: int,
    channels: str,
    norm: NormConfig,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    name: str | None = None,
    postprocess: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON record stored with a model (see the module docstring)."""
    if classes is None:
        classes = default_classes(mask_mode, model_cfg.n_classes)
    if len(classes) != model_cfg.n_classes:
        raise ValueError(f"{len(classes)} class entries for a {model_cfg.n_classes}-class model")
    meta = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "name": name or "cellseg model",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "architecture": model_cfg.to_dict(),
        "classes": [
            {"name": str(c["name"]), "color": [int(v) for v in c["color"]]} for c in classes
        ],
        "mask_mode": mask_mode,
        "boundary_width": int(boundary_width),
        "channels": channels,
        "normalization": norm.to_dict(),
        "training": training or {},
        "metrics": metrics or {},
        # how predictions become cells (core.model.postprocess); exports carry it unchanged
        "postprocess": postprocess
        or default_postprocess(bool(model_cfg.distance_head), bool(model_cfg.flow_head)).to_dict(),
        "versions": _versions(),
    }
    # Plain JSON types only (numpy scalars in training records become floats), so the
    # meta compares equal to what read_bundle_meta returns and any json.dumps works.
    return json.loads(_dumps(meta))


def _json_default(obj: Any) -> Any:
    """numpy scalars/arrays in training records become plain JSON."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _dumps(meta: dict[str, Any]) -> str:
    return json.dumps(meta, indent=2, default=_json_default, allow_nan=True)


def _check_meta(path: str | os.PathLike[str], meta: Any) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise BundleError(path, f"{META_NAME} is not a JSON object")
    if meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(path, f"not a cellseg model (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise BundleError(path, f"bad format_version {version!r}")
    if version > BUNDLE_VERSION:
        raise BundleError(
            path, f"made by a newer cellseg_gui (format {version}); please update to read it"
        )
    arch = meta.get("architecture")
    if not isinstance(arch, dict):
        raise BundleError(path, f"{META_NAME} has no architecture")
    _check_architecture(path, arch)
    _check_normalization(path, meta.get("normalization"))
    return meta


def _check_normalization(path: str | os.PathLike[str], norm: Any) -> None:
    """A bundle's normalisation, checked when it is read: an unknown method or
    percentiles that cannot be used were reported by predict against each image it was
    given, as if the images were at fault."""
    from cellseg_gui.core.data.normalize import METHODS

    if norm is None:
        return
    if not isinstance(norm, dict):
        raise BundleError(path, "normalization is not a JSON object")
    method = norm.get("method") or "percentile"  # as ``normalize`` reads a missing one
    if not isinstance(method, str) or method.lower() not in METHODS:
        raise BundleError(path, f"normalization.method is {method!r}; a cellseg model has "
                          f"one of {', '.join(METHODS)}")  # fmt: skip
    for key in ("low", "high"):
        v = norm.get(key, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 100:
            raise BundleError(path, f"normalization.{key} is {v!r}; a percentile 0-100")
    if method.lower() == "percentile" and not norm.get("low", 1.0) < norm.get("high", 99.8):
        raise BundleError(path, f"normalization.low ({norm.get('low')}) is not below "
                          f"normalization.high ({norm.get('high')})")  # fmt: skip


# What a model from this program can be. A bundle outside these ranges (a "hidden: 1e9"
# from a damaged or crafted file) would ask the allocator for terabytes: refused when it
# is read, with the key named, so info, predict, evaluate and export all say the same.
ARCHITECTURE_RANGES: dict[str, tuple[int, int]] = {
    "in_channels": (1, 16),
    "n_classes": (1, 256),
    "hidden": (1, 512),
    "depth": (1, 8),
    "downsample": (0, 16),
}


def _check_architecture(path: str | os.PathLike[str], arch: dict[str, Any]) -> None:
    for key, (lo, hi) in ARCHITECTURE_RANGES.items():
        if key not in arch:
            continue
        v = arch[key]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise BundleError(
                path, f"architecture.{key} is {v!r}; a cellseg model has a whole number {lo}-{hi}"
            )
    dropout = arch.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise BundleError(path, f"architecture.dropout is {dropout!r}; it must be in [0, 1)")
    for key in ("distance_head", "flow_head"):
        head = arch.get(key, False)
        if not isinstance(head, bool):
            raise BundleError(path, f"architecture.{key} is {head!r}; it must be true or false")
    if arch.get("distance_head") is True and arch.get("flow_head") is True:
        raise BundleError(path, "architecture has both a distance output and flows")


# ----------------------------------------------------------------------------- files


def _check_file(path: Path) -> None:
    if not path.exists():
        raise BundleError(path, "file not found")
    if path.is_dir():
        raise BundleError(path, "is a folder, not a model file")
    if path.stat().st_size == 0:
        raise BundleError(path, "empty file (0 bytes)")


def _read_zip(path: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    _check_file(path)
    try:
        with zipfile.ZipFile(path) as zf:
            present = set(zf.namelist())
            out = {}
            for n in names:
                if n not in present:
                    raise BundleError(path, f"not a cellseg bundle (no {n} inside)")
                out[n] = zf.read(n)
            return out
    except BundleError:
        raise
    except zipfile.BadZipFile as exc:
        raise BundleError(
            path, f"not a cellseg bundle (damaged or not a zip file: {exc})"
        ) from None
    except (OSError, EOFError, ValueError) as exc:
        raise BundleError(path, f"cannot read bundle: {exc}") from None


def _parse_meta(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(path, f"{META_NAME} is not valid JSON ({exc})") from None
    return _check_meta(path, meta)


def read_bundle_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON record of a bundle, without reading its weights (cheap: for lists, info)."""
    path = Path(path)
    return _parse_meta(path, _read_zip(path, (META_NAME,))[META_NAME])


def architecture(meta: dict[str, Any]) -> ModelConfig:
    """The model's architecture as recorded. Bundles from before ``downsample`` existed
    ran at full resolution: they read as 1, never as 0 (auto)."""
    cfg = ModelConfig.from_dict(meta.get("architecture"))
    if not cfg.downsample:
        cfg.downsample = 1
    return cfg
