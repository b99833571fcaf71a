"""`oncodiff synth --sequences --interim`: format 2 cohorts with one contrast per sequence, tumour label maps whose
tumour is the GTV exactly, interim scans whose early change carries the response only partly, counterfactuals that
stay exact, and the clinical acquisition on every scan."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from oncodiff.cli import app
from oncodiff.cohort import load_cohort, read_image, validate_cohort
from oncodiff.synth import synthesize
from oncodiff.synth.registry import SITES
from oncodiff.synth.simulate import LABELS

SEQUENCES = ("t1c", "t1", "t2", "flair")


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synthseq")
    return {
        "plain": synthesize("brain", 2, 2, seed=5, out=root / "plain"),
        "sequences": synthesize("brain", 2, 2, seed=5, out=root / "sequences", sequences=SEQUENCES),
        "interim": synthesize("brain", 2, 2, seed=5, out=root / "interim", sequences=SEQUENCES, interim=(28,)),
        "clinical": synthesize("brain", 3, 2, seed=5, out=root / "clinical", sequences=SEQUENCES, interim=(21, 35),
                               acquisition="clinical"),
    }


def test_sequences_write_a_valid_format2_cohort(cohorts):
    for name in ("sequences", "interim", "clinical"):
        assert validate_cohort(cohorts[name]) == [], name
    cohort = load_cohort(cohorts["sequences"])
    spec = cohort.spec
    assert spec.format == 2 and spec.sequences == SEQUENCES and spec.primary_sequence == "t1c"
    assert spec.labels == LABELS and spec.tumor_values() == (1, 3)
    assert {f"image:{s}" for s in SEQUENCES} | {"tumor_labels"} <= set(cohort.scans.columns)
    assert "tumor_mask" not in cohort.scans.columns


def test_each_sequence_has_its_own_contrast(cohorts):
    cohort = load_cohort(cohorts["sequences"])
    row = cohort.scans.iloc[0]
    labels = read_image(cohort.path(row["tumor_labels"])).array
    contrast = {}
    for name, path in cohort.sequence_paths(row).items():
        image = read_image(cohort.path(path)).array.astype(float)
        brain = ndimage.binary_erosion(image > 0.2 * image.max(), iterations=3) & (labels == 0)
        contrast[name] = {k: image[labels == v].mean() / np.median(image[brain]) for k, v in LABELS.items()
                          if (labels == v).any()}
    assert contrast["t1c"]["enhancing"] > 1.2 > contrast["t1"]["enhancing"]  # the rim enhances only with contrast
    assert contrast["flair"]["oedema"] > contrast["t1c"]["oedema"]  # oedema shows in FLAIR
    assert contrast["t2"]["oedema"] > 1.0 > contrast["t1"]["oedema"]
    assert len({round(c["enhancing"], 3) for c in contrast.values()}) == 4


def test_primary_sequence_is_the_plain_cohorts_image(cohorts):
    plain, sequences = load_cohort(cohorts["plain"]), load_cohort(cohorts["sequences"])
    for (_, a), (_, b) in zip(plain.scans.iterrows(), sequences.scans.iterrows()):
        np.testing.assert_array_equal(read_image(plain.path(a["image"])).array,
                                      read_image(sequences.path(b["image:t1c"])).array)
        np.testing.assert_array_equal(read_image(plain.path(a["tumor_mask"])).array, sequences.tumor(b).array)


def test_label_map_tumour_is_the_gtv_in_clinical_acquisition(cohorts):
    cohort = load_cohort(cohorts["clinical"])
    for _, row in cohort.scans.iterrows():
        gtv = read_image(cohort.path(row["tumor_labels"].replace("_seg", "_gtv"))).array
        labels = read_image(cohort.path(row["tumor_labels"])).array
        np.testing.assert_array_equal(cohort.tumor(row).array, gtv)
        assert set(np.unique(labels)) <= {0, 1, 2, 3}
        for name, path in cohort.sequence_paths(row).items():  # every sequence on the scan's acquired grid
            if path is not None:
                assert read_image(cohort.path(path)).shape == labels.shape


def test_interim_scans_are_followups_between_baseline_and_outcome(cohorts):
    scans = pd.read_csv(cohorts["clinical"] / "scans.csv")
    assert list(scans[scans.patient_id == "P0001"].timepoint) == ["pre", "day21", "day35", "month2", "month4"]
    truth = pd.read_csv(cohorts["clinical"] / "truth" / "scans.csv")
    interim = truth[truth.timepoint.isin(["day21", "day35"])]
    assert interim.rotation_deg.gt(0).all()  # the clinical acquisition applies to the interim scans too
    cf = pd.read_csv(cohorts["interim"] / "counterfactuals.csv")
    assert set(cf.timepoint) == {"day28", "month2", "month4"}


def test_counterfactuals_differ_only_in_the_tumour_region(cohorts):
    root = cohorts["interim"]
    cohort = load_cohort(root)
    table = pd.read_csv(root / "counterfactuals.csv", dtype={"patient_id": str})
    reach = SITES["brain"].mass_effect_reach_mm + 15.0
    for _, cf in table.iterrows():
        factual = cohort.scans[(cohort.scans.patient_id == cf.patient_id) & (cohort.scans.timepoint == cf.timepoint)]
        image = read_image(cohort.path(factual.iloc[0]["image"]))
        masks = cohort.tumor(factual.iloc[0]).array.astype(bool) | (read_image(root / cf["tumor_mask"]).array > 0)
        distance = ndimage.distance_transform_edt(~masks, sampling=image.spacing)
        differs = image.array != read_image(root / cf["image"]).array
        assert differs.any() and not differs[distance > reach].any(), (cf.patient_id, cf.timepoint)


def test_missing_sequences_in_the_clinical_acquisition_are_recorded(tmp_path):
    root = synthesize("brain", 6, 2, seed=1, out=tmp_path / "c", sequences=SEQUENCES, acquisition="clinical")
    scans = pd.read_csv(root / "scans.csv")
    assert scans["image:t1c"].notna().all()
    missing = sum(int(scans[f"image:{s}"].isna().sum()) for s in SEQUENCES[1:])
    assert missing > 0
    warnings = [w for w in validate_cohort(root, warnings=True) if w.column and w.column.startswith("image:")]
    assert sum(int(w.message.split("missing on ")[1].split()[0]) for w in warnings) == missing


def test_early_change_carries_the_response_partly(tmp_path):
    """The interim GTV's change from baseline separates the classes better than chance but not perfectly
    (pseudo-progression and edge noise), while the final change follows the class rule exactly."""
    root = synthesize("brain", 16, 2, seed=2, out=tmp_path / "c", interim=(28,))
    truth = pd.read_csv(root / "truth" / "scans.csv")
    sizes = truth[truth.counterfactual == 0].pivot(index="patient_id", columns="timepoint", values="size")
    good = pd.read_csv(root / "patients.csv").set_index("patient_id")["response"].eq("good")
    early = (sizes["day28"] / sizes["pre"]).loc[good.index]
    auc = np.mean([float(a < b) + 0.5 * float(a == b) for a in early[good] for b in early[~good]])
    assert 0.55 < auc < 1.0, auc
    assert ((sizes["month4"] / sizes["pre"]).loc[good.index] < 0.8).eq(good).all()


@pytest.mark.parametrize("options, text", [
    ({"site": "lung", "sequences": ("t1c",)}, "sequences are simulated for brain"),
    ({"sequences": ("t1c", "dwi")}, "no sequence 'dwi'"),
    ({"sequences": ("t1c", "t1c")}, "twice"),
    ({"interim": (120,)}, "before the last follow-up"),
    ({"interim": (60,)}, "already a scan day"),
])
def test_options_are_checked(tmp_path, options, text):
    arguments = {"site": "brain", "n_patients": 1, "dims": 2, "seed": 0, "out": tmp_path / "c"} | options
    with pytest.raises(ValueError, match=text):
        synthesize(**arguments)
    assert not (tmp_path / "c").exists()


def test_cli_options(tmp_path):
    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "c"), "--patients", "1", "--sequences",
                                      "t1c,flair", "--interim", "21,35"])
    assert result.exit_code == 0, result.output
    scans = pd.read_csv(tmp_path / "c" / "scans.csv")
    assert list(scans.timepoint) == ["pre", "day21", "day35", "month2", "month4"]
    assert {"image:t1c", "image:flair"} <= set(scans.columns)
    bad = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "d"), "--interim", "3w"])
    assert bad.exit_code != 0 and "whole days" in bad.output
