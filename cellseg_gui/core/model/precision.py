"""The device a job runs on and the precision it trains in: one set-up for training, the
learning-rate finder and the overfit check (it was written out three times), and the
autocast context for that precision."""

from __future__ import annotations

from contextlib import nullcontext

import torch


def _cpu_has_fast_bf16() -> bool:
    """bf16 autocast only pays on CPUs with AMX or AVX512-BF16; on AVX2 it is slower."""
    try:
        cap = torch.backends.cpu.get_cpu_capability().upper()
    except Exception:  # pragma: no cover - very old torch
        cap = ""
    if "AMX" in cap or "BF16" in cap:
        return True
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="ignore") as fh:
            flags = fh.read(200_000)
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(amp: str, device: torch.device) -> str:
    """Map the user's ``amp`` setting to "fp32" | "bf16" | "fp16" for this device."""
    amp = (amp or "auto").lower()
    if amp in ("off", "fp32", "none", "false"):
        return "fp32"
    if device.type == "cuda":
        if amp == "fp16":
            return "fp16"
        if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
            return "bf16"
        return "fp16"
    if device.type == "cpu":
        if amp in ("bf16", "fp16", "on", "true"):
            return "bf16"  # fp16 autocast on CPU is slow and fragile; bf16 is the CPU path
        return "bf16" if _cpu_has_fast_bf16() else "fp32"
    return "fp32"  # mps: autocast support varies; keep it exact


def autocast_context(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def setup_device(pref: str, amp: str, device: torch.device | None = None):
    """``(device, precision)`` for a job: ``device`` when given (a distributed rank's),
    else the one ``pref`` names ("auto": CUDA, MPS, CPU); on the CPU the allocator is
    tuned so activations reuse heap memory instead of fresh mappings."""
    from cellseg_gui.core.model.predict import select_device, tune_cpu_allocator

    dev = device if device is not None else select_device(pref)
    if dev.type == "cpu":
        tune_cpu_allocator()
    return dev, resolve_precision(amp, dev)
