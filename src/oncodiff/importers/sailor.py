"""SAILOR (TaDiff's data): glioma, sessions a few weeks apart, expert masks of enhancement and oedema.

SRC holds one folder per subject::

    sub-XX/ses-YY/{T1,T1c,Flair,T2,EdemaMask-CL,ContrastEnhancedMask-CL}.nii.gz
    sub-XX/{DoseMap.nii.gz, intervals-days.txt, age-years.txt, overall-survival-months.txt}

``intervals-days.txt`` holds the days between consecutive sessions, one number per line (one fewer than the
sessions): session k is on day sum(intervals[:k]). The tumour: ``EdemaMask-CL`` and ``ContrastEnhancedMask-CL``
merged into one label map (oedema 2, then enhancing 1 over it; tumour = enhancing) that the importer writes into
the cohort folder (format 2's ``cohort:`` paths), since SRC is only read. ``DoseMap`` is not read: anatomy maps
are integer label maps resampled as masks, and a dose map is continuous (Gy), per subject rather than per session.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from oncodiff.importers.common import LayoutError, Layout, Session

SEQUENCES = {"t1c": "T1c", "t1": "T1", "t2": "T2", "flair": "Flair"}
TUMOR = "ContrastEnhancedMask-CL.nii.gz"
OEDEMA = "EdemaMask-CL.nii.gz"
LABELS = {"enhancing": 1, "oedema": 2}
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
            tumor, oedema = folder / TUMOR, folder / OEDEMA
            parts = {}
            if tumor.is_file():
                if oedema.is_file():
                    parts["oedema"] = oedema
                else:
                    skipped.append(f"{subject.name} {folder.name}: no {OEDEMA}; its label map has enhancing only")
                parts["enhancing"] = tumor  # painted last: enhancing wins where the masks overlap
            sessions.append(Session(subject.name, folder.name, days, {k_: v for k_, v in images.items() if v.is_file()},
                                    tumor if tumor.is_file() else None, tumor_parts=parts))
        age = _numbers(subject / "age-years.txt")
        survival = _numbers(subject / "overall-survival-months.txt")
        rows.append({"patient_id": subject.name, "age": age[0] if age else None,
                     "os_months": survival[0] if survival else None})
    patients = pd.DataFrame(rows)
    clinical = [{"name": "age", "type": "numeric", "group": "demographics", "unit": "years"}] \
        if patients["age"].notna().any() else []
    notes = ["tumour label maps written into this folder (tumor_labels/, paths 'cohort:...'): EdemaMask-CL -> "
             "oedema 2, ContrastEnhancedMask-CL -> enhancing 1 (over oedema where both mark a voxel); tumour = "
             "enhancing",
             "DoseMap.nii.gz is not read: anatomy maps are integer label maps resampled as masks, a dose map is "
             "continuous (Gy) and per subject",
             "os_months (overall-survival-months.txt) is in patients.csv but not an outcome: SAILOR gives no "
             "censoring"]
    return Layout("sailor", src, tuple(SEQUENCES), sessions, patients, clinical, dict(LABELS), ("enhancing",),
                  skipped=skipped, notes=notes)
