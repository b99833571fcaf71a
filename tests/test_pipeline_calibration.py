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
