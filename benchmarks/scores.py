"""Proper scores of the predicted distributions and the chosen class prior, on a trained run.

    python -m benchmarks.scores --run RUN --cohort COHORT --out OUT [--refit]

Evaluates the run's test split with ``oncodiff evaluate`` (into OUT/evaluation) and judges the goals:
  1. the mixture (what predict gives with the outcome unknown) beats the regression U-Net and post = pre
     on the CRPS of the volume change;
  2. ... and on the mean per-voxel CRPS inside the tumour box;
  3. its volume-change Pearson r is positive and at least the regression U-Net's;
  4. the class prior's test log loss is at most the training class rates';
and reports the survival heads' pooled out-of-fold c-index with its patient-bootstrap 95 % interval.
``--refit`` first re-chooses the class prior on the training split and refits the conformal margins with
this code, as ``oncodiff train`` does at its end (for a run trained by an older version: the denoiser's
training does not depend on either). Writes OUT/scores.json and OUT/scores.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from oncodiff.evaluation import evaluate
from oncodiff.evaluation.report.tables import markdown
from oncodiff.pipeline.export import load_export
from oncodiff.pipeline.predict import calibrate_run
from oncodiff.pipeline.prior_inputs import fit_export_class_prior
from oncodiff.runs import RunFolder

MAIN, BASELINES = "diffusion", ("regression", "identity")
SURVIVAL_ROWS = ("denoiser features + Cox head", "clinical (Cox PH)")


def goals(summary: dict) -> list[tuple[str, str, bool | None]]:
    """(goal, numbers, verdict); verdict None: reported, not judged."""
    scores, size = summary["proper_scores"], summary["size"]
    rows = []
    for key, unit, what in (("volume_change", "crps_pp", "CRPS of the volume change (pp)"),
                            ("in_tumour", "crps", "mean per-voxel CRPS in the tumour box")):
        values = {m: scores[m][key].get(unit) for m in (MAIN, *BASELINES) if m in scores}
        others = [v for m, v in values.items() if m != MAIN]
        ok = None not in values.values() and all(values[MAIN] < v for v in others)
        rows.append((f"mixture beats regression and identity on {what}",
                     ", ".join(f"{m} {_fmt(v, 4 if key == 'in_tumour' else 1)}" for m, v in values.items()), ok))
    r = {m: size[m].get("pearson_r") for m in (MAIN, "regression") if m in size}
    ok = r.get(MAIN) is not None and r[MAIN] > 0 and (r.get("regression") is None or r[MAIN] >= r["regression"])
    rows.append(("volume-change Pearson r > 0 and >= regression's", ", ".join(f"{m} {_fmt(v, 2)}" for m, v in r.items()),
                 ok))
    prior = summary.get("class_prior", {})
    loss, base = prior.get("log_loss"), prior.get("base_rate_log_loss")
    rows.append(("class prior test log loss <= the training class rates'", f"{_fmt(loss, 3)} vs {_fmt(base, 3)} "
                 f"({prior.get('fitted', prior.get('status', '-'))})", None if None in (loss, base) else loss <= base))
    rows += _survival_rows(summary)
    return rows


def _survival_rows(summary: dict) -> list[tuple[str, str, bool | None]]:
    survival = summary.get("outcomes", {}).get("survival", {})
    rows = []
    for name in SURVIVAL_ROWS:
        pooled = (survival.get(name) or {}).get("pooled_c_index") or {}
        ci = pooled.get("ci95") or (None, None)
        rows.append((f"survival c-index, {name} (pooled out-of-fold, 95 % patient-bootstrap CI)",
                     f"{_fmt(pooled.get('c_index'), 2)} ({_fmt(ci[0], 2)}..{_fmt(ci[1], 2)}), "
                     f"{pooled.get('n_patients', '-')} patients", None))
    return rows


def _fmt(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def method_rows(summary: dict) -> list[tuple[str, ...]]:
    """Per method: in-tumour PSNR, volume-change r, CRPS of the volume change, response log score,
    in-tumour CRPS and energy score."""
    image, size = summary["image_metrics"]["aggregate"], summary["size"]
    rows = []
    for m, scores in summary["proper_scores"].items():
        volume, tumour = scores["volume_change"], scores["in_tumour"]
        rows.append((summary["methods"][m]["label"], _fmt(image[m]["psnr_tumor"]["mean"], 2),
                     _fmt(size[m].get("pearson_r"), 2), _fmt(volume.get("crps_pp"), 1),
                     _fmt(volume.get("response_log_score"), 3), _fmt(tumour.get("crps"), 4),
                     _fmt(tumour.get("energy_score"), 3)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--cohort", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--refit", action="store_true", help="re-choose the class prior and refit the margins first")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.refit:
        config = load_export(args.run).config
        train_patients = list(RunFolder(args.run).splits().train)
        fit_export_class_prior(args.run, args.cohort, train_patients, config.training.seed)
        if config.sampling.calibrate:
            calibrate_run(args.run, args.cohort, seed=config.training.seed)
    summary = json.loads(evaluate(args.run, args.cohort, args.out / "evaluation").read_text(encoding="utf-8"))
    verdicts = goals(summary)
    result = {"run": str(args.run.resolve()), "cohort": str(args.cohort.resolve()),
              "n_test_cases": len(summary["test_cases"]), "class_prior": summary.get("class_prior"),
              "goals": [{"goal": g, "numbers": n, "met": v} for g, n, v in verdicts],
              "proper_scores": summary["proper_scores"]}
    (args.out / "scores.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = (f"{len(summary['test_cases'])} test follow-ups; run {args.run}\n\n"
            + markdown(("method", "in-tumour PSNR (dB)", "Δvol Pearson r", "CRPS Δvol (pp)", "log score, response",
                        "CRPS tumour box", "energy score box"), method_rows(summary)) + "\n\n"
            + markdown(("goal", "numbers", "met"), [(g, n, "-" if v is None else ("yes" if v else "no"))
                                                    for g, n, v in verdicts]) + "\n")
    (args.out / "scores.md").write_text(text, encoding="utf-8")
    print(text, flush=True)


if __name__ == "__main__":
    main()
