"""The conditional denoiser: MONAI's DiffusionModelUNet plus our conditioning and drift heads."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import NamedTuple

import torch
from monai.networks.blocks import Convolution
from monai.networks.nets import DiffusionModelUNet
from torch import Tensor, nn

from oncodiff.cohort.schema import ClinicalVariable
from oncodiff.models.clinical import CbiAdapter, ClinicalTokenizer, PromptTokens
from oncodiff.models.conditions import CLASS_COUNTS, Conditions
from oncodiff.models.embeddings import DaysEmbedding
from oncodiff.models.hooks import added_to_output, captured_outputs


class DenoiserOutput(NamedTuple):
    """prediction: (B, Ct, *S) in the diffusion parameterisation; drift: (B, 1, *S) or None without a head."""

    prediction: Tensor
    drift: Tensor | None


class DecoupledDriftHead(nn.Module):
    """PULSAR's decoupled drift head: its own decoder layers on the last up-block features.

    (B, C0, *S) -> (B, 1, *S). The UNet's own output block keeps predicting the diffusion target, so the
    two objectives share the encoder/decoder trunk but not their final layers (PULSAR: noise and drift
    interfere less with decoupled decoder layers).
    """

    def __init__(self, spatial_dims: int, channels: int, norm_num_groups: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.GroupNorm(norm_num_groups, channels),
            nn.SiLU(),
            Convolution(spatial_dims, channels, channels, kernel_size=3, padding=1, conv_only=True),
            nn.GroupNorm(norm_num_groups, channels),
            nn.SiLU(),
            Convolution(spatial_dims, channels, 1, kernel_size=3, padding=1, conv_only=True),
        )

    def forward(self, features: Tensor) -> Tensor:
        return self.layers(features)


class PixelSpace:
    """The sampling interface of a network that denoises in image space (docs/contracts.md section 3).

    The sampling loop (``pipeline/sampling.py: draw_samples``) calls these three steps on every network, so
    it has no branch per kind of model: here conditions, the pre scan and the generated target are already
    in image space and each step passes them through; :class:`~oncodiff.models.LatentDenoiser` overrides
    them to sample on its latent grid.
    """

    def encode_conditions(self, cond: Conditions) -> Conditions:
        """The conditions in the space the network samples in: image space, unchanged."""
        return cond

    def sampling_pre(self, rows: Conditions) -> Tensor:
        """The pre scan (B, 1, *S) in the sampling space, from :meth:`encode_conditions`' output."""
        return rows.image[:, :1].float()

    def decode_target(self, generated: Tensor, rows: Conditions, target: str) -> Tensor:
        """A generated target in the sampling space -> the image-space target (B, Ct, *S): unchanged here."""
        return generated


class ConditionalDenoiser(nn.Module, PixelSpace):
    """forward(x_t (B, Ct, *S), t (B,) int64, cond: Conditions) -> DenoiserOutput.

    The UNet input is x_t concatenated on channels with cond.image (Ct + Cc channels).
    - class label: MONAI's class embedding with n_classes + 1 entries; index n_classes is the trained null
      class (glioblastoma LDM: classifier-free guidance). Dropout is `drop_labels`, called by training.
    - days since baseline: Fourier features of days/365 -> MLP, added to the timestep embedding. That sum
      feeds every ResBlock of MONAI's UNet, so the time point conditions all levels in every clinical mode,
      including those without cross-attention (a prompt token, as in NAC, would only reach the attention
      levels, which we keep at low resolution).
    - clinical "tokens": one token per variable (ClinicalTokenizer) as the cross-attention context.
    - prompt_tokens (NAC prompt tuning): the days and the class label are tokens of that context instead
      (PromptTokens, after the clinical tokens), and are then not added to the timestep embedding.
    - clinical "cbi": ImmunoDiff's c = Z_img + lambda * sum_i Z_i, added to the output of the UNet's first
      convolution: the point where a ControlNet injects its condition embedding (ImmunoDiff feeds c to a
      ControlNet), so c is a feature map with the first level's channels.
    - drift head "shared": one extra UNet output channel; "decoupled": DecoupledDriftHead.
    """

    def __init__(
        self,
        spatial_dims: int,
        target_channels: int,
        image_condition_channels: int,
        clinical: Sequence[ClinicalVariable],
        n_classes: int,
        image_condition_names: Sequence[str] | None = None,
        *,
        channels: Sequence[int] = (32, 64, 64),
        attention_levels: Sequence[bool] = (False, False, True),
        num_res_blocks: int = 1,
        num_head_channels: int = 32,
        norm_num_groups: int = 16,
        clinical_mode: str = "tokens",
        token_dim: int = 64,
        cbi_lambda: float = 0.05,
        class_label: str = "response",
        class_dropout: float = 0.15,
        clinical_dropout: float = 0.0,
        use_days: bool = True,
        day_min_period: float = 0.0,
        prompt_tokens: bool = False,
        drift_head: str = "none",
    ):
        """``n_classes``: classes of ``class_label`` (its kind: "none", "response", "survival2", "survival4"),
        a trained null class added; the keywords are ModelConfig's fields of the same names (``clinical_mode``
        is model.clinical), which models/factory.py maps onto them. Bad values raise ValueError naming them."""
        super().__init__()
        _check_arguments(spatial_dims=spatial_dims, target_channels=target_channels,
                         image_condition_channels=image_condition_channels, n_classes=n_classes,
                         image_condition_names=image_condition_names, channels=channels,
                         attention_levels=attention_levels, clinical_mode=clinical_mode, class_label=class_label,
                         class_dropout=class_dropout, clinical_dropout=clinical_dropout, drift_head=drift_head)
        self.spatial_dims = spatial_dims
        self.target_channels = target_channels
        self.image_condition_channels = image_condition_channels
        self.image_condition_names = tuple(image_condition_names or ())
        self.clinical_variables = tuple(clinical)
        self.clinical_mode = clinical_mode if self.clinical_variables else "none"
        if self.clinical_mode == "cbi" and image_condition_channels < 1:
            raise ValueError("clinical_mode='cbi' (model.clinical=cbi) builds Z_img from the image condition; "
                             "it needs image_condition_channels >= 1")
        self.class_label = class_label
        self.n_classes = n_classes if class_label != "none" else 0
        self.channels, self.attention_levels = tuple(channels), tuple(attention_levels)
        self.num_res_blocks, self.num_head_channels, self.norm_num_groups = num_res_blocks, num_head_channels, \
            norm_num_groups
        self.token_dim, self.cbi_lambda = token_dim, cbi_lambda
        self.class_dropout, self.clinical_dropout = class_dropout, clinical_dropout
        self.use_days, self.drift_kind = use_days, drift_head
        time_embed_dim = 4 * self.channels[0]  # MONAI's DiffusionModelUNet timestep embedding width
        self.clinical_tokens = None
        self.cbi_adapter = None
        if self.clinical_mode == "tokens":
            self.clinical_tokens = ClinicalTokenizer(self.clinical_variables, token_dim)
        elif self.clinical_mode == "cbi":
            self.cbi_adapter = CbiAdapter(
                spatial_dims, image_condition_channels, self.channels[0], self.clinical_variables,
                token_dim, cbi_lambda,
            )
        self.prompt_tokens = None
        if prompt_tokens and (use_days or self.n_classes):
            self.prompt_tokens = PromptTokens(token_dim, use_days, self.n_classes + 1 if self.n_classes else 0,
                                              day_min_period)
        self.days_embedding = (DaysEmbedding(time_embed_dim, min_period_days=day_min_period)
                               if use_days and not prompt_tokens else None)
        self.unet = self._build_unet()
        self.drift_head = (
            DecoupledDriftHead(spatial_dims, self.channels[0], norm_num_groups) if drift_head == "decoupled" else None
        )

    def _build_unet(self) -> DiffusionModelUNet:
        return DiffusionModelUNet(**self.unet_arguments())

    def unet_arguments(self) -> dict:
        """The keyword arguments of MONAI's DiffusionModelUNet here (a ControlNet mirrors them)."""
        with_context = self.has_context
        class_in_unet = self.n_classes and self.prompt_tokens is None
        return dict(
            spatial_dims=self.spatial_dims,
            in_channels=self.target_channels + self.image_condition_channels,
            out_channels=self.target_channels + (1 if self.drift_kind == "shared" else 0),
            num_res_blocks=self.num_res_blocks,
            channels=self.channels,
            attention_levels=self.attention_levels,
            norm_num_groups=self.norm_num_groups,
            num_head_channels=self.num_head_channels,
            with_conditioning=with_context,
            cross_attention_dim=self.token_dim if with_context else None,
            num_class_embeds=self.n_classes + 1 if class_in_unet else None,
        )

    @property
    def has_context(self) -> bool:
        """Whether the UNet has cross-attention to a context of tokens (clinical and/or prompt tokens)."""
        return self.clinical_mode == "tokens" or self.prompt_tokens is not None

    def context(self, cond: Conditions) -> Tensor | None:
        """The cross-attention context (B, V + P, token_dim): clinical tokens, then prompt tokens; or None."""
        parts = []
        if self.clinical_tokens is not None:
            parts.append(self.clinical_tokens(cond.clinical, cond.clinical_missing))
        if self.prompt_tokens is not None:
            parts.append(self.prompt_tokens(cond.days, cond.class_label))
        return torch.cat([p.float() for p in parts], dim=1) if parts else None

    def unet_class_labels(self, cond: Conditions) -> Tensor | None:
        """The class labels for MONAI's class embedding; None when the class is a prompt token (or absent)."""
        return cond.class_label if self.n_classes and self.prompt_tokens is None else None

    @property
    def null_class(self) -> int:
        """The class index of the trained null class (= n_classes)."""
        return self.n_classes

    def drop_labels(self, cond: Conditions, generator: torch.Generator | None = None) -> Conditions:
        """Training-time dropout for classifier-free guidance.

        Each case's class label becomes the null class with probability model.class_dropout, and (separately)
        all its clinical variables become missing with probability model.clinical_dropout.
        """
        device = generator.device if generator is not None else cond.image.device
        batch = cond.batch_size
        drop_class = torch.rand(batch, generator=generator, device=device) < self.class_dropout
        drop_clinical = torch.rand(batch, generator=generator, device=device) < self.clinical_dropout
        out = cond
        if self.n_classes and cond.class_label is not None:
            out = out.null_where(drop_class.to(cond.image.device), self.null_class, drop_class=True)
        if self.clinical_variables and cond.clinical is not None:
            out = out.null_where(drop_clinical.to(cond.image.device), self.null_class, drop_class=False,
                                 drop_clinical=True)
        return out

    def forward(
        self,
        x_t: Tensor,
        t: Tensor,
        cond: Conditions,
        down_block_additional_residuals: Sequence[Tensor] | None = None,
        mid_block_additional_residual: Tensor | None = None,
    ) -> DenoiserOutput:
        """The residuals, when given, are a ControlNet's: added to the UNet's skip connections and mid block."""
        self._check_inputs(x_t, t, cond)
        context = self.context(cond)
        with ExitStack() as stack:
            if self.days_embedding is not None:
                stack.enter_context(added_to_output(self.unet.time_embed, self.days_embedding(cond.days)))
            if self.cbi_adapter is not None:
                c = self.cbi_adapter(cond.image, cond.clinical, cond.clinical_missing)
                stack.enter_context(added_to_output(self.unet.conv_in, c))
            last_up = stack.enter_context(captured_outputs([self.unet.up_blocks[-1]]))
            output = self.unet(
                torch.cat([x_t, cond.image.to(x_t.dtype)], dim=1),
                t,
                context=context,
                class_labels=self.unet_class_labels(cond),
                down_block_additional_residuals=down_block_additional_residuals,
                mid_block_additional_residual=mid_block_additional_residual,
            )
        if self.drift_head is not None:
            return DenoiserOutput(output, self.drift_head(last_up[0]))
        if self.drift_kind == "shared":
            return DenoiserOutput(output[:, : self.target_channels], output[:, self.target_channels :])
        return DenoiserOutput(output, None)

    def _check_inputs(self, x_t: Tensor, t: Tensor, cond: Conditions) -> None:
        batch, spatial = x_t.shape[0], tuple(x_t.shape[2:])
        if x_t.dim() != self.spatial_dims + 2 or x_t.shape[1] != self.target_channels:
            raise ValueError(f"x_t must be (B, {self.target_channels}, *S) with {self.spatial_dims} spatial axes; "
                             f"got {tuple(x_t.shape)}")
        if tuple(t.shape) != (batch,):
            raise ValueError(f"t must be (B,) = ({batch},) timesteps; got shape {tuple(t.shape)}")
        expected_image = (batch, self.image_condition_channels, *spatial)
        if tuple(cond.image.shape) != expected_image:
            raise ValueError(f"cond.image must be {expected_image} (pre, tumor_mask, anatomy...); "
                             f"got {tuple(cond.image.shape)}")
        if self.clinical_mode != "none":
            for name in ("clinical", "clinical_missing"):
                value = getattr(cond, name)
                if value is None or tuple(value.shape) != (batch, len(self.clinical_variables)):
                    shape = None if value is None else tuple(value.shape)
                    raise ValueError(f"cond.{name} must be (B, V) = ({batch}, {len(self.clinical_variables)}); "
                                     f"got {shape}")
        for name, needed in (("days", self.use_days), ("class_label", self.n_classes > 0)):
            value = getattr(cond, name)
            if needed and (value is None or tuple(value.shape) != (batch,)):
                shape = None if value is None else tuple(value.shape)
                raise ValueError(f"cond.{name} must be (B,) = ({batch},) for this model; got {shape}")

    def describe(self) -> dict:
        """The channel layout and conditioning, JSON-ready, for the run folder."""
        names = list(self.image_condition_names) or [f"condition_{k}" for k in range(self.image_condition_channels)]
        return {
            "spatial_dims": self.spatial_dims,
            "input_channels": [f"x_t[{k}]" for k in range(self.target_channels)] + names,
            "output_channels": {
                "prediction": self.target_channels,
                "drift": 0 if self.drift_kind == "none" else 1,
                "drift_head": self.drift_kind,
            },
            "unet": {
                "channels": list(self.channels),
                "attention_levels": list(self.attention_levels),
                "num_res_blocks": self.num_res_blocks,
                "num_head_channels": self.num_head_channels,
                "norm_num_groups": self.norm_num_groups,
                "cross_attention_dim": self.token_dim if self.has_context else None,
            },
            "prompt_tokens": [name for name, used in (("days", self.use_days), ("class_label", self.n_classes))
                              if used] if self.prompt_tokens is not None else None,
            "clinical": {
                "mode": self.clinical_mode,
                "variables": [v.name for v in self.clinical_variables],
                "groups": list(dict.fromkeys(v.group for v in self.clinical_variables)),
                "token_dim": self.token_dim if self.clinical_mode != "none" else None,
                "cbi_lambda": self.cbi_lambda if self.clinical_mode == "cbi" else None,
            },
            "class_label": {"kind": self.class_label, "n_classes": self.n_classes,
                            "null_class": self.null_class if self.n_classes else None},
            "days": None if not self.use_days else ("fourier(days/365) -> MLP -> prompt token" if self.prompt_tokens
                                                 is not None else "fourier(days/365) -> MLP -> + timestep embedding"),
            "parameters": count_parameters(self),
        }


def count_parameters(module: nn.Module) -> dict[str, int]:
    """Parameter counts: total, trainable, and per direct child module."""
    counts = {"total": sum(p.numel() for p in module.parameters()),
              "trainable": sum(p.numel() for p in module.parameters() if p.requires_grad)}
    for name, child in module.named_children():
        counts[name] = sum(p.numel() for p in child.parameters())
    return counts


CLINICAL_MODES = ("none", "tokens", "cbi")
DRIFT_HEADS = ("none", "shared", "decoupled")


def _check_arguments(*, spatial_dims, target_channels, image_condition_channels, n_classes, image_condition_names,
                     channels, attention_levels, clinical_mode, class_label, class_dropout, clinical_dropout,
                     drift_head) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims={spatial_dims}: oncodiff denoisers are 2D or 3D")
    if target_channels < 1:
        raise ValueError(f"target_channels={target_channels} must be >= 1")
    if image_condition_channels < 0:
        raise ValueError(f"image_condition_channels={image_condition_channels} must be >= 0")
    if image_condition_names is not None and len(image_condition_names) != image_condition_channels:
        raise ValueError(
            f"image_condition_names has {len(image_condition_names)} names for {image_condition_channels} channels"
        )
    if not channels or len(attention_levels) != len(channels):
        raise ValueError(f"channels={tuple(channels)} and attention_levels={tuple(attention_levels)} need one entry "
                         "per resolution level each")
    for name, value, allowed in (("clinical_mode", clinical_mode, CLINICAL_MODES), ("drift_head", drift_head, DRIFT_HEADS),
                                 ("class_label", class_label, tuple(CLASS_COUNTS))):
        if value not in allowed:
            raise ValueError(f"{name}={value!r}: must be one of {', '.join(allowed)}")
    for name, value in (("class_dropout", class_dropout), ("clinical_dropout", clinical_dropout)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}={value} must be a probability in [0, 1]")
    if class_label != "none" and n_classes < 1:
        raise ValueError(
            f"class_label={class_label!r} (model.class_label) needs n_classes >= 1 (got {n_classes}); "
            "set class_label='none' (model.class_label=none) to train without a class label"
        )


def _delegated(name: str) -> property:
    return property(lambda self: getattr(self.base, name), doc=f"The wrapped ConditionalDenoiser's ``{name}``.")


class WrappedDenoiser(nn.Module, PixelSpace):
    """Base of networks that wrap a ConditionalDenoiser (a ControlNet over it, or it in latent space).

    A subclass registers the wrapped network as ``self.denoiser`` and defines forward(x_t, t, cond) ->
    DenoiserOutput. What training, sampling and feature extraction read (channels, unet, drift_head,
    null_class, drop_labels...) is the innermost ConditionalDenoiser's, so a wrapped network drops in
    wherever a ConditionalDenoiser is used.
    """

    denoiser: nn.Module
    channels = _delegated("channels")
    drift_kind = _delegated("drift_kind")
    unet = _delegated("unet")
    drift_head = _delegated("drift_head")
    null_class = _delegated("null_class")
    n_classes = _delegated("n_classes")
    spatial_dims = _delegated("spatial_dims")
    target_channels = _delegated("target_channels")
    image_condition_channels = _delegated("image_condition_channels")
    image_condition_names = _delegated("image_condition_names")
    clinical_variables = _delegated("clinical_variables")
    clinical_mode = _delegated("clinical_mode")

    @property
    def base(self) -> ConditionalDenoiser:
        """The innermost ConditionalDenoiser."""
        inner = self.denoiser
        return inner.base if isinstance(inner, WrappedDenoiser) else inner

    def drop_labels(self, cond: Conditions, generator: torch.Generator | None = None) -> Conditions:
        return self.base.drop_labels(cond, generator=generator)
