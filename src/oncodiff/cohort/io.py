"""Reading and writing scans with their geometry, whatever the file format.

Every reader returns an :class:`~oncodiff.cohort.image.Image` in nibabel's convention: the array is
indexed (i, j[, k]) and the 4x4 affine maps voxel indices to RAS+ world coordinates in mm.

- NIfTI (``.nii``, ``.nii.gz``) goes through nibabel (its best affine: sform, else qform).
- DICOM (a series folder, or one ``.dcm`` file), NRRD, MHA and MHD go through SimpleITK. ITK works in
  LPS and its arrays come out (z, y, x); we transpose to (x, y, z) and flip the first two world axes,
  so spacing, origin and direction survive. A single DICOM slice gets SpacingBetweenSlices (else
  SliceThickness) as its out-of-plane spacing, not ITK's default of 1 mm.
- ``.npy``, PNG and TIFF carry no geometry: the array is taken as stored (for a picture: i = row,
  j = column) with an identity affine, i.e. 1 mm pixels at the origin. Colour pictures are refused
  unless all three channels are equal (grey saved as RGB); an alpha channel is dropped.
- Trailing singleton axes are dropped, so a (X, Y, 1) volume is a 2D image (its affine keeps the
  slice's placement). Anything still above 3D (a time series) is refused with a fix.

Writers: NIfTI (both qform and sform set, code 1), ``.mha``/``.mhd``/``.nrrd`` (SimpleITK; a 2D image
is written as one slice of a 3D image so that its full affine survives), ``.npy`` (voxels only, the
geometry is lost) and ``.png`` for 2D, which is a *preview*: values are min-max scaled to 8 bits, so
it is lossy and reading it back does not give the original values.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from oncodiff.cohort.image import Image
from oncodiff.errors import OncodiffError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
TIFF_SUFFIXES = (".tif", ".tiff")
READABLE = "NIfTI (.nii, .nii.gz), a DICOM series folder or .dcm file, NRRD/MHA/MHD, .npy, or PNG/TIFF for 2D"
WRITABLE = ".nii, .nii.gz, .mha, .mhd, .nrrd, .npy, or .png (2D preview)"
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse: flips the x and y world axes


class ImageReadError(OncodiffError, ValueError):
    """A scan that cannot be read; the message names the file and how to fix it."""


class ImageNotFoundError(ImageReadError, FileNotFoundError):
    """A scan path that does not exist."""


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _has_dicom_magic(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(132)[128:132] == b"DICM"


def image_format(path: str | Path) -> str:
    """The reader a path needs: nifti, dicom-series, dicom, itk, npy, png or tiff."""
    path = Path(path)
    suffix = _suffix(path)
    if path.is_dir():
        return "dicom-series"
    by_suffix = {".nii": "nifti", ".nii.gz": "nifti", ".npy": "npy", ".png": "png"}
    by_suffix |= {s: "itk" for s in ITK_SUFFIXES} | {s: "tiff" for s in TIFF_SUFFIXES}
    by_suffix |= {s: "dicom" for s in DICOM_SUFFIXES}
    if suffix in by_suffix:
        return by_suffix[suffix]
    if path.is_file() and _has_dicom_magic(path):
        return "dicom"
    raise ImageReadError(f"{path}: unsupported image format {suffix or '(no suffix)'!r}. Fix: use {READABLE}.")


def read_image(path: str | Path) -> Image:
    """Read a scan as an :class:`Image`: voxels (*spatial) and a 4x4 voxel-to-RAS affine in mm.

    ``path`` is a file of any format in :data:`READABLE`, or a folder holding one DICOM series.
    Raises :class:`ImageReadError` (a ValueError) naming the file and the fix.
    """
    path = Path(path)
    if not path.exists():
        raise ImageNotFoundError(f"{path}: no such file or folder. Fix: check the path and its spelling.")
    kind = image_format(path)
    try:
        array, affine = _READERS[kind](path)
    except ImageReadError:
        raise
    except Exception as error:  # library errors (nibabel, ITK, Pillow) become one actionable error
        raise ImageReadError(
            f"{path}: cannot be read as {kind}: {error}. Fix: check that the file is complete and really is "
            f"{kind}, or convert it to NIfTI."
        ) from error
    return _as_image(np.asarray(array), affine, path)


def stored_shape(path: str | Path) -> tuple[int, ...]:
    """The voxel shape as the file stores it, trailing singleton axes included (a 64x64x1 DICOM slice is
    (64, 64, 1), where :func:`read_image` gives a (64, 64) image); read from the header where there is one."""
    path = Path(path)
    kind = image_format(path)
    try:
        if kind == "nifti":
            return tuple(int(n) for n in nib.load(str(path)).shape)
        if kind in ("itk", "dicom"):
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            return tuple(int(n) for n in reader.GetSize())
    except Exception:  # an unreadable header: the reader below names the problem
        pass
    return read_image(path).shape


def with_stored_shape(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``array`` given back the trailing singleton axes of ``shape`` that reading dropped (else unchanged)."""
    if len(shape) > array.ndim and tuple(shape[:array.ndim]) == array.shape and set(shape[array.ndim:]) == {1}:
        return array.reshape(shape)
    return array


def _check_dims(shape: tuple[int, ...], path: Path) -> int:
    """The number of spatial axes once trailing singleton axes are dropped; refuses 1D and 4D+."""
    ndim = len(shape)
    while ndim > 2 and shape[ndim - 1] == 1:
        ndim -= 1
    if ndim not in (2, 3):
        raise ImageReadError(
            f"{path}: has shape {tuple(shape)}, but a scan is one 2D or 3D image. Fix: save one volume per file "
            "(for a 4D NIfTI: nibabel's img.slicer[..., t])."
        )
    return ndim


def _as_image(array: np.ndarray, affine: np.ndarray, path: Path) -> Image:
    array = array.reshape(array.shape[: _check_dims(array.shape, path)])
    if array.dtype.kind not in "biuf":
        raise ImageReadError(f"{path}: voxels of type {array.dtype} are not real numbers. Fix: save real values.")
    if array.dtype.kind == "f" and array.dtype.itemsize < 4:
        array = array.astype(np.float32)
    array = array.astype(array.dtype.newbyteorder("="), copy=False)  # torch refuses big-endian arrays
    return Image(np.ascontiguousarray(array), np.asarray(affine, dtype=np.float64))


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(path))
    _check_dims(image.shape, path)  # before loading the voxels of, say, a long fMRI series
    return np.asanyarray(image.dataobj), image.affine


def _read_npy(path: Path) -> tuple[np.ndarray, np.ndarray]:
    return np.load(path, allow_pickle=False), np.eye(4)


def _read_itk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    return _from_sitk(sitk.ReadImage(str(path)), path)


def _read_dicom_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = sitk.ReadImage(str(path))
    if image.GetDimension() == 3 and image.GetSize()[2] == 1:
        # One slice: ITK has no neighbour to measure the slice spacing from and assumes 1 mm.
        for tag in ("0018|0088", "0018|0050"):  # SpacingBetweenSlices, then SliceThickness
            if image.HasMetaDataKey(tag) and image.GetMetaData(tag).strip():
                image.SetSpacing(image.GetSpacing()[:2] + (float(image.GetMetaData(tag)),))
                break
    return _from_sitk(image, path)


def _read_dicom_series(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if len(series) != 1:
        found = "no DICOM series" if not series else f"{len(series)} DICOM series ({', '.join(series)})"
        raise ImageReadError(
            f"{folder}: a folder is read as one DICOM series, but it holds {found}. "
            "Fix: give each series its own folder, or point to a NIfTI/NRRD file instead."
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))
    return _from_sitk(reader.Execute(), folder)


def _from_sitk(image: sitk.Image, path: Path) -> tuple[np.ndarray, np.ndarray]:
    if image.GetDimension() > 3:
        raise ImageReadError(
            f"{path}: a {image.GetDimension()}D image of size {image.GetSize()}; a scan is one 2D or 3D image. "
            "Fix: save one volume per file."
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(
            f"{path}: has {image.GetNumberOfComponentsPerPixel()} values per voxel (colour or vector image). "
            "Fix: save a single-channel (grayscale) image."
        )
    return sitk.GetArrayViewFromImage(image).T.copy(), affine_from_sitk(image)


def affine_from_sitk(image: sitk.Image) -> np.ndarray:
    """The 4x4 voxel-to-RAS affine (mm) of a 2D or 3D SimpleITK image (which lives in LPS)."""
    dim = image.GetDimension()
    if dim > 3:
        raise ValueError(f"a {dim}D image has no 4x4 affine; only 2D and 3D images do")
    direction, spacing, origin = np.eye(3), np.ones(3), np.zeros(3)
    direction[:dim, :dim] = np.reshape(image.GetDirection(), (dim, dim))
    spacing[:dim] = image.GetSpacing()
    origin[:dim] = image.GetOrigin()
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing  # scales column k by the spacing of axis k
    affine[:3, 3] = origin
    return LPS_FROM_RAS @ affine


def _read_png(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image as PILImage

    with PILImage.open(path) as picture:
        if picture.mode == "P":
            picture = picture.convert("RGBA")
        array = np.asarray(picture)
    return _grayscale(array, path), np.eye(4)


def _read_tiff(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        series = tiff.series[0]
        array, axes = series.asarray(), series.axes
    extra = [a for a, n in zip(axes, array.shape) if a not in "YXS" and n > 1]
    if extra:
        raise ImageReadError(
            f"{path}: a TIFF stack with axes {axes} and shape {array.shape}; TIFF is read as one 2D picture. "
            "Fix: save a volume as NIfTI, or one slice per TIFF."
        )
    keep = [axis for axis, name in enumerate(axes) if name in "YXS"]
    array, axes = array.reshape([array.shape[axis] for axis in keep]), "".join(axes[axis] for axis in keep)
    if "S" in axes:
        array = np.moveaxis(array, axes.index("S"), -1)
    return _grayscale(array, path), np.eye(4)


def _grayscale(array: np.ndarray, path: Path) -> np.ndarray:
    """A picture (rows, columns[, channels]) as (rows, columns): drop alpha, accept grey-as-RGB only."""
    if array.ndim == 2:
        return array
    if array.ndim != 3 or array.shape[-1] not in (2, 3, 4):
        raise ImageReadError(f"{path}: a picture of shape {array.shape} is not 2D. Fix: save a 2D grayscale picture.")
    colour = array[..., :-1] if array.shape[-1] in (2, 4) else array  # drop the alpha channel
    if not np.all(colour == colour[..., :1]):
        raise ImageReadError(
            f"{path}: is a colour picture; oncodiff reads intensities, not colours (a colour map cannot be undone). "
            "Fix: save the grayscale intensities, e.g. PIL's image.convert('L'), or the original scan."
        )
    return colour[..., 0]


_READERS = {
    "nifti": _read_nifti, "itk": _read_itk, "dicom": _read_dicom_file, "dicom-series": _read_dicom_series,
    "npy": _read_npy, "png": _read_png, "tiff": _read_tiff,
}


def write_image(array: np.ndarray, reference: Image | np.ndarray, path: str | Path) -> Path:
    """Write ``array`` (*spatial, 2D or 3D) with the geometry of ``reference`` (an Image or a 4x4 affine).

    The format follows the suffix (:data:`WRITABLE`); parent folders are created. Returns ``path``.
    """
    path = Path(path)
    affine = reference.affine if isinstance(reference, Image) else np.asarray(reference, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"{path}: the reference affine must be 4x4, got shape {affine.shape}")
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise ValueError(f"{path}: can only write a 2D or 3D array, got shape {array.shape}")
    writer = _WRITERS.get(_suffix(path))
    if writer is None:
        raise ValueError(f"{path}: cannot write {_suffix(path) or 'a file without suffix'!r}. Fix: use {WRITABLE}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer(_writable(array), affine, path)
    return path


def write_like(array: np.ndarray, reference_path: str | Path, out_path: str | Path) -> Path:
    """Write ``array`` in the geometry of the scan at ``reference_path`` (same shape required).

    This is how a prediction goes back onto the grid of the scan it was predicted from, so it overlays
    on that scan in any viewer.
    """
    reference = read_image(reference_path)
    if np.shape(array) != reference.shape:
        raise ValueError(
            f"array of shape {np.shape(array)} does not fit {reference_path}, of shape {reference.shape}. "
            "Fix: resample the array back onto the scan's grid before writing it."
        )
    return write_image(array, reference, out_path)


def _writable(array: np.ndarray) -> np.ndarray:
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype.kind == "f" and array.dtype.itemsize < 4:
        return array.astype(np.float32)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"cannot write voxels of type {array.dtype}; use a real-valued numeric array")
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def _write_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    dtype = None
    if array.dtype.itemsize == 8 and array.dtype.kind in "iu":  # nibabel wants an explicit 64-bit int choice
        fits = array.size == 0 or (array.min() >= np.iinfo(np.int32).min and array.max() <= np.iinfo(np.int32).max)
        dtype = np.int32 if fits else array.dtype
    image = nib.Nifti1Image(array, affine, dtype=dtype)
    image.set_qform(affine, code=1)  # both set so ITK-based viewers and nibabel agree on the geometry
    image.set_sform(affine, code=1)
    nib.save(image, str(path))


def _write_itk(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    sitk.WriteImage(sitk_image(array, affine), str(path), useCompression=True)


def sitk_image(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A 3D SimpleITK image (LPS) from an (i, j[, k]) array and its voxel-to-RAS affine; 2D gets one slice."""
    volume = array if array.ndim == 3 else array[..., None]
    lps = LPS_FROM_RAS @ _complete_affine(affine)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.T))  # ITK's arrays are (z, y, x)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    return image


def _complete_affine(affine: np.ndarray) -> np.ndarray:
    """A 2D image's affine may leave its unused third column zero; ITK needs a full direction."""
    columns = np.linalg.norm(affine[:3, :3], axis=0)
    if columns[0] == 0 or columns[1] == 0:
        raise ValueError(f"the affine's first two columns must be non-zero (voxel sizes), got\n{affine}")
    if columns[2] > 0:
        return affine
    completed = affine.copy()
    normal = np.cross(affine[:3, 0], affine[:3, 1])
    completed[:3, 2] = normal / np.linalg.norm(normal)
    return completed


def _write_npy(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    np.save(path, array)  # .npy holds voxels only: it reads back with an identity affine


def _write_png(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    from PIL import Image as PILImage

    if array.ndim != 2:
        raise ValueError(f"{path}: PNG holds a 2D picture, got shape {array.shape}. Fix: write a volume as .nii.gz")
    PILImage.fromarray(preview_uint8(array)).save(path)


def preview_uint8(array: np.ndarray) -> np.ndarray:
    """Min-max scale (*spatial) values to 0..255 uint8 for viewing; NaN -> 0, a constant image -> 0."""
    values = np.asarray(array, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    low, high = values[finite].min(), values[finite].max()
    scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
    return np.where(finite, np.rint(scaled), 0).astype(np.uint8)


_WRITERS = {
    ".nii": _write_nifti, ".nii.gz": _write_nifti, ".mha": _write_itk, ".mhd": _write_itk, ".nrrd": _write_itk,
    ".npy": _write_npy, ".png": _write_png,
}
