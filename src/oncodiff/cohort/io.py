"""Reading and writing scans with their geometry.

NIfTI goes through nibabel. Other formats (DICOM series, NRRD/MHA, .npy, PNG/TIFF) are added here
behind the same two functions, so callers never branch on the format.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from oncodiff.cohort.image import Image

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def read_image(path: str | Path) -> Image:
    """Read a scan as an :class:`Image` (voxels + voxel-to-RAS affine)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if _is_nifti(path):
        img = nib.load(str(path))
        array = np.asanyarray(img.dataobj)
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        return Image(np.ascontiguousarray(array), np.asarray(img.affine, dtype=np.float64))
    raise ValueError(f"{path}: unsupported image format; use NIfTI (.nii, .nii.gz)")


def write_image(array: np.ndarray, reference: Image | np.ndarray, path: str | Path) -> Path:
    """Write ``array`` with the geometry of ``reference`` (an Image or a 4x4 affine)."""
    path = Path(path)
    affine = reference.affine if isinstance(reference, Image) else np.asarray(reference, dtype=np.float64)
    if not _is_nifti(path):
        raise ValueError(f"{path}: unsupported output format; use .nii or .nii.gz")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return path
