"""CohortDataModule: batches exactly as CONTRACTS section 1, patient-grouped splits, paired augmentation."""

import json

import pandas as pd
import pytest
import torch
from factory import write_cohort

from oncodiff.config import Config, DataConfig, TrainingConfig
from oncodiff.data import CohortDataModule
from oncodiff.errors import ConfigError

FLOAT_IMAGE_KEYS = ("pre", "post", "tumor_mask", "post_mask")


def make_config(dims=2, batch_size=4, **data):
    crop = (16, 16) if dims == 2 else (12, 12, 6)
    return Config(data=DataConfig(dims=dims, crop_size=crop, **data), training=TrainingConfig(batch_size=batch_size))


def module(root, tmp_path, dims=2, splits_path=None, **data):
    dm = CohortDataModule(root, make_config(dims, **data), cache_dir=tmp_path / "cache", splits_path=splits_path)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("dims", [2, 3])
def test_a_batch_has_every_key_with_the_contract_shape_and_dtype(request, tmp_path, dims):
    dm = module(request.getfixturevalue(f"tiny_cohort_{dims}d"), tmp_path, dims)
    batch = next(iter(dm.train_dataloader()))
    b, s = 4, dm.spatial_shape
    expected = {
        "pre": ((b, 1, *s), torch.float32), "post": ((b, 1, *s), torch.float32),
        "tumor_mask": ((b, 1, *s), torch.float32), "post_mask": ((b, 1, *s), torch.float32),
        "has_post_mask": ((b,), torch.bool), "anatomy": ((b, dm.n_anatomy, *s), torch.float32),
        "clinical": ((b, 3), torch.float32), "clinical_missing": ((b, 3), torch.bool),
        "days": ((b,), torch.float32), "response": ((b,), torch.int64), "survival_time": ((b,), torch.float32),
        "survival_event": ((b,), torch.float32), "survival_class2": ((b,), torch.int64),
        "survival_class4": ((b,), torch.int64), "index": ((b,), torch.int64),
    }
    assert set(batch) == set(expected) | {"patient_id", "lesion_id", "timepoint"}
    for key, (shape, dtype) in expected.items():
        assert tuple(batch[key].shape) == shape and batch[key].dtype == dtype, key
    for key in ("patient_id", "lesion_id", "timepoint"):
        assert isinstance(batch[key], list) and len(batch[key]) == b and isinstance(batch[key][0], str)
    for key in ("tumor_mask", "post_mask"):
        assert set(batch[key].unique().tolist()) <= {0.0, 1.0}
    assert dm.spatial_dims == dims and dm.n_anatomy == 1 and dm.anatomy_names == ("organ",)
    assert (batch["days"] == 42).all() and batch["has_post_mask"].all()
    for i, index in enumerate(batch["index"].tolist()):  # index finds the sample's record
        assert dm.records[index].patient_id == batch["patient_id"][i]
        assert batch["response"][i].item() == (1 if int(batch["patient_id"][i][1:]) % 2 else 0)


def test_no_patient_is_on_two_sides(tmp_path):
    root = write_cohort(tmp_path / "c", n_patients=10, followups=(("week6", 42), ("week12", 84)))
    for data in ({}, {"folds": 3, "fold": 1, "val_fraction": 0.1}):
        dm = module(root, tmp_path, **data)
        seen = {name: {dm.records[i].patient_id for i in dm.dataset(name).indices} for name in ("train", "val", "test")}
        assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])
        assert seen["train"] | seen["val"] | seen["test"] == {f"P{i:03d}" for i in range(1, 11)}
        assert sum(len(dm.dataset(n)) for n in ("train", "val", "test")) == 20  # 2 time points per patient


def test_clinical_statistics_come_from_the_training_split(tiny_cohort_2d, tmp_path):
    dm = module(tiny_cohort_2d, tmp_path)
    patients = pd.read_csv(tiny_cohort_2d / "patients.csv", dtype={"patient_id": str}).set_index("patient_id")
    ages = patients.loc[list(dm.splits.train), "age"]
    assert dm.clinical_encoder.mean["age"] == pytest.approx(ages.mean())
    assert dm.clinical_encoder.std["age"] == pytest.approx(ages.std(ddof=0))
    assert dm.clinical_encoder.mean["age"] != pytest.approx(patients["age"].mean())
    # P002 has no nlr: flagged missing, value 0, wherever its samples land.
    index = next(i for i, r in enumerate(dm.records) if r.patient_id == "P002")
    split = dm.splits.split_of("P002")
    item = dm.dataset(split)[list(dm.dataset(split).indices).index(index)]
    assert item["clinical_missing"].tolist() == [False, False, True] and item["clinical"][2] == 0.0
    median = patients.loc[list(dm.splits.train), "os_days"].median()
    assert dm.survival_classes.median == pytest.approx(median)


def _dihedral(x, k, flip):
    """In-plane turn by k * 90 degrees, then an optional flip of axis 0 (x: (C, H, W, ...))."""
    y = torch.rot90(x, k, dims=(1, 2))
    return torch.flip(y, dims=(1,)) if flip else y


@pytest.mark.parametrize("dims", [2, 3])
def test_augmentation_moves_every_image_and_mask_alike(request, tmp_path, dims):
    dm = module(request.getfixturevalue(f"tiny_cohort_{dims}d"), tmp_path, dims)
    dataset = dm.dataset("train")
    used = set()
    for seed in range(12):
        raw, moved = dataset[0], dataset[(0, seed)]
        ops = [(k, f) for k in range(4) for f in (False, True) if torch.equal(_dihedral(raw["pre"], k, f), moved["pre"])]
        assert len(ops) == 1, "pre must be an in-plane flip/rotation of itself"
        used.add(ops[0])
        for key in ("post", "tumor_mask", "post_mask", "anatomy"):
            assert torch.equal(_dihedral(raw[key], *ops[0]), moved[key]), key
        assert torch.equal(dataset[(0, seed)]["pre"], moved["pre"])  # same seed, same result
        assert moved["pre"].is_contiguous() and type(moved["pre"]) is torch.Tensor
    assert len(used) >= 4
    assert dm.dataset("val").transform is None and dm.dataset("test").transform is None


def test_augmentation_can_be_switched_off(tiny_cohort_2d, tmp_path):
    dm = module(tiny_cohort_2d, tmp_path, flips=False, rotations=False)
    assert dm.dataset("train").transform is None
    assert torch.equal(dm.dataset("train")[(0, 7)]["pre"], dm.dataset("train")[0]["pre"])


def test_intensity_augmentation_curves_the_training_scans_only(tiny_cohort_2d, tmp_path):
    from oncodiff.data.transforms import PairedIntensity

    plain = module(tiny_cohort_2d, tmp_path, flips=False, rotations=False)
    dm = module(tiny_cohort_2d, tmp_path, flips=False, rotations=False, intensity_augmentation=True)
    assert isinstance(dm.dataset("train").transform.transforms[-1], PairedIntensity)
    assert dm.dataset("val").transform is None and dm.dataset("test").transform is None
    raw, moved = plain.dataset("train")[(0, 5)], dm.dataset("train")[(0, 5)]
    assert not torch.allclose(raw["pre"], moved["pre"]) and not torch.allclose(raw["post"], moved["post"])
    for key in ("tumor_mask", "post_mask", "anatomy"):
        assert torch.equal(raw[key], moved[key]), key


def test_shuffling_is_seeded_and_changes_every_epoch(tiny_cohort_2d, tmp_path):
    def epochs(dm):
        loader = dm.train_dataloader()
        return [[i for batch in loader for i in batch["index"].tolist()] for _ in range(3)]

    first, second = epochs(module(tiny_cohort_2d, tmp_path)), epochs(module(tiny_cohort_2d, tmp_path))
    assert first == second
    assert sorted(first[0]) == sorted(first[1]) and len({tuple(e) for e in first}) > 1


def test_splits_file_is_written_then_read_with_user_edits(tiny_cohort_2d, tmp_path):
    path = tmp_path / "run" / "splits.json"
    dm = module(tiny_cohort_2d, tmp_path, splits_path=path)
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw["train"] == list(dm.splits.train) and raw["method"] == "stratified fractions"
    moved = raw["train"].pop()
    raw["test"].append(moved)
    path.write_text(json.dumps(raw), encoding="utf-8")
    again = module(tiny_cohort_2d, tmp_path, splits_path=path)
    assert again.splits.split_of(moved) == "test"
    assert {again.records[i].patient_id for i in again.dataset("test").indices} == set(raw["test"])
    raw["val"].append("NOBODY")
    path.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(ConfigError, match="NOBODY are not in"):
        module(tiny_cohort_2d, tmp_path, splits_path=path)


def test_timepoints_select_follow_ups(tmp_path):
    root = write_cohort(tmp_path / "c", n_patients=6, followups=(("week6", 42), ("week12", 84)))
    dm = module(root, tmp_path, timepoints=("week12",))
    for name in ("train", "val", "test"):
        assert {dm.records[i].timepoint for i in dm.dataset(name).indices} <= {"week12"}
    assert sum(len(dm.dataset(n)) for n in ("train", "val", "test")) == 6
    batch = next(iter(dm.train_dataloader()))
    assert (batch["days"] == 84).all()
    with pytest.raises(ConfigError, match="week6, week12"):
        module(root, tmp_path, timepoints=("month3",))


def test_lesions_are_samples_and_stay_with_their_patient(tmp_path):
    root = write_cohort(tmp_path / "c", n_patients=6)
    scans = pd.read_csv(root / "scans.csv")
    second = scans.assign(lesion_id="L2")
    pd.concat([scans, second]).to_csv(root / "scans.csv", index=False)
    dm = module(root, tmp_path)
    assert len(dm.preprocessed) == 12
    assert sorted({(r.patient_id, r.lesion_id) for r in dm.records}) == sorted(
        (f"P00{i}", lesion) for i in range(1, 7) for lesion in ("L1", "L2"))
    for name in ("train", "val", "test"):
        lesions = [dm.records[i].lesion_id for i in dm.dataset(name).indices]
        assert lesions.count("L1") == lesions.count("L2")
