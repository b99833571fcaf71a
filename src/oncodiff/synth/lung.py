"""Lung: a non-small-cell lung cancer in a CT chest phantom (HU), treated with immune checkpoint inhibitors.

Anatomy (world mm, one analytic definition for 3D volumes and 2D axial slices): body with
subcutaneous fat and chest-wall muscle, ribs, vertebra and spinal canal, heart, aorta, trachea,
mediastinal fat with 3-6 lymph nodes, two lungs (parenchyma -860 HU, denser posteriorly) split into
five lobes by oblique fissures (and the horizontal fissure on the right), and a branching vessel
tree from each hilum. Lobes (label map 1 RUL, 2 RML, 3 RLL, 4 LUL, 5 LLL) and vessels are the
anatomy masks (ImmunoDiff's anatomy guidance). 2D: 192 x 192 at 1.8 mm; 3D: 128 x 128 x 48 at
2.6 x 2.6 x 5 mm. Per patient: body size, position, lung shape, fissure angles, vessel tree, nodes,
texture, noise and a smooth HU offset field.

Growth: Fisher-KPP inside the lung only (D = 0.06 mm^2/day, no flux into the chest wall or
mediastinum), rho = 0.018 /day * exp(0.1 z_nlr); killed cells are cleared at 0.1 /day.

Treatment: immune kill k(t) = kappa (1 - exp(-t / 14 d)) with kappa = 0.17 /day (responder class) or
0.003 /day (non-responder), times exp(0.2 [PD-L1 high] - 0.1 z_nlr + u), u ~ N(0, 0.15^2).

Clinical variables (z_age = (age - 66) / 10, z_nlr = (ln NLR - ln 3.5) / 0.55):

    logit P(responder) = b0 + 1.4 [PD-L1 high] + 0.6 [PD-L1 low] - 0.7 z_nlr - 0.15 z_age + 0.15 [female]
    log hazard = 0.25 z_age + 0.35 z_nlr - 0.3 [PD-L1 high] + 0.3 log_burden - 0.8 [responder]

Response rule (RECIST-like, ImmunoDiff: RECIST at 6 weeks): responder when the longest axial
diameter at day 42 has shrunk by at least 30 % (partial or complete response).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.measure import regionprops

from oncodiff.synth.fields import smooth_noise
from oncodiff.synth.growth import TumourState
from oncodiff.synth.render import Look
from oncodiff.synth.shapes import Grid, branching_tree, ellipsoid, rasterise_tubes
from oncodiff.synth.site import Anatomy, Clinical, Site, Survival, Timepoint
from oncodiff.synth.treatment import Immunotherapy

KAPPA_BY_CLASS = {True: 0.17, False: 0.003}  # 1/day
GRID_2D = ((192, 192), (1.8, 1.8))
GRID_3D = ((128, 128, 48), (2.6, 2.6, 5.0))
HU = {"air": -1000.0, "fat": -95.0, "muscle": 45.0, "blood": 40.0, "contrast": 160.0, "bone": 650.0,
      "marrow": 230.0, "lung": -860.0, "fissure": -650.0, "node": 35.0, "csf": 10.0}


def longest_axial_diameter_mm(mask: np.ndarray, spacing: tuple[float, ...]) -> float:
    """RECIST's measure: the longest in-plane (axial) diameter over all slices, in mm (0 if empty)."""
    slices = [mask] if mask.ndim == 2 else [mask[:, :, k] for k in np.flatnonzero(mask.any(axis=(0, 1)))]
    longest = 0.0
    for plane in slices:
        if plane.any():  # +1 voxel: Feret diameters run between voxel centres
            longest = max(longest, (regionprops(plane.astype(np.uint8))[0].feret_diameter_max + 1) * spacing[0])
    return float(longest)


def _lung_fields(coords, p):
    """(right lung, left lung) occupancy masks for patient parameters ``p``."""
    x, y, z = coords
    lungs = []
    for side in (1.0, -1.0):
        cx, ax = side * p["lung_x"], p["lung_ax"] * (1.0 if side > 0 else 0.92)
        apex = p["apex"] - z
        taper = np.sqrt(np.clip(apex / 70.0, 0.05, 1.0))  # narrow apex
        r = ellipsoid((x, y), (cx, p["lung_y"]), (ax * taper, p["lung_ay"] * taper), power=2.6)
        dome = p["dome"] + (8.0 if side > 0 else 0.0) + 30.0 * np.clip(1 - r * r, 0, 1)  # right dome higher (liver)
        inside = (r < 1.0) & (z < p["apex"]) & (z > dome)
        lungs.append(inside & (ellipsoid((x, y, z), p["heart"], p["heart_axes"]) > 1.08))
    return lungs


def _lobes(coords, right, left, p) -> np.ndarray:
    """Label map 1..5 and the fissure surfaces' signed distances."""
    x, y, z = coords
    oblique = (y - p["fissure_y"]) + p["fissure_slope"] * (z - p["fissure_z"]) + 0.004 * (np.abs(x) - 70) ** 2
    horizontal = z - p["horizontal_z"]
    lobes = np.zeros(np.broadcast_shapes(right.shape, left.shape), np.uint8)
    lobes[right & (oblique < 0)] = 3
    lobes[right & (oblique >= 0) & (horizontal < 0)] = 2
    lobes[right & (oblique >= 0) & (horizontal >= 0)] = 1
    lobes[left & (oblique < 0)] = 5
    lobes[left & (oblique >= 0)] = 4
    on_fissure = (np.abs(oblique) < 0.9) | (right & (oblique >= 0) & (np.abs(horizontal) < 0.9))
    return lobes, on_fissure & (right | left)


def _vessel_trees(rng, p) -> np.ndarray:
    trees = []
    for side in (1.0, -1.0):
        hilum = (side * (p["lung_x"] - 38), p["lung_y"] + 5, p["hilum_z"])
        for dy, dz in ((0.3, 0.9), (-0.3, 0.7), (0.4, -0.8), (-0.5, -0.9), (0.0, 0.0)):
            heading = np.array([side * 1.0, dy, dz]) + 0.2 * rng.standard_normal(3)
            trees.append(branching_tree(rng, hilum, heading, 26.0, 4.5, 4, spread_deg=(18, 38), shrink=0.82))
    return np.concatenate(trees)


def _draw_shape(rng: np.random.Generator) -> dict:
    s = rng.uniform(0.9, 1.06)
    return {
        "scale": s, "shift": rng.uniform(-8, 8, size=2), "fat": rng.uniform(6, 20),
        "lung_x": 76 * s, "lung_y": -6 * s, "lung_ax": 62 * s * rng.uniform(0.95, 1.05),
        "lung_ay": 84 * s * rng.uniform(0.95, 1.05), "apex": 105 * s, "dome": -100 * s,
        "heart": (-22 * s, 28 * s, -45 * s), "heart_axes": (62 * s, 48 * s, 58 * s),
        "fissure_y": rng.uniform(-25, -5), "fissure_z": 30.0, "fissure_slope": rng.uniform(0.7, 1.1),
        "horizontal_z": rng.uniform(-15, 5), "hilum_z": rng.uniform(-5, 15),
        "nodes": [(rng.uniform(-30, 30), rng.uniform(-25, 15), rng.uniform(-30, 50), rng.uniform(3.5, 8.5))
                  for _ in range(int(rng.integers(3, 7)))],
    }


def _mediastinum(coords, p, hu: np.ndarray) -> np.ndarray:
    """Paint heart, aorta, trachea, spine and nodes; return where lungs may not go."""
    x, y, z = coords
    s = p["scale"]
    structures = [
        (ellipsoid((x, y, z), p["heart"], p["heart_axes"]) < 1, 120.0),
        ((ellipsoid((x, y), (-22 * s, -58 * s), (12 * s, 12 * s)) < 1) & (z < 60 * s), HU["contrast"]),
        ((ellipsoid((x, y), (8 * s, 14 * s), (14 * s, 14 * s)) < 1) & (z > -15 * s) & (z < 55 * s), HU["contrast"]),
        ((ellipsoid((x, y), (0, -28 * s), (9 * s, 8 * s)) < 1) & (z > 25 * s), HU["air"]),
        (ellipsoid((x, y), (0, -80 * s), (18 * s, 16 * s)) < 1, HU["bone"]),
        (ellipsoid((x, y), (0, -80 * s), (14 * s, 12 * s)) < 1, HU["marrow"]),
        (ellipsoid((x, y), (0, -104 * s), (8 * s, 7 * s)) < 1, HU["csf"]),
    ] + [(ellipsoid((x, y, z), (nx * s, ny * s, nz * s), (r, r * 0.8, r * 1.2)) < 1, HU["node"])
         for nx, ny, nz, r in p["nodes"]]
    blocked = np.zeros(hu.shape, bool)
    for inside, value in structures:
        inside = np.broadcast_to(inside, hu.shape)
        hu[inside] = value
        blocked |= inside
    return ndimage.binary_dilation(blocked, iterations=2)


def _chest_wall(coords, p, shape) -> tuple[np.ndarray, np.ndarray]:
    """(HU image of body, fat, muscle, ribs and mediastinal fat; the rib cage interior)."""
    x, y, z = coords
    s, fat = p["scale"], p["fat"]
    body = ellipsoid((x, y), (0, 0), (155 * s, 118 * s), 2.2)
    inner = ellipsoid((x, y), (0, 0), (155 * s - fat, 118 * s - fat), 2.2)
    cage = ellipsoid((x, y), (0, 0), (155 * s - fat - 12, 118 * s - fat - 12), 2.2)
    hu = np.full(shape, HU["air"], np.float32)
    hu[np.broadcast_to(body < 1, shape)] = HU["fat"]
    hu[np.broadcast_to(inner < 1, shape)] = HU["muscle"]
    hu[np.broadcast_to(cage < 1, shape)] = HU["fat"] + 15
    angle = np.abs(np.arctan2(x, -y))  # 0 at the spine, pi at the sternum
    ribs = (cage >= 0.95) & (cage < 1.03) & (np.cos(2 * np.pi * (z + 30 * angle) / 32.0) > 0.45)
    hu[np.broadcast_to(ribs, shape)] = HU["bone"]
    return hu, np.broadcast_to(cage < 0.97, shape)


@dataclass(frozen=True)
class LungSite(Site):
    def draw_clinical(self, rng: np.random.Generator) -> Clinical:
        return {
            "age": float(np.clip(np.round(rng.normal(66, 9)), 35, 88)),
            "sex": "M" if rng.random() < 0.55 else "F",
            "nlr": float(np.clip(np.round(np.exp(rng.normal(np.log(3.5), 0.55)), 1), 0.5, 30)),
            "pdl1": str(rng.choice(["negative", "low", "high"], p=[0.35, 0.35, 0.30])),
        }

    @staticmethod
    def _z(clinical: Clinical) -> tuple[float, float, float, float]:
        z_nlr = (np.log(clinical["nlr"]) - np.log(3.5)) / 0.55
        return ((clinical["age"] - 66) / 10, float(z_nlr), float(clinical["pdl1"] == "high"),
                float(clinical["pdl1"] == "low"))

    def response_logit(self, clinical: Clinical) -> float:
        z_age, z_nlr, high, low = self._z(clinical)
        return 1.4 * high + 0.6 * low - 0.7 * z_nlr - 0.15 * z_age + 0.15 * (clinical["sex"] == "F")

    def growth_factor(self, clinical: Clinical) -> float:
        return float(np.exp(0.1 * self._z(clinical)[1]))

    def treatment(self, clinical: Clinical, responder: bool, random_effect: float) -> Immunotherapy:
        _, z_nlr, high, _ = self._z(clinical)
        kappa = KAPPA_BY_CLASS[responder] * np.exp(0.2 * high - 0.1 * z_nlr + random_effect)
        return Immunotherapy(kill_rate=float(kappa), onset_days=14.0)

    def classify(self, baseline: TumourState, assessed: TumourState, spacing: tuple[float, ...]) -> tuple[float, bool]:
        before = longest_axial_diameter_mm(self.gtv(baseline), spacing)
        after = longest_axial_diameter_mm(self.gtv(assessed), spacing)
        change = after / max(before, 1e-6) - 1.0
        return float(change), change <= -0.30

    def size(self, mask: np.ndarray, spacing: tuple[float, ...]) -> float:
        return longest_axial_diameter_mm(mask, spacing)

    def survival_risk(self, clinical: Clinical, log_burden: float, responder: bool) -> float:
        z_age, z_nlr, high, _ = self._z(clinical)
        return 0.25 * z_age + 0.35 * z_nlr - 0.3 * high + 0.3 * log_burden - 0.8 * responder

    def make_anatomy(self, rng: np.random.Generator, dims: int) -> Anatomy:
        shape, spacing = GRID_2D if dims == 2 else GRID_3D
        p = _draw_shape(rng)
        grid = Grid(shape, spacing, slice_z=float(rng.uniform(-45, 35) * p["scale"]))
        x, y, z = grid.coords()
        coords = (x - p["shift"][0], y - p["shift"][1], z)
        hu, cage = _chest_wall(coords, p, shape)
        blocked = _mediastinum(coords, p, hu)
        right, left = (np.broadcast_to(m, shape) & cage & ~blocked for m in _lung_fields(coords, p))
        lung = right | left
        lobes, fissures = _lobes(coords, right, left, p)
        texture = smooth_noise(rng, shape, [2.0 / s for s in spacing])
        parenchyma = HU["lung"] + 25 * texture + 70 * np.clip(-y / 100, 0, 1)  # dependent lung is denser
        hu = np.where(lung, parenchyma, hu)
        hu[fissures] = HU["fissure"]
        vessels = rasterise_tubes(grid, _vessel_trees(rng, p)) * lung
        hu = hu + vessels * (HU["blood"] - hu)
        depth = ndimage.distance_transform_edt(lung, sampling=spacing)
        return Anatomy(
            background=hu.astype(np.float32), diffusivity=(0.06 * lung).astype(np.float32),
            tissue=lung.astype(np.float32), tumour_sites=(depth >= 14.0) & (vessels < 0.1),
            masks={"lobes": lobes, "vessels": (vessels >= 0.5).astype(np.uint8)},
            spacing=spacing, affine=grid.affine(),
        )


LUNG = LungSite(
    name="lung",
    modality="CT",
    timepoints=(Timepoint("pre", 0), Timepoint("week6", 42), Timepoint("week12", 84)),
    assessment_day=42,
    response_column="response",
    response_values=("responder", "non-responder"),
    anatomy_names=("lobes", "vessels"),
    clinical_spec=(
        {"name": "age", "type": "numeric", "group": "demographics", "unit": "years"},
        {"name": "sex", "type": "categorical", "group": "demographics", "categories": ["F", "M"]},
        {"name": "nlr", "type": "numeric", "group": "blood", "unit": "neutrophil/lymphocyte ratio"},
        {"name": "pdl1", "type": "categorical", "group": "immune", "categories": ["negative", "low", "high"]},
    ),
    response_intercept=-1.94,  # calibrate.py: 26 % responders (ImmunoDiff: 19 of 74)
    random_effect_sd=0.15,
    proliferation_per_day=0.018,
    clearance_per_day=0.1,
    pre_growth_days=30,
    seed_radius_mm=(5.0, 13.0),
    penetration_mm=3.0,
    core_sensitivity=0.2,  # T cells infiltrate from the margin
    hypoxic_depth_mm=9.0,
    simulation_box_mm=40.0,
    mass_effect=0.25,
    mass_effect_reach_mm=15.0,
    look=Look(viable=55.0, necrotic=12.0, halo=-560.0, halo_strength=0.5, texture=0.15),
    noise=(10.0, 22.0),
    bias=8.0,
    intensity_scale=1.0,
    stored_range=(-1024, 3071),
    survival=Survival(shape=1.3, median_days=330.0, censor_days=(180.0, 1100.0)),
    reference_radius_mm=12.0,
    rician_noise=False,
)
