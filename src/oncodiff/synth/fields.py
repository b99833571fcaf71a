"""Small array helpers shared by the phantoms, the tumour model and the renderer (any ndim)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def mm_grid(shape: tuple[int, ...], spacing: tuple[float, ...], origin_mm: tuple[float, ...]) -> list[np.ndarray]:
    """Open (broadcastable) grids of world coordinates in mm, one per axis: ``len(shape)`` arrays."""
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return [(g * sp + o).astype(np.float32) for g, sp, o in zip(grids, spacing, origin_mm)]


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float | tuple[float, ...]) -> np.ndarray:
    """Gaussian random field of unit standard deviation, correlation length ``sigma_vox`` voxels.

    Long correlation lengths (sigma >= 4 voxels) are drawn on a grid coarser by sigma / 2 and
    interpolated up (cubic), which is what they look like anyway and far cheaper than a wide kernel.
    """
    sigma = np.broadcast_to(np.asarray(sigma_vox, dtype=np.float64), (len(shape),))
    factor = np.where(sigma >= 4.0, sigma / 2.0, 1.0)
    coarse_shape = tuple(int(np.ceil(n / f)) + 3 for n, f in zip(shape, factor))
    field = ndimage.gaussian_filter(rng.standard_normal(coarse_shape).astype(np.float32), sigma / factor, mode="wrap")
    for axis, (n, f) in enumerate(zip(shape, factor)):
        if f > 1.0:  # separable cubic upsampling: zooming an identity matrix gives the interpolation weights
            weights = ndimage.zoom(np.eye(field.shape[axis], dtype=np.float32), (f, 1.0), order=3, grid_mode=True,
                                   mode="grid-wrap")
            field = np.moveaxis(np.tensordot(weights, field, axes=([1], [axis])), 0, axis)
    field = field[tuple(slice(0, n) for n in shape)]
    return ((field - field.mean()) / max(float(field.std()), 1e-6)).astype(np.float32)


def smoothstep(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """0 below ``low``, 1 above ``high``, C1 cubic in between (exactly 0 and 1 outside, so edits stay local)."""
    t = np.clip((x - low) / (high - low), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def distance_mm(shape: tuple[int, ...], spacing: tuple[float, ...], center_vox: tuple[float, ...]) -> np.ndarray:
    """Euclidean distance in mm from ``center_vox`` (voxel coordinates) to every voxel."""
    grids = mm_grid(shape, spacing, tuple(-c * s for c, s in zip(center_vox, spacing)))
    return np.sqrt(sum(g * g for g in grids))


def box_around(center_vox: tuple[int, ...], half_size: tuple[int, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Slices of a box of ``2 * half_size + 1`` voxels centred on ``center_vox``, clipped to ``shape``."""
    return tuple(slice(max(c - h, 0), min(c + h + 1, s)) for c, h, s in zip(center_vox, half_size, shape))
