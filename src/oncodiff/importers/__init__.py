"""``oncodiff import LAYOUT SRC --out COHORT``: a published cohort layout as a format-2 cohort, without copying.

Layouts: lumiere, sailor, brats-post, bids (one module each). Each reads SRC's names, days, label conventions
and clinical tables into sessions (common.py), which are written as cohort.yaml (``root:`` = SRC),
patients.csv and scans.csv in a new folder; SRC is only read.
"""

from __future__ import annotations

from pathlib import Path

from oncodiff.importers import bids, brats, lumiere, sailor
from oncodiff.importers.common import LayoutError, ImportResult, write_cohort

LAYOUTS = {"lumiere": lumiere.read, "sailor": sailor.read, "brats-post": brats.read, "bids": bids.read}


def import_cohort(layout: str, src: str | Path, out: str | Path, *, space: str = "native",
                  segmentation: str | None = None, overwrite: bool = False, days_table: str | Path | None = None,
                  interval_days: float = brats.INTERVAL_DAYS) -> ImportResult:
    """Read the ``layout`` at ``src`` and write it as a cohort folder at ``out``; returns what was written and
    skipped. ``space``: native (default) or atlas (LUMIERE's registered files); ``segmentation``: which tool's
    (LUMIERE: deepbratumia or hd-glio; BIDS: the derivatives folder); ``days_table``/``interval_days``: BraTS's
    days (see brats.py)."""
    if layout not in LAYOUTS:
        raise LayoutError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    source = Path(src).expanduser().resolve()
    if not source.is_dir():
        raise LayoutError(f"{src} is not a folder; pass the folder the {layout} data was unpacked into")
    if layout == "brats-post":
        read = brats.read(source, space, segmentation, Path(days_table) if days_table else None, interval_days)
    else:
        if days_table is not None:
            raise LayoutError(f"--days is for brats-post; {layout} has its own days")
        read = LAYOUTS[layout](source, space, segmentation)
    return write_cohort(read, out, overwrite, source)


__all__ = ["LAYOUTS", "LayoutError", "ImportResult", "import_cohort"]
