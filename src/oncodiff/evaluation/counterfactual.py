"""Does conditioning do what it claims? Counterfactual predictions against counterfactual truth.

Synthetic cohorts (``oncodiff synth``) ship ``counterfactuals.csv``: each follow-up as it would have
been under the opposite response class, from the same anatomy and noise. For every test case that
has one, the model predicts the follow-up twice, under the true class and under the flipped class.
The prediction moves in the right direction when the predicted volume change moves the same way as
the true change does between the factual and the counterfactual scan.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from oncodiff.cohort.schema import COUNTERFACTUALS_CSV
from oncodiff.config import Config
from oncodiff.data import crop_baseline, cut_followup
from oncodiff.pipeline.cases import CaseSet
from oncodiff.pipeline.export import ExportedModel
from oncodiff.pipeline.predict import Predictions, predict_cases
from oncodiff.pipeline.volumes import CaseVolumes, crop_spacing, load_segmenter


def flipped_classes(model: ExportedModel, cases: CaseSet) -> torch.Tensor | None:
    """(B,) the class each case is predicted under for the counterfactual check: the flipped response class where
    the cohort has a counterfactual scan of the case and its response is known, else its true class (drawn
    anyway by the oracle: nothing more to sample); None where the check does not apply."""
    path = cases.cohort.root / COUNTERFACTUALS_CSV
    if model.config.model.class_label != "response" or not path.is_file():
        return None
    table = pd.read_csv(path, dtype=str)
    table = table.assign(lesion_id=table.get("lesion_id", "L1")).fillna({"lesion_id": "L1"})
    listed = set(zip(table.patient_id, table.lesion_id, table.timepoint))
    response = cases.batch["response"].long()
    has = torch.tensor([(c.patient_id, c.lesion_id, c.timepoint) in listed for c in cases.cases])
    true = torch.where(response < 0, torch.full_like(response, model.net.null_class), response)
    return torch.where(has & (response >= 0), 1 - response, true)


def evaluate_counterfactuals(model: ExportedModel, config: Config, cases: CaseSet, cache_dir=None,
                             factual: Predictions | None = None, counter: Predictions | None = None) -> dict:
    """Direction and accuracy of predictions under the flipped response class (see module doc). ``factual``:
    the predictions of every case in ``cases`` under its true class, and ``counter`` under
    :func:`flipped_classes`, when the caller has them already (evaluate samples them with the other class modes,
    with the same seed: oncodiff.pipeline.predict_modes), so they are not sampled twice."""
    path = cases.cohort.root / COUNTERFACTUALS_CSV
    if not path.is_file():
        return {"status": f"not available: the cohort has no {COUNTERFACTUALS_CSV} (synthetic cohorts have one)"}
    if model.config.model.class_label != "response":
        return {"status": "not available: the model is not conditioned on the response class (model.class_label)"}
    index, cf_post, cf_mask = counterfactual_truth(cases, pd.read_csv(path, dtype=str), config)
    if not index:
        return {"status": "not available: no test case has a counterfactual scan"}
    known = cases.select(index).batch["response"] >= 0
    index = [i for i, k in zip(index, known) if bool(k)]
    sub = cases.select(index)
    cf_post, cf_mask = cf_post[known.numpy()], cf_mask[known.numpy()]
    if not len(sub):
        return {"status": "not available: the test cases with counterfactuals have no known response"}
    print(f"counterfactual predictions for {len(sub)} test cases ...", flush=True)
    n, seed = config.sampling.samples, config.training.seed
    factual = factual.select(index) if factual is not None else predict_cases(model, sub, n, seed, "true", config)
    flipped = CaseSet(sub.cases, {**sub.batch, "class_label": 1 - sub.batch["response"]}, sub.cohort, sub.data_hash)
    counter = counter.select(index) if counter is not None else predict_cases(model, flipped, n, seed, "given", config)
    return _score(model, config, sub, factual, counter, cf_post, cf_mask)


def counterfactual_truth(cases: CaseSet, table: pd.DataFrame, config: Config):
    """Indices of cases with a counterfactual row, and its crops (K, *S) cut like the factual pair's."""
    cohort, data = cases.cohort, config.data
    table = table.assign(lesion_id=table.get("lesion_id", "L1")).fillna({"lesion_id": "L1"})
    index, posts, masks, crops_cache = [], [], [], {}
    for i, case in enumerate(cases.cases):
        rows = table[(table.patient_id == case.patient_id) & (table.lesion_id == case.lesion_id)
                     & (table.timepoint == case.timepoint)]
        if rows.empty:
            continue
        key = (case.patient_id, case.lesion_id)
        if key not in crops_cache:
            base = cohort.baselines()
            row = base[(base.patient_id == case.patient_id) & (base.lesion_id == case.lesion_id)].iloc[0]
            crops_cache[key] = crop_baseline(cohort, row.to_dict(), data)
        baseline = crops_cache[key]
        cut = cut_followup(cohort, rows.iloc[0].to_dict(), baseline, data)
        k = next((j for j, c in enumerate(baseline.crops) if c.geometry.slice_index == case.geometry.slice_index), 0)
        index.append(i)
        posts.append(cut.post[k, 0])
        masks.append(cut.post_mask[k, 0])
    return index, np.array(posts), np.array(masks)


def _score(model, config, sub: CaseSet, factual, counter, cf_post: np.ndarray, cf_mask: np.ndarray) -> dict:
    segmenter = load_segmenter(model.path)
    threshold = config.evaluation.response_threshold
    v_f = CaseVolumes.measure(segmenter, sub, factual, threshold)
    v_cf = CaseVolumes.measure(segmenter, sub, counter, threshold)
    voxel = np.array([np.prod(crop_spacing(c.geometry)) for c in sub.cases])
    true_f = v_f.true_change()
    true_cf = np.where(v_f.baseline > 0, cf_mask.reshape(len(sub), -1).sum(1) * voxel / v_f.baseline - 1, np.nan)
    pred_f, pred_cf = np.nanmean(v_f.change(), axis=1), np.nanmean(v_cf.change(), axis=1)
    moves = np.sign(true_cf - true_f)
    ok = np.isfinite(pred_f) & np.isfinite(pred_cf) & np.isfinite(moves) & (moves != 0)
    right = np.sign(pred_cf - pred_f)[ok] == moves[ok]
    tumor = sub.batch["tumor_mask"][:, 0].numpy() > 0
    mae_cf = _masked_mae(counter.mean, cf_post, tumor)
    mae_vs_factual = _masked_mae(counter.mean, sub.batch["post"][:, 0].numpy(), tumor)
    per_case = [{"key": c.key, "true_class": int(sub.batch["response"][i]), "change_pred_factual_pct": _pct(pred_f[i]),
                 "change_pred_counterfactual_pct": _pct(pred_cf[i]), "change_true_factual_pct": _pct(true_f[i]),
                 "change_true_counterfactual_pct": _pct(true_cf[i])} for i, c in enumerate(sub.cases)]
    return {"n_cases": len(sub), "n_scored": int(ok.sum()),
            "fraction_right_direction": float(right.mean()) if ok.any() else None,
            "tumor_mae_to_counterfactual_truth": _mean(mae_cf),
            "tumor_mae_to_factual_truth": _mean(mae_vs_factual),
            "closer_to_counterfactual_truth": float(np.mean(mae_cf < mae_vs_factual)) if len(mae_cf) else None,
            "per_case": per_case}


def _masked_mae(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    rows = [np.abs(p - t)[m].mean() for p, t, m in zip(pred, truth, mask) if m.any()]
    return np.array(rows)


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def _pct(value: float) -> float | None:
    return float(100 * value) if np.isfinite(value) else None

