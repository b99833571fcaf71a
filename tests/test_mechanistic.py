"""The mechanistic forecast's solver and fit (data/mechanistic.py) on toy problems made here."""

from __future__ import annotations

import numpy as np
import pytest

from oncodiff.errors import OncodiffError
from oncodiff.data import mechanistic as m


def disc(shape, center, radius, spacing=None):
    spacing = spacing or (1.0,) * len(shape)
    grid = np.meshgrid(*[np.arange(n) * h for n, h in zip(shape, spacing)], indexing="ij")
    return (sum((g - c * h) ** 2 for g, c, h in zip(grid, center, spacing)) <= radius ** 2).astype(np.float32)


def test_pure_diffusion_conserves_mass_and_spreads_in_2d_and_3d():
    for shape, spacing in (((40, 40), (1.0, 1.5)), ((16, 16, 12), (1.0, 1.0, 2.0))):
        u0 = m.initial_density(disc(shape, [n / 2 for n in shape], 4.0)[None])
        final = m.simulate(u0, np.ones_like(u0), spacing, np.array([60.0]), diffusivity=0.25, proliferation=0.0)
        assert final.sum() == pytest.approx(u0.sum(), rel=1e-4)
        assert final.max() < u0.max() - 0.05  # it spread
        assert (final >= 0).all() and (final <= 1).all()


def test_heterogeneous_diffusivity_with_barriers_still_conserves_mass():
    u0 = m.initial_density(disc((32, 32), (16, 16), 5.0)[None])
    weights = np.where(np.arange(32)[None, :, None] < 10, 0.0, 1.0) * np.ones((1, 32, 32))
    weights[0, 16:] *= 0.1
    final = m.simulate(u0, weights, (1.0, 1.0), np.array([100.0]), diffusivity=0.5, proliferation=0.0)
    assert final.sum() == pytest.approx(u0.sum(), rel=1e-4)


def test_proliferation_grows_mass_and_uniform_density_follows_the_logistic_curve():
    u0 = m.initial_density(disc((32, 32), (16, 16), 4.0)[None])
    grown = m.simulate(u0, np.ones_like(u0), (1.0, 1.0), np.array([30.0]), diffusivity=0.05, proliferation=0.05)
    assert grown.sum() > 1.5 * u0.sum()
    uniform = np.full((1, 8, 8), 0.1, np.float32)
    rho, t = 0.03, 50.0
    exact = 0.1 * np.exp(rho * t) / (1 + 0.1 * (np.exp(rho * t) - 1))
    out = m.simulate(uniform, np.ones_like(uniform), (1.0, 1.0), np.array([t]), diffusivity=0.1, proliferation=rho)
    np.testing.assert_allclose(out, exact, rtol=1e-4)


def test_log_kill_cuts_the_density_at_day_zero_and_it_regrows():
    u0 = m.initial_density(disc((24, 24), (12, 12), 4.0)[None])
    killed = m.simulate(u0, np.ones_like(u0), (1.0, 1.0), np.array([0.0]), 0.1, 0.05, kill=1.0)
    np.testing.assert_allclose(killed, u0 * np.exp(-1.0), rtol=1e-5)
    later = m.simulate(u0, np.ones_like(u0), (1.0, 1.0), np.array([40.0]), 0.1, 0.05, kill=1.0)
    assert killed.sum() < later.sum()


def test_time_step_is_inside_the_stability_bound_and_fast_diffusion_stays_bounded():
    assert m.stable_step(1.0, (1.0, 1.0)) == pytest.approx(m.STABILITY / 4)
    assert m.stable_step(1.0, (0.5, 1.0, 2.0)) == pytest.approx(m.STABILITY / (2 * (4 + 1 + 0.25)))
    assert m.stable_step(0.0, (1.0,)) == m.MAX_STEP_DAYS
    u0 = np.zeros((1, 20, 20), np.float32)
    u0[0, 10, 10] = 1.0  # a spike: the first mode an unstable explicit step would blow up
    out = m.simulate(u0, np.ones_like(u0), (1.0, 1.0), np.array([30.0]), diffusivity=2.0, proliferation=0.0)
    assert (out >= -1e-6).all() and out.max() <= 1.0 and out.sum() == pytest.approx(1.0, rel=1e-4)


def test_each_case_stops_at_its_own_days():
    u0 = m.initial_density(np.stack([disc((24, 24), (12, 12), 3.0)] * 3))
    days = np.array([10.0, 35.5, 70.0])
    together = m.simulate(u0, np.ones_like(u0), (1.0, 1.0), days, 0.2, np.array([0.0, 0.02, 0.05]), np.array([0, 1, 2]))
    for i in range(3):
        alone = m.simulate(u0[i:i + 1], np.ones_like(u0[:1]), (1.0, 1.0), days[i:i + 1], 0.2, [0.0, 0.02, 0.05][i], i)
        np.testing.assert_allclose(together[i], alone[0], atol=1e-6)
    with pytest.raises(OncodiffError, match="days"):
        m.simulate(u0[:1], np.ones_like(u0[:1]), (1.0, 1.0), np.array([-1.0]), 0.1, 0.0)


def test_weighted_median_contrast_minimises_the_absolute_error():
    rng = np.random.default_rng(0)
    change, residual = rng.normal(size=200), rng.normal(size=200)
    c = m.weighted_median_contrast(residual, change)
    candidates = np.linspace(-3, 3, 2001)
    brute = candidates[np.argmin([np.abs(residual - k * change).sum() for k in candidates])]
    assert np.abs(residual - c * change).sum() <= np.abs(residual - brute * change).sum() + 1e-9
    assert m.weighted_median_contrast(residual, np.zeros(200)) == 0.0


def test_diffusivity_weights_follow_the_tissue_names():
    anatomy = np.zeros((1, 2, 6, 6), np.float32)
    anatomy[0, 0, :, :2] = 1  # gm
    anatomy[0, 1, :, 2:4] = 1  # wm
    tumour = np.zeros((1, 6, 6))
    tumour[0, 0, 5] = 1
    w = m.diffusivity_weights(anatomy, ("gm", "wm"), tumour)
    assert (w[0, 1:, :2] == m.GREY_RATIO).all() and (w[0, :, 2:4] == 1).all()
    assert (w[0, 1:, 4:] == 0).all() and w[0, 0, 5] == m.GREY_RATIO  # outside the tissue, the tumour is grey
    assert (m.diffusivity_weights(anatomy, ("organ", "vessels"), tumour) == 1).all()  # no tissue names: isotropic


def test_crop_spacing_reads_the_crop_affine():
    from oncodiff.data.geometry import GeometryRecord

    affine = np.diag([0.8, 1.2, 3.0, 1.0])
    record = GeometryRecord(np.eye(4), (4, 4, 4), np.eye(4), (4, 4, 4), affine, (4, 4))
    assert m.crop_spacing(record, 2) == pytest.approx((0.8, 1.2))
    assert m.crop_spacing(record, 3) == pytest.approx((0.8, 1.2, 3.0))


def toy_pairs(truth: m.GrowthParameters, n: int = 10, seed: int = 0, noise: float = 0.01):
    """n 2D pairs whose follow-ups are exactly the forecast under ``truth`` (plus a little noise)."""
    rng = np.random.default_rng(seed)
    shape = (32, 32)
    tumour = np.stack([disc(shape, (16 + rng.integers(-3, 4), 16 + rng.integers(-3, 4)), rng.uniform(3, 6))
                       for _ in range(n)])
    anatomy = np.zeros((n, 2) + shape, np.float32)
    anatomy[:, 1, :, :20] = 1  # white matter on the left, grey on the right
    anatomy[:, 0, :, 20:] = 1
    denoised = (0.3 + 0.1 * rng.random((n,) + shape)).astype(np.float32)
    days = rng.uniform(40, 120, n)
    spacings = [(1.0, 1.0)] * n
    post = m.forecast(denoised, tumour, anatomy, ("gm", "wm"), days, spacings, [truth] * n)
    post = post + noise * rng.normal(size=post.shape).astype(np.float32)
    return denoised, post, tumour, anatomy, days, spacings


def test_fitting_recovers_known_parameters_and_per_class_parameters():
    truths = [m.GrowthParameters(0.05, 0.03, 1.5, 0.6, 0.0, 0), m.GrowthParameters(0.25, 0.1, 0.0, 0.4, 0.0, 0)]
    parts = [toy_pairs(t, seed=s) for s, t in enumerate(truths)]
    for (denoised, post, tumour, anatomy, days, spacings), truth in zip(parts, truths):
        data = m.fit_data(denoised, post, tumour, anatomy, ("gm", "wm"), days, spacings)
        fitted = m.fit_parameters(data, m.grid_changes(data))
        assert (fitted.diffusivity, fitted.proliferation, fitted.kill) == (truth.diffusivity, truth.proliferation,
                                                                           truth.kill)
        assert fitted.contrast == pytest.approx(truth.contrast, rel=0.05)
        assert fitted.mae < 0.02 and fitted.n_cases == 10
    pooled = [np.concatenate(arrays) if isinstance(arrays[0], np.ndarray) else arrays[0] + arrays[1]
              for arrays in zip(*parts)]
    data = m.fit_data(*pooled[:4], ("gm", "wm"), *pooled[4:])
    changes = m.grid_changes(data)
    for k, truth in enumerate(truths):  # each class's rows give back its own parameters
        fitted = m.fit_parameters(data, changes, list(range(10 * k, 10 * k + 10)))
        assert (fitted.diffusivity, fitted.proliferation, fitted.kill) == (truth.diffusivity, truth.proliferation,
                                                                           truth.kill)


def test_subsample_is_seeded_and_bounded():
    assert list(m.subsample(5, 10)) == list(range(5))
    picked = m.subsample(100, 10)
    assert len(set(picked)) == 10 and list(picked) == sorted(picked) and list(picked) == list(m.subsample(100, 10))


def test_refinement_leaves_the_grid_towards_parameters_between_its_points():
    truth = m.GrowthParameters(0.12, 0.05, 1.0, 0.5, 0.0, 0)  # on no grid point
    denoised, post, tumour, anatomy, days, spacings = toy_pairs(truth, n=8, noise=0.0)
    data = m.fit_data(denoised, post, tumour, anatomy, ("gm", "wm"), days, spacings)
    grid = m.fit_parameters(data, m.grid_changes(data))
    refined = m.refine(data, grid)
    assert refined.mae < 0.5 * grid.mae
    assert refined.n_cases == 8 and m.BOUNDS[0][0] <= refined.diffusivity <= m.BOUNDS[0][1]
    assert abs(np.log(refined.diffusivity / truth.diffusivity)) < abs(np.log(grid.diffusivity / truth.diffusivity))
    assert m.refine(data, refined, evaluations=5).mae <= refined.mae  # never worse than where it starts
