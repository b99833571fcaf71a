"""What every layout importer shares: the sessions it found, and writing them as a format-2 cohort.

A layout module turns a published folder (SRC) into a :class:`Layout`: one :class:`Session` per scan session
with its days, its image file per sequence and its tumour file, the patients' clinical table, the label names
and what it skipped. :func:`write_cohort` then orders each patient's sessions by days, takes the first usable
one as the baseline, checks each file can be read, and writes cohort.yaml (format 2, ``root:`` pointing at
SRC so that no image is copied), patients.csv and scans.csv into a new folder. Nothing is written into SRC.
The one image it writes: a tumour label map merged from a layout's binary masks (SAILOR's enhancing and oedema
masks), under ``tumor_labels/`` in the new folder, referenced as ``cohort:tumor_labels/...`` (format 2's path
relative to the cohort folder rather than to ``root``).
"""

from __future__ import annotations

import math
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from oncodiff.cohort.schema import COHORT_PATH_PREFIX, COHORT_YAML, PATIENTS_CSV, SCANS_CSV
from oncodiff.errors import OncodiffError
from oncodiff.outputs import check_output, staged_folder

BASELINE = "baseline"  # the timepoint label of each patient's first usable session
LABEL_MAPS = "tumor_labels"  # the folder of the cohort that holds the label maps an importer merged


class LayoutError(OncodiffError):
    """SRC does not hold the layout asked for, or an option does not fit it."""


@dataclass
class Session:
    """One scan session of one patient in SRC. ``images``: sequence -> file (absolute); ``days``: since the
    patient's first session of the layout (None: unknown, the session is skipped); ``tumor``: the label map
    (or binary mask, with ``Layout.mask``) or None; ``extra``: further scans.csv columns (e.g. rano);
    ``tumor_parts``: label name -> binary mask, merged (in this order, a later label over an earlier one) into
    a label map on ``tumor``'s grid that the importer writes into the cohort (empty: ``tumor`` is used as is)."""

    patient: str
    name: str
    days: float | None
    images: dict[str, Path]
    tumor: Path | None = None
    extra: dict[str, object] = field(default_factory=dict)
    tumor_parts: dict[str, Path] = field(default_factory=dict)


@dataclass
class Layout:
    """What an importer read from SRC."""

    name: str
    root: Path  # the folder image paths are relative to (SRC, or a folder inside it)
    sequences: tuple[str, ...]  # primary first
    sessions: list[Session]
    patients: pd.DataFrame  # patient_id + clinical columns, one row per patient
    clinical: list[dict] = field(default_factory=list)  # cohort.yaml `clinical:` entries
    labels: dict[str, int] = field(default_factory=dict)  # empty with mask=True
    tumor: tuple[str, ...] = ()
    mask: bool = False  # the tumour file is a binary mask (tumor_mask), not a label map (tumor_labels)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # assumptions the user should know (printed, and in the yaml)
    outcomes: dict = field(default_factory=dict)  # cohort.yaml `outcomes:` (columns of patients)


@dataclass(frozen=True)
class ImportResult:
    out: Path
    patients: int
    scans: int
    skipped: tuple[str, ...]
    notes: tuple[str, ...]

    def __str__(self) -> str:
        lines = [f"wrote {self.out}: {self.patients} patients, {self.scans} scans (images stay in place)"]
        lines += [f"note: {n}" for n in self.notes]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)}:")
            lines += [f"  - {s}" for s in self.skipped]
        return "\n".join(lines)


def readable(path: Path) -> str | None:
    """None when ``path`` opens as an image (its header: cheap), else why not."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
        if len(image.shape) < 2 or any(n < 1 for n in image.shape):
            return f"has shape {image.shape}"
    except Exception as error:  # noqa: BLE001 - any reader failure means: unreadable, say why
        return f"cannot be read ({type(error).__name__}: {error})"
    return None


def write_cohort(layout: Layout, out: str | Path, overwrite: bool = False, src: Path | None = None) -> ImportResult:
    """Write ``layout`` as a format-2 cohort in the new folder ``out`` (docs/outputs.md rules); ``src``: the
    folder the user gave (``layout.root`` may be inside it), which ``out`` may not be inside either."""
    source = layout.root.resolve()
    out = check_output(out, "cohort", overwrite, inputs={"source": Path(src or source).resolve()})
    skipped = list(layout.skipped)
    merges: list[tuple[Session, str]] = []
    rows = _scan_rows(layout, source, skipped, merges)
    if not rows:
        raise LayoutError(f"{source}: no patient has a usable baseline session (a {layout.sequences[0]} image and "
                           "a tumour segmentation); nothing to import. Skipped:\n  - " + "\n  - ".join(skipped))
    scans = pd.DataFrame(rows)
    kept = set(scans["patient_id"])
    patients = layout.patients[layout.patients["patient_id"].isin(kept)].copy()
    for patient in sorted(kept - set(patients["patient_id"])):
        patients = pd.concat([patients, pd.DataFrame([{"patient_id": patient}])], ignore_index=True)
    patients = patients.sort_values("patient_id", kind="stable")
    missing = Counter(column.split(":", 1)[1] for column in scans.columns if column.startswith("image:")
                      for value in scans[column] if _empty(value))
    notes = list(layout.notes)
    if missing:
        notes.append("missing sequences (left empty; format 2 records them as missing): " +
                     ", ".join(f"{name} on {count} scan(s)" for name, count in sorted(missing.items())))
    with staged_folder(out, "cohort") as partial:
        for k, (session, relative) in enumerate(merges):
            skipped += _merge_label_map(session, layout.labels, partial / relative, source)
            if len(merges) > 20 and ((k + 1) % 20 == 0 or k + 1 == len(merges)):
                print(f"label maps: {k + 1}/{len(merges)} written", file=sys.stderr, flush=True)
        (partial / COHORT_YAML).write_text(_yaml(layout, os.path.relpath(source, out), notes), encoding="utf-8")
        patients.to_csv(partial / PATIENTS_CSV, index=False, lineterminator="\n")
        scans.to_csv(partial / SCANS_CSV, index=False, lineterminator="\n")
    return ImportResult(out, len(patients), len(scans), tuple(skipped), tuple(notes))


def _empty(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def _scan_rows(layout: Layout, source: Path, skipped: list[str], merges: list[tuple[Session, str]]) -> list[dict]:
    """scans.csv rows; ``merges`` gets (session, path in the cohort) of each label map to write."""
    primary = layout.sequences[0]
    tumor_column = "tumor_mask" if layout.mask else "tumor_labels"
    by_patient: dict[str, list[Session]] = {}
    for session in layout.sessions:
        where = f"{session.patient} {session.name}"
        if session.days is None:
            skipped.append(f"{where}: session without days (its place in time is unknown)")
            continue
        if primary not in session.images:
            skipped.append(f"{where}: no {primary} image (the primary sequence)")
            continue
        problem = readable(session.images[primary])
        if problem:
            skipped.append(f"{where}: {_relative(session.images[primary], source)} {problem}")
            continue
        for name in [s for s in session.images if s != primary]:
            problem = readable(session.images[name])
            if problem:
                skipped.append(f"{where}: sequence {name} left empty: {_relative(session.images[name], source)} "
                               f"{problem}")
                del session.images[name]
        if session.tumor is not None and (problem := readable(session.tumor)):
            skipped.append(f"{where}: segmentation left empty: {_relative(session.tumor, source)} {problem}")
            session.tumor = None
        for name, path in list(session.tumor_parts.items()):
            if path != session.tumor and (problem := readable(path)):
                skipped.append(f"{where}: label {name} left out of its label map: {_relative(path, source)} {problem}")
                del session.tumor_parts[name]
        by_patient.setdefault(session.patient, []).append(session)
    rows = []
    for patient, sessions in sorted(by_patient.items()):
        sessions.sort(key=lambda s: (s.days, s.name))
        while sessions and sessions[0].tumor is None:
            skipped.append(f"{patient} {sessions[0].name}: no tumour segmentation, which the baseline (the first "
                           "session) needs; the next session is the baseline")
            sessions.pop(0)
        if not sessions:
            continue
        origin = sessions[0].days
        seen: set[float] = set()
        for k, session in enumerate(sessions):
            days = float(session.days - origin)
            if k and days in seen:
                skipped.append(f"{patient} {session.name}: same day ({days:g}) as an earlier session of the patient")
                continue
            seen.add(days)
            row = {"patient_id": patient, "lesion_id": "L1", "timepoint": BASELINE if k == 0 else session.name,
                   "days": days, "session": session.name}
            for name in layout.sequences:
                row[f"image:{name}"] = _relative(session.images[name], source) if name in session.images else ""
            row[tumor_column] = _relative(session.tumor, source) if session.tumor is not None else ""
            if session.tumor is not None and session.tumor_parts:
                written = f"{LABEL_MAPS}/{patient}/{session.name}.nii.gz"
                merges.append((session, written))
                row[tumor_column] = COHORT_PATH_PREFIX + written
            row.update(session.extra)
            rows.append(row)
    return rows


def _merge_label_map(session: Session, labels: dict[str, int], destination: Path, source: Path) -> list[str]:
    """Write ``session``'s tumour parts as one uint8 label map on its tumour file's grid (its header kept);
    returns the parts left out (not on that grid), as skip lines."""
    import nibabel as nib
    import numpy as np

    reference = nib.load(str(session.tumor))
    label_map = np.zeros(reference.shape, np.uint8)
    left_out = []
    for name, path in session.tumor_parts.items():
        part = reference if path == session.tumor else nib.load(str(path))
        if part.shape != reference.shape or not np.allclose(part.affine, reference.affine, atol=1e-3):
            left_out.append(f"{session.patient} {session.name}: label {name} left out of its label map: "
                            f"{_relative(path, source)} (shape {part.shape}) is not on the grid of "
                            f"{_relative(session.tumor, source)} (shape {reference.shape})")
            continue
        label_map[np.asanyarray(part.dataobj) > 0] = labels[name]
    header = reference.header.copy() if isinstance(reference, nib.Nifti1Image) else None
    image = nib.Nifti1Image(label_map, reference.affine, header)
    image.set_data_dtype(np.uint8)
    destination.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(destination))
    return left_out


def _relative(path: Path, source: Path) -> str:
    return Path(path).resolve().relative_to(source).as_posix()


def _yaml(layout: Layout, root: str, notes: list[str]) -> str:
    spec: dict = {"format": 2, "name": layout.name, "modality": "MRI", "baseline": BASELINE, "root": root,
                  "sequences": list(layout.sequences), "primary": layout.sequences[0]}
    if layout.clinical:
        spec["clinical"] = layout.clinical
    if layout.outcomes:
        spec["outcomes"] = layout.outcomes
    if layout.labels:
        spec["labels"] = dict(layout.labels)
        spec["tumor"] = list(layout.tumor)
    header = "".join(f"# {line}\n" for line in
                     [f"written by `oncodiff import {layout.name}` (docs/dataset-format.md, \"Importing a published "
                      "layout\")", *notes])
    return header + yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=120)
