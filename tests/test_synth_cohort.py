"""`oncodiff synth` cohorts: valid, readable, reproducible, with local counterfactuals and rule-based labels."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import ndimage

from oncodiff.cohort import load_cohort, read_image
from oncodiff.cohort.schema import CohortSpec
from oncodiff.errors import OncodiffError
from oncodiff.synth import synthesize
from oncodiff.synth.breast import PCR_MAX_RESIDUAL
from oncodiff.synth.lung import longest_axial_diameter_mm
from oncodiff.synth.registry import SITES

CF_COLUMNS = ["patient_id", "lesion_id", "timepoint", "days", "response", "image", "tumor_mask"]


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def cohorts(request, tmp_path_factory):
    """Every site, 3 patients in 2D and 1 in 3D (volumes are bigger)."""
    root = tmp_path_factory.mktemp(f"synth{request.param}d")
    n_patients = 3 if request.param == 2 else 1
    return {site: synthesize(site, n_patients, request.param, seed=3, out=root / site) for site in SITES}


def _border(mask: np.ndarray) -> np.ndarray:
    return np.concatenate([np.take(mask, [0, -1], axis=axis).ravel() for axis in range(mask.ndim)])


def _validate_cohort():
    try:
        from oncodiff.cohort import validate_cohort
    except ImportError:  # the validator lands from the cohort branch; test_every_file_reads covers meanwhile
        return None
    return validate_cohort


@pytest.mark.parametrize("site", list(SITES))
def test_every_site_validates(cohorts, site):
    validate_cohort = _validate_cohort()
    if validate_cohort is None:
        pytest.skip("oncodiff.cohort.validate_cohort is not in this branch yet")
    assert validate_cohort(cohorts[site]) == []


@pytest.mark.parametrize("site", list(SITES))
def test_every_file_reads_with_matching_masks(cohorts, site):
    cohort = load_cohort(cohorts[site])
    spec, patients = cohort.spec, cohort.patients
    assert spec.anatomy == SITES[site].anatomy_names and spec.modality == SITES[site].modality
    assert {spec.outcomes.response.column, "os_days", "death"} <= set(patients.columns)
    for variable in spec.clinical:
        values = patients[variable.name].dropna()
        if variable.type == "categorical":
            assert set(values) <= set(variable.categories)
        else:
            assert pd.to_numeric(values).notna().all()
    for _, scan in cohort.scans.iterrows():
        image = read_image(cohort.path(scan["image"]))
        mask = read_image(cohort.path(scan["tumor_mask"])).array
        assert image.ndim == cohort.dims and np.isfinite(image.array).all() and mask.shape == image.shape
        assert set(np.unique(mask)) <= {0, 1}
        assert _border(mask).max() == 0, "the tumour touches the image border"
        if image.ndim == 3:  # room for the demo's 64 x 64 crops (glioma: 2.5 mm voxels, 170 x 200 mm in plane)
            assert min(image.shape[:2]) >= (64 if site == "glioma" else 96) and image.shape[2] >= 16
        if scan["timepoint"] == spec.baseline:
            assert mask.any()
            for column in spec.anatomy_columns():
                assert read_image(cohort.path(scan[column])).shape == image.shape


@pytest.mark.parametrize("site", list(SITES))
def test_counterfactuals_table_holds_the_opposite_class(cohorts, site):
    root = cohorts[site]
    table = pd.read_csv(root / "counterfactuals.csv", dtype={"patient_id": str}, keep_default_na=False)
    assert list(table.columns) == CF_COLUMNS
    column = SITES[site].response_column
    labels = load_cohort(root).patients[column]
    followups = load_cohort(root).followups()
    assert len(table) == len(followups)
    for _, row in table.iterrows():
        assert row["response"] != labels[row["patient_id"]] and row["response"] in SITES[site].response_values
        assert (root / row["image"]).is_file() and (root / row["tumor_mask"]).is_file()
    assert not set(table["image"]) & set(load_cohort(root).scans["image"])


@pytest.mark.parametrize("site", list(SITES))
def test_counterfactual_differs_only_where_the_tumour_and_its_drift_are(cohorts, site):
    root, model = cohorts[site], SITES[site]
    cohort = load_cohort(root)
    table = pd.read_csv(root / "counterfactuals.csv", dtype={"patient_id": str})
    reach_mm = model.mass_effect_reach_mm + 15.0  # drift support beyond the tumour, plus its halo
    for _, cf in table.iterrows():
        factual = cohort.scans[(cohort.scans.patient_id == cf.patient_id) & (cohort.scans.timepoint == cf.timepoint)]
        baseline = cohort.baselines()[cohort.baselines().patient_id == cf.patient_id]
        image = read_image(cohort.path(factual.iloc[0]["image"]))
        masks = [read_image(cohort.path(p)).array > 0 for p in
                 (factual.iloc[0]["tumor_mask"], cf["tumor_mask"], baseline.iloc[0]["tumor_mask"])]
        distance = ndimage.distance_transform_edt(~(masks[0] | masks[1] | masks[2]), sampling=image.spacing)
        differs = image.array != read_image(root / cf["image"]).array
        assert differs.any(), f"{cf.patient_id} {cf.timepoint}: the counterfactual equals the factual scan"
        assert not differs[distance > reach_mm].any(), "the counterfactual changed voxels far from the tumour"
        assert differs.sum() < 0.25 * differs.size


def test_labels_follow_the_documented_rules(cohorts):
    brain = load_cohort(cohorts["brain"])
    for pid, patient in brain.patients.iterrows():
        scans = brain.scans[brain.scans.patient_id == pid].set_index("timepoint")
        ratio = (read_image(brain.path(scans.loc["month4", "tumor_mask"])).array.sum()
                 / read_image(brain.path(scans.loc["pre", "tumor_mask"])).array.sum())
        assert (patient["response"] == "good") == (ratio < 0.8)
    lung = load_cohort(cohorts["lung"])
    for pid, patient in lung.patients.iterrows():
        scans = lung.scans[lung.scans.patient_id == pid].set_index("timepoint")
        before, after = (read_image(lung.path(scans.loc[t, "tumor_mask"])) for t in ("pre", "week6"))
        change = longest_axial_diameter_mm(after.array, after.spacing) / longest_axial_diameter_mm(
            before.array, before.spacing) - 1
        assert (patient["response"] == "responder") == (change <= -0.30)
    breast = pd.read_csv(cohorts["breast"] / "truth" / "patients.csv", dtype={"patient_id": str})
    labels = load_cohort(cohorts["breast"]).patients["pcr"]
    for _, truth in breast.iterrows():
        assert (labels[truth.patient_id] == "yes") == (truth.response_metric < PCR_MAX_RESIDUAL)


def test_cohort_yaml_is_a_valid_spec_with_days_and_baseline(cohorts):
    for site, root in cohorts.items():
        spec = CohortSpec.model_validate(yaml.safe_load((root / "cohort.yaml").read_text(encoding="utf-8")))
        scans = load_cohort(root).scans
        expected = {t.label: t.days for t in SITES[site].timepoints}
        assert dict(zip(scans.timepoint, scans.days)) == expected and spec.baseline == "pre"


def _digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file of a cohort but its output marker (which names the folder it is in)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".oncodiff-output.json"}


def test_same_seed_gives_identical_files_in_any_number_of_processes(tmp_path):
    first = _digest(synthesize("lung", 2, 2, seed=11, out=tmp_path / "a"))
    assert first == _digest(synthesize("lung", 2, 2, seed=11, out=tmp_path / "b", workers=2))
    other = _digest(synthesize("lung", 2, 2, seed=12, out=tmp_path / "c"))
    assert len(first) > 20 and first.keys() == other.keys()
    assert first["P0001/pre.nii.gz"] != other["P0001/pre.nii.gz"]


def test_refuses_a_non_empty_folder_even_with_overwrite(tmp_path):
    out = tmp_path / "cohort"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    for overwrite in (False, True):
        with pytest.raises(OncodiffError, match="not empty"):
            synthesize("lung", 1, 2, seed=0, out=out, overwrite=overwrite)
    assert (out / "keep.txt").read_text(encoding="utf-8") == "mine"


def test_overwrite_replaces_a_cohort_synth_wrote(tmp_path):
    out = synthesize("lung", 2, 2, seed=0, out=tmp_path / "cohort")
    with pytest.raises(OncodiffError, match="--overwrite"):
        synthesize("lung", 1, 2, seed=0, out=out)
    synthesize("lung", 1, 2, seed=0, out=out, overwrite=True)
    assert len((out / "patients.csv").read_text(encoding="utf-8").splitlines()) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["cohort"]  # no partial or old folder left beside it


def test_a_failure_leaves_no_half_cohort(tmp_path, monkeypatch):
    import oncodiff.synth.writer as writer

    real = writer.simulate_patient

    def fail_on_second(site, index, *args):
        if index == 1:
            raise RuntimeError("simulated crash")
        return real(site, index, *args)

    monkeypatch.setattr(writer, "simulate_patient", fail_on_second)
    with pytest.raises(RuntimeError):
        synthesize("lung", 2, 2, seed=0, out=tmp_path / "cohort")
    assert list(tmp_path.iterdir()) == []


def test_options_are_checked(tmp_path):
    for kwargs, message in (({"site": "liver"}, "site"), ({"dims": 4}, "dims"), ({"n_patients": 0}, "n_patients"),
                            ({"misalign_mm": -1.0}, "misalign_mm")):
        arguments = {"site": "lung", "n_patients": 1, "dims": 2, "seed": 0, "out": tmp_path / "x", **kwargs}
        with pytest.raises(ValueError, match=message):
            synthesize(**arguments)


def test_misalignment_is_a_known_rigid_shift(tmp_path):
    aligned = synthesize("lung", 1, 2, seed=5, out=tmp_path / "aligned")
    moved = synthesize("lung", 1, 2, seed=5, out=tmp_path / "moved", misalign_mm=6.0)
    truth = pd.read_csv(moved / "truth" / "scans.csv")
    shifts = truth[["shift_mm_x", "shift_mm_y"]].to_numpy()
    is_baseline = (truth.timepoint == "pre").to_numpy()
    assert np.allclose(shifts[is_baseline], 0) and np.allclose(np.linalg.norm(shifts[~is_baseline], axis=1), 6.0)
    row = truth[(truth.timepoint == "week12") & (truth.counterfactual == 0)].iloc[0]
    before, after = (read_image(root / "P0001" / "week12.nii.gz") for root in (aligned, moved))
    expected = np.array([row.shift_mm_x, row.shift_mm_y]) / np.asarray(before.spacing)
    before_mask, after_mask = (read_image(root / "P0001" / "week12_gtv.nii.gz").array for root in (aligned, moved))
    moved_by = np.subtract(ndimage.center_of_mass(after_mask), ndimage.center_of_mass(before_mask))
    np.testing.assert_allclose(moved_by, expected, atol=0.6)
    assert read_image(moved / "P0001" / "pre.nii.gz").array.tobytes() == read_image(
        aligned / "P0001" / "pre.nii.gz").array.tobytes()
    assert after.shape == before.shape


def test_a_noise_free_twin_differs_only_by_the_scanner_noise(tmp_path):
    noisy = synthesize("lung", 1, 2, seed=5, out=tmp_path / "noisy")
    clean = synthesize("lung", 1, 2, seed=5, out=tmp_path / "clean", noise=False)
    for table in ("patients.csv", "counterfactuals.csv", "truth/patients.csv"):
        assert (noisy / table).read_bytes() == (clean / table).read_bytes(), table
    for name in ("pre", "week12", "cf_week12"):
        a, b = (read_image(root / "P0001" / f"{name}.nii.gz").array.astype(np.float32) for root in (noisy, clean))
        assert (read_image(noisy / "P0001" / f"{name}_gtv.nii.gz").array.tobytes()
                == read_image(clean / "P0001" / f"{name}_gtv.nii.gz").array.tobytes())
        residual = a - b  # the noise alone: white, centred, of the site's sigma (10-22 HU, the lung's range)
        assert abs(residual.mean()) < 1.0 and 8.0 < residual.std() < 24.0, name
        assert abs(np.corrcoef(residual[:, :-1].ravel(), residual[:, 1:].ravel())[0, 1]) < 0.1


def test_untreated_synthetic_cohort_grows_without_treatment(tmp_path):
    import pandas as pd
    import yaml

    from oncodiff.synth import synthesize

    untreated = synthesize("lung", 1, 2, 0, tmp_path / "untreated", treated=False)
    treated = synthesize("lung", 1, 2, 0, tmp_path / "treated")
    assert pd.read_csv(untreated / "patients.csv")["patient_id"].tolist() == ["U0001"]
    assert "response" not in yaml.safe_load((untreated / "cohort.yaml").read_text())["outcomes"]
    assert not (untreated / "counterfactuals.csv").exists()
    sizes = pd.read_csv(untreated / "truth" / "scans.csv")["size"].tolist()
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]  # natural growth: every follow-up larger
    other = pd.read_csv(treated / "truth" / "patients.csv")["baseline_radius_mm"].iloc[0]
    assert pd.read_csv(untreated / "truth" / "patients.csv")["baseline_radius_mm"].iloc[0] != other
