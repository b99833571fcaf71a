"""Clinical variables of cohort.yaml as model inputs: values plus explicit missing flags.

The encoder is fitted on the TRAINING patients only (each patient counts once), serialises to a
JSON-able dict (it travels in an exported model's config.json), and encodes counterfactual values
(``--set clinical.age=70``) with the same rules, rejecting what the training data could not mean.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from oncodiff.cohort.schema import ClinicalVariable


def is_missing(value: Any) -> bool:
    """True for an empty cell: None, NaN or blank text."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    return isinstance(value, str) and not value.strip()


def as_text(value: Any) -> str:
    """A cell as the text a user typed: pandas reads ``1`` in a column with gaps as ``1.0``."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


class ClinicalEncoder:
    """Clinical values -> ``clinical`` (V,) float32 and ``clinical_missing`` (V,) bool (docs/contracts.md section 1).

    numeric: (x - mean) / std, mean and std of the training patients; categorical: the category's
    index 0..K-1 as a float; an empty cell: 0.0 with its missing flag True, never imputed silently.
    """

    def __init__(self, variables: Sequence[ClinicalVariable], mean: Mapping[str, float], std: Mapping[str, float]):
        self.variables = tuple(variables)
        numeric = [v.name for v in self.variables if v.type == "numeric"]
        absent = [n for n in numeric if n not in mean or n not in std]
        if absent:
            raise ValueError(f"clinical encoder: no mean/std for numeric variable(s) {', '.join(absent)}")
        bad = [n for n in numeric if not std[n] > 0]
        if bad:
            raise ValueError(f"clinical encoder: std must be positive for {', '.join(bad)}")
        self.mean = {n: float(mean[n]) for n in numeric}
        self.std = {n: float(std[n]) for n in numeric}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variables)

    @classmethod
    def fit(cls, variables: Sequence[ClinicalVariable], patients: pd.DataFrame, train_ids: Iterable[str]) -> ClinicalEncoder:
        """Mean and std of each numeric variable over the training patients' non-empty cells."""
        rows = _rows(patients, train_ids)
        mean, std = {}, {}
        for variable in (v for v in variables if v.type == "numeric"):
            values = [_number(variable, v) for v in _column(patients, variable.name, rows) if not is_missing(v)]
            mean[variable.name] = float(np.mean(values)) if values else 0.0
            spread = float(np.std(values)) if len(values) > 1 else 0.0
            # One value, or all equal: nothing to scale by; 1 keeps the centred values finite.
            std[variable.name] = spread if spread > 1e-12 else 1.0
        return cls(variables, mean, std)

    def encode(self, values: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One patient's cells (by variable name) -> ((V,) float32, (V,) bool missing).

        ``overrides`` (counterfactuals) replace cells; keys are variable names, ``clinical.`` prefix
        allowed; an empty value makes the variable missing.
        """
        merged = {name: values.get(name) for name in self.names}
        merged.update(self._check_overrides(overrides or {}))
        encoded = np.zeros(len(self.variables), np.float32)
        missing = np.zeros(len(self.variables), bool)
        for i, variable in enumerate(self.variables):
            value = merged[variable.name]
            if is_missing(value):
                missing[i] = True
            elif variable.type == "numeric":
                encoded[i] = (_number(variable, value) - self.mean[variable.name]) / self.std[variable.name]
            else:
                encoded[i] = _category_index(variable, value)
        return encoded, missing

    def encode_patients(self, patients: pd.DataFrame, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Rows of patients.csv (indexed by patient_id) -> ((N, V) float32, (N, V) bool)."""
        rows = _rows(patients, ids)
        columns = {name: _column(patients, name, rows) for name in self.names}
        pairs = [self.encode({n: columns[n][i] for n in self.names}) for i in range(len(rows))]
        if not pairs:
            return np.zeros((0, len(self.names)), np.float32), np.zeros((0, len(self.names)), bool)
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def to_dict(self) -> dict[str, Any]:
        return {"variables": [v.model_dump(mode="json") for v in self.variables], "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ClinicalEncoder:
        variables = [ClinicalVariable.model_validate(v) for v in raw["variables"]]
        return cls(variables, raw["mean"], raw["std"])

    def _check_overrides(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        checked = {}
        for key, value in overrides.items():
            name = key[len("clinical."):] if key.startswith("clinical.") else key
            if name not in self.names:
                raise ValueError(f"clinical.{name}: no such clinical variable; the model knows "
                                 f"{', '.join(self.names) or 'none'}")
            variable = self.variables[self.names.index(name)]
            if not is_missing(value):  # validate now, so the error names the override
                _number(variable, value) if variable.type == "numeric" else _category_index(variable, value)
            checked[name] = value
        return checked


def _rows(patients: pd.DataFrame, ids: Iterable[str]) -> list[str]:
    ids = [str(i) for i in ids]
    unknown = [i for i in ids if i not in patients.index]
    if unknown:
        raise ValueError(f"patients.csv has no row for patient(s) {', '.join(unknown[:5])}")
    return ids


def _column(patients: pd.DataFrame, name: str, rows: list[str]) -> list[Any]:
    if name not in patients.columns:
        raise ValueError(f"patients.csv has no column {name!r}, which cohort.yaml lists as a clinical variable")
    return list(patients.loc[rows, name]) if rows else []


def _number(variable: ClinicalVariable, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"clinical.{variable.name}={value!r}: {variable.name} is numeric; give a number") from None
    if not math.isfinite(number):
        raise ValueError(f"clinical.{variable.name}={value!r}: give a finite number, or leave it empty if unknown")
    return number


def _category_index(variable: ClinicalVariable, value: Any) -> int:
    text = as_text(value)
    categories = tuple(variable.categories or ())
    if text not in categories:
        raise ValueError(f"clinical.{variable.name}={text!r} is not a category of {variable.name}; choose one of "
                         f"{', '.join(categories)} (or leave it empty if unknown)")
    return categories.index(text)


def clinical_design_matrix(
    values: np.ndarray, missing: np.ndarray, variables: Sequence[ClinicalVariable] | None = None
) -> np.ndarray:
    """Encode clinical variables ``(N, V)`` + missing flags ``(N, V)`` as a design matrix ``(N, F)``.

    Numeric variables stay one column (0.0 where missing, as the data module writes them);
    categorical ones (category index 0..K-1 as float) become K one-hot columns, all 0 where missing.
    Each variable is followed by its missing-value indicator, so a missing cell is never silently
    imputed. ``variables`` (``spec.clinical``) tells categorical from numeric; None = all numeric.
    Columns constant in a training fold are dropped later, inside the fold.
    """
    values = np.asarray(values, dtype=float)
    missing = np.asarray(missing, dtype=bool)
    if values.ndim != 2 or values.shape != missing.shape:
        raise ValueError(f"clinical values and missing must both be (N, V); got {values.shape} and {missing.shape}")
    if variables is not None and len(variables) != values.shape[1]:
        raise ValueError(f"{len(variables)} clinical variables described but values have {values.shape[1]} columns")
    columns = []
    for v in range(values.shape[1]):
        variable = None if variables is None else variables[v]
        present = ~missing[:, v]
        if variable is not None and variable.type == "categorical":
            columns.append(_one_hot(values[:, v], present, variable))
        else:
            columns.append(np.where(present, values[:, v], 0.0)[:, None])
        columns.append(missing[:, v, None].astype(float))
    return np.concatenate(columns, axis=1) if columns else np.zeros((len(values), 0))


def _one_hot(codes: np.ndarray, present: np.ndarray, variable: ClinicalVariable) -> np.ndarray:
    n_categories = len(variable.categories or ())
    index = np.rint(np.where(present, codes, 0.0)).astype(int)
    bad = present & ((index < 0) | (index >= n_categories) | (np.abs(codes - index) > 1e-6))
    if bad.any():
        raise ValueError(f"clinical variable {variable.name!r}: category codes must be 0..{n_categories - 1}; "
                         f"got {codes[bad][:3].tolist()}")
    encoded = np.zeros((len(codes), n_categories))
    encoded[np.flatnonzero(present), index[present]] = 1.0
    return encoded
