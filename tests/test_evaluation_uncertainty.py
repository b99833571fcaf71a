"""Uncertainty: interval coverage, calibration curve, spread-error correlation (scipy as reference)."""

import numpy as np
import pytest
from scipy import stats

from oncodiff.evaluation.uncertainty import CALIBRATION_LEVELS, calibration_curve, coverage, spread_error_correlation


def test_coverage_known_answers():
    samples = np.tile(np.arange(11.0), (4, 1))  # 0..10: 50 % interval [2.5, 7.5], 90 % interval [0.5, 9.5]
    truth = np.array([5.0, 2.0, 9.0, 20.0])
    out = coverage(samples, truth, levels=(0.5, 0.9))
    assert out["nominal"] == [0.5, 0.9]
    assert out["empirical"] == [0.25, 0.75]  # 5 in both; 2 and 9 only in the 90 % interval; 20 in neither
    assert out["n_cases"] == 4 and out["n_undefined"] == 0


def test_interval_ends_are_inclusive():
    samples = np.tile(np.arange(11.0), (2, 1))
    assert coverage(samples, np.array([2.5, 7.5]), levels=(0.5,))["empirical"] == [1.0]


def test_calibrated_samples_cover_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    centre = rng.normal(size=4000)
    samples = centre[:, None] + rng.normal(size=(4000, 200))
    truth = centre + rng.normal(size=4000)  # truth drawn from the same predictive distribution
    curve = calibration_curve(samples, truth)
    assert curve["nominal"] == list(CALIBRATION_LEVELS)
    np.testing.assert_allclose(curve["empirical"], curve["nominal"], atol=0.03)
    overconfident = coverage(samples * 0.2 + centre[:, None] * 0.8, truth)
    assert all(e < n - 0.2 for e, n in zip(overconfident["empirical"], overconfident["nominal"]))


def test_nan_cases_are_left_out_and_counted():
    samples = np.array([[0.0, 1.0, 2.0], [np.nan, 1.0, 2.0], [0.0, 1.0, 2.0]])
    truth = np.array([1.0, 1.0, np.nan])
    out = coverage(samples, truth)
    assert out["n_cases"] == 1 and out["n_undefined"] == 2 and out["empirical"] == [1.0, 1.0]
    none_valid = coverage(samples[1:2], truth[1:2])
    assert none_valid["empirical"] == [None, None]


def test_coverage_bad_inputs():
    with pytest.raises(ValueError, match="levels"):
        coverage(np.zeros((2, 3)), np.zeros(2), levels=(1.0,))
    with pytest.raises(ValueError, match="N_cases"):
        coverage(np.zeros((2, 3)), np.zeros(3))


def test_spread_error_correlation_matches_scipy():
    rng = np.random.default_rng(1)
    scale = rng.uniform(0.5, 3.0, size=40)
    samples = rng.normal(size=(40, 16)) * scale[:, None]
    truth = rng.normal(size=40) * scale
    out = spread_error_correlation(samples, truth)
    spread, error = samples.std(axis=1, ddof=1), np.abs(samples.mean(axis=1) - truth)
    assert out["pearson_r"] == pytest.approx(stats.pearsonr(spread, error).statistic)
    assert out["spearman_rho"] == pytest.approx(stats.spearmanr(spread, error).statistic)
    assert 0 < out["pearson_p"] < 1 and out["n_cases"] == 40


def test_spread_error_correlation_known_perfect_rank():
    # case k: samples {k - s_k, k + s_k}, mean k, spread grows with s_k; truth k + s_k -> error = s_k
    s = np.array([1.0, 2.0, 3.0, 5.0])
    centres = np.arange(4.0)
    samples = np.stack([centres - s, centres + s], axis=1)
    out = spread_error_correlation(samples, centres + s)
    assert out["spearman_rho"] == pytest.approx(1.0)
    assert out["pearson_r"] == pytest.approx(1.0)


@pytest.mark.filterwarnings("error")
def test_spread_error_correlation_undefined_cases():
    constant_spread = np.array([[0.0, 2.0], [1.0, 3.0], [5.0, 7.0]])
    out = spread_error_correlation(constant_spread, np.array([0.0, 1.0, 2.0]))
    assert out["pearson_r"] is None and out["spearman_rho"] is None and out["n_cases"] == 3
    too_few = spread_error_correlation(np.array([[0.0, 1.0], [0.0, 3.0]]), np.zeros(2))
    assert too_few["pearson_r"] is None
