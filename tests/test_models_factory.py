"""models/factory.py: the network each training stage builds from a config and a layout, and the layout that
an export stores to rebuild it without the cohort."""

from __future__ import annotations

import pytest

from oncodiff.cohort.schema import ClinicalVariable
from oncodiff.config import Config
from oncodiff.models import ConditionalDenoiser, LatentCodec
from oncodiff.models.anatomy import AnatomyEncoders
from oncodiff.models.autoencoder import LatentDenoiser
from oncodiff.models.controlnet import ControlledDenoiser
from oncodiff.models.factory import ModelLayout, build_network

from factory import TINY_MODEL

SMALL = [*TINY_MODEL, "data.crop_size=[16,16]", "model.autoencoder.channels=[8,16]",
         "model.autoencoder.norm_num_groups=8", "model.autoencoder.latent_channels=2",
         "model.anatomy_encoder.width=4", "model.control_embedding_width=4"]
LAYOUT = ModelLayout(spatial_dims=2, image_condition_names=("pre", "tumor_mask", "vessels"),
                     clinical=(ClinicalVariable(name="age", type="numeric", group="demographics"),),
                     anatomy=("vessels",), crop_size=(16, 16))


def config(*overrides: str) -> Config:
    return Config().with_overrides([*SMALL, *overrides])


@pytest.mark.parametrize("overrides, expected", [
    (["training.stage=diffusion"], ConditionalDenoiser),
    (["training.stage=regression"], ConditionalDenoiser),
    (["training.stage=contrastive"], AnatomyEncoders),
    (["training.stage=autoencoder", "model.latent=kl"], LatentCodec),
    (["training.stage=controlnet", "training.init_from=runs/base", "model.control=pre"], ControlledDenoiser),
    (["training.stage=latent_diffusion", "training.init_from=runs/ae", "model.latent=kl"], LatentDenoiser),
    (["training.stage=controlnet", "training.init_from=runs/base", "model.control=pre", "model.latent=kl"], LatentDenoiser),
])
def test_each_stage_builds_its_network(overrides, expected):
    net = build_network(config(*overrides), LAYOUT)
    assert type(net) is expected
    assert sum(p.numel() for p in net.parameters()) > 0


def test_a_latent_controlnet_wraps_the_denoiser_inside_the_codec():
    net = build_network(config("training.stage=controlnet", "training.init_from=runs/base", "model.control=pre", "model.latent=kl"), LAYOUT)
    assert isinstance(net.denoiser, ControlledDenoiser)


def test_the_denoiser_sees_the_layouts_conditions_and_classes():
    net = build_network(config("training.stage=diffusion", "model.class_label=response"), LAYOUT)
    assert net.image_condition_names == LAYOUT.image_condition_names
    assert LAYOUT.n_classes(config("model.class_label=response").model) == 2
    assert LAYOUT.n_classes(config("model.class_label=none").model) == 0


def test_layout_round_trips_through_its_dict():
    raw = LAYOUT.to_dict()
    assert raw["clinical"][0]["name"] == "age" and isinstance(raw["clinical"][0], dict)
    assert ModelLayout.from_dict(raw) == LAYOUT
    assert ModelLayout.from_dict({"spatial_dims": 3, "image_condition_names": ["pre"]}).crop_size == ()
