"""Orientation, resampling, crops and paste_back: a prediction goes back into the original scan."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from factory import write_cohort

from oncodiff.cohort import Image, affine_from_spacing, read_image
from oncodiff.config import DataConfig
from oncodiff.data import (
    baseline_scan, canonical_grid, crop_support, paste_back, preprocess_cohort, sample,
)


def reorient_cohort(root: Path, order: tuple[int, ...], flips: tuple[bool, ...]) -> Path:
    """Rewrite every scan of a cohort with permuted/flipped array axes; the world geometry stays the same."""
    for path in root.rglob("*.nii.gz"):
        img = nib.load(str(path))
        array = np.asarray(img.dataobj)
        array = array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array
        to_old = np.eye(4)
        to_old[: array.ndim, : array.ndim] = 0
        new = np.transpose(array, order)
        for axis, old in enumerate(order):
            to_old[old, axis] = -1.0 if flips[axis] else 1.0
            to_old[old, 3] = array.shape[old] - 1 if flips[axis] else 0.0
        new = np.flip(new, [a for a in range(array.ndim) if flips[a]])
        nib.save(nib.Nifti1Image(np.ascontiguousarray(new), img.affine @ to_old), str(path))
    return root


def test_canonical_grid_undoes_a_flipped_transposed_scan():
    array = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
    affine = affine_from_spacing((1.0, 2.0, 3.0), origin=(10.0, -5.0, 2.0))
    stored = np.flip(np.transpose(array, (1, 0, 2)), 0)  # stored axes: -A, R, S
    to_old = np.array([[0, 1, 0, 0], [-1, 0, 0, 4], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    grid = canonical_grid(Image(np.ascontiguousarray(stored), affine @ to_old))
    assert grid.shape == (4, 5, 3)
    np.testing.assert_allclose(grid.affine, affine)
    np.testing.assert_array_equal(sample(stored, affine @ to_old, grid, order=0), array)


def test_canonical_grid_resamples_to_spacing():
    image = Image(np.zeros((10, 8, 4), np.float32), affine_from_spacing((1.0, 1.0, 2.5)))
    grid = canonical_grid(image, (0.5, 2.0, 2.5))
    assert grid.shape == (20, 4, 4)
    np.testing.assert_allclose(grid.spacing, (0.5, 2.0, 2.5))
    np.testing.assert_allclose(grid.affine[:3, 3], 0.0)
    with pytest.raises(ValueError, match="data.spacing has 2 values"):
        canonical_grid(image, (1.0, 1.0))


def _cfg(dims, **kw):
    return DataConfig(dims=dims, crop_size=kw.pop("crop_size", (12,) * dims), **kw)


@pytest.mark.parametrize("dims", [2, 3])
def test_paste_back_of_the_pre_crop_reproduces_the_baseline(tmp_path, dims):
    # Stored non-RAS, resampled to half the voxel size (every original voxel is a grid voxel, so
    # linear interpolation there is exact), z-score (invertible) and a crop that leaves the scan. N4 is
    # off: its field is divided out of the crops and not restored by the inverse normalisation.
    order, flips = ((1, 0), (True, False)) if dims == 2 else ((2, 0, 1), (False, True, True))
    root = reorient_cohort(write_cohort(tmp_path / "c", n_patients=2, dims=dims), order, flips)
    crop = (40, 40) if dims == 2 else (40, 40, 12)
    config = _cfg(dims, crop_size=crop, spacing=(0.5,) * dims, normalization="zscore", bias_correction="none")
    result = preprocess_cohort(root, config, cache_dir=tmp_path / "cache")
    record = result.records[0]
    original = read_image(root / record.baseline_image)
    pasted = paste_back(record.geometry, record.pre_intensity.invert(result.arrays["pre"][0, 0]), order=1)
    support = crop_support(record.geometry)
    assert pasted.shape == original.shape and np.allclose(pasted.affine, original.affine)
    assert 0.2 < support.mean() < 1.0  # the crop covers part of the scan, and pads past its border
    np.testing.assert_allclose(pasted.array[support], original.array[support], atol=1e-4)
    assert np.all(pasted.array[~support] == 0)
    # Pasted into the baseline itself, the whole scan comes back.
    into_scan = paste_back(record.geometry, record.pre_intensity.invert(result.arrays["pre"][0, 0]), 1,
                           background=original.array)
    np.testing.assert_allclose(into_scan.array, original.array, atol=1e-4)


def test_reoriented_cohort_gives_the_same_samples(tmp_path):
    config = _cfg(3, spacing=(0.5, 0.5, 1.0))
    plain = preprocess_cohort(write_cohort(tmp_path / "a", n_patients=2, dims=3), config, tmp_path / "cache")
    turned = reorient_cohort(write_cohort(tmp_path / "b", n_patients=2, dims=3), (1, 2, 0), (True, False, True))
    moved = preprocess_cohort(turned, config, tmp_path / "cache")
    for key in ("pre", "post", "tumor_mask", "post_mask", "anatomy"):
        np.testing.assert_allclose(moved.arrays[key], plain.arrays[key], atol=1e-5, err_msg=key)


def test_fixed_crop_is_centred_on_the_tumour(tiny_cohort_3d, tmp_path):
    result = preprocess_cohort(tiny_cohort_3d, _cfg(3, crop_size=(10, 10, 6)), cache_dir=tmp_path / "cache")
    for mask in result.arrays["tumor_mask"][:, 0]:
        centre = np.array(np.nonzero(mask)).mean(axis=1)
        np.testing.assert_allclose(centre, (5, 5, 3), atol=1.0)


def test_bbox_crop_fills_the_crop_and_pastes_back(tiny_cohort_2d, tmp_path):
    config = _cfg(2, crop="bbox", crop_margin=0.25, crop_size=(32, 32))
    result = preprocess_cohort(tiny_cohort_2d, config, cache_dir=tmp_path / "cache")
    mask = result.arrays["tumor_mask"][0, 0].astype(bool)
    rows, cols = np.nonzero(mask)
    # Tumour box + 25 % per side -> the tumour spans the middle 2/3 of the crop.
    assert abs((rows.max() - rows.min() + 1) / 32 - 2 / 3) < 0.1
    assert abs((cols.max() - cols.min() + 1) / 32 - 2 / 3) < 0.1
    record = result.records[0]
    pasted = paste_back(record.geometry, mask.astype(np.float32), order=0).array > 0
    original = read_image(tiny_cohort_2d / "P001" / "pre_gtv.nii.gz").array > 0
    dice = 2 * (pasted & original).sum() / (pasted.sum() + original.sum())
    assert dice > 0.9


def test_slices_paste_back_onto_their_own_slice(tiny_cohort_3d, tmp_path):
    config = _cfg(2, slices="largest", crop_size=(12, 12))
    result = preprocess_cohort(tiny_cohort_3d, config, cache_dir=tmp_path / "cache")
    record = result.records[0]
    original = read_image(tiny_cohort_3d / record.baseline_image).array
    tumor = read_image(tiny_cohort_3d / "P001" / "pre_gtv.nii.gz").array
    assert record.geometry.slice_index == int(np.argmax(tumor.sum(axis=(0, 1))))
    support = crop_support(record.geometry)
    assert set(np.nonzero(support)[2]) == {record.geometry.slice_index}
    pasted = paste_back(record.geometry, record.pre_intensity.invert(result.arrays["pre"][0, 0]))
    low, high = record.pre_intensity.offset, record.pre_intensity.offset + record.pre_intensity.scale
    inside = support & (original > low) & (original < high)  # percentile normalisation clips the rest
    np.testing.assert_allclose(pasted.array[inside], original[inside], atol=1e-4)


def test_tumor_slices_respect_min_tumor_voxels(tiny_cohort_3d, tmp_path):
    config = _cfg(2, slices="tumor", min_tumor_voxels=20, crop_size=(12, 12))
    result = preprocess_cohort(tiny_cohort_3d, config, cache_dir=tmp_path / "cache")
    counts = result.arrays["tumor_mask"].sum(axis=(1, 2, 3))
    assert len(result) > 0 and counts.min() >= 20
    tumor = read_image(tiny_cohort_3d / "P001" / "pre_gtv.nii.gz").array
    expected = int((tumor.sum(axis=(0, 1)) >= 20).sum())
    assert sum(r.patient_id == "P001" for r in result.records) == expected


def test_mip_is_the_projection_of_the_scan(tiny_cohort_3d, tmp_path):
    config = _cfg(2, slices="mip", crop_size=(12, 12), normalization="zscore")
    result = preprocess_cohort(tiny_cohort_3d, config, cache_dir=tmp_path / "cache")
    record = result.records[0]
    projected = baseline_scan(tiny_cohort_3d, record.baseline_image, record.geometry)
    assert projected.shape == (24, 24)
    np.testing.assert_allclose(projected.array, read_image(tiny_cohort_3d / record.baseline_image).array.max(axis=2))
    pasted = paste_back(record.geometry, record.pre_intensity.invert(result.arrays["pre"][0, 0]))
    support = crop_support(record.geometry)
    assert support.sum() == 144
    np.testing.assert_allclose(pasted.array[support], projected.array[support], atol=1e-4)


def test_paste_back_rejects_a_wrong_shape(tiny_cohort_2d, tmp_path):
    result = preprocess_cohort(tiny_cohort_2d, _cfg(2), cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="crop_array has shape"):
        paste_back(result.records[0].geometry, np.zeros((5, 5)))
