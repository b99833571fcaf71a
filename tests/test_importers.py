"""`oncodiff import` on trees made here in each published layout: the real file names and their oddities
(LUMIERE's week-000-1/-2 and two segmentations, missing sequences, an unreadable file, sessions without days),
then validate; end to end (train a few steps, predict) in the slow tests."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from factory import ball
from typer.testing import CliRunner

from oncodiff.cli import app
from oncodiff.cohort import affine_from_spacing, load_cohort, read_image, validate_cohort, write_image
from oncodiff.importers import LayoutError, import_cohort
from oncodiff.importers.lumiere import first_response, week_days

SHAPE = (20, 18, 12)
AFFINE = affine_from_spacing((1.2, 1.2, 2.0))
CONTRAST = {"t1c": 1.0, "t1": 0.6, "t2": 0.3, "flair": 0.8}


def scan(radius: float, sequence: str, seed: int) -> np.ndarray:
    """A head (ellipsoid) with a tumour ball of ``radius`` voxels, in ``sequence``'s contrast."""
    rng = np.random.default_rng(seed)
    head = ball(SHAPE, (9.5, 8.5, 5.5), 8.0).astype(np.float32)
    tumour = ball(SHAPE, (11, 9, 6), radius).astype(np.float32)
    values = 0.4 * head + CONTRAST[sequence] * tumour + 0.02 * rng.standard_normal(SHAPE).astype(np.float32)
    return (100 * np.clip(values, 0, None)).astype(np.float32)


def labels(radius: float, core: int, rim: int, oedema: int | None) -> np.ndarray:
    """A label map: ``core`` inside, ``rim`` around it (the enhancing ring), ``oedema`` outside (if given)."""
    out = np.zeros(SHAPE, np.uint8)
    if oedema is not None:
        out[ball(SHAPE, (11, 9, 6), radius + 1.5) > 0] = oedema
    out[ball(SHAPE, (11, 9, 6), radius) > 0] = rim
    out[ball(SHAPE, (11, 9, 6), max(radius - 1.5, 0.5)) > 0] = core
    return out


def tree_snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


# ---- the trees, one per layout ------------------------------------------------------------------

RATING = "Rating (according to RANO, PD: Progressive disease, SD: Stable disease, PR: Partial response, CR: Complete " \
         "response, Pre-Op: Pre-Operative, Post-Op: Post-Operative)"  # the published header's form


def lumiere_tree(src: Path, patients: int = 6) -> Path:
    """LUMIERE as published: Imaging/Patient-NNN/week-NNN[-k]/, both tools' segmentations, the two tables.
    Oddities: week-000-1 (before surgery) and week-000-2 (after) in the same week; patient 1 lacks FLAIR at
    week-012, its week-024 has only an HD-GLIO segmentation, its T2 at week-012 is not an image; patient 2 has
    a folder 'week-x' (no days)."""
    names = {"t1c": "CT1", "t1": "T1", "t2": "T2", "flair": "FLAIR"}
    ratings, demographics = [], []
    # RANO at week-012 and week-024: patient 5's follow-ups are not rated (response unknown), patient 6's week-012
    # has an empty rating (its response comes from week-024)
    follow_ups = {1: ("PR", "PD"), 2: ("PD", "PD"), 3: ("SD", "SD"), 4: ("CR", "PR"), 5: (None, None), 6: ("", "SD")}
    for p in range(1, patients + 1):
        patient = f"Patient-{p:03d}"
        weeks = {"week-000-1": 4.0, "week-000-2": 2.5, "week-012": 2.5 + 0.3 * p, "week-024": 2.0 + 0.4 * p}
        if p == 2:
            weeks["week-x"] = 3.0
        for k, (week, radius) in enumerate(weeks.items()):
            folder = src / "Imaging" / patient / week
            for ours, theirs in names.items():
                if p == 1 and week == "week-012" and ours == "flair":
                    continue
                write_image(scan(radius, ours, 100 * p + k), AFFINE, folder / f"{theirs}.nii.gz")
            if p == 1 and week == "week-012":
                (folder / "T2.nii.gz").write_bytes(b"not a NIfTI file")
            if not (p == 1 and week == "week-024"):
                write_image(labels(radius, 1, 2, 3), AFFINE,
                            folder / "DeepBraTumIA-segmentation" / "native" / "segmentation" / "ct1_seg_mask.nii.gz")
            write_image(labels(radius, 2, 2, 1), AFFINE,
                        folder / "HD-GLIO-AUTO-segmentation" / "native" / "segmentation_CT1_origspace.nii.gz")
            rating = {"week-000-1": "Pre-Op", "week-000-2": "Post-Op", "week-012": follow_ups[p % 7][0],
                      "week-024": follow_ups[p % 7][1]}.get(week)
            if rating is not None:
                ratings.append({"Patient": patient, "Date": week, RATING: rating, "Rating rationale": ""})
        demographics.append({"Patient": patient, "Survival time (weeks)": str(40 + p), "Sex": "female" if p % 2 else
                             "male", "Age at surgery (years)": str(50 + p), "IDH (WT: wild type)": "WT",
                             "IDH method": "IHC", "MGMT qualitative": "methylated" if p % 3 else "not methylated",
                             "MGMT quantitative": "na"})
    pd.DataFrame(ratings[::-1]).to_csv(src / "LUMIERE-ExpertRating-v202211.csv", index=False)  # not in week order
    pd.DataFrame(demographics).to_csv(src / "LUMIERE-Demographics_Pathology.csv", index=False)
    return src


def sailor_tree(src: Path, subjects: int = 6) -> Path:
    """SAILOR: sub-XX/ses-YY/{T1,T1c,Flair,T2,EdemaMask-CL,ContrastEnhancedMask-CL}.nii.gz and per subject
    DoseMap, intervals-days.txt (days between sessions), age and survival. Oddities: sub-02's intervals list
    one gap for three sessions (its ses-03 has no days); sub-03 lacks T2 at ses-02; sub-05 has no EdemaMask-CL at
    ses-02; sub-06's EdemaMask-CL at ses-03 is on another grid. The oedema mask covers the enhancing ball too."""
    names = {"t1c": "T1c", "t1": "T1", "t2": "T2", "flair": "Flair"}
    for s in range(1, subjects + 1):
        subject = src / f"sub-{s:02d}"
        radii = [3.5, 3.0 + 0.2 * s, 2.5 + 0.3 * s]
        for k, radius in enumerate(radii):
            folder = subject / f"ses-{k + 1:02d}"
            for ours, theirs in names.items():
                if not (s == 3 and k == 1 and ours == "t2"):
                    write_image(scan(radius, ours, 10 * s + k), AFFINE, folder / f"{theirs}.nii.gz")
            write_image((labels(radius, 1, 1, None) > 0).astype(np.uint8), AFFINE,
                        folder / "ContrastEnhancedMask-CL.nii.gz")
            oedema = (labels(radius, 1, 1, 1) > 0).astype(np.uint8)  # overlaps the enhancing mask
            if s == 6 and k == 2:
                write_image(oedema[:, :, :10], AFFINE, folder / "EdemaMask-CL.nii.gz")
            elif not (s == 5 and k == 1):
                write_image(oedema, AFFINE, folder / "EdemaMask-CL.nii.gz")
        write_image(np.full(SHAPE, 2.0, np.float32), AFFINE, subject / "DoseMap.nii.gz")
        (subject / "intervals-days.txt").write_text("21\n" if s == 2 else "21\n35\n")
        (subject / "age-years.txt").write_text(f"{55 + s}\n")
        (subject / "overall-survival-months.txt").write_text(f"{12 + s}.5\n")
    return src


def brats_tree(src: Path, patients: int = 6) -> Path:
    """BraTS 2024 post-treatment: BraTS-GLI-XXXXX-YYY/BraTS-GLI-XXXXX-YYY-{t1n,t1c,t2w,t2f,seg}.nii.gz, labels
    1 NETC, 2 SNFH, 3 ET, 4 RC. Oddities: patient 00002's time point 101 lacks t2f; 00003's 100 has no seg
    (its 101 becomes the baseline); time points are not consecutive for 00004 (100, 102)."""
    names = {"t1c": "t1c", "t1": "t1n", "t2": "t2w", "flair": "t2f"}
    for p in range(1, patients + 1):
        points = (100, 102, 105) if p == 4 else (100, 101, 102)
        for k, point in enumerate(points):
            case = f"BraTS-GLI-{p:05d}-{point}"
            radius = 3.5 - 0.3 * k + 0.1 * p
            for ours, theirs in names.items():
                if not (p == 2 and point == 101 and ours == "flair"):
                    write_image(scan(radius, ours, 7 * p + k), AFFINE, src / case / f"{case}-{theirs}.nii.gz")
            if not (p == 3 and point == 100):
                seg = labels(radius, 1, 3, 2)
                seg[2:4, 2:4, 2:4] = 4  # a resection cavity
                write_image(seg, AFFINE, src / case / f"{case}-seg.nii.gz")
    return src


def bids_tree(src: Path, subjects: int = 6) -> Path:
    """BIDS: sub-X/ses-Y/anat/sub-X_ses-Y_{ce-gadolinium_T1w,T1w,T2w,FLAIR}.nii.gz, sessions.tsv with days,
    participants.tsv, derivatives/tumour/.../*_dseg.nii.gz with its _dseg.tsv. Oddities: sub-02's ses-3 is
    not in its sessions.tsv (no days); sub-04 has no FLAIR at ses-2; sub-05 has a second T1w (run-2); brain masks
    (_mask) in anat/ of sub-01 and in a derivative (6 files); participants.tsv has columns beyond age and sex:
    a numeric one with n/a, a categorical one, one that is n/a throughout, one with numbers and a word."""
    suffixes = {"t1c": "ce-gadolinium_T1w", "t1": "T1w", "t2": "T2w", "flair": "FLAIR"}
    participants = []
    for s in range(1, subjects + 1):
        subject = f"sub-{s:02d}"
        sessions = []
        for k, (session, days) in enumerate((("ses-1", 0), ("ses-2", 30 + s), ("ses-3", 90 + 2 * s))):
            radius = 3.5 - 0.4 * k + 0.1 * s
            anat = src / subject / session / "anat"
            for ours, suffix in suffixes.items():
                if not (s == 4 and session == "ses-2" and ours == "flair"):
                    write_image(scan(radius, ours, 3 * s + k), AFFINE, anat / f"{subject}_{session}_{suffix}.nii.gz")
            if s == 5:
                write_image(scan(radius, "t1", 99), AFFINE, anat / f"{subject}_{session}_run-2_T1w.nii.gz")
            if s == 1:
                write_image(np.ones(SHAPE, np.uint8), AFFINE, anat / f"{subject}_{session}_desc-brain_mask.nii.gz")
                write_image(np.ones(SHAPE, np.uint8), AFFINE, src / "derivatives" / "brain" / subject / session /
                            "anat" / f"{subject}_{session}_desc-brain_mask.nii.gz")
            seg = src / "derivatives" / "tumour" / subject / session / "anat" / f"{subject}_{session}_desc-tumor_dseg"
            write_image(labels(radius, 1, 2, 3), AFFINE, seg.with_name(seg.name + ".nii.gz"))
            pd.DataFrame({"index": [1, 2, 3], "name": ["Necrosis", "Enhancing tumour", "Edema"]}).to_csv(
                seg.with_name(seg.name + ".tsv"), sep="\t", index=False)
            if not (s == 2 and session == "ses-3"):
                sessions.append({"session_id": session, "days": days})
        pd.DataFrame(sessions).to_csv(src / subject / f"{subject}_sessions.tsv", sep="\t", index=False)
        participants.append({"participant_id": subject, "age": 40 + s, "sex": "F" if s % 2 else "M",
                             "kps": "n/a" if s == 3 else 60 + 10 * (s % 4),
                             "arm": "TMZ" if s % 3 else "TMZ+RT",
                             "handedness": "n/a", "grade": "IV" if s == 2 else s % 2 + 3})
    pd.DataFrame(participants).to_csv(src / "participants.tsv", sep="\t", index=False)
    return src


TREES = {"lumiere": lumiere_tree, "sailor": sailor_tree, "brats-post": brats_tree, "bids": bids_tree}


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    return {layout: make(root / layout) for layout, make in TREES.items()}


def imported(trees, tmp_path, layout, **options):
    before = tree_snapshot(trees[layout])
    result = import_cohort(layout, trees[layout], tmp_path / "cohort", **options)
    assert tree_snapshot(trees[layout]) == before  # SRC is only read
    return result, load_cohort(result.out, validate=False)


# ---- per layout ---------------------------------------------------------------------------------

def test_lumiere_week_order_labels_tables_and_skips(trees, tmp_path):
    assert week_days("week-000-1") < week_days("week-000-2") < week_days("week-012") and week_days("x") is None
    result, cohort = imported(trees, tmp_path, "lumiere")
    assert validate_cohort(result.out) == []
    spec = cohort.spec
    assert spec.format == 2 and spec.sequences == ("t1c", "t1", "t2", "flair")
    assert spec.labels == {"necrosis": 1, "enhancing": 2, "oedema": 3} and spec.tumor == ("necrosis", "enhancing")
    assert (result.out / spec.root).resolve() == (trees["lumiere"] / "Imaging").resolve()
    first = cohort.scans[cohort.scans.patient_id == "Patient-003"]
    assert list(first.session) == ["week-000-1", "week-000-2", "week-012", "week-024"]
    assert list(first.timepoint) == ["baseline", "week-000-2", "week-012", "week-024"]
    assert list(first.days) == [0, 1, 84, 168]
    assert list(first.rano) == ["Pre-Op", "Post-Op", "SD", "SD"]
    assert list(cohort.scans[cohort.scans.patient_id == "Patient-005"].rano.fillna("")) == ["Pre-Op", "Post-Op", "", ""]
    assert first.iloc[0]["image:t1c"] == "Patient-003/week-000-1/CT1.nii.gz"
    assert first.iloc[0]["tumor_labels"].endswith("DeepBraTumIA-segmentation/native/segmentation/ct1_seg_mask.nii.gz")
    one = cohort.scans[cohort.scans.patient_id == "Patient-001"].set_index("session")
    assert pd.isna(one.loc["week-012", "image:flair"]) and pd.isna(one.loc["week-012", "image:t2"])
    assert pd.isna(one.loc["week-024", "tumor_labels"])  # follow-up without a DeepBraTumIA segmentation
    patients = cohort.patients
    assert patients.loc["Patient-002", "age"] == 52 and patients.loc["Patient-002", "sex"] == "male"
    assert patients.loc["Patient-002", "os_days"] == 42 * 7
    assert {v.name for v in spec.clinical} == {"age", "sex", "idh", "mgmt"}
    assert spec.outcomes.response.positive == "responder" and spec.outcomes.response.negative == "non-responder"
    assert patients.response.fillna("").to_dict() == {
        "Patient-001": "responder", "Patient-002": "non-responder", "Patient-003": "non-responder",
        "Patient-004": "responder", "Patient-005": "", "Patient-006": "non-responder"}
    assert patients.loc["Patient-006", "response_session"] == "week-024"  # week-012's rating is empty
    assert any("2 responder(s), 3 non-responder(s), 1 unknown" in note and "after the one rated Post-Op" in note
               for note in result.notes)
    skipped = "\n".join(result.skipped)
    assert "Patient-002 week-x: session without days" in skipped
    assert "Patient-001 week-012: sequence t2 left empty: Patient-001/week-012/T2.nii.gz cannot be read" in skipped
    assert "Patient-001 week-024: no deepbratumia segmentation (there is an hd-glio one" in skipped
    assert any("flair on 1 scan(s)" in note and "t2 on 1 scan(s)" in note for note in result.notes)


def test_lumiere_response_rule():
    """The first CR/PR/SD/PD rating after the (last) Post-Op one, in week order; ratings before it do not count."""
    ratings = {("P", "week-000-1"): "Pre-Op", ("P", "week-000-2"): "Post-Op", ("P", "week-030"): "PD",
               ("P", "week-011"): " pr ", ("Q", "week-000-1"): "Pre-Op", ("Q", "week-004"): "SD",
               ("R", "week-002"): "PD", ("R", "week-005"): "Post-Op", ("R", "week-009"): "Pre-Op",
               ("R", "week-020"): "CR", ("S", "week-000-2"): "Post-Op", ("S", "week-x"): "PD"}
    assert first_response(ratings, "P") == ("responder", "week-011")
    assert first_response(ratings, "Q") == ("", "")  # no Post-Op rating: no post-operative baseline
    assert first_response(ratings, "R") == ("responder", "week-020")  # PD before the Post-Op session is not it
    assert first_response(ratings, "S") == ("", "")  # a rating without a week has no place in time
    assert first_response(ratings, "nobody") == ("", "")


def test_lumiere_the_other_segmentation_and_its_labels(trees, tmp_path):
    result, cohort = imported(trees, tmp_path, "lumiere", segmentation="hd-glio")
    assert validate_cohort(result.out) == []
    assert cohort.spec.labels == {"non_enhancing": 1, "enhancing": 2} and cohort.spec.tumor == ("enhancing",)
    assert cohort.scans.tumor_labels.str.contains("HD-GLIO-AUTO-segmentation/native/segmentation_CT1_origspace").all()
    with pytest.raises(LayoutError, match="--segmentation manual: LUMIERE has deepbratumia and hd-glio"):
        import_cohort("lumiere", trees["lumiere"], tmp_path / "other", segmentation="manual")
    assert not (tmp_path / "other").exists()


def test_lumiere_atlas_space_reads_the_registered_files(tmp_path):
    src = tmp_path / "LUMIERE"
    for week, radius in (("week-000-1", 3.5), ("week-010", 3.0)):
        folder = src / "Imaging" / "Patient-007" / week
        write_image(scan(radius, "t1c", 1), AFFINE, folder / "CT1.nii.gz")  # native, not used
        atlas = folder / "DeepBraTumIA-segmentation" / "atlas"
        for name in ("ct1", "t1", "t2", "flair"):
            write_image(scan(radius, "t1c", 2), AFFINE, atlas / "skull_strip" / f"{name}_skull_strip.nii.gz")
        write_image(labels(radius, 1, 2, 3), AFFINE, atlas / "segmentation" / "seg_mask.nii.gz")
    result = import_cohort("lumiere", src, tmp_path / "cohort", space="atlas")
    scans = pd.read_csv(result.out / "scans.csv")
    assert list(scans["image:t1c"]) == [f"Patient-007/{w}/DeepBraTumIA-segmentation/atlas/skull_strip/"
                                        "ct1_skull_strip.nii.gz" for w in ("week-000-1", "week-010")]
    assert scans.tumor_labels.str.endswith("atlas/segmentation/seg_mask.nii.gz").all() and list(scans.days) == [0, 70]
    assert any("atlas-space files" in note for note in result.notes)
    assert any("there is no response outcome" in note for note in result.notes)  # no rating table beside Imaging/
    assert "response" not in pd.read_csv(result.out / "patients.csv").columns
    assert validate_cohort(result.out) == []


def test_sailor_days_from_intervals_label_maps_and_clinical(trees, tmp_path):
    result, cohort = imported(trees, tmp_path, "sailor")
    assert validate_cohort(result.out) == []
    assert "tumor_mask" not in cohort.scans
    assert cohort.spec.labels == {"enhancing": 1, "oedema": 2} and cohort.spec.tumor == ("enhancing",)
    one = cohort.scans[cohort.scans.patient_id == "sub-01"]
    assert list(one.days) == [0, 21, 56] and list(one.timepoint) == ["baseline", "ses-02", "ses-03"]
    written = one.iloc[1]["tumor_labels"]
    assert written == "cohort:tumor_labels/sub-01/ses-02.nii.gz"
    assert cohort.path(written) == result.out.resolve() / "tumor_labels" / "sub-01" / "ses-02.nii.gz"
    folder = trees["sailor"] / "sub-01" / "ses-02"
    enhancing = read_image(folder / "ContrastEnhancedMask-CL.nii.gz").array > 0
    oedema = read_image(folder / "EdemaMask-CL.nii.gz").array > 0
    merged = read_image(cohort.path(written))
    assert np.array_equal(merged.affine, read_image(folder / "ContrastEnhancedMask-CL.nii.gz").affine)
    assert np.array_equal(merged.array == 1, enhancing)  # enhancing wins where the two masks overlap
    assert np.array_equal(merged.array == 2, oedema & ~enhancing) and (merged.array == 2).any()
    assert np.array_equal(cohort.tumor(one.iloc[1]).array > 0, enhancing)  # tumour = enhancing
    assert list(cohort.scans[cohort.scans.patient_id == "sub-02"].session) == ["ses-01", "ses-02"]
    skipped = "\n".join(result.skipped)
    assert "sub-02 ses-03: session without days" in skipped
    assert "sub-05 ses-02: no EdemaMask-CL.nii.gz; its label map has enhancing only" in skipped
    five = read_image(result.out / "tumor_labels" / "sub-05" / "ses-02.nii.gz").array
    assert set(np.unique(five)) == {0, 1}
    assert ("sub-06 ses-03: label oedema left out of its label map: sub-06/ses-03/EdemaMask-CL.nii.gz (shape "
            "(20, 18, 10)) is not on the grid of sub-06/ses-03/ContrastEnhancedMask-CL.nii.gz") in skipped
    assert pd.isna(cohort.scans.set_index(["patient_id", "session"]).loc[("sub-03", "ses-02"), "image:t2"])
    assert cohort.patients.loc["sub-04", "age"] == 59 and cohort.patients.loc["sub-04", "os_months"] == 16.5
    assert any("DoseMap.nii.gz is not read" in note for note in result.notes)


def test_cohort_paths_stay_in_the_cohort_folder(trees, tmp_path):
    """Format 2's 'cohort:' paths are relative to the cohort folder (not to root) and may not climb out of it."""
    result = import_cohort("sailor", trees["sailor"], tmp_path / "cohort")
    scans = pd.read_csv(result.out / "scans.csv")
    scans.loc[1, "tumor_labels"] = "cohort:../outside.nii.gz"
    scans.loc[2, "tumor_labels"] = "cohort:tumor_labels/sub-01/ses-09.nii.gz"
    scans.to_csv(result.out / "scans.csv", index=False)
    problems = [str(p) for p in validate_cohort(result.out)]
    assert len(problems) == 2, problems
    assert "cohort:../outside.nii.gz" in problems[0] and "climbs out of the cohort folder" in problems[0]
    assert "cohort:tumor_labels/sub-01/ses-09.nii.gz" in problems[1]


def test_brats_time_points_labels_and_days(trees, tmp_path):
    result, cohort = imported(trees, tmp_path, "brats-post")
    assert validate_cohort(result.out) == []
    assert cohort.spec.labels == {"non_enhancing_core": 1, "oedema": 2, "enhancing": 3, "cavity": 4}
    assert cohort.spec.tumor == ("non_enhancing_core", "enhancing")
    four = cohort.scans[cohort.scans.patient_id == "BraTS-GLI-00004"]
    assert list(four.session.astype(str)) == ["100", "102", "105"] and list(four.days) == [0, 90, 180]
    three = cohort.scans[cohort.scans.patient_id == "BraTS-GLI-00003"]
    assert list(three.session.astype(str)) == ["101", "102"] and three.iloc[0]["timepoint"] == "baseline"
    assert "BraTS-GLI-00003 100: no tumour segmentation, which the baseline" in "\n".join(result.skipped)
    assert any("gives no dates" in note for note in result.notes)
    days = tmp_path / "days.csv"
    days.write_text("patient_id,timepoint,days\nBraTS-GLI-00004,100,0\nBraTS-GLI-00004,102,40\n"
                    "BraTS-GLI-00004,105,130\n")
    again = import_cohort("brats-post", trees["brats-post"], tmp_path / "with_days", days_table=days)
    four = pd.read_csv(again.out / "scans.csv", dtype={"session": str})
    four = four[four.patient_id == "BraTS-GLI-00004"]
    assert list(four.days) == [0, 40, 130]
    assert "BraTS-GLI-00001 100: session without days" in "\n".join(again.skipped)


def test_bids_entities_sessions_tsv_and_dseg_names(trees, tmp_path):
    result, cohort = imported(trees, tmp_path, "bids")
    assert validate_cohort(result.out) == []
    assert cohort.spec.labels == {"necrosis": 1, "enhancing_tumour": 2, "edema": 3}
    assert cohort.spec.tumor == ("necrosis", "enhancing_tumour")
    one = cohort.scans[cohort.scans.patient_id == "sub-01"]
    assert one.iloc[0]["image:t1c"] == "sub-01/ses-1/anat/sub-01_ses-1_ce-gadolinium_T1w.nii.gz"
    assert one.iloc[0]["image:t1"] == "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz"
    assert list(one.days) == [0, 31, 92]
    skipped = "\n".join(result.skipped)
    assert "sub-02 ses-3: session without days" in skipped
    assert "sub-05 ses-1: sub-05_ses-1_run-2_T1w.nii.gz is a second t1 image" in skipped
    assert cohort.patients.loc["sub-03", "sex"] == "F" and cohort.patients.loc["sub-03", "age"] == 43
    clinical = {v.name: v for v in cohort.spec.clinical}
    assert list(clinical) == ["age", "sex", "kps", "arm", "grade"]  # handedness: n/a throughout
    assert clinical["kps"].type == "numeric" and clinical["kps"].group == "participants"
    assert cohort.patients.loc["sub-02", "kps"] == 80 and pd.isna(cohort.patients.loc["sub-03", "kps"])
    assert clinical["arm"].type == "categorical" and clinical["arm"].categories == ("TMZ", "TMZ+RT")
    assert clinical["grade"].type == "categorical" and clinical["grade"].categories == ("3", "4", "IV")
    assert "participants.tsv column 'handedness': no value for any imported subject" in skipped
    assert any("kps (numeric), arm (categorical), grade (categorical)" in note for note in result.notes)
    assert ("6 _mask file(s) not read (the first: sub-01/ses-1/anat/sub-01_ses-1_desc-brain_mask.nii.gz): a _mask "
            "is a binary mask whose name does not say what it outlines") in skipped


def test_out_obeys_the_output_rules(trees, tmp_path):
    with pytest.raises(Exception, match="inside the source folder"):
        import_cohort("sailor", trees["sailor"], trees["sailor"] / "cohort")
    with pytest.raises(Exception, match="inside the source folder"):  # beside Imaging/, still inside SRC
        import_cohort("lumiere", trees["lumiere"], trees["lumiere"] / "cohort")
    first = import_cohort("sailor", trees["sailor"], tmp_path / "cohort")
    with pytest.raises(Exception, match="--overwrite"):
        import_cohort("sailor", trees["sailor"], tmp_path / "cohort")
    assert import_cohort("sailor", trees["sailor"], tmp_path / "cohort", overwrite=True).out == first.out
    with pytest.raises(LayoutError, match="does not look like LUMIERE"):
        import_cohort("lumiere", trees["sailor"], tmp_path / "wrong")


def test_the_cli_prints_what_it_skipped(trees, tmp_path):
    result = CliRunner().invoke(app, ["import", "bids", str(trees["bids"]), "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "sub-02 ses-3: session without days" in result.output
    text = (tmp_path / "c" / "cohort.yaml").read_text()
    assert text.startswith("# written by `oncodiff import bids`")
    assert yaml.safe_load(text)["format"] == 2
    bad = CliRunner().invoke(app, ["import", "bids", str(tmp_path / "nowhere"), "--out", str(tmp_path / "d")])
    assert bad.exit_code == 2 and "is not a folder" in bad.output


# ---- end to end: import, validate, train a few steps, predict -----------------------------------

TINY = ["data.dims=3", "data.crop_size=[16,16,8]", "model.channels=[8,16]", "model.attention_levels=[false,true]",
        "model.norm_num_groups=8", "model.num_head_channels=8", "model.token_dim=16", "training.max_steps=2",
        "training.samples_per_epoch=8", "training.batch_size=4", "training.max_minutes=null", "sampling.samples=2",
        "sampling.steps=2", "sampling.calibrate=false", "data.val_fraction=0.2", "data.test_fraction=0.2",
        "data.preprocess_workers=1"]


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(TREES))
def test_import_validate_train_predict(trees, tmp_path, layout):
    """Each layout imported from its tree validates and trains with no edit by hand. Slow (about a minute per
    layout on 2 cores): pytest -m slow tests/test_importers.py."""
    runner = CliRunner()
    cohort = tmp_path / "cohort"
    done = runner.invoke(app, ["import", layout, str(trees[layout]), "--out", str(cohort)])
    assert done.exit_code == 0, done.output
    valid = runner.invoke(app, ["validate", str(cohort), "--no-check-alignment"])
    assert valid.exit_code == 0, valid.output
    sets = [arg for item in TINY + [f"data.cache_dir={tmp_path / 'cache'}"] for arg in ("--set", item)]
    trained = runner.invoke(app, ["train", "--cohort", str(cohort), "--out", str(tmp_path / "run"), *sets])
    assert trained.exit_code == 0, trained.output
    patient = pd.read_csv(cohort / "patients.csv", dtype=str).patient_id.iloc[0]
    predicted = runner.invoke(app, ["predict", "--model", str(tmp_path / "run"), "--cohort", str(cohort),
                                    "--patient", patient, "--samples", "2", "--out", str(tmp_path / "pred")])
    assert predicted.exit_code == 0, predicted.output
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert summary["cases"] and all(case["patient_id"] == patient for case in summary["cases"])
