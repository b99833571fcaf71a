"""CorrDiff's residual design (Mardani et al., "Residual corrective diffusion modeling"): a regression U-Net
predicts the mean target, and a diffusion model generates the residual, the target minus that mean.

The sample mean then starts from the regression's accuracy, and the samples' spread comes from a model of
what the regression cannot know from the inputs (which response course, the follow-up's noise). Here:

- ``mean`` is the regression U-Net (a ConditionalDenoiser run on zeros at t = 0, as ``RegressionModule``
  trains it), without the class label: it predicts the mean follow-up over the classes given the baseline,
  clinical variables and days. It is trained first and frozen.
- ``denoiser`` is the diffusion model of the residual. Its image conditions are the run's (pre, tumour
  mask, anatomy) plus the regression mean (one channel per target channel), and it keeps the class label,
  so the class prior and classifier-free guidance work as for any denoiser; the residual's mean given the
  class is what tells the classes apart.

:meth:`ResidualDenoiser.encode_conditions` runs the regression once per batch and appends its mean to the
image conditions; :meth:`~ResidualDenoiser.decode_target` adds it back to a generated residual. Sampling
(``pipeline/sampling.py``) calls both, as it does for a latent denoiser, so it needs no branch of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from oncodiff.models.conditions import FORECAST_PREFIX, Conditions
from oncodiff.models.denoiser import ConditionalDenoiser, DenoiserOutput, WrappedDenoiser

MEAN_CHANNEL = "regression_mean"


def residual_condition_names(image_condition_names: Sequence[str], target_channels: int) -> tuple[str, ...]:
    """The residual model's image conditions: the run's, then the regression mean's channels."""
    means = (MEAN_CHANNEL,) if target_channels == 1 else tuple(f"{MEAN_CHANNEL}_{k}" for k in range(target_channels))
    return (*image_condition_names, *means)


class ResidualDenoiser(WrappedDenoiser):
    """forward(x_t, t, cond) -> DenoiserOutput of the residual model; cond is encoded (the regression mean
    appended) on the way in if it is not already. The regression ``mean`` stays frozen and in eval mode."""

    generates_residual = True

    def __init__(self, mean: ConditionalDenoiser, denoiser: ConditionalDenoiser):
        super().__init__()
        if mean.target_channels != denoiser.target_channels:
            raise ValueError(f"the regression predicts {mean.target_channels} target channels, the residual model "
                             f"generates {denoiser.target_channels}")
        expected = mean.image_condition_channels + mean.target_channels
        if denoiser.image_condition_channels != expected:
            raise ValueError(f"the residual model must take the regression's {mean.image_condition_channels} image "
                             f"conditions plus its mean ({expected} channels); got {denoiser.image_condition_channels}")
        self.mean = mean
        self.denoiser = denoiser
        self.mean.requires_grad_(False)
        self.mean.eval()

    def train(self, mode: bool = True) -> ResidualDenoiser:
        super().train(mode)
        self.mean.eval()
        return self

    @torch.no_grad()
    def regression_mean(self, cond: Conditions) -> Tensor:
        """(B, Ct, *S) float32: the regression U-Net's prediction of the target for image-space ``cond``."""
        image = cond.image[:, : self.mean.image_condition_channels]
        rows = Conditions(image=image, clinical=cond.clinical, clinical_missing=cond.clinical_missing,
                          days=cond.days, class_label=None, control=cond.control)
        zeros = torch.zeros((image.shape[0], self.mean.target_channels, *image.shape[2:]), device=image.device,
                            dtype=image.dtype)
        t = torch.zeros(image.shape[0], dtype=torch.long, device=image.device)
        return self.mean(zeros, t, rows).prediction.float()

    def is_encoded(self, cond: Conditions) -> bool:
        return cond.image.shape[1] == self.denoiser.image_condition_channels

    @torch.no_grad()
    def encode_conditions(self, cond: Conditions) -> Conditions:
        """The run's conditions with the regression mean appended to the image channels (unchanged if it is)."""
        if self.is_encoded(cond):
            return cond
        mean = self.regression_mean(cond)
        return Conditions(image=torch.cat([cond.image, mean.to(cond.image.dtype)], dim=1), clinical=cond.clinical,
                          clinical_missing=cond.clinical_missing, days=cond.days, class_label=cond.class_label,
                          control=cond.control)

    def mean_from_encoded(self, rows: Conditions) -> Tensor:
        """(B, Ct, *S) the regression mean carried by encoded conditions."""
        return rows.image[:, -self.target_channels:].float()

    def decode_target(self, generated: Tensor, rows: Conditions, target: str) -> Tensor:
        """A generated residual -> the target: the residual plus the regression mean."""
        return generated.float() + self.mean_from_encoded(rows)

    def forward(self, x_t: Tensor, t: Tensor, cond: Conditions) -> DenoiserOutput:
        return self.denoiser(x_t, t, self.encode_conditions(cond))



FORECAST_CHANNEL = "mechanistic_forecast"


def forecast_residual_names(image_condition_names: Sequence[str]) -> tuple[str, ...]:
    """The residual model's image conditions under diffusion.residual=mechanistic: the run's (the forecast
    channels of :func:`~oncodiff.models.conditions.forecast_condition_names` left out), then the one forecast of
    the row's class."""
    return (*(n for n in image_condition_names if not n.startswith(FORECAST_PREFIX)), FORECAST_CHANNEL)


class ForecastResidualDenoiser(WrappedDenoiser):
    """diffusion.residual=mechanistic: the diffusion model generates the target minus the mechanistic forecast
    (data/mechanistic.py), conditioned on that forecast as one image channel.

    The conditions it is given carry ``n_forecasts`` forecast channels last (the outcome unknown, then class
    k = 0..K-1, precomputed with the parameters fitted on the training split). :meth:`encode_conditions` keeps
    the one of each row's class (a null or unknown class: the outcome-unknown forecast), so the class chooses the
    forecast; it runs before label dropout in training and after each sample's class is drawn in sampling
    (``encodes_class``), so classifier-free guidance's unconditional pass nulls the label but keeps the row's
    forecast, the one its residual is measured from. :meth:`decode_target` adds the forecast (as a target: the
    forecast itself, or forecast - pre for a drift target) back to the generated residual.
    """

    generates_residual = True
    encodes_class = True

    def __init__(self, denoiser: ConditionalDenoiser, n_forecasts: int, target: str = "post"):
        super().__init__()
        if n_forecasts < 1:
            raise ValueError(f"n_forecasts must be >= 1, got {n_forecasts}")
        if target not in ("post", "drift"):
            raise ValueError(f"target must be 'post' or 'drift', got {target!r}")
        if denoiser.target_channels not in (1, 2):
            raise ValueError(f"the denoiser generates {denoiser.target_channels} target channels; the forecast "
                             "residual design takes an image and, with model.generate_mask, its mask")
        self.denoiser = denoiser
        self.n_forecasts = int(n_forecasts)
        self.target = target

    def is_encoded(self, cond: Conditions) -> bool:
        return cond.image.shape[1] == self.denoiser.image_condition_channels

    def forecast_index(self, cond: Conditions) -> Tensor:
        """(B,) int64: the forecast channel of each row, 1 + its class, or 0 (the outcome unknown) for the null
        class or a model without one."""
        b, device = cond.batch_size, cond.image.device
        if cond.class_label is None or self.n_forecasts == 1:
            return torch.zeros(b, dtype=torch.long, device=device)
        label = cond.class_label.long()
        known = (label >= 0) & (label < self.n_forecasts - 1)
        return torch.where(known, label + 1, torch.zeros_like(label))

    def encode_conditions(self, cond: Conditions) -> Conditions:
        """The conditions with the forecast channels replaced by the row's class's forecast (unchanged if done)."""
        if self.is_encoded(cond):  # one forecast channel (no class label): raw and encoded are the same
            return cond
        expected = self.denoiser.image_condition_channels - 1 + self.n_forecasts
        if cond.image.shape[1] != expected:
            raise ValueError(f"expected {expected} image condition channels ({self.n_forecasts} forecasts last), "
                             f"got {cond.image.shape[1]}")
        base, forecasts = cond.image[:, :-self.n_forecasts], cond.image[:, -self.n_forecasts:]
        index = self.forecast_index(cond).reshape(-1, 1, *([1] * (forecasts.dim() - 2)))
        chosen = torch.gather(forecasts, 1, index.expand(-1, 1, *forecasts.shape[2:]))
        return Conditions(image=torch.cat([base, chosen], dim=1), clinical=cond.clinical,
                          clinical_missing=cond.clinical_missing, days=cond.days, class_label=cond.class_label,
                          control=cond.control)

    def forecast_from_encoded(self, rows: Conditions) -> Tensor:
        """(B, 1, *S) the forecast follow-up carried by encoded conditions."""
        return rows.image[:, -1:].float()

    def mean_from_encoded(self, rows: Conditions) -> Tensor:
        """(B, Ct, *S) the forecast as a target: the follow-up, or its drift from the pre scan; with a mask channel
        (model.generate_mask) zeros there, so the mask is generated as it is without the forecast."""
        forecast = self.forecast_from_encoded(rows)
        image = forecast if self.target == "post" else forecast - rows.image[:, :1].float()
        if self.target_channels == 1:
            return image
        return torch.cat([image, torch.zeros_like(image).expand(-1, self.target_channels - 1, *image.shape[2:])], 1)

    def decode_target(self, generated: Tensor, rows: Conditions, target: str) -> Tensor:
        """A generated residual -> the target: the residual plus the forecast."""
        return generated.float() + self.mean_from_encoded(rows)

    def forward(self, x_t: Tensor, t: Tensor, cond: Conditions) -> DenoiserOutput:
        return self.denoiser(x_t, t, self.encode_conditions(cond))
