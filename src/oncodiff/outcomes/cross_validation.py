"""Patient-grouped cross-validation of response and survival models: folds, metrics, the one loop.

ImmunoDiff Stage 2 (Sec. 2.2, Tables 1-3) scores a response classifier (balanced accuracy, F1,
precision, recall) and a survival head (c-index) on features of the frozen denoiser, in 5-fold
cross-validation, against clinical-only and from-scratch CNN baselines. Every model here runs on
the same folds (``make_folds``: stratified, grouped by patient, seeded) and is scored by the same
code, so the rows of a results table differ only in the model.

Label convention, fixed once: the positive class is the responder, ``RESPONDER = 1`` (the data
module maps cohort.yaml's ``outcomes.response.positive`` to 1), non-responders are 0 and unknown
responses -1. Probabilities are P(responder); survival scores are log-risks (higher = shorter
survival). Samples with an unknown outcome are left out of the folds and get NaN predictions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from lifelines.utils import concordance_index
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from oncodiff.outcomes.folds import make_folds

RESPONDER = 1
NON_RESPONDER = 0
UNKNOWN_RESPONSE = -1
RESPONSE_METRICS = ("balanced_accuracy", "f1", "precision", "recall", "auc")
SURVIVAL_METRICS = ("c_index",)


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class CVResult:
    """One model cross-validated on one task.

    per_fold: metrics of each held-out fold (None where undefined, e.g. AUC on a one-class fold);
    mean / std: over the folds where the metric is defined (std is the sample std, ddof=1; None
    with fewer than two defined folds); undefined: how many folds had each metric undefined;
    pooled: metrics over all out-of-fold predictions at once;
    oof: (N,) out-of-fold prediction per sample: P(responder), or log-risk minus the median
    log-risk of that fold's training part (so folds share one scale for the Kaplan-Meier split);
    NaN for samples with an unknown outcome; test_fold: (N,) the fold that held each sample out,
    -1 if none; notes: folds that could not be fitted normally and what was done instead.
    """

    task: Literal["response", "survival"]
    model: str
    per_fold: tuple[dict[str, float | None], ...]
    mean: dict[str, float | None]
    std: dict[str, float | None]
    undefined: dict[str, int]
    pooled: dict[str, float | None]
    oof: np.ndarray
    test_fold: np.ndarray
    notes: tuple[str, ...] = field(default=())

    def formatted(self, digits: int = 2) -> dict[str, str]:
        """Each metric as the paper's tables write it, ``"0.74 ± 0.20"`` (``"n/a"`` if undefined)."""
        def number(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.{digits}f}"

        return {name: "n/a" if mean is None else f"{number(mean)} ± {number(self.std[name])}"
                for name, mean in self.mean.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN predictions become None."""
        return {
            "task": self.task, "model": self.model, "folds": len(self.per_fold),
            "per_fold": list(self.per_fold), "mean": self.mean, "std": self.std,
            "undefined": self.undefined, "pooled": self.pooled,
            "oof": [None if math.isnan(v) else float(v) for v in self.oof],
            "test_fold": [int(k) for k in self.test_fold], "notes": list(self.notes),
        }


def check_options(options: Any, positive: Sequence[str], non_negative: Sequence[str]) -> None:
    name = type(options).__name__
    for key in positive:
        if not getattr(options, key) > 0:
            raise ValueError(f"{name}.{key} must be > 0, got {getattr(options, key)}")
    for key in non_negative:
        if not getattr(options, key) >= 0:
            raise ValueError(f"{name}.{key} must be >= 0, got {getattr(options, key)}")


# ---------------------------------------------------------------------------------------------
# Metrics


def response_metrics(labels: np.ndarray, probability: np.ndarray, threshold: float = 0.5) -> dict[str, float | None]:
    """Balanced accuracy, F1, precision, recall (responder = 1 is positive) and AUC.

    ``labels`` (N,) in {0, 1}; ``probability`` (N,) P(responder); a case is predicted a responder
    when probability >= threshold. A metric with no defined value (AUC or balanced accuracy on a
    one-class set, precision with no predicted responder, recall with no true one) is None.
    """
    labels = np.asarray(labels).astype(int)
    probability = np.asarray(probability, dtype=float)
    predicted = (probability >= threshold).astype(int)
    both_classes = len(np.unique(labels)) == 2
    binary = {"pos_label": RESPONDER, "labels": [NON_RESPONDER, RESPONDER], "zero_division": np.nan}
    values = {
        "balanced_accuracy": balanced_accuracy_score(labels, predicted) if both_classes else None,
        "f1": f1_score(labels, predicted, **binary),
        "precision": precision_score(labels, predicted, **binary),
        "recall": recall_score(labels, predicted, **binary),
        "auc": roc_auc_score(labels, probability) if both_classes else None,
    }
    return {name: _defined(value) for name, value in values.items()}


def concordance(time: np.ndarray, risk: np.ndarray, event: np.ndarray) -> float | None:
    """Harrell's c-index of a risk score ``(N,)`` (higher risk = shorter survival); None without
    admissible pairs (no event, or every event at the last time)."""
    # lifelines scores "higher = longer survival", so the risk goes in negated.
    try:
        return float(concordance_index(np.asarray(time), -np.asarray(risk, dtype=float), np.asarray(event)))
    except ZeroDivisionError:
        return None


def survival_metrics(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> dict[str, float | None]:
    """``{"c_index": ...}`` for ``(N,)`` times, events (1 observed, 0 censored) and log-risks."""
    return {"c_index": concordance(time, risk, event)}


def _defined(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _summarise(per_fold: list[dict[str, float | None]], names: Sequence[str]) -> tuple[dict, dict, dict]:
    mean, std, undefined = {}, {}, {}
    for name in names:
        values = [fold[name] for fold in per_fold if fold[name] is not None]
        undefined[name] = len(per_fold) - len(values)
        mean[name] = float(np.mean(values)) if values else None
        std[name] = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return mean, std, undefined


# ---------------------------------------------------------------------------------------------
# Inputs


def check_matrix(name: str, array: np.ndarray, n: int) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != n:
        raise ValueError(f"{name} must be (N, F) with N = {n} samples; got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or inf; encode missing values first (clinical_design_matrix)")
    return array


def check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be (N,), got shape {labels.shape}")
    allowed = {NON_RESPONDER, RESPONDER, UNKNOWN_RESPONSE}
    if not set(np.unique(labels).tolist()) <= allowed:
        raise ValueError(f"labels must be 1 (responder), 0 (non-responder) or -1 (unknown); "
                         f"got values {sorted(set(np.unique(labels).tolist()) - allowed)[:5]}")
    labels = labels.astype(int)
    known = labels[labels != UNKNOWN_RESPONSE]
    if len(np.unique(known)) < 2:
        raise ValueError("response prediction needs both responders (1) and non-responders (0) among the known labels")
    return labels


def check_survival(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    time, event = np.asarray(time, dtype=float), np.asarray(event, dtype=float)
    if time.ndim != 1 or time.shape != event.shape:
        raise ValueError(f"time and event must be (N,) of one length; got {time.shape} and {event.shape}")
    known = np.isfinite(time) & np.isfinite(event)
    if (time[known] < 0).any() or not np.isin(event[known], (0.0, 1.0)).all():
        raise ValueError("survival time must be >= 0 days and event 1 (observed) or 0 (censored); NaN = unknown")
    if not event[known].any():
        raise ValueError("survival prediction needs at least one observed event among the known outcomes")
    return time, event, known


def check_groups(groups: np.ndarray, n: int) -> np.ndarray:
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups (patient ids) must be (N,) with N = {n}; got shape {groups.shape}")
    return groups


# ---------------------------------------------------------------------------------------------
# The cross-validation loop shared by every model

FoldPredictor = Callable[[int, np.ndarray, np.ndarray], np.ndarray]  # (fold, train_idx, test_idx) -> test preds
Fallback = Callable[[int, np.ndarray, int], tuple[np.ndarray, str] | None]  # (fold, train_idx, n_test)


@dataclass(frozen=True)
class Task:
    """What is predicted and how it is scored: the samples whose outcome is known, what the folds balance, the
    metrics, and what to predict (with a note saying so) when a fold's training part cannot be fitted."""

    name: Literal["response", "survival"]
    known: np.ndarray  # (N,) bool
    strata: np.ndarray  # (N,) int
    metrics: tuple[str, ...]
    score: Callable[[np.ndarray, np.ndarray], dict]  # (sample index, predictions) -> {metric: value}
    unfittable: Fallback


def response_task(labels: np.ndarray) -> Task:
    """Response: known where the label is not -1, folds balanced on it, scored by :func:`response_metrics`."""

    def unfittable(k: int, train: np.ndarray, n_test: int) -> tuple[np.ndarray, str] | None:
        if len(np.unique(labels[train])) >= 2:
            return None
        # No classifier can be fitted on one class; predict the training prevalence instead.
        return (np.full(n_test, float(labels[train].mean())),
                f"fold {k}: training part has one class only; predicted its prevalence")

    return Task("response", labels != UNKNOWN_RESPONSE, labels, RESPONSE_METRICS,
                lambda index, probability: response_metrics(labels[index], probability), unfittable)


def survival_task(time: np.ndarray, event: np.ndarray, known: np.ndarray) -> Task:
    """Survival: folds balanced on the event, scored by the c-index (:func:`survival_metrics`)."""

    def unfittable(k: int, train: np.ndarray, n_test: int) -> tuple[np.ndarray, str] | None:
        if event[train].any():
            return None
        return np.zeros(n_test), f"fold {k}: no event in the training part; predicted equal risk"

    return Task("survival", known, np.where(known, event, 0).astype(int), SURVIVAL_METRICS,
                lambda index, risk: survival_metrics(time[index], event[index], risk), unfittable)


def cross_validate(task: Task, fit_predict: FoldPredictor, groups: np.ndarray, folds: int, seed: int,
                   model: str) -> CVResult:
    """The one loop every model runs: ``fit_predict`` on each of :func:`make_folds`' folds of the samples with
    a known outcome, each held-out fold scored, and the pooled out-of-fold predictions scored at once."""
    index_known = np.flatnonzero(task.known)
    oof = np.full(len(task.known), np.nan)
    test_fold = np.full(len(task.known), -1)
    per_fold, notes = [], []
    for k, (train, test) in enumerate(make_folds(task.strata[index_known], groups[index_known], folds, seed)):
        train, test = index_known[train], index_known[test]
        fallback = task.unfittable(k, train, len(test))
        if fallback is not None:
            notes.append(fallback[1])
        oof[test] = fit_predict(k, train, test) if fallback is None else fallback[0]
        test_fold[test] = k
        per_fold.append(task.score(test, oof[test]))
    mean, std, undefined = _summarise(per_fold, task.metrics)
    return CVResult(task=task.name, model=model, per_fold=tuple(per_fold), mean=mean, std=std, undefined=undefined,
                    pooled=task.score(index_known, oof[index_known]), oof=oof, test_fold=test_fold,
                    notes=tuple(notes))


def centred(train_risk: np.ndarray, test_risk: np.ndarray) -> np.ndarray:
    # A Cox log-risk is defined up to a constant; anchor each fold at its training median.
    return test_risk - np.median(train_risk)
