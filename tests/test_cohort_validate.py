"""validate_cohort: each test builds a valid cohort, breaks exactly one thing, and checks that the
problem names the file, row and column, and that validation wrote nothing."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from factory import edit_csv, edit_yaml, write_cohort
from typer.testing import CliRunner

from oncodiff.cli import app
from oncodiff.cohort import load_cohort, validate_cohort, write_image
from oncodiff.cohort import validate as validate_module
from oncodiff.errors import CohortError

# write_cohort(n_patients=2): patients.csv rows 1-2 are P001, P002; scans.csv rows are
# 1 P001 pre, 2 P001 week6, 3 P002 pre, 4 P002 week6; images are 32x32, masks {0, 1}.
SHAPE = (32, 32)


@pytest.fixture
def cohort(tmp_path) -> Path:
    return write_cohort(tmp_path / "cohort", n_patients=2, dims=2)


def snapshot(root: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*"))


def problems_of(root: Path):
    """validate_cohort, checking that it leaves the folder exactly as it was."""
    before = snapshot(root)
    problems = validate_cohort(root)
    assert snapshot(root) == before
    return problems


def only_problem(root: Path, file: str, row: int | None, column: str | None, text: str):
    problems = problems_of(root)
    assert len(problems) == 1, "\n".join(map(str, problems))
    problem = problems[0]
    assert (problem.file, problem.row, problem.column) == (file, row, column), str(problem)
    assert text in problem.message and problem.fix, str(problem)
    return problem


def drop_rows(root: Path, name: str, rows: list[int]) -> None:
    table = pd.read_csv(root / name, dtype=str, keep_default_na=False)
    table.drop(index=[r - 1 for r in rows]).to_csv(root / name, index=False)


def append_copy(root: Path, name: str, row: int) -> None:
    table = pd.read_csv(root / name, dtype=str, keep_default_na=False)
    pd.concat([table, table.iloc[[row - 1]]]).to_csv(root / name, index=False)


# ---- valid cohorts -----------------------------------------------------------------------------

def test_valid_2d_and_3d_cohorts_have_no_problems(tmp_path):
    assert problems_of(write_cohort(tmp_path / "c2", n_patients=2, dims=2)) == []
    assert problems_of(write_cohort(tmp_path / "c3", n_patients=2, dims=3)) == []


def test_anatomy_label_map_need_not_be_binary(cohort):
    write_image(np.arange(np.prod(SHAPE)).reshape(SHAPE) % 4, np.eye(4), cohort / "P001" / "organ.nii.gz")
    assert problems_of(cohort) == []


# ---- the three files ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cohort.yaml", "patients.csv", "scans.csv"])
def test_missing_table(cohort, name):
    (cohort / name).unlink()
    only_problem(cohort, name, None, None, "missing")


def test_unreadable_yaml(cohort):
    (cohort / "cohort.yaml").write_text("format: [1\nname: x\n", encoding="utf-8")
    only_problem(cohort, "cohort.yaml", None, None, "not valid YAML")


def test_unreadable_csv(cohort):
    with open(cohort / "scans.csv", "a") as handle:
        handle.write("P002,L2,pre,0,a,b,c,d,e,f\n")  # too many fields
    only_problem(cohort, "scans.csv", None, None, "cannot be read as CSV")


@pytest.mark.parametrize("clinical_change, key, text", [
    ({"type": "category"}, "clinical[1].type", "(got 'category')"),
    ({"categories": None}, "clinical[1]", "'sex' is categorical; list its categories"),
    ({"colour": "red"}, "clinical[1].colour", "Extra inputs"),
])
def test_yaml_schema_errors_name_the_key(cohort, clinical_change, key, text):
    import yaml

    spec = yaml.safe_load((cohort / "cohort.yaml").read_text(encoding="utf-8"))
    spec["clinical"][1].update(clinical_change)
    edit_yaml(cohort, clinical=spec["clinical"])
    problem = only_problem(cohort, "cohort.yaml", None, None, f"key {key!r}")
    assert text in problem.message


def test_missing_required_scans_column(cohort):
    table = pd.read_csv(cohort / "scans.csv", dtype=str, keep_default_na=False)
    table.drop(columns=["days"]).to_csv(cohort / "scans.csv", index=False)
    only_problem(cohort, "scans.csv", None, "days", "no column 'days'")


@pytest.mark.parametrize("column", ["nlr", "os_days"])
def test_patients_lack_a_column_cohort_yaml_names(cohort, column):
    table = pd.read_csv(cohort / "patients.csv", dtype=str, keep_default_na=False)
    table.drop(columns=[column]).to_csv(cohort / "patients.csv", index=False)
    only_problem(cohort, "patients.csv", None, column, "cohort.yaml names")


def test_anatomy_in_yaml_but_not_in_scans(cohort):
    table = pd.read_csv(cohort / "scans.csv", dtype=str, keep_default_na=False)
    table.drop(columns=["anatomy:organ"]).to_csv(cohort / "scans.csv", index=False)
    only_problem(cohort, "scans.csv", None, "anatomy:organ", "no column 'anatomy:organ'")


def test_anatomy_in_scans_but_not_in_yaml(cohort):
    edit_yaml(cohort, anatomy=[])
    only_problem(cohort, "scans.csv", None, "anatomy:organ", "does not list it")


# ---- patients.csv rows -------------------------------------------------------------------------

def test_duplicate_patient(cohort):
    append_copy(cohort, "patients.csv", 2)
    only_problem(cohort, "patients.csv", 3, "patient_id", "repeats patient P002 of row 2")


# One cell edited, one problem expected at that file, row and column: (file, row, column, new value, message).
ONE_CELL_PROBLEMS = [
    pytest.param("patients.csv", 2, "sex", "X", "'X' is not a category", id="categorical-value-outside-categories"),
    pytest.param("patients.csv", 1, "age", "sixty", "not a number", id="non-numeric-numeric-value"),
    pytest.param("patients.csv", 1, "death", "yes", "not 0 or 1", id="survival-event-not-0-or-1"),
    pytest.param("scans.csv", 2, "days", "six weeks", "not a number", id="days-not-a-number"),
    pytest.param("scans.csv", 3, "days", "7", "not 0", id="baseline-days-not-zero"),
    pytest.param("scans.csv", 4, "days", "-3", "before the baseline", id="followup-before-baseline"),
    pytest.param("scans.csv", 3, "tumor_mask", "", "no tumor_mask", id="baseline-without-tumor-mask"),
    pytest.param("scans.csv", 4, "image", "", "follow-up has no image", id="followup-without-image"),
]


@pytest.mark.parametrize("file, row, column, value, text", ONE_CELL_PROBLEMS)
def test_one_bad_cell_is_one_problem_at_that_cell(cohort, file, row, column, value, text):
    edit_csv(cohort, file, row, column, value)
    only_problem(cohort, file, row, column, text)


def test_patient_without_any_scan(cohort):
    drop_rows(cohort, "scans.csv", [3, 4])
    only_problem(cohort, "patients.csv", 2, "patient_id", "no scan")


# ---- scans.csv rows ----------------------------------------------------------------------------

def test_duplicate_scan(cohort):
    append_copy(cohort, "scans.csv", 2)
    only_problem(cohort, "scans.csv", 5, "timepoint", "repeats patient/lesion/timepoint P001/L1/week6 of row 2")


def test_patient_without_baseline_scan(cohort):
    drop_rows(cohort, "scans.csv", [3])  # P002's follow-up is now row 3
    only_problem(cohort, "scans.csv", 3, "timepoint", "P002, lesion L1 has no baseline")


def test_scan_of_unknown_patient(cohort):
    drop_rows(cohort, "patients.csv", [2])
    problems = problems_of(cohort)
    assert [(p.file, p.row, p.column) for p in problems] == [("scans.csv", 3, "patient_id"),
                                                             ("scans.csv", 4, "patient_id")]
    assert all("P002 is not in patients.csv" in p.message for p in problems)


# ---- image files -------------------------------------------------------------------------------

def test_missing_image_file(cohort):
    (cohort / "P001" / "week6.nii.gz").unlink()
    only_problem(cohort, "scans.csv", 2, "image", "P001/week6.nii.gz: does not exist")


def test_unreadable_image_file(cohort):
    (cohort / "P002" / "pre.nii.gz").write_bytes(b"truncated")
    only_problem(cohort, "scans.csv", 3, "image", "P002/pre.nii.gz")


def test_image_with_nan_voxels(cohort):
    image = np.zeros(SHAPE, np.float32)
    image[3, 4] = np.nan
    write_image(image, np.eye(4), cohort / "P002" / "week6.nii.gz")
    only_problem(cohort, "scans.csv", 4, "image", "NaN or infinite")


def test_mask_not_binary(cohort):
    write_image(np.full(SHAPE, 2, np.uint8), np.eye(4), cohort / "P001" / "week6_gtv.nii.gz")
    only_problem(cohort, "scans.csv", 2, "tumor_mask", "not a binary mask")


def test_mask_shape_differs_from_image(cohort):
    write_image(np.ones((30, 32), np.uint8), np.eye(4), cohort / "P002" / "pre_gtv.nii.gz")
    only_problem(cohort, "scans.csv", 3, "tumor_mask", "has shape (30, 32), but its image has shape (32, 32)")


def test_empty_baseline_mask(cohort):
    write_image(np.zeros(SHAPE, np.uint8), np.eye(4), cohort / "P001" / "pre_gtv.nii.gz")
    only_problem(cohort, "scans.csv", 1, "tumor_mask", "marks no voxel")


def test_anatomy_map_not_integer_valued(cohort):
    write_image(np.full(SHAPE, 0.5, np.float32), np.eye(4), cohort / "P002" / "organ.nii.gz")
    only_problem(cohort, "scans.csv", 3, "anatomy:organ", "non-integer")


def test_mixed_2d_and_3d_scans(cohort):
    write_image(np.zeros((32, 32, 4), np.float32), np.eye(4), cohort / "P001" / "week6.nii.gz")
    problems = problems_of(cohort)
    mixed = [p for p in problems if "one cohort holds one kind" in p.message]
    assert [(p.file, p.row, p.column) for p in mixed] == [("scans.csv", 2, "image")]
    assert "is 3D, but 3 of the cohort's 4 images are 2D" in mixed[0].message
    # its 2D mask now also differs in shape from its image; nothing else is wrong
    assert {(p.row, p.column) for p in problems} == {(2, "image"), (2, "tumor_mask")}


# ---- all at once, row numbers, reading once, loading, CLI --------------------------------------

def test_every_problem_is_reported_at_once(cohort):
    edit_csv(cohort, "patients.csv", 1, "sex", "X")
    edit_csv(cohort, "scans.csv", 2, "days", "soon")
    (cohort / "P002" / "week6.nii.gz").unlink()
    found = [(p.file, p.row, p.column) for p in problems_of(cohort)]
    assert found == [("patients.csv", 1, "sex"), ("scans.csv", 2, "days"), ("scans.csv", 4, "image")]


def test_rows_count_blank_lines_as_in_the_file(cohort):
    lines = (cohort / "scans.csv").read_text(encoding="utf-8").splitlines()
    (cohort / "scans.csv").write_text("\n".join([lines[0], ""] + lines[1:]) + "\n", encoding="utf-8")  # blank line is row 1
    edit_days = lines[2].split(",")
    edit_days[3] = "x"
    text = (cohort / "scans.csv").read_text(encoding="utf-8").replace(lines[2], ",".join(edit_days))
    (cohort / "scans.csv").write_text(text, encoding="utf-8")
    only_problem(cohort, "scans.csv", 3, "days", "not a number")  # P001 week6 sits on data row 3 now


def test_each_image_file_is_read_once(cohort, monkeypatch):
    edit_csv(cohort, "scans.csv", 2, "anatomy:organ", "P001/organ.nii.gz")  # now referenced twice
    reads = []
    original = validate_module.read_image
    monkeypatch.setattr(validate_module, "read_image", lambda path: reads.append(path) or original(path))
    assert problems_of(cohort) == []
    assert len(reads) == len(set(reads)) == 10  # 2 patients x (2 images + 2 masks + 1 organ)


def test_load_cohort_raises_with_every_problem(cohort):
    edit_csv(cohort, "patients.csv", 2, "sex", "X")
    edit_csv(cohort, "scans.csv", 4, "image", "")
    with pytest.raises(CohortError) as raised:
        load_cohort(cohort)
    assert [(p.row, p.column) for p in raised.value.problems] == [(2, "sex"), (4, "image")]
    assert "patients.csv, row 2, column 'sex'" in str(raised.value)
    assert len(load_cohort(cohort, validate=False).scans) == 4  # the fast path does not check


def test_loader_reads_categories_as_text(tmp_path):
    root = write_cohort(tmp_path / "c", n_patients=2)
    edit_yaml(root, clinical=[{"name": "grade", "type": "categorical", "categories": ["1", "2"]}])
    table = pd.read_csv(root / "patients.csv", dtype=str)
    table.assign(grade=["1", "2"]).to_csv(root / "patients.csv", index=False)
    assert list(load_cohort(root).patients["grade"]) == ["1", "2"]


def test_cli_validate_exit_codes_and_listing(cohort):
    runner = CliRunner()
    valid = runner.invoke(app, ["validate", str(cohort)])
    assert valid.exit_code == 0 and "valid" in valid.stdout
    edit_csv(cohort, "patients.csv", 1, "age", "sixty")
    (cohort / "P002" / "pre_gtv.nii.gz").unlink()
    invalid = runner.invoke(app, ["validate", str(cohort)])
    assert invalid.exit_code == 1
    assert "2 problem(s)" in invalid.stderr
    assert "patients.csv, row 1, column 'age'" in invalid.stderr
    assert "scans.csv, row 3, column 'tumor_mask'" in invalid.stderr
    missing = runner.invoke(app, ["validate", str(cohort / "nowhere")])
    assert missing.exit_code == 1 and "is not a folder" in missing.stderr
