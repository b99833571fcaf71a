"""The diffusion training loss, a small callable in the style of NVlabs/edm ``training/loss.py``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.losses import SSIMLoss

from oncodiff.config import DiffusionConfig
from oncodiff.diffusion.noise import Generators, randint_per_element, randn_per_element
from oncodiff.diffusion.schedule import NoiseSchedule, check_prediction

LossModelFn = Callable[[torch.Tensor, torch.Tensor], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]


class DiffusionLoss:
    """``loss(model_fn, x0, generators) -> (scalar, parts)`` for one batch, 2D or 3D.

    Per element: t ~ U{0..T-1}, eps ~ N(0, I), x_t = alpha_t x0 + sigma_t eps (DDPM eq. 4), and
      err  = mean(w * (output - target)^2)   target by ``prediction`` (DDPM eq. 14 for eps)
      loss = (1 - ssim_weight) * err + ssim_weight * (1 - SSIM(x0_hat, x0)) + drift_loss_weight * drift_mse
    where x0_hat is the x0 implied by the output (PULSAR: 90 % MSE, 10 % SSIM; SSIM is MONAI's, with
    the batch target's value range as data range), w the optional per-voxel weight map (tumour
    up-weighting), and drift_mse PULSAR eq. 3's MSE of an auxiliary drift head, when one is trained.

    ``error="l1"`` takes ``|output - target|`` instead of the square (reported as ``parts["l1"]``, else
    ``parts["mse"]``): with x0-prediction the denoiser then estimates the conditional median of x0 rather
    than its mean, the point that minimises the in-tumour MAE when the follow-up is bimodal.

    ``min_snr_gamma``: scale each element's MSE so its x0-space weight is min(SNR_t, gamma)
    (Hang et al. 2023, "Efficient diffusion training via Min-SNR weighting", sec. 3.4): the factor is
    min(SNR, gamma) / SNR for eps, min(SNR, gamma) / (SNR + 1) for v and min(SNR, gamma) for x0.

    ``noise_sampling="lognormal"``: t is drawn as in EDM (Karras et al. 2022, sec. 5, "P_mean, P_std") instead
    of uniformly: log sigma ~ N(lognormal_mean, lognormal_std^2), with sigma_t = sqrt((1 - alpha_bar_t) /
    alpha_bar_t) the noise scale of x_t / alpha_t, then t = the train timestep whose log sigma_t is nearest.
    Only the distribution of noise levels changes; the loss weighting stays as set.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        prediction: str = "x0",
        ssim_weight: float = 0.0,
        min_snr_gamma: float | None = None,
        drift_loss_weight: float = 1.0,
        ssim_window: int = 7,
        error: str = "mse",
        noise_sampling: str = "uniform",
        lognormal_mean: float = -1.2,
        lognormal_std: float = 1.2,
    ) -> None:
        self.schedule = schedule
        self.prediction = check_prediction(prediction)
        if not 0.0 <= ssim_weight <= 1.0:
            raise ValueError(f"ssim_weight={ssim_weight} must be in [0, 1] (PULSAR uses 0.1)")
        if min_snr_gamma is not None and not min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma={min_snr_gamma} must be positive, or None to switch it off")
        if not drift_loss_weight >= 0:
            raise ValueError(f"drift_loss_weight={drift_loss_weight} must be >= 0")
        if ssim_window < 1 or ssim_window % 2 == 0:
            raise ValueError(f"ssim_window={ssim_window} must be a positive odd number of voxels")
        if error not in ("mse", "l1"):
            raise ValueError(f"error={error!r} must be 'mse' or 'l1'")
        if noise_sampling not in ("uniform", "lognormal"):
            raise ValueError(f"noise_sampling={noise_sampling!r} must be 'uniform' or 'lognormal'")
        if not lognormal_std > 0:
            raise ValueError(f"lognormal_std={lognormal_std} must be positive (EDM: 1.2)")
        self.error = error
        self.noise_sampling = noise_sampling
        self.lognormal_mean = lognormal_mean
        self.lognormal_std = lognormal_std
        # log sigma_t per train timestep, increasing with t (alpha_bar decreases strictly)
        ab = schedule.alphas_cumprod
        self._log_sigma = (0.5 * ((1 - ab) / ab).log()).float()
        self.ssim_weight = ssim_weight
        self.min_snr_gamma = min_snr_gamma
        self.drift_loss_weight = drift_loss_weight
        self.ssim_window = ssim_window

    @classmethod
    def from_config(cls, config: DiffusionConfig, schedule: NoiseSchedule | None = None) -> DiffusionLoss:
        """The loss for ``config`` (the schedule is built from it unless given)."""
        return cls(
            schedule or NoiseSchedule.from_config(config),
            prediction=config.prediction,
            ssim_weight=config.ssim_weight,
            min_snr_gamma=config.min_snr_gamma,
            drift_loss_weight=config.drift_loss_weight,
            error=config.loss,
            noise_sampling="uniform" if config.noise_sampling == "auto" else config.noise_sampling,
            lognormal_mean=config.lognormal_mean,
            lognormal_std=config.lognormal_std,
        )

    def __call__(
        self,
        model_fn: LossModelFn,
        x0: torch.Tensor,
        generators: Generators = None,
        weight_map: torch.Tensor | None = None,
        source: torch.Tensor | None = None,
        drift_target: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss for clean targets x0 (N, C, *spatial); returns (scalar, detached parts).

        generators: one torch.Generator per element for t and eps, or None (global RNG).
        weight_map: (N, 1 or C, *spatial) per-voxel weights on the squared error.
        source: the image noised into x_t instead of x0 (PULSAR: the pre-treatment scan); targets stay
            relative to x0, i.e. eps becomes the noise that maps x0 to x_t. Best with prediction x0.
        drift_target: (N, C', *spatial); then model_fn must return (output, drift map).
        """
        n = x0.shape[0]
        x0 = x0.float()
        t = self.draw_timesteps(n, generators, x0.device)
        noise = self._noise_from_x0(x0, randn_per_element(x0.shape, generators, x0.device), t, source)
        x_t = self.schedule.add_noise(x0, noise, t)
        output, drift = self._split_output(model_fn(x_t, t), drift_target)
        parts = {self.error: self._error(output, x0, noise, t, weight_map)}
        total = parts[self.error]
        if self.ssim_weight > 0:
            x0_hat, _ = self.schedule.predict_x0_and_eps(output, x_t, t, self.prediction)
            parts["ssim"] = self._one_minus_ssim(x0_hat, x0)
            total = (1 - self.ssim_weight) * total + self.ssim_weight * parts["ssim"]
        if drift_target is not None:
            parts["drift"] = (drift.float() - drift_target.float()).square().mean()
            total = total + self.drift_loss_weight * parts["drift"]
        parts = {name: value.detach() for name, value in parts.items()}
        parts["loss"] = total.detach()
        return total, parts

    def draw_timesteps(self, n: int, generators: Generators, device: torch.device) -> torch.Tensor:
        """(n,) int64 train timesteps, one per element, by ``noise_sampling``."""
        if self.noise_sampling == "uniform":
            return randint_per_element(self.schedule.num_train_timesteps, generators, n, device)
        log_sigma = self.lognormal_mean + self.lognormal_std * randn_per_element((n,), generators, "cpu")
        table = self._log_sigma
        right = torch.searchsorted(table, log_sigma).clamp(1, table.numel() - 1)
        left = right - 1
        nearer_left = (log_sigma - table[left]).abs() <= (table[right] - log_sigma).abs()
        return torch.where(nearer_left, left, right).to(device)

    def _noise_from_x0(
        self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, source: torch.Tensor | None
    ) -> torch.Tensor:
        # The noise that takes x0 to x_t: alpha * source + sigma * eps
        #   == alpha * x0 + sigma * (eps + alpha / sigma * (source - x0))
        if source is None:
            return eps
        alpha, sigma = self.schedule.scales(t, x0)
        return eps + (alpha / sigma) * (source.float() - x0)

    def _error(
        self,
        output: torch.Tensor,
        x0: torch.Tensor,
        noise: torch.Tensor,
        t: torch.Tensor,
        weight_map: torch.Tensor | None,
    ) -> torch.Tensor:
        target = self.schedule.training_target(x0, noise, t, self.prediction)
        error = output.float() - target
        error = error.abs() if self.error == "l1" else error.square()
        if weight_map is not None:
            error = error * _broadcastable(weight_map, error).float()
        per_element = error.flatten(1).mean(1)
        if self.min_snr_gamma is not None:
            per_element = per_element * self._min_snr_factor(t)
        return per_element.mean()

    def _min_snr_factor(self, t: torch.Tensor) -> torch.Tensor:
        snr = self.schedule.snr(t)
        clipped = snr.clamp(max=self.min_snr_gamma)
        if self.prediction == "eps":
            return clipped / snr
        if self.prediction == "v":
            return clipped / (snr + 1)
        return clipped

    def _one_minus_ssim(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        window = min(self.ssim_window, *x0.shape[2:])
        window -= 1 - window % 2  # odd, and no larger than the smallest spatial size
        data_range = (x0.amax() - x0.amin()).clamp(min=1e-6)
        ssim_loss = SSIMLoss(spatial_dims=x0.ndim - 2, data_range=data_range, win_size=window)
        with torch.autocast(x0.device.type, enabled=False):  # SSIM's variances need float32, not bf16
            return ssim_loss(x0_hat.float(), x0)

    @staticmethod
    def _split_output(output, drift_target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if drift_target is None:
            if not isinstance(output, torch.Tensor):
                raise ValueError("model_fn returned a tuple; pass drift_target to train its drift head")
            return output, None
        if not (isinstance(output, tuple) and len(output) == 2):
            raise ValueError("drift_target was given, so model_fn must return (prediction, drift map)")
        return output


def _broadcastable(weight_map: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    try:
        fits = torch.broadcast_shapes(weight_map.shape, like.shape) == like.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"weight_map of shape {tuple(weight_map.shape)} does not broadcast to the target's {tuple(like.shape)}; "
            "give (N, 1 or C, *spatial)"
        )
    return weight_map
