"""The class prior p(class | clinical variables, baseline tumour size), for predictions that do not know
the outcome.

A class-conditioned model (model.class_label) generates sharp follow-ups for a given response or
survival class, but before treatment the class is unknown. The glioblastoma LDM conditions on "true
or predicted" classes; we predict them with a small multinomial logistic regression fitted on the
training split at the end of ``oncodiff train`` and marginalise: case i's N samples are given
classes in proportion to p_i (largest-remainder allocation), so the N samples are a stratified draw
from the mixture sum_c p(c | x) p(post | x, c), and their spread shows both outcomes.

Candidates, chosen on the training split by patient-grouped cross-validated log loss (:meth:`ClassPrior.select`):
- ``clinical``: the clinical design matrix (numeric values, one-hot categories, a missing indicator per
  variable; data/clinical.py: clinical_design_matrix) and log(1 + baseline tumour voxels);
- ``clinical + denoiser features``: those and the trained denoiser's up-block features (ImmunoDiff's
  stage 2, pipeline.denoiser_features), computed for a new case exactly as for the training cases;
- each at the inverse L2 strengths of :data:`C_GRID` (with a few dozen patients and a dozen features,
  sklearn's default C = 1 overfits, scoring a worse test log loss than the base rate on the splits of
  benchmarks/quality.py, docs/results.md), and shrunk towards the training class rates by the weights
  of :data:`SHRINKAGE_GRID`;
- the training class rates themselves (``base rate``), so the chosen predictor is never worse than the
  base rate in cross-validation; it is kept unless the best candidate beats it by more than one standard
  error, and unless the whole selection, repeated inside each training fold (nested CV), beats it on the
  held-out patients on average: the lowest of dozens of CV losses is optimistic. On the 42-patient lung
  split (6 responders) the plain CV chose a clinical model that beat the base rate by 0.06 nats in CV,
  but the nested CV scored the selection 0.03 nats worse than the base rate, and on the test split every
  clinical candidate was worse (0.98 to 1.19 against 0.95). On the test split a chosen model can still
  lose to the base rate, by chance; evaluate reports both.
The probabilities are what the mixture samples by and what predict reports, so they must be calibrated,
not merely ranked.
The fitted prior is plain numbers in the export's config.json.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from oncodiff.cohort.schema import ClinicalVariable
from oncodiff.data.clinical import clinical_design_matrix
from oncodiff.outcomes.folds import folds_for, make_folds
from oncodiff.outcomes.scaling import Standardisation

L2_C = 1.0  # inverse L2 strength when there are too few patients to cross-validate (sklearn's default)
C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)  # candidates for the cross-validated inverse L2 strength
SHRINKAGE_GRID = (0.0, 0.25, 0.5, 0.75)  # candidate weights of the training class rates (1 = BASE_RATE itself)
CV_FOLDS = 5
CLINICAL = "clinical"  # the inputs of a candidate: prior_features
CLINICAL_DENOISER = "clinical + denoiser features"  # prior_features and the denoiser's up-block features
BASE_RATE = "base rate"  # the training class rates, whatever the case
INPUTS = (CLINICAL, CLINICAL_DENOISER)
MIN_PATIENTS_PER_CLASS = 2  # per fold; fewer patients of a class than this * folds -> fewer folds, then L2_C


def prior_features(clinical: np.ndarray, missing: np.ndarray, tumor_mask: np.ndarray,
                   variables: Sequence[ClinicalVariable]) -> np.ndarray:
    """(N, F) features: the clinical design matrix and log(1 + baseline tumour voxels)."""
    design = clinical_design_matrix(clinical, missing, variables)
    size = np.log1p(tumor_mask.reshape(len(tumor_mask), -1).sum(1, dtype=np.float64))[:, None]
    return np.concatenate([design, size], axis=1)


INTERIM_FEATURES = ("has prior scan", "log volume change at the latest prior", "its change per 30 days",
                    "in-tumour intensity drift at the latest prior")


def interim_features(pre: np.ndarray, tumor_mask: np.ndarray, priors: np.ndarray, prior_masks: np.ndarray,
                     prior_days: np.ndarray) -> np.ndarray:
    """(N, 4) what the scans before a target tell about its outcome (data.inputs=prior), from the latest prior
    scan of each case: whether there is one, the early change of the tumour volume measured on it
    (log((1 + its tumour voxels) / (1 + the baseline's))), that change per 30 days, and the drift so far (the mean
    intensity change from the baseline inside the baseline tumour). Zeros without a prior scan.
    pre, tumor_mask (N, 1, *S); priors, prior_masks (N, K, *S); prior_days (N, K), NaN in an empty slot."""
    n = len(tumor_mask)
    out = np.zeros((n, len(INTERIM_FEATURES)), np.float64)
    present = np.isfinite(prior_days) if prior_days.size else np.zeros((n, 0), bool)
    for i in np.flatnonzero(present.any(axis=1) if present.size else np.zeros(n, bool)):
        k = int(np.flatnonzero(present[i])[-1])
        tumour = tumor_mask[i, 0] > 0
        change = float(np.log1p(prior_masks[i, k].sum(dtype=np.float64)) - np.log1p(tumour.sum(dtype=np.float64)))
        drift = float((priors[i, k] - pre[i, 0])[tumour].mean()) if tumour.any() else 0.0
        out[i] = (1.0, change, change * 30.0 / max(float(prior_days[i, k]), 1.0), drift)
    return out


@dataclass(frozen=True)
class ClassPrior:
    """Multinomial logistic regression on standardised features, ``coef`` (K, F), ``intercept`` (K,), shrunk
    towards the training class rates: p = (1 - shrinkage) p_logistic + shrinkage ``frequencies``.
    ``inputs`` names the features (:data:`INPUTS`); :data:`BASE_RATE` is the training class rates alone."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[tuple[float, ...], ...]
    intercept: tuple[float, ...]
    n_classes: int
    n_train: int
    c: float = L2_C  # the inverse L2 strength used (exports before it was cross-validated: L2_C)
    c_selection: str = "default"  # how the predictor was chosen: "default" or the cross-validation
    frequencies: tuple[float, ...] | None = None  # (K,) training class rates, the prior's no-information reference
    inputs: str = CLINICAL  # exports before the candidates existed: clinical, unshrunk
    shrinkage: float = 0.0
    feature_timestep: int | None = None  # the denoiser's noise level for CLINICAL_DENOISER
    cv_log_loss: tuple[tuple[str, float], ...] = ()  # the best CV log loss of each candidate family
    interim: bool = False  # the features end with INTERIM_FEATURES (training cases had prior scans)

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, n_classes: int, seed: int = 0,
            groups: np.ndarray | None = None) -> ClassPrior | None:
        """:meth:`select` with the clinical features only."""
        return cls.select({CLINICAL: features}, labels, n_classes, seed, groups)

    @classmethod
    def select(cls, feature_sets: Mapping[str, np.ndarray], labels: np.ndarray, n_classes: int, seed: int = 0,
               groups: np.ndarray | None = None, feature_timestep: int | None = None) -> ClassPrior | None:
        """The candidate with the lowest patient-grouped CV log loss, refitted on all rows with a known label
        (>= 0); None when fewer than two classes are present.

        Candidates: for each feature set (name -> (N, F), rows aligned with ``labels``), a logistic regression
        for each C of :data:`C_GRID`, shrunk by each weight of :data:`SHRINKAGE_GRID`; and the training class
        rates (:data:`BASE_RATE`), which therefore never lose in cross-validation. ``groups``: the patient of
        each row, kept in one fold (without groups every row is its own patient). Ties go to the simpler
        candidate (the base rate, more shrinkage, the first feature set, smaller C), and the base rate is kept
        unless the best candidate beats it by more than one standard error (:func:`_cross_validate`) and the
        selection itself, repeated within each training fold, beats it on the held-out patients (:func:`_nested_gain`).
        """
        known = labels >= 0
        y = labels[known].astype(int)
        if len(np.unique(y)) < 2:
            return None
        groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
        sets = {name: _standardised(x[known].astype(np.float64)) for name, x in feature_sets.items()}
        frequencies = np.bincount(y, minlength=n_classes)[:n_classes] / len(y)
        splits, folds = grouped_folds(y, groups[known], seed)
        if splits is None:  # too few patients to cross-validate: the clinical model at sklearn's default C
            name = next(iter(sets))
            return cls._refit(sets[name], y, n_classes, seed, frequencies, name, L2_C, 0.0, "default",
                              feature_timestep, ())
        best, families = _cross_validate(sets, y, n_classes, splits, seed, groups[known])
        selection = f"{folds}-fold patient-grouped CV log loss"
        if best[0] != BASE_RATE:
            gain = _nested_gain(sets, y, n_classes, splits, seed, groups[known])
            selection += f"; nested-CV gain over the base rate {gain:+.3f} nats"
            if gain <= 0:
                best, selection = (BASE_RATE, 0.0, 1.0), f"{selection}, so the base rate"
        name, c, shrinkage = best
        return cls._refit(sets.get(name), y, n_classes, seed, frequencies, name, c, shrinkage, selection,
                          feature_timestep if name == CLINICAL_DENOISER else None, families)

    @classmethod
    def _refit(cls, standardised, y, n_classes, seed, frequencies, name, c, shrinkage, selection, timestep,
               families) -> ClassPrior:
        rates = tuple(float(f) for f in frequencies)
        if name == BASE_RATE:
            return cls((), (), (), (), n_classes, len(y), 0.0, selection, rates, BASE_RATE, 1.0, None, families)
        z, mean, scale = standardised
        coef, intercept = fit_logistic(z, y, n_classes, c, seed)
        return cls(tuple(mean), tuple(scale), tuple(map(tuple, coef)), tuple(intercept), n_classes, len(y),
                   float(c), selection, rates, name, float(shrinkage), timestep, families)

    def probabilities(self, features: np.ndarray | None) -> np.ndarray:
        """(N, K) class probabilities of (N, F) features (:data:`BASE_RATE`: of N rows, features unused)."""
        rates = np.asarray(self.frequencies if self.frequencies is not None else np.full(self.n_classes, 1.0 / self.n_classes))
        if self.inputs == BASE_RATE:
            return np.tile(rates, (len(features), 1))
        z = (features - np.asarray(self.mean)) / np.asarray(self.scale)
        p = _softmax(z @ np.asarray(self.coef).T + np.asarray(self.intercept))
        return p if not self.shrinkage else (1 - self.shrinkage) * p + self.shrinkage * rates

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> ClassPrior:
        """From :meth:`to_dict`'s dict; exports written before a field existed get its default."""
        return cls(tuple(raw["mean"]), tuple(raw["scale"]), tuple(map(tuple, raw["coef"])), tuple(raw["intercept"]),
                   int(raw["n_classes"]), int(raw["n_train"]), float(raw.get("c", L2_C)),
                   str(raw.get("c_selection", "default")),
                   None if raw.get("frequencies") is None else tuple(raw["frequencies"]),
                   str(raw.get("inputs", CLINICAL)), float(raw.get("shrinkage", 0.0)), raw.get("feature_timestep"),
                   tuple((str(k), float(v)) for k, v in raw.get("cv_log_loss", ())), bool(raw.get("interim", False)))

    def describe(self) -> str:
        if self.inputs == BASE_RATE:
            rates = ", ".join(f"{r:.2f}" for r in self.frequencies)
            return f"the training class rates ({rates}) of {self.n_train} training rows ({self.c_selection})"
        shrunk = f", shrunk {self.shrinkage:g} towards the training class rates" if self.shrinkage else ""
        inputs = self.inputs + (" and the prior scans' early change" if self.interim else "")
        return (f"logistic regression on {inputs}, {self.n_train} training rows, C = {self.c:g}{shrunk} "
                f"({self.c_selection})")


def fit_logistic(z: np.ndarray, y: np.ndarray, n_classes: int, c: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, F) coefficients and (K,) intercepts of an L2 logistic regression; classes absent from ``y`` get a
    -1e4 intercept. Unweighted: the mixture needs calibrated probabilities, and class weights would pull them
    towards the balanced split (a 27 % responder rate would be sampled as if it were 50 %)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=1000, random_state=seed).fit(z, y)
    coef, intercept = np.zeros((n_classes, z.shape[1])), np.full(n_classes, -1e4)
    if len(model.classes_) == 2 and model.coef_.shape[0] == 1:  # sklearn's binary form: one row for class 1
        rows = np.vstack([-model.coef_[0] / 2, model.coef_[0] / 2])
        biases = np.array([-model.intercept_[0] / 2, model.intercept_[0] / 2])
    else:
        rows, biases = model.coef_, model.intercept_
    for row, klass in enumerate(model.classes_):
        coef[klass], intercept[klass] = rows[row], biases[row]
    return coef, intercept


def grouped_folds(y: np.ndarray, groups: np.ndarray, seed: int) -> tuple[list | None, int]:
    """:func:`~oncodiff.outcomes.folds.make_folds`' folds of the rows, as many as leave each class
    :data:`MIN_PATIENTS_PER_CLASS` patients per fold (at most :data:`CV_FOLDS`), and their number; None when a
    class has too few patients for two."""
    folds = folds_for(y, groups, CV_FOLDS, MIN_PATIENTS_PER_CLASS)
    return (make_folds(y, groups, folds, seed) if folds >= 2 else None), folds


def _cross_validate(sets: Mapping[str, tuple], y: np.ndarray, n_classes: int, splits: list, seed: int,
                    groups: np.ndarray) -> tuple[tuple[str, float, float], tuple[tuple[str, float], ...]]:
    """The chosen (inputs, C, shrinkage) and the best out-of-fold log loss of each family (inputs and
    shrinkage). The candidate with the lowest loss is chosen only if it beats the base rate by more than one
    standard error of the paired per-patient difference (the one-standard-error rule): with a few dozen
    patients and dozens of candidates, the lowest CV loss is optimistic, and a prior worse than the base rate
    on new patients costs more than a slightly better one gains."""
    rates = np.zeros((len(y), n_classes))
    for train, test in splits:
        rates[test] = np.bincount(y[train], minlength=n_classes)[:n_classes] / len(train)
    held_out = {(name, c): out_of_fold_probabilities(z, y, n_classes, splits, c, seed) for name, (z, _, _) in sets.items()
                for c in C_GRID}
    candidates = [((BASE_RATE, 0.0, 1.0), negative_log_likelihood(rates, y))]
    for shrinkage in sorted(SHRINKAGE_GRID, reverse=True):
        for (name, c), p in held_out.items():
            candidates.append(((name, c, shrinkage), negative_log_likelihood((1 - shrinkage) * p + shrinkage * rates, y)))
    losses = [loss.mean() for _, loss in candidates]
    best = int(np.argmin(losses))
    gain = _per_patient(candidates[0][1] - candidates[best][1], groups)
    if len(gain) < 2 or gain.mean() <= gain.std(ddof=1) / np.sqrt(len(gain)):
        best = 0
    families: dict[str, float] = {}
    for ((name, _, shrinkage), _), loss in zip(candidates, losses):
        key = name if name == BASE_RATE else f"{name}, shrinkage {shrinkage:g}"
        families[key] = min(float(loss), families.get(key, np.inf))
    return candidates[best][0], tuple(families.items())


def _nested_gain(sets: Mapping[str, tuple], y: np.ndarray, n_classes: int, splits: list, seed: int,
                 groups: np.ndarray) -> float:
    """Mean per-patient log-loss gain over the base rate of the whole selection (:func:`_cross_validate`,
    inner folds within each outer training fold), on the outer held-out patients: an unbiased estimate of
    what choosing buys, where the best CV loss of many candidates is optimistic. Outer folds too small to
    split again keep the base rate (gain 0)."""
    gain = np.zeros(len(y))
    for train, test in splits:
        inner, _ = grouped_folds(y[train], groups[train], seed)
        rates = np.bincount(y[train], minlength=n_classes)[:n_classes] / len(train)
        if inner is None or len(np.unique(y[train])) < 2:
            continue
        (name, c, shrinkage), _ = _cross_validate({k: (z[train], None, None) for k, (z, _, _) in sets.items()},
                                                  y[train], n_classes, inner, seed, groups[train])
        if name == BASE_RATE:
            continue
        coef, intercept = fit_logistic(sets[name][0][train], y[train], n_classes, c, seed)
        p = (1 - shrinkage) * _softmax(sets[name][0][test] @ coef.T + intercept) + shrinkage * rates
        gain[test] = negative_log_likelihood(np.tile(rates, (len(test), 1)), y[test]) - negative_log_likelihood(p, y[test])
    return float(_per_patient(gain, groups).mean())


def _standardised(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scaling = Standardisation.fit(x)  # every column kept: the export applies mean and scale to a new case's features
    return scaling(x), scaling.mean, scaling.scale


def _softmax(logits: np.ndarray) -> np.ndarray:
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def _per_patient(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The mean of ``values`` over each patient's rows."""
    _, index = np.unique(groups, return_inverse=True)
    return np.bincount(index, weights=values) / np.bincount(index)


def out_of_fold_probabilities(z: np.ndarray, y: np.ndarray, n_classes: int, splits: list, c: float, seed: int) -> np.ndarray:
    """(N, K) held-out probabilities of a logistic regression at inverse L2 strength ``c``."""
    from sklearn.linear_model import LogisticRegression

    p = np.full((len(y), n_classes), 1e-12)
    for train, test in splits:
        model = LogisticRegression(C=c, max_iter=1000, random_state=seed).fit(z[train], y[train])
        p[np.ix_(test, model.classes_)] = model.predict_proba(z[test])
    return p


def negative_log_likelihood(probabilities: np.ndarray, column: np.ndarray) -> np.ndarray:
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
