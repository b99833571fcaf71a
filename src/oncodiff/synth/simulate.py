"""One synthetic patient: clinical draw, anatomy, tumour growth under both response classes, scans.

Randomness is split into independent streams per (seed, site, patient), so a patient's files do
not depend on how many patients the cohort has, and the factual and counterfactual follow-ups of
one scan share the same anatomy, tumour seed, bias field and scanner noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage

from oncodiff.synth.acquisition import MISSING_RATE, acquire, acquisition_rng, draw_acquisition, resample_acquired
from oncodiff.synth.fields import box_around, smooth_noise
from oncodiff.synth.growth import MASK_THRESHOLD, TumourState
from oncodiff.synth.render import composite, gaussian_noise, mri_noise, to_int16, warp
from oncodiff.synth.render import Contrast
from oncodiff.synth.site import Anatomy, Clinical, Site, Timepoint

SITE_CODES = {"brain": 1, "lung": 2, "breast": 3, "glioma": 4}
STREAMS = ("clinical", "anatomy", "tumour", "outcome")
MAX_STRENGTHENING = 6  # attempts to push a patient's sensitivity into its class (see _simulate_arm)
UNTREATED = 7  # extra seed word of untreated cohorts' patients
LABELS = {"necrosis": 1, "oedema": 2, "enhancing": 3}  # the label maps written with --sequences
TUMOR_LABELS = ("necrosis", "enhancing")  # their union is the GTV, exactly
OEDEMA_CELLULARITY = 0.02  # the halo (oedema) starts where tumour cellularity reaches this (render.py)
MISSING_SEQUENCE_RATE = 0.08  # clinical acquisition: each non-primary sequence of a scan is missing this often


@dataclass(frozen=True)
class Scan:
    """One rendered scan in output space: ``image`` int16 and ``mask`` uint8 of shape (*spatial)."""

    timepoint: str
    days: int
    image: np.ndarray
    mask: np.ndarray
    size: float  # the site's size measure (mm^2 or mm^3, or diameter for lung), simulation space
    drift_mm: float  # mass-effect displacement magnitude at the tumour edge
    shift_mm: tuple[float, ...]  # known rigid misalignment of this scan (zeros by default)
    affine: np.ndarray | None = None  # the scan's own grid (clinical acquisition); None: the patient's affine
    truth_image: np.ndarray | None = None  # clinical: the clean scan in the baseline's space, stored units
    truth_mask: np.ndarray | None = None  # clinical: its GTV in the baseline's space
    acquisition: dict = field(default_factory=dict)  # clinical: truth/scans.csv columns of the acquisition
    sequences: dict = field(default_factory=dict)  # --sequences: name -> int16 image of each non-primary sequence
    labels: np.ndarray | None = None  # --sequences: uint8 label map (LABELS) on the image's grid
    missing: tuple[str, ...] = ()  # non-primary sequences not acquired for this scan (clinical acquisition)


@dataclass(frozen=True)
class Arm:
    """The tumour's course under one response class."""

    responder: bool  # the class simulated
    label: bool  # the class the site's rule gives
    metric: float  # the rule's measurement (volume ratio, diameter change, residual burden)
    strengthened: int  # how often the sensitivity was pushed further into its class
    states: tuple[TumourState, ...]  # at each follow-up day, inside the simulation box


@dataclass(frozen=True)
class PatientRecord:
    patient_id: str
    clinical: dict  # observed values, None where missing
    label: bool
    cf_label: bool
    survival_days: int
    death: int
    truth: dict
    scans: tuple[Scan, ...]
    counterfactuals: tuple[Scan, ...]
    anatomy: dict[str, np.ndarray]
    affine: np.ndarray


@dataclass(frozen=True)
class _Scene:
    """Per-patient fixed rendering inputs (simulation space)."""

    anatomy: Anatomy
    box: tuple[slice, ...]
    center_vox: tuple[int, ...]
    texture: np.ndarray
    bias: np.ndarray  # MRI: multiplicative gain field; CT: additive HU field
    inner_mm: float
    reach_mm: float


def patient_streams(seed: int, site: Site, index: int, treated: bool = True) -> dict[str, np.random.Generator]:
    """Independent generators for each part of one patient's simulation. Untreated cohorts draw other
    patients than treated ones of the same seed (a pre-training cohort must not repeat the treated one)."""
    base = np.random.SeedSequence([int(seed), SITE_CODES[site.name], int(index)] + ([] if treated else [UNTREATED]))
    return {name: np.random.default_rng(child) for name, child in zip(STREAMS, base.spawn(len(STREAMS)))}


def scan_noise_rng(seed: int, site: Site, index: int, scan: int) -> np.random.Generator:
    """The scanner-noise generator of one scan, shared by its factual and counterfactual versions."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), SITE_CODES[site.name], int(index), 1000 + scan]))


def equivalent_radius_mm(mask: np.ndarray, spacing: tuple[float, ...]) -> float:
    """Radius of the disc (2D) or ball (3D) with the mask's area or volume."""
    size = float(mask.sum() * np.prod(spacing))
    return float(np.sqrt(size / np.pi)) if mask.ndim == 2 else float(np.cbrt(3 * size / (4 * np.pi)))


def _choose_center(rng: np.random.Generator, anatomy: Anatomy, half: tuple[int, ...]) -> tuple[int, ...]:
    allowed = anatomy.tumour_sites.copy()
    for axis, h in enumerate(half):  # the whole simulation box must lie inside the image
        index = [slice(None)] * allowed.ndim
        index[axis] = np.r_[0:h, allowed.shape[axis] - h:allowed.shape[axis]]
        allowed[tuple(index)] = False
    candidates = np.flatnonzero(allowed)
    if candidates.size == 0:
        raise ValueError("no room for the tumour: the image is too small for the simulation box")
    return tuple(int(i) for i in np.unravel_index(rng.choice(candidates), allowed.shape))


def _simulate_arm(site: Site, model, baseline: TumourState, clinical: Clinical, responder: bool,
                  random_effect: float) -> Arm:
    """Grow the tumour under one class; if the rule disagrees, push the sensitivity 1.5x into the class.

    The class-conditional sensitivities are far apart, so this rarely triggers (calibrate.py counts it);
    it keeps every label consistent with its documented rule.
    """
    days = tuple(sorted({t.days for t in site.followups} | {site.assessment_day}))
    treatment = site.treatment(clinical, responder, random_effect)
    for attempt in range(MAX_STRENGTHENING + 1):
        states = site.evolve(baseline, model, 0.0, days, treatment.log_survival)
        metric, label = site.classify(baseline, states[days.index(site.assessment_day)], model.spacing)
        if label == responder or attempt == MAX_STRENGTHENING:
            break
        treatment = treatment.scaled(1.5 if responder else 1 / 1.5)
    followup_states = tuple(states[days.index(t.days)] for t in site.followups)
    return Arm(responder, label, metric, attempt, followup_states)


def _untreated_arm(site: Site, model, baseline: TumourState) -> Arm:
    """The tumour's natural course (no treatment kill), labelled by the site's rule (normally no response)."""
    days = tuple(sorted({t.days for t in site.followups} | {site.assessment_day}))
    states = site.evolve(baseline, model, 0.0, days)
    metric, label = site.classify(baseline, states[days.index(site.assessment_day)], model.spacing)
    return Arm(False, label, metric, 0, tuple(states[days.index(t.days)] for t in site.followups))


def _in_full(site: Site, state: TumourState, box: tuple[slice, ...], shape: tuple[int, ...]) -> np.ndarray:
    """The GTV of a simulation-box state, placed in the whole simulation space."""
    mask = np.zeros(shape, np.uint8)
    mask[box] = site.gtv(state)
    return mask


def _make_scene(site: Site, anatomy: Anatomy, rng: np.random.Generator, box, center, baseline_mask) -> _Scene:
    shape, spacing = anatomy.background.shape, anatomy.spacing
    bias_sigma = [n / 3 for n in shape]  # a few smooth lobes across the field of view
    inner = max(equivalent_radius_mm(baseline_mask, spacing), 2.0)
    return _Scene(
        anatomy=anatomy, box=box, center_vox=center,
        texture=smooth_noise(rng, tuple(b.stop - b.start for b in box), [1.0 / s for s in spacing]),
        bias=_bias_field(site, smooth_noise(rng, shape, bias_sigma)),
        inner_mm=inner, reach_mm=inner + site.mass_effect_reach_mm,
    )


def _bias_field(site: Site, field: np.ndarray) -> np.ndarray:
    """A smooth field of unit spread -> the site's bias: exp(a f) gain for MRI, a f HU offset for CT."""
    return site.bias * field if site.modality == "CT" else np.exp(site.bias * field).astype(np.float32)


def _scanner(site: Site, image: np.ndarray, scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    """Bias field (per patient) and noise (per scan) in the site's modality."""
    sigma = rng.uniform(*site.noise)
    image = image + scene.bias if site.modality == "CT" else image * scene.bias
    return mri_noise(rng, image, sigma) if site.rician_noise else gaussian_noise(rng, image, sigma)


def _render_clean(site: Site, scene: _Scene, state: TumourState, contrast: Contrast | None = None):
    """(image without scanner effects, GTV, drift) in simulation space for one tumour state, in the site's look
    or in one sequence's ``contrast``."""
    full_mask = _in_full(site, state, scene.box, scene.anatomy.background.shape)
    drift, drift_box, displacement = _drift(site, scene, state)
    if contrast is None:  # the site's own look (Site.composite: glioma draws its rim, core and oedema itself)
        image = warp(scene.anatomy.background, drift_box, displacement)
        image[scene.box] = site.composite(image[scene.box], state, scene.texture)
    else:  # one sequence of --sequences, in its contrast
        image = warp(contrast.render_tissue(scene.anatomy.background), drift_box, displacement)
        image[scene.box] = composite(image[scene.box], state, contrast.look, scene.texture)
    return image, full_mask, drift


def _label_map(site: Site, scene: _Scene, state: TumourState, dims: int) -> np.ndarray:
    """The tumour's label map (LABELS) in output space: inside the GTV necrosis where dead cells outnumber viable
    ones, else enhancing (viable rim); oedema where the halo is drawn outside the GTV."""
    shape = scene.anatomy.background.shape
    viable, dead = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    viable[scene.box], dead[scene.box] = state.viable, state.dead
    gtv = _in_full(site, state, scene.box, shape) > 0
    labels = np.where(viable + dead > OEDEMA_CELLULARITY, LABELS["oedema"], 0)
    labels = np.where(gtv, np.where(dead > viable, LABELS["necrosis"], LABELS["enhancing"]), labels)
    return site.to_output(labels.astype(np.uint8), dims)


def _render(site: Site, scene: _Scene, state: TumourState, dims: int, rng: np.random.Generator,
            contrast: Contrast | None = None):
    """(image in stored units, GTV, drift) in output space for one tumour state."""
    image, full_mask, drift = _render_clean(site, scene, state, contrast)
    image = site.to_output(_scanner(site, image, scene, rng), dims) * site.intensity_scale
    return image, site.to_output(full_mask, dims), drift


def sequence_noise_rng(seed: int, site: Site, index: int, scan: int, sequence: int) -> np.random.Generator:
    """The scanner-noise generator of the ``sequence``-th non-primary sequence of one scan (the primary uses
    :func:`scan_noise_rng`), shared by its factual and counterfactual versions."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), SITE_CODES[site.name], int(index), 1000 + scan,
                                                         50 + sequence]))


def _clinical_scan(site: Site, scene: _Scene, state: TumourState, dims: int, key: tuple, misalign_mm: float,
                   contrast: Contrast | None = None, sequence: int = 0, labels: bool = False):
    """A scan acquired clinically (acquisition.py): (Scan fields from ``image`` on, as a dict). Every sequence of
    one scan shares its acquisition (one session: motion, grid, bias field, gain); each has its own noise."""
    seed, index, scan_index = key
    clean, full_mask, drift = _render_clean(site, scene, state, contrast)
    clean, mask = site.to_output(clean, dims), site.to_output(full_mask, dims).astype(np.uint8)
    rng = acquisition_rng(seed, SITE_CODES[site.name], index, scan_index)
    acquisition = draw_acquisition(rng, site, scene.anatomy.affine, clean.shape, scan_index > 0, misalign_mm)
    noise_rng = scan_noise_rng(seed, site, index, scan_index) if sequence == 0 else \
        sequence_noise_rng(seed, site, index, scan_index, sequence)
    image, gtv = acquire(site, clean, mask, scene.anatomy.affine, acquisition, rng, noise_rng)
    fields = {"image": to_int16(image, *site.stored_range), "mask": gtv, "drift_mm": drift,
              "shift_mm": acquisition.translation_mm[:dims], "affine": acquisition.affine,
              "truth_image": to_int16(clean * site.intensity_scale, *site.stored_range), "truth_mask": mask,
              "acquisition": acquisition.truth_columns()}
    if labels:  # each label resampled as the GTV is, so that necrosis + enhancing is the acquired GTV exactly
        truth = _label_map(site, scene, state, dims)
        moved = {name: resample_acquired((truth == value).astype(np.float32), scene.anatomy.affine, acquisition) >= 0.5
                 for name, value in LABELS.items()}
        fields["labels"] = np.where(gtv > 0, np.where(moved["necrosis"], LABELS["necrosis"], LABELS["enhancing"]),
                                    np.where(moved["oedema"], LABELS["oedema"], 0)).astype(np.uint8)
    return fields


def _misalign(rng: np.random.Generator, image, mask, spacing, misalign_mm: float):
    """A known rigid shift of ``misalign_mm`` in a random direction (follow-ups only)."""
    direction = rng.standard_normal(image.ndim)
    shift_mm = misalign_mm * direction / np.linalg.norm(direction)
    shift_vox = shift_mm / np.asarray(spacing[: image.ndim])
    moved = ndimage.shift(image, shift_vox, order=1, mode="nearest")
    return moved, ndimage.shift(mask, shift_vox, order=0, mode="constant"), tuple(float(s) for s in shift_mm)


def _scans(site, scene, index, seed, dims, states, arm_days, misalign_mm, output_spacing,
           acquisition: str = "ideal", sequences: tuple[str, ...] = ()) -> tuple[Scan, ...]:
    """Render the baseline (scan 0) or follow-ups (scans 1..) of one arm; with ``sequences``, each scan in every
    sequence (the first is the scan's ``image``) with its label map."""
    scans = []
    for (scan_index, timepoint), state in zip(arm_days, states):
        size = site.size(_in_full(site, state, scene.box, scene.anatomy.background.shape), scene.anatomy.spacing)
        names = sequences or (None,)
        rendered = [_one_contrast(site, scene, state, dims, (seed, index, scan_index), misalign_mm, output_spacing,
                                  acquisition, None if name is None else site.contrast(name), k)
                    for k, name in enumerate(names)]
        extra = {}
        if sequences:
            missing_rng = np.random.default_rng(np.random.SeedSequence([int(seed), SITE_CODES[site.name], index,
                                                                        4000 + scan_index]))
            draws = missing_rng.random(len(sequences) - 1)
            extra = {"sequences": {name: r["image"] for name, r in zip(sequences[1:], rendered[1:])},
                     "missing": tuple(name for name, u in zip(sequences[1:], draws)
                                      if acquisition == "clinical" and u < MISSING_SEQUENCE_RATE)}
        scans.append(Scan(timepoint.label, timepoint.days, size=size, **rendered[0], **extra))
    return tuple(scans)


def _one_contrast(site, scene, state, dims, key, misalign_mm, output_spacing, acquisition, contrast, sequence):
    """The Scan fields (from ``image`` on) of one scan in one sequence (``sequence`` 0: the primary, which also
    carries the label map when there are sequences)."""
    seed, index, scan_index = key
    labels = contrast is not None and sequence == 0
    if acquisition == "clinical":
        return _clinical_scan(site, scene, state, dims, key, misalign_mm, contrast, sequence, labels)
    noise_rng = scan_noise_rng(seed, site, index, scan_index) if sequence == 0 else \
        sequence_noise_rng(seed, site, index, scan_index, sequence)
    image, mask, drift = _render(site, scene, state, dims, noise_rng, contrast)
    label_map = _label_map(site, scene, state, dims) if labels else None
    shift = (0.0,) * dims
    if misalign_mm > 0 and scan_index > 0:
        shift_rng = np.random.default_rng(np.random.SeedSequence([int(seed), SITE_CODES[site.name], index,
                                                                  2000 + scan_index]))
        image, mask, shift = _misalign(shift_rng, image, mask, output_spacing, misalign_mm)
        if label_map is not None:
            shift_vox = np.asarray(shift) / np.asarray(output_spacing[: image.ndim])
            label_map = ndimage.shift(label_map, shift_vox, order=0, mode="constant")
    fields = {"image": to_int16(image, *site.stored_range), "mask": mask.astype(np.uint8), "drift_mm": drift,
              "shift_mm": shift}
    return fields | ({"labels": label_map.astype(np.uint8)} if label_map is not None else {})


def _drift(site: Site, scene: _Scene, state: TumourState):
    """(drift mm, support box, displacement) of the tissue around this tumour state (Site.mass_effect_field)."""
    return site.mass_effect_field(state, scene.box, scene.anatomy, scene.center_vox, scene.inner_mm, scene.reach_mm)


def _baseline_anatomy(site: Site, scene: _Scene, state: TumourState, dims: int) -> dict[str, np.ndarray]:
    """Anatomy masks displaced by the baseline tumour's mass effect, in output space."""
    _, box, displacement = _drift(site, scene, state)
    return {name: site.to_output(warp(m, box, displacement, order=0), dims).astype(np.uint8)
            for name, m in scene.anatomy.masks.items()}


def _observed(clinical: Clinical, rng: np.random.Generator, missing_rate: float) -> dict:
    """Clinical values as recorded: each cell missing with probability ``missing_rate``."""
    return {name: (None if rng.random() < missing_rate else value) for name, value in clinical.items()}


def _survival(site: Site, rng: np.random.Generator, clinical: Clinical, log_burden: float, responder: bool):
    """Weibull PH survival from baseline (the patient is alive at the last scan), uniform censoring."""
    s, k = site.survival, site.survival.shape
    scale = s.median_days / np.log(2) ** (1 / k)
    risk = site.survival_risk(clinical, log_burden, responder)
    death_day = site.timepoints[-1].days + scale * (-np.log(1 - rng.random())) ** (1 / k) * np.exp(-risk / k)
    censor_day = rng.uniform(*s.censor_days)
    return int(round(min(death_day, censor_day))), int(death_day <= censor_day), float(death_day)


def simulate_patient(site: Site, index: int, seed: int, dims: int, misalign_mm: float = 0.0,
                     treated: bool = True, acquisition: str = "ideal", sequences: tuple[str, ...] = ()) -> PatientRecord:
    """Simulate patient number ``index`` (0-based) of a cohort: scans, counterfactuals, outcomes, truth.

    ``treated=False``: an untreated (natural history) patient, e.g. for a pre-training cohort (ImmunoDiff
    stage 1): the follow-ups grow without the treatment's kill, there are no counterfactuals, and the id
    is U0001... instead of P0001.... ``acquisition="clinical"``: scans as a clinic acquires them
    (acquisition.py), and more missing clinical values.
    """
    rng = patient_streams(seed, site, index, treated)
    clinical = site.draw_clinical(rng["clinical"])
    probability = site.response_probability(clinical)
    responder = bool(rng["clinical"].random() < probability)
    random_effect = float(rng["clinical"].normal(0.0, site.random_effect_sd))
    observed = _observed(clinical, rng["clinical"], MISSING_RATE if acquisition == "clinical" else site.missing_rate)

    anatomy = site.make_anatomy(rng["anatomy"], dims)
    half = tuple(int(np.ceil(site.simulation_box_mm / s)) for s in anatomy.spacing)
    center = _choose_center(rng["tumour"], anatomy, half)
    box = box_around(center, half, anatomy.background.shape)
    model = site.growth_model(anatomy, box, clinical)
    radius = rng["tumour"].uniform(*site.seed_radius_mm)
    seed_state = site.seed(rng["tumour"], model, anatomy, box, tuple(c - b.start for c, b in zip(center, box)), radius)
    baseline = site.evolve(seed_state, model, -float(site.pre_growth_days), (0.0,))[0]

    if treated:
        factual = _simulate_arm(site, model, baseline, clinical, responder, random_effect)
        counterfactual = _simulate_arm(site, model, baseline, clinical, not responder, random_effect)
    else:
        factual = counterfactual = _untreated_arm(site, model, baseline)
    baseline_mask = _in_full(site, baseline, box, anatomy.background.shape)
    scene = _make_scene(site, anatomy, rng["tumour"], box, center, baseline_mask)
    record = _record(site, (index, seed, dims, misalign_mm, acquisition, tuple(sequences)), rng, scene, clinical, observed, baseline,
                     (factual, counterfactual), probability, random_effect)
    if treated:
        return record
    return replace(record, patient_id=f"U{index + 1:04d}", counterfactuals=())


def _record(site, options, rng, scene, clinical, observed, baseline, arms, probability,
            random_effect) -> PatientRecord:
    index, seed, dims, misalign_mm, acquisition, sequences = options
    factual, counterfactual = arms
    spacing = tuple(float(s) for s in np.linalg.norm(scene.anatomy.affine[:3, :3], axis=0)[:dims])
    followups = tuple((k if t.scan is None else t.scan, t) for k, t in enumerate(site.followups, start=1))
    swelling = interim_swelling_mm(seed, site, index) if any(k >= INTERIM_SCAN for k, _ in followups) else None
    if swelling is not None:  # the interim scans' treatment-related swelling, the same in both arms
        arms = tuple(replace(arm, states=tuple(_swollen(s, scene.anatomy.spacing, swelling) if k >= INTERIM_SCAN
                                               else s for (k, _), s in zip(followups, arm.states))) for arm in arms)
        factual, counterfactual = arms
    base_scan = _scans(site, scene, index, seed, dims, (baseline,), ((0, site.baseline),), 0.0, spacing, acquisition,
                       sequences)
    scans = _scans(site, scene, index, seed, dims, factual.states, followups, misalign_mm, spacing, acquisition,
                   sequences)
    cf_scans = _scans(site, scene, index, seed, dims, counterfactual.states, followups, misalign_mm, spacing,
                      acquisition, sequences)
    log_burden = 3.0 * float(np.log(scene.inner_mm / site.reference_radius_mm))
    survival_days, death, death_day = _survival(site, rng["outcome"], clinical, log_burden, factual.label)
    truth = {
        "response_probability": probability, "responder_drawn": factual.responder, "random_effect": random_effect,
        "growth_factor": site.growth_factor(clinical), "response_metric": factual.metric,
        "cf_response_metric": counterfactual.metric, "strengthened": factual.strengthened,
        "cf_strengthened": counterfactual.strengthened, "baseline_radius_mm": scene.inner_mm,
        "center_voxel": " ".join(str(c) for c in scene.center_vox), "death_day": death_day,
        **({} if swelling is None else {"interim_swelling_mm": swelling}),
        **{f"true_{name}": value for name, value in clinical.items()},
    }
    return PatientRecord(
        patient_id=f"P{index + 1:04d}", clinical=observed, label=factual.label, cf_label=counterfactual.label,
        survival_days=survival_days, death=death, truth=truth, scans=base_scan + scans, counterfactuals=cf_scans,
        anatomy=_baseline_anatomy(site, scene, baseline, dims), affine=scene.anatomy.affine,
    )


INTERIM_SCAN = 100  # interim scans are scan numbers 100, 101, ...: the other scans keep their random draws


def with_interim(site: Site, days: tuple[int, ...]) -> Site:
    """``site`` with interim scans (labelled ``day<N>``) on ``days``: scans during treatment, between the baseline
    and the last follow-up. Their tumour comes from the same growth model as every other scan, so their early change
    carries the response only partly: the treatment's kill turns viable cells into dead ones that the body clears
    over months (the GTV counts both), the tumour keeps growing between fractions, and the per-patient random
    effect and scanner noise blur the rest. The other scans keep their scan numbers (their noise, acquisition and
    missing draws)."""
    if not days:
        return site
    days = tuple(int(d) for d in days)
    last = site.followups[-1].days
    existing = {t.days for t in site.timepoints}
    for day in days:
        if not 0 < day < last:
            raise ValueError(f"interim day {day} must be after the baseline and before the last follow-up (day {last})")
        if day in existing:
            raise ValueError(f"interim day {day} is already a scan day of the {site.name} site "
                             f"({', '.join(str(t.days) for t in site.timepoints)})")
    if len(set(days)) != len(days):
        raise ValueError(f"interim days listed twice: {sorted(days)}")
    numbered = [replace(t, scan=k) for k, t in enumerate(site.timepoints)]
    interim = [Timepoint(f"day{d}", d, scan=INTERIM_SCAN + k) for k, d in enumerate(sorted(days))]
    return replace(site, timepoints=(numbered[0], *sorted(numbered[1:] + interim, key=lambda t: t.days)))


PSEUDOPROGRESSION_RATE = 0.3  # glioblastoma after chemoradiation: about 20-30 % (Brandsma et al. 2008)
PSEUDOPROGRESSION_MM = (2.0, 5.0)  # its apparent growth of the GTV's edge at an interim scan
EARLY_EDGE_SD_MM = 1.0  # every patient: treatment-related swelling or shrinkage of the interim GTV's edge


def interim_swelling_mm(seed: int, site: Site, index: int) -> float:
    """How far the GTV's edge moves at this patient's interim scans, beyond the tumour's growth and kill (mm,
    signed): N(0, 1 mm) for everyone, plus, with probability 0.3, a pseudo-progression of 2-5 mm (treatment-
    related oedema and enhancement that later resolves). Drawn from its own stream, so nothing else changes."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), SITE_CODES[site.name], int(index), 5000]))
    edge = float(rng.normal(0.0, EARLY_EDGE_SD_MM))
    pseudo = rng.random() < PSEUDOPROGRESSION_RATE
    return edge + (float(rng.uniform(*PSEUDOPROGRESSION_MM)) if pseudo else 0.0)


def _swollen(state: TumourState, spacing: tuple[float, ...], swelling_mm: float) -> TumourState:
    """The tumour as an interim scan shows it: its GTV's edge moved out by ``swelling_mm`` (treatment-related dead
    and inflamed tissue counted as tumour) or, when negative, in (the rim reads below the GTV threshold)."""
    gtv = state.cellularity >= MASK_THRESHOLD
    if swelling_mm == 0 or not gtv.any():
        return state
    if swelling_mm > 0:
        outside = ndimage.distance_transform_edt(~gtv, sampling=spacing)
        ring = ~gtv & (outside <= swelling_mm)
        dead = np.where(ring, np.maximum(state.dead, MASK_THRESHOLD + 0.05 - state.viable), state.dead)
        return TumourState(state.viable, dead.astype(np.float32))
    inside = ndimage.distance_transform_edt(gtv, sampling=spacing)
    rim = gtv & (inside <= -swelling_mm)
    scale = np.where(rim, (MASK_THRESHOLD - 0.05) / np.maximum(state.cellularity, 1e-6), 1.0).astype(np.float32)
    return TumourState(state.viable * scale, state.dead * scale)
