"""DistributedDataParallel under ``torchrun``: NCCL on GPUs, gloo on the CPU.

``fit`` asks ``context()`` once. Outside torchrun (no WORLD_SIZE > 1 in the environment
and no process group already set up) everything here is a no-op with world size 1, so
single-process training pays nothing. Each rank samples its own share of crops (its own
seed), gradients are averaged by DDP, validation images are shared out and the sums
combined, and only rank 0 writes files and reports.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist

__all__ = [
    "DistContext",
    "context",
    "init_from_env",
    "wrap",
    "any_flag",
    "max_values",
    "all_reduce_sum",
]


@dataclass(frozen=True)
class DistContext:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    device: torch.device | None = None  # set when distributed: the rank's device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(backend: str | None = None, timeout_s: float = 600.0) -> bool:
    """Start the process group from torchrun's environment; True when distributed."""
    if tdist.is_available() and tdist.is_initialized():
        return tdist.get_world_size() > 1
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not tdist.is_available():
        return False
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    tdist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def context() -> DistContext:
    """Where this process stands; initialises the group if torchrun launched us."""
    if not init_from_env():
        return DistContext()
    rank, world = tdist.get_rank(), tdist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if tdist.get_backend() == "nccl":
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return DistContext(world_size=world, rank=rank, local_rank=local_rank, device=device)


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel as DDP

    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DDP(model, device_ids=[device.index], output_device=device.index)
    return DDP(model)


def _comm_device() -> torch.device:
    if tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def any_flag(flag: bool, world: int) -> bool:
    """True on every rank when it is True on any (cancel, divergence): all ranks stop
    at the same step, so no rank waits forever in a collective."""
    if world <= 1:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item() > 0)


def max_values(values: list[float], world: int) -> list[float]:
    """Each value's maximum over the ranks, in one collective: the cancel flag and the
    elapsed time together, so every rank takes the same learning rate and stops at the
    same step of a time-limited run."""
    if world <= 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return [float(v) for v in t.cpu().tolist()]


def all_reduce_sum(t: torch.Tensor, world: int) -> torch.Tensor:
    if world <= 1:
        return t
    dev = _comm_device()
    out = t.detach().to(dev).clone()
    if out.dtype in (torch.int64, torch.int32, torch.uint8):
        out = out.to(torch.int64)
    tdist.all_reduce(out, op=tdist.ReduceOp.SUM)
    return out.to(t.device)


def sync_buffers(model: torch.nn.Module, world: int) -> None:
    """Average floating buffers (batch-norm running statistics) over ranks.

    DDP keeps parameters identical but each rank's running statistics drift with its own
    crops; averaging them before validation and saving makes every rank hold one model.
    """
    if world <= 1:
        return
    dev = _comm_device()
    for buf in model.buffers():
        if buf.dtype.is_floating_point:
            t = buf.detach().to(dev).clone()
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
            buf.copy_((t / world).to(buf.device))


def gather_dict(d: dict, world: int) -> dict:
    """Merge small per-rank dicts (per-image scores) on every rank."""
    if world <= 1:
        return dict(d)
    parts: list = [None] * world
    tdist.all_gather_object(parts, d)
    merged: dict = {}
    for p in parts:
        merged.update(p or {})
    return merged


def cleanup(*, together: bool = True) -> None:
    """Leave the process group. With ``together`` (a command that ended normally) a rank
    that finished early (rank 0 alone tunes the post-processing and writes the bundle)
    first waits for the others: destroying the group while another rank still worked
    aborted it now and then under torchrun on CPU ranks ("terminate called without an
    active exception", 1 run in 6 of the two-rank CLI test). The wait is gloo's
    ``monitored_barrier`` with a long timeout of its own (tuning a large validation set
    may outlast the group's), and is skipped after an error (a rank that failed must not
    wait for ranks that will never come) and under NCCL, whose barrier has no timeout of
    its own and whose watchdog would abort a long wait."""
    if not (tdist.is_available() and tdist.is_initialized()):
        return
    if together and tdist.get_backend() == "gloo" and tdist.get_world_size() > 1:
        try:
            tdist.monitored_barrier(timeout=datetime.timedelta(hours=6))
        except Exception:  # noqa: BLE001 - a rank that died: leave anyway
            pass
    tdist.destroy_process_group()
