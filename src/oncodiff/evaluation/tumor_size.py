"""Tumour size on generated and true follow-ups: volumes, size change, "match", Dice, response.

Generated follow-ups have no masks, so the tumour is segmented on both the generated and the
true follow-up by one network (``models/segmenter.py: TumorSegmenter``), trained on (true follow-up -> follow-up
GTV) pairs of the training split; this follows the NAC breast paper, which trained nnU-Net on
ground-truth follow-ups and reported the size change from baseline and the "match" (generated
size / true size, Table 3). Our segmenter is a small MONAI U-Net instead of nnU-Net.

Masks are numpy, ``(*S)`` for one case or ``(N, *S)``; nonzero = tumour. ``spacing`` (mm per
axis) gives the number of spatial axes, so volumes are in mm^3 (3D) or mm^2 (2D).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from oncodiff.arrays import as_batch, dice

Value = float | None


def _spatial(mask: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, bool]:
    if len(spacing) not in (2, 3) or any(not s > 0 for s in spacing):
        raise ValueError(f"spacing must give 2 or 3 positive voxel sizes in mm, got {tuple(spacing)}")
    return as_batch(np.asarray(mask) != 0, len(spacing))


def volume(mask: np.ndarray, spacing: Sequence[float]):
    """Tumour volume in mm^3 (3D) or area in mm^2 (2D): voxel count x prod(spacing).

    mask ``(*S)`` -> float, or ``(N, *S)`` -> list (batched when it has one axis more than spacing).
    """
    mask_b, batched = _spatial(mask, spacing)
    voxel = float(np.prod(spacing))
    values = [float(np.count_nonzero(m)) * voxel for m in mask_b]
    return values if batched else values[0]


def relative_change(volume_after: float, volume_before: float) -> Value:
    """``(after - before) / before`` as a fraction; None when ``before`` is 0 (not defined)."""
    return None if volume_before == 0 else (volume_after - volume_before) / volume_before


def size_metrics(
    pred_mask: np.ndarray,
    true_mask: np.ndarray,
    baseline_mask: np.ndarray,
    spacing: Sequence[float],
    response_threshold: float = -0.20,
):
    """Size change, "match", Dice and response agreement of a predicted follow-up tumour.

    pred_mask: tumour on the generated follow-up; true_mask: on the true follow-up (ground truth,
    or the segmenter's output as in the NAC paper); baseline_mask: baseline GTV. Each ``(*S)`` (->
    dict) or ``(N, *S)`` (-> list of dicts); ``spacing`` in mm, one value per spatial axis.
    Keys (volumes in mm^3, or mm^2 in 2D):
      volume_baseline, volume_pred, volume_true;
      change_pred_pct, change_true_pct: 100 (V - V_baseline) / V_baseline (NAC Table 3 "size");
      change_error_pp: change_pred_pct - change_true_pct, in percentage points;
      match_pct: 100 V_pred / V_true (NAC Table 3 "match");
      dice: Dice of pred_mask and true_mask;
      response_pred, response_true: 1 when the change is <= response_threshold (a fraction; PULSAR
      -20 %), else 0; response_agree: 1 when they agree.
    Undefined values are None: changes and responses when V_baseline = 0, match when V_true = 0,
    Dice when both follow-up masks are empty.
    """
    shapes = {np.shape(pred_mask), np.shape(true_mask), np.shape(baseline_mask)}
    if len(shapes) != 1:
        raise ValueError(f"pred_mask, true_mask and baseline_mask must share one shape, got {sorted(shapes)}")
    volumes = [volume(m, spacing) for m in (baseline_mask, pred_mask, true_mask)]
    batched = isinstance(volumes[0], list)
    dices = dice(pred_mask, true_mask, spatial_dims=len(spacing))
    rows = [
        _size_row(base, pred, true, overlap, response_threshold)
        for base, pred, true, overlap in zip(*(v if batched else [v] for v in (*volumes, dices)))
    ]
    return rows if batched else rows[0]


def _size_row(v_base: float, v_pred: float, v_true: float, overlap: Value, threshold: float) -> dict[str, Value]:
    change_pred, change_true = relative_change(v_pred, v_base), relative_change(v_true, v_base)
    response_pred = None if change_pred is None else int(change_pred <= threshold)
    response_true = None if change_true is None else int(change_true <= threshold)
    both = change_pred is not None and change_true is not None
    return {
        "volume_baseline": v_base,
        "volume_pred": v_pred,
        "volume_true": v_true,
        "change_pred_pct": None if change_pred is None else 100.0 * change_pred,
        "change_true_pct": None if change_true is None else 100.0 * change_true,
        "change_error_pp": 100.0 * (change_pred - change_true) if both else None,
        "match_pct": None if v_true == 0 else 100.0 * v_pred / v_true,
        "dice": overlap,
        "response_pred": response_pred,
        "response_true": response_true,
        "response_agree": int(response_pred == response_true) if both else None,
    }
