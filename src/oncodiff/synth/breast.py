"""Breast: an invasive carcinoma in a DCE-MRI-like volume, treated with neoadjuvant chemotherapy.

Anatomy (world mm): a prone bilateral breast volume, 160 x 96 x 48 voxels at 1.8 x 1.8 x 3 mm
(x left-right, y posterior-anterior, z inferior-superior; 32 slices of 4.5 mm for 2D cohorts) in early post-contrast contrast: dark fat,
fibroglandular tissue (a thresholded Gaussian random field denser behind the nipple) with
background parenchymal enhancement, a skin line, enhancing vessels branching from the lateral
thoracic and internal mammary arteries, pectoral muscle, and the strongly enhancing heart behind
the chest wall. 2D cohorts are the maximum intensity projection (MIP) along z of such a volume,
as in the NAC paper (003); tumour masks are projected the same way. Anatomy masks: breast, vessels.

Growth: Fisher-KPP with D = 0.03 mm^2/day in fibroglandular tissue and 0.012 in fat, zero outside
the breast; rho = 0.02 /day, 1.5x in HR-negative tumours.

Treatment (I-SPY 2 / ACRIN 6698 backbone): weekly paclitaxel from day 1 for 12 weeks, then four
cycles of AC (doxorubicin + cyclophosphamide) every two weeks from day 85; surgery on day 160.
Cells die by the Norton-Simon mixture of treatment.py with 15 % taxane-resistant cells. Log kill
per dose (sensitive, resistant):
    pCR class:     paclitaxel (0.95, 0.205), AC (2.0, 2.0)  - AC reaches the resistant cells
    non-pCR class: paclitaxel (1.00, 0.13),  AC (1.5, 0.1)  - residual disease survives
all times exp(-0.15 [HR+] + 0.1 [HER2+] + u), u ~ N(0, 0.15^2). These values reproduce the NAC
paper's mean MIP size reductions (Table 3; see calibrate.py).

Clinical variables (z_age = (age - 49) / 10):

    logit P(pCR) = b0 - 1.1 [HR+] + 1.1 [HER2+] - 0.1 z_age
    log hazard = 0.4 [HR-] + 0.15 z_age + 0.3 log_burden - 1.0 [pCR]

Response rule: pathological complete response when no voxel keeps 5 % viable cellularity at
surgery (day 160), a residual-cancer-burden-0 analogue. Tumour size, as in the NAC paper, is the
tumour's area on the MIP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oncodiff.synth.fields import smooth_noise, smoothstep
from oncodiff.synth.growth import MASK_THRESHOLD, TumourState
from oncodiff.synth.render import Look
from oncodiff.synth.shapes import Grid, branching_tree, ellipsoid, rasterise_tubes
from oncodiff.synth.site import Anatomy, Clinical, Site, Survival, Timepoint
from oncodiff.synth.treatment import ChemoPhase, Chemotherapy

VOLUME = {3: ((160, 96, 48), (1.8, 1.8, 3.0)),
          2: ((160, 96, 32), (1.8, 1.8, 4.5))}  # the same 144 mm; a MIP does not need thin slices
# per class: (resistant fraction, paclitaxel log kill (sensitive, resistant) per weekly dose,
#             AC log kill (sensitive, resistant) per cycle)
CHEMOSENSITIVITY_BY_CLASS = {True: (0.15, (0.95, 0.205), (2.0, 2.0)), False: (0.15, (1.0, 0.13), (1.5, 0.1))}
PACLITAXEL_DAYS = tuple(range(1, 79, 7))  # 12 weekly doses
AC_DAYS = (85, 99, 113, 127)  # 4 cycles every 2 weeks
PCR_MAX_RESIDUAL = 0.05  # pCR: no voxel keeps 5 % viable cellularity at surgery (residual cancer burden 0)
INTENSITY = {"fat": 0.06, "fgt": 0.28, "skin": 0.16, "muscle": 0.12, "vessel": 0.75, "heart": 0.85, "lung": 0.02}


def mip_area_mm2(mask: np.ndarray, spacing: tuple[float, ...]) -> float:
    """Tumour area on the maximum intensity projection along the last axis (the NAC paper's size)."""
    projected = mask.any(axis=2) if mask.ndim == 3 else mask.astype(bool)
    return float(projected.sum() * spacing[0] * spacing[1])


def _draw_shape(rng: np.random.Generator) -> dict:
    return {
        "chest_y": rng.uniform(-52, -38), "breast_x": rng.uniform(72, 88), "breast_z": rng.uniform(-8, 8),
        "axes": (rng.uniform(52, 68), rng.uniform(70, 100), rng.uniform(48, 60)),
        "asymmetry": rng.uniform(0.93, 1.07), "density": rng.uniform(0.15, 0.45), "ptosis": rng.uniform(0.0, 0.25),
    }


def _breasts(coords, p) -> np.ndarray:
    """Normalised radius of the nearer breast: < 1 inside, inf behind the chest wall."""
    x, y, z = coords
    radii = []
    for side, size in ((1.0, 1.0), (-1.0, p["asymmetry"])):
        ax, ay, az = (a * size for a in p["axes"])
        forward = np.clip(y - p["chest_y"], 0, None)
        sag = z + p["ptosis"] * forward  # ptosis: anterior tissue hangs lower
        r = ellipsoid((x, y, sag), (side * p["breast_x"], p["chest_y"], p["breast_z"]), (ax, ay, az))
        radii.append(np.where(y >= p["chest_y"], r, np.inf))
    return np.minimum(radii[0], radii[1])


def _vessel_segments(rng, p) -> np.ndarray:
    trees = []
    for side in (1.0, -1.0):
        lateral = (side * (p["breast_x"] + 0.8 * p["axes"][0]), p["chest_y"] + 6, p["breast_z"] + 15)
        medial = (side * 18.0, p["chest_y"] + 4, p["breast_z"] + rng.uniform(-10, 10))
        for root, heading in ((lateral, (-side * 0.7, 1.0, -0.2)), (lateral, (-side * 0.5, 0.8, 0.3)),
                              (medial, (side * 0.6, 1.0, 0.1)), (medial, (side * 0.4, 1.0, -0.3))):
            trees.append(branching_tree(rng, root, np.asarray(heading) + 0.15 * rng.standard_normal(3),
                                        22.0, 1.6, 4, spread_deg=(15, 35), shrink=0.85))
    return np.concatenate(trees)


def _background(rng, grid: Grid, p: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(intensity, normalised breast radius, fibroglandular occupancy, vessel occupancy) in the volume."""
    shape, spacing = grid.shape, grid.spacing
    x, y, z = grid.coords()
    radius = np.broadcast_to(_breasts((x, y, z), p), shape)
    breast = radius < 1.0
    chest = np.broadcast_to(y < p["chest_y"], shape)
    image = np.zeros(shape, np.float32)
    image[chest] = INTENSITY["lung"]
    image[np.broadcast_to((y < p["chest_y"]) & (y > p["chest_y"] - 12), shape)] = INTENSITY["muscle"]
    heart = np.broadcast_to(ellipsoid((x, y, z), (-15, p["chest_y"] - 62, 0), (75, 42, 70)) < 1, shape)
    image[heart] = INTENSITY["heart"]
    texture = smooth_noise(rng, shape, [4.0 / s for s in spacing])
    prior = np.clip(1.0 - radius, 0, 1)  # denser towards the centre of the breast
    fgt = smoothstep(texture + 2.0 * prior, 2.2 - 2.5 * p["density"], 2.6 - 2.5 * p["density"]) * breast
    fine = smooth_noise(rng, shape, [1.2 / s for s in spacing])
    tissue = INTENSITY["fat"] + fgt * (INTENSITY["fgt"] - INTENSITY["fat"]) * (1 + 0.25 * fine)
    image = np.where(breast, tissue, image)
    image[(radius >= 0.975) & (radius < 1.0)] = INTENSITY["skin"]
    vessels = rasterise_tubes(grid, _vessel_segments(rng, p)) * breast
    image = image + vessels * (INTENSITY["vessel"] - image)
    return image.astype(np.float32), radius, fgt.astype(np.float32), vessels


@dataclass(frozen=True)
class BreastSite(Site):
    def draw_clinical(self, rng: np.random.Generator) -> Clinical:
        return {
            "age": float(np.clip(np.round(rng.normal(49, 10.5)), 25, 78)),
            "hr": "positive" if rng.random() < 0.55 else "negative",
            "her2": "positive" if rng.random() < 0.3 else "negative",
        }

    @staticmethod
    def _z(clinical: Clinical) -> tuple[float, float, float]:
        return (clinical["age"] - 49) / 10, float(clinical["hr"] == "positive"), float(clinical["her2"] == "positive")

    def response_logit(self, clinical: Clinical) -> float:
        z_age, hr, her2 = self._z(clinical)
        return -1.1 * hr + 1.1 * her2 - 0.1 * z_age

    def growth_factor(self, clinical: Clinical) -> float:
        return 1.0 if clinical["hr"] == "positive" else 1.5

    def treatment(self, clinical: Clinical, responder: bool, random_effect: float) -> Chemotherapy:
        _, hr, her2 = self._z(clinical)
        factor = float(np.exp(-0.15 * hr + 0.1 * her2 + random_effect))
        fraction, taxane, anthracycline = CHEMOSENSITIVITY_BY_CLASS[responder]
        phases = (ChemoPhase(PACLITAXEL_DAYS, *taxane), ChemoPhase(AC_DAYS, *anthracycline))
        return Chemotherapy(resistant_fraction=fraction, phases=phases).scaled(factor)

    def classify(self, baseline: TumourState, assessed: TumourState, spacing: tuple[float, ...]) -> tuple[float, bool]:
        residual = float(assessed.viable.max())
        return residual, residual < PCR_MAX_RESIDUAL

    def gtv(self, state: TumourState) -> np.ndarray:
        """DCE-MRI shows enhancing, viable tumour: viable >= 0.3 (dead cells do not enhance)."""
        return (state.viable >= MASK_THRESHOLD).astype(np.uint8)

    def size(self, mask: np.ndarray, spacing: tuple[float, ...]) -> float:
        return mip_area_mm2(mask, spacing)

    def survival_risk(self, clinical: Clinical, log_burden: float, responder: bool) -> float:
        z_age, hr, _ = self._z(clinical)
        return 0.4 * (1 - hr) + 0.15 * z_age + 0.3 * log_burden - 1.0 * responder

    def make_anatomy(self, rng: np.random.Generator, dims: int) -> Anatomy:
        shape, spacing = VOLUME[dims]
        grid, p = Grid(shape, spacing), _draw_shape(rng)
        image, radius, fgt, vessels = _background(rng, grid, p)
        breast = radius < 1.0
        _, y, _ = grid.coords()
        deep = radius < 1.0 - 14.0 / min(p["axes"])  # at least ~14 mm inside the skin
        sites = deep & (fgt > 0.5) & (vessels < 0.1) & np.broadcast_to(y > p["chest_y"] + 15, shape)
        output = grid if dims == 3 else Grid(shape[:2], spacing[:2])
        return Anatomy(
            background=image, diffusivity=(breast * (0.012 + 0.018 * fgt)).astype(np.float32),
            tissue=breast.astype(np.float32), tumour_sites=sites,
            masks={"breast": breast.astype(np.uint8), "vessels": (vessels >= 0.5).astype(np.uint8)},
            spacing=spacing, affine=output.affine(),
        )

    def to_output(self, array: np.ndarray, dims: int) -> np.ndarray:
        """3D volume -> its MIP along z for 2D cohorts."""
        return array if dims == 3 else array.max(axis=2)


BREAST = BreastSite(
    name="breast",
    modality="MRI",
    timepoints=(Timepoint("pre", 0), Timepoint("week3", 21), Timepoint("week12", 84)),
    assessment_day=160,
    response_column="pcr",
    response_values=("yes", "no"),
    anatomy_names=("breast", "vessels"),
    clinical_spec=(
        {"name": "age", "type": "numeric", "group": "demographics", "unit": "years"},
        {"name": "hr", "type": "categorical", "group": "receptors", "categories": ["negative", "positive"]},
        {"name": "her2", "type": "categorical", "group": "receptors", "categories": ["negative", "positive"]},
    ),
    response_intercept=-0.41,  # calibrate.py: 35 % pCR
    random_effect_sd=0.15,
    proliferation_per_day=0.02,
    clearance_per_day=0.08,
    pre_growth_days=30,
    seed_radius_mm=(6.0, 14.0),
    penetration_mm=4.0,
    core_sensitivity=0.3,
    hypoxic_depth_mm=9.0,
    simulation_box_mm=28.0,  # tumours only shrink under chemotherapy
    mass_effect=0.3,
    mass_effect_reach_mm=15.0,
    look=Look(viable=1.0, necrotic=0.1, halo=0.4, halo_strength=0.4, texture=0.08),
    noise=(0.012, 0.025),
    bias=0.1,
    intensity_scale=1000.0,
    stored_range=(0, 32767),
    survival=Survival(shape=1.2, median_days=3000.0, censor_days=(900.0, 2500.0)),
    reference_radius_mm=12.0,
    rician_noise=False,  # early-phase subtraction images: Gaussian noise
)
