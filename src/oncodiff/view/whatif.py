"""What-if questions: validate them, predict them with ``oncodiff.pipeline.predict`` one at a time, cache the answers.

A prediction request is (patient, whole days since baseline, ``--set`` overrides); its output folder is an ordinary
``oncodiff predict`` output under CACHE/predictions/<key>, so asking again is instant, also after a restart. The
cache keeps the :data:`CACHE_LIMIT` most recently used predictions (and :data:`DERIVED_PER_PREDICTION` times as many
derived images); older ones are deleted after each job.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oncodiff.cohort import Cohort
from oncodiff.config import Config
from oncodiff.data import ClinicalEncoder
from oncodiff.errors import ConfigError, OncodiffError
from oncodiff.layouts import SUMMARY_JSON, PredictionsFolder
from oncodiff.pipeline.cases import class_labels
from oncodiff.models.factory import ModelLayout
from oncodiff.pipeline.export import read_export_meta
from oncodiff.view.catalog import PredictionSet
from oncodiff.view.folders import ViewerFolders, touch

MAX_DAYS = 3650.0  # ten years: beyond that a "days since baseline" value is more likely a typo than a question
CURVE_FRACTIONS = (0.5, 1.0, 1.5)  # the volume-change curve: these fractions of the asked time point
CACHE_LIMIT = 200  # what-if predictions kept in the cache (least recently used ones go first)
DERIVED_PER_PREDICTION = 4  # converted images, contours and differences kept per kept prediction
DERIVED = ("difference", "contour", "image")  # the cache's folders of derived files (see catalog._derived)


@dataclass(frozen=True)
class PredictionRequest:
    """One ``predict`` call: a patient, the time point (None: each follow-up's own; else rounded to whole days, so
    that 101.5 and 101.6 are one question and one cache entry) and sorted KEY=VALUE overrides."""

    patient: str
    days: float | None = None
    overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.days is not None and math.isfinite(self.days):
            object.__setattr__(self, "days", float(math.floor(self.days + 0.5)))

    @property
    def key(self) -> str:
        text = json.dumps([self.patient, self.days, sorted(self.overrides)])
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def with_days(self, days: float) -> PredictionRequest:
        return PredictionRequest(self.patient, float(days), self.overrides)


@dataclass(frozen=True)
class WhatIf:
    """A question about one case: a response (or survival) class, clinical values and days since baseline."""

    key: str
    days: float
    response: str = ""
    clinical: Mapping[str, str] = field(default_factory=dict)

    def overrides(self, base: Sequence[str], class_key: str | None) -> tuple[str, ...]:
        """``base`` (the factual prediction's overrides) updated by this question's values."""
        merged = dict(item.split("=", 1) for item in base)
        merged.update({f"clinical.{k}": str(v).strip() for k, v in self.clinical.items()})
        if class_key and self.response.strip():
            merged[class_key] = self.response.strip()
        return tuple(sorted(f"{k}={v}" for k, v in merged.items()))


class ModelFacts:
    """What the page needs to know about the model, read from its export without loading the weights."""

    def __init__(self, run: Path):
        meta = read_export_meta(run)
        self.config = Config.model_validate(meta["config"])
        self.layout = ModelLayout.from_dict(meta["layout"])
        self.encoder = ClinicalEncoder.from_dict(self.layout.clinical_encoder)
        kind = self.config.model.class_label
        self.class_kind = kind
        self.class_key = {"none": None, "response": "response"}.get(kind, "survival_class")

    def class_options(self) -> list[str]:
        """The values the class selector offers ('' is "unknown": the class prior decides)."""
        if self.class_key is None:
            return []
        if self.class_key == "response":
            return ["", self.layout.response_positive or "responder", "non-responder"]
        return [""] + [str(k) for k in range(self.layout.n_classes(self.config.model))]

    def variables(self, cohort: Cohort) -> list[dict]:
        """The clinical variables, with each numeric one's accepted range (see :func:`accepted_range`)."""
        out = []
        for variable in self.encoder.variables:
            entry = {"name": variable.name, "type": variable.type, "unit": variable.unit,
                     "categories": list(variable.categories or [])}
            if variable.type == "numeric":
                entry["range"] = accepted_range(cohort, variable.name)
            out.append(entry)
        return out

    def check(self, question: WhatIf, overrides: Sequence[str], cohort: Cohort) -> None:
        """Raise ConfigError with a message for the page when the question cannot be asked of this model."""
        if not (math.isfinite(question.days) and 0 < question.days <= MAX_DAYS):
            raise ConfigError(f"days since baseline = {question.days:g}: give a number of days between 1 and "
                              f"{MAX_DAYS:g}")
        pairs = dict(item.split("=", 1) for item in overrides)
        clinical = {k: v for k, v in pairs.items() if k.startswith("clinical.")}
        try:
            self.encoder.encode({}, clinical)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        for name, value in clinical.items():
            _check_range(name.removeprefix("clinical."), value, cohort)
        class_labels(_FactsAsModel(self), {"patient_id": ["?"]}, pairs)


@dataclass(frozen=True)
class _FactsAsModel:
    """The two attributes :func:`oncodiff.pipeline.cases.class_labels` reads of an exported model."""

    facts: ModelFacts

    @property
    def config(self) -> Config:
        return self.facts.config

    @property
    def layout(self) -> ModelLayout:
        return self.facts.layout


def accepted_range(cohort: Cohort, name: str) -> list[float] | None:
    """[low, high] a numeric variable may take in a what-if: the cohort's observed range widened by its own span
    on each side, never below zero for a variable that is never negative. None when no value is recorded."""
    values = np.array([float(v) for v in cohort.patients[name] if _is_number(v)]) if name in cohort.patients else []
    if len(values) == 0:
        return None
    low, high = float(values.min()), float(values.max())
    span = high - low or abs(high) or 1.0
    return [max(low - span, 0.0) if low >= 0 else low - span, high + span]


def _check_range(name: str, value: str, cohort: Cohort) -> None:
    if not value.strip():
        return  # empty: the variable is missing, as the encoder allows
    bounds = accepted_range(cohort, name)
    if bounds is not None and not bounds[0] <= float(value) <= bounds[1]:
        observed = [float(v) for v in cohort.patients[name] if _is_number(v)]
        raise ConfigError(f"clinical.{name}={value}: outside what the model can answer for; the cohort's patients "
                          f"have {name} from {min(observed):g} to {max(observed):g}, so give a value between "
                          f"{bounds[0]:g} and {bounds[1]:g}")


def _is_number(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


class PredictionStore:
    """Prediction sets by request: the --predictions folder for its own requests, else the cache."""

    def __init__(self, folders: ViewerFolders, given: PredictionSet | None, samples: int, seed: int,
                 limit: int = CACHE_LIMIT):
        self.folders, self.folder = folders, folders.cache / "predictions"
        self.given, self.samples, self.seed = given, samples, seed
        self.limit = limit

    def given_request(self, patient: str) -> PredictionRequest:
        overrides = tuple(sorted(self.given.summary.get("overrides", []))) if self.given else ()
        return PredictionRequest(patient, None, overrides)

    def find(self, request: PredictionRequest) -> PredictionSet | None:
        """The prediction set that answers ``request``, or None when it has not been predicted yet."""
        if self.given is not None and request == self.given_request(request.patient) and any(
                c["patient_id"] == request.patient for c in self.given.summary["cases"]):
            return self.given
        folder = self.folder / request.key
        if not PredictionsFolder(folder).summary_json.is_file():
            return None
        touch(folder)
        return PredictionSet.read(request.key, folder)

    def set_by_id(self, set_id: str) -> PredictionSet | None:
        if set_id == "given":
            return self.given
        folder = self.folder / set_id
        if not set_id.isalnum() or not PredictionsFolder(folder).summary_json.is_file():
            return None
        touch(folder)
        return PredictionSet.read(set_id, folder)

    def evict(self) -> list[Path]:
        """Delete all but the :attr:`limit` most recently used predictions (a folder's modification time is its
        last use: :func:`touch`), and all but ``DERIVED_PER_PREDICTION * limit`` derived files of each kind;
        returns what was deleted. Called by the job worker between jobs, when no prediction is being written."""
        removed = []
        if self.folder.is_dir():
            sets = [f for f in self.folder.iterdir() if f.is_dir() and f.name.isalnum()]
            for folder in _least_recently_used(sets, self.limit):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        for kind in DERIVED:
            folder = self.folders.cache / kind
            if folder.is_dir():
                files = [f for f in folder.iterdir() if f.is_file() and not f.name.startswith("partial-")]
                for path in _least_recently_used(files, DERIVED_PER_PREDICTION * self.limit):
                    path.unlink(missing_ok=True)
                    removed.append(path)
        return removed

    def predict(self, request: PredictionRequest) -> PredictionSet:
        """Run ``oncodiff predict`` for the request into a partial folder, then move it into place."""
        from oncodiff.pipeline import predict

        partial = self.folder / f"partial-{request.key}"
        shutil.rmtree(partial, ignore_errors=True)
        predict(self.folders.run, self.folders.cohort, partial, patients=[request.patient], samples=self.samples,
                days=request.days, overrides=list(request.overrides), seed=self.seed,
                cache_dir=self.folders.data_cache, within=self.folders.cache.parent)
        final = self.folder / request.key
        shutil.rmtree(final, ignore_errors=True)
        partial.replace(final)
        return PredictionSet.read(request.key, final)


def curve_days(days: float) -> list[float]:
    """The time points of the volume-change curve around ``days``, in whole days (at least day 1)."""
    return sorted({float(max(1, math.floor(days * f + 0.5))) for f in CURVE_FRACTIONS if days * f > 0})


def _least_recently_used(paths: list[Path], keep: int) -> list[Path]:
    """All but the ``keep`` most recently used of ``paths``."""
    def used(path: Path) -> int:
        try:
            return path.stat().st_mtime_ns
        except OSError:
            return 0
    return sorted(paths, key=used)[:max(0, len(paths) - keep)]


def read_given(predictions: Path | None) -> PredictionSet | None:
    if predictions is None:
        return None
    if not PredictionsFolder(predictions).summary_json.is_file():
        raise OncodiffError(f"--predictions {predictions}: no {SUMMARY_JSON}; pass a folder written by `oncodiff predict`")
    return PredictionSet.read("given", predictions)
