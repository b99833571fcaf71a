"""Numpy arrays of one case ``(*S)`` or a batch ``(N, *S)``, and the Dice overlap of binary masks.

Low in the stack on purpose: training scores the tumour segmenter on its validation split with the
same Dice that evaluation reports, and neither may import the other.
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
