"""The one cross-validation engine of the outcome models: stratified folds that keep a patient's rows together.

Every outcome model (the heads and baselines of ``oncodiff evaluate``, the class prior's choice among its
candidates at the end of ``oncodiff train``) splits its rows with :func:`make_folds`, so no patient is ever on
both sides of a fold, and a seed gives the same folds everywhere.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold


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
    problem = folds_problem(strata, folds)
    if problem:
        raise ValueError(problem)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros((len(strata), 1)), strata, groups))


def folds_problem(strata: np.ndarray, folds: int) -> str | None:
    """Why stratified ``folds``-fold cross-validation cannot run on ``strata`` (N,), or None when it can.

    scikit-learn's stratified splitters need at least ``folds`` members in the largest class: on a small
    cohort (say 6 patients, 2 responders, 5 folds) no split exists.
    """
    if len(strata) == 0:
        return "no patient has a known outcome"
    largest = int(np.unique(np.asarray(strata), return_counts=True)[1].max())
    if largest < folds:
        return (f"{folds}-fold stratified cross-validation needs at least {folds} patients in one outcome class; the "
                f"largest class has {largest}. Lower evaluation.folds (e.g. --set evaluation.folds={max(2, largest)}) "
                f"or add patients.")
    return None


def folds_for(strata: np.ndarray, groups: np.ndarray, most: int, per_class: int) -> int:
    """How many folds (at most ``most``) leave every class of ``strata`` (N,) at least ``per_class`` patients
    (``groups`` (N,)) in each fold; below 2 there are too few patients to cross-validate."""
    patients_per_class = [len(np.unique(groups[strata == k])) for k in np.unique(strata)]
    return min(most, min(patients_per_class) // per_class)
