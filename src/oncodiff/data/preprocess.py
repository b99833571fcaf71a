"""Preprocess a cohort into paired samples: orient, resample, correct bias, normalise, register, crop; cached.

For each (baseline, follow-up) pair of each lesion:
1. the baseline's preprocessed grid: RAS orientation, resampled to ``data.spacing`` (geometry.py);
   a follow-up (whatever its own grid, e.g. thick slices) is sampled onto it in step 5;
2. MRI scans are bias-field corrected with N4 (bias.py, ``data.bias_correction``);
3. each scan is normalised by its own whole-scan statistics (intensity.py);
4. the follow-up is registered to the baseline (registration.py, ``data.registration``; auto
   measures the misalignment and registers when it exceeds ``data.registration_threshold_mm``); its
   masks follow the same transform with nearest-neighbour interpolation;
5. crops centred on the baseline tumour, or its bounding box, or 2D slices / MIPs (crop.py);
6. every scan is sampled on each crop in one interpolation, and a :class:`SampleRecord` keeps what
   :func:`oncodiff.data.geometry.paste_back` needs to put a prediction back into the baseline scan.
The cohort is validated first and never written to; results are cached (cache.py).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from oncodiff.cohort import Cohort, CohortSpec, Image, load_cohort, read_image
from oncodiff.config import SMOOTHING_MM, DataConfig
from oncodiff.data import cache
from oncodiff.data.bias import bias_method, correct_bias
from oncodiff.data.clinical import is_missing
from oncodiff.data.crop import Crop, plan_crops
from oncodiff.data.denoise import smoothed
from oncodiff.data.geometry import GeometryRecord, canonical_grid, nearest_on_grid, sample
from oncodiff.data.intensity import IntensityTransform, fit_intensity, normalization_method
from oncodiff.data.parallel import run_jobs
from oncodiff.data.registration import measure_misalignment, misalignment_summary, register
from oncodiff.errors import ConfigError, OncodiffError
from oncodiff.outputs import reads_cohort

ARRAY_KEYS = ("pre", "post", "tumor_mask", "post_mask", "anatomy", "pre_smoothed", "post_smoothed")
SMOOTHED_KEYS = ("pre_smoothed", "post_smoothed")
# data.inputs=prior: the K latest earlier scans of each target's lesion, the baseline's other sequences (Q) and each
# prior scan's own other sequences (K x Q, slot-major), all registered to the baseline and cut on its crops. Absent
# slots are zeros, flagged by prior_days = NaN, sequence_present = 0 and prior_sequence_present = 0.
PRIOR_KEYS = ("priors", "prior_masks", "prior_days", "sequences", "sequence_present", "prior_sequences",
              "prior_sequence_present")
# each sample's follow-up's own other sequences (Q), so that predict can make it the prior of a later day
FOLLOWUP_SEQUENCE_KEYS = ("post_sequences", "post_sequence_present")


@dataclass(frozen=True, eq=False)
class SampleRecord:
    """Where one sample came from and how to map a prediction on it back to the baseline scan.

    ``registration``: 4x4 map on RAS mm, baseline point -> follow-up point (identity without
    registration). ``pre_intensity`` inverts a predicted image or drift to the baseline's units (bias
    corrected, when N4 ran). ``steps``: what was done to the two scans: ``pre_bias`` / ``post_bias``
    (statistics of the field N4 removed, or None), ``misalignment_mm`` (measured by
    ``data.registration=auto``, else None) and ``registration`` (none, rigid or affine: what was applied).
    """

    patient_id: str
    lesion_id: str
    timepoint: str
    days: float
    baseline_image: str
    followup_image: str
    has_post_mask: bool
    geometry: GeometryRecord
    pre_intensity: IntensityTransform
    post_intensity: IntensityTransform
    registration: np.ndarray
    steps: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("patient_id", "lesion_id", "timepoint", "days", "baseline_image",
                                             "followup_image", "has_post_mask")}
        out["steps"] = dict(self.steps)
        out.update(geometry=self.geometry.to_dict(), pre_intensity=self.pre_intensity.to_dict(),
                   post_intensity=self.post_intensity.to_dict(), registration=self.registration.tolist())
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SampleRecord:
        return cls(
            patient_id=str(raw["patient_id"]), lesion_id=str(raw["lesion_id"]), timepoint=str(raw["timepoint"]),
            days=float(raw["days"]), baseline_image=str(raw["baseline_image"]),
            followup_image=str(raw["followup_image"]), has_post_mask=bool(raw["has_post_mask"]),
            geometry=GeometryRecord.from_dict(raw["geometry"]),
            pre_intensity=IntensityTransform.from_dict(raw["pre_intensity"]),
            post_intensity=IntensityTransform.from_dict(raw["post_intensity"]),
            registration=np.asarray(raw["registration"], dtype=np.float64), steps=dict(raw.get("steps", {})),
        )


@dataclass(frozen=True, eq=False)
class PreprocessedCohort:
    """All samples of a cohort, in memory. N samples, A = len(spec.anatomy), S = crop_size:

    arrays: pre, post (N, 1, *S) float32 normalised; tumor_mask, post_mask (N, 1, *S) uint8;
    anatomy (N, A, *S) float32 (label values kept); pre_smoothed, post_smoothed (N, G, *S) float32: pre and post
    cut from the scan smoothed by each sigma of SMOOTHING_MM (denoise.py; index 0 is unsmoothed). With data.inputs=prior
    (K = data.max_priors, Q = the cohort's non-primary sequences): priors (N, K, *S) float32 and prior_masks (N, K, *S)
    uint8, the latest earlier scans of the target's lesion (oldest first) registered to the baseline, each normalised by
    its own statistics; prior_days (N, K) float32, NaN in an empty slot; sequences (N, Q, *S) float32, the baseline's
    other sequences registered to it; sequence_present (N, Q) uint8 (0: missing, the channel is zeros);
    prior_sequences (N, K Q, *S) float32 and prior_sequence_present (N, K Q) uint8, each prior slot's own other
    sequences (slot-major: slot k's sequence q at k Q + q), registered to the baseline, zeros and 0 in an empty slot
    or for a missing sequence; post_sequences (N, Q, *S) and post_sequence_present (N, Q), the follow-up's own (what
    it brings as a prior of a later day). ``records[i]`` describes sample i. ``cohort``: the
    validated cohort's tables (patients.csv for clinical values and outcomes).
    """

    cohort: Cohort
    arrays: Mapping[str, np.ndarray]
    records: tuple[SampleRecord, ...]
    cache_path: Path
    cache_hit: bool
    normalization: str
    warnings: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.records)

    @property
    def root(self) -> Path:
        return self.cohort.root

    @property
    def spec(self) -> CohortSpec:
        return self.cohort.spec

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.arrays["pre"].shape[2:])

    def __str__(self) -> str:
        shape = "x".join(str(s) for s in self.spatial_shape)
        patients = len({r.patient_id for r in self.records})
        how = "cache hit, nothing recomputed" if self.cache_hit else "computed and cached"
        lines = [
            f"{self.spec.name}: {len(self)} samples from {patients} patients, {len(self.spatial_shape)}D crops "
            f"of {shape} voxels, {self.normalization} normalisation",
            f"cache: {self.cache_path} ({how})",
            self.steps_summary(),
        ]
        note = self.misalignment_summary() if self.cache_hit else None  # computed: preprocess_cohort printed it
        return "\n".join(lines + [f"warning: {w}" for w in self.warnings] + ([f"note: {note}"] if note else []))

    def misalignment_summary(self) -> str | None:
        """One line for the follow-ups that ``data.registration=auto`` measured as misaligned and registered,
        or None when it registered none."""
        pairs = {(r.patient_id, r.lesion_id, r.timepoint): r.steps for r in self.records}
        moved = [s["misalignment_mm"] for s in pairs.values()
                 if s.get("misalignment_mm") is not None and s.get("registration", "none") != "none"]
        return misalignment_summary(moved, len(pairs), "looked", "preprocessing registered them "
                                    f"(data.registration=auto); `oncodiff validate --details {self.root}` lists them")

    def steps_summary(self) -> str:
        """One line: how many follow-ups were bias-corrected and registered (pairs, not crops)."""
        pairs = {(r.patient_id, r.lesion_id, r.timepoint): r.steps for r in self.records}
        registered = sum(s.get("registration", "none") != "none" for s in pairs.values())
        corrected = sum(s.get("post_bias") is not None for s in pairs.values())
        return (f"steps: N4 bias correction on {corrected} of {len(pairs)} follow-ups (and their baselines), "
                f"{registered} registered to their baseline")


@reads_cohort("preprocess", argument="cohort_root")
def preprocess_cohort(
    cohort_root: str | Path, data_config: DataConfig, cache_dir: str | Path | None = None
) -> PreprocessedCohort:
    """Validate a cohort, then preprocess every (baseline, follow-up) pair, or read them from the cache.

    Raises CohortError (every problem) before anything is written when the cohort is invalid, and
    ConfigError when the options do not fit the cohort (e.g. 2D crops of a 3D cohort without data.slices).
    """
    root = Path(cohort_root).resolve()
    cohort = load_cohort(root)  # raises CohortError with every problem before anything is written
    _check_options(cohort, data_config)
    directory = cache.resolve_cache_dir(cache_dir, data_config, root)
    path = cache.entry_path(directory, cohort, cache.cache_key(cohort, data_config))
    entry = cache.read_entry(path)
    if entry is not None:
        arrays, metadata = entry
        return _result(cohort, arrays, metadata, path, cache_hit=True)
    arrays, metadata = _preprocess(cohort, data_config)
    cache.write_entry(path, arrays, metadata)
    result = _result(cohort, arrays, metadata, path, cache_hit=False)
    note = result.misalignment_summary()
    if note:  # once, when computed: train, predict and evaluate print one line, not one per follow-up
        print(f"note: {note}", file=sys.stderr, flush=True)
    return result


def write_preprocessing_report(preprocessed: PreprocessedCohort, path: str | Path) -> Path:
    """Write what preprocessing did to each (baseline, follow-up) pair as JSON: the cache entry, and per
    pair the bias fields N4 removed, both scans' normalisation, the measured misalignment and the
    registration applied (4x4, baseline point -> follow-up point, RAS mm)."""
    pairs = {}
    for record in preprocessed.records:  # a pair cut into several crops appears once
        pairs.setdefault((record.patient_id, record.lesion_id, record.timepoint), {
            **{k: getattr(record, k) for k in ("patient_id", "lesion_id", "timepoint", "baseline_image",
                                               "followup_image")},
            "pre_intensity": record.pre_intensity.to_dict(), "post_intensity": record.post_intensity.to_dict(),
            "registration": record.registration.tolist(), **dict(record.steps)})
    report = {"cohort": str(preprocessed.root), "cache": str(preprocessed.cache_path),
              "normalization": preprocessed.normalization, "pairs": list(pairs.values())}
    path = Path(path)
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return path


def baseline_scan(cohort_root: str | Path, baseline_image: str, geometry: GeometryRecord) -> Image:
    """The baseline scan ``baseline_image`` (relative to the cohort's image root: format 2's ``root``, else the
    cohort folder) in the original geometry of a sample's ``geometry`` (for a MIP sample, the scan's maximum
    projection), raw units: the background that a predicted image is pasted into."""
    image = read_image(load_cohort(cohort_root, validate=False).path(baseline_image))
    axis = geometry.projection_axis
    if axis is None:
        return image
    return Image(image.array.max(axis=axis), geometry.original_affine)


@dataclass(frozen=True, eq=False)
class BaselineCrops:
    """One baseline scan cut into its crops: what a prediction needs when there is no follow-up.

    ``pre`` (K, 1, *S) float32, ``tumor_mask`` (K, 1, *S) uint8, ``anatomy`` (K, A, *S) float32 for the
    K crops (K > 1 for tumour slices); ``pre_smoothed`` (K, G, *S): ``pre`` cut from the scan smoothed by each
    sigma of SMOOTHING_MM. ``normalised``: the whole scan after normalisation.
    """

    crops: tuple[Crop, ...]
    intensity: IntensityTransform
    normalised: Image
    pre: np.ndarray
    tumor_mask: np.ndarray
    anatomy: np.ndarray
    pre_smoothed: np.ndarray
    bias: dict | None = None  # statistics of the field N4 removed; None: not corrected


def read_corrected(cohort: Cohort, relative: str, config: DataConfig) -> tuple[Image, dict | None]:
    """A scan of the cohort, bias-field corrected when ``data.bias_correction`` asks: (image, N4 statistics
    or None)."""
    image = read_image(cohort.path(relative))
    if bias_method(config, cohort.spec.modality) != "n4":
        return image, None
    try:
        corrected, statistics = correct_bias(image)
    except RuntimeError as error:  # SimpleITK's: an error line naming the scan, not a traceback
        raise OncodiffError(f"{cohort.path(relative)}: N4 bias-field correction failed ({_itk_reason(error)}); check "
                            "the scan's size and voxel size, or set data.bias_correction=none") from None
    return corrected, statistics.to_dict()


def _itk_reason(error: RuntimeError) -> str:
    """The last line of a SimpleITK exception (its first names a C++ source file)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def crop_baseline(cohort: Cohort, baseline: Mapping[str, Any], config: DataConfig) -> BaselineCrops:
    """Cut one baseline scan (a scans.csv row: image, tumor_mask, anatomy:NAME) into its crops."""
    image, bias = read_corrected(cohort, baseline["image"], config)
    method = normalization_method(config, cohort.spec.modality)
    intensity = fit_intensity(image.array, method, config)
    normalised = Image(intensity.apply(image.array), image.affine)
    tumor = cohort.tumor(baseline)  # a binary mask, or the union of the tumour labels of a label map
    grid = canonical_grid(image, config.spacing)
    crops = tuple(plan_crops(grid, nearest_on_grid(tumor.array, tumor.affine, grid), image.affine, image.shape, config))
    background = float(intensity.apply(np.min(image.array)))
    pre = [_cut(normalised, crop, order=1, cval=background) for crop in crops]
    masks = [_cut(tumor, crop, order=0) > 0 for crop in crops]
    anatomy = [_cut_anatomy(cohort, baseline, crop) for crop in crops]
    size = tuple(config.crop_size)
    return BaselineCrops(
        crops=crops, intensity=intensity, normalised=normalised,
        pre=_stack(pre, (1, *size), np.float32), tumor_mask=_stack(masks, (1, *size), np.uint8),
        anatomy=_stack(anatomy, (len(cohort.spec.anatomy), *size), np.float32, channels_first=True),
        pre_smoothed=_smoothed_cuts(normalised, crops, size, background), bias=bias,
    )


def _smoothed_cuts(normalised: Image, crops: tuple[Crop, ...], size: tuple[int, ...], background: float,
                   world_map: np.ndarray | None = None) -> np.ndarray:
    """(K, G, *S): the scan smoothed by each sigma of SMOOTHING_MM, sampled on each crop."""
    if not crops:
        return np.zeros((0, len(SMOOTHING_MM), *size), np.float32)
    per_sigma = []
    for sigma in SMOOTHING_MM:
        scan = smoothed(normalised, sigma)
        per_sigma.append(np.stack([_cut(scan, crop, 1, background, world_map) for crop in crops]))
    return np.stack(per_sigma, axis=1).astype(np.float32)


def _cut(image: Image, crop: Crop, order: int, cval: float = 0.0, world_map: np.ndarray | None = None) -> np.ndarray:
    values = sample(image.array, image.affine, crop.grid, order=order, cval=cval, world_map=world_map)
    return values.max(axis=-1) if crop.project else values


def _cut_anatomy(cohort: Cohort, baseline: Mapping[str, Any], crop: Crop) -> np.ndarray:
    """(A, *S): one channel per anatomy name; zeros where the baseline has no such mask."""
    channels = []
    for column in cohort.spec.anatomy_columns():
        relative = baseline.get(column)
        if is_missing(relative):
            channels.append(np.zeros(crop.geometry.crop_shape, np.float32))
        else:
            channels.append(_cut(read_image(cohort.path(relative)), crop, order=0))
    return np.stack(channels) if channels else np.zeros((0, *crop.geometry.crop_shape), np.float32)


def _stack(items: list[np.ndarray], item_shape: tuple[int, ...], dtype, channels_first: bool = False) -> np.ndarray:
    if not items:
        return np.zeros((0, *item_shape), dtype)
    stacked = np.stack(items).astype(dtype)
    return stacked if channels_first else stacked[:, None]


@dataclass(frozen=True, eq=False)
class FollowUpCrops:
    """One follow-up scan sampled on its baseline's K crops: ``post`` (K, 1, *S) float32 normalised by the
    follow-up's own statistics, ``post_mask`` (K, 1, *S) uint8 (zeros when the row has no mask),
    ``post_smoothed`` (K, G, *S) as ``post`` from the scan smoothed by each sigma of SMOOTHING_MM."""

    pre_intensity: IntensityTransform
    post_intensity: IntensityTransform
    registration: np.ndarray
    post: np.ndarray
    post_mask: np.ndarray
    has_post_mask: bool
    post_smoothed: np.ndarray
    steps: Mapping[str, Any] = field(default_factory=dict)  # as SampleRecord.steps


def register_followup(baseline: Image, followup: Image, config: DataConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """(4x4 map baseline point -> follow-up point, {"misalignment_mm", "registration"}) by ``data.registration``."""
    kind, measured = config.registration, None
    if kind == "auto":
        measured, _ = measure_misalignment(baseline, followup)
        kind = "rigid" if measured > config.registration_threshold_mm else "none"
    world_map = np.eye(4) if kind == "none" else register(baseline, followup, kind)
    return world_map, {"misalignment_mm": measured, "registration": kind}


def cut_followup(cohort: Cohort, row: Mapping[str, Any], baseline: BaselineCrops, config: DataConfig) -> FollowUpCrops:
    """Sample one follow-up scan (a scans.csv row) on the crops of its baseline, bias-corrected and
    registered first when ``data.bias_correction`` and ``data.registration`` ask. post / post_mask: (K, 1, *S)."""
    image, bias = read_corrected(cohort, row["image"], config)
    intensity = fit_intensity(image.array, baseline.intensity.method, config)
    normalised = Image(intensity.apply(image.array), image.affine)
    try:
        world_map, steps = register_followup(baseline.normalised, normalised, config)
    except RuntimeError as error:  # SimpleITK's: an error line naming the scan, not a traceback
        raise OncodiffError(f"{cohort.path(row['image'])}: registration to its baseline scan failed "
                            f"({_itk_reason(error)}); check both scans' size and voxel size, or set "
                            "data.registration=none") from None
    background = float(intensity.apply(np.min(image.array)))
    post = [_cut(normalised, crop, 1, background, world_map) for crop in baseline.crops]
    mask = cohort.tumor(row)
    has_mask = mask is not None
    if has_mask:
        masks = [_cut(mask, crop, 0, 0.0, world_map) > 0 for crop in baseline.crops]
    else:
        masks = [np.zeros(crop.geometry.crop_shape, bool) for crop in baseline.crops]
    size = (1, *config.crop_size)
    smoothed_post = _smoothed_cuts(normalised, baseline.crops, tuple(config.crop_size), background, world_map)
    return FollowUpCrops(baseline.intensity, intensity, world_map, _stack(post, size, np.float32),
                         _stack(masks, size, np.uint8), has_mask, smoothed_post,
                         {"pre_bias": baseline.bias, "post_bias": bias, **steps})


def _preprocess(cohort: Cohort, config: DataConfig) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every pair of the cohort -> (arrays as in PreprocessedCohort, metadata with records and warnings).

    Lesions are the unit of work: each runs in :func:`_preprocess_lesion`, single-threaded, on
    ``data.preprocess_workers`` local processes or the Dask cluster at ``data.scheduler`` (parallel.py), and
    the results are put together in the cohort's order, so the arrays do not depend on how many ran at once.
    data.inputs=prior adds PRIOR_KEYS: each target's earlier scans (each follow-up is cut once, whether target or
    prior), the baseline's other sequences and each earlier scan's own (FOLLOWUP_SEQUENCE_KEYS)."""
    lesions = [(patient, lesion, rows) for (patient, lesion), rows
               in cohort.pairs().groupby(["patient_id", "lesion_id"], sort=False)]
    jobs = [(cohort, config, patient, lesion, rows) for patient, lesion, rows in lesions]
    results = run_jobs(_preprocess_lesion, jobs, config.preprocess_workers, config.scheduler,
                       progress=lambda done, total: _progress(done, total, cohort.spec.name))
    parts: dict[str, list[np.ndarray]] = {key: [] for key in ARRAY_KEYS + PRIOR_KEYS + FOLLOWUP_SEQUENCE_KEYS}
    records: list[dict[str, Any]] = []
    warnings: list[str] = []
    for lesion_parts, lesion_records, lesion_warnings in results:
        for key in parts:
            parts[key].extend(lesion_parts[key])
        records.extend(lesion_records)
        warnings.extend(lesion_warnings)
    arrays = {key: _concatenate(parts[key], key, cohort, config) for key in ARRAY_KEYS}
    arrays |= _concatenate_priors(parts, cohort, config)
    metadata = {"version": cache.CACHE_VERSION, "normalization": normalization_method(config, cohort.spec.modality),
                "records": records, "warnings": warnings}
    return arrays, metadata


def _preprocess_lesion(cohort: Cohort, config: DataConfig, patient: str, lesion: str, rows: pd.DataFrame):
    """One lesion's pairs (its rows of ``cohort.pairs()``) -> (arrays by key, records, warnings)."""
    parts: dict[str, list[np.ndarray]] = {key: [] for key in ARRAY_KEYS + PRIOR_KEYS + FOLLOWUP_SEQUENCE_KEYS}
    records: list[dict[str, Any]] = []
    baseline_row = {k[len("pre_"):]: v for k, v in rows.iloc[0].items() if k.startswith("pre_")}
    baseline = crop_baseline(cohort, baseline_row, config)
    if not baseline.crops:
        return parts, records, [f"patient {patient}, lesion {lesion}: no slice has {config.min_tumor_voxels}+ "
                                f"tumour voxels in {cohort.tumor_file(baseline_row)}; its {len(rows)} pair(s) are "
                                "left out"]
    warnings = []
    if not baseline.tumor_mask.any():
        warnings.append(f"patient {patient}, lesion {lesion}: the baseline tumour mask "
                        f"{cohort.tumor_file(baseline_row)} is empty in its crops; crops are centred on the scan")
    sequences = _sequence_crops(cohort, baseline_row, baseline, config)
    cut = [(float(row["days"]), cut_followup(cohort, row, baseline, config),
            _sequence_crops(cohort, row, baseline, config))
           for row in (r.to_dict() for _, r in rows.iterrows())]
    earlier = sorted(cut, key=lambda item: item[0])  # a target's priors: the scans of its lesion before its day
    for (_, row), (days, followup, own) in zip(rows.iterrows(), cut):
        _append_samples(parts, records, baseline, followup, row, baseline_row)
        _append_priors(parts, earlier, days, sequences, config)
        for key, value in zip(FOLLOWUP_SEQUENCE_KEYS, own):
            parts[key].append(value)
    return parts, records, warnings


def _n_priors(config: DataConfig) -> int:
    return config.max_priors if config.inputs == "prior" else 0


def _n_sequences(cohort: Cohort, config: DataConfig) -> int:
    return len(cohort.spec.other_sequences()) if config.inputs == "prior" else 0


def _cut_sequences(cohort: Cohort, row: Mapping[str, Any], baseline: BaselineCrops,
                   config: DataConfig) -> list[FollowUpCrops | None]:
    """A scan's non-primary sequences (format 2; ``row``: the baseline's or a follow-up's scans.csv row), each
    registered to the baseline's primary on its own and cut on the baseline's crops; None where the sequence is
    missing (data.inputs=baseline: none)."""
    if _n_sequences(cohort, config) == 0:
        return []
    paths = cohort.sequence_paths(row)
    return [None if paths.get(name) is None else
            cut_followup(cohort, {"image": paths[name]}, baseline, config) for name in cohort.spec.other_sequences()]


def prior_slots(scan_days: Sequence[float], target_days: float, k_max: int) -> list[int]:
    """The indices into ``scan_days`` (ascending) of a target's priors: the latest ``k_max`` scans before
    ``target_days``, oldest first (slot 1 the oldest kept, the last filled slot the most recent scan). Training's
    samples and ``predict --days`` choose them by this one rule."""
    before = [i for i, d in enumerate(scan_days) if d < target_days]
    return before[-k_max:] if k_max > 0 else []


def _sequence_crops(cohort: Cohort, row: Mapping[str, Any], baseline: BaselineCrops,
                    config: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """(images (n_crops, Q, *S) float32, present (n_crops, Q) uint8) of one scan's non-primary sequences
    (:func:`_cut_sequences`) on the baseline's n_crops crops; zeros and 0 for a missing one."""
    sequences, n_crops = _cut_sequences(cohort, row, baseline, config), len(baseline.crops)
    images = np.zeros((n_crops, len(sequences), *config.crop_size), np.float32)
    present = np.zeros((n_crops, len(sequences)), np.uint8)
    for q, sequence in enumerate(sequences):
        if sequence is not None:
            images[:, q], present[:, q] = sequence.post[:, 0], 1
    return images, present


def _append_priors(parts, earlier: list[tuple[float, FollowUpCrops, tuple[np.ndarray, np.ndarray]]], days: float,
                   sequences: tuple[np.ndarray, np.ndarray], config: DataConfig) -> None:
    """One target's prior slots (the K latest scans before ``days``, oldest first, empty slots last) with each
    slot's own sequences, and the baseline's sequences (:func:`_sequence_crops`), for each of its crops."""
    images, present = sequences
    n_crops, q_max, k_max, size = images.shape[0], images.shape[1], _n_priors(config), tuple(config.crop_size)
    slots = prior_slots([d for d, _, _ in earlier], days, k_max)
    priors = np.zeros((n_crops, k_max, *size), np.float32)
    masks = np.zeros((n_crops, k_max, *size), np.uint8)
    prior_days = np.full((n_crops, k_max), np.nan, np.float32)
    prior_sequences = np.zeros((n_crops, k_max * q_max, *size), np.float32)
    prior_present = np.zeros((n_crops, k_max * q_max), np.uint8)
    for slot, i in enumerate(slots):
        day, followup, (own, own_present) = earlier[i]
        priors[:, slot], masks[:, slot], prior_days[:, slot] = followup.post[:, 0], followup.post_mask[:, 0], day
        prior_sequences[:, slot * q_max:(slot + 1) * q_max] = own
        prior_present[:, slot * q_max:(slot + 1) * q_max] = own_present
    for key, value in zip(PRIOR_KEYS, (priors, masks, prior_days, images, present, prior_sequences, prior_present)):
        parts[key].append(value)


def _concatenate_priors(parts, cohort: Cohort, config: DataConfig) -> dict[str, np.ndarray]:
    k_max, q_max, size = _n_priors(config), _n_sequences(cohort, config), tuple(config.crop_size)
    empty = {"priors": np.zeros((0, k_max, *size), np.float32), "prior_masks": np.zeros((0, k_max, *size), np.uint8),
             "prior_days": np.zeros((0, k_max), np.float32), "sequences": np.zeros((0, q_max, *size), np.float32),
             "sequence_present": np.zeros((0, q_max), np.uint8),
             "prior_sequences": np.zeros((0, k_max * q_max, *size), np.float32),
             "prior_sequence_present": np.zeros((0, k_max * q_max), np.uint8),
             "post_sequences": np.zeros((0, q_max, *size), np.float32),
             "post_sequence_present": np.zeros((0, q_max), np.uint8)}
    return {key: np.concatenate(parts[key]) if parts[key] else empty[key]
            for key in PRIOR_KEYS + FOLLOWUP_SEQUENCE_KEYS}


def _progress(done: int, total: int, name: str) -> None:
    """A progress line on stderr as lesions finish (on any worker): every lesion on a terminal, else every
    tenth of the cohort."""
    interactive = sys.stderr.isatty()
    if interactive or done == total or done % max(total // 10, 1) == 0:
        end = "\n" if done == total or not interactive else ""
        print(f"\rpreprocessing {name}: {done}/{total} lesions", end=end, file=sys.stderr, flush=True)


def _append_samples(parts, records, baseline: BaselineCrops, followup: FollowUpCrops, row: pd.Series,
                    baseline_row: Mapping[str, Any]) -> None:
    parts["pre"].append(baseline.pre)
    parts["tumor_mask"].append(baseline.tumor_mask)
    parts["anatomy"].append(baseline.anatomy)
    parts["post"].append(followup.post)
    parts["post_mask"].append(followup.post_mask)
    parts["pre_smoothed"].append(baseline.pre_smoothed)
    parts["post_smoothed"].append(followup.post_smoothed)
    for crop in baseline.crops:
        records.append(SampleRecord(
            patient_id=str(row["patient_id"]), lesion_id=str(row["lesion_id"]), timepoint=str(row["timepoint"]),
            days=float(row["days"]), baseline_image=str(baseline_row["image"]), followup_image=str(row["image"]),
            has_post_mask=followup.has_post_mask, geometry=crop.geometry, pre_intensity=followup.pre_intensity,
            post_intensity=followup.post_intensity, registration=followup.registration, steps=followup.steps,
        ).to_dict())


def _concatenate(parts: list[np.ndarray], key: str, cohort: Cohort, config: DataConfig) -> np.ndarray:
    if parts:
        return np.concatenate(parts)
    channels = {"anatomy": len(cohort.spec.anatomy)}.get(key, len(SMOOTHING_MM) if key in SMOOTHED_KEYS else 1)
    dtype = np.uint8 if key.endswith("mask") else np.float32
    return np.zeros((0, channels, *config.crop_size), dtype)


def _result(cohort: Cohort, arrays, metadata, path: Path, cache_hit: bool) -> PreprocessedCohort:
    return PreprocessedCohort(
        cohort=cohort, arrays=arrays,
        records=tuple(SampleRecord.from_dict(r) for r in metadata["records"]), cache_path=path,
        cache_hit=cache_hit, normalization=str(metadata["normalization"]), warnings=tuple(metadata["warnings"]),
    )


def _check_options(cohort: Cohort, config: DataConfig) -> None:
    """ConfigError when the data options cannot apply to this cohort's scans."""
    dims = cohort.dims
    if dims is None:
        return
    if dims == 2 and config.dims == 3:
        raise ConfigError(f"cohort {cohort.root} holds 2D scans; set data.dims=2 with a 2-value data.crop_size")
    if dims == 2 and config.slices != "none":
        raise ConfigError(f"data.slices={config.slices} cuts 3D scans into 2D, but cohort {cohort.root} is 2D; "
                          "set data.slices=none")
    if dims == 3 and config.dims == 2 and config.slices == "none":
        raise ConfigError(f"cohort {cohort.root} holds 3D scans; for 2D samples choose data.slices=tumor, largest "
                          "or mip, or set data.dims=3 with a 3-value data.crop_size")
    if cohort.spec.modality == "CT" and config.bias_correction == "n4":
        raise ConfigError(f"data.bias_correction=n4 corrects a multiplicative MRI bias field, but cohort {cohort.root} "
                          "is CT (Hounsfield units); set data.bias_correction=auto or none")
    if config.spacing is not None and len(config.spacing) != dims:
        raise ConfigError(f"data.spacing has {len(config.spacing)} values; cohort {cohort.root} is {dims}D, "
                          f"give {dims}")
