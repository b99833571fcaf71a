"""BIDS-like longitudinal data, read from its file names (no pybids).

    sub-X/ses-Y/anat/sub-X_ses-Y[_ce-LABEL][_...]_{T1w,T2w,FLAIR}.nii[.gz]      (ce- T1w: the contrast T1)
    sub-X/sub-X_sessions.tsv        session_id and the days: a `days` column (or `*_days`), else `acq_time` dates
    participants.tsv                participant_id, then clinical variables: age (numeric), sex, and every other
                                    column (numeric when each non-empty value is a number, else categorical)
    derivatives/*/sub-X/ses-Y/anat/sub-X_ses-Y_..._dseg.nii[.gz]   tumour label map; label names from the
                                    `_dseg.tsv` beside it (or a dseg.tsv at the derivative's top): index, name

pybids would do the parsing, but it indexes the whole tree into SQLite and brings SQLAlchemy, formulaic and
the BIDS validator's schema for a reading that needs three entities (sub, ses, ce) and two TSV files; the
regular expression below is that reading, and its tests are the layout.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from oncodiff.importers.common import LayoutError, Layout, Session

SUFFIX = re.compile(  # sub, ses, the other entities, the suffix
    r"^(sub-[A-Za-z0-9]+)(?:_(ses-[A-Za-z0-9]+))?((?:_[a-z]+-[A-Za-z0-9]+)*)_([A-Za-z0-9]+)\.nii(\.gz)?$")
SEQUENCES = ("t1c", "t1", "t2", "flair")
TUMOUR_WORDS = ("enhanc", "necro", "core", "tumo")
MISSING = ("", "n/a")  # BIDS writes n/a for a missing value
MASK_REASON = ("a _mask is a binary mask whose name does not say what it outlines (brain, tumour, ...); the tumour "
               "is read from the _dseg label maps, whose _dseg.tsv names each label")


def _entities(text: str) -> dict[str, str]:
    return dict(part.split("-", 1) for part in text.split("_") if part)


def _sequence(suffix: str, entities: dict[str, str]) -> str | None:
    if suffix == "T1w":
        return "t1c" if "ce" in entities else "t1"
    return {"T2w": "t2", "FLAIR": "flair"}.get(suffix)


def _name(raw: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", raw.strip().lower()).strip("_.-") or "label"


def read(src: Path, space: str = "native", segmentation: str | None = None) -> Layout:
    if space != "native":
        raise LayoutError("--space: this reader takes the raw (anat/) files; registered derivatives are not read yet")
    subjects = sorted(p for p in src.iterdir() if p.is_dir() and p.name.startswith("sub-"))
    if not subjects:
        raise LayoutError(f"{src} does not look like BIDS: no sub-* folders")
    derivatives = sorted(p for p in (src / "derivatives").iterdir() if p.is_dir()) \
        if (src / "derivatives").is_dir() else []
    if segmentation is not None:
        derivatives = [p for p in derivatives if p.name == segmentation]
        if not derivatives:
            raise LayoutError(f"--segmentation {segmentation}: no folder derivatives/{segmentation} in {src}")
    sessions, skipped, labels, masks = [], [], {}, []
    for subject in subjects:
        days = _session_days(subject, skipped)
        folders = sorted(p for p in subject.iterdir() if p.is_dir() and p.name.startswith("ses-")) or [subject]
        for folder in folders:
            session = folder.name if folder != subject else "ses-1"
            images: dict[str, Path] = {}
            for path in sorted((folder / "anat").glob("*.nii*")):
                match = SUFFIX.match(path.name)
                sequence = _sequence(match.group(4), _entities(match.group(3))) if match else None
                if match and match.group(4) == "mask":
                    masks.append(path)
                if sequence is None:
                    continue
                if sequence in images:
                    skipped.append(f"{subject.name} {session}: {path.name} is a second {sequence} image; "
                                   f"{images[sequence].name} is used")
                    continue
                images[sequence] = path
            tumor = _segmentation(derivatives, subject.name, session if folder != subject else None, labels, skipped)
            sessions.append(Session(subject.name, session, days.get(session), images, tumor))
    if not labels:
        raise LayoutError(f"{src}: no tumour segmentation found (derivatives/*/sub-*/ses-*/anat/*_dseg.nii.gz "
                           "with a _dseg.tsv of its label names)")
    tumor = tuple(name for name in labels if any(word in name for word in TUMOUR_WORDS)) or tuple(labels)
    masks += sorted(path for derivative in derivatives for path in derivative.rglob("sub-*_mask.nii*"))
    if masks:
        skipped.append(f"{len(masks)} _mask file(s) not read (the first: {masks[0].relative_to(src).as_posix()}): "
                       f"{MASK_REASON}")
    patients, clinical, notes = _participants(src / "participants.tsv", [s.name for s in subjects], skipped)
    notes.insert(0, f"labels from the _dseg.tsv files: {', '.join(f'{k} {v}' for k, v in labels.items())}; tumour = "
                 f"{' + '.join(tumor)} (names with enhanc/necro/core/tumo; edit 'tumor' in cohort.yaml to change)")
    return Layout("bids", src, SEQUENCES, sessions, patients, clinical, labels, tumor, skipped=skipped, notes=notes)


def _session_days(subject: Path, skipped: list[str]) -> dict[str, float]:
    path = subject / f"{subject.name}_sessions.tsv"
    if not path.is_file():
        skipped.append(f"{subject.name}: no {path.name}; its sessions have no days")
        return {}
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if "session_id" not in table.columns:
        raise LayoutError(f"{path}: no session_id column; found {list(table.columns)}")
    column = next((c for c in table.columns if c == "days" or c.endswith("_days")), None)
    if column is not None:
        values = pd.to_numeric(table[column].replace({"n/a": ""}), errors="coerce")
    elif "acq_time" in table.columns:
        times = pd.to_datetime(table["acq_time"].replace({"n/a": ""}), errors="coerce")
        values = (times - times.min()).dt.total_seconds() / 86400.0
    else:
        raise LayoutError(f"{path}: no days column (days, *_days) nor acq_time; add one to order the sessions")
    return {session: float(v) for session, v in zip(table["session_id"], values) if pd.notna(v)}


def _segmentation(derivatives: list[Path], subject: str, session: str | None, labels: dict[str, int],
                  skipped: list[str]) -> Path | None:
    for derivative in derivatives:
        folder = derivative / subject / (session or "") / "anat"
        for path in sorted(folder.glob(f"{subject}*_dseg.nii*")):
            names = _label_names(path, derivative)
            if names is None:
                skipped.append(f"{subject} {session}: {path.name} has no _dseg.tsv naming its labels; not used")
                continue
            for name, value in names.items():
                if labels.setdefault(name, value) != value:
                    raise LayoutError(f"{path}: label {name!r} is {value} here but {labels[name]} in an earlier "
                                       "_dseg.tsv; one cohort gives each label one value")
            return path
    return None


def _label_names(path: Path, derivative: Path) -> dict[str, int] | None:
    stem = path.name.split(".nii")[0]
    for table in (path.with_name(stem + ".tsv"), derivative / "dseg.tsv", derivative / f"{stem.split('_')[-1]}.tsv"):
        if table.is_file():
            frame = pd.read_csv(table, sep="\t", dtype=str, keep_default_na=False)
            if {"index", "name"} <= set(frame.columns):
                return {_name(n): int(i) for i, n in zip(frame["index"], frame["name"]) if int(i) > 0}
    return None


def _participants(path: Path, subjects: list[str], skipped: list[str]) -> tuple[pd.DataFrame, list[dict], list[str]]:
    """patients.csv rows from participants.tsv, their cohort.yaml ``clinical`` entries and a note listing them:
    age (numeric, years) and sex in the demographics group; every other column in the participants group,
    numeric when each non-empty value (n/a is empty) is a number, else categorical."""
    frame = pd.DataFrame({"patient_id": subjects})
    if not path.is_file():
        return frame, [], []
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if "participant_id" not in table.columns:
        raise LayoutError(f"{path}: no participant_id column; found {list(table.columns)}")
    table = table.set_index(table["participant_id"].str.strip())
    clinical, kinds = [], []
    for column in [c for c in table.columns if c != "participant_id"]:
        values = frame["patient_id"].map(table[column]).fillna("").str.strip()
        values = values.where(~values.str.lower().isin(MISSING), "")
        name = _name(column)
        if name in frame.columns or name in ("patient_id", "lesion_id"):
            skipped.append(f"participants.tsv column {column!r}: its name ({name}) is already a patients.csv column")
            continue
        if not (values != "").any():
            skipped.append(f"participants.tsv column {column!r}: no value for any imported subject")
            continue
        numbers = pd.to_numeric(values.where(values != ""), errors="coerce")
        group = "demographics" if name in ("age", "sex") else "participants"
        if numbers[values != ""].notna().all() and name != "sex":
            frame[name] = numbers
            clinical.append({"name": name, "type": "numeric", "group": group, **({"unit": "years"} if name == "age"
                                                                                   else {})})
            kinds.append(f"{name} (numeric)")
        else:
            frame[name] = values
            clinical.append({"name": name, "type": "categorical", "group": group,
                             "categories": sorted(set(values) - {""})})
            kinds.append(f"{name} (categorical)")
    notes = [f"participants.tsv -> clinical: {', '.join(kinds)}; check the types and groups in cohort.yaml"] \
        if kinds else []
    return frame, clinical, notes
