"""Each method's predicted distribution under proper scoring rules (evaluation.proper_scores), on the test cases.

- Volume change: CRPS of the sampled relative changes; a one-prediction method (identity, the regression
  U-Net) is scored as the Gaussian around its prediction whose central intervals match its conformal
  margins from the validation split (proper_scores.gaussian_sigma), or as a point mass without margins.
- Response category (volume change <= evaluation.response_threshold): log score of P(response), from the
  samples as (k + 1/2) / (N + 1) (k of N samples say response; never 0 or 1), from the Gaussian, or not
  defined for a point mass.
- Class probabilities (the class prior): log loss, Brier score, AUC and a reliability curve, beside the
  training class rates.
- Image: mean per-voxel CRPS and the energy score inside the tumour box (baseline mask grown by
  evaluation.bbox_margin), in normalised intensity units; a one-prediction method's per-voxel CRPS is its
  absolute error (no per-voxel spread is predicted).
- Spread and skill inside the tumour box (methods with M >= 2 samples), pooled over the boxes' voxels of all
  cases: spread = RMS over voxels of the per-voxel sample standard deviation (ddof 1), skill = RMSE of the
  sample mean, and the spread-skill ratio sqrt((M + 1) / M) * spread / skill. For an ensemble whose members
  and the truth are exchangeable draws, E[(mean - y)^2] = (M + 1) / M * E[s^2] (Fortin et al. 2014, "Why
  should ensemble spread match the RMSE of the ensemble mean?"), so the ratio is 1 when the spread is honest,
  below 1 when the samples are too alike (overconfident), above 1 when too spread.
- Rank histogram inside the tumour box: the truth's rank among the M samples at each voxel (0 .. M: how many
  samples are below it, ties with the truth broken uniformly at random, fixed seed), counted over all voxels
  of all cases. Flat for a calibrated ensemble; a U (truth often outside every sample) for an overconfident
  one. Flatness: delta = sum_k (c_k - N / (M + 1))^2 / (N M / (M + 1)) (Candille & Talagrand 2005; about 1
  for independent draws of a flat histogram, larger for a less flat one; neighbouring voxels are not
  independent, so read it as a size, not a test), and the share of voxels whose truth lies outside the
  samples (rank 0 or M) beside its calibrated value 2 / (M + 1).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from oncodiff.arrays import spread_skill_ratio
from oncodiff.evaluation.metrics import bbox_mask
from oncodiff.evaluation.proper_scores import (
    brier_score, crps_ensemble, crps_gaussian, energy_score, gaussian_sigma, log_score, reliability_curve,
)
from oncodiff.pipeline.calibration import IntervalCalibration
from oncodiff.outcomes.class_prior import negative_log_likelihood


def volume_change_scores(change: np.ndarray, true: np.ndarray, threshold: float,
                         calibration: IntervalCalibration | None) -> dict:
    """CRPS (percentage points) and response-category log score of (B, N) predicted changes against (B,) true ones;
    cases with an undefined truth, or a sample without a defined change, are left out."""
    keep = np.isfinite(true) & np.isfinite(change).all(1)
    change, true = change[keep], true[keep]
    out: dict = {"n": int(keep.sum()), "n_undefined": int((~keep).sum())}
    if not len(true):
        return out | {"status": "not defined: no case with a measurable volume change"}
    responded = true <= threshold
    if change.shape[1] > 1:
        out["distribution"] = f"{change.shape[1]} samples"
        crps = crps_ensemble(change, true)
        p = ((change <= threshold).sum(1) + 0.5) / (change.shape[1] + 1)
    else:
        sigma = None if calibration is None else gaussian_sigma(calibration.levels, calibration.margins)
        mu = change[:, 0]
        if sigma is None:
            out["distribution"] = "point mass (no conformal margins)"
            return out | {"crps_pp": float(100 * np.abs(mu - true).mean()), "response_log_score": None}
        out["distribution"] = f"Gaussian, sigma {100 * sigma:.1f} pp from the conformal margins"
        crps = crps_gaussian(mu, sigma, true)
        p = stats.norm.cdf((threshold - mu) / sigma)
    return out | {"crps_pp": float(100 * crps.mean()), "response_log_score": float(log_score(p, responded).mean()),
                  "per_case_crps_pp": [float(100 * v) for v in crps]}


def in_tumour_scores(samples: np.ndarray, post: np.ndarray, tumor: np.ndarray, margin: int) -> dict:
    """Mean per-voxel CRPS, the MAE of the sample mean and the mean energy score inside each case's tumour box:
    (B, N, *S) samples, (B, *S) truth and baseline masks. ``per_case_crps`` and ``per_case_mae`` have one entry
    per case (None for a case without a baseline tumour, left out of the means)."""
    boxes = bbox_mask(tumor, margin, spatial_dims=post.ndim - 1)
    crps, mae, energy = [], [], []
    for sample, truth, box in zip(samples, post, boxes):
        if not box.any():
            crps.append(None)
            mae.append(None)
            continue
        inside, target = sample[:, box], truth[box]
        crps.append(float(crps_ensemble(np.moveaxis(inside, 0, -1), target).mean()))
        mae.append(float(np.abs(inside.mean(0) - target).mean()))
        energy.append(energy_score(inside, target))
    if not energy:
        return {"n": 0, "status": "not defined: no case has a baseline tumour"}
    defined = [v for v in crps if v is not None]
    return {"n": len(energy), "crps": float(np.mean(defined)),
            "mae_of_mean": float(np.mean([v for v in mae if v is not None])), "energy_score": float(np.mean(energy)),
            "per_case_crps": crps, "per_case_mae": mae}


def spread_skill(samples: np.ndarray, post: np.ndarray, tumor: np.ndarray, margin: int) -> dict:
    """The spread-skill ratio inside the tumour boxes (module docstring): (B, M, *S) samples, (B, *S) truth and
    baseline masks; pooled over every box voxel of every case, with the per-case ratios beside it."""
    m = samples.shape[1]
    if m < 2:
        return {"status": "not defined: one prediction per case, no spread"}
    boxes = bbox_mask(tumor, margin, spatial_dims=post.ndim - 1)
    variance, squared_error, per_case = [], [], []
    for sample, truth, box in zip(samples, post, boxes):
        if not box.any():
            continue
        inside = sample[:, box].astype(np.float64)
        variance.append(inside.var(0, ddof=1))
        squared_error.append((inside.mean(0) - truth[box]) ** 2)
        per_case.append(spread_skill_ratio(variance[-1].mean(), squared_error[-1].mean(), m))
    if not variance:
        return {"status": "not defined: no case has a baseline tumour"}
    spread, skill = np.concatenate(variance).mean(), np.concatenate(squared_error).mean()
    return {"samples": m, "n": len(per_case), "spread": float(np.sqrt(spread)), "rmse_of_mean": float(np.sqrt(skill)),
            "ratio": spread_skill_ratio(spread, skill, m), "per_case_ratio": per_case}


def rank_histogram(samples: np.ndarray, post: np.ndarray, tumor: np.ndarray, margin: int, seed: int = 0) -> dict:
    """The truth's rank among the M samples at every tumour-box voxel (module docstring): (B, M, *S) samples,
    (B, *S) truth and baseline masks -> counts of ranks 0 .. M, delta and the share outside the samples."""
    m = samples.shape[1]
    if m < 2:
        return {"status": "not defined: one prediction per case, no ensemble to rank the truth in"}
    boxes = bbox_mask(tumor, margin, spatial_dims=post.ndim - 1)
    rng = np.random.default_rng(seed)
    counts = np.zeros(m + 1, dtype=np.int64)
    for sample, truth, box in zip(samples, post, boxes):
        if not box.any():
            continue
        inside, target = sample[:, box], truth[box]
        below = (inside < target).sum(0)
        ties = (inside == target).sum(0)
        rank = below + np.floor(rng.random(len(target)) * (ties + 1)).astype(np.int64)
        counts += np.bincount(rank, minlength=m + 1)
    n = int(counts.sum())
    if not n:
        return {"status": "not defined: no case has a baseline tumour"}
    expected = n / (m + 1)
    return {"samples": m, "voxels": n, "counts": [int(c) for c in counts],
            "delta": float(((counts - expected) ** 2).sum() / (n * m / (m + 1))),
            "outside_share": float((counts[0] + counts[-1]) / n), "outside_share_calibrated": 2 / (m + 1)}


def class_probability_scores(probabilities: np.ndarray, labels: np.ndarray, rates: np.ndarray | None) -> dict:
    """Log loss, Brier score, accuracy of the most probable class, AUC (two classes) and the reliability
    curve of (N, K) ``probabilities`` for (N,) ``labels`` (< 0: unknown, left out), each beside the same
    score of the training class ``rates`` (K,) predicted for every case."""
    known = labels >= 0
    p, y = probabilities[known], labels[known].astype(int)
    out: dict = {"n": int(known.sum())}
    if not len(y):
        return out | {"status": "not scored: no case has a known class"}
    out |= _probability_scores(p, y)
    if rates is not None:
        base = _probability_scores(np.tile(np.asarray(rates, dtype=np.float64), (len(y), 1)), y)
        out |= {f"base_rate_{k}": v for k, v in base.items() if k != "reliability"}
    return out


def _probability_scores(p: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score

    out = {"log_loss": float(negative_log_likelihood(p, y).mean()), "brier": brier_score(p, y),
           "accuracy": float((p.argmax(1) == y).mean()), "reliability": reliability_curve(p, y)}
    if p.shape[1] == 2 and len(np.unique(y)) == 2:
        out["auc"] = float(roc_auc_score(y, p[:, 1]))
    return out
