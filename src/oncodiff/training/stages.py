"""The training stages beyond plain diffusion: autoencoders, contrastive anatomy encoders, latent diffusion, ControlNet.

Every module has the constructor ``Module(config, layout, total_steps)`` and ``objective(batch, validation)
-> (loss, parts)`` of the diffusion modules; ``self.net`` is the network to export. ``module_class(config)``
picks the module for ``training.stage`` and ``build_network(config, layout)`` rebuilds any stage's network
from an export's config.json, e.g.:

    stage             trains                          frozen                      training.init_from
    autoencoder       image (+ mask) autoencoders     -                           optional: autoencoder run
    contrastive       anatomy encoders + heads        -                           optional: contrastive run
    latent_diffusion  latent denoiser                 the autoencoders            autoencoder or latent_diffusion run
    controlnet        ControlNet (+ new modules)      what init_from loaded into  diffusion / latent_diffusion /
                                                      the denoiser; autoencoders; controlnet run (+ anatomy_from:
                                                      anatomy encoders            contrastive run, control=anatomy)

``prepare_network`` (training/init.py) applies training.init_from, training.anatomy_from and training.freeze for every stage,
including the diffusion and regression modules. An export fills the components of the new network that
have its type (ConditionalDenoiser, ControlNetBranch, LatentCodec, AnatomyEncoders): every exported tensor
must find a tensor of the same name and shape there; tensors of modules new to this stage keep their
initialisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning as L
import torch
from monai.losses import DiceLoss, PatchAdversarialLoss
from monai.metrics import SSIMMetric
from monai.networks.nets import PatchDiscriminator
from monai.transforms import Compose, Rand2DElastic, Rand3DElastic, RandAffine, RandFlip, RandRotate90
from torch import Tensor, nn

from oncodiff.config import Config
from oncodiff.diffusion import randn_per_element
from oncodiff.errors import OncodiffError
from oncodiff.models import source_in_target_space
from oncodiff.models.anatomy import nt_xent, positive_is_nearest
from oncodiff.models.autoencoder import Autoencoder, LatentDenoiser
from oncodiff.models.factory import ModelLayout
from oncodiff.training.module import (
    MODULES, DiffusionModule, TrainingModule, diffusion_module_class, tumor_weight_map,
)

# -------------------------------------------------------------------------------------------- autoencoder

# V-Net's squared soft Dice: defined for unbounded decoder outputs; an empty mask decoded empty scores 0.
SOFT_DICE = DiceLoss(squared_pred=True, smooth_nr=1.0, smooth_dr=1.0)


class AutoencoderModule(TrainingModule):
    """training.stage=autoencoder: the image autoencoder on pre and post crops (one shared latent space,
    glioblastoma LDM) and, with model.autoencoder.mask=autoencoder, the mask autoencoder on tumour masks.

    loss = L1(x_hat, x) + regulariser (VQ commitment, or kl_weight * KL) per autoencoder (+ mask_dice_weight *
    soft Dice for the mask autoencoder), plus, when
    adversarial_weight > 0, a PatchDiscriminator term on the images. Validation logs the images'
    reconstruction PSNR and SSIM (data range evaluation.data_range; glioblastoma LDM: 42 dB, 0.988).
    """

    def __init__(self, config: Config, layout: ModelLayout, total_steps: int):
        super().__init__(config, layout, total_steps)
        weight = config.model.autoencoder.adversarial_weight
        self.adversarial = _Adversarial(layout.spatial_dims, layout.crop_size, weight)

    def objective(self, batch: dict, validation: bool) -> tuple[Tensor, dict[str, Tensor]]:
        # KL autoencoders sample z ~ q(z|x) in training (element i from generators[i]); validation decodes the mean.
        generators = None if validation else self._generators(batch, validation)
        images = torch.cat([batch["pre"], batch["post"]]).float()
        reconstruction, total, parts = self._autoencoder_loss(
            "image", self.net.image, images, None if generators is None else generators * 2)
        if self.net.mask is not None:
            has_post = batch["has_post_mask"].bool()
            masks = torch.cat([batch["tumor_mask"], batch["post_mask"][has_post]]).float()
            mask_generators = None if generators is None else generators + [
                g for g, has in zip(generators, has_post.tolist()) if has]
            _, mask_total, mask_parts = self._autoencoder_loss("mask", self.net.mask, masks, mask_generators)
            total, parts = total + mask_total, {**parts, **mask_parts}
        if self.adversarial.weight > 0 and not validation:
            adversarial_total, adversarial_parts = self.adversarial(images, reconstruction)
            total, parts = total + adversarial_total, {**parts, **adversarial_parts}
        if validation:
            parts.update(reconstruction_metrics(reconstruction.float(), images, self.config.evaluation.data_range))
        parts = {name: value.detach() for name, value in parts.items()}
        parts["loss"] = total.detach()
        return total, parts

    def _autoencoder_loss(self, name: str, autoencoder: Autoencoder, x: Tensor,
                          generators: list[torch.Generator] | None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(reconstruction, L1 + weighted regulariser, parts) for x (N, 1, *S), one generator per element."""
        noise = None
        if autoencoder.kind == "kl" and generators is not None:
            shape = (x.shape[0], autoencoder.latent_channels, *autoencoder.latent_shape(x.shape[2:]))
            noise = randn_per_element(shape, generators, x.device)
        reconstruction, regulariser = autoencoder.reconstruct(x, noise)
        l1 = (reconstruction.float() - x).abs().mean()
        settings = self.config.model.autoencoder
        if autoencoder.kind == "kl":
            total, regulariser_name = l1 + settings.kl_weight * regulariser, "kl"
        else:  # MONAI's VQ loss already carries commitment_cost
            total, regulariser_name = l1 + regulariser, "vq"
        parts = {f"{name}_l1": l1, f"{name}_{regulariser_name}": regulariser}
        if name == "mask" and settings.mask_dice_weight > 0:
            parts["mask_dice_loss"] = SOFT_DICE(reconstruction.float(), x)
            total = total + settings.mask_dice_weight * parts["mask_dice_loss"]
        return reconstruction, total, parts


class _Adversarial(nn.Module):
    """A MONAI PatchDiscriminator term, trained by the same optimiser step as the autoencoder.

    Generator term: w * LSGAN(D(x_hat) -> real) through a detached copy of D's parameters (D gets no
    gradient from it); discriminator term: (LSGAN(D(x) -> real) + LSGAN(D(sg(x_hat)) -> fake)) / 2. The two
    parameter sets are disjoint, so one step updates both, as alternating GAN steps from the same state would.
    """

    def __init__(self, spatial_dims: int, crop_size: Sequence[int], weight: float):
        super().__init__()
        self.weight = weight
        self.discriminator = None
        if weight > 0:
            smallest = min(crop_size) if crop_size else 64
            layers = max(1, min(3, int(math.log2(smallest)) - 2))  # the output keeps at least one voxel
            self.discriminator = PatchDiscriminator(spatial_dims=spatial_dims, channels=32, in_channels=1,
                                                    num_layers_d=layers)
            self.loss = PatchAdversarialLoss(criterion="least_squares")

    def forward(self, images: Tensor, reconstruction: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        detached = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        fake_for_generator = torch.func.functional_call(self.discriminator, detached, (reconstruction,))[-1]
        generator = self.loss(fake_for_generator.float(), target_is_real=True, for_discriminator=False)
        real = self.loss(self.discriminator(images)[-1].float(), target_is_real=True, for_discriminator=True)
        fake = self.loss(self.discriminator(reconstruction.detach())[-1].float(), target_is_real=False,
                         for_discriminator=True)
        discriminator = 0.5 * (real + fake)
        return self.weight * generator + discriminator, {"generator": generator, "discriminator": discriminator}


def reconstruction_metrics(reconstruction: Tensor, images: Tensor, data_range: float) -> dict[str, Tensor]:
    """Batch-mean PSNR (dB) and SSIM (MONAI; window 7, or the odd size that fits the crop) of (B, 1, *S)."""
    mse = (reconstruction - images).square().flatten(1).mean(1).clamp_min(1e-12)
    psnr = 10 * torch.log10(data_range**2 / mse)
    window = min(7, *images.shape[2:])
    window -= 1 - window % 2
    ssim = SSIMMetric(spatial_dims=images.dim() - 2, data_range=data_range, win_size=window)
    with torch.autocast(images.device.type, enabled=False):
        return {"psnr": psnr.mean(), "ssim": ssim(reconstruction.float(), images.float()).mean()}


# ------------------------------------------------------------------------------------------- contrastive


class ContrastiveModule(TrainingModule):
    """training.stage=contrastive: anatomy encoders and projection heads, NT-Xent (model.anatomy_encoder.temperature).

    positives "views": two random augmentations of each case's structure k are a positive pair, the other
    cases of the batch the negatives (SimCLR), averaged over the structures. "anatomy": ImmunoDiff eq. 1,
    different structures of the same case (its vessels and its lobes) are the positive pair, averaged over
    the pairs of structures, on one augmentation shared by the structures.
    """

    def __init__(self, config: Config, layout: ModelLayout, total_steps: int):
        settings = config.model.anatomy_encoder
        if settings.positives == "anatomy" and len(layout.anatomy) < 2:
            raise OncodiffError(f"model.anatomy_encoder.positives=anatomy pairs different anatomy structures of a "
                                f"case; this cohort has {list(layout.anatomy)}: list >= 2, or use positives=views")
        super().__init__(config, layout, total_steps)
        self.views = anatomy_views(layout.spatial_dims, layout.crop_size)

    def objective(self, batch: dict, validation: bool) -> tuple[Tensor, dict[str, Tensor]]:
        generators = self._generators(batch, validation)
        anatomy = batch["anatomy"].float()
        temperature = self.config.model.anatomy_encoder.temperature
        first = self.net.project(self._augment(anatomy, generators))
        if self.config.model.anatomy_encoder.positives == "views":
            second = self.net.project(self._augment(anatomy, generators))
            pairs = [(first[:, k], second[:, k]) for k in range(first.shape[1])]
        else:
            pairs = [(first[:, k], first[:, m]) for k in range(first.shape[1]) for m in range(k + 1, first.shape[1])]
        loss = torch.stack([nt_xent(a, b, temperature) for a, b in pairs]).mean()
        nearest = torch.stack([positive_is_nearest(a.detach(), b.detach()) for a, b in pairs]).mean()
        return loss, {"nt_xent": loss.detach(), "positive_nearest": nearest, "loss": loss.detach()}

    def _augment(self, anatomy: Tensor, generators: list[torch.Generator]) -> Tensor:
        """One random view of each case (B, A, *S); case i's parameters come from generators[i]."""
        views = []
        with torch.autocast(anatomy.device.type, enabled=False):
            for case, generator in zip(anatomy, generators):
                self.views.set_random_state(seed=int(torch.randint(2**31 - 1, (1,), generator=generator)))
                view = self.views(case)
                views.append(view.as_tensor() if hasattr(view, "as_tensor") else torch.as_tensor(view))
        return torch.stack(views).to(anatomy.device)


def anatomy_views(spatial_dims: int, crop_size: Sequence[int]) -> Compose:
    """MONAI augmentations for contrastive views of (A, *S) masks: in-plane flips and 90-degree turns (square
    crops only), a small in-plane affine (+-15 degrees, +-10 % scale, +-2 voxels), and a mild elastic warp."""
    in_plane = (0, 1)
    steps = [RandFlip(prob=0.5, spatial_axis=axis) for axis in in_plane]
    if len(crop_size) >= 2 and crop_size[0] == crop_size[1]:
        steps.append(RandRotate90(prob=0.75, max_k=3, spatial_axes=in_plane))
    angle = math.pi / 12
    if spatial_dims == 2:
        steps.append(RandAffine(prob=0.8, rotate_range=(angle,), scale_range=(0.1, 0.1), translate_range=(2, 2),
                                padding_mode="zeros"))
        spacing = max(4, min(crop_size) // 4) if crop_size else 8
        steps.append(Rand2DElastic(spacing=(spacing, spacing), magnitude_range=(0.0, 1.0), prob=0.3,
                                   padding_mode="zeros"))
    else:
        steps.append(RandAffine(prob=0.8, rotate_range=(0.0, 0.0, angle), scale_range=(0.1, 0.1, 0.0),
                                translate_range=(2, 2, 0), padding_mode="zeros"))
        steps.append(Rand3DElastic(sigma_range=(2.0, 4.0), magnitude_range=(0.0, 2.0), prob=0.3, padding_mode="zeros"))
    return Compose(steps)


# ------------------------------------------------------------------------------- ControlNet, latent space


class ControlNetModule(DiffusionModule):
    """training.stage=controlnet in pixel space: DiffusionModule's objective on a ControlledDenoiser
    (build_network builds it for this stage)."""


class LatentDiffusionModule(DiffusionModule):
    """training.stage=latent_diffusion (and controlnet with model.latent set): diffusion in the frozen codec's
    latent space (glioblastoma LDM, Algorithm 1).

    The batch is encoded inside ``objective`` under no_grad: conditions -> cond.image = z_pre (+) z_tumor_mask
    (+) anatomy on the latent grid, target -> z_post (or z_post - z_pre for diffusion.target=drift). The latent
    scales are set from the first batch the module sees when the loaded autoencoders have none (LDM).
    """

    net: LatentDenoiser

    def objective(self, batch: dict, validation: bool) -> tuple[Tensor, dict[str, Tensor]]:
        net = self.net
        if not net.codec.calibrated:
            net.codec.calibrate(torch.cat([batch["pre"], batch["post"]]).float(), batch["tumor_mask"].float())
        generators = self._generators(batch, validation)
        cond = net.encode_conditions(self._conditions(batch, None if validation else generators))
        diffusion = self.config.diffusion
        x0 = net.encode_target(batch["post"].float(), cond, diffusion.target)
        tumor = (net.codec.resize(batch["tumor_mask"].float()) > 0).float()
        weight = tumor_weight_map(tumor, diffusion.tumor_loss_weight, dilation=1)
        source = source_in_target_space(net.z_pre(cond), diffusion.target, diffusion.source)
        return self.loss_fn(lambda x_t, t: net(x_t, t, cond).prediction, x0, generators, weight_map=weight,
                            source=source)


STAGE_MODULES: dict[str, type[L.LightningModule]] = {
    "autoencoder": AutoencoderModule,
    "contrastive": ContrastiveModule,
    "latent_diffusion": LatentDiffusionModule,
    "controlnet": ControlNetModule,
}


def module_class(config: Config) -> type[L.LightningModule]:
    """The LightningModule for training.stage; a ControlNet over a latent denoiser trains in latent space."""
    stage = config.training.stage
    if stage == "controlnet" and config.model.latent != "none":
        return LatentDiffusionModule
    if stage == "diffusion":
        return diffusion_module_class(config)
    return {**MODULES, **STAGE_MODULES}[stage]

