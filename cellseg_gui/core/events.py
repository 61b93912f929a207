"""Events that jobs (fit, LR finder, overfit check, batch prediction) yield.

Small frozen dataclasses holding Python floats and numpy arrays, never device tensors,
so a worker thread can pass them to the GUI thread as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Reasons a job finished.
DONE = "done"
CANCELLED = "cancelled"
EARLY_STOP = "early_stop"
DIVERGED = "diverged"
FAILED = "failed"
# a job that ran out of (GPU) memory: the window retries once with half the batch; a
# reason of its own, so nobody parses messages to find out
OUT_OF_MEMORY = "out_of_memory"


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's out-of-memory errors: CUDA's by type (named, so torch need not load), the
    CPU allocator's by the RuntimeError torch raises for it."""
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "DefaultCPUAllocator: can't allocate" in str(exc)


DIVERGED_HINT = (
    "The loss became NaN or infinite. Lower the learning rate (try the LR finder), "
    "and check that masks match their images and that normalisation looks sane."
)


@dataclass(frozen=True)
class Started:
    """First event of every job: what it runs on, so the window can say so."""

    job: str  # "fit" | "lr_find" | "overfit" | "predict"
    device: str  # e.g. "cpu", "cuda:0"
    precision: str  # "fp32" | "bf16" | "fp16"
    total_steps: int | None = None  # None where unknown (time-limited runs)
    epochs: int | None = None
    steps_per_epoch: int | None = None
    n_train: int = 0
    n_val: int = 0
    message: str = ""


@dataclass(frozen=True)
class StepEnded:
    epoch: int  # 0-based
    step: int  # 0-based within the epoch
    global_step: int  # 0-based over the run
    loss: float
    lr: float
    seconds: float = 0.0  # since the run started
    eta_seconds: float | None = None


@dataclass(frozen=True)
class EpochEnded:
    epoch: int  # 0-based
    epochs: int | None
    train_loss: float
    val_loss: float | None
    train_jaccard: tuple[float, ...]  # per class, background first
    val_jaccard: tuple[float, ...] | None
    train_fg_jaccard: float
    val_fg_jaccard: float | None
    seconds: float  # this epoch
    lr: float
    is_best: bool = False
    eta_seconds: float | None = None
    val_ap50: float | None = None  # AP at IoU 0.5, mean over validation images
    val_seconds: float | None = None  # what validation cost this epoch


@dataclass(frozen=True)
class SampleLosses:
    """Per-image training losses (for the noisy-label finder). ``regions`` gives, per
    image, the (y, x, h, w) box of its worst crop seen this epoch."""

    epoch: int
    losses: dict[str, float]
    regions: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class LRProbe:
    step: int
    lr: float
    loss: float
    smoothed: float


@dataclass(frozen=True)
class Predicted:
    """Batch prediction: one image done. ``labels`` is uint8 (H, W) class ids."""

    index: int
    total: int
    name: str
    labels: Any  # np.ndarray
    probability: Any | None = None  # np.ndarray float16 (H, W): prob of the chosen class
    jaccard: float | None = None  # foreground Jaccard where ground truth exists
    error: str | None = None
    cells: Any | None = None  # np.ndarray int32 (H, W): predicted cell ids, 0 = background
    ap50: float | None = None  # cell AP@0.5 where ground truth exists (core.model.scoring)
    # uint8 (h, w, 3) difference thumbnail for the gallery (core.scores.thumbnails), made where
    # the image and mask were already in memory; None without ground truth
    thumbnail: Any | None = None
    # uint8 (h, w): the image in grey at that size, for colouring again after an edit
    thumbnail_grey: Any | None = None
    image: Any | None = None  # the raw image, when the job was asked to keep it (CLI)


@dataclass(frozen=True)
class Message:
    """Something the user should read (e.g. "out of memory: retrying with batch 4")."""

    text: str
    level: str = "info"  # "info" | "warning"


@dataclass(frozen=True)
class Finished:
    reason: str  # DONE | CANCELLED | EARLY_STOP | DIVERGED | FAILED | OUT_OF_MEMORY
    message: str = ""
    hint: str = ""
    bundle_path: str | None = None
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.reason in (DONE, EARLY_STOP, CANCELLED)


# what a job yields: the one type a job factory's iterator, the worker and the CLI's
# renderer share
Event = Started | StepEnded | EpochEnded | SampleLosses | LRProbe | Predicted | Message | Finished
