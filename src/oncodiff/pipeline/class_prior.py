"""The class prior p(class | clinical variables, baseline tumour size), for predictions that do not know
the outcome.

A class-conditioned model (model.class_label) generates sharp follow-ups for a given response or
survival class, but before treatment the class is unknown. The glioblastoma LDM conditions on "true
or predicted" classes; we predict them with a small multinomial logistic regression fitted on the
training split at the end of ``oncodiff train`` and marginalise: case i's N samples are given
classes in proportion to p_i (largest-remainder allocation), so the N samples are a stratified draw
from the mixture sum_c p(c | x) p(post | x, c), and their spread shows both outcomes.

Features: the clinical design matrix (numeric values, one-hot categories, a missing indicator per
variable; evaluation.outcomes.clinical_design_matrix) and log(1 + baseline tumour voxels).
The L2 strength is chosen by patient-grouped cross-validation on the training split (held-out log loss,
:data:`C_GRID`): with a few dozen patients and a dozen features, sklearn's default C = 1 overfits. On the
44-patient training splits of benchmarks/quality.py (seeds 0 and 1), C = 1 scored a log loss of 0.74 on
the test patients, worse than predicting the training base rate (0.72, 0.71); the C that cross-validation
chose (0.03, 0.1) scored 0.67 and 0.68. The probabilities are what the mixture samples by and what
predict reports, so they must be calibrated, not merely ranked.
The fitted prior is plain numbers in the export's config.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from oncodiff.cohort.schema import ClinicalVariable
from oncodiff.evaluation.outcomes import clinical_design_matrix

L2_C = 1.0  # inverse L2 strength when there are too few patients to cross-validate (sklearn's default)
C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)  # candidates for the cross-validated inverse L2 strength
CV_FOLDS = 5
MIN_PATIENTS_PER_CLASS = 2  # per fold; fewer patients of a class than this * folds -> fewer folds, then L2_C


def prior_features(clinical: np.ndarray, missing: np.ndarray, tumor_mask: np.ndarray,
                   variables: Sequence[ClinicalVariable]) -> np.ndarray:
    """(N, F) features: the clinical design matrix and log(1 + baseline tumour voxels)."""
    design = clinical_design_matrix(clinical, missing, variables)
    size = np.log1p(tumor_mask.reshape(len(tumor_mask), -1).sum(1, dtype=np.float64))[:, None]
    return np.concatenate([design, size], axis=1)


@dataclass(frozen=True)
class ClassPrior:
    """Multinomial logistic regression on standardised features; ``coef`` (K, F), ``intercept`` (K,)."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[tuple[float, ...], ...]
    intercept: tuple[float, ...]
    n_classes: int
    n_train: int
    c: float = L2_C  # the inverse L2 strength used (exports before it was cross-validated: L2_C)
    c_selection: str = "default"  # how c was chosen: "default" or "k-fold patient-grouped CV log loss"
    frequencies: tuple[float, ...] | None = None  # (K,) training class rates, the prior's no-information reference

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, n_classes: int, seed: int = 0,
            groups: np.ndarray | None = None) -> ClassPrior | None:
        """Fit on rows with a known label (>= 0); None when fewer than two classes are present.

        ``groups``: the patient of each row (a patient's follow-ups and slices share its label and features);
        the inverse L2 strength is chosen from :data:`C_GRID` by cross-validation that keeps a patient's rows
        in one fold. Without groups every row is its own patient.
        """
        from sklearn.linear_model import LogisticRegression

        known = labels >= 0
        x, y = features[known].astype(np.float64), labels[known].astype(int)
        if len(np.unique(y)) < 2:
            return None
        groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
        mean, scale = x.mean(0), x.std(0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        z = (x - mean) / scale
        c, selection = _cross_validated_c(z, y, groups[known], seed)
        # Unweighted: the mixture needs calibrated probabilities, and class weights would pull them towards the
        # balanced split (a 27 % responder rate would be sampled as if it were 50 %).
        model = LogisticRegression(C=c, max_iter=1000, random_state=seed)
        model.fit(z, y)
        coef, intercept = np.zeros((n_classes, x.shape[1])), np.full(n_classes, -1e4)
        if len(model.classes_) == 2 and model.coef_.shape[0] == 1:  # sklearn's binary form: one row for class 1
            rows, biases = np.vstack([-model.coef_[0] / 2, model.coef_[0] / 2]), np.array(
                [-model.intercept_[0] / 2, model.intercept_[0] / 2])
        else:
            rows, biases = model.coef_, model.intercept_
        for row, klass in enumerate(model.classes_):
            coef[klass], intercept[klass] = rows[row], biases[row]
        frequencies = tuple(float(f) for f in np.bincount(y, minlength=n_classes)[:n_classes] / len(y))
        return cls(tuple(mean), tuple(scale), tuple(map(tuple, coef)), tuple(intercept), n_classes, int(known.sum()),
                   float(c), selection, frequencies)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(N, K) class probabilities."""
        z = (features - np.asarray(self.mean)) / np.asarray(self.scale)
        logits = z @ np.asarray(self.coef).T + np.asarray(self.intercept)
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> ClassPrior:
        return cls(tuple(raw["mean"]), tuple(raw["scale"]), tuple(map(tuple, raw["coef"])), tuple(raw["intercept"]),
                   int(raw["n_classes"]), int(raw["n_train"]), float(raw.get("c", L2_C)),
                   str(raw.get("c_selection", "default")),
                   None if raw.get("frequencies") is None else tuple(raw["frequencies"]))

    def scores(self, probabilities: np.ndarray, labels: np.ndarray) -> dict:
        """How well ``probabilities`` (N, K) predict ``labels`` (N,; < 0 = unknown, left out): log loss (against
        the training class rates' log loss), accuracy of the most probable class and, with two classes, AUC."""
        known = labels >= 0
        p, y = probabilities[known], labels[known].astype(int)
        out: dict = {"n": int(known.sum()), "fitted": self.describe()}
        if not len(y):
            return out | {"status": "not scored: no case has a known class"}
        out["log_loss"] = float(_negative_log_likelihood(p, y).mean())
        if self.frequencies is not None:
            rates = np.clip(np.asarray(self.frequencies)[y], 1e-12, None)
            out["base_rate_log_loss"] = float(-np.log(rates).mean())
        out["accuracy"] = float((p.argmax(1) == y).mean())
        if p.shape[1] == 2 and len(np.unique(y)) == 2:
            from sklearn.metrics import roc_auc_score

            out["auc"] = float(roc_auc_score(y, p[:, 1]))
        return out

    def describe(self) -> str:
        return f"logistic regression on {self.n_train} training rows, C = {self.c:g} ({self.c_selection})"


def _cross_validated_c(z: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int) -> tuple[float, str]:
    """The C of :data:`C_GRID` with the lowest held-out log loss over patient-grouped, stratified folds
    (ties: the stronger regularisation); :data:`L2_C` when a class has too few patients for two folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold

    patients_per_class = [len(np.unique(groups[y == k])) for k in np.unique(y)]
    folds = min(CV_FOLDS, min(patients_per_class) // MIN_PATIENTS_PER_CLASS)
    if folds < 2:
        return L2_C, "default"
    splits = list(StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(z, y, groups))
    classes = np.unique(y)
    losses = []
    for c in C_GRID:
        total = 0.0
        for train, test in splits:
            model = LogisticRegression(C=c, max_iter=1000, random_state=seed).fit(z[train], y[train])
            p = np.full((len(test), len(classes)), 1e-12)
            p[:, np.searchsorted(classes, model.classes_)] = model.predict_proba(z[test])
            total += _negative_log_likelihood(p, np.searchsorted(classes, y[test])).sum()
        losses.append(total / len(y))
    return C_GRID[int(np.argmin(losses))], f"{folds}-fold patient-grouped CV log loss"


def _negative_log_likelihood(probabilities: np.ndarray, column: np.ndarray) -> np.ndarray:
    """(N,) -log p[i, column[i]], the probabilities floored at 1e-12; its mean is the log loss."""
    return -np.log(np.clip(probabilities[np.arange(len(column)), column], 1e-12, None))


def allocate_classes(probabilities: np.ndarray, n_samples: int) -> torch.Tensor:
    """(B, N) int64: per case, N class labels in proportion to its probabilities (largest remainder)."""
    counts = np.floor(probabilities * n_samples).astype(int)
    remainder = probabilities * n_samples - counts
    for i in range(len(counts)):
        short = n_samples - counts[i].sum()
        counts[i, np.argsort(-remainder[i], kind="stable")[:short]] += 1
    return torch.from_numpy(np.stack([np.repeat(np.arange(probabilities.shape[1]), c) for c in counts]))
