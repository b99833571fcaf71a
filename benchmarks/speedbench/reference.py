"""The reference a user would write from the papers: MONAI's DiffusionInferer and DDIMScheduler, fp32, one
sample at a time; and the plain fp32 training step (MONAI DDPMScheduler.add_noise, MSE, Adam)."""

from __future__ import annotations


import torch
import torch.nn.functional as F
from monai.inferers import DiffusionInferer
from monai.networks.schedulers import DDIMScheduler
from torch import nn

from oncodiff.config import Config
from oncodiff.models import (
    Conditions,
    conditions_from_batch,
    target_from_batch,
)
from oncodiff.models.factory import batch_conditioning




class _ReferenceModel(nn.Module):
    """Our network with one case's conditions bound, called as DiffusionInferer calls a MONAI U-Net."""

    def __init__(self, net: nn.Module, cond: Conditions):
        super().__init__()
        self.net, self.cond = net, cond

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context=None) -> torch.Tensor:
        t = timesteps.long().expand(x.shape[0])
        return self.net(x, t, self.cond).prediction


def reference_scheduler(config: Config, steps: int) -> DDIMScheduler:
    """MONAI DDIM for our training schedule and parameterisation; no x0 clipping (our sampling.clip_x0=null)."""
    diffusion = config.diffusion
    schedules = {"cosine": "cosine", "linear": "linear_beta", "scaled_linear": "scaled_linear_beta"}
    if diffusion.schedule not in schedules:
        raise SystemExit(f"the reference uses MONAI schedulers; diffusion.schedule={diffusion.schedule} has none")
    prediction = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}[diffusion.prediction]
    kwargs = {} if diffusion.schedule == "cosine" else {"beta_start": diffusion.beta_start,
                                                        "beta_end": diffusion.beta_end}
    scheduler = DDIMScheduler(num_train_timesteps=diffusion.num_train_timesteps,
                              schedule=schedules[diffusion.schedule], clip_sample=False,
                              prediction_type=prediction, **kwargs)
    scheduler.set_timesteps(steps)
    return scheduler


def reference_chain(net: nn.Module, config: Config, cond: Conditions, x_T: torch.Tensor, steps: int) -> torch.Tensor:
    """One sample, the papers' way: DiffusionInferer.sample, MONAI DDIM, fp32, batch 1, no_grad."""
    scheduler = reference_scheduler(config, steps)
    inferer = DiffusionInferer(scheduler)
    with torch.no_grad():
        return inferer.sample(input_noise=x_T, diffusion_model=_ReferenceModel(net, cond), scheduler=scheduler,
                              verbose=False)


def reference_training_step(net: nn.Module, config: Config, batch: dict, optimizer, scheduler) -> float:
    """A plain fp32 step: MONAI add_noise, the network, MSE on its parameterisation's target, Adam."""
    cond = conditions_from_batch(batch, batch_conditioning(config.model))
    x0 = target_from_batch(batch, config.diffusion.target, config.model.generate_mask).float()
    noise = torch.randn_like(x0)
    t = torch.randint(0, scheduler.num_train_timesteps, (x0.shape[0],), device=x0.device)
    x_t = scheduler.add_noise(original_samples=x0, noise=noise, timesteps=t)
    target = {"eps": noise, "x0": x0, "v": None}[config.diffusion.prediction]
    if target is None:
        target = scheduler.get_velocity(x0, noise, t)
    loss = F.mse_loss(net(x_t, t, cond).prediction, target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()
