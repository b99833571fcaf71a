import json

import pytest
from typer.testing import CliRunner

from oncodiff.cli import app
from oncodiff.config import Config, load_config, preset_names
from oncodiff.errors import ConfigError


def test_every_preset_loads():
    for name in preset_names():
        assert load_config(name).preset == name


def test_override_sets_nested_value_and_freezes():
    config = load_config("demo", ["training.max_minutes=1.5", "model.channels=[16, 32, 32]"])
    assert config.training.max_minutes == 1.5
    assert config.model.channels == (16, 32, 32)
    with pytest.raises(ValueError, match="frozen"):  # pydantic's ValidationError
        config.training.lr = 1.0


@pytest.mark.parametrize(
    "override, expected",
    [
        ("traning.lr=1", "did you mean training"),
        ("training.lrr=1", "did you mean lr"),
        ("diffusion.prediction=epsilon", "diffusion.prediction"),
        ("diffusion.noise_sampling=edm", "diffusion.noise_sampling"),
        ("diffusion.lognormal_std=0", "diffusion.lognormal_std"),
        ("training.lr", "expected section.key=value"),
        ("model.channels=[16, 32]", "attention_levels"),
    ],
)
def test_bad_override_is_a_clear_error(override, expected):
    with pytest.raises(ConfigError, match="(?i)" + expected):
        load_config("demo", [override])


def test_unknown_key_in_yaml_is_an_error(tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("training:\n  max_minuts: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="training.max_minuts: unknown key; did you mean max_minutes"):
        load_config(str(preset))


def test_json_round_trip(tmp_path):
    config = load_config("demo", ["sampling.steps=7"])
    config.to_json(tmp_path / "config.json")
    assert Config.from_json(tmp_path / "config.json") == config
    assert json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))["sampling"]["steps"] == 7


def test_cli_lists_every_verb():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for verb in ("synth", "validate", "preprocess", "train", "predict", "evaluate", "report", "demo"):
        assert verb in result.output
