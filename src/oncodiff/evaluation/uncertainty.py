"""Is the spread of the samples honest? Interval coverage, calibration curve, spread-error correlation.

Each case has several generated samples (different seeds; PULSAR: agreement between seeds =
confidence), each giving a scalar such as the volume change in %. Inputs: ``samples (N_cases,
N_samples)`` and ``truth (N_cases,)``. A case whose truth or any sample is NaN (e.g. a volume
change with an empty baseline mask) is left out and counted in ``n_undefined``; nothing returns NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from oncodiff.pipeline.calibration import sample_interval, valid_cases

CALIBRATION_LEVELS = tuple(round(0.1 * k, 1) for k in range(1, 10))  # 0.1 .. 0.9


def coverage(
    samples: np.ndarray, truth: np.ndarray, levels: Sequence[float] = (0.5, 0.9)
) -> dict[str, list[float] | float | int | None]:
    """Empirical coverage of the truth by each case's central sample interval, per nominal level.

    For level p the interval is [q_{(1-p)/2}, q_{(1+p)/2}] of the case's samples (``np.quantile``,
    linear interpolation), closed at both ends. Returns ``{"nominal": levels, "empirical": fraction of
    cases covered per level (None when no case is valid), "n_cases", "n_undefined"}``. A calibrated
    model has empirical close to nominal; below nominal = overconfident.
    """
    levels = [float(p) for p in levels]
    if not levels or any(not 0.0 < p < 1.0 for p in levels):
        raise ValueError(f"levels must be fractions strictly between 0 and 1, got {levels}")
    samples, truth, n_undefined = valid_cases(samples, truth, min_samples=1)
    empirical: list[float | None] = []
    for p in levels:
        low, high = sample_interval(samples, p)
        empirical.append(float(np.mean((low <= truth) & (truth <= high))) if len(truth) else None)
    return {"nominal": levels, "empirical": empirical, "n_cases": len(truth), "n_undefined": n_undefined}


def calibration_curve(samples: np.ndarray, truth: np.ndarray, levels: Sequence[float] = CALIBRATION_LEVELS) -> dict:
    """Data for a calibration plot: :func:`coverage` at nominal levels 0.1, 0.2, ..., 0.9.

    Plot ``empirical`` against ``nominal`` with the diagonal as the ideal.
    """
    return coverage(samples, truth, levels)


def spread_error_correlation(samples: np.ndarray, truth: np.ndarray) -> dict[str, float | int | None]:
    """Do cases with more spread have larger errors? Pearson and Spearman correlation (scipy.stats).

    Per case: spread = sample standard deviation of the samples (ddof = 1); error = |mean of the
    samples - truth|. Returns ``{"pearson_r", "pearson_p", "spearman_rho", "spearman_p", "n_cases",
    "n_undefined"}``; correlations are None with fewer than 3 valid cases or when spread or error is
    constant (the correlation is not defined there).
    """
    samples, truth, n_undefined = valid_cases(samples, truth, min_samples=2)
    spread = samples.std(axis=1, ddof=1)
    error = np.abs(samples.mean(axis=1) - truth)
    out: dict[str, float | int | None] = dict.fromkeys(("pearson_r", "pearson_p", "spearman_rho", "spearman_p"))
    out.update(n_cases=len(truth), n_undefined=n_undefined)
    if len(truth) < 3 or np.ptp(spread) == 0 or np.ptp(error) == 0:
        return out
    pearson = stats.pearsonr(spread, error)
    spearman = stats.spearmanr(spread, error)
    out.update(
        pearson_r=float(pearson.statistic),
        pearson_p=float(pearson.pvalue),
        spearman_rho=float(spearman.statistic),
        spearman_p=float(spearman.pvalue),
    )
    return out
