"""Splits by patient: seeded fractions and stratified k-fold, and a readable, editable splits.json."""

import json

import pytest

from oncodiff.config import DataConfig
from oncodiff.data import make_splits
from oncodiff.runs import Splits
from oncodiff.errors import ConfigError

# 20 patients, 1 to 3 samples each (lesions, slices, time points); responders are every third.
PATIENTS = [f"P{i:02d}" for i in range(20)]
SAMPLE_PATIENTS = [p for i, p in enumerate(PATIENTS) for _ in range(1 + i % 3)]
SAMPLE_LABELS = [int(int(p[1:]) % 3 == 0) for p in SAMPLE_PATIENTS]


def assert_partition(splits, patients):
    sides = [set(splits.train), set(splits.val), set(splits.test)]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert set().union(*sides) == set(patients)


def test_fraction_splits_are_seeded_and_disjoint():
    config = DataConfig(val_fraction=0.2, test_fraction=0.1)
    splits = make_splits(SAMPLE_PATIENTS, SAMPLE_LABELS, config, seed=3)
    assert_partition(splits, PATIENTS)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (14, 4, 2)
    assert make_splits(SAMPLE_PATIENTS, SAMPLE_LABELS, config, seed=3) == splits
    assert make_splits(SAMPLE_PATIENTS, SAMPLE_LABELS, config, seed=4) != splits
    assert splits.method == "stratified fractions" and splits.split_of(splits.test[0]) == "test"


def test_fraction_splits_keep_the_label_mix_in_every_split():
    # 28 patients, 7 responders (the lung cohort's 26 %): an unstratified draw of 3 validation patients has no
    # responder about 40 % of the time, and then early stopping and the best checkpoint see non-responders only.
    patients = [f"Q{i:02d}" for i in range(28)]
    labels = [int(i % 4 == 0) for i in range(28)]
    config = DataConfig(val_fraction=0.1, test_fraction=0.25)
    for seed in range(20):
        splits = make_splits(patients, labels, config, seed)
        assert_partition(splits, patients)
        responders = {p for p, label in zip(patients, labels) if label}
        assert (len(splits.test), len(splits.val)) == (7, 3)
        assert len(responders & set(splits.test)) == 2 and len(responders & set(splits.val)) == 1
    # unknown labels (-1) are a stratum of their own; a patient's known label wins over an unknown sample
    splits = make_splits(["A", "A", "B", "C", "D", "E", "F"], [-1, 1, -1, -1, 0, 0, 1],
                         DataConfig(val_fraction=0.0, test_fraction=0.5), seed=0)
    assert len(splits.test) == 3 and len({"B", "C"} & set(splits.test)) == 1
    assert len({"A", "F"} & set(splits.test)) == 1 and len({"D", "E"} & set(splits.test)) == 1


def test_unstratified_fraction_splits_are_the_earlier_single_shuffle():
    import numpy as np
    config = DataConfig(val_fraction=0.2, test_fraction=0.1, stratify=False)
    splits = make_splits(SAMPLE_PATIENTS, SAMPLE_LABELS, config, seed=3)
    order = [PATIENTS[i] for i in np.random.default_rng(3).permutation(len(PATIENTS))]
    assert splits.method == "fractions"
    assert set(splits.test) == set(order[:2]) and set(splits.val) == set(order[2:6])


def test_kfold_test_folds_partition_the_patients_and_keep_the_label_mix():
    config = dict(val_fraction=0.1, test_fraction=0.0, folds=4)
    test_sets = []
    for fold in range(4):
        splits = make_splits(SAMPLE_PATIENTS, SAMPLE_LABELS, DataConfig(**config, fold=fold), seed=0)
        assert_partition(splits, PATIENTS)
        assert splits.method == "kfold" and splits.fold == fold and len(splits.val) == 2
        responders = [p for p in splits.test if int(p[1:]) % 3 == 0]
        assert 0 < len(responders) < len(splits.test)  # stratified: both labels in every test fold
        test_sets.append(set(splits.test))
    assert set().union(*test_sets) == set(PATIENTS) and sum(map(len, test_sets)) == len(PATIENTS)


def test_too_few_patients_is_a_clear_error():
    with pytest.raises(ValueError, match="too few"):
        make_splits(["A", "B"], [0, 1], DataConfig(), seed=0)
    with pytest.raises(ValueError, match="data.folds=5 needs at least 5 patients"):
        make_splits(["A", "B", "C"], [0, 1, 0], DataConfig(folds=5), seed=0)


def test_splits_json_round_trip_and_errors(tmp_path):
    splits = make_splits(SAMPLE_PATIENTS, SAMPLE_LABELS, DataConfig(), seed=1)
    path = splits.to_json(tmp_path / "run" / "splits.json")
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert set(raw) >= {"train", "val", "test", "seed", "method"} and raw["seed"] == 1
    assert Splits.from_json(path) == splits
    raw["test"].append(raw["train"][0])
    path.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(ConfigError, match="is in both train and test"):
        Splits.from_json(path)
    path.write_text('{"train": "P01"}', encoding="utf-8")
    with pytest.raises(ConfigError, match="'train' must be a list of patient ids"):
        Splits.from_json(path)
    path.write_text("not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot read splits"):
        Splits.from_json(path)
