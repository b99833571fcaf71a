"""The cohort.yaml schema (dataset format version 1, see docs/dataset-format.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMAT_VERSION = 1
PATIENTS_CSV = "patients.csv"
SCANS_CSV = "scans.csv"
COHORT_YAML = "cohort.yaml"
COUNTERFACTUALS_CSV = "counterfactuals.csv"
ANATOMY_PREFIX = "anatomy:"
SCAN_REQUIRED_COLUMNS = ("patient_id", "timepoint", "days", "image")


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

    @model_validator(mode="after")
    def _check(self) -> CohortSpec:
        if self.format != FORMAT_VERSION:
            raise ValueError(f"format {self.format} is not supported; this oncodiff reads format {FORMAT_VERSION}")
        names = [v.name for v in self.clinical]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"clinical variables listed twice: {', '.join(dupes)}")
        return self

    @property
    def groups(self) -> tuple[str, ...]:
        """Clinical groups in first-seen order (the cbi-Adapter attends within each)."""
        return tuple(dict.fromkeys(v.group for v in self.clinical))

    def anatomy_columns(self) -> tuple[str, ...]:
        return tuple(ANATOMY_PREFIX + a for a in self.anatomy)
