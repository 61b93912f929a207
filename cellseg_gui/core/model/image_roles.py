"""What each image was to the active model: trained on, validation, or never seen.

The list's "J · AP" figures are the model's, so the role shown beside them must be the
model's too. It used to be the project's split, which says what the *next* run will do
and is "train" for every image nobody marked: with a model trained elsewhere (the CLI,
another project) whose bundle records set46..set50 as validation, all fifteen images
said "train". A bundle records its images (``meta["training"]["images"]``: name, sha256
of the image file, split); an image counts as the model's only when its file is the one
the model saw (same name and bytes). Torch-free; reads only the bundle's metadata. The
window's list and ``cellseg evaluate``'s warning about training images both ask this.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cellseg_gui.core.data.fileio import file_sha256

__all__ = ["model_roles", "unhashed_bytes"]

# (path, size, mtime_ns) -> sha256: hashing the images again on every model switch is wasted
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _sha(path: Path) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (str(path), st.st_size, st.st_mtime_ns)
    sha = _SHA_CACHE.get(key)  # one lookup: a checking thread may fill it meanwhile
    if sha is None:
        try:
            sha = _SHA_CACHE[key] = file_sha256(path)
        except OSError:
            return None
    return sha


def _recorded(training: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """name -> (split, sha256 or "") from the bundle's training record."""
    out: dict[str, tuple[str, str]] = {}
    images = training.get("images")
    if isinstance(images, list):
        for item in images:
            if isinstance(item, dict) and item.get("split") in ("train", "val"):
                out[str(item.get("name"))] = (str(item["split"]), str(item.get("sha256") or ""))
    if not out:  # older bundles: names only
        split = training.get("split")
        if isinstance(split, dict):
            for role in ("train", "val"):
                for name in split.get(role) or ():
                    out[str(name)] = (role, "")
    return out


def _to_check(meta: dict[str, Any], names: list[str]) -> list[tuple[str, str, str]] | None:
    """Per name its recorded role and the hash its file must have ("" when there is
    nothing to check), or None when the bundle records no images."""
    training = meta.get("training")
    recorded = _recorded(training) if isinstance(training, dict) else {}
    if not recorded:
        return None
    return [(name, *recorded.get(name, ("unseen", ""))) for name in names]


def model_roles(
    meta: dict[str, Any],
    names: list[str],
    image_path: Any,
    stop: Callable[[], bool] | None = None,
) -> dict[str, str] | None:
    """``"train"``, ``"val"`` or ``"unseen"`` for each of ``names`` (``image_path(name)``
    gives its file), or None when the bundle records no images (nothing to say) or
    ``stop()`` turned true between two files (the window closed, another model chosen)."""
    items = _to_check(meta, names)
    if items is None:
        return None
    roles: dict[str, str] = {}
    for name, role, sha in items:
        if role != "unseen" and sha:
            if stop is not None and stop():
                return None
            path = image_path(name)
            if path is None or _sha(Path(path)) != sha:
                role = "unseen"  # another file under the same name
        roles[name] = role
    return roles


def unhashed_bytes(meta: dict[str, Any], names: list[str], image_path: Any) -> int:
    """Bytes ``model_roles`` would read for ``names`` that no earlier call has hashed (the
    files the bundle records by name and hash, whose size or time changed or that were
    never read): what decides whether the answer can come at once."""
    total = 0
    for name, role, sha in _to_check(meta, names) or ():
        path = image_path(name) if role != "unseen" and sha else None
        if path is None:
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        if (str(Path(path)), st.st_size, st.st_mtime_ns) not in _SHA_CACHE:
            total += int(st.st_size)
    return total
