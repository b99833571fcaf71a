"""BraTS 2024 post-treatment glioma (BraTS-GLI): four sequences and a label map per case and time point.

Files ``BraTS-GLI-XXXXX-YYY-{t1n,t1c,t2w,t2f,seg}.nii.gz``, usually each case in its own folder of that name,
anywhere below SRC. XXXXX is the patient, YYY the time point (100, 101, ...: ordered, no dates). Labels:
1 non-enhancing tumour core, 2 surrounding FLAIR hyperintensity (oedema), 3 enhancing tumour, 4 resection
cavity; the tumour is 1 + 3 (the tumour core).

BraTS publishes no days between time points. With ``--days FILE`` (a CSV with patient_id, timepoint, days;
patient_id BraTS-GLI-XXXXX, timepoint YYY) the real ones are used; without it, time point k of a patient (counted from
its first) is placed at k * ``interval_days`` and the importer says so.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from oncodiff.importers.common import LayoutError, Layout, Session

SEQUENCES = {"t1c": "t1c", "t1": "t1n", "t2": "t2w", "flair": "t2f"}
NAME = re.compile(r"^BraTS-GLI-(\d+)-(\d+)-(t1n|t1c|t2w|t2f|seg)\.nii(\.gz)?$")
LABELS = {"non_enhancing_core": 1, "oedema": 2, "enhancing": 3, "cavity": 4}
TUMOR = ("non_enhancing_core", "enhancing")
INTERVAL_DAYS = 90.0


def read(src: Path, space: str = "native", segmentation: str | None = None, days_table: Path | None = None,
         interval_days: float = INTERVAL_DAYS) -> Layout:
    if space != "native":
        raise LayoutError("--space: BraTS ships one space (SRI-24, skull-stripped); leave --space out")
    if segmentation not in (None, "seg"):
        raise LayoutError(f"--segmentation {segmentation}: BraTS has one label map per case (seg)")
    found: dict[tuple[str, str], dict[str, Path]] = {}
    for path in sorted(src.rglob("BraTS-GLI-*")):
        match = NAME.match(path.name)
        if match and path.is_file():
            found.setdefault((match.group(1), match.group(2)), {})[match.group(3)] = path
    if not found:
        raise LayoutError(f"{src} does not look like BraTS 2024 post-treatment: no BraTS-GLI-XXXXX-YYY-*.nii.gz")
    known = _days(days_table) if days_table else None
    sessions, skipped = [], []
    by_patient: dict[str, list[str]] = {}
    for patient, point in sorted(found):
        by_patient.setdefault(patient, []).append(point)
    for patient, points in by_patient.items():
        for k, point in enumerate(sorted(points, key=int)):
            files = found[(patient, point)]
            if known is None:
                days = k * interval_days
            else:
                days = known.get((f"BraTS-GLI-{patient}", point))
            images = {ours: files[theirs] for ours, theirs in SEQUENCES.items() if theirs in files}
            sessions.append(Session(f"BraTS-GLI-{patient}", point, days, images, files.get("seg")))
    notes = ["labels: BraTS 2024 (1 non-enhancing core, 2 oedema, 3 enhancing, 4 resection cavity); "
             "tumour = non_enhancing_core + enhancing"]
    if known is None:
        notes.append(f"BraTS gives no dates: time point k of a patient is placed at {interval_days:g} x k days "
                     "(--interval-days); give the real days with --days FILE (patient_id,timepoint,days)")
    patients = pd.DataFrame({"patient_id": [f"BraTS-GLI-{p}" for p in sorted(by_patient)]})
    return Layout("brats-post", src, tuple(SEQUENCES), sessions, patients, [], dict(LABELS), TUMOR,
                  skipped=skipped, notes=notes)


def _days(path: Path) -> dict[tuple[str, str], float]:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise LayoutError(f"--days {path}: cannot be read as CSV ({error})") from error
    missing = {"patient_id", "timepoint", "days"} - set(table.columns)
    if missing:
        raise LayoutError(f"--days {path}: needs the columns patient_id, timepoint, days; missing "
                           f"{', '.join(sorted(missing))}")
    out = {}
    for row, (patient, point, days) in enumerate(table[["patient_id", "timepoint", "days"]].itertuples(index=False), 1):
        try:
            out[(patient.strip(), point.strip())] = float(days)
        except ValueError:
            if days.strip():
                raise LayoutError(f"--days {path}, row {row}: days {days!r} is not a number") from None
    return out
