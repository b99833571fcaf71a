"""data.inputs=prior end to end on a cohort with an interim scan: the class prior reads the early change measured
on the interim (class_prior.interim_features), train and predict run, and data.inputs=baseline is format 1's
behaviour (no interim features)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from factory import write_cohort, write_cohort_v2

from oncodiff.config import load_config
from oncodiff.pipeline import predict
from oncodiff.pipeline.cases import load_cases
from oncodiff.outcomes.class_prior import ClassPrior, interim_features
from oncodiff.pipeline.export import load_export
from oncodiff.pipeline.prior_inputs import case_prior_features, has_prior_scans
from oncodiff.training import train

TINY = ["model.channels=[8,16]", "model.attention_levels=[false,true]", "model.norm_num_groups=8",
        "model.num_head_channels=8", "model.token_dim=16", "training.max_steps=2", "training.samples_per_epoch=8",
        "training.batch_size=4", "training.max_minutes=null", "evaluation.segmenter_steps=10", "sampling.samples=2",
        "sampling.steps=2", "data.crop_size=[16,16]"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_interim_features_measure_the_early_change():
    tumour = np.zeros((2, 1, 8, 8), np.uint8)
    tumour[:, 0, 2:6, 2:6] = 1  # 16 voxels
    pre = np.where(tumour > 0, 0.8, 0.2).astype(np.float32)
    priors = np.zeros((2, 2, 8, 8), np.float32)
    priors[0, 0] = pre[0, 0] - 0.3 * tumour[0, 0]  # the tumour darkened by 0.3 at day 21
    masks = np.zeros((2, 2, 8, 8), np.uint8)
    masks[0, 0, 3:5, 3:5] = 1  # 4 voxels
    days = np.array([[21.0, np.nan], [np.nan, np.nan]], np.float32)
    features = interim_features(pre, tumour, priors, masks, days)
    change = np.log(5 / 17)
    np.testing.assert_allclose(features[0], [1.0, change, change * 30 / 21, -0.3], rtol=1e-6)
    np.testing.assert_array_equal(features[1], 0.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("interim")
    cohort = write_cohort(root / "cohort", n_patients=8, followups=(("week3", 21), ("week6", 42)))
    config = load_config("demo", TINY)
    run = train(cohort, config, root / "run", cache_dir=root / "cache")
    return {"root": root, "cohort": cohort, "run": run}


def test_class_prior_reads_the_interim(trained):
    model = load_export(trained["run"] / "model")
    cases = load_cases(model, trained["cohort"], ["P001", "P002"], cache_dir=trained["root"] / "cache")
    assert has_prior_scans(cases)
    with_interim = case_prior_features(model, cases, interim=True)
    without = case_prior_features(model, cases, interim=False)
    assert with_interim.shape[1] == without.shape[1] + 4
    week6 = [i for i, c in enumerate(cases.cases) if c.timepoint == "week6"]
    week3 = [i for i, c in enumerate(cases.cases) if c.timepoint == "week3"]
    assert (with_interim[week6, -4] == 1).all() and (with_interim[week3, -4:] == 0).all()
    # write_cohort's tumour shrinks to 0.6x its radius per follow-up in responders (P001), grows 1.3x otherwise
    assert with_interim[week6[0], -3] < 0 < with_interim[week6[1], -3]
    prior = ClassPrior.from_dict(json.loads((trained["run"] / "model" / "config.json").read_text())["class_prior"])
    assert prior.interim == (prior.inputs != "base rate")


def test_predict_runs_with_priors(trained):
    out = predict(trained["run"], trained["cohort"], trained["root"] / "predictions", patients=["P001"],
                  cache_dir=trained["root"] / "cache")
    summary = json.loads((out / "summary.json").read_text())
    assert {c["timepoint"] for c in summary["cases"]} == {"week3", "week6"}


def test_baseline_inputs_have_no_interim_features(trained):
    config = load_config("demo", [*TINY, "data.inputs=baseline"])
    run = train(trained["cohort"], config, trained["root"] / "run-baseline", cache_dir=trained["root"] / "cache")
    model = load_export(run / "model")
    cases = load_cases(model, trained["cohort"], ["P001"], cache_dir=trained["root"] / "cache")
    assert not has_prior_scans(cases)
    prior = json.loads((run / "model" / "config.json").read_text())["class_prior"]
    assert prior is None or not prior.get("interim")


def test_prior_channels_carry_scans_presence_and_days():
    import torch

    from oncodiff.models.conditions import BatchConditioning, conditions_from_batch, image_condition_names

    batch = {"pre": torch.zeros(2, 1, 4, 4), "tumor_mask": torch.zeros(2, 1, 4, 4), "anatomy": torch.zeros(2, 0, 4, 4),
             "clinical": torch.zeros(2, 1), "clinical_missing": torch.zeros(2, 1, dtype=torch.bool),
             "days": torch.tensor([42.0, 42.0]), "priors": torch.ones(2, 2, 4, 4),
             "prior_days": torch.tensor([[21.0, float("nan")], [float("nan"), float("nan")]]),
             "sequences": torch.full((2, 1, 4, 4), 0.5), "sequence_present": torch.tensor([[1.0], [0.0]])}
    config = BatchConditioning(class_label="none")
    names = image_condition_names((), True, 2, ("t2",))
    assert names[2:] == ("prior1", "prior1_present", "prior1_days", "prior2", "prior2_present", "prior2_days",
                         "seq:t2", "seq:t2_present")
    image = conditions_from_batch(batch, config, names).image
    assert image.shape == (2, 10, 4, 4)
    means = image.mean(dim=(2, 3))
    np.testing.assert_allclose(means[0, 2:].numpy(), [1, 1, 0.5, 0, 0, 0, 0.5, 1])
    np.testing.assert_allclose(means[1, 2:].numpy(), 0.0)  # nothing present: zeros, never an imputed image
    assert conditions_from_batch(batch, config).image.shape == (2, 2, 4, 4)  # a layout without priors


def test_prior_channels_carry_each_prior_scans_own_sequences():
    import torch

    from oncodiff.models.conditions import BatchConditioning, conditions_from_batch, image_condition_names, prior_layout

    own = torch.stack([torch.full((4, 4), v) for v in (0.1, 0.2, 0.3, 0.4)])  # slot-major: slot1 t2, flair; slot2 ...
    batch = {"pre": torch.zeros(2, 1, 4, 4), "tumor_mask": torch.zeros(2, 1, 4, 4), "anatomy": torch.zeros(2, 0, 4, 4),
             "clinical": torch.zeros(2, 1), "clinical_missing": torch.zeros(2, 1, dtype=torch.bool),
             "days": torch.tensor([42.0, 42.0]), "priors": torch.ones(2, 2, 4, 4),
             "prior_days": torch.tensor([[21.0, float("nan")], [21.0, float("nan")]]),
             "sequences": torch.full((2, 2, 4, 4), 0.5), "sequence_present": torch.ones(2, 2),
             "prior_sequences": own.expand(2, 4, 4, 4), "prior_sequence_present": torch.tensor([[1.0, 1, 0, 0],
                                                                                                 [1.0, 0, 0, 0]])}
    names = image_condition_names((), True, 2, ("t2", "flair"), prior_sequences=True)
    assert names[-8:] == ("prior1:seq:t2", "prior1:seq:t2_present", "prior1:seq:flair", "prior1:seq:flair_present",
                          "prior2:seq:t2", "prior2:seq:t2_present", "prior2:seq:flair", "prior2:seq:flair_present")
    assert prior_layout(names) == (2, 2, True)
    assert prior_layout(image_condition_names((), True, 2, ("t2", "flair"))) == (2, 2, False)  # an older model
    image = conditions_from_batch(batch, BatchConditioning(class_label="none"), names).image
    assert image.shape == (2, 2 + 6 + 4 + 8, 4, 4)
    means = image.mean(dim=(2, 3))[:, -8:].numpy()
    np.testing.assert_allclose(means[0], [0.1, 1, 0.2, 1, 0, 0, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(means[1], [0.1, 1, 0, 0, 0, 0, 0, 0], rtol=1e-6)  # a missing sequence: zeros


def test_a_new_day_reads_the_last_scans_own_sequences(tmp_path):
    cohort = write_cohort_v2(tmp_path / "cohort", n_patients=8, sequences=("t1c", "t2"),
                             followups=(("week3", 21), ("week6", 42)))
    run = train(cohort, load_config("demo", TINY), tmp_path / "run", cache_dir=tmp_path / "cache")
    model = load_export(run / "model")
    assert model.layout.image_condition_names[-4:] == ("prior1:seq:t2", "prior1:seq:t2_present", "prior2:seq:t2",
                                                       "prior2:seq:t2_present")
    everything = load_cases(model, cohort, ["P001"], cache_dir=tmp_path / "cache")
    week6 = next(i for i, c in enumerate(everything.cases) if c.timepoint == "week6")
    at60 = load_cases(model, cohort, ["P001"], days=60, cache_dir=tmp_path / "cache")
    assert [t for t, _ in at60.cases[0].priors] == ["week3", "week6"]
    np.testing.assert_array_equal(at60.batch["prior_sequences"][0, 0], everything.batch["prior_sequences"][week6, 0])
    np.testing.assert_array_equal(at60.batch["prior_sequence_present"][0], [1, 1])
    assert not np.array_equal(at60.batch["prior_sequences"][0, 1], at60.batch["prior_sequences"][0, 0])
    out = predict(run, cohort, tmp_path / "predictions", patients=["P001"], days=60, cache_dir=tmp_path / "cache")
    assert json.loads((out / "summary.json").read_text())["cases"][0]["timepoint"] == "day60"


def test_the_denoiser_gets_prior_channels_only_where_there_are_priors(trained, tmp_path):
    model = load_export(trained["run"] / "model")
    assert model.layout.image_condition_names[-6:] == ("prior1", "prior1_present", "prior1_days", "prior2",
                                                       "prior2_present", "prior2_days")
    single = write_cohort(tmp_path / "single", n_patients=6)  # pre and one follow-up: the format-1 model
    run = train(single, load_config("demo", TINY), tmp_path / "run", cache_dir=tmp_path / "cache")
    assert load_export(run / "model").layout.image_condition_names == ("pre", "tumor_mask", "organ")


def _cases_at(trained, days, patients=("P001", "P002")):
    model = load_export(trained["run"] / "model")
    return load_cases(model, trained["cohort"], list(patients), days=days, cache_dir=trained["root"] / "cache")


def test_a_new_day_is_predicted_from_every_earlier_scan(trained):
    everything = _cases_at(trained, None)
    week = {(c.patient_id, c.timepoint): i for i, c in enumerate(everything.cases)}
    for days, expected in ((30, ("week3",)), (60, ("week3", "week6")), (10, ())):
        cases = _cases_at(trained, days)
        assert [c.patient_id for c in cases.cases] == ["P001", "P002"]  # one case per lesion, not per follow-up
        assert len(cases.follow_ups()) == 2
        for i, case in enumerate(cases.cases):
            assert case.timepoint == f"day{days}" and case.days == days and not case.has_truth
            assert [t for t, _ in case.priors] == list(expected)
            filled = cases.batch["prior_days"][i].numpy()
            np.testing.assert_array_equal(filled[:len(expected)], [{"week3": 21, "week6": 42}[t] for t in expected])
            assert np.isnan(filled[len(expected):]).all()
            for slot, timepoint in enumerate(expected):  # the slot holds that scan, registered and cut as a target
                source = everything.batch["post"][week[case.patient_id, timepoint], 0]
                np.testing.assert_array_equal(cases.batch["priors"][i, slot].numpy(), source.numpy())
            assert not cases.batch["priors"][i, len(expected):].any()
            np.testing.assert_array_equal(cases.batch["pre"][i].numpy(),
                                          everything.batch["pre"][week[case.patient_id, "week3"]].numpy())


def test_a_day_with_a_scan_is_that_follow_up_with_its_priors(trained):
    cases = _cases_at(trained, 42)
    assert [(c.timepoint, c.has_truth, c.priors) for c in cases.cases] == [("week6", True, (("week3", 21.0),))] * 2
    assert (cases.batch["prior_days"][:, 0] == 21).all()


@pytest.mark.parametrize("days", [0, -7])
def test_a_day_not_after_the_baseline_is_refused(trained, days):
    from oncodiff.errors import OncodiffError

    with pytest.raises(OncodiffError, match=f"--days {days}: the day to predict must be after the baseline"):
        _cases_at(trained, days)


def test_predict_a_new_day_names_the_scans_it_used(trained):
    out = predict(trained["run"], trained["cohort"], trained["root"] / "predictions-day60", patients=["P001"],
                  days=60, cache_dir=trained["root"] / "cache")
    summary = json.loads((out / "summary.json").read_text())
    assert [(c["timepoint"], c["priors"]) for c in summary["cases"]] == [
        ("day60", [{"timepoint": "week3", "days": 21.0}, {"timepoint": "week6", "days": 42.0}])]


def test_a_model_reads_a_cohorts_sequences_by_name(tmp_path):
    cohort = write_cohort_v2(tmp_path / "cohort", n_patients=8, sequences=("t1c", "t2", "flair"),
                             followups=(("week3", 21), ("week6", 42)))
    run = train(cohort, load_config("demo", TINY), tmp_path / "run", cache_dir=tmp_path / "cache")
    model = load_export(run / "model")
    same = load_cases(model, cohort, ["P001"], cache_dir=tmp_path / "cache")
    flair_first = write_cohort_v2(tmp_path / "other", n_patients=2, sequences=("t1c", "flair"),
                                  followups=(("week3", 21), ("week6", 42)))  # no t2; flair is its first other one
    other = load_cases(model, flair_first, ["P001"], cache_dir=tmp_path / "cache")
    assert other.batch["sequences"].shape[1] == 2 and other.batch["prior_sequences"].shape[1] == 4
    np.testing.assert_array_equal(other.batch["sequence_present"][:, 0], 0)  # t2: missing, zeros
    assert not other.batch["sequences"][:, 0].any()
    np.testing.assert_array_equal(other.batch["sequences"][:, 1], same.batch["sequences"][:, 1])  # flair as flair
    np.testing.assert_array_equal(other.batch["prior_sequences"][:, [1, 3]], same.batch["prior_sequences"][:, [1, 3]])
    assert not other.batch["prior_sequences"][:, [0, 2]].any()
    format1 = write_cohort(tmp_path / "format1", n_patients=2, followups=(("week3", 21), ("week6", 42)))
    plain = load_cases(model, format1, ["P001"], cache_dir=tmp_path / "cache")
    assert plain.batch["sequences"].shape[1] == 2 and not plain.batch["sequence_present"].any()
    out = predict(run, format1, tmp_path / "predictions", patients=["P001"], cache_dir=tmp_path / "cache")
    assert (out / "summary.json").is_file()
