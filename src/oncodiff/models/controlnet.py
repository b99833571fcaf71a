"""A ControlNet over a frozen denoiser (Zhang et al. 2023, "Adding conditional control").

ImmunoDiff stage 1C locks a pre-trained DDPM and trains a ControlNet whose control is the anatomy encoders'
c_a = Z_v (+) Z_l; the NAC paper feeds the pre-treatment scan through a ControlNet. MONAI's ``ControlNet`` is
a trainable copy of the UNet's encoder and mid block; its zero-initialised 1x1 convolutions return residuals
that MONAI's ``DiffusionModelUNet`` adds to its skip connections and mid block, so at initialisation the
controlled denoiser is exactly the frozen one.
"""

from __future__ import annotations

from contextlib import ExitStack

import torch
from monai.networks.nets import ControlNet
from monai.networks.utils import copy_model_state
from torch import Tensor, nn

from oncodiff.models.anatomy import AnatomyEncoders
from oncodiff.models.conditions import Conditions
from oncodiff.models.denoiser import ConditionalDenoiser, DenoiserOutput, WrappedDenoiser, count_parameters
from oncodiff.models.embeddings import DaysEmbedding
from oncodiff.models.hooks import added_to_output

CONTROL_KINDS = ("pre", "anatomy")


class ControlNetBranch(nn.Module):
    """MONAI's ControlNet built to mirror a ConditionalDenoiser's UNet, plus its own days embedding.

    Same input channels, levels, attention, cross-attention and class embedding as the UNet; the control
    (B, control_channels, *S_c) enters through MONAI's conditioning embedding, which halves it
    ``control_downsample_levels`` times (0 in pixel space; the autoencoder's levels in latent space, where
    the control stays at image resolution). The days embedding is added to the ControlNet's timestep
    embedding as in the denoiser, so the time point reaches the control branch too.

    forward(x (B, Ct + Cc, *S) the UNet's input, t (B,), control, context, class_labels, days, conv_in_addition)
      -> (down-block residuals, list of (B, C_l, *S_l), mid-block residual).
    """

    def __init__(self, denoiser: ConditionalDenoiser, control_channels: int, embedding_width: int = 16,
                 control_downsample_levels: int = 0):
        super().__init__()
        if control_channels < 1 or embedding_width < 1 or control_downsample_levels < 0:
            raise ValueError(f"ControlNetBranch: control_channels={control_channels} and embedding_width="
                             f"{embedding_width} must be >= 1, control_downsample_levels="
                             f"{control_downsample_levels} >= 0")
        arguments = denoiser.unet_arguments()
        arguments.pop("out_channels")
        self.control_channels = control_channels
        self.control_downsample_levels = control_downsample_levels
        # One embedding level per halving between the control and x_t (latent space), widths doubling.
        embedding_channels = tuple(embedding_width * 2**k for k in range(control_downsample_levels + 1))
        self.controlnet = ControlNet(**arguments, conditioning_embedding_in_channels=control_channels,
                                     conditioning_embedding_num_channels=embedding_channels)
        days = denoiser.days_embedding
        self.days_embedding = (DaysEmbedding(days.mlp[-1].out_features, days.n_frequencies, days.min_period_days)
                               if days is not None else None)

    def copy_from(self, denoiser: ConditionalDenoiser) -> list[str]:
        """Start from the denoiser's weights (the ControlNet recipe): every UNet tensor with a counterpart, and the
        days embedding. The zero convolutions and the control embedding keep their initialisation. Returns the
        names of the tensors copied."""
        _, copied, _ = copy_model_state(self.controlnet, denoiser.unet, inplace=True)
        copied = [f"controlnet.{name}" for name in copied]
        if self.days_embedding is not None:
            self.days_embedding.load_state_dict(denoiser.days_embedding.state_dict())
            copied += [f"days_embedding.{name}" for name in denoiser.days_embedding.state_dict()]
        return copied

    def forward(self, x: Tensor, t: Tensor, control: Tensor, context: Tensor | None = None,
                class_labels: Tensor | None = None, days: Tensor | None = None,
                conv_in_addition: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        with ExitStack() as stack:
            if self.days_embedding is not None:
                stack.enter_context(added_to_output(self.controlnet.time_embed, self.days_embedding(days)))
            if conv_in_addition is not None:
                stack.enter_context(added_to_output(self.controlnet.conv_in, conv_in_addition))
            return self.controlnet(x, t, controlnet_cond=control.to(x.dtype), context=context,
                                   class_labels=class_labels)


class ControlledDenoiser(WrappedDenoiser):
    """A (frozen) ConditionalDenoiser steered by a trainable ControlNet: forward(x_t, t, cond) -> DenoiserOutput.

    The control is ``cond.control`` (B, Ck, *S_c), filled from the batch by ``model.control``:
    - "pre": the pre-treatment scan (NAC paper), Ck = 1;
    - "anatomy": the anatomy masks (B, A, *S); frozen :class:`AnatomyEncoders` turn them into
      c_a = Z_1 (+) ... (+) Z_A (ImmunoDiff), which enters the ControlNet's conditioning embedding.
    The ControlNet sees what the denoiser sees (x_t (+) cond.image, the days, the class label, the clinical
    tokens, the cbi-Adapter's c added after its first convolution), so samplers and pipeline need no change.
    """

    def __init__(self, denoiser: ConditionalDenoiser, control: str, control_channels: int, embedding_width: int = 16,
                 control_downsample_levels: int = 0, anatomy_encoders: AnatomyEncoders | None = None):
        super().__init__()
        if control not in CONTROL_KINDS:
            raise ValueError(f"model.control={control!r}: a ControlNet's control is one of {', '.join(CONTROL_KINDS)}")
        if control == "anatomy":
            if anatomy_encoders is None or len(anatomy_encoders.structures) != control_channels:
                raise ValueError(f"model.control=anatomy needs AnatomyEncoders for the {control_channels} anatomy "
                                 "channel(s) of the batch")
            embedding_in = anatomy_encoders.map_channels
        else:
            embedding_in = control_channels
        self.denoiser = denoiser
        self.control = control
        self.control_channels = control_channels
        self.anatomy_encoders = anatomy_encoders if control == "anatomy" else None
        if self.anatomy_encoders is not None:  # ImmunoDiff: the encoders are pre-trained, then frozen
            self.anatomy_encoders.requires_grad_(False)
        self.controlnet = ControlNetBranch(denoiser, embedding_in, embedding_width, control_downsample_levels)

    def forward(self, x_t: Tensor, t: Tensor, cond: Conditions) -> DenoiserOutput:
        down, mid = self.residuals(x_t, t, cond)
        return self.denoiser(x_t, t, cond, down_block_additional_residuals=down, mid_block_additional_residual=mid)

    def residuals(self, x_t: Tensor, t: Tensor, cond: Conditions) -> tuple[list[Tensor], Tensor]:
        """The ControlNet's residuals for the denoiser's skip connections and mid block."""
        d = self.denoiser
        d._check_inputs(x_t, t, cond)
        cbi = d.cbi_adapter(cond.image, cond.clinical, cond.clinical_missing) if d.cbi_adapter is not None else None
        return self.controlnet(
            torch.cat([x_t, cond.image.to(x_t.dtype)], dim=1), t, self.control_image(cond, x_t),
            context=d.context(cond), class_labels=d.unet_class_labels(cond), days=cond.days, conv_in_addition=cbi,
        )

    def control_image(self, cond: Conditions, x_t: Tensor) -> Tensor:
        """What enters the ControlNet's conditioning embedding: the pre scan, or c_a from the anatomy masks."""
        factor = 2**self.controlnet.control_downsample_levels
        expected = (x_t.shape[0], self.control_channels, *(s * factor for s in x_t.shape[2:]))
        if cond.control is None or tuple(cond.control.shape) != expected:
            shape = None if cond.control is None else tuple(cond.control.shape)
            raise ValueError(f"cond.control must be {expected} (model.control={self.control}); got {shape}")
        if self.anatomy_encoders is not None:
            return self.anatomy_encoders.maps(cond.control.float())
        return cond.control

    def describe(self) -> dict:
        return {"control": self.control, "control_channels": self.control_channels,
                "control_downsample_levels": self.controlnet.control_downsample_levels,
                "anatomy": self.anatomy_encoders.describe() if self.anatomy_encoders is not None else None,
                "denoiser": self.denoiser.describe(), "parameters": count_parameters(self)}

