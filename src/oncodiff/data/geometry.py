"""Voxel grids, resampling, and putting a predicted crop back into the original scan.

Every sample is cut from its original scan in ONE resampling: a crop voxel maps to the preprocessed
grid (RAS-oriented, resampled to ``data.spacing``), then to world coordinates (RAS mm), then, for a
registered follow-up, through the registration into the follow-up's world frame, and finally to a
voxel of the original array. All of these maps are affine, so they compose into one 4x4 matrix and
the original voxels are interpolated once. :func:`paste_back` runs the same chain backwards
(crop -> preprocessed grid -> original grid), again as one interpolation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from oncodiff.cohort.image import Image

# Nearest-neighbour ties (a grid point halfway between two voxels, e.g. when upsampling by 2) break
# towards the higher index of the target grid, so the result does not depend on how a scan is stored.
_TIE_NUDGE = 1e-6


@dataclass(frozen=True, eq=False)
class Grid:
    """A voxel grid: ``shape`` (*spatial) and a 4x4 voxel-to-RAS ``affine`` in mm."""

    affine: np.ndarray
    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, : self.ndim], axis=0))


def canonical_grid(image: Image, spacing: tuple[float, ...] | None = None) -> Grid:
    """The preprocessed grid of ``image``: its axes permuted and flipped to the closest RAS frame, then
    resampled to ``spacing`` mm per axis (None keeps the native spacing). Voxel 0 keeps its centre."""
    ndim = image.ndim
    orientation = nib.orientations.io_orientation(image.affine)[:ndim]
    source_axes = np.argsort(orientation[:, 0])  # grid axis a reads array axis source_axes[a]
    to_source = np.eye(4)
    to_source[:ndim, :ndim] = 0.0
    for axis, source in enumerate(source_axes):
        flipped = orientation[source, 1] < 0
        to_source[source, axis] = -1.0 if flipped else 1.0
        to_source[source, 3] = image.shape[source] - 1 if flipped else 0.0
    shape = tuple(int(image.shape[s]) for s in source_axes)
    grid = Grid(image.affine @ to_source, shape)
    if spacing is None:
        return grid
    if len(spacing) != ndim:
        raise ValueError(f"data.spacing has {len(spacing)} values but the scan is {ndim}D; give {ndim} values")
    zoom = np.asarray(spacing, dtype=float) / np.asarray(grid.spacing)
    new_shape = tuple(max(1, int(round(n / z))) for n, z in zip(shape, zoom))
    scale = np.eye(4)
    scale[range(ndim), range(ndim)] = zoom
    return Grid(grid.affine @ scale, new_shape)


def sample(
    array: np.ndarray,
    array_affine: np.ndarray,
    grid: Grid,
    order: int,
    cval: float = 0.0,
    world_map: np.ndarray | None = None,
) -> np.ndarray:
    """Values of ``array`` (*spatial) at the voxel centres of ``grid`` -> (*grid.shape), float32.

    ``order``: spline order (0 nearest for masks, 1 linear for images). Points more than half a voxel
    outside the array get ``cval``. ``world_map`` (4x4) takes the grid's world frame into the array's
    (a registration transform); None means both share one frame. A 2D grid may sample a 3D array (a
    slice); its third world column then places the plane.
    """
    to_array = np.linalg.inv(array_affine) @ (np.eye(4) if world_map is None else world_map) @ grid.affine
    coords = _grid_coords(to_array, grid.shape, array.ndim, nudge=_TIE_NUDGE if order == 0 else 0.0)
    values = ndimage.map_coordinates(array, coords, output=np.float32, order=order, mode="nearest")
    values[~_inside(coords, array.shape, closed=True)] = cval
    return values.reshape(grid.shape)


def nearest_on_grid(array: np.ndarray, array_affine: np.ndarray, grid: Grid) -> np.ndarray:
    """Nearest-neighbour ``array`` on an axis-aligned ``grid`` (e.g. :func:`canonical_grid`) by indexing.

    Cheap for whole volumes, where :func:`sample` would build a coordinate array per voxel.
    """
    to_array = np.linalg.inv(array_affine) @ grid.affine
    source_axes = [int(np.argmax(np.abs(to_array[: array.ndim, a]))) for a in range(grid.ndim)]
    if sorted(source_axes) != list(range(array.ndim)):
        raise ValueError("nearest_on_grid needs a grid whose axes follow the array's axes")
    index = []
    for axis, source in enumerate(source_axes):
        positions = to_array[source, axis] * (np.arange(grid.shape[axis]) + _TIE_NUDGE) + to_array[source, 3]
        index.append(np.clip(np.floor(positions + 0.5).astype(int), 0, array.shape[source] - 1))
    return np.transpose(array, source_axes)[np.ix_(*index)]


@dataclass(frozen=True, eq=False)
class GeometryRecord:
    """Where a crop came from, so a prediction can be put back into the original baseline scan.

    original_affine/original_shape: the baseline scan as stored in the cohort (for a MIP sample, the
    scan's own maximum projection along ``projection_axis``). grid_*: the preprocessed grid.
    crop_affine: crop voxel -> RAS mm. A 2D crop of a 3D scan is a one-voxel-thick slab: its third
    affine column is the slab's thickness vector.
    """

    original_affine: np.ndarray
    original_shape: tuple[int, ...]
    grid_affine: np.ndarray
    grid_shape: tuple[int, ...]
    crop_affine: np.ndarray
    crop_shape: tuple[int, ...]
    slice_index: int | None = None
    projection_axis: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "original_affine": self.original_affine.tolist(), "original_shape": list(self.original_shape),
            "grid_affine": self.grid_affine.tolist(), "grid_shape": list(self.grid_shape),
            "crop_affine": self.crop_affine.tolist(), "crop_shape": list(self.crop_shape),
            "slice_index": self.slice_index, "projection_axis": self.projection_axis,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GeometryRecord:
        return cls(
            original_affine=np.asarray(raw["original_affine"], dtype=np.float64),
            original_shape=tuple(raw["original_shape"]),
            grid_affine=np.asarray(raw["grid_affine"], dtype=np.float64), grid_shape=tuple(raw["grid_shape"]),
            crop_affine=np.asarray(raw["crop_affine"], dtype=np.float64), crop_shape=tuple(raw["crop_shape"]),
            slice_index=raw.get("slice_index"), projection_axis=raw.get("projection_axis"),
        )


def paste_back(
    record: GeometryRecord, crop_array: np.ndarray, order: int = 1, background: np.ndarray | None = None
) -> Image:
    """Put ``crop_array`` (*crop_shape) back into the original geometry -> Image (*original_shape).

    The chain crop -> preprocessed grid -> undo resampling and orientation -> original grid is one
    affine map, so voxels are interpolated once (``order`` 0 for masks, 1 for images). Voxels outside
    the crop keep ``background`` (an array of the original shape: the baseline scan for predicted
    images) or 0 (drift maps, masks). Intensities are not touched: invert the normalisation first
    (:meth:`IntensityTransform.invert`).
    """
    crop_array = np.asarray(crop_array, dtype=np.float32)
    if crop_array.shape != tuple(record.crop_shape):
        raise ValueError(f"crop_array has shape {crop_array.shape}; this record's crop is {tuple(record.crop_shape)}")
    shape = tuple(record.original_shape)
    out = np.zeros(shape, np.float32) if background is None else np.array(background, dtype=np.float32)
    if out.shape != shape:
        raise ValueError(f"background has shape {out.shape}; the original scan is {shape}")
    # A 2D crop of a 3D scan is a slab one voxel thick along its third axis.
    slab = crop_array.reshape(crop_array.shape + (1,) * (len(shape) - crop_array.ndim))
    to_crop = np.linalg.inv(record.crop_affine) @ record.original_affine
    box = _support_box(np.linalg.inv(to_crop), slab.shape, shape)
    if box is None:
        return Image(out, record.original_affine)
    lo, hi = box
    sub_shape = tuple(hi - lo)
    shifted = to_crop @ _translation(lo)
    coords = _grid_coords(shifted, sub_shape, slab.ndim)
    inside = _inside(coords, slab.shape, closed=False).reshape(sub_shape)
    values = ndimage.map_coordinates(slab, coords, order=order, mode="nearest").reshape(sub_shape)
    region = out[tuple(slice(a, b) for a, b in zip(lo, hi))]
    region[inside] = values[inside]
    return Image(out, record.original_affine)


def paste_crops(records: Sequence[GeometryRecord], crop_arrays: Sequence[np.ndarray], order: int = 1,
                background: np.ndarray | None = None) -> Image:
    """Several crops of one scan (e.g. its tumour slices, or overlapping patches) put back into its original
    geometry -> Image (*original_shape); where crops overlap, the mean of their values. Voxels no crop covers
    keep ``background`` (or 0), as in :func:`paste_back`."""
    if len(records) != len(crop_arrays) or not records:
        raise ValueError(f"paste_crops needs one array per record and at least one: got {len(records)} records, "
                         f"{len(crop_arrays)} arrays")
    if len(records) == 1:
        return paste_back(records[0], crop_arrays[0], order, background)
    total = np.zeros(tuple(records[0].original_shape), np.float64)
    count = np.zeros_like(total)
    for record, array in zip(records, crop_arrays):
        support = crop_support(record)
        total[support] += paste_back(record, array, order).array[support]
        count[support] += 1
    covered = count > 0
    out = np.zeros(total.shape, np.float32) if background is None else np.array(background, dtype=np.float32)
    out[covered] = (total[covered] / count[covered]).astype(np.float32)
    return Image(out, records[0].original_affine)


def crop_support(record: GeometryRecord) -> np.ndarray:
    """Boolean (*original_shape): the original voxels that the crop covers."""
    return paste_back(record, np.ones(record.crop_shape, np.float32), order=0).array > 0


def _translation(offset: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[: len(offset), 3] = offset
    return m


def _grid_coords(matrix: np.ndarray, shape: tuple[int, ...], out_ndim: int, nudge: float = 0.0) -> np.ndarray:
    """(out_ndim, prod(shape)) coordinates of every voxel of ``shape`` (shifted by ``nudge`` voxels)
    mapped by the 4x4 ``matrix``."""
    index = np.indices(shape, dtype=np.float64).reshape(len(shape), -1) + nudge
    return matrix[:out_ndim, : len(shape)] @ index + matrix[:out_ndim, 3:4]


def _inside(coords: np.ndarray, shape: tuple[int, ...], closed: bool) -> np.ndarray:
    """Points within the voxel extent [-0.5, n - 0.5] of ``shape`` (half-open when not ``closed``)."""
    upper = np.asarray(shape, dtype=np.float64)[:, None] - 0.5
    below = coords <= upper if closed else coords < upper
    return np.all((coords >= -0.5) & below, axis=0)


def _support_box(crop_to_target: np.ndarray, crop_shape: tuple[int, ...], shape: tuple[int, ...]):
    """Integer (lo, hi) box of the target voxels that the crop's extent can touch, or None if empty."""
    n = len(crop_shape)
    corners = np.array(np.meshgrid(*[(-0.5, s - 0.5) for s in crop_shape], indexing="ij")).reshape(n, -1)
    mapped = crop_to_target[: len(shape), :n] @ corners + crop_to_target[: len(shape), 3:4]
    lo = np.maximum(np.floor(mapped.min(axis=1)).astype(int), 0)
    hi = np.minimum(np.ceil(mapped.max(axis=1)).astype(int) + 1, np.asarray(shape))
    return None if np.any(hi <= lo) else (lo, hi)


def crop_spacing(geometry: GeometryRecord) -> tuple[float, ...]:
    """Voxel size (mm) of a crop along its own axes; a 2D crop of a 3D scan (a slab one voxel thick) has its
    thickness as a third value, so that its voxels have a volume."""
    columns = np.linalg.norm(np.asarray(geometry.crop_affine)[:3, :3], axis=0)
    axes = max(len(geometry.crop_shape), len(geometry.original_shape))
    return tuple(float(s) for s in columns[:axes])
