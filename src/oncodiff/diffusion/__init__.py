"""oncodiff.diffusion: noise schedules, training objectives, samplers and classifier-free guidance.

The network is only ever seen as a closure ``model_fn(x_t, t) -> output`` (docs/contracts.md,
section 3); randomness comes as one torch.Generator per batch element.

    schedule = NoiseSchedule.from_config(config.diffusion)
    loss, parts = DiffusionLoss.from_config(config.diffusion, schedule)(model_fn, x0)
    sampler = make_sampler(config.sampling, schedule, config.diffusion.prediction)
    x0 = sample(guided_model_fn(masked_model_fn, scale), x_T, sampler, steps, generators)
"""

from oncodiff.diffusion.guidance import guide, guided_model_fn
from oncodiff.diffusion.noise import randint_per_element, randn_per_element
from oncodiff.diffusion.objectives import DiffusionLoss
from oncodiff.diffusion.samplers import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverPPSampler,
    ModelFn,
    Sampler,
    SingleStepSampler,
    make_sampler,
    sample,
    trailing_timesteps,
)
from oncodiff.diffusion.schedule import NoiseSchedule, pulsar_alphas_cumprod, schedule_alphas_cumprod

__all__ = [
    "DDIMSampler",
    "DDPMSampler",
    "DPMSolverPPSampler",
    "DiffusionLoss",
    "ModelFn",
    "NoiseSchedule",
    "Sampler",
    "SingleStepSampler",
    "guide",
    "guided_model_fn",
    "make_sampler",
    "pulsar_alphas_cumprod",
    "randint_per_element",
    "randn_per_element",
    "sample",
    "schedule_alphas_cumprod",
    "trailing_timesteps",
]
