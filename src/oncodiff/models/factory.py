"""The network factory: a config and a :class:`ModelLayout` -> the freshly initialised network.

Training builds the network it trains here, and ``pipeline/export.py`` rebuilds an exported one the
same way before loading its weights, so both always agree on the architecture. The networks take plain
arguments, as MONAI's do; this is the one module of ``oncodiff.models`` that reads the config, and the
functions below map its sections onto those arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from oncodiff.cohort.schema import ClinicalVariable
from oncodiff.config import AnatomyEncoderConfig, AutoencoderConfig, Config, ModelConfig
from oncodiff.models.anatomy import AnatomyEncoders
from oncodiff.models.autoencoder import Autoencoder, LatentCodec, LatentDenoiser, latent_condition_names
from oncodiff.models.conditions import CLASS_COUNTS, BatchConditioning, n_forecasts
from oncodiff.models.controlnet import ControlledDenoiser
from oncodiff.models.denoiser import ConditionalDenoiser
from oncodiff.models.residual import (
    ForecastResidualDenoiser, ResidualDenoiser, forecast_residual_names, residual_condition_names,
)


@dataclass(frozen=True)
class ModelLayout:
    """What the network's inputs are: enough to rebuild it without the cohort."""

    spatial_dims: int
    image_condition_names: tuple[str, ...]
    clinical: tuple[ClinicalVariable, ...]
    anatomy: tuple[str, ...] = ()
    target_channels: int = 1
    crop_size: tuple[int, ...] = ()
    clinical_encoder: dict[str, Any] = field(default_factory=dict)
    response_positive: str | None = None
    survival_classes: dict[str, Any] = field(default_factory=dict)  # training-split median / quartiles (days)
    smoothing_mm: float = 0.0  # the Gaussian sigma of the pre scans the model was trained on (data.smoothing)
    # diffusion.residual=mechanistic: the fitted parameter sets (data/mechanistic.py: ForecastSets.to_dict), else None
    mechanistic: dict[str, Any] | None = None
    # the distinct days since baseline of the training split's target scans; () for runs from before it was kept
    training_days: tuple[float, ...] = ()

    def days_note(self, days: Sequence[float]) -> str | None:
        """A sentence when any of ``days`` (target days since baseline) lies outside the days this model was
        trained on: there its prediction extrapolates in time. None when all lie within, or nothing was kept."""
        if not self.training_days:
            return None
        low, high = min(self.training_days), max(self.training_days)
        outside = sorted({float(d) for d in days if not low <= d <= high})
        if not outside:
            return None
        trained = ", ".join(f"{d:g}" for d in self.training_days)
        return (f"note: day(s) {', '.join(f'{d:g}' for d in outside)} after baseline lie outside the follow-up days "
                f"this model was trained on ({trained}): there it extrapolates in time, from no training "
                "follow-up taken that early or that late")

    def n_classes(self, model: ModelConfig) -> int:
        return CLASS_COUNTS[model.class_label]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["clinical"] = [v.model_dump(mode="json") for v in self.clinical]
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelLayout:
        raw = dict(raw)
        raw["clinical"] = tuple(ClinicalVariable.model_validate(v) for v in raw.get("clinical", ()))
        for key in ("image_condition_names", "anatomy", "crop_size", "training_days"):
            raw[key] = tuple(raw.get(key, ()))
        return cls(**raw)


DENOISER_FIELDS = ("channels", "attention_levels", "num_res_blocks", "num_head_channels", "norm_num_groups", "token_dim",
                   "cbi_lambda", "class_label", "class_dropout", "clinical_dropout", "use_days", "day_min_period",
                   "prompt_tokens", "drift_head")  # ModelConfig fields that ConditionalDenoiser takes under the same name


def denoiser_arguments(model: ModelConfig) -> dict[str, Any]:
    """ConditionalDenoiser's keyword arguments from ``model`` (model.clinical is its ``clinical_mode``)."""
    return {"clinical_mode": model.clinical, **{name: getattr(model, name) for name in DENOISER_FIELDS}}


def batch_conditioning(model: ModelConfig) -> BatchConditioning:
    """Which batch entries condition a network built from ``model`` (models.conditions.conditions_from_batch)."""
    return BatchConditioning(model.use_anatomy, model.class_label, model.use_days, model.control)


def build_autoencoder(spatial_dims: int, kind: str, config: AutoencoderConfig) -> Autoencoder:
    """One autoencoder of model.latent = ``kind`` with model.autoencoder's architecture."""
    return Autoencoder(spatial_dims, kind, channels=config.channels, latent_channels=config.latent_channels,
                       num_res_blocks=config.num_res_blocks, norm_num_groups=config.norm_num_groups,
                       codebook_size=config.codebook_size, commitment_cost=config.commitment_cost,
                       checkpointing=config.checkpointing)


def build_codec(spatial_dims: int, kind: str, config: AutoencoderConfig) -> LatentCodec:
    """The image autoencoder and, with model.autoencoder.mask = autoencoder, the tumour masks' one."""
    image = build_autoencoder(spatial_dims, kind, config)
    mask = build_autoencoder(spatial_dims, kind, config) if config.mask == "autoencoder" else None
    return LatentCodec(image, mask)


def build_anatomy_encoders(spatial_dims: int, anatomy: tuple[str, ...], config: AnatomyEncoderConfig) -> AnatomyEncoders:
    """One encoder per anatomy structure with model.anatomy_encoder's widths."""
    return AnatomyEncoders(spatial_dims, anatomy, config.width, config.depth, config.projection_dim)


def build_denoiser(model: ModelConfig, layout: ModelLayout) -> ConditionalDenoiser:
    """The denoiser for ``layout``, freshly initialised."""
    return ConditionalDenoiser(layout.spatial_dims, layout.target_channels, len(layout.image_condition_names),
                               layout.clinical, layout.n_classes(model), layout.image_condition_names,
                               **denoiser_arguments(model))


def residual_mean_model(model: ModelConfig) -> ModelConfig:
    """The regression U-Net of the residual design (diffusion.residual=regression): the run's U-Net without the
    class label (it predicts the mean over the classes) and without a drift head."""
    return model.model_copy(update={"class_label": "none", "drift_head": "none"})


def build_residual(model: ModelConfig, layout: ModelLayout) -> ResidualDenoiser:
    """The residual design's pair: the regression U-Net and the residual model, which also sees its mean."""
    names = residual_condition_names(layout.image_condition_names, layout.target_channels)
    residual = ConditionalDenoiser(layout.spatial_dims, layout.target_channels, len(names), layout.clinical,
                                   layout.n_classes(model), names, **denoiser_arguments(model))
    return ResidualDenoiser(build_denoiser(residual_mean_model(model), layout), residual)


def build_forecast_residual(model: ModelConfig, layout: ModelLayout, target: str) -> ForecastResidualDenoiser:
    """diffusion.residual=mechanistic: the residual model, which sees the run's image conditions and the forecast of
    the row's class in place of the layout's forecast channels."""
    names = forecast_residual_names(layout.image_condition_names)
    forecasts = n_forecasts(layout.image_condition_names)
    if not forecasts:
        raise ValueError("diffusion.residual=mechanistic needs the forecast channels in the layout's image "
                         "conditions (forecast:unknown, forecast:class0, ...)")
    residual = ConditionalDenoiser(layout.spatial_dims, layout.target_channels, len(names), layout.clinical,
                                   layout.n_classes(model), names, **denoiser_arguments(model))
    return ForecastResidualDenoiser(residual, forecasts, target)


def build_network(config: Config, layout: ModelLayout) -> nn.Module:
    """The freshly initialised network that ``config.training.stage`` trains and exports, for ``layout``."""
    stage, model = config.training.stage, config.model
    if stage == "diffusion" and config.diffusion.residual == "regression":
        return build_residual(model, layout)
    if stage == "diffusion" and config.diffusion.residual == "mechanistic":
        return build_forecast_residual(model, layout, config.diffusion.target)
    if stage in ("diffusion", "regression"):
        return build_denoiser(model, layout)
    if stage == "contrastive":
        return build_anatomy_encoders(layout.spatial_dims, layout.anatomy, model.anatomy_encoder)
    if stage == "autoencoder":
        return build_codec(layout.spatial_dims, model.latent, model.autoencoder)
    if model.latent == "none":  # a pixel-space ControlNet
        return _controlled(build_denoiser(model, layout), config, layout, control_downsample_levels=0)
    codec = build_codec(layout.spatial_dims, model.latent, model.autoencoder)
    if layout.crop_size:
        codec.latent_shape(layout.crop_size)  # fail now, naming the crop size, rather than at the first batch
    names = latent_condition_names(codec, layout.image_condition_names)
    denoiser = ConditionalDenoiser(layout.spatial_dims, codec.latent_channels, len(names), layout.clinical,
                                   CLASS_COUNTS[model.class_label], names, **denoiser_arguments(model))
    if stage == "controlnet":
        denoiser = _controlled(denoiser, config, layout, control_downsample_levels=codec.downsample_levels)
    return LatentDenoiser(codec, denoiser, layout.image_condition_names)


def _controlled(denoiser: ConditionalDenoiser, config: Config, layout: ModelLayout,
                control_downsample_levels: int) -> ControlledDenoiser:
    model = config.model
    encoders = None
    if model.control == "anatomy":
        encoders = build_anatomy_encoders(layout.spatial_dims, layout.anatomy, model.anatomy_encoder)
    channels = len(layout.anatomy) if model.control == "anatomy" else 1
    return ControlledDenoiser(denoiser, model.control, channels, model.control_embedding_width,
                              control_downsample_levels, anatomy_encoders=encoders)
