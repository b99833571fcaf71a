"""Conformal calibration of the volume-change intervals.

The spread of a few DDIM samples is not a calibrated interval: the central 50 % / 90 % sample intervals
cover the true volume change in far fewer cases than their level says (``oncodiff evaluate`` reports the
coverage; docs/results.md has the measured figures). At the end
of ``oncodiff train`` the model samples the validation split as ``predict`` would (same sampler, sample
count and class marginalisation) and fits, per nominal level p, one additive margin by conformalised
quantile regression (Romano, Patterson & Candes, NeurIPS 2019):

    score_i = max(lo_i - y_i, y_i - hi_i)        lo_i, hi_i: the central p sample interval of case i
    margin  = the ceil((n + 1) p)-th smallest score          (n validation cases)

The calibrated interval is [lo - margin, hi + margin], its lower end clipped at a change of -100 %. If
the validation cases and a new case are exchangeable it covers the new case's true change with
probability >= p (marginally, over cases). A negative margin shrinks an interval that was too wide.
With too few validation cases for a level (ceil((n + 1) p) > n) no finite margin exists and that level
stays uncalibrated (None).

A small validation split (fewer follow-ups than the widest level needs: 9 for 90 %, :func:`minimum_cases`)
gets no 90 % interval that way. Then, with ``sampling.calibration_folds`` = K >= 2, training also fits K
models, each on the training split without one patient-grouped fold (:func:`patient_folds`), and scores
each fold's follow-ups with the model that never saw them. Those out-of-fold scores join the validation
scores, and the margin is the same conformal rank of the pooled n scores: cross-conformal calibration (Vovk
2015) in the form of CV+ (Barber, Candes, Ramdas & Tibshirani 2021) that applies the pooled margin around the
final model's interval instead of each fold model's. Each score is out of sample, so the margin is not biased
narrow by the model having seen the case; the final model is trained on more patients (and each fold model on
1/K of its budget, to keep the cost at about one more training), so its errors are if anything smaller than
the fold models' and the margins lean wide. CV+'s guarantee (coverage >= 1 - 2 alpha, near 1 - alpha in
practice) is for its own form; this one is approximate in the same way. For a chained stage (ControlNet or
latent diffusion over an earlier run) only the last stage is refitted per fold: the earlier stages saw the
fold's patients.

Follow-ups of one patient are not independent, so with several time points per patient the guarantee
is approximate. The margins hold for the sample count and mode they were fitted with; ``predict``
reports both with the calibrated intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

LEVELS = (0.5, 0.9)
MIN_CHANGE = -1.0  # relative volume change of a tumour that has gone


def sample_interval(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Central ``level`` interval of each row of ``samples`` (..., N): ``np.quantile``, linear interpolation."""
    low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=-1)
    return low, high


def valid_cases(samples: np.ndarray, truth: np.ndarray, min_samples: int = 1) -> tuple[np.ndarray, np.ndarray, int]:
    """The cases whose truth and every sample are finite, as float64, and how many were left out."""
    samples = np.asarray(samples, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if samples.ndim != 2 or truth.shape != (samples.shape[0],):
        shapes = (samples.shape, truth.shape)
        raise ValueError(f"expected samples (N_cases, N_samples) and truth (N_cases,), got {shapes[0]} and {shapes[1]}")
    if samples.shape[1] < min_samples:
        raise ValueError(f"need at least {min_samples} samples per case, got {samples.shape[1]}")
    keep = np.isfinite(truth) & np.isfinite(samples).all(axis=1)
    return samples[keep], truth[keep], int((~keep).sum())


def minimum_cases(levels: Sequence[float]) -> int:
    """The fewest scores that give every level a finite margin: the smallest n with ceil((n + 1) p) <= n."""
    n = 1
    while any(math.ceil((n + 1) * p) > n for p in levels):
        n += 1
    return n


def patient_folds(patients: Sequence[str], k: int, seed: int = 0) -> list[list[str]]:
    """``patients`` shuffled by ``seed`` and dealt into ``k`` folds of near-equal size (each patient in one fold);
    fewer folds when there are fewer patients."""
    order = [patients[i] for i in np.random.default_rng(seed).permutation(len(patients))]
    k = min(k, len(order))
    return [sorted(order[i::k]) for i in range(k)]


def conformal_margin(scores: np.ndarray, level: float) -> float | None:
    """The ceil((n + 1) level)-th smallest of n conformity scores; None when that exceeds n."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    rank = math.ceil((len(scores) + 1) * level)
    return None if rank > len(scores) or rank < 1 else float(scores[rank - 1])


@dataclass(frozen=True)
class IntervalCalibration:
    """Additive margins (relative-change units: 0.1 = 10 percentage points) per nominal level.

    ``mode``: how the validation split was sampled ("predicted": the outcome unknown, as ``predict`` samples
    without a class override; a class-conditioned model marginalises the class through its class prior);
    ``n_samples``: predictions per case (1 for a regression model); ``spread_factor``: the samples' spread
    calibration the margins were fitted under (oncodiff/pipeline/spread.py; 1 = the samples as drawn).
    """

    levels: tuple[float, ...]
    margins: tuple[float | None, ...]
    n_cases: int
    n_samples: int
    mode: str
    split: str = "val"
    spread_factor: float = 1.0

    @classmethod
    def fit(cls, change: np.ndarray, true: np.ndarray, n_samples: int, mode: str,
            levels: Sequence[float] = LEVELS, split: str = "val",
            spread_factor: float = 1.0) -> IntervalCalibration | None:
        """From (B, N) sampled changes and (B,) true changes; cases with a NaN are left out. None
        without any usable case. ``split``: where the cases come from, as describe() says it."""
        change, true, _ = valid_cases(change, true)
        if not len(true):
            return None
        margins = []
        for level in levels:
            low, high = sample_interval(change, level)
            margins.append(conformal_margin(np.maximum(low - true, true - high), level))
        return cls(tuple(float(p) for p in levels), tuple(margins), len(true), int(n_samples), mode, split,
                   float(spread_factor))

    def interval(self, change: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray] | None:
        """The calibrated central interval of (..., N) sampled changes; None for an uncalibrated level."""
        margin = self.margins[self.levels.index(level)] if level in self.levels else None
        if margin is None:
            return None
        low, high = sample_interval(change, level)
        # A tumour cannot shrink by more than 100 %: clipping there loses no coverage.
        return np.maximum(low - margin, MIN_CHANGE), high + margin

    def coverage(self, change: np.ndarray, true: np.ndarray) -> dict:
        """Empirical coverage of ``true`` (B,) by the calibrated intervals of ``change`` (B, N), and their
        mean width in percentage points, per level."""
        change, true, n_undefined = valid_cases(change, true)
        empirical, width = [], []
        for level in self.levels:
            bounds = self.interval(change, level) if len(true) else None
            if bounds is None:
                empirical.append(None)
                width.append(None)
                continue
            empirical.append(float(np.mean((bounds[0] <= true) & (true <= bounds[1]))))
            width.append(float(100 * np.mean(bounds[1] - bounds[0])))
        return {"nominal": list(self.levels), "empirical": empirical, "mean_width_pp": width,
                "n_cases": len(true), "n_undefined": n_undefined,
                "margins_pp": [None if m is None else 100 * m for m in self.margins]}

    def describe(self) -> str:
        margins = ", ".join(f"{round(100 * p)} %: " + ("none (too few cases)" if m is None else f"{100 * m:+.1f} pp")
                            for p, m in zip(self.levels, self.margins))
        samples = "1 prediction" if self.n_samples == 1 else f"{self.n_samples} samples"
        if self.spread_factor != 1.0:
            samples += f", spread x{self.spread_factor:g}"
        return f"conformal margins from {self.n_cases} {self.split} cases x {samples} ({self.mode} class): {margins}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> IntervalCalibration:
        return cls(tuple(raw["levels"]), tuple(raw["margins"]), int(raw["n_cases"]), int(raw["n_samples"]),
                   str(raw["mode"]), str(raw.get("split", "val")), float(raw.get("spread_factor", 1.0)))
