"""Where the samples of one baseline are cut: tumour-centred crops, bbox crops, 2D slices and MIPs.

A crop is a small grid placed on the preprocessed grid of the baseline (RAS, ``data.spacing``):
- ``crop: fixed``: ``crop_size`` voxels centred on the centre of the tumour's bounding box, padded
  where it leaves the scan;
- ``crop: bbox``: the tumour's bounding box grown by ``crop_margin`` of its size on each side,
  rescaled to ``crop_size`` (PULSAR);
- 3D scans to 2D samples (``data.slices``): the in-plane crop on every axial slice with tumour
  (``tumor``), on the slice with most tumour (``largest``), or the maximum intensity projection over
  all axial slices (``mip``). After RAS orientation the last axis is inferior -> superior.
  ``slice_margin`` adds that many slices on each side of the tumour's slices (the range in between is
  taken whole), so a tumour that grows into its neighbouring slices is predicted there too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from oncodiff.config import DataConfig
from oncodiff.data.geometry import GeometryRecord, Grid


@dataclass(frozen=True, eq=False)
class Crop:
    """One sample's place: sample the scan on ``grid``; for a MIP take the max over its last axis."""

    grid: Grid
    project: bool
    geometry: GeometryRecord


def plan_crops(
    grid: Grid, tumor: np.ndarray, original_affine: np.ndarray, original_shape: tuple[int, ...], config: DataConfig
) -> list[Crop]:
    """The crops of one baseline. ``tumor``: its mask on ``grid`` (*grid.shape). Empty when no slice qualifies."""
    size = np.asarray(config.crop_size)
    in_plane = len(size)
    box = _tumor_box(tumor, in_plane)
    if config.crop == "bbox":
        low, high = _grown_box(box, config.crop_margin)
        step = (high - low) / size
        offset = low + 0.5 * step  # centre of crop voxel 0 on the grid (voxel centres are integers)
    else:
        centre = (box[0] + box[1]) / 2
        step = np.ones(in_plane)
        offset = np.floor(centre + 0.5) - size // 2
    to_grid = np.eye(4)
    to_grid[range(in_plane), range(in_plane)] = step
    to_grid[:in_plane, 3] = offset
    base = _Placement(grid, to_grid, tuple(int(s) for s in size), original_affine, tuple(original_shape))
    if grid.ndim == in_plane:
        return [base.crop()]
    if config.slices == "mip":
        return [base.projection()]
    return [base.at_slice(k) for k in _tumor_slices(tumor, config)]


def _tumor_box(tumor: np.ndarray, axes: int) -> tuple[np.ndarray, np.ndarray]:
    """Voxel-edge bounds (low, high) of the tumour on the first ``axes`` axes; the whole grid if empty."""
    found = np.nonzero(tumor)
    if len(found[0]) == 0:
        return np.full(axes, -0.5), np.asarray(tumor.shape[:axes], dtype=float) - 0.5
    low = np.array([f.min() for f in found[:axes]], dtype=float) - 0.5
    high = np.array([f.max() for f in found[:axes]], dtype=float) + 0.5
    return low, high


def _grown_box(box: tuple[np.ndarray, np.ndarray], margin: float) -> tuple[np.ndarray, np.ndarray]:
    low, high = box
    grow = margin * (high - low)
    return low - grow, high + grow


def _tumor_slices(tumor: np.ndarray, config: DataConfig) -> list[int]:
    counts = tumor.reshape(-1, tumor.shape[-1]).astype(bool).sum(axis=0)
    if config.slices == "largest":
        return [int(np.argmax(counts))] if counts.max() > 0 else []
    chosen = np.flatnonzero(counts >= max(1, config.min_tumor_voxels))
    if config.slice_margin and chosen.size:
        margin = config.slice_margin
        chosen = np.arange(max(chosen.min() - margin, 0), min(chosen.max() + margin + 1, len(counts)))
    return [int(k) for k in chosen]


def trained_slices(follow_ups: Sequence[Sequence[int]], slice_index: Sequence[int | None],
                   tumour_voxels: np.ndarray, config: DataConfig) -> set[int] | None:
    """The crops a model with ``config`` trains on when ``data.train_slice_margin`` keeps fewer slices than
    ``data.slice_margin`` cuts: those whose axial slice lies at most that many slices beyond the slices with tumour
    of their follow-up (a slice holds tumour when its crop has at least ``data.min_tumor_voxels`` voxels of the
    baseline mask; a follow-up without one keeps every crop). None: every crop (no such margin, or crops that
    are not axial slices). ``follow_ups``: crop indices per follow-up; ``tumour_voxels``: per crop."""
    margin = config.train_slice_margin
    if (config.slices != "tumor" or margin is None or margin >= config.slice_margin
            or any(z is None for z in slice_index)):
        return None
    has_tumour = np.asarray(tumour_voxels) >= max(1, config.min_tumor_voxels)
    kept: set[int] = set()
    for group in follow_ups:
        z = [slice_index[i] for i in group if has_tumour[i]]
        low, high = (min(z) - margin, max(z) + margin) if z else (-np.inf, np.inf)
        kept.update(i for i in group if low <= slice_index[i] <= high)
    return kept


@dataclass(frozen=True, eq=False)
class _Placement:
    """An in-plane crop on ``grid``: ``to_grid`` maps crop voxels to grid voxels on the crop's axes."""

    grid: Grid
    to_grid: np.ndarray
    size: tuple[int, ...]
    original_affine: np.ndarray
    original_shape: tuple[int, ...]

    def _record(self, to_grid: np.ndarray, **extra) -> GeometryRecord:
        return GeometryRecord(
            original_affine=self.original_affine, original_shape=self.original_shape,
            grid_affine=self.grid.affine, grid_shape=self.grid.shape,
            crop_affine=self.grid.affine @ to_grid, crop_shape=self.size, **extra,
        )

    def crop(self) -> Crop:
        return Crop(Grid(self.grid.affine @ self.to_grid, self.size), False, self._record(self.to_grid))

    def at_slice(self, k: int) -> Crop:
        to_grid = self.to_grid.copy()
        to_grid[2, 3] = k
        return Crop(Grid(self.grid.affine @ to_grid, self.size), False, self._record(to_grid, slice_index=k))

    def projection(self) -> Crop:
        depth = self.grid.shape[-1]
        # The record's crop is a slab spanning every slice: its third column covers the whole depth.
        slab = self.to_grid.copy()
        slab[2, 2], slab[2, 3] = depth, (depth - 1) / 2
        axis = _source_axis(self.original_affine, self.grid.affine, 2)
        keep = [a for a in range(3) if a != axis]
        projected = self.original_affine.copy()
        projected[:, :3] = self.original_affine[:, keep + [axis]]
        shape = tuple(self.original_shape[a] for a in keep)
        record = GeometryRecord(
            original_affine=projected, original_shape=shape, grid_affine=self.grid.affine,
            grid_shape=self.grid.shape, crop_affine=self.grid.affine @ slab, crop_shape=self.size,
            projection_axis=axis,
        )
        return Crop(Grid(self.grid.affine @ self.to_grid, self.size + (depth,)), True, record)


def _source_axis(original_affine: np.ndarray, grid_affine: np.ndarray, grid_axis: int) -> int:
    """The original array axis that a (canonical, axis-aligned) grid axis runs along."""
    to_original = np.linalg.inv(original_affine) @ grid_affine
    return int(np.argmax(np.abs(to_original[:3, grid_axis])))
