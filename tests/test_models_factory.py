"""models/factory.py: the network each training stage builds from a config and a layout, the layout that
an export stores to rebuild it without the cohort, and the config mapped onto the networks' plain arguments."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch

from oncodiff.cohort.schema import ClinicalVariable
from oncodiff.config import AnatomyEncoderConfig, AutoencoderConfig, Config, ModelConfig, load_config
from oncodiff.models import Autoencoder, ConditionalDenoiser, LatentCodec
from oncodiff.models.anatomy import AnatomyEncoders
from oncodiff.models.autoencoder import LatentDenoiser
from oncodiff.models.controlnet import ControlledDenoiser
from oncodiff.models.factory import (
    ModelLayout, batch_conditioning, build_network, denoiser_arguments, residual_mean_model,
)

from factory import TINY_MODEL

MODELS = Path(__file__).resolve().parents[1] / "src" / "oncodiff" / "models"
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


def test_only_the_factory_reads_the_config():
    for path in sorted(MODELS.glob("*.py")):
        if path.name == "factory.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        assert "oncodiff.config" not in imported, f"{path.name} imports oncodiff.config; take plain arguments"


def _defaults(function) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_the_networks_defaults_are_the_configs_defaults():
    # A network built without the factory is the network the default config builds.
    assert {k: tuple(v) if isinstance(v, tuple) else v for k, v in denoiser_arguments(ModelConfig()).items()} == \
        {k: v for k, v in _defaults(ConditionalDenoiser.__init__).items() if k != "image_condition_names"}
    config = AutoencoderConfig()
    for name, value in _defaults(Autoencoder.__init__).items():
        if name != "in_channels":
            assert getattr(config, name) == value, name
    anatomy = AnatomyEncoderConfig()
    assert _defaults(AnatomyEncoders.__init__) == {k: getattr(anatomy, k) for k in ("width", "depth", "projection_dim")}


def test_denoiser_arguments_carry_every_field_they_name():
    model = ModelConfig(channels=(8, 16), attention_levels=(False, True), norm_num_groups=8, clinical="cbi", drift_head="shared",
                        num_head_channels=8, class_label="survival4", use_days=False, class_dropout=0.3)
    arguments = denoiser_arguments(model)
    assert arguments["clinical_mode"] == "cbi" and arguments["class_label"] == "survival4"
    assert arguments["channels"] == (8, 16) and arguments["drift_head"] == "shared" and arguments["class_dropout"] == 0.3
    assert "clinical" not in arguments and arguments["use_days"] is False
    conditioning = batch_conditioning(model.model_copy(update={"use_anatomy": False, "control": "pre"}))
    assert (conditioning.use_anatomy, conditioning.class_label, conditioning.use_days, conditioning.control) == \
        (False, "survival4", False, "pre")


@pytest.mark.parametrize("argument, value, message", [
    ("drift_head", "wide", "drift_head='wide'"),
    ("clinical_mode", "film", "clinical_mode='film'"),
    ("class_label", "grade", "class_label='grade'"),
    ("class_dropout", 1.5, "class_dropout=1.5"),
    ("attention_levels", (False,), "attention_levels"),
])
def test_a_bad_denoiser_argument_is_named(argument, value, message):
    with pytest.raises(ValueError, match=message):
        ConditionalDenoiser(2, 1, 2, LAYOUT.clinical, 2, **{"channels": (8, 16), "attention_levels": (False, True),
                                                            "norm_num_groups": 8, "num_head_channels": 8,
                                                            argument: value})


def test_the_codec_has_a_mask_autoencoder_only_when_the_config_asks():
    with_mask = build_network(config("training.stage=autoencoder", "model.latent=kl", "model.generate_mask=false"), LAYOUT)
    assert with_mask.mask is not None and with_mask.mask.latent_channels == with_mask.image.latent_channels == 2
    resized = build_network(config("training.stage=autoencoder", "model.latent=kl", "model.generate_mask=false",
                                   "model.autoencoder.mask=resize"), LAYOUT)
    assert resized.mask is None


def test_rebuilding_from_the_layout_gives_the_same_state_dict_keys():
    demo = load_config("demo", TINY_MODEL)
    torch.manual_seed(0)
    first = build_network(demo, LAYOUT).state_dict()
    again = build_network(demo, ModelLayout.from_dict(LAYOUT.to_dict()))
    again.load_state_dict(first)  # strict: the export's weights fit the network its layout rebuilds
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in first.items()}


def test_the_regression_mean_has_no_class_and_no_drift_head():
    mean = residual_mean_model(ModelConfig(class_label="response", drift_head="decoupled"))
    assert (mean.class_label, mean.drift_head) == ("none", "none")
