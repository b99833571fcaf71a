"""The cohort.yaml schema (dataset format versions 1 and 2, see docs/dataset-format.md).

Format 2 adds, all optional: ``root`` (the folder image paths are relative to), ``sequences`` / ``primary``
(several images per scan, one ``image:NAME`` column each), ``labels`` / ``tumor`` (tumour label maps with named
labels, and the union of labels measured as the tumour), and the ``cohort:`` path prefix (a scans.csv path
relative to the cohort folder, not to ``root``: files written for the cohort, e.g. by ``oncodiff import``).
Format 1 is read exactly as before.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMAT_VERSION = 1  # the default when cohort.yaml has no 'format' key
FORMAT_VERSIONS = (1, 2)
LATEST_FORMAT = 2
PATIENTS_CSV = "patients.csv"
SCANS_CSV = "scans.csv"
COHORT_YAML = "cohort.yaml"
COUNTERFACTUALS_CSV = "counterfactuals.csv"
ANATOMY_PREFIX = "anatomy:"
IMAGE_PREFIX = "image:"
TUMOR_LABELS = "tumor_labels"
FORMAT2_KEYS = ("root", "sequences", "primary", "labels", "tumor")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
SCAN_REQUIRED_COLUMNS = ("patient_id", "timepoint", "days", "image")
COHORT_PATH_PREFIX = "cohort:"  # format 2: this scans.csv path is relative to the cohort folder, not to `root`


def in_cohort_folder(relative: str, format_version: int) -> str | None:
    """The path after ``cohort:`` when ``relative`` is a format-2 path relative to the cohort folder (a file
    written for the cohort, beside cohort.yaml, while ``root`` holds the published images); None otherwise."""
    if format_version >= 2 and relative.startswith(COHORT_PATH_PREFIX):
        return relative[len(COHORT_PATH_PREFIX):]
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClinicalVariable(_Strict):
    """One column of patients.csv used as a model condition."""

    name: str
    type: Literal["numeric", "categorical"]
    group: str = "clinical"
    unit: str | None = None
    categories: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _check(self) -> ClinicalVariable:
        if self.type == "categorical" and not self.categories:
            raise ValueError(f"clinical variable {self.name!r} is categorical; list its categories: [a, b]")
        if self.type == "numeric" and self.categories:
            raise ValueError(f"clinical variable {self.name!r} is numeric; remove 'categories' or make it categorical")
        return self


class ResponseOutcome(_Strict):
    column: str
    positive: str = Field(description="the value of `column` that marks a responder")
    negative: str | None = Field(None, description="optional: the value that marks a non-responder; with it, "
                                 "every other value is an error (without it, any other value is a non-responder)")


class SurvivalOutcome(_Strict):
    time: str
    event: str = Field(description="1 = event observed, 0 = censored")


class Outcomes(_Strict):
    response: ResponseOutcome | None = None
    survival: SurvivalOutcome | None = None


class CohortSpec(_Strict):
    """cohort.yaml: what the columns of patients.csv and scans.csv mean."""

    format: int = FORMAT_VERSION
    name: str = "cohort"
    modality: Literal["MRI", "CT", "other"] = "MRI"
    baseline: str = "pre"
    clinical: tuple[ClinicalVariable, ...] = ()
    outcomes: Outcomes = Outcomes()
    anatomy: tuple[str, ...] = ()
    # format 2 (docs/dataset-format.md, "Format 2")
    root: str | None = Field(None, description="folder that scans.csv paths are relative to (relative to the "
                             "cohort folder, or absolute); default the cohort folder")
    sequences: tuple[str, ...] = Field((), description="one `image:NAME` column in scans.csv per name")
    primary: str | None = Field(None, description="the sequence predicted and scored; default the first")
    labels: dict[str, int] = Field(default_factory=dict, description="label name -> value in `tumor_labels` maps")
    tumor: tuple[str, ...] = Field((), description="labels whose union is the tumour; default every label")

    @model_validator(mode="after")
    def _check(self) -> CohortSpec:
        if self.format not in FORMAT_VERSIONS:
            raise ValueError(f"format {self.format} is not supported; this oncodiff reads formats "
                             f"{', '.join(map(str, FORMAT_VERSIONS))}")
        names = [v.name for v in self.clinical]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"clinical variables listed twice: {', '.join(dupes)}")
        if self.format < 2:
            used = [key for key in FORMAT2_KEYS if key in self.model_fields_set]
            if used:
                raise ValueError(f"{', '.join(map(repr, used))} need format 2; write 'format: 2' in cohort.yaml")
            return self
        self._check_sequences()
        self._check_labels()
        return self

    def _check_sequences(self) -> None:
        import re

        bad = [n for n in self.sequences if not re.match(NAME_PATTERN, n)]
        if bad:
            raise ValueError(f"sequence names {bad} must be letters, digits, '_', '-' or '.' (not first), e.g. t1c")
        dupes = sorted({n for n in self.sequences if self.sequences.count(n) > 1})
        if dupes:
            raise ValueError(f"sequences listed twice: {', '.join(dupes)}")
        if self.primary is not None and not self.sequences:
            raise ValueError(f"'primary: {self.primary}' names a sequence, but 'sequences' lists none; list them "
                             "(sequences: [t1c, t1, t2, flair]) or remove 'primary'")
        if self.primary is not None and self.primary not in self.sequences:
            raise ValueError(f"primary {self.primary!r} is not one of the sequences {list(self.sequences)}")

    def _check_labels(self) -> None:
        import re

        bad = [n for n in self.labels if not re.match(NAME_PATTERN, n)]
        if bad:
            raise ValueError(f"label names {bad} must be letters, digits, '_', '-' or '.' (not first), e.g. enhancing")
        values = list(self.labels.values())
        if any(v <= 0 for v in values):
            raise ValueError(f"label values must be positive integers (0 is the background); got {self.labels}")
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ValueError(f"label values used by two names: {twice}; give each label its own value")
        if self.tumor and not self.labels:
            raise ValueError("'tumor' names labels, but 'labels' lists none; list them (labels: {enhancing: 3, ...})")
        unknown = [n for n in self.tumor if n not in self.labels]
        if unknown:
            raise ValueError(f"tumor names {unknown}, which are not in 'labels' ({', '.join(self.labels)})")

    @property
    def groups(self) -> tuple[str, ...]:
        """Clinical groups in first-seen order (the cbi-Adapter attends within each)."""
        return tuple(dict.fromkeys(v.group for v in self.clinical))

    def anatomy_columns(self) -> tuple[str, ...]:
        return tuple(ANATOMY_PREFIX + a for a in self.anatomy)

    @property
    def primary_sequence(self) -> str | None:
        """The sequence predicted and scored (``primary``, else the first of ``sequences``); None without them."""
        return self.primary or (self.sequences[0] if self.sequences else None)

    def image_columns(self) -> tuple[str, ...]:
        """The scans.csv image columns: ``image:NAME`` per sequence (primary first), else ``image``."""
        if not self.sequences:
            return ("image",)
        ordered = (self.primary_sequence,) + tuple(s for s in self.sequences if s != self.primary_sequence)
        return tuple(IMAGE_PREFIX + s for s in ordered)

    @property
    def primary_column(self) -> str:
        return self.image_columns()[0]

    def other_sequences(self) -> tuple[str, ...]:
        """The non-primary sequences, in cohort.yaml's order: each may be missing on any scan."""
        return tuple(s for s in self.sequences if s != self.primary_sequence)

    def tumor_values(self) -> tuple[int, ...]:
        """Label-map values measured as the tumour (the union of ``tumor``, default every label)."""
        names = self.tumor or tuple(self.labels)
        return tuple(sorted(self.labels[n] for n in names))
