"""The run folder's layout (oncodiff/runs.py): the paths, and the splits read through it."""

from pathlib import Path

import pytest

from oncodiff.errors import ConfigError
from oncodiff.runs import RunFolder, Splits


def test_a_run_folder_names_its_files_from_a_str_or_a_path(tmp_path):
    for root in (tmp_path, str(tmp_path)):
        run = RunFolder(root)
        assert run.splits_json == tmp_path / "splits.json"
        assert run.weights == tmp_path / "model" / "model.safetensors"
        assert run.baseline("regression").config_json == tmp_path / "baselines" / "regression" / "config.json"


def test_splits_are_read_through_the_run_folder(tmp_path):
    Splits(("A", "B"), ("C",), ("D",), seed=3, method="fractions").to_json(tmp_path / "splits.json")
    splits = RunFolder(tmp_path).splits()
    assert (splits.train, splits.val, splits.test, splits.seed) == (("A", "B"), ("C",), ("D",), 3)
    (tmp_path / "splits.json").write_text('{"test": "D"}', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"splits\.json.*'test' must be a list"):
        RunFolder(Path(tmp_path)).splits()
