"""The preprocessing that undoes a clinical acquisition: registration, N4, normalisation, validate's warning."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from oncodiff.cohort import Image, affine_from_spacing, load_cohort, read_image
from oncodiff.data.registration import misalignment_report, misalignment_warnings
from oncodiff.config import DataConfig
from oncodiff.data import preprocess_cohort, register
from oncodiff.data.bias import correct_bias
from oncodiff.data.cache import cache_key
from oncodiff.data.intensity import fit_intensity
from oncodiff.data.preprocess import write_preprocessing_report
from oncodiff.data.registration import displacement_mm, measure_misalignment
from oncodiff.errors import ConfigError
from oncodiff.synth import synthesize
from oncodiff.synth.acquisition import world_map_from_truth

BLOBS = [((14, 17, 16), (5, 3, 4), 1.0), ((28, 24, 22), (4, 6, 3), 0.8), ((20, 32, 12), (3, 3, 5), 0.6)]


def blobs(points: np.ndarray) -> np.ndarray:
    """Three anisotropic Gaussian blobs (no symmetry a rigid map could confuse) at world points (..., 3) in mm."""
    return sum(a * np.exp(-(((points - c) / w) ** 2).sum(-1) / 2) for c, w, a in BLOBS).astype(np.float32)


def volume(shape, spacing, world_map=np.eye(4)) -> Image:
    """The blobs as a scan on a (shape, spacing) grid, the anatomy moved by ``world_map`` (baseline -> scan)."""
    affine = affine_from_spacing(spacing)
    points = np.moveaxis(np.indices(shape, dtype=float), 0, -1) * spacing
    inverse = np.linalg.inv(world_map)
    return Image(blobs(points @ inverse[:3, :3].T + inverse[:3, 3]), affine)


def rigid(angle_deg: float, axis, shift_mm, center) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = Rotation.from_rotvec(np.deg2rad(angle_deg) * np.asarray(axis) / np.linalg.norm(axis)).as_matrix()
    out[:3, 3] = np.asarray(center) + np.asarray(shift_mm) - out[:3, :3] @ np.asarray(center)
    return out


def test_rigid_registration_recovers_a_known_rotation_and_shift_within_1mm_and_1_degree():
    shape, spacing = (44, 48, 18), (1.0, 1.0, 2.0)
    truth = rigid(3.0, (0.3, -0.4, 1.0), (2.5, -1.5, 1.0), center=(22.0, 24.0, 17.0))
    fixed, moving = volume(shape, spacing), volume(shape, spacing, truth)
    found = register(fixed, moving, "rigid")
    residual = np.linalg.inv(truth) @ found
    assert np.rad2deg(Rotation.from_matrix(residual[:3, :3]).magnitude()) < 1.0
    for centre, _, _ in BLOBS:
        point = np.append(centre, 1.0)
        assert np.linalg.norm((found @ point - truth @ point)[:3]) < 1.0
    measured, _ = measure_misalignment(fixed, moving)
    assert measured == pytest.approx(displacement_mm(fixed, truth), abs=1.0)
    assert measure_misalignment(fixed, fixed)[0] < 0.3


def _head(shape=(56, 56, 28)) -> np.ndarray:
    """A bias-free head: background 0, a ball of 'grey matter' 0.6 around 'white matter' 0.9, a dark ventricle."""
    grid = np.indices(shape, dtype=float)
    r = np.sqrt(sum(((g - (n - 1) / 2) / (n / 2)) ** 2 for g, n in zip(grid, shape)))
    head = np.where(r < 0.85, 0.6, 0.0) + np.where(r < 0.6, 0.3, 0.0) - np.where(r < 0.15, 0.7, 0.0)
    return ndimage.gaussian_filter(head, 1.0).astype(np.float32)


def test_n4_removes_a_known_bias_field():
    clean = _head()
    grid = np.indices(clean.shape, dtype=float) / np.asarray(clean.shape)[:, None, None, None]
    field = np.exp(0.35 * (grid[0] - 0.5) - 0.25 * (grid[1] - 0.5) ** 2 * 4 + 0.2 * (grid[2] - 0.5))
    rng = np.random.default_rng(0)
    biased = clean * field + 0.01 * rng.standard_normal(clean.shape)
    corrected, statistics = correct_bias(Image(biased.astype(np.float32) * 1000, affine_from_spacing((2.0,) * 3)))
    inside = clean > 0.3
    before = np.corrcoef(biased[inside], clean[inside])[0, 1]
    after = np.corrcoef(corrected.array[inside], clean[inside])[0, 1]
    assert after > before and after > 0.98
    white = clean > 0.85  # one tissue: its spread is the bias field's (and a little noise)
    spread = [float(np.std(x[white]) / np.mean(x[white])) for x in (biased, corrected.array)]
    assert spread[1] < 0.5 * spread[0]
    assert statistics.log_sd > 0.05 and statistics.min_gain < 1.0 < statistics.max_gain


@pytest.mark.parametrize("method", ["percentile", "zscore", "nonzero_zscore", "whitestripe", "tissue"])
def test_normalisation_maps_two_scans_of_one_anatomy_onto_one_scale(method):
    clean = _head()
    rng = np.random.default_rng(1)
    first = 800 * clean + 4 * rng.standard_normal(clean.shape)
    second = 1400 * clean + 120 + 7 * rng.standard_normal(clean.shape)  # another scanner: gain 1.75, offset 120
    config = DataConfig()
    a, b = (fit_intensity(x, method, config).apply(x) for x in (first, second))
    inside = clean > 0.3
    spread = np.percentile(a[inside], 99) - np.percentile(a[inside], 1)
    assert np.abs(a - b)[inside].mean() < 0.03 * spread
    raw_spread = np.percentile(first[inside], 99) - np.percentile(first[inside], 1)
    assert np.abs(first - second)[inside].mean() > 0.3 * raw_spread  # the test would catch no normalisation


def test_tissue_normalisation_is_not_moved_by_the_tumour_and_stays_in_the_unit_range():
    """A bright lesion of about 1.6 % of the scan (more than the 0.5 % above its 99.5th percentile) sets the top
    percentile; when it shrinks to a point, the percentile scale moves normal tissue, the tissue scale leaves it
    where it was (and both stay in [0, 1])."""
    clean = _head()
    grid = np.indices(clean.shape, dtype=float)
    centre = np.asarray(clean.shape)[:, None, None, None] / 2 + np.asarray([8, 0, 0])[:, None, None, None]
    distance = np.sqrt(((grid - centre) ** 2).sum(axis=0))
    rng = np.random.default_rng(3)
    scans = [1000 * np.where(distance < radius, 1.6, clean) + 5 * rng.standard_normal(clean.shape)
             for radius in (7.0, 1.5)]
    white = (clean > 0.85) & (distance > 9)
    config = DataConfig()
    moved = {}
    for method in ("percentile", "tissue"):
        before, after = (fit_intensity(x, method, config).apply(x) for x in scans)
        assert before.min() >= 0 and before.max() <= 1
        moved[method] = abs(float(before[white].mean() - after[white].mean()))
    assert moved["tissue"] < 0.01
    assert moved["percentile"] > 0.05  # the test would catch a tissue scale that moved as the percentile one


# ---- a clinical cohort end to end ------------------------------------------------------------------

@pytest.fixture(scope="module")
def clinical(tmp_path_factory):
    root = tmp_path_factory.mktemp("clinical")
    cohort = synthesize("brain", 1, 3, seed=2, out=root / "brain3d", acquisition="clinical")
    config = DataConfig(dims=3, crop_size=(32, 32, 16))
    result = preprocess_cohort(cohort, config, cache_dir=root / "cache")
    bare = preprocess_cohort(cohort, config.model_copy(update={"registration": "none", "bias_correction": "none"}),
                             cache_dir=root / "cache")
    return cohort, config, result, bare


def _truth_maps(cohort) -> dict[str, np.ndarray]:
    truth = pd.read_csv(cohort / "truth" / "scans.csv", dtype={"patient_id": str})
    factual = truth[truth.counterfactual == 0]
    return {row.timepoint: world_map_from_truth(row.world_map) for row in factual.itertuples()}


def test_validate_detects_each_misaligned_follow_up_and_says_by_how_much(clinical):
    cohort = clinical[0]
    warnings = misalignment_warnings(cohort)
    baseline = read_image(cohort / "P0001" / "pre.nii.gz")
    maps = _truth_maps(cohort)
    assert len(warnings) == 2
    for timepoint in ("month2", "month4"):
        (line,) = [w for w in warnings if f"/{timepoint}.nii.gz" in w]
        said = float(line.split(" moves the anatomy ")[1].split(" mm")[0])
        assert said == pytest.approx(displacement_mm(baseline, maps[timepoint]), abs=1.5)


def test_misaligned_follow_ups_are_one_line_and_validate_details_lists_them(clinical):
    from typer.testing import CliRunner

    from oncodiff.cli import app

    cohort, _, result, _ = clinical
    summary, details = misalignment_report(cohort)
    measured = sorted(float(line.split(" moves the anatomy ")[1].split(" mm")[0]) for line in details)
    assert len(details) == 2
    assert summary.startswith(f"2 of 2 follow-ups look misaligned to their baseline, "
                              f"{measured[0]:.1f}-{measured[1]:.1f} mm; preprocessing registers them")
    assert "validate --details" in summary
    shown = result.misalignment_summary()
    assert shown.startswith("2 of 2 follow-ups looked misaligned") and "preprocessing registered them" in shown
    runner = CliRunner()
    brief = runner.invoke(app, ["validate", str(cohort)])
    assert brief.exit_code == 0
    assert brief.stderr.count("misaligned") == 1 and f"warning: {summary}" in brief.stderr
    listed = runner.invoke(app, ["validate", str(cohort), "--details"])
    assert listed.exit_code == 0 and listed.stderr.count("misaligned") == 3
    assert all(line.split(" (patient")[0] in listed.stderr for line in details)


def test_default_preprocessing_recovers_the_motion_bias_and_scale(clinical):
    cohort, _, result, bare = clinical
    baseline = read_image(cohort / "P0001" / "pre.nii.gz")
    maps = _truth_maps(cohort)
    for record in result.records:
        steps = record.steps
        assert steps["registration"] == "rigid" and steps["misalignment_mm"] > 1.0
        assert displacement_mm(baseline, np.linalg.inv(maps[record.timepoint]) @ record.registration) < 1.0
        assert steps["pre_bias"]["log_sd"] > 0.05 and steps["post_bias"]["log_sd"] > 0.05
    assert all(r.steps["registration"] == "none" and r.steps["post_bias"] is None for r in bare.records)
    outside = (result.arrays["tumor_mask"] == 0) & (result.arrays["post_mask"] == 0)
    error, bare_error = (np.abs(r.arrays["post"] - r.arrays["pre"])[outside].mean() for r in (result, bare))
    assert error < 0.7 * bare_error


def test_cache_key_holds_the_new_options_and_the_report_records_each_pair(clinical, tmp_path):
    cohort, config, result, _ = clinical
    loaded = load_cohort(cohort)
    keys = {cache_key(loaded, config.model_copy(update=change)) for change in (
        {}, {"bias_correction": "none"}, {"registration": "rigid"}, {"registration_threshold_mm": 2.0})}
    assert len(keys) == 4
    # training-time augmentation does not change the preprocessed arrays, so it shares their cache entry
    assert cache_key(loaded, config.model_copy(update={"intensity_augmentation": True})) == cache_key(loaded, config)
    # nor does the slice margin training takes: training and prediction share the cut slices' cache
    assert cache_key(loaded, config.model_copy(update={"train_slice_margin": 2})) == cache_key(loaded, config)
    assert cache_key(loaded, config.model_copy(update={"slice_margin": 4})) != cache_key(loaded, config)
    report = json.loads(write_preprocessing_report(result, tmp_path / "preprocessing.json").read_text())
    assert [p["timepoint"] for p in report["pairs"]] == ["month2", "month4"]
    assert {"pre_bias", "post_bias", "misalignment_mm", "registration", "post_intensity"} <= set(report["pairs"][0])


def test_n4_on_a_ct_cohort_is_refused(tmp_path):
    cohort = synthesize("lung", 1, 2, seed=0, out=tmp_path / "lung")
    with pytest.raises(ConfigError, match="bias_correction"):
        preprocess_cohort(cohort, DataConfig(bias_correction="n4"), cache_dir=tmp_path / "cache")
