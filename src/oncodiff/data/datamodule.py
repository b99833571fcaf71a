"""The Lightning DataModule: a cohort's preprocessed samples, split by patient, as training batches."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from oncodiff.cohort import Cohort, CohortSpec
from oncodiff.config import SMOOTHING_MM, Config, DataConfig
from oncodiff.data.clinical import ClinicalEncoder
from oncodiff.data.crop import trained_slices
from oncodiff.data.dataset import PairedDataset, SampleLabels, SeededSampler, prior_image_keys
from oncodiff.data.denoise import smoothing_index
from oncodiff.data.labels import SurvivalClasses, patient_outcomes
from oncodiff.data.preprocess import PreprocessedCohort, SampleRecord, preprocess_cohort
from oncodiff.data.splits import make_splits
from oncodiff.runs import SPLIT_NAMES, Splits
from oncodiff.data.transforms import AUGMENTED_KEYS, paired_augmentation
from oncodiff.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class _State:
    preprocessed: PreprocessedCohort
    splits: Splits
    encoder: ClinicalEncoder
    survival: SurvivalClasses
    datasets: dict[str, PairedDataset]
    smoothing: int  # index into SMOOTHING_MM of the pre/post scans the datasets give
    smoothing_note: str


class CohortDataModule(L.LightningDataModule):
    """Batches of docs/contracts.md section 1 from a cohort folder.

    prepare_data() preprocesses into the cache (once per node); setup() reads it, keeps every array in
    memory, applies data.timepoints, splits by patient (``splits_path``: read it when it exists, else
    write the new splits there), fits the clinical encoder and the survival classes on the training
    patients, and builds the datasets. Training batches are shuffled and augmented under
    config.training.seed; val and test batches are neither.
    """

    def __init__(self, cohort_root: str | Path, config: Config, cache_dir: str | Path | None = None,
                 splits_path: str | Path | None = None):
        super().__init__()
        self.cohort_root = Path(cohort_root)
        self.config = config
        self.cache_dir = cache_dir
        self.splits_path = Path(splits_path) if splits_path is not None else None
        self._state: _State | None = None
        self._preprocessed: PreprocessedCohort | None = None

    def prepare_data(self) -> None:
        # Lightning runs this on one process per node; other processes read the cache in setup().
        self._preprocessed = preprocess_cohort(self.cohort_root, self.config.data, cache_dir=self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        if self._state is None:
            self._state = self._build()

    @property
    def state(self) -> _State:
        self.setup()
        return self._state

    # What the model and training code need to know about the data.
    @property
    def preprocessed(self) -> PreprocessedCohort:
        return self.state.preprocessed

    @property
    def records(self) -> tuple[SampleRecord, ...]:
        """Geometry and origin of every sample; a batch's ``index`` points here."""
        return self.state.preprocessed.records

    @property
    def splits(self) -> Splits:
        return self.state.splits

    @property
    def clinical_encoder(self) -> ClinicalEncoder:
        return self.state.encoder

    @property
    def survival_classes(self) -> SurvivalClasses:
        return self.state.survival

    @property
    def spec(self) -> CohortSpec:
        return (self._preprocessed or self.state.preprocessed).spec  # known after prepare_data, before setup

    @property
    def anatomy_names(self) -> tuple[str, ...]:
        return tuple(self.spec.anatomy)

    @property
    def n_anatomy(self) -> int:
        """A: anatomy channels in ``batch["anatomy"]``."""
        return len(self.spec.anatomy)

    @property
    def smoothing_mm(self) -> float:
        """The Gaussian sigma (mm) of the pre and post scans the datasets give (data.smoothing resolved)."""
        return SMOOTHING_MM[self.state.smoothing]

    @property
    def smoothing_note(self) -> str:
        return self.state.smoothing_note

    @property
    def prior_inputs(self) -> tuple[int, tuple[str, ...], bool]:
        """(K, sequence names, whether the prior scans bring their own sequences) the denoiser is given
        (data.inputs=prior): K = data.max_priors when some sample of the cohort has a prior scan, else 0; the
        non-primary sequences when some baseline has one, else none; True when some prior scan has one. A cohort
        without any (a baseline and one follow-up per lesion) gets exactly the format-1 model. Known after
        prepare_data, before setup: the memory check asks before the run folder (and its splits.json) exists."""
        arrays = (self._preprocessed or self.state.preprocessed).arrays
        days = arrays.get("prior_days")
        n_priors = days.shape[1] if days is not None and days.size and np.isfinite(days).any() else 0
        present, prior_present = arrays.get("sequence_present"), arrays.get("prior_sequence_present")
        has_sequences = present is not None and present.size and present.any()
        prior_sequences = bool(n_priors and prior_present is not None and prior_present.size and prior_present.any())
        return n_priors, self.spec.other_sequences() if has_sequences or prior_sequences else (), prior_sequences

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.config.data.crop_size)

    @property
    def spatial_dims(self) -> int:
        return len(self.spatial_shape)

    def dataset(self, split: str) -> PairedDataset:
        if split not in SPLIT_NAMES:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_NAMES)}")
        return self.state.datasets[split]

    def add_sample_array(self, key: str, array: np.ndarray) -> None:
        """Give every split's samples ``array[index]`` (N, C, *S, one row per preprocessed sample) as batch entry
        ``key``, flipped and rotated with the rest of a training sample (e.g. the mechanistic forecasts)."""
        extra = tuple(self.dataset("train").extra) + (key,)
        augmentation = paired_augmentation(self.config.data.flips, self.config.data.rotations,
                                           AUGMENTED_KEYS + prior_image_keys(self.preprocessed.arrays)
                                           + tuple(dict.fromkeys(extra)), self.config.data.intensity_augmentation)
        for name in SPLIT_NAMES:
            self.dataset(name).add_array(key, array, augmentation if name == "train" else None)

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train")
        sampler = SeededSampler(len(dataset), self.config.training.seed, length=self.config.training.samples_per_epoch)
        return self._loader(dataset, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"))

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"))

    def _loader(self, dataset: PairedDataset, sampler: SeededSampler | None = None) -> DataLoader:
        workers = self.config.data.num_workers
        return DataLoader(dataset, batch_size=self.config.training.batch_size, sampler=sampler, shuffle=False,
                          num_workers=workers, persistent_workers=workers > 0,
                          pin_memory=torch.cuda.is_available())

    def _build(self) -> _State:
        preprocessed = self._preprocessed or preprocess_cohort(self.cohort_root, self.config.data,
                                                               cache_dir=self.cache_dir)
        cohort = preprocessed.cohort
        selected = _select_timepoints(preprocessed.records, self.config.data.timepoints)
        outcomes = patient_outcomes(cohort.patients, cohort.spec)
        patients = [preprocessed.records[i].patient_id for i in selected]
        splits = self._splits(cohort, patients, [int(outcomes.loc[p, "response"]) for p in patients])
        encoder = ClinicalEncoder.fit(cohort.spec.clinical, cohort.patients, splits.train)
        survival = SurvivalClasses.fit(outcomes.loc[list(splits.train), "survival_time"].to_numpy(float))
        labels = _sample_labels(preprocessed, cohort, outcomes, encoder, survival)
        augmentation = paired_augmentation(self.config.data.flips, self.config.data.rotations,
                                           AUGMENTED_KEYS + prior_image_keys(preprocessed.arrays),
                                           self.config.data.intensity_augmentation)
        members = {name: set(getattr(splits, name)) for name in SPLIT_NAMES}
        trained = training_slices(preprocessed, self.config.data)
        indices = {name: [i for i in selected if preprocessed.records[i].patient_id in members[name]
                          and (trained is None or i in trained)] for name in SPLIT_NAMES}
        if not indices["train"]:
            raise ConfigError(f"the training split of {self.cohort_root} has no samples; check the splits and "
                              "data.timepoints")
        arrays, train = preprocessed.arrays, indices["train"]
        smoothing, note = smoothing_index(self.config.data.smoothing, arrays["pre_smoothed"][train],
                                          arrays["post"][train], arrays["tumor_mask"][train])
        datasets = {name: PairedDataset(preprocessed, labels, indices[name], augmentation if name == "train" else None,
                                        smoothing=smoothing) for name in SPLIT_NAMES}
        return _State(preprocessed, splits, encoder, survival, datasets, smoothing, note)

    def _splits(self, cohort: Cohort, patients: list[str], labels: list[int]) -> Splits:
        if self.splits_path is not None and self.splits_path.is_file():
            splits = Splits.from_json(self.splits_path)
            _check_split_patients(splits, cohort, set(patients), self.splits_path)
            return splits
        try:
            splits = make_splits(patients, labels, self.config.data, self.config.training.seed)
        except ValueError as e:
            raise ConfigError(f"cannot split cohort {self.cohort_root}: {e}") from None
        if self.splits_path is not None:
            splits.to_json(self.splits_path)
        return splits


def training_slices(preprocessed: PreprocessedCohort, config: DataConfig) -> set[int] | None:
    """The samples to train on (:func:`oncodiff.data.crop.trained_slices`): with ``data.train_slice_margin``, the
    axial slices at most that many slices beyond their follow-up's tumour slices; None: every sample."""
    records = preprocessed.records
    follow_ups: dict[tuple, list[int]] = {}
    for i, r in enumerate(records):
        follow_ups.setdefault((r.patient_id, r.lesion_id, r.timepoint), []).append(i)
    tumour = preprocessed.arrays["tumor_mask"].reshape(len(records), -1).astype(bool).sum(1)
    return trained_slices(list(follow_ups.values()), [r.geometry.slice_index for r in records], tumour, config)


def _select_timepoints(records: tuple[SampleRecord, ...], timepoints: tuple[str, ...] | None) -> list[int]:
    """Indices of the samples whose follow-up label is in data.timepoints (all when None)."""
    if timepoints is None:
        return list(range(len(records)))
    known = list(dict.fromkeys(r.timepoint for r in records))
    unknown = [t for t in timepoints if t not in known]
    if unknown:
        raise ConfigError(f"data.timepoints lists {', '.join(unknown)}, which no follow-up has; "
                          f"the cohort's follow-up labels are {', '.join(known)}")
    return [i for i, r in enumerate(records) if r.timepoint in timepoints]


def _check_split_patients(splits: Splits, cohort: Cohort, with_samples: set[str], path: Path) -> None:
    listed = set(splits.train) | set(splits.val) | set(splits.test)
    unknown = sorted(listed - set(cohort.patients.index))
    if unknown:
        raise ConfigError(f"{path}: patient(s) {', '.join(unknown[:5])} are not in {cohort.root}/patients.csv; "
                          "remove them or use the splits of this cohort")
    left_out = sorted(with_samples - listed)
    if left_out:
        log.warning("%s: %d patient(s) with samples are in no split and are left out: %s", path, len(left_out),
                    ", ".join(left_out[:10]))


def _sample_labels(preprocessed: PreprocessedCohort, cohort: Cohort, outcomes, encoder: ClinicalEncoder,
                   survival: SurvivalClasses) -> SampleLabels:
    patients = [r.patient_id for r in preprocessed.records]
    clinical, missing = encoder.encode_patients(cohort.patients, patients)
    time = outcomes.loc[patients, "survival_time"].to_numpy(np.float32) if patients else np.zeros(0, np.float32)
    event = outcomes.loc[patients, "survival_event"].to_numpy(np.float32) if patients else np.zeros(0, np.float32)
    classes = np.array([survival.classify(float(t), float(e)) for t, e in zip(time, event)], np.int64).reshape(-1, 2)
    response = outcomes.loc[patients, "response"].to_numpy(np.int64) if patients else np.zeros(0, np.int64)
    return SampleLabels(clinical=clinical, clinical_missing=missing, response=response, survival_time=time,
                        survival_event=event, survival_class2=classes[:, 0], survival_class4=classes[:, 1])
