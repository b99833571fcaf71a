"""Train tiny 2D and 3D models for a few steps (``oncodiff.training.train``), then predict
(``oncodiff.pipeline.predict``): the run folder, the outputs' geometry and files, summary.json, new
patients with only a baseline scan, and predictions that do not depend on which cases go together."""

from __future__ import annotations

import json
import shutil
from math import prod

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from factory import TINY_MODEL, write_cohort
from oncodiff.config import load_config
from oncodiff.errors import OncodiffError
from oncodiff.pipeline import calibrate_run, predict, predict_cases
from oncodiff.pipeline.cases import load_cases
from oncodiff.pipeline.export import load_export, update_export_meta
from oncodiff.pipeline.prior_inputs import case_prior_features
from oncodiff.outcomes.survival_risk import SurvivalRisk
from oncodiff.training import train

CROPS = {2: [16, 16], 3: [16, 16, 8]}
SHAPES = {2: (32, 28), 3: (24, 20, 10)}
SPACINGS = {2: (0.9, 1.2), 3: (1.0, 0.8, 2.0)}  # anisotropic: the affine must survive the round trip
TINY = [*TINY_MODEL, "training.max_steps=4", "training.samples_per_epoch=8",
        "training.batch_size=4", "training.max_minutes=null", "evaluation.segmenter_steps=10", "sampling.samples=2",
        "sampling.steps=2"]
BASE_RATE_KEY = "base rate"
NEW_PATIENT = "P007"  # has a baseline scan and no follow-up
RUN_FILES = ("config.json", "splits.json", "plan.json", "train_summary.json", "metrics.csv", "checkpoints/last.ckpt",
             "checkpoints/best.ckpt", "model/model.safetensors", "model/config.json")
SUMMARY_KEYS = {"model", "cohort", "samples", "seed", "overrides", "sampling", "interval_calibration",
                "spread_calibration", "spread_factor", "class_prior", "days_note", "survival_risk", "cases"}
CASE_KEYS = {"key", "patient_id", "lesion_id", "timepoint", "days", "volume_unit", "volume_baseline",
             "volume_baseline_segmented", "volume_pred_mean", "change_pct_mean", "change_pct_samples",
             "change_pct_interval_50",
             "change_pct_interval_90", "response", "response_probability", "response_rule", "files"}
IMAGES = ("mean", "std", "drift", "tumor_probability", "agreement", "sample_00", "sample_01")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cohort_with_a_new_patient(root, dims: int):
    """write_cohort's 7 patients, the last without its follow-up scan."""
    cohort = write_cohort(root, n_patients=7, dims=dims, shape=SHAPES[dims], spacing=SPACINGS[dims])
    scans = pd.read_csv(cohort / "scans.csv", dtype=str, keep_default_na=False)
    scans[(scans.patient_id != NEW_PATIENT) | (scans.timepoint == "pre")].to_csv(cohort / "scans.csv", index=False)
    return cohort


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def trained(request, tmp_path_factory):
    dims = request.param
    root = tmp_path_factory.mktemp(f"predict{dims}d")
    cohort = cohort_with_a_new_patient(root / "cohort", dims)
    # 2D generates its follow-up masks (the demo preset's default); 3D measures volumes with the segmenter.
    config = load_config("demo", [*TINY, f"data.dims={dims}", f"data.crop_size={CROPS[dims]}",
                                  f"model.generate_mask={dims == 2}"])
    run = train(cohort, config, root / "run", cache_dir=root / "cache")
    out = predict(run, cohort, root / "predictions", patients=["P001", "P002", "P003"], cache_dir=root / "cache")
    return {"dims": dims, "root": root, "cohort": cohort, "run": run, "out": out, "cache": root / "cache"}


def _image(path) -> nib.Nifti1Image:
    return nib.load(str(path))


def test_the_run_folder_has_every_file_and_the_planned_steps(trained):
    run = trained["run"]
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    assert json.loads((run / "plan.json").read_text(encoding="utf-8"))["total_steps"] == 4
    assert json.loads((run / "train_summary.json").read_text(encoding="utf-8"))["global_step"] == 4
    splits = json.loads((run / "splits.json").read_text(encoding="utf-8"))
    assert NEW_PATIENT not in {p for side in ("train", "val", "test") for p in splits[side]}  # no follow-up: nothing to learn from
    meta = json.loads((run / "model" / "config.json").read_text(encoding="utf-8"))
    assert meta["layout"]["spatial_dims"] == trained["dims"]
    assert meta["class_prior"] is not None
    segmenter = trained["dims"] == 3  # the 2D model generates its own masks and needs no segmenter
    assert (run / "model" / "segmenter.safetensors").is_file() == segmenter
    assert bool(meta["segmenter"] and meta["segmenter"].get("trained")) == segmenter


def test_outputs_have_the_baseline_scans_shape_and_affine(trained):
    cohort, out, dims = trained["cohort"], trained["out"], trained["dims"]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert [c["patient_id"] for c in summary["cases"]] == ["P001", "P002", "P003"]
    for case in summary["cases"]:
        folder = out / case["key"].replace("/", "_")
        baseline = _image(cohort / case["patient_id"] / "pre.nii.gz")
        for name in IMAGES:
            image = _image(folder / f"{name}.nii.gz")
            assert image.shape == baseline.shape == SHAPES[dims], name
            np.testing.assert_allclose(image.affine, baseline.affine, atol=1e-6, err_msg=name)
            assert np.isfinite(image.get_fdata()).all(), name
            assert (folder / f"{name}.png").is_file() == (dims == 2 and not name.startswith("sample_")), name
        # Outside the crop a predicted scan is the baseline scan itself, and the uncertainty is zero.
        crop = prod(CROPS[dims])
        mean, pre = _image(folder / "mean.nii.gz").get_fdata(), baseline.get_fdata()
        assert np.isclose(mean, pre, atol=1e-5).sum() >= mean.size - crop
        assert np.count_nonzero(_image(folder / "std.nii.gz").get_fdata()) <= crop
        assert np.count_nonzero(_image(folder / "std.nii.gz").get_fdata()) > 0  # two samples that differ


def test_summary_json_has_the_documented_keys(trained):
    out = trained["out"]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["days_note"] is None  # every predicted day is a trained one
    assert summary["samples"] == 2 and summary["sampling"]["steps"] == 2
    for case in summary["cases"]:
        assert CASE_KEYS <= case.keys()
        assert case["volume_unit"] == ("mm2" if trained["dims"] == 2 else "mm3")
        assert case["timepoint"] == "week6" and case["days"] == 42
        assert "volume_true" in case and "change_pct_true" in case  # these cases have a follow-up
        assert set(case["files"]) == set(IMAGES)
        assert len(case["sample_classes"]) == 2 and sum(case["class_probability"]) == pytest.approx(1.0)
        changes = [c for c in case["change_pct_samples"] if c is not None]
        assert len(case["change_pct_samples"]) == 2 and changes  # one per sample; their mean is the summary's
        assert np.mean(changes) == pytest.approx(case["change_pct_mean"])
        per_case = json.loads((out / case["key"].replace("/", "_") / "summary.json").read_text(encoding="utf-8"))
        assert per_case == case


def test_predict_says_which_class_predictor_it_used(trained):
    summary = json.loads((trained["out"] / "summary.json").read_text(encoding="utf-8"))
    meta = json.loads((trained["run"] / "model" / "config.json").read_text(encoding="utf-8"))
    prior = meta["class_prior"]
    assert prior["inputs"] in ("clinical", "clinical + denoiser features", "base rate")
    assert BASE_RATE_KEY in dict(prior["cv_log_loss"]) or prior["c_selection"] == "default"
    assert summary["class_prior"].startswith("class probabilities from ")
    assert prior["inputs"] in summary["class_prior"] or "training class rates" in summary["class_prior"]
    # the demo preset conditions on response: the survival risk comes from a Cox model on the prior's inputs,
    # or, where the prior is the base rate (no inputs), predict says why there is none
    survival = summary["survival_risk"]
    if prior["inputs"] == BASE_RATE_KEY:
        assert "the class prior chosen on the training split is the base rate" in survival["status"]
    elif meta["survival_risk"] is None:  # a 4-case training split: too few events, or the Cox fit diverged
        assert survival["status"].startswith("not available: the export has no survival model")
    else:
        assert survival["from"].startswith(f"Cox proportional hazards on {prior['inputs']}")
        assert set(survival["risk"]) == {case["key"] for case in summary["cases"]}
        assert meta["survival_risk"]["inputs"] == prior["inputs"]


def test_an_export_with_a_class_prior_from_before_the_candidates_still_predicts(trained, tmp_path):
    run = tmp_path / "old_run"
    shutil.copytree(trained["run"], run, ignore=shutil.ignore_patterns("checkpoints"))
    model = load_export(run)
    cases = load_cases(model, trained["cohort"], ["P001"], cache_dir=trained["cache"])
    features = case_prior_features(model, cases)
    width = features.shape[1]
    coef = np.random.default_rng(0).normal(size=width).tolist()
    # the fields an export had before the candidates existed: a logistic regression on the clinical features
    old = {"mean": [0.0] * width, "scale": [1.0] * width, "coef": [coef, coef], "intercept": [0.0, 0.0],
           "n_classes": 2, "n_train": 10, "c": 0.1, "c_selection": "5-fold patient-grouped CV log loss",
           "frequencies": [0.4, 0.6]}
    cox = SurvivalRisk("clinical", (0.0,) * width, (2.0,) * width, tuple(coef), 10, 4)
    update_export_meta(run, class_prior=old, survival_risk=cox.to_dict())
    out = predict(run, trained["cohort"], tmp_path / "pred", patients=["P001"], cache_dir=trained["cache"])
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert "logistic regression on clinical, 10 training rows, C = 0.1 (" in summary["class_prior"]
    np.testing.assert_allclose(summary["cases"][0]["class_probability"], [0.5, 0.5])  # equal rows, no shrinkage
    # the survival risk: the Cox model on the same (clinical) inputs, per follow-up
    risk = summary["survival_risk"]
    assert risk["from"] == "Cox proportional hazards on clinical (penalizer 0.1), 10 training patients, 4 events"
    expected = {case.follow_up_key: float(features[i] @ np.asarray(coef) / 2) for i, case in enumerate(cases.cases)}
    assert risk["risk"].keys() == expected.keys()
    np.testing.assert_allclose(list(risk["risk"].values()), list(expected.values()), rtol=1e-6)


def test_training_calibrates_the_intervals_and_predict_reports_them(trained):
    run, out = trained["run"], trained["out"]
    meta = json.loads((run / "model" / "config.json").read_text(encoding="utf-8"))
    splits = json.loads((run / "splits.json").read_text(encoding="utf-8"))
    calibration = meta["interval_calibration"]
    assert calibration == json.loads((run / "train_summary.json").read_text(encoding="utf-8"))["interval_calibration"]
    assert calibration["calibrated"] and calibration["split"] == "val" and calibration["n_samples"] == 2
    assert 1 <= calibration["n_cases"] <= len(splits["val"]) * 2  # one case per follow-up of each validation patient
    assert calibration["levels"] == [0.5, 0.9]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["interval_calibration"].startswith(f"conformal margins from {calibration['n_cases']} val cases")
    for case in summary["cases"]:
        for level, margin in zip((50, 90), calibration["margins"]):
            calibrated, raw = case[f"change_pct_interval_{level}_calibrated"], case[f"change_pct_interval_{level}"]
            if margin is None or raw is None:  # too few validation cases for this level
                assert calibrated is None
            else:
                np.testing.assert_allclose(calibrated, [max(raw[0] - 100 * margin, -100.0), raw[1] + 100 * margin])


def test_training_fits_the_samples_spread_and_predict_applies_it(trained, tmp_path):
    from oncodiff.pipeline.spread import FACTORS, class_means

    meta = json.loads((trained["run"] / "model" / "config.json").read_text(encoding="utf-8"))
    spread = meta["spread_calibration"]
    assert spread["factor"] in FACTORS and spread["n_samples"] == 2 and spread["n_cases"] >= 1
    assert spread["crps_scaled"] == min(spread["grid"].values()) <= spread["crps_raw"] == spread["grid"]["1"]
    assert meta["interval_calibration"]["spread_factor"] == spread["factor"]  # the margins saw the scaled samples
    note = json.loads((trained["out"] / "summary.json").read_text(encoding="utf-8"))["spread_calibration"]
    assert note.startswith(f"spread calibration: each sample's deviation from its class mean x{spread['factor']:g}")
    # A copy with a factor of 3 (the tiny model's own may be 1): predict scales each class's deviations by it.
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    update_export_meta(run, spread_calibration={**spread, "factor": 3.0})
    model = load_export(run)
    cases = load_cases(model, trained["cohort"], ["P001", "P002"], cache_dir=trained["cache"])
    raw = predict_cases(model, cases, 2, seed=3, class_label="predicted",
                        config=model.config.with_overrides(["sampling.spread=raw"]))
    scaled = predict_cases(model, cases, 2, seed=3, class_label="predicted")
    np.testing.assert_array_equal(scaled.sample_classes, raw.sample_classes)
    np.testing.assert_allclose(scaled.mean, raw.mean, atol=1e-5)
    means = class_means(raw.samples, raw.sample_classes)
    np.testing.assert_allclose(scaled.samples - means, 3.0 * (raw.samples - means), atol=1e-5)
    common = dict(patients=["P001"], cache_dir=trained["cache"])
    out = predict(run, trained["cohort"], tmp_path / "scaled", **common)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert "x3" in summary["spread_calibration"] and summary["spread_factor"] == 3.0
    if meta["interval_calibration"]["spread_factor"] != 3.0:
        assert "this prediction's are x3, so the calibrated coverage is approximate" in summary["interval_calibration"]
    out = predict(run, trained["cohort"], tmp_path / "raw", overrides=["sampling.spread=raw"], **common)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["spread_calibration"] == "samples as drawn (sampling.spread=raw)" and summary["spread_factor"] == 1.0
    update_export_meta(run, spread_calibration=None)  # an export calibrated before spread calibration existed
    out = predict(run, trained["cohort"], tmp_path / "old", **common)
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["spread_calibration"].startswith(
        "samples as drawn: the model has no fitted spread factor")


def test_predictions_say_when_the_calibration_does_not_quite_apply(trained, tmp_path):
    common = dict(patients=["P001"], cache_dir=trained["cache"])
    more = predict(trained["run"], trained["cohort"], tmp_path / "more", samples=3, **common)
    note = json.loads((more / "summary.json").read_text(encoding="utf-8"))["interval_calibration"]
    assert "drew 3 samples per case" in note and "approximate" in note
    given = predict(trained["run"], trained["cohort"], tmp_path / "given", overrides=["response=responder"], **common)
    summary = json.loads((given / "summary.json").read_text(encoding="utf-8"))
    assert summary["interval_calibration"].startswith("intervals not calibrated")
    assert "change_pct_interval_90_calibrated" not in summary["cases"][0]


def test_most_probable_class_mode_and_its_own_calibration(trained, tmp_path):
    # A copy of the run: calibrating rewrites the export's margins, which the other tests read.
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    common = dict(patients=["P001", "P002", "P003"], cache_dir=trained["cache"])
    setting = "sampling.unknown_class=most_probable"
    out = predict(run, trained["cohort"], tmp_path / "most_probable", overrides=[setting], **common)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    for case in summary["cases"]:  # every sample under the prior's most probable class, the probability still reported
        assert case["sample_classes"] == [int(np.argmax(case["class_probability"]))] * 2
    note = summary["interval_calibration"]
    assert "fitted with sampling.unknown_class=mixture" in note and f"--set {setting}" in note
    assert "change_pct_interval_90_calibrated" not in summary["cases"][0]
    with pytest.raises(OncodiffError, match="calibrate takes sampling.KEY=VALUE only"):
        calibrate_run(run, trained["cohort"], overrides=["response=responder"], cache_dir=trained["cache"])
    assert calibrate_run(run, trained["cohort"], overrides=[setting], cache_dir=trained["cache"])["mode"] == "most_probable"
    out = predict(run, trained["cohort"], tmp_path / "recalibrated", overrides=[setting], **common)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["interval_calibration"].startswith("conformal margins from")
    assert "most_probable class" in summary["interval_calibration"]
    plain = predict(run, trained["cohort"], tmp_path / "mixture", **common)  # the run's own setting: now unfitted
    assert "fitted with sampling.unknown_class=most_probable" in json.loads(
        (plain / "summary.json").read_text(encoding="utf-8"))["interval_calibration"]


def test_a_patient_with_only_a_baseline_scan_needs_days(trained, tmp_path, capsys):
    with pytest.raises(OncodiffError, match=f"patient {NEW_PATIENT} has no follow-up.*--days"):
        predict(trained["run"], trained["cohort"], tmp_path / "no_days", patients=[NEW_PATIENT],
                cache_dir=trained["cache"])
    capsys.readouterr()
    out = predict(trained["run"], trained["cohort"], tmp_path / "day90", patients=[NEW_PATIENT], days=90,
                  cache_dir=trained["cache"])
    # every training follow-up is at day 42: day 90 is an extrapolation in time, and predict says so
    assert load_export(trained["run"]).layout.training_days == (42.0,)
    note = "day(s) 90 after baseline lie outside the follow-up days this model was trained on (42)"
    assert note in capsys.readouterr().out
    assert note in json.loads((out / "summary.json").read_text(encoding="utf-8"))["days_note"]
    (case,) = json.loads((out / "summary.json").read_text(encoding="utf-8"))["cases"]
    assert case["key"] == f"{NEW_PATIENT}/L1/day90" and case["days"] == 90
    assert "volume_true" not in case
    image = _image(out / f"{NEW_PATIENT}_L1_day90" / "mean.nii.gz")
    assert image.shape == SHAPES[trained["dims"]]


def test_predicting_from_a_run_folder_defaults_to_its_test_split(trained, tmp_path):
    out = predict(trained["run"], trained["cohort"], tmp_path / "test_split", cache_dir=trained["cache"])
    test = json.loads((trained["run"] / "splits.json").read_text(encoding="utf-8"))["test"]
    cases = json.loads((out / "summary.json").read_text(encoding="utf-8"))["cases"]
    assert sorted({c["patient_id"] for c in cases}) == sorted(test)


def test_a_case_is_predicted_alike_whatever_cases_go_with_it(trained, tmp_path):
    # Same seed, different sampling.batch_size and different case subsets: the same samples per case.
    model = load_export(trained["run"])
    cases = load_cases(model, trained["cohort"], cache_dir=trained["cache"])
    assert len(cases) == 6
    reference = predict_cases(model, cases, n_samples=3, seed=7, class_label="predicted")
    one_at_a_time = model.config.with_overrides(["sampling.batch_size=1"])
    by_one = predict_cases(model, cases, n_samples=3, seed=7, class_label="predicted", config=one_at_a_time)
    np.testing.assert_allclose(by_one.samples, reference.samples, rtol=1e-4, atol=1e-4)
    subset = [4, 1]
    alone = predict_cases(model, cases.select(subset), n_samples=3, seed=7, class_label="predicted",
                          config=model.config.with_overrides(["sampling.batch_size=5"]))
    np.testing.assert_allclose(alone.samples, reference.samples[subset], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(alone.sample_classes, reference.sample_classes[subset])
    other_seed = predict_cases(model, cases, n_samples=3, seed=8, class_label="predicted")
    assert not np.allclose(other_seed.samples, reference.samples, atol=1e-3)
    # Through predict(): a patient's files are the same predicted alone or with others.
    alone_dir = predict(trained["run"], trained["cohort"], tmp_path / "alone", patients=["P002"],
                        cache_dir=trained["cache"])
    key = "P002_L1_week6"
    np.testing.assert_allclose(_image(alone_dir / key / "mean.nii.gz").get_fdata(),
                               _image(trained["out"] / key / "mean.nii.gz").get_fdata(), rtol=1e-4, atol=1e-4)


def test_counterfactual_class_and_clinical_overrides(trained, tmp_path):
    run, cohort, cache = trained["run"], trained["cohort"], trained["cache"]
    model = load_export(run)
    cases = load_cases(model, cohort, patients=["P001", "P002"], overrides={"response": "responder",
                                                                           "clinical.age": "70"}, cache_dir=cache)
    assert cases.batch["class_label"].tolist() == [1, 1]  # P002 is a non-responder in fact: the override wins
    plain = load_cases(model, cohort, patients=["P001", "P002"], cache_dir=cache)
    assert plain.batch["class_label"].tolist() == [2, 2]  # outcome unknown before treatment: the null class
    age = [v.name for v in model.layout.clinical].index("age")
    assert torch.equal(cases.batch["clinical"][0, age], cases.batch["clinical"][1, age])  # both 70 now
    assert not torch.equal(plain.batch["clinical"][0, age], plain.batch["clinical"][1, age])
    means = {}
    for value in ("responder", "non-responder"):
        out = predict(run, cohort, tmp_path / value, patients=["P001"], overrides=[f"response={value}"],
                      cache_dir=cache)
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        assert summary["overrides"] == [f"response={value}"]
        assert "sample_classes" not in summary["cases"][0]  # the class is given, not marginalised over
        means[value] = _image(out / "P001_L1_week6" / "mean.nii.gz").get_fdata()
    assert not np.allclose(means["responder"], means["non-responder"])


def test_agreement_map_counts_the_most_common_kind_of_change():
    from oncodiff.pipeline.predict import agreement_map

    pre = np.zeros((1, 3))
    samples = np.array([[[0.5, 0.01, 0.5], [0.4, -0.02, -0.5], [0.6, 0.5, -0.4], [0.3, -0.5, 0.0]]])
    # voxel 0: 4 increases; voxel 1: 2 "no change", 1 up, 1 down; voxel 2: 2 down, 1 up, 1 no change
    np.testing.assert_allclose(agreement_map(samples, pre, 0.05), [[1.0, 0.5, 0.5]])
    with pytest.raises(ValueError):
        agreement_map(samples, pre, -1.0)


def test_every_class_mode_at_once_gives_each_modes_own_draws(trained, capsys):
    # evaluate samples the mixture, the most probable, the null and the true class, and the counterfactual
    # check's flipped class, in one predict_modes call: each (case, sample, class) once, the same samples as
    # predict_cases gives each mode alone.
    if trained["dims"] != 2:
        pytest.skip("one dimension is enough: the rows are the same code in 3D")
    from oncodiff.pipeline import predict_modes

    model = load_export(trained["run"])
    cases = load_cases(model, trained["cohort"], cache_dir=trained["cache"])
    flipped = 1 - cases.batch["response"]
    modes = {"mixture": "predicted", "most_probable": "most_probable", "null": "null", "true": "true",
             "flipped": flipped}
    together = predict_modes(model, cases, n_samples=3, seed=5, modes=modes)
    # 6 cases x 3 samples under 3 classes (responder, non-responder, null), not 5 modes' 90 draws
    assert "sampled 54 (case, sample, class) draws for 5 class modes" in capsys.readouterr().out
    for name, mode in modes.items():
        if isinstance(mode, str):
            alone = predict_cases(model, cases, n_samples=3, seed=5, class_label=mode)
        else:
            given = type(cases)(cases.cases, {**cases.batch, "class_label": flipped}, cases.cohort, cases.data_hash)
            alone = predict_cases(model, given, n_samples=3, seed=5, class_label="given")
        np.testing.assert_allclose(together[name].samples, alone.samples, rtol=1e-4, atol=1e-4, err_msg=name)
        np.testing.assert_array_equal(together[name].masks, alone.masks)
        if mode in ("predicted", "most_probable"):
            np.testing.assert_array_equal(together[name].sample_classes, alone.sample_classes)
            np.testing.assert_allclose(together[name].class_probability, alone.class_probability)
