"""Scans as a clinic acquires them (``oncodiff synth --acquisition clinical``).

The ideal acquisition renders every scan of a patient on one grid, in one intensity scale, with one
bias field per patient. The clinical acquisition renders each scan without scanner effects (the
*clean* scan, in the baseline's space) and then acquires it, in this order:

1. patient motion: a rigid transform ``q = R (p - c) + c + t`` (RAS mm, c the field of view's
   centre) moves the anatomy at baseline point p to follow-up point q; R turns 0.5-3 degrees about
   a random axis (2D: in the image plane), |t| is 1.5-5 mm (or ``misalign_mm``) in a random direction.
   The baseline is the reference: it does not move;
2. thick slices (3D follow-ups): the last axis is acquired with ``slice_mm`` (4 mm) slices, each the
   Gaussian slice profile of that thickness; the baseline keeps its native (isotropic) grid;
3. a smooth multiplicative bias field per scan (MRI; CT: an additive HU field), drawn on the
   acquired grid, because it belongs to the scanner, not to the anatomy;
4. noise: Rician for magnitude MRI, Gaussian otherwise, with 1.5 times the ideal sigma;
5. a per-scan gain (log-uniform 0.6-1.6) and offset (0-8 % of the intensity scale) for MRI; CT stays
   in Hounsfield units.

Every random draw of a scan comes from generators keyed by (seed, site, patient, scan number), so a
factual follow-up and its counterfactual share the acquisition exactly and differ only in the tumour.
The truth of each scan (:meth:`Acquisition.truth_columns`) goes to truth/scans.csv.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from oncodiff.synth.fields import smooth_noise
from oncodiff.synth.render import gaussian_noise, mri_noise

ACQUISITIONS = ("ideal", "clinical")
ROTATION_DEG = (0.5, 3.0)
TRANSLATION_MM = (1.5, 5.0)
SLICE_MM = 4.0
GAIN = (0.6, 1.6)
OFFSET = (0.0, 0.08)  # fraction of the site's intensity scale
BIAS_SD = 0.2  # MRI: standard deviation of the log gain field; CT: 2x the site's HU bias
NOISE_FACTOR = 1.5
MISSING_RATE = 0.15  # clinical tables have gaps: each clinical cell is missing with this probability
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass(frozen=True, eq=False)
class Acquisition:
    """How one scan was acquired. ``world_map``: 4x4 on RAS mm, baseline point -> follow-up point
    (the convention of preprocessing's registration); ``affine``/``shape``: the acquired grid."""

    world_map: np.ndarray
    affine: np.ndarray
    shape: tuple[int, ...]
    rotation_deg: float
    rotation_axis: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    slice_mm: float  # thickness along the last axis (0: native grid)
    gain: float
    offset: float
    bias_sd: float
    noise_sigma: float

    def truth_columns(self) -> dict:
        """The truth/scans.csv columns of this acquisition."""
        return {
            "acquisition": "clinical", "rotation_deg": self.rotation_deg,
            **{f"rotation_axis_{a}": v for a, v in zip("xyz", self.rotation_axis)},
            **{f"translation_mm_{a}": v for a, v in zip("xyz", self.translation_mm)},
            "world_map": " ".join(f"{v:.6g}" for v in self.world_map.ravel()),
            "slice_mm": self.slice_mm, "gain": self.gain, "offset": self.offset, "bias_sd": self.bias_sd,
            "noise_sigma": self.noise_sigma,
        }


def world_map_from_truth(text: str) -> np.ndarray:
    """The 4x4 ``world_map`` of a truth/scans.csv row (16 numbers, row-major) as an array."""
    return np.asarray([float(v) for v in str(text).split()], dtype=np.float64).reshape(4, 4)


def acquisition_rng(seed: int, site_code: int, index: int, scan: int) -> np.random.Generator:
    """The generator of one scan's acquisition, shared by its factual and counterfactual versions."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(site_code), int(index), 3000 + scan]))


def draw_acquisition(rng: np.random.Generator, site, affine: np.ndarray, shape: tuple[int, ...], followup: bool,
                     misalign_mm: float = 0.0) -> Acquisition:
    """One scan's acquisition on a patient whose baseline grid is (``affine``, ``shape``)."""
    columns = np.asarray(affine[:3, : len(shape)], dtype=np.float64)
    plane_normal = np.cross(*columns.T) if len(shape) == 2 else None
    axis = _unit(plane_normal if plane_normal is not None else rng.standard_normal(3))
    angle = float(rng.uniform(*ROTATION_DEG) * rng.choice([-1.0, 1.0]))
    direction = _unit(columns @ rng.standard_normal(len(shape)))
    distance = misalign_mm if misalign_mm > 0 else float(rng.uniform(*TRANSLATION_MM))
    rotation = Rotation.from_rotvec(np.deg2rad(angle) * axis).as_matrix()
    if not followup:  # the baseline is the reference frame: it does not move
        rotation, distance, angle = np.eye(3), 0.0, 0.0
    center = affine[:3, :3] @ np.r_[(np.asarray(shape) - 1) / 2, np.zeros(3 - len(shape))] + affine[:3, 3]
    world_map = np.eye(4)
    world_map[:3, :3] = rotation
    world_map[:3, 3] = center + distance * direction - rotation @ center
    grid_affine, grid_shape, slice_mm = _acquired_grid(affine, shape, followup)
    is_mri = site.modality == "MRI"
    gain = float(np.exp(rng.uniform(*np.log(GAIN)))) if is_mri else 1.0
    offset = float(rng.uniform(*OFFSET) * site.intensity_scale) if is_mri else 0.0
    return Acquisition(
        world_map=world_map, affine=grid_affine, shape=grid_shape, rotation_deg=abs(angle),
        rotation_axis=tuple(float(v) for v in axis * np.sign(angle)), translation_mm=tuple(
            float(v) for v in distance * direction), slice_mm=slice_mm, gain=gain, offset=offset,
        bias_sd=BIAS_SD if is_mri else 2.0 * site.bias, noise_sigma=float(rng.uniform(*site.noise) * NOISE_FACTOR),
    )


def _unit(vector: np.ndarray) -> np.ndarray:
    return np.asarray(vector, dtype=np.float64) / max(float(np.linalg.norm(vector)), 1e-12)


def _acquired_grid(affine: np.ndarray, shape: tuple[int, ...], followup: bool):
    """(affine, shape, slice_mm) of the acquired grid: thick slices along the last axis of 3D follow-ups,
    covering the baseline's field of view; otherwise the baseline grid."""
    spacing = float(np.linalg.norm(affine[:3, len(shape) - 1]))
    if len(shape) != 3 or not followup or SLICE_MM <= spacing:
        return np.asarray(affine, dtype=np.float64), tuple(shape), 0.0
    ratio = SLICE_MM / spacing
    voxel = np.eye(4)
    voxel[2, 2], voxel[2, 3] = ratio, (ratio - 1) / 2  # new slice j covers old voxels [j r - 1/2, (j + 1) r - 1/2]
    return affine @ voxel, (shape[0], shape[1], int(shape[2] // ratio)), SLICE_MM


def acquire(site, clean: np.ndarray, mask: np.ndarray, baseline_affine: np.ndarray, acquisition: Acquisition,
            rng: np.random.Generator, noise_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image in stored units, float32; GTV uint8) on the acquired grid, from the clean scan and its GTV in
    the baseline's space (simulation units). ``rng`` draws the bias field, ``noise_rng`` the noise."""
    background = float(clean.min())
    moved = _resample(clean, baseline_affine, acquisition, order=1, cval=background)
    gtv = (_resample(mask.astype(np.float32), baseline_affine, acquisition, order=1, cval=0.0) >= 0.5)
    field = smooth_noise(rng, acquisition.shape, [n / 3 for n in acquisition.shape])
    if site.modality == "CT":
        biased = moved + acquisition.bias_sd * field
    else:
        biased = moved * np.exp(acquisition.bias_sd * field)
    noise = mri_noise if site.rician_noise else gaussian_noise
    noisy = noise(noise_rng, biased.astype(np.float32), acquisition.noise_sigma)
    return (noisy * site.intensity_scale * acquisition.gain + acquisition.offset).astype(np.float32), \
        gtv.astype(np.uint8)


def resample_acquired(image: np.ndarray, baseline_affine: np.ndarray, acquisition: Acquisition, order: int = 1,
                      cval: float = 0.0) -> np.ndarray:
    """A baseline-space array as the acquired grid sees it (slice profile, then the rigid motion)."""
    return _resample(image, baseline_affine, acquisition, order, cval)


def _resample(image: np.ndarray, baseline_affine: np.ndarray, acquisition: Acquisition, order: int,
              cval: float) -> np.ndarray:
    """The baseline-space ``image`` as the acquired grid sees it: slice profile, then the rigid motion."""
    ndim = image.ndim
    if acquisition.slice_mm > 0:
        native = float(np.linalg.norm(baseline_affine[:3, ndim - 1]))
        sigma = np.sqrt(acquisition.slice_mm ** 2 - native ** 2) / FWHM_PER_SIGMA / native
        image = ndimage.gaussian_filter1d(image, sigma, axis=ndim - 1, mode="nearest")
    columns = np.asarray(baseline_affine[:3, :ndim], dtype=np.float64)
    inverse = np.linalg.inv(acquisition.world_map)
    to_voxel = np.linalg.pinv(columns)
    # acquired voxel v -> world q = A_f v -> baseline world p = M^-1 q -> baseline voxel
    matrix = to_voxel @ inverse[:3, :3] @ acquisition.affine[:3, :ndim]
    offset = to_voxel @ (inverse[:3, :3] @ acquisition.affine[:3, 3] + inverse[:3, 3] - baseline_affine[:3, 3])
    return ndimage.affine_transform(image, matrix, offset, output_shape=acquisition.shape, order=order,
                                    mode="constant", cval=cval)
