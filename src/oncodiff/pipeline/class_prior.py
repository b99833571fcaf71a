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
The fitted prior is plain numbers in the export's config.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from oncodiff.cohort.schema import ClinicalVariable
from oncodiff.evaluation.outcomes import clinical_design_matrix

L2_C = 1.0  # inverse L2 strength of the logistic regression (sklearn's default)


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

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, n_classes: int, seed: int = 0) -> ClassPrior | None:
        """Fit on rows with a known label (>= 0); None when fewer than two classes are present."""
        from sklearn.linear_model import LogisticRegression

        known = labels >= 0
        x, y = features[known].astype(np.float64), labels[known].astype(int)
        if len(np.unique(y)) < 2:
            return None
        mean, scale = x.mean(0), x.std(0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        # Unweighted: the mixture needs calibrated probabilities, and class weights would pull them towards the
        # balanced split (a 27 % responder rate would be sampled as if it were 50 %).
        model = LogisticRegression(C=L2_C, max_iter=1000, random_state=seed)
        model.fit((x - mean) / scale, y)
        coef, intercept = np.zeros((n_classes, x.shape[1])), np.full(n_classes, -1e4)
        if len(model.classes_) == 2 and model.coef_.shape[0] == 1:  # sklearn's binary form: one row for class 1
            rows, biases = np.vstack([-model.coef_[0] / 2, model.coef_[0] / 2]), np.array(
                [-model.intercept_[0] / 2, model.intercept_[0] / 2])
        else:
            rows, biases = model.coef_, model.intercept_
        for row, klass in enumerate(model.classes_):
            coef[klass], intercept[klass] = rows[row], biases[row]
        return cls(tuple(mean), tuple(scale), tuple(map(tuple, coef)), tuple(intercept), n_classes, int(known.sum()))

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
                   int(raw["n_classes"]), int(raw["n_train"]))


def allocate_classes(probabilities: np.ndarray, n_samples: int) -> torch.Tensor:
    """(B, N) int64: per case, N class labels in proportion to its probabilities (largest remainder)."""
    counts = np.floor(probabilities * n_samples).astype(int)
    remainder = probabilities * n_samples - counts
    for i in range(len(counts)):
        short = n_samples - counts[i].sum()
        counts[i, np.argsort(-remainder[i], kind="stable")[:short]] += 1
    return torch.from_numpy(np.stack([np.repeat(np.arange(probabilities.shape[1]), c) for c in counts]))
