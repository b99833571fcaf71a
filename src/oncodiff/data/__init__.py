"""Preprocessing, cache, splits, clinical encoding, torch datasets and the Lightning DataModule.

Heavy imports (torch, Lightning, MONAI) live in dataset.py, transforms.py and datamodule.py and load
on first use, so ``oncodiff preprocess`` and the geometry helpers stay light.
"""

from oncodiff.data.geometry import GeometryRecord, Grid, canonical_grid, crop_support, paste_back, sample
from oncodiff.data.intensity import IntensityTransform, fit_intensity, normalization_method
from oncodiff.data.preprocess import (
    BaselineCrops, FollowUpCrops, PreprocessedCohort, SampleRecord, baseline_scan, crop_baseline, cut_followup,
    preprocess_cohort,
)
from oncodiff.data.registration import register

__all__ = [
    "BaselineCrops", "FollowUpCrops", "GeometryRecord", "Grid", "IntensityTransform", "PreprocessedCohort",
    "SampleRecord", "baseline_scan", "canonical_grid", "crop_baseline", "crop_support", "cut_followup",
    "fit_intensity", "normalization_method", "paste_back", "preprocess_cohort", "register", "sample",
]
