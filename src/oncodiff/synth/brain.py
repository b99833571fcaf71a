"""Brain: a glioblastoma-like tumour on the MNI152 template, treated with radiotherapy (Stupp schedule).

Anatomy: nilearn's MNI152 T1 template and grey/white matter maps (shipped with nilearn, offline);
2D: an axial slice of the 1 mm template through the tumour centre (197 x 233); 3D: a 96 x 112 x 48
slab of the 2 mm template. Per patient: scale, rotation, shift, contrast (gamma), texture.

Growth: Fisher-KPP with D = 0.20 mm^2/day in white matter and 0.04 in grey matter (Swanson-type
models: infiltration runs along white-matter tracts, about five times faster than in grey matter);
no growth into CSF.

Treatment: 60 Gy in 30 fractions of 2 Gy, Monday to Friday from day 1 (Stupp); linear-quadratic
kill with alpha/beta = 10 Gy. alpha = 0.055 /Gy (good response class) or 0.016 /Gy (poor), times
exp(0.15 [MGMT methylated] - 0.08 z_age + u), u ~ N(0, 0.15^2) per patient; temozolomide's
radiosensitisation in MGMT-methylated tumours is folded into alpha.

Clinical variables (z_age = (age - 60) / 10, z_kps = (kps - 80) / 10):

    logit P(good response) = b0 + 0.9 [mgmt = methylated] - 0.45 z_age + 0.5 z_kps
    proliferation rho = 0.02 /day * exp(0.12 z_age)
    log hazard = 0.35 z_age - 0.3 z_kps - 0.4 [methylated] + 0.35 log_burden - 0.6 [good response]

Response rule (PULSAR, paper 002): good response when the GTV volume at the last follow-up
(day 120, the 4-month post-treatment MRI of paper 001) is below 80 % of the baseline volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from oncodiff.synth.fields import smooth_noise
from oncodiff.synth.growth import TumourState
from oncodiff.synth.render import Contrast, Look
from oncodiff.synth.site import Anatomy, Clinical, Site, Survival, Timepoint
from oncodiff.synth.treatment import Radiotherapy, weekdays

D_WHITE, D_GREY = 0.20, 0.04  # mm^2/day
ALPHA_BY_CLASS = {True: 0.06, False: 0.016}  # 1/Gy
SLAB_3D = (96, 112, 48)  # voxels of the 2 mm template kept in 3D
SLICE_RANGE_1MM = (82, 122)  # axial template indices with most white matter (z = +10 .. +50 mm)


@lru_cache(maxsize=2)
def _template(resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(T1, grey matter, white matter, affine) of MNI152 at ``resolution`` mm; loaded once per process."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=resolution)
    gm = datasets.load_mni152_gm_template(resolution=resolution).get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=resolution).get_fdata(dtype=np.float32)
    return t1.get_fdata(dtype=np.float32), gm, wm, np.asarray(t1.affine, dtype=np.float64)


def _random_pose(rng: np.random.Generator, shape: tuple[int, ...], spacing: tuple[float, ...], maps: list[np.ndarray]):
    """Apply one random scale (0.93-1.07), in-plane rotation (+-6 deg) and shift (+-5 mm) to every map."""
    dims = len(shape)
    angle = np.deg2rad(rng.uniform(-6, 6))
    rotation = np.eye(dims)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    scale = rng.uniform(0.93, 1.07) * rng.uniform(0.97, 1.03, size=dims)
    matrix = rotation / scale[None, :]
    center = (np.asarray(shape) - 1) / 2
    shift_vox = rng.uniform(-5, 5, size=dims) / np.asarray(spacing)
    offset = center - matrix @ (center + shift_vox)
    return [ndimage.affine_transform(m, matrix, offset, order=1, mode="constant") for m in maps]


@dataclass(frozen=True)
class BrainSite(Site):
    def draw_clinical(self, rng: np.random.Generator) -> Clinical:
        return {
            "age": float(np.clip(np.round(rng.normal(60, 11)), 25, 85)),
            "sex": "M" if rng.random() < 0.6 else "F",
            "kps": float(rng.choice([50, 60, 70, 80, 90, 100], p=[0.05, 0.1, 0.2, 0.3, 0.25, 0.1])),
            "mgmt": "methylated" if rng.random() < 0.45 else "unmethylated",
        }

    @staticmethod
    def _z(clinical: Clinical) -> tuple[float, float, float]:
        return (clinical["age"] - 60) / 10, (clinical["kps"] - 80) / 10, float(clinical["mgmt"] == "methylated")

    def response_logit(self, clinical: Clinical) -> float:
        z_age, z_kps, methylated = self._z(clinical)
        return 0.9 * methylated - 0.45 * z_age + 0.5 * z_kps

    def growth_factor(self, clinical: Clinical) -> float:
        return float(np.exp(0.12 * self._z(clinical)[0]))

    def treatment(self, clinical: Clinical, responder: bool, random_effect: float) -> Radiotherapy:
        z_age, _, methylated = self._z(clinical)
        alpha = ALPHA_BY_CLASS[responder] * np.exp(0.15 * methylated - 0.08 * z_age + random_effect)
        return Radiotherapy(alpha=alpha, beta=alpha / 10, dose_per_fraction_gy=2.0, fraction_days=weekdays(1, 30))

    def classify(self, baseline: TumourState, assessed: TumourState, spacing: tuple[float, ...]) -> tuple[float, bool]:
        ratio = float(self.gtv(assessed).sum() / max(int(self.gtv(baseline).sum()), 1))
        return ratio, ratio < 0.8

    def survival_risk(self, clinical: Clinical, log_burden: float, responder: bool) -> float:
        z_age, z_kps, methylated = self._z(clinical)
        return 0.35 * z_age - 0.3 * z_kps - 0.4 * methylated + 0.35 * log_burden - 0.6 * responder

    def make_anatomy(self, rng: np.random.Generator, dims: int) -> Anatomy:
        t1, gm, wm, affine = _template(1 if dims == 2 else 2)
        if dims == 2:
            k = int(rng.integers(*SLICE_RANGE_1MM))
            maps, affine = [t1[:, :, k], gm[:, :, k], wm[:, :, k]], affine.copy()
            affine[:3, 3] = affine[:3, :3] @ [0, 0, k] + affine[:3, 3]
        else:
            k = int(rng.integers(42, 60))  # slab centre (2 mm index): z = +12 .. +48 mm
            start = (1, 2, k - SLAB_3D[2] // 2)
            box = tuple(slice(s, s + n) for s, n in zip(start, SLAB_3D))
            maps, affine = [t1[box], gm[box], wm[box]], affine.copy()
            affine[:3, 3] = affine[:3, :3] @ np.asarray(start) + affine[:3, 3]
        spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0)[:dims])
        t1, gm, wm = _random_pose(rng, maps[0].shape, spacing, maps)
        return self._assemble(rng, t1, gm, wm, spacing, affine)

    def _assemble(self, rng, t1, gm, wm, spacing, affine) -> Anatomy:
        brain = t1 > 0.05
        texture = 1.0 + 0.03 * smooth_noise(rng, t1.shape, [1.5 / s for s in spacing])
        background = (np.clip(t1, 0, None) ** rng.uniform(0.85, 1.15)) * np.where(brain, texture, 1.0)
        sites = wm > 0.7
        if t1.ndim == 3:  # keep the tumour centre near the slab centre so it never reaches the slab faces
            middle = t1.shape[2] // 2
            sites[:, :, : middle - 3] = False
            sites[:, :, middle + 4:] = False
        return Anatomy(
            background=background.astype(np.float32),
            diffusivity=(D_WHITE * wm + D_GREY * gm).astype(np.float32),
            tissue=np.clip(gm + wm, 0, 1).astype(np.float32),
            tumour_sites=sites,
            masks={"gm": (gm > 0.5).astype(np.uint8), "wm": (wm > 0.5).astype(np.uint8)},
            spacing=spacing,
            affine=affine,
        )


# MRI sequences (``oncodiff synth --sequences``): t1c is the site's own look (an enhancing viable rim, a dark
# necrotic core, a faint halo); t1 without contrast agent (no enhancement, a hypointense tumour); t2 with inverted
# tissue contrast (CSF bright, white matter dark), a bright necrotic core and bright oedema; FLAIR as t2 with the
# CSF nulled, where the oedema is brightest. Tumour values are in the template's units, as `look`.
BRAIN_LOOK = Look(viable=1.15, necrotic=0.22, halo=0.45, halo_strength=0.6)
BRAIN_CONTRASTS = (
    Contrast("t1c", BRAIN_LOOK),
    Contrast("t1", Look(viable=0.42, necrotic=0.25, halo=0.5, halo_strength=0.35)),
    Contrast("t2", Look(viable=0.8, necrotic=1.05, halo=0.95, halo_strength=0.8), tissue=(1.1, -0.75, 0.0)),
    Contrast("flair", Look(viable=0.75, necrotic=0.4, halo=1.0, halo_strength=0.9), tissue=(0.85, -0.5, 0.0),
             csf_suppression=0.85),
)

BRAIN = BrainSite(
    name="brain",
    modality="MRI",
    timepoints=(Timepoint("pre", 0), Timepoint("month2", 60), Timepoint("month4", 120)),
    assessment_day=120,
    response_column="response",
    response_values=("good", "poor"),
    anatomy_names=("gm", "wm"),
    clinical_spec=(
        {"name": "age", "type": "numeric", "group": "demographics", "unit": "years"},
        {"name": "sex", "type": "categorical", "group": "demographics", "categories": ["F", "M"]},
        {"name": "kps", "type": "numeric", "group": "performance", "unit": "Karnofsky %"},
        {"name": "mgmt", "type": "categorical", "group": "molecular", "categories": ["unmethylated", "methylated"]},
    ),
    response_intercept=-0.37,  # calibrate.py: half good responders (see docs/synthetic-cohorts.md)
    random_effect_sd=0.15,
    proliferation_per_day=0.018,
    clearance_per_day=1 / 80,  # post-radiotherapy necrosis lingers for months
    pre_growth_days=40,
    seed_radius_mm=(4.0, 10.0),  # baseline GTV 11-30 mm across: fits the demo's 64 x 64 crop after growth
    penetration_mm=4.0,
    core_sensitivity=0.35,  # oxygen enhancement ratio ~3: the hypoxic core keeps about a third of the kill
    hypoxic_depth_mm=7.0,
    simulation_box_mm=42.0,
    mass_effect=0.5,
    mass_effect_reach_mm=25.0,
    look=BRAIN_LOOK,
    noise=(0.015, 0.035),
    bias=0.12,
    intensity_scale=1000.0,
    stored_range=(0, 32767),
    survival=Survival(shape=1.6, median_days=240.0, censor_days=(365.0, 1460.0)),
    reference_radius_mm=11.0,
    contrasts=BRAIN_CONTRASTS,
)
