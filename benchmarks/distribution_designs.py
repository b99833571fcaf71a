"""Designs of the predicted distribution side by side (issue 31 item 3), at the same CPU budget and split.

    nice -n 10 python -m benchmarks.distribution_designs --out benchmarks/results/distribution_designs \\
        [--site brain] [--seed 0] [--minutes 3.5] [--candidates default,residual]

Synthesises quality.py's cohort (104 patients, 44 train / 10 validation / 50 test, 2D), trains each candidate
design (the demo preset changed only by the candidate's overrides) for ``--minutes`` CPU-minutes of this
process (training's own step probe turns them into optimiser steps: oncodiff/training/step_cost.py), every candidate
on the first one's splits, and the regression U-Net (the evaluation's baseline) on the same split and budget.
Then it samples the test split as ``predict`` does (the outcome unknown: the class prior's mixture) and with
the true class given, and scores:

- spread-skill ratio in the tumour box (baseline mask grown by evaluation.bbox_margin), pooled over the test
  crops: sqrt((M + 1) / M) * RMS of the per-voxel sample standard deviation (ddof 1) over the RMSE of the
  sample mean, for M samples (a calibrated ensemble of M members scores 1 in expectation);
- the mean per-voxel CRPS in the tumour box (a point prediction's CRPS is its absolute error);
- the sample mean's in-tumour MAE (inside the baseline mask), with the paired difference to the regression
  U-Net and a 95 % bootstrap interval that resamples patients;
- the CRPS of the volume change (percentage points; the regression U-Net as evaluate scores it: the Gaussian
  of its conformal margins).

Candidates (``--candidates``, comma separated): default (the demo preset), residual (diffusion.residual=
regression: CorrDiff's design, the budget split half and half in CPU time between its regression U-Net and
its residual diffusion model), v (diffusion.prediction=v), residual_v, eps (diffusion.prediction=eps),
residual_eps, edm (diffusion.noise_sampling=lognormal: EDM's log-normal noise levels, log sigma ~ N(-1.2, 1.2^2)),
edm_high (the same centred at log sigma 0.5: more weight at high noise). Writes OUT/results.json and
OUT/table.md (the whole table again after each cohort); runs live under OUT/SITE-seedN/. A design trained with a
spread factor (sampling.spread=calibrated, fitted at the end of its training: oncodiff/pipeline/spread.py) is
scored with it and, from the same draws, as drawn (modes ``*_as_drawn``), with the paired CRPS difference.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from oncodiff.config import Config, load_config
from oncodiff.evaluation.baselines import baseline_config, ensure_baseline, trivial_predictions
from oncodiff.evaluation.distribution_scores import volume_change_scores
from oncodiff.evaluation.metrics import bbox_mask
from oncodiff.evaluation.paired import mean_difference
from oncodiff.evaluation.proper_scores import crps_ensemble
from oncodiff.evaluation.report.tables import markdown
from oncodiff.outputs import write_marker
from oncodiff.pipeline.calibration import IntervalCalibration
from oncodiff.pipeline.cases import CaseSet, load_cases
from oncodiff.pipeline.export import ExportedModel, load_export
from oncodiff.pipeline.predict import (
    Predictions, case_conditions, load_calibration, predict_cases, rescale_spread, spread_calibration,
)
from oncodiff.pipeline.volumes import CaseVolumes, load_segmenter
from oncodiff.runs import RunFolder
from oncodiff.synth import synthesize
from oncodiff.training.step_cost import cpu_seconds_per_step, steps_for
from oncodiff.training.train import residual_mean_config

CANDIDATES = {
    "default": ("demo preset (x0 prediction of the drift)", []),
    "residual": ("residual design (CorrDiff: regression mean + diffusion of the residual)",
                 ["diffusion.residual=regression"]),
    "v": ("demo preset, v prediction", ["diffusion.prediction=v"]),
    "residual_v": ("residual design, v prediction", ["diffusion.residual=regression", "diffusion.prediction=v"]),
    "eps": ("demo preset, eps prediction", ["diffusion.prediction=eps"]),
    "residual_eps": ("residual design, eps prediction",
                     ["diffusion.residual=regression", "diffusion.prediction=eps"]),
    "edm": ("demo preset, EDM's log-normal noise levels (log sigma ~ N(-1.2, 1.2^2))",
            ["diffusion.noise_sampling=lognormal"]),
    "edm_high": ("demo preset, log-normal noise levels centred higher (log sigma ~ N(0.5, 1.2^2))",
                 ["diffusion.noise_sampling=lognormal", "diffusion.lognormal_mean=0.5"]),
}
BOOTSTRAP = 2000


def train_candidate(name: str, base: Config, cohort: Path, out: Path, minutes: float, cache: Path,
                    splits_from: Path | None, fixed_steps: int | None) -> tuple[Path, dict]:
    """Train candidate ``name`` for ``minutes`` CPU-minutes (unless its run is already there); returns the run
    and its budget record. The residual design splits the CPU time half and half between its two networks."""
    folder = out / "runs" / name
    record = folder / "benchmark_budget.json"
    if record.is_file() and RunFolder(folder).train_summary_json.is_file():
        return folder, json.loads(record.read_text(encoding="utf-8"))
    config = base.with_overrides([*CANDIDATES[name][1], "training.max_minutes=null"])
    info: dict = {"cpu_minutes_budget": minutes}
    if config.diffusion.residual == "regression":
        if fixed_steps:
            mean_steps, residual_steps = fixed_steps // 2, fixed_steps - fixed_steps // 2
        else:
            mean_cost = cpu_seconds_per_step(cohort, residual_mean_config(config), cache)
            cost = cpu_seconds_per_step(cohort, config, cache)
            share = config.diffusion.residual_share
            mean_steps, residual_steps = steps_for(minutes * share, mean_cost), steps_for(minutes * (1 - share), cost)
            info |= {"cpu_seconds_per_step_regression": round(mean_cost["cpu_seconds_per_step"], 3),
                     "cpu_seconds_per_step_residual": round(cost["cpu_seconds_per_step"], 3)}
        total = mean_steps + residual_steps
        config = config.with_overrides([f"training.max_steps={total}",
                                        f"diffusion.residual_share={mean_steps / total}"])
        info |= {"steps_regression": mean_steps, "steps": residual_steps}
    else:
        if fixed_steps:
            steps = fixed_steps
        else:
            cost = cpu_seconds_per_step(cohort, config, cache)
            steps = steps_for(minutes, cost)
            info["cpu_seconds_per_step"] = round(cost["cpu_seconds_per_step"], 3)
        config = config.with_overrides([f"training.max_steps={steps}"])
        info["steps"] = steps
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    write_marker(folder, "run", state="training")
    if splits_from is not None:  # the same patients in the same splits as the first candidate
        shutil.copy(RunFolder(splits_from).splits_json, RunFolder(folder).splits_json)
    print(f"\n=== {name}: {CANDIDATES[name][0]}; {info}", flush=True)
    from oncodiff.training import train

    start, cpu = time.perf_counter(), time.process_time()
    train(cohort, config, folder, cache_dir=cache)
    info |= {"train_cpu_minutes": round((time.process_time() - cpu) / 60, 2),
             "train_wall_minutes": round((time.perf_counter() - start) / 60, 2)}
    summary = json.loads(RunFolder(folder).train_summary_json.read_text(encoding="utf-8"))
    info |= {"trained_steps": summary.get("global_step"), "stopped_early": summary.get("stopped_early")}
    record.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return folder, info


def regression_baseline(run: Path, cohort: Path, model: ExportedModel, minutes: float, cache: Path,
                        fixed_steps: int | None) -> tuple[ExportedModel, dict]:
    """The regression U-Net on the run's split for the same CPU-minutes (its own step probe)."""
    info: dict = {"cpu_minutes_budget": minutes}
    if not RunFolder(run).baseline("regression").weights.is_file():
        if fixed_steps:
            steps = fixed_steps
        else:
            cost = cpu_seconds_per_step(cohort, baseline_config(model.config, "regression", None), cache)
            steps = steps_for(minutes, cost)
            info["cpu_seconds_per_step"] = round(cost["cpu_seconds_per_step"], 3)
        info["steps"] = steps
        cpu = time.process_time()
        # Calibrated on the validation split whatever the designs do: evaluate scores its volume change as the
        # Gaussian of its conformal margins.
        ensure_baseline(run, cohort, model.config.with_overrides([f"training.max_steps={steps}",
                                                                  "training.max_minutes=null",
                                                                  "sampling.calibrate=true"]),
                        "regression", None, cache)
        info["train_cpu_minutes"] = round((time.process_time() - cpu) / 60, 2)
        (RunFolder(run).baseline("regression").root / "benchmark_budget.json").write_text(json.dumps(info, indent=2))
    else:
        saved = RunFolder(run).baseline("regression").root / "benchmark_budget.json"
        if saved.is_file():
            info = json.loads(saved.read_text(encoding="utf-8"))
    return load_export(RunFolder(run).baseline("regression").root), info


# ----------------------------------------------------------------------------------------------- scores


def spread_skill(samples: np.ndarray, post: np.ndarray, boxes: np.ndarray) -> float | None:
    """sqrt((M + 1) / M) * RMS sample std (ddof 1) / RMSE of the sample mean, pooled over the box voxels of
    every case: (B, M, *S) samples, (B, *S) truth and boxes. None for one sample."""
    m = samples.shape[1]
    if m < 2:
        return None
    variance = samples.var(axis=1, ddof=1)[boxes]
    error = (samples.mean(axis=1) - post)[boxes] ** 2
    return float(np.sqrt((m + 1) / m) * np.sqrt(variance.mean()) / np.sqrt(error.mean()))


def per_case(predictions: Predictions, post: np.ndarray, tumor: np.ndarray, boxes: np.ndarray) -> dict:
    """Per crop: in-tumour MAE of the sample mean, mean per-voxel CRPS in the box, box MAE of the mean."""
    mean = predictions.mean
    mae = [float(np.abs(m - p)[t].mean()) if t.any() else np.nan for m, p, t in zip(mean, post, tumor)]
    crps = [float(crps_ensemble(np.moveaxis(s[:, b], 0, -1), p[b]).mean()) if b.any() else np.nan
            for s, p, b in zip(predictions.samples, post, boxes)]
    return {"mae_tumor": np.array(mae), "crps_box": np.array(crps)}


def paired(diff: np.ndarray, patients: np.ndarray, seed: int = 0) -> dict:
    """Mean of a per-crop difference with a 95 % bootstrap interval over patients (evaluation.paired)."""
    return mean_difference(diff, np.zeros_like(diff), patients, BOOTSTRAP, seed)


def volume_crps(model: ExportedModel, cases: CaseSet, predictions: Predictions,
                calibration: IntervalCalibration | None = None) -> float | None:
    """CRPS of the volume change per follow-up (pp), as evaluate scores it: a point prediction as the Gaussian of
    its conformal ``calibration`` (a point mass without one)."""
    threshold = model.config.evaluation.response_threshold
    volumes = CaseVolumes.measure(load_segmenter(model.path), cases, predictions, threshold).grouped(cases.follow_ups())
    scores = volume_change_scores(volumes.change(), volumes.true_change(), threshold, calibration)
    return scores.get("crps_pp")


def test_cases(run: Path, cohort: Path, cache: Path, limit: int | None) -> tuple[ExportedModel, CaseSet]:
    """The scored test crops (with a follow-up; at most ``limit``, evenly spread) of the first design's split."""
    first = load_export(run)
    cases = load_cases(first, cohort, patients=list(RunFolder(run).splits().test), cache_dir=cache)
    known = [i for i, c in enumerate(cases.cases) if c.has_truth]
    if limit is not None and len(known) > limit:
        known = [known[int(k)] for k in np.linspace(0, len(known) - 1, limit).round()]
    return first, cases.select(known)


def design_scores(name: str, run: Path, cases: CaseSet, samples: int, seed: int, saved: Path) -> dict:
    """Design ``name`` sampled with the outcome unknown (as predict does) and with the true class: per mode the
    per-crop in-tumour MAE and box CRPS, the spread-skill ratio and the CRPS of the volume change. Saved to (and
    read back from) ``saved``, so designs can be sampled by processes side by side."""
    if saved.is_file():
        return json.loads(saved.read_text(encoding="utf-8"))
    post = cases.batch["post"][:, 0].numpy()
    tumor = cases.batch["tumor_mask"][:, 0].numpy() > 0
    model = load_export(run)
    boxes = bbox_mask(tumor, model.config.evaluation.bbox_margin, spatial_dims=post.ndim - 1)
    out = {}
    spread = spread_calibration(model)
    for mode in ("predicted", "true"):
        start = time.process_time()
        p = predict_cases(model, cases, samples, seed, mode)
        cpu = round((time.process_time() - start) / 60, 2)
        variants = {mode: p}
        if spread is not None and spread.factor != 1.0:  # the same draws with the spread calibration undone
            variants[f"{mode}_as_drawn"] = rescale_spread(p, 1.0 / spread.factor)
        for key, drawn in variants.items():
            s = per_case(drawn, post, tumor, boxes)
            out[key] = {"per_case": {k: v.tolist() for k, v in s.items()},
                        "spread_skill_box": spread_skill(drawn.samples, post, boxes),
                        "crps_volume_change_pp": volume_crps(model, cases, drawn), "sampling_cpu_minutes": cpu,
                        "spread_factor": spread.factor if spread is not None and key == mode else 1.0}
            print(f"{name}/{key}: spread-skill {out[key]['spread_skill_box']}, CRPS box "
                  f"{np.nanmean(s['crps_box']):.4f}, MAE {np.nanmean(s['mae_tumor']):.4f}", flush=True)
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(out) + "\n", encoding="utf-8")
    return out


def score_cohort(runs: dict[str, Path], regression: ExportedModel, cohort: Path, cache: Path, samples: int,
                 seed: int, limit: int | None, saved: Path) -> dict:
    run = next(iter(runs.values()))
    first, cases = test_cases(run, cohort, cache, limit)
    post = cases.batch["post"][:, 0].numpy()
    tumor = cases.batch["tumor_mask"][:, 0].numpy() > 0
    boxes = bbox_mask(tumor, first.config.evaluation.bbox_margin, spatial_dims=post.ndim - 1)
    patients = np.array([c.patient_id for c in cases.cases])
    _, denoised, note = trivial_predictions(first, cohort, list(RunFolder(run).splits().train), cases, cache)
    reference = {"regression": (regression, predict_cases(regression, cases, 1, seed), load_calibration(regression)),
                 "denoised": (first, denoised, None)}
    scored = {name: per_case(p, post, tumor, boxes) for name, (_, p, _) in reference.items()}
    rows = {name: {"mae_tumor": float(np.nanmean(scored[name]["mae_tumor"])),
                   "crps_box": float(np.nanmean(scored[name]["crps_box"])),
                   "crps_volume_change_pp": volume_crps(m, cases, p, calibration)}
            for name, (m, p, calibration) in reference.items()}
    firsts = {}
    for name, design in runs.items():
        got_modes = design_scores(name, design, cases, samples, seed, saved / f"{name}.json")
        for mode, got in got_modes.items():
            s = {k: np.array(v, dtype=float) for k, v in got["per_case"].items()}
            if f"{mode}_as_drawn" in got_modes:  # the spread calibration against the same draws as drawn
                drawn = np.array(got_modes[f"{mode}_as_drawn"]["per_case"]["crps_box"], dtype=float)
                as_drawn = {"crps_box_minus_as_drawn": paired(s["crps_box"] - drawn, patients)}
            else:
                as_drawn = {}
            firsts.setdefault(mode, s)  # the first design (the demo preset): the one the others must beat
            rows[f"{name}/{mode}"] = {
                "mae_tumor": float(np.nanmean(s["mae_tumor"])), "crps_box": float(np.nanmean(s["crps_box"])),
                "spread_skill_box": got["spread_skill_box"], "crps_volume_change_pp": got["crps_volume_change_pp"],
                "mae_minus_regression": paired(s["mae_tumor"] - scored["regression"]["mae_tumor"], patients),
                "crps_box_minus_regression_mae_box": paired(s["crps_box"] - scored["regression"]["crps_box"], patients),
                "crps_box_minus_denoised": paired(s["crps_box"] - scored["denoised"]["crps_box"], patients),
                "crps_box_minus_first_design": paired(s["crps_box"] - firsts[mode]["crps_box"], patients),
                "mae_minus_first_design": paired(s["mae_tumor"] - firsts[mode]["mae_tumor"], patients),
                "sampling_cpu_minutes": got["sampling_cpu_minutes"], "spread_factor": got.get("spread_factor", 1.0),
                **as_drawn}
    return {"n_test_crops": len(cases), "n_test_patients": int(len(np.unique(patients))), "samples": samples,
            "denoised": note, "methods": rows}


NOISE_LEVELS = (0.001, 0.005, 0.02, 0.1, 0.3, 0.7, 0.98)  # 1 - alpha_bar of the profiled timesteps


def noise_profile(run: Path, cases: CaseSet, seed: int = 0, levels=NOISE_LEVELS) -> list[dict]:
    """Whether the trained denoiser uses x_t: per noise level 1 - alpha_bar, with the true class given, the
    RMSE in the tumour box of the x0 it predicts from x_t (image channel; for the residual design, the residual
    plus the regression mean) and the RMS difference between its x0 from two independent noise draws over
    sqrt(2) (the spread the network carries at that level). A denoiser that ignores x_t has the same RMSE at
    every level, the conditional mean's; one that uses it approaches 0 RMSE as the noise level falls."""
    from oncodiff.diffusion import NoiseSchedule
    from oncodiff.models.conditions import target_from_batch

    model = load_export(run)
    config = model.config
    net = model.net
    schedule = NoiseSchedule.from_config(config.diffusion)
    cond = case_conditions(model, cases, "true")
    tumor = cases.batch["tumor_mask"][:, 0].numpy() > 0
    boxes = torch.from_numpy(bbox_mask(tumor, config.evaluation.bbox_margin, spatial_dims=tumor.ndim - 1))
    truth = target_from_batch(cases.batch, config.diffusion.target, config.model.generate_mask).float()
    generator = torch.Generator().manual_seed(seed)
    rows = []
    with torch.inference_mode():
        work = net.encode_conditions(cond)
        mean = net.mean_from_encoded(work) if hasattr(net, "mean_from_encoded") else torch.zeros_like(truth)
        x0 = truth - mean
        for level in levels:
            t = int((1 - schedule.alphas_cumprod - level).abs().argmin())
            steps = torch.full((len(cases),), t, dtype=torch.long)
            hats = []
            for _ in range(2):
                x_t = schedule.add_noise(x0, torch.randn(x0.shape, generator=generator), t)
                out = net(x_t, steps, work).prediction.float()
                hats.append(schedule.predict_x0_and_eps(out, x_t, t, config.diffusion.prediction)[0] + mean)
            error = (hats[0] - truth)[:, 0][boxes]
            spread = (hats[0] - hats[1])[:, 0][boxes] / np.sqrt(2)
            rows.append({"noise_level": round(1 - schedule.alpha_bar(t), 3), "t": t,
                         "rmse_x0_box": float(error.square().mean().sqrt()),
                         "noise_spread_x0_box": float(spread.square().mean().sqrt())})
    return rows


# ------------------------------------------------------------------------------------------------ table


def _f(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ci(d: dict | None, digits: int = 4) -> str:
    if not d:
        return "-"
    return f"{d['mean']:+.{digits}f} ({d['ci95'][0]:+.{digits}f} to {d['ci95'][1]:+.{digits}f})"


MODE_WORDS = {"predicted": " (outcome unknown)", "true": " (true class given)",
              "predicted_as_drawn": " (outcome unknown, samples as drawn)",
              "true_as_drawn": " (true class given, samples as drawn)"}


def table(results: dict) -> str:
    parts = []
    for key, cohort in results["cohorts"].items():
        budgets = cohort["budgets"]
        lines = [f"### {key}: {cohort['scores']['n_test_crops']} test crops of {cohort['scores']['n_test_patients']} "
                 f"patients, {cohort['scores']['samples']} samples per case, {cohort['minutes']} CPU-minutes per "
                 f"design (arguments `{cohort.get('command', '')}`, {cohort.get('threads', '?')} torch thread(s)"
                 + (f"; {cohort['machine']}" if cohort.get("machine") else "") + ")", ""]
        rows = []
        for name, row in cohort["scores"]["methods"].items():
            base, _, mode = name.partition("/")
            label = {"regression": "regression U-Net", "denoised": "denoised identity"}.get(base, base)
            if mode:
                label += MODE_WORDS[mode]
                if row.get("spread_factor", 1.0) != 1.0:
                    label += f", spread x{row['spread_factor']:g}"
            first = mode and base != cohort["candidates"][0]
            rows.append((label, _f(row.get("spread_skill_box"), 2), _f(row["crps_box"]), _f(row["mae_tumor"]),
                         _ci(row.get("mae_minus_regression")), _ci(row.get("crps_box_minus_regression_mae_box")),
                         _ci(row.get("crps_box_minus_first_design")) if first else "-",
                         _ci(row.get("crps_box_minus_as_drawn")), _f(row.get("crps_volume_change_pp"), 1)))
        lines.append(markdown(("method", "spread-skill (box)", "CRPS box", "in-tumour MAE of the mean",
                               "MAE - regression's (95 % CI)", "CRPS box - regression's box MAE (95 % CI)",
                               f"CRPS box - {cohort['candidates'][0]}'s (95 % CI)",
                               "CRPS box - as drawn (95 % CI)", "CRPS Δvol (pp)"), rows))
        lines.append("")
        lines.append("Budgets: " + "; ".join(
            f"{n}: " + ", ".join(f"{k} {v}" for k, v in b.items()) for n, b in budgets.items()))
        parts.append("\n".join(lines))
    header = (f"Machine (of the last run; each cohort names its own where recorded): {results['machine']}. Command: `{results['command']}`. The ratio, CRPS and MAE are in "
              "normalised intensity units; intervals are paired patient-bootstrap 95 % intervals "
              f"({BOOTSTRAP} resamples).\n")
    return header + "\n\n".join(parts) + "\n"


def profile_table(profiles: dict[str, list[dict]]) -> str:
    """Markdown: per design and noise level, x0 RMSE in the box and its spread over two noise draws."""
    levels = [row["noise_level"] for row in next(iter(profiles.values()))]
    rows = [(name, *(f"{r['rmse_x0_box']:.3f} / {r['noise_spread_x0_box']:.3f}" for r in profile))
            for name, profile in profiles.items()]
    return markdown(("design (x0 RMSE / spread over noise draws, box)", *(f"1-ᾱ={v}" for v in levels)), rows)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--site", default="brain")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic cohort")
    parser.add_argument("--patients", type=int, default=104)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.48)
    parser.add_argument("--minutes", type=float, default=3.5, help="CPU-minutes of training per design")
    parser.add_argument("--steps", type=int, help="optimiser steps per design instead of --minutes (tests)")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--limit", type=int, help="score at most this many test crops, evenly spread over the "
                        "patient-ordered list (sampling cost on a busy machine); default: all")
    parser.add_argument("--candidates", default="default,residual")
    parser.add_argument("--train-only", help="train this one design (or 'regression', the baseline) on the first "
                        "design's splits and stop: several processes train side by side, a last plain call scores")
    parser.add_argument("--score-only", help="sample this one trained design and save its scores, then stop")
    parser.add_argument("--noise-profile", action="store_true", help="after training (or on the trained runs): per "
                        "noise level, each design's x0 error and its spread over two noise draws, with the true class "
                        "(whether the denoiser uses x_t); written to OUT/SITE-seedN/noise_profile.json")
    parser.add_argument("--threads", type=int, help="torch threads (two cohorts side by side: 1 each)")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--tag", help="suffix of this run's cohort key in results.json (SITE-seedN-TAG), so a new "
                        "set of designs on the same cohort adds rows instead of replacing the earlier ones")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override for every design")
    return parser


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    names = [n.strip() for n in args.candidates.split(",") if n.strip()]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidates {unknown}; choose from {sorted(CANDIDATES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    key = f"{args.site}-seed{args.seed}" + (f"-{args.tag}" if args.tag else "")
    out = args.out / key
    out.mkdir(parents=True, exist_ok=True)
    cohort, cache = out / "cohort", out / "cache"
    if not (cohort / "cohort.yaml").is_file():
        synthesize(site=args.site, n_patients=args.patients, dims=2, seed=args.seed, out=cohort)
    base = load_config(args.preset, [f"data.val_fraction={args.val_fraction}",
                                     f"data.test_fraction={args.test_fraction}", *args.overrides])
    saved = out / f"scores-{args.samples}samples-{args.limit or 'all'}crops"
    if args.score_only:  # sample one trained design now; a last plain call adds the references and the table
        run = out / "runs" / args.score_only
        design_scores(args.score_only, run, test_cases(out / "runs" / names[0], cohort, cache, args.limit)[1],
                      args.samples, 0, saved / f"{args.score_only}.json")
        return
    if args.noise_profile:
        cases = test_cases(out / "runs" / names[0], cohort, cache, args.limit)[1]
        profiles = {name: noise_profile(out / "runs" / name, cases) for name in names}
        (out / "noise_profile.json").write_text(json.dumps(profiles, indent=2) + "\n", encoding="utf-8")
        print(profile_table(profiles), flush=True)
        return
    if args.train_only:
        first = out / "runs" / names[0]
        if args.train_only == "regression":
            regression_baseline(first, cohort, load_export(first), args.minutes, cache, args.steps)
        else:
            train_candidate(args.train_only, base, cohort, out, args.minutes, cache,
                            None if args.train_only == names[0] else first, args.steps)
        return
    runs, budgets, first = {}, {}, None
    for name in names:
        runs[name], budgets[name] = train_candidate(name, base, cohort, out, args.minutes, cache, first, args.steps)
        first = first or runs[name]
    regression, budgets["regression U-Net"] = regression_baseline(first, cohort, load_export(first), args.minutes,
                                                                  cache, args.steps)
    scores = score_cohort(runs, regression, cohort, cache, args.samples, 0, args.limit, saved)
    _save(args, key, names, budgets, scores)


def _save(args, key: str, names: list[str], budgets: dict, scores: dict) -> None:
    """Add this cohort's rows to OUT/results.json and rewrite OUT/table.md (under a lock: cohorts run side by
    side add their rows in turn)."""
    path = args.out / "results.json"
    with open(args.out / ".results.lock", "w") as lock:  # cohorts run side by side add their rows in turn
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"cohorts": {}}
        results["machine"] = f"{platform.machine()}, {_cpu_model()}, {os.cpu_count()} cores"
        results["command"] = "nice -n 10 python -m benchmarks.distribution_designs --out OUT [--site S --seed N]"
        results["cohorts"][key] = {"command": " ".join(sys.argv[1:]), "threads": torch.get_num_threads(),
                                   "machine": results["machine"],
                                   "minutes": args.minutes, "steps": args.steps, "candidates": names,
                                   "budgets": budgets, "scores": scores}
        path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        text = table(results)
        (args.out / "table.md").write_text(text, encoding="utf-8")
    print(text, flush=True)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
