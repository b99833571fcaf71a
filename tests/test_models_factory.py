"""models/factory.py: the config mapped onto the networks' plain arguments, and the network of every stage."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch
from factory import TINY_MODEL

from oncodiff.cohort.schema import ClinicalVariable
from oncodiff.config import AnatomyEncoderConfig, AutoencoderConfig, ModelConfig, load_config
from oncodiff.models import AnatomyEncoders, Autoencoder, ConditionalDenoiser, ControlledDenoiser, LatentCodec
from oncodiff.models.autoencoder import LatentDenoiser
from oncodiff.models.factory import (
    ModelLayout, batch_conditioning, build_network, denoiser_arguments, residual_mean_model,
)
from oncodiff.models.residual import ResidualDenoiser

MODELS = Path(__file__).resolve().parents[1] / "src" / "oncodiff" / "models"
VARIABLES = (ClinicalVariable(name="age", type="numeric", group="demographics"),)
LAYOUT = ModelLayout(2, ("pre", "tumor_mask", "vessels"), VARIABLES, anatomy=("vessels",), crop_size=(16, 16))
TINY_AUTOENCODER = ["model.autoencoder.channels=[8,16]", "model.autoencoder.norm_num_groups=8",
                    "model.autoencoder.latent_channels=2", "model.autoencoder.codebook_size=16",
                    "model.anatomy_encoder.width=4", "model.anatomy_encoder.depth=1"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
        ConditionalDenoiser(2, 1, 2, VARIABLES, 2, **{"channels": (8, 16), "attention_levels": (False, True),
                                                       "norm_num_groups": 8, "num_head_channels": 8, argument: value})


@pytest.mark.parametrize("stage, extra, network", [
    ("diffusion", [], ConditionalDenoiser),
    ("regression", [], ConditionalDenoiser),
    ("diffusion", ["diffusion.residual=regression"], ResidualDenoiser),
    ("contrastive", [], AnatomyEncoders),
    ("autoencoder", ["model.latent=kl", "model.generate_mask=false"], LatentCodec),
    ("latent_diffusion", ["model.latent=kl", "model.generate_mask=false", "model.autoencoder.mask=resize",
                          "training.init_from=earlier"], LatentDenoiser),
    ("controlnet", ["model.control=anatomy", "training.init_from=earlier"], ControlledDenoiser),
])
def test_each_stage_builds_its_network(stage, extra, network):
    config = load_config("demo", [*TINY_MODEL, *TINY_AUTOENCODER, f"training.stage={stage}", *extra])
    net = build_network(config, LAYOUT)
    assert type(net) is network
    if stage == "autoencoder":
        assert net.mask is not None and net.mask.latent_channels == net.image.latent_channels == 2
    if stage == "latent_diffusion":
        assert net.codec.mask is None  # model.autoencoder.mask=resize: no mask autoencoder
    if isinstance(net, ConditionalDenoiser):
        assert net.channels == (8, 16) and net.image_condition_names == LAYOUT.image_condition_names
        assert net.n_classes == 2  # demo: model.class_label=response


def test_rebuilding_from_the_layout_gives_the_same_state_dict_keys():
    config = load_config("demo", TINY_MODEL)
    torch.manual_seed(0)
    first = build_network(config, LAYOUT).state_dict()
    again = build_network(config, ModelLayout.from_dict(LAYOUT.to_dict()))
    again.load_state_dict(first)  # strict: the export's weights fit the network its layout rebuilds
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in first.items()}


def test_the_regression_mean_has_no_class_and_no_drift_head():
    mean = residual_mean_model(ModelConfig(class_label="response", drift_head="decoupled"))
    assert (mean.class_label, mean.drift_head) == ("none", "none")
