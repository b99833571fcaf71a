"""Autoencoders (MONAI VQVAE / AutoencoderKL behind one interface), the latent codec and the latent denoiser."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from oncodiff.cohort.schema import ClinicalVariable
from oncodiff.models import ConditionalDenoiser, Conditions
from oncodiff.models.autoencoder import Autoencoder, LatentCodec, LatentDenoiser, latent_condition_names

SHAPES = {2: (16, 16), 3: (16, 16, 8)}
VARIABLES = (ClinicalVariable(name="age", type="numeric", group="demographics"),)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = dict(channels=(8, 16, 16), latent_channels=3, norm_num_groups=8, codebook_size=32)


def tiny_codec(spatial_dims: int, kind: str, mask: bool = True) -> LatentCodec:
    return LatentCodec(Autoencoder(spatial_dims, kind, **TINY), Autoencoder(spatial_dims, kind, **TINY) if mask else None)


def blobs(batch: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Smooth images in [0, 1]: a bright ball at a random place on a dim background."""
    generator = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij"))
    out = []
    for _ in range(batch):
        center = torch.rand(len(shape), generator=generator) * torch.tensor(shape) * 0.5 + torch.tensor(shape) * 0.25
        distance = ((grid - center.view(-1, *([1] * len(shape)))) ** 2).sum(0).sqrt()
        out.append(0.2 + 0.6 * torch.sigmoid(3.0 - distance))
    return torch.stack(out)[:, None]


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("kind", ["vqvae", "kl"])
def test_round_trip_shapes(spatial_dims, kind):
    torch.manual_seed(0)
    autoencoder = Autoencoder(spatial_dims, kind, **TINY)
    x = blobs(2, SHAPES[spatial_dims])
    z = autoencoder.encode(x)
    assert autoencoder.factor == 4
    assert tuple(z.shape) == (2, 3, *autoencoder.latent_shape(SHAPES[spatial_dims]))
    assert autoencoder.latent_shape(SHAPES[spatial_dims]) == tuple(s // 4 for s in SHAPES[spatial_dims])
    assert autoencoder.decode(z).shape == x.shape
    reconstruction, regulariser = autoencoder.reconstruct(x, torch.randn_like(z) if kind == "kl" else None)
    assert reconstruction.shape == x.shape and regulariser.dim() == 0 and torch.isfinite(regulariser)


def test_indivisible_crop_is_a_clear_error():
    autoencoder = Autoencoder(2, "vqvae", **TINY)
    with pytest.raises(ValueError, match="not divisible by the autoencoder's downsampling factor 4"):
        autoencoder.latent_shape((16, 18))
    with pytest.raises(ValueError, match="model.latent"):
        Autoencoder(2, "gan", **TINY)


@pytest.mark.parametrize("kind", ["vqvae", "kl"])
def test_a_few_steps_reduce_the_reconstruction_loss(kind):
    torch.manual_seed(0)
    autoencoder = Autoencoder(2, kind, **TINY)
    x = blobs(4, (16, 16), seed=1)
    optimizer = torch.optim.Adam([p for p in autoencoder.parameters() if p.requires_grad], lr=3e-3)

    def l1() -> float:
        with torch.no_grad():
            return float((autoencoder.decode(autoencoder.encode(x)) - x).abs().mean())

    before = l1()
    for _ in range(30):
        reconstruction, regulariser = autoencoder.reconstruct(x, None)
        loss = (reconstruction - x).abs().mean() + 1e-6 * regulariser
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert l1() < 0.6 * before


def test_vq_decode_snaps_latents_onto_the_codebook():
    torch.manual_seed(0)
    autoencoder = Autoencoder(2, "vqvae", **TINY).eval()
    z = autoencoder.encode(blobs(2, (16, 16)))
    codebook = autoencoder.network.quantizer.quantizer.embedding.weight
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    assert torch.cdist(flat, codebook).min(dim=1).values.max() < 1e-5  # every latent voxel is a code
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z_bf16 = autoencoder.encode(blobs(2, (16, 16)))
    flat = z_bf16.float().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    assert torch.cdist(flat, codebook).min(dim=1).values.max() < 1e-5  # float32 search under autocast too
    assert torch.equal(autoencoder.decode(z + 1e-4), autoencoder.decode(z))


def test_kl_regulariser_is_the_gaussian_kl_divergence():
    torch.manual_seed(0)
    autoencoder = Autoencoder(2, "kl", **TINY)
    x = blobs(3, (16, 16))
    _, regulariser = autoencoder.reconstruct(x, None)
    mu, sigma = autoencoder.network.encode(x)
    reference = kl_divergence(Normal(mu, sigma), Normal(0.0, 1.0)).flatten(1).sum(1).mean()
    torch.testing.assert_close(regulariser, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_mask_latent_has_the_image_latent_shape(spatial_dims):
    torch.manual_seed(0)
    shape = SHAPES[spatial_dims]
    images, masks = blobs(2, shape), (blobs(2, shape, seed=3) > 0.5).float()
    for mask_mode, mask_channels in (("autoencoder", 3), ("resize", 1)):
        codec = tiny_codec(spatial_dims, "vqvae", mask=mask_mode == "autoencoder")
        codec.calibrate(images, masks)
        z_image, z_mask = codec.encode_image(images), codec.encode_mask(masks)
        assert z_mask.shape[2:] == z_image.shape[2:] and z_mask.shape[1] == mask_channels == codec.mask_latent_channels


def test_calibration_scales_latents_to_unit_variance():
    torch.manual_seed(0)
    codec = tiny_codec(2, "kl")
    images, masks = blobs(4, (16, 16)), (blobs(4, (16, 16), seed=2) > 0.5).float()
    with pytest.raises(RuntimeError, match="calibrate"):
        codec.encode_image(images)
    codec.calibrate(images, masks)
    assert codec.calibrated
    with torch.no_grad():
        assert abs(float(codec.encode_image(images).std()) - 1.0) < 1e-4
        assert abs(float(codec.encode_mask(masks).std()) - 1.0) < 1e-4
    z = codec.encode_image(images)
    torch.testing.assert_close(codec.decode_image(z), codec.image.decode(codec.image.encode(images)))


def latent_denoiser(spatial_dims: int, kind: str = "kl", anatomy: tuple[str, ...] = ("organ",)) -> LatentDenoiser:
    torch.manual_seed(0)
    codec = tiny_codec(spatial_dims, kind)
    names = ("pre", "tumor_mask", *anatomy)
    latent_names = latent_condition_names(codec, names)
    denoiser = ConditionalDenoiser(spatial_dims, codec.latent_channels, len(latent_names), VARIABLES, 0, latent_names,
                                   channels=(8, 16), attention_levels=(False, True), num_head_channels=8,
                                   norm_num_groups=8, token_dim=8, class_label="none")
    return LatentDenoiser(codec, denoiser, names)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_latent_denoiser_encodes_conditions_and_decodes_post(spatial_dims):
    net = latent_denoiser(spatial_dims)
    shape = SHAPES[spatial_dims]
    pre, post, mask = blobs(2, shape), blobs(2, shape, seed=5), (blobs(2, shape, seed=6) > 0.5).float()
    net.codec.calibrate(torch.cat([pre, post]), mask)
    cond = Conditions(image=torch.cat([pre, mask, mask], dim=1), clinical=torch.zeros(2, 1),
                      clinical_missing=torch.ones(2, 1, dtype=torch.bool), days=torch.tensor([30.0, 90.0]))
    latent = net.encode_conditions(cond)
    grid = net.latent_shape(shape)
    assert tuple(latent.image.shape) == (2, 3 + 3 + 1, *grid)
    assert torch.equal(latent.days, cond.days)
    z_post = net.encode_target(post, latent, "post")
    z_drift = net.encode_target(post, latent, "drift")
    torch.testing.assert_close(z_drift, z_post - latent.image[:, :3])
    torch.testing.assert_close(net.decode_post(z_drift, latent, "drift"), net.decode_post(z_post, latent, "post"),
                               atol=1e-5, rtol=1e-5)
    out = net(torch.randn(2, 3, *grid), torch.tensor([1, 40]), latent)
    assert tuple(out.prediction.shape) == (2, 3, *grid) and out.drift is None


def test_latent_denoiser_keeps_its_codec_frozen_and_in_eval_mode():
    net = latent_denoiser(2, kind="vqvae")
    assert not net.codec.training
    net.train()
    assert not net.codec.training and net.base.training
    assert not any(p.requires_grad for p in net.codec.parameters())
    assert all(p.requires_grad for p in net.denoiser.parameters())
    assert net.channels == net.base.channels and net.unet is net.base.unet and net.target_channels == 3
    with pytest.raises(ValueError, match="latent denoiser must take"):
        LatentDenoiser(net.codec, net.denoiser, ("pre", "tumor_mask"))


def test_vq_latent_drift_decodes_as_a_continuous_residual_not_snapped_to_the_pre_codes():
    """A latent drift far smaller than the codebook's spacing must still move the decoded image (quantising
    z_pre + dz would return z_pre's codes, so every prediction would be post = pre), and zero drift is exactly 0."""
    torch.manual_seed(0)
    net = latent_denoiser(2, kind="vqvae").eval()
    shape = SHAPES[2]
    pre, mask = blobs(2, shape), (blobs(2, shape, seed=6) > 0.5).float()
    net.codec.calibrate(pre, mask)
    cond = Conditions(image=torch.cat([pre, mask, mask], dim=1), clinical=torch.zeros(2, 1),
                      clinical_missing=torch.ones(2, 1, dtype=torch.bool), days=torch.tensor([30.0, 90.0]))
    latent = net.encode_conditions(cond)
    z_pre = latent.image[:, :net.codec.latent_channels]
    assert torch.equal(net.codec.decode_image(z_pre + 1e-3), net.codec.decode_image(z_pre))  # the snap, quantised
    zero = net.decode_target(torch.zeros_like(z_pre), latent, "drift")
    assert torch.equal(zero, torch.zeros_like(zero))
    small = net.decode_target(torch.full_like(z_pre, 1e-2), latent, "drift")
    assert small.abs().max() > 1e-5
    twice = net.decode_target(torch.full_like(z_pre, 2e-2), latent, "drift")
    assert twice.abs().mean() > small.abs().mean()  # the residual grows with the drift
