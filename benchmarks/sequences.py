"""What does each MRI sequence add? The default route trained with all four sequences of a synthetic 3D brain
cohort against the same route trained without one of them, and with the primary alone (issue 32: "with
sequences: each one's contribution measured by leaving it out").

    python -m benchmarks.sequences --out OUT [--patients 16] [--test-patients 10] [--steps 100] [--samples 4]
                                   [--seed 0] [--interim DAYS] [--arms NAME ...]

Cohorts: ``oncodiff synth --site brain --dims 3 --acquisition clinical --sequences t1c,t1,t2,flair`` (t1c the
primary, each sequence with its own contrast for the enhancing rim, the necrotic core and the oedema; the scanner
skips a non-primary sequence now and then, as clinical acquisition does), a training cohort (``--seed``) and a
test cohort of other patients (``--seed + 1``). Each arm reads them through a cohort folder of its own whose
cohort.yaml lists fewer ``sequences`` (``root:`` points at synth's folder, so no image is copied):
  all four        t1c, t1, t2, flair (what ``oncodiff train`` uses on this cohort);
  without NAME    the three others (one arm per non-primary sequence);
  t1c only        the primary alone;
  with ``--interim DAYS`` (synth's ``--interim``: a scan during treatment, so each later follow-up has priors),
  also "all four, no prior's own"  every sequence of the baseline, but the earlier scans' primary only (their
                  other ``image:NAME`` cells blanked: the denoiser before 2026-12-07), to measure what the priors'
                  own sequences (an interim FLAIR) add.
Every arm: the demo preset's automatic 3D route (tumour slices, EDM noise levels), ``--steps`` optimiser steps
(the same for all: a sequence adds two input channels and almost no compute), N4 off to save CPU (alike in all
arms), every follow-up of every test patient predicted with the outcome unknown (the class prior's mixture),
``--samples`` samples.

Scoring as benchmarks/crossfamily.py (volumetric.TestTruth): each t1c follow-up as acquired, brought onto its
baseline through the synthetic truth's rigid transform and normalised by its own percentiles; in-tumour (the
baseline tumour: the union of cohort.yaml's ``tumor`` labels) MAE and SSIM of the predicted mean and the CRPS of
the samples, with the denoised baseline (the Gaussian of SMOOTHING_MM chosen on the training cohort) for
reference. Paired per-patient differences, each arm minus "all four", with patient-bootstrap 95 % intervals:
a positive MAE or CRPS difference is what leaving that sequence out costs. Writes OUT/results.json,
OUT/per_follow_up.csv and OUT/table.md; interrupted, it picks up where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from oncodiff.cohort import load_cohort, read_image
from oncodiff.cohort.schema import CohortSpec
from oncodiff.data.denoise import smoothed
from oncodiff.evaluation.metrics import image_metrics
from oncodiff.evaluation.paired import mean_difference
from oncodiff.evaluation.proper_scores import crps_ensemble

from benchmarks.crossfamily import machine
from benchmarks.interim_denoiser import cpu_seconds
from benchmarks.volumetric import TestTruth, denoising_sigma

SEQUENCES = ("t1c", "t1", "t2", "flair")  # t1c first: the primary
COMMON = ["data.test_fraction=0", "sampling.calibrate=false", "training.max_minutes=null",
          "data.bias_correction=none"]
REFERENCE = "all four"
NO_PRIOR_SEQUENCES = "all four, no prior's own"  # --interim: the earlier scans' other sequences blanked


def arms(sequences: tuple[str, ...] = SEQUENCES) -> dict[str, tuple[str, ...]]:
    """Arm name -> the sequences its cohort lists (the primary first, always kept)."""
    primary, others = sequences[0], sequences[1:]
    return {REFERENCE: sequences, **{f"without {name}": (primary, *(o for o in others if o != name))
                                     for name in others}, f"{primary} only": (primary,)}


def make_cohort(out: Path, patients: int, seed: int, interim: tuple[int, ...] = ()) -> Path:
    """synth's cohort with every sequence (and the ``interim`` scans), written once under ``out / "synth"``."""
    from oncodiff.synth import synthesize

    written = out / "synth"
    if not (written / "scans.csv").is_file():
        synthesize("brain", patients, 3, seed, written, acquisition="clinical", sequences=SEQUENCES, workers=1,
                   interim=interim)
    return written


def arm_cohort(written: Path, folder: Path, sequences: tuple[str, ...], prior_sequences: bool = True) -> Path:
    """A cohort folder that reads ``written``'s files (``root:``) with only ``sequences`` listed: cohort.yaml's
    ``sequences`` cut down and the other ``image:NAME`` columns dropped from scans.csv. ``prior_sequences=False``
    blanks every non-primary sequence of the rows after the baseline (a missing sequence, as validate allows), so
    the earlier scans reach the denoiser by their primary alone."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = yaml.safe_load((written / "cohort.yaml").read_text(encoding="utf-8"))
    spec.update(sequences=list(sequences), primary=sequences[0], root=str(written.resolve()))
    (folder / "cohort.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    (folder / "patients.csv").write_bytes((written / "patients.csv").read_bytes())
    scans = pd.read_csv(written / "scans.csv", dtype=str, keep_default_na=False)
    dropped = [c for c in scans.columns if c.startswith("image:") and c.split(":", 1)[1] not in sequences]
    scans = scans.drop(columns=dropped)
    if not prior_sequences:
        later = scans["timepoint"] != CohortSpec.model_validate(spec).baseline
        scans.loc[later, [f"image:{name}" for name in sequences[1:]]] = ""
    scans.to_csv(folder / "scans.csv", index=False)
    return folder


def chosen_arms(names: list[str] | None, interim: bool) -> dict[str, tuple[str, ...]]:
    """The arms to run (``names``, default every one; NO_PRIOR_SEQUENCES only with an interim scan)."""
    every = arms() | ({NO_PRIOR_SEQUENCES: SEQUENCES} if interim else {})
    chosen = {name: kept for name, kept in every.items() if not names or name in names}
    if REFERENCE not in chosen:
        raise SystemExit(f"--arms must include {REFERENCE!r}: every other arm is paired against it")
    return chosen


class SequenceTruth(TestTruth):
    """TestTruth of a cohort with sequences: the primary's image, and the baseline tumour as the union of the
    ``tumor`` labels of its label map."""

    def __init__(self, cohort: Path):
        super().__init__(cohort)
        spec = load_cohort(cohort).spec
        self.scans = self.scans.rename(columns={spec.primary_column: "image"})
        self.tumor_values = spec.tumor_values()

    def tumor_mask(self, row) -> np.ndarray:
        return np.isin(read_image(self.root / row["tumor_labels"]).array, self.tumor_values)


def train_and_predict(train: Path, test: Path, folder: Path, steps: int, samples: int, cache: Path) -> dict:
    from oncodiff.config import load_config
    from oncodiff.pipeline.predict import predict
    from oncodiff.runs import RunFolder
    from oncodiff.training import train as train_model

    run, predictions, record = folder / "run", folder / "predictions", {}
    started = cpu_seconds()
    if not RunFolder(run).weights.is_file():
        if run.exists():  # an interrupted earlier attempt: start it again
            import shutil

            shutil.rmtree(run)
        print(f"training {folder.name} for {steps} steps ...", flush=True)  # train picks the 3D route itself
        train_model(train, load_config("demo", [*COMMON, f"training.max_steps={steps}"]), run, cache_dir=cache)
        record["train_cpu_s"] = round(cpu_seconds() - started, 1)
    started = cpu_seconds()
    if not (predictions / "summary.json").is_file():
        predict(run, test, predictions, samples=samples, cache_dir=cache, overwrite=predictions.exists())
        record["predict_cpu_s"] = round(cpu_seconds() - started, 1)
    record["steps"] = json.loads((run / "train_summary.json").read_text(encoding="utf-8")).get("global_step")
    return record


def score(truth: TestTruth, sigma: float, predictions: dict[str, Path]) -> pd.DataFrame:
    """One row per (test follow-up, method): in-tumour MAE and SSIM of the mean, CRPS of the samples."""
    rows = []
    for patient, timepoint in truth.follow_ups():
        baseline, mask, transform = truth.baseline(patient)
        target = truth.follow_up(patient, timepoint, baseline)["image"]
        methods = {"denoised baseline": (smoothed(baseline, sigma).array, None)}
        for name, folder in predictions.items():
            case = folder / f"{patient}_L1_{timepoint}"
            samples = [transform.apply(read_image(s).array)[mask] for s in sorted(case.glob("sample_*.nii.gz"))]
            methods[name] = (transform.apply(read_image(case / "mean.nii.gz").array),
                             np.stack(samples, axis=-1) if samples else None)
        for method, (image, samples) in methods.items():
            metrics = image_metrics(image, target, mask, bbox_margin=4)
            crps = (float(crps_ensemble(samples, target[mask]).mean()) if samples is not None
                    else float(np.abs(image - target)[mask].mean()))
            rows.append({"patient": patient, "timepoint": timepoint, "method": method,
                         "mae_tumor": metrics["mae_tumor"], "ssim_tumor": metrics["ssim_tumor"], "crps_tumor": crps})
    return pd.DataFrame(rows)


def summarise(frame: pd.DataFrame) -> dict:
    means = frame.groupby("method")[["mae_tumor", "ssim_tumor", "crps_tumor"]].mean()
    paired = {}
    for value in ("mae_tumor", "ssim_tumor", "crps_tumor"):
        wide = frame.pivot_table(index=["patient", "timepoint"], columns="method", values=value)
        patients = wide.index.get_level_values("patient").to_numpy()
        paired[value] = {method: mean_difference(wide[method], wide[REFERENCE], patients)
                         for method in wide.columns if method != REFERENCE}
    return {"follow_ups": int(frame[["patient", "timepoint"]].drop_duplicates().shape[0]),
            "patients": int(frame.patient.nunique()), "mean": means.reset_index().to_dict(orient="records"),
            f"paired (method - {REFERENCE})": paired}


def table(results: dict) -> str:
    scores = results["scores"]
    means = {row["method"]: row for row in scores["mean"]}
    paired = scores[f"paired (method - {REFERENCE})"]
    lines = ["# Each MRI sequence's contribution: the default route with all four sequences and with one left out",
             "", f"Command: `{results['command']}`  ", f"Machine: {results['machine']}  ",
             f"Train {results['patients']} patients, test {scores['patients']} other patients "
             f"({scores['follow_ups']} follow-ups), {results['samples']} samples, outcome unknown (the class prior's "
             f"mixture), {results['steps']} steps per arm"
             + (f", an interim scan on day(s) {', '.join(map(str, results['interim_days']))}"
                if results.get("interim_days") else "") + f". Denoised baseline: Gaussian {results['sigma_mm']:g} mm, "
             f"chosen on the training cohort. CPU seconds per arm (train, predict): "
             + "; ".join(f"{name} {r.get('train_cpu_s', '-')}, {r.get('predict_cpu_s', '-')}"
                         for name, r in results["runs"].items()) + ".", "",
             f"| method | sequences | in-tumour MAE | MAE - {REFERENCE}'s (95 % CI) | CRPS | CRPS - {REFERENCE}'s "
             f"(95 % CI) | SSIM | SSIM - {REFERENCE}'s (95 % CI) |", "|---|---|---|---|---|---|---|---|"]
    fmt = (lambda d: f"{d['mean']:+.4f} ({d['ci95'][0]:+.4f} .. {d['ci95'][1]:+.4f})" if d else "-")
    for method in [*results["arms"], "denoised baseline"]:
        row = means[method]
        lines.append(f"| {method} | {', '.join(results['arms'].get(method, ())) or '-'} | {row['mae_tumor']:.4f} | "
                     f"{fmt(paired['mae_tumor'].get(method))} | {row['crps_tumor']:.4f} | "
                     f"{fmt(paired['crps_tumor'].get(method))} | {row['ssim_tumor']:.3f} | "
                     f"{fmt(paired['ssim_tumor'].get(method))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--patients", type=int, default=16, help="training cohort")
    parser.add_argument("--test-patients", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100, help="optimiser steps of each arm")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interim", type=int, nargs="*", default=[], help="days of scans during treatment")
    parser.add_argument("--arms", nargs="+", help="only these arms (names as in the table; default: every one)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    interim = tuple(args.interim)
    cache, written = out / "cache", {"train": make_cohort(out / "train", args.patients, args.seed, interim),
                                     "test": make_cohort(out / "test", args.test_patients, args.seed + 1, interim)}
    chosen = chosen_arms(args.arms, bool(interim))
    path = out / "results.json"
    earlier = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    runs = earlier.get("runs", {})
    for name, kept in chosen.items():
        folder = out / "arms" / name.replace(" ", "_")
        cohorts = {split: arm_cohort(w, folder / f"{split}_cohort", kept, name != NO_PRIOR_SEQUENCES)
                   for split, w in written.items()}
        runs[name] = {**runs.get(name, {}), **train_and_predict(cohorts["train"], cohorts["test"], folder,
                                                                args.steps, args.samples, cache)}
    sigma = denoising_sigma(written["train"], SequenceTruth)
    truth = SequenceTruth(written["test"])
    frame = score(truth, sigma, {name: out / "arms" / name.replace(" ", "_") / "predictions" for name in chosen})
    frame.to_csv(out / "per_follow_up.csv", index=False)
    results = {"command": "python -m benchmarks.sequences " + shlex.join(sys.argv[1:] if argv is None else argv),
               "machine": machine(),
               "patients": args.patients, "samples": args.samples, "steps": args.steps, "sigma_mm": sigma,
               "interim_days": list(interim),
               "arms": {name: list(kept) for name, kept in chosen.items()}, "runs": runs,
               "scores": summarise(frame)}
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    (out / "table.md").write_text(table(results), encoding="utf-8")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
