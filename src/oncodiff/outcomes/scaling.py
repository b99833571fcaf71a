"""The one standardisation of every outcome model: z-scores with a training part's statistics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONSTANT = 1e-8  # a column whose std is at most this times max(1, |mean|) on the training part is constant


@dataclass(frozen=True)
class Standardisation:
    """``mean`` and ``scale`` (F,) of a training part, ``scale`` 1 where a column is constant on it, and which
    columns vary (``varying``, (F,) bool). A constant column z-scores to 0 on the training part; models fitted
    in a fold drop it (:func:`standardise`), a persisted model (class prior, survival risk) keeps every column
    so that its ``mean`` and ``scale`` apply to a new case's full feature vector."""

    mean: np.ndarray
    scale: np.ndarray
    varying: np.ndarray

    @classmethod
    def fit(cls, train: np.ndarray) -> Standardisation:
        """From ``train`` (N, F)."""
        mean, std = train.mean(axis=0), train.std(axis=0)
        varying = std > CONSTANT * np.maximum(1.0, np.abs(mean))
        return cls(mean, np.where(varying, std, 1.0), varying)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(N, F) z-scores of ``x`` (N, F)."""
        return (x - self.mean) / self.scale


def standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A fold's training and test parts (N, F) z-scored with the training part's statistics; columns constant on
    the training part are dropped."""
    scaling = Standardisation.fit(train)
    return scaling(train)[:, scaling.varying], scaling(test)[:, scaling.varying]
