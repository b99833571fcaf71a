"""The folders the viewer may read (run, cohort, predictions, cache) and the one it writes (cache).

Every file the page loads is addressed as ``/files/<root>/<relative path>``; anything that resolves outside
its root (``..``, absolute paths, symbolic links leading out) is not found.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from oncodiff.cohort.schema import COHORT_YAML
from oncodiff.errors import OncodiffError
from oncodiff.layouts import SUMMARY_JSON, PredictionsFolder

ROOTS = ("run", "cohort", "predictions", "cache")


@dataclass(frozen=True)
class ViewerFolders:
    """Resolved folders: ``run`` (an exported model or run folder), ``cohort``, ``predictions`` (an
    ``oncodiff predict`` output, optional) and ``cache`` (what-if results and converted images);
    ``data_cache``: the preprocessing cache predictions read (None: oncodiff's default, ~/.cache/oncodiff)."""

    run: Path
    cohort: Path
    predictions: Path | None
    cache: Path
    data_cache: Path | None = None

    @classmethod
    def choose(cls, run: str | Path, cohort: str | Path | None = None, predictions: str | Path | None = None,
               cache: str | Path | None = None, data_cache: str | Path | None = None) -> ViewerFolders:
        """Check the folders; the cohort defaults to the one the predictions were made from, the cache to
        PREDICTIONS/view-cache (else RUN/view-cache). Refuses a cache inside the cohort."""
        run = _existing(run, "--model")
        predictions = _existing(predictions, "--predictions") if predictions is not None else None
        if cohort is None:
            cohort = _cohort_of(predictions)
        cohort = _existing(cohort, "--cohort")
        if not (cohort / COHORT_YAML).is_file():
            raise OncodiffError(f"--cohort {cohort}: no cohort.yaml there; pass the cohort folder the model predicts")
        cache = Path(cache).resolve() if cache is not None else (predictions or run) / "view-cache"
        if cache == cohort or cohort in cache.parents:
            raise OncodiffError(f"--cache {cache} is inside the cohort folder {cohort}; the viewer never writes "
                                "into a cohort: choose a folder outside it")
        cache.mkdir(parents=True, exist_ok=True)
        return cls(run, cohort, predictions, cache, Path(data_cache) if data_cache is not None else None)

    def root(self, name: str) -> Path | None:
        return getattr(self, name) if name in ROOTS else None

    def resolve(self, root: str, relative: str) -> Path | None:
        """The file ``relative`` under the folder named ``root``, or None when it is not a file inside it."""
        base = self.root(root)
        if base is None or not relative:
            return None
        path = (base / relative).resolve()
        return path if path.is_file() and base.resolve() in path.parents else None

    def url(self, path: Path) -> str:
        """``/files/<root>/<relative>`` for a file under one of the folders (the most specific one)."""
        path = Path(path).resolve()
        candidates = [(name, self.root(name).resolve()) for name in ROOTS if self.root(name) is not None]
        for name, base in sorted(candidates, key=lambda c: -len(c[1].parts)):
            if base in path.parents:
                return f"/files/{name}/{path.relative_to(base).as_posix()}"
        raise ValueError(f"{path} is under none of the viewer's folders")


def touch(path: Path) -> None:
    """Mark a cache entry as just used (its modification time orders the least-recently-used eviction)."""
    try:
        os.utime(path)
    except OSError:
        pass  # a read-only or vanished entry is simply not refreshed


def _existing(path: str | Path, option: str) -> Path:
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_dir():
        raise OncodiffError(f"{option} {path}: no such folder")
    return resolved


def _cohort_of(predictions: Path | None) -> Path:
    summary = PredictionsFolder(predictions).summary_json if predictions else None
    if summary is None or not summary.is_file():
        raise OncodiffError("--cohort is needed (the cohort folder with the baseline scans), unless --predictions "
                            f"names an `oncodiff predict` output, whose {SUMMARY_JSON} says its cohort")
    return Path(json.loads(summary.read_text(encoding="utf-8"))["cohort"])
