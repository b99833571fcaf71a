"""ImmunoDiff stage 2: response and survival from the frozen denoiser's up-block features.

One feature vector per patient: the denoiser is run once at a fixed noise level
(evaluation.feature_timestep) on fixed noise, conditioned on the patient's baseline crop, clinical
variables and first follow-up time, with the class label nulled (the outcome is what we predict);
up-block outputs are averaged over the image and inside the tumour, and concatenated. Heads and
baselines (clinical variables alone; a CNN from scratch on the baseline crop, with and without the
clinical variables) are scored in the same stratified, patient-grouped folds.

Caveat, reported with the numbers: the denoiser was trained on the training split's follow-up scans,
so features of training patients may carry their outcome. The out-of-fold metrics restricted to
test-split patients are reported beside the all-patient ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from oncodiff.config import Config
from oncodiff.diffusion import NoiseSchedule
from oncodiff.evaluation.outcomes import (
    CNNOptions, CVResult, HeadOptions, clinical_design_matrix, cross_validate_cnn_response,
    cross_validate_cnn_survival, cross_validate_response, cross_validate_survival, kaplan_meier_by_risk,
    response_metrics, survival_metrics,
)
from oncodiff.models import LatentDenoiser, upblock_features
from oncodiff.pipeline.cases import CaseSet, load_cases
from oncodiff.pipeline.export import ExportedModel
from oncodiff.pipeline.predict import case_conditions

FEATURE_SEED = 2024


def evaluate_outcomes(model: ExportedModel, config: Config, cohort, run: Path, cache_dir=None) -> dict:
    """Cross-validated response and survival prediction: stage-2 heads vs baselines (module doc)."""
    cases = _first_case_per_patient(load_cases(model, cohort, cache_dir=cache_dir))
    patients = np.array([c.patient_id for c in cases.cases])
    test = set(json.loads((run / "splits.json").read_text(encoding="utf-8"))["test"])
    features = patient_features(model, config, cases)
    clinical = clinical_design_matrix(cases.batch["clinical"].numpy(), cases.batch["clinical_missing"].numpy(),
                                      model.layout.clinical)
    images = torch.cat([cases.batch["pre"], cases.batch["tumor_mask"]], dim=1).numpy()
    ev, seed = config.evaluation, config.training.seed
    head, cnn = HeadOptions.from_config(ev), CNNOptions.from_config(ev)
    out = {"n_patients": len(patients), "feature_dim": int(features.shape[1]),
           "feature_timestep": ev.feature_timestep, "folds": ev.folds, "caveat": __doc__.split("Caveat, reported with the numbers: ")[1].strip()}
    labels = cases.batch["response"].numpy()
    if (labels >= 0).sum() >= ev.folds:
        print("cross-validating response heads and baselines ...", flush=True)
        results = {
            "denoiser features + head": cross_validate_response(features, labels, patients, ev.folds, seed, "head", head),
            "clinical (logistic)": cross_validate_response(clinical, labels, patients, ev.folds, seed, "logistic", head),
            "CNN on pre-scan": cross_validate_cnn_response(images, labels, patients, ev.folds, seed, None, cnn),
            "CNN + clinical": cross_validate_cnn_response(images, labels, patients, ev.folds, seed, clinical, cnn),
        }
        out["response"] = {k: _with_test_only(r, patients, test, labels=labels) for k, r in results.items()}
    else:
        out["response"] = {"status": f"not available: fewer than {ev.folds} patients with a known response"}
    out.update(_survival(cases, patients, test, features, clinical, images, config))
    return out


def _survival(cases: CaseSet, patients, test, features, clinical, images, config: Config) -> dict:
    ev, seed = config.evaluation, config.training.seed
    time, event = cases.batch["survival_time"].numpy(), cases.batch["survival_event"].numpy()
    known = np.isfinite(time) & np.isfinite(event)
    if known.sum() < ev.folds or event[known].sum() < 2:
        return {"survival": {"status": "not available: too few patients with known survival and events"}}
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
    return {"survival": {k: _with_test_only(r, patients, test, time=time, event=event) for k, r in results.items()},
            "kaplan_meier": km.to_dict()}


def patient_features(model: ExportedModel, config: Config, cases: CaseSet) -> np.ndarray:
    """(P, 2F): up-block features averaged over the crop and inside the baseline tumour, per case."""
    net, device = model.net, next(model.net.parameters()).device
    schedule = NoiseSchedule.from_config(model.config.diffusion)
    t_value = min(config.evaluation.feature_timestep, schedule.num_train_timesteps - 1)
    cond = case_conditions(model, cases, "null").to(device)
    pre = cases.batch["pre"].to(device)
    if isinstance(net, LatentDenoiser):  # features of the latent U-Net, on the latent grid
        with torch.inference_mode():
            cond = net.encode_conditions(cond)
        pre = net.z_pre(cond)
    shape = (len(cases), net.target_channels, *cond.image.shape[2:])
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(FEATURE_SEED)).to(device)
    # The prior sample at this noise level: zero drift (or the pre scan, for a post target) plus noise.
    x0 = torch.zeros(shape, device=device) if model.config.diffusion.target == "drift" else pre
    t = torch.full((len(cases),), t_value, dtype=torch.long, device=device)
    x_t = schedule.add_noise(x0, noise, t)
    with torch.inference_mode():
        whole = upblock_features(net, x_t, t, cond)
        tumor = upblock_features(net, x_t, t, cond, region_mask=cases.batch["tumor_mask"].to(device))
    return torch.cat([whole, tumor], dim=1).cpu().numpy()


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
