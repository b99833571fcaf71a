"""Gaussian denoising of whole scans, and the choice of its strength on a training split.

Clinical follow-ups are noisy, and the noise of the baseline and of the follow-up are independent: a
prediction that copies the baseline's noise is penalised twice, and a model trained on raw pairs spends
its budget learning to denoise. Preprocessing therefore smooths every normalised scan with each sigma of
:data:`oncodiff.config.SMOOTHING_MM` (in mm, so anisotropic voxels are smoothed isotropically in space)
before it is cut into crops. Which sigma to use is chosen on a training split by
:func:`choose_smoothing`: the one whose smoothed baselines best match the follow-ups inside the
baseline tumour (mean absolute error). ``data.smoothing`` uses that choice for the model's input and
target, and ``oncodiff evaluate`` scores the smoothed baseline itself as the "denoised identity"
baseline.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from oncodiff.cohort.image import Image
from oncodiff.config import SMOOTHING_MM


def smoothed(image: Image, sigma_mm: float) -> Image:
    """``image`` smoothed by a Gaussian of ``sigma_mm`` in every spatial direction (same geometry)."""
    if sigma_mm <= 0:
        return image
    spacing = np.linalg.norm(np.asarray(image.affine)[:3, : image.ndim], axis=0)
    sigma_voxels = [sigma_mm / max(float(s), 1e-6) for s in spacing]
    array = ndimage.gaussian_filter(np.asarray(image.array, dtype=np.float32), sigma_voxels, mode="nearest")
    return Image(array, image.affine)


def in_tumor_errors(pre_smoothed: np.ndarray, post: np.ndarray, tumor_mask: np.ndarray) -> np.ndarray:
    """(G,) mean absolute error between each smoothed baseline and the follow-up inside the baseline tumour,
    pooled over samples: pre_smoothed (N, G, *S), post and tumor_mask (N, 1, *S). NaN without tumour voxels."""
    inside = np.asarray(tumor_mask[:, 0]) > 0
    count = int(inside.sum())
    if count == 0:
        return np.full(pre_smoothed.shape[1], np.nan)
    target = np.asarray(post[:, 0], dtype=np.float32)
    return np.array([np.abs(pre_smoothed[:, g] - target)[inside].sum() / count
                     for g in range(pre_smoothed.shape[1])])


def choose_smoothing(pre_smoothed: np.ndarray, post: np.ndarray, tumor_mask: np.ndarray) -> tuple[int, np.ndarray]:
    """The index into SMOOTHING_MM of the sigma with the lowest in-tumour error on these samples, and the
    errors (G,). No tumour voxels: index 0 (no smoothing)."""
    errors = in_tumor_errors(pre_smoothed, post, tumor_mask)
    return (0 if not np.isfinite(errors).any() else int(np.nanargmin(errors))), errors


def smoothing_index(setting: str | float, pre_smoothed: np.ndarray, post: np.ndarray,
                    tumor_mask: np.ndarray) -> tuple[int, str]:
    """``data.smoothing`` resolved on a training split's samples -> (index into SMOOTHING_MM, a sentence)."""
    if setting == "none":
        return 0, "data.smoothing=none: the model sees the scans as preprocessed"
    if setting != "auto":
        return SMOOTHING_MM.index(float(setting)), f"data.smoothing={float(setting):g} mm"
    index, errors = choose_smoothing(pre_smoothed, post, tumor_mask)
    listed = ", ".join(f"{s:g} mm {e:.4f}" for s, e in zip(SMOOTHING_MM, errors))
    return index, (f"data.smoothing=auto: sigma {SMOOTHING_MM[index]:g} mm, chosen on the training split "
                   f"(in-tumour MAE of the smoothed baseline against the follow-up: {listed})")

