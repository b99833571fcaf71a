"""The samples' spread calibration (oncodiff/pipeline/spread.py): what scaling keeps, and that the fitted factor
is the one a known ensemble needs."""

from __future__ import annotations

import numpy as np
import pytest

from oncodiff.arrays import crps_ensemble
from oncodiff.evaluation.distribution_scores import spread_skill
from oncodiff.pipeline.spread import (
    FACTORS, BoxSamples, SpreadCalibration, box_crps, box_samples, box_spread_skill, class_means, scale_spread,
)


def test_class_means_are_per_case_and_per_class():
    samples = np.array([[[1.0], [3.0], [10.0], [20.0]], [[0.0], [2.0], [4.0], [6.0]]])  # (2 cases, 4 samples, 1 voxel)
    classes = np.array([[0, 0, 1, 1], [1, 1, 1, 1]])
    np.testing.assert_allclose(class_means(samples, classes)[..., 0], [[2, 2, 15, 15], [3, 3, 3, 3]])
    np.testing.assert_allclose(class_means(samples, None)[..., 0], [[8.5] * 4, [3] * 4])
    with pytest.raises(ValueError, match="does not match"):
        class_means(samples, classes[:, :3])


def test_scaling_multiplies_the_deviations_and_keeps_every_class_mean():
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(3, 6, 5, 4)).astype(np.float32)
    classes = np.array([[0, 0, 0, 1, 1, 1], [0, 1, 1, 1, 1, 1], [1] * 6])  # case 1: class 0 drawn once
    scaled = scale_spread(samples, classes, 3.0)
    assert scaled.dtype == samples.dtype and scaled.shape == samples.shape
    np.testing.assert_allclose(scaled.mean(1), samples.mean(1), atol=1e-5)  # the sample mean is unchanged
    means = class_means(samples, classes)
    np.testing.assert_allclose(class_means(scaled, classes), means, atol=1e-5)
    np.testing.assert_allclose(scaled - means, 3.0 * (samples - means), atol=1e-5)
    np.testing.assert_array_equal(scaled[1, 0], samples[1, 0])  # a class drawn once keeps its one sample
    assert scale_spread(samples, classes, 1.0) is samples
    with pytest.raises(ValueError, match=">= 0"):
        scale_spread(samples, classes, -1.0)


def test_box_samples_take_the_grown_tumour_box_and_skip_cases_without_a_tumour():
    samples = np.arange(2 * 3 * 8 * 8, dtype=float).reshape(2, 3, 8, 8)
    post = np.zeros((2, 8, 8))
    tumor = np.zeros((2, 8, 8), bool)
    tumor[0, 3:5, 3:5] = True  # case 1 has no tumour
    boxes = box_samples(samples, None, post, tumor, margin=1)
    assert len(boxes) == 1 and boxes[0].samples.shape == (3, 16) and boxes[0].truth.shape == (16,)
    np.testing.assert_array_equal(boxes[0].samples[0], samples[0, 0, 2:6, 2:6].ravel())


def _ensemble(rng, n_cases: int, n_samples: int, spread: float, error: float = 1.0) -> list[BoxSamples]:
    """Cases whose truth is centre + N(0, error^2) per voxel and whose samples are centre + N(0, spread^2):
    a calibrated ensemble when spread = error."""
    cases = []
    for _ in range(n_cases):
        centre = rng.normal(size=400)
        truth = centre + rng.normal(scale=error, size=400)
        cases.append(BoxSamples(centre + rng.normal(scale=spread, size=(n_samples, 400)), None, truth))
    return cases


@pytest.mark.parametrize(("spread", "factor"), [(0.25, 4.0), (1.0, 1.0), (2.0, 0.5)])
def test_the_fitted_factor_is_the_one_the_ensemble_needs(spread, factor):
    # too narrow by 4, calibrated, too wide by 2: least CRPS picks the factor that makes it calibrated
    fitted = SpreadCalibration.fit(_ensemble(np.random.default_rng(1), 20, 8, spread), "val")
    assert fitted.factor == factor
    assert fitted.crps_scaled <= fitted.crps_raw
    # near 1 (the too-wide ensemble's mean keeps its sampling noise, which scaling does not remove: 0.85)
    assert fitted.spread_skill_scaled == pytest.approx(1.0, abs=0.2)
    assert abs(fitted.spread_skill_scaled - 1) <= abs(fitted.spread_skill_raw - 1)
    assert set(fitted.grid) == {f"{f:g}" for f in FACTORS} and fitted.n_cases == 20 and fitted.n_samples == 8
    assert SpreadCalibration.from_dict(fitted.to_dict()) == fitted
    assert f"x{factor:g}" in fitted.describe()


def test_the_box_scores_are_evaluations_own():
    rng = np.random.default_rng(2)
    samples = rng.normal(size=(2, 4, 6, 6))
    post = rng.normal(size=(2, 6, 6))
    tumor = np.zeros((2, 6, 6), bool)
    tumor[:, 2:4, 2:4] = True
    boxes = box_samples(samples, None, post, tumor, margin=1)
    expected = np.mean([crps_ensemble(np.moveaxis(samples[b][:, 1:5, 1:5], 0, -1), post[b, 1:5, 1:5]).mean()
                        for b in range(2)])
    assert box_crps(boxes, 1.0) == pytest.approx(expected)
    assert box_spread_skill(boxes, 1.0) == pytest.approx(spread_skill(samples, post, tumor, margin=1)["ratio"])


def test_nothing_is_fitted_without_cases_or_spread():
    assert SpreadCalibration.fit([], "val") is None
    one = [BoxSamples(np.zeros((1, 5)), None, np.ones(5))]
    assert SpreadCalibration.fit(one, "val") is None


def test_identical_samples_keep_the_factor_one():
    # no spread to scale: every factor scores alike, and a tie keeps the samples as drawn
    cases = [BoxSamples(np.zeros((4, 10)), None, np.ones(10))]
    assert SpreadCalibration.fit(cases, "val").factor == 1.0
