"""``oncodiff evaluate``: a run + its cohort -> every number of the evaluation protocol, side by side.

On the run's test split, each method predicts every case; the same code then scores them:
image metrics (whole image, baseline tumour mask, tumour box), tumour size through one segmenter
(NAC protocol), volume-change accuracy, uncertainty calibration, counterfactual direction (synthetic
cohorts), distribution distances, and ImmunoDiff's stage-2 response and survival heads against their
baselines in patient-grouped cross-validation. Writes ``OUT/summary.json`` (every number, per case and
aggregated, with the config and the data hash), ``OUT/tables.md`` and ``OUT/figures.npz`` (the arrays
the report draws), and prints the main table.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from oncodiff import __version__
from oncodiff.config import Config
from oncodiff.cohort.schema import SCANS_CSV
from oncodiff.errors import OncodiffError
from oncodiff.evaluation.baselines import (
    DENOISED_LABEL, MECHANISTIC_CLASS_LABEL, MECHANISTIC_LABEL, TRAINED_BASELINES, ensure_baseline,
    mechanistic_predictions, trivial_predictions,
)
from oncodiff.evaluation.counterfactual import evaluate_counterfactuals, flipped_classes
from oncodiff.evaluation.distribution import fid, lpips, mmd
from oncodiff.evaluation.distribution_scores import (
    class_probability_scores, in_tumour_scores, rank_histogram, spread_skill, volume_change_scores,
)
from oncodiff.evaluation.metrics import MetricTable, image_metrics
from oncodiff.evaluation.paired import BOOTSTRAP_DRAWS, paired_verdicts
from oncodiff.evaluation.stage2 import evaluate_outcomes
from oncodiff.evaluation.report.tables import format_tables
from oncodiff.evaluation.uncertainty import calibration_curve, coverage, spread_error_correlation
from oncodiff.layouts import EvaluationFolder
from oncodiff.models.conditions import CLASS_LABEL_KEYS
from oncodiff.outputs import check_output, check_run_finished, reads_cohort, staged_folder
from oncodiff.pipeline.calibration import IntervalCalibration, minimum_cases
from oncodiff.pipeline.cases import CaseSet, load_cases
from oncodiff.pipeline.export import ExportedModel, load_export, read_export_meta
from oncodiff.cohort import same_cohort
from oncodiff.pipeline.predict import (
    UNKNOWN_CLASS_MODES, Predictions, default_patients, load_calibration, predict_cases, predict_modes,
    rescale_spread, spread_calibration,
)
from oncodiff.pipeline.prior_inputs import class_probabilities, load_class_prior
from oncodiff.pipeline.volumes import CaseVolumes, load_segmenter
from oncodiff.runs import RunFolder

FIGURE_CASES = 6
UNKNOWN_CLASS_LABELS = {  # sampling.unknown_class -> the method's label in the tables
    "mixture": "diffusion, class predicted from clinical data (mixture)",
    "most_probable": "diffusion, most probable class from clinical data",
}
TOO_FEW_FOR_DISTANCES = "not defined: distribution distances compare sets of at least 2 test cases"
PAIRED_REFERENCES = ("identity", "denoised", "regression")  # what each method's paired verdict is against
PAIRED_SCORES = {"mae_tumor": True, "ssim_tumor": False, "crps_box": True}  # score -> lower is better
RANK_SEED = 0  # ties between the truth and samples in the rank histogram are broken by this generator


@dataclass
class MethodResult:
    """One method's predictions on the test cases and their measured tumour volumes."""

    name: str
    label: str
    predictions: Predictions
    volumes: CaseVolumes
    calibration: IntervalCalibration | None = None  # the conformal margins that apply to these predictions


@reads_cohort("evaluate")
def evaluate(model: str | Path, cohort: str | Path, out: str | Path, overrides: Sequence[str] = (),
             cache_dir: str | Path | None = None, overwrite: bool = False) -> Path:
    """Evaluate the run ``model`` on ``cohort``: its test split when ``cohort`` is the run's training cohort, else
    every patient (a new cohort; baselines and the denoised identity's sigma still come from the training
    cohort, recorded in RUN/cohort.json); returns ``OUT/summary.json``. ``out`` is written whole or not at all;
    ``overwrite`` replaces an earlier evaluation there (oncodiff/outputs.py)."""
    out = check_output(out, "evaluation", overwrite, inputs={"cohort": cohort, "run": model})
    run = Path(model).resolve()
    check_run_finished(run, reading="evaluate")
    if not RunFolder(run).splits_json.is_file():
        raise OncodiffError(f"{run}: not a run folder (no {RunFolder(run).splits_json.name}); evaluate needs the "
                            "run written by `oncodiff train`, to score its own test split")
    exported = load_export(run)
    config = exported.config.with_overrides(list(overrides)) if overrides else exported.config
    patients, which = default_patients(run, cohort)
    training_cohort = _training_cohort(run, cohort)
    cases = load_cases(exported, cohort, patients=patients, cache_dir=cache_dir)
    cases = cases.select([i for i, c in enumerate(cases.cases) if c.has_truth])
    print(f"evaluating {which}: {len(cases)} cases with a follow-up", flush=True)
    train_patients = list(RunFolder(run).splits().train)
    fits: dict = {}
    sampled: dict = {}
    methods = _run_methods(run, exported, config, cases, training_cohort, cache_dir, train_patients, fits, sampled)
    _calibrate_identity(methods, run, exported, config, training_cohort, cache_dir)
    summary = _score(methods, cases, config)
    summary["proper_scores"] = _proper_scores(methods, cases, config)
    summary["paired"] = _paired(summary, cases)
    oracle = next((m.predictions for m in methods if m.name == "diffusion_true_class"), None)
    summary["counterfactual"] = evaluate_counterfactuals(exported, config, cases, cache_dir, factual=oracle,
                                                         counter=sampled.get("flipped"))
    summary["class_prior"] = _class_prior_scores(exported, cases)
    summary["outcomes"] = evaluate_outcomes(exported, config, cohort, run, cache_dir)
    summary["mechanistic"] = fits.get("mechanistic", {"status": "off (evaluation.mechanistic=false)"})
    summary.update(_provenance(run, exported, config, cases, cohort))
    tables = format_tables(summary)
    with staged_folder(out, "evaluation") as partial:
        _write_figures(partial, methods, cases)
        EvaluationFolder(partial).summary_json.write_text(json.dumps(summary, indent=2, default=_json_default) + "\n",
                                                          encoding="utf-8")
        EvaluationFolder(partial).tables_md.write_text(tables, encoding="utf-8")
    print(tables, flush=True)
    return EvaluationFolder(out).summary_json


def _training_cohort(run: Path, cohort: str | Path) -> Path:
    """The cohort the run was trained on: where its baselines train and the denoised identity's sigma is chosen."""
    recorded = RunFolder(run).cohort_json
    if not recorded.is_file():
        return Path(cohort)
    fingerprint = json.loads(recorded.read_text(encoding="utf-8"))
    if same_cohort(fingerprint, cohort):
        return Path(cohort)
    if not (Path(fingerprint["path"]) / SCANS_CSV).is_file():
        raise OncodiffError(f"{cohort} is not the cohort {run} was trained on, and that cohort ({fingerprint['path']}, "
                            f"recorded in {recorded}) is gone; evaluate needs it to train the baselines on the run's "
                            "training split: restore it there, or evaluate on the training cohort")
    return Path(fingerprint["path"])


def _run_methods(run: Path, exported: ExportedModel, config: Config, cases: CaseSet, cohort,
                 cache_dir, train_patients: list[str], fits: dict | None = None,
                 sampled: dict | None = None) -> list[MethodResult]:
    """Every method's predictions of ``cases``; what the mechanistic forecast fitted goes into ``fits``, and the
    full model's samples under the counterfactual check's flipped classes into ``sampled["flipped"]``."""
    segmenter = load_segmenter(exported.path)
    threshold = config.evaluation.response_threshold
    n, seed = config.sampling.samples, config.training.seed
    identity, denoised, note = trivial_predictions(exported, cohort, train_patients, cases, cache_dir)
    print(f"denoised identity baseline: {note}", flush=True)
    results = [("identity", "identity (post = pre)", identity, None), ("denoised", DENOISED_LABEL, denoised, None)]
    if config.evaluation.mechanistic:
        forecast, given, fitted = mechanistic_predictions(exported, cohort, train_patients, cases, cache_dir)
        print(f"mechanistic forecast, outcome unknown: "
              f"{', '.join(f'{k} {v:.4g}' for k, v in fitted['outcome_unknown'].items())}", flush=True)
        results.append(("mechanistic", MECHANISTIC_LABEL, forecast, None))
        if given is not None:
            results.append(("mechanistic_true_class", MECHANISTIC_CLASS_LABEL, given, None))
        if fits is not None:
            fits["mechanistic"] = fitted
    for name in config.evaluation.baselines:
        baseline = load_export(ensure_baseline(run, cohort, exported.config, name, config.evaluation.baseline_minutes,
                                               cache_dir))
        print(f"predicting with baseline {name} ...", flush=True)
        # Baselines have no class label: their "predicted" (outcome unknown) and "null" modes are the same.
        results.append((name, TRAINED_BASELINES[name][0], predict_cases(baseline, cases, n, seed, "predicted"),
                        load_calibration(baseline)))
    print(f"sampling {n} predictions per case with the full model ...", flush=True)
    calibration = load_calibration(exported)  # fitted with the outcome unknown, as predict samples
    if exported.config.model.class_label == "none":
        results.append(("diffusion", "diffusion", predict_cases(exported, cases, n, seed, "predicted", config),
                        calibration))
        results += _as_drawn(exported, config, results[-1][2], "diffusion")
    else:
        # The outcome unknown: "diffusion" is what predict gives (sampling.unknown_class), then the other way.
        # Every mode's samples in one draw: sample k of a case under one class is drawn once (predict_modes).
        main = config.sampling.unknown_class
        unknowns = (main, *(u for u in UNKNOWN_CLASS_MODES if u != main))
        modes = {unknown: UNKNOWN_CLASS_MODES[unknown] for unknown in unknowns} | {"null": "null", "true": "true"}
        flipped = flipped_classes(exported, cases)
        if flipped is not None:
            modes["flipped"] = flipped
        drawn = predict_modes(exported, cases, n, seed, modes, config)
        for unknown in unknowns:
            fitted = calibration if calibration is not None and calibration.mode == modes[unknown] else None
            results.append(("diffusion" if unknown == main else f"diffusion_{unknown}", UNKNOWN_CLASS_LABELS[unknown],
                            drawn[unknown], fitted))
        results += _as_drawn(exported, config, drawn[main], UNKNOWN_CLASS_LABELS[main])
        results += [
            ("diffusion_null_class", "diffusion, null class (unconditional on the outcome)", drawn["null"], None),
            ("diffusion_true_class", "diffusion, true class (oracle, as in the papers)", drawn["true"], None),
        ]
        if sampled is not None and "flipped" in drawn:
            sampled["flipped"] = drawn["flipped"]
    return [MethodResult(name, label, p, CaseVolumes.measure(segmenter, cases, p, threshold), c)
            for name, label, p, c in results]


def _as_drawn(exported: ExportedModel, config: Config, predictions: Predictions, label: str) -> list[tuple]:
    """What predict gives with its spread calibration undone (oncodiff/pipeline/spread.py): the same draws, each
    sample's deviation from its class mean divided by the factor again, so the factor's effect on the test split
    is scored beside it; nothing when no factor (or 1) was applied. Its interval margins were fitted on scaled
    samples, so it has none."""
    spread = spread_calibration(exported, config)
    if spread is None or spread.factor == 1.0 or predictions.samples.shape[1] < 2:
        return []
    return [("diffusion_as_drawn", f"{label}, samples as drawn (spread x{spread.factor:g} undone)",
             rescale_spread(predictions, 1.0 / spread.factor), None)]


def _score(methods: list[MethodResult], cases: CaseSet, config: Config) -> dict:
    ev = config.evaluation
    spatial_dims = cases.batch["pre"].ndim - 2
    post = cases.batch["post"][:, 0].numpy()
    tumor = cases.batch["tumor_mask"][:, 0].numpy() > 0
    table = MetricTable()
    keys = [c.key for c in cases.cases]
    out = {"methods": {m.name: {"label": m.label, "samples": int(m.predictions.samples.shape[1])} for m in methods},
           "image_metrics": {}, "size": {}, "uncertainty": {}, "distribution": {}}
    groups = cases.follow_ups()  # volumes are per follow-up: the sum over its crops (tumour slices)
    follow_up_keys = [cases.cases[g[0]].follow_up_key for g in groups]
    for m in methods:
        table.add(m.name, image_metrics(m.predictions.mean, post, tumor, ev.bbox_margin, ev.data_range,
                                        spatial_dims=spatial_dims), case_ids=keys)
        volumes = m.volumes.grouped(groups)
        out["size"][m.name] = size_scores(volumes)
        out["uncertainty"][m.name] = _uncertainty(volumes, m.calibration, ev.coverage_levels)
        out["distribution"][m.name] = _mmd(m.predictions.mean, post, ev.mmd_bandwidth)
    out["image_metrics"] = {"aggregate": table.aggregate(), "per_case": table.rows()}
    out["distribution"]["fid"] = (fid(methods[-1].predictions.mean[:, None], post[:, None], ev.fid_weights)
                                  if len(post) >= 2 else {"value": None, "status": TOO_FEW_FOR_DISTANCES})
    out["distribution"]["lpips"] = {k: v for k, v in lpips(methods[-1].predictions.mean[:, None], post[:, None],
                                                            ev.lpips_weights).items() if k != "values"}
    out["per_case_size"] = {m.name: [m.volumes.grouped(groups).summary(i, m.calibration) | {"key": k}
                                     for i, k in enumerate(follow_up_keys)] for m in methods}
    return out


def _class_prior_scores(exported: ExportedModel, cases: CaseSet) -> dict:
    """The class prior (what the mixture samples by) against the test cases' true classes."""
    kind = exported.config.model.class_label
    prior = load_class_prior(exported)
    if prior is None:
        return {"status": "no class prior: the model is not conditioned on a class (model.class_label: none)"
                if kind == "none" else "no class prior: the training split had fewer than two classes"}
    labels = cases.batch[CLASS_LABEL_KEYS[kind]].numpy()
    scores = class_probability_scores(class_probabilities(exported, cases), labels, prior.frequencies)
    return {"fitted": prior.describe(), "inputs": prior.inputs, "frequencies": prior.frequencies,
            "cv_log_loss": dict(prior.cv_log_loss)} | scores


def _calibrate_identity(methods: list[MethodResult], run: Path, exported: ExportedModel, config: Config, cohort,
                        cache_dir) -> None:
    """Conformal margins for identity's (no) change from the validation split's true changes, as the trained
    methods get theirs, so its volume change is scored as a distribution too. Identity fits nothing, so every
    training follow-up is out of sample for it too: with too few validation follow-ups for the widest level,
    the training split's join them (as the fold models' out-of-fold predictions do for the trained methods)."""
    identity = next((m for m in methods if m.name == "identity"), None)
    splits = RunFolder(run).splits()
    if identity is None or not (splits.val or splits.train):
        return
    levels = config.evaluation.coverage_levels
    change, true = _identity_changes(exported, config, cohort, list(splits.val), cache_dir)
    split = "val"
    if len(true) < minimum_cases(levels) and splits.train:
        more = _identity_changes(exported, config, cohort, list(splits.train), cache_dir)
        change, true, split = np.concatenate([change, more[0]]), np.concatenate([true, more[1]]), "val + training"
    if len(true):
        identity.calibration = IntervalCalibration.fit(change, true, 1, "predicted", levels, split)


def _identity_changes(exported: ExportedModel, config: Config, cohort, patients: list[str],
                      cache_dir) -> tuple[np.ndarray, np.ndarray]:
    """(B, 1) identity's (zero) and (B,) true volume changes of ``patients``' follow-ups (empty without any)."""
    if not patients:
        return np.zeros((0, 1)), np.zeros(0)
    cases = load_cases(exported, cohort, patients=patients, cache_dir=cache_dir)
    cases = cases.select([i for i, c in enumerate(cases.cases) if c.has_truth])
    if not len(cases):
        return np.zeros((0, 1)), np.zeros(0)
    pre = cases.batch["pre_raw"][:, 0].numpy()
    masks = cases.batch["tumor_mask"][:, 0].numpy()[:, None] > 0 if exported.config.model.generate_mask else None
    volumes = CaseVolumes.measure(load_segmenter(exported.path), cases, Predictions(pre[:, None].copy(), pre, masks),
                                  config.evaluation.response_threshold).grouped(cases.follow_ups())
    return volumes.change(), volumes.true_change()


def _proper_scores(methods: list[MethodResult], cases: CaseSet, config: Config) -> dict:
    """Each method's volume-change CRPS, response-category log score and in-tumour CRPS / energy score."""
    post = cases.batch["post"][:, 0].numpy()
    tumor = cases.batch["tumor_mask"][:, 0].numpy() > 0
    ev, groups = config.evaluation, cases.follow_ups()  # volumes per follow-up: summed over its slices
    return {m.name: {"volume_change": volume_change_scores(m.volumes.grouped(groups).change(),
                                                           m.volumes.grouped(groups).true_change(),
                                                           m.volumes.threshold, m.calibration),
                     "in_tumour": in_tumour_scores(m.predictions.samples, post, tumor, ev.bbox_margin),
                     "spread_skill": spread_skill(m.predictions.samples, post, tumor, ev.bbox_margin),
                     "rank_histogram": rank_histogram(m.predictions.samples, post, tumor, ev.bbox_margin, RANK_SEED)}
            for m in methods}


def _paired(summary: dict, cases: CaseSet) -> dict:
    """Each method's per-case in-tumour MAE, SSIM (baseline mask) and per-voxel CRPS (tumour box) against those of
    post = pre, the denoised baseline and the regression U-Net, with patient-bootstrap 95 % intervals and a
    verdict (evaluation.paired)."""
    keys = [c.key for c in cases.cases]
    rows = {(r["method"], r["case_id"]): r for r in summary["image_metrics"]["per_case"]}
    scores = {}
    for name in summary["methods"]:
        crps = summary["proper_scores"][name]["in_tumour"].get("per_case_crps") or [None] * len(keys)
        scores[name] = {"mae_tumor": [rows.get((name, k), {}).get("mae_tumor") for k in keys],
                        "ssim_tumor": [rows.get((name, k), {}).get("ssim_tumor") for k in keys], "crps_box": crps}
    references = [r for r in PAIRED_REFERENCES if r in scores]
    return {"references": references, "scores": {k: "lower is better" if v else "higher is better"
                                                 for k, v in PAIRED_SCORES.items()},
            "n_boot": BOOTSTRAP_DRAWS,
            "verdicts": paired_verdicts(scores, [c.patient_id for c in cases.cases], references, PAIRED_SCORES)}


def _mmd(mean: np.ndarray, post: np.ndarray, bandwidth: float | None) -> dict:
    """MMD between a method's mean predictions and the true follow-ups, (B, *S) each; None with one case."""
    if len(post) < 2:
        return {"mmd": None, "status": TOO_FEW_FOR_DISTANCES}
    return {"mmd": mmd(mean.reshape(len(post), -1), post.reshape(len(post), -1), bandwidth)}


def size_scores(volumes: CaseVolumes) -> dict:
    """Volume-change accuracy of one method against the ground-truth follow-up masks."""
    pred = np.nanmean(volumes.change(), axis=1) if np.isfinite(volumes.samples).any() else np.full(len(volumes.true), np.nan)
    true = volumes.true_change()
    ok = np.isfinite(pred) & np.isfinite(true)
    if ok.sum() < 3:
        return {"n": int(ok.sum()), "source": volumes.source,
                "status": "not defined: fewer than 3 cases with a measurable change"}
    r = stats.pearsonr(pred[ok], true[ok]) if np.std(pred[ok]) > 0 else None
    agree = ((pred[ok] <= volumes.threshold) == (true[ok] <= volumes.threshold)).mean()
    return {"n": int(ok.sum()), "n_undefined": int((~ok).sum()), "source": volumes.source,
            "change_mae_pp": float(100 * np.abs(pred[ok] - true[ok]).mean()),
            "change_bias_pp": float(100 * (pred[ok] - true[ok]).mean()),
            "pearson_r": None if r is None else float(r.statistic), "pearson_p": None if r is None else float(r.pvalue),
            "response_agreement": float(agree)}


def _uncertainty(volumes: CaseVolumes, calibration: IntervalCalibration | None = None,
                 levels: Sequence[float] = (0.5, 0.9)) -> dict:
    """Coverage of the raw sample intervals and, with the run's conformal margins, of the calibrated ones."""
    change, true = volumes.change(), volumes.true_change()
    if change.shape[1] < 2:
        out = {"status": "deterministic: one prediction per case, no sample interval"}
    else:
        out = {"coverage": coverage(change, true, levels), "spread_error": spread_error_correlation(change, true),
               "calibration": calibration_curve(change, true)}
    if calibration is not None:
        out["calibrated"] = calibration.coverage(change, true) | {"fitted_on": calibration.describe()}
        if change.shape[1] != calibration.n_samples:
            out["calibrated"]["note"] = (f"margins fitted with {calibration.n_samples} samples per case, applied to "
                                         f"{change.shape[1]}: the calibrated coverage is approximate")
    return out


def _provenance(run: Path, exported: ExportedModel, config: Config, cases: CaseSet, cohort) -> dict:
    meta = read_export_meta(exported.path)
    return {"oncodiff_version": __version__, "run": str(run), "cohort": str(Path(cohort).resolve()),
            "data_hash": cases.data_hash, "config": config.model_dump(mode="json"),
            "test_cases": [c.key for c in cases.cases], "training_curves": str(RunFolder(run).metrics_csv),
            "segmenter": meta.get("segmenter"), "spread_calibration": meta.get("spread_calibration")
            if config.sampling.spread == "calibrated" else "off (sampling.spread=raw)"}


def _write_figures(out: Path, methods: list[MethodResult], cases: CaseSet) -> None:
    """The arrays the report draws: the first cases' images, all methods' means, samples, maps."""
    k = min(FIGURE_CASES, len(cases))
    arrays = {"keys": np.array([c.key for c in cases.cases[:k]]), "pre": cases.batch["pre_raw"][:k, 0].numpy(),
              "post": cases.batch["post"][:k, 0].numpy(), "tumor_mask": cases.batch["tumor_mask"][:k, 0].numpy(),
              "post_mask": cases.batch["post_mask"][:k, 0].numpy()}
    for m in methods:
        arrays[f"{m.name}/mean"] = m.predictions.mean[:k]
        arrays[f"{m.name}/samples"] = m.predictions.samples[:k, :2]
        arrays[f"{m.name}/std"] = m.predictions.std[:k]
        arrays[f"{m.name}/tumor_probability"] = m.volumes.probability[:k]
    np.savez_compressed(EvaluationFolder(out).figures_npz, **arrays)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
