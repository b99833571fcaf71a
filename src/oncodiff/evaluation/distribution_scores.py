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
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from oncodiff.evaluation.metrics import bbox_mask
from oncodiff.evaluation.proper_scores import (
    brier_score, crps_ensemble, crps_gaussian, energy_score, gaussian_sigma, log_score, reliability_curve,
)
from oncodiff.pipeline.calibration import IntervalCalibration
from oncodiff.pipeline.class_prior import negative_log_likelihood


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
    """Mean per-voxel CRPS and the mean energy score inside each case's tumour box: (B, N, *S) samples,
    (B, *S) truth and baseline masks."""
    boxes = bbox_mask(tumor, margin, spatial_dims=post.ndim - 1)
    crps, energy = [], []
    for sample, truth, box in zip(samples, post, boxes):
        if not box.any():
            continue
        inside, target = sample[:, box], truth[box]
        crps.append(float(crps_ensemble(np.moveaxis(inside, 0, -1), target).mean()))
        energy.append(energy_score(inside, target))
    if not crps:
        return {"n": 0, "status": "not defined: no case has a baseline tumour"}
    return {"n": len(crps), "crps": float(np.mean(crps)), "energy_score": float(np.mean(energy)),
            "per_case_crps": crps}


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
