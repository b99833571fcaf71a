"""Integrity checks of a cohort beyond its format (called by :mod:`oncodiff.cohort.validate`), as nnU-Net's
dataset integrity check does: each mask on its image's grid, usable affines, paths that stay inside the
cohort, ids that are safe as folder names, response values that cannot be mistyped silently, and
warnings for what is valid but suspicious.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd

from oncodiff.cohort.schema import PATIENTS_CSV, SCANS_CSV, CohortSpec
from oncodiff.errors import Problem

SPACING_RTOL = 1e-3  # relative: 0.1 % of the voxel size
ORIGIN_ATOL_MM = 1e-2
DIRECTION_ATOL = 1e-3
ID_MAX_CHARS = 100
UNSAFE_ID = re.compile(r'[/\\:*?"<>|\x00-\x1f\x7f]')
LISTED_ROWS = 8


def _rows(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:LISTED_ROWS])
    return shown + (f" and {len(rows) - LISTED_ROWS} more" if len(rows) > LISTED_ROWS else "")


# ---- ids ----------------------------------------------------------------------------------------

def id_problem(value: str) -> str | None:
    """Why ``value`` cannot be used as a folder name (oncodiff names output folders after ids), or None."""
    if UNSAFE_ID.search(value):
        return 'holds a character that cannot be part of a folder name (/ \\ : * ? " < > | or a control character)'
    if value.startswith(".") or value != value.strip():
        return "starts with '.' or a space, or ends with a space (hidden or ambiguous folder names)"
    if len(value) > ID_MAX_CHARS:
        return f"is longer than {ID_MAX_CHARS} characters"
    return None


def check_ids(table: pd.DataFrame, name: str, columns: tuple[str, ...]) -> list[Problem]:
    """Patient, lesion and time-point ids that would not make safe folder names."""
    problems = []
    for column in (c for c in columns if c in table.columns):
        for row, value in table[column].dropna().items():
            why = id_problem(str(value))
            if why:
                problems.append(Problem(name, f"{column} {value!r} {why}.", row=row, column=column,
                                        fix="use letters, digits, '-', '_' and '.' (not first), e.g. P001; rename "
                                            "it in patients.csv and scans.csv alike."))
    return problems


# ---- response values ----------------------------------------------------------------------------

def _squeezed(value: str) -> str:
    return "".join(value.split()).lower()


def check_response_values(patients: pd.DataFrame, spec: CohortSpec | None) -> list[Problem]:
    """Response values that would be read as the wrong class: a near-miss of the positive label (case,
    spaces), more than two distinct values, or (with outcomes.response.negative) any third value."""
    response = spec.outcomes.response if spec is not None else None
    if response is None or response.column not in patients.columns:
        return []
    rows = defaultdict(list)
    for row, value in patients[response.column].dropna().items():
        rows[str(value)].append(int(row))
    known = {response.positive} | ({response.negative} if response.negative is not None else set())
    if response.negative is not None:
        odd = [v for v in rows if v not in known]
        why = f"is neither the positive label {response.positive!r} nor the negative {response.negative!r}"
    else:
        odd = [v for v in rows if v != response.positive and _squeezed(v) == _squeezed(response.positive)]
        why = (f"differs from the positive label {response.positive!r} only in case or spaces, so it would be read "
               "as a non-responder")
        if not odd and len(rows) > 2:  # one problem for the column, listing every value
            odd = [min(rows, key=lambda v: rows[v][0])]
            why = f"is one of {len(rows)} distinct response values; a response is binary"
    listed = "; ".join(f"{v!r} in rows {_rows(rows[v])}" for v in sorted(odd, key=lambda v: rows[v][0]))
    return [Problem(PATIENTS_CSV, f"response value {v!r} {why} (values: {listed}).", row=rows[v][0],
                    column=response.column,
                    fix=f"write exactly {response.positive!r} for a responder and one other value for a "
                        "non-responder (name it as outcomes.response.negative in cohort.yaml to have it checked), "
                        "or leave the cell empty if unknown.") for v in odd]


# ---- scans.csv ----------------------------------------------------------------------------------

def check_followup_days(scans: pd.DataFrame, baseline: str) -> list[Problem]:
    """Warn about two follow-ups of one lesion on the same day (a duplicated row under two labels?)."""
    if not {"patient_id", "timepoint", "days"} <= set(scans.columns):
        return []
    lesions = scans["lesion_id"].fillna("L1") if "lesion_id" in scans.columns else pd.Series("L1", index=scans.index)
    seen, problems = {}, []
    for row, pid, lesion, timepoint, days in zip(scans.index, scans["patient_id"], lesions, scans["timepoint"],
                                                 pd.to_numeric(scans["days"], errors="coerce")):
        if timepoint == baseline or not isinstance(pid, str) or not math.isfinite(days):
            continue
        key = (pid, lesion, float(days))
        if key in seen:
            problems.append(Problem(SCANS_CSV, f"patient {pid}, lesion {lesion} has two follow-ups on day {days:g} "
                                    f"(rows {seen[key]} and {row}).", row=row, column="days", warning=True,
                                    fix="check the days, or remove the duplicated scan."))
        seen.setdefault(key, row)
    return problems


def path_problem(relative: str, base: str = "the cohort folder") -> str | None:
    """Why a scans.csv path is not allowed (absolute, or climbing out of ``base``: the cohort folder, or
    format 2's 'root'), or None."""
    if PurePosixPath(relative).is_absolute() or PureWindowsPath(relative).is_absolute() or \
            PureWindowsPath(relative).drive:
        if base != "the cohort folder":
            return f"is an absolute path; paths are relative to {base}"
        return "is an absolute path; a cohort folder holds its own files, so it can be moved or shared whole"
    depth = 0
    for part in PurePosixPath(relative.replace("\\", "/")).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            if base != "the cohort folder":
                return f"climbs out of {base} with '..'; image paths stay inside it"
            return "climbs out of the cohort folder with '..'; a cohort folder holds its own files"
    return None


# ---- geometry -----------------------------------------------------------------------------------

def affine_problem(affine: np.ndarray, ndim: int) -> str | None:
    """Why an image's voxel-to-world affine cannot be used (non-finite, or singular), or None."""
    if not np.isfinite(affine).all():
        return "has a voxel-to-world affine with NaN or infinite entries"
    singular = np.linalg.svd(affine[:3, :ndim], compute_uv=False)
    if singular.min() <= 1e-6 * max(singular.max(), 1e-12):
        return "has a singular voxel-to-world affine (a zero voxel size, or two axes pointing the same way)"
    return None


def geometry_mismatch(mask: np.ndarray, image: np.ndarray, ndim: int) -> str | None:
    """How a mask's grid differs from its image's (spacing, origin, direction), or None within tolerance."""
    found = []
    spacing_m, spacing_i = np.linalg.norm(mask[:3, :ndim], axis=0), np.linalg.norm(image[:3, :ndim], axis=0)
    if not np.allclose(spacing_m, spacing_i, rtol=SPACING_RTOL, atol=0):
        found.append(f"spacing {_mm(spacing_m)} mm against the image's {_mm(spacing_i)} mm")
    if not np.allclose(mask[:3, 3], image[:3, 3], rtol=0, atol=ORIGIN_ATOL_MM):
        shift = float(np.linalg.norm(mask[:3, 3] - image[:3, 3]))
        found.append(f"origin {_mm(mask[:3, 3])} mm, {shift:.3g} mm from the image's {_mm(image[:3, 3])}")
    if not found and not np.allclose(mask[:3, :ndim] / spacing_m, image[:3, :ndim] / spacing_i, rtol=0,
                                     atol=DIRECTION_ATOL):
        found.append("a different direction (axis orientation)")
    return "; ".join(found) or None


def _mm(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
