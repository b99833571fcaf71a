"""Registration of a follow-up to its baseline recovers known rigid shifts, and crops follow it."""

import nibabel as nib
import numpy as np
import pytest
from factory import write_cohort

from oncodiff.cohort import Image, affine_from_spacing
from oncodiff.config import DataConfig
from oncodiff.data import preprocess_cohort, register

SHIFT_MM = (3.0, -2.0, 1.0)


def smooth_volume(shape, spacing, shift_mm=(0.0, 0.0, 0.0)):
    """Three anisotropic Gaussian blobs (no symmetry a rigid transform could confuse), moved by ``shift_mm``."""
    dims = len(shape)
    points = [g * s for g, s in zip(np.indices(shape, dtype=float), spacing)]
    blobs = [((12, 15, 14), (5, 3, 4)), ((26, 22, 20), (4, 6, 3)), ((18, 30, 10), (3, 3, 5))]
    out = np.zeros(shape)
    for centre, width in blobs:
        out += np.exp(-sum(((p - d - c) / w) ** 2 for p, d, c, w in zip(points, shift_mm[:dims], centre, width)) / 2)
    return out.astype(np.float32)


@pytest.mark.parametrize("dims, kind", [(3, "rigid"), (2, "rigid"), (2, "affine")])
def test_registration_recovers_a_known_shift(dims, kind):
    shape, spacing = (40, 40, 16)[:dims], (1.0, 1.0, 2.0)[:dims]
    affine = affine_from_spacing(spacing)
    fixed = Image(smooth_volume(shape, spacing), affine)
    moving = Image(smooth_volume(shape, spacing, SHIFT_MM), affine)  # anatomy at x sits at x + shift
    transform = register(fixed, moving, kind)
    # Check the map where the anatomy is: each blob centre must land on its shifted centre.
    for centre in [(12, 15, 14), (26, 22, 20), (18, 30, 10)]:
        point = np.append(np.array(centre, dtype=float)[:dims], np.zeros(4 - dims))
        point[3] = 1.0
        moved = (transform @ point)[:dims]
        np.testing.assert_allclose(moved - point[:dims], SHIFT_MM[:dims], atol=0.5)


def test_registration_rejects_unknown_kind():
    image = Image(np.zeros((8, 8), np.float32), np.eye(4))
    with pytest.raises(ValueError, match="data.registration"):
        register(image, image, "elastic")


def _shifted_cohort(root):
    """A 2D cohort whose follow-ups are the baseline moved by 3 mm right and 2 mm posterior."""
    write_cohort(root, n_patients=2, dims=2, shape=(40, 40))
    for patient in ("P001", "P002"):
        image = smooth_volume((40, 40), (1.0, 1.0))
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(root / patient / "pre.nii.gz"))
        moved = affine_from_spacing((1.0, 1.0), origin=SHIFT_MM[:2])
        nib.save(nib.Nifti1Image(image, moved), str(root / patient / "week6.nii.gz"))
        mask = nib.load(str(root / patient / "pre_gtv.nii.gz"))
        nib.save(nib.Nifti1Image(np.asarray(mask.dataobj), moved), str(root / patient / "week6_gtv.nii.gz"))
    return root


def test_preprocessing_registers_follow_ups_and_their_masks(tmp_path):
    root = _shifted_cohort(tmp_path / "c")
    config = DataConfig(crop_size=(16, 16), normalization="zscore", registration="rigid")
    result = preprocess_cohort(root, config, cache_dir=tmp_path / "cache")
    np.testing.assert_allclose(result.records[0].registration[:2, 3], SHIFT_MM[:2], atol=0.5)
    assert np.abs(result.arrays["post"] - result.arrays["pre"]).mean() < 0.05
    overlap = (result.arrays["post_mask"] & result.arrays["tumor_mask"]).sum()
    assert overlap / result.arrays["tumor_mask"].sum() > 0.8
    unregistered = preprocess_cohort(root, config.model_copy(update={"registration": "none"}), tmp_path / "cache")
    assert np.abs(unregistered.arrays["post"] - unregistered.arrays["pre"]).mean() > 0.2
