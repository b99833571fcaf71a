"""The preprocessing cache: outside the cohort folder, keyed by content, written atomically.

An entry is a folder ``<cache>/<cohort name>-<key>/`` holding ``arrays.npz`` and ``samples.json``.
The key hashes the bytes of cohort.yaml, scans.csv and every image they reference, plus the
preprocessing options of ``DataConfig`` and :data:`CACHE_VERSION`. patients.csv is left out: clinical
values are encoded when a DataModule is set up, so editing them never recomputes images. An entry is
written into a temporary folder and renamed into place, so readers never see half an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from oncodiff.cohort import Cohort
from oncodiff.cohort.schema import ANATOMY_PREFIX, COHORT_YAML, IMAGE_PREFIX, SCANS_CSV, TUMOR_LABELS
from oncodiff.config import DataConfig
from oncodiff.errors import ConfigError
from oncodiff.outputs import check_not_inside

# Bump when preprocessing changes what it produces, so old entries are not reused.
# 2: bias correction, auto registration, per-sample steps; 3: smoothed scans; 4: priors; 5: the priors' own sequences
CACHE_VERSION = 5
# DataConfig fields that do not change the preprocessed arrays (they act in the DataModule).
NOT_PREPROCESSING = frozenset(
    {"timepoints", "smoothing", "flips", "rotations", "intensity_augmentation", "val_fraction", "test_fraction", "folds", "fold", "num_workers", "cache_dir",
     "preprocess_workers", "scheduler", "train_slice_margin"}
)
ARRAYS_FILE = "arrays.npz"
SAMPLES_FILE = "samples.json"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/oncodiff``, else ``~/.cache/oncodiff``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "oncodiff"


def resolve_cache_dir(cache_dir: str | Path | None, config: DataConfig, cohort_root: Path) -> Path:
    """The cache folder: the argument, else ``data.cache_dir``, else the default; never inside the cohort."""
    chosen = Path(cache_dir or config.cache_dir or default_cache_dir()).expanduser().resolve()
    root = Path(cohort_root).resolve()
    if chosen == root or root in chosen.parents:
        raise ConfigError(
            f"cache folder {chosen} is inside the cohort folder {root}; oncodiff never writes into a cohort. "
            "Pass --cache-dir (or data.cache_dir) outside it."
        )
    check_not_inside(chosen, option="cache folder")  # nor inside another cohort, or a run's folders
    return chosen


def cache_key(cohort: Cohort, config: DataConfig) -> str:
    """Hex digest of the inputs' contents and the preprocessing options."""
    digest = hashlib.sha256()
    options = config.model_dump(mode="json", exclude=set(NOT_PREPROCESSING))
    digest.update(json.dumps({"version": CACHE_VERSION, "options": options}, sort_keys=True).encode())
    for relative in _input_files(cohort):
        digest.update(relative.encode() + b"\0")
        _hash_path(cohort.root / relative if relative in (COHORT_YAML, SCANS_CSV) else cohort.path(relative), digest)
    return digest.hexdigest()


def entry_path(cache_dir: Path, cohort: Cohort, key: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", cohort.spec.name).strip("._") or "cohort"
    return cache_dir / f"{name}-{key[:16]}"


def read_entry(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """(arrays, metadata) of a complete entry, or None when there is none."""
    if not (path / SAMPLES_FILE).is_file():
        return None
    metadata = json.loads((path / SAMPLES_FILE).read_text(encoding="utf-8"))
    with np.load(path / ARRAYS_FILE) as data:
        arrays = {name: data[name] for name in data.files}
    return arrays, metadata


def write_entry(path: Path, arrays: dict[str, np.ndarray], metadata: dict[str, Any]) -> None:
    """Write an entry atomically: into a temporary sibling folder, then one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        with open(temporary / ARRAYS_FILE, "wb") as f:
            np.savez(f, **arrays)
        (temporary / SAMPLES_FILE).write_text(json.dumps(metadata, indent=1) + "\n", encoding="utf-8")
        try:
            os.rename(temporary, path)
        except OSError:
            if not (path / SAMPLES_FILE).is_file():  # not a concurrent writer finishing first
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _input_files(cohort: Cohort) -> list[str]:
    """cohort.yaml, scans.csv and every file scans.csv references, as sorted relative paths."""
    columns = ["image", "tumor_mask", TUMOR_LABELS] + [c for c in cohort.scans.columns
                                                       if c.startswith((ANATOMY_PREFIX, IMAGE_PREFIX))]
    referenced = {str(v) for c in columns if c in cohort.scans for v in cohort.scans[c].dropna()}
    return [COHORT_YAML, SCANS_CSV] + sorted(referenced)


def _hash_path(path: Path, digest: Any) -> None:
    # A DICOM series is a folder: hash every file in it, in a stable order.
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else "").encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
