"""LUMIERE (Suter et al., Sci. Data 2022): glioblastoma, weekly-ish sessions, two automatic segmentations.

SRC is the LUMIERE folder (``Imaging/`` beside the CSV tables), or ``Imaging/`` itself::

    Imaging/Patient-NNN/week-NNN[-k]/{CT1,T1,T2,FLAIR}.nii.gz                   native space
        DeepBraTumIA-segmentation/native/segmentation/{ct1,t1,t2,flair}_seg_mask.nii.gz
        DeepBraTumIA-segmentation/atlas/skull_strip/{ct1,t1,t2,flair}_skull_strip.nii.gz
        DeepBraTumIA-segmentation/atlas/segmentation/seg_mask.nii.gz
        HD-GLIO-AUTO-segmentation/native/segmentation_{CT1,T1,T2,FLAIR}_origspace.nii.gz
        HD-GLIO-AUTO-segmentation/registered/{CT1,T1,T2,FLAIR}_r2s_bet_reg.nii.gz + registered/segmentation.nii.gz
    LUMIERE-Demographics_Pathology.csv   Patient, Age at surgery (years), Sex, Survival time (weeks), IDH, MGMT
    LUMIERE-ExpertRating-v202211.csv     Patient, Date (week-NNN[-k]), Rating (...) (RANO: CR/PR/SD/PD, Pre-Op, Post-Op)

Days: week NNN is 7 * NNN days after the pre-operative scan; ``week-000-1`` is before surgery and ``week-000-2``
after, so the suffix orders sessions of one week (week-000-2 is placed on day 1). Label values (the
published label codes, matched by voxel counts against LUMIERE's radiomics tables by others; docs say so):
DeepBraTumIA 1 necrosis, 2 contrast enhancement, 3 oedema; HD-GLIO-AUTO 1 non-enhancing T2/FLAIR
abnormality, 2 contrast enhancement.

Response (patients.csv ``response``, cohort.yaml ``outcomes.response``): the expert's RANO rating of the first
session rated CR, PR, SD or PD after the session rated Post-Op (the post-operative baseline), in week order;
CR/PR = responder, SD/PD = non-responder. A patient without a Post-Op rating or without such a later rating gets
an empty value (unknown).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from oncodiff.importers.common import LayoutError, Layout, Session

SEQUENCES = {"t1c": "CT1", "t1": "T1", "t2": "T2", "flair": "FLAIR"}  # our name -> LUMIERE's
WEEK = re.compile(r"^week-(\d+)(?:-(\d+))?$")
SEGMENTATIONS = ("deepbratumia", "hd-glio")
LABELS = {
    "deepbratumia": ({"necrosis": 1, "enhancing": 2, "oedema": 3}, ("necrosis", "enhancing")),
    "hd-glio": ({"non_enhancing": 1, "enhancing": 2}, ("enhancing",)),
}
DEMOGRAPHICS = "LUMIERE-Demographics_Pathology.csv"
RATINGS = "LUMIERE-ExpertRating-v202211.csv"
RESPONDER, NON_RESPONDER = "responder", "non-responder"
RANO_RESPONSE = {"CR": RESPONDER, "PR": RESPONDER, "SD": NON_RESPONDER, "PD": NON_RESPONDER}
POST_OP = "POST-OP"
RESPONSE_RULE = ("the RANO rating of the first session rated CR/PR/SD/PD after the one rated Post-Op: CR/PR = "
                 "responder, SD/PD = non-responder, empty when there is none")


def week_days(name: str) -> float | None:
    """Days of a ``week-NNN[-k]`` folder: 7 * NNN, plus k - 1 so that week-000-1 < week-000-2; None otherwise."""
    match = WEEK.match(name)
    if match is None:
        return None
    return 7.0 * int(match.group(1)) + (int(match.group(2)) - 1 if match.group(2) else 0)


def _files(session: Path, space: str, segmentation: str) -> tuple[dict[str, Path], Path | None]:
    images, seg_folder = {}, None
    if segmentation == "deepbratumia":
        seg_folder = session / "DeepBraTumIA-segmentation"
        if space == "native":
            images = {ours: session / f"{theirs}.nii.gz" for ours, theirs in SEQUENCES.items()}
            tumor = seg_folder / "native" / "segmentation" / "ct1_seg_mask.nii.gz"
        else:
            images = {ours: seg_folder / "atlas" / "skull_strip" / f"{theirs.lower()}_skull_strip.nii.gz"
                      for ours, theirs in SEQUENCES.items()}
            tumor = seg_folder / "atlas" / "segmentation" / "seg_mask.nii.gz"
    else:
        seg_folder = session / "HD-GLIO-AUTO-segmentation"
        if space == "native":
            images = {ours: session / f"{theirs}.nii.gz" for ours, theirs in SEQUENCES.items()}
            tumor = seg_folder / "native" / "segmentation_CT1_origspace.nii.gz"
        else:
            images = {ours: seg_folder / "registered" / f"{theirs}_r2s_bet_reg.nii.gz"
                      for ours, theirs in SEQUENCES.items()}
            tumor = seg_folder / "registered" / "segmentation.nii.gz"
    return {k: v for k, v in images.items() if v.is_file()}, (tumor if tumor.is_file() else None)


def read(src: Path, space: str = "native", segmentation: str | None = None) -> Layout:
    """LUMIERE at ``src`` as a :class:`Layout`. ``space``: native (the scanner's grids) or atlas (DeepBraTumIA's
    skull-stripped MNI images, or HD-GLIO-AUTO's registered ones); ``segmentation``: deepbratumia (default) or
    hd-glio."""
    segmentation = segmentation or "deepbratumia"
    if segmentation not in SEGMENTATIONS:
        raise LayoutError(f"--segmentation {segmentation}: LUMIERE has {' and '.join(SEGMENTATIONS)}")
    if space not in ("native", "atlas"):
        raise LayoutError(f"--space {space}: LUMIERE has native and atlas (registered) files")
    imaging = src / "Imaging" if (src / "Imaging").is_dir() else src
    tables = imaging.parent if imaging != src else src
    if not any(p.name.startswith("Patient-") for p in imaging.iterdir() if p.is_dir()):
        raise LayoutError(f"{src} does not look like LUMIERE: no Imaging/Patient-NNN folders")
    sessions, skipped = [], []
    other = "hd-glio" if segmentation == "deepbratumia" else "deepbratumia"
    ratings = _ratings(tables / RATINGS)
    for patient in sorted(p for p in imaging.iterdir() if p.is_dir() and p.name.startswith("Patient-")):
        for folder in sorted(p for p in patient.iterdir() if p.is_dir()):
            days = week_days(folder.name)
            images, tumor = _files(folder, space, segmentation)
            if tumor is None and _files(folder, space, other)[1] is not None:
                skipped.append(f"{patient.name} {folder.name}: no {segmentation} segmentation (there is an {other} "
                               f"one: --segmentation {other} reads it)")
            extra = {"rano": ratings.get((patient.name, folder.name), "")}
            sessions.append(Session(patient.name, folder.name, days, images, tumor, extra))
    labels, tumor_names = LABELS[segmentation]
    patients, clinical, notes = _demographics(tables / DEMOGRAPHICS, sorted({s.patient for s in sessions}))
    notes.append(f"segmentation: {segmentation} ({', '.join(f'{k} {v}' for k, v in labels.items())}); "
                 f"tumour = {' + '.join(tumor_names)}; {space}-space files")
    outcomes = {}
    if ratings:
        found = [first_response(ratings, patient) for patient in patients["patient_id"]]
        patients["response"] = [response for response, _ in found]
        patients["response_session"] = [session for _, session in found]
        outcomes["response"] = {"column": "response", "positive": RESPONDER, "negative": NON_RESPONDER}
        counts = patients["response"].value_counts()
        notes.append(f"response (outcomes.response) = {RESPONSE_RULE}: {counts.get(RESPONDER, 0)} responder(s), "
                     f"{counts.get(NON_RESPONDER, 0)} non-responder(s), {counts.get('', 0)} unknown; the session "
                     "it comes from is in patients.csv's response_session")
    else:
        notes.append(f"no {RATINGS} beside Imaging/: the rano column is empty and there is no response outcome")
    return Layout("lumiere", imaging, tuple(SEQUENCES), sessions, patients, clinical, labels, tumor_names,
                  outcomes=outcomes, skipped=skipped, notes=notes)


def first_response(ratings: dict[tuple[str, str], str], patient: str) -> tuple[str, str]:
    """(response, the week folder it was rated at) of ``patient`` by :data:`RESPONSE_RULE`; ("", "") when
    unknown. ``ratings``: (patient, week folder) -> RANO rating."""
    rated = sorted((days, date, rating.strip().upper()) for (who, date), rating in ratings.items()
                   if who == patient and (days := week_days(date)) is not None)
    post_op = [days for days, _, rating in rated if rating == POST_OP]
    if not post_op:
        return "", ""
    after = [(date, rating) for days, date, rating in rated if days > post_op[-1] and rating in RANO_RESPONSE]
    return (RANO_RESPONSE[after[0][1]], after[0][0]) if after else ("", "")


def _ratings(path: Path) -> dict[tuple[str, str], str]:
    """(patient, week folder) -> RANO rating, from the expert rating table when there is one."""
    if not path.is_file():
        return {}
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    columns = {c.strip().lower(): c for c in table.columns}
    patient, date = columns.get("patient"), columns.get("date")
    # the published header is "Rating (according to RANO, PD: Progressive disease, ...)", beside "Rating rationale"
    rating = columns.get("rating") or next((c for key, c in columns.items() if key.startswith("rating")
                                             and "rationale" not in key), None)
    if not (patient and date and rating):
        raise LayoutError(f"{path}: expected the columns Patient, Date and Rating (or 'Rating (...)'); found "
                          f"{list(table.columns)}")
    return {(r[patient].strip(), r[date].strip()): r[rating].strip() for _, r in table.iterrows()}


def _demographics(path: Path, patients: list[str]) -> tuple[pd.DataFrame, list[dict], list[str]]:
    """patients.csv rows (age, sex, os_days, idh, mgmt) and their cohort.yaml entries."""
    frame = pd.DataFrame({"patient_id": patients})
    if not path.is_file():
        return frame, [], [f"no {DEMOGRAPHICS} beside Imaging/: patients.csv has no clinical values"]
    table = pd.read_csv(path, dtype=str, keep_default_na=False)

    def column(*words: str) -> str | None:
        return next((c for c in table.columns if all(w in c.lower() for w in words)), None)

    key = column("patient")
    if key is None:
        raise LayoutError(f"{path}: no Patient column; found {list(table.columns)}")
    table = table.set_index(table[key].str.strip())
    picked = {"age": column("age"), "sex": column("sex"), "survival_weeks": column("survival"),
              "idh": column("idh", "wt"), "mgmt": column("mgmt", "qualitative")}
    clinical = []
    for name, source in picked.items():
        if source is None:
            continue
        values = frame["patient_id"].map(table[source]).fillna("").str.strip()
        values = values.where(~values.str.lower().isin(["", "na", "n/a", "nan", "unknown"]), "")
        if name == "age":
            frame["age"] = pd.to_numeric(values, errors="coerce")
            clinical.append({"name": "age", "type": "numeric", "group": "demographics", "unit": "years"})
        elif name == "survival_weeks":
            frame["os_days"] = pd.to_numeric(values, errors="coerce") * 7
        else:
            frame[name] = values.str.lower()
            categories = sorted(set(frame[name]) - {""})
            if categories:
                clinical.append({"name": name, "type": "categorical",
                                 "group": "demographics" if name == "sex" else "pathology", "categories": categories})
    notes = []
    if "os_days" in frame:
        notes.append("os_days (7 x survival weeks) is in patients.csv but not an outcome: the table gives no "
                     "censoring; add an event column and outcomes.survival to use it")
    return frame, clinical, notes
