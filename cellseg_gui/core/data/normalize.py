"""Per-image intensity normalisation, the model's view of a raw image.

Microscopy intensities vary by orders of magnitude between instruments, bit depths and
exposure, so each image is scaled by its own percentiles (robust to hot pixels and
saturation). The same function runs at training and at prediction time, with settings
stored in every model bundle, so a model always sees its inputs the way it was trained.
Torch-free: the CLI and the window use it before torch has loaded.
"""

from __future__ import annotations

import numpy as np

from cellseg_gui.core.config import NormConfig

ALL_NAN = "image is all NaN"


def to_chw(image: np.ndarray) -> np.ndarray:
    """(H, W) -> (1, H, W); (H, W, C) -> (C, H, W); float32. Raw images keep channels last
    (as files store them) while the network wants them first."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3:
        arr = np.moveaxis(arr, -1, 0)
    else:
        raise ValueError(f"expected an image of shape (H, W) or (H, W, C), got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _scale_channel(chan: np.ndarray, low: float, high: float) -> np.ndarray:
    """Scale one (H, W) float32 channel in place-ish; NaN -> 0, +-inf -> the finite extremes."""
    finite = np.isfinite(chan)
    all_finite = bool(finite.all())
    values = chan if all_finite else chan[finite]
    if values.size == 0:
        raise ValueError(ALL_NAN)
    lo, hi = (float(v) for v in np.percentile(values, [low, high]))
    if not hi > lo:
        # Sparse images (mostly zeros, a few bright spots) can have equal percentiles:
        # fall back to the full range rather than dividing by zero.
        lo, hi = float(values.min()), float(values.max())
    if not hi > lo:  # a constant channel carries no signal: zeros, never NaN/inf
        return np.zeros(chan.shape, dtype=np.float32)
    # float32 arithmetic: an 8192 x 8192 image must not need a float64 copy.
    out = (chan - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    if not all_finite:
        good = out[finite]
        out = np.nan_to_num(out, nan=0.0, posinf=float(good.max()), neginf=float(good.min()))
    return out


def percentile_normalize(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Map each channel's ``low``/``high`` percentiles to 0/1 (values outside are kept,
    not clipped). Returns float32 (C, H, W).

    NaN (missing pixels) is ignored in the percentiles and set to 0; an image with no
    finite value at all raises ``ValueError("image is all NaN")`` so callers can name the
    file. A constant image gives zeros.
    """
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")
    chw = to_chw(image)
    if chw.size and not np.isfinite(chw).any():
        raise ValueError(ALL_NAN)
    out = np.empty_like(chw)
    for c in range(chw.shape[0]):
        if not np.isfinite(chw[c]).any():
            out[c] = 0.0  # one empty channel among good ones: zeros, not an error
            continue
        out[c] = _scale_channel(chw[c], low, high)
    return out


# the normalisation methods a model can record (``normalize``); a model file with another
# is refused when it is read (``core.model.bundle_meta``)
METHODS = ("percentile", "minmax", "none")


def normalize(image: np.ndarray, norm: NormConfig | None = None) -> np.ndarray:
    """Normalise a raw image as ``norm`` says (method "percentile", "minmax" or "none").

    "minmax" is the 0/100 percentiles; "none" only converts to float32 (C, H, W), for
    data that were normalised before (NaN still becomes 0).
    """
    norm = norm or NormConfig()
    method = (norm.method or "percentile").lower()
    if method == "percentile":
        return percentile_normalize(image, norm.low, norm.high)
    if method == "minmax":
        return percentile_normalize(image, 0.0, 100.0)
    if method == "none":
        chw = to_chw(image)
        if chw.size and not np.isfinite(chw).any():
            raise ValueError(ALL_NAN)
        return np.nan_to_num(chw, nan=0.0, posinf=0.0, neginf=0.0)
    raise ValueError(f"unknown normalisation method {norm.method!r}")


def image_levels(
    image: np.ndarray, norm: NormConfig | None = None, max_pixels: int = 1 << 24
) -> list[tuple[float, float]] | None:
    """Per channel, the (value mapped to 0, value mapped to 1) that ``normalize`` would
    use, from a regular subsample of at most ``max_pixels`` (an image predicted band by
    band must be scaled by its whole-image percentiles, not each band's own). None for
    method "none". The fallbacks are ``normalize``'s: the full range for equal
    percentiles, a zero channel for a constant one (returned as (v, v))."""
    norm = norm or NormConfig()
    method = (norm.method or "percentile").lower()
    if method == "none":
        return None
    if method not in METHODS[:2]:
        raise ValueError(f"unknown normalisation method {norm.method!r}")
    low, high = (norm.low, norm.high) if method == "percentile" else (0.0, 100.0)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    step = 1
    if arr.shape[0] * arr.shape[1] > max_pixels:
        step = int(np.ceil(np.sqrt(arr.shape[0] * arr.shape[1] / max_pixels)))
    sub = arr[::step, ::step]
    levels = []
    for c in range(sub.shape[-1]):
        values = sub[..., c].astype(np.float32).ravel()
        values = values[np.isfinite(values)]
        if values.size == 0:
            levels.append((0.0, 0.0))
            continue
        lo, hi = (float(v) for v in np.percentile(values, [low, high]))
        if not hi > lo:
            lo, hi = float(values.min()), float(values.max())
        levels.append((lo, hi))
    if all(lo == hi == 0.0 for lo, hi in levels) and not np.isfinite(sub).any():
        raise ValueError(ALL_NAN)
    return levels


def normalize_with_levels(
    image: np.ndarray, levels: list[tuple[float, float]] | None
) -> np.ndarray:
    """``normalize`` with fixed per-channel levels (``image_levels``): float32 (C, H, W);
    NaN -> 0, +-inf -> the scaled ends of the levels."""
    chw = to_chw(image)
    if levels is None:
        return np.nan_to_num(chw, nan=0.0, posinf=0.0, neginf=0.0)
    if len(levels) != chw.shape[0]:
        raise ValueError(f"{len(levels)} channel levels for an image of {chw.shape[0]} channels")
    out = np.empty_like(chw)
    for c, (lo, hi) in enumerate(levels):
        if not hi > lo:
            out[c] = 0.0
            continue
        out[c] = (chw[c] - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    if not np.isfinite(out).all():
        out = np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0)
    return out


def display_levels(
    image: np.ndarray, low: float = 0.5, high: float = 99.5, max_pixels: int = 1 << 20
) -> tuple[float, float]:
    """Contrast limits (lo, hi) for showing a raw image, with hi > lo always.

    Large images are subsampled on a regular grid (display needs no exact percentile and
    the window must stay responsive); NaN/inf are ignored.
    """
    arr = np.asarray(image)
    if arr.ndim >= 2 and arr.shape[0] * arr.shape[1] > max_pixels:
        step = int(np.ceil(np.sqrt(arr.shape[0] * arr.shape[1] / max_pixels)))
        arr = arr[::step, ::step]
    values = arr.astype(np.float64, copy=False).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(values, [low, high]))
    if not hi > lo:
        lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi
