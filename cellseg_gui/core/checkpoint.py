"""Checkpoints: what a run saves to be resumed, and loading one as data only
(``weights_only=True``: a checkpoint from someone else cannot run code)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellseg_gui.core.fileio import atomic_write_bytes


def _state_cpu(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in _unwrap(model).state_dict().items()}


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _atomic_torch_save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _plain(obj: Any) -> Any:
    """Numpy scalars and arrays as Python numbers and lists, recursively, so that the
    checkpoint loads with ``weights_only=True`` (which refuses numpy objects)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def load_checkpoint(path: Path) -> dict:
    """A training checkpoint, read as data only (``weights_only=True``): a checkpoint from
    a colleague is untrusted input, and a pickle holding an object would run its code.

    Checkpoints hold tensors, numbers, strings, lists and dicts only, so nothing else
    is needed. Anything else is refused with one sentence naming the file; torch's own
    advice to retry with ``weights_only=False`` is not passed on.
    """
    path = Path(path)
    # Checkpoints written before numbers were stored as plain floats hold numpy scalars:
    # allowed by name (they carry a dtype and bytes, nothing callable).
    safe = [np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.float32))]
    try:
        safe.append(np._core.multiarray.scalar)  # numpy >= 2
    except AttributeError:  # pragma: no cover - numpy 1.x
        safe.append(np.core.multiarray.scalar)
    try:
        with torch.serialization.safe_globals(safe):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # UnpicklingError, RuntimeError from a damaged zip, ...
        kind = "holds objects other than tensors and plain data"
        if "weights_only" not in str(exc) and "Unsupported" not in str(exc):
            kind = "is damaged or not a cellseg checkpoint"
        raise ValueError(f"{path}: checkpoint {kind}; refused (nothing in it was run)") from None
    if not isinstance(ckpt, dict) or not {"cfg", "model", "split"} <= set(ckpt):
        raise ValueError(f"{path}: not a cellseg training checkpoint")
    return ckpt
