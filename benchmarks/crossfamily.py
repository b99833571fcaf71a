"""Cross-family transfer: train on one synthetic family, test on the other (and on both), in 3D with clinical acquisition.

One command:

    python -m benchmarks.crossfamily --out OUT [--budgets 5 [20 60]] [--patients 48 --test-patients 16]
                                     [--routes default mechanistic whitestripe tissue edm uniform smoothdays
                                               regression 3d] [--samples 4]
                                     [--truth-scale own|tissue|clean] [--rescore]

1. Cohorts, 3D, ``--acquisition clinical``: for each family (``brain``: brain.py's model; ``glioma``: glioma.py's
   anisotropic reaction-diffusion family, written independently) a training cohort and a test cohort of other
   patients (another seed); ``both``: the two training cohorts merged (hard links, patient ids prefixed).
2. Speed: CPU-seconds per optimiser step of each route, by training's own step probe (oncodiff/training/step_cost.py),
   on a few patients of the brain training cohort; a budget of B CPU-minutes buys ``B * 60 / cpu_s_per_step``
   steps (a budget in CPU time, so other load on this shared machine does not change the result).
3. For each budget and training set (brain, glioma, both): the default route (the demo preset, nothing else:
   the 2.5D tumour-slice route is chosen automatically; since 2026-12-07 it trains at EDM's log-normal noise
   levels, so the committed rows named ``default`` are ``--routes uniform`` today and ``edm`` is the default),
   the regression U-Net (the same steps, its own
   network, run's splits), optionally the default route conditioned on the mechanistic forecast (``--routes
   mechanistic``: ``diffusion.residual=mechanistic``, the same steps; its fit's CPU time is reported beside them),
   the default route on whitestripe-normalised crops (``--routes whitestripe``: ``data.normalization=whitestripe``,
   tissue-referenced where percentiles move with the tumour, but unbounded), the same on tissue-normalised crops
   (``--routes tissue``: ``data.normalization=tissue``, air and the body's median as anchors, in [0, 1]) and the
   light 3D patch route (``--routes 3d``); each predicts both test
   cohorts whole, with the outcome unknown (the class prior) and given each patient's true response class
   (``--set response=CLASS`` per class group). Before it predicts, a run without a spread factor gets one
   (``oncodiff calibrate`` on its validation split: what ``sampling.calibrate``, which COMMON turns off with its
   calibration folds, does at the end of training; oncodiff/pipeline/spread.py); each condition is then scored
   with the factor and, from the same draws, as drawn (``oncodiff raw spread``), with the paired CRPS difference.
4. Scoring, as benchmarks/volumetric.py (its TestTruth): each follow-up as acquired, brought onto its baseline
   through the synthetic truth's rigid transform, normalised by its own percentiles (``--truth-scale own``; or
   ``tissue``, or ``clean``: the truth behind it at the baseline's gain, which no normalisation choice favours).
   In-tumour (baseline GTV)
   MAE and SSIM; references: identity (post = pre) and the denoised identity (the baseline smoothed by the
   Gaussian chosen by in-tumour MAE on the *test family's own training cohort*: the strongest blur that family
   allows, the same for every training set). Paired per-patient differences with a patient bootstrap 95 %
   interval against both references, for MAE and SSIM. CRPS per in-tumour voxel of the samples (a point
   method's CRPS is its MAE), against the denoised identity's MAE with the same interval: the issue's goal is
   a distribution whose CRPS is at most 0.9x that MAE. The spread-skill ratio of the samples in the baseline
   tumour's box (evaluation/distribution_scores.py; 1 = as spread as the sample mean's error).

Writes OUT/results.json after every trained model and OUT/table.md at the end (and prints it). Interrupted,
it picks up where it stopped (trained runs and predictions are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from oncodiff.arrays import bbox_mask
from oncodiff.cohort import load_cohort, read_image
from oncodiff.config import Config, load_config
from oncodiff.data.denoise import smoothed
from oncodiff.evaluation.distribution_scores import rank_histogram, spread_skill
from oncodiff.evaluation.metrics import image_metrics
from oncodiff.evaluation.proper_scores import crps_ensemble
from oncodiff.pipeline.export import read_export_meta
from oncodiff.pipeline.spread import scale_spread
from oncodiff.runs import RunFolder
from oncodiff.training.step_cost import cpu_seconds_per_step

from benchmarks.volumetric import (
    CANDIDATE_ROUTES, COMMON, TRUTH_SCALES, TestTruth, cohort_subset, denoising_sigma, paired_patient_differences,
)

FAMILIES = ("brain", "glioma")
TRAIN_SETS = ("brain", "glioma", "both")
ROUTES = {"default": [], "mechanistic": ["diffusion.residual=mechanistic"],
          "whitestripe": ["data.normalization=whitestripe"], "tissue": ["data.normalization=tissue"],
          "edm": ["diffusion.noise_sampling=lognormal"], "uniform": ["diffusion.noise_sampling=uniform"],
          "smoothdays": ["model.day_min_period=365"], "intensity": ["data.intensity_augmentation=true"],
          "3d": CANDIDATE_ROUTES["3D patches 32^3, light network"],
          **{name: ["data.slices=tumor", f"data.slice_margin={margin}", "data.smoothing=auto",
                    "diffusion.noise_sampling=lognormal", *trained]
             for name, margin, trained in (("slices2", 2, []), ("boxslices", 4, []),
                                           ("boxpredict", 4, ["data.train_slice_margin=2"]))}}
STEP_NOTES = {"mechanistic": "the same network with one more input channel, so the same steps; the forecast's fit is "
                             "timed on its own",
              **dict.fromkeys(("whitestripe", "tissue"),
                              "the same network on differently normalised crops, so the same steps"),
              **dict.fromkeys(("edm", "uniform"), "the same network trained at other noise levels, so the same steps"),
              "smoothdays": "the same network with fewer day features, so the same steps",
              **dict.fromkeys(("slices2", "boxslices", "boxpredict"),
                              "the same network on more or fewer slices per follow-up, so the same steps"),
              "intensity": "the same network on crops with a random contrast and bias field, so the same steps"}  # routes whose step costs their base's: its probe
SAME_STEPS_AS = dict.fromkeys(STEP_NOTES, "default")
TRUTH_SCALE_WORDS = {
    "own": "own (each follow-up as acquired, normalised by its own 0.5th and 99.5th percentiles; the baseline and "
           "every prediction by the baseline's).",
    "tissue": "tissue (each follow-up as acquired, mapped onto its baseline's raw scale by background and "
              "normal-tissue mode, then normalised as the baseline is).",
    "clean": "clean (not the acquired follow-up: the synthetic truth behind it, without noise, bias field or "
             "misalignment, at the baseline's recorded gain and offset, normalised as the baseline is).",
}
SPREAD_MARGIN = 4  # voxels around the baseline tumour: the box the spread-skill ratio is pooled over (image_metrics')
REFERENCES = ("identity", "denoised identity")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        return _merge(args.merge, out, args.note)
    results = _results(out, args.reuse)
    cohorts = _cohorts(args, out)
    results["cohorts"] = {k: str(v) for k, v in cohorts.items()}
    _truth_scale(results, args, out)
    truths = {family: TestTruth(cohorts[f"{family}_test"], args.truth_scale) for family in FAMILIES}
    if "denoised_sigma_mm" not in results:
        results["denoised_sigma_mm"] = {family: denoising_sigma(cohorts[f"{family}_train"]) for family in FAMILIES}
    sigmas = results["denoised_sigma_mm"]
    _speeds(results, args, cohorts, out)
    if args.rescore:
        _mark_rescore(results, args)
    results.setdefault("runs", {})
    if args.score_finished:
        _score_finished(results, args, out, cohorts, truths, sigmas)
        _save(out, results)
        table = _table(results)
        (out / "table.md").write_text(table, encoding="utf-8")
        print(table)
        return 0
    for minutes in args.budgets:
        for train_set in args.train_sets:
            for route in [r for r in args.routes if r in ROUTES]:
                name = run_name(route, args.training_seed)
                key = f"{minutes:g}min/{train_set}/{name}"
                if key in results["runs"] and "scores" in results["runs"][key]:
                    continue
                steps = max(1, int(minutes * 60 / results["speed"][route]["cpu_seconds_per_step"]))
                before = results["runs"].get(key, {})
                results["runs"][key] = _train_and_score(
                    cohorts, truths, sigmas, train_set, route, steps, out / f"{minutes:g}min" / train_set / name,
                    args.samples, regression=route == "default" and "regression" in args.routes,
                    seed=args.training_seed)
                results["runs"][key]["minutes"] = minutes
                if before.get("rescored"):  # its training's CPU time is the first scoring's
                    results["runs"][key]["train_cpu_seconds_this_process"] = before.get("train_cpu_seconds_this_process")
                    results["runs"][key]["rescored"] = True
                _save(out, results)
                print(_table(results), flush=True)
    table = _table(results)
    (out / "table.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


def _speeds(results: dict, args, cohorts: dict[str, Path], out: Path) -> None:
    """Each route's step probe (once per OUT); a route of SAME_STEPS_AS takes its base's."""
    results.setdefault("speed", {})
    for route in sorted({SAME_STEPS_AS.get(r, r) for r in args.routes if r in ROUTES}):
        if route not in results["speed"]:
            probe = cohort_subset(cohorts["brain_train"], out / "speed_cohort", args.speed_patients)
            results["speed"][route] = _probe(probe, ROUTES[route], out / "cache")
            _save(out, results)
    for route, base in SAME_STEPS_AS.items():
        if route in args.routes and route not in results["speed"]:
            results["speed"][route] = {**results["speed"][base], "overrides": ROUTES[route],
                                       "note": f"{base}'s probe: " + STEP_NOTES[route]}
            _save(out, results)


def _truth_scale(results: dict, args, out: Path) -> None:
    """Record --truth-scale; a changed scale needs --rescore, and then no run keeps a score on the other scale."""
    before = results.get("truth_scale", "own")
    if before != args.truth_scale and results.get("runs") and not args.rescore:
        raise SystemExit(f"{out / 'results.json'} was scored with --truth-scale {before}: add --rescore to score "
                         f"its kept predictions with {args.truth_scale} instead")
    if before != args.truth_scale:
        for run in results.get("runs", {}).values():
            if run.pop("scores", None) is not None:
                run["rescored"] = True
    results["truth_scale"] = args.truth_scale


def _mark_rescore(results: dict, args) -> None:
    """--rescore: the selected runs' scores dropped, so their kept predictions are scored again (new columns);
    nothing that exists is trained or predicted again."""
    for key, run in results.get("runs", {}).items():
        budget, train_set, name = key.split("/")
        route = name.split("-seed")[0]
        if name == run_name(route, args.training_seed) and route in args.routes and train_set in args.train_sets \
                and float(budget[:-3]) in args.budgets:
            run.pop("scores", None)
            run["rescored"] = True


def _results(out: Path, reuse: str | None) -> dict:
    """OUT/results.json so far (a run picks up where it stopped), with this command added to the earlier ones
    (" ; "-separated: a second command on the same OUT adds runs, and the table names every command that made
    them) and the machine; ``reuse``: another run's results.json on the same cohorts, whose speed probe and blur
    are taken."""
    path = out / "results.json"
    results = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    command, earlier = " ".join(sys.argv), [c for c in results.get("command", "").split(" ; ") if c]
    results["command"] = " ; ".join(earlier + ([command] if command not in earlier else []))
    results["machine"] = machine()
    if reuse:
        other = json.loads(Path(reuse).read_text(encoding="utf-8"))
        results.setdefault("speed", other["speed"])
        results.setdefault("denoised_sigma_mm", other["denoised_sigma_mm"])
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--patients", type=int, default=48)
    parser.add_argument("--test-patients", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs=2, default=(100, 200), help="train and test cohort seeds")
    parser.add_argument("--budgets", type=float, nargs="+", default=(5.0,), help="CPU-minutes per trained model "
                        "(the issue's 20 and 60 are options)")
    parser.add_argument("--train-sets", nargs="+", default=list(TRAIN_SETS), choices=TRAIN_SETS)
    parser.add_argument("--routes", nargs="+", default=["default", "regression"],
                        choices=[*ROUTES, "regression"],
                        help="default: the 2.5D tumour-slice route; mechanistic: the same with "
                             "diffusion.residual=mechanistic (the same steps); whitestripe: the same with data.normalization="
                             "=whitestripe (tissue-referenced, not moved by the tumour, unbounded); tissue: the same with "
                             "data.normalization=tissue (air and the body's median, in [0, 1]); edm: the same with EDM's log-normal "
                             "noise levels (diffusion.noise_sampling=lognormal: the default since 2026-12-07); uniform: the same with "
                             "timesteps drawn uniformly (the default before); smoothdays: the same with the days embedding's "
                             "periods under a year left out (model.day_min_period=365); intensity: the default with one random "
                             "contrast curve and bias field per training sample, alike on its scans "
                             "(data.intensity_augmentation=true); regression: the default's regression "
                             "U-Net (same steps); 3d: the light 3D patch route; slices2, boxslices, boxpredict: the "
                             "edm route with its slices named: two on each side of the tumour cut, trained on and "
                             "predicted (data.slice_margin=2, the default before 2026-12-08); the tumour box's four "
                             "(data.slice_margin=4); four cut and predicted, two trained on "
                             "(data.train_slice_margin=2, the default since)")
    parser.add_argument("--training-seed", type=int, default=0,
                        help="training.seed of the trained models (0: the config's); another value trains a "
                             "replicate, kept as ROUTE-seedN beside the seed-0 run")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--truth-scale", default="own", choices=TRUTH_SCALES,
                        help="the follow-ups' intensity scale: own (each scan by its own percentiles, as a user "
                             "would normalise it); tissue (mapped onto its baseline's scale by background and "
                             "normal-tissue mode); clean (the synthetic truth behind it at the baseline's gain: no "
                             "normalisation choice, no noise); see benchmarks/volumetric.py TestTruth")
    parser.add_argument("--workers", type=int, default=2, help="processes for synthesising the cohorts")
    parser.add_argument("--merge", nargs="+", help="only merge these results.json files into OUT's table")
    parser.add_argument("--note", action="append", default=[], help="with --merge: a line for the table's header "
                        "(e.g. what did not finish)")
    parser.add_argument("--reuse", help="results.json of a run on the same cohorts: take its speed probe and blur")
    parser.add_argument("--cohorts", help="folder of the cohorts FAMILY_train and FAMILY_test (default OUT/cohorts; "
                        "missing ones are synthesised there), e.g. to share them between runs")
    parser.add_argument("--speed-patients", type=int, default=6)
    parser.add_argument("--rescore", action="store_true", help="score the selected runs' kept predictions again "
                        "(e.g. for a column added since), training and predicting nothing that exists")
    parser.add_argument("--score-finished", action="store_true", help="train and predict nothing: score the "
                        "prediction folders that finished of each trained model not yet scored, leaving out a method "
                        "that did not predict every test follow-up, and mark the run partial (a run cut short by a "
                        "deadline)")
    return parser


def _cohorts(args, out: Path) -> dict[str, Path]:
    from oncodiff.synth import synthesize

    made, root = {}, Path(args.cohorts).resolve() if args.cohorts else out / "cohorts"
    for family in FAMILIES:
        for split, patients, seed in (("train", args.patients, args.seeds[0]), ("test", args.test_patients,
                                                                                 args.seeds[1])):
            path = root / f"{family}_{split}"
            if not (path / "scans.csv").is_file():
                print(f"synthesising {path} ...", flush=True)
                synthesize(site=family, n_patients=patients, dims=3, seed=seed, out=path, acquisition="clinical",
                           workers=args.workers)
            made[f"{family}_{split}"] = path
    if "both" in args.train_sets:
        made["both_train"] = merge_cohorts({f: made[f"{f}_train"] for f in FAMILIES}, out / "both_train")
    return made


def merge_cohorts(parts: dict[str, Path], out: Path) -> Path:
    """One cohort of several cohorts with the same cohort.yaml keys: patient ids prefixed with the part's name,
    image paths under a folder of that name (files hard-linked, or copied across file systems)."""
    import shutil

    import yaml

    if (out / "scans.csv").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    patients, scans, spec = [], [], None
    for name, root in parts.items():
        table = pd.read_csv(root / "patients.csv", dtype=str, keep_default_na=False)
        table["patient_id"] = name + "-" + table["patient_id"]
        patients.append(table)
        rows = pd.read_csv(root / "scans.csv", dtype=str, keep_default_na=False)
        rows["patient_id"] = name + "-" + rows["patient_id"]
        for column in [c for c in rows.columns if c in ("image", "tumor_mask") or c.startswith("anatomy:")]:
            rows[column] = [f"{name}/{p}" if p else "" for p in rows[column]]
        scans.append(rows)
        for source in root.rglob("*.nii.gz"):
            relative = source.relative_to(root)
            if relative.parts[0] == "truth":
                continue
            target = out / name / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:
                shutil.copy(source, target)
        text = (root / "cohort.yaml").read_text(encoding="utf-8")
        spec = spec or yaml.safe_load(text)
    spec["name"] = "+".join(parts)
    (out / "cohort.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    pd.concat(patients).to_csv(out / "patients.csv", index=False)
    pd.concat(scans).to_csv(out / "scans.csv", index=False)
    return out


def _probe(cohort: Path, overrides: list[str], cache: Path) -> dict:
    from oncodiff.data.route import volumetric_route

    config, _ = volumetric_route(load_config("demo", [*COMMON, *overrides]), cohort)
    return cpu_seconds_per_step(cohort, config, cache) | {"overrides": overrides}


def run_name(route: str, seed: int) -> str:
    """A run's name in results.json and OUT: the route, and ``-seed<N>`` when trained with --training-seed N
    (a replicate: another initialisation, batch order and augmentation; the same cohorts and steps)."""
    return f"{route}-seed{seed}" if seed else route


def _train_and_score(cohorts, truths, sigmas, train_set: str, route: str, steps: int, folder: Path, samples: int,
                     regression: bool, seed: int = 0) -> dict:
    from oncodiff.evaluation.baselines import ensure_baseline
    from oncodiff.training import train

    train_cohort, run, cache = cohorts[f"{train_set}_train"], folder / "run", folder.parent.parent / "cache"
    config = load_config("demo", [*COMMON, *ROUTES[route], f"training.max_steps={steps}",
                                  *([f"training.seed={seed}"] if seed else [])])
    started = time.process_time()
    if not RunFolder(run).weights.is_file():
        if run.exists():  # an interrupted earlier attempt: start it again
            import shutil

            shutil.rmtree(run)
        print(f"training {route} on {train_set} for {steps} steps ...", flush=True)
        train(train_cohort, config, run, cache_dir=cache)
    if "spread_calibration" not in read_export_meta(run):
        # as sampling.calibrate does at the end of training, without its calibration folds (COMMON turns both off)
        from oncodiff.pipeline.predict import calibrate_run

        print("fitting the samples' spread factor on the validation split ...", flush=True)
        calibrate_run(run, train_cohort, samples=samples, seed=seed, cache_dir=cache)
    trained = Config.from_json(RunFolder(run).config_json)
    models = {"oncodiff": run}
    if regression:
        models["regression"] = ensure_baseline(run, train_cohort, trained, "regression", None, cache_dir=cache)
    cpu_seconds = time.process_time() - started
    forecast = json.loads(RunFolder(run).model_dir.joinpath("config.json").read_text(encoding="utf-8"))[
        "layout"].get("mechanistic")
    scores = {}
    for family in FAMILIES:
        predictions = {name: _predict(model, cohorts[f"{family}_test"], truths[family],
                                      folder / f"predictions_{family}" / name, samples if name == "oncodiff" else 1)
                       for name, model in models.items()}
        scores[family] = score(truths[family], sigmas[family], predictions)
    return {"steps": steps, "train_cpu_seconds_this_process": cpu_seconds,
            "config": trained.data.model_dump(mode="json"), "scores": scores,
            **({"mechanistic_forecast": forecast} if forecast else {})}


def _predict(model: Path, cohort: Path, truth: TestTruth, folder: Path, samples: int) -> dict[str, list[Path]]:
    """Prediction folders with the outcome unknown and given each patient's true class (one per class group)."""
    from oncodiff.pipeline.predict import predict

    out = {"unknown": [folder / "unknown"], "given": []}
    if not (folder / "unknown" / "summary.json").is_file():
        predict(model, cohort, folder / "unknown", samples=samples, cache_dir=folder.parents[3] / "cache")
    if Config.from_json(RunFolder(model).config_json).model.class_label == "none":  # the regression U-Net
        return {"not class-conditioned": out["unknown"]}
    out["given"] = predict_given(model, cohort, folder, samples, folder.parents[3] / "cache")
    return out


def predict_given(model: Path, cohort: Path, folder: Path, samples: int, cache: Path, **options) -> list[Path]:
    """Predictions given each patient's true response class: one folder ``folder / given_<value>`` per class group
    (``options``: more of predict's arguments, e.g. ``days``); kept folders are not predicted again."""
    from oncodiff.pipeline.predict import predict

    spec = load_cohort(cohort).spec.outcomes.response
    labels = pd.read_csv(cohort / "patients.csv", dtype=str).set_index("patient_id")[spec.column]
    folders = []
    for value in sorted(labels.unique()):
        target = folder / f"given_{value}"
        if not (target / "summary.json").is_file():
            given = value if value == spec.positive else "0"  # predict's words: the positive class, or 0
            predict(model, cohort, target, patients=list(labels.index[labels == value]), samples=samples,
                    overrides=[f"response={given}"], cache_dir=cache, overwrite=target.exists(), **options)
        folders.append(target)
    return folders


def _score_finished(results: dict, args, out: Path, cohorts, truths, sigmas) -> None:
    for minutes in args.budgets:
        for train_set in args.train_sets:
            for route in [r for r in args.routes if r in ROUTES]:
                name = run_name(route, args.training_seed)
                key, folder = f"{minutes:g}min/{train_set}/{name}", out / f"{minutes:g}min" / train_set / name
                summary = RunFolder(folder / "run").root / "train_summary.json"
                if (key in results["runs"] and not results["runs"][key].get("partial")) or not summary.is_file():
                    continue
                scores, finished = {}, []
                for family in FAMILIES:
                    predictions = {}
                    for name in ("oncodiff", "regression"):
                        done = sorted(p for p in (folder / f"predictions_{family}" / name).glob("*")
                                      if (p / "summary.json").is_file())
                        finished += [f"{family}/{name}/{p.name}" for p in done]
                        if name == "regression" and done:
                            predictions[name] = {"not class-conditioned": done}
                        elif done:
                            predictions[name] = {c: [p for p in done if (p.name == "unknown") == (c == "unknown")]
                                                 for c in ("unknown", "given")}
                            predictions[name] = {c: f for c, f in predictions[name].items() if f}
                    if not predictions:
                        continue
                    truth = truths[family]
                    wanted = TestTruth.follow_ups(truth)
                    # a method that did not predict every test follow-up is left out (noted), not scored on a subset
                    for name, by in predictions.items():
                        for condition, folders in list(by.items()):
                            if not all(any((d / f"{p}_L1_{t}").is_dir() for d in folders) for p, t in wanted):
                                del by[condition]
                                finished.append(f"{family}/{name} ({condition}) left out: not every follow-up")
                    predictions = {name: by for name, by in predictions.items() if by}
                    every = [f for by in predictions.values() for f in by.values()]
                    kept = [(p, t) for p, t in wanted
                            if all(any((d / f"{p}_L1_{t}").is_dir() for d in folders) for folders in every)]
                    if not kept:
                        continue
                    truth.follow_ups = lambda kept=kept: kept  # this instance: only the follow-ups every method has
                    scores[family] = score(truth, sigmas[family], predictions)
                    del truth.follow_ups
                steps = json.loads(summary.read_text(encoding="utf-8"))["global_step"]
                results["runs"][key] = {"steps": steps, "minutes": minutes, "scores": scores, "partial": True,
                                        "partial_note": "cut short: scored the finished prediction folders ("
                                        + ", ".join(finished) + ") on the follow-ups they all predicted"}


def _case(folders: list[Path], patient: str, timepoint: str) -> Path:
    for folder in folders:
        case = folder / f"{patient}_L1_{timepoint}"
        if case.is_dir():
            return case
    raise FileNotFoundError(f"no prediction of {patient} {timepoint} in {', '.join(map(str, folders))}")


def spread_factors(folder: Path) -> tuple[float, float]:
    """(the spread factor ``predict`` scaled the samples in a predictions folder by, the factor their model has
    now; oncodiff/pipeline/spread.py, 1 = as drawn). They differ when the run was calibrated after it predicted
    (this benchmark trains with sampling.calibrate=false, then fits the factor with ``oncodiff calibrate``)."""
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    meta = read_export_meta(summary["model"]).get("spread_calibration") or {}
    return float(summary.get("spread_factor", 1.0)), float(meta.get("factor") or 1.0)


def _predicted(case: Path, name: str, condition: str, transform) -> tuple[dict, dict]:
    """One prediction folder's mean and samples on the truth's grid, as ({method: mean}, {method: (M, *S)}); a
    spread-calibrated run's samples twice: scaled by the run's factor and as drawn (the same draws, rescaled about
    their class means from the factor predict applied)."""
    method = f"{name} ({condition})"
    mean = transform.apply(read_image(case / "mean.nii.gz").array)
    files = sorted(case.glob("sample_*.nii.gz"))
    if len(files) < 2:
        return {method: mean}, {}
    samples = np.stack([transform.apply(read_image(f).array) for f in files])
    applied, fitted = spread_factors(case.parent)
    if fitted == 1.0:
        return {method: mean}, {method: samples}
    classes = json.loads((case / "summary.json").read_text(encoding="utf-8")).get("sample_classes")
    classes = None if classes is None else np.asarray(classes)[None]
    raw = f"{name} raw spread ({condition})"
    return {method: mean, raw: mean}, {method: scale_spread(samples[None], classes, fitted / applied)[0],
                                       raw: scale_spread(samples[None], classes, 1.0 / applied)[0]}


def box_scores(samples: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict:
    """In one follow-up's tumour box: evaluate's spread-skill terms, the share of voxels whose truth lies outside
    every sample (its rank histogram's ends) and the share where the samples do not differ at all."""
    spread = spread_skill(samples[None], truth[None], mask[None], SPREAD_MARGIN)
    ranks = rank_histogram(samples[None], truth[None], mask[None], SPREAD_MARGIN)
    box = bbox_mask(mask, SPREAD_MARGIN)
    return spread | {"outside_share": ranks.get("outside_share", np.nan),
                     "zero_spread_share": float((np.ptp(samples[:, box], axis=0) == 0).mean()) if box.any() else np.nan}


def score(truth: TestTruth, sigma: float, predictions: dict[str, dict[str, list[Path]]]) -> dict:
    """Per-follow-up in-tumour MAE and SSIM of every method; means, ratios and paired bootstrap intervals."""
    rows = []
    for patient, timepoint in truth.follow_ups():
        baseline, mask, transform = truth.baseline(patient)
        follow = truth.follow_up(patient, timepoint, baseline)
        methods = {"identity": baseline.array, "denoised identity": smoothed(baseline, sigma).array}
        ensembles, spread = {}, {}
        for name, by_condition in predictions.items():
            for condition, folders in by_condition.items():
                means, drawn = _predicted(_case(folders, patient, timepoint), name, condition, transform)
                methods |= means
                for method, samples in drawn.items():
                    ensembles[method] = np.moveaxis(samples[:, mask], 0, -1)
                    spread[method] = box_scores(samples, follow["image"], mask)
        for method, image in methods.items():
            metrics = image_metrics(image, follow["image"], mask, bbox_margin=4)
            # CRPS per in-tumour voxel: of the samples' empirical distribution; a point method's is its MAE
            crps = (float(crps_ensemble(ensembles[method], follow["image"][mask]).mean()) if method in ensembles
                    else float(np.abs(image - follow["image"])[mask].mean()))
            box = spread.get(method, {})
            rows.append({"patient": patient, "timepoint": timepoint, "method": method,
                         "mae_tumor": metrics["mae_tumor"], "ssim_tumor": metrics["ssim_tumor"], "crps_tumor": crps,
                         "box_variance": box.get("spread", np.nan) ** 2, "box_mse_of_mean": box.get("rmse_of_mean", np.nan) ** 2,
                         "samples": box.get("samples", 1), "box_outside": box.get("outside_share", np.nan),
                         "box_zero_spread": box.get("zero_spread_share", np.nan)})
    frame = pd.DataFrame(rows)
    means = frame.groupby("method")[["mae_tumor", "ssim_tumor", "crps_tumor", "box_outside", "box_zero_spread"]].mean()
    # spread-skill ratio in the tumour box (evaluation/distribution_scores.py), each follow-up's box weighted alike:
    # sqrt((M + 1) / M x mean sample variance / mean squared error of the sample mean); 1 = calibrated spread
    pooled = frame.groupby("method")[["box_variance", "box_mse_of_mean", "samples"]].mean()
    m = pooled["samples"]
    means["spread_skill_box"] = np.sqrt((m + 1) / m * pooled["box_variance"] / pooled["box_mse_of_mean"])
    means["crps_vs_denoised identity mae"] = means["crps_tumor"] / means.loc["denoised identity", "mae_tumor"]
    for reference in REFERENCES:
        means[f"mae_vs_{reference}"] = means["mae_tumor"] / means.loc[reference, "mae_tumor"]
    pivot = {value: frame.pivot_table(index=["patient", "timepoint"], columns="method", values=value)
             for value in ("mae_tumor", "ssim_tumor", "crps_tumor")}
    paired = {value: {reference: paired_patient_differences(pivot[value], reference) for reference in REFERENCES}
              for value in ("mae_tumor", "ssim_tumor")}
    # the distribution's CRPS against the denoised identity's MAE (its CRPS: a point forecast), paired per patient
    paired["crps_tumor"] = {"denoised identity": paired_patient_differences(pivot["crps_tumor"], "denoised identity")}
    for raw in [m for m in pivot["crps_tumor"].columns if " raw spread (" in m]:  # scaled minus as drawn, same draws
        paired["crps_tumor"][raw] = paired_patient_differences(pivot["crps_tumor"], raw)
    return {"follow_ups": int(frame[["patient", "timepoint"]].drop_duplicates().shape[0]),
            "mean": means.reset_index().to_dict(orient="records"), "paired": paired}


def _table(results: dict) -> str:
    lines = ["# Cross-family transfer: 3D clinically acquired cohorts, brain (brain.py) and glioma (glioma.py)", "",
             f"Command: `{results.get('command')}`", "",
             f"Machine: {results.get('machine', 'not recorded')}.", "",
             f"Truth scale: {TRUTH_SCALE_WORDS[results.get('truth_scale', 'own')]}", "",
             "Cohorts (3D, clinical acquisition): " + ", ".join(
                 f"{name} {_patients(path)} patients" for name, path in results.get("cohorts", {}).items()) + ".", "",
             *[line for note in results.get("notes", []) for line in (note, "")],
             "Denoised identity: Gaussian sigma (mm) chosen by in-tumour MAE on the test family's own training "
             f"cohort: {results.get('denoised_sigma_mm')}.", "",
             *_summary(results),
             "## Speed (CPU seconds per optimiser step; a budget of B CPU-minutes buys B x 60 / that many steps)", "",
             "| route | crop | CPU s / step |", "|---|---|---|"]
    for name, s in results.get("speed", {}).items():
        lines.append(f"| {name} | {'x'.join(map(str, s['crop']))} | {s['cpu_seconds_per_step']:.2f} |")
    for key, run in results.get("runs", {}).items():
        if "scores" not in run:
            continue
        budget, train_set, route = key.split("/")
        for family, scores in run["scores"].items():
            kind = "in-family" if family == train_set else ("both families" if train_set == "both" else "CROSS-FAMILY")
            lines += ["", f"## {budget}, route {route}: trained on {train_set}, tested on {family} ({kind}); "
                          f"{run['steps']} steps, {scores['follow_ups']} test follow-ups", "",
                      *_forecast_lines(run), *_spread_lines(scores),
                      "| method | in-tumour MAE | x post = pre | x denoised | SSIM | SSIM - denoised (95 % CI) | "
                      "MAE - denoised (95 % CI) | CRPS | CRPS x denoised MAE | CRPS - denoised MAE (95 % CI) | "
                      "spread-skill (tumour box) |",
                      "|---|---|---|---|---|---|---|---|---|---|---|"]
            for row in scores["mean"]:
                method = row["method"]
                ssim = scores["paired"]["ssim_tumor"]["denoised identity"].get(method)
                mae = scores["paired"]["mae_tumor"]["denoised identity"].get(method)
                fmt = (lambda d: f"{d['mean']:+.4f} ({d['ci95'][0]:+.4f} .. {d['ci95'][1]:+.4f})" if d else "-")
                crps = scores["paired"].get("crps_tumor", {}).get("denoised identity", {}).get(method)
                crps_cells = (f"{row['crps_tumor']:.4f} | {row['crps_vs_denoised identity mae']:.3f} | {fmt(crps)}"
                              if "crps_tumor" in row else "- | - | -")  # runs scored before CRPS was added
                ratio = row.get("spread_skill_box")
                ratio = f"{ratio:.2f}" if ratio is not None and np.isfinite(ratio) else "-"
                lines.append(f"| {method} | {row['mae_tumor']:.4f} | {row['mae_vs_identity']:.3f} | "
                             f"{row['mae_vs_denoised identity']:.3f} | {row['ssim_tumor']:.3f} | {fmt(ssim)} | "
                             f"{fmt(mae)} | {crps_cells} | {ratio} |")
    return "\n".join(lines) + "\n"


def _spread_lines(scores: dict) -> list[str]:
    """A line per condition whose samples were spread-calibrated: CRPS scaled minus as drawn, paired per patient."""
    lines = []
    for raw, differences in scores["paired"].get("crps_tumor", {}).items():
        scaled = raw.replace(" raw spread (", " (")
        if " raw spread (" in raw and scaled in differences:
            d = differences[scaled]
            lines.append(f"CRPS of {scaled} minus the same samples as drawn (spread calibration undone): "
                         f"{d['mean']:+.4f} (95 % CI {d['ci95'][0]:+.4f} .. {d['ci95'][1]:+.4f}).")
    return [*lines, ""] if lines else []


def _summary(results: dict) -> list[str]:
    """One line per scored run and test family, the sections below in brief: oncodiff's in-tumour MAE given the
    class and with the outcome unknown, and its CRPS with the outcome unknown, each over the denoised identity's
    MAE; the SSIM given the class and the denoised identity's; the spread-skill ratios; with the outcome unknown,
    the share of tumour-box voxels whose truth lies outside every sample (calibrated: 2 / (M + 1)) and, in
    brackets, the share where the samples do not differ at all (rows scored before 2026-12-08 have neither)."""
    rows = []
    for key, run in results.get("runs", {}).items():
        budget, train_set, route = key.split("/")
        for family, scores in run.get("scores", {}).items():
            by = {row["method"]: row for row in scores["mean"]}
            for variant, label in (("oncodiff", route), ("oncodiff raw spread", f"{route}, samples as drawn")):
                given, unknown = by.get(f"{variant} (given)", {}), by.get(f"{variant} (unknown)", {})
                if given or unknown:
                    rows.append(_summary_row(train_set, family, label, budget, run["steps"], given, unknown,
                                             by["denoised identity"]["ssim_tumor"]))
    if not rows:
        return []
    return ["## Summary (oncodiff against the denoised identity; each run's section below has the intervals)", "",
            "| trained -> tested | route | budget | MAE given the class | MAE outcome unknown | CRPS outcome "
            "unknown | SSIM given (denoised) | spread-skill given / unknown | truth outside every sample, unknown "
            "(no spread) |",
            "|---|---|---|---|---|---|---|---|---|", *rows, ""]


def _summary_row(train_set: str, family: str, route: str, budget: str, steps: int, given: dict, unknown: dict,
                 denoised_ssim: float) -> str:
    cell = (lambda row, column, f="{:.3f}": f.format(row[column]) if column in row and np.isfinite(row[column])
            else "-")
    return (f"| {train_set} -> {family} | {route} | {budget} ({steps} steps) | "
            f"{cell(given, 'mae_vs_denoised identity')} | {cell(unknown, 'mae_vs_denoised identity')} | "
            f"{cell(unknown, 'crps_vs_denoised identity mae')} | {cell(given, 'ssim_tumor')} "
            f"({denoised_ssim:.3f}) | {cell(given, 'spread_skill_box', '{:.2f}')}"
            f" / {cell(unknown, 'spread_skill_box', '{:.2f}')} | {cell(unknown, 'box_outside', '{:.2f}')} "
            f"({cell(unknown, 'box_zero_spread', '{:.2f}')}) |")


def _forecast_lines(run: dict) -> list[str]:
    """A line on the mechanistic forecast a run of diffusion.residual=mechanistic was trained with, and a blank."""
    fitted = run.get("mechanistic_forecast")
    if not fitted:
        return []
    sets = "; ".join(f"{name}: D {p['diffusivity']:.3g}, rho {p['proliferation']:.3g}, log-kill {p['kill']:.3g}, "
                     f"contrast {p['contrast']:.3g}" for name, p in
                     [("outcome unknown", fitted["unknown"]),
                      *((f"class {k}", v) for k, v in sorted(fitted.get("per_class", {}).items()))])
    return [f"Mechanistic forecast (diffusion.residual=mechanistic) fitted on {fitted.get('fitted_on')} in "
            f"{fitted.get('cpu_seconds', 0):.0f} CPU-seconds (fit and the training forecasts, beside the training "
            f"steps' budget): {sets}.", ""]


def _merge(paths: list[str], out: Path, notes: list[str] = ()) -> int:
    """One results.json and table.md from runs that trained different sets on the same cohorts; the parts' notes
    are kept (once each), ``notes`` added after them."""
    parts = [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]
    scales = {p.get("truth_scale", "own") for p in parts}
    if len(scales) > 1:
        raise SystemExit(f"--merge: the runs were scored on different truth scales ({', '.join(sorted(scales))}); "
                         "rescore them on one (--rescore --truth-scale SCALE) first")
    results = {"command": " ; ".join(p["command"] for p in parts), "cohorts": parts[0].get("cohorts"),
               "truth_scale": scales.pop(),
               "machine": parts[0].get("machine") or machine(),
               "notes": list(dict.fromkeys([*(n for p in parts for n in p.get("notes", [])), *notes])),
               "denoised_sigma_mm": parts[0]["denoised_sigma_mm"],
               # every part's probes (a route probed in one part only is kept); the first part's where both have it
               "speed": {k: v for p in reversed(parts) for k, v in p.get("speed", {}).items()},
               "runs": {k: v for p in parts for k, v in p.get("runs", {}).items()}}
    _save(out, results)
    table = _table(results)
    (out / "table.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


def machine() -> str:
    """The CPU model and the number of cores this process may use (budgets are CPU time, so they hold under load)."""
    import platform

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} cores"


def _patients(cohort: str) -> str:
    path = Path(cohort) / "patients.csv"
    return str(len(pd.read_csv(path, dtype=str))) if path.is_file() else "?"


def _save(out: Path, results: dict) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
