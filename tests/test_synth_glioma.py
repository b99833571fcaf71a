"""The glioma family (synth/glioma.py): its own physics (anisotropic growth, log-kill, mass effect), exact
counterfactuals and a valid cohort."""

import numpy as np
import pytest

from oncodiff.cohort import read_image
from oncodiff.synth import glioma, synthesize
from oncodiff.synth.growth import TumourState
from oncodiff.synth.simulate import simulate_patient

SPACING = (1.0, 1.0)


def _straight_tract(shape=(41, 41)):
    """White matter along axis 0 in a band, grey matter around it: the structure tensor's direction is axis 0."""
    wm = np.zeros(shape, np.float32)
    wm[:, 14:27] = 1.0
    gm = (1.0 - wm).astype(np.float32)
    return gm, wm


def _model(gm, wm, rho=0.0):
    direction, coherence = glioma.fibre_directions(wm, SPACING)
    return glioma.GliomaModel(tensor=glioma.diffusion_tensor(gm, wm, direction, coherence),
                              proliferation=np.full(gm.shape, rho, np.float32), spacing=SPACING)


def _blob(shape, center, radius=2.0):
    r = np.sqrt(sum((g - c) ** 2 for g, c in zip(np.ogrid[tuple(slice(0, s) for s in shape)], center)))
    return TumourState(np.exp(-0.5 * (r / radius) ** 2).astype(np.float32), np.zeros(shape, np.float32))


def _spread(c: np.ndarray, axis: int, center: int) -> float:
    profile = c.sum(axis=1 - axis)
    x = np.arange(profile.size) - center
    return float(np.sqrt((profile * x * x).sum() / profile.sum()))


def test_white_matter_direction_follows_the_tract():
    gm, wm = _straight_tract()
    direction, coherence = glioma.fibre_directions(wm, SPACING)
    edge = (20, 14)  # on the tract's border the structure is strongest
    assert abs(direction[edge][0]) > 0.95 and coherence[edge] > 0.5


def test_growth_spreads_faster_along_white_matter_than_across():
    gm, wm = _straight_tract()
    state = _blob(gm.shape, (20, 20))
    final = glioma.evolve(state, _model(gm, wm), 0.0, (60.0,))[0]
    along, across = _spread(final.viable, 0, 20), _spread(final.viable, 1, 20)
    assert along > 1.3 * across
    # grey matter alone is isotropic and slower
    iso = glioma.evolve(state, _model(np.ones_like(gm), np.zeros_like(wm)), 0.0, (60.0,))[0]
    assert abs(_spread(iso.viable, 0, 20) - _spread(iso.viable, 1, 20)) < 0.05 and _spread(iso.viable, 0, 20) < along


def test_diffusion_stops_at_csf_and_conserves_cells_without_reaction():
    gm, wm = _straight_tract()
    gm[:, :5] = 0.0  # CSF band on one side
    model = _model(gm, wm)
    blob = _blob(gm.shape, (20, 20))
    state = TumourState(0.5 * blob.viable * (gm + wm > 0), blob.dead)  # below the necrotic density
    final = glioma.evolve(state, model, 0.0, (30.0,))[0]
    assert final.viable[:, :5].max() == 0.0
    assert final.viable.sum() == pytest.approx(state.viable.sum(), rel=2e-3)  # clipped negatives only


def test_log_kill_reduces_the_burden_then_it_regrows():
    gm, wm = _straight_tract()
    model = _model(gm, wm, rho=0.02)
    treatment = glioma.Chemoradiation(kill_per_fraction=0.08, kill_per_cycle=0.0, cycle_days=())
    start = glioma.evolve(_blob(gm.shape, (20, 20), 4.0), model, 0.0, (30.0,))[0]
    states = glioma.evolve(start, model, 0.0, (42.0, 200.0), treatment.log_survival)
    burden = [s.viable.sum() for s in (start, *states)]
    assert burden[1] < 0.2 * burden[0]  # 30 fractions of exp(-0.08): surviving fraction about 0.09
    assert burden[2] > 2 * burden[1]  # regrowth after the last fraction
    assert treatment.log_survival(400) == pytest.approx(-0.08 * 30)
    assert treatment.scaled(2.0).log_survival(400) == pytest.approx(-0.16 * 30)


def test_mass_effect_pushes_tissue_outward():
    shape = (41, 41)
    state = _blob(shape, (20, 20), 6.0)
    largest, (u0, u1) = glioma.mass_effect_displacement(state, SPACING)
    assert largest > 1.0
    assert u0[30, 20] > 0 > u0[10, 20] and u1[20, 30] > 0 > u1[20, 10]  # away from the centre on each side
    assert np.allclose([u0[20, 20], u1[20, 20]], 0.0, atol=1e-3)


def test_patients_are_deterministic_and_counterfactuals_exact():
    a = simulate_patient(glioma.GLIOMA, 0, 5, 2)
    b = simulate_patient(glioma.GLIOMA, 0, 5, 2)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a.scans + a.counterfactuals,
                                                                  b.scans + b.counterfactuals))
    other = simulate_patient(glioma.GLIOMA, 1, 5, 2)
    assert not np.array_equal(a.scans[0].image, other.scans[0].image)
    assert a.label != a.cf_label
    assert any(not np.array_equal(f.image, c.image) for f, c in zip(a.scans[1:], a.counterfactuals))
    # the written follow-ups are the arms the response rule classified: the factual one and the opposite class's
    assert a.truth["response_metric"] == pytest.approx(a.scans[-1].size / a.scans[0].size)
    assert a.truth["cf_response_metric"] == pytest.approx(a.counterfactuals[-1].size / a.scans[0].size)
    for f, c in zip(a.scans[1:], a.counterfactuals):
        assert f.timepoint == c.timepoint and f.days == c.days
    assert a.scans[0].image.shape == (136, 160) and a.scans[0].mask.any()


def test_a_mass_effect_free_render_differs_around_the_tumour(monkeypatch):
    with_mass = simulate_patient(glioma.GLIOMA, 2, 5, 2).scans[0]
    monkeypatch.setattr(glioma, "MASS_EFFECT_MM2", 0.0)
    without = simulate_patient(glioma.GLIOMA, 2, 5, 2).scans[0]
    assert with_mass.drift_mm > 1.0 and without.drift_mm == 0.0
    differs = with_mass.image != without.image
    assert differs.any() and (differs & (with_mass.mask == 0)).any()  # tissue outside the GTV moved


def test_a_clinical_3d_cohort_validates(tmp_path):
    from oncodiff.cohort import load_cohort, validate_cohort

    out = synthesize("glioma", 1, 3, seed=2, out=tmp_path / "g", acquisition="clinical")
    problems = validate_cohort(out)
    assert problems == [], problems
    cohort = load_cohort(out)
    assert set(cohort.scans.timepoint) == {"pre", "week10", "week20"}
    assert (out / "truth" / "P0001" / "cf_week20.nii.gz").is_file()
    # acquired (bias, gain, noise, resampling): percentile normalisation still leaves the tumour unclipped
    for row in cohort.scans.itertuples():
        image = read_image(out / row.image).array
        gtv = read_image(out / row.tumor_mask).array > 0
        if gtv.any():
            assert _clipped_fraction(image, gtv) < 0.02, row.image


def _clipped_fraction(image: np.ndarray, gtv: np.ndarray) -> float:
    """The fraction of GTV voxels at or above the scan's 99.5th percentile: the top value that percentile
    normalisation (data.percentiles) clips to."""
    return float((image[gtv] >= np.percentile(image, 99.5)).mean())


def test_percentile_normalisation_does_not_clip_the_tumour(monkeypatch):
    """The scalp, not the enhancing rim, is a scan's brightest 0.5 %: without it (I_SCALP = I_OUTSIDE) up to
    84 % of a GTV sat at the clip in 2D (96 % in 3D), and post = pre scored near zero by construction."""
    fractions = [_clipped_fraction(scan.image, scan.mask > 0)
                 for index in range(3) for scan in simulate_patient(glioma.GLIOMA, index, 5, 2).scans if scan.mask.any()]
    assert fractions and max(fractions) < 0.01, fractions
    monkeypatch.setattr(glioma, "I_SCALP", glioma.I_OUTSIDE)  # the check can fail: the old head clipped
    scan = simulate_patient(glioma.GLIOMA, 0, 5, 2).scans[0]
    assert _clipped_fraction(scan.image, scan.mask > 0) > 0.1


def test_the_response_rule_matches_the_volumes():
    for index in range(3):
        record = simulate_patient(glioma.GLIOMA, index, 7, 2)
        assert (record.truth["response_metric"] < glioma.RESPONSE_RATIO) == record.label
        assert (record.truth["cf_response_metric"] < glioma.RESPONSE_RATIO) == record.cf_label
