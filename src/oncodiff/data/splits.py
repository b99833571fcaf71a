"""Train/val/test splits by patient, written to a readable ``splits.json`` that users may edit.

A patient's lesions, slices and time points always sit on one side: splits list patients, never
samples. ``fractions``: data.test_fraction and data.val_fraction of the patients, drawn by a seeded shuffle within
each response label (data.stratify, the default), so every split keeps the cohort's label mix: a small
validation split without a single responder would pick the checkpoint (and stop training early) on
non-responders only. The counts per label are proportional (largest remainders). Unknown labels are a stratum
of their own. data.stratify=false: one seeded shuffle of all patients (the splits before stratification).
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
        label_of: dict[str, int] = {}
        for patient, label in zip(map(str, sample_patients), sample_labels):
            label_of[patient] = max(int(label), label_of.get(patient, -1))  # a known label wins over -1
        return _fraction_splits(patients, label_of, config, seed)
    return _kfold_splits([str(p) for p in sample_patients], list(sample_labels), patients, config, seed)


def _count(fraction: float, n: int) -> int:
    # A non-zero fraction of a tiny cohort still gets one patient.
    return 0 if fraction == 0 else max(1, int(round(fraction * n)))


def _fraction_splits(patients: list[str], label_of: dict[str, int], config: DataConfig, seed: int) -> Splits:
    n = len(patients)
    n_test, n_val = _count(config.test_fraction, n), _count(config.val_fraction, n)
    if n_test + n_val >= n:
        raise ValueError(f"{n} patients are too few for data.val_fraction={config.val_fraction} and "
                         f"data.test_fraction={config.test_fraction}; lower them or add patients")
    rng = np.random.default_rng(seed)
    labels = sorted({label_of[p] for p in patients})
    if not config.stratify or len(labels) < 2:
        order = [patients[i] for i in rng.permutation(n)]
        test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
        return Splits(tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test)), seed, "fractions")
    strata = [[p for p in patients if label_of[p] == label] for label in labels]
    strata = [[group[i] for i in rng.permutation(len(group))] for group in strata]
    sizes = [len(group) for group in strata]
    n_tests = _allocate(n_test, sizes)
    n_vals = _allocate(n_val, [size - k for size, k in zip(sizes, n_tests)])
    test, val, train = [], [], []
    for group, k_test, k_val in zip(strata, n_tests, n_vals):
        test += group[:k_test]
        val += group[k_test:k_test + k_val]
        train += group[k_test + k_val:]
    return Splits(tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test)), seed, "stratified fractions")


def _allocate(total: int, sizes: list[int]) -> list[int]:
    """``total`` split over groups of ``sizes`` in proportion, by largest remainders, never above a size."""
    quotas = [total * size / sum(sizes) for size in sizes]
    counts = [int(q) for q in quotas]
    for i in sorted(range(len(sizes)), key=lambda i: (counts[i] - quotas[i], i)):
        if sum(counts) == total:
            break
        if counts[i] < sizes[i]:
            counts[i] += 1
    return counts


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
