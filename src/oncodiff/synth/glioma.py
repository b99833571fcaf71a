"""Glioma: a second brain family, independent of brain.py's tumour model (docs/synthetic-cohorts.md, "Glioma").

Shares only the Site interface and the generic machinery (simulate.py, acquisition.py, writer.py); its
anatomy, growth, mass effect, rendering and treatment are its own, written from the physics:

Anatomy: nilearn's MNI152 grey/white matter maps and brain mask at 2 mm (offline), CSF = brain mask minus
both, resampled in one step through a random 3D pose (rotation about all three axes, anisotropic scale,
shift) onto a 2.5 mm grid of 68 x 80 x 60 voxels (2D: one axial 1.25 mm slice of 136 x 160). The image
is a FLAIR-like contrast drawn from the tissue fractions (CSF dark, white matter darker than grey), in a
head: a dark skull, then a bright scalp (subcutaneous fat) that is brighter than the enhancing rim, so a
scan's brightest 0.5 % is scalp, as in a real head scan, and percentile normalisation does not clip the tumour.

Growth: Fisher-KPP with an anisotropic diffusion tensor (Swanson et al. 2000; Jbabdi et al. 2005;
Clatz et al. 2005; Konukoglu et al. 2010):

    dc/dt = div(D(x) grad c) + rho c (1 - c - n) - h(x) c + c dL/dt          (viable cells c)
    dn/dt = h(x) c - c dL/dt - gamma n                                        (dead cells n)
    D(x)  = (D_perp w + D_grey g) I + (D_par - D_perp) w a(x) v v^T,         zero where w + g < 0.1 (CSF)

w, g the white/grey matter fractions, v(x) the local white-matter direction: the eigenvector of the
smallest eigenvalue of the structure tensor J = G_rho * (grad w_s grad w_s^T) of the white-matter map
(w_s = G_sigma * w), a(x) = (l_max - l_min) / (l_max + l_min) its coherence. D_par = 0.4, D_perp =
0.06, D_grey = 0.02 mm^2/day. Necrosis: h = 0.03/day * smoothstep(c + n; 0.8, 0.95), so the core that
stays saturated longest dies; dead cells clear at gamma = 1/45 per day. L(t) is the treatment's
cumulative log surviving fraction (log-kill; cells regrow after it by the logistic term). Explicit Euler
on a conservative face-flux scheme with the cross terms, dt <= 1 day below the stability bound.

Mass effect: u(x) = -kappa grad(G_5mm * smoothstep(c + n; 0.1, 0.5)) (mm), kappa = 40 mm^2, capped so
that |du/dx| <= 0.5 (the map stays one-to-one); the anatomy is warped B(x - u(x)): tissue pushed outward.

Appearance: oedema/infiltration FLAIR-bright where c + n is low but nonzero (0.03-0.3), the enhancing
viable rim bright, the necrotic core dark; the GTV is the enhancing + necrotic region, c + n >= 0.5.

Treatment: chemoradiation, log-kill per fraction (60 Gy in 30 fractions, weekdays from day 1) and per
adjuvant temozolomide cycle (days 70, 98, 126): L(t) = -(k_rt N_rt(t) + k_tmz N_tmz(t)), with
k_rt = 0.11 (good class) or 0.025 (poor), k_tmz = 0.35 or 0.06, times exp(0.5 [methylated]) for
temozolomide, exp(-0.1 z_age + u) for both, u ~ N(0, 0.2^2) per patient.

Response rule (mRANO volumetric partial response): good response when the GTV volume at day 140 is below
35 % of the baseline volume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from scipy import ndimage

from oncodiff.synth.fields import distance_mm, smooth_noise, smoothstep
from oncodiff.synth.growth import TumourState
from oncodiff.synth.render import Look
from oncodiff.synth.site import Anatomy, Clinical, Site, Survival, Timepoint
from oncodiff.synth.treatment import weekdays

# Growth (mm^2/day, 1/day)
D_PARALLEL, D_PERPENDICULAR, D_GREY = 0.40, 0.06, 0.02
NECROSIS_RATE, CLEARANCE = 0.03, 1 / 120
NECROSIS_DENSITY = (0.8, 0.95)
STRUCTURE_SIGMA_MM = (2.5, 5.0)  # gradient and integration scale of the white-matter structure tensor
MAX_STEP_DAYS = 1.0
# Mass effect
MASS_EFFECT_MM2, MASS_EFFECT_SIGMA_MM, MAX_STRAIN = 40.0, 5.0, 0.5
# Appearance (FLAIR-like, simulation units; x1000 stored)
I_CSF, I_GREY, I_WHITE, I_OUTSIDE = 0.08, 0.72, 0.52, 0.03
I_OEDEMA, I_ENHANCING, I_NECROTIC = 1.0, 1.4, 0.3
# The head around the brain: skull (dark, I_OUTSIDE) to SCALP_MM[0] mm outside the brain, then the scalp's fat up
# to SCALP_MM[1] mm; brighter than the enhancing rim (with its texture, noise and bias) and ~5 % of the grid, so the
# 99.5th percentile of a scan lies in the scalp, not in the tumour (tests/test_synth_glioma.py measures it)
I_SCALP, SCALP_MM = 1.8, (3.0, 9.0)
OEDEMA_DENSITY, BULK_DENSITY = (0.02, 0.2), (0.2, 0.5)
GTV_DENSITY = 0.35
# Treatment
RT_FRACTIONS = weekdays(1, 30)
TMZ_CYCLE_DAYS = (70, 98, 126)
LOG_KILL = {True: (0.04, 0.15), False: (0.012, 0.04)}  # class -> (per fraction, per cycle)
RESPONSE_RATIO = 0.5
# Geometry
GRID_3D, SPACING_3D = (68, 80, 60), 2.5
GRID_2D, SPACING_2D = (136, 160), 1.25
CENTRE_MNI = np.array([0.0, -18.0, 12.0])  # mm: middle of the cerebrum, the grid's centre before the pose


@lru_cache(maxsize=1)
def _tissue_maps() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(grey, white, CSF fractions, affine) of MNI152 at 2 mm; loaded once per process."""
    from nilearn import datasets

    gm_img = datasets.load_mni152_gm_template(resolution=2)
    gm = np.clip(gm_img.get_fdata(dtype=np.float32), 0, 1)
    wm = np.clip(datasets.load_mni152_wm_template(resolution=2).get_fdata(dtype=np.float32), 0, 1)
    brain = datasets.load_mni152_brain_mask(resolution=2).get_fdata(dtype=np.float32)
    csf = np.clip(brain - gm - wm, 0, 1)
    return gm, wm, csf, np.asarray(gm_img.affine, dtype=np.float64)


def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    rx, ry, rz = np.deg2rad(angles_deg)
    x = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
    y = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    z = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
    return z @ y @ x


def posed_tissue(rng: np.random.Generator, dims: int) -> tuple[list[np.ndarray], np.ndarray, tuple[float, ...]]:
    """([grey, white, CSF] on the patient's grid, output affine, spacing) for one random pose.

    Pose: template point p -> patient point q = R S (p - c) + c + t, R about all three axes (+-8, +-8, +-12
    degrees), S = diag(s * s_i), s in 0.9-1.1, s_i in 0.96-1.04, t +-8 mm per axis, c = CENTRE_MNI.
    """
    gm, wm, csf, template_affine = _tissue_maps()
    rotation = _rotation(rng.uniform(-1, 1, 3) * np.array([8.0, 8.0, 12.0]))
    scale = rng.uniform(0.9, 1.1) * rng.uniform(0.96, 1.04, 3)
    shift = rng.uniform(-8, 8, 3)
    pose = np.eye(4)
    pose[:3, :3] = rotation * scale[None, :]
    pose[:3, 3] = CENTRE_MNI + shift - pose[:3, :3] @ CENTRE_MNI
    if dims == 3:
        shape, spacing = GRID_3D, (SPACING_3D,) * 3
        z_offset = 0.0
    else:
        shape, spacing = (*GRID_2D, 1), (SPACING_2D, SPACING_2D, SPACING_3D)
        z_offset = float(rng.uniform(0.0, 30.0))  # axial level above the grid centre: most white matter
    out_affine = np.diag([*spacing, 1.0])
    out_affine[:3, 3] = CENTRE_MNI + [0, 0, z_offset] - np.asarray(spacing) * (np.asarray(shape) - 1) / 2
    voxel_map = np.linalg.inv(template_affine) @ np.linalg.inv(pose) @ out_affine  # output voxel -> template voxel
    maps = [ndimage.affine_transform(m, voxel_map[:3, :3], voxel_map[:3, 3], output_shape=shape, order=1,
                                     mode="constant") for m in (gm, wm, csf)]
    if dims == 2:
        maps = [m[:, :, 0] for m in maps]
    return maps, out_affine, tuple(float(s) for s in spacing[:dims])


def fibre_directions(wm: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(unit white-matter direction v (*spatial, d), coherence a in [0, 1]) from the structure tensor of ``wm``."""
    d = wm.ndim
    sigma_grad = [STRUCTURE_SIGMA_MM[0] / s for s in spacing]
    sigma_int = [STRUCTURE_SIGMA_MM[1] / s for s in spacing]
    grads = []
    for axis in range(d):
        order = [0] * d
        order[axis] = 1
        grads.append(ndimage.gaussian_filter(wm, sigma_grad, order=order, mode="nearest") / spacing[axis])
    tensor = np.empty((*wm.shape, d, d), np.float32)
    for i in range(d):
        for j in range(i, d):
            tensor[..., i, j] = tensor[..., j, i] = ndimage.gaussian_filter(grads[i] * grads[j], sigma_int,
                                                                            mode="nearest")
    values, vectors = np.linalg.eigh(tensor)  # ascending eigenvalues
    coherence = (values[..., -1] - values[..., 0]) / np.maximum(values[..., -1] + values[..., 0], 1e-12)
    return vectors[..., :, 0].astype(np.float32), np.clip(coherence, 0, 1).astype(np.float32)


def diffusion_tensor(gm: np.ndarray, wm: np.ndarray, direction: np.ndarray, coherence: np.ndarray) -> np.ndarray:
    """D(x) as (*spatial, d, d) in mm^2/day: isotropic part plus the white-matter fibre part; 0 in CSF."""
    d = gm.ndim
    tissue = (gm + wm) >= 0.1
    isotropic = (D_PERPENDICULAR * wm + D_GREY * gm) * tissue
    along = (D_PARALLEL - D_PERPENDICULAR) * wm * coherence * tissue
    tensor = along[..., None, None] * direction[..., :, None] * direction[..., None, :]
    tensor += isotropic[..., None, None] * np.eye(d, dtype=np.float32)
    return tensor.astype(np.float32)


@dataclass(frozen=True)
class GliomaModel:
    """The anisotropic reaction-diffusion model inside one simulation box."""

    tensor: np.ndarray  # (*spatial, d, d) mm^2/day
    proliferation: np.ndarray  # (*spatial) 1/day
    spacing: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.proliferation.shape

    def step_days(self) -> float:
        largest = max(float(np.linalg.eigvalsh(self.tensor.reshape(-1, *self.tensor.shape[-2:])).max()), 1e-9)
        return min(MAX_STEP_DAYS, 0.2 * min(self.spacing) ** 2 / (self.proliferation.ndim * largest))

    def faces(self) -> list[np.ndarray]:
        """Per axis i, row i of the tensor on the faces between neighbours along i: (*face shape, d); zero
        when either side is CSF (no flux into it)."""
        out = []
        d = self.proliferation.ndim
        for axis in range(d):
            n = self.shape[axis]
            lo = np.take(self.tensor[..., axis, :], np.arange(n - 1), axis=axis)
            hi = np.take(self.tensor[..., axis, :], np.arange(1, n), axis=axis)
            open_lo = np.take(self.tensor[..., axis, axis], np.arange(n - 1), axis=axis) > 0
            open_hi = np.take(self.tensor[..., axis, axis], np.arange(1, n), axis=axis) > 0
            out.append((0.5 * (lo + hi) * (open_lo & open_hi)[..., None]).astype(np.float32))
        return out


def tensor_divergence(c: np.ndarray, faces: list[np.ndarray], spacing: tuple[float, ...]) -> np.ndarray:
    """div(D grad c) by face fluxes F_i = sum_j D_ij d_j c (normal derivative by the face difference, the
    tangential ones by averaging central differences); no flux through the box boundary."""
    d = c.ndim
    central = [np.gradient(c, spacing[j], axis=j) for j in range(d)]
    out = np.zeros_like(c)
    for i in range(d):
        lo_index = [slice(None)] * d
        hi_index = [slice(None)] * d
        lo_index[i], hi_index[i] = slice(None, -1), slice(1, None)
        lo, hi = tuple(lo_index), tuple(hi_index)
        flux = faces[i][..., i] * (c[hi] - c[lo]) / spacing[i]
        for j in range(d):
            if j != i:
                flux = flux + faces[i][..., j] * 0.5 * (central[j][lo] + central[j][hi])
        out[lo] += flux / spacing[i]
        out[hi] -= flux / spacing[i]
    return out


def evolve(state: TumourState, model: GliomaModel, start_day: float, snapshot_days: tuple[float, ...],
           log_survival: Callable[[float], float] | None = None) -> list[TumourState]:
    """Integrate the glioma model from ``start_day``; the state at each of ``snapshot_days`` (ascending)."""
    faces = model.faces()
    c, n = state.viable.astype(np.float32), state.dead.astype(np.float32)
    t, out, max_dt = float(start_day), [], model.step_days()
    for target in snapshot_days:
        steps = max(int(np.ceil((target - t) / max_dt - 1e-9)), 0)
        dt = (target - t) / steps if steps else 0.0
        for _ in range(steps):
            necrosis = NECROSIS_RATE * smoothstep(c + n, *NECROSIS_DENSITY)
            c = np.maximum(c + dt * (tensor_divergence(c, faces, model.spacing)
                                     + model.proliferation * c * (1.0 - c - n)), 0.0)
            log_kill = -necrosis * dt
            if log_survival is not None:
                log_kill = log_kill + (log_survival(t + dt) - log_survival(t))
            killed = c * (1.0 - np.exp(log_kill))
            c, n = c - killed, (n + killed) * np.float32(np.exp(-CLEARANCE * dt))
            t += dt
        out.append(TumourState(c.astype(np.float32), n.astype(np.float32)))
    return out


def mass_effect_displacement(state: TumourState, spacing: tuple[float, ...]) -> tuple[float, list[np.ndarray]]:
    """(largest displacement mm, per-axis displacement in voxels) u = -kappa grad(G * bulk(c + n))."""
    bulk = smoothstep(state.cellularity, 0.1, GTV_DENSITY).astype(np.float32)
    sigma = [MASS_EFFECT_SIGMA_MM / s for s in spacing]
    u_mm = []
    for axis in range(bulk.ndim):
        order = [0] * bulk.ndim
        order[axis] = 1
        u_mm.append(-MASS_EFFECT_MM2 * ndimage.gaussian_filter(bulk, sigma, order=order, mode="constant")
                    / spacing[axis])
    strain = max(float(np.abs(np.gradient(u, s, axis=a)).max()) for u in u_mm for a, s in enumerate(spacing))
    factor = min(1.0, MAX_STRAIN / max(strain, 1e-9))
    u_mm = [factor * u for u in u_mm]
    largest = float(np.sqrt(sum(u * u for u in u_mm)).max())
    return largest, [(u / s).astype(np.float32) for u, s in zip(u_mm, spacing)]


@dataclass(frozen=True)
class Chemoradiation:
    """Log-kill per radiotherapy fraction and per temozolomide cycle: L(t) = -(k_rt N_rt(t) + k_tmz N_tmz(t))."""

    kill_per_fraction: float
    kill_per_cycle: float
    fraction_days: tuple[int, ...] = RT_FRACTIONS
    cycle_days: tuple[int, ...] = TMZ_CYCLE_DAYS

    def log_survival(self, day: float) -> float:
        fractions = np.searchsorted(self.fraction_days, day, side="right")
        cycles = np.searchsorted(self.cycle_days, day, side="right")
        return -float(self.kill_per_fraction * fractions + self.kill_per_cycle * cycles)

    def scaled(self, factor: float) -> Chemoradiation:
        return replace(self, kill_per_fraction=self.kill_per_fraction * factor,
                       kill_per_cycle=self.kill_per_cycle * factor)


@dataclass(frozen=True)
class GliomaSite(Site):
    def draw_clinical(self, rng: np.random.Generator) -> Clinical:
        return {
            "age": float(np.clip(np.round(rng.normal(58, 12)), 20, 85)),
            "sex": "M" if rng.random() < 0.58 else "F",
            "kps": float(rng.choice([60, 70, 80, 90, 100], p=[0.1, 0.2, 0.3, 0.3, 0.1])),
            "mgmt": "methylated" if rng.random() < 0.4 else "unmethylated",
        }

    @staticmethod
    def _z(clinical: Clinical) -> tuple[float, float, float]:
        return (clinical["age"] - 58) / 12, (clinical["kps"] - 80) / 10, float(clinical["mgmt"] == "methylated")

    def response_logit(self, clinical: Clinical) -> float:
        z_age, z_kps, methylated = self._z(clinical)
        return 1.2 * methylated - 0.35 * z_age + 0.4 * z_kps

    def growth_factor(self, clinical: Clinical) -> float:
        return float(np.exp(0.1 * self._z(clinical)[0]))

    def treatment(self, clinical: Clinical, responder: bool, random_effect: float) -> Chemoradiation:
        z_age, _, methylated = self._z(clinical)
        k_rt, k_tmz = LOG_KILL[responder]
        common = np.exp(-0.1 * z_age + random_effect)
        return Chemoradiation(kill_per_fraction=float(k_rt * common),
                              kill_per_cycle=float(k_tmz * common * np.exp(0.5 * methylated)))

    def classify(self, baseline: TumourState, assessed: TumourState, spacing: tuple[float, ...]) -> tuple[float, bool]:
        ratio = float(self.gtv(assessed).sum() / max(int(self.gtv(baseline).sum()), 1))
        return ratio, ratio < RESPONSE_RATIO

    def survival_risk(self, clinical: Clinical, log_burden: float, responder: bool) -> float:
        z_age, z_kps, methylated = self._z(clinical)
        return 0.3 * z_age - 0.35 * z_kps - 0.5 * methylated + 0.3 * log_burden - 0.7 * responder

    def gtv(self, state: TumourState) -> np.ndarray:
        """The enhancing + necrotic region: cellularity (viable + dead) >= 0.5; uint8."""
        return (state.cellularity >= GTV_DENSITY).astype(np.uint8)

    def make_anatomy(self, rng: np.random.Generator, dims: int) -> Anatomy:
        (gm, wm, csf), affine, spacing = posed_tissue(rng, dims)
        inside = (gm + wm + csf) > 0.3
        contrast = rng.uniform(0.94, 1.06, 2)
        texture = 1.0 + 0.04 * smooth_noise(rng, gm.shape, [2.0 / s for s in spacing])
        flair = (I_CSF * csf + I_GREY * contrast[0] * gm + I_WHITE * contrast[1] * wm) * texture
        outside_mm = ndimage.distance_transform_edt(~inside, sampling=spacing)
        scalp = smoothstep(outside_mm, SCALP_MM[0] - 1.0, SCALP_MM[0] + 1.0) * (
            1.0 - smoothstep(outside_mm, SCALP_MM[1] - 1.0, SCALP_MM[1] + 1.0))
        head = I_OUTSIDE + scalp * (I_SCALP * texture - I_OUTSIDE)
        background = np.where(inside, flair, head)
        depth = ndimage.distance_transform_edt(inside, sampling=spacing)
        sites = (wm > 0.6) & (depth > 18.0)
        return Anatomy(
            background=background.astype(np.float32),
            diffusivity=((D_PERPENDICULAR * wm + D_GREY * gm) * ((gm + wm) >= 0.1)).astype(np.float32),
            tissue=np.clip(gm + wm, 0, 1).astype(np.float32),
            tumour_sites=sites,
            masks={"gm": (gm > 0.5).astype(np.uint8), "wm": (wm > 0.5).astype(np.uint8)},
            spacing=spacing,
            affine=affine,
            fields={"gm": gm.astype(np.float32), "wm": wm.astype(np.float32)},
        )

    def growth_model(self, anatomy: Anatomy, box: tuple[slice, ...], clinical: Clinical) -> GliomaModel:
        gm, wm = anatomy.fields["gm"][box], anatomy.fields["wm"][box]
        direction, coherence = fibre_directions(wm, anatomy.spacing)
        rho = self.proliferation_per_day * self.growth_factor(clinical)
        return GliomaModel(tensor=diffusion_tensor(gm, wm, direction, coherence),
                           proliferation=(rho * np.clip(gm + wm, 0, 1) * ((gm + wm) >= 0.1)).astype(np.float32),
                           spacing=anatomy.spacing)

    def seed(self, rng: np.random.Generator, model: GliomaModel, anatomy: Anatomy, box: tuple[slice, ...],
             center_in_box: tuple[int, ...], radius_mm: float) -> TumourState:
        """A Gaussian cell cloud c0 = exp(-r^2 / (2 R^2)) on proliferating tissue."""
        r = distance_mm(model.shape, anatomy.spacing, center_in_box)
        viable = np.exp(-0.5 * (r / radius_mm) ** 2) * (model.proliferation > 0)
        return TumourState(viable.astype(np.float32), np.zeros(model.shape, np.float32))

    def evolve(self, state, model, start_day, snapshot_days, log_survival=None) -> list[TumourState]:
        return evolve(state, model, start_day, snapshot_days, log_survival)

    def mass_effect_field(self, state: TumourState, box: tuple[slice, ...], anatomy: Anatomy,
                          center_vox: tuple[int, ...], inner_mm: float, reach_mm: float):
        largest, displacement = mass_effect_displacement(state, anatomy.spacing)
        return largest, box, displacement

    def composite(self, background: np.ndarray, state: TumourState, texture: np.ndarray) -> np.ndarray:
        """Oedema (FLAIR-bright infiltration), then the bulk: enhancing viable rim, dark necrotic core."""
        total = state.cellularity
        oedema = smoothstep(total, *OEDEMA_DENSITY)
        image = background + oedema * (I_OEDEMA - background)
        bulk = smoothstep(total, *BULK_DENSITY)
        tumour = (state.viable * I_ENHANCING + state.dead * I_NECROTIC) / np.maximum(total, 1e-6)
        tumour = tumour * (1.0 + self.look.texture * texture)
        return (image + bulk * (tumour - image)).astype(np.float32)


GLIOMA = GliomaSite(
    name="glioma",
    modality="MRI",
    timepoints=(Timepoint("pre", 0), Timepoint("week10", 70), Timepoint("week20", 140)),
    assessment_day=140,
    response_column="response",
    response_values=("good", "poor"),  # as brain's, so that a model trained on one family reads the other
    anatomy_names=("gm", "wm"),
    clinical_spec=(
        {"name": "age", "type": "numeric", "group": "demographics", "unit": "years"},
        {"name": "sex", "type": "categorical", "group": "demographics", "categories": ["F", "M"]},
        {"name": "kps", "type": "numeric", "group": "performance", "unit": "Karnofsky %"},
        {"name": "mgmt", "type": "categorical", "group": "molecular", "categories": ["unmethylated", "methylated"]},
    ),
    response_intercept=-0.51,  # half good responders (tests/test_synth_calibrate.py)
    random_effect_sd=0.2,
    proliferation_per_day=0.010,
    clearance_per_day=CLEARANCE,
    pre_growth_days=100,
    seed_radius_mm=(4.0, 8.0),
    penetration_mm=0.0,  # unused: the kill is uniform (log-kill)
    core_sensitivity=1.0,  # unused
    hypoxic_depth_mm=0.0,  # unused: necrosis follows saturation (NECROSIS_DENSITY)
    simulation_box_mm=45.0,
    mass_effect=0.0,  # unused: mass_effect_displacement
    mass_effect_reach_mm=30.0,  # how far the infiltration halo and the displacement reach beyond the GTV
    look=Look(viable=I_ENHANCING, necrotic=I_NECROTIC, halo=I_OEDEMA, halo_strength=1.0),
    noise=(0.015, 0.035),
    bias=0.1,
    intensity_scale=1000.0,
    stored_range=(0, 32767),
    survival=Survival(shape=1.5, median_days=320.0, censor_days=(365.0, 1460.0)),
    reference_radius_mm=12.0,
)
