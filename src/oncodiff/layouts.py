"""The layouts of the predictions and evaluation folders: every file name in them, spelled here only.

As nnU-Net's ``get_output_folder`` and its path parser do for its results tree, one object per folder kind
turns a folder into its paths, and everything that writes or reads such a folder (``pipeline/predict.py``,
the viewer, ``evaluation/protocol.py``, the report, ``outputs.py``) goes through it. The run folder's layout is
``runs.py``'s; the cohort folder's file names are ``cohort/schema.py``'s; the marker and the lock of every output
folder are ``outputs.py``'s.

    PREDICTIONS/summary.json                 what was predicted, by which model, and a summary per follow-up
    PREDICTIONS/<follow-up>/                 one folder per follow-up; <follow-up> is its key with "/" -> "_"
    PREDICTIONS/<follow-up>/summary.json     the follow-up's own summary (volumes, intervals, files)
    PREDICTIONS/<follow-up>/<layer>.nii.gz   mean, std, drift, agreement, tumor_probability, sample_NN
    PREDICTIONS/<follow-up>/<layer>.png      the same layers of a 2D prediction, as pictures (not the samples)

    EVALUATION/summary.json                  every score, per case and aggregated, with the config and data hash
    EVALUATION/tables.md                     the tables `oncodiff evaluate` prints
    EVALUATION/figures.npz                   the arrays the report draws
    EVALUATION/report.html                   `oncodiff report`'s default output

This module imports nothing of oncodiff's, so every package may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SUMMARY_JSON = "summary.json"  # at the top of a predictions or an evaluation folder, and in each follow-up folder
NIFTI = ".nii.gz"  # a predicted layer
PNG = ".png"  # a 2D predicted layer as a picture
TABLES_MD = "tables.md"
FIGURES_NPZ = "figures.npz"
REPORT_HTML = "report.html"


def follow_up_folder_name(key: str) -> str:
    """The folder name of follow-up ``key`` (``patient/lesion/timepoint[/zN]``): its "/" become "_"."""
    return key.replace("/", "_")


@dataclass(frozen=True)
class _OutputFolder:
    """An output folder at ``root`` (a str is taken as a path), with its summary.json at the top."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def summary_json(self) -> Path:
        return self.root / SUMMARY_JSON


@dataclass(frozen=True)
class PredictionsFolder(_OutputFolder):
    """The paths of the ``oncodiff predict`` output at ``root`` (a str is taken as a path)."""

    def follow_up(self, key: str) -> Path:
        """The folder of follow-up ``key``."""
        return self.root / follow_up_folder_name(key)

    def follow_up_summary_json(self, key: str) -> Path:
        return self.follow_up(key) / SUMMARY_JSON

    def layer(self, key: str, name: str, suffix: str = NIFTI) -> Path:
        """Layer ``name`` (``mean``, ``sample_00``, ...) of follow-up ``key``; ``suffix=PNG`` for its picture."""
        return self.follow_up(key) / f"{name}{suffix}"


@dataclass(frozen=True)
class EvaluationFolder(_OutputFolder):
    """The paths of the ``oncodiff evaluate`` output at ``root`` (a str is taken as a path)."""

    @property
    def tables_md(self) -> Path:
        return self.root / TABLES_MD

    @property
    def figures_npz(self) -> Path:
        return self.root / FIGURES_NPZ

    @property
    def report_html(self) -> Path:
        return self.root / REPORT_HTML
