"""Cases to predict: a cohort's baseline crops, conditions and (when known) ground truth, as one batch.

A case is one crop of one lesion at one target time: a (baseline, follow-up) pair of the cohort, a new day of a
lesion predicted from its baseline and the scans before that day (``days`` given), or a baseline scan alone with
``days`` given (a new patient: the tool's real use). Clinical values are
encoded with the model's own encoder (training-split statistics, from the export), and may be
overridden for "what if" predictions (``clinical.age=70``, ``response=responder``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oncodiff.cohort import Cohort
from oncodiff.data import (
    BaselineCrops, ClinicalEncoder, GeometryRecord, IntensityTransform, SurvivalClasses, crop_baseline,
    patient_outcomes, preprocess_cohort,
)
from oncodiff.config import SMOOTHING_MM, DataConfig
from oncodiff.data import mechanistic
from oncodiff.data.crop import trained_slices
from oncodiff.data.preprocess import ARRAY_KEYS, PRIOR_KEYS, prior_slots
from oncodiff.errors import ConfigError, OncodiffError
from oncodiff.models import CLASS_COUNTS, CLASS_LABEL_KEYS, prior_layout
from oncodiff.models.conditions import FORECAST_KEY, sequence_names
from oncodiff.pipeline.export import ExportedModel

NULL_VALUES = ("none", "null", "unknown", "")


@dataclass(frozen=True)
class Case:
    """Where one predicted crop goes back to, and what is known about it."""

    key: str  # patient/lesion/timepoint[/slice]
    patient_id: str
    lesion_id: str
    timepoint: str
    days: float
    baseline_image: str
    geometry: GeometryRecord
    pre_intensity: IntensityTransform
    has_truth: bool  # a follow-up scan at exactly these days exists (post and post_mask are real)
    priors: tuple[tuple[str, float], ...] = ()  # (timepoint, days) of the earlier scans it is predicted from
    # False for an axial slice beyond those the model was trained on (data.train_slice_margin): generated for the
    # image, but no tumour volume is counted there (pipeline/volumes.py)
    volume_counted: bool = True

    @property
    def follow_up_key(self) -> str:
        """patient/lesion/timepoint: the follow-up this crop belongs to (several crops for tumour slices)."""
        return f"{self.patient_id}/{self.lesion_id}/{self.timepoint}"


@dataclass
class CaseSet:
    """B cases and their batch (docs/contracts.md section 1: keys and shapes, tensors with batch dim B).
    ``pre`` is the model's input (smoothed as the model was trained, data.smoothing), ``pre_raw`` the
    baseline crop as preprocessed, and ``pre_smoothed`` (B, G, *S) the baseline crop smoothed by each sigma
    of SMOOTHING_MM."""

    cases: list[Case]
    batch: dict[str, Any]
    cohort: Cohort
    data_hash: str = ""  # the preprocessing cache key: a hash of the input files and the data options

    def __len__(self) -> int:
        return len(self.cases)

    def follow_ups(self) -> list[list[int]]:
        """The case indices of each follow-up (its crops: one, or one per tumour slice), in first-seen order."""
        groups: dict[str, list[int]] = {}
        for i, case in enumerate(self.cases):
            groups.setdefault(case.follow_up_key, []).append(i)
        return list(groups.values())

    def select(self, index: Sequence[int]) -> CaseSet:
        index = list(index)
        batch = {k: (v[index] if isinstance(v, torch.Tensor) else None if v is None else [v[i] for i in index])
                 for k, v in self.batch.items()}  # class_label is None for models without one
        return CaseSet([self.cases[i] for i in index], batch, self.cohort, self.data_hash)


def load_cases(model: ExportedModel, cohort_root: str | Path, patients: Sequence[str] | None = None,
               days: float | None = None, overrides: Mapping[str, str] | None = None,
               cache_dir: str | Path | None = None) -> CaseSet:
    """The cases of ``patients`` (default: every patient with a follow-up) of a cohort.

    Without ``days``, each follow-up of a lesion is a case, with the earlier scans of its lesion as priors (as in
    training). With ``days`` = D, each lesion gives one case at day D: its follow-up on day D when there is one
    (with ground truth), else a new target whose priors are the lesion's scans before D (the latest
    data.max_priors of them, the most recent in the last filled slot, as training chooses them; none before D:
    the baseline alone). Patients with only a baseline scan need ``days``. ``overrides``: clinical.NAME=value and
    response=value / survival_class=k for counterfactual predictions.
    """
    data = model.config.data
    if days is not None and not float(days) > 0:
        raise OncodiffError(f"--days {days:g}: the day to predict must be after the baseline (day 0 in scans.csv); "
                            "pass the days since the baseline scan, e.g. --days 120")
    preprocessed = preprocess_cohort(cohort_root, data, cache_dir=cache_dir)
    cohort = preprocessed.cohort
    wanted = _check_patients(cohort, patients)
    arrays, cases = [], []
    lesions = _lesion_scans(preprocessed.records, wanted)
    # the prior slots the network reads (none for a model trained without earlier scans): a case names those scans
    used = min(preprocessed.arrays["priors"].shape[1], prior_layout(model.layout.image_condition_names)[0])
    if days is None:  # every follow-up, in the preprocessed order
        for i, record in enumerate(preprocessed.records):
            if wanted is None or record.patient_id in wanted:
                scans = lesions[record.patient_id, record.lesion_id]
                arrays.append({k: preprocessed.arrays[k][i] for k in ARRAY_KEYS + PRIOR_KEYS})
                cases.append(_case(record, record.timepoint, record.days, True, _priors_of(scans, record.days, used)))
    else:
        for scans in lesions.values():
            _lesion_at(preprocessed, scans, float(days), used, arrays, cases)
    with_pairs = {r.patient_id for r in preprocessed.records}
    for patient in sorted((wanted or set()) - with_pairs):
        _baseline_only(cohort, patient, days, data, arrays, cases, _no_priors(preprocessed))
    if not cases:
        raise OncodiffError(f"no cases to predict in {cohort.root}: no patient selected has a baseline scan")
    batch = _batch(model, cohort, cases, arrays, overrides or {})
    return _mark_untrained_slices(CaseSet(cases, batch, cohort, preprocessed.cache_path.name), data)


def _mark_untrained_slices(cases: CaseSet, data: DataConfig) -> CaseSet:
    """``cases`` with ``volume_counted`` False on the axial slices further from the tumour than the model was
    trained on (cut and predicted so the scored tumour box is the model's, but its masks there are extrapolation:
    measured, a glioma-trained model grew brain tumours into them, 31 pp worse volume changes)."""
    tumour = cases.batch["tumor_mask"].reshape(len(cases), -1).sum(1).numpy()
    near = trained_slices(cases.follow_ups(), [c.geometry.slice_index for c in cases.cases], tumour, data)
    if near is None:
        return cases
    return CaseSet([c if i in near else dc_replace(c, volume_counted=False) for i, c in enumerate(cases.cases)],
                   cases.batch, cases.cohort, cases.data_hash)


@dataclass(frozen=True)
class _Scan:
    """One follow-up scan of a lesion in the preprocessed cohort: its day and its samples (one per crop, in crop
    order)."""

    timepoint: str
    days: float
    rows: list[int]


def _lesion_scans(records, wanted: set[str] | None) -> dict[tuple[str, str], list[_Scan]]:
    """(patient, lesion) -> its preprocessed follow-ups by their day, for each wanted lesion (first-seen order)."""
    lesions: dict[tuple[str, str], dict[str, _Scan]] = {}
    for i, record in enumerate(records):
        if wanted is None or record.patient_id in wanted:
            scans = lesions.setdefault((record.patient_id, record.lesion_id), {})
            scans.setdefault(record.timepoint, _Scan(record.timepoint, record.days, [])).rows.append(i)
    return {key: sorted(scans.values(), key=lambda scan: scan.days) for key, scans in lesions.items()}


def _priors_of(scans: list[_Scan], days: float, k_max: int) -> tuple[tuple[str, float], ...]:
    """(timepoint, days) of the scans a target on ``days`` is predicted from: preprocessing's rule (prior_slots)."""
    return tuple((scans[j].timepoint, scans[j].days) for j in prior_slots([s.days for s in scans], days, k_max))


def _lesion_at(preprocessed, scans: list[_Scan], days: float, used: int, arrays: list, cases: list) -> None:
    """One lesion's case at ``days``: its follow-up on that day when there is one, else a new target with the
    baseline crops of the lesion's latest sample and the lesion's scans before that day as priors (the slots are
    filled as preprocessing fills them; the case names the ``used`` ones the network reads)."""
    records, k_max = preprocessed.records, preprocessed.arrays["priors"].shape[1]
    priors = _priors_of(scans, days, used)
    same_day = [scan for scan in scans if scan.days == days]
    if same_day:  # preprocessing gave these samples the same priors
        for i in same_day[0].rows:
            arrays.append({k: preprocessed.arrays[k][i] for k in ARRAY_KEYS + PRIOR_KEYS})
            cases.append(_case(records[i], records[i].timepoint, days, True, priors))
        return
    chosen = [scans[j] for j in prior_slots([scan.days for scan in scans], days, k_max)]
    for c, i in enumerate(scans[-1].rows):
        item = {k: preprocessed.arrays[k][i] for k in ARRAY_KEYS + PRIOR_KEYS}
        for key in ("post", "post_mask", "post_smoothed"):
            item[key] = np.zeros_like(item[key])
        for key in ("priors", "prior_masks", "prior_sequences", "prior_sequence_present"):
            item[key] = np.zeros_like(item[key])
        item["prior_days"] = np.full_like(item["prior_days"], np.nan)
        q_max = preprocessed.arrays["post_sequences"].shape[1]
        for slot, scan in enumerate(chosen):  # oldest first, the most recent in the last filled slot
            item["priors"][slot] = preprocessed.arrays["post"][scan.rows[c], 0]
            item["prior_masks"][slot] = preprocessed.arrays["post_mask"][scan.rows[c], 0]
            item["prior_days"][slot] = scan.days
            own = slice(slot * q_max, (slot + 1) * q_max)  # the scan's own sequences, slot-major as preprocessing
            item["prior_sequences"][own] = preprocessed.arrays["post_sequences"][scan.rows[c]]
            item["prior_sequence_present"][own] = preprocessed.arrays["post_sequence_present"][scan.rows[c]]
        arrays.append(item)
        cases.append(_case(records[i], f"day{days:g}", days, False, priors))


def _case(record, timepoint: str, days: float, has_truth: bool, priors: tuple[tuple[str, float], ...]) -> Case:
    return Case(key=_key(record.patient_id, record.lesion_id, timepoint, record.geometry.slice_index),
                patient_id=record.patient_id, lesion_id=record.lesion_id, timepoint=timepoint, days=days,
                baseline_image=record.baseline_image, geometry=record.geometry, pre_intensity=record.pre_intensity,
                has_truth=has_truth, priors=priors)


def _key(patient: str, lesion: str, timepoint: str, slice_index: int | None) -> str:
    return f"{patient}/{lesion}/{timepoint}" + (f"/z{slice_index}" if slice_index is not None else "")


def _check_patients(cohort: Cohort, patients: Sequence[str] | None) -> set[str] | None:
    if patients is None:
        return None
    unknown = [p for p in patients if p not in cohort.patients.index]
    if unknown:
        raise OncodiffError(f"--patient {', '.join(unknown)}: not in {cohort.root / 'patients.csv'}")
    return set(patients)


def _no_priors(preprocessed) -> dict[str, np.ndarray]:
    """One case's PRIOR_KEYS with every slot empty (a baseline-only case has no earlier scan; its baseline's
    other sequences are not cut for it: their slots are marked missing)."""
    return {k: np.full(preprocessed.arrays[k].shape[1:], np.nan if k == "prior_days" else 0,
                       preprocessed.arrays[k].dtype) for k in PRIOR_KEYS}


def _baseline_only(cohort: Cohort, patient: str, days: float | None, data, arrays: list, cases: list,
                   no_priors: dict[str, np.ndarray]) -> None:
    if days is None:
        raise OncodiffError(f"patient {patient} has no follow-up scan in {cohort.root / 'scans.csv'}; "
                            "pass --days to say which time point to predict")
    for _, row in cohort.baselines()[cohort.baselines()["patient_id"] == patient].iterrows():
        crops: BaselineCrops = crop_baseline(cohort, row.to_dict(), data)
        for k, crop in enumerate(crops.crops):
            empty = np.zeros_like(crops.pre[k])
            arrays.append({"pre": crops.pre[k], "post": empty, "tumor_mask": crops.tumor_mask[k],
                           "post_mask": empty.astype(np.uint8), "anatomy": crops.anatomy[k],
                           "pre_smoothed": crops.pre_smoothed[k], "post_smoothed": np.zeros_like(crops.pre_smoothed[k]),
                           **no_priors})
            cases.append(Case(
                key=_key(patient, str(row["lesion_id"]), f"day{days:g}", crop.geometry.slice_index),
                patient_id=patient, lesion_id=str(row["lesion_id"]), timepoint=f"day{days:g}", days=float(days),
                baseline_image=str(row["image"]), geometry=crop.geometry, pre_intensity=crops.intensity,
                has_truth=False))


def _batch(model: ExportedModel, cohort: Cohort, cases: list[Case], arrays: list[dict],
           overrides: Mapping[str, str]) -> dict[str, Any]:
    encoder = ClinicalEncoder.from_dict(model.layout.clinical_encoder)
    clinical_overrides = {k.removeprefix("clinical."): v for k, v in overrides.items() if k.startswith("clinical.")}
    rows = [cohort.patients.loc[c.patient_id].to_dict() for c in cases]
    try:
        encoded = [encoder.encode(row, clinical_overrides) for row in rows]
    except (KeyError, ValueError) as e:
        raise ConfigError(f"--set clinical...: {e}") from None
    outcomes = patient_outcomes(cohort.patients, cohort.spec)
    batch = {k: torch.from_numpy(np.stack([a[k] for a in arrays]).astype(np.float32)) for k in ARRAY_KEYS + PRIOR_KEYS}
    batch.pop("post_smoothed")
    _to_model_sequences(batch, cohort.spec.other_sequences() if batch["sequences"].shape[1] else (),
                        sequence_names(model.layout.image_condition_names))
    # The model's pre scan is the one it was trained on (data.smoothing); identity baselines use pre_raw.
    batch["pre_raw"] = batch["pre"]
    smoothing = SMOOTHING_MM.index(model.layout.smoothing_mm)
    if smoothing:
        batch["pre"] = batch["pre_smoothed"][:, smoothing:smoothing + 1].clone()
    batch.update(
        clinical=torch.from_numpy(np.stack([e[0] for e in encoded]).astype(np.float32)),
        clinical_missing=torch.from_numpy(np.stack([e[1] for e in encoded]).astype(bool)),
        days=torch.tensor([c.days for c in cases], dtype=torch.float32),
        has_post_mask=torch.tensor([c.has_truth for c in cases]),
        response=torch.tensor([int(outcomes.loc[c.patient_id, "response"]) for c in cases], dtype=torch.int64),
        survival_time=torch.tensor([float(outcomes.loc[c.patient_id, "survival_time"]) for c in cases]),
        survival_event=torch.tensor([float(outcomes.loc[c.patient_id, "survival_event"]) for c in cases]),
        patient_id=[c.patient_id for c in cases], lesion_id=[c.lesion_id for c in cases],
        timepoint=[c.timepoint for c in cases], index=torch.arange(len(cases)),
    )
    batch["survival_class2"], batch["survival_class4"] = survival_classes(model, batch)
    batch["class_label"] = class_labels(model, batch, overrides)
    if model.layout.mechanistic:  # diffusion.residual=mechanistic: the forecasts under the export's fitted sets
        batch[FORECAST_KEY] = forecast_batch(model.layout.mechanistic, cases, batch)
    return batch


def _to_model_sequences(batch: dict[str, Any], cohort_names: Sequence[str], model_names: Sequence[str]) -> None:
    """Put the batch's non-primary sequences (the baseline's and each prior slot's, slot-major) in the order of the
    sequences the model reads, by name: one the model reads that the cohort lacks is missing (zeros, flag 0, as a
    missing scan is), one the model does not read is left out. Without it a model would read the cohort's first
    other sequence as its own first, whatever their names."""
    slots = batch["priors"].shape[1]
    for images, present, count in (("sequences", "sequence_present", 1),
                                   ("prior_sequences", "prior_sequence_present", slots)):
        source, flags = batch[images], batch[present]
        out = source.new_zeros((source.shape[0], count * len(model_names), *source.shape[2:]))
        out_flags = flags.new_zeros((flags.shape[0], count * len(model_names)))
        for slot in range(count):
            for q, name in enumerate(model_names):
                if name in cohort_names:
                    i, j = slot * len(cohort_names) + list(cohort_names).index(name), slot * len(model_names) + q
                    out[:, j], out_flags[:, j] = source[:, i], flags[:, i]
        batch[images], batch[present] = out, out_flags


def forecast_batch(fitted: Mapping[str, Any], cases: Sequence[Case], batch: Mapping[str, Any]) -> torch.Tensor:
    """(B, 1 + K, *S) the mechanistic forecasts of ``cases`` (outcome unknown, then class k) from the model's pre
    scan, tumour, anatomy and days, under the parameter sets an export of diffusion.residual=mechanistic carries."""
    sets = mechanistic.ForecastSets.from_dict(dict(fitted))
    ndim = batch["pre"].ndim - 2
    channels = mechanistic.forecast_channels(
        batch["pre"][:, 0].numpy(), batch["tumor_mask"][:, 0].numpy(), batch["anatomy"].numpy(), sets.anatomy,
        batch["days"].numpy(), [mechanistic.crop_spacing(c.geometry, ndim) for c in cases], sets)
    return torch.from_numpy(channels)


def survival_classes(model: ExportedModel, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) int64 survival_class2 and survival_class4 of each case by the model's training-split median and
    quartiles (-1 unknown; all unknown for an export without them), as the training batches had them."""
    thresholds = model.layout.survival_classes
    if not thresholds:
        unknown = torch.full((len(batch["patient_id"]),), -1, dtype=torch.int64)
        return unknown, unknown.clone()
    classes = SurvivalClasses.from_dict(thresholds)
    pairs = [classes.classify(float(t), float(e)) for t, e in zip(batch["survival_time"], batch["survival_event"])]
    return (torch.tensor([p[0] for p in pairs], dtype=torch.int64),
            torch.tensor([p[1] for p in pairs], dtype=torch.int64))


def class_labels(model: ExportedModel, batch: Mapping[str, Any], overrides: Mapping[str, str]) -> torch.Tensor | None:
    """The class label each case is conditioned on: an override, else the null class (outcome unknown).

    Prediction never reads the true outcome: before treatment it is unknown. ``evaluate`` reports the
    papers' protocol (the true class, an oracle) separately.
    """
    kind = model.config.model.class_label
    key = {"none": None, "response": "response"}.get(kind, "survival_class")
    _check_class_override(kind, key, overrides)
    if key is None:
        return None
    n = len(batch["patient_id"])
    null = CLASS_COUNTS[kind]
    value = overrides.get(key)
    if value is None or str(value).strip().lower() in NULL_VALUES:
        return torch.full((n,), null, dtype=torch.int64)
    return torch.full((n,), _class_index(kind, str(value), model.layout.response_positive), dtype=torch.int64)


def _check_class_override(kind: str, key: str | None, overrides: Mapping[str, str]) -> None:
    """A class override the model was not conditioned on would be silently ignored: refuse it."""
    unused = sorted({"response", "survival_class"} & overrides.keys() - {key})
    if unused:
        accepted = f"--set {key}=..." if key else "no class override"
        raise ConfigError(f"--set {unused[0]}=...: this model is conditioned on model.class_label={kind}; "
                          f"it takes {accepted}")


def _class_index(kind: str, value: str, positive: str | None) -> int:
    if kind == "response":
        if value in ("1", "responder", positive):
            return 1
        if value.lower().replace("_", "-") in ("0", "non-responder", "nonresponder"):
            return 0
        raise ConfigError(f"--set response={value}: use {positive!r} or 1 (responder), non-responder or 0, "
                          "or none (outcome unknown)")
    classes = CLASS_COUNTS[kind]
    if value.isdigit() and int(value) < classes:
        return int(value)
    raise ConfigError(f"--set survival_class={value}: use 0..{classes - 1} ({CLASS_LABEL_KEYS[kind]}) or none")
