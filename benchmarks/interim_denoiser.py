"""Does the denoiser gain from the interim scan? In-tumour MAE with the outcome unknown, the model trained with
its prior scans (``data.inputs=prior``, the default) against the denoised last scan and the baseline-only model.

    python -m benchmarks.interim_denoiser --out OUT [--patients 16] [--test-patients 10] [--interim 28]
                                          [--steps 100] [--samples 4] [--seed 0] [--given]

Cohorts: two synthetic 3D clinical-acquisition brain cohorts with an interim scan (``oncodiff synth --site brain
--dims 3 --acquisition clinical --interim 28``), a training cohort (``--seed``) and a test cohort of other
patients (``--seed + 1``), each with its month-2 rows dropped as in benchmarks/interim.py (baseline, day 28,
month 4).

Two models, the same steps (the same budget: the prior channels add a few input channels and nothing else), the
demo preset and its automatic route for 3D cohorts (tumour slices), N4 off to save CPU (both arms alike):
  priors         the default, ``data.inputs=prior``: the month-4 target is predicted from the baseline and the
                 day-28 scan (registered to the baseline, with its presence flag and day); its class prior reads
                 the early volume change on the interim;
  baseline only  ``--set data.inputs=baseline``.
Each predicts the month-4 day of every test patient with the outcome unknown (``oncodiff predict --days 120``:
from every scan before that day; the class prior's mixture, no ``--set response``), ``--samples`` samples, seed 0.
With ``--given``, each also predicts it given each test patient's true response class (one folder
``given_<class>`` per class group beside its outcome-unknown predictions), and the paired MAE of the two models
given the class says what the prior scans add beyond revealing the class.

Scoring as benchmarks/volumetric.py and crossfamily.py (TestTruth): each month-4 scan as acquired, brought onto
its baseline through the synthetic truth's rigid transform and normalised by its own percentiles; in-tumour
(baseline GTV) MAE and SSIM of the predicted mean, against
  - the denoised last scan: the day-28 scan as acquired, brought onto the baseline the same way, normalised by its
    own percentiles, smoothed by the Gaussian (of SMOOTHING_MM) that best predicts month 4 inside the tumour on the
    *training* cohort;
  - the baseline-only model; and, for context, identity (post = baseline) and the denoised baseline.
Paired per-patient differences (priors model - reference) with patient-bootstrap 95 % intervals
(oncodiff.evaluation.paired.mean_difference). The volume change: the CRPS (percentage points) of each model's
samples' changes (predict's ``change_pct_samples``, the export's segmenter on each stitched sample) at the
month-4 scan's change (``change_pct_true``), and of "no change" (post = pre: |true change|), paired priors model
minus baseline-only model. Writes OUT/results.json, OUT/per_patient.csv, OUT/volume_change.csv and OUT/table.md;
interrupted, it picks up where it stopped (trained runs and predictions are kept, and the training CPU seconds an
earlier invocation recorded in results.json).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from oncodiff.arrays import crps_ensemble
from oncodiff.cohort import read_image
from oncodiff.cohort.image import Image
from oncodiff.config import SMOOTHING_MM, Config, load_config
from oncodiff.data.denoise import smoothed
from oncodiff.evaluation.metrics import image_metrics
from oncodiff.evaluation.paired import mean_difference
from oncodiff.runs import RunFolder

from benchmarks.crossfamily import machine, predict_given
from benchmarks.interim import FINAL, make_cohort
from benchmarks.volumetric import TestTruth

ARMS = {"priors": "prior", "baseline only": "baseline"}
COMMON = ["data.test_fraction=0", "sampling.calibrate=false", "training.max_minutes=null",
          "data.bias_correction=none"]
PRIORS_MODEL = "oncodiff, priors (outcome unknown)"
REFERENCES = ("denoised last scan", "oncodiff, baseline only (outcome unknown)", "identity", "denoised baseline")
# given each test patient's true class: what the prior scans add beyond revealing the class
GIVEN = ("oncodiff, priors (given the class)", "oncodiff, baseline only (given the class)")


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (preprocessing workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def smoothing_sigma(truth: TestTruth, source: str, patients: list[str]) -> float:
    """The sigma of SMOOTHING_MM whose smoothing of ``source`` (``pre``: the baseline, else a timepoint's scan brought
    onto the baseline) best predicts the month-4 scan inside the baseline tumour (pooled MAE) over ``patients``."""
    errors, count = np.zeros(len(SMOOTHING_MM)), 0
    for patient in patients:
        baseline, mask, _ = truth.baseline(patient)
        image = baseline if source == "pre" else Image(truth.follow_up(patient, source, baseline)["image"],
                                                       baseline.affine)
        target = truth.follow_up(patient, FINAL, baseline)["image"]
        errors += [np.abs(smoothed(image, s).array - target)[mask].sum() for s in SMOOTHING_MM]
        count += int(mask.sum())
    return float(SMOOTHING_MM[int(np.argmin(errors / max(count, 1)))])


def train_arm(cohort: Path, run: Path, inputs: str, steps: int, cache: Path) -> dict:
    from oncodiff.training import train

    started, reused = cpu_seconds(), RunFolder(run).weights.is_file()
    if not reused:
        if run.exists():  # an interrupted earlier attempt: start it again
            import shutil

            shutil.rmtree(run)
        print(f"training data.inputs={inputs} for {steps} steps ...", flush=True)
        train(cohort, load_config("demo", [*COMMON, f"training.max_steps={steps}", f"data.inputs={inputs}"]), run,
              cache_dir=cache)
    summary = json.loads((run / "train_summary.json").read_text(encoding="utf-8"))
    return {"steps": summary.get("global_step"),
            "cpu_s_this_process": None if reused else round(cpu_seconds() - started, 1),
            "data": Config.from_json(RunFolder(run).config_json).data.model_dump(mode="json")}


def final_day(cohort: Path) -> float:
    """The day of the month-4 scans (synth writes the same day for every patient)."""
    scans = pd.read_csv(cohort / "scans.csv", dtype=str)
    days = {float(d) for d in scans.loc[scans.timepoint == FINAL, "days"]}
    if len(days) != 1:
        raise SystemExit(f"{cohort}: the {FINAL} scans are on several days ({sorted(days)}); expected one")
    return days.pop()


def predict_arm(run: Path, cohort: Path, out: Path, samples: int, cache: Path) -> float | None:
    """Predict the month-4 day of every test patient (``predict --days``: from every scan before it; the month-4
    scan itself is the truth), with the outcome unknown; the CPU seconds it took, None when kept from before."""
    from oncodiff.pipeline.predict import predict

    if (out / "summary.json").is_file():
        return None
    started = cpu_seconds()
    print(f"predicting {cohort} with {run} ...", flush=True)
    predict(run, cohort, out, samples=samples, days=final_day(cohort), cache_dir=cache, overwrite=out.exists())
    return round(cpu_seconds() - started, 1)


def score(truth: TestTruth, patients: list[str], interim: str, sigmas: dict[str, float],
          predictions: dict[str, list[Path]]) -> pd.DataFrame:
    """One row per (test patient, method): month-4 in-tumour MAE and SSIM; ``predictions``: method -> the folders
    that hold its cases (one, or one per class group)."""
    rows = []
    for patient in patients:
        baseline, mask, transform = truth.baseline(patient)
        target = truth.follow_up(patient, FINAL, baseline)["image"]
        last = Image(truth.follow_up(patient, interim, baseline)["image"], baseline.affine)
        methods = {"identity": baseline.array, "denoised baseline": smoothed(baseline, sigmas["pre"]).array,
                   "denoised last scan": smoothed(last, sigmas[interim]).array}
        for name, folders in predictions.items():
            case = next(f / f"{patient}_L1_{FINAL}" for f in folders if (f / f"{patient}_L1_{FINAL}").is_dir())
            methods[name] = transform.apply(read_image(case / "mean.nii.gz").array)
        for method, image in methods.items():
            metrics = image_metrics(image, target, mask, bbox_margin=4)
            rows.append({"patient": patient, "method": method, "mae_tumor": metrics["mae_tumor"],
                         "ssim_tumor": metrics["ssim_tumor"]})
    return pd.DataFrame(rows)


def volume_change(predictions: dict[str, Path]) -> pd.DataFrame:
    """One row per (test patient, method): the month-4 volume change's CRPS in percentage points, of each model's
    samples (their defined changes) and of "no change"; the true change from the month-4 scan's mask."""
    rows = []
    for name, folder in predictions.items():
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        for case in summary["cases"]:
            true, changes = case.get("change_pct_true"), [c for c in case["change_pct_samples"] if c is not None]
            if case["timepoint"] != FINAL or true is None or not changes:
                continue
            rows.append({"patient": case["patient_id"], "method": name, "true_change_pct": true,
                         "crps_change_pp": float(crps_ensemble(np.array(changes), np.array(true)))})
            if name == PRIORS_MODEL:
                rows.append({"patient": case["patient_id"], "method": "no change (post = pre)",
                             "true_change_pct": true, "crps_change_pp": abs(true)})
    return pd.DataFrame(rows)


def summarise_volumes(frame: pd.DataFrame) -> dict:
    wide = frame.pivot(index="patient", columns="method", values="crps_change_pp").dropna()
    means = wide.mean()
    return {"patients": len(wide), "mean_crps_pp": means.to_dict(),
            "ratio priors / baseline only": float(means[PRIORS_MODEL] / means[REFERENCES[1]]),
            "paired (priors model - baseline only)": mean_difference(wide[PRIORS_MODEL], wide[REFERENCES[1]],
                                                                      wide.index.to_numpy())}


def summarise(frame: pd.DataFrame) -> dict:
    means = frame.groupby("method")[["mae_tumor", "ssim_tumor"]].mean()
    paired = {}
    for value in ("mae_tumor", "ssim_tumor"):
        wide = frame.pivot(index="patient", columns="method", values=value)
        paired[value] = {reference: mean_difference(wide[PRIORS_MODEL], wide[reference], wide.index.to_numpy())
                         for reference in REFERENCES}
    out = {"patients": int(frame.patient.nunique()), "mean": means.reset_index().to_dict(orient="records"),
           "paired (priors model - reference)": paired}
    if set(GIVEN) <= set(frame.method):
        wide = frame.pivot(index="patient", columns="method", values="mae_tumor")
        out["paired given the class (priors - baseline only)"] = mean_difference(wide[GIVEN[0]], wide[GIVEN[1]],
                                                                                 wide.index.to_numpy())
    return out


def table(results: dict) -> str:
    s = results["scores"]
    means = {r["method"]: r for r in s["mean"]}
    reference_mae = means["denoised last scan"]["mae_tumor"]
    lines = [f"# Interim scan (day {results['interim']}): the denoiser with priors against the denoised last scan "
             "and the baseline-only model", "",
             f"Command: `{results['command']}`  ", f"Machine: {results['machine']}  ",
             f"Train {results['patients']} patients, test {s['patients']} other patients (month-4 scans), "
             f"{results['samples']} samples, outcome unknown (class-prior mixture). Steps and CPU seconds per arm: "
             + "; ".join(f"{k} {v['steps']} steps, train {_seconds(v['cpu_s_this_process'])}, predict "
                         f"{_seconds(results['predict_cpu_s'][k])}" for k, v in results["runs"].items())
             + f". CPU of this invocation {results['cpu_s']:.0f} s. Smoothing chosen on the training cohort: baseline "
             f"{results['sigmas_mm']['pre']:g} mm, last scan {results['sigmas_mm'][results['interim_timepoint']]:g} "
             "mm.", "",
             "| method | in-tumour MAE | vs denoised last scan | in-tumour SSIM |", "|---|---|---|---|"]
    for method, row in sorted(means.items(), key=lambda item: item[1]["mae_tumor"]):
        lines.append(f"| {method} | {row['mae_tumor']:.4f} | {row['mae_tumor'] / reference_mae:.2f}x | "
                     f"{row['ssim_tumor']:.3f} |")
    lines += ["", "Paired per-patient differences, priors model minus reference, mean [95 % patient-bootstrap "
              "interval]:", ""]
    for value, by in s["paired (priors model - reference)"].items():
        for reference, d in by.items():
            low, high = d["ci95"]
            lines.append(f"- {value}, vs {reference}: {d['mean']:+.4f} [{low:+.4f}, {high:+.4f}] "
                         f"({d['n_patients']} patients)")
    if given := s.get("paired given the class (priors - baseline only)"):
        lines.append(f"- mae_tumor given the class, priors model - baseline-only model: {given['mean']:+.4f} "
                     f"[{given['ci95'][0]:+.4f}, {given['ci95'][1]:+.4f}] ({given['n_patients']} patients)")
    if volumes := results.get("volume_change"):
        d = volumes["paired (priors model - baseline only)"]
        lines += ["", f"Month-4 volume change, CRPS in percentage points ({volumes['patients']} patients): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in volumes["mean_crps_pp"].items())
                  + f"; priors / baseline only {volumes['ratio priors / baseline only']:.2f}, paired "
                  f"{d['mean']:+.1f} [{d['ci95'][0]:+.1f}, {d['ci95'][1]:+.1f}] pp."]
    return "\n".join(lines) + "\n"


def _seconds(value: float | None) -> str:
    return "(trained by an earlier, interrupted invocation: not timed here)" if value is None else f"{value:.0f} s"


def run_arms(out: Path, train_cohort: Path, test_cohort: Path, args, earlier: dict) -> tuple[dict, dict, dict]:
    """Train each arm and predict month 4 with the outcome unknown and, with ``args.given``, given each test
    patient's true class. Kept runs and predictions are reused, with the CPU seconds ``earlier`` (the results.json
    of an earlier invocation) recorded for them."""
    runs, predict_cpu, predictions, cache = {}, {}, {}, out / "cache"
    for name, inputs in ARMS.items():
        folder = out / inputs
        runs[name] = train_arm(train_cohort, folder / "run", inputs, args.steps, cache)
        if runs[name]["cpu_s_this_process"] is None:  # trained by an earlier invocation: keep what it timed
            runs[name]["cpu_s_this_process"] = earlier.get("runs", {}).get(name, {}).get("cpu_s_this_process")
        predict_cpu[name] = predict_arm(folder / "run", test_cohort, folder / "predictions", args.samples, cache)
        if predict_cpu[name] is None:
            predict_cpu[name] = earlier.get("predict_cpu_s", {}).get(name)
        predictions[f"oncodiff, {name} (outcome unknown)"] = [folder / "predictions"]
        if args.given:
            predictions[f"oncodiff, {name} (given the class)"] = predict_given(
                folder / "run", test_cohort, folder, args.samples, cache, days=final_day(test_cohort))
    return runs, predict_cpu, predictions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--patients", type=int, default=16, help="training cohort")
    parser.add_argument("--test-patients", type=int, default=10)
    parser.add_argument("--interim", type=int, default=28)
    parser.add_argument("--steps", type=int, default=100, help="optimiser steps of each model")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--given", action="store_true", help="also predict given each patient's true class")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = cpu_seconds()
    interim = f"day{args.interim}"
    train_cohort = make_cohort(out / "train", args.patients, args.interim, args.seed)
    test_cohort = make_cohort(out / "test", args.test_patients, args.interim, args.seed + 1)
    train_truth, test_truth = TestTruth(out / "train" / "synth"), TestTruth(out / "test" / "synth")
    train_ids = sorted({p for p, t in train_truth.follow_ups() if t == FINAL})
    test_ids = sorted({p for p, t in test_truth.follow_ups() if t == FINAL})
    sigmas = {source: smoothing_sigma(train_truth, source, train_ids) for source in ("pre", interim)}
    path = out / "results.json"
    earlier = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    runs, predict_cpu, predictions = run_arms(out, train_cohort, test_cohort, args, earlier)
    unknown = {name: folders[0] for name, folders in predictions.items() if "outcome unknown" in name}
    frame, volumes = score(test_truth, test_ids, interim, sigmas, predictions), volume_change(unknown)
    frame.to_csv(out / "per_patient.csv", index=False)
    volumes.to_csv(out / "volume_change.csv", index=False)
    results = {
        "command": "python -m benchmarks.interim_denoiser " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "patients": len(train_ids), "interim": args.interim, "interim_timepoint": interim, "samples": args.samples,
        "sigmas_mm": sigmas, "runs": runs, "predict_cpu_s": predict_cpu, "scores": summarise(frame),
        "volume_change": summarise_volumes(volumes),
        "cpu_s": round(cpu_seconds() - started, 1),
    }
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    (out / "table.md").write_text(table(results), encoding="utf-8")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
