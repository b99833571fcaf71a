"""Exponential moving average of the weights, with warm-up.

Lightning's ``EMAWeightAveraging`` starts the average at the initial (random) weights with a fixed
decay; at 0.999 the random weights still hold 0.999**1000 = 37 % of the average after 1000 steps,
and CPU-sized runs are that short. The warm-up below (decay_n = min(decay, (1 + n) / (10 + n)),
as in TensorFlow's ExponentialMovingAverage with num_updates) forgets the initial weights quickly.
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import WeightAveraging


def warmup_ema_fn(decay: float):
    """``avg_fn`` for :class:`torch.optim.swa_utils.AveragedModel`: EMA with warm-up."""

    def avg_fn(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor | int) -> torch.Tensor:
        if not averaged.is_floating_point():  # indices and counts are copied, never averaged
            return current.clone()
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        return d * averaged + (1.0 - d) * current

    return avg_fn


class WarmupEMA(WeightAveraging):
    """EMA weights used for validation, checkpoints and export (Lightning swaps them in)."""

    def __init__(self, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"training.ema_decay must be in [0, 1), got {decay}")
        # Buffers are not averaged: our networks normalise with GroupNorm (no running statistics), and
        # their buffers are constants such as index tables, which float averaging would corrupt.
        super().__init__(avg_fn=warmup_ema_fn(decay), use_buffers=False)
        self.decay = decay
