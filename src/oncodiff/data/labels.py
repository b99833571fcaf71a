"""Outcome labels per patient: response (1/0/-1), survival time and event, survival classes.

Survival classes (glioblastoma paper: 2 classes by the median, 4 by quartiles) use thresholds from
the TRAINING patients' survival times (events and censored times alike). A censored time only says
the patient lived at least that long, so a censored patient gets a class only when every time at or
beyond theirs falls in one class (the top one); otherwise the class is unknown (-1), never guessed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from oncodiff.cohort.schema import CohortSpec
from oncodiff.data.clinical import as_text, is_missing

UNKNOWN = -1


def patient_outcomes(patients: pd.DataFrame, spec: CohortSpec) -> pd.DataFrame:
    """One row per patient (index patient_id): response int (1/0/-1), survival_time and
    survival_event float (NaN unknown), from the columns that cohort.yaml's outcomes name."""
    out = pd.DataFrame(index=patients.index)
    response = spec.outcomes.response
    out["response"] = UNKNOWN
    if response is not None and response.column in patients.columns:
        out["response"] = [_response(v, response.positive) for v in patients[response.column]]
    survival = spec.outcomes.survival
    out["survival_time"] = np.nan
    out["survival_event"] = np.nan
    if survival is not None:
        if survival.time in patients.columns:
            out["survival_time"] = [_number(v) for v in patients[survival.time]]
        if survival.event in patients.columns:
            out["survival_event"] = [_number(v) for v in patients[survival.event]]
    return out


def _response(value: Any, positive: str) -> int:
    if is_missing(value):
        return UNKNOWN
    return int(as_text(value) == as_text(positive))


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


@dataclass(frozen=True)
class SurvivalClasses:
    """Thresholds for ``survival_class2`` (median) and ``survival_class4`` (quartiles), in days.
    NaN thresholds (no training survival times) make every class unknown."""

    median: float
    quartiles: tuple[float, float, float]

    @classmethod
    def fit(cls, train_times: Iterable[float]) -> SurvivalClasses:
        times = np.asarray([t for t in train_times if not math.isnan(t)], dtype=float)
        if times.size == 0:
            return cls(math.nan, (math.nan,) * 3)
        q = np.quantile(times, [0.25, 0.5, 0.75])
        return cls(float(q[1]), (float(q[0]), float(q[1]), float(q[2])))

    def classify(self, time: float, event: float) -> tuple[int, int]:
        """(class2, class4) of one patient: 0 = shortest; -1 when unknown (see module docstring)."""
        if math.isnan(time) or math.isnan(self.median):
            return UNKNOWN, UNKNOWN
        class2 = int(time >= self.median)
        class4 = int(np.searchsorted(self.quartiles, time, side="right"))
        if event == 1:
            return class2, class4
        return (class2 if class2 == 1 else UNKNOWN), (class4 if class4 == 3 else UNKNOWN)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (NaN, which strict JSON lacks, becomes null)."""
        return {"median": _finite_or_none(self.median), "quartiles": [_finite_or_none(q) for q in self.quartiles]}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SurvivalClasses:
        return cls(_float_or_nan(raw["median"]), tuple(_float_or_nan(q) for q in raw["quartiles"]))


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _float_or_nan(value: Any) -> float:
    return math.nan if value is None else float(value)
