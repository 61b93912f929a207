"""Finding image/mask pairs in a folder and loading them as training samples.

A data set is a folder the user already has: ``images/`` + ``masks/`` with matching
stems, or a flat folder with ``NAME_mask.*`` / ``NAME_masks.*`` beside ``NAME.*``. Loading
never stops at the first bad file: each problem becomes an :class:`ImageReadError` in a
list the caller shows, and the good pairs load. Torch-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cellseg_gui.core.config import NormConfig
from cellseg_gui.core.data.fileio import file_sha256
from cellseg_gui.core.data.imageio import (
    IMAGE_EXTS,
    ImageReadError,
    read_image,
    read_mask,
    size_text,
)
from cellseg_gui.core.data.masks import as_instances, detect_dataset_mode, mask_to_classes
from cellseg_gui.core.data.normalize import normalize

MASK_SUFFIXES = ("_masks", "_mask")  # longest first, so NAME_masks is not NAME_mask + "s"


class DatasetError(ValueError):
    """A folder that cannot be used as a data set; ``str()`` is ``"folder: problem"``."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass
class ImagePair:
    name: str
    image_path: Path
    mask_path: Path | None


@dataclass
class Sample:
    """One loaded training image. ``sha256`` identifies the image file's bytes, so a
    model's record of its train/val split survives renames and detects changed files."""

    name: str
    image: np.ndarray  # float32 (C, H, W), normalised
    target: np.ndarray | None  # uint8 (H, W) class map
    image_path: Path
    mask_path: Path | None
    sha256: str
    n_classes: int
    mask_mode: str = ""  # the mode the mask was read in (auto resolved)
    # the true cells as ids, for instance scores: the mask itself for instance masks,
    # its connected components otherwise (``instance_source`` says which)
    instances: np.ndarray | None = None
    instance_source: str = ""


_EXT_RANK = {ext: i for i, ext in enumerate(IMAGE_EXTS)}


def _image_files(folder: Path) -> list[Path]:
    """Supported files, hidden ones skipped (temporary files, macOS ``._`` copies),
    sorted so that ``.tif`` wins over ``.png`` for the same stem."""
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTS
    ]
    return sorted(files, key=lambda p: (p.stem, _EXT_RANK[p.suffix.lower()], p.name))


def dead_links(folder: str | os.PathLike[str]) -> list[Path]:
    """Symbolic links named like images (in the folder, ``images/`` and ``masks/``) that
    loop or point nowhere: they are skipped, and callers say so (they were skipped
    without a word)."""
    root = Path(folder)
    out: list[Path] = []
    for where in (root, root / "images", root / "masks"):
        try:
            entries = list(where.iterdir()) if where.is_dir() else []
        except OSError:
            continue
        for p in entries:
            if p.suffix.lower() in IMAGE_EXTS and p.is_symlink() and not os.path.exists(p):
                out.append(p)
    return sorted(out)


def _mask_stem(stem: str) -> str | None:
    for suffix in MASK_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return None


def _pairs(images: list[Path], masks: dict[str, Path]) -> list[ImagePair]:
    stems = [p.stem for p in images]
    pairs = []
    for path in images:
        # Two images with one stem (a.tif and a.png) keep their extension in the name, so
        # every sample name stays unique.
        name = path.name if stems.count(path.stem) > 1 else path.stem
        pairs.append(ImagePair(name=name, image_path=path, mask_path=masks.get(path.stem)))
    return sorted(pairs, key=lambda p: p.name)


def find_pairs(folder: str | os.PathLike[str]) -> list[ImagePair]:
    """Pairs of ``folder/images/NAME.*`` with ``folder/masks/NAME.*`` (or
    ``masks/NAME_mask(s).*``), or, in a flat folder, ``NAME.*`` with ``NAME_mask(s).*``.

    Images without a mask get ``mask_path=None`` (still to be annotated). Sorted by name.
    Raises :class:`DatasetError` for a missing folder or one without images.
    """
    root = Path(folder)
    if not root.exists():
        raise DatasetError(root, "folder not found")
    if not root.is_dir():
        raise DatasetError(root, "not a folder")
    images_dir = root / "images"
    if images_dir.is_dir():
        images = _image_files(images_dir)
        masks: dict[str, Path] = {}
        masks_dir = root / "masks"
        if masks_dir.is_dir():
            # Reverse order so the preferred extension is written last and wins.
            for p in reversed(_image_files(masks_dir)):
                masks[_mask_stem(p.stem) or p.stem] = p
            for p in reversed(_image_files(masks_dir)):  # exact stems beat NAME_mask
                if _mask_stem(p.stem) is None:
                    masks[p.stem] = p
        if not images:
            raise DatasetError(images_dir, f"no images found ({', '.join(IMAGE_EXTS)})")
        return _pairs(images, masks)
    files = _image_files(root)
    masks = {}
    images = []
    for p in files:
        base = _mask_stem(p.stem)
        if base is None:
            images.append(p)
        elif base not in masks:
            masks[base] = p
    if not images:
        raise DatasetError(
            root,
            "no images found (expected images/ and masks/ folders, or NAME.tif with "
            "NAME_mask.tif beside it)",
        )
    return _pairs(images, masks)


def load_samples(
    pairs: list[ImagePair],
    *,
    mask_mode: str = "auto",
    boundary_width: int = 2,
    norm: NormConfig | None = None,
    channels: str = "grey",
    n_classes: int | None = None,
    require_masks: bool = True,
) -> tuple[list[Sample], list[ImageReadError]]:
    """Read, check and normalise pairs; return the good samples and one error per bad file.

    ``mask_mode="auto"`` decides one mode for the whole set (see ``detect_dataset_mode``).
    Errors name the file at fault: an unreadable or all-NaN image, a missing mask (when
    ``require_masks``), a mask of another size than its image, a mask whose classes
    exceed ``n_classes``. Without ``n_classes`` all samples share the largest class count
    found (2 when no mask was read).
    """
    norm = norm or NormConfig()
    errors: list[ImageReadError] = []
    loaded: list[tuple[ImagePair, np.ndarray, np.ndarray | None, str]] = []
    for pair in pairs:
        try:
            raw = read_image(pair.image_path, channels=channels)
            try:
                image = normalize(raw, norm)
            except ValueError as exc:  # all NaN, bad settings: name the file
                raise ImageReadError(pair.image_path, str(exc)) from None
            del raw
            mask = None
            if pair.mask_path is not None:
                mask = read_mask(pair.mask_path)
                if mask.shape != image.shape[1:]:
                    raise ImageReadError(
                        pair.mask_path,
                        f"mask is {size_text(mask.shape)} but its image "
                        f"{pair.image_path.name} is {size_text(image.shape[1:])} "
                        "(height x width)",
                    )
            elif require_masks:
                raise ImageReadError(pair.image_path, "no mask found for this image")
            sha = file_sha256(pair.image_path)
        except ImageReadError as exc:
            errors.append(exc)
            continue
        except OSError as exc:
            errors.append(ImageReadError(pair.image_path, f"cannot read file ({exc.strerror})"))
            continue
        loaded.append((pair, image, mask, sha))

    mode = mask_mode
    masks = [m for _, _, m, _ in loaded if m is not None]
    if mode == "auto":
        mode = detect_dataset_mode(masks) if masks else "instances"

    converted: list[tuple[ImagePair, np.ndarray, np.ndarray | None, str, int, Any]] = []
    for pair, image, mask, sha in loaded:
        target = None
        cells: tuple[np.ndarray, str] | None = None
        k = 0
        if mask is not None:
            try:
                target, k, _ = mask_to_classes(mask, mode, boundary_width)
                cells = as_instances(mask, mode)
            except ValueError as exc:
                errors.append(ImageReadError(pair.mask_path or pair.image_path, str(exc)))
                continue
            if n_classes is not None and k > n_classes:
                top = int(target.max())
                errors.append(
                    ImageReadError(
                        pair.mask_path or pair.image_path,
                        f"mask has class values up to {top} ({mode} mode: {k} classes) but "
                        f"the model has {n_classes} classes",
                    )
                )
                continue
        converted.append((pair, image, target, sha, k, cells))

    if n_classes is not None:
        common = n_classes
    else:
        found = [k for *_, k, _ in converted if k]
        common = max(found) if found else (3 if mode == "instances" else 2)
    # Report in the order of the pairs, whatever stage found the problem.
    order: dict[Path, int] = {}
    for i, pair in enumerate(pairs):
        order.setdefault(Path(pair.image_path), i)
        if pair.mask_path is not None:
            order.setdefault(Path(pair.mask_path), i)
    errors.sort(key=lambda e: order.get(e.path, len(pairs)))
    samples = [
        Sample(
            name=pair.name,
            image=image,
            target=target,
            image_path=pair.image_path,
            mask_path=pair.mask_path,
            sha256=sha,
            n_classes=common,
            mask_mode=mode,
            instances=None if cells is None else cells[0],
            instance_source="" if cells is None else cells[1],
        )
        for pair, image, target, sha, _, cells in converted
    ]
    return samples, errors
