"""Preprocessing, cache, splits, clinical encoding, torch datasets and the Lightning DataModule.

torch, Lightning and MONAI load only when the DataModule, Dataset or transforms are first used, so
``oncodiff preprocess`` and the geometry helpers stay light.
"""

from importlib import import_module

from oncodiff.data.clinical import ClinicalEncoder
from oncodiff.data.geometry import GeometryRecord, Grid, canonical_grid, crop_support, paste_back, paste_crops, sample
from oncodiff.data.intensity import IntensityTransform, fit_intensity, normalization_method
from oncodiff.data.labels import SurvivalClasses, patient_outcomes
from oncodiff.data.preprocess import (
    BaselineCrops, FollowUpCrops, PreprocessedCohort, SampleRecord, baseline_scan, crop_baseline, cut_followup,
    preprocess_cohort,
)
from oncodiff.data.registration import register
from oncodiff.data.splits import make_splits

_LAZY = {
    "CohortDataModule": "oncodiff.data.datamodule",
    "PairedDataset": "oncodiff.data.dataset",
    "SampleLabels": "oncodiff.data.dataset",
    "SeededSampler": "oncodiff.data.dataset",
    "augment": "oncodiff.data.transforms",
    "paired_augmentation": "oncodiff.data.transforms",
}

__all__ = [
    "BaselineCrops", "ClinicalEncoder", "FollowUpCrops", "GeometryRecord", "Grid", "IntensityTransform",
    "PreprocessedCohort", "SampleRecord", "SurvivalClasses", "baseline_scan", "canonical_grid",
    "crop_baseline", "crop_support", "cut_followup", "fit_intensity", "make_splits", "normalization_method",
    "paste_back", "paste_crops", "patient_outcomes", "preprocess_cohort", "register", "sample", *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'oncodiff.data' has no attribute {name!r}")
