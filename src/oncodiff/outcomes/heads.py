"""Feature-based outcome models under cross-validation: the heads and the linear baselines.

ImmunoDiff Stage 2 fits a response classifier and a Cox survival head on features of the frozen
denoiser; the clinical baselines fit sklearn's logistic regression and lifelines' Cox model on the
clinical design matrix. All run through ``cross_validation.py: cross_validate``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd
import torch
from lifelines import CoxPHFitter
from sklearn.linear_model import LogisticRegression

from oncodiff.config import EvaluationConfig
from oncodiff.outcomes.cross_validation import (
    RESPONDER, CVResult, centred, check_groups, check_labels, check_matrix, check_options, check_survival,
    cross_validate, response_task, survival_task,
)
from oncodiff.outcomes.networks import CoxHead, ResponseHead, cox_partial_likelihood
from oncodiff.outcomes.scaling import standardise

ResponseModel = Literal["head", "logistic"]
SurvivalModel = Literal["cox_head", "coxph"]
_RESPONSE_MODELS = get_args(ResponseModel)
_SURVIVAL_MODELS = get_args(SurvivalModel)


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
        check_options(self, positive=("epochs", "lr", "logistic_c"), non_negative=("hidden", "weight_decay",
                                                                                    "coxph_penalizer"))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"HeadOptions.dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_config(cls, config: EvaluationConfig) -> HeadOptions:
        return cls(epochs=config.head_epochs)


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
    labels = check_labels(labels)
    features, groups, options = _inputs(features, groups, options, len(labels))
    fit = _fit_response_head if model == "head" else _fit_logistic

    def fit_predict(k: int, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        x_train, x_test = standardise(features[train], features[test])
        return fit(x_train, labels[train], x_test, options, seed + k)

    return cross_validate(response_task(labels), fit_predict, groups, folds, seed, model)


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
    time, event, known = check_survival(time, event)
    features, groups, options = _inputs(features, groups, options, len(time))
    fit = _fit_cox_head if model == "cox_head" else _fit_coxph

    def fit_predict(k: int, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        x_train, x_test = standardise(features[train], features[test])
        return fit(x_train, time[train], event[train], x_test, options, seed + k)

    return cross_validate(survival_task(time, event, known), fit_predict, groups, folds, seed, model)


def _inputs(features: np.ndarray, groups: np.ndarray, options: HeadOptions | None,
            n: int) -> tuple[np.ndarray, np.ndarray, HeadOptions]:
    return check_matrix("features", features, n), check_groups(groups, n), options or HeadOptions()


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


def balanced_bce(labels: torch.Tensor) -> torch.nn.BCEWithLogitsLoss:
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
        bce = balanced_bce(y)
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
    return centred(train_risk, test_risk)


def _fit_coxph(x_train: np.ndarray, t_train: np.ndarray, e_train: np.ndarray, x_test: np.ndarray,
               options: HeadOptions, seed: int) -> np.ndarray:
    names = [f"x{i}" for i in range(x_train.shape[1])]
    frame = pd.DataFrame(x_train, columns=names).assign(time=t_train, event=e_train)
    fitter = CoxPHFitter(penalizer=options.coxph_penalizer).fit(frame, duration_col="time", event_col="event")
    train_risk = fitter.predict_log_partial_hazard(frame[names]).to_numpy(dtype=float)
    test_risk = fitter.predict_log_partial_hazard(pd.DataFrame(x_test, columns=names)).to_numpy(dtype=float)
    return centred(train_risk, test_risk)
