"""predict's survival risk for a response-conditioned model: a Cox model on the class prior's inputs.

A model conditioned on a survival class gets its risk from the class prior itself
(:func:`oncodiff.pipeline.prior_inputs.survival_risk_summary`). A model conditioned on response gets it
from a penalised Cox proportional-hazards model fitted at the end of ``oncodiff train``, beside the class
prior, on the same inputs the prior chose (clinical, or clinical and denoiser features), one row per
training patient (its earliest follow-up). When the chosen prior is the base rate, no inputs predicted the
outcome better than nothing, and no Cox model is fitted: predict says so instead of giving every patient
the same number. The fitted model is plain numbers in the export's config.json.
"""

from __future__ import annotations

import warnings

from dataclasses import asdict, dataclass

import numpy as np

from oncodiff.outcomes.class_prior import BASE_RATE, ClassPrior
from oncodiff.outcomes.scaling import Standardisation

PENALIZER = 0.1  # lifelines CoxPHFitter L2 penalizer, as for the clinical Cox baseline of `oncodiff evaluate`
MIN_EVENTS = 2


@dataclass(frozen=True)
class SurvivalRisk:
    """Cox PH on standardised features: log relative hazard = ((x - mean) / scale) . coef, 0 for a patient at
    the training mean; higher means shorter expected survival."""

    inputs: str
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    n_patients: int
    n_events: int
    penalizer: float = PENALIZER
    feature_timestep: int | None = None

    @classmethod
    def fit(cls, features: np.ndarray, time: np.ndarray, event: np.ndarray, groups: np.ndarray, prior: ClassPrior,
            penalizer: float = PENALIZER) -> SurvivalRisk | None:
        """Fit on each patient's first row (``groups``: the patient of each row) with a known time and event;
        None when ``prior`` is the base rate, there are fewer than :data:`MIN_EVENTS` events, or the fit does
        not converge."""
        import pandas as pd
        from lifelines import CoxPHFitter
        from lifelines.exceptions import ConvergenceError

        if prior.inputs == BASE_RATE:
            return None
        _, first = np.unique(groups, return_index=True)
        x, time, event = features[first].astype(np.float64), time[first], event[first]
        known = np.isfinite(time) & np.isfinite(event)
        if event[known].sum() < MIN_EVENTS:
            return None
        scaling = Standardisation.fit(x[known])
        z, mean, scale = scaling(x[known]), scaling.mean, scaling.scale
        # A feature constant over these rows (the interim features of a patient's first follow-up, which has no
        # earlier scan) carries nothing: it keeps coefficient 0 instead of an ill-posed fit.
        varying = np.flatnonzero(scaling.varying)
        names = [f"x{i}" for i in varying]
        if not names:
            return None
        frame = pd.DataFrame(z[:, varying], columns=names).assign(time=time[known], event=event[known])
        try:
            with warnings.catch_warnings():  # lifelines' convergence advice is for interactive use; failure raises
                warnings.simplefilter("ignore")
                fitter = CoxPHFitter(penalizer=penalizer).fit(frame, duration_col="time", event_col="event")
        except ConvergenceError:  # e.g. a handful of patients and hundreds of features
            return None
        coef = np.zeros(z.shape[1])
        coef[varying] = fitter.params_[names].to_numpy(dtype=float)
        return cls(prior.inputs, tuple(mean), tuple(scale), tuple(coef), int(known.sum()), int(event[known].sum()),
                   float(penalizer), prior.feature_timestep)

    def log_hazard(self, features: np.ndarray) -> np.ndarray:
        """(N,) log relative hazards of (N, F) features."""
        return ((features - np.asarray(self.mean)) / np.asarray(self.scale)) @ np.asarray(self.coef)

    def describe(self) -> str:
        return (f"Cox proportional hazards on {self.inputs} (penalizer {self.penalizer:g}), {self.n_patients} "
                f"training patients, {self.n_events} events")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> SurvivalRisk:
        return cls(str(raw["inputs"]), tuple(raw["mean"]), tuple(raw["scale"]), tuple(raw["coef"]),
                   int(raw["n_patients"]), int(raw["n_events"]), float(raw.get("penalizer", PENALIZER)),
                   raw.get("feature_timestep"))
