"""Will a training step fit in memory? An estimate before anything large is allocated.

``cellseg train --batch 20000 --crop 512`` on a CPU climbed past 7 GB in 21 s with no
word. The estimate here comes from measurement on this U-Net (CPU, fp32, AdamW, one
training step, peak resident memory): about 130 bytes per (crop pixel at the network's
resolution x first-level width x batch item), for widths 16-32, depths 3-4, downsample
1-2 and crops 256-512, plus the full-resolution logits and the model with its optimiser
state. :data:`BYTES_PER_UNIT` adds a quarter for safety. The memory available is the
kernel's own figure (``MemAvailable``) on Linux, the free GPU memory on CUDA; where
neither can be read, nothing is checked.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["available_bytes", "check_training_memory", "training_bytes"]

BYTES_PER_UNIT = 165  # measured 110-135, see the module docstring
BASE_BYTES = 150 * 2**20  # the process, torch and the data loader around a step
USABLE_SHARE = 0.85  # leave the rest of the machine something


def training_bytes(model_cfg: Any, batch: int, crop: int, n_params: int) -> int:
    """Estimated peak memory of one training step."""
    ds = max(int(model_cfg.downsample or 2), 1)
    net_px = (int(crop) / ds) ** 2
    units = int(batch) * net_px * int(model_cfg.hidden)
    full_res = (
        int(batch)
        * int(crop) ** 2
        * (
            int(model_cfg.in_channels)
            + 4 * int(getattr(model_cfg, "n_outputs", model_cfg.n_classes))
        )
        * 4
    )
    return int(BYTES_PER_UNIT * units + full_res + 16 * n_params + BASE_BYTES)


def available_bytes(device: Any) -> int | None:
    """Memory a run may use on ``device`` (a torch.device), or None when unknown."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if getattr(device, "type", str(device)) != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"


def check_training_memory(model_cfg: Any, batch: int, crop: int, n_params: int, device: Any) -> str:
    """A sentence when a step would not fit (with the largest batch that would), else ""."""
    free = available_bytes(device)
    if free is None:
        return ""
    need = training_bytes(model_cfg, batch, crop, n_params)
    usable = USABLE_SHARE * free
    if need <= usable:
        return ""
    per_item = training_bytes(model_cfg, 2, crop, n_params) - training_bytes(
        model_cfg, 1, crop, n_params
    )
    fixed = need - per_item * int(batch)
    fits = int((usable - fixed) // per_item) if per_item > 0 else 0
    hint = (
        f"a batch of {fits} fits"
        if fits >= 1
        else "lower the crop size (even one crop does not fit)"
    )
    where = "GPU memory" if getattr(device, "type", "") == "cuda" else "memory"
    return (
        f"a batch of {batch} crops of {crop} pixels needs about {_size(need)} for training, "
        f"and {_size(free)} of {where} is available: lower --batch or --crop ({hint})"
    )
