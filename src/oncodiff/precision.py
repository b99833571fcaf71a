"""Which floating-point precision a training step or a forward pass runs in, on this machine.

``training.precision`` asks for bf16 (or fp16) mixed precision; a CPU runs bf16 only where oneDNN has
instructions for it (AVX-512 or AMX). On a CPU with AVX2 only, torch emulates bf16 and a step is several
times slower than in fp32 (a 3D ImmunoDiff training step: 7.8 CPU s against 0.97 s on a 2-core AMD EPYC with
AVX2, `benchmarks/presets.py`'s step probe), so there it runs in fp32.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 on this CPU with its own instructions (AVX-512 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the probe: trust the configured precision
        return True


def runs_as(precision: str, device_type: str) -> str:
    """``precision`` (training.precision: bf16-mixed, 16-mixed or 32) as it runs on ``device_type``: fp16
    stays fp16 on CUDA only (CPUs have no fp16 autocast: it becomes bf16-mixed), and a CPU without native bf16
    runs both in fp32 ("32")."""
    if precision == "32" or device_type == "cuda":
        return precision
    return "bf16-mixed" if cpu_has_native_bf16() else "32"


def autocast(precision: str, device: torch.device | str) -> AbstractContextManager:
    """The autocast context for ``precision`` on ``device`` (nothing where it runs in fp32)."""
    device_type = torch.device(device).type
    runs = runs_as(precision, device_type)
    if runs == "32":
        return nullcontext()
    return torch.autocast(device_type, dtype=torch.float16 if runs == "16-mixed" else torch.bfloat16)
