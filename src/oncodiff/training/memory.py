"""A rough estimate of a training step's peak memory, checked before the run folder is made.

The estimate counts what dominates a U-Net training step at large crops: the activations kept for the
backward pass, and the attention matrices of the attention levels (quadratic in the number of voxels of
that level, since they are materialised in full). Per level ``l`` (the crop halved ``l`` times per
axis), with ``B`` the batch, ``V_l`` the voxels, ``C_l`` the channels and ``R`` the residual blocks::

    activations  = ACTIVATION_COPIES * B * V_l * C_l * (R + 1) * 2      (encoder and decoder)
    attention    = B * heads_l * V_l**2 * 2                               (scores and softmax)

in 4-byte values, plus the weights and AdamW's state (4 copies of the parameters), plus
``BASE_BYTES`` for the Python process and libraries. ACTIVATION_COPIES keeps the estimate above the
memory a training step of the 2D demo preset was measured to add on CPU (batch 16, crops of 64 to
128: the estimate was 1.4 to 1.6 times the measured step; tests/test_training_memory.py measures it
again, marked slow). It is meant to catch configurations that cannot fit by a wide margin (a 512x512
crop on 2D slices), not to plan to the last megabyte.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from oncodiff.config import Config
from oncodiff.errors import ConfigError

ACTIVATION_COPIES = 12
BASE_BYTES = 1.5e9
VALUE_BYTES = 4


def estimate_peak_bytes(config: Config, spatial_dims: int, in_channels: int) -> float:
    """Bytes a training step of ``config``'s denoiser needs at peak (see the module docstring)."""
    model, batch = config.model, config.training.batch_size
    voxels = float(torch.tensor(config.data.crop_size, dtype=torch.float64).prod())
    if model.latent != "none":  # the denoiser runs on the latent grid
        voxels /= 2 ** (spatial_dims * (len(model.autoencoder.channels) - 1))
    values, weights = 0.0, float(in_channels * model.channels[0])
    previous = model.channels[0]
    for level, (channels, attention) in enumerate(zip(model.channels, model.attention_levels)):
        level_voxels = voxels / 2 ** (spatial_dims * level)
        values += ACTIVATION_COPIES * batch * level_voxels * channels * (model.num_res_blocks + 1) * 2
        if attention:
            heads = max(channels // model.num_head_channels, 1)
            values += batch * heads * level_voxels ** 2 * 2
        weights += 9 * 3 ** (spatial_dims - 2) * channels * (previous + channels) * (model.num_res_blocks + 1) * 2
        previous = channels
    return BASE_BYTES + VALUE_BYTES * (values + 4 * weights)


def available_bytes(on_gpu: bool) -> float | None:
    """Memory training can use: the GPU's total, else the system's available memory within this cgroup's limit;
    None when it cannot be read."""
    if on_gpu and torch.cuda.is_available():
        return float(torch.cuda.mem_get_info()[1])
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(float(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = float(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit.isdigit():
            found.append(float(limit) - used)
    except OSError:
        pass
    return min(found) if found else None


def check_memory(config: Config, spatial_dims: int, in_channels: int, available: float | None = None,
                 on_gpu: bool | None = None) -> float:
    """Refuse a configuration whose estimated peak exceeds the memory there is, naming what to lower; returns
    the estimate. ONCODIFF_SKIP_MEMORY_CHECK=1 skips the refusal (an estimate can be wrong)."""
    if on_gpu is None:
        on_gpu = config.training.accelerator == "gpu" or (config.training.accelerator == "auto"
                                                           and torch.cuda.is_available())
    needed = estimate_peak_bytes(config, spatial_dims, in_channels)
    available = available_bytes(on_gpu) if available is None else available
    if available is None or needed <= available or os.environ.get("ONCODIFF_SKIP_MEMORY_CHECK") == "1":
        return needed
    where = "GPU memory" if on_gpu else "memory available"
    raise ConfigError(
        f"a training step needs about {needed / 2**30:.1f} GiB (estimated from data.crop_size="
        f"{list(config.data.crop_size)}, training.batch_size={config.training.batch_size}, model.channels="
        f"{list(config.model.channels)}), but there is {available / 2**30:.1f} GiB of {where}; "
        f"{_what_fits(config, spatial_dims, in_channels, available)}. If the estimate is wrong for this machine, "
        "set ONCODIFF_SKIP_MEMORY_CHECK=1")


def _what_fits(config: Config, spatial_dims: int, in_channels: int, available: float) -> str:
    """The largest training.batch_size that fits, or else the advice to lower data.crop_size."""
    for batch in range(config.training.batch_size - 1, 0, -1):
        smaller = config.with_overrides([f"training.batch_size={batch}"])
        if estimate_peak_bytes(smaller, spatial_dims, in_channels) <= available:
            return f"lower training.batch_size (--set training.batch_size={batch} fits) or data.crop_size"
    return ("even training.batch_size=1 does not fit: lower data.crop_size (or model.channels, or switch off "
            "model.attention_levels at the finest levels)")
