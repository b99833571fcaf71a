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


@pytest.mark.parametrize("override, expected", [
    ("training.lr=abc", r"training\.lr: Input should be a valid number"),  # a bad type names the key
    ("training.max_steps=-3", r"training\.max_steps: Input should be greater than or equal to 1"),
    ("data.dims=4", r"data\.dims: Input should be 2 or 3"),
    ("model.clinical=film", r"model\.clinical: Input should be 'none', 'tokens' or 'cbi'"),
    ("training.devices=[0,1", r"--set 'training\.devices=\[0,1': the value is not valid YAML"),
    ("=3", "the config has no key ''"),
])
def test_a_bad_value_names_the_key_and_what_it_should_be(override, expected):
    with pytest.raises(ConfigError, match=expected) as raised:
        load_config("demo", [override])
    assert "--set" in str(raised.value)  # says where the bad value came from


def test_an_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown preset 'nope'") as raised:
        load_config("nope")
    assert all(name in str(raised.value) for name in preset_names()) and "a .yaml path" in str(raised.value)


@pytest.mark.parametrize("text, expected", [
    ("training: [1, 2\n", "not valid YAML"),
    ("- 1\n- 2\n", "a preset is a mapping of sections .*got list"),
    ("training: 3\n", "training: Input should be a valid dictionary"),
    ("training:\n  max_steps: lots\n", r"training\.max_steps: Input should be a valid integer"),
])
def test_a_bad_preset_file_names_the_file_and_the_problem(tmp_path, text, expected):
    preset = tmp_path / "mine.yaml"
    preset.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=expected) as raised:
        load_config(str(preset))
    assert str(preset) in str(raised.value)


def test_a_missing_preset_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"))


def test_the_cli_prints_a_config_error_without_a_traceback(tmp_path):
    result = CliRunner().invoke(app, ["preprocess", str(tmp_path), "--preset", "nope"])
    assert result.exit_code != 0
    assert "unknown preset 'nope'" in result.output and "Traceback" not in result.output
