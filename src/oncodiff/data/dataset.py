"""The torch side: a Dataset of docs/contracts.md section 1 samples, and a seeded epoch sampler."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from oncodiff.data.preprocess import PreprocessedCohort
from oncodiff.data.transforms import AUGMENTED_KEYS, augment

# (K, Q or K Q, *S): moved with the sample when augmented
PRIOR_IMAGE_KEYS = ("priors", "prior_masks", "sequences", "prior_sequences")


def prior_keys(arrays: Mapping[str, np.ndarray]) -> tuple[str, ...]:
    """The prior and sequence arrays a sample carries: those of data.inputs=prior when some sample of the cohort has
    a prior scan (priors, prior_masks, prior_days), some baseline another sequence (sequences, sequence_present) or
    some prior scan another sequence (prior_sequences, prior_sequence_present); none otherwise, so a cohort without
    them gives format 1's samples."""
    days = arrays.get("prior_days")
    keys = ()
    if days is not None and days.size and np.isfinite(days).any():
        keys += ("priors", "prior_masks", "prior_days")
    for images, flags in (("sequences", "sequence_present"), ("prior_sequences", "prior_sequence_present")):
        present = arrays.get(flags)
        if present is not None and present.size and present.any():
            keys += (images, flags)
    return keys


def prior_image_keys(arrays: Mapping[str, np.ndarray]) -> tuple[str, ...]:
    """The image arrays of :func:`prior_keys` (moved with the sample when it is augmented)."""
    return tuple(k for k in prior_keys(arrays) if k in PRIOR_IMAGE_KEYS)


@dataclass(frozen=True, eq=False)
class SampleLabels:
    """Per-sample conditions and outcomes, aligned with a PreprocessedCohort's samples (N rows)."""

    clinical: np.ndarray  # (N, V) float32
    clinical_missing: np.ndarray  # (N, V) bool
    response: np.ndarray  # (N,) int64, -1 unknown
    survival_time: np.ndarray  # (N,) float32, NaN unknown
    survival_event: np.ndarray  # (N,) float32, NaN unknown
    survival_class2: np.ndarray  # (N,) int64, -1 unknown
    survival_class4: np.ndarray  # (N,) int64, -1 unknown


class PairedDataset(Dataset):
    """The samples ``indices`` of ``preprocessed`` as dicts of docs/contracts.md section 1 without the batch dim
    (``smoothing`` > 0: pre and post are the scans smoothed by SMOOTHING_MM[smoothing]):
    pre, post, tumor_mask, post_mask (1, *S) float32; anatomy (A, *S); clinical (V,) float32;
    clinical_missing (V,) bool; scalars as 0-d tensors; patient_id, lesion_id, timepoint str;
    index = the sample's position in ``preprocessed`` (its geometry record: ``records[index]``).

    An item key may be ``(position, seed)`` (see :class:`SeededSampler`): with a ``transform`` the
    sample is then augmented under that seed, independent of worker processes and batch order.
    """

    def __init__(self, preprocessed: PreprocessedCohort, labels: SampleLabels, indices: Sequence[int],
                 transform=None, smoothing: int = 0):
        self.arrays: Mapping[str, np.ndarray] = preprocessed.arrays
        self.smoothing = int(smoothing)
        self.records = preprocessed.records
        self.labels = labels
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform
        self.prior_keys = prior_keys(self.arrays)
        self.augmented_keys = AUGMENTED_KEYS + prior_image_keys(self.arrays)
        self.extra: dict[str, np.ndarray] = {}  # arrays added after preprocessing (add_array), by sample index

    def add_array(self, key: str, array: np.ndarray, transform=None) -> None:
        """Give every sample ``array[index]`` (N, C, *S) as ``key``, moved with the sample when augmented
        (``transform``: the augmentation rebuilt with ``key`` among its keys; None without augmentation)."""
        self.extra[key] = array
        if key not in self.augmented_keys:
            self.augmented_keys = self.augmented_keys + (key,)
        if self.transform is not None:
            self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        position, seed = item if isinstance(item, tuple) else (item, None)
        index = int(self.indices[position])
        sample = self._sample(index)
        if self.transform is not None and seed is not None:
            sample = augment(self.transform, sample, seed, self.augmented_keys)
        return sample

    def _sample(self, index: int) -> dict:
        record, labels = self.records[index], self.labels
        sample = {key: torch.from_numpy(self.arrays[key][index].astype(np.float32, copy=False))
                  for key in ("pre", "post", "tumor_mask", "post_mask", "anatomy")}
        for key in self.prior_keys:  # data.inputs=prior: the earlier scans and the baseline's other sequences
            sample[key] = torch.from_numpy(self.arrays[key][index].astype(np.float32, copy=False))
        for key, array in self.extra.items():
            sample[key] = torch.from_numpy(array[index].astype(np.float32, copy=False))
        if self.smoothing:  # data.smoothing: the denoised scans are the model's input and target
            for key in ("pre", "post"):
                smoothed = self.arrays[f"{key}_smoothed"][index, self.smoothing:self.smoothing + 1]
                sample[key] = torch.from_numpy(smoothed.astype(np.float32, copy=False))
        sample.update(
            has_post_mask=torch.tensor(record.has_post_mask),
            clinical=torch.from_numpy(labels.clinical[index]),
            clinical_missing=torch.from_numpy(labels.clinical_missing[index]),
            days=torch.tensor(record.days, dtype=torch.float32),
            response=torch.tensor(labels.response[index], dtype=torch.int64),
            survival_time=torch.tensor(labels.survival_time[index], dtype=torch.float32),
            survival_event=torch.tensor(labels.survival_event[index], dtype=torch.float32),
            survival_class2=torch.tensor(labels.survival_class2[index], dtype=torch.int64),
            survival_class4=torch.tensor(labels.survival_class4[index], dtype=torch.int64),
            patient_id=record.patient_id, lesion_id=record.lesion_id, timepoint=record.timepoint,
            index=torch.tensor(index, dtype=torch.int64),
        )
        return sample


class SeededSampler(Sampler):
    """Yields ``(position, augmentation seed)`` pairs, ``length`` of them per epoch (default ``n``), in an
    order drawn from (seed, epoch): the same seed gives the same epochs. With ``length`` > ``n`` an epoch
    makes several passes, each a fresh permutation, so small cohorts still get epochs long enough for
    validation and early stopping to mean something. Lightning calls :meth:`set_epoch`; without it each
    pass over the sampler is the next epoch."""

    def __init__(self, n: int, seed: int, shuffle: bool = True, length: int | None = None):
        self.n, self.seed, self.shuffle, self.epoch = int(n), int(seed), shuffle, 0
        self.length = int(length) if length else self.n

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        passes = -(-self.length // self.n)
        order = np.concatenate([rng.permutation(self.n) if self.shuffle else np.arange(self.n)
                                for _ in range(passes)])[: self.length]
        seeds = rng.integers(0, 2**31, size=self.length)
        return iter([(int(i), int(s)) for i, s in zip(order, seeds)])
