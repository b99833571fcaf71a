"""The class prior's inputs for a set of cases, and fitting it into an export.

``oncodiff train`` calls :func:`fit_export_class_prior` after exporting the denoiser: the candidates that
use denoiser features need the trained network, run on the training cases as ``predict`` runs it on new
ones (same case loading, same conditions), so a case's features are the same at fit and prediction time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from oncodiff.models import CLASS_COUNTS, CLASS_LABEL_KEYS
from oncodiff.pipeline.cases import CaseSet, load_cases
from oncodiff.outcomes.class_prior import (
    BASE_RATE, CLINICAL, CLINICAL_DENOISER, ClassPrior, interim_features, prior_features,
)
from oncodiff.pipeline.denoiser_features import denoiser_features
from oncodiff.pipeline.export import ExportedModel, load_export, read_export_meta, update_export_meta
from oncodiff.outcomes.survival_risk import SurvivalRisk

NOT_CONDITIONED = "no class prior: the model is not conditioned on a class (model.class_label: none)"


def has_prior_scans(cases: CaseSet) -> bool:
    """Whether any case comes with an earlier scan than its target (data.inputs=prior and an interim scan or an
    earlier follow-up): the class prior then also reads the early change (class_prior.interim_features)."""
    days = cases.batch.get("prior_days")
    return days is not None and bool(np.isfinite(days.numpy()).any())


def case_prior_features(model: ExportedModel, cases: CaseSet, interim: bool | None = None) -> np.ndarray:
    """(B, F) the clinical candidate's features of ``cases`` (clinical design matrix and baseline size), followed,
    with ``interim`` (default: whether the cases have prior scans), by class_prior.INTERIM_FEATURES."""
    features = prior_features(cases.batch["clinical"].numpy(), cases.batch["clinical_missing"].numpy(),
                              cases.batch["tumor_mask"].numpy(), model.layout.clinical)
    if not (has_prior_scans(cases) if interim is None else interim):
        return features
    if "prior_days" not in cases.batch:  # a case set without prior slots: every case lacks a prior scan
        return np.concatenate([features, np.zeros((len(features), 4))], axis=1)
    batch = {k: cases.batch[k].numpy() for k in ("pre_raw", "tumor_mask", "priors", "prior_masks", "prior_days")}
    return np.concatenate([features, interim_features(batch["pre_raw"], batch["tumor_mask"], batch["priors"],
                                                      batch["prior_masks"], batch["prior_days"])], axis=1)


def candidate_inputs(model: ExportedModel, cases: CaseSet, timestep: int,
                     interim: bool | None = None) -> dict[str, np.ndarray]:
    """Each candidate feature set of ``cases``, rows aligned with the cases."""
    clinical = case_prior_features(model, cases, interim)
    return {CLINICAL: clinical,
            CLINICAL_DENOISER: np.concatenate([clinical, denoiser_features(model, cases, timestep)], axis=1)}


def prior_inputs(model: ExportedModel, cases: CaseSet, prior: ClassPrior) -> np.ndarray:
    """(B, F) the features ``prior`` was fitted on, for ``cases``."""
    if prior.inputs == CLINICAL_DENOISER:
        return candidate_inputs(model, cases, prior.feature_timestep, prior.interim)[CLINICAL_DENOISER]
    return case_prior_features(model, cases, prior.interim)  # CLINICAL, and BASE_RATE (reads only the row count)


def load_class_prior(model: ExportedModel) -> ClassPrior | None:
    """The exported class prior; None when the model has no class label or training fitted none."""
    raw = read_export_meta(model.path).get("class_prior")
    if not raw or model.config.model.class_label == "none":
        return None
    return ClassPrior.from_dict(raw)


def class_probabilities(model: ExportedModel, cases: CaseSet) -> np.ndarray | None:
    """(B, K) p(class | inputs) from the exported class prior; None without one. The crops of one follow-up
    (tumour slices) share the mean of their probabilities, so every crop of a follow-up's sample k is drawn
    under the same class and the stitched sample shows one outcome."""
    prior = load_class_prior(model)
    if prior is None:
        return None
    probability = prior.probabilities(prior_inputs(model, cases, prior))
    for group in cases.follow_ups():
        probability[group] = probability[group].mean(axis=0)
    return probability


def class_prior_note(model: ExportedModel) -> str:
    """One sentence for predict: which predictor gives the class probabilities."""
    prior = load_class_prior(model)
    if prior is None:
        return NOT_CONDITIONED if model.config.model.class_label == "none" else \
            "no class prior: the training split had fewer than two classes"
    return f"class probabilities from {prior.describe()}"


def fit_export_class_prior(folder: str | Path, cohort: str | Path, patients: Sequence[str], seed: int = 0,
                           cache_dir: str | Path | None = None) -> ClassPrior | None:
    """Choose and fit the class prior on ``patients`` (the training split) and store it in the export's
    config.json (``class_prior``: None when the model has no class label or the patients one class), with
    a response-conditioned model's Cox model on the same inputs (``survival_risk``, outcomes.survival_risk)."""
    model = load_export(folder)
    kind = model.config.model.class_label
    prior = survival = None
    if kind != "none" and patients:
        cases = load_cases(model, cohort, patients, cache_dir=cache_dir)
        timestep = model.config.evaluation.feature_timestep
        labels = cases.batch[CLASS_LABEL_KEYS[kind]].numpy()
        groups = np.array([c.patient_id for c in cases.cases])  # CV folds keep a patient's rows together
        print(f"choosing the class prior on {len(cases)} training cases ...", flush=True)
        interim = has_prior_scans(cases)
        inputs = candidate_inputs(model, cases, timestep, interim)
        prior = ClassPrior.select(inputs, labels, CLASS_COUNTS[kind], seed, groups, timestep)
        prior = None if prior is None else dataclasses.replace(prior, interim=interim and prior.inputs != BASE_RATE)
        survival = None if prior is None or kind.startswith("survival") else SurvivalRisk.fit(
            inputs.get(prior.inputs, inputs[CLINICAL]), cases.batch["survival_time"].numpy(),
            cases.batch["survival_event"].numpy(), groups, prior)
    update_export_meta(model.path, class_prior=None if prior is None else prior.to_dict(),
                       survival_risk=None if survival is None else survival.to_dict())
    if prior is not None:
        print(f"class prior: {prior.describe()}", flush=True)
    if survival is not None:
        print(f"survival risk for predict: {survival.describe()}", flush=True)
    return prior


def survival_risk_summary(model: ExportedModel, cases: CaseSet, probability: np.ndarray | None) -> dict:
    """predict's survival risk per follow-up, from the chosen class prior: with a survival class, from its
    probabilities (B, K): 1 - E[class] / (K - 1), in [0, 1] (class 0 = shortest survival; with two classes,
    P(survival shorter than the training median)); with a response class, from the Cox model fitted on the
    prior's inputs (outcomes.survival_risk). Otherwise why there is none."""
    kind = model.config.model.class_label
    if not kind.startswith("survival"):
        return _cox_risk_summary(model, cases)
    if probability is None:
        return {"status": "not available: no class prior was used for this prediction (class given or none fitted)"}
    classes = np.arange(probability.shape[1])
    risk = 1 - probability @ classes / (len(classes) - 1)
    return {"from": class_prior_note(model), "definition": "1 - E[survival class] / (K - 1), class 0 = shortest",
            "risk": _per_follow_up(cases, risk)}


def _per_follow_up(cases: CaseSet, values: np.ndarray) -> dict[str, float]:
    """follow-up key -> the mean of ``values`` (one per case) over its crops."""
    return {cases.cases[group[0]].follow_up_key: float(np.mean(values[group])) for group in cases.follow_ups()}


def _cox_risk_summary(model: ExportedModel, cases: CaseSet) -> dict:
    raw, prior = read_export_meta(model.path).get("survival_risk"), load_class_prior(model)
    if prior is not None and prior.inputs == BASE_RATE:
        return {"status": "not available: the class prior chosen on the training split is the base rate (no inputs "
                          "predicted the outcome better), so there are no inputs to give a patient-specific risk"}
    if prior is None:
        return {"status": "not available: there is no class prior whose inputs a survival model could use "
                          f"(model.class_label={model.config.model.class_label})"}
    if not raw:
        return {"status": "not available: the export has no survival model (fewer than two training events, a Cox "
                          "fit that did not converge, or trained before it was fitted)"}
    cox = SurvivalRisk.from_dict(raw)
    risk = cox.log_hazard(prior_inputs(model, cases, prior))
    return {"from": cox.describe(), "definition": "log relative hazard against the average training patient "
            "(0 = average, higher = shorter expected survival)", "risk": _per_follow_up(cases, risk)}
