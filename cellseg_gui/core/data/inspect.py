"""Look at the data before training: per-image statistics and problems across the set.

Torch-free so the window and ``cellseg inspect`` can run it instantly. Most failed
segmentation runs are data problems (masks shifted or resized against their images,
labels outside the classes, empty masks, the same image twice across train and
validation, saturated or constant images), and all of them are cheap to find by reading
every file once. The report is both a text a person can read and JSON.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cellseg_gui.core.data.fileio import file_sha256
from cellseg_gui.core.data.imageio import (
    ImageReadError,
    image_info,
    read_image,
    read_mask,
    size_text,
)

PERCENTILES = (0.0, 1.0, 50.0, 99.0, 99.8, 100.0)
SATURATION_WARN = 0.01  # share of pixels at the top of the range worth a warning
FOREGROUND_WARN = 0.001  # a mask with less foreground than this is nearly empty


@dataclass
class ImageStats:
    """What one image and its mask look like."""

    name: str
    image_path: str
    mask_path: str | None
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    min: float | None = None
    max: float | None = None
    percentiles: dict[str, float] = field(default_factory=dict)
    saturated: float | None = None  # share of pixels at the top of the dtype's range
    nan_share: float = 0.0
    mask_shape: tuple[int, ...] | None = None
    mask_mode: str | None = None
    mask_values: list[int] = field(default_factory=list)  # distinct values (up to 50)
    n_mask_values: int = 0
    mask_max: int | None = None
    class_fractions: dict[str, float] = field(default_factory=dict)
    n_instances: int | None = None
    mask_size_differs: bool = False  # its figures describe a mask that does not fit
    sampled: int = 1  # statistics from every n-th pixel (large images)
    sha256: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image_path": self.image_path,
            "mask_path": self.mask_path,
            "shape": list(self.shape) if self.shape is not None else None,
            "dtype": self.dtype,
            "min": self.min,
            "max": self.max,
            "percentiles": dict(self.percentiles),
            "saturated": self.saturated,
            "nan_share": self.nan_share,
            "mask_shape": list(self.mask_shape) if self.mask_shape is not None else None,
            "mask_mode": self.mask_mode,
            "mask_values": list(self.mask_values),
            "n_mask_values": self.n_mask_values,
            "mask_max": self.mask_max,
            "class_fractions": dict(self.class_fractions),
            "n_instances": self.n_instances,
            "mask_size_differs": self.mask_size_differs,
            "sha256": self.sha256,
            "sampled_every": self.sampled,
            "error": self.error,
        }


@dataclass
class Problem:
    """One finding across the set. ``kind`` is a stable code for tests and the GUI."""

    kind: str  # unreadable | no_mask | size_mismatch | values_outside | empty_mask |
    #            duplicate | saturated | constant | nan | mixed_modes
    path: str
    text: str
    severity: str = "warning"  # "error" (cannot train on it) | "warning"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "text": self.text, "severity": self.severity}


@dataclass
class InspectReport:
    images: list[ImageStats]
    problems: list[Problem]
    n_classes: int | None
    mask_mode: str | None
    folder: str | None = None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def of_kind(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "n_images": len(self.images),
            "n_with_masks": sum(1 for s in self.images if s.mask_path),
            "mask_mode": self.mask_mode,
            "n_classes": self.n_classes,
            "images": [s.to_dict() for s in self.images],
            "problems": [p.to_dict() for p in self.problems],
        }

    def to_text(self) -> str:
        lines: list[str] = []
        n_masks = sum(1 for s in self.images if s.mask_path)
        head = f"{len(self.images)} image(s), {n_masks} with masks"
        if self.folder:
            head = f"{self.folder}: {head}"
        if self.mask_mode:
            head += f"; masks look like {self.mask_mode}"
            if self.n_classes:
                head += f" ({self.n_classes} classes)"
        lines.append(head)
        sampled = [x for x in self.images if x.sampled > 1]
        if sampled:
            shown = ", ".join(f"{x.name} (every {x.sampled}th pixel)" for x in sampled[:5])
            lines.append(f"large images inspected on a regular subsample: {shown}")
        lines.append("")
        cols = f"{'name':<24} {'size (h x w)':>12} {'dtype':>8} {'min':>9} {'p1':>9} {'p99.8':>9} "
        cols += f"{'max':>9} {'sat%':>6}  classes"
        lines.append(cols)
        for s in self.images:
            name = s.name if len(s.name) <= 24 else s.name[:21] + "..."
            if s.error and s.shape is None:
                lines.append(f"{name:<24} unreadable: {s.error}")
                continue
            size = size_text(s.shape) if s.shape else ""
            pc = s.percentiles
            cells = "cells" in s.class_fractions  # an instance mask: say what 0 is
            classes = ", ".join(
                f"{'background' if cells and k == '0' else k}:{100 * v:.1f}%"
                for k, v in s.class_fractions.items()
            )
            if s.n_instances is not None:
                classes += f" ({s.n_instances} cells)"
            if not s.mask_path:
                classes = "(no mask)"
            elif s.mask_size_differs:  # the row must not read as a mask that is fine
                classes = f"(mask of another size: see below) {classes}"
            sat = f"{100 * s.saturated:.2f}" if s.saturated is not None else "-"
            lines.append(
                f"{name:<24} {size:>12} {s.dtype or '-':>8} {_g(s.min):>9} "
                f"{_g(pc.get('p1')):>9} {_g(pc.get('p99.8')):>9} {_g(s.max):>9} {sat:>6}  "
                f"{classes}"
            )
        lines.append("")
        if not self.problems:
            lines.append("no problems found")
        else:
            n_err = len(self.errors)
            lines.append(
                f"{len(self.problems)} problem(s) ({n_err} error(s), "
                f"{len(self.problems) - n_err} warning(s)):"
            )
            for p in self.problems:
                lines.append(f"  {p.severity}: {p.path}: {p.text}")
        return "\n".join(lines)


def _g(x: float | None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    # 6.554e+04 read as above 65535; whole numbers lose nothing .4g kept (1234.56: 1235)
    if 1000 <= abs(x) < 1e9:
        return f"{x:.0f}"
    return f"{x:.4g}"


SAMPLE_ABOVE = 16_000_000  # pixels: larger images are inspected on a regular subsample
SAMPLE_TARGET = 4_000_000  # about this many pixels are looked at then


def _read_for_stats(path: Path) -> tuple[np.ndarray, tuple[int, ...], int]:
    """The image for statistics, its full shape, and the sampling step. A large image
    (a 20000 x 20000 slide took 82 s and 4.3 GB) is read as every step-th pixel of every
    step-th row: from a memory map where the TIFF allows one (nothing else is read),
    else from the decoded image."""
    info = image_info(path)
    shape = tuple(int(v) for v in info["shape"])
    pixels = shape[0] * shape[1] if len(shape) >= 2 else 0
    if pixels <= SAMPLE_ABOVE:
        return read_image(path, channels="keep"), shape, 1
    step = int(np.ceil(np.sqrt(pixels / SAMPLE_TARGET)))
    if path.suffix.lower() in (".tif", ".tiff") and info.get("pages", 1) == 1:
        import tifffile

        try:
            mm = tifffile.memmap(path, mode="r")
            if mm.ndim in (2, 3) and tuple(mm.shape[:2]) == shape[:2]:
                return np.ascontiguousarray(mm[::step, ::step]), shape, step
        except (ValueError, OSError):
            pass  # compressed or tiled: decode it
    img = read_image(path, channels="keep")
    return np.ascontiguousarray(img[::step, ::step]), tuple(int(v) for v in img.shape), step


def _image_stats(stats: ImageStats, img: np.ndarray) -> None:
    stats.shape = tuple(int(v) for v in img.shape)
    stats.dtype = str(img.dtype)
    data = img.astype(np.float64, copy=False) if img.dtype.kind == "f" else img
    if img.dtype.kind == "f":
        finite = np.isfinite(data)
        stats.nan_share = float(1.0 - finite.mean()) if data.size else 0.0
        vals = data[finite]
    else:
        vals = data.ravel()
    if vals.size == 0:
        return
    pcs = np.percentile(vals, PERCENTILES)
    stats.percentiles = {f"p{p:g}": float(v) for p, v in zip(PERCENTILES, pcs, strict=True)}
    stats.min = float(pcs[0])
    stats.max = float(pcs[-1])
    if img.dtype.kind in "ui":
        top = np.iinfo(img.dtype).max
        # 16-bit cameras often store 12-bit data: saturation is then at 4095, the largest
        # value the data reaches, so count pixels at the image max when it is a 2**n - 1.
        vmax = int(stats.max)
        if vmax != top and vmax > 0 and (vmax + 1) & vmax == 0 and vmax >= 255:
            top = vmax
        stats.saturated = float(np.count_nonzero(vals >= top) / vals.size)
    else:
        # floats have no fixed top; 1.0 is the usual full scale of scaled float images
        top = 1.0 if stats.max <= 1.0 else None
        stats.saturated = float(np.count_nonzero(vals >= top) / vals.size) if top else 0.0


def _mask_stats(stats: ImageStats, mask: np.ndarray, n_classes: int | None) -> None:
    from cellseg_gui.core.data.masks import detect_mask_mode

    stats.mask_shape = tuple(int(v) for v in mask.shape)
    if mask.dtype.kind == "u" and mask.dtype.itemsize <= 2:
        counts = np.bincount(mask.ravel())
        values = np.flatnonzero(counts)
        cnt = counts[values]
    else:
        values, cnt = np.unique(mask, return_counts=True)
    stats.n_mask_values = int(values.size)
    stats.mask_values = [int(v) for v in values[:50]]
    stats.mask_max = int(values.max()) if values.size else None
    mode = detect_mask_mode(mask)
    stats.mask_mode = mode
    total = max(int(mask.size), 1)
    if mode == "instances":
        bg = int(cnt[values == 0].sum())
        stats.class_fractions = {"0": bg / total, "cells": (total - bg) / total}
        stats.n_instances = int(np.count_nonzero(values))
    elif mode == "binary":
        bg = int(cnt[values == 0].sum())
        stats.class_fractions = {"0": bg / total, "1": (total - bg) / total}
    else:
        stats.class_fractions = {
            str(int(v)): int(c) / total for v, c in zip(values, cnt, strict=True)
        }


def inspect_dataset(
    pairs: list[Any], *, n_classes: int | None = None, folder: str | Path | None = None
) -> InspectReport:
    """Read every image and mask once and report statistics and problems.

    ``pairs`` are dataset.ImagePair-like objects (``name``, ``image_path``, ``mask_path``).
    ``n_classes`` is the model's class count, when known, so masks with values it cannot
    predict are flagged; without it, values are judged against the set's own mask mode.
    Unreadable files become problems, never exceptions: the point is to see them all.
    """
    images: list[ImageStats] = []
    problems: list[Problem] = []
    hashes: dict[str, list[str]] = {}
    pixel_hashes: dict[str, list[str]] = {}
    for pair in pairs:
        ipath = Path(pair.image_path)
        mpath = Path(pair.mask_path) if getattr(pair, "mask_path", None) else None
        stats = ImageStats(str(pair.name), str(ipath), str(mpath) if mpath else None)
        images.append(stats)
        img = None
        try:
            img, full_shape, step = _read_for_stats(ipath)
            stats.sha256 = file_sha256(ipath)
            hashes.setdefault(stats.sha256, []).append(str(ipath))
            _image_stats(stats, img)
            if step > 1:  # statistics from every step-th pixel; the shape is the file's
                stats.shape = full_shape
                stats.sampled = step
            ph = hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()
            pixel_hashes.setdefault(ph + str(img.shape) + str(img.dtype), []).append(str(ipath))
        except (ImageReadError, OSError, ValueError) as exc:
            stats.error = _problem_text(exc)
            problems.append(Problem("unreadable", str(ipath), stats.error, "error"))
        if img is not None:
            _image_problems(stats, ipath, problems)
            try:
                pages = int(image_info(ipath).get("pages", 1))
            except (ImageReadError, OSError, ValueError):
                pages = 1
            if pages > 1:  # a stack read as its first plane, said rather than silent
                problems.append(
                    Problem(
                        "stack", str(ipath),
                        f"holds {pages} planes (a stack or time series); only plane 0 is "
                        "used: save the plane you mean as its own image",
                    )
                )  # fmt: skip
        if mpath is None:
            problems.append(
                Problem("no_mask", str(ipath), "no mask (cannot train on it until annotated)")
            )
            continue
        try:
            mask = read_mask(mpath)
        except (ImageReadError, OSError, ValueError) as exc:
            problems.append(Problem("unreadable", str(mpath), _problem_text(exc), "error"))
            continue
        _mask_stats(stats, mask, n_classes)
        if stats.shape is not None and tuple(stats.shape[:2]) != tuple(mask.shape[:2]):
            stats.mask_size_differs = True
            problems.append(
                Problem(
                    "size_mismatch",
                    str(mpath),
                    f"mask is {size_text(mask.shape)} but its image is "
                    f"{size_text(stats.shape)} (height x width)",
                    "error",
                )
            )
        fg = 1.0 - stats.class_fractions.get("0", 1.0 if not stats.class_fractions else 0.0)
        if stats.n_mask_values <= 1 and (not stats.mask_values or stats.mask_values[0] == 0):
            problems.append(Problem("empty_mask", str(mpath), "mask is empty (all background)"))
        elif fg > 1.0 - FOREGROUND_WARN and stats.n_mask_values >= 1:
            problems.append(
                Problem(
                    "full_mask", str(mpath),
                    f"mask is all foreground ({100 * fg:.3f}%, no background): inverted, "
                    "or a constant value",
                )
            )  # fmt: skip
        elif fg < FOREGROUND_WARN:
            problems.append(
                Problem(
                    "empty_mask", str(mpath), f"mask is nearly empty ({100 * fg:.3f}% foreground)"
                )
            )
    mode = _set_mode(images)
    if mode is not None:
        # an empty mask reads as "binary" whatever the set is: it is reported as empty
        modes = {s.mask_mode for s in images if s.mask_mode and s.n_mask_values > 1}
        if len(modes) > 1:
            detail = ", ".join(
                f"{m}: {sum(1 for s in images if s.mask_mode == m and s.n_mask_values > 1)}"
                for m in sorted(modes)
            )
            problems.append(
                Problem(
                    "mixed_modes",
                    str(folder or "dataset"),
                    f"masks mix kinds ({detail}); treating all as {mode}",
                )
            )
    classes = n_classes
    if classes is None and mode is not None:
        classes = _set_classes(images, mode)
    if n_classes is not None:
        for s in images:
            if not s.mask_path or s.mask_mode in (None, "binary"):
                continue
            if s.mask_mode == "instances" and n_classes == 3:
                continue  # instance ids become background / cell / boundary
            if s.mask_max is None or s.mask_max < n_classes:
                continue
            bad = [v for v in s.mask_values if v >= n_classes]
            shown = ", ".join(str(v) for v in bad[:8])
            if len(bad) > 8 or s.n_mask_values > len(s.mask_values):
                shown += f" ... (up to {s.mask_max})"
            problems.append(
                Problem(
                    "values_outside",
                    s.mask_path,
                    f"mask has values {shown} outside the model's {n_classes} classes "
                    f"(0..{n_classes - 1})",
                    "error",
                )
            )
    for paths in list(hashes.values()):
        if len(paths) > 1:
            for p in paths[1:]:
                problems.append(
                    Problem("duplicate", p, f"same file content as {paths[0]}", "warning")
                )
    seen_dupes = {p for paths in hashes.values() if len(paths) > 1 for p in paths[1:]}
    for paths in pixel_hashes.values():
        if len(paths) > 1:
            for p in paths[1:]:
                if p not in seen_dupes:
                    problems.append(
                        Problem("duplicate", p, f"same pixels as {paths[0]}", "warning")
                    )
    return InspectReport(
        images, problems, classes, mode, str(folder) if folder is not None else None
    )


def _problem_text(exc: BaseException) -> str:
    """The problem part of an ImageReadError (the path is reported beside it)."""
    if isinstance(exc, ImageReadError):
        return exc.problem
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _image_problems(stats: ImageStats, path: Path, problems: list[Problem]) -> None:
    if stats.nan_share >= 1.0:
        problems.append(Problem("nan", str(path), "image is entirely NaN", "error"))
        return
    if stats.nan_share > 0:
        problems.append(
            Problem("nan", str(path), f"{100 * stats.nan_share:.2f}% of pixels are NaN")
        )
    if stats.min is not None and stats.max is not None and stats.min == stats.max:
        problems.append(
            Problem("constant", str(path), f"image is constant (every pixel {stats.min:g})")
        )
    elif stats.saturated is not None and stats.saturated > SATURATION_WARN:
        problems.append(
            Problem(
                "saturated",
                str(path),
                f"{100 * stats.saturated:.1f}% of pixels are saturated (at the top of the range)",
            )
        )


def _set_mode(images: list[ImageStats]) -> str | None:
    modes = {s.mask_mode for s in images if s.mask_mode}
    if not modes:
        return None
    for mode in ("instances", "classes"):
        if mode in modes:
            return mode
    return "binary"


def _set_classes(images: list[ImageStats], mode: str) -> int | None:
    if mode in ("binary", "instances"):
        return 2 if mode == "binary" else 3
    top = max((max(s.mask_values) for s in images if s.mask_values), default=0)
    return max(top + 1, 2)
