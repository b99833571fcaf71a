"""Noise schedules and conversions between network parameterisations.

Notation (Ho et al. 2020, "DDPM"): alpha_bar_t for train timesteps t = 0..T-1, with
``alpha_t = sqrt(alpha_bar_t)`` (signal scale) and ``sigma_t = sqrt(1 - alpha_bar_t)`` (noise scale).

  forward process   x_t = alpha_t * x0 + sigma_t * eps                 (DDPM eq. 4, reparameterised)
  eps prediction    x0  = (x_t - sigma_t * eps) / alpha_t              (DDPM eq. 15; PULSAR eq. 4)
  x0 prediction     eps = (x_t - alpha_t * x0) / sigma_t
  v prediction      v   = alpha_t * eps - sigma_t * x0                 (Salimans & Ho 2022, sec. 4 / app. D)
                    x0  = alpha_t * x_t - sigma_t * v,  eps = sigma_t * x_t + alpha_t * v
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from monai.networks.schedulers import NoiseSchedules

from oncodiff.config import DiffusionConfig

Prediction = Literal["eps", "v", "x0"]
PREDICTIONS: tuple[str, ...] = get_args(Prediction)

# PULSAR (Methods): "a linear noise schedule defined as linspace(0.05, 0.95, T), where T = 21".
PULSAR_NOISE_LEVELS = (0.05, 0.95)


def check_prediction(prediction: str) -> str:
    """Return ``prediction`` if it is one of eps | v | x0, else raise ValueError."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction={prediction!r} is not one of {', '.join(PREDICTIONS)}")
    return prediction


class NoiseSchedule:
    """alpha_bar_t for T train timesteps, with the forward process and parameterisation conversions.

    ``t`` is either a Python int (one timestep for the whole batch, as in sampling: the scales are
    Python floats, no tensor gather) or a (N,) int64 tensor (one timestep per element, as in training).
    All tensors are (N, C, *spatial), 2D or 3D alike.
    """

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
        if alphas_cumprod.numel() < 2:
            raise ValueError("a noise schedule needs at least 2 timesteps")
        if not bool(((alphas_cumprod > 0) & (alphas_cumprod < 1)).all()):
            raise ValueError("alphas_cumprod must lie strictly between 0 and 1 (some signal and some noise at every t)")
        if not bool((alphas_cumprod[1:] < alphas_cumprod[:-1]).all()):
            raise ValueError("alphas_cumprod must decrease strictly with t (more noise at larger t)")
        self.alphas_cumprod = alphas_cumprod
        self._alpha_bar = alphas_cumprod.tolist()
        self._alpha = alphas_cumprod.sqrt().tolist()
        self._sigma = (1 - alphas_cumprod).sqrt().tolist()
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def num_train_timesteps(self) -> int:
        return self.alphas_cumprod.numel()

    @classmethod
    def from_config(cls, config: DiffusionConfig) -> NoiseSchedule:
        """Build the schedule named by ``config.schedule``.

        linear / scaled_linear: MONAI's ``linear_beta`` / ``scaled_linear_beta`` betas from
        ``beta_start``..``beta_end``, alpha_bar = cumprod(1 - beta) (DDPM sec. 4; LDM).
        cosine: MONAI's cosine schedule (Nichol & Dhariwal 2021 eq. 17, betas clipped at 0.999).
        pulsar: see :func:`pulsar_alphas_cumprod`.
        ``max_noise_level``: only the timesteps whose noise level 1 - alpha_bar is at most this are kept, so
        training and sampling stop there (:func:`truncate_at_noise_level`).
        """
        alphas_cumprod = schedule_alphas_cumprod(config.schedule, config.num_train_timesteps, config.beta_start,
                                                 config.beta_end)
        if config.max_noise_level is not None:
            alphas_cumprod = truncate_at_noise_level(alphas_cumprod, config.max_noise_level)
        return cls(alphas_cumprod)

    def __repr__(self) -> str:
        ab = self.alphas_cumprod
        return f"NoiseSchedule(T={self.num_train_timesteps}, alpha_bar {ab[0]:.4g} -> {ab[-1]:.4g})"

    def alpha_bar(self, t: int) -> float:
        """alpha_bar_t for one train timestep t, as a Python float."""
        return self._alpha_bar[t]

    def scales(self, t: int | torch.Tensor, like: torch.Tensor) -> tuple[float | torch.Tensor, float | torch.Tensor]:
        """(alpha_t, sigma_t): floats for an int ``t``, else (N, 1, ..., 1) float32 tensors shaped to ``like``."""
        if isinstance(t, int):
            return self._alpha[t], self._sigma[t]
        alpha, sigma = self._table(like.device)
        view = (-1,) + (1,) * (like.ndim - 1)
        return alpha[t].view(view), sigma[t].view(view)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t), (N,) float32 (Kingma et al. 2021)."""
        alpha, sigma = self._table(t.device)
        return (alpha[t] / sigma[t]).square()

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """x_t = alpha_t * x0 + sigma_t * eps (DDPM eq. 4); x0, eps (N, C, *spatial)."""
        alpha, sigma = self.scales(t, x0)
        return alpha * x0 + sigma * eps

    def training_target(
        self, x0: torch.Tensor, eps: torch.Tensor, t: int | torch.Tensor, prediction: str
    ) -> torch.Tensor:
        """What a network of kind ``prediction`` should output for x_t = add_noise(x0, eps, t)."""
        if check_prediction(prediction) == "eps":
            return eps
        if prediction == "x0":
            return x0
        alpha, sigma = self.scales(t, x0)
        return alpha * eps - sigma * x0  # Salimans & Ho 2022: v = alpha_t * eps - sigma_t * x0

    def predict_x0_and_eps(
        self, output: torch.Tensor, x_t: torch.Tensor, t: int | torch.Tensor, prediction: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Network ``output`` of kind ``prediction`` at (x_t, t) -> (predicted x0, predicted eps), float32."""
        output = output.float()
        alpha, sigma = self.scales(t, x_t)
        if check_prediction(prediction) == "eps":
            return (x_t - sigma * output) / alpha, output
        if prediction == "x0":
            return output, (x_t - alpha * output) / sigma
        return alpha * x_t - sigma * output, sigma * x_t + alpha * output

    def eps_from_x0(self, x0: torch.Tensor, x_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """The noise that makes x_t from x0 at t: (x_t - alpha_t * x0) / sigma_t."""
        alpha, sigma = self.scales(t, x_t)
        return (x_t - alpha * x0) / sigma

    def _table(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # One float32 copy per device, so training does not copy the schedule every step.
        if device not in self._tables:
            alpha = self.alphas_cumprod.sqrt().to(device=device, dtype=torch.float32)
            sigma = (1 - self.alphas_cumprod).sqrt().to(device=device, dtype=torch.float32)
            self._tables[device] = (alpha, sigma)
        return self._tables[device]


def schedule_alphas_cumprod(name: str, num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """alpha_bar_t, (T,) float64, for schedule ``name`` in linear | scaled_linear | cosine | pulsar."""
    if name == "pulsar":
        return pulsar_alphas_cumprod(num_train_timesteps)
    if name == "cosine":
        _, _, alphas_cumprod = NoiseSchedules["cosine"](num_train_timesteps=num_train_timesteps)
        return alphas_cumprod.double()
    monai_names = {"linear": "linear_beta", "scaled_linear": "scaled_linear_beta"}
    if name not in monai_names:
        raise ValueError(f"schedule={name!r} is not one of linear, scaled_linear, cosine, pulsar")
    if not 0 < beta_start < beta_end < 1:
        raise ValueError(f"beta_start={beta_start} and beta_end={beta_end} need 0 < beta_start < beta_end < 1")
    betas = NoiseSchedules[monai_names[name]](
        num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end
    )
    return torch.cumprod(1 - betas.double(), dim=0)


def truncate_at_noise_level(alphas_cumprod: torch.Tensor, max_noise_level: float) -> torch.Tensor:
    """The first timesteps of a schedule, those with noise level 1 - alpha_bar_t <= ``max_noise_level``.

    PULSAR trains and samples from the pre scan noised to "20 % of the signal": with its T = 21 levels
    linspace(0.05, 0.95) and max_noise_level 0.2 the schedule keeps t = 0..3 (levels 0.05 ... 0.185), and
    sampling starts at 0.185. ValueError when fewer than 2 timesteps remain.
    """
    levels = 1 - alphas_cumprod
    keep = int((levels <= max_noise_level + 1e-12).sum())
    if keep < 2:
        raise ValueError(f"diffusion.max_noise_level={max_noise_level} keeps {keep} timestep(s) of the schedule; "
                         f"at least 2 are needed (its two lowest noise levels are {float(levels[0]):.4g} and "
                         f"{float(levels[1]):.4g})")
    return alphas_cumprod[:keep]


def pulsar_alphas_cumprod(num_train_timesteps: int = 21) -> torch.Tensor:
    """PULSAR schedule: noise level n_t = linspace(0.05, 0.95, T)[t], T = 21 in the paper.

    PULSAR writes the forward process as eq. 2, x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps, and
    calls its schedule "noise levels" (a "50 % noise level" gives "poor SNR"). We read the noise level
    as the noise's share of the variance, n_t = 1 - alpha_bar_t, so alpha_bar_t = 1 - n_t and the
    SNR at a 50 % level is 1. The largest level leaves signal (alpha_bar = 0.05): start sampling from a
    noised image (PULSAR: the noised pre-treatment scan), not from pure noise.
    """
    low, high = PULSAR_NOISE_LEVELS
    return 1 - torch.linspace(low, high, num_train_timesteps, dtype=torch.float64)
