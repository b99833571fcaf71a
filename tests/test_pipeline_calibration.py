"""Conformal margins for the volume-change intervals (oncodiff.pipeline.calibration)."""

import numpy as np
import pytest

from oncodiff.pipeline.calibration import IntervalCalibration, conformal_margin


def _overconfident(rng, n_cases, n_samples=8, spread=0.02, error=0.2):
    """Samples far too tight around a prediction that misses the truth by N(0, error); changes around +200 %,
    away from the -100 % floor."""
    truth = 2.0 + rng.normal(size=n_cases)
    centre = truth + error * rng.normal(size=n_cases)
    return centre[:, None] + spread * rng.normal(size=(n_cases, n_samples)), truth


def test_margin_is_the_conformal_rank():
    scores = np.arange(1.0, 20.0)  # n = 19
    assert conformal_margin(scores, 0.9) == 18.0  # ceil(20 * 0.9) = 18th smallest
    assert conformal_margin(scores, 0.5) == 10.0
    assert conformal_margin(scores[:5], 0.9) is None  # ceil(6 * 0.9) = 6 > 5: no finite margin


def test_calibrated_intervals_reach_nominal_coverage_on_new_cases():
    rng = np.random.default_rng(0)
    val_change, val_true = _overconfident(rng, 200)
    test_change, test_true = _overconfident(rng, 4000)
    calibration = IntervalCalibration.fit(val_change, val_true, n_samples=8, mode="predicted")
    raw = calibration.coverage(test_change, test_true)
    assert all(m > 0 for m in calibration.margins)  # the raw intervals were too narrow
    for level, covered in zip(raw["nominal"], raw["empirical"]):
        assert abs(covered - level) < 0.06, (level, covered)
    # the raw intervals, for comparison, cover far less
    low, high = np.quantile(test_change, [0.05, 0.95], axis=1)
    assert np.mean((low <= test_true) & (test_true <= high)) < 0.3


def test_too_wide_intervals_get_a_negative_margin():
    rng = np.random.default_rng(1)
    truth = 3.0 + rng.normal(size=300)
    change = truth[:, None] + rng.normal(size=(300, 16))  # spread 1, no error: 90 % interval is too wide at 50 %
    calibration = IntervalCalibration.fit(change, truth, 16, "predicted", levels=(0.5,))
    assert calibration.margins[0] < 0


def test_nan_cases_are_left_out_and_round_trip():
    rng = np.random.default_rng(2)
    change, truth = _overconfident(rng, 30)
    change[0, 3] = np.nan
    truth[1] = np.nan
    calibration = IntervalCalibration.fit(change, truth, 8, "predicted")
    assert calibration.n_cases == 28
    assert IntervalCalibration.from_dict(calibration.to_dict()) == calibration
    assert IntervalCalibration.fit(np.full((3, 4), np.nan), np.zeros(3), 4, "predicted") is None


def test_uncalibrated_level_gives_no_interval():
    rng = np.random.default_rng(3)
    change, truth = _overconfident(rng, 5)
    calibration = IntervalCalibration.fit(change, truth, 8, "predicted")
    assert calibration.margins[1] is None and calibration.interval(change, 0.9) is None
    assert calibration.coverage(change, truth)["empirical"][1] is None
    assert "too few cases" in calibration.describe()


@pytest.mark.parametrize("level", [0.5, 0.9])
def test_interval_widens_the_sample_quantiles_by_the_margin(level):
    change = np.linspace(-0.5, 1.5, 9)[None]
    calibration = IntervalCalibration((0.5, 0.9), (0.1, 0.2), 20, 9, "predicted")
    low, high = calibration.interval(change, level)
    q = np.quantile(change, [(1 - level) / 2, (1 + level) / 2], axis=1)
    margin = 0.1 if level == 0.5 else 0.2
    np.testing.assert_allclose([low[0], high[0]], [q[0, 0] - margin, q[1, 0] + margin])


def test_a_one_prediction_model_says_so():
    calibration = IntervalCalibration((0.5, 0.9), (0.3, 0.9), 20, 1, "predicted")
    assert "20 val cases x 1 prediction" in calibration.describe()
    # one prediction per case: the interval is the prediction +- the margin
    low, high = calibration.interval(np.array([[0.1]]), 0.9)
    np.testing.assert_allclose([low[0], high[0]], [0.1 - 0.9, 0.1 + 0.9])


def test_the_lower_end_never_goes_below_a_vanished_tumour():
    calibration = IntervalCalibration((0.9,), (1.5,), 20, 8, "predicted")
    low, high = calibration.interval(np.array([[-0.5, -0.2, 0.1]]), 0.9)
    assert low[0] == -1.0 and high[0] > 1.5


def test_minimum_cases_and_patient_folds():
    from oncodiff.pipeline.calibration import minimum_cases, patient_folds

    assert minimum_cases((0.5, 0.9)) == 9 and minimum_cases((0.5,)) == 1 and minimum_cases((0.95,)) == 19
    patients = [f"P{i:02d}" for i in range(11)]
    folds = patient_folds(patients, 5, seed=3)
    assert len(folds) == 5 and sorted(p for f in folds for p in f) == patients
    assert {len(f) for f in folds} == {2, 3} and folds == patient_folds(patients, 5, seed=3)
    assert len(patient_folds(patients[:3], 5)) == 3  # never an empty fold


def _knn_problem(rng, n):
    """Cases x with changes y around +300 % (away from the -100 % floor), for a 1-nearest-neighbour 'model'."""
    x = rng.random(n)
    return x, 3 + np.sin(2 * np.pi * x) + 0.3 * rng.normal(size=n)


def _predict(train_x, train_y, x, rng, spread=0.02, samples=8):
    """The 1-NN prediction (it reproduces its own training cases exactly) with samples far too tight."""
    nearest = train_y[np.abs(x[:, None] - train_x[None]).argmin(1)]
    return nearest[:, None] + spread * rng.normal(size=(len(x), samples))


def test_cross_conformal_margins_cover_where_a_small_validation_split_cannot_and_in_sample_scores_do_not():
    """Cross-conformal calibration as calibrate_export pools it: a 3-case validation split gives no 90 % margin;
    with the out-of-fold scores of 5 fold models (each fitted without its fold) the pooled margin around the final
    model's interval covers new cases at about 90 %, where the raw sample interval and margins from the final
    model's own training cases (in-sample: it has seen them) cover far less."""
    from oncodiff.pipeline.calibration import minimum_cases, patient_folds

    rng = np.random.default_rng(0)
    covered = {"cross-conformal": [], "in-sample": [], "raw": []}
    for trial in range(100):
        train_x, train_y = _knn_problem(rng, 40)
        val_x, val_y = _knn_problem(rng, 3)
        test_x, test_y = _knn_problem(rng, 300)
        patients = [str(i) for i in range(40)]
        val = IntervalCalibration.fit(_predict(train_x, train_y, val_x, rng), val_y, 8, "predicted")
        assert val.n_cases < minimum_cases(val.levels) and val.margins[1] is None
        changes, truths = [_predict(train_x, train_y, val_x, rng)], [val_y]
        for held in patient_folds(patients, 5, seed=trial):
            out = np.isin(patients, held)
            changes.append(_predict(train_x[~out], train_y[~out], train_x[out], rng))
            truths.append(train_y[out])
        pooled = IntervalCalibration.fit(np.concatenate(changes), np.concatenate(truths), 8, "predicted",
                                         split="val + out-of-fold training (5 folds)")
        in_sample = IntervalCalibration.fit(_predict(train_x, train_y, train_x, rng), train_y, 8, "predicted")
        test = _predict(train_x, train_y, test_x, rng)
        for name, calibration in (("cross-conformal", pooled), ("in-sample", in_sample)):
            covered[name].append(calibration.coverage(test, test_y)["empirical"][1])
        low, high = np.quantile(test, [0.05, 0.95], axis=1)
        covered["raw"].append(np.mean((low <= test_y) & (test_y <= high)))
    assert "out-of-fold" in pooled.describe() and pooled.n_cases == 43
    assert 0.88 <= np.mean(covered["cross-conformal"]) <= 0.96, np.mean(covered["cross-conformal"])
    assert np.mean(covered["in-sample"]) < 0.3 and np.mean(covered["raw"]) < 0.3


@pytest.mark.usefixtures("one_torch_thread")
def test_training_on_a_small_validation_split_fits_cross_conformal_margins(tmp_path):
    """A run whose validation split is too small for a 90 % margin trains its fold models and gets one."""
    import json

    from factory import write_cohort
    from oncodiff.config import load_config
    from oncodiff.pipeline import calibrate_run
    from oncodiff.runs import RunFolder
    from oncodiff.training import train

    cohort = write_cohort(tmp_path / "cohort", n_patients=10, followups=(("week6", 42), ("week12", 84)))
    tiny = ["model.channels=[8,16]", "model.attention_levels=[false,true]", "model.norm_num_groups=8",
            "model.num_head_channels=8", "model.token_dim=16", "data.crop_size=[16,16]", "training.max_steps=4",
            "training.samples_per_epoch=8", "training.batch_size=4", "training.max_minutes=null",
            "evaluation.segmenter_steps=10", "sampling.samples=2", "sampling.steps=2", "sampling.calibration_folds=2"]
    run = RunFolder(train(cohort, load_config("demo", tiny), tmp_path / "run", cache_dir=tmp_path / "cache"))
    splits = run.splits()
    folds = run.calibration_folds()
    assert len(folds) == 2 and 2 * len(splits.val) < 9  # two follow-ups per patient
    held = [list(f.splits().test) for f in folds]
    assert sorted(p for h in held for p in h) == sorted(splits.train)  # every training patient held out once
    for fold, patients in zip(folds, held):
        assert not set(patients) & set(fold.splits().train)  # a fold model never sees its own patients
        assert json.loads(fold.plan_json.read_text(encoding="utf-8"))["total_steps"] == 2  # 1/K of the budget
    stored = json.loads((run.model_dir / "config.json").read_text(encoding="utf-8"))["interval_calibration"]
    assert stored["calibrated"] and stored["split"] == "val + out-of-fold training (2 folds)"
    assert stored["n_cases"] == 2 * (len(splits.val) + len(splits.train)) >= 9 and stored["margins"][1] is not None
    # `oncodiff calibrate` reuses the trained folds
    again = calibrate_run(run.root, cohort, cache_dir=tmp_path / "cache")
    assert again["split"] == stored["split"] and list(again["margins"]) == stored["margins"]
