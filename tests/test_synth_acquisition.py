"""`oncodiff synth --acquisition clinical`: follow-ups as a clinic acquires them, with the truth to undo it."""

import numpy as np
import pandas as pd
import pytest

from oncodiff.cli import app
from oncodiff.cohort import read_image
from oncodiff.data.geometry import Grid, sample
from oncodiff.synth import synthesize
from oncodiff.synth.acquisition import MISSING_RATE, SLICE_MM, world_map_from_truth
from oncodiff.synth.simulate import _observed

ACQUISITION_COLUMNS = ["rotation_deg", "translation_mm_x", "translation_mm_y", "translation_mm_z", "world_map",
                       "slice_mm", "gain", "offset", "bias_sd", "noise_sigma"]


@pytest.fixture(scope="module")
def clinical3d(tmp_path_factory):
    return synthesize("brain", 1, 3, seed=4, out=tmp_path_factory.mktemp("acq") / "brain3d", acquisition="clinical")


def _truth(root) -> pd.DataFrame:
    return pd.read_csv(root / "truth" / "scans.csv", dtype={"patient_id": str})


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(int(a.sum() + b.sum()), 1))


def _in_baseline_space(root, row: pd.Series, name: str, world_map: np.ndarray | None) -> np.ndarray:
    """A scan's file (image or mask, by suffix) sampled on its truth image's grid (the baseline's)."""
    truth = read_image(root / row["truth_image"])
    moving = read_image(root / row["patient_id"] / name)
    return sample(moving.array.astype(np.float32), moving.affine, Grid(truth.affine, truth.shape), order=1,
                  world_map=world_map)


def test_validates_and_follow_ups_have_thick_slices(clinical3d):
    from oncodiff.cohort import validate_cohort

    assert validate_cohort(clinical3d) == []
    pre, month2 = (read_image(clinical3d / "P0001" / f"{t}.nii.gz") for t in ("pre", "month2"))
    np.testing.assert_allclose(pre.spacing, (2.0, 2.0, 2.0))
    np.testing.assert_allclose(month2.spacing, (2.0, 2.0, SLICE_MM))
    assert month2.shape[2] == pre.shape[2] // 2


def test_truth_world_map_brings_each_follow_up_onto_its_clean_truth(clinical3d):
    truth = _truth(clinical3d)
    for _, row in truth[truth.timepoint == "month2"].iterrows():
        world_map = world_map_from_truth(row["world_map"])
        prefix = "cf_" if row["counterfactual"] else ""
        assert 0.5 <= row["rotation_deg"] <= 3.0 and 1.5 <= np.linalg.norm(
            row[["translation_mm_x", "translation_mm_y", "translation_mm_z"]].astype(float)) <= 5.0
        clean_mask = read_image(clinical3d / row["truth_mask"]).array > 0
        mapped, unmapped = (_in_baseline_space(clinical3d, row, f"{prefix}month2_gtv.nii.gz", m) >= 0.5
                            for m in (world_map, None))
        assert _dice(mapped, clean_mask) > 0.85 > _dice(unmapped, clean_mask) + 0.1
        clean = read_image(clinical3d / row["truth_image"]).array.ravel()
        image = _in_baseline_space(clinical3d, row, f"{prefix}month2.nii.gz", world_map).ravel()
        assert np.corrcoef(image, clean)[0, 1] > 0.9


def test_each_scan_has_its_own_scale_and_the_baseline_does_not_move(clinical3d):
    truth = _truth(clinical3d)
    factual = truth[truth.counterfactual == 0].set_index("timepoint")
    assert np.allclose(world_map_from_truth(factual.loc["pre", "world_map"]), np.eye(4))
    assert factual["gain"].nunique() == 3 and (factual["offset"] > 0).all()
    pre, month4 = (read_image(clinical3d / "P0001" / f"{t}.nii.gz").array for t in ("pre", "month4"))
    clean = read_image(clinical3d / factual.loc["pre", "truth_image"]).array
    brain = clean > 0.5 * np.percentile(clean, 99)
    ratio = np.median(month4[month4 > factual.loc["month4", "offset"] + 100]) / np.median(pre[brain])
    expected = factual.loc["month4", "gain"] / factual.loc["pre", "gain"]
    assert ratio == pytest.approx(expected, rel=0.2)


def test_counterfactual_shares_the_acquisition_exactly(clinical3d):
    truth = _truth(clinical3d)
    follow = truth[truth.timepoint != "pre"].sort_values(["timepoint", "counterfactual"])
    for _, pair in follow.groupby("timepoint"):
        assert (pair[ACQUISITION_COLUMNS].nunique() == 1).all()
    factual, counterfactual = (read_image(clinical3d / "P0001" / f"{p}month4.nii.gz").array for p in ("", "cf_"))
    assert factual.shape == counterfactual.shape
    same = factual == counterfactual
    assert 0.5 < same.mean() < 1.0  # noise, bias and motion are shared: only the tumour's surroundings differ


def test_clinical_tables_have_more_gaps():
    rng = np.random.default_rng(0)
    cells = [v for _ in range(2000) for v in _observed({"age": 60.0, "kps": 80.0}, rng, MISSING_RATE).values()]
    assert sum(v is None for v in cells) / len(cells) == pytest.approx(MISSING_RATE, abs=0.02)


def test_cli_writes_a_2d_clinical_cohort_and_rejects_an_unknown_acquisition(tmp_path):
    from typer.testing import CliRunner

    runner = CliRunner()
    out = tmp_path / "brain2d"
    result = runner.invoke(app, ["synth", "--out", str(out), "--patients", "1", "--acquisition", "clinical"])
    assert result.exit_code == 0, result.output
    truth = _truth(out)
    assert (truth["acquisition"] == "clinical").all() and truth["translation_mm_z"].abs().max() < 1e-9
    assert read_image(out / "P0001" / "month2.nii.gz").shape == read_image(out / "P0001" / "pre.nii.gz").shape
    bad = runner.invoke(app, ["synth", "--out", str(tmp_path / "x"), "--acquisition", "hospital"])
    assert bad.exit_code != 0 and "hospital" in bad.output
    with pytest.raises(ValueError, match="acquisition"):
        synthesize("brain", 1, 2, seed=0, out=tmp_path / "y", acquisition="hospital")
