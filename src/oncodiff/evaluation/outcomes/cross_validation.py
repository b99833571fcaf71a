"""Response and survival prediction under patient-grouped cross-validation, and their baselines.

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import torch
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import logrank_test
from lifelines.utils import concordance_index
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_score, recall_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from oncodiff.config import EvaluationConfig
from oncodiff.data.clinical import clinical_design_matrix
from oncodiff.models.heads import CoxHead, ResponseHead, ScanOutcomeCNN, cox_partial_likelihood

RESPONDER = 1
NON_RESPONDER = 0
UNKNOWN_RESPONSE = -1
RESPONSE_METRICS = ("balanced_accuracy", "f1", "precision", "recall", "auc")
SURVIVAL_METRICS = ("c_index",)
ResponseModel = Literal["head", "logistic"]
SurvivalModel = Literal["cox_head", "coxph"]
_RESPONSE_MODELS = get_args(ResponseModel)
_SURVIVAL_MODELS = get_args(SurvivalModel)


# ---------------------------------------------------------------------------------------------
# Options and results


@dataclass(frozen=True)
class HeadOptions:
    """How the feature-based models are fitted inside each fold (full-batch AdamW for the heads)."""

    hidden: int = 64
    dropout: float = 0.2
    epochs: int = 200
    lr: float = 1e-2
    weight_decay: float = 1e-2
    logistic_c: float = 1.0  # inverse L2 strength of the logistic baseline (sklearn's C)
    coxph_penalizer: float = 0.1  # lifelines CoxPHFitter penalizer of the Cox baseline

    def __post_init__(self) -> None:
        _check_options(self, positive=("epochs", "lr", "logistic_c"), non_negative=("hidden", "weight_decay",
                                                                                    "coxph_penalizer"))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"HeadOptions.dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_config(cls, config: EvaluationConfig) -> HeadOptions:
        return cls(epochs=config.head_epochs)


@dataclass(frozen=True)
class CNNOptions:
    """The from-scratch scan CNN baseline (MONAI DenseNet, tiny widths so it trains on a CPU).

    ``precision="bf16-mixed"`` autocasts to bf16 on GPU and for 2D on CPU; 3D on CPU trains in
    float32 because this torch's CPU bf16 conv3d weight gradients are wrong (see ``_autocast``).
    """

    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    init_features: int = 8
    growth_rate: int = 8
    block_config: tuple[int, ...] = (2, 2)
    precision: Literal["bf16-mixed", "32"] = "bf16-mixed"
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        _check_options(self, positive=("epochs", "batch_size", "lr", "init_features", "growth_rate"),
                       non_negative=("weight_decay",))
        if self.precision not in ("bf16-mixed", "32"):
            raise ValueError(f"CNNOptions.precision must be 'bf16-mixed' or '32', got {self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"CNNOptions.device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")

    @classmethod
    def from_config(cls, config: EvaluationConfig) -> CNNOptions:
        return cls(epochs=config.cnn_epochs)


def _check_options(options: Any, positive: Sequence[str], non_negative: Sequence[str]) -> None:
    name = type(options).__name__
    for key in positive:
        if not getattr(options, key) > 0:
            raise ValueError(f"{name}.{key} must be > 0, got {getattr(options, key)}")
    for key in non_negative:
        if not getattr(options, key) >= 0:
            raise ValueError(f"{name}.{key} must be >= 0, got {getattr(options, key)}")


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


# ---------------------------------------------------------------------------------------------
# Folds and metrics


def make_folds(strata: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold grouped by patient: ``[(train_index, test_index), ...]`` into ``(N,)``.

    ``strata`` (N,): the label to balance (response, or the survival event); ``groups`` (N,): patient
    ids; no patient is ever on both sides of a fold. Deterministic for a given seed.
    """
    strata, groups = np.asarray(strata), np.asarray(groups)
    if strata.shape != groups.shape or strata.ndim != 1:
        raise ValueError(f"strata and groups must be 1-D of one length; got {strata.shape} and {groups.shape}")
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    n_patients = len(np.unique(groups))
    if n_patients < folds:
        raise ValueError(f"{folds}-fold cross-validation needs at least {folds} patients with a known outcome; "
                         f"got {n_patients}. Lower evaluation.folds or add patients.")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros((len(strata), 1)), strata, groups))


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


def _check_matrix(name: str, array: np.ndarray, n: int) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != n:
        raise ValueError(f"{name} must be (N, F) with N = {n} samples; got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or inf; encode missing values first (clinical_design_matrix)")
    return array


def _check_images(images: np.ndarray, n: int) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim not in (4, 5) or images.shape[0] != n:
        raise ValueError(f"images must be (N, C, *spatial) with 2 or 3 spatial axes and N = {n}; "
                         f"got shape {images.shape}")
    if not np.isfinite(images).all():
        raise ValueError("images contain NaN or inf")
    return images


def _check_labels(labels: np.ndarray) -> np.ndarray:
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


def _check_survival(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    time, event = np.asarray(time, dtype=float), np.asarray(event, dtype=float)
    if time.ndim != 1 or time.shape != event.shape:
        raise ValueError(f"time and event must be (N,) of one length; got {time.shape} and {event.shape}")
    known = np.isfinite(time) & np.isfinite(event)
    if (time[known] < 0).any() or not np.isin(event[known], (0.0, 1.0)).all():
        raise ValueError("survival time must be >= 0 days and event 1 (observed) or 0 (censored); NaN = unknown")
    if not event[known].any():
        raise ValueError("survival prediction needs at least one observed event among the known outcomes")
    return time, event, known


def _check_groups(groups: np.ndarray, n: int) -> np.ndarray:
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups (patient ids) must be (N,) with N = {n}; got shape {groups.shape}")
    return groups


# ---------------------------------------------------------------------------------------------
# The cross-validation loop shared by every model

FoldPredictor = Callable[[int, np.ndarray, np.ndarray], np.ndarray]  # (fold, train_idx, test_idx) -> test preds


def _run_cv(task: Literal["response", "survival"], model: str, strata: np.ndarray, groups: np.ndarray,
            known: np.ndarray, folds: int, seed: int, predict_fold: FoldPredictor,
            score: Callable[[np.ndarray, np.ndarray], dict], notes: list[str]) -> CVResult:
    index_known = np.flatnonzero(known)
    oof = np.full(len(known), np.nan)
    test_fold = np.full(len(known), -1)
    per_fold = []
    for k, (train, test) in enumerate(make_folds(strata[index_known], groups[index_known], folds, seed)):
        train, test = index_known[train], index_known[test]
        oof[test] = predict_fold(k, train, test)
        test_fold[test] = k
        per_fold.append(score(test, oof[test]))
    names = RESPONSE_METRICS if task == "response" else SURVIVAL_METRICS
    mean, std, undefined = _summarise(per_fold, names)
    return CVResult(task=task, model=model, per_fold=tuple(per_fold), mean=mean, std=std, undefined=undefined,
                    pooled=score(index_known, oof[index_known]), oof=oof, test_fold=test_fold, notes=tuple(notes))


def _cross_validate_response_with(fit_predict: FoldPredictor, labels: np.ndarray, groups: np.ndarray, folds: int,
                                  seed: int, model: str) -> CVResult:
    notes: list[str] = []

    def predict_fold(k: int, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        if len(np.unique(labels[train])) < 2:
            # No classifier can be fitted on one class; predict the training prevalence instead.
            notes.append(f"fold {k}: training part has one class only; predicted its prevalence")
            return np.full(len(test), float(labels[train].mean()))
        return fit_predict(k, train, test)

    def score(index: np.ndarray, probability: np.ndarray) -> dict:
        return response_metrics(labels[index], probability)

    return _run_cv("response", model, labels, groups, labels != UNKNOWN_RESPONSE, folds, seed, predict_fold, score,
                   notes)


def _cross_validate_survival_with(fit_predict: FoldPredictor, time: np.ndarray, event: np.ndarray,
                                  known: np.ndarray, groups: np.ndarray, folds: int, seed: int,
                                  model: str) -> CVResult:
    notes: list[str] = []

    def predict_fold(k: int, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        if not event[train].any():
            notes.append(f"fold {k}: no event in the training part; predicted equal risk")
            return np.zeros(len(test))
        return fit_predict(k, train, test)

    def score(index: np.ndarray, risk: np.ndarray) -> dict:
        return survival_metrics(time[index], event[index], risk)

    strata = np.where(known, event, 0).astype(int)
    return _run_cv("survival", model, strata, groups, known, folds, seed, predict_fold, score, notes)


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z-score with the training part's mean/std; columns constant on the training part are dropped."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    keep = std > 1e-8 * np.maximum(1.0, np.abs(mean))
    return (train[:, keep] - mean[keep]) / std[keep], (test[:, keep] - mean[keep]) / std[keep]


def _centred(train_risk: np.ndarray, test_risk: np.ndarray) -> np.ndarray:
    # A Cox log-risk is defined up to a constant; anchor each fold at its training median.
    return test_risk - np.median(train_risk)


# ---------------------------------------------------------------------------------------------
# Feature-based models: the heads and the linear baselines


def cross_validate_response(
    features: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 0,
    model: ResponseModel = "head", options: HeadOptions | None = None,
) -> CVResult:
    """Cross-validate a response classifier on ``features`` ``(N, F)``.

    ``labels`` (N,): 1 responder, 0 non-responder, -1 unknown (left out); ``groups`` (N,): patient
    ids. ``model``: "head" (``ResponseHead``, class-balanced BCE) or "logistic" (sklearn, class
    balanced) - the clinical baseline is "logistic" on ``clinical_design_matrix(...)``. Features are
    standardised inside each fold on its training part.
    """
    if model not in _RESPONSE_MODELS:
        raise ValueError(f"response model must be one of {_RESPONSE_MODELS}, got {model!r}")
    labels = _check_labels(labels)
    features = _check_matrix("features", features, len(labels))
    groups = _check_groups(groups, len(labels))
    options = options or HeadOptions()
    fit = _fit_response_head if model == "head" else _fit_logistic

    def fit_predict(k: int, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        x_train, x_test = _standardise(features[train], features[test])
        return fit(x_train, labels[train], x_test, options, seed + k)

    return _cross_validate_response_with(fit_predict, labels, groups, folds, seed, model)


def cross_validate_survival(
    features: np.ndarray, time: np.ndarray, event: np.ndarray, groups: np.ndarray, folds: int = 5,
    seed: int = 0, model: SurvivalModel = "cox_head", options: HeadOptions | None = None,
) -> CVResult:
    """Cross-validate a survival model on ``features`` ``(N, F)``; folds stratified on the event.

    ``time`` (N,) days, ``event`` (N,) 1 observed / 0 censored, NaN in either = unknown (left out).
    ``model``: "cox_head" (``CoxHead``, Cox partial likelihood) or "coxph" (lifelines
    ``CoxPHFitter`` with ``options.coxph_penalizer``) - the clinical baseline is "coxph" on
    ``clinical_design_matrix(...)``. Scored by the c-index of the predicted log-risk.
    """
    if model not in _SURVIVAL_MODELS:
        raise ValueError(f"survival model must be one of {_SURVIVAL_MODELS}, got {model!r}")
    time, event, known = _check_survival(time, event)
    features = _check_matrix("features", features, len(time))
    groups = _check_groups(groups, len(time))
    options = options or HeadOptions()
    fit = _fit_cox_head if model == "cox_head" else _fit_coxph

    def fit_predict(k: int, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        x_train, x_test = _standardise(features[train], features[test])
        return fit(x_train, time[train], event[train], x_test, options, seed + k)

    return _cross_validate_survival_with(fit_predict, time, event, known, groups, folds, seed, model)


@contextmanager
def _one_thread() -> Iterator[None]:
    # The heads take a few hundred tiny full-batch steps: thread hand-offs cost more than the math
    # (measured 8-40x slower with 2 threads on a loaded 2-core machine), so run them on one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fit_full_batch(module: torch.nn.Module, loss: Callable[[], torch.Tensor], options: HeadOptions) -> None:
    optimizer = torch.optim.AdamW(module.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    module.train()
    with _one_thread():
        for _ in range(options.epochs):
            optimizer.zero_grad()
            loss().backward()
            optimizer.step()
    module.eval()


def _balanced_bce(labels: torch.Tensor) -> torch.nn.BCEWithLogitsLoss:
    # Weight responders by n_negative / n_positive so a 0.5 threshold balances the two recalls
    # (ImmunoDiff's cohort: 19 responders, 55 non-responders).
    positives = labels.sum().clamp(min=1.0)
    return torch.nn.BCEWithLogitsLoss(pos_weight=(len(labels) - positives) / positives)


def _fit_response_head(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, options: HeadOptions,
                       seed: int) -> np.ndarray:
    x, y = torch.as_tensor(x_train, dtype=torch.float32), torch.as_tensor(y_train, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = ResponseHead(x.shape[1], hidden=options.hidden, dropout=options.dropout)
        bce = _balanced_bce(y)
        _fit_full_batch(head, lambda: bce(head(x), y), options)
    with torch.no_grad():
        return torch.sigmoid(head(torch.as_tensor(x_test, dtype=torch.float32))).numpy().astype(float)


def _fit_logistic(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, options: HeadOptions,
                  seed: int) -> np.ndarray:
    classifier = LogisticRegression(C=options.logistic_c, class_weight="balanced", max_iter=5000)
    classifier.fit(x_train, y_train)
    responder_column = list(classifier.classes_).index(RESPONDER)  # never assume the column order
    return classifier.predict_proba(x_test)[:, responder_column]


def _fit_cox_head(x_train: np.ndarray, t_train: np.ndarray, e_train: np.ndarray, x_test: np.ndarray,
                  options: HeadOptions, seed: int) -> np.ndarray:
    x = torch.as_tensor(x_train, dtype=torch.float32)
    time, event = torch.as_tensor(t_train, dtype=torch.float32), torch.as_tensor(e_train, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = CoxHead(x.shape[1], hidden=options.hidden, dropout=options.dropout)
        _fit_full_batch(head, lambda: cox_partial_likelihood(head(x), time, event), options)
    with torch.no_grad():
        train_risk = head(x).numpy().astype(float)
        test_risk = head(torch.as_tensor(x_test, dtype=torch.float32)).numpy().astype(float)
    return _centred(train_risk, test_risk)


def _fit_coxph(x_train: np.ndarray, t_train: np.ndarray, e_train: np.ndarray, x_test: np.ndarray,
               options: HeadOptions, seed: int) -> np.ndarray:
    names = [f"x{i}" for i in range(x_train.shape[1])]
    frame = pd.DataFrame(x_train, columns=names).assign(time=t_train, event=e_train)
    fitter = CoxPHFitter(penalizer=options.coxph_penalizer).fit(frame, duration_col="time", event_col="event")
    train_risk = fitter.predict_log_partial_hazard(frame[names]).to_numpy(dtype=float)
    test_risk = fitter.predict_log_partial_hazard(pd.DataFrame(x_test, columns=names)).to_numpy(dtype=float)
    return _centred(train_risk, test_risk)


# ---------------------------------------------------------------------------------------------
# Scan CNN baselines (ImmunoDiff Table 1: DenseNet-121, and DenseNet-121 + clinical variables)


def cross_validate_cnn_response(
    images: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 0,
    clinical: np.ndarray | None = None, options: CNNOptions | None = None,
) -> CVResult:
    """Cross-validate a from-scratch CNN on pre-treatment crops ``(N, C, *spatial)`` for response.

    With ``clinical`` ``(N, F)`` (e.g. ``clinical_design_matrix(...)``, standardised inside each fold)
    the clinical variables join the image embedding before the final layer. Labels as in
    ``cross_validate_response``; same folds for the same labels, groups, folds and seed.
    """
    labels = _check_labels(labels)
    images = _check_images(images, len(labels))
    groups = _check_groups(groups, len(labels))
    clinical = None if clinical is None else _check_matrix("clinical", clinical, len(labels))
    options = options or CNNOptions()

    def fit_predict(k: int, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        clinical_train, clinical_test = _fold_clinical(clinical, train, test)
        y = torch.as_tensor(labels[train], dtype=torch.float32)
        bce = _balanced_bce(y)
        net = _train_scan_cnn(images[train], clinical_train, lambda out, batch: bce(out, y[batch].to(out.device)),
                              options, seed + k)
        return 1.0 / (1.0 + np.exp(-_predict_scan_cnn(net, images[test], clinical_test, options)))

    name = "cnn+clinical" if clinical is not None else "cnn"
    return _cross_validate_response_with(fit_predict, labels, groups, folds, seed, name)


def cross_validate_cnn_survival(
    images: np.ndarray, time: np.ndarray, event: np.ndarray, groups: np.ndarray, folds: int = 5,
    seed: int = 0, clinical: np.ndarray | None = None, options: CNNOptions | None = None,
) -> CVResult:
    """Cross-validate a from-scratch CNN with a Cox output on crops ``(N, C, *spatial)``.

    Trained with the Cox partial likelihood over the risk sets inside each mini-batch (a batch
    without events contributes no gradient). ``clinical`` as in ``cross_validate_cnn_response``.
    """
    time, event, known = _check_survival(time, event)
    images = _check_images(images, len(time))
    groups = _check_groups(groups, len(time))
    clinical = None if clinical is None else _check_matrix("clinical", clinical, len(time))
    options = options or CNNOptions()

    def fit_predict(k: int, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        clinical_train, clinical_test = _fold_clinical(clinical, train, test)
        t, e = torch.as_tensor(time[train], dtype=torch.float32), torch.as_tensor(event[train], dtype=torch.float32)

        def loss(out: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
            return cox_partial_likelihood(out, t[batch].to(out.device), e[batch].to(out.device))

        net = _train_scan_cnn(images[train], clinical_train, loss, options, seed + k)
        train_risk = _predict_scan_cnn(net, images[train], clinical_train, options)
        return _centred(train_risk, _predict_scan_cnn(net, images[test], clinical_test, options))

    name = "cnn+clinical" if clinical is not None else "cnn"
    return _cross_validate_survival_with(fit_predict, time, event, known, groups, folds, seed, name)


def _fold_clinical(clinical: np.ndarray | None, train: np.ndarray,
                   test: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    if clinical is None:
        return None, None
    return _standardise(clinical[train], clinical[test])


def _device(options: CNNOptions) -> torch.device:
    if options.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(options.device)


def _autocast(options: CNNOptions, device: torch.device, spatial_dims: int) -> torch.autocast:
    # bf16 autocast: the CPUs we target have AMX bf16 (design.md), GPUs have bf16 tensor cores.
    # Except 3D on CPU: oneDNN's bf16 conv3d weight gradient is wrong (NaN or >5 % off, every time)
    # when the first spatial axis is 2 and in_channels >= 16 (torch 2.13 CPU, with or without AMX),
    # which this network's deepest block reaches on small crops. Forward and input gradients are fine.
    enabled = options.precision == "bf16-mixed" and not (device.type == "cpu" and spatial_dims == 3)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    # Near-equal batches of at least batch_size (when possible): no size-1 batch for BatchNorm.
    return list(torch.tensor_split(order, max(1, len(order) // batch_size)))


def _as_tensors(images: np.ndarray, clinical: np.ndarray | None,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = torch.as_tensor(images, dtype=torch.float32, device=device)
    c = None if clinical is None else torch.as_tensor(clinical, dtype=torch.float32, device=device)
    return x, c


def _train_scan_cnn(images: np.ndarray, clinical: np.ndarray | None,
                    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], options: CNNOptions,
                    seed: int) -> ScanOutcomeCNN:
    device = _device(options)
    x, c = _as_tensors(images, clinical, device)
    cuda_devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        net = ScanOutcomeCNN(spatial_dims=x.ndim - 2, in_channels=x.shape[1],
                             clinical_features=0 if c is None else c.shape[1], init_features=options.init_features,
                             growth_rate=options.growth_rate, block_config=options.block_config).to(device)
        optimizer = torch.optim.AdamW(net.parameters(), lr=options.lr, weight_decay=options.weight_decay)
        shuffle = torch.Generator().manual_seed(seed)
        net.train()
        for _ in range(options.epochs):
            for batch in _batches(torch.randperm(len(x), generator=shuffle), options.batch_size):
                with _autocast(options, device, x.ndim - 2):
                    out = net(x[batch.to(device)], None if c is None else c[batch.to(device)])
                optimizer.zero_grad()
                loss(out.float(), batch).backward()
                optimizer.step()
    return net.eval()


def _predict_scan_cnn(net: ScanOutcomeCNN, images: np.ndarray, clinical: np.ndarray | None,
                      options: CNNOptions) -> np.ndarray:
    device = next(net.parameters()).device
    x, c = _as_tensors(images, clinical, device)
    outputs = []
    with torch.no_grad(), _autocast(options, device, x.ndim - 2):
        for batch in torch.arange(len(x), device=device).split(options.batch_size):
            outputs.append(net(x[batch], None if c is None else c[batch]).float().cpu())
    return torch.cat(outputs).numpy().astype(float)


# ---------------------------------------------------------------------------------------------
# Kaplan-Meier curves by predicted risk group


@dataclass(frozen=True)
class KaplanMeierCurve:
    """One group's Kaplan-Meier estimate: step function values at ``time`` (days), 95 % CI."""

    label: str
    n: int
    events: int
    time: np.ndarray
    survival: np.ndarray
    ci_lower: np.ndarray
    ci_upper: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        arrays = {k: getattr(self, k).tolist() for k in ("time", "survival", "ci_lower", "ci_upper")}
        return {"label": self.label, "n": self.n, "events": self.events, **arrays}


@dataclass(frozen=True)
class KaplanMeierData:
    """Curves of the low- and high-risk groups (split at the median risk) and the log-rank p-value
    (None when a group is empty)."""

    curves: tuple[KaplanMeierCurve, ...]
    threshold: float
    logrank_p: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"curves": [c.to_dict() for c in self.curves], "threshold": self.threshold,
                "logrank_p": self.logrank_p}


def kaplan_meier_by_risk(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> KaplanMeierData:
    """Kaplan-Meier curves of patients above vs at-or-below the median predicted risk.

    ``time`` (N,) days, ``event`` (N,) 1/0, ``risk`` (N,) e.g. ``CVResult.oof`` of a survival model;
    samples with NaN in any of them are left out.
    """
    time, event, risk = (np.asarray(a, dtype=float) for a in (time, event, risk))
    if not time.shape == event.shape == risk.shape or time.ndim != 1:
        raise ValueError(f"time, event and risk must be (N,) of one length; got {time.shape}, {event.shape}, "
                         f"{risk.shape}")
    known = np.isfinite(time) & np.isfinite(event) & np.isfinite(risk)
    if not known.any():
        raise ValueError("no sample has a known time, event and risk")
    time, event, risk = time[known], event[known], risk[known]
    threshold = float(np.median(risk))
    high = risk > threshold
    groups = [(label, mask) for label, mask in (("low risk", ~high), ("high risk", high)) if mask.any()]
    curves = tuple(_kaplan_meier_curve(label, time[mask], event[mask]) for label, mask in groups)
    p_value = None
    if len(groups) == 2:
        p_value = float(logrank_test(time[~high], time[high], event_observed_A=event[~high],
                                     event_observed_B=event[high]).p_value)
    return KaplanMeierData(curves=curves, threshold=threshold, logrank_p=p_value)


def _kaplan_meier_curve(label: str, time: np.ndarray, event: np.ndarray) -> KaplanMeierCurve:
    fitter = KaplanMeierFitter().fit(time, event_observed=event, label=label)
    interval = fitter.confidence_interval_survival_function_
    return KaplanMeierCurve(
        label=label, n=len(time), events=int(event.sum()),
        time=fitter.survival_function_.index.to_numpy(dtype=float),
        survival=fitter.survival_function_[label].to_numpy(dtype=float),
        ci_lower=interval[f"{label}_lower_0.95"].to_numpy(dtype=float),
        ci_upper=interval[f"{label}_upper_0.95"].to_numpy(dtype=float),
    )


def plot_kaplan_meier(km: KaplanMeierData, ax: Any = None) -> Any:
    """Draw the risk-group curves with their 95 % CI bands on a matplotlib ``ax``; returns the ax."""
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    for curve in km.curves:
        line = ax.step(curve.time, curve.survival, where="post", label=f"{curve.label} (n={curve.n})")[0]
        ax.fill_between(curve.time, curve.ci_lower, curve.ci_upper, step="post", alpha=0.2,
                        color=line.get_color())
    p_text = "n/a" if km.logrank_p is None else f"{km.logrank_p:.3g}"
    ax.set(xlabel="days since baseline", ylabel="survival probability", ylim=(0.0, 1.05),
           title=f"Kaplan-Meier by predicted risk (log-rank p = {p_text})")
    ax.legend()
    return ax
