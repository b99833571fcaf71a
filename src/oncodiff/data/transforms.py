"""Paired augmentation: MONAI dictionary transforms that move every image and mask of a sample alike.

A dictionary transform draws its random parameters once per call and applies them to every key, so
pre, post, their masks and the anatomy stay aligned. Flips and 90-degree rotations act in the
in-plane (axial) axes 0 and 1 only, in 2D and 3D alike: a patient is never turned upside down.

``data.intensity_augmentation`` adds :class:`PairedIntensity`: one random contrast curve and one smooth
bias field per sample, the same on the baseline, the follow-up and the earlier scans, so the change
between them stays the sample's own while the look of the tissue varies: a model trained on one cohort meets
tissue and tumours that look different in another.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, MapTransform, RandFlipd, RandomizableTransform, RandRotate90d

AUGMENTED_KEYS = ("pre", "post", "tumor_mask", "post_mask", "anatomy")
IN_PLANE_AXES = (0, 1)
# Keys in the scans' intensity units, which PairedIntensity changes (never the masks or the anatomy):
# the baseline, the follow-up, the earlier scans, the baseline's and the earlier scans' other sequences, the
# mechanistic forecasts (models.conditions.FORECAST_KEY).
INTENSITY_KEYS = ("pre", "post", "priors", "sequences", "prior_sequences", "mechanistic")


class PairedIntensity(RandomizableTransform, MapTransform):
    """One random contrast and one smooth multiplicative bias field, drawn once per call and applied alike to
    every key: ``x -> sign(x) |x|^gamma * exp(b(position))``. ``gamma`` is log-uniform in
    [1 / ``gamma``, ``gamma``] (0 and 1 stay where they are, so the normalised range is kept); ``b`` is a
    polynomial of total degree 2 in the crop's coordinates (scaled to [-1, 1]; Legendre terms, no constant),
    each coefficient uniform in [-``bias``, ``bias``]: about +-``bias`` of gain across the crop. Zeros (an
    empty prior slot, a missing sequence) stay zeros."""

    def __init__(self, keys, gamma: float = 1.5, bias: float = 0.1):
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        RandomizableTransform.__init__(self, prob=1.0)
        if gamma < 1.0 or bias < 0.0:
            raise ValueError(f"PairedIntensity needs gamma >= 1 and bias >= 0, got gamma={gamma}, bias={bias}")
        self.gamma_range, self.bias = float(gamma), float(bias)
        self.gamma, self.coefficients = 1.0, np.zeros(0)

    def randomize(self, spatial_dims: int) -> None:
        log_gamma = np.log(self.gamma_range)
        self.gamma = float(np.exp(self.R.uniform(-log_gamma, log_gamma)))
        self.coefficients = self.R.uniform(-self.bias, self.bias, size=len(_bias_terms(spatial_dims)))

    def field(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The multiplicative bias field exp(b) on a crop of spatial ``shape``, for the last drawn coefficients."""
        axes = [torch.linspace(-1.0, 1.0, n, dtype=torch.float64) for n in shape]
        grid = torch.meshgrid(*axes, indexing="ij")
        legendre = (lambda t: torch.ones_like(t), lambda t: t, lambda t: 1.5 * t * t - 0.5)
        exponent = torch.zeros(shape, dtype=torch.float64)
        for coefficient, degrees in zip(self.coefficients, _bias_terms(len(shape))):
            term = torch.ones(shape, dtype=torch.float64)
            for coordinate, degree in zip(grid, degrees):
                term = term * legendre[degree](coordinate)
            exponent = exponent + float(coefficient) * term
        return torch.exp(exponent)

    def __call__(self, data):
        out = dict(data)
        present = list(self.key_iterator(out))
        if not present:
            return out
        spatial = tuple(out[present[0]].shape[1:])
        self.randomize(len(spatial))
        field = self.field(spatial)
        for key in present:
            image = torch.as_tensor(out[key])
            if tuple(image.shape[1:]) != spatial:
                raise ValueError(f"PairedIntensity: {key} has spatial shape {tuple(image.shape[1:])}, "
                                 f"{present[0]} has {spatial}")
            curved = torch.sign(image) * image.abs().pow(self.gamma)
            out[key] = (curved * field.to(image.dtype)).to(image.dtype)
        return out


def _bias_terms(spatial_dims: int) -> list[tuple[int, ...]]:
    """Legendre degrees per axis of the bias field's terms: total degree 1 or 2 (no constant: mean gain 1)."""
    return [d for d in itertools.product(range(3), repeat=spatial_dims) if 1 <= sum(d) <= 2]


def paired_augmentation(flips: bool | str, rotations: bool, keys: tuple[str, ...] = AUGMENTED_KEYS,
                        intensity: bool = False) -> Compose | None:
    """Random in-plane flips (each axis with probability 1/2; ``flips="horizontal"``: the left-right axis 0
    only, the glioblastoma LDM's augmentation) and rotations by k * 90 degrees (k uniform in 0..3) of
    ``keys``, each a (C, *spatial) tensor; with ``intensity``, then :class:`PairedIntensity` on those of
    ``keys`` in INTENSITY_KEYS. None when all are off."""
    if flips not in (True, False, "horizontal"):
        raise ValueError(f"flips must be true, false or 'horizontal', got {flips!r}")
    steps = []
    if flips:
        axes = (0,) if flips == "horizontal" else IN_PLANE_AXES
        steps += [RandFlipd(keys=keys, prob=0.5, spatial_axis=axis) for axis in axes]
    if rotations:
        # prob 3/4 of a rotation, then k uniform in 1..3: every k in 0..3 has probability 1/4.
        steps.append(RandRotate90d(keys=keys, prob=0.75, max_k=3, spatial_axes=IN_PLANE_AXES))
    if intensity:
        steps.append(PairedIntensity(keys=[key for key in keys if key in INTENSITY_KEYS]))
    return Compose(steps) if steps else None


def augment(transform: Compose, sample: Mapping[str, Any], seed: int, keys: tuple[str, ...] = AUGMENTED_KEYS) -> dict:
    """``sample`` with ``keys`` transformed by ``transform`` under ``seed`` (the same seed, the same result)."""
    transform.set_random_state(seed=int(seed) % (2**32))
    moved = transform({key: sample[key] for key in keys})
    out = dict(sample)
    for key in keys:
        value = moved[key]
        # MONAI returns MetaTensors; batches stay plain tensors.
        out[key] = (value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)).contiguous()
    return out
