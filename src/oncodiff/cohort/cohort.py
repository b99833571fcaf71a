"""A loaded cohort folder: its spec, patients table and scans table, with paths resolved."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from oncodiff.cohort.image import Image
from oncodiff.cohort.schema import (COHORT_YAML, IMAGE_PREFIX, PATIENTS_CSV, SCANS_CSV, TUMOR_LABELS, CohortSpec,
                                   in_cohort_folder)
from oncodiff.cohort.validate import ALLOW_EXTERNAL, DEFAULT_LESION, _file_columns, data_root, validate_cohort
from oncodiff.errors import CohortError, Problem

# A cohort validated in this process is not validated again while nothing it was validated from changed: its
# resolved folder, the bytes of its three tables, ONCODIFF_ALLOW_EXTERNAL, and the stat (size, mtime_ns, ctime_ns,
# inode) of every file scans.csv names, and of the link itself where it is one (_validation_key). A cohort with a
# file modified less than RACY_SECONDS before it was validated is not remembered: a coarse file-system clock could
# let a second write within the same tick go unseen (git's "racily clean" entries). Only a valid cohort is
# remembered, with its warnings: an invalid one is validated, and raises, every time.
RACY_SECONDS = 2.0
_VALIDATED: dict[Path, tuple[tuple, list[Problem]]] = {}  # resolved root -> (its key when validated, its warnings)


@dataclass(frozen=True)
class Cohort:
    """A cohort folder. ``patients`` is indexed by patient_id; ``scans`` keeps file order.

    Format 2 is read into the columns format 1 code expects: with ``sequences``, ``image`` is the primary
    sequence's column (the ``image:NAME`` columns stay); :meth:`tumor` reads a scan's tumour from its
    ``tumor_mask`` or from its ``tumor_labels`` map (the union of the ``tumor`` labels)."""

    root: Path
    spec: CohortSpec
    patients: pd.DataFrame
    scans: pd.DataFrame

    @property
    def data_root(self) -> Path:
        """The folder scans.csv paths are relative to: format 2's ``root``, else the cohort folder."""
        base, _ = data_root(self.root, self.spec)
        return base if base is not None else self.root

    def path(self, relative: str) -> Path:
        """Absolute path of a file referenced in scans.csv: relative to :attr:`data_root`, or, written
        ``cohort:PATH`` in format 2, to the cohort folder."""
        inside = in_cohort_folder(str(relative), self.spec.format)
        return self.root / inside if inside is not None else self.data_root / str(relative)

    def sequence_paths(self, row) -> dict[str, str | None]:
        """Sequence name -> its image (relative to :attr:`data_root`) on one scans.csv row, None where missing;
        the primary first. A format-1 cohort (no ``sequences``) has one, named ``image``."""
        if not self.spec.sequences:
            return {"image": _text(row.get("image"))}
        return {column.removeprefix(IMAGE_PREFIX): _text(row.get(column)) for column in self.spec.image_columns()}

    def tumor_file(self, row) -> str | None:
        """The file a scan's tumour comes from (its ``tumor_mask`` or ``tumor_labels``), None when it has none."""
        return _text(row.get("tumor_mask")) or _text(row.get(TUMOR_LABELS))

    def tumor(self, row) -> Image | None:
        """A scan's tumour as a binary uint8 image on the mask's grid: its ``tumor_mask`` (> 0), or the voxels of
        its ``tumor_labels`` map whose value is one of the ``tumor`` labels. None when the row gives neither."""
        from oncodiff.cohort.io import read_image

        mask = _text(row.get("tumor_mask"))
        if mask is not None:
            image = read_image(self.path(mask))
            return image.with_array((image.array > 0).astype(np.uint8))
        labels = _text(row.get(TUMOR_LABELS))
        if labels is None:
            return None
        image = read_image(self.path(labels))
        return image.with_array(np.isin(np.rint(image.array), self.spec.tumor_values()).astype(np.uint8))

    @property
    def dims(self) -> int | None:
        """2 or 3, read from the first baseline image's header; None for an empty cohort."""
        from oncodiff.cohort.io import read_image

        base = self.baselines()
        return None if base.empty else read_image(self.path(base.iloc[0]["image"])).ndim

    def baselines(self) -> pd.DataFrame:
        return self.scans[self.scans["timepoint"] == self.spec.baseline]

    def followups(self) -> pd.DataFrame:
        return self.scans[self.scans["timepoint"] != self.spec.baseline]

    def pairs(self) -> pd.DataFrame:
        """One row per (baseline, follow-up) pair: follow-up columns plus ``pre_*`` baseline columns."""
        base = self.baselines().add_prefix("pre_").rename(
            columns={"pre_patient_id": "patient_id", "pre_lesion_id": "lesion_id"}
        )
        return self.followups().merge(base, on=["patient_id", "lesion_id"], how="inner").reset_index(drop=True)


def read_tables(root: Path) -> tuple[CohortSpec, pd.DataFrame, pd.DataFrame]:
    """Parse cohort.yaml, patients.csv and scans.csv without checking the images.

    Ids, time-point labels and categorical values are read as text (so a category "1" stays "1");
    empty cells are NaN.
    """
    spec = CohortSpec.model_validate(yaml.safe_load((root / COHORT_YAML).read_text(encoding="utf-8")) or {})
    text_columns = ["patient_id"] + [v.name for v in spec.clinical if v.type == "categorical"]
    if spec.outcomes.response is not None:
        text_columns.append(spec.outcomes.response.column)
    patients = pd.read_csv(root / PATIENTS_CSV, dtype=dict.fromkeys(text_columns, str), keep_default_na=False,
                           na_values=[""])
    scans = pd.read_csv(root / SCANS_CSV, dtype=dict.fromkeys(["patient_id", "lesion_id", "timepoint"], str),
                        keep_default_na=False, na_values=[""])
    if "lesion_id" not in scans.columns:
        scans["lesion_id"] = DEFAULT_LESION
    scans["lesion_id"] = scans["lesion_id"].fillna(DEFAULT_LESION)
    if spec.sequences and spec.primary_column in scans.columns:
        scans["image"] = scans[spec.primary_column]  # the primary sequence is the scan's image
    return spec, patients.set_index("patient_id", drop=False), scans


def load_cohort(root: str | Path, validate: bool = True) -> Cohort:
    """Load a cohort folder.

    With ``validate=True`` every image is read once first (:func:`validate_cohort`) and an invalid
    folder raises :class:`CohortError` listing every problem; warnings are printed to stderr. A valid cohort's
    validation is remembered for this process until one of its tables or files changes (``_VALIDATED``).
    ``validate=False`` only parses the three tables: the fast path for a folder already validated.
    """
    root = Path(root).resolve()
    if validate:
        for warning in _validated(root):
            print(f"warning: {root}: {warning}", file=sys.stderr, flush=True)
    spec, patients, scans = read_tables(root)
    return Cohort(root=root, spec=spec, patients=patients, scans=scans)


def _validated(root: Path) -> list[Problem]:
    """The warnings of a valid cohort (raises :class:`CohortError` for an invalid one): remembered from an earlier
    validation in this process when nothing it read has changed since (see RACY_SECONDS)."""
    started = time.time_ns()
    key = _validation_key(root)
    remembered = _VALIDATED.get(root)
    if key is not None and remembered is not None and remembered[0] == key:
        return remembered[1]
    found = validate_cohort(root, warnings=True)
    problems = [p for p in found if not p.warning]
    if problems:
        _VALIDATED.pop(root, None)
        raise CohortError(problems, str(root))
    if key is not None and key == _validation_key(root) and key[-1] < started - int(RACY_SECONDS * 1e9):
        _VALIDATED[root] = (key, found)
    else:  # unreadable tables, a file changed while it was validated, or too recently: validate again next time
        _VALIDATED.pop(root, None)
    return found


def _validation_key(root: Path) -> tuple | None:
    """What a validation of ``root`` depends on, ending with the newest modification time (ns) of its files;
    None when the tables cannot be read (validation says why)."""
    try:
        tables = tuple((root / name).read_bytes() for name in (COHORT_YAML, PATIENTS_CSV, SCANS_CSV))
        spec, _, scans = read_tables(root)
        cohort = Cohort(root=root, spec=spec, patients=pd.DataFrame(), scans=scans)
        written = sorted({str(v) for c in _file_columns(scans) for v in scans[c].dropna()})
        files = tuple((name, _stat(cohort.path(name))) for name in written)
    except Exception:  # noqa: BLE001 - whatever makes the tables unreadable, validation reports it
        return None
    newest = max([os.stat(root / name).st_mtime_ns for name in (COHORT_YAML, PATIENTS_CSV, SCANS_CSV)]
                 + [s[1] for _, stats in files for s in stats if s])
    allow = os.environ.get(ALLOW_EXTERNAL, "")
    return (hashlib.sha256(b"\0".join(tables)).hexdigest(), allow, files, newest)


def _stat(path: Path) -> tuple:
    """(the link's stat, the file's stat): each (size, mtime_ns, ctime_ns, inode, device), None where missing."""
    out = []
    for call in (os.lstat, os.stat):
        try:
            s = call(path)
        except OSError:
            out.append(None)
            continue
        out.append((s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino, s.st_dev))
    return tuple(out)


def cohort_fingerprint(root: str | Path) -> dict[str, str]:
    """What identifies a cohort without reading its images: its resolved folder and a SHA-256 of its three
    tables (cohort.yaml, patients.csv, scans.csv). A run records its training cohort's fingerprint, so that
    ``predict`` and ``evaluate`` can tell the training cohort from a new one."""
    root = Path(root).resolve()
    digest = hashlib.sha256()
    for name in (COHORT_YAML, PATIENTS_CSV, SCANS_CSV):
        path = root / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b""))
    return {"path": str(root), "tables_sha256": digest.hexdigest()}


def same_cohort(recorded: dict[str, str], root: str | Path) -> bool:
    """Whether ``root`` is the cohort whose :func:`cohort_fingerprint` is ``recorded`` (moved or copied
    folders count when their tables are byte-identical)."""
    here = cohort_fingerprint(root)
    return here["path"] == recorded.get("path") or here["tables_sha256"] == recorded.get("tables_sha256")


def _text(value) -> str | None:
    """A path cell as text; None when empty (NaN or missing)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)
