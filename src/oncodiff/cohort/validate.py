"""Validation of a cohort folder (docs/dataset-format.md, "What a valid cohort means").

:func:`validate_cohort` reports every problem at once, each naming the file, the 1-based CSV data row
(the header is row 0), the column and the fix. It only reads: nothing is written anywhere, and each
image file is read once however many rows point to it.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError

from oncodiff.cohort.integrity import (
    affine_problem, check_followup_days, check_ids, check_response_values, geometry_mismatch, grid_problem,
    outside_problem, path_problem,
)
from oncodiff.cohort.io import read_image
from oncodiff.cohort.schema import (
    ANATOMY_PREFIX, COHORT_YAML, IMAGE_PREFIX, PATIENTS_CSV, SCAN_REQUIRED_COLUMNS, SCANS_CSV, TUMOR_LABELS,
    ClinicalVariable, CohortSpec, in_cohort_folder,
)
from oncodiff.errors import Problem

FORMAT_DOC = "see docs/dataset-format.md"
FILE_ORDER = (COHORT_YAML, PATIENTS_CSV, SCANS_CSV)
DEFAULT_LESION = "L1"
ALLOW_EXTERNAL = "ONCODIFF_ALLOW_EXTERNAL"  # set to 1: every verb accepts files linked from outside the cohort


def validate_cohort(root: str | Path, warnings: bool = False, allow_external: bool | None = None) -> list[Problem]:
    """Check a cohort folder; returns every :class:`Problem` found (an empty list means valid).

    ``warnings``: also return what is worth a look but valid (``Problem.warning``): a blank scan, a mask
    covering the whole image, two follow-ups on the same day. ``allow_external``: a file that a symbolic link
    leads to outside the cohort is a warning, not a problem (None: as the ONCODIFF_ALLOW_EXTERNAL variable says)."""
    if allow_external is None:
        allow_external = os.environ.get(ALLOW_EXTERNAL, "") not in ("", "0")
    root = Path(root)
    if not root.is_dir():
        return [Problem(str(root), "is not a folder.", fix="pass the cohort folder that holds cohort.yaml, "
                        "patients.csv and scans.csv.")]
    spec, baseline, problems = _read_spec(root)
    base, found = data_root(root, spec)
    problems += found
    patients, found = _read_table(root, PATIENTS_CSV, ("patient_id",))
    problems += found
    scans, found = _read_table(root, SCANS_CSV, _required_scan_columns(spec))
    problems += found
    if patients is not None:
        problems += _check_patients(patients, spec)
        problems += check_ids(patients, PATIENTS_CSV, ("patient_id",))
        problems += check_response_values(patients, spec)
    if scans is not None:
        problems += _check_scans(scans, spec, baseline, patients)
        problems += check_ids(scans, SCANS_CSV, ("patient_id", "lesion_id", "timepoint"))
        problems += check_followup_days(scans, baseline)
        problems += _check_format2_scans(scans, spec, baseline)
        if spec is None:
            problems += _check_image_column_unknown_spec(scans)
        if base is not None:
            problems += _check_scan_files(base, scans, baseline, spec, allow_external, root)
    if patients is not None and scans is not None:
        problems += _check_patients_have_scans(patients, scans)
    rank = {name: k for k, name in enumerate(FILE_ORDER)}
    problems = [p for p in problems if warnings or not p.warning]
    return sorted(problems, key=lambda p: (rank.get(p.file, len(rank)), p.row or 0))


# ---- cohort.yaml -------------------------------------------------------------------------------

def _read_spec(root: Path) -> tuple[CohortSpec | None, str, list[Problem]]:
    """cohort.yaml as a CohortSpec (None if invalid), the baseline label to check scans with, problems."""
    path = root / COHORT_YAML
    default = CohortSpec().baseline
    if not path.is_file():
        return None, default, [Problem(COHORT_YAML, "is missing.", fix=f"write the cohort's yaml; {FORMAT_DOC}.")]
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        return None, default, [Problem(COHORT_YAML, f"is not valid YAML: {error}", fix="correct the YAML syntax.")]
    if not isinstance(raw, dict):
        return None, default, [Problem(COHORT_YAML, f"holds a {type(raw).__name__}, not a mapping of keys.",
                                       fix=f"write keys such as 'format: 1' and 'baseline: pre'; {FORMAT_DOC}.")]
    try:
        spec = CohortSpec.model_validate(raw)
    except ValidationError as error:
        baseline = raw.get("baseline") if isinstance(raw.get("baseline"), str) else default
        return None, baseline, [_yaml_problem(e) for e in error.errors()]
    return spec, spec.baseline, []


def _yaml_problem(error: dict) -> Problem:
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
    message = error["msg"].removeprefix("Value error, ")
    if isinstance(error.get("input"), (str, int, float, bool)):
        message += f" (got {error['input']!r})"
    if error["type"] == "extra_forbidden":
        fix = f"remove or rename {key!r}; {FORMAT_DOC} lists the keys."
    elif error["type"] == "string_type":
        fix = "quote the value, e.g. 'yes' or '1' (YAML reads yes/no, on/off and numbers as non-text)."
    else:
        fix = f"correct {key!r}; {FORMAT_DOC}." if key else f"correct cohort.yaml as the message says; {FORMAT_DOC}."
    return Problem(COHORT_YAML, f"key {key or '(top level)'!r}: {message}.", fix=fix)


# ---- CSV tables --------------------------------------------------------------------------------

def _read_table(root: Path, name: str, required: tuple[str, ...]) -> tuple[pd.DataFrame | None, list[Problem]]:
    """A CSV as text cells (empty -> NaN) indexed by 1-based data row; None if it cannot be read."""
    path = root / name
    if not path.is_file():
        return None, [Problem(name, "is missing.", fix=f"write {name} in the cohort folder; {FORMAT_DOC}.")]
    try:
        # Blank lines are kept (then dropped) so that the index stays the file's data-row number.
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        delimiter = _foreign_delimiter(path)
        found = f" It is separated by {delimiter}, not by commas." if delimiter else ""
        return None, [Problem(name, f"cannot be read as CSV: {error}.{found}",
                              fix="save it as comma-separated UTF-8 text with one header line.")]
    table.index = table.index + 1
    table = table.dropna(how="all")
    problems = [Problem(name, f"has no column {column!r}.", fix=f"add the column {column!r}.", column=column)
                for column in required if column not in table.columns]
    delimiter = _foreign_delimiter(path)
    if problems and delimiter:  # nothing else in the table can be checked
        return None, [Problem(name, f"is separated by {delimiter}, not by commas, so its header is read as one "
                              f"column ({', '.join(map(repr, table.columns[:1]))}).",
                              fix="save it as comma-separated UTF-8 text (in a spreadsheet: CSV, comma delimited).")]
    if table.empty:
        problems.append(Problem(name, "has no data rows.", fix="add one row per patient or scan."))
    return table, problems


DELIMITERS = {";": "semicolons (';')", "\t": "tabs", "|": "vertical bars ('|')"}


def _foreign_delimiter(path: Path) -> str | None:
    """How the header line is separated when it is not by commas (e.g. "semicolons (';')"), else None."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            header = handle.readline()
    except OSError:
        return None
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(counts, key=counts.get)
    return DELIMITERS[best] if counts[best] > header.count(",") else None


def _cell(value: object) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _number(text: str | None) -> float | None:
    """The finite number in a cell, else None."""
    try:
        number = float(text)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _duplicates(table: pd.DataFrame, keys: list[str], name: str, what: str) -> list[Problem]:
    problems, first = [], {}
    for row, key in zip(table.index, table[keys].fillna("").itertuples(index=False, name=None)):
        if "" in key:  # a missing key cell is reported on its own
            continue
        if key in first:
            problems.append(Problem(name, f"repeats {what} {'/'.join(key)} of row {first[key]}.",
                                    fix="remove the duplicate row or correct its key.", row=row, column=keys[-1]))
        first.setdefault(key, row)
    return problems


# ---- patients.csv ------------------------------------------------------------------------------

def _check_patients(patients: pd.DataFrame, spec: CohortSpec | None) -> list[Problem]:
    problems = []
    if "patient_id" in patients.columns:
        problems += [Problem(PATIENTS_CSV, "has no patient_id.", fix="fill in the patient's id.", row=row,
                             column="patient_id") for row in patients.index[patients["patient_id"].isna()]]
        problems += _duplicates(patients, ["patient_id"], PATIENTS_CSV, "patient")
    if spec is None:
        return problems
    for column in _spec_patient_columns(spec):
        if column not in patients.columns:
            problems.append(Problem(PATIENTS_CSV, f"has no column {column!r}, which cohort.yaml names.",
                                    fix=f"add the column {column!r} (empty cells mean unknown) or remove it "
                                        "from cohort.yaml.", column=column))
    for variable in spec.clinical:
        if variable.name in patients.columns:
            problems += _check_clinical_values(patients[variable.name], variable)
    if spec.outcomes.survival is not None:
        problems += _check_survival(patients, spec.outcomes.survival.time, spec.outcomes.survival.event)
    return problems


def _spec_patient_columns(spec: CohortSpec) -> list[str]:
    columns = [variable.name for variable in spec.clinical]
    if spec.outcomes.response is not None:
        columns.append(spec.outcomes.response.column)
    if spec.outcomes.survival is not None:
        columns += [spec.outcomes.survival.time, spec.outcomes.survival.event]
    return list(dict.fromkeys(columns))


def _check_clinical_values(values: pd.Series, variable: ClinicalVariable) -> list[Problem]:
    problems = []
    for row, value in values.dropna().items():
        if variable.type == "categorical" and value not in variable.categories:
            problems.append(Problem(PATIENTS_CSV, f"{value!r} is not a category of {variable.name!r}.",
                                    fix=f"use one of {list(variable.categories)}, leave it empty if unknown, or "
                                        "add the category to cohort.yaml.", row=row, column=variable.name))
        elif variable.type == "numeric" and _number(value) is None:
            problems.append(Problem(PATIENTS_CSV, f"{value!r} is not a number, but {variable.name!r} is numeric.",
                                    fix="write a finite number with a '.' decimal point, or leave it empty if "
                                        "unknown.", row=row, column=variable.name))
    return problems


def _check_survival(patients: pd.DataFrame, time: str, event: str) -> list[Problem]:
    problems = []
    if time in patients.columns:
        for row, value in patients[time].dropna().items():
            if _number(value) is None or _number(value) < 0:
                problems.append(Problem(PATIENTS_CSV, f"survival time {value!r} is not a number of days >= 0.",
                                        fix="write the days to the event or censoring, or leave it empty.",
                                        row=row, column=time))
    if event in patients.columns:
        for row, value in patients[event].dropna().items():
            if _number(value) not in (0.0, 1.0):
                problems.append(Problem(PATIENTS_CSV, f"survival event {value!r} is not 0 or 1.",
                                        fix="write 1 if the event was observed, 0 if censored, or leave it empty.",
                                        row=row, column=event))
    return problems


def _check_patients_have_scans(patients: pd.DataFrame, scans: pd.DataFrame) -> list[Problem]:
    if "patient_id" not in patients.columns or "patient_id" not in scans.columns:
        return []
    scanned = set(scans["patient_id"].dropna())
    return [Problem(PATIENTS_CSV, f"patient {pid} has no scan in scans.csv.", fix="add its baseline scan to "
                    "scans.csv, or remove the patient.", row=row, column="patient_id")
            for row, pid in patients["patient_id"].dropna().items() if pid not in scanned]


# ---- scans.csv: the table ----------------------------------------------------------------------

def _check_scans(scans: pd.DataFrame, spec: CohortSpec | None, baseline: str,
                 patients: pd.DataFrame | None) -> list[Problem]:
    problems = _check_scan_columns(scans, spec)
    known = None if patients is None or "patient_id" not in patients.columns else set(patients["patient_id"])
    for row, scan in scans.iterrows():
        problems += _check_scan_row(row, scan, baseline, known, _primary_column(spec))
    if {"patient_id", "timepoint"} <= set(scans.columns):
        keyed = scans.assign(lesion_id=_lesions(scans))
        problems += _duplicates(keyed, ["patient_id", "lesion_id", "timepoint"], SCANS_CSV, "patient/lesion/timepoint")
        problems += _check_baselines_exist(keyed, baseline)
    return problems


def _lesions(scans: pd.DataFrame) -> pd.Series:
    lesions = scans["lesion_id"] if "lesion_id" in scans.columns else pd.Series(np.nan, index=scans.index)
    return lesions.fillna(DEFAULT_LESION)


def _check_scan_columns(scans: pd.DataFrame, spec: CohortSpec | None) -> list[Problem]:
    problems = []
    if "tumor_mask" not in scans.columns and TUMOR_LABELS not in scans.columns:
        problems.append(Problem(SCANS_CSV, "has no column 'tumor_mask'; every baseline scan needs its tumour mask.",
                                fix="add the column 'tumor_mask' with the mask of each baseline scan.",
                                column="tumor_mask"))
    if spec is None:
        return problems
    present = {c.removeprefix(ANATOMY_PREFIX) for c in scans.columns if c.startswith(ANATOMY_PREFIX)}
    for name in sorted(set(spec.anatomy) - present):
        problems.append(Problem(SCANS_CSV, f"has no column '{ANATOMY_PREFIX}{name}' for the anatomy cohort.yaml "
                                f"lists.", fix=f"add the column, or remove {name!r} from 'anatomy' in cohort.yaml.",
                                column=ANATOMY_PREFIX + name))
    for name in sorted(present - set(spec.anatomy)):
        problems.append(Problem(SCANS_CSV, f"has the column '{ANATOMY_PREFIX}{name}', but cohort.yaml's 'anatomy' "
                                "does not list it.", fix=f"add {name!r} to 'anatomy' in cohort.yaml, or remove "
                                "the column.", column=ANATOMY_PREFIX + name))
    return problems


def _check_scan_row(row: int, scan: pd.Series, baseline: str, known_patients: set | None,
                    image_column: str = "image") -> list[Problem]:
    problems = []

    def problem(column: str, message: str, fix: str) -> None:
        problems.append(Problem(SCANS_CSV, message, fix=fix, row=row, column=column))

    pid, timepoint = _cell(scan.get("patient_id")), _cell(scan.get("timepoint"))
    if "patient_id" in scan.index and pid is None:
        problem("patient_id", "has no patient_id.", "fill in the patient's id.")
    elif known_patients is not None and pid is not None and pid not in known_patients:
        problem("patient_id", f"patient {pid} is not in patients.csv.", "add the patient to patients.csv, or "
                "correct the id.")
    if "timepoint" in scan.index and timepoint is None:
        problem("timepoint", "has no timepoint.", f"write {baseline!r} for the baseline scan, or a follow-up label.")
    is_baseline = timepoint == baseline
    problems += _check_days(row, _cell(scan.get("days")), is_baseline, "days" in scan.index)
    if image_column in scan.index and _cell(scan[image_column]) is None:
        what = "the baseline" if is_baseline else "this follow-up"
        sequence = "" if image_column == "image" else f" of its primary sequence ({image_column})"
        problem(image_column, f"{what} has no image{sequence}.",
                "write the path of its image, relative to the cohort folder (or to 'root').")
    tumor_columns = [c for c in ("tumor_mask", TUMOR_LABELS) if c in scan.index]
    if is_baseline and tumor_columns and all(_cell(scan[c]) is None for c in tumor_columns):
        column = "tumor_mask" if "tumor_mask" in tumor_columns else TUMOR_LABELS
        problem(column, f"the baseline scan has no {' or '.join(tumor_columns)}.",
                "write the path of its tumour mask (GTV)" + (" or of its tumour label map." if len(tumor_columns) > 1
                                                             else "."))
    return problems


def _check_days(row: int, days: str | None, is_baseline: bool, has_column: bool) -> list[Problem]:
    def problem(message: str, fix: str) -> list[Problem]:
        return [Problem(SCANS_CSV, message, fix=fix, row=row, column="days")]

    if not has_column:
        return []
    number = _number(days)
    if number is None:
        return problem(f"days {days or '(empty)'!r} is not a number.", "write the days since the baseline scan.")
    if is_baseline and number != 0:
        return problem(f"the baseline scan has days = {days}, not 0.", "write 0: days count from the baseline.")
    if number < 0:
        return problem(f"days = {days} is before the baseline.", "write the days since the baseline scan (>= 0).")
    return []


def _check_baselines_exist(scans: pd.DataFrame, baseline: str) -> list[Problem]:
    problems = []
    for (pid, lesion), group in scans.dropna(subset=["patient_id"]).groupby(["patient_id", "lesion_id"], sort=False):
        if not (group["timepoint"] == baseline).any():
            problems.append(Problem(SCANS_CSV, f"patient {pid}, lesion {lesion} has no baseline ({baseline!r}) scan.",
                                    fix=f"add its baseline scan with timepoint {baseline!r} and days 0, or check "
                                        "'baseline' in cohort.yaml.", row=int(group.index[0]), column="timepoint"))
    return problems


# ---- scans.csv: the image files ----------------------------------------------------------------

@dataclass(frozen=True)
class _VoxelSummary:
    """What validation needs to know about one image file, so that each is read only once."""

    shape: tuple[int, ...]
    finite: bool
    binary: bool
    integer_valued: bool
    any_nonzero: bool
    affine: np.ndarray | None = None
    constant: bool = False  # every finite voxel has one value (a blank scan)
    all_nonzero: bool = False  # every voxel is non-zero (a mask covering the whole image)
    values: tuple[float, ...] | None = None  # the distinct values of an integer-valued image with few of them


def _summarise(path: Path) -> _VoxelSummary | Problem:
    """Read an image once; its voxel summary, or a Problem (file = the image) if it cannot be read."""
    if not path.exists():
        return Problem(str(path), "does not exist.", fix="check the path; it is relative to the cohort folder.")
    try:
        image = read_image(path)
    except (ValueError, OSError) as error:
        message, _, fix = str(error).partition(" Fix: ")
        return Problem(str(path), message.removeprefix(f"{path}: "), fix=fix)  # the row names the file
    array = image.array
    finite = np.isfinite(array) if array.dtype.kind == "f" else np.ones(array.shape, dtype=bool)
    values = array[finite]
    return _VoxelSummary(
        shape=array.shape, finite=bool(finite.all()), binary=bool(np.isin(values, (0, 1)).all()),
        integer_valued=bool((values == np.round(values)).all()), any_nonzero=bool(values.any()),
        affine=image.affine, constant=bool(values.size == 0 or values.min() == values.max()),
        all_nonzero=bool(finite.all() and array.all()), values=_distinct_values(values),
    )


EXTERNAL_FIX = (f"copy the file into the cohort folder in place of the link; or, to use it where it is, pass "
                f"`oncodiff validate --allow-external` (for every verb: set {ALLOW_EXTERNAL}=1).")


def _file_columns(scans: pd.DataFrame) -> list[str]:
    columns = ["image", *[c for c in scans.columns if c.startswith(IMAGE_PREFIX)], "tumor_mask", TUMOR_LABELS]
    columns += [c for c in scans.columns if c.startswith(ANATOMY_PREFIX)]
    return [c for c in columns if c in scans.columns]


def _check_scan_files(root: Path, scans: pd.DataFrame, baseline: str, spec: CohortSpec | None = None,
                      allow_external: bool = False, cohort_folder: Path | None = None) -> list[Problem]:
    """Every file of scans.csv, read once; ``root`` is the folder paths are relative to and must stay in (the
    cohort folder, or format 2's ``root``; a format-2 ``cohort:PATH`` is relative to ``cohort_folder`` and stays
    in it), symbolic links resolved."""
    summaries: dict[Path, _VoxelSummary | Problem] = {}
    problems, image_dims = [], {}
    image_column = _primary_column(spec)
    for row, scan in scans.iterrows():
        found = {}
        for column in _file_columns(scans):
            written = _cell(scan[column])
            if written is None:
                continue
            base, relative, outside = _base_of(written, root, spec, cohort_folder)
            if path_problem(relative, outside):
                found[column] = Problem(written, path_problem(relative, outside) + ".",
                                        fix=f"copy the file into {outside} and write its path relative to it.")
            elif not allow_external and outside_problem(base / relative, base):
                found[column] = Problem(written, outside_problem(base / relative, base) + ".", fix=EXTERNAL_FIX)
            else:
                path = (base / relative).resolve()  # two spellings of one file are still one read
                if outside_problem(path, base):
                    problems.append(Problem(SCANS_CSV, f"{written}: {outside_problem(path, base)} (allowed here).",
                                            fix=EXTERNAL_FIX, row=row, column=column, warning=True))
                if path not in summaries:
                    summaries[path] = _summarise(path)
                found[column] = summaries[path]
        problems += _check_row_files(row, scan, found, _cell(scan.get("timepoint")) == baseline, spec)
        if isinstance(found.get(image_column), _VoxelSummary):
            image_dims[row] = len(found[image_column].shape)
    return problems + _check_mixed_dims(scans, image_dims, image_column)


def _base_of(written: str, root: Path, spec: CohortSpec | None, cohort_folder: Path | None) -> tuple[Path, str, str]:
    """(the folder a scans.csv path is relative to, the path within it, that folder in words)."""
    inside = in_cohort_folder(written, spec.format) if spec is not None else None
    if inside is not None and cohort_folder is not None:
        return cohort_folder, inside, "the cohort folder"
    return root, written, "'root'" if spec is not None and spec.root is not None else "the cohort folder"


def _check_row_files(row: int, scan: pd.Series, found: dict, is_baseline: bool,
                     spec: CohortSpec | None = None) -> list[Problem]:
    problems = []
    image = found.get(_primary_column(spec))
    for column, summary in found.items():
        name = scan[column]
        if isinstance(summary, Problem):
            problems.append(Problem(SCANS_CSV, f"{name}: {summary.message}", fix=summary.fix, row=row, column=column))
            continue
        if column == TUMOR_LABELS:
            for message, fix in _label_map_problems(summary, image, spec, is_baseline):
                problems.append(Problem(SCANS_CSV, f"{name}: {message}", fix=fix, row=row, column=column))
            continue
        for message, fix in _content_problems(column, summary, image, is_baseline):
            problems.append(Problem(SCANS_CSV, f"{name}: {message}", fix=fix, row=row, column=column))
        for message, fix in _content_warnings(column, summary):
            problems.append(Problem(SCANS_CSV, f"{name}: {message}", fix=fix, row=row, column=column, warning=True))
    return problems


def _content_problems(column: str, summary: _VoxelSummary, image, is_baseline: bool) -> list[tuple[str, str]]:
    """(message, fix) for what is wrong with one file's voxels in its role: image, tumour mask or anatomy."""
    found = []
    if not summary.finite:
        found.append(("has NaN or infinite voxels.", "replace them with finite values (0 outside the body, say)."))
    if affine_problem(summary.affine, len(summary.shape)):
        found.append((affine_problem(summary.affine, len(summary.shape)) + ".",
                      "fix the file's header (spacing, origin, direction), e.g. re-export it from the scanner's "
                      "DICOM."))
    if column == "image" or column.startswith(IMAGE_PREFIX):
        if not affine_problem(summary.affine, len(summary.shape)) and grid_problem(summary.shape, summary.affine):
            found.append((grid_problem(summary.shape, summary.affine) + ".",
                          "use the scan itself (not a thumbnail or a single line), with the voxel size in mm in its "
                          "header; re-export it from the scanner's DICOM."))
        return found
    if isinstance(image, _VoxelSummary) and summary.shape != image.shape:
        found.append((f"has shape {summary.shape}, but its image has shape {image.shape}.",
                      "resample the mask onto its image's grid (same size and geometry)."))
    elif isinstance(image, _VoxelSummary) and not affine_problem(image.affine, len(image.shape)) and \
            geometry_mismatch(summary.affine, image.affine, len(image.shape)):
        mismatch = geometry_mismatch(summary.affine, image.affine, len(image.shape))
        found.append((f"is not on its image's grid: {mismatch}.",
                      "resample the mask onto its image's grid (same spacing, origin and direction), e.g. with "
                      "SimpleITK's Resample using the image as reference."))
    if column == "tumor_mask" and not summary.binary:
        found.append(("is not a binary mask (values other than 0 and 1).",
                      "save the mask with 0 outside and 1 inside the tumour (a 0/255 picture: divide by 255)."))
    elif column == "tumor_mask" and is_baseline and not summary.any_nonzero:
        found.append(("is empty: the baseline tumour mask marks no voxel.", "use the mask that outlines the tumour."))
    if column.startswith(ANATOMY_PREFIX) and not summary.integer_valued:
        found.append(("is not a mask or label map (non-integer values).", "save integer labels (0 = background)."))
    return found


def _content_warnings(column: str, summary: _VoxelSummary) -> list[tuple[str, str]]:
    """(message, fix) for what is valid but suspicious: a blank scan, a mask covering the whole image."""
    if (column == "image" or column.startswith(IMAGE_PREFIX)) and summary.constant:
        return [("is blank: every voxel has the same value.", "check that the right file (and series) is listed.")]
    if column == "tumor_mask" and summary.binary and summary.all_nonzero:
        return [("marks every voxel as tumour.", "check that this is the tumour mask, not a body or field-of-view "
                 "mask.")]
    return []


def _check_mixed_dims(scans: pd.DataFrame, image_dims: dict[int, int], column: str = "image") -> list[Problem]:
    if len(set(image_dims.values())) < 2:
        return []
    majority, count = Counter(image_dims.values()).most_common(1)[0]
    return [Problem(SCANS_CSV, f"{scans.at[row, column]} is {dims}D, but {count} of the cohort's "
                    f"{len(image_dims)} images are {majority}D; one cohort holds one kind.",
                    fix="keep 2D and 3D scans in separate cohorts.", row=row, column=column)
            for row, dims in image_dims.items() if dims != majority]


# ---- format 2: root, sequences, label maps (docs/dataset-format.md, "Format 2") -----------------

MAX_LABEL_VALUES = 64  # more distinct values than this: not a label map


def data_root(root: Path, spec: CohortSpec | None) -> tuple[Path | None, list[Problem]]:
    """The folder scans.csv paths are relative to: format 2's ``root`` (relative to the cohort folder, or
    absolute), else the cohort folder. None, with a problem, when ``root`` is not a folder."""
    if spec is None or spec.root is None:
        return root, []
    base = Path(spec.root).expanduser()
    base = (base if base.is_absolute() else root / base).resolve()
    if not base.is_dir():
        return None, [Problem(COHORT_YAML, f"key 'root': {spec.root!r} is not a folder (resolved to {base}).",
                              fix="write the folder that the image paths in scans.csv are relative to, relative to "
                                  "the cohort folder or absolute.")]
    return base, []


def _primary_column(spec: CohortSpec | None) -> str:
    return spec.primary_column if spec is not None else "image"


def _required_scan_columns(spec: CohortSpec | None) -> tuple[str, ...]:
    """scans.csv's required columns: the primary sequence's image column replaces 'image'; with an invalid
    cohort.yaml the image column is checked by :func:`_check_image_column_unknown_spec`."""
    if spec is None:
        return tuple(c for c in SCAN_REQUIRED_COLUMNS if c != "image")
    return tuple(spec.primary_column if c == "image" else c for c in SCAN_REQUIRED_COLUMNS)


def _check_image_column_unknown_spec(scans: pd.DataFrame) -> list[Problem]:
    """Without a valid cohort.yaml: scans.csv needs 'image' or image:NAME columns."""
    if "image" in scans.columns or any(c.startswith(IMAGE_PREFIX) for c in scans.columns):
        return []
    return [Problem(SCANS_CSV, "has no column 'image'.", fix="add the column 'image' (or, with 'sequences' in "
                    "cohort.yaml, one image:NAME column per sequence).", column="image")]


def _distinct_values(values: np.ndarray) -> tuple[float, ...] | None:
    if values.size == 0 or not (values == np.round(values)).all():
        return None
    distinct = np.unique(values)
    return tuple(float(v) for v in distinct) if len(distinct) <= MAX_LABEL_VALUES else None


def _check_format2_scans(scans: pd.DataFrame, spec: CohortSpec | None, baseline: str) -> list[Problem]:
    """scans.csv against format 2's keys: the image:NAME columns, tumour label maps, and the count of missing
    sequences (a warning per sequence: missing is allowed and handed to the model as missing)."""
    if spec is None:
        return []
    return (_check_sequence_columns(scans, spec) + _check_tumor_columns(scans, spec)
            + missing_sequence_warnings(scans, spec))


def _check_sequence_columns(scans: pd.DataFrame, spec: CohortSpec) -> list[Problem]:
    problems = []
    present = [c.removeprefix(IMAGE_PREFIX) for c in scans.columns if c.startswith(IMAGE_PREFIX)]
    if not spec.sequences:
        if present:
            problems.append(Problem(SCANS_CSV, f"has image columns for sequences {present}, but cohort.yaml lists no "
                                    "'sequences'.", fix=f"add 'format: 2' and 'sequences: {present}' to cohort.yaml, "
                                    "or rename the image column to 'image'.", column=IMAGE_PREFIX + present[0]))
        return problems
    if "image" in scans.columns:
        problems.append(Problem(SCANS_CSV, "has an 'image' column as well as the sequences' image:NAME columns; "
                                "with 'sequences' the image:NAME columns replace it.",
                                fix=f"rename 'image' to '{spec.primary_column}' (or to the sequence it holds), "
                                    "or remove it.", column="image"))
    for name in spec.other_sequences():  # the primary's column is a required column (reported with the table)
        if name not in present:
            problems.append(Problem(SCANS_CSV, f"has no column '{IMAGE_PREFIX}{name}' for the sequence cohort.yaml "
                                    "lists.", fix=f"add the column (empty cells: the sequence is missing for that "
                                    f"scan), or remove {name!r} from 'sequences'.", column=IMAGE_PREFIX + name))
    for name in present:
        if name not in spec.sequences:
            problems.append(Problem(SCANS_CSV, f"has the column '{IMAGE_PREFIX}{name}', but cohort.yaml's "
                                    "'sequences' does not list it.", fix=f"add {name!r} to 'sequences' in "
                                    "cohort.yaml, or remove the column.", column=IMAGE_PREFIX + name))
    return problems


def _check_tumor_columns(scans: pd.DataFrame, spec: CohortSpec) -> list[Problem]:
    problems = []
    if TUMOR_LABELS in scans.columns and not spec.labels:
        problems.append(Problem(SCANS_CSV, f"has a '{TUMOR_LABELS}' column, but cohort.yaml names no 'labels'.",
                                fix="add 'format: 2' and 'labels: {necrosis: 1, oedema: 2, enhancing: 3}' (your "
                                    "label map's values) to cohort.yaml, or use binary masks in 'tumor_mask'.",
                                column=TUMOR_LABELS))
    if {TUMOR_LABELS, "tumor_mask"} <= set(scans.columns):
        both = scans.index[scans[TUMOR_LABELS].notna() & scans["tumor_mask"].notna()]
        problems += [Problem(SCANS_CSV, "gives both a tumor_mask and a tumor_labels map; a scan's tumour comes from "
                             "one of them.", fix="keep one: the label map (the tumour is the union of cohort.yaml's "
                             "'tumor' labels) or the binary mask.", row=int(row), column=TUMOR_LABELS)
                     for row in both]
    return problems


def missing_sequences(scans: pd.DataFrame, spec: CohortSpec) -> dict[str, list[int]]:
    """Sequence name -> the scans.csv rows (1-based) where its image is missing, for every non-primary sequence."""
    found = {}
    for name in spec.other_sequences():
        column = IMAGE_PREFIX + name
        if column in scans.columns:
            found[name] = [int(row) for row in scans.index[scans[column].isna()]]
    return found


def missing_sequence_warnings(scans: pd.DataFrame, spec: CohortSpec) -> list[Problem]:
    from oncodiff.cohort.integrity import LISTED_ROWS

    problems = []
    for name, rows in missing_sequences(scans, spec).items():
        if rows:
            listed = ", ".join(map(str, rows[:LISTED_ROWS])) + (f" and {len(rows) - LISTED_ROWS} more"
                                                               if len(rows) > LISTED_ROWS else "")
            problems.append(Problem(SCANS_CSV, f"sequence {name!r} is missing on {len(rows)} of {len(scans)} scans "
                                    f"(rows {listed}); the model is told it is missing (a presence flag), nothing is "
                                    "imputed.", fix="add the images if you have them; otherwise nothing to do.",
                                    row=rows[0], column=IMAGE_PREFIX + name, warning=True))
    return problems


def _label_map_problems(summary: _VoxelSummary, image, spec: CohortSpec | None,
                        is_baseline: bool) -> list[tuple[str, str]]:
    """(message, fix) for a tumour label map: a label map on its image's grid, whose values are 0 or a value of
    cohort.yaml's ``labels``, with some tumour (the ``tumor`` labels) on a baseline."""
    found = [f for f in _content_problems("anatomy:tumor_labels", summary, image, is_baseline)
             if "label map" not in f[0]]
    labels = spec.labels if spec is not None else {}
    if summary.values is None:
        return found + [("is not a label map (non-integer values, or more than "
                         f"{MAX_LABEL_VALUES} distinct values).",
                         f"save integer labels: 0 for background and the values of cohort.yaml's 'labels' "
                         f"({labels}).")]
    unknown = sorted(int(v) for v in summary.values if v != 0 and v not in labels.values())
    if unknown and labels:
        found.append((f"has values {unknown} that cohort.yaml's 'labels' does not name ({labels}).",
                      "add them to 'labels' in cohort.yaml, or correct the label map."))
    tumour = spec.tumor_values() if spec is not None and labels else ()
    if is_baseline and tumour and not any(v in tumour for v in summary.values):
        names = spec.tumor or tuple(labels)
        found.append((f"marks no tumour: none of its voxels has a 'tumor' label ({', '.join(names)}).",
                      "use the label map that outlines the tumour, or check 'tumor' and 'labels' in cohort.yaml."))
    return found
