"""The gallery's difference thumbnail: a small grey image with where the prediction and
the ground truth agree (green), where only the prediction says cell (extra, magenta) and
where it missed (cyan). Numpy only, so the prediction job makes it in its own thread and
the window only shows it."""

from __future__ import annotations

import numpy as np

from cellseg_gui.core.palette import FN_COLOR, FP_COLOR

__all__ = ["THUMB_SIZE", "difference_rgb", "grey_thumbnail", "overlay_difference", "thumb_step"]

THUMB_SIZE = 160
TP = np.array([46, 204, 113], np.float32)  # both say foreground
FP = np.array(FP_COLOR, np.float32)  # predicted, not in ground truth (as the canvas shows it)
FN = np.array(FN_COLOR, np.float32)  # in ground truth, missed
ALPHA = 0.55


def _grey(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, np.float32)
    if img.ndim == 3:
        img = img.mean(axis=0) if img.shape[0] <= 4 else img.mean(axis=-1)
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return np.zeros(img.shape, np.float32)
    lo, hi = np.percentile(finite, (0.5, 99.5))
    return np.clip((np.nan_to_num(img) - lo) / max(hi - lo, 1e-6), 0, 1)


def thumb_step(shape: tuple[int, ...], size: int = THUMB_SIZE) -> int:
    """Every how many pixels a thumbnail of an image of ``shape`` (H, W) samples."""
    return max(1, int(np.ceil(max(shape[-2:]) / size)))


def grey_thumbnail(image: np.ndarray, size: int = THUMB_SIZE) -> np.ndarray:
    """uint8 (h, w): the image in grey at thumbnail size, what ``overlay_difference``
    colours; kept so the gallery can colour an image again after its mask is edited."""
    g = _grey(image)
    step = thumb_step(g.shape, size)
    return np.ascontiguousarray(np.rint(g[::step, ::step] * 255.0).astype(np.uint8))


def overlay_difference(
    grey: np.ndarray, gt: np.ndarray | None, pred: np.ndarray | None, size: int = THUMB_SIZE
) -> np.ndarray:
    """uint8 (h, w, 3): ``grey`` (``grey_thumbnail``) with the difference of the
    foregrounds of ``gt`` and ``pred`` (full size, anything non-zero is foreground)."""
    rgb = np.repeat(np.asarray(grey, np.float32)[..., None], 3, axis=-1)
    ref = gt if gt is not None else pred
    if ref is not None:
        step = thumb_step(np.shape(ref), size)
        h, w = grey.shape

        def small(mask: np.ndarray) -> np.ndarray:
            return np.asarray(mask)[::step, ::step][:h, :w] != 0

        if gt is not None and pred is not None:
            t, p = small(gt), small(pred)
            for mask, colour in ((t & p, TP), (p & ~t, FP), (t & ~p, FN)):
                rgb[mask] = (1 - ALPHA) * rgb[mask] + ALPHA * colour
        elif pred is not None:
            p = small(pred)
            rgb[p] = (1 - ALPHA) * rgb[p] + ALPHA * TP
    return np.ascontiguousarray(np.clip(rgb, 0, 255).astype(np.uint8))


def difference_rgb(
    image: np.ndarray, gt: np.ndarray | None, pred: np.ndarray | None, size: int = 160
) -> np.ndarray:
    """uint8 (h, w, 3) thumbnail: grey image with the difference of foreground masks."""
    return overlay_difference(grey_thumbnail(image, size), gt, pred, size)
