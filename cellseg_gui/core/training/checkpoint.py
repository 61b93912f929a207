"""Checkpoints: what a run saves to be resumed, and loading one as data only
(``weights_only=True``: a checkpoint from someone else cannot run code)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellseg_gui.core.data.fileio import atomic_write_bytes


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


@dataclass
class BestSoFar:
    """The best epoch of a run so far (by validation foreground Jaccard): its score, its
    weights and its per-image figures; what a resumed run must carry on from."""

    score: float = -1.0
    epoch: int = -1
    state: dict[str, torch.Tensor] | None = None
    per_image: dict[str, float] = field(default_factory=dict)
    ap50: float | None = None
    per_image_ap: dict[str, float] = field(default_factory=dict)

    def to_checkpoint(self) -> dict[str, Any]:
        return {
            "best_score": self.score,
            "best_epoch": self.epoch,
            "best_state": self.state,
            "best_per_image": self.per_image,
            "best_ap50": self.ap50,
            "best_per_image_ap": self.per_image_ap,
        }

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> BestSoFar:
        return cls(
            score=float(ckpt["best_score"]),
            epoch=int(ckpt["best_epoch"]),
            state=ckpt.get("best_state"),
            per_image=ckpt.get("best_per_image", {}),
            ap50=ckpt.get("best_ap50"),
            per_image_ap=ckpt.get("best_per_image_ap", {}),
        )


@dataclass
class Resumable:
    """The live objects whose state a checkpoint holds besides the numbers: the weights,
    the optimiser (and fp16 scaler) and every random generator of the run."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    scaler: Any  # torch.amp.GradScaler
    gen: torch.Generator  # crop sampler
    augmenter: Any  # core.training.augment.Augmenter
    np_rng: np.random.Generator

    def save(self, path: Path, **numbers: Any) -> None:
        """Write a checkpoint atomically: these objects' state and ``numbers`` (cfg, epoch,
        global_step, elapsed, history, the BestSoFar fields, bad_epochs, split, ...)."""
        payload = {
            "model": _state_cpu(self.model),
            "optimizer": self.opt.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            **numbers,
            "rng": {
                "sampler": self.gen.get_state(),
                "augment": self.augmenter.state_dict(),
                "torch": torch.get_rng_state(),
                "numpy": self.np_rng.bit_generator.state,
            },
        }
        _atomic_torch_save(_plain(payload), Path(path))

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Put a loaded checkpoint's state back into these objects."""
        _unwrap(self.model).load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.gen.set_state(ckpt["rng"]["sampler"])
        self.augmenter.load_state_dict(ckpt["rng"]["augment"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.np_rng.bit_generator.state = ckpt["rng"]["numpy"]
