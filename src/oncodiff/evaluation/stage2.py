"""ImmunoDiff stage 2: response and survival from the frozen denoiser's up-block features.

One feature vector per patient (pipeline.denoiser_features at evaluation.feature_timestep, for the
patient's first follow-up). Heads and baselines (clinical variables alone; a CNN from scratch on the
baseline crop, with and without the clinical variables) are scored in the same stratified,
patient-grouped folds.

Caveat, reported with the numbers: the denoiser was trained on the training split's follow-up scans,
so features of training patients may carry their outcome. The out-of-fold metrics restricted to
test-split patients are reported beside the all-patient ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from oncodiff.config import Config
from oncodiff.data.clinical import clinical_design_matrix
from oncodiff.evaluation.paired import patient_bootstrap
from oncodiff.outcomes.cnn import CNNOptions, cross_validate_cnn_response, cross_validate_cnn_survival
from oncodiff.outcomes.cross_validation import CVResult, concordance, response_metrics, survival_metrics
from oncodiff.outcomes.folds import folds_problem
from oncodiff.outcomes.heads import HeadOptions, cross_validate_response, cross_validate_survival
from oncodiff.outcomes.survival_curves import kaplan_meier_by_risk
from oncodiff.pipeline.cases import CaseSet, load_cases
from oncodiff.pipeline.denoiser_features import denoiser_features
from oncodiff.pipeline.export import ExportedModel
from oncodiff.runs import RunFolder

BOOTSTRAP_DRAWS = 1000  # patient-bootstrap resamples for the c-index interval


def evaluate_outcomes(model: ExportedModel, config: Config, cohort, run: Path, cache_dir=None) -> dict:
    """Cross-validated response and survival prediction: stage-2 heads vs baselines (module doc)."""
    cases = _first_case_per_patient(load_cases(model, cohort, cache_dir=cache_dir))
    patients = np.array([c.patient_id for c in cases.cases])
    test = set(RunFolder(run).splits().test)
    features = denoiser_features(model, cases, config.evaluation.feature_timestep)
    clinical = clinical_design_matrix(cases.batch["clinical"].numpy(), cases.batch["clinical_missing"].numpy(),
                                      model.layout.clinical)
    images = torch.cat([cases.batch["pre"], cases.batch["tumor_mask"]], dim=1).numpy()
    ev, seed = config.evaluation, config.training.seed
    head, cnn = HeadOptions.from_config(ev), CNNOptions.from_config(ev)
    out = {"n_patients": len(patients), "feature_dim": int(features.shape[1]),
           "feature_timestep": ev.feature_timestep, "folds": ev.folds, "caveat": __doc__.split("Caveat, reported with the numbers: ")[1].strip()}
    labels = cases.batch["response"].numpy()
    problem = folds_problem(labels[labels >= 0], ev.folds)
    if problem is None:
        print("cross-validating response heads and baselines ...", flush=True)
        results = {
            "denoiser features + head": cross_validate_response(features, labels, patients, ev.folds, seed, "head", head),
            "clinical (logistic)": cross_validate_response(clinical, labels, patients, ev.folds, seed, "logistic", head),
            "CNN on pre-scan": cross_validate_cnn_response(images, labels, patients, ev.folds, seed, None, cnn),
            "CNN + clinical": cross_validate_cnn_response(images, labels, patients, ev.folds, seed, clinical, cnn),
        }
        out["response"] = {k: _with_test_only(r, patients, test, labels=labels) for k, r in results.items()}
    else:
        out["response"] = {"status": f"not available: {problem}"}
    out.update(_survival(cases, patients, test, features, clinical, images, config))
    return out


def _survival(cases: CaseSet, patients, test, features, clinical, images, config: Config) -> dict:
    ev, seed = config.evaluation, config.training.seed
    time, event = cases.batch["survival_time"].numpy(), cases.batch["survival_event"].numpy()
    known = np.isfinite(time) & np.isfinite(event)
    if known.sum() < ev.folds or event[known].sum() < 2:
        return {"survival": {"status": "not available: too few patients with known survival and events"}}
    problem = folds_problem(event[known], ev.folds)
    if problem:
        return {"survival": {"status": f"not available: {problem}"}}
    print("cross-validating survival heads and baselines ...", flush=True)
    head, cnn = HeadOptions.from_config(ev), CNNOptions.from_config(ev)
    results = {
        "denoiser features + Cox head": cross_validate_survival(features, time, event, patients, ev.folds, seed,
                                                                "cox_head", head),
        "clinical (Cox PH)": cross_validate_survival(clinical, time, event, patients, ev.folds, seed, "coxph", head),
        "CNN on pre-scan": cross_validate_cnn_survival(images, time, event, patients, ev.folds, seed, None, cnn),
        "CNN + clinical": cross_validate_cnn_survival(images, time, event, patients, ev.folds, seed, clinical, cnn),
    }
    km = kaplan_meier_by_risk(time, event, results["denoiser features + Cox head"].oof)
    scored = {k: _with_test_only(r, patients, test, time=time, event=event) | {
        "pooled_c_index": bootstrap_c_index(time, event, r.oof, patients, seed)} for k, r in results.items()}
    return {"survival": scored, "kaplan_meier": km.to_dict()}


def bootstrap_c_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray, patients: np.ndarray, seed: int,
                      n_boot: int = BOOTSTRAP_DRAWS) -> dict:
    """The c-index of the pooled out-of-fold risks over all patients, with a 95 % percentile interval from
    resampling patients with replacement (evaluation.paired.patient_bootstrap; draws without an admissible pair
    are skipped)."""
    ok = np.isfinite(risk) & np.isfinite(time) & np.isfinite(event)
    time, event, risk, patients = time[ok], event[ok], risk[ok], patients[ok]
    boot = patient_bootstrap(lambda rows: concordance(time[rows], risk[rows], event[rows]), patients, n_boot, seed)
    return {"c_index": boot["value"], "ci95": boot["ci95"], "n_patients": boot["n_patients"], "n_boot": boot["n_boot"]}


def _first_case_per_patient(cases: CaseSet) -> CaseSet:
    """Each patient's earliest follow-up case; among slices of one lesion, the one with most tumour."""
    best: dict[str, tuple[float, float, int]] = {}
    tumor = cases.batch["tumor_mask"].flatten(1).sum(1)
    for i, c in enumerate(cases.cases):
        rank = (c.days, -float(tumor[i]), i)
        if c.patient_id not in best or rank < best[c.patient_id]:
            best[c.patient_id] = rank
    return cases.select(sorted(r[2] for r in best.values()))


def _with_test_only(result: CVResult, patients, test: set, labels=None, time=None, event=None) -> dict:
    out = result.to_dict()
    on_test = np.array([p in test for p in patients]) & np.isfinite(result.oof)
    if labels is not None:
        on_test &= labels >= 0
        ok = on_test.sum() >= 2 and len(set(labels[on_test])) == 2
        out["test_split_only"] = response_metrics(labels[on_test], result.oof[on_test]) if ok else None
    else:
        ok = on_test.sum() >= 2 and event[on_test].sum() >= 1
        out["test_split_only"] = survival_metrics(time[on_test], event[on_test], result.oof[on_test]) if ok else None
    out["n_test_split"] = int(on_test.sum())
    return out
