"""Label masks: recognise what a mask means, turn it into training classes, and back.

Users bring masks in three conventions: binary (0/255 or 0/1), class ids (0, 1, 2, ...)
and instances (one id per cell, as Cellpose, Fiji or the Cell Tracking Challenge write
them). A U-Net predicts classes, so instances become background / cell / boundary, the
classic recipe that keeps touching cells apart; and a 3-class prediction becomes instances
again (each cell core grown back into its boundary) so users get counts and per-cell masks.

All image operations are vectorised (scipy.ndimage / scikit-image): masks are
megapixels and this runs for every image at every load. Torch-free.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from cellseg_gui.core.lazy import ndimage as ndi  # imported on first use

MASK_MODES = ("binary", "classes", "instances")
INSTANCE_CLASSES = ("background", "cell", "boundary")

# Auto-detection: a mask whose largest value is at most this is read as class ids.
# Class masks use a handful of small ids; instance masks number cells up to tens or
# thousands. An image with at most this many cells is ambiguous on its own, which is why
# ``detect_dataset_mode`` decides over all masks of a data set.
MAX_AUTO_CLASS_ID = 9


def _check_integer(mask: np.ndarray) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"a mask must be 2D (H, W), got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype.kind not in "ui":
        raise ValueError(f"a mask must hold integer labels, got {arr.dtype}")
    return arr


def _values(mask: np.ndarray) -> np.ndarray:
    """Distinct values; bincount is much faster than unique for small unsigned types."""
    if mask.dtype.kind == "u" and mask.dtype.itemsize <= 2 and mask.size:
        return np.flatnonzero(np.bincount(mask.ravel()))
    return np.unique(mask)


def detect_mask_mode(mask: np.ndarray) -> str:
    """Guess what a mask's values mean: "binary", "classes" or "instances".

    - only {0, 1} or {0, 255} (or empty) -> "binary";
    - every value at most ``MAX_AUTO_CLASS_ID`` (e.g. 0, 1, 2) -> "classes";
    - larger ids (possibly with gaps, any integer dtype) -> "instances".
    """
    arr = _check_integer(mask)
    values = _values(arr)
    nonzero = values[values != 0]
    if nonzero.size == 0:
        return "binary"
    if nonzero.size == 1 and int(nonzero[0]) in (1, 255):
        return "binary"
    if int(values.min()) >= 0 and int(nonzero.max()) <= MAX_AUTO_CLASS_ID:
        return "classes"
    return "instances"


def detect_dataset_mode(masks: list[np.ndarray] | tuple[np.ndarray, ...]) -> str:
    """One mode for a whole data set: a model needs one meaning for its classes.

    Any instance mask makes it "instances" (an image with few cells looks like class ids
    on its own); else any class mask makes it "classes"; else "binary".
    """
    modes = {detect_mask_mode(m) for m in masks}
    for mode in ("instances", "classes"):
        if mode in modes:
            return mode
    return "binary"


@lru_cache(maxsize=16)
def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (yy * yy + xx * xx) <= radius * radius


def instance_boundaries(instances: np.ndarray, boundary_width: int = 2) -> np.ndarray:
    """Bool map of cell pixels within ``boundary_width`` pixels (Euclidean) of a pixel with
    another id (another cell or background). The image border is not a cell edge."""
    inst = _check_integer(instances)
    if boundary_width <= 0:
        return np.zeros(inst.shape, dtype=bool)
    fp = _disk(int(boundary_width))
    hi = ndi.maximum_filter(inst, footprint=fp, mode="nearest")
    lo = ndi.minimum_filter(inst, footprint=fp, mode="nearest")
    return (hi != lo) & (inst != 0)


def touching_boundaries(instances: np.ndarray, boundary_width: int = 2) -> np.ndarray:
    """Bool map of cell pixels within ``boundary_width`` pixels of *another cell* (not of
    the background): the lines that keep touching cells apart."""
    inst = _check_integer(instances)
    if boundary_width <= 0:
        return np.zeros(inst.shape, dtype=bool)
    fp = _disk(int(boundary_width))
    top = np.iinfo(inst.dtype).max if inst.dtype.kind in "ui" else 1
    hi = ndi.maximum_filter(inst, footprint=fp, mode="nearest")
    lo = ndi.minimum_filter(np.where(inst == 0, top, inst), footprint=fp, mode="nearest")
    return (inst != 0) & ((hi > inst) | (lo < inst))


def instances_to_classes(
    instances: np.ndarray, boundary_width: int = 2, *, touching_only: bool = False
) -> np.ndarray:
    """Instance ids -> uint8 classes 0 background, 1 cell, 2 boundary.

    The boundary is the inside rim of each cell, ``boundary_width`` pixels wide, so two
    touching cells are kept apart by ``2 * boundary_width`` boundary pixels. With
    ``touching_only`` the rim is drawn only where a cell touches another one.
    """
    inst = _check_integer(instances)
    if inst.size and inst.dtype.kind == "i" and int(inst.min()) < 0:
        raise ValueError(f"instance ids must be >= 0, found {int(inst.min())}")
    out = (inst != 0).astype(np.uint8)
    edge = touching_boundaries if touching_only else instance_boundaries
    out[edge(inst, boundary_width)] = 2
    return out


def mask_to_classes(
    mask: np.ndarray, mode: str = "auto", boundary_width: int = 2
) -> tuple[np.ndarray, int, str]:
    """A stored mask -> (class map uint8, number of classes, the mode used).

    binary: anything non-zero is foreground (2 classes); classes: values are class ids
    (max + 1 classes, at least 2); instances: background / cell / boundary (3 classes).
    Raises ValueError for negative labels or class ids beyond 255.
    """
    arr = _check_integer(mask)
    if arr.size and arr.dtype.kind == "i" and int(arr.min()) < 0:
        raise ValueError(f"mask has negative values (min {int(arr.min())})")
    if mode == "auto":
        mode = detect_mask_mode(arr)
    if mode == "binary":
        return (arr != 0).astype(np.uint8), 2, mode
    if mode == "classes":
        top = int(arr.max()) if arr.size else 0
        if top > 255:
            raise ValueError(
                f"class ids go up to {top}, more than 256 classes; is this an instance mask?"
            )
        return arr.astype(np.uint8), max(top + 1, 2), mode
    if mode == "instances":
        return instances_to_classes(arr, boundary_width), 3, mode
    raise ValueError(f"unknown mask mode {mode!r} (expected auto, {', '.join(MASK_MODES)})")


def relabel(labels: np.ndarray) -> np.ndarray:
    """Ids 1..N in order of first appearance in raster order, int32."""
    ids = np.unique(labels)
    ids = ids[ids != 0]
    lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, dtype=np.int32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    return lut[labels]


def classes_to_instances(
    labels: np.ndarray,
    probs: np.ndarray | None = None,
    min_size: int = 15,
    markers: np.ndarray | None = None,
) -> np.ndarray:
    """A class map (0 background, 1 cell, 2 boundary) -> int32 instance ids 1..N.

    Cell cores (class 1, 4-connected so cores that meet only at a corner stay apart) are
    grown into the foreground (cell + boundary) by a watershed: each boundary pixel joins
    the nearest core through the foreground, or, with ``probs`` (K, H, W), the core
    reachable through the lowest boundary probability. Foreground blobs with no core
    (thin cells that are all boundary) become cells of their own. Objects smaller than
    ``min_size`` pixels are dropped as noise. A 2-class map (binary) gives its connected
    components. Classes above 2 are not cells and count as background. ``markers`` (a bool
    map) replaces the class-1 pixels as the seeds (see ``core.model.postprocess``).
    """
    from skimage.segmentation import watershed

    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must be 2D (H, W), got shape {lab.shape}")
    fg = (lab == 1) | (lab == 2)
    core = (lab == 1) if markers is None else (np.asarray(markers, dtype=bool) & fg)
    four = ndi.generate_binary_structure(2, 1)
    cores, n = ndi.label(core, structure=four)
    if n and min_size:
        # Crumbs of core (a thin neck cut a cell, a speck of noise) would become cells of
        # their own; dropped here, their pixels join the neighbouring big core instead.
        sizes = np.bincount(cores.ravel())
        small = sizes < int(min_size)
        small[0] = False
        if small.any():
            cores = np.where(small[cores], 0, cores)
    if n and fg.sum() > core.sum():
        elevation = None
        if probs is not None:
            p = np.asarray(probs)
            if p.ndim == 3 and p.shape[0] >= 3 and p.shape[1:] == lab.shape:
                # Cores sit at the bottom: the flood starts from every core at once.
                elevation = np.where(core, 0.0, p[2]).astype(np.float32)
        if elevation is None:
            elevation = np.zeros(lab.shape, dtype=np.uint8)
        grown = watershed(elevation, markers=cores, mask=fg, connectivity=2)
    else:
        grown = cores
    # Foreground with no core at all: thin or tiny cells predicted all boundary.
    orphans, n_orphans = ndi.label(fg & (grown == 0), structure=four)
    if n_orphans:
        grown = np.where(orphans > 0, orphans + n, grown)
    grown = grown.astype(np.int32, copy=False)
    if min_size and grown.size:
        sizes = np.bincount(grown.ravel())
        small = sizes < int(min_size)
        small[0] = False
        if small.any():
            grown = np.where(small[grown], 0, grown)
    return relabel(grown)


def as_instances(mask: np.ndarray, mode: str) -> tuple[np.ndarray, str]:
    """A stored mask as instance ids, and where the ids came from.

    ``mode`` is the mask's meaning ("instances", "binary", "classes"); instance masks are
    used as they are, anything else is split into 8-connected components of its
    foreground (every non-zero pixel), which is what a biologist counting blobs sees.
    """
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"a mask must be 2D (H, W), got shape {arr.shape}")
    if arr.dtype.kind not in "uib":
        raise ValueError(f"a mask must hold integer labels, got {arr.dtype}")
    if mode == "instances":
        return (arr.astype(np.uint8) if arr.dtype == bool else arr), "instances"
    if mode not in ("binary", "classes"):
        raise ValueError(
            f"cannot count cells in a mask of mode {mode!r} (expected instances, binary or classes)"
        )
    labels, _ = ndi.label(arr != 0, structure=np.ones((3, 3), bool))
    return labels, "connected components"


def truth_cells(mask: np.ndarray, model_mode: str) -> tuple[np.ndarray, str]:
    """The true cells of a stored mask, for a model trained in ``model_mode``: a binary
    mask (one value) given to an instance model is split into its connected components,
    not read as one cell with id 255. An empty mask is a valid instance mask with no
    cells, not a binary one: its source is "instances"."""
    mode = model_mode
    if mode in ("instances", "auto"):
        arr = np.asarray(mask)
        if arr.size and not arr.any():
            return as_instances(arr, "instances")
        mode = "binary" if detect_mask_mode(mask) == "binary" else "instances"
    return as_instances(mask, mode)


def class_like_values(mask: np.ndarray) -> tuple[int, ...]:
    """The non-zero values of a mask when they are all 1 or 2, else ``()``: such a mask,
    given as instances (one id per cell), is more likely a binary (0/1) or class (0..2)
    mask, whose ids would be read as one cell per value."""
    values = _values(_check_integer(mask))
    nonzero = tuple(int(v) for v in values if v != 0)
    return nonzero if nonzero and set(nonzero) <= {1, 2} else ()


# a mask read as instances whose single object covers more than this share of the image,
# or read as classes with more than this many class ids, is likely read in the wrong mode
ONE_OBJECT_SHARE = 0.5
MANY_CLASSES = 20


def mode_doubt(mask: np.ndarray, mode: str) -> str | None:
    """Why a mask read in the ``mode`` the user chose is likely another kind: a binary
    mask read as instances is one "cell" over most of the image (a perfect AP of 1.0,
    without a word), an instance mask read as classes makes a class per cell id."""
    arr = np.asarray(mask)
    if not arr.size:
        return None
    values = _values(arr)
    nonzero = values[values != 0]
    if mode == "instances" and nonzero.size == 1:
        share = float(np.count_nonzero(arr)) / arr.size
        if share > ONE_OBJECT_SHARE:
            return (f"read as instances, its one object covers {100 * share:.0f}% of the "
                    "image: is it a binary mask? (--mask-mode binary, or auto)")  # fmt: skip
    if mode == "classes" and nonzero.size and int(nonzero.max()) >= MANY_CLASSES:
        return (f"read as classes, it holds class ids up to {int(nonzero.max())}: is it an "
                "instance mask (one id per cell)? (--mask-mode instances, or auto)")  # fmt: skip
    return None


def count_cells(ids: np.ndarray) -> int:
    """How many cells an instance mask holds (ids need not be 1..N): a count of the ids
    present, by ``bincount`` when the ids are no larger than the mask (1.6 ms for a
    1-megapixel mask of 79 cells, where ``np.unique`` sorts it: 7.7 ms), else by
    ``np.unique``."""
    arr = np.asarray(ids)
    if not arr.size:
        return 0
    top = int(arr.max())
    if top <= 0:
        return 0
    if int(arr.min()) >= 0 and top <= arr.size:
        return int(np.count_nonzero(np.bincount(arr.ravel().astype(np.int64))[1:]))
    values = np.unique(arr)
    return int(np.count_nonzero(values))
