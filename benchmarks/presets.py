"""Does every paper preset learn? Each chain trained on a synthetic cohort of its site, scored against post = pre.

    python -m benchmarks.presets --out benchmarks/results/presets [--minutes 15] [--chains ispy-ddpm gbm-ldm]
    ... --set diffusion.prediction=eps          # an override for every stage of every chain (the paper's setting)

For each chain (the paper registry, oncodiff/presets/papers.py: the presets of one paper, run in order, each later
stage starting from the earlier run as the registry says), on a 3D synthetic cohort of the chain's site:
1. every stage's cost is probed (training's own step probe, CPU seconds of this process: oncodiff/training/step_cost.py)
   and the chain's budget of ``--minutes`` CPU-minutes is shared out over its stages (``Stage.share``) as
   optimiser steps, so a busy machine does not change what is trained;
2. the stages train in order (a finished run is reused: delete its folder to retrain it);
3. the last stage's run is scored on its test split (at most ``--max-cases`` cases, evenly spread) by the code
   of ``oncodiff evaluate``: ``predict_cases`` (the outcome unknown, as predict samples), ``image_metrics``
   (in-tumour SSIM, PSNR, MAE: inside the baseline tumour mask), the volume change of ``CaseVolumes`` summed
   per follow-up, against post = pre and against evaluate's regression U-Net baseline (``ensure_baseline``:
   the same split, trained for the chain's CPU-minutes: ``regression_budget``), plus the paper's own headline
   figure. Paired: the per-case in-tumour MAE difference to post = pre with a 95 % bootstrap interval over
   patients. On synthetic cohorts, also what a prediction blind to the response class reaches at best (the
   counterfactual follow-ups of the cohort and of its twin without scanner noise: ``outcome_blind_bound``);
   for a latent chain, what a perfect latent diffusion with its autoencoder reaches (``latent_ceiling``).

Writes OUT/results.json (every number, per-stage costs and steps, the settings) and OUT/table.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from oncodiff.arrays import dice
from oncodiff.cohort.schema import COUNTERFACTUALS_CSV
from oncodiff.config import Config, load_config
from oncodiff.evaluation.baselines import baseline_config, ensure_baseline, trivial_predictions
from oncodiff.evaluation.counterfactual import counterfactual_truth
from oncodiff.evaluation.metrics import MetricTable, image_metrics, summarize
from oncodiff.evaluation.metrics import mae as region_mae
from oncodiff.evaluation.paired import paired_difference  # the patient bootstrap of `oncodiff evaluate`
from oncodiff.evaluation.protocol import size_scores
from oncodiff.evaluation.stage2 import evaluate_outcomes
from oncodiff.models import Conditions
from oncodiff.models.autoencoder import LatentDenoiser
from oncodiff.outputs import write_marker
from oncodiff.pipeline.cases import CaseSet, load_cases
from oncodiff.pipeline.export import ExportedModel, load_export
from oncodiff.pipeline.predict import Predictions, case_conditions, predict_cases, predictions_from_generated
from oncodiff.pipeline.volumes import CaseVolumes, load_segmenter
from oncodiff.precision import cpu_has_native_bf16
from oncodiff.presets.papers import PAPERS
from oncodiff.runs import RunFolder
from oncodiff.synth import synthesize
from oncodiff.training import train
from oncodiff.training.step_cost import cpu_seconds_per_step, steps_for


@dataclass(frozen=True)
class Stage:
    """One preset of a chain: trained on the ``cohort`` ("treated" or "public") for ``share`` of the budget."""

    name: str
    preset: str
    share: float
    cohort: str = "treated"
    init_from: str | None = None      # the stage whose run this one starts from
    anatomy_from: str | None = None   # the contrastive stage whose encoders make the ControlNet's control


@dataclass(frozen=True)
class Chain:
    site: str
    stages: tuple[Stage, ...]
    headline: str
    pretrain: bool = False               # an untreated "public" cohort for the first stages (ImmunoDiff)
    overrides: tuple[str, ...] = field(default=())
    guidance_scales: tuple[float, ...] = ()  # candidates, chosen on the validation split by in-tumour MAE


# Each stage's share of its chain's CPU-minutes and its folder under OUT/runs, by preset. The chains themselves
# (which presets, in which order, which run each starts from, on which cohort) are the paper registry's.
BUDGET = {
    "immunodiff-encoders": ("encoders", 0.1), "immunodiff-ddpm": ("ddpm", 0.35),
    "immunodiff-controlnet": ("controlnet", 0.25), "immunodiff": ("stage2", 0.3),
    "gbm-ldm-autoencoder": ("autoencoder", 0.6),  # an autoencoder step costs ~3 LDM steps
    "gbm-ldm": ("ldm", 0.4),
    "pulsar-drift": ("pulsar", 1.0), "pulsar-drift-method1": ("pulsar-m1", 1.0),
    "nac-prompt-base": ("base", 0.6), "nac-prompt": ("prompt", 0.4),
    "ispy-ddpm": ("ispy", 1.0),
}
SETTINGS = {  # chain -> the benchmark's settings beyond the registry
    "gbm-ldm": {"overrides": ("data.timepoints=[month4]", "model.use_days=false"),  # the paper's 4-month follow-up
                "guidance_scales": (1.0, 3.0, 10.0)},
}
# Not a paper setting: PULSAR with the clinical variables as tokens, to measure whether the response (drawn from
# clinical variables in the synthetic brain cohort, invisible on the baseline scan) is what it lacks. A variant
# of a paper's preset, listed after that paper's chains.
VARIANTS = {"pulsar-drift+clinical": ("pulsar-drift", Chain("brain", (Stage("pulsar-clinical", "pulsar-drift", 1.0),),
                                                            "lesion_agreement", overrides=("model.clinical=tokens",)))}


def registry_chains() -> dict[str, Chain]:
    """The registry's chains (by their last preset) as the benchmark trains them, each variant after its paper's."""
    def folder(preset: str | None) -> str | None:
        return BUDGET[preset][0] if preset else None

    def stage(s) -> Stage:
        return Stage(folder(s.preset), s.preset, BUDGET[s.preset][1], s.cohort, folder(s.init_from),
                     folder(s.anatomy_from))

    out = {}
    for paper in PAPERS:
        for last, stages in paper.chains().items():
            out[last] = Chain(paper.site, tuple(stage(s) for s in stages), paper.headline,
                              pretrain=any(s.cohort == "public" for s in stages), **SETTINGS.get(last, {}))
        out |= {variant: chain for variant, (of, chain) in VARIANTS.items() if of in paper.presets}
    return out


CHAINS = registry_chains()
COMMON = ["training.max_minutes=null", "sampling.calibrate=false", "data.test_fraction=0.25",
          "data.val_fraction=0.1"]


class Bench:
    """Cohorts, runs, costs and timings under OUT."""

    def __init__(self, out: Path, args: argparse.Namespace):
        self.out, self.args = out, args
        self.cache = out / "cache"
        self.wall: dict[str, float] = {}
        (out / "runs").mkdir(parents=True, exist_ok=True)

    def cohort(self, site: str, treated: bool = True, noise: bool = True) -> Path:
        """The site's synthetic cohort (``noise=False``: its twin without scanner noise)."""
        name = f"{site}3d" + ("" if treated else "-untreated") + ("" if noise else "-noise-free")
        path = self.out / "cohorts" / name
        if not (path / "cohort.yaml").is_file():
            start = time.perf_counter()
            patients = self.args.patients if treated else self.args.pretrain_patients
            synthesize(site, patients, 3, self.args.seed + (0 if treated else 1), path, overwrite=True, workers=1,
                       treated=treated, noise=noise)
            self.wall[f"synth {name}"] = time.perf_counter() - start
        return path

    def config(self, chain: Chain, stage: Stage, extra: list[str]):
        overrides = [*COMMON, *chain.overrides, f"training.seed={self.args.seed}",
                     f"evaluation.segmenter_steps={self.args.segmenter_steps}", *extra, *self.args.overrides]
        if stage.init_from:
            overrides.append(f"training.init_from={self.out / 'runs' / stage.init_from}")
        if stage.anatomy_from:
            overrides.append(f"training.anatomy_from={self.out / 'runs' / stage.anatomy_from}")
        return load_config(stage.preset, overrides)

    def run(self, chain: Chain, stage: Stage, cohort: Path, minutes: float, splits_from: str | None) -> dict:
        """Probe the stage's cost, then train it for its share of ``minutes`` CPU-minutes (unless already done)."""
        folder = self.out / "runs" / stage.name
        record = folder / "benchmark_stage.json"
        if record.is_file() and RunFolder(folder).train_summary_json.is_file():
            return json.loads(record.read_text(encoding="utf-8")) | trained(folder)
        if self.args.steps:  # a fixed number of steps per chain (tests), shared out like the minutes
            cost, steps = {"cpu_seconds_per_step": float("nan")}, max(2, round(self.args.steps * stage.share))
        else:
            cost = cpu_seconds_per_step(cohort, self.config(chain, stage, []), self.cache)
            steps = steps_for(minutes * stage.share, cost)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        write_marker(folder, "run", state="training")  # train() writes only into its own (or an empty) folder
        if splits_from:  # the same patients in the same splits as the chain's first treated run
            shutil.copy(RunFolder(self.out / "runs" / splits_from).splits_json, RunFolder(folder).splits_json)
        print(f"\n=== {stage.name}: {stage.preset}, {steps} steps ({cost['cpu_seconds_per_step']:.2f} CPU s/step)",
              flush=True)
        start, cpu = time.perf_counter(), time.process_time()
        train(cohort, self.config(chain, stage, [f"training.max_steps={steps}"]), folder, cache_dir=self.cache)
        info = {"preset": stage.preset, "steps": steps, "cpu_minutes_budget": round(minutes * stage.share, 2),
                "cpu_seconds_per_step": round(cost["cpu_seconds_per_step"], 3),
                "train_cpu_minutes": round((time.process_time() - cpu) / 60, 2),
                "train_wall_minutes": round((time.perf_counter() - start) / 60, 2)}
        record.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        return info | trained(folder)


def trained(folder: Path) -> dict:
    """The steps a finished stage trained (early stopping may end it before its budget) and whether it stopped
    early; the exported weights are its best checkpoint on the validation loss."""
    summary = json.loads(RunFolder(folder).train_summary_json.read_text(encoding="utf-8"))
    return {"trained_steps": summary.get("global_step"), "stopped_early": summary.get("stopped_early")}


def stage_steps(stage: dict) -> str:
    """"1018", or "1018 (352)" where early stopping ended the stage after 352 of its 1018 steps."""
    done = stage.get("trained_steps")
    return f"{stage['steps']}" + (f" ({done})" if done is not None and done < stage["steps"] else "")


def train_chain(bench: Bench, name: str) -> tuple[Path, Path, list[dict]]:
    """Train every stage of chain ``name``; returns (last run, treated cohort, per-stage records)."""
    chain = CHAINS[name]
    cohorts = {"treated": bench.cohort(chain.site)}
    if chain.pretrain:
        cohorts["public"] = bench.cohort(chain.site, treated=False)
    first_treated = None
    records = []
    for stage in chain.stages:
        records.append(bench.run(chain, stage, cohorts[stage.cohort], bench.args.minutes,
                                 first_treated if stage.cohort == "treated" else None))
        if stage.cohort == "treated" and first_treated is None:
            first_treated = stage.name
    return bench.out / "runs" / chain.stages[-1].name, cohorts["treated"], records


def spread(cases: CaseSet, limit: int) -> CaseSet:
    """At most ``limit`` cases with a follow-up, evenly spread over the (patient-ordered) list."""
    known = [i for i, c in enumerate(cases.cases) if c.has_truth]
    if len(known) > limit:
        known = [known[int(k)] for k in np.linspace(0, len(known) - 1, limit).round()]
    return cases.select(known)


def split_cases(model: ExportedModel, run: Path, cohort: Path, split: str, limit: int, cache) -> CaseSet:
    patients = list(getattr(RunFolder(run).splits(), split))
    return spread(load_cases(model, cohort, patients=patients, cache_dir=cache), limit)


def methods(run: Path, cohort: Path, model: ExportedModel, cases: CaseSet, samples: int, seed: int,
            regression: bool, cache, config: Config | None = None,
            regression_steps: int | None = None) -> tuple[dict[str, Predictions], str]:
    """post = pre, the denoised identity (the baseline smoothed by the sigma chosen on the training split, as
    ``oncodiff evaluate`` does), the diffusion chain (outcome unknown, as predict samples; ``config``: sampling
    settings other than the run's) and the regression U-Net (trained now, for ``regression_steps`` or the run's
    steps, if the run has none yet); returns them with how the sigma was chosen."""
    identity, denoised, note = trivial_predictions(model, cohort, list(RunFolder(run).splits().train), cases, cache)
    out = {"identity": identity, "denoised": denoised,
           "diffusion": predict_cases(model, cases, samples, seed, "predicted", config)}
    if regression:
        steps = [] if regression_steps is None else [f"training.max_steps={regression_steps}"]
        baseline = load_export(ensure_baseline(run, cohort, model.config.with_overrides(steps), "regression", None,
                                               cache))
        out["regression"] = predict_cases(baseline, cases, 1, seed, "predicted")
    return out, note


def regression_budget(bench: Bench, model: ExportedModel, run: Path, cohort: Path) -> dict:
    """The regression U-Net's steps for the chain's whole budget of CPU-minutes (its own step probe), so that it
    costs what the chain costs; ``--steps``: that many, as for a chain. Empty when the run already has its
    regression U-Net: it is reused as it was trained (no probe)."""
    if RunFolder(run).baseline("regression").weights.is_file():
        return {}
    if bench.args.steps:
        return {"steps": bench.args.steps}
    cost = cpu_seconds_per_step(cohort, baseline_config(model.config, "regression", None), bench.cache)
    return {"steps": steps_for(bench.args.minutes, cost), "cpu_seconds_per_step": round(cost["cpu_seconds_per_step"], 3)}


def score(run: Path, cohort: Path, model: ExportedModel, cases: CaseSet,
          predictions: dict[str, Predictions]) -> tuple[dict, dict[str, CaseVolumes]]:
    """In-tumour image metrics, volume change per follow-up, paired MAE and SSIM differences to post = pre;
    returns them with each method's volumes per follow-up (for the headline figures)."""
    ev = model.config.evaluation
    post, tumor = cases.batch["post"][:, 0].numpy(), cases.batch["tumor_mask"][:, 0].numpy() > 0
    keys = [c.key for c in cases.cases]
    table = MetricTable()
    segmenter, groups = load_segmenter(model.path), cases.follow_ups()
    size, volumes = {}, {}
    for name, p in predictions.items():
        table.add(name, image_metrics(p.mean, post, tumor, ev.bbox_margin, ev.data_range,
                                      spatial_dims=post.ndim - 1), case_ids=keys)
        volumes[name] = CaseVolumes.measure(segmenter, cases, p, ev.response_threshold).grouped(groups)
        size[name] = size_scores(volumes[name])
    summary = {"image_metrics": {"per_case": table.rows()}, "test_cases": keys}
    paired = {f"{metric} vs {other}": paired_difference(summary, metric, other)
              for metric in ("mae_tumor", "ssim_tumor") for other in predictions if other != "diffusion"}
    return {"cases": len(keys), "follow_ups": len(groups), "patients": len({c.patient_id for c in cases.cases}),
            "aggregate": table.aggregate(), "size": size, "paired": paired}, volumes


def choose_guidance(bench: Bench, name: str, model: ExportedModel, run: Path, cohort: Path) -> tuple[Config, dict]:
    """The run's config with the chain's guidance scale that has the lowest in-tumour MAE on the validation split
    (the preset's own scale when the chain has no candidates); returns it with every candidate's MAE."""
    scales = CHAINS[name].guidance_scales
    if not scales:
        return model.config, {}
    args = bench.args
    cases = split_cases(model, run, cohort, "val", args.max_cases, bench.cache)
    post, tumor = cases.batch["post"][:, 0].numpy(), cases.batch["tumor_mask"][:, 0].numpy() > 0
    mae = {}
    for scale in scales:
        config = model.config.with_overrides([f"sampling.guidance_scale={scale}"])
        mean = predict_cases(model, cases, args.samples, args.seed, "predicted", config).mean
        rows = image_metrics(mean, post, tumor, 0, spatial_dims=post.ndim - 1)
        mae[scale] = summarize([r["mae_tumor"] for r in rows])["mean"]
    best = min(mae, key=mae.get)
    print(f"guidance scale on {len(cases)} validation cases (in-tumour MAE): {mae}; chosen {best:g}", flush=True)
    return model.config.with_overrides([f"sampling.guidance_scale={best}"]), {
        "validation_cases": len(cases), "mae_tumor": mae, "chosen": best, "preset": model.config.sampling.guidance_scale}


def headline(kind: str, model: ExportedModel, run: Path, cohort: Path, cases: CaseSet,
             predictions: dict[str, Predictions], scores: dict, volumes: dict[str, CaseVolumes], cache) -> dict:
    """The paper's own figure: ImmunoDiff's heads, GBM's global/local PSNR and SSIM, NAC's size match,
    PULSAR's in-lesion SSIM and agreement map, I-SPY's SSIM."""
    agg = scores["aggregate"]
    if kind == "heads":
        config = model.config.with_overrides(["evaluation.folds=3", "evaluation.cnn_epochs=2"])
        return evaluate_outcomes(model, config, cohort, run, cache)
    if kind == "global_local":
        return {m: {k: agg[m][k]["mean"] for k in ("psnr", "psnr_tumor", "ssim", "ssim_tumor")} for m in agg} | {
            "mask_autoencoder": mask_dice(model, cases)}
    if kind == "match":
        return {m: size_match(v) for m, v in volumes.items()}
    if kind == "lesion_agreement":
        tumor = cases.batch["tumor_mask"][:, 0].numpy() > 0
        agreement = predictions["diffusion"].agreement(model.config.sampling.agreement_threshold)
        return {"ssim_tumor": {m: agg[m]["ssim_tumor"]["mean"] for m in agg},
                "agreement_in_lesion": float(agreement[tumor].mean()),
                "agreement_whole_crop": float(agreement.mean())}
    return {"ssim": {m: agg[m]["ssim"]["mean"] for m in agg}}


def outcome_blind_bound(model: ExportedModel, cases: CaseSet, clean: CaseSet | None = None) -> dict:
    """How well can a prediction do that does not know the response class? Synthetic cohorts ship each follow-up
    as it would have been under the other class (counterfactuals.csv: same anatomy, same noise). For each class c,
    "every case follows class c" predicts the true follow-up where the case's class is c and the counterfactual
    where it is not; the better of the two is the best in-tumour MAE of a prediction that gives every case the
    same class (knowing the noise and the course): a model beats it only by telling the classes apart from its
    inputs. "mixture" is the mean of the two courses at the test cases' responder fraction: what an MSE fit, or
    the sample mean of a calibrated sampler, tends to. ``clean``: the same cases from the cohort's noise-free twin
    (:func:`noise_free_cases`); the same references are then also scored with the noise-free courses, which do not
    credit a prediction with knowing the follow-up's noise: "true course" is the noise floor (the class known),
    "all non-responders" / "all responders" what a prediction reaches that gives every case one class."""
    path = cases.cohort.root / COUNTERFACTUALS_CSV
    if not path.is_file():
        return {"status": f"not available: the cohort has no {COUNTERFACTUALS_CSV}"}
    found, cf_post, _ = counterfactual_truth(cases, pd.read_csv(path, dtype=str), model.config)
    rows = {i: k for k, i in enumerate(found)}
    index = [i for i in found if int(cases.batch["response"][i]) >= 0]
    if not index:
        return {"status": "not available: no test case has a counterfactual and a known response"}
    post = cases.batch["post"][:, 0].numpy()[index]
    courses = {}
    if clean is not None:
        clean_found, clean_cf, _ = counterfactual_truth(clean, pd.read_csv(clean.cohort.root / COUNTERFACTUALS_CSV,
                                                                           dtype=str), model.config)
        if clean_found != found:
            raise RuntimeError("the noise-free twin's counterfactuals do not match the cohort's")
        courses = {"clean_post": clean.batch["post"][:, 0].numpy()[index],
                   "clean_counter": np.asarray(clean_cf)[[rows[i] for i in index]].reshape(post.shape)}
        truth = cases.cohort.root / "truth" / "patients.csv"
        if truth.is_file():  # the response model's own probability, from the patient's clinical variables
            probability = pd.read_csv(truth, dtype={"patient_id": str}).set_index("patient_id").response_probability
            courses["likely"] = np.array([probability[cases.cases[i].patient_id] > 0.5 for i in index])
    return outcome_blind_mae(cases.batch["pre_raw"][:, 0].numpy()[index], post,
                             np.asarray(cf_post)[[rows[i] for i in index]].reshape(post.shape),
                             cases.batch["response"].numpy()[index] == 1,
                             cases.batch["tumor_mask"][:, 0].numpy()[index] > 0, **courses,
                             keys=[cases.cases[i].key for i in index])


def noise_free_cases(bench: Bench, name: str, model: ExportedModel, cases: CaseSet) -> CaseSet:
    """``cases`` again from the chain's site's noise-free twin cohort (same seed: same patients, courses, crops)."""
    twin = bench.cohort(CHAINS[name].site, noise=False)
    loaded = load_cases(model, twin, patients=sorted({c.patient_id for c in cases.cases}), cache_dir=bench.cache)
    where = {c.key: i for i, c in enumerate(loaded.cases)}
    return loaded.select([where[c.key] for c in cases.cases])


def outcome_blind_mae(pre: np.ndarray, post: np.ndarray, counter: np.ndarray, responder: np.ndarray,
                      tumor: np.ndarray, clean_post: np.ndarray | None = None,
                      clean_counter: np.ndarray | None = None, keys: list[str] | None = None,
                      likely: np.ndarray | None = None) -> dict:
    """:func:`outcome_blind_bound` on arrays (B, *S): the follow-up, its counterfactual, the class, the tumour, and
    optionally both courses without the scanner noise. With those: ``likely`` (B,) bool, the class a case's clinical
    variables make more probable under the cohort's own response model (truth/patients.csv), scores the best a
    prediction from the clinical variables can expect; with the cases' ``keys`` (patient/...), the better
    one-class course and that clinical call get the table's paired MAE difference to post = pre, with its
    bootstrap interval over patients: whether even they would be a significant win on these cases."""
    shape = (-1,) + (1,) * (post.ndim - 1)
    rate = float(responder.mean())

    def course(factual: np.ndarray, other: np.ndarray, called: np.ndarray) -> np.ndarray:
        return np.where((responder == called).reshape(shape), factual, other)

    def mae(prediction: np.ndarray) -> float:
        return float(np.mean(tumor_mae(prediction, post, tumor)))

    def references(factual: np.ndarray, other: np.ndarray) -> dict:
        courses = {c: course(factual, other, np.full(len(post), bool(c))) for c in (0, 1)}
        return {"mae_tumor_all_non_responders": mae(courses[0]), "mae_tumor_all_responders": mae(courses[1]),
                "mae_tumor_mixture": mae((1 - rate) * courses[0] + rate * courses[1])}

    out = {"cases": len(post), "responder_fraction": rate, **references(post, counter),
           "mae_tumor_post_equals_pre": mae(pre)}
    if clean_post is None or clean_counter is None:
        return out
    clean = out["noise_free"] = {**references(clean_post, clean_counter), "mae_tumor_true_course": mae(clean_post)}
    best = min((0, 1), key=lambda c: clean[("mae_tumor_all_non_responders", "mae_tumor_all_responders")[c]])
    clean["best_class"] = ("non_responders", "responders")[best]
    calls = {"best_vs_post_equals_pre": np.full(len(post), bool(best))}
    if likely is not None:
        clean["likely_class_responders"] = int(likely.sum())
        clean["mae_tumor_likely_class"] = mae(course(clean_post, clean_counter, likely))
        calls["likely_vs_post_equals_pre"] = likely
    if keys is not None:
        identity = tumor_mae(pre, post, tumor)
        for name, called in calls.items():
            per_case = {"reference": tumor_mae(course(clean_post, clean_counter, called), post, tumor),
                        "identity": identity}
            summary = {"test_cases": keys, "image_metrics": {"per_case": [
                {"method": m, "case_id": k, "mae_tumor": float(v)} for m, values in per_case.items()
                for k, v in zip(keys, values)]}}
            clean[name] = paired_difference(summary, "mae_tumor", "identity", main="reference")
    return out


def by_response(cases: CaseSet, predictions: dict[str, Predictions]) -> dict:
    """Each method's in-tumour MAE over the responders' and the non-responders' follow-ups, and the diffusion
    samples' spread: where a chain gains and where it loses, and whether its samples differ at all."""
    response = cases.batch["response"].numpy()
    post, tumor = cases.batch["post"][:, 0].numpy(), cases.batch["tumor_mask"][:, 0].numpy() > 0
    out = {name: mae_by_response(p.mean, post, tumor, response) for name, p in predictions.items()}
    if "diffusion" in predictions:
        out["diffusion_sample_spread"] = sample_spread(predictions["diffusion"].samples, tumor)
    return out


def mae_by_response(prediction: np.ndarray, post: np.ndarray, tumor: np.ndarray, response: np.ndarray) -> dict:
    """In-tumour MAE (B, *S arrays) averaged over the cases of each response class (1, 0; -1 = unknown, left out)."""
    mae = tumor_mae(prediction, post, tumor)
    out = {}
    for label, name in ((1, "responders"), (0, "non_responders")):
        values = mae[(response == label) & np.isfinite(mae)]
        out[name] = {"cases": int(len(values)), "mae_tumor": float(values.mean()) if len(values) else None}
    return out


def tumor_mae(prediction: np.ndarray, post: np.ndarray, tumor: np.ndarray) -> np.ndarray:
    """Per-case in-tumour MAE of (B, *S) arrays by evaluate's ``metrics.mae``; NaN where the tumour mask is empty."""
    return np.array([np.nan if v is None else v for v in region_mae(prediction, post, tumor, post.ndim - 1)], float)


def sample_spread(samples: np.ndarray, tumor: np.ndarray) -> float | None:
    """Mean over cases of the standard deviation, across a case's samples (B, N, *S), of the mean in-tumour value:
    0 when every sample of a case is the same prediction."""
    if samples.shape[1] < 2:
        return None
    spreads = [samples[k][:, tumor[k]].mean(axis=1).std() for k in range(len(samples)) if tumor[k].any()]
    return float(np.mean(spreads)) if spreads else None


def latent_ceiling(net: torch.nn.Module, cond: Conditions, pre: torch.Tensor, post: torch.Tensor,
                   target: str) -> Predictions | None:
    """A latent chain's prediction with the true latent target in place of a sample (E(post) - E(pre) for the
    drift target), decoded as its samples are (``LatentDenoiser.decode_target``): what a perfect latent
    diffusion could reach with this autoencoder. None for a pixel-space network."""
    if not isinstance(net, LatentDenoiser):
        return None
    with torch.inference_mode():
        latent = net.encode_conditions(cond)
        decoded = net.decode_target(net.encode_target(post.float(), latent, target), latent, target)
    return predictions_from_generated(pre, decoded.unsqueeze(1), target)


def ceiling_scores(model: ExportedModel, cases: CaseSet) -> dict:
    """In-tumour MAE and SSIM of :func:`latent_ceiling` on ``cases`` (empty for a pixel-space chain)."""
    device = next(model.net.parameters()).device
    ceiling = latent_ceiling(model.net, case_conditions(model, cases, "true").to(device),
                             cases.batch["pre"].to(device), cases.batch["post"].to(device),
                             model.config.diffusion.target)
    if ceiling is None:
        return {}
    post, tumor = cases.batch["post"][:, 0].numpy(), cases.batch["tumor_mask"][:, 0].numpy() > 0
    rows = image_metrics(ceiling.mean, post, tumor, model.config.evaluation.bbox_margin,
                         model.config.evaluation.data_range, spatial_dims=post.ndim - 1)
    return {key: summarize([r[key] for r in rows])["mean"] for key in ("mae_tumor", "ssim_tumor")}


def mask_dice(model: ExportedModel, cases: CaseSet) -> dict:
    """The mask autoencoder's reconstruction of the test cases' tumour masks (baseline and, where known, follow-up),
    thresholded at 0.5: Dice per mask (masks that are empty in truth are left out)."""
    codec = getattr(model.net, "codec", None)
    if codec is None or codec.mask is None:
        return {"status": "no mask autoencoder"}
    batch = cases.batch
    masks = torch.cat([batch["tumor_mask"], batch["post_mask"][batch["has_post_mask"].bool()]]).float()
    masks = masks[masks.flatten(1).sum(1) > 0]
    with torch.no_grad():
        reconstruction = torch.cat([codec.mask.reconstruct(m[None])[0] for m in masks]).float()
    scores = dice((reconstruction > 0.5).numpy()[:, 0], masks.numpy()[:, 0] > 0.5, spatial_dims=masks.ndim - 2)
    return {"masks": int(len(masks)), "dice_mean": float(np.mean(scores)), "dice_min": float(np.min(scores))}


def size_match(volumes: CaseVolumes) -> dict:
    """NAC's "match": 100 * predicted / true follow-up volume (median over follow-ups with a true tumour)."""
    pred = np.nanmean(volumes.samples, axis=1)
    ok = np.isfinite(pred) & np.isfinite(volumes.true) & (volumes.true > 0)
    ratio = 100 * pred[ok] / volumes.true[ok]
    return {"n": int(ok.sum()), "match_pct_median": float(np.median(ratio)) if ok.any() else None,
            "match_abs_error_pct_mean": float(np.abs(ratio - 100).mean()) if ok.any() else None}


def bench_chain(bench: Bench, name: str) -> dict:
    args = bench.args
    start = time.perf_counter()
    run, cohort, records = train_chain(bench, name)
    bench.wall[f"train {name}"] = time.perf_counter() - start
    model = load_export(run)
    cases = split_cases(model, run, cohort, "test", args.max_cases, bench.cache)
    print(f"\n=== scoring {name} on {len(cases)} test cases", flush=True)
    start = time.perf_counter()
    config, guidance = choose_guidance(bench, name, model, run, cohort)
    budget = None if args.no_regression else regression_budget(bench, model, run, cohort)
    predictions, denoised_note = methods(run, cohort, model, cases, args.samples, args.seed, budget is not None,
                                         bench.cache, config, (budget or {}).get("steps"))
    scores, volumes = score(run, cohort, model, cases, predictions)
    scores |= {"guidance": guidance} if guidance else {}
    if budget is not None:
        scores["regression"] = budget | trained(RunFolder(run).baseline("regression").root)
    scores["denoised"] = denoised_note
    scores["outcome_blind"] = outcome_blind_bound(model, cases, noise_free_cases(bench, name, model, cases))
    scores["by_response"] = by_response(cases, predictions)
    if ceiling := ceiling_scores(model, cases):
        scores["latent_ceiling"] = ceiling
    scores["headline"] = headline(CHAINS[name].headline, model, run, cohort, cases, predictions, scores, volumes,
                                  bench.cache)
    bench.wall[f"score {name}"] = time.perf_counter() - start
    return {"stages": records, "cpu_minutes": args.minutes, "overrides": args.overrides, "config": {k: model.config.model_dump(mode="json")[k] for k in ("diffusion", "sampling")}
            } | scores


# ------------------------------------------------------------------------------------------------ table


METHODS = ("diffusion", "identity", "denoised", "regression")
LABELS = {"diffusion": "diffusion", "identity": "post=pre", "denoised": "smoothed pre", "regression": "regression"}


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _metric(row: dict, method: str, key: str, digits: int = 3) -> str:
    return _fmt(row["aggregate"].get(method, {}).get(key, {}).get("mean"), digits)


def _verdict(row: dict, other: str = "identity") -> str:
    """Against ``other`` (identity: post = pre; denoised: the smoothed baseline) on in-tumour MAE and SSIM."""
    if f"mae_tumor vs {other}" not in row["paired"]:
        return "n/a"
    mae, ssim = row["paired"][f"mae_tumor vs {other}"], row["paired"][f"ssim_tumor vs {other}"]
    mae_wins, ssim_wins = mae["ci95"][1] < 0, ssim["ci95"][0] > 0
    if mae_wins and ssim_wins:
        return "beats it (MAE and SSIM)"
    if mae["mean"] < 0 and ssim["mean"] > 0:
        return "better on both, not significant"
    return "does not beat it"


def chain_row(name: str, row: dict) -> str:
    mae = row["paired"]["mae_tumor vs identity"]
    steps = " + ".join(stage_steps(s) for s in row["stages"])
    cells = [name, f"{row['cpu_minutes']:g} / {steps}", f"{row['cases']} / {row['patients']}"]
    for method in METHODS:
        cells += [_metric(row, method, "mae_tumor", 4), _metric(row, method, "ssim_tumor"),
                  _metric(row, method, "psnr_tumor", 2)]
    cells.append(f"{mae['mean']:+.4f} [{mae['ci95'][0]:+.4f}, {mae['ci95'][1]:+.4f}]")
    cells += [_fmt(row["size"].get(m, {}).get("change_mae_pp"), 1) for m in ("diffusion", "identity", "regression")]
    cells += [_verdict(row, "identity"), _verdict(row, "denoised")]
    return "| " + " | ".join(cells) + " |\n"


def headline_text(name: str, row: dict) -> str:
    h = row["headline"]
    kind = CHAINS[name].headline
    if kind == "heads":
        parts = []
        for key, metric in (("response", "balanced_accuracy"), ("survival", "c_index")):
            for method, result in (h.get(key) or {}).items():
                if isinstance(result, dict) and "mean" in result:
                    parts.append(f"{key} {metric}, {method}: {_fmt(result['mean'].get(metric))}")
        return "; ".join(parts) or json.dumps(h)[:300]
    if kind == "match":
        return "; ".join(f"{m}: median match {_fmt(v['match_pct_median'], 1)} % (n {v['n']})" for m, v in h.items())
    if kind == "lesion_agreement":
        lesion = ", ".join(f"{m} {_fmt(v)}" for m, v in h["ssim_tumor"].items())
        return f"in-lesion SSIM {lesion}; agreement map mean {h['agreement_in_lesion']:.3f} in the lesion"
    if kind == "global_local":
        ae = h.get("mask_autoencoder", {})
        dice_text = (f"; mask autoencoder Dice on {ae['masks']} test masks (thresholded at 0.5): mean "
                     f"{ae['dice_mean']:.3f}, min {ae['dice_min']:.3f}" if "dice_mean" in ae else "")
        return "; ".join(f"{m}: PSNR {_fmt(v['psnr'], 2)} / local {_fmt(v['psnr_tumor'], 2)}, SSIM {_fmt(v['ssim'])} "
                         f"/ local {_fmt(v['ssim_tumor'])}" for m, v in h.items() if m in row["aggregate"]) + dice_text
    return "SSIM " + ", ".join(f"{m} {_fmt(v)}" for m, v in h["ssim"].items())


def guidance_text(row: dict) -> str:
    g = row.get("guidance")
    if not g:
        return ""
    tried = ", ".join(f"{float(k):g}: {_fmt(v, 4)}" for k, v in g["mae_tumor"].items())
    return (f". Guidance scale {float(g['chosen']):g} chosen on {g['validation_cases']} validation cases "
            f"(preset: {g['preset']:g}; in-tumour MAE per scale {tried})")


def regression_steps(results: dict) -> str:
    """"ispy-ddpm 352, gbm-ldm 118": the steps each chain's regression U-Net trained ("last stage's" for rows
    from before the regression had its own budget)."""
    return ", ".join(f"{name} {row['regression'].get('trained_steps') or row['regression'].get('steps')}"
                     if "regression" in row else f"{name} the last stage's"
                     for name, row in results["chains"].items() if "regression" in row.get("aggregate", {})) or "none"


def ceiling_text(row: dict) -> str:
    c = row.get("latent_ceiling")
    if not c:
        return ""
    return (f". Latent ceiling (the true latent drift E(post) - E(pre) decoded as the samples are: a perfect "
            f"latent diffusion with this autoencoder): in-tumour MAE {c['mae_tumor']:.4f}, SSIM {c['ssim_tumor']:.3f}")


def bound_text(b: dict) -> str:
    text = (f"{b['cases']} cases, responder fraction {b['responder_fraction']:.2f}: post = pre "
            f"{b['mae_tumor_post_equals_pre']:.4f}; every case as a non-responder {b['mae_tumor_all_non_responders']:.4f}, "
            f"as a responder {b['mae_tumor_all_responders']:.4f}; the mixture mean {b['mae_tumor_mixture']:.4f}")
    if clean := b.get("noise_free"):
        text += (f". Noise-free: every case as a non-responder {clean['mae_tumor_all_non_responders']:.4f}, as a "
                 f"responder {clean['mae_tumor_all_responders']:.4f}, the mixture mean {clean['mae_tumor_mixture']:.4f}; "
                 f"the true course {clean['mae_tumor_true_course']:.4f}")
        if d := clean.get("best_vs_post_equals_pre"):
            text += (f"; the better one-class course against post = pre {d['mean']:+.4f} "
                     f"[{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] ({d['n_patients']} patients)")
        if "mae_tumor_likely_class" in clean:
            text += (f"; each case as its more probable class given its clinical variables (the cohort's response "
                     f"model; {clean['likely_class_responders']} of {b['cases']} called responders) "
                     f"{clean['mae_tumor_likely_class']:.4f}")
            if d := clean.get("likely_vs_post_equals_pre"):
                text += f", against post = pre {d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
    return text


def by_response_text(rows: dict) -> str:
    parts = []
    for method in METHODS:
        if method in rows:
            r, n = rows[method]["responders"], rows[method]["non_responders"]
            parts.append(f"{LABELS[method]} {_fmt(r['mae_tumor'], 4)} / {_fmt(n['mae_tumor'], 4)}")
    r, n = rows["diffusion"]["responders"], rows["diffusion"]["non_responders"]
    spread = rows.get("diffusion_sample_spread")
    return (f"responders' ({r['cases']}) / non-responders' ({n['cases']}) follow-ups: " + "; ".join(parts)
            + f"; diffusion samples' spread of the in-tumour mean {_fmt(spread, 4)}")


def table(results: dict) -> str:
    methods_header = " | ".join(f"{LABELS[m]} MAE | {LABELS[m]} SSIM | {LABELS[m]} PSNR" for m in METHODS)
    head = (f"| chain | CPU-min / steps per stage | test cases / patients | {methods_header} | MAE diff. to post = pre [95 % CI] | "
            "vol. change MAE (pp) diffusion | post=pre | regression | vs post = pre | vs smoothed pre |\n"
            + "|---" * (3 + 3 * len(METHODS) + 6) + "|\n")
    rows = "".join(chain_row(name, row) for name, row in results["chains"].items())
    headlines = "".join(f"- **{name}**: {headline_text(name, row)}{guidance_text(row)}{ceiling_text(row)}\n"
                        for name, row in results["chains"].items())
    bounds = "".join(f"- **{name}**: {bound_text(b)}\n" for name, row in results["chains"].items()
                     if "cases" in (b := row.get("outcome_blind", {})))
    classes = "".join(f"- **{name}**: {by_response_text(row['by_response'])}\n" for name, row in results["chains"].items()
                      if row.get("by_response"))
    smoothing = "".join(f"- **{name}**: {row['denoised']}\n" for name, row in results["chains"].items()
                        if row.get("denoised"))
    a = results["settings"]
    return (f"### Paper presets against post = pre (in-tumour metrics, test split)\n\n{head}{rows}\n"
            f"Budget: the CPU-minutes per chain in the second column, shared over its stages as optimiser steps (CPU-time "
            f"step probe; in brackets the steps trained where early stopping on the validation loss ended a stage "
            f"sooner: the exported weights are its best checkpoint on that loss); {a['patients']} patients per site, test fraction 0.25, at most {a['max_cases']} test "
            f"cases per chain; {a['samples']} samples per case, the presets' own samplers. The regression U-Net "
            f"trains on the chain's split for the chain's CPU-minutes (its own step probe; steps per chain: "
            f"{regression_steps(results)}). Overrides: {a['overrides'] or 'none'}.\n\n"
            f"Smoothed pre (the denoised identity of `oncodiff evaluate`): the baseline smoothed by the sigma with the "
            f"lowest in-tumour MAE on the chain's training split:\n\n{smoothing}\n"
            f"Headline figures:\n\n{headlines}\n"
            f"What a prediction that does not know the response class can reach (in-tumour MAE on the same test "
            f"cases; the synthetic cohorts' counterfactual follow-ups, same anatomy and noise, under the other class; "
            f"knowing the noise and the course but giving every case the same class; a model beats the better of "
            f"the two only by telling the classes apart from its inputs). Noise-free: the same references from the "
            f"cohort's twin without scanner noise (`synthesize(noise=False)`: same patients, courses and bias "
            f"fields), scored against the real follow-ups; no prediction is expected to beat them, and the true "
            f"course (the class known) is the noise floor:\n\n{bounds}\n"
            + (f"In-tumour MAE by response class (mean over the responders' / the non-responders' follow-ups), and the "
               f"diffusion samples' spread (standard deviation of a case's in-tumour mean across its samples, averaged "
               f"over cases; 0: every sample the same):\n\n{classes}\n" if classes else "")
            + f"Command: `{results['command']}`; machine: {results['machine']}; commit {results['commit']}.\n")


# ------------------------------------------------------------------------------------------------ command line


def _provenance(argv: list[str]) -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    return {"command": "python -m benchmarks.presets " + " ".join(argv), "commit": commit or "unknown",
            "machine": f"{platform.processor() or platform.machine()} ({torch.backends.cpu.get_cpu_capability()}, "
                       f"native bf16: {cpu_has_native_bf16()}), {len(os.sched_getaffinity(0))} cores, torch threads "
                       f"{torch.get_num_threads()}"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--minutes", type=float, default=15.0, help="CPU-minutes of training per chain (default 15)")
    p.add_argument("--steps", type=int, help="optimiser steps per chain instead of --minutes (no probe)")
    p.add_argument("--merge", type=Path, nargs="+", help="only merge these OUT folders' results into --out")
    p.add_argument("--chains", nargs="+", choices=list(CHAINS), default=list(CHAINS))
    p.add_argument("--patients", type=int, default=28, help="treated patients per site")
    p.add_argument("--pretrain-patients", type=int, default=32, help="untreated patients (ImmunoDiff stage 1)")
    p.add_argument("--max-cases", type=int, default=24, help="test cases scored per chain")
    p.add_argument("--samples", type=int, default=2, help="samples per test case")
    p.add_argument("--segmenter-steps", type=int, default=150, help="the size segmenter's steps (volume change)")
    p.add_argument("--no-regression", action="store_true", help="skip the regression U-Net baseline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="config override for every stage of every chain, e.g. diffusion.prediction=eps")
    return p


def merge(out: Path, folders: list[Path]) -> int:
    """One results.json and table.md from several OUT folders (e.g. one per site, run side by side)."""
    parts = [json.loads((folder / "results.json").read_text(encoding="utf-8")) for folder in folders]
    results = {**parts[0], "chains": {}, "runs": [{k: p[k] for k in ("command", "machine", "commit", "settings")}
                                                  for p in parts]}
    for folder, part in zip(folders, parts):
        for name, row in part["chains"].items():  # records written before trained_steps existed
            for stage, record in zip(CHAINS[name].stages, row.get("stages", [])):
                if "trained_steps" not in record and (folder / "runs" / stage.name / "train_summary.json").is_file():
                    record |= trained(folder / "runs" / stage.name)
            baseline = RunFolder(folder / "runs" / CHAINS[name].stages[-1].name).baseline("regression").root
            if "regression" in row.get("aggregate", {}) and "regression" not in row and baseline.is_dir():
                row["regression"] = trained(baseline)
        results["chains"].update(part["chains"])
    results["command"] = " ; ".join(p["command"] for p in parts)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    (out / "table.md").write_text(table(results), encoding="utf-8")
    print(table(results), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    out = args.out.resolve()
    if args.merge:
        return merge(out, args.merge)
    bench = Bench(out, args)
    path = out / "results.json"
    results = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"chains": {}}
    results |= _provenance(argv) | {"settings": {k: v for k, v in vars(args).items() if k != "out"}}
    for name in args.chains:
        results["chains"][name] = bench_chain(bench, name)
        results["wall_seconds"] = {k: round(v, 1) for k, v in bench.wall.items()}
        path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    (out / "table.md").write_text(table(results), encoding="utf-8")
    print("\n" + table(results), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
