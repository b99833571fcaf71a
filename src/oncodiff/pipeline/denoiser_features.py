"""Up-block features of a trained denoiser for a set of cases (ImmunoDiff stage 2).

The denoiser runs once per case at a fixed noise level on fixed noise, conditioned on the case's baseline
crop, clinical variables and follow-up time, with the class label nulled (the outcome is what the features
are used to predict); up-block outputs are averaged over the image and inside the baseline tumour, and
concatenated. ``evaluate``'s stage-2 heads and the class prior (what ``predict`` samples by) both use them.
"""

from __future__ import annotations

import numpy as np
import torch

from oncodiff.diffusion import NoiseSchedule
from oncodiff.models import conditions_from_batch, upblock_features
from oncodiff.models.factory import batch_conditioning
from oncodiff.pipeline.cases import CaseSet
from oncodiff.pipeline.export import ExportedModel

FEATURE_SEED = 2024


def denoiser_features(model: ExportedModel, cases: CaseSet, timestep: int) -> np.ndarray:
    """(B, 2F): up-block features averaged over the crop and inside the baseline tumour, per case."""
    net, device = model.net, next(model.net.parameters()).device
    schedule = NoiseSchedule.from_config(model.config.diffusion)
    t_value = min(timestep, schedule.num_train_timesteps - 1)
    cond = conditions_from_batch(cases.batch, batch_conditioning(model.config.model), model.layout.image_condition_names).null(model.net.null_class).to(device)
    with torch.inference_mode():  # a latent model's features are its latent U-Net's, on the latent grid
        cond = net.encode_conditions(cond)
    pre = net.sampling_pre(cond)
    shape = (len(cases), net.target_channels, *cond.image.shape[2:])
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(FEATURE_SEED)).to(device)
    # The prior sample at this noise level: zero drift (or the pre scan, for a post target) plus noise.
    # A residual design (diffusion.residual) generates the residual to the regression mean: its zero is the mean.
    residual = getattr(net, "generates_residual", False)
    x0 = torch.zeros(shape, device=device) if model.config.diffusion.target == "drift" or residual else pre
    t = torch.full((len(cases),), t_value, dtype=torch.long, device=device)
    x_t = schedule.add_noise(x0, noise, t)
    with torch.inference_mode():
        whole = upblock_features(net, x_t, t, cond)
        tumor = upblock_features(net, x_t, t, cond, region_mask=cases.batch["tumor_mask"].to(device))
    return torch.cat([whole, tumor], dim=1).cpu().numpy()
