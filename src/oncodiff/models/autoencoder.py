"""Autoencoders for latent diffusion (glioblastoma LDM) and the latent denoiser built on them.

- :class:`Autoencoder`: MONAI's ``VQVAE`` or ``AutoencoderKL`` behind one interface, 2D or 3D.
- :class:`LatentCodec`: the glioblastoma paper's pair (sec. 2, "Compression in Latent Space"): one image
  autoencoder shared by the pre and post scans, and a separate one for the tumour mask whose latent has the
  image latent's shape (or the mask area-averaged onto the latent grid), plus LDM's latent scale factors.
- :class:`LatentDenoiser`: a denoiser in the codec's latent space, behind the pixel denoiser's interface.

Latent grid: an autoencoder with L = len(channels) levels halves the input L - 1 times (f = 2^(L-1)), for
both kinds, so the crop size must be divisible by f on every axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import VQVAE, AutoencoderKL
from torch import Tensor, nn

from oncodiff.models.conditions import Conditions
from oncodiff.models.denoiser import DenoiserOutput, WrappedDenoiser, count_parameters

AUTOENCODER_KINDS = ("vqvae", "kl")


class Autoencoder(nn.Module):
    """One image autoencoder: ``encode`` (B, C, *S) -> (B, Cz, *S/f), ``decode`` back.

    vqvae: MONAI ``VQVAE`` with an EMA codebook (van den Oord et al. 2017). ``encode`` returns the quantised
      codes, ``decode`` re-quantises its input before decoding, so a diffused latent lands on the codebook
      (MONAI's ``encode_stage_2_inputs`` / ``decode_stage_2_outputs``). The nearest-code search runs in float32
      even under autocast: bf16 distances pick wrong codes.
    kl: MONAI ``AutoencoderKL`` (LDM). ``encode`` returns the posterior mean.
    """

    def __init__(self, spatial_dims: int, kind: str, in_channels: int = 1, *, channels: Sequence[int] = (32, 64, 64),
                 latent_channels: int = 3, num_res_blocks: int = 1, norm_num_groups: int = 16, codebook_size: int = 256,
                 commitment_cost: float = 0.25, checkpointing: bool = False):
        """The keywords are model.autoencoder's fields of the same names (models/factory.py maps them);
        ``codebook_size`` and ``commitment_cost`` are the VQ-VAE's, ``norm_num_groups`` AutoencoderKL's."""
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims={spatial_dims}: autoencoders are 2D or 3D")
        if kind not in AUTOENCODER_KINDS:
            raise ValueError(f"kind={kind!r} (model.latent): an autoencoder is one of {', '.join(AUTOENCODER_KINDS)}")
        for name, value in (("in_channels", in_channels), ("latent_channels", latent_channels),
                            ("num_res_blocks", num_res_blocks)):
            if value < 1:
                raise ValueError(f"{name}={value} must be >= 1")
        if not channels:
            raise ValueError("channels=(): an autoencoder needs one width per resolution level")
        self.spatial_dims = spatial_dims
        self.kind = kind
        self.in_channels = in_channels
        self.latent_channels = latent_channels
        self.downsample_levels = len(channels) - 1
        if kind == "vqvae":
            self.network = _build_vqvae(spatial_dims, in_channels, tuple(channels), latent_channels, num_res_blocks,
                                        codebook_size, commitment_cost, checkpointing)
        else:
            self.network = _build_kl(spatial_dims, in_channels, tuple(channels), latent_channels, num_res_blocks,
                                     norm_num_groups, checkpointing)

    @property
    def factor(self) -> int:
        """f: how many input voxels one latent voxel spans per axis."""
        return 2**self.downsample_levels

    def latent_shape(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """The latent grid of an input of spatial shape ``spatial``; ValueError if an axis is not divisible by f."""
        return latent_grid(spatial, self.factor, self.spatial_dims)

    def encode(self, x: Tensor) -> Tensor:
        """(B, C, *S) -> z (B, Cz, *S/f): quantised codes (vqvae) or the posterior mean (kl)."""
        self._check(x)
        if self.kind == "vqvae":
            return self._quantize(self.network.encode(x))[0]
        return self.network.encode(x)[0]

    def decode(self, z: Tensor, quantize: bool = True) -> Tensor:
        """z (B, Cz, *S/f) -> (B, C, *S); ``quantize=False`` feeds a VQ-VAE's decoder z as it is, not its
        nearest codes (a latent drift decoded as a residual must not snap back to the pre scan's codes)."""
        if self.kind == "vqvae" and quantize:
            z = self._quantize(z)[0]
        return self.network.decode(z)

    def reconstruct(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(reconstruction (B, C, *S), regulariser scalar) for training.

        vqvae: the regulariser is MONAI's commitment loss, commitment_cost * |z_e - sg(z_q)|^2 (the codebook
          itself follows the encoder by EMA in training mode).
        kl: z = mu + sigma * noise (noise (B, Cz, *S/f) ~ N(0, I); None decodes the mean), and the regulariser
          is KL(q(z|x) || N(0, I)) summed over latent elements and averaged over the batch (LDM; MONAI's tutorials).
        """
        self._check(x)
        if self.kind == "vqvae":
            quantized, commitment = self._quantize(self.network.encode(x))
            return self.network.decode(quantized), commitment
        mu, sigma = self.network.encode(x)
        z = mu if noise is None else mu + sigma * noise.to(mu.dtype)
        kl = 0.5 * (mu.float().square() + sigma.float().square() - 2 * torch.log(sigma.float()) - 1)
        return self.network.decode(z), kl.flatten(1).sum(1).mean()

    def _quantize(self, z: Tensor) -> tuple[Tensor, Tensor]:
        with torch.autocast(z.device.type, enabled=False):
            quantized, commitment = self.network.quantize(z.float())
        return quantized, commitment

    def _check(self, x: Tensor) -> None:
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"autoencoder input must be (B, {self.in_channels}, *S) with {self.spatial_dims} "
                             f"spatial axes; got {tuple(x.shape)}")
        self.latent_shape(x.shape[2:])


def latent_grid(spatial: Sequence[int], factor: int, spatial_dims: int) -> tuple[int, ...]:
    """``spatial`` divided by ``factor`` on every axis; ValueError naming the axis that does not divide."""
    spatial = tuple(int(s) for s in spatial)
    if len(spatial) != spatial_dims:
        raise ValueError(f"spatial shape {spatial} has {len(spatial)} axes; expected {spatial_dims}")
    bad = [s for s in spatial if s % factor]
    if bad:
        raise ValueError(f"crop size {list(spatial)} is not divisible by the autoencoder's downsampling factor "
                         f"{factor} (axis sizes {bad}); choose data.crop_size as multiples of {factor} or use fewer "
                         "model.autoencoder.channels levels")
    return tuple(s // factor for s in spatial)


def _build_vqvae(spatial_dims: int, in_channels: int, channels: tuple[int, ...], latent_channels: int,
                 num_res_blocks: int, codebook_size: int, commitment_cost: float, checkpointing: bool) -> VQVAE:
    levels = len(channels)
    # Level 0 keeps the resolution, every further level halves it (stride 2, kernel 4), as AutoencoderKL does.
    down = ((1, 3, 1, 1),) + ((2, 4, 1, 1),) * (levels - 1)
    up = ((2, 4, 1, 1, 0),) * (levels - 1) + ((1, 3, 1, 1, 0),)  # the decoder walks the levels in reverse
    return VQVAE(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=in_channels,
        channels=channels,
        num_res_layers=num_res_blocks,
        num_res_channels=channels,
        downsample_parameters=down,
        upsample_parameters=up,
        num_embeddings=codebook_size,
        embedding_dim=latent_channels,
        commitment_cost=commitment_cost,
        use_checkpointing=checkpointing,
    )


def _build_kl(spatial_dims: int, in_channels: int, channels: tuple[int, ...], latent_channels: int, num_res_blocks: int,
              norm_num_groups: int, checkpointing: bool) -> AutoencoderKL:
    # No attention blocks: full-resolution attention is what makes 3D autoencoders run out of memory.
    return AutoencoderKL(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=in_channels,
        num_res_blocks=num_res_blocks,
        channels=channels,
        attention_levels=(False,) * len(channels),
        latent_channels=latent_channels,
        norm_num_groups=norm_num_groups,
        with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False,
        use_checkpoint=checkpointing,
    )


class LatentCodec(nn.Module):
    """The image autoencoder (shared by pre and post scans) and the tumour-mask encoding, with latent scales.

    image: :class:`Autoencoder` on scans (B, 1, *S) -> (B, Cz, *S/f).
    mask: a second :class:`Autoencoder` on tumour masks with the same latent shape (glioblastoma LDM), or None
      when model.autoencoder.mask = "resize" (the mask is then area-averaged onto the latent grid, 1 channel).
    image_scale, mask_scale: LDM's scale factors 1/std(z), so latents enter the diffusion with unit variance.
      They are 0 until :meth:`calibrate` sets them (latent diffusion does on its first batch); they are saved
      with the weights, so an export carries them.
    """

    def __init__(self, image: Autoencoder, mask: Autoencoder | None = None):
        """``image``: the scans' autoencoder; ``mask``: the tumour masks', with the same latent grid, or None."""
        super().__init__()
        if mask is not None and (mask.spatial_dims, mask.factor) != (image.spatial_dims, image.factor):
            raise ValueError(f"mask: its autoencoder ({mask.spatial_dims}D, factor {mask.factor}) must have the image "
                             f"autoencoder's latent grid ({image.spatial_dims}D, factor {image.factor})")
        self.image = image
        self.mask = mask
        self.spatial_dims = image.spatial_dims
        self.register_buffer("image_scale", torch.zeros(()))
        self.register_buffer("mask_scale", torch.zeros(()))

    @property
    def factor(self) -> int:
        return self.image.factor

    @property
    def downsample_levels(self) -> int:
        return self.image.downsample_levels

    @property
    def latent_channels(self) -> int:
        return self.image.latent_channels

    @property
    def mask_latent_channels(self) -> int:
        return self.mask.latent_channels if self.mask is not None else 1

    @property
    def calibrated(self) -> bool:
        return bool(self.image_scale > 0) and (self.mask is None or bool(self.mask_scale > 0))

    def latent_shape(self, spatial: Sequence[int]) -> tuple[int, ...]:
        return self.image.latent_shape(spatial)

    @torch.no_grad()
    def calibrate(self, images: Tensor, masks: Tensor) -> None:
        """Set the scales to 1/std of the latents of ``images`` and ``masks`` (B, 1, *S) (LDM, sec. 4.3.2),
        encoded in float32 whatever the autocast, so the scale does not depend on the training precision."""
        with torch.autocast(images.device.type, enabled=False):
            self.image_scale.fill_(_inverse_std(self.image.encode(images.float())))
            if self.mask is not None:
                self.mask_scale.fill_(_inverse_std(self.mask.encode(masks.float())))

    def encode_image(self, x: Tensor) -> Tensor:
        """(B, 1, *S) -> scaled latent (B, Cz, *S/f)."""
        self._require_calibrated()
        return self.image.encode(x) * self.image_scale

    def decode_image(self, z: Tensor, quantize: bool = True) -> Tensor:
        """scaled latent (B, Cz, *S/f) -> (B, 1, *S) (``quantize``: :meth:`LatentCodec.decode`)."""
        self._require_calibrated()
        return self.image.decode(z / self.image_scale, quantize)

    def encode_mask(self, mask: Tensor) -> Tensor:
        """(B, 1, *S) -> (B, Cm, *S/f): the scaled mask latent, or the mask's area average per latent voxel."""
        if self.mask is None:
            return self.resize(mask)
        self._require_calibrated()
        return self.mask.encode(mask) * self.mask_scale

    def resize(self, x: Tensor) -> Tensor:
        """(B, C, *S) -> (B, C, *S/f) by area averaging (masks become occupancy fractions)."""
        return F.interpolate(x.float(), size=self.latent_shape(x.shape[2:]), mode="area").to(x.dtype)

    def _require_calibrated(self) -> None:
        if not self.calibrated:
            raise RuntimeError("LatentCodec: the latent scales are not set; call calibrate() on a batch first")

    def describe(self) -> dict:
        return {"kind": self.image.kind, "factor": self.factor, "latent_channels": self.latent_channels,
                "mask": "autoencoder" if self.mask is not None else "resize",
                "image_scale": float(self.image_scale), "mask_scale": float(self.mask_scale),
                "parameters": count_parameters(self)}


def _inverse_std(z: Tensor) -> float:
    std = float(z.float().std())
    return 1.0 / std if std > 1e-6 else 1.0  # a constant latent (e.g. all-empty masks) is left unscaled


class LatentDenoiser(WrappedDenoiser):
    """A denoiser in the latent space of a frozen :class:`LatentCodec`: forward(z_t, t, latent cond) -> DenoiserOutput.

    The inner denoiser (a ConditionalDenoiser, or a ControlledDenoiser over one) has target_channels = Cz and
    image condition channels z_pre (Cz) + z_tumor_mask (Cm) + anatomy masks area-averaged onto the latent grid:
    glioblastoma LDM, Algorithm 1: eps_theta(z_pre (+) z_gtv (+) z_t^post, c, t). cond.control stays at image
    resolution; a ControlNet's control embedding downsamples it by f.

    Use: ``latent = net.encode_conditions(image_space_cond)`` once per batch, sample z0 of shape
    (B, Cz, *net.latent_shape(S)) with ``net(z_t, t, latent)``, then ``net.decode_post(z0, latent, target)``.
    Target "post" diffuses z_post; "drift" diffuses z_post - z_pre (the drift in latent space), decoded as a
    residual on the pre scan (:meth:`decode_target`).
    The codec stays frozen and in eval mode (its VQ codebook must not move).
    """

    def __init__(self, codec: LatentCodec, denoiser: nn.Module, image_condition_names: Sequence[str]):
        super().__init__()
        names = tuple(image_condition_names)
        if names[:2] != ("pre", "tumor_mask"):
            raise ValueError(f"LatentDenoiser encodes image conditions (pre, tumor_mask, anatomy...); got {names}")
        self.codec = codec
        self.denoiser = denoiser
        self.pixel_condition_names = names
        expected = latent_condition_names(codec, names)
        if self.base.image_condition_channels != len(expected) or self.base.target_channels != codec.latent_channels:
            raise ValueError(f"the latent denoiser must take {codec.latent_channels} target and {len(expected)} "
                             f"condition channels ({', '.join(expected)}); got {self.base.target_channels} and "
                             f"{self.base.image_condition_channels}")
        self.codec.requires_grad_(False)
        self.codec.eval()

    def train(self, mode: bool = True) -> LatentDenoiser:
        super().train(mode)
        self.codec.eval()
        return self

    def latent_shape(self, spatial: Sequence[int]) -> tuple[int, ...]:
        return self.codec.latent_shape(spatial)

    def forward(self, x_t: Tensor, t: Tensor, cond: Conditions) -> DenoiserOutput:
        return self.denoiser(x_t, t, cond)

    @torch.no_grad()
    def encode_conditions(self, cond: Conditions) -> Conditions:
        """Image-space conditions (cond.image (B, 2 + A, *S): pre, tumor_mask, anatomy) -> latent conditions."""
        image = cond.image
        if image.shape[1] != len(self.pixel_condition_names):
            raise ValueError(f"cond.image must have the channels {self.pixel_condition_names}; got {image.shape[1]}")
        parts = [self.codec.encode_image(image[:, :1]), self.codec.encode_mask(image[:, 1:2])]
        if image.shape[1] > 2:
            parts.append(self.codec.resize(image[:, 2:]))
        return Conditions(image=torch.cat(parts, dim=1).float(), clinical=cond.clinical,
                          clinical_missing=cond.clinical_missing, days=cond.days, class_label=cond.class_label,
                          control=cond.control)

    @torch.no_grad()
    def encode_target(self, post: Tensor, latent_cond: Conditions, target: str) -> Tensor:
        """The latent diffusion target (B, Cz, *S/f): z_post, or z_post - z_pre for target "drift"."""
        z_post = self.codec.encode_image(post).float()
        return z_post - self.z_pre(latent_cond) if _check_target(target) == "drift" else z_post

    @torch.no_grad()
    def decode_post(self, z0: Tensor, latent_cond: Conditions, target: str) -> Tensor:
        """The follow-up scan (B, 1, *S) implied by a generated latent target z0 (B, Cz, *S/f)."""
        z_post = z0 + self.z_pre(latent_cond) if _check_target(target) == "drift" else z0
        return self.codec.decode_image(z_post).float()

    def z_pre(self, latent_cond: Conditions) -> Tensor:
        """The scaled latent of the pre scan, (B, Cz, *S/f), from encoded conditions."""
        return latent_cond.image[:, : self.codec.latent_channels].float()

    def sampling_pre(self, rows: Conditions) -> Tensor:
        """The pre scan in the sampling space: its latent :meth:`z_pre`."""
        return self.z_pre(rows)

    @torch.no_grad()
    def decode_target(self, generated: Tensor, rows: Conditions, target: str) -> Tensor:
        """A generated latent target -> the image-space target (B, 1, *S): the decoded post, or for "drift" the
        decoder residual D(z_pre + dz) - D(z_pre), so a zero latent drift is exactly post = pre (the codec's
        reconstruction error of the pre scan cancels). A VQ decoder takes z_pre + dz unquantised (z_pre already
        is a code): quantising it would snap a drift smaller than the codebook's spacing back to z_pre's codes,
        and every prediction would be post = pre."""
        if _check_target(target) == "post":
            return self.decode_post(generated, rows, target)
        z_pre = self.z_pre(rows)
        return (self.codec.decode_image(generated + z_pre, quantize=False)
                - self.codec.decode_image(z_pre, quantize=False)).float()

    def describe(self) -> dict:
        return {"latent": self.codec.describe(), "denoiser": self.denoiser.describe(),
                "pixel_condition_names": list(self.pixel_condition_names), "parameters": count_parameters(self)}


def latent_condition_names(codec: LatentCodec, image_condition_names: Sequence[str]) -> tuple[str, ...]:
    """Channel names of a LatentDenoiser's image condition: z_pre[k], z_tumor_mask[k] (or tumor_mask@latent),
    then each anatomy structure as name@latent."""
    z_pre = tuple(f"z_pre[{k}]" for k in range(codec.latent_channels))
    if codec.mask is not None:
        z_mask = tuple(f"z_tumor_mask[{k}]" for k in range(codec.mask_latent_channels))
    else:
        z_mask = ("tumor_mask@latent",)
    return z_pre + z_mask + tuple(f"{name}@latent" for name in tuple(image_condition_names)[2:])


def _check_target(target: str) -> str:
    if target not in ("post", "drift"):
        raise ValueError(f"diffusion.target must be 'post' or 'drift', got {target!r}")
    return target
