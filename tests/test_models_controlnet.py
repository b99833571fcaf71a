"""ControlNet over a frozen denoiser: mirroring, zero-initialised equivalence, gradients, control inputs."""

from __future__ import annotations

import pytest
import torch

from oncodiff.cohort.schema import ClinicalVariable
from oncodiff.models import ConditionalDenoiser, Conditions
from oncodiff.models.anatomy import AnatomyEncoders
from oncodiff.models.controlnet import ControlledDenoiser

VARIABLES = (
    ClinicalVariable(name="age", type="numeric", group="demographics"),
    ClinicalVariable(name="nlr", type="numeric", group="blood"),
)
SHAPES = {2: (16, 16), 3: (16, 16, 8)}
ZERO_INITIALISED = ("controlnet.controlnet_down_blocks.", "controlnet.controlnet_mid_block.",
                    "controlnet.controlnet_cond_embedding.")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_denoiser(spatial_dims: int, clinical: str = "tokens", seed: int = 0) -> ConditionalDenoiser:
    torch.manual_seed(seed)
    denoiser = ConditionalDenoiser(spatial_dims, 1, 3, VARIABLES, 2, channels=(8, 16), attention_levels=(False, True),
                                   num_head_channels=8, norm_num_groups=8, token_dim=8, clinical_mode=clinical)
    with torch.no_grad():  # MONAI zero-initialises output convolutions; perturb so every path shows
        for p in denoiser.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    return denoiser


def controlled(spatial_dims: int, control: str = "pre", clinical: str = "tokens") -> ControlledDenoiser:
    denoiser = tiny_denoiser(spatial_dims, clinical)
    encoders = None
    if control == "anatomy":
        encoders = AnatomyEncoders(spatial_dims, ("vessels", "lobes"), width=4, depth=2)
    net = ControlledDenoiser(denoiser, control, 1 if control == "pre" else 2, embedding_width=4,
                             anatomy_encoders=encoders)
    net.controlnet.copy_from(denoiser)
    return net


def inputs(spatial_dims: int, control_channels: int = 1, batch: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    shape = SHAPES[spatial_dims]
    cond = Conditions(
        image=torch.randn(batch, 3, *shape, generator=generator),
        clinical=torch.randn(batch, 2, generator=generator),
        clinical_missing=torch.tensor([[False, True], [False, False]]),
        days=torch.tensor([42.0, 180.0]),
        class_label=torch.tensor([1, 2]),
        control=torch.rand(batch, control_channels, *shape, generator=generator),
    )
    return torch.randn(batch, 1, *shape, generator=generator), torch.tensor([5, 600]), cond


def perturb_zero_convolutions(net: ControlledDenoiser) -> None:
    with torch.no_grad():
        for name, p in net.controlnet.named_parameters():
            if name.startswith(ZERO_INITIALISED):
                p.add_(0.1 * torch.randn(p.shape))


def test_controlnet_copies_every_unet_tensor_it_mirrors():
    denoiser = tiny_denoiser(2)
    net = ControlledDenoiser(denoiser, "pre", 1, embedding_width=4)
    copied = set(net.controlnet.copy_from(denoiser))
    names = {name for name in net.controlnet.state_dict()}
    assert {n for n in names - copied} == {n for n in names if n.startswith(ZERO_INITIALISED)}
    unet = denoiser.unet.state_dict()
    for name in copied - {n for n in copied if n.startswith("days_embedding.")}:
        torch.testing.assert_close(net.controlnet.state_dict()[name], unet[name.removeprefix("controlnet.")])
    for name, value in net.controlnet.state_dict().items():
        if name.startswith(("controlnet.controlnet_down_blocks.", "controlnet.controlnet_mid_block.")):
            assert not value.any()


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("control, clinical", [("pre", "tokens"), ("anatomy", "cbi")])
def test_at_initialisation_the_controlled_denoiser_is_the_denoiser(spatial_dims, control, clinical):
    net = controlled(spatial_dims, control, clinical)
    x_t, t, cond = inputs(spatial_dims, 1 if control == "pre" else 2)
    with torch.no_grad():
        assert torch.equal(net(x_t, t, cond).prediction, net.denoiser(x_t, t, cond).prediction)
        perturb_zero_convolutions(net)
        assert not torch.allclose(net(x_t, t, cond).prediction, net.denoiser(x_t, t, cond).prediction)


def test_control_days_and_class_label_reach_the_controlnet():
    net = controlled(2)
    perturb_zero_convolutions(net)
    x_t, t, cond = inputs(2)
    with torch.no_grad():
        reference = net.residuals(x_t, t, cond)[1]
        for changed in (dict(control=cond.control.flip(-1)), dict(days=cond.days + 200.0),
                        dict(class_label=torch.tensor([0, 0]))):
            other = Conditions(**{**cond.__dict__, **changed})
            difference = (net.residuals(x_t, t, other)[1] - reference).abs().amax(dim=(1, 2, 3))
            assert (difference > 1e-6).all(), changed


def test_only_the_controlnet_trains_when_the_denoiser_is_frozen():
    net = controlled(2, "anatomy")
    net.denoiser.requires_grad_(False)
    x_t, t, cond = inputs(2, 2)
    net(x_t, t, cond).prediction.square().mean().backward()
    assert all(p.grad is None for p in net.denoiser.parameters())
    assert all(p.grad is None and not p.requires_grad for p in net.anatomy_encoders.parameters())
    grads = {name: p.grad for name, p in net.controlnet.named_parameters()}
    assert all(g is not None for g in grads.values())
    # At zero initialisation only the zero convolutions get a gradient: the residuals' inputs are unchanged.
    assert any(g.abs().sum() > 0 for name, g in grads.items() if name.startswith(ZERO_INITIALISED))


def test_control_at_image_resolution_over_a_latent_grid():
    torch.manual_seed(0)
    denoiser = tiny_denoiser(3)
    net = ControlledDenoiser(denoiser, "pre", 1, embedding_width=4, control_downsample_levels=1)
    x_t, t, cond = inputs(3)
    latent_x = x_t[..., ::2, ::2, ::2]
    latent = Conditions(**{**cond.__dict__, "image": cond.image[..., ::2, ::2, ::2]})  # control stays full size
    assert net(latent_x, t, latent).prediction.shape == latent_x.shape
    with pytest.raises(ValueError, match="cond.control must be"):
        net(x_t, t, cond)


def test_wrong_control_is_a_clear_error():
    with pytest.raises(ValueError, match="model.control"):
        ControlledDenoiser(tiny_denoiser(2), "mask", 1)
    with pytest.raises(ValueError, match="AnatomyEncoders"):
        ControlledDenoiser(tiny_denoiser(2), "anatomy", 2)
    net = controlled(2)
    x_t, t, cond = inputs(2, control_channels=2)
    with pytest.raises(ValueError, match=r"cond.control must be \(2, 1, 16, 16\)"):
        net(x_t, t, cond)
