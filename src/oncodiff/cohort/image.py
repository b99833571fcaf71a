"""The in-memory image: voxels plus the geometry that places them in the patient.

Convention (nibabel's): ``array`` is indexed (i, j[, k]) and ``affine`` maps voxel indices to RAS+
world coordinates in mm. A 2D image has a 2D array and a 4x4 affine whose third axis is unused.
Readers of every format (NIfTI, DICOM, NRRD/MHA, .npy, PNG/TIFF) return this type, and the writer
puts a prediction back into the geometry of the image it came from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Image:
    """Voxels ``array`` of shape (*spatial) with a 4x4 voxel-to-RAS ``affine`` in mm."""

    array: np.ndarray
    affine: np.ndarray

    def __post_init__(self) -> None:
        if self.array.ndim not in (2, 3):
            raise ValueError(f"an Image is 2D or 3D, got an array of shape {self.array.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")

    @property
    def ndim(self) -> int:
        return self.array.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each array axis."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return tuple(float(s) for s in norms[: self.ndim])

    @property
    def origin(self) -> tuple[float, ...]:
        """World (RAS) position of voxel (0, 0, 0) in mm."""
        return tuple(float(x) for x in self.affine[:3, 3])

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix of unit column vectors: the RAS direction of each array axis."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return self.affine[:3, :3] / np.where(norms == 0, 1.0, norms)

    def with_array(self, array: np.ndarray) -> Image:
        """Same geometry, new voxels (shape must match)."""
        if array.shape != self.array.shape:
            raise ValueError(f"new array shape {array.shape} differs from the image's {self.array.shape}")
        return Image(array, self.affine)


def affine_from_spacing(spacing: tuple[float, ...], origin: tuple[float, ...] | None = None) -> np.ndarray:
    """A diagonal voxel-to-RAS affine for the given spacing (mm) and origin."""
    affine = np.eye(4)
    for axis, s in enumerate(spacing):
        affine[axis, axis] = float(s)
    if origin is not None:
        affine[: len(origin), 3] = origin
    return affine
