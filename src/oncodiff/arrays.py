"""Numpy arrays of one case ``(*S)`` or a batch ``(N, *S)``: the Dice overlap of binary masks, the tumour's
bounding box, the CRPS of an ensemble and its spread-skill ratio.

Low in the stack on purpose: training scores the tumour segmenter on its validation split with the
same Dice that evaluation reports, and prediction fits its spread calibration (pipeline/spread.py) with the
same tumour box, CRPS and spread-skill ratio that evaluation scores; neither may import evaluation.
"""

from __future__ import annotations

import numpy as np

Value = float | None


def as_batch(array: np.ndarray, spatial_dims: int | None = None) -> tuple[np.ndarray, bool]:
    """``(*spatial)`` or ``(N, *spatial)`` -> ``((N, *spatial) float64, was_batched)``.

    ``spatial_dims=None`` reads the array as one case (``spatial_dims = array.ndim``).
    """
    array = np.asarray(array)
    dims = array.ndim if spatial_dims is None else spatial_dims
    if dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {dims} (array shape {array.shape})")
    if array.ndim == dims:
        return array[None].astype(np.float64, copy=False), False
    if array.ndim == dims + 1:
        return array.astype(np.float64, copy=False), True
    raise ValueError(
        f"expected an array of shape (*spatial) or (N, *spatial) with {dims} spatial axes, got shape {array.shape}"
    )


def dice(pred_mask: np.ndarray, true_mask: np.ndarray, spatial_dims: int | None = None):
    """Dice overlap ``2 |P & T| / (|P| + |T|)`` of binary masks (nonzero = inside).

    ``(*S)`` -> float; with ``spatial_dims``, ``(N, *S)`` -> list. None when both masks are empty
    (overlap is not defined there; counted as undefined by ``MetricTable``).
    """
    if np.shape(pred_mask) != np.shape(true_mask):
        raise ValueError(f"masks differ in shape: {np.shape(pred_mask)} and {np.shape(true_mask)}")
    pred_b, batched = as_batch(np.asarray(pred_mask) != 0, spatial_dims)
    true_b, _ = as_batch(np.asarray(true_mask) != 0, spatial_dims)
    values: list[Value] = []
    for p, t in zip(pred_b != 0, true_b != 0):
        total = int(p.sum() + t.sum())
        values.append(2.0 * int((p & t).sum()) / total if total else None)
    return values if batched else values[0]


def bbox_mask(mask: np.ndarray, margin: int, spatial_dims: int | None = None) -> np.ndarray:
    """Boolean mask of the bounding box of ``mask != 0`` grown by ``margin`` voxels per side.

    The box is clipped to the image. An empty mask gives an empty box. ``(*S)`` or ``(N, *S)`` in, same out.
    """
    if margin < 0:
        raise ValueError(f"bbox margin must be >= 0 voxels, got {margin}")
    mask_b, batched = as_batch(mask, spatial_dims)
    boxes = np.zeros(mask_b.shape, dtype=bool)
    for box, case in zip(boxes, mask_b != 0):
        where = np.nonzero(case)
        if len(where[0]) == 0:
            continue
        box[tuple(slice(max(int(w.min()) - margin, 0), int(w.max()) + margin + 1) for w in where)] = True
    return boxes if batched else boxes[0]


def crps_ensemble(samples: np.ndarray, y: np.ndarray) -> np.ndarray:
    """CRPS of the empirical distribution of ``samples`` (..., N) at ``y`` (...), exact, O(N log N).

    mean|X - X'| over all N^2 ordered pairs is (2 / N^2) sum_i (2i - N - 1) x_(i) for the sorted samples.
    """
    x = np.sort(np.asarray(samples, dtype=np.float64), axis=-1)
    y = np.asarray(y, dtype=np.float64)
    n = x.shape[-1]
    weights = 2 * np.arange(1, n + 1) - n - 1
    spread = 2 * (x * weights).sum(-1) / n**2
    return np.abs(x - y[..., None]).mean(-1) - spread / 2


def spread_skill_ratio(variance: float, squared_error: float, m: int) -> float | None:
    """sqrt((M + 1) / M x mean sample variance / mean squared error of the sample mean) for M samples: 1 when the
    truth behaves like one more sample (the finite-ensemble factor makes an honest ensemble of M score 1); None
    without error."""
    return float(np.sqrt((m + 1) / m * variance / squared_error)) if squared_error > 0 else None
