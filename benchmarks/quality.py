"""Does the demo-scale model learn something real? Four claims against the baselines, measured on a held-out split.

    python -m benchmarks.quality --out benchmarks/results/quality            # brain, 104 patients, demo preset
    python -m benchmarks.quality --out DIR --run DIR/run --cohort DIR/cohort  # re-evaluate an existing run

Synthesises a cohort (unless --cohort is given), trains the demo preset (unless --run is given) on
the demo's scale of data: by default 104 patients split 44 train / 10 validation / 50 test, so the
training set is the demo's (64 patients at 70/15/15) while the test set is five times larger (the
demo's 10 test patients gave the PSNR difference to the regression U-Net a 95 % interval of -1.6 to
+1.2 dB). Then it evaluates the test split against every baseline (identity, regression U-Net on
post, regression U-Net on drift, diffusion without clinical conditioning; each trained with the same
budget on the same split) and prints, with the numbers behind each verdict:
  1. in-tumour SSIM and PSNR of the mean prediction vs both baselines (identity, regression U-Net), for
     the run's sampling.unknown_class and, as extra rows, for the other way of sampling an unknown
     outcome (mixture / most probable class), with the PSNR of the mean MSE over cases beside them;
  2. volume change: Pearson r with the true change, and MAE vs the identity baseline;
  3. counterfactuals: the fraction of cases whose predicted change moves the right way;
  4. uncertainty: coverage of the true volume change by the 50 % and 90 % sample intervals, raw and
     conformally calibrated on the validation split;
and benchmarks/scores.py's goals (proper scores, the class prior against the base rate, survival c-index).
Claim 1 also gets the paired per-case difference to the regression U-Net with a 95 % bootstrap interval
over patients: when that interval includes 0 the two are not told apart by this test set.
Writes OUT/quality.json and OUT/quality.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from oncodiff.config import load_config
from oncodiff.evaluation import evaluate
from oncodiff.evaluation.paired import paired_difference  # the patient bootstrap of `oncodiff evaluate`
from oncodiff.evaluation.report.tables import markdown
from oncodiff.runs import RunFolder
from oncodiff.synth import synthesize
from oncodiff.training import train

from benchmarks.scores import goals  # proper scores and the class prior: the same verdicts as scores.py


MAIN = "diffusion"  # what predict gives: the outcome unknown, sampled as the run's sampling.unknown_class says
ALTERNATIVES = ("diffusion_mixture", "diffusion_most_probable")  # the other way of sampling an unknown outcome
BASELINES = ("identity", "regression")


def pooled_psnr(summary: dict, method: str) -> float | None:
    """PSNR of the in-tumour MSE averaged over cases (data range 1 as in the evaluation): the metric an
    expected-value prediction optimises, where the mean of per-case PSNRs (claim 1) averages log errors and
    rewards committing to one outcome."""
    psnr = [r["psnr_tumor"] for r in summary["image_metrics"]["per_case"]
            if r["method"] == method and r.get("psnr_tumor") is not None and np.isfinite(r["psnr_tumor"])]
    return float(-10 * np.log10(np.mean(10 ** (-np.asarray(psnr) / 10)))) if psnr else None


def claims(summary: dict) -> list[tuple[str, str, bool | None]]:
    """(claim, numbers, verdict) for the four claims; verdict None = reported, not a pass/fail claim.
    Claim 1 is judged for the run's own way of sampling an unknown outcome (MAIN) and repeated, as its own
    row, for the other way when the evaluation has it."""
    image = summary["image_metrics"]["aggregate"]
    labels = {k: v.get("label", k) for k, v in summary.get("methods", {}).items()}
    rows = []
    for method in (MAIN, *(a for a in ALTERNATIVES if a in image)):
        prefix = "1." if method == MAIN else f"1. ({labels.get(method, method)})"
        for metric in ("ssim_tumor", "psnr_tumor"):
            ours = image[method][metric]["mean"]
            others = {b: image[b][metric]["mean"] for b in BASELINES if b in image}
            text = f"{ours:.3f} vs " + ", ".join(f"{b} {v:.3f}" for b, v in others.items())
            for b in others:
                if b != "identity":
                    d = paired_difference(summary, metric, b, main=method)
                    text += (f"; paired difference vs {b} {d['mean']:+.3f} (95 % CI {d['ci95'][0]:+.3f} to "
                             f"{d['ci95'][1]:+.3f}, bootstrap over {d['n_patients']} patients)")
            rows.append((f"{prefix} in-tumour {metric.split('_')[0].upper()} beats both baselines", text,
                         all(ours > v for v in others.values())))
    pooled = {m: pooled_psnr(summary, m) for m in (MAIN, *ALTERNATIVES, *BASELINES) if m in image}
    rows.append(("1. PSNR of the mean in-tumour MSE over cases (what an expected-value prediction optimises)",
                 ", ".join(f"{labels.get(m, m)} {v:.2f}" for m, v in pooled.items() if v is not None), None))
    size = summary["size"]
    r, mae = size[MAIN].get("pearson_r"), size[MAIN].get("change_mae_pp")
    identity_mae = size["identity"].get("change_mae_pp")
    rows.append(("2. volume change correlates with the truth (Pearson r > 0)",
                 "-" if r is None else f"r = {r:.2f}", r is not None and r > 0))
    rows.append(("2. volume-change MAE beats identity", f"{mae:.1f} pp vs {identity_mae:.1f} pp", mae < identity_mae))
    cf = summary.get("counterfactual", {})
    fraction = cf.get("fraction_right_direction")
    rows.append(("3. counterfactuals move the right way (> 50 % of cases)",
                 f"{round(fraction * cf['n_scored'])} of {cf['n_scored']} cases" if fraction is not None
                 else cf.get("status", "-"),
                 None if fraction is None else fraction > 0.5))
    for key, claim in (
        ("coverage", "4. coverage of the true volume change by the sample interval (nominal: empirical)"),
        ("calibrated", "4. the same, conformally calibrated intervals (margins from the validation split)"),
    ):
        coverage = summary["uncertainty"][MAIN].get(key, {})
        text = ", ".join(f"{round(100 * n)} %: " + ("-" if e is None else f"{e:.2f}")
                         for n, e in zip(coverage.get("nominal", []), coverage.get("empirical", [])))
        if coverage.get("mean_width_pp"):
            text += "; mean width " + ", ".join("-" if w is None else f"{w:.0f} pp" for w in coverage["mean_width_pp"])
        rows.append((claim, text or "-", None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cohort", type=Path, help="an existing cohort (default: synthesise one under OUT)")
    parser.add_argument("--run", type=Path, help="an existing run folder (default: train the preset under OUT)")
    parser.add_argument("--site", default="brain")
    parser.add_argument("--patients", type=int, default=104)
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic cohort")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.48)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override for training")
    parser.add_argument("--baselines", default="regression,regression_drift,no_clinical",
                        help="trained baselines to evaluate against (identity is always there)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cohort = args.cohort or args.out / "cohort"
    if args.cohort is None and not (cohort / "cohort.yaml").is_file():
        synthesize(site=args.site, n_patients=args.patients, dims=2, seed=args.seed, out=cohort)
    run = args.run or args.out / "run"
    if args.run is None and not RunFolder(run).weights.is_file():
        split = [f"data.val_fraction={args.val_fraction}", f"data.test_fraction={args.test_fraction}"]
        train(cohort, load_config(args.preset, [*split, *args.overrides]), run)
    baselines = f"evaluation.baselines=[{args.baselines}]"
    summary = json.loads(evaluate(run, cohort, args.out / "evaluation", [baselines]).read_text(encoding="utf-8"))
    rows = claims(summary) + [(f"score goal: {g}", n, v) for g, n, v in goals(summary)]
    table = markdown(["claim", "measured", "verdict"],
                     [(c, n, {True: "yes", False: "NO", None: "reported"}[v]) for c, n, v in rows])
    print(table)
    (args.out / "quality.md").write_text(table + "\n", encoding="utf-8")
    (args.out / "quality.json").write_text(json.dumps([{"claim": c, "measured": n, "verdict": v} for c, n, v in rows],
                                                      indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
