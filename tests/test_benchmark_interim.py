"""benchmarks/interim.py's scores: the CRPS of a weighted empirical forecast and the patient bootstrap."""

import numpy as np
from factory import load_benchmark

interim = load_benchmark("interim")


def test_crps_of_a_point_mass_is_the_absolute_error():
    assert interim.crps_empirical(np.array([2.0]), np.array([1.0]), 5.0) == 3.0


def test_crps_matches_the_integral_of_the_squared_cdf_difference():
    values, weights, y = np.array([-1.0, 0.5, 2.0]), np.array([0.2, 0.5, 0.3]), 0.8
    grid = np.linspace(-5, 5, 200001)
    cdf = (weights[None, :] * (values[None, :] <= grid[:, None])).sum(1)
    integral = np.trapezoid((cdf - (grid >= y)) ** 2, grid)
    assert abs(interim.crps_empirical(values, weights, y) - integral) < 1e-3


def test_bootstrap_interval_covers_the_mean():
    differences = np.random.default_rng(0).normal(-0.2, 0.1, 40)
    mean, low, high = interim.bootstrap(differences, np.arange(40), 0)  # one row per patient
    assert low < mean < high < 0 and abs(mean - differences.mean()) < 1e-12
