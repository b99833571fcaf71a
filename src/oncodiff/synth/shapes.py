"""Analytic phantom geometry in world millimetres: a sampling grid, ellipsoids, branching vessel trees.

A phantom is a function of world coordinates (x, y, z), so one definition gives both a 3D volume
and a 2D axial slice (``Grid.slice_z``) of the same patient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oncodiff.synth.fields import smoothstep


@dataclass(frozen=True)
class Grid:
    """Voxel grid of ``shape`` (2D or 3D) centred on the world origin; a 2D grid is the axial plane z = slice_z."""

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    slice_z: float = 0.0

    @property
    def origin(self) -> tuple[float, ...]:
        return tuple(-(n - 1) * s / 2 for n, s in zip(self.shape, self.spacing))

    def axis(self, axis: int) -> np.ndarray:
        """World coordinates (mm) of the voxel centres along one array axis."""
        return (self.origin[axis] + self.spacing[axis] * np.arange(self.shape[axis])).astype(np.float32)

    def coords(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable (x, y, z) world coordinates; z is a scalar array on a 2D grid."""
        dims = len(self.shape)
        axes = [self.axis(a).reshape([-1 if i == a else 1 for i in range(dims)]) for a in range(dims)]
        z = axes[2] if dims == 3 else np.float32(self.slice_z)
        return axes[0], axes[1], z

    def affine(self) -> np.ndarray:
        affine = np.eye(4)
        affine[: len(self.shape), : len(self.shape)] = np.diag(self.spacing)
        affine[: len(self.shape), 3] = self.origin
        if len(self.shape) == 2:
            affine[2, 3] = self.slice_z
        return affine


def ellipsoid(coords, center, semi_axes, power: float = 2.0) -> np.ndarray:
    """Normalised superellipsoid radius: < 1 inside. ``center``/``semi_axes`` are (x, y, z) in mm."""
    return sum((np.abs(c - c0) / a) ** power for c, c0, a in zip(coords, center, semi_axes)) ** (1.0 / power)


def _rotate(vector: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' rotation of ``vector`` about the unit ``axis``."""
    return (vector * np.cos(angle) + np.cross(axis, vector) * np.sin(angle)
            + axis * np.dot(axis, vector) * (1 - np.cos(angle)))


def branching_tree(
    rng: np.random.Generator, root, direction, length_mm: float, radius_mm: float, generations: int,
    spread_deg: tuple[float, float] = (20.0, 40.0), shrink: float = 0.8,
) -> np.ndarray:
    """A random bifurcating tree: array (n_segments, 7) of start xyz, end xyz and radius (mm).

    Each segment splits into two children rotated by +-angle about a random axis perpendicular to it;
    children are ``shrink`` times as long and 0.75 times as thick (close to Murray's law, 2^(-1/3) = 0.79).
    """
    segments, stack = [], [(np.asarray(root, float), np.asarray(direction, float), length_mm, radius_mm, 0)]
    while stack:
        start, heading, length, radius, generation = stack.pop()
        heading = heading / np.linalg.norm(heading)
        end = start + heading * length
        segments.append([*start, *end, radius])
        if generation == generations:
            continue
        axis = np.cross(heading, rng.standard_normal(3))
        axis /= np.linalg.norm(axis)
        angle = np.deg2rad(rng.uniform(*spread_deg))
        for sign in (-1.0, 1.0):
            stack.append((end, _rotate(heading, axis, sign * angle), length * shrink * rng.uniform(0.85, 1.15),
                          radius * 0.75, generation + 1))
    return np.asarray(segments, dtype=np.float64)


def rasterise_tubes(grid: Grid, segments: np.ndarray) -> np.ndarray:
    """Partial-volume occupancy in [0, 1] of tubes around ``segments`` (see branching_tree), shape grid.shape.

    Loops over segments, each evaluated only on its own bounding box.
    """
    out = np.zeros(grid.shape, np.float32)
    axes = [grid.axis(a) for a in range(len(grid.shape))]
    soft = 0.5 * min(grid.spacing)
    for x0, y0, z0, x1, y1, z1, radius in segments:
        a, b = np.array([x0, y0, z0]), np.array([x1, y1, z1])
        reach = radius + soft
        if len(grid.shape) == 2 and not (min(z0, z1) - reach <= grid.slice_z <= max(z0, z1) + reach):
            continue
        box = tuple(slice(int(np.searchsorted(ax, min(a[i], b[i]) - reach)),
                          int(np.searchsorted(ax, max(a[i], b[i]) + reach)))
                    for i, ax in enumerate(axes))
        if any(s.start >= s.stop for s in box):
            continue
        sub = np.ix_(*[ax[s] for ax, s in zip(axes, box)])
        point = list(sub) + ([np.float32(grid.slice_z)] if len(grid.shape) == 2 else [])
        along = b - a
        t = np.clip(sum((p - a[i]) * along[i] for i, p in enumerate(point)) / max(along @ along, 1e-9), 0, 1)
        distance = np.sqrt(sum((p - a[i] - t * along[i]) ** 2 for i, p in enumerate(point)))
        out[box] = np.maximum(out[box], smoothstep(-distance, -radius - soft, -radius + soft))
    return out
