"""A training sampler whose order is a pure function of (seed, epoch).

Resuming after a kill therefore replays exactly the batches an uninterrupted run would have seen;
Lightning calls ``set_epoch`` on it (and wraps it for DDP). An "epoch" has a fixed number of
samples drawn without replacement across repeated passes, so small cohorts still give epochs long
enough for validation and early stopping to mean something.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class SeededEpochSampler(Sampler[int]):
    """Indices into a dataset of ``n_items``: ``samples_per_epoch`` of them per epoch, seeded by (seed, epoch)."""

    def __init__(self, n_items: int, samples_per_epoch: int | None = None, seed: int = 0):
        if n_items < 1:
            raise ValueError("the training split is empty: add patients or lower data.val_fraction/test_fraction")
        self.n_items = n_items
        self.samples_per_epoch = samples_per_epoch or n_items
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        passes = -(-self.samples_per_epoch // self.n_items)
        order = torch.cat([torch.randperm(self.n_items, generator=g) for _ in range(passes)])
        return iter(order[: self.samples_per_epoch].tolist())
