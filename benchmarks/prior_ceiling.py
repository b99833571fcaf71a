"""How much of quality.py's claim 1 (in-tumour PSNR) could a better class prior buy? The ceiling of the mixture mean.

    python -m benchmarks.prior_ceiling --quality DIR --out OUT [--samples 8] [--extra 100,300]

DIR is a benchmarks/quality.py output on a synthetic cohort (DIR/run with its regression baseline,
DIR/cohort); nothing is retrained. The demo preset's mean prediction is the class mixture
sum_c w_c mean_c, where mean_c is the mean of samples drawn under response class c and w = p(class |
clinical, baseline size) is the class prior fitted on the training split. This script samples every test
follow-up under each class (--samples per class, the run's sampler and seed) and scores the mixture mean
with different class weights against the regression U-Net of the same run:

  exported prior        what `oncodiff predict` uses (refitted on the training split as a check)
  prior + N patients    the same ClassPrior code fitted on the training split plus N patients of an
                        independent cohort from the same generator (seed + 1000): the prior with more data
  generator probability the synthetic generator's own P(good response | clinical) (cohort/truth/): the
                        weights a prior fitted on unlimited data would approach
  training class rates  no information (the reference for the prior's log loss)
  true class            the oracle weight (the papers' protocol): what the class-conditional means can do

Each row gives the mean of per-case in-tumour PSNRs (claim 1), the PSNR of the mean in-tumour MSE, SSIM,
the weights' log loss on the test labels, and the paired per-case difference to the regression U-Net with
a 95 % bootstrap interval over patients (quality.py's). Writes OUT/prior_ceiling.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from oncodiff.evaluation.metrics import image_metrics
from oncodiff.evaluation.paired import paired_difference  # the patient bootstrap of `oncodiff evaluate`
from oncodiff.models import CLASS_COUNTS, CLASS_LABEL_KEYS
from oncodiff.pipeline.cases import CaseSet, load_cases
from oncodiff.outcomes.class_prior import ClassPrior
from oncodiff.pipeline.export import load_export
from oncodiff.pipeline.predict import predict_cases
from oncodiff.pipeline.prior_inputs import case_prior_features, class_probabilities
from oncodiff.runs import RunFolder
from oncodiff.synth import synthesize

EXTRA_SEED_OFFSET = 1000


def class_means(model, cases: CaseSet, n_samples: int, seed: int) -> np.ndarray:
    """(K, B, *S): each case's mean of ``n_samples`` samples drawn under class k."""
    means = []
    for k in range(CLASS_COUNTS[model.config.model.class_label]):
        batch = dict(cases.batch, class_label=torch.full_like(cases.batch["class_label"], k))
        forced = dataclasses.replace(cases, batch=batch)
        means.append(predict_cases(model, forced, n_samples, seed, "given").mean)
    return np.stack(means)


def fit_prior(model, case_sets: list[CaseSet], seed: int) -> ClassPrior | None:
    """ClassPrior.fit as `oncodiff train` calls it, on the follow-ups of ``case_sets`` (one row per case)."""
    kind = model.config.model.class_label
    features, labels, groups = [], [], []
    for i, cs in enumerate(case_sets):
        features.append(case_prior_features(model, cs))
        labels.append(cs.batch[CLASS_LABEL_KEYS[kind]].numpy())
        groups += [f"{i}:{c.patient_id}" for c in cs.cases]
    return ClassPrior.fit(np.concatenate(features), np.concatenate(labels), CLASS_COUNTS[kind], seed=seed,
                          groups=np.array(groups))


def score(name: str, weights: np.ndarray, means: np.ndarray, truth: dict, regression: dict) -> dict:
    """Metrics of the mixture mean under ``weights`` (B, K), and the paired difference to the regression."""
    mixture = np.einsum("bk,kb...->b...", weights, means)
    rows = metrics(mixture, truth)
    labels = truth["labels"]
    known = labels >= 0
    p = np.clip(weights[known, labels[known]], 1e-12, 1.0)
    out = summarise(rows) | {"name": name, "log_loss": float(-np.log(p).mean())}
    summary = {"test_cases": truth["keys"],
               "image_metrics": {"per_case": [dict(r, method="ours") for r in rows]
                                 + [dict(r, method="regression") for r in regression["rows"]]}}
    for metric in ("psnr_tumor", "ssim_tumor"):
        out[f"{metric}_vs_regression"] = paired_difference(summary, metric, "regression", main="ours")
    return out


def metrics(prediction: np.ndarray, truth: dict) -> list[dict]:
    ev = truth["evaluation"]
    rows = image_metrics(prediction, truth["post"], truth["tumor"], ev.bbox_margin, ev.data_range,
                         spatial_dims=truth["post"].ndim - 1)
    return [{"case_id": k, "psnr_tumor": r["psnr_tumor"], "ssim_tumor": r["ssim_tumor"], "mse_tumor": r["mse_tumor"]}
            for k, r in zip(truth["keys"], rows)]


def summarise(rows: list[dict]) -> dict:
    psnr = np.array([r["psnr_tumor"] for r in rows], float)
    mse = np.array([r["mse_tumor"] for r in rows], float)
    return {"psnr_tumor": float(np.nanmean(psnr)), "pooled_psnr_tumor": float(-10 * np.log10(np.nanmean(mse))),
            "ssim_tumor": float(np.nanmean([r["ssim_tumor"] for r in rows]))}


def markdown(result: dict) -> str:
    reg = result["regression"]
    lines = [f"Run {result['run']}, {result['n_cases']} test follow-ups of {result['n_patients']} patients, "
             f"{result['samples_per_class']} samples per class; regression U-Net: mean per-case PSNR "
             f"{reg['psnr_tumor']:.2f}, PSNR of the mean MSE {reg['pooled_psnr_tumor']:.2f}, SSIM "
             f"{reg['ssim_tumor']:.3f}.", "",
             "| class weights | log loss | mean per-case PSNR | vs regression (95 % CI) | PSNR of mean MSE | SSIM "
             "| vs regression (95 % CI) |", "|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        d, s = row["psnr_tumor_vs_regression"], row["ssim_tumor_vs_regression"]
        lines.append(f"| {row['name']} | {row['log_loss']:.3f} | {row['psnr_tumor']:.2f} | {d['mean']:+.2f} "
                     f"({d['ci95'][0]:+.2f} to {d['ci95'][1]:+.2f}) | {row['pooled_psnr_tumor']:.2f} | "
                     f"{row['ssim_tumor']:.3f} | {s['mean']:+.3f} ({s['ci95'][0]:+.3f} to {s['ci95'][1]:+.3f}) |")
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quality", type=Path, required=True, help="a benchmarks/quality.py output folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=8, help="samples per class and case")
    parser.add_argument("--extra", default="100,300", help="extra patients for the refitted priors (comma list)")
    parser.add_argument("--site", default="brain", help="the generator of the quality cohort")
    return parser


def class_weights(model, test: CaseSet, train: CaseSet, cohort: Path, labels: np.ndarray, args,
                  seed: int) -> list[tuple[str, np.ndarray]]:
    """(name, (N, 2) class weights) of every prior scored: exported, refitted, refitted with extra patients, the
    generator's own probability, the training class rates and the true class."""
    features = case_prior_features(model, test)
    refit = fit_prior(model, [train], seed)
    weights = [("exported prior", class_probabilities(model, test)),
               (f"refitted on the training split ({refit.describe()})", refit.probabilities(features))]
    for n in [int(x) for x in args.extra.split(",") if x.strip()]:
        extra_root = args.out / f"extra_cohort_{n}"
        if not (extra_root / "cohort.yaml").is_file():
            print(f"synthesising {n} extra patients ...", flush=True)
            synthesize(site=args.site, n_patients=n, dims=test.batch["post"].ndim - 2,
                       seed=EXTRA_SEED_OFFSET + n, out=extra_root, overwrite=True)
        extra = load_cases(model, extra_root)
        prior = fit_prior(model, [train, extra], seed)
        weights.append((f"prior + {n} patients ({prior.describe()})", prior.probabilities(features)))
    generator = pd.read_csv(cohort / "truth" / "patients.csv", dtype={"patient_id": str}).set_index("patient_id")
    p_good = generator.loc[[c.patient_id for c in test.cases], "response_probability"].to_numpy(float)
    weights.append(("generator probability", np.stack([1 - p_good, p_good], 1)))
    train_labels = train.batch[CLASS_LABEL_KEYS["response"]].numpy()
    rates = np.bincount(train_labels[train_labels >= 0], minlength=2) / (train_labels >= 0).sum()
    weights.append(("training class rates", np.tile(rates, (len(test), 1))))
    weights.append(("true class", np.eye(2)[labels.clip(0)]))
    return weights


def main(argv: list[str] | None = None) -> None:
    parse = parser()
    args = parse.parse_args(argv)
    run, cohort = args.quality / "run", args.quality / "cohort"
    if not (cohort / "truth" / "patients.csv").is_file():
        parse.error(f"{cohort}/truth/patients.csv not found: --quality must hold a synthetic cohort (quality.py)")
    args.out.mkdir(parents=True, exist_ok=True)
    model = load_export(run)
    if model.config.model.class_label != "response":
        parse.error(f"{run} has model.class_label={model.config.model.class_label}; this needs 'response'")
    seed = model.config.training.seed
    test = load_cases(model, cohort, patients=list(RunFolder(run).splits().test))
    test = test.select([i for i, c in enumerate(test.cases) if c.has_truth])
    labels = test.batch[CLASS_LABEL_KEYS["response"]].numpy()
    truth = {"post": test.batch["post"][:, 0].numpy(), "tumor": test.batch["tumor_mask"][:, 0].numpy() > 0,
             "keys": [c.key for c in test.cases], "labels": labels, "evaluation": model.config.evaluation}

    started = time.time()
    print(f"sampling {len(test)} test follow-ups under each class, {args.samples} samples each ...", flush=True)
    means = class_means(model, test, args.samples, seed)
    print(f"  {time.time() - started:.0f} s", flush=True)
    regression = load_export(RunFolder(run).baseline("regression").root)
    reg_rows = metrics(predict_cases(regression, test, 1, seed, "predicted").mean, truth)

    train = load_cases(model, cohort, patients=list(RunFolder(run).splits().train))  # was an undefined `splits`
    weights = class_weights(model, test, train, cohort, labels, args, seed)

    result = {"run": str(run), "n_cases": len(test), "n_patients": len({c.patient_id for c in test.cases}),
              "samples_per_class": args.samples, "regression": summarise(reg_rows),
              "rows": [score(name, w, means, truth, {"rows": reg_rows}) for name, w in weights]}
    (args.out / "prior_ceiling.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (args.out / "prior_ceiling.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))


if __name__ == "__main__":
    main()
