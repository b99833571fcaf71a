"""Intensity normalisation of one scan, and its inverse for predictions.

Each scan is normalised by its OWN whole-scan statistics, before any crop: MRI intensities have no
absolute unit and drift between sessions, so a follow-up scaled by its own percentiles (or mean and
std) lands on the same scale as its baseline. CT keeps Hounsfield units, so one fixed window serves
every scan. A prediction on the baseline's crop is mapped back to scanner units with the
BASELINE's transform (the only one known at prediction time).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from oncodiff.config import DataConfig

METHODS = ("percentile", "zscore", "nonzero_zscore", "whitestripe", "tissue", "ct_window", "none")
STRIPE_QUANTILE = 0.05  # whitestripe: the stripe is the mode's quantile +- this
TISSUE_LEVEL = 0.4  # tissue: where the foreground's median (normal tissue) lands in [0, 1]


@dataclass(frozen=True)
class IntensityTransform:
    """``normalised = (raw - offset) / scale``, clipped to [0, 1] when ``clip``."""

    method: str
    offset: float
    scale: float
    clip: bool

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Raw scanner values -> normalised float32 (same shape)."""
        out = (np.asarray(raw, dtype=np.float32) - np.float32(self.offset)) / np.float32(self.scale)
        return np.clip(out, 0.0, 1.0) if self.clip else out

    def invert(self, normalised: np.ndarray) -> np.ndarray:
        """Normalised -> raw units. Values clipped by :meth:`apply` come back as the clip bounds."""
        return np.asarray(normalised, dtype=np.float32) * np.float32(self.scale) + np.float32(self.offset)

    def invert_difference(self, difference: np.ndarray) -> np.ndarray:
        """A normalised difference (a drift map, post - pre) -> raw units (no offset)."""
        return np.asarray(difference, dtype=np.float32) * np.float32(self.scale)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> IntensityTransform:
        return cls(method=str(raw["method"]), offset=float(raw["offset"]), scale=float(raw["scale"]),
                   clip=bool(raw["clip"]))


def normalization_method(config: DataConfig, modality: str) -> str:
    """The method ``data.normalization`` selects for a cohort; ``auto``: ct_window for CT, else percentile
    (chosen by benchmarks/preprocessing.py among percentile, nonzero_zscore and whitestripe)."""
    if config.normalization == "auto":
        return "ct_window" if modality == "CT" else "percentile"
    return config.normalization


def fit_intensity(array: np.ndarray, method: str, config: DataConfig) -> IntensityTransform:
    """The transform ``method`` fits to a whole scan ``array`` (any shape)."""
    values = np.asarray(array)
    if method == "percentile":
        low, high = np.percentile(values, config.percentiles)
        return IntensityTransform(method, float(low), _positive(high - low), clip=True)
    if method == "zscore":
        mean, std = values.mean(dtype=np.float64), values.std(dtype=np.float64)
        return IntensityTransform(method, float(mean), _positive(std), clip=False)
    if method == "nonzero_zscore":
        return _nonzero_zscore(values, config.percentiles)
    if method == "whitestripe":
        return _whitestripe(values)
    if method == "tissue":
        return _tissue(values, config.percentiles[0])
    if method == "ct_window":
        low, high = config.ct_window
        return IntensityTransform(method, float(low), _positive(high - low), clip=True)
    if method == "none":
        return IntensityTransform(method, 0.0, 1.0, clip=False)
    raise ValueError(f"unknown normalisation {method!r}; choose one of {', '.join(METHODS)}")


def foreground(values: np.ndarray) -> np.ndarray:
    """The voxels above the scan's Otsu threshold (the body), as a flat array; all voxels if that is empty.

    A scanner's offset makes air non-zero, so "nonzero" means "above the background mode" here."""
    from skimage.filters import threshold_otsu

    flat = np.asarray(values, dtype=np.float32).ravel()
    inside = flat[flat > threshold_otsu(flat)] if np.ptp(flat) > 0 else flat
    return inside if inside.size else flat


def _nonzero_zscore(values: np.ndarray, percentiles: tuple[float, float]) -> IntensityTransform:
    """Mean and std of the foreground, after clipping it to its ``percentiles`` (TaDiff)."""
    body = foreground(values)
    low, high = np.percentile(body, percentiles)
    clipped = np.clip(body, low, high)
    return IntensityTransform("nonzero_zscore", float(clipped.mean()), _positive(float(clipped.std())), clip=False)


def _whitestripe(values: np.ndarray) -> IntensityTransform:
    """WhiteStripe-like: the mode of the foreground's histogram (white matter on T1) is 0 and the spread
    of the voxels within +- 5 % quantile of it is 1 (Shinohara et al. 2014, as `intensity-normalization`).
    Unbounded: a bright tumour lands tens of units above 0, far from the [0, 1] the models expect."""
    from scipy import ndimage

    body = foreground(values)
    counts, edges = np.histogram(body, bins=256)
    smooth = ndimage.gaussian_filter1d(counts.astype(np.float64), 2.0)
    mode = float((edges[np.argmax(smooth)] + edges[np.argmax(smooth) + 1]) / 2)
    rank = float((body < mode).mean())
    low, high = np.quantile(body, [max(rank - STRIPE_QUANTILE, 0.0), min(rank + STRIPE_QUANTILE, 1.0)])
    stripe = body[(body >= low) & (body <= high)]
    return IntensityTransform("whitestripe", mode, _positive(float(stripe.std()) if stripe.size > 1 else 0.0),
                              clip=False)


def _tissue(values: np.ndarray, low_percentile: float) -> IntensityTransform:
    """Tissue-referenced, in [0, 1]: the scan's low percentile (air) is 0 and the median of the foreground
    (the body above Otsu's threshold) is TISSUE_LEVEL, so up to 2.5 times that height above air fits before the
    clip. Unlike the top percentile, neither anchor moves much when the tumour (often the brightest tissue)
    shrinks, grows or is flattened by N4: a lesion of f % of the body moves the median's rank by at most f %.
    The median, not the histogram's mode: where two tissues are about as common (grey and white matter), a
    lesion that displaces one of them flips the mode from one to the other."""
    low = float(np.percentile(values, low_percentile))
    middle = float(np.median(foreground(values)))
    return IntensityTransform("tissue", low, _positive((middle - low) / TISSUE_LEVEL), clip=True)


def _positive(scale: float) -> float:
    # A constant scan has no spread; scale 1 keeps it finite instead of dividing by zero.
    return float(scale) if scale > 1e-12 else 1.0
