"""Bias-field correction of an MRI scan (N4, SimpleITK), with the statistics preprocessing records.

MRI intensities carry a smooth multiplicative bias field from the receive coils, different in every
session. N4 estimates it as a smooth log-field over the head (an Otsu foreground mask), on a copy
shrunk to about 8 mm voxels for speed, and divides it out at full resolution. The corrected scan
keeps the raw scan's overall scale: the field is rescaled to geometric mean 1 over the foreground,
so normalisation afterwards sees the same kind of numbers as without correction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from oncodiff.cohort.image import Image

FIT_SPACING_MM = 8.0  # N4 fits its field on a copy with voxels about this size
ITERATIONS = (25, 15, 10)  # per fitting level of N4's B-spline field


@dataclass(frozen=True)
class BiasStatistics:
    """The field N4 removed, over the foreground: spread of its log, and its gain range."""

    log_sd: float
    min_gain: float
    max_gain: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def bias_method(config, modality: str) -> str:
    """What ``data.bias_correction`` does for a cohort: n4 or none (auto: n4 for MRI, none for CT)."""
    if config.bias_correction == "auto":
        return "none" if modality == "CT" else "n4"
    return config.bias_correction


def correct_bias(image: Image) -> tuple[Image, BiasStatistics]:
    """(bias-corrected scan, statistics of the removed field). Needs intensities >= 0 (MRI).

    N4 runs on the scan turned to RAS axis order, so that how a scan is stored (flipped, transposed)
    does not change the result."""
    flips, order = _to_ras(image)
    canonical = np.flip(np.asarray(image.array, dtype=np.float32), flips).transpose(order)
    spacing = [float(image.spacing[a]) for a in order]
    log_field, foreground = _n4_log_field(canonical, spacing)
    if not foreground.any():
        foreground = np.ones_like(foreground)
    log_field = log_field - float(log_field[foreground].mean())
    inside = log_field[foreground]
    statistics = BiasStatistics(float(inside.std()), float(np.exp(inside.min())), float(np.exp(inside.max())))
    log_field = np.flip(log_field.transpose(np.argsort(order)), flips)
    return Image((np.asarray(image.array, dtype=np.float32) * np.exp(-log_field)).astype(np.float32),
                 image.affine), statistics


def _to_ras(image: Image) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(array axes to flip, then the axis order) that put a scan's axes in R, A, S order and direction."""
    orientation = nib.orientations.io_orientation(image.affine)[: image.ndim]
    flips = tuple(int(a) for a in np.flatnonzero(orientation[:, 1] < 0))
    return flips, tuple(int(a) for a in np.argsort(orientation[:, 0]))


def _n4_log_field(array: np.ndarray, spacing: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """(N4's log bias field, its Otsu foreground) of ``array``, both of its shape."""
    itk = sitk.GetImageFromArray(np.ascontiguousarray(np.clip(array, 0, None).T) + 1.0)  # N4 takes logs: > 0
    itk.SetSpacing(spacing)
    mask = sitk.OtsuThreshold(itk, 0, 1, 128)
    # about 8 mm voxels, but at least 4 along every axis of a small scan
    shrink = [max(1, min(int(round(FIT_SPACING_MM / s)), n // 4)) for s, n in zip(spacing, array.shape)]
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(list(ITERATIONS))
    corrector.Execute(sitk.Shrink(itk, shrink), sitk.Shrink(mask, shrink))
    log_field = sitk.GetArrayFromImage(corrector.GetLogBiasFieldAsImage(itk)).T
    return log_field, sitk.GetArrayFromImage(mask).T > 0
