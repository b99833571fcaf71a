"""Proper scoring rules for predicted distributions: lower is better, and the truth's own distribution
scores best in expectation, so a method cannot gain by being sharper or vaguer than it knows.

- CRPS (continuous ranked probability score) of a scalar: int (F(x) - 1[x >= y])^2 dx. Of N samples it
  is the CRPS of their empirical distribution, mean|X - y| - mean|X - X'| / 2 (Gneiting & Raftery 2007,
  the form ``properscoring.crps_ensemble`` computes); of a Gaussian N(mu, sigma^2) it has the closed form
  sigma (z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi)), z = (y - mu) / sigma. A point prediction (one
  sample, no spread) scores its absolute error.
- Energy score of a vector (the in-tumour box as one vector): mean ||X - y|| - mean ||X - X'|| / 2.
- Log score of a category: -log p(true category).
- Brier score of class probabilities: mean (p(class 1) - y)^2 for two classes; the sum over classes for more.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from oncodiff.arrays import crps_ensemble as crps_ensemble  # here for evaluation's callers; pipeline uses it too

RELIABILITY_BINS = 5
CATEGORY_FLOOR = 1e-3  # probabilities are clipped to [floor, 1 - floor] before a log score


def crps_gaussian(mu, sigma, y) -> np.ndarray:
    """CRPS of N(mu, sigma^2) at y, elementwise (closed form); sigma = 0 gives |y - mu|."""
    mu, sigma, y = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (mu, sigma, y)))
    out = np.abs(y - mu)
    spread = sigma > 0
    z = (y[spread] - mu[spread]) / sigma[spread]
    out[spread] = sigma[spread] * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / math.sqrt(math.pi))
    return out


def energy_score(samples: np.ndarray, y: np.ndarray) -> float:
    """Energy score of ``samples`` (N, D) as vectors at ``y`` (D,)."""
    x = np.asarray(samples, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    to_truth = np.linalg.norm(x - y, axis=1).mean()
    between = np.linalg.norm(x[:, None] - x[None], axis=2).mean() if len(x) > 1 else 0.0
    return float(to_truth - between / 2)


def log_score(probability: np.ndarray, outcome: np.ndarray) -> np.ndarray:
    """-log p(outcome) of binary events: ``probability`` (N,) of the event, ``outcome`` (N,) bool."""
    p = np.clip(np.asarray(probability, dtype=np.float64), CATEGORY_FLOOR, 1 - CATEGORY_FLOOR)
    return -np.log(np.where(np.asarray(outcome, dtype=bool), p, 1 - p))


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean Brier score of (N, K) class probabilities for (N,) labels in 0..K-1 (module doc: K = 2 convention)."""
    onehot = np.eye(probabilities.shape[1])[labels]
    if probabilities.shape[1] == 2:
        return float(((probabilities[:, 1] - onehot[:, 1]) ** 2).mean())
    return float(((probabilities - onehot) ** 2).sum(1).mean())


def reliability_curve(probabilities: np.ndarray, labels: np.ndarray, bins: int = RELIABILITY_BINS) -> dict:
    """Predicted against observed frequency in equal-width bins: of class 1 with two classes, else of the
    most probable class being right (confidence against accuracy). Empty bins are left out."""
    if probabilities.shape[1] == 2:
        predicted, observed, what = probabilities[:, 1], labels == 1, "P(class 1)"
    else:
        predicted, observed, what = probabilities.max(1), probabilities.argmax(1) == labels, "P(most probable class)"
    which = np.minimum((predicted * bins).astype(int), bins - 1)
    rows = [(float(predicted[which == b].mean()), float(observed[which == b].mean()), int((which == b).sum()))
            for b in range(bins) if (which == b).any()]
    return {"of": what, "predicted": [r[0] for r in rows], "observed": [r[1] for r in rows],
            "count": [r[2] for r in rows]}


def gaussian_sigma(levels, margins) -> float | None:
    """The sigma of a Gaussian whose central intervals match conformal margins around a point prediction:
    margin / Phi^-1((1 + p) / 2) at the widest calibrated level p; None without one."""
    calibrated = [(p, m) for p, m in zip(levels, margins) if m is not None and m > 0]
    if not calibrated:
        return None
    level, margin = max(calibrated)
    return float(margin / stats.norm.ppf((1 + level) / 2))
