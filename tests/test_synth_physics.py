"""Known-answer tests of the synthetic cohort's physics: growth, treatment, drift, geometry."""

import numpy as np
import pytest
from scipy import integrate, ndimage

from oncodiff.synth.fields import smooth_noise
from oncodiff.synth.growth import GrowthModel, TumourState, _depth_mm, grow
from oncodiff.synth.lung import longest_axial_diameter_mm
from oncodiff.synth.render import Look, composite, radial_drift
from oncodiff.synth.shapes import Grid, branching_tree, rasterise_tubes
from oncodiff.synth.treatment import ChemoPhase, Chemotherapy, Immunotherapy, Radiotherapy, weekdays


def _model(shape, diffusivity=0.2, rho=0.05, spacing=None, **kwargs):
    spacing = spacing or (1.0,) * len(shape)
    return GrowthModel(np.full(shape, diffusivity, np.float32), np.full(shape, rho, np.float32), spacing,
                       clearance=kwargs.pop("clearance", 0.0), **kwargs)


def _front_mm(state: TumourState, spacing: float) -> float:
    profile = state.viable[:, 1]
    return float(np.argmax(profile < 0.5) * spacing)


def test_fisher_kpp_front_travels_at_the_minimal_speed_with_bramson_delay():
    # Fisher-KPP: a front from compact initial data moves as 2 sqrt(D rho) t - 3/2 sqrt(D/rho) ln t.
    d, rho, h = 0.2, 0.05, 0.5
    start = np.zeros((240, 3), np.float32)
    start[:10] = 1.0
    model = _model(start.shape, d, rho, spacing=(h, h), hypoxia_rate=0.0)
    early, late = grow(TumourState(start, np.zeros_like(start)), model, 0.0, (100.0, 300.0))
    moved = _front_mm(late, h) - _front_mm(early, h)
    expected = 2 * np.sqrt(d * rho) * 200 - 1.5 * np.sqrt(d / rho) * np.log(3.0)
    assert moved == pytest.approx(expected, rel=0.06)


def test_diffusion_conserves_cells_and_zero_diffusivity_is_a_wall():
    rng = np.random.default_rng(0)
    viable = np.zeros((30, 30, 6), np.float32)
    viable[10:15, 10:15, 2:4] = rng.uniform(0.5, 1.0, (5, 5, 2))
    diffusivity = np.full(viable.shape, 0.3, np.float32)
    diffusivity[20:] = 0.0  # a wall from x = 20 on
    model = GrowthModel(diffusivity, np.zeros_like(viable), (1.0, 1.0, 2.0), clearance=0.0, hypoxia_rate=0.0)
    (after,) = grow(TumourState(viable, np.zeros_like(viable)), model, 0.0, (60.0,))
    assert after.viable.sum() == pytest.approx(viable.sum(), rel=1e-4)
    assert after.viable[20:].max() == 0.0
    assert after.viable[19].max() > 0.0


def test_uniform_kill_follows_the_treatment_survival_exactly():
    # No diffusion, growth or clearance, full sensitivity everywhere: viable = c0 exp(L(t)), dead = the rest.
    viable = np.full((8, 8), 0.9, np.float32)
    model = _model(viable.shape, 0.0, 0.0, core_sensitivity=1.0, hypoxia_rate=0.0)
    therapy = Radiotherapy(alpha=0.1, beta=0.01, dose_per_fraction_gy=2.0, fraction_days=weekdays(1, 10))
    (after,) = grow(TumourState(viable, np.zeros_like(viable)), model, 0.0, (20.0,), therapy.log_survival)
    expected = 0.9 * np.exp(-10 * (0.1 * 2 + 0.01 * 4))
    np.testing.assert_allclose(after.viable, expected, rtol=1e-5)
    np.testing.assert_allclose(after.cellularity, 0.9, rtol=1e-5)


def test_rim_is_killed_before_the_core():
    viable = np.zeros((41, 41), np.float32)
    yy, xx = np.mgrid[:41, :41]
    viable[(yy - 20) ** 2 + (xx - 20) ** 2 <= 15 ** 2] = 1.0
    model = _model(viable.shape, 0.0, 0.0, core_sensitivity=0.2, penetration_mm=3.0, hypoxia_rate=0.0)
    therapy = Immunotherapy(0.2, 1.0)
    (after,) = grow(TumourState(viable, np.zeros_like(viable)), model, 0.0, (10.0,), therapy.log_survival)
    depth = ndimage.distance_transform_edt(viable > 0)[20, 20]  # the centre's distance to non-tumour
    expected = np.exp(therapy.log_survival(10.0) * (0.2 + 0.8 * np.exp(-depth / 3.0)))
    assert after.viable[20, 20] == pytest.approx(expected, rel=1e-4)
    assert after.viable[20, 6] < 0.5 * after.viable[20, 20]


def test_linear_quadratic_schedule_and_weekdays():
    days = weekdays(1, 30)
    assert len(days) == 30 and days[-1] == 40 and all((d - 1) % 7 < 5 for d in days)
    therapy = Radiotherapy(alpha=0.05, beta=0.005, dose_per_fraction_gy=2.0, fraction_days=days)
    assert therapy.log_survival(0.5) == 0.0
    assert therapy.log_survival(100) == pytest.approx(-30 * (0.05 * 2 + 0.005 * 4))
    assert therapy.scaled(2.0).log_survival(100) == pytest.approx(2 * therapy.log_survival(100))


def test_immunotherapy_is_the_integral_of_its_ramping_hazard():
    therapy = Immunotherapy(kill_rate=0.1, onset_days=14.0)
    integral, _ = integrate.quad(lambda t: 0.1 * (1 - np.exp(-t / 14.0)), 0, 42)
    assert therapy.log_survival(42) == pytest.approx(-integral, rel=1e-9)


def test_chemotherapy_mixture():
    phases = (ChemoPhase((1, 8, 15), 1.0, 0.1), ChemoPhase((30,), 2.0, 2.0))
    therapy = Chemotherapy(resistant_fraction=0.2, phases=phases)
    assert therapy.log_survival(20) == pytest.approx(np.log(0.8 * np.exp(-3.0) + 0.2 * np.exp(-0.3)))
    assert therapy.log_survival(40) == pytest.approx(np.log(0.8 * np.exp(-5.0) + 0.2 * np.exp(-2.3)))
    values = [therapy.log_survival(d) for d in range(0, 45)]
    assert all(b <= a for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("shape", [(40, 50), (20, 24, 12)])
def test_depth_on_the_bounding_box_equals_the_full_distance_transform(shape):
    rng = np.random.default_rng(1)
    mask = ndimage.gaussian_filter(rng.standard_normal(shape), 3) > 0.1
    mask[0] = False  # the reference treats the outside as background only if the border is background
    spacing = (1.0, 2.0, 3.0)[: len(shape)]
    reference = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=spacing)[(slice(1, -1),) * len(shape)]
    np.testing.assert_allclose(_depth_mm(mask, spacing), reference, rtol=1e-6)


def test_radial_drift_is_local_one_to_one_and_reaches_its_magnitude():
    shape, spacing, center = (80, 80), (1.0, 1.0), (40.0, 40.0)
    box, displacement = radial_drift(shape, spacing, center, drift_mm=4.0, inner_mm=10.0, reach_mm=30.0)
    magnitude = np.hypot(*displacement)
    offsets = np.ogrid[tuple(slice(b.start, b.stop) for b in box)]
    r = np.sqrt(sum((o - c) ** 2 for o, c in zip(offsets, center)))
    assert magnitude[r >= 30].max() == 0.0
    assert magnitude[np.isclose(r, 10.0)].max() == pytest.approx(4.0, rel=1e-5)
    mapped = [np.broadcast_to(o, magnitude.shape) - u for o, u in zip(offsets, displacement)]
    jacobian = (np.gradient(mapped[0], axis=0) * np.gradient(mapped[1], axis=1)
                - np.gradient(mapped[0], axis=1) * np.gradient(mapped[1], axis=0))
    assert jacobian.min() > 0


def test_composite_leaves_tissue_untouched_where_there_is_no_tumour():
    rng = np.random.default_rng(2)
    tissue = rng.uniform(0, 1, (30, 30)).astype(np.float32)
    viable = np.zeros_like(tissue)
    viable[10:20, 10:20] = 0.9
    viable[5, 5] = 0.01  # below the halo threshold
    out = composite(tissue, TumourState(viable, np.zeros_like(viable)), Look(1.2, 0.2, 0.4, 0.6), np.zeros_like(tissue))
    untouched = viable < 0.02
    assert untouched.sum() == 30 * 30 - 100
    assert np.array_equal(out[untouched], tissue[untouched])
    assert np.all(np.abs(out[12:18, 12:18] - 1.2) < 1e-5)


@pytest.mark.parametrize("shape,sigma", [((64, 48), 2.0), ((30, 20, 10), (12.0, 8.0, 4.0))])
def test_smooth_noise_is_standardised(shape, sigma):
    field = smooth_noise(np.random.default_rng(3), shape, sigma)
    assert field.shape == shape and field.dtype == np.float32
    assert abs(field.mean()) < 1e-5 and field.std() == pytest.approx(1.0, rel=1e-4)


def test_branching_tree_and_tube_volume():
    tree = branching_tree(np.random.default_rng(4), (0, 0, 0), (1, 0, 0), 20.0, 2.0, generations=3)
    assert tree.shape == (15, 7) and tree[:, 6].min() == pytest.approx(2.0 * 0.75 ** 3)
    grid = Grid((60, 30, 30), (1.0, 1.0, 1.0))
    straight = np.array([[-20.0, 0, 0, 20.0, 0, 0, 4.0]])
    volume = rasterise_tubes(grid, straight).sum()
    assert volume == pytest.approx(np.pi * 16 * 40 + 4 / 3 * np.pi * 64, rel=0.08)  # cylinder + end caps
    slice_grid = Grid((60, 30), (1.0, 1.0), slice_z=0.0)
    assert rasterise_tubes(slice_grid, straight).sum() == pytest.approx(8 * 40 + np.pi * 16, rel=0.08)


def test_longest_axial_diameter_of_a_rectangle():
    mask = np.zeros((40, 40, 5), np.uint8)
    mask[5:35, 10:26, 1:3] = 1  # 30 x 16 voxels: diagonal 34 voxels
    assert longest_axial_diameter_mm(mask, (0.5, 0.5, 3.0)) == pytest.approx(0.5 * 34.0, abs=0.5)
    assert longest_axial_diameter_mm(np.zeros((10, 10), np.uint8), (1.0, 1.0)) == 0.0
