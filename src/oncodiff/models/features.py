"""Features of a trained denoiser for downstream heads (ImmunoDiff stage 2, sec. 2.2 "Treatment Response")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from oncodiff.models.conditions import Conditions
from oncodiff.models.denoiser import ConditionalDenoiser
from oncodiff.models.hooks import captured_outputs


def upblock_feature_dim(denoiser: ConditionalDenoiser) -> int:
    """F, the width of `upblock_features`: the sum of the up-blocks' output channels."""
    return sum(denoiser.channels)


@torch.no_grad()
def upblock_features(
    denoiser: ConditionalDenoiser,
    x_t: Tensor,
    t: Tensor,
    cond: Conditions,
    region_mask: Tensor | None = None,
) -> Tensor:
    """Up-block features of the frozen denoiser: (B, Ct, *S), (B,), cond -> (B, F) float32.

    ImmunoDiff: features from the U-Net up-blocks feed the response classifier and the survival head.
    Each up-block's output is averaged over space and the blocks are concatenated (deepest first).
    With region_mask (B, 1, *S) (e.g. the tumour mask), each block is averaged inside the mask, resampled
    to the block's resolution by area averaging; cases whose mask is empty fall back to the global average.
    Runs without gradients: the denoiser is frozen in stage 2.
    """
    with captured_outputs(list(denoiser.unet.up_blocks)) as outputs:
        denoiser(x_t, t, cond)
    return torch.cat([_pool(features.float(), region_mask) for features in outputs], dim=1)


def _pool(features: Tensor, region_mask: Tensor | None) -> Tensor:
    spatial_axes = tuple(range(2, features.dim()))
    global_mean = features.mean(dim=spatial_axes)
    if region_mask is None:
        return global_mean
    weights = F.interpolate(region_mask.float(), size=features.shape[2:], mode="area")
    total = weights.sum(dim=spatial_axes)  # (B, 1)
    inside = (features * weights).sum(dim=spatial_axes) / total.clamp_min(1e-8)
    return torch.where(total > 0, inside, global_mean)
