"""Does an interim scan during treatment reveal the outcome? The class prior and the volume-change forecast with
an interim scan at 4 weeks against the same cohort with the baseline alone.

    python -m benchmarks.interim --out OUT [--patients 40] [--interim 28] [--folds 5] [--seed 0]

Cohort: ``oncodiff synth --site brain --dims 3 --acquisition clinical --interim 28`` (docs/synthetic-cohorts.md:
the interim's early change carries the response only partly: slow clearance of killed cells, edge noise and
pseudo-progression). The month-2 rows are dropped, so each patient has a baseline, the interim scan (day 28) and
the outcome scan (month 4, where the response rule looks). Preprocessing is the pipeline's (3D crops of 32x32x24,
registration of each scan to the baseline unless --registration none; N4 off to save CPU: volumes come from the
masks), ``data.inputs=prior``, ``data.max_priors=1``.

Two arms on the same patients, the same folds and the same code (oncodiff.outcomes.class_prior):
  interim        ClassPrior.select on the training folds' target rows (day 28 and month 4) with the clinical
                 features and class_prior.interim_features (early volume change on the interim, its rate, the
                 in-tumour drift so far), as `oncodiff train` fits it for a cohort with prior scans;
  baseline only  the same on the month-4 rows without the interim features: exactly the rows and features
                 of the cohort without its interim rows (data.inputs=baseline gives the same crops and masks).
Scored on each held-out patient's month-4 row (patient-grouped k-fold, every patient tested once):
  - the class prior's log loss, against the training class rates (the base rate) of the same fold;
  - the CRPS of the volume change (log of month-4 over baseline tumour voxels in the crop) of the class-prior
    mixture: the training folds' month-4 changes of each class, mixed by p(class | inputs), the way the pipeline
    allocates samples to classes; against the same forecast with the base rate's weights.
Paired per-patient differences with 95 % bootstrap intervals over patients. Writes OUT/interim.json and
OUT/table.md. Not measured here: the in-tumour MAE of the denoiser conditioned on the interim (that is
benchmarks/interim_denoiser.py, which trains the two denoisers), and each sequence's contribution.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from oncodiff.cohort import load_cohort
from oncodiff.config import DataConfig
from oncodiff.data import preprocess_cohort
from oncodiff.data.clinical import ClinicalEncoder
from oncodiff.evaluation.paired import patient_bootstrap
from oncodiff.outcomes.class_prior import BASE_RATE, CLINICAL, ClassPrior, interim_features, prior_features
from oncodiff.synth import synthesize

FINAL = "month4"
DROPPED = "month2"
BOOTSTRAP = 2000


def make_cohort(out: Path, patients: int, interim: int, seed: int) -> Path:
    """The synthetic cohort, then its scans.csv without the month-2 rows (a copy: synth's folder stays as written)."""
    written = out / "synth"
    if not (written / "scans.csv").is_file():
        synthesize("brain", patients, 3, seed, written, acquisition="clinical", interim=(interim,), workers=1)
    cohort = out / "cohort"
    cohort.mkdir(exist_ok=True)
    spec = (written / "cohort.yaml").read_text(encoding="utf-8").replace("format: 1", "format: 2")
    (cohort / "cohort.yaml").write_text(spec + "root: ../synth\n", encoding="utf-8")
    (cohort / "patients.csv").write_bytes((written / "patients.csv").read_bytes())
    scans = pd.read_csv(written / "scans.csv", dtype=str, keep_default_na=False)
    scans[scans.timepoint != DROPPED].to_csv(cohort / "scans.csv", index=False)
    return cohort


def crps_empirical(values: np.ndarray, weights: np.ndarray, y: float) -> float:
    """CRPS of the weighted empirical distribution (values, weights summing to 1) at ``y``: E|X - y| - E|X - X'| / 2."""
    first = float(np.sum(weights * np.abs(values - y)))
    second = float(np.sum(weights[:, None] * weights[None, :] * np.abs(values[:, None] - values[None, :])))
    return first - 0.5 * second


def log_loss(probability: np.ndarray, label: int) -> float:
    return float(-np.log(np.clip(probability[label], 1e-12, 1.0)))


def bootstrap(differences: np.ndarray, patients: np.ndarray, seed: int) -> tuple[float, float, float]:
    """Mean of one difference per patient and its patient-bootstrap 95 % interval (evaluation.paired)."""
    boot = patient_bootstrap(lambda rows: differences[rows].mean(), patients, BOOTSTRAP, seed)
    return boot["value"], *boot["ci95"]


def _prepared(out: Path, cohort_root: Path, registration: str):
    """The cohort preprocessed with one prior: its records' patients, time points, response labels, log volume
    changes, interim features and arrays, and the preprocessing's CPU seconds."""
    config = DataConfig(dims=3, crop_size=(32, 32, 24), bias_correction="none", registration=registration,
                        inputs="prior", max_priors=1)
    started = time.process_time()
    pre = preprocess_cohort(cohort_root, config, cache_dir=out / "cache")
    preprocess_cpu = time.process_time() - started
    cohort = load_cohort(cohort_root, validate=False)
    patients = np.array([r.patient_id for r in pre.records])
    timepoints = np.array([r.timepoint for r in pre.records])
    response = cohort.spec.outcomes.response
    label_of = {pid: int(str(v) == response.positive) for pid, v in cohort.patients[response.column].items()}
    labels = np.array([label_of[p] for p in patients])
    arrays = pre.arrays
    volume = lambda mask: np.log1p(mask.reshape(len(mask), -1).sum(1, dtype=np.float64))  # noqa: E731
    change = volume(arrays["post_mask"]) - volume(arrays["tumor_mask"])
    early = interim_features(arrays["pre"], arrays["tumor_mask"], arrays["priors"], arrays["prior_masks"],
                             arrays["prior_days"])
    return cohort, patients, timepoints, labels, change, early, arrays, preprocess_cpu


def evaluate(out: Path, cohort_root: Path, folds: int, seed: int, registration: str = "auto") -> dict:
    cohort, patients, timepoints, labels, change, early, arrays, preprocess_cpu = _prepared(out, cohort_root,
                                                                                             registration)
    unique = np.array(sorted(set(patients)))
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {pid: k % folds for k, pid in zip(range(len(unique)), unique[order])}
    rows = []
    for fold in range(folds):
        train_ids = [p for p in unique if fold_of[p] != fold]
        encoder = ClinicalEncoder.fit(cohort.spec.clinical, cohort.patients, train_ids)
        clinical, missing = encoder.encode_patients(cohort.patients, list(patients))
        base = prior_features(clinical, missing, arrays["tumor_mask"], cohort.spec.clinical)
        train = np.isin(patients, train_ids)
        test = ~train & (timepoints == FINAL)
        final_train = train & (timepoints == FINAL)
        arms = {"interim": (train, np.concatenate([base, early], axis=1)),
                "baseline only": (final_train, base)}
        priors = {name: ClassPrior.select({CLINICAL: x[rows_]}, labels[rows_], 2, seed, patients[rows_])
                  for name, (rows_, x) in arms.items()}
        values = change[final_train]
        by_class = [labels[final_train] == c for c in (0, 1)]
        for i in np.flatnonzero(test):
            row = {"patient_id": patients[i], "fold": fold, "label": int(labels[i]), "change": float(change[i]),
                   "early_change": float(early[i, 1])}
            for name, (_, x) in arms.items():
                p = priors[name].probabilities(x[i:i + 1])[0]
                rates = np.asarray(priors[name].frequencies)
                weights = sum(p[c] * by_class[c] / by_class[c].sum() for c in (0, 1))
                rate_weights = sum(rates[c] * by_class[c] / by_class[c].sum() for c in (0, 1))
                row[f"{name}: p(good)"] = float(p[1])
                row[f"{name}: log loss"] = log_loss(p, labels[i])
                row[f"{name}: base-rate log loss"] = log_loss(rates, labels[i])
                row[f"{name}: crps"] = crps_empirical(values, weights, change[i])
                row[f"{name}: base-rate crps"] = crps_empirical(values, rate_weights, change[i])
                row[f"{name}: chosen"] = priors[name].describe()
            rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(out / "per_patient.csv", index=False)
    return summarise(table, folds, preprocess_cpu, seed)


def summarise(table: pd.DataFrame, folds: int, preprocess_cpu: float, seed: int) -> dict:
    """Means, ratios to the base rate and paired patient-bootstrap differences of the per-patient scores."""
    summary = {"patients": int(len(table)), "folds": folds, "preprocess_cpu_s": round(preprocess_cpu, 1),
               "responders": int(table.label.sum()), "measures": {}}
    for name in ("interim", "baseline only"):
        for measure in ("log loss", "crps"):
            values_ = table[f"{name}: {measure}"].to_numpy()
            summary["measures"][f"{name}: {measure}"] = float(values_.mean())
        base_ll = table[f"{name}: base-rate log loss"].to_numpy()
        summary["measures"][f"{name}: base-rate log loss"] = float(base_ll.mean())
        summary["measures"][f"{name}: log loss / base rate"] = float(table[f"{name}: log loss"].mean() / base_ll.mean())
    ids = table.patient_id.to_numpy()
    summary["paired"] = {
        "log loss, interim - baseline only": bootstrap((table["interim: log loss"] - table["baseline only: log loss"])
                                                       .to_numpy(), ids, seed),
        "log loss, interim - base rate": bootstrap((table["interim: log loss"] - table["interim: base-rate log loss"])
                                                   .to_numpy(), ids, seed),
        "crps, interim - baseline only": bootstrap((table["interim: crps"] - table["baseline only: crps"]).to_numpy(),
                                                   ids, seed),
    }
    summary["crps ratio interim / baseline only"] = float(table["interim: crps"].mean()
                                                          / table["baseline only: crps"].mean())
    summary["chosen"] = {name: sorted(set(table[f"{name}: chosen"])) for name in ("interim", "baseline only")}
    summary["auc of the early change"] = _auc(-table.early_change.to_numpy(), table.label.to_numpy())
    return summary


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    positive, negative = score[label == 1], score[label == 0]
    return float(np.mean([(a > b) + 0.5 * (a == b) for a in positive for b in negative]))


def write_table(out: Path, summary: dict, command: str) -> None:
    m, p = summary["measures"], summary["paired"]
    lines = [
        "# Interim scan (day 28) against the baseline alone: class prior and volume-change forecast", "",
        f"Command: `{command}`  ", f"Machine: {summary['machine']}; CPU time {summary['cpu_s']:.0f} s "
        f"(preprocessing {summary['preprocess_cpu_s']:.0f} s)  ",
        f"{summary['patients']} patients ({summary['responders']} good responders), {summary['folds']}-fold "
        "patient-grouped; every patient's month-4 row scored once.", "",
        "| arm | class prior log loss | base rate log loss | ratio | volume-change CRPS (log ratio) |",
        "|---|---|---|---|---|",
    ]
    for name in ("interim", "baseline only"):
        lines.append(f"| {name} | {m[f'{name}: log loss']:.3f} | {m[f'{name}: base-rate log loss']:.3f} | "
                     f"{m[f'{name}: log loss / base rate']:.2f} | {m[f'{name}: crps']:.3f} |")
    lines += ["", "Paired per-patient differences, mean [95 % bootstrap interval over patients]:", ""]
    for key, (mean, low, high) in p.items():
        lines.append(f"- {key}: {mean:+.3f} [{low:+.3f}, {high:+.3f}]")
    lines += ["", f"- CRPS ratio interim / baseline only: {summary['crps ratio interim / baseline only']:.2f}",
              f"- AUC of the interim's early volume change alone for the good response: "
              f"{summary['auc of the early change']:.2f}",
              f"- chosen class priors: interim {summary['chosen']['interim']}; baseline only "
              f"{summary['chosen']['baseline only']}", "",
              "Not measured here: the in-tumour MAE of a denoiser conditioned on the interim (benchmarks/"
              "interim_denoiser.py), each sequence's contribution."]
    (out / "table.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--interim", type=int, default=28)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--registration", default="auto", choices=("auto", "none"),
                        help="none: skip registering the scans to the baseline (CPU; volumes come from the masks "
                             "and do not need it; the drift feature then carries the acquisition's motion)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.process_time()
    cohort = make_cohort(args.out, args.patients, args.interim, args.seed)
    summary = evaluate(args.out, cohort, args.folds, args.seed, args.registration)
    summary["registration"] = args.registration
    summary["cpu_s"] = time.process_time() - started
    summary["machine"] = f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores"
    command = (f"python -m benchmarks.interim --out {args.out} --patients {args.patients} --interim {args.interim} "
               f"--folds {args.folds} --seed {args.seed} --registration {args.registration}")
    (args.out / "interim.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    write_table(args.out, summary, command)
    print((args.out / "table.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
