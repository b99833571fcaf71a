"""The papers' ablations on synthetic cohorts, one command each, in the papers' table formats.

    python -m benchmarks.ablations immunodiff --out ablations/immunodiff   # ImmunoDiff Table 3
    python -m benchmarks.ablations gbm-ldm --out ablations/gbm-ldm         # glioblastoma LDM Table 1 (+ VQ-VAE)
    ... --quick                                                            # tiny cohorts and budgets: a smoke test

Each writes OUT/results.json (every number, the settings, wall times) and OUT/table.md. Cohorts are
written to OUT/cohorts and runs to OUT/runs; a finished run is reused, so an interrupted ablation
continues where it stopped (delete a run folder to retrain it). Training budgets are optimiser steps,
not minutes, so the numbers do not depend on how busy the machine is.

immunodiff (lung CT, 3D, the preset's default crop): three models scored on the same treated test split
and by the same 5-fold cross-validated heads:
  Stage-1   anatomy-guided pre-training only: DDPM + anatomy ControlNet on the untreated cohort, never fine-tuned
            on treated scans (ImmunoDiff's "Stage-1" row)
  Stage-2   the cbi-Adapter model trained on the treated cohort from scratch (no stage 1)
  Ours      stage 1 then stage 2 (the immunodiff presets in order)
  MMD (test split, predicted vs true follow-ups), SSIM (per test case), F1 / precision / recall of the response
  head and c-index of the Cox head on up-block features (5 folds over every treated patient, mean +- std).
  Also: peak resident memory of a stage-2 training + prediction at the preset's default size, in a fresh process.

gbm-ldm (brain MRI, 2D tumour slices of a 3D cohort, the 4-month follow-up as in the paper): one VQ-VAE pair,
then three LDMs (no class, survival2, survival4) scored on the same test slices, one generated slice each:
  no class, pred 2-class (survival2 model, class from the class prior, i.e. its most probable class), 2-class
  and 4-class (true classes, the paper's oracle protocol); PSNR, SSIM, MSE globally and inside the GTV.
  Also: the VQ-VAE's reconstruction PSNR / SSIM on the test split (paper: 42.08 dB, 0.988 on real MRI).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from oncodiff.config import Config, load_config
from oncodiff.evaluation.distribution import mmd
from oncodiff.evaluation.metrics import image_metrics, psnr_from_mse, summarize
from oncodiff.outcomes.heads import HeadOptions, cross_validate_response, cross_validate_survival
from oncodiff.outputs import write_marker
from oncodiff.pipeline.cases import CaseSet, load_cases
from oncodiff.pipeline.denoiser_features import denoiser_features
from oncodiff.pipeline.export import ExportedModel, load_export
from oncodiff.pipeline.predict import predict_cases
from oncodiff.presets.papers import paper
from oncodiff.runs import RunFolder
from oncodiff.synth import synthesize
from oncodiff.training import train


@dataclass(frozen=True)
class Budget:
    """Cohort sizes, optimiser steps per run and sampling settings of one ablation."""

    patients: int
    pretrain_patients: int = 0
    steps: dict | None = None
    sampling_steps: int = 50
    samples: int = 1
    folds: int = 5


IMMUNODIFF_RUNS = {"immunodiff-encoders": "encoders", "immunodiff-ddpm": "ddpm",  # preset -> OUT/runs folder
                   "immunodiff-controlnet": "controlnet", "immunodiff": "stage2"}
IMMUNODIFF = {"full": Budget(64, 96, {"encoders": 100, "ddpm": 200, "controlnet": 150, "stage2": 150,
                                      "stage2_only": 200}, sampling_steps=50),
              "quick": Budget(10, 10, {"encoders": 2, "ddpm": 2, "controlnet": 2, "stage2": 2, "stage2_only": 2},
                              sampling_steps=3, folds=2)}
GBM = {"full": Budget(48, steps={"autoencoder": 600, "ldm": 600}, sampling_steps=200),
       "quick": Budget(8, steps={"autoencoder": 2, "ldm": 2}, sampling_steps=4, folds=2)}


# ------------------------------------------------------------------------------------------------ shared


class Ablation:
    """Cohorts, runs and timings of one ablation under OUT."""

    def __init__(self, out: Path, seed: int, extra: list[str] | None = None):
        self.out, self.seed, self.extra = out, seed, list(extra or [])
        self.cache = out / "cache"
        self.wall: dict[str, float] = {}
        (out / "runs").mkdir(parents=True, exist_ok=True)

    def cohort(self, name: str, site: str, patients: int, seed: int, treated: bool = True) -> Path:
        path = self.out / "cohorts" / name
        if not (path / "cohort.yaml").is_file():
            start = time.perf_counter()
            synthesize(site, patients, 3, seed, path, overwrite=True, workers=2, treated=treated)
            self.wall[f"synth {name}"] = time.perf_counter() - start
        return path

    def run(self, name: str, preset: str, cohort: Path, steps: int, overrides: list[str],
            splits_from: str | None = None) -> Path:
        """Train ``preset`` for ``steps`` optimiser steps into OUT/runs/NAME, unless it is already there."""
        folder = self.out / "runs" / name
        if RunFolder(folder).train_summary_json.is_file():
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        write_marker(folder, "run", state="training")  # train() writes only into its own (or an empty) folder
        if splits_from:  # the same patients in the same splits as that run
            shutil.copy(RunFolder(self.out / "runs" / splits_from).splits_json, RunFolder(folder).splits_json)
        config = load_config(preset, overrides + self.extra + [
            f"training.max_steps={steps}", "training.max_minutes=null", f"training.seed={self.seed}",
            "evaluation.segmenter_steps=1",  # the ablations never measure tumour size
        ])
        print(f"\n=== {name}: {preset}, {steps} steps on {cohort.name}", flush=True)
        start = time.perf_counter()
        train(cohort, config, folder, cache_dir=self.cache)
        self.wall[f"train {name}"] = time.perf_counter() - start
        return folder

    def chain(self, key: str, folders: dict[str, str], cohorts: dict[str, Path], steps: dict,
              overrides: list[str]) -> dict[str, Path]:
        """Train paper ``key``'s stages in the registry's order, each into OUT/runs/``folders[preset]`` for
        ``steps[folder]`` steps, starting from the runs of the stages the registry names; preset -> run."""
        runs: dict[str, Path] = {}
        for stage in paper(key).stages:
            starts = [f"training.{option}={runs[earlier]}" for option, earlier in
                      (("init_from", stage.init_from), ("anatomy_from", stage.anatomy_from)) if earlier]
            folder = folders[stage.preset]
            runs[stage.preset] = self.run(folder, stage.preset, cohorts[stage.cohort], steps[folder],
                                          overrides + starts)
        return runs

    def test_cases(self, model: ExportedModel, cohort: Path, split_run: str) -> CaseSet:
        test = list(RunFolder(self.out / "runs" / split_run).splits().test)
        cases = load_cases(model, cohort, patients=test, cache_dir=self.cache)
        return cases.select([i for i, c in enumerate(cases.cases) if c.has_truth])

    def write(self, results: dict, table: str) -> None:
        results["wall_seconds"] = {k: round(v, 1) for k, v in self.wall.items()}
        results["overrides"] = self.extra
        (self.out / "results.json").write_text(json.dumps(results, indent=2, default=_json) + "\n", encoding="utf-8")
        (self.out / "table.md").write_text(table, encoding="utf-8")
        print("\n" + table, flush=True)


def sampled(model: ExportedModel, steps: int) -> Config:
    return model.config.with_overrides([f"sampling.steps={steps}"])


def mean_std(values, digits: int = 3) -> str:
    s = summarize(values)
    if s["mean"] is None:
        return "n/a"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}" if s["std"] is not None else f"{s['mean']:.{digits}f}"


def _json(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, Path)):
        return value.tolist() if isinstance(value, np.ndarray) else str(value)
    raise TypeError(type(value).__name__)


# ------------------------------------------------------------------------------------------------ ImmunoDiff


def immunodiff(out: Path, budget: Budget, seed: int, extra: list[str] | None = None) -> None:
    ab = Ablation(out, seed, extra)
    public = ab.cohort("lung3d-untreated", "lung", budget.pretrain_patients, seed + 1, treated=False)
    treated = ab.cohort("lung3d", "lung", budget.patients, seed)
    steps = budget.steps
    runs = ab.chain("immunodiff", IMMUNODIFF_RUNS, {"public": public, "treated": treated}, steps, [])
    controlnet = runs["immunodiff-controlnet"]
    ab.run("stage2_only", paper("immunodiff").stages[-1].preset, treated, steps["stage2_only"],
           ["training.stage=diffusion", "model.control=none", "training.init_from=null"], splits_from="stage2")
    rows = {"Stage-1": "controlnet", "Stage-2": "stage2_only", "Ours (Stage 1+2)": "stage2"}
    results = {"budget": asdict(budget), "seed": seed, "rows": {}}
    for label, run in rows.items():
        print(f"\n=== scoring {label} ({run})", flush=True)
        start = time.perf_counter()
        results["rows"][label] = score_immunodiff(ab, load_export(out / "runs" / run), treated, budget)
        ab.wall[f"score {run}"] = time.perf_counter() - start
    results["memory"] = measure_memory(out, treated, controlnet, seed)
    ab.write(results, immunodiff_table(results))


def score_immunodiff(ab: Ablation, model: ExportedModel, cohort: Path, budget: Budget) -> dict:
    """Image quality on the treated test split and cross-validated outcome heads on up-block features."""
    cases = ab.test_cases(model, cohort, "stage2")
    config = sampled(model, budget.sampling_steps)
    predictions = predict_cases(model, cases, budget.samples, ab.seed, "null", config)
    post = cases.batch["post"][:, 0].numpy()
    metrics = image_metrics(predictions.mean, post, cases.batch["tumor_mask"][:, 0].numpy(), 4, spatial_dims=3)
    flat = len(post), -1
    patients_cases = first_case_per_patient(load_cases(model, cohort, cache_dir=ab.cache))
    features = denoiser_features(model, patients_cases, config.evaluation.feature_timestep)
    patients = np.array([c.patient_id for c in patients_cases.cases])
    batch, head = patients_cases.batch, HeadOptions.from_config(model.config.evaluation)
    response = cross_validate_response(features, batch["response"].numpy(), patients, budget.folds, ab.seed,
                                       "head", head)
    survival = cross_validate_survival(features, batch["survival_time"].numpy(), batch["survival_event"].numpy(),
                                       patients, budget.folds, ab.seed, "cox_head", head)
    return {"test_cases": len(cases), "mmd": mmd(predictions.mean.reshape(flat), post.reshape(flat)),
            "ssim": [m["ssim"] for m in metrics], "ssim_summary": summarize([m["ssim"] for m in metrics]),
            "response": {"mean": response.mean, "std": response.std, "formatted": response.formatted()},
            "survival": {"mean": survival.mean, "std": survival.std, "formatted": survival.formatted()},
            "cv_patients": len(patients)}


def first_case_per_patient(cases: CaseSet) -> CaseSet:
    """Each patient's earliest follow-up (the ImmunoDiff response is assessed at 6 weeks)."""
    best: dict[str, tuple[float, int]] = {}
    for i, case in enumerate(cases.cases):
        if case.patient_id not in best or case.days < best[case.patient_id][0]:
            best[case.patient_id] = (case.days, i)
    return cases.select(sorted(i for _, i in best.values()))


def measure_memory(out: Path, cohort: Path, controlnet: Path, seed: int) -> dict:
    """Peak resident memory of a stage-2 training (20 steps) + prediction, in a fresh process."""
    command = [sys.executable, "-m", "benchmarks.ablations", "immunodiff-memory", "--out", str(out / "memory"),
               "--cohort", str(cohort), "--init-from", str(controlnet), "--seed", str(seed)]
    print(f"\n=== peak memory: {' '.join(command)}", flush=True)
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_run(out: Path, cohort: Path, init_from: Path, seed: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    config = load_config("immunodiff", [f"training.init_from={init_from}", "training.max_steps=20",
                                        "training.max_minutes=null", "evaluation.segmenter_steps=20",
                                        f"training.seed={seed}"])
    start = time.perf_counter()
    run = train(cohort, config, out / "run", cache_dir=out.parent / "cache")
    trained = time.perf_counter() - start
    model = load_export(run)
    test = list(RunFolder(run).splits().test)
    cases = load_cases(model, cohort, patients=test, cache_dir=out.parent / "cache")
    predict_cases(model, cases, model.config.sampling.samples, seed, "null")
    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "crop_size": list(config.data.crop_size), "batch_size": config.training.batch_size,
            "model_channels": list(config.model.channels), "train_steps": 20, "train_seconds": round(trained, 1),
            "predicted_cases": len(cases), "samples": model.config.sampling.samples,
            "sampling_steps": model.config.sampling.steps, "total_seconds": round(time.perf_counter() - start, 1)}


IMMUNODIFF_PAPER = {"Stage-1": ("1.0789", "0.2256", "0.70 ± 0.03", "0.82 ± 0.07", "0.72 ± 0.05", "0.47 ± 0.04"),
                    "Stage-2": ("2.3528", "0.2034", "0.64 ± 0.13", "0.56 ± 0.15", "0.74 ± 0.09", "0.54 ± 0.07"),
                    "Ours (Stage 1+2)": ("0.0330", "0.2979", "0.76 ± 0.13", "0.79 ± 0.16", "0.75 ± 0.12",
                                         "0.57 ± 0.12")}


def immunodiff_table(results: dict) -> str:
    header = ("| | MMD (↓) | SSIM (↑) | F1 (↑) | Precision (↑) | Recall (↑) | c-index (↑) |\n"
              "|---|---|---|---|---|---|---|\n")
    ours = ""
    for label, row in results["rows"].items():
        response, survival = row["response"]["formatted"], row["survival"]["formatted"]
        ours += (f"| {label} | {row['mmd']:.4f} | {mean_std(row['ssim'])} | {response['f1']} | "
                 f"{response['precision']} | {response['recall']} | {survival['c_index']} |\n")
    paper = "".join(f"| {label} | " + " | ".join(values) + " |\n" for label, values in IMMUNODIFF_PAPER.items())
    memory = results.get("memory", {})
    budget = results["budget"]
    return ("### ImmunoDiff ablation (Table 3 format), synthetic lung CT, 3D\n\n" + header + ours +
            f"\nSteps per run: {budget['steps']}; {budget['samples']} sample per test case, "
            f"{budget['sampling_steps']} DDIM steps; heads: {budget['folds']}-fold CV over "
            f"{next(iter(results['rows'].values()))['cv_patients']} treated patients (mean ± std over folds).\n"
            + (f"Peak memory (stage-2 training + prediction, crop {memory.get('crop_size')}, batch "
               f"{memory.get('batch_size')}): {memory.get('peak_rss_mb')} MB resident.\n" if memory else "")
            + "\nThe paper's Table 3 (in-house cohort, 74 patients, real CT):\n\n" + header + paper)


# ------------------------------------------------------------------------------------------------ glioblastoma LDM

GBM_COMMON = ["data.timepoints=[month4]", "model.use_days=false"]  # the paper's single 4-month follow-up
GBM_ROWS = {"no class": ("ldm_none", "null"), "pred 2-class": ("ldm_survival2", "predicted"),
            "2-class": ("ldm_survival2", "true"), "4-class": ("ldm_survival4", "true")}
GBM_COLUMNS = (("psnr", "PSNR ↑", 2), ("psnr_tumor", "PSNR local ↑", 2), ("ssim", "SSIM ↑", 3),
               ("ssim_tumor", "SSIM local ↑", 3), ("mse", "MSE ↓", 4), ("mse_tumor", "MSE local ↓", 4))


def gbm_ldm(out: Path, budget: Budget, seed: int, extra: list[str] | None = None) -> None:
    ab = Ablation(out, seed, extra)
    cohort = ab.cohort("brain3d", "brain", budget.patients, seed)
    steps = budget.steps
    first, ldm = paper("gbm-ldm").stages  # the VQ-VAEs, then the LDM that starts from them (three variants)
    autoencoder = ab.run("autoencoder", first.preset, cohort, steps["autoencoder"], GBM_COMMON)
    for name, overrides in (("ldm_none", ["model.class_label=none", "sampling.guidance_scale=1"]),
                            ("ldm_survival2", []), ("ldm_survival4", ["model.class_label=survival4"])):
        ab.run(name, ldm.preset, cohort, steps["ldm"], GBM_COMMON + overrides + [f"training.init_from={autoencoder}"],
               splits_from="autoencoder")
    results = {"budget": asdict(budget), "seed": seed, "rows": {}}
    codec = load_export(autoencoder)
    cases = ab.test_cases(codec, cohort, "autoencoder")
    results["autoencoder"] = reconstruction(codec, cases)
    for label, (run, mode) in GBM_ROWS.items():
        print(f"\n=== scoring {label} ({run}, class {mode})", flush=True)
        start = time.perf_counter()
        model = load_export(out / "runs" / run)
        predictions = predict_cases(model, cases, budget.samples, seed, mode, sampled(model, budget.sampling_steps))
        metrics = image_metrics(predictions.mean, cases.batch["post"][:, 0].numpy(),
                                cases.batch["tumor_mask"][:, 0].numpy(), 4, spatial_dims=2)
        results["rows"][label] = {name: [m[name] for m in metrics] for name, _, _ in GBM_COLUMNS}
        ab.wall[f"score {label}"] = time.perf_counter() - start
    results["test_cases"] = len(cases)
    results["guidance_scale"] = load_export(out / "runs" / "ldm_survival2").config.sampling.guidance_scale
    ab.write(results, gbm_table(results))


@torch.no_grad()
def reconstruction(codec: ExportedModel, cases: CaseSet) -> dict:
    """The image VQ-VAE's test-split reconstruction (pre and post crops): PSNR, SSIM; the mask VQ-VAE's Dice."""
    net = codec.net
    images = torch.cat([cases.batch["pre"], cases.batch["post"]]).float()
    recon = torch.cat([net.image.decode(net.image.encode(chunk)) for chunk in images.split(64)]).clamp(0, 1)
    metrics = image_metrics(recon[:, 0].numpy(), images[:, 0].numpy(), np.ones(images[:, 0].shape), 0,
                            spatial_dims=2)
    out = {"images": len(images), "psnr": summarize([m["psnr"] for m in metrics]),
           "ssim": summarize([m["ssim"] for m in metrics]),
           "psnr_of_mean_mse": psnr_from_mse(float(np.mean([m["mse"] for m in metrics])), 1.0)}
    if net.mask is not None:
        masks = cases.batch["tumor_mask"].float()
        decoded = torch.cat([net.mask.decode(net.mask.encode(chunk)) for chunk in masks.split(64)]) > 0.5
        overlap = (decoded & (masks > 0.5)).flatten(1).sum(1).float()
        total = decoded.flatten(1).sum(1).float() + (masks > 0.5).flatten(1).sum(1).float()
        out["mask_dice"] = summarize((2 * overlap / total.clamp_min(1)).tolist())
    return out


GBM_PAPER = {"no class": "24.65 ± 1.74 | 18.29 ± 3.41 | 0.826 ± 0.044 | 0.306 ± 0.150 | 0.015 ± 0.006 | 0.078 ± 0.060",
             "pred 2-class": "24.88 ± 1.68 | 18.48 ± 3.66 | 0.830 ± 0.043 | 0.303 ± 0.161 | 0.014 ± 0.005 | "
                             "0.077 ± 0.060",
             "2-class": "24.71 ± 1.65 | 18.57 ± 3.51 | 0.827 ± 0.041 | 0.312 ± 0.158 | 0.014 ± 0.005 | 0.074 ± 0.059",
             "4-class": "24.62 ± 1.62 | 18.66 ± 3.38 | 0.825 ± 0.041 | 0.313 ± 0.156 | 0.015 ± 0.006 | 0.071 ± 0.052"}


def gbm_table(results: dict) -> str:
    header = "| LDM | " + " | ".join(label for _, label, _ in GBM_COLUMNS) + " |\n|---" + "|---" * len(GBM_COLUMNS) + "|\n"
    ours = "".join(f"| {label} | " + " | ".join(mean_std(row[key], digits) for key, _, digits in GBM_COLUMNS) + " |\n"
                   for label, row in results["rows"].items())
    paper = "".join(f"| {label} | {values} |\n" for label, values in GBM_PAPER.items())
    ae, budget = results["autoencoder"], results["budget"]
    return ("### Glioblastoma LDM ablation (Table 1 format), synthetic brain MRI, 2D tumour slices\n\n" + header + ours
            + f"\n{results['test_cases']} test slices, one generated slice each; DDIM {budget['sampling_steps']} of "
            f"1000 steps, guidance scale {results['guidance_scale']:g}; local = inside the baseline GTV; LPIPS not "
            f"computed (no offline weights). Steps per run: {budget['steps']}.\n\n"
            f"VQ-VAE reconstruction on the test split ({ae['images']} pre and post slices): PSNR "
            f"{_summary(ae['psnr'], 2)} dB, SSIM {_summary(ae['ssim'], 3)}"
            + (f", mask VQ-VAE Dice {_summary(ae['mask_dice'], 3)}" if "mask_dice" in ae else "")
            + " (paper, real MRI: PSNR 42.08, SSIM 0.988).\n\nThe paper's Table 1 (140 patients, real MRI; LPIPS "
              "column left out):\n\n" + header + paper)


def _summary(s: dict, digits: int) -> str:
    return "n/a" if s["mean"] is None else f"{s['mean']:.{digits}f} ± {(s['std'] or 0):.{digits}f}"


# ------------------------------------------------------------------------------------------------ command line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ablation", choices=("immunodiff", "gbm-ldm", "immunodiff-memory"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="tiny cohorts and budgets (a smoke test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="config override for every run of the ablation (e.g. diffusion.prediction=v)")
    parser.add_argument("--cohort", type=Path, help="immunodiff-memory: the treated cohort")
    parser.add_argument("--init-from", type=Path, help="immunodiff-memory: the stage-1C run")
    args = parser.parse_args(argv)
    level = "quick" if args.quick else "full"
    if args.ablation == "immunodiff":
        immunodiff(args.out.resolve(), IMMUNODIFF[level], args.seed, args.overrides)
    elif args.ablation == "gbm-ldm":
        gbm_ldm(args.out.resolve(), GBM[level], args.seed, args.overrides)
    else:
        print(json.dumps(memory_run(args.out.resolve(), args.cohort, args.init_from, args.seed)))


if __name__ == "__main__":
    main()
