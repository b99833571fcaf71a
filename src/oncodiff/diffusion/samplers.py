"""Samplers: small objects with no network inside, driven by the one loop in :func:`sample`.

Every sampler has ``set_timesteps(steps)`` (fills ``timesteps``, descending train timesteps at which
the network is called, and resets any multistep state) and
``step(model_output, t, x_t, generators) -> x_prev``. They work for every parameterisation
(eps | v | x0) because each step first converts the network output to (x0, eps) with the schedule.
The running sample stays float32 whatever the network's dtype (bf16 autocast).

Timesteps use "trailing" spacing (Lin et al. 2024, "Common diffusion noise schedules and sample steps
are flawed", table 2; diffusers ``timestep_spacing="trailing"``): the first call is always at T - 1,
where x_T lives, and the last step goes to alpha_bar = 1, i.e. returns the x0 prediction.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch

from oncodiff.config import SamplingConfig
from oncodiff.diffusion.noise import Generators, randn_per_element
from oncodiff.diffusion.schedule import NoiseSchedule, check_prediction

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``model_fn(x_t (N, C, *spatial) float32, t (N,) int64) -> network output (N, C, *spatial)``."""


def sample(
    model_fn: ModelFn, x_T: torch.Tensor, sampler: Sampler, steps: int, generators: Generators = None
) -> torch.Tensor:
    """Run ``sampler`` from x_T (N, C, *spatial) for ``steps`` network calls; returns x0, float32.

    ``generators``: one torch.Generator per element of x_T (element i draws only from generators[i]),
    or None for the global RNG. x_T is the caller's: pure noise, or a noised image (PULSAR), at
    timestep ``sampler.timesteps[0]`` (call ``sampler.set_timesteps(steps)`` first to read it).
    """
    sampler.set_timesteps(steps)
    x = x_T.float()
    for t in sampler.timesteps:
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        x = sampler.step(model_fn(x, t_batch), t, x, generators)
    return x


def trailing_timesteps(num_train_timesteps: int, steps: int) -> tuple[int, ...]:
    """``steps`` descending train timesteps, the first one T - 1 (diffusers' "trailing" spacing)."""
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"steps={steps} must be between 1 and the {num_train_timesteps} train timesteps")
    # round(T - k T / n) - 1 for k < n; diffusers' np.arange(T, 0, -T / n) form can yield n + 1 values
    # (e.g. T = 21, n = 15) through floating-point error, the last one -1.
    spacing = num_train_timesteps / steps
    return tuple(int(t) for t in np.round(num_train_timesteps - np.arange(steps) * spacing) - 1)


class Sampler(ABC):
    """Shared part of the samplers: the schedule, the parameterisation, timesteps and x0 clipping.

    ``clip_x0``: clamp predicted x0 to [-clip_x0, clip_x0] at every step and recompute eps from it
    (diffusers ``clip_sample`` with ``use_clipped_model_output``); None = no clamp.
    """

    def __init__(self, schedule: NoiseSchedule, prediction: str, clip_x0: float | None = None) -> None:
        self.schedule = schedule
        self.prediction = check_prediction(prediction)
        if clip_x0 is not None and not clip_x0 > 0:
            raise ValueError(f"clip_x0={clip_x0} must be positive, or None for no clipping")
        self.clip_x0 = clip_x0
        self._use_timesteps(())

    def set_timesteps(self, steps: int) -> None:
        """Choose ``steps`` network calls (trailing spacing) and reset state."""
        self._use_timesteps(trailing_timesteps(self.schedule.num_train_timesteps, steps))

    @abstractmethod
    def step(
        self, model_output: torch.Tensor, t: int, x_t: torch.Tensor, generators: Generators = None
    ) -> torch.Tensor:
        """One reverse step from x_t at train timestep ``t`` (N, C, *spatial) -> x at the next timestep."""

    def _use_timesteps(self, timesteps: tuple[int, ...]) -> None:
        self.timesteps: tuple[int, ...] = timesteps
        self._previous = dict(zip(timesteps, timesteps[1:] + (-1,), strict=False))  # -1: alpha_bar = 1, clean data

    def _next(self, t: int) -> int:
        if t not in self._previous:
            raise ValueError(
                f"timestep {t} is not in this sampler's timesteps {self.timesteps}; call set_timesteps first"
            )
        return self._previous[t]

    def _denoise(self, model_output: torch.Tensor, x_t: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        x0, eps = self.schedule.predict_x0_and_eps(model_output, x_t, t, self.prediction)
        if self.clip_x0 is not None:
            x0 = x0.clamp(-self.clip_x0, self.clip_x0)
            eps = self.schedule.eps_from_x0(x0, x_t, t)
        return x0, eps

    def _alpha_bar(self, t: int) -> float:
        return 1.0 if t < 0 else self.schedule.alpha_bar(t)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prediction={self.prediction!r}, clip_x0={self.clip_x0})"


class DDIMSampler(Sampler):
    """DDIM (Song et al. 2021 eq. 12; PULSAR eq. 5), any step count; ``eta`` scales the noise (eq. 16).

    eta = 0 is deterministic; eta = 1 is the DDPM ancestral sampler (see :class:`DDPMSampler`).
    """

    def __init__(
        self, schedule: NoiseSchedule, prediction: str, eta: float = 0.0, clip_x0: float | None = None
    ) -> None:
        super().__init__(schedule, prediction, clip_x0)
        if not eta >= 0:
            raise ValueError(f"eta={eta} must be >= 0 (0: deterministic DDIM, 1: DDPM)")
        self.eta = eta

    def step(
        self, model_output: torch.Tensor, t: int, x_t: torch.Tensor, generators: Generators = None
    ) -> torch.Tensor:
        """x_{t-1} = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - s^2) eps + s z  (Song et al. 2021 eq. 12)."""
        x0, eps = self._denoise(model_output, x_t, t)
        ab_t, ab_prev = self._alpha_bar(t), self._alpha_bar(self._next(t))
        # eq. 16: sigma_t(eta) = eta * sqrt((1 - ab_prev) / (1 - ab_t)) * sqrt(1 - ab_t / ab_prev)
        noise_std = self.eta * math.sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))
        x_prev = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - noise_std**2, 0.0)) * eps
        if noise_std > 0:
            x_prev = x_prev + noise_std * randn_per_element(x_t.shape, generators, x_t.device)
        return x_prev

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prediction={self.prediction!r}, eta={self.eta}, clip_x0={self.clip_x0})"


class DDPMSampler(DDIMSampler):
    """DDPM ancestral sampling (Ho et al. 2020 eqs. 6-7, posterior variance beta_tilde), any step count.

    It is DDIM with eta = 1: Song et al. 2021 sec. 4.1 show that eq. 12 with eta = 1 samples the DDPM
    posterior q(x_s | x_t, x0) exactly, also between non-adjacent timesteps s < t (strided DDPM,
    Nichol & Dhariwal 2021 sec. 4).
    """

    def __init__(self, schedule: NoiseSchedule, prediction: str, clip_x0: float | None = None) -> None:
        super().__init__(schedule, prediction, eta=1.0, clip_x0=clip_x0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prediction={self.prediction!r}, clip_x0={self.clip_x0})"


class DPMSolverPPSampler(Sampler):
    """DPM-Solver++(2M): second-order multistep solver in data (x0) space (Lu et al. 2022, alg. 2).

    Deterministic; the first step is first order (equal to DDIM eta = 0), and the last step, to
    sigma = 0, returns the x0 prediction (diffusers ``final_sigmas_type="zero"``).
    """

    def _use_timesteps(self, timesteps: tuple[int, ...]) -> None:
        super()._use_timesteps(timesteps)
        self._last_x0: torch.Tensor | None = None  # multistep state: the previous x0 prediction and h
        self._last_h = 0.0

    def step(
        self, model_output: torch.Tensor, t: int, x_t: torch.Tensor, generators: Generators = None
    ) -> torch.Tensor:
        """x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{-h} - 1) D, h = lambda_s - lambda_t (alg. 2)."""
        x0, _ = self._denoise(model_output, x_t, t)
        s = self._next(t)
        if s < 0:
            return x0
        alpha_t, sigma_t = self.schedule.scales(t, x_t)
        alpha_s, sigma_s = self.schedule.scales(s, x_t)
        h = math.log(alpha_s / sigma_s) - math.log(alpha_t / sigma_t)  # lambda = log(alpha / sigma)
        data_estimate = x0
        if self._last_x0 is not None:
            half_over_r = 0.5 * h / self._last_h  # r = h_last / h
            data_estimate = (1 + half_over_r) * x0 - half_over_r * self._last_x0
        self._last_x0, self._last_h = x0, h
        return (sigma_s / sigma_t) * x_t - alpha_s * math.expm1(-h) * data_estimate


class SingleStepSampler(Sampler):
    """PULSAR Method 1: one network call at ``timestep`` (default T - 1) returning the predicted x0.

    ``steps`` is ignored: this sampler always calls the network once. x_T must be noised to
    ``timestep`` (PULSAR: the noised pre-treatment scan).
    """

    def __init__(
        self, schedule: NoiseSchedule, prediction: str, clip_x0: float | None = None, timestep: int | None = None
    ) -> None:
        super().__init__(schedule, prediction, clip_x0)
        last = schedule.num_train_timesteps - 1
        if timestep is not None and not 0 <= timestep <= last:
            raise ValueError(f"timestep={timestep} must be between 0 and {last}")
        self.timestep = last if timestep is None else timestep

    def set_timesteps(self, steps: int = 1) -> None:
        self._use_timesteps((self.timestep,))

    def step(
        self, model_output: torch.Tensor, t: int, x_t: torch.Tensor, generators: Generators = None
    ) -> torch.Tensor:
        """The predicted x0 (N, C, *spatial), float32."""
        return self._denoise(model_output, x_t, t)[0]


def make_sampler(config: SamplingConfig, schedule: NoiseSchedule, prediction: str) -> Sampler:
    """The sampler named by ``config.sampler`` (ddpm | ddim | dpmpp | single_step)."""
    if config.sampler == "ddpm":
        return DDPMSampler(schedule, prediction, clip_x0=config.clip_x0)
    if config.sampler == "ddim":
        return DDIMSampler(schedule, prediction, eta=config.eta, clip_x0=config.clip_x0)
    if config.sampler == "dpmpp":
        return DPMSolverPPSampler(schedule, prediction, clip_x0=config.clip_x0)
    if config.sampler == "single_step":
        return SingleStepSampler(schedule, prediction, clip_x0=config.clip_x0)
    raise ValueError(f"sampling.sampler={config.sampler!r} is not one of ddpm, ddim, dpmpp, single_step")
