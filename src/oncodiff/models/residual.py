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

from oncodiff.models.conditions import Conditions
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

