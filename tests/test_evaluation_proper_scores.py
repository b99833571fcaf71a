import numpy as np
import pytest
from scipy import integrate, stats

from oncodiff.evaluation.distribution_scores import in_tumour_scores, volume_change_scores
from oncodiff.evaluation.proper_scores import (
    brier_score, crps_ensemble, crps_gaussian, energy_score, gaussian_sigma, log_score, reliability_curve,
)
from oncodiff.pipeline.calibration import IntervalCalibration


def crps_by_integral(cdf, y: float, low: float, high: float) -> float:
    """int (F(x) - 1[x >= y])^2 dx, numerically, split at y (and wide enough that the tails vanish)."""
    left = integrate.quad(lambda x: cdf(x) ** 2, low, y, limit=200)[0]
    right = integrate.quad(lambda x: (1 - cdf(x)) ** 2, y, high, limit=200)[0]
    return left + right


@pytest.mark.parametrize(("mu", "sigma", "y"), [(0.0, 1.0, 0.0), (0.3, 0.5, -0.4), (-2.0, 3.0, 4.0)])
def test_gaussian_crps_matches_the_defining_integral(mu, sigma, y):
    expected = crps_by_integral(stats.norm(mu, sigma).cdf, y, mu - 12 * sigma, mu + 12 * sigma)
    assert np.isclose(crps_gaussian(mu, sigma, y), expected, rtol=1e-6)


def test_gaussian_crps_known_value_and_point_mass():
    # CRPS(N(0, 1), 0) = 2 phi(0) - 1 / sqrt(pi) = (sqrt(2) - 1) / sqrt(pi)
    assert np.isclose(crps_gaussian(0.0, 1.0, 0.0), (np.sqrt(2) - 1) / np.sqrt(np.pi))
    np.testing.assert_allclose(crps_gaussian([1.0, 2.0], 0.0, [0.5, 2.5]), [0.5, 0.5])


def test_ensemble_crps_matches_the_integral_of_the_empirical_cdf_and_the_pairwise_form():
    rng = np.random.default_rng(0)
    samples, y = rng.normal(size=7), 0.37

    def empirical(x):
        return (samples <= x).mean()

    grid = np.sort(np.concatenate([samples, [y, -10, 10]]))
    integral = sum(integrate.quad(lambda x: (empirical(x) - (x >= y)) ** 2, a, b)[0] for a, b in zip(grid, grid[1:]))
    pairwise = np.abs(samples - y).mean() - 0.5 * np.abs(samples[:, None] - samples[None]).mean()
    assert np.isclose(crps_ensemble(samples, np.array(y)), integral, rtol=1e-6)
    assert np.isclose(crps_ensemble(samples, np.array(y)), pairwise)


def test_ensemble_crps_of_many_gaussian_samples_approaches_the_closed_form():
    rng = np.random.default_rng(1)
    samples = rng.normal(0.5, 2.0, size=(3, 20000))
    y = np.array([0.0, 1.0, 5.0])
    np.testing.assert_allclose(crps_ensemble(samples, y), crps_gaussian(0.5, 2.0, y), rtol=0.02)


def test_energy_score_in_one_dimension_is_the_crps_and_of_a_point_the_distance():
    rng = np.random.default_rng(2)
    samples = rng.normal(size=(9, 1))
    assert np.isclose(energy_score(samples, np.array([0.2])), crps_ensemble(samples[:, 0], np.array(0.2)))
    assert np.isclose(energy_score(np.array([[3.0, 4.0]]), np.zeros(2)), 5.0)


def test_log_brier_and_reliability_known_answers():
    np.testing.assert_allclose(log_score(np.array([0.8, 0.8]), np.array([True, False])), -np.log([0.8, 0.2]))
    assert np.isfinite(log_score(np.array([0.0]), np.array([True]))[0])  # clipped, not infinite
    p = np.array([[0.9, 0.1], [0.3, 0.7]])
    assert np.isclose(brier_score(p, np.array([0, 0])), (0.01 + 0.49) / 2)
    four = np.array([[0.7, 0.1, 0.1, 0.1]])
    assert np.isclose(brier_score(four, np.array([0])), 0.09 + 3 * 0.01)
    curve = reliability_curve(np.array([[0.9, 0.1], [0.85, 0.15], [0.2, 0.8]]), np.array([0, 1, 1]))
    assert curve["count"] == [2, 1] and curve["observed"] == [0.5, 1.0]
    assert np.allclose(curve["predicted"], [0.125, 0.8])


def test_gaussian_sigma_matches_the_conformal_margin():
    assert np.isclose(gaussian_sigma((0.5, 0.9), (0.2, stats.norm.ppf(0.95))), 1.0)
    assert np.isclose(gaussian_sigma((0.5, 0.9), (stats.norm.ppf(0.75), None)), 1.0)
    assert gaussian_sigma((0.5, 0.9), (None, None)) is None


def test_volume_change_scores_samples_gaussian_and_point_mass():
    true = np.array([-0.5, 0.2, np.nan])
    samples = np.array([[-0.6, -0.4, 0.0, -0.5], [0.1, 0.3, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0]])
    s = volume_change_scores(samples, true, -0.3, None)
    assert s["n"] == 2 and s["n_undefined"] == 1
    assert np.isclose(s["crps_pp"], 100 * crps_ensemble(samples[:2], true[:2]).mean())
    p = np.array([3.5 / 5, 0.5 / 5])  # 3 of 4 and 0 of 4 samples say response
    assert np.isclose(s["response_log_score"], -np.mean(np.log([p[0], 1 - p[1]])))

    point = np.array([[-0.1], [0.0], [0.0]])
    calibration = IntervalCalibration((0.9,), (0.2 * stats.norm.ppf(0.95),), 10, 1, "identity")
    g = volume_change_scores(point, true, -0.3, calibration)
    assert np.isclose(g["crps_pp"], 100 * crps_gaussian(point[:2, 0], 0.2, true[:2]).mean())
    expected = -np.mean(np.log([stats.norm.cdf(-1.0), 1 - stats.norm.cdf(-1.5)]))
    assert np.isclose(g["response_log_score"], expected)
    bare = volume_change_scores(point, true, -0.3, None)
    assert np.isclose(bare["crps_pp"], 100 * np.mean([0.4, 0.2])) and bare["response_log_score"] is None


def test_in_tumour_scores_use_the_box_around_the_baseline_tumour():
    post = np.zeros((1, 8, 8))
    tumor = np.zeros((1, 8, 8), dtype=bool)
    tumor[0, 3:5, 3:5] = True
    post[0, 3:5, 3:5] = 1.0
    samples = np.zeros((1, 2, 8, 8))
    samples[0, 0, 3:5, 3:5] = 1.0  # one sample right, one predicting no tumour
    s = in_tumour_scores(samples, post, tumor, margin=1)  # a 4 x 4 box holding the 2 x 2 tumour
    # per voxel inside the tumour: CRPS of {1, 0} at 1 = 0.5 - 0.25 = 0.25; outside it both samples are right
    assert np.isclose(s["crps"], 4 * 0.25 / 16)
    assert np.isclose(s["energy_score"], (0 + 2) / 2 - 0.5 * (2 * 2) / 4)  # ||x1-y|| = 0, ||x2-y|| = 2
    assert in_tumour_scores(samples, post, np.zeros_like(tumor), 1)["n"] == 0


def test_pooled_c_index_with_a_patient_bootstrap_interval():
    from oncodiff.evaluation.stage2 import bootstrap_c_index

    rng = np.random.default_rng(3)
    time = rng.exponential(100, size=40)
    event = np.ones(40)
    patients = np.array([f"P{i:02d}" for i in range(40)])
    perfect = bootstrap_c_index(time, event, -time, patients, seed=0, n_boot=200)
    assert perfect["c_index"] == 1.0 and perfect["ci95"] == [1.0, 1.0] and perfect["n_patients"] == 40
    noise = bootstrap_c_index(time, event, rng.normal(size=40), patients, seed=0, n_boot=200)
    low, high = noise["ci95"]
    assert low < noise["c_index"] < high and high - low > 0.1
    assert noise["n_boot"] == 200


def test_spread_skill_is_one_for_exchangeable_samples_and_low_for_copies():
    from oncodiff.evaluation.distribution_scores import spread_skill

    rng = np.random.default_rng(4)
    tumor = np.zeros((3, 16, 16), dtype=bool)
    tumor[:, 4:12, 4:12] = True
    centre = rng.normal(size=(3, 1, 16, 16))
    draws = centre + rng.normal(size=(3, 5, 16, 16))  # truth and 4 samples: five draws of one distribution
    honest = spread_skill(draws[:, 1:], draws[:, 0], tumor, margin=0)
    assert honest["samples"] == 4 and honest["n"] == 3
    # sqrt((M + 1) / M) corrects the finite ensemble; without it the ratio would be about sqrt(4 / 5) = 0.89
    assert honest["ratio"] == pytest.approx(1.0, abs=0.08)
    copies = centre + 0.1 * rng.normal(size=(3, 4, 16, 16))  # near copies of one prediction
    assert spread_skill(copies, draws[:, 0], tumor, margin=0)["ratio"] < 0.2
    assert "status" in spread_skill(draws[:, :1], draws[:, 0], tumor, 0)  # one prediction: no spread


def test_rank_histogram_is_flat_for_exchangeable_samples_and_u_shaped_for_copies():
    from oncodiff.evaluation.distribution_scores import rank_histogram

    rng = np.random.default_rng(5)
    tumor = np.zeros((4, 20, 20), dtype=bool)
    tumor[:, 2:18, 2:18] = True
    draws = rng.normal(size=(4, 5, 20, 20))
    flat = rank_histogram(draws[:, 1:], draws[:, 0], tumor, margin=0)
    assert flat["voxels"] == 4 * 256 and sum(flat["counts"]) == flat["voxels"] and len(flat["counts"]) == 5
    assert flat["delta"] < 3 and flat["outside_share"] == pytest.approx(0.4, abs=0.05)
    narrow = rank_histogram(0.1 * draws[:, 1:], draws[:, 0], tumor, margin=0)
    assert narrow["delta"] > 50 and narrow["outside_share"] > 0.8  # the truth below or above every sample: a U
    # ties with the truth are broken at random (a point mass on the truth is flat, not all rank 0), reproducibly
    tied = rank_histogram(np.repeat(draws[:, :1], 4, axis=1), draws[:, 0], tumor, margin=0, seed=3)
    assert min(tied["counts"]) > 0.15 * tied["voxels"]
    assert tied == rank_histogram(np.repeat(draws[:, :1], 4, axis=1), draws[:, 0], tumor, margin=0, seed=3)


def test_in_tumour_scores_are_per_case_and_a_point_forecast_scores_its_mae():
    rng = np.random.default_rng(6)
    post = rng.normal(size=(2, 8, 8))
    tumor = np.zeros((2, 8, 8), dtype=bool)
    tumor[0, 2:4, 2:4] = True  # the second case has no baseline tumour
    point = rng.normal(size=(2, 1, 8, 8))
    s = in_tumour_scores(point, post, tumor, margin=1)
    assert s["n"] == 1 and s["per_case_crps"][1] is None and s["per_case_mae"][1] is None
    assert s["crps"] == pytest.approx(s["mae_of_mean"]) == pytest.approx(s["per_case_crps"][0])
