"""Continuous embeddings: days since baseline, and rotary position embeddings (RoPE)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

DAYS_PER_YEAR = 365.0
# ImmunoDiff eq. 2: rotary base b = 1e5. The paper writes a 2-D (h, w) split with Theta_i = b^(-i/|D|);
# clinical variables form a 1-D sequence, so we use 1-D RoPE as in RoFormer (the paper's ref. [38]):
# theta_i = b^(-2i/D), i = 0 .. D/2 - 1, with the paper's base.
ROPE_BASE = 1e5


def fourier_frequencies(n_frequencies: int = 8, lowest_frequency: float = 0.125) -> Tensor:
    """(n_frequencies,) f_k = lowest * 2^k, in cycles per unit of x (per year for days / 365)."""
    return lowest_frequency * 2.0 ** torch.arange(n_frequencies, dtype=torch.float32)


def fourier_features(x: Tensor, n_frequencies: int = 8, lowest_frequency: float = 0.125) -> Tensor:
    """(N,) -> (N, 2 * n_frequencies + 1): [x, sin(2 pi f_k x), cos(2 pi f_k x)], f_k = lowest * 2^k.

    With x in years, the defaults span periods from 8 years down to about 23 days.
    """
    frequencies = fourier_frequencies(n_frequencies, lowest_frequency).to(x.device)
    angles = 2 * math.pi * x.float()[:, None] * frequencies[None, :]
    return torch.cat([x.float()[:, None], torch.sin(angles), torch.cos(angles)], dim=1)


class DaysEmbedding(nn.Module):
    """Days since baseline (B,) -> (B, embedding_dim): Fourier features of days/365 through an MLP.

    ``min_period_days`` > 0 zeroes the features whose period is shorter (model.day_min_period). A cohort's
    follow-ups come at a few scheduled days; features that turn through a whole cycle between two of them let the
    network give every scheduled day its own code and say nothing about a day between or beyond them (another
    cohort's schedule). The layer keeps its shape, so weights load either way.
    """

    def __init__(self, embedding_dim: int, n_frequencies: int = 8, min_period_days: float = 0.0):
        super().__init__()
        if embedding_dim < 1 or n_frequencies < 1 or min_period_days < 0:
            raise ValueError(
                f"DaysEmbedding: embedding_dim={embedding_dim} and n_frequencies={n_frequencies} must be >= 1, "
                f"min_period_days={min_period_days} >= 0"
            )
        self.n_frequencies, self.min_period_days = n_frequencies, float(min_period_days)
        periods = DAYS_PER_YEAR / fourier_frequencies(n_frequencies)
        kept = (periods >= self.min_period_days).float()
        # [x, sin_k, cos_k]: not a persistent buffer, so checkpoints from before it load unchanged
        self.register_buffer("feature_mask", torch.cat([torch.ones(1), kept, kept]), persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(2 * n_frequencies + 1, embedding_dim), nn.SiLU(), nn.Linear(embedding_dim, embedding_dim)
        )

    def forward(self, days_since_baseline: Tensor) -> Tensor:
        features = fourier_features(days_since_baseline / DAYS_PER_YEAR, self.n_frequencies)
        return self.mlp(features * self.feature_mask.to(features.device))


def rope_frequencies(dim: int, base: float = ROPE_BASE, device: torch.device | None = None) -> Tensor:
    """(dim/2,) angular frequencies theta_i = base^(-2i/dim) of 1-D RoPE (RoFormer eq. 15)."""
    if dim % 2:
        raise ValueError(f"rotary embeddings rotate pairs of features; dim={dim} must be even")
    return base ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)


def apply_rope(x: Tensor, positions: Tensor, base: float = ROPE_BASE) -> Tensor:
    """Rotate feature pairs (x_2i, x_2i+1) of x (..., N, D) by positions (N,) * theta_i.

    ImmunoDiff eq. 2: block-diagonal 2x2 rotations R_k with k the variable's position in its group, so
    <R_m q, R_n k> depends on m - n only.
    """
    angles = positions.float()[:, None] * rope_frequencies(x.shape[-1], base, x.device)[None, :]  # (N, D/2)
    cos, sin = torch.cos(angles), torch.sin(angles)
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)
    return rotated.flatten(-2).to(x.dtype)
