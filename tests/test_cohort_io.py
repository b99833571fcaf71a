"""Readers and writers: real files written by others (nibabel, pydicom test data), ITK as a second
reader of the same bytes, and round trips through our writer."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from nibabel.testing import data_path
from PIL import Image as PILImage
from pydicom.data import get_testdata_file

from oncodiff.cohort import (
    Image, ImageNotFoundError, ImageReadError, affine_from_spacing, read_image, write_image, write_like,
)

ANATOMICAL = Path(data_path) / "anatomical.nii"
EXAMPLE_4D = Path(data_path) / "example4d.nii.gz"


def oblique_affine(spacing=(0.7, 1.3, 2.5), origin=(12.0, -30.5, 7.25)) -> np.ndarray:
    """A rotated (non-diagonal), anisotropic voxel-to-RAS affine."""
    a, b = np.deg2rad(25.0), np.deg2rad(-40.0)
    rot_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rot_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rot_z @ rot_x @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


# ---- NIfTI from nibabel's test data, and ITK reading the same file -----------------------------

def test_nibabel_anatomical_matches_nibabel():
    image = read_image(ANATOMICAL)
    reference = nib.load(ANATOMICAL)
    assert image.shape == (33, 41, 25)
    np.testing.assert_array_equal(image.affine, reference.affine)
    np.testing.assert_array_equal(image.array, reference.get_fdata())
    assert image.array.dtype.isnative  # the file is big-endian; torch needs native order
    assert image.spacing == (2.0, 2.0, 2.0)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_itk_conversion_of_anatomical_matches_nibabel(tmp_path, suffix):
    # ITK (not our writer) converts nibabel's file; our LPS->RAS and (z,y,x)->(x,y,z) must undo it exactly.
    sitk.WriteImage(sitk.ReadImage(str(ANATOMICAL)), str(tmp_path / f"anat{suffix}"))
    via_itk = read_image(tmp_path / f"anat{suffix}")
    reference = read_image(ANATOMICAL)
    np.testing.assert_array_equal(via_itk.array, reference.array)
    np.testing.assert_allclose(via_itk.affine, reference.affine, atol=1e-5)


def test_oblique_nifti_read_through_itk_matches_nibabel(tmp_path):
    volume = nib.load(EXAMPLE_4D).slicer[..., 0]  # an oblique volume: non-diagonal affine
    nib.save(volume, tmp_path / "oblique.nii.gz")
    sitk.WriteImage(sitk.ReadImage(str(tmp_path / "oblique.nii.gz")), str(tmp_path / "oblique.nrrd"))
    via_itk, via_nibabel = read_image(tmp_path / "oblique.nrrd"), read_image(tmp_path / "oblique.nii.gz")
    assert not np.allclose(via_nibabel.affine[:3, :3], np.diag(np.diag(via_nibabel.affine[:3, :3])))
    np.testing.assert_array_equal(via_itk.array, via_nibabel.array)
    np.testing.assert_allclose(via_itk.affine, via_nibabel.affine, atol=1e-4)


def test_4d_nifti_is_refused_with_a_fix():
    with pytest.raises(ImageReadError, match="example4d.nii.gz.*one volume per file"):
        read_image(EXAMPLE_4D)


def test_singleton_last_axis_reads_as_2d(tmp_path):
    affine = oblique_affine()
    nib.save(nib.Nifti1Image(np.arange(20, dtype=np.float32).reshape(4, 5, 1), affine), tmp_path / "slice.nii")
    image = read_image(tmp_path / "slice.nii")
    assert image.shape == (4, 5)
    np.testing.assert_allclose(image.affine, affine, atol=1e-5)  # keeps the slice's placement


# ---- DICOM: pydicom's files and a series we build ------------------------------------------------

def _pydicom_geometry(ds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected RAS affine columns from the tags (DICOM is LPS; PixelSpacing is [row, column] spacing)."""
    flip = np.array([-1.0, -1.0, 1.0])
    row_dir, col_dir = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
    spacing = (float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0]))
    columns = np.stack([flip * row_dir * spacing[0], flip * col_dir * spacing[1]], axis=1)
    return columns, flip * np.array(ds.ImagePositionPatient, float), flip * np.cross(row_dir, col_dir)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_pydicom_single_files(name):
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    image = read_image(path)
    assert image.shape == (ds.Columns, ds.Rows)  # i runs along a row (columns), j down the rows
    assert image.spacing == pytest.approx((float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0])))
    columns, origin, normal = _pydicom_geometry(ds)
    np.testing.assert_allclose(image.affine[:3, :2], columns, atol=1e-5)
    np.testing.assert_allclose(image.origin, origin, atol=1e-4)
    np.testing.assert_allclose(image.affine[:3, 2], normal * float(ds.SliceThickness), atol=1e-5)
    hounsfield = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    np.testing.assert_array_equal(image.array, hounsfield.T)


def _write_dicom_series(folder: Path, volume: np.ndarray, spacing, origin_lps, row_dir, col_dir) -> None:
    """One CT file per slice of ``volume`` (i, j, k), placed by hand-computed DICOM tags."""
    folder.mkdir()
    normal = np.cross(row_dir, col_dir)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.shape[2]):
        picture = sitk.GetImageFromArray(np.ascontiguousarray(volume[:, :, k].T))  # (rows, columns)
        picture.SetSpacing(spacing[:2])  # GDCM writes PixelSpacing from the image, not from a tag
        position = np.asarray(origin_lps) + k * spacing[2] * normal
        tags = {
            "0008|0060": "CT", "0020|000d": "1.2.826.0.1.3680043.2.1125.1", "0020|000e": "1.2.826.0.1.3680043.2.1125.2",
            "0008|0018": f"1.2.826.0.1.3680043.2.1125.3.{k + 1}", "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{x:.6f}" for x in position),
            "0020|0037": "\\".join(f"{x:.6f}" for x in (*row_dir, *col_dir)),
            "0018|0050": f"{spacing[2]:.6f}",
        }
        for tag, value in tags.items():
            picture.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(picture)


def test_dicom_series_folder_round_trips_a_known_volume(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.integers(-1000, 2000, size=(6, 5, 4)).astype(np.int16)
    angle = np.deg2rad(30.0)
    row_dir, col_dir = np.array([np.cos(angle), np.sin(angle), 0.0]), np.array([-np.sin(angle), np.cos(angle), 0.0])
    spacing, origin_lps = (0.7, 0.8, 2.5), np.array([10.0, -20.0, 30.0])
    _write_dicom_series(tmp_path / "series", volume, spacing, origin_lps, row_dir, col_dir)

    image = read_image(tmp_path / "series")
    flip = np.array([-1.0, -1.0, 1.0])
    expected = np.eye(4)
    expected[:3, :3] = np.stack([flip * row_dir * spacing[0], flip * col_dir * spacing[1],
                                 flip * np.cross(row_dir, col_dir) * spacing[2]], axis=1)
    expected[:3, 3] = flip * origin_lps
    np.testing.assert_array_equal(image.array, volume)
    np.testing.assert_allclose(image.affine, expected, atol=1e-5)
    # pydicom agrees on what was written to the second slice's header
    ds = pydicom.dcmread(tmp_path / "series" / "slice001.dcm")
    np.testing.assert_allclose(ds.ImagePositionPatient, origin_lps + spacing[2] * np.cross(row_dir, col_dir), atol=1e-5)
    np.testing.assert_allclose(ds.PixelSpacing, (spacing[1], spacing[0]), atol=1e-6)
    single = read_image(tmp_path / "series" / "slice001.dcm")
    np.testing.assert_array_equal(single.array, volume[:, :, 1])
    np.testing.assert_allclose(single.affine[:3, :2], expected[:3, :2], atol=1e-5)


def test_folder_without_dicom_series_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="empty.*no DICOM series"):
        read_image(tmp_path / "empty")


# ---- round trips through our writer ------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".nii.gz", ".mha", ".nrrd"])
@pytest.mark.parametrize("shape", [(7, 6, 5), (7, 6)])
def test_round_trip_keeps_voxels_and_oblique_affine(tmp_path, suffix, shape):
    rng = np.random.default_rng(1)
    array = rng.standard_normal(shape).astype(np.float32)
    affine = oblique_affine()
    path = write_image(array, affine, tmp_path / f"scan{suffix}")
    image = read_image(path)
    np.testing.assert_array_equal(image.array, array)
    np.testing.assert_allclose(image.affine, affine, atol=1e-5)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd", ".nii.gz"])
def test_round_trip_keeps_integer_and_boolean_masks(tmp_path, suffix):
    labels = np.arange(60, dtype=np.int64).reshape(5, 4, 3) % 4
    image = read_image(write_image(labels, affine_from_spacing((1.0, 2.0, 3.0)), tmp_path / f"labels{suffix}"))
    np.testing.assert_array_equal(image.array, labels)
    mask = read_image(write_image(labels > 1, np.eye(4), tmp_path / f"mask{suffix}"))
    np.testing.assert_array_equal(mask.array, (labels > 1).astype(np.uint8))


def test_our_nifti_has_the_same_geometry_in_itk(tmp_path):
    affine = oblique_affine()
    write_image(np.zeros((4, 5, 6), np.float32), affine, tmp_path / "scan.nii.gz")
    itk = sitk.ReadImage(str(tmp_path / "scan.nii.gz"))  # ITK's own NIfTI reader, in LPS
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :3]
    np.testing.assert_allclose(itk.GetSpacing(), (0.7, 1.3, 2.5), atol=1e-5)
    np.testing.assert_allclose(np.reshape(itk.GetDirection(), (3, 3)), lps / (0.7, 1.3, 2.5), atol=1e-5)
    np.testing.assert_allclose(itk.GetOrigin(), (-12.0, 30.5, 7.25), atol=1e-5)


def test_npy_has_identity_geometry(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    image = read_image(write_image(array, oblique_affine(), tmp_path / "scan.npy"))
    np.testing.assert_array_equal(image.array, array)
    np.testing.assert_array_equal(image.affine, np.eye(4))


def test_write_like_puts_a_prediction_in_the_scan_geometry(tmp_path):
    scan = write_image(np.zeros((6, 5, 4), np.int16), oblique_affine(), tmp_path / "scan.mha")
    prediction = np.linspace(0, 1, 120, dtype=np.float32).reshape(6, 5, 4)
    written = read_image(write_like(prediction, scan, tmp_path / "out" / "prediction.nii.gz"))
    np.testing.assert_array_equal(written.array, prediction)
    np.testing.assert_allclose(written.affine, read_image(scan).affine, atol=1e-5)
    with pytest.raises(ValueError, match="resample"):
        write_like(prediction[:3], scan, tmp_path / "bad.nii.gz")


# ---- pictures ----------------------------------------------------------------------------------

def test_png_preview_is_scaled_to_8_bits(tmp_path):
    array = np.array([[-1.0, 0.0], [1.0, 3.0]], dtype=np.float32)
    image = read_image(write_image(array, np.eye(4), tmp_path / "preview.png"))
    np.testing.assert_array_equal(image.array, [[0, 64], [128, 255]])
    np.testing.assert_array_equal(image.affine, np.eye(4))
    with pytest.raises(ValueError, match="2D"):
        write_image(np.zeros((2, 2, 2)), np.eye(4), tmp_path / "volume.png")


def test_png_grey_saved_as_rgb_is_read_but_colour_is_refused(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    PILImage.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(tmp_path / "grey.png")
    PILImage.fromarray(np.repeat(grey[..., None], 3, axis=2) * np.array([1, 2, 3], np.uint8)).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_image(tmp_path / "grey.png").array, grey)
    with pytest.raises(ImageReadError, match="rgb.png.*colour"):
        read_image(tmp_path / "rgb.png")


def test_tiff_keeps_float_values_and_refuses_stacks(tmp_path):
    import tifffile

    array = np.random.default_rng(2).standard_normal((5, 7)).astype(np.float32)
    tifffile.imwrite(tmp_path / "slice.tif", array)
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((6, 5, 7), np.uint16))
    image = read_image(tmp_path / "slice.tif")
    np.testing.assert_array_equal(image.array, array)
    with pytest.raises(ImageReadError, match="stack.tif.*NIfTI"):
        read_image(tmp_path / "stack.tif")


# ---- errors name the file and the fix ----------------------------------------------------------

def test_unreadable_files_raise_errors_naming_them(tmp_path):
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti file at all")
    (tmp_path / "scan.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"broken\.nii\.gz.*Fix:"):
        read_image(tmp_path / "broken.nii.gz")
    with pytest.raises(ImageReadError, match=r"scan\.jpg.*unsupported.*NIfTI"):
        read_image(tmp_path / "scan.jpg")
    with pytest.raises(FileNotFoundError, match="missing.nii"):
        read_image(tmp_path / "missing.nii")
    assert issubclass(ImageNotFoundError, ImageReadError) and issubclass(ImageReadError, ValueError)
    with pytest.raises(ValueError, match=r"scan\.xyz.*\.nii\.gz"):
        write_image(np.zeros((2, 2)), np.eye(4), tmp_path / "scan.xyz")


def test_write_image_accepts_an_image_as_reference(tmp_path):
    reference = Image(np.zeros((3, 4), np.float32), oblique_affine())
    image = read_image(write_image(np.ones((3, 4), np.float32), reference, tmp_path / "a.nii"))
    np.testing.assert_allclose(image.affine, reference.affine, atol=1e-5)
