"""Paired augmentation: MONAI dictionary transforms that move every image and mask of a sample alike.

A dictionary transform draws its random parameters once per call and applies them to every key, so
pre, post, their masks and the anatomy stay aligned. Flips and 90-degree rotations act in the
in-plane (axial) axes 0 and 1 only, in 2D and 3D alike: a patient is never turned upside down.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.transforms import Compose, RandFlipd, RandRotate90d

AUGMENTED_KEYS = ("pre", "post", "tumor_mask", "post_mask", "anatomy")
IN_PLANE_AXES = (0, 1)


def paired_augmentation(flips: bool | str, rotations: bool, keys: tuple[str, ...] = AUGMENTED_KEYS) -> Compose | None:
    """Random in-plane flips (each axis with probability 1/2; ``flips="horizontal"``: the left-right axis 0
    only, the glioblastoma LDM's augmentation) and rotations by k * 90 degrees (k uniform in 0..3) of
    ``keys``, each a (C, *spatial) tensor; None when both are off."""
    if flips not in (True, False, "horizontal"):
        raise ValueError(f"flips must be true, false or 'horizontal', got {flips!r}")
    steps = []
    if flips:
        axes = (0,) if flips == "horizontal" else IN_PLANE_AXES
        steps += [RandFlipd(keys=keys, prob=0.5, spatial_axis=axis) for axis in axes]
    if rotations:
        # prob 3/4 of a rotation, then k uniform in 1..3: every k in 0..3 has probability 1/4.
        steps.append(RandRotate90d(keys=keys, prob=0.75, max_k=3, spatial_axes=IN_PLANE_AXES))
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
