"""SAILOR (TaDiff's data): glioma, sessions a few weeks apart, expert masks of enhancement and oedema.

SRC holds one folder per subject::

    sub-XX/ses-YY/{T1,T1c,Flair,T2,EdemaMask-CL,ContrastEnhancedMask-CL}.nii.gz
    sub-XX/{DoseMap.nii.gz, intervals-days.txt, age-years.txt, overall-survival-months.txt}

``intervals-days.txt`` holds the days between consecutive sessions, one number per line (one fewer than the
sessions): session k is on day sum(intervals[:k]). The tumour is ``ContrastEnhancedMask-CL`` (a binary mask:
format 2's tumor_mask); ``EdemaMask-CL``, ``DoseMap`` and per-session RANO files are not read yet.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from oncodiff.importers.common import LayoutError, Layout, Session

SEQUENCES = {"t1c": "T1c", "t1": "T1", "t2": "T2", "flair": "Flair"}
TUMOR = "ContrastEnhancedMask-CL.nii.gz"
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _numbers(path: Path) -> list[float] | None:
    if not path.is_file():
        return None
    return [float(x) for x in NUMBER.findall(path.read_text(encoding="utf-8", errors="replace"))]


def read(src: Path, space: str = "native", segmentation: str | None = None) -> Layout:
    if space != "native":
        raise LayoutError("--space: SAILOR's sessions come in one space (each session's own); leave --space out")
    if segmentation not in (None, "contrast-enhanced"):
        raise LayoutError(f"--segmentation {segmentation}: SAILOR's tumour is the contrast-enhanced mask")
    subjects = sorted(p for p in src.iterdir() if p.is_dir() and p.name.startswith("sub-"))
    if not subjects:
        raise LayoutError(f"{src} does not look like SAILOR: no sub-XX folders")
    sessions, skipped, rows = [], [], []
    for subject in subjects:
        folders = sorted((p for p in subject.iterdir() if p.is_dir() and p.name.startswith("ses-")),
                         key=lambda p: (int(m.group()) if (m := re.search(r"\d+", p.name)) else 0, p.name))
        intervals = _numbers(subject / "intervals-days.txt")
        if intervals is None:
            skipped.append(f"{subject.name}: no intervals-days.txt; its {len(folders)} session(s) have no days")
        elif len(intervals) != len(folders) - 1:
            skipped.append(f"{subject.name}: intervals-days.txt has {len(intervals)} interval(s) for "
                           f"{len(folders)} sessions; sessions past the last interval have no days")
        for k, folder in enumerate(folders):
            days = None
            if intervals is not None and k <= len(intervals):
                days = float(sum(intervals[:k]))
            images = {ours: folder / f"{theirs}.nii.gz" for ours, theirs in SEQUENCES.items()}
            tumor = folder / TUMOR
            sessions.append(Session(subject.name, folder.name, days, {k_: v for k_, v in images.items() if v.is_file()},
                                    tumor if tumor.is_file() else None))
        age = _numbers(subject / "age-years.txt")
        survival = _numbers(subject / "overall-survival-months.txt")
        rows.append({"patient_id": subject.name, "age": age[0] if age else None,
                     "os_months": survival[0] if survival else None})
    patients = pd.DataFrame(rows)
    clinical = [{"name": "age", "type": "numeric", "group": "demographics", "unit": "years"}] \
        if patients["age"].notna().any() else []
    notes = ["tumour = ContrastEnhancedMask-CL (binary); EdemaMask-CL and DoseMap.nii.gz are not read yet",
             "os_months (overall-survival-months.txt) is in patients.csv but not an outcome: SAILOR gives no "
             "censoring"]
    return Layout("sailor", src, tuple(SEQUENCES), sessions, patients, clinical, mask=True, skipped=skipped,
                  notes=notes)
