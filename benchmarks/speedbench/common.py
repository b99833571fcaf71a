"""Shared by the speed benchmark's parts: the settings compared, the machine, timing and FLOP helpers."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from oncodiff.config import Config
from oncodiff.models import Conditions




REFERENCE_STEPS = 200
SSIM_TOLERANCE = 0.01  # a speed setting's in-tumour SSIM within 0.01 of the reference's
SAMPLING_GOAL = 20.0  # goal: 8 samples of one 2D case >= 20x faster than the reference
TRAINING_GOAL = 2.0  # goal: training throughput >= 2x the fp32 reference loop on CPU
CLASS_MODE = "null"  # every method samples with the null class: outcome unknown, and no class prior involved

# (name, sampler, steps, quick steps). "ours" = our sampling path (draw_samples): the run's precision
# (bf16 autocast), all samples of a case batched into one forward pass, inference_mode.
SETTINGS = [
    ("ddim200", "ddim", 200, 4),
    ("ddim50", "ddim", 50, 3),
    ("ddim20", "ddim", 20, 2),
    ("dpmpp20", "dpmpp", 20, 2),
    ("ddim10", "ddim", 10, 2),
    ("dpmpp10", "dpmpp", 10, 2),
    ("ddim5", "ddim", 5, 2),
    ("dpmpp5", "dpmpp", 5, 2),
    ("single_step", "single_step", 1, 1),
]
QUICK_REFERENCE_STEPS = 4
TEST_SPLIT_SETTINGS = ("ddim20", "ddim10", "dpmpp10", "dpmpp5", "single_step")  # the whole split: fast ones only
QUICK_MODEL = ["model.channels=[8,16]", "model.attention_levels=[false,true]", "model.norm_num_groups=8",
               "model.num_head_channels=8", "model.token_dim=16", "data.crop_size=[32,32]"]


def now() -> float:
    return time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        flags = ""
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "avx512": "avx512f" in flags, "amx": "amx_tile" in flags,
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "python": platform.python_version()}


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(n: int, dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    """Best TFLOP/s of an n x n @ n x n matmul (2 n^3 FLOPs) over ``repeats`` timed runs."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = now()
        torch.mm(a, b)
        sync(device)
        best = min(best, now() - start)
    return 2 * n**3 / best / 1e12


def forward_flops(net: nn.Module, cond: Conditions, shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass for one crop, counted by torch.utils.flop_counter (convolutions and matmuls)."""
    x = torch.zeros((1, *shape), device=cond.image.device)
    t = torch.full((1,), 500, dtype=torch.long, device=cond.image.device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x, t, cond.select(slice(0, 1)))
    return int(counter.get_total_flops())


def sampling_config(config: Config, sampler: str, steps: int) -> Config:
    return config.with_overrides([f"sampling.sampler={sampler}", f"sampling.steps={steps}", "sampling.eta=0.0",
                                  "sampling.guidance_scale=1.0"])
