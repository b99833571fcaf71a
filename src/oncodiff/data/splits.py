"""Train/val/test splits by patient, written to a readable ``splits.json`` that users may edit.

A patient's lesions, slices and time points always sit on one side: splits list patients, never
samples. ``fractions``: a seeded shuffle of the patients cut by data.val_fraction / test_fraction.
``kfold``: data.folds stratified folds on the response label, grouped by patient
(scikit-learn's StratifiedGroupKFold); fold data.fold is the test set and data.val_fraction of the
patients, drawn from the other folds, is the validation set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from oncodiff.config import DataConfig
from oncodiff.runs import Splits

def make_splits(
    sample_patients: Sequence[str], sample_labels: Sequence[int], config: DataConfig, seed: int
) -> Splits:
    """Split the patients of the samples (one patient id and response label per sample; -1 unknown)."""
    patients = sorted(set(map(str, sample_patients)))
    if not patients:
        raise ValueError("no samples to split: the cohort has no (baseline, follow-up) pairs")
    if config.folds is None:
        return _fraction_splits(patients, config, seed)
    return _kfold_splits([str(p) for p in sample_patients], list(sample_labels), patients, config, seed)


def _count(fraction: float, n: int) -> int:
    # A non-zero fraction of a tiny cohort still gets one patient.
    return 0 if fraction == 0 else max(1, int(round(fraction * n)))


def _fraction_splits(patients: list[str], config: DataConfig, seed: int) -> Splits:
    n = len(patients)
    n_test, n_val = _count(config.test_fraction, n), _count(config.val_fraction, n)
    if n_test + n_val >= n:
        raise ValueError(f"{n} patients are too few for data.val_fraction={config.val_fraction} and "
                         f"data.test_fraction={config.test_fraction}; lower them or add patients")
    order = [patients[i] for i in np.random.default_rng(seed).permutation(n)]
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    return Splits(tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test)), seed, "fractions")


def _kfold_splits(sample_patients: list[str], labels: list[int], patients: list[str], config: DataConfig,
                  seed: int) -> Splits:
    folds = int(config.folds)
    if folds > len(patients):
        raise ValueError(f"data.folds={folds} needs at least {folds} patients; the cohort has {len(patients)}")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    groups = np.asarray(sample_patients)
    _, test_index = list(splitter.split(np.zeros(len(groups)), labels, groups))[config.fold]
    test = sorted(set(groups[test_index]))
    rest = [p for p in patients if p not in set(test)]
    n_val = _count(config.val_fraction, len(patients))
    if n_val >= len(rest):
        raise ValueError(f"{len(rest)} patients outside the test fold are too few for "
                         f"data.val_fraction={config.val_fraction}; lower it or use fewer folds")
    order = [rest[i] for i in np.random.default_rng(seed).permutation(len(rest))]
    val, train = order[:n_val], order[n_val:]
    return Splits(tuple(sorted(train)), tuple(sorted(val)), tuple(test), seed, "kfold", folds, config.fold)
