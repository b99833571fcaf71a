"""Spread calibration of the sampled follow-ups: how far the samples of one class differ, fitted on validation.

Measured on every benchmark cohort, the samples of a case under one response class are near copies: their
spread in the tumour box is 0.1 to 0.2 of the error of their mean (benchmarks/README.md, distribution designs:
the denoiser ignores x_t, so the sampler's noise barely reaches the output), and no training design tried so far
changes that. Where the model cannot know the follow-up, a distribution that narrow is overconfident.

This module fits one factor ``k`` at the end of training (``oncodiff calibrate`` refits it) and ``predict``
applies it: each sample's deviation from the mean of the case's samples *of the same class* is multiplied by
``k``,

    x'_i = m_c(i) + k (x_i - m_c(i))          m_c: the mean of the case's samples drawn under class c,

so every class mean, and so the sample mean and its error, stays as drawn; only the spread within a class
changes (a class drawn once keeps its one sample). ``k`` is the value on a fixed grid that minimises the mean
per-voxel CRPS inside the tumour box (the baseline mask's bounding box grown by ``evaluation.bbox_margin``) on
the validation split's follow-ups, sampled as ``predict`` samples them: minimum-CRPS estimation of an ensemble's
spread (Gneiting, Raftery, Westveld & Goldman 2005), in its simplest form. ``k`` below 1 narrows an ensemble that
was too wide. The grid is coarse on purpose: a handful of validation follow-ups cannot pin ``k`` finely.

What it does not do: it adds no spread where the samples have none (the pattern of the spread is the model's;
only its size is fitted), it does not move any class's mean, and it is not a model of acquisition noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from oncodiff.arrays import bbox_mask, crps_ensemble, spread_skill_ratio

FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0)


def class_means(samples: np.ndarray, sample_classes: np.ndarray | None) -> np.ndarray:
    """(B, N, *S) samples -> (B, N, *S): for each sample, the mean of its case's samples of the same class
    (``sample_classes`` (B, N); None: one class, the case's mean)."""
    samples = np.asarray(samples)
    if sample_classes is None:
        return np.broadcast_to(samples.mean(axis=1, keepdims=True), samples.shape)
    classes = np.asarray(sample_classes)
    if classes.shape != samples.shape[:2]:
        raise ValueError(f"sample_classes {classes.shape} does not match samples {samples.shape[:2]}")
    means = np.empty(samples.shape, dtype=np.result_type(samples.dtype, np.float32))
    for b in range(samples.shape[0]):
        for c in np.unique(classes[b]):
            same = classes[b] == c
            means[b, same] = samples[b, same].mean(axis=0)
    return means


def scale_spread(samples: np.ndarray, sample_classes: np.ndarray | None, factor: float) -> np.ndarray:
    """``samples`` with each one's deviation from its class mean (:func:`class_means`) multiplied by ``factor``."""
    if factor < 0:
        raise ValueError(f"spread factor must be >= 0, got {factor}")
    if factor == 1.0:
        return samples
    means = class_means(samples, sample_classes)
    return (means + factor * (samples - means)).astype(samples.dtype, copy=False)


@dataclass(frozen=True)
class BoxSamples:
    """One case's samples inside its tumour box: ``samples`` (N, V), ``classes`` (N,) or None, ``truth`` (V,)."""

    samples: np.ndarray
    classes: np.ndarray | None
    truth: np.ndarray

    def scaled(self, factor: float) -> np.ndarray:
        """(N, V): the samples with :func:`scale_spread` applied."""
        return scale_spread(self.samples[None], None if self.classes is None else self.classes[None], factor)[0]


def box_samples(samples: np.ndarray, sample_classes: np.ndarray | None, post: np.ndarray, tumor: np.ndarray,
                margin: int) -> list[BoxSamples]:
    """Each case's tumour-box voxels: (B, N, *S) samples, (B, N) classes or None, (B, *S) truth and baseline masks;
    a case without a baseline tumour is left out."""
    boxes = bbox_mask(tumor, margin, spatial_dims=post.ndim - 1)
    out = []
    for b, box in enumerate(boxes):
        if box.any():
            out.append(BoxSamples(np.asarray(samples[b][:, box], dtype=np.float64),
                                  None if sample_classes is None else np.asarray(sample_classes[b]),
                                  np.asarray(post[b][box], dtype=np.float64)))
    return out


def box_crps(cases: Sequence[BoxSamples], factor: float) -> float:
    """Mean over cases of the mean per-voxel CRPS of the samples scaled by ``factor``."""
    return float(np.mean([crps_ensemble(case.scaled(factor).T, case.truth).mean() for case in cases]))


def box_spread_skill(cases: Sequence[BoxSamples], factor: float) -> float | None:
    """The spread-skill ratio of the scaled samples pooled over every box voxel (evaluation/distribution_scores.py's
    definition, with the finite-ensemble factor sqrt((M + 1) / M)); None with one sample or no error."""
    m = cases[0].samples.shape[0]
    if m < 2:
        return None
    variance, squared_error = [], []
    for case in cases:
        scaled = case.scaled(factor)
        variance.append(scaled.var(0, ddof=1))
        squared_error.append((scaled.mean(0) - case.truth) ** 2)
    return spread_skill_ratio(np.concatenate(variance).mean(), np.concatenate(squared_error).mean(), m)


@dataclass(frozen=True)
class SpreadCalibration:
    """The fitted factor and what it did on the cases it was fitted on."""

    factor: float
    n_cases: int
    n_samples: int
    split: str
    crps_raw: float
    crps_scaled: float
    spread_skill_raw: float | None
    spread_skill_scaled: float | None
    grid: dict[str, float]  # factor -> mean box CRPS

    @classmethod
    def fit(cls, cases: Sequence[BoxSamples], split: str,
            factors: Sequence[float] = FACTORS) -> SpreadCalibration | None:
        """The grid factor of least mean box CRPS on ``cases``; None without cases or with one sample each."""
        if not cases or cases[0].samples.shape[0] < 2:
            return None
        grid = {f"{f:g}": box_crps(cases, f) for f in factors}
        best = min(factors, key=lambda f: (grid[f"{f:g}"], abs(f - 1.0)))  # a tie keeps the samples as drawn
        return cls(factor=float(best), n_cases=len(cases), n_samples=int(cases[0].samples.shape[0]), split=split,
                   crps_raw=grid["1"] if "1" in grid else box_crps(cases, 1.0), crps_scaled=grid[f"{best:g}"],
                   spread_skill_raw=box_spread_skill(cases, 1.0), spread_skill_scaled=box_spread_skill(cases, best),
                   grid=grid)

    def describe(self) -> str:
        ratio = ("" if self.spread_skill_raw is None else
                 f", spread-skill {self.spread_skill_raw:.2f} -> {self.spread_skill_scaled:.2f}")
        return (f"spread calibration: each sample's deviation from its class mean x{self.factor:g} (tumour-box CRPS "
                f"{self.crps_raw:.4f} -> {self.crps_scaled:.4f}{ratio}; {self.n_cases} {self.split} crops with a "
                f"baseline tumour, {self.n_samples} samples each)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> SpreadCalibration:
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__})
