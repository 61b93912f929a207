"""Whole-image prediction by overlapping tiles, with smooth blending and bounded memory.

Why tiles: microscopy images reach 8192x8192 and more; one forward pass over them needs
tens of GB of activations. We cut the image into overlapping tiles (no larger than
``tile``), run them in batches, and blend the softmax probabilities with weights that
ramp smoothly (raised cosine, ``sin^2``) across each overlap, so neighbouring tiles fade
into each other and no seam shows. A tile edge that is also the image edge keeps full
weight (it has no neighbour to hand over to), so an image that fits in one tile gives
exactly the single whole-image forward.

Memory: probabilities accumulate into one preallocated float32 (K, H, W) array, tile by
tile; tiles are cut from the image batch by batch and never all materialised. The blending
weights of the tile grid are separable (a product of a row and a column profile), so their
sum is two 1-D vectors, not another (H, W) image. Normalisation and argmax run in place,
row block by row block, so no (K, H, W) float64/int64 temporaries appear. With
``return_probs=False`` the accumulator is still needed while tiles arrive, and is freed
before returning (labels only are kept). An 8192x8192 3-class image needs about 0.8 GB
for the probabilities plus 64 MB of labels and the model's activations for one tile on
the CPU (one batch on a GPU); ``benchmarks/predict.py`` measures the peak.

Which images are tiled is decided by ``whole_image_fits`` (``WHOLE_IMAGE_PIXELS``): a
bundle's prediction and validation during training forward smaller ones whole, so the
figures a run reports are the ones its model gives.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cellseg_gui.core.model.distance import output_classes, outputs_to_probs

__all__ = [
    "Prediction",
    "class_argmax",
    "predict_tiled",
    "predict_whole",
    "select_device",
    "tile_grid",
    "tune_cpu_allocator",
    "whole_image_fits",
]

# Images of up to this many pixels go through the network in one piece wherever a model
# predicts them: validation during training, the post-processing search, `cellseg
# predict` and `evaluate`, and the window (``tile`` applies to larger ones). When
# prediction tiled what validation forwarded whole, a usiigaci model's reported
# validation AP@0.5 (0.651) and `cellseg evaluate` on the same five 1022x1024 images
# (0.628, 512 px tiles) disagreed, and the settings tuned on one were used on the other.
WHOLE_IMAGE_PIXELS = {"cpu": 2048 * 2048, "cuda": 2048 * 2048, "mps": 1024 * 1024}
# the tiles of larger images, unless the caller asks for others
DEFAULT_TILE = 512

_ROW_BLOCK = 256  # rows normalised per step at the end (bounds the temporaries)


@dataclass
class Prediction:
    """``labels``: uint8 (H, W) class per pixel; ``probs``: float32 (K, H, W) softmax
    probabilities (with one plane more, the predicted distance, when the model has a
    distance output: ``core.model.distance``; two more, the flows (y, x), for a flow
    model: ``core.model.flow``), or None when not requested."""

    labels: np.ndarray
    probs: np.ndarray | None = None


def select_device(pref: str = "auto") -> torch.device:
    """ "auto" picks CUDA, then Apple MPS, then the CPU; any other string is taken as is
    (so "cuda:1" works) but an unavailable device raises instead of silently using the CPU."""
    pref = (pref or "auto").lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(pref)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError("device 'mps' requested but Apple MPS is not available")
    return dev


_ALLOCATOR_TUNED: bool | None = None


def tune_cpu_allocator(threshold: int = 256 << 20) -> bool:
    """Let glibc keep CPU activation buffers in its heap instead of mmap'ing and unmapping
    each one (tens of MB per layer output): every fresh mapping is page-faulted in again,
    and on a 2-core machine that kernel time was half of a tiled prediction (measured on
    1024^2, hidden 16: 4.5 s -> 2.0 s wall, system time 2.0 s -> 0.3 s). Blocks above
    ``threshold`` (the (K, H, W) accumulators) still go straight back to the system, and
    at most ``threshold`` of freed heap is kept. Process-wide and idempotent; a no-op off
    glibc, or when the environment sets ``CELLSEG_MALLOC_TUNE=0``. Returns True if set.
    Training on the CPU benefits the same way; call this once at start-up there too."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED is not None:
        return _ALLOCATOR_TUNED
    _ALLOCATOR_TUNED = False
    if not sys.platform.startswith("linux") or os.environ.get("CELLSEG_MALLOC_TUNE") == "0":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    value = int(min(threshold, 2**31 - 1))
    _ALLOCATOR_TUNED = bool(mallopt(m_mmap_threshold, value)) and bool(
        mallopt(m_trim_threshold, value)
    )
    return _ALLOCATOR_TUNED


def _model_device(model: object) -> torch.device:
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


def class_argmax(scores: torch.Tensor, dim: int) -> torch.Tensor:
    """``scores.argmax(dim)`` (int64, ties to the lower class), by K-1 elementwise
    comparisons. torch's CPU argmax over the class axis of an image batch is 10-30x
    slower: 106 ms against 3 ms for (8, 2, 256, 256), 218 ms against 10 ms for
    (3, 1024, 1024), which was 4% of a training step and most of a validation."""
    planes = scores.unbind(dim)
    best = planes[0]
    pred = torch.zeros(best.shape, dtype=torch.long, device=best.device)
    for k in range(1, len(planes)):
        pred.masked_fill_(planes[k] > best, k)
        best = torch.maximum(best, planes[k])
    return pred


def _as_chw(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"expected a normalised image (C, H, W), got shape {arr.shape}")
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    return arr


def whole_image_fits(height: int, width: int, device: torch.device | str) -> bool:
    """Whether an image of ``height`` x ``width`` is predicted in one forward pass on
    ``device`` (``WHOLE_IMAGE_PIXELS``) rather than in tiles."""
    kind = torch.device(device).type
    return int(height) * int(width) <= WHOLE_IMAGE_PIXELS.get(kind, 1024 * 1024)


def tile_grid(size: int, tile: int, overlap: int, multiple: int = 1) -> tuple[list[int], int]:
    """Tile starts along one axis and the tile length used.

    The fewest tiles of at most ``tile`` pixels that overlap by at least ``overlap`` are
    chosen, then made as small as still covers the axis (rounded up to ``multiple``, so
    the U-Net pads nothing) and spread evenly. For 1024 pixels, tile 512 and overlap 64
    that is 3 tiles of 384, not 3 of 512: a third less work for the same result quality.
    """
    if size <= tile:
        return [0], size
    # A small tile with the default overlap (64) still works: the overlap shrinks to half
    # the tile rather than failing (the blend needs some overlap, not a particular one).
    overlap = max(0, min(overlap, tile // 2))
    n = math.ceil((size - overlap) / (tile - overlap))
    length = math.ceil((size + overlap * (n - 1)) / n)
    length = min(tile, size, math.ceil(length / multiple) * multiple)
    if n == 1:
        return [0], length
    starts = np.linspace(0, size - length, n).round().astype(int).tolist()
    return starts, length


def _profiles(starts: list[int], length: int) -> list[np.ndarray]:
    """1-D blending weight of each tile: 1 in the middle, a sin^2 ramp across the overlap
    with each neighbour (the two ramps of a pair sum to 1), and no ramp at the image edge."""
    out = []
    for i, s in enumerate(starts):
        w = np.ones(length, dtype=np.float64)
        if i > 0:
            ov = min(starts[i - 1] + length - s, length)
            if ov > 0:
                w[:ov] = np.sin(0.5 * np.pi * (np.arange(ov) + 0.5) / ov) ** 2
        if i < len(starts) - 1:
            ov = min(s + length - starts[i + 1], length)
            if ov > 0:
                w[length - ov :] *= np.cos(0.5 * np.pi * (np.arange(ov) + 0.5) / ov) ** 2
        out.append(w)
    return out


def _sum_profile(
    starts: list[int], length: int, profiles: list[np.ndarray], size: int
) -> np.ndarray:
    total = np.zeros(size, dtype=np.float64)
    for s, w in zip(starts, profiles, strict=True):
        total[s : s + length] += w
    return total


_FLIPS: tuple[tuple[int, ...], ...] = ((3,), (2,), (2, 3))


def _probs_fn(
    forward: Callable[[torch.Tensor], torch.Tensor],
    tta: bool,
    amp: bool,
    device: torch.device,
    n_classes: int | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Wrap a logits function into a float32 probability function (softmax over the
    classes, sigmoid of a distance output, flows as they come), with flip TTA (a flip's
    flow component is negated back) and AMP."""
    use_amp = bool(amp) and device.type in ("cuda", "cpu", "mps")
    amp_dtype = torch.bfloat16 if device.type == "cpu" else torch.float16

    def logits(x: torch.Tensor) -> torch.Tensor:
        if use_amp:
            with torch.autocast(device_type=device.type, dtype=amp_dtype):
                return forward(x).float()
        return forward(x).float()

    def probs(x: torch.Tensor) -> torch.Tensor:
        p = outputs_to_probs(logits(x), n_classes)
        if tta:
            # Average over the four flips (identity, horizontal, vertical, both): the
            # model's errors are not flip-symmetric, the cells are.
            for dims in _FLIPS:
                q = outputs_to_probs(logits(x.flip(dims)), n_classes).flip(dims)
                if n_classes is not None and q.shape[1] == n_classes + 2:
                    # flows (y, x) turn with the image: a flip negates its axis' component
                    for d in dims:
                        q[:, n_classes + (0 if d in (2, -2) else 1)] *= -1
                p += q
            p /= 1 + len(_FLIPS)
        return p

    return probs


class _EvalMode:
    """Put a module in eval mode and restore its previous mode afterwards (the training
    engine predicts its validation images mid-training)."""

    def __init__(self, model: object) -> None:
        self.model = model
        self.was_training = bool(getattr(model, "training", False))

    def __enter__(self) -> None:
        if hasattr(self.model, "eval"):
            self.model.eval()  # type: ignore[attr-defined]

    def __exit__(self, *exc: object) -> None:
        if self.was_training and hasattr(self.model, "train"):
            self.model.train(True)  # type: ignore[attr-defined]


def _resolve_device(model: object, device: torch.device | str | None) -> torch.device:
    """None: wherever the model already is (never move a caller's model behind its back);
    "auto" or a name: that device, moving the model there."""
    if device is None:
        return _model_device(model)
    dev = select_device(device) if isinstance(device, str) else torch.device(device)
    if isinstance(model, torch.nn.Module) or hasattr(model, "to"):
        if _model_device(model) != dev:
            model.to(dev)  # type: ignore[attr-defined]
    return dev


def predict_tiled(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray,
    *,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    device: torch.device | str | None = None,
    tta: bool = False,
    amp: bool = False,
    return_probs: bool = True,
) -> Prediction:
    """Predict a normalised float32 (C, H, W) image of any size by blended tiles.

    ``model`` is a torch module (or TorchScript module, or any callable mapping an
    (N, C, h, w) tensor to logits (N, K, h, w)). ``device=None`` runs where the model
    already is; a device name (or "auto", see ``select_device``) moves the model there.
    ``tta`` averages the four flips (4x the time). ``amp`` uses autocast (fp16 on GPUs,
    bf16 on the CPU). Peak extra memory is about ``(K + 0.25) * H * W * 4`` bytes plus the
    activations of one tile (CPU) or one batch (GPU); see the module docstring.
    """
    img = _as_chw(image)
    _, height, width = img.shape
    if height == 0 or width == 0:
        raise ValueError(f"cannot predict an empty image of shape {img.shape}")
    if tile < 1 or overlap < 0 or batch_size < 1:
        raise ValueError(f"bad tiling: tile={tile}, overlap={overlap}, batch={batch_size}")
    dev = _resolve_device(model, device)
    if dev.type == "cpu":
        tune_cpu_allocator()
    cfg = getattr(model, "cfg", None)
    multiple = int(getattr(cfg, "size_multiple", 1)) if cfg is not None else 1
    n_classes = output_classes(cfg)
    ys, th = tile_grid(height, tile, overlap, multiple)
    xs, tw = tile_grid(width, tile, overlap, multiple)
    wy, wx = _profiles(ys, th), _profiles(xs, tw)
    sum_y = _sum_profile(ys, th, wy, height).astype(np.float32)
    sum_x = _sum_profile(xs, tw, wx, width).astype(np.float32)
    single = len(ys) == 1 and len(xs) == 1
    positions = [(i, j) for i in range(len(ys)) for j in range(len(xs))]

    acc: np.ndarray | None = None
    with _EvalMode(model), torch.inference_mode():
        probs_of = _probs_fn(model, tta, amp, dev, n_classes)
        for b0 in range(0, len(positions), batch_size):
            batch_pos = positions[b0 : b0 + batch_size]
            batch = np.stack([img[:, ys[i] : ys[i] + th, xs[j] : xs[j] + tw] for i, j in batch_pos])
            x = torch.from_numpy(batch).to(dev)
            # On the CPU the tiles of a batch go through the model one at a time: batching
            # brings no throughput there (measured) and multiplies the activation memory
            # (hidden 32: ~0.8 GB for 4 tiles of 496^2). GPUs get the whole batch.
            step = 1 if dev.type == "cpu" else x.shape[0]
            p = torch.cat([probs_of(x[s : s + step]) for s in range(0, x.shape[0], step)])
            del x
            if not single:
                w = np.stack([np.outer(wy[i], wx[j]) for i, j in batch_pos]).astype(np.float32)
                p = p * torch.from_numpy(w).to(dev)[:, None]
            p_np = p.cpu().numpy()
            if acc is None:
                acc = np.zeros((p_np.shape[1], height, width), dtype=np.float32)
            for k, (i, j) in enumerate(batch_pos):
                acc[:, ys[i] : ys[i] + th, xs[j] : xs[j] + tw] += p_np[k]
            del p, p_np
    assert acc is not None
    k = acc.shape[0] if n_classes is None else n_classes
    if k > 256:
        raise ValueError(f"{k} classes do not fit uint8 labels")
    labels = np.empty((height, width), dtype=np.uint8)
    for r0 in range(0, height, _ROW_BLOCK):
        r1 = min(r0 + _ROW_BLOCK, height)
        block = acc[:, r0:r1]
        if not single:
            block /= sum_y[r0:r1, None] * sum_x[None, :]
        labels[r0:r1] = block[:k].argmax(axis=0)
    if not return_probs:
        del acc
        return Prediction(labels=labels, probs=None)
    return Prediction(labels=labels, probs=acc)


def predict_whole(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray,
    device: torch.device | str | None = None,
) -> Prediction:
    """One forward pass over the whole image: the reference the tiled path must match."""
    img = _as_chw(image)
    dev = _resolve_device(model, device)
    with _EvalMode(model), torch.inference_mode():
        logits = model(torch.from_numpy(np.ascontiguousarray(img))[None].to(dev)).float()
        n_classes = output_classes(getattr(model, "cfg", None))
        probs = outputs_to_probs(logits, n_classes)[0].cpu().numpy()
    k = probs.shape[0] if n_classes is None else n_classes
    return Prediction(labels=probs[:k].argmax(axis=0).astype(np.uint8), probs=probs)
