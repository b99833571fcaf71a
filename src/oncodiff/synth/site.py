"""What a simulated site is: its anatomy, clinical model, treatment, response rule and survival model.

A :class:`Site` holds the documented constants of one cancer site (coefficient tables, physics,
time points) and the four site-specific pieces: ``draw_clinical``, ``make_anatomy``, ``treatment``
and ``classify``. The shared machinery that turns them into scans lives in simulate.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from oncodiff.synth.growth import MASK_THRESHOLD, GrowthModel, TumourState, grow, seed_tumour
from oncodiff.synth.render import Contrast, Look, composite, radial_drift

Clinical = dict[str, Any]  # name -> value (float for numeric, str for categorical), the TRUE values


class Treatment(Protocol):
    def log_survival(self, day: float) -> float: ...

    def scaled(self, factor: float) -> Treatment: ...


@dataclass(frozen=True)
class Timepoint:
    label: str
    days: int
    scan: int | None = None  # the scan number that keys its random draws; None: its position (baseline 0)


@dataclass(frozen=True)
class Anatomy:
    """A tumour-free patient in simulation space (*spatial); the output space may be its MIP (breast 2D)."""

    background: np.ndarray  # float32 tissue intensity (MRI a.u. or CT HU) without tumour, bias or noise
    diffusivity: np.ndarray  # mm^2/day, Fisher-KPP D(x)
    tissue: np.ndarray  # float32 in [0, 1]: where tumour cells can proliferate
    tumour_sites: np.ndarray  # bool: allowed tumour centres (far enough from borders and walls)
    masks: dict[str, np.ndarray]  # anatomy name -> uint8 mask or label map
    spacing: tuple[float, ...]  # mm per simulation axis
    affine: np.ndarray  # 4x4 voxel-to-RAS of the output images
    fields: dict[str, np.ndarray] = field(default_factory=dict)  # site-specific maps (glioma: tissue probabilities)


@dataclass(frozen=True)
class Survival:
    """Weibull proportional hazards from baseline, plus uniform administrative censoring (days)."""

    shape: float
    median_days: float  # median of the baseline (linear predictor 0) survival after the last scan
    censor_days: tuple[float, float]


@dataclass(frozen=True)
class Site(ABC):
    """Constants and site-specific pieces of the generative model (see docs/synthetic-cohorts.md)."""

    name: str
    modality: str
    timepoints: tuple[Timepoint, ...]  # the baseline first
    assessment_day: int  # the response rule looks at the tumour on this day
    response_column: str
    response_values: tuple[str, str]  # (positive, negative)
    anatomy_names: tuple[str, ...]
    clinical_spec: tuple[dict, ...]  # cohort.yaml `clinical` entries
    response_intercept: float  # logistic intercept, calibrated to the published response rate
    random_effect_sd: float  # per-patient log-normal spread of treatment sensitivity within a class
    proliferation_per_day: float
    clearance_per_day: float
    pre_growth_days: int
    seed_radius_mm: tuple[float, float]
    penetration_mm: float
    core_sensitivity: float
    hypoxic_depth_mm: float
    simulation_box_mm: float  # half-size of the box the PDE runs in
    mass_effect: float  # tissue drift (mm) per mm of change of the equivalent radius
    mass_effect_reach_mm: float
    look: Look
    noise: tuple[float, float]  # per-scan noise sigma range (image units)
    bias: float  # bias field amplitude (MRI: relative, CT: HU)
    intensity_scale: float  # simulation units -> stored units
    stored_range: tuple[float, float]
    survival: Survival
    reference_radius_mm: float  # equivalent radius of a typical baseline tumour (survival's burden term)
    missing_rate: float = 0.04
    rician_noise: bool = True  # magnitude MRI; False: Gaussian (CT, subtraction images)
    contrasts: tuple[Contrast, ...] = ()  # MRI sequences `--sequences` can render (brain); the first is `look`'s

    def contrast(self, name: str) -> Contrast:
        for contrast in self.contrasts:
            if contrast.name == name:
                return contrast
        known = ", ".join(c.name for c in self.contrasts) or "none"
        raise ValueError(f"the {self.name} site has no sequence {name!r}; it renders: {known}")

    @property
    def baseline(self) -> Timepoint:
        return self.timepoints[0]

    @property
    def followups(self) -> tuple[Timepoint, ...]:
        return self.timepoints[1:]

    def response_probability(self, clinical: Clinical) -> float:
        """P(responder | clinical): the logistic model, documented per site."""
        return float(1.0 / (1.0 + np.exp(-(self.response_intercept + self.response_logit(clinical)))))

    @abstractmethod
    def draw_clinical(self, rng: np.random.Generator) -> Clinical:
        """True clinical variables of one patient."""

    @abstractmethod
    def response_logit(self, clinical: Clinical) -> float:
        """Clinical part of the response log-odds (without the intercept)."""

    @abstractmethod
    def growth_factor(self, clinical: Clinical) -> float:
        """Multiplier of the proliferation rate."""

    @abstractmethod
    def treatment(self, clinical: Clinical, responder: bool, random_effect: float) -> Treatment:
        """The treatment as it acts on this patient's tumour, for the given response class."""

    @abstractmethod
    def classify(self, baseline: TumourState, assessed: TumourState, spacing: tuple[float, ...]) -> tuple[float, bool]:
        """(response metric, responder?) by the site's documented rule."""

    @abstractmethod
    def survival_risk(self, clinical: Clinical, log_burden: float, responder: bool) -> float:
        """Linear predictor of the log hazard."""

    @abstractmethod
    def make_anatomy(self, rng: np.random.Generator, dims: int) -> Anatomy:
        """A tumour-free patient: tissue, diffusivity, anatomy masks, geometry."""

    # The tumour model. The defaults are growth.py's Fisher-KPP with isotropic D(x), the radial drift and the
    # composite of render.py; a site with its own physics (glioma.py) overrides these five methods.

    def growth_model(self, anatomy: Anatomy, box: tuple[slice, ...], clinical: Clinical) -> GrowthModel:
        """The reaction-diffusion model inside the simulation ``box`` (it has ``spacing``)."""
        rho = self.proliferation_per_day * self.growth_factor(clinical)
        return GrowthModel(
            diffusivity=anatomy.diffusivity[box], proliferation=(rho * anatomy.tissue[box]).astype(np.float32),
            spacing=anatomy.spacing, clearance=self.clearance_per_day, hypoxic_depth_mm=self.hypoxic_depth_mm,
            penetration_mm=self.penetration_mm, core_sensitivity=self.core_sensitivity,
        )

    def seed(self, rng: np.random.Generator, model: Any, anatomy: Anatomy, box: tuple[slice, ...],
             center_in_box: tuple[int, ...], radius_mm: float) -> TumourState:
        """The tumour before its pre-growth, centred at ``center_in_box`` (box voxel coordinates)."""
        return seed_tumour(rng, model.diffusivity.shape, anatomy.spacing, center_in_box, radius_mm,
                           anatomy.tissue[box])

    def evolve(self, state: TumourState, model: Any, start_day: float, snapshot_days: tuple[float, ...],
               log_survival: Callable[[float], float] | None = None) -> list[TumourState]:
        """Integrate the tumour from ``start_day``; the state at each of ``snapshot_days`` (ascending)."""
        return grow(state, model, start_day, snapshot_days, log_survival)

    def mass_effect_field(self, state: TumourState, box: tuple[slice, ...], anatomy: Anatomy,
                          center_vox: tuple[int, ...], inner_mm: float, reach_mm: float):
        """(drift mm, support box, per-axis displacement in voxels) of the tissue around this tumour state:
        render.radial_drift, ``mass_effect`` mm per mm of the GTV's equivalent radius."""
        volume = float(self.gtv(state).sum() * np.prod(anatomy.spacing))
        radius = np.sqrt(volume / np.pi) if state.viable.ndim == 2 else np.cbrt(3 * volume / (4 * np.pi))
        drift = self.mass_effect * float(radius)
        return (drift, *radial_drift(anatomy.background.shape, anatomy.spacing, center_vox, drift, inner_mm,
                                     reach_mm))

    def composite(self, background: np.ndarray, state: TumourState, texture: np.ndarray) -> np.ndarray:
        """The tumour drawn onto the (displaced) tissue inside the simulation box."""
        return composite(background, state, self.look, texture)

    def to_output(self, array: np.ndarray, dims: int) -> np.ndarray:
        """Simulation space -> output space (identity; breast 2D overrides with a MIP)."""
        return array

    def gtv(self, state: TumourState) -> np.ndarray:
        """The tumour mask a reader would draw: cellularity (viable + dead) >= 0.3; uint8 (*spatial)."""
        return (state.cellularity >= MASK_THRESHOLD).astype(np.uint8)

    def size(self, mask: np.ndarray, spacing: tuple[float, ...]) -> float:
        """Tumour size as the site measures it (default: volume or area in mm^dims)."""
        return float(mask.sum() * np.prod(spacing))
