"""Rigid or affine registration of a follow-up scan to its baseline (SimpleITK).

Images go to SimpleITK with their RAS geometry as is (no LPS flip): registration only needs one
consistent physical frame, and a rigid map stays rigid in a mirrored frame. The result is a 4x4
matrix on RAS mm that takes a point of the baseline to the same anatomy in the follow-up, which is
what :func:`oncodiff.data.geometry.sample` composes into the crop's resampling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from oncodiff.cohort.cohort import load_cohort
from oncodiff.cohort.image import Image
from oncodiff.cohort.io import read_image
from oncodiff.cohort.schema import SCANS_CSV

# Above this many voxels the metric uses a fixed-seed random subset (speed, still deterministic).
_FULL_SAMPLING_VOXELS = 50_000
# The misalignment measure fits on voxels of about this size, in one level: cheap, and good to a mm.
_MEASURE_SPACING_MM = 4.0
MISALIGNMENT_WARNING_MM = 1.0  # misalignment_warnings: mean displacement that counts as misaligned
MISALIGNMENT_MEASURE_MM = 6.0  # ... measured on voxels of about this size (cheap)


def register(fixed: Image, moving: Image, kind: Literal["rigid", "affine"], seed: int = 0) -> np.ndarray:
    """4x4 map on RAS mm: a point of ``fixed`` (the baseline) -> the matching point of ``moving``.

    Mattes mutual information (robust to the intensity change that treatment causes), multi-resolution
    regular-step gradient descent, started from the images' geometric centres. 2D images register in
    the world plane that their axes span.
    """
    if kind not in ("rigid", "affine"):
        raise ValueError(f"data.registration={kind!r}: choose none, rigid or affine")
    if fixed.ndim != moving.ndim:
        raise ValueError(f"cannot register a {moving.ndim}D follow-up to a {fixed.ndim}D baseline")
    rows = _world_rows(fixed)
    fixed_itk, moving_itk = _to_itk(fixed, rows), _to_itk(moving, rows)
    dim = fixed.ndim
    rigid = sitk.CenteredTransformInitializer(
        fixed_itk, moving_itk, sitk.Euler3DTransform() if dim == 3 else sitk.Euler2DTransform(),
        sitk.CenteredTransformInitializerFilter.GEOMETRY,
    )
    _optimise(fixed_itk, moving_itk, rigid, seed)
    if kind == "rigid":
        return _world_matrix(rigid, rows)
    # Affine starts from the rigid solution: the extra degrees of freedom converge poorly from scratch.
    affine = sitk.AffineTransform(dim)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    _optimise(fixed_itk, moving_itk, affine, seed)
    return _world_matrix(affine, rows)


def measure_misalignment(fixed: Image, moving: Image, seed: int = 0,
                         spacing_mm: float = _MEASURE_SPACING_MM) -> tuple[float, np.ndarray]:
    """(mean displacement in mm over ``fixed``'s foreground, the 4x4 map) of a coarse rigid registration.

    One resolution level on voxels of about ``spacing_mm`` and at most 100 iterations: a fraction of a full
    registration's time, so preprocessing (``data.registration=auto``) and ``oncodiff validate`` can
    afford it for every follow-up. The displacement is how far the baseline's anatomy moved. A blank scan
    (one value everywhere; validate warns about it) has nothing to align: 0 mm and the identity.
    """
    if np.ptp(np.asarray(fixed.array)) == 0 or np.ptp(np.asarray(moving.array)) == 0:
        return 0.0, np.eye(4)
    rows = _world_rows(fixed)
    fixed_itk, moving_itk = _to_itk(fixed, rows), _to_itk(moving, rows)
    rigid = sitk.CenteredTransformInitializer(
        fixed_itk, moving_itk, sitk.Euler3DTransform() if fixed.ndim == 3 else sitk.Euler2DTransform(),
        sitk.CenteredTransformInitializerFilter.GEOMETRY,
    )
    shrink = max(1, int(round(spacing_mm / min(fixed_itk.GetSpacing()))))
    _optimise(fixed_itk, moving_itk, rigid, seed, levels=[shrink], iterations=100)
    world_map = _world_matrix(rigid, rows)
    return displacement_mm(fixed, world_map), world_map


def displacement_mm(image: Image, world_map: np.ndarray) -> float:
    """Mean distance (mm) that ``world_map`` moves the voxels of ``image``'s foreground (Otsu)."""
    from oncodiff.data.intensity import foreground

    array = np.asarray(image.array, dtype=np.float32)
    threshold = float(foreground(array).min()) if np.ptp(array) > 0 else float(array.min())
    voxels = np.argwhere(array >= threshold)[:: max(1, int(array.size // 20000))]
    homogeneous = np.c_[voxels, np.zeros((len(voxels), 3 - image.ndim)), np.ones(len(voxels))]
    points = homogeneous @ image.affine.T
    return float(np.linalg.norm((points @ (world_map - np.eye(4)).T)[:, :3], axis=1).mean())


def _world_rows(image: Image) -> list[int]:
    """The world axes (0 R, 1 A, 2 S) that the image's array axes mostly follow."""
    return [int(a) for a in nib.orientations.io_orientation(image.affine)[: image.ndim, 0]]


def _to_itk(image: Image, rows: list[int]) -> sitk.Image:
    ndim = image.ndim
    columns = image.affine[rows][:, :ndim]
    spacing = np.linalg.norm(image.affine[:3, :ndim], axis=0)
    # SimpleITK indexes arrays (k, j, i); the transpose keeps index (i, j, k) on our voxel (i, j, k).
    itk = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(image.array, dtype=np.float32).T))
    itk.SetSpacing([float(s) for s in spacing])
    itk.SetOrigin([float(x) for x in image.affine[rows, 3]])
    itk.SetDirection([float(x) for x in (columns / spacing).ravel()])
    return itk


def _optimise(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, seed: int,
              levels: list[int] | None = None, iterations: int = 300) -> None:
    """Optimise ``transform`` in place; ``levels``: shrink factors (default coarse-to-fine 4, 2, 1)."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    voxels = int(np.prod(fixed.GetSize()))
    if voxels > _FULL_SAMPLING_VOXELS:
        method.SetMetricSamplingStrategy(method.RANDOM)
        # SimpleITK reads seed 0 as "seed from the wall clock": shift by one to stay deterministic.
        method.SetMetricSamplingPercentage(_FULL_SAMPLING_VOXELS / voxels, seed + 1)
    else:
        method.SetMetricSamplingStrategy(method.NONE)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=iterations, gradientMagnitudeTolerance=1e-8
    )
    method.SetOptimizerScalesFromPhysicalShift()
    # Coarse-to-fine, keeping at least 4 voxels along the shortest axis at the coarsest level.
    shrink = [f for f in (levels or (4, 2, 1)) if f == 1 or min(fixed.GetSize()) // f >= 4] or [1]
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel([f / 2 if f > 1 else 0 for f in shrink])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)


def _world_matrix(transform: sitk.Transform, rows: list[int]) -> np.ndarray:
    """SimpleITK's x -> A (x - c) + c + t as a 4x4 matrix on the world axes ``rows``."""
    dim = len(rows)
    a = np.asarray(transform.GetMatrix(), dtype=np.float64).reshape(dim, dim)
    center = np.asarray(transform.GetCenter(), dtype=np.float64)
    translation = np.asarray(transform.GetTranslation(), dtype=np.float64)
    out = np.eye(4)
    out[np.ix_(rows, rows)] = a
    out[rows, 3] = center + translation - a @ center
    return out


# ---- warnings (a valid cohort may still need preprocessing) --------------------------------------

def misalignment_warnings(root: str | Path, threshold_mm: float = MISALIGNMENT_WARNING_MM) -> list[str]:
    """One line per follow-up that looks misaligned to its baseline, saying by how much (``validate --details``).

    The measure is a coarse rigid registration (about 6 mm voxels, one level) and the mean distance
    it moves the baseline's foreground: cheap, and good to about a millimetre. Call it on a valid
    cohort; it reads every baseline and follow-up image once more.
    """
    found, failed, _ = _misaligned(root, threshold_mm)
    return [line for line, _ in found] + failed


def misalignment_report(root: str | Path,
                        threshold_mm: float = MISALIGNMENT_WARNING_MM) -> tuple[str | None, list[str]]:
    """(one summary line or None when every follow-up looks aligned, one line per misaligned follow-up)."""
    found, failed, total = _misaligned(root, threshold_mm)
    summary = misalignment_summary([moved for _, moved in found], total, "look", "preprocessing registers them "
                                   "(data.registration=auto, the default); `oncodiff validate --details` lists them")
    if failed:  # SimpleITK could not fit (a tiny field of view, say): said in the summary, not a traceback
        note = f"{len(failed)} of {total} follow-ups: " + "; ".join(failed)
        summary = f"{summary}\n{note}" if summary else note
    return summary, [line for line, _ in found] + failed


def misalignment_summary(moved_mm: list[float], total: int, verb: str, then: str) -> str | None:
    """"48 of 48 follow-ups look misaligned to their baseline, 1.4-3.2 mm; THEN", or None for none."""
    if not moved_mm:
        return None
    low, high = min(moved_mm), max(moved_mm)
    spread = f"{low:.1f} mm" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}-{high:.1f} mm"
    verb = verb + ("s" if len(moved_mm) == 1 and verb == "look" else "")
    return f"{len(moved_mm)} of {total} follow-ups {verb} misaligned to their baseline, {spread}; {then}"


def _misaligned(root: str | Path, threshold_mm: float) -> tuple[list[tuple[str, float]], list[str], int]:
    """([(detail line, mm moved)] for each misaligned follow-up, [a line for each follow-up whose alignment could
    not be measured], the number of follow-ups). Lesions are measured in parallel on every core (parallel.py), in
    the cohort's order."""
    from oncodiff.data.parallel import run_jobs

    cohort = load_cohort(Path(root), validate=False)  # validated by the caller (with its --allow-external)
    lesions = [(cohort, patient, lesion, rows, threshold_mm) for (patient, lesion), rows
               in cohort.pairs().groupby(["patient_id", "lesion_id"], sort=False)]
    found, failed, total = [], [], 0
    for lesion_found, lesion_failed, measured in run_jobs(_misaligned_lesion, lesions):
        found += lesion_found
        failed += lesion_failed
        total += measured
    return found, failed, total


def _misaligned_lesion(cohort, patient: str, lesion: str, rows, threshold_mm: float) -> tuple[list, list, int]:
    baseline_path = rows.iloc[0]["pre_image"]
    baseline = read_image(cohort.path(baseline_path))
    found, failed = [], []
    for _, row in rows.iterrows():
        try:
            moved, _ = measure_misalignment(baseline, read_image(cohort.path(row["image"])),
                                            spacing_mm=MISALIGNMENT_MEASURE_MM)
        except RuntimeError:  # SimpleITK could not fit (a tiny field of view, say)
            failed.append(f"{SCANS_CSV}: {row['image']} (patient {patient}, lesion {lesion}, {row['timepoint']}): "
                          f"its alignment to {baseline_path} could not be measured (the rigid fit failed); "
                          "preprocessing may fail on it too")
            continue
        if moved > threshold_mm:
            found.append((
                f"{SCANS_CSV}: {row['image']} (patient {patient}, lesion {lesion}, {row['timepoint']}) looks "
                f"misaligned to its baseline {baseline_path}: a coarse rigid fit moves the anatomy {moved:.1f} mm "
                "on average. Preprocessing registers it (data.registration=auto, the default); keep that on, "
                "or register the follow-up to its baseline yourself.", moved))
    return found, failed, len(rows)
