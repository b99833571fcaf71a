"""3D cohorts acquired as a clinic would: does the default route beat a denoised post = pre on unseen patients?

One command:

    python -m benchmarks.volumetric --out OUT [--budgets 5 20] [--patients 48 --test-patients 16]

1. Two synthetic 3D brain cohorts with ``--acquisition clinical`` (follow-ups moved rigidly, thick slices,
   their own intensity scale, a bias field, Rician noise, missing clinical values): a training cohort and a
   test cohort of other patients (another seed). Or pass ``--train-cohort`` / ``--test-cohort``.
2. Speed: CPU-seconds per optimiser step of each candidate route (the default 2.5D tumour-slice route, and
   3D patches with the demo's network and with a light one), timed by training's own step probe.
3. For each budget B (minutes on this 2-core machine), the default route (``oncodiff train`` with the demo
   preset and nothing else: the 3D route is chosen automatically) and the regression U-Net (same split, same
   steps) are trained for ``B * 60 * 2 / cpu_seconds_per_step`` steps: a budget in CPU time, so that other
   load on a shared machine does not change the result. The whole cohort trains (data.test_fraction=0);
   the test cohort is predicted whole, as a new cohort.
4. Scoring, in the baseline's space with the truth brought there independently of the pipeline: each test
   follow-up as acquired, resampled onto its baseline's grid through the synthetic truth's rigid transform
   and normalised by its own percentiles (as preprocessing does); predictions and baselines normalised by
   the baseline's percentiles. In-tumour (baseline GTV) MAE, SSIM and PSNR; MAE against the clean truth
   (no noise, bias or intensity change); volume-change MAE against the truth masks. Methods: identity
   (post = pre), the denoised identity (the baseline smoothed by the Gaussian chosen on the training cohort
   by in-tumour MAE), the regression U-Net, and oncodiff's mean and voxel-wise median of the samples.

Writes OUT/results.json and OUT/table.md, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from oncodiff.cohort import load_cohort, read_image
from oncodiff.cohort.image import Image
from oncodiff.config import SMOOTHING_MM, Config, DataConfig, load_config
from oncodiff.data.denoise import smoothed
from oncodiff.data.geometry import Grid, sample
from oncodiff.data.intensity import fit_intensity
from oncodiff.evaluation.metrics import image_metrics
from oncodiff.evaluation.paired import patient_bootstrap
from oncodiff.runs import RunFolder
from oncodiff.training.step_cost import cpu_seconds_per_step


CANDIDATE_ROUTES = {  # name: config overrides on top of the demo preset
    "2.5D tumour slices (default)": [],
    "3D patches 32^3, demo network": ["data.dims=3", "data.crop_size=[32,32,32]", "data.smoothing=auto"],
    "3D patches 32^3, light network": ["data.dims=3", "data.crop_size=[32,32,32]", "data.smoothing=auto",
                                       "model.channels=[16,32,32]",
                                       "model.attention_levels=[false,false,false]"],
}
COMMON = ["data.test_fraction=0", "sampling.calibrate=false", "training.max_minutes=null"]
NORMALISATION = DataConfig()  # percentile normalisation, as preprocessing applies to MRI
TRUTH_SCALES = ("own", "tissue", "clean")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    train_cohort, test_cohort = _cohorts(args, out)
    results = {"command": " ".join(sys.argv), "train_cohort": str(train_cohort), "test_cohort": str(test_cohort)}
    probe_cohort = cohort_subset(train_cohort, out / "speed_cohort", args.speed_patients)
    results["speed"] = {name: _cpu_seconds_per_step(probe_cohort, overrides, out / "cache")
                        for name, overrides in CANDIDATE_ROUTES.items()}
    _save(out, results)
    truth = TestTruth(test_cohort)
    sigma = denoising_sigma(train_cohort)
    results["denoised_sigma_mm"] = sigma
    results["budgets"] = {}
    routes = {"2.5D tumour slices (default)": []}
    if args.compare_3d:
        routes["3D patches 32^3, light network"] = CANDIDATE_ROUTES["3D patches 32^3, light network"]
    for minutes in args.budgets:
        for route, overrides in routes.items():
            seconds = results["speed"][route]["cpu_seconds_per_step"]
            steps = max(1, int(minutes * 60 * 2 / seconds))
            key = str(minutes) if not overrides else f"{minutes} ({route})"
            results["budgets"][key] = _budget(train_cohort, test_cohort, truth, sigma, minutes, steps, out,
                                              args.samples, overrides, regression=not overrides)
            _save(out, results)
    table = _table(results)
    (out / "table.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--train-cohort")
    parser.add_argument("--test-cohort")
    parser.add_argument("--patients", type=int, default=48)
    parser.add_argument("--test-patients", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs=2, default=(100, 200), help="train and test cohort seeds")
    parser.add_argument("--budgets", type=float, nargs="+", default=(5.0, 20.0), help="minutes on 2 cores")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--compare-3d", action="store_true",
                        help="also train and score the light 3D patch route at each budget (no regression for it)")
    parser.add_argument("--speed-patients", type=int, default=6,
                        help="patients of the training cohort the speed probes preprocess (a step's cost does not "
                             "depend on the cohort's size)")
    return parser


def _cohorts(args, out: Path) -> tuple[Path, Path]:
    from oncodiff.synth import synthesize

    made = []
    for given, name, patients, seed in ((args.train_cohort, "train", args.patients, args.seeds[0]),
                                        (args.test_cohort, "test", args.test_patients, args.seeds[1])):
        if given:
            made.append(Path(given).resolve())
            continue
        path = out / f"cohort_{name}"
        if not (path / "scans.csv").is_file():
            synthesize(site="brain", n_patients=patients, dims=3, seed=seed, out=path, acquisition="clinical")
        made.append(path)
    return made[0], made[1]


def cohort_subset(cohort: Path, out: Path, patients: int) -> Path:
    """A copy of the first ``patients`` patients of ``cohort`` (tables filtered, their folders copied)."""
    import shutil

    if (out / "scans.csv").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    table = pd.read_csv(cohort / "patients.csv", dtype=str, keep_default_na=False)
    keep = list(table["patient_id"][:patients])
    table[table["patient_id"].isin(keep)].to_csv(out / "patients.csv", index=False)
    scans = pd.read_csv(cohort / "scans.csv", dtype=str, keep_default_na=False)
    scans[scans["patient_id"].isin(keep)].to_csv(out / "scans.csv", index=False)
    shutil.copy(cohort / "cohort.yaml", out / "cohort.yaml")
    for patient in keep:
        shutil.copytree(cohort / patient, out / patient)
    return out


def _cpu_seconds_per_step(cohort: Path, overrides: list[str], cache: Path) -> dict:
    """The step probe of ``oncodiff/training/step_cost.py`` for the demo preset as the volumetric route configures it."""
    from oncodiff.data.route import volumetric_route

    config, _ = volumetric_route(load_config("demo", [*COMMON, *overrides]), cohort)
    return cpu_seconds_per_step(cohort, config, cache) | {"overrides": overrides}


class TestTruth:
    """The test cohort's follow-ups in their baselines' space and units, independently of the pipeline."""

    def __init__(self, cohort: Path, scale: str = "own"):
        """``scale``: how a follow-up's intensities are put on a common scale with its baseline's. ``own``: each
        scan normalised by its own percentiles (its top percentile often lies in the enhancing tumour, so it
        moves with the response); ``tissue``: the follow-up mapped onto the baseline's raw scale by its
        background and normal-tissue mode (:func:`tissue_match`), then normalised as the baseline is;
        ``clean``: not the acquired follow-up but the synthetic truth behind it (no noise, bias field or
        misalignment) at the baseline's recorded gain and offset, normalised as the baseline is: the one
        scale that no normalisation heuristic chooses."""
        if scale not in TRUTH_SCALES:
            raise ValueError(f"unknown truth scale {scale!r}; choose one of {', '.join(TRUTH_SCALES)}")
        self.scale = scale
        self.root = cohort
        self.scans = pd.read_csv(cohort / "scans.csv", dtype=str)
        truth = pd.read_csv(cohort / "truth" / "scans.csv", dtype=str)
        self.truth = truth[truth["counterfactual"].astype(int) == 0].set_index(["patient_id", "timepoint"])

    def follow_ups(self) -> list[tuple[str, str]]:
        rows = self.scans[self.scans["timepoint"] != "pre"]
        return [(r.patient_id, r.timepoint) for r in rows.itertuples()]

    def baseline(self, patient: str) -> tuple[Image, np.ndarray, object]:
        row = self.scans[(self.scans["patient_id"] == patient) & (self.scans["timepoint"] == "pre")].iloc[0]
        image = read_image(self.root / row["image"])
        transform = fit_intensity(image.array, "percentile", NORMALISATION)
        return Image(transform.apply(image.array), image.affine), self.tumor_mask(row), transform

    def tumor_mask(self, row) -> np.ndarray:
        """The baseline row's tumour (its ``tumor_mask`` file, as boolean)."""
        return read_image(self.root / row["tumor_mask"]).array > 0

    def follow_up(self, patient: str, timepoint: str, baseline: Image) -> dict:
        row = self.scans[(self.scans["patient_id"] == patient) & (self.scans["timepoint"] == timepoint)].iloc[0]
        acquired = read_image(self.root / row["image"])
        meta = self.truth.loc[(patient, timepoint)]
        world_map = np.array([float(v) for v in meta["world_map"].split()]).reshape(4, 4)
        grid = Grid(baseline.affine, baseline.shape)
        aligned = sample(acquired.array, acquired.affine, grid, order=1, world_map=world_map)
        if self.scale in ("tissue", "clean"):
            raw_baseline = read_image(self.root / self.scans[(self.scans["patient_id"] == patient)
                                                             & (self.scans["timepoint"] == "pre")].iloc[0]["image"])
            baseline_transform = fit_intensity(raw_baseline.array, "percentile", NORMALISATION)
        if self.scale == "tissue":
            normalised = baseline_transform.apply(tissue_match(acquired.array, raw_baseline.array)(aligned))
        elif self.scale == "clean":
            pre = self.truth.loc[(patient, "pre")]
            underlying = read_image(self.root / meta["truth_image"]).array.astype(np.float32)
            normalised = baseline_transform.apply(float(pre["gain"]) * underlying + float(pre["offset"]))
        else:
            normalised = fit_intensity(acquired.array, "percentile", NORMALISATION).apply(aligned)
        clean = read_image(self.root / meta["truth_image"]).array
        clean = fit_intensity(clean, "percentile", NORMALISATION).apply(clean)
        mask = read_image(self.root / meta["truth_mask"]).array > 0
        return {"image": normalised, "clean": clean, "mask": mask}


def tissue_match(source: np.ndarray, reference: np.ndarray):
    """The affine map of raw intensities that takes ``source``'s background (its 0.5th percentile) and its
    foreground's histogram mode (normal tissue: white matter on T1, as WhiteStripe finds it) onto
    ``reference``'s: two landmarks that a tumour's change leaves in place, unlike a top percentile."""
    def landmarks(values: np.ndarray) -> tuple[float, float]:
        mode = fit_intensity(values, "whitestripe", NORMALISATION).offset
        return float(np.percentile(values, NORMALISATION.percentiles[0])), mode

    (s0, s1), (r0, r1) = landmarks(source), landmarks(reference)
    gain = (r1 - r0) / (s1 - s0) if abs(s1 - s0) > 1e-6 else 1.0
    return lambda values: (np.asarray(values, np.float32) - np.float32(s0)) * np.float32(gain) + np.float32(r0)


def denoising_sigma(train_cohort: Path, truth_class: type = TestTruth) -> float:
    """The Gaussian sigma (mm) whose smoothed baselines best match the training cohort's truth-aligned
    follow-ups inside the tumour (pooled MAE): the denoised identity baseline's, chosen on training data
    (``truth_class``: how the cohort's scans are read, TestTruth or a subclass)."""
    truth = truth_class(train_cohort)
    errors, count = np.zeros(len(SMOOTHING_MM)), 0
    for patient in sorted({p for p, _ in truth.follow_ups()}):
        baseline, mask, _ = truth.baseline(patient)
        versions = [smoothed(baseline, s).array for s in SMOOTHING_MM]
        for p, timepoint in truth.follow_ups():
            if p == patient:
                target = truth.follow_up(patient, timepoint, baseline)["image"]
                errors += [np.abs(v - target)[mask].sum() for v in versions]
                count += int(mask.sum())
    return float(SMOOTHING_MM[int(np.argmin(errors / max(count, 1)))])


def _budget(train_cohort: Path, test_cohort: Path, truth: TestTruth, sigma: float, minutes: float, steps: int,
            out: Path, samples: int, overrides: list[str] = (), regression: bool = True) -> dict:
    from oncodiff.evaluation.baselines import ensure_baseline
    from oncodiff.pipeline.predict import predict
    from oncodiff.training import train

    folder = out / (f"budget_{minutes:g}min" + ("_3d" if overrides else ""))
    run = folder / "run"
    config = load_config("demo", [*COMMON, *overrides, f"training.max_steps={steps}"])
    started = time.perf_counter()
    if not RunFolder(run).weights.is_file():
        train(train_cohort, config, run, cache_dir=out / "cache")
    trained = Config.from_json(RunFolder(run).config_json)
    models = {"oncodiff": run}
    if regression:
        models["regression"] = ensure_baseline(run, train_cohort, trained, "regression", None, cache_dir=out / "cache")
    train_seconds = time.perf_counter() - started
    predictions = {}
    for name, model in models.items():
        target = folder / f"predictions_{name}"
        if not (target / "summary.json").is_file():
            predict(model, test_cohort, target, samples=samples if name == "oncodiff" else 1, cache_dir=out / "cache")
        predictions[name] = target
    scores = _score(truth, sigma, predictions)
    plan = json.loads(RunFolder(run).plan_json.read_text(encoding="utf-8"))
    return {"steps": steps, "planned_steps": plan.get("total_steps"), "train_wall_seconds": train_seconds,
            "config": trained.data.model_dump(mode="json"), "scores": scores}


def _score(truth: TestTruth, sigma: float, predictions: dict[str, Path]) -> dict:
    rows = []
    for patient, timepoint in truth.follow_ups():
        baseline, mask, transform = truth.baseline(patient)
        follow = truth.follow_up(patient, timepoint, baseline)
        true_change = follow["mask"].sum() / max(mask.sum(), 1) - 1.0
        methods = {"identity": (baseline.array, 0.0), "denoised identity": (smoothed(baseline, sigma).array, 0.0)}
        for name, folder in predictions.items():
            case = folder / f"{patient}_L1_{timepoint}"
            summary = json.loads((case / "summary.json").read_text(encoding="utf-8"))
            change = (summary.get("change_pct_mean") or 0.0) / 100
            mean = transform.apply(read_image(case / "mean.nii.gz").array)
            methods[f"{name} mean" if name == "oncodiff" else name] = (mean, change)
            if name == "oncodiff":
                stack = np.stack([transform.apply(read_image(p).array) for p in sorted(case.glob("sample_*.nii.gz"))])
                methods["oncodiff median"] = (np.median(stack, axis=0), change)
        for method, (image, change) in methods.items():
            metrics = image_metrics(image, follow["image"], mask, bbox_margin=4)
            rows.append({"patient": patient, "timepoint": timepoint, "method": method,
                         "mae_tumor": metrics["mae_tumor"], "ssim_tumor": metrics["ssim_tumor"],
                         "psnr_tumor": metrics["psnr_tumor"],
                         "mae_tumor_clean": float(np.abs(image - follow["clean"])[mask].mean()),
                         "change_error_pp": 100 * abs(change - true_change)})
    frame = pd.DataFrame(rows)
    means = frame.groupby("method")[["mae_tumor", "ssim_tumor", "psnr_tumor", "mae_tumor_clean",
                                     "change_error_pp"]].mean()
    identity = means.loc["identity", "mae_tumor"]
    denoised = means.loc["denoised identity", "mae_tumor"]
    means["mae_vs_identity"] = means["mae_tumor"] / identity
    means["mae_vs_denoised"] = means["mae_tumor"] / denoised
    paired = frame.pivot_table(index=["patient", "timepoint"], columns="method", values="mae_tumor")
    return {"follow_ups": int(len(paired)), "mean": means.reset_index().to_dict(orient="records"),
            "paired_mae_difference_vs_denoised": paired_patient_differences(paired, "denoised identity")}


def paired_patient_differences(paired: pd.DataFrame, reference: str, draws: int = 2000) -> dict:
    """Mean per-follow-up difference (method - reference) of ``paired`` (one column per method, indexed by
    (patient, follow-up)), averaged per patient, with a patient bootstrap 95 % interval
    (oncodiff.evaluation.paired.patient_bootstrap: one row per patient)."""
    out = {}
    for method in paired.columns:
        if method == reference:
            continue
        diff = (paired[method] - paired[reference]).groupby(level=0).mean()
        boot = patient_bootstrap(lambda rows: diff.to_numpy()[rows].mean(), diff.index.to_numpy(), draws, seed=0)
        out[method] = {"mean": float(diff.mean()), "ci95": boot["ci95"]}
    return out


def _table(results: dict) -> str:
    lines = ["# 3D cohorts with clinical acquisition: the default route against trivial and trained baselines", "",
             f"Command: `{results['command']}`", "",
             f"Denoised identity: Gaussian sigma {results.get('denoised_sigma_mm')} mm, chosen on the training cohort.",
             "", "## Speed (CPU seconds per optimiser step; budget minutes x 120 CPU-seconds on 2 cores)", "",
             "| route | crop | samples per follow-up | CPU s / step | steps per CPU-minute |", "|---|---|---|---|---|"]
    for name, s in results["speed"].items():
        lines.append(f"| {name} | {'x'.join(map(str, s['crop']))} | {s['samples_per_follow_up']:.1f} | "
                     f"{s['cpu_seconds_per_step']:.2f} | {s['steps_per_cpu_minute']:.1f} |")
    for minutes, budget in results.get("budgets", {}).items():
        scores = budget["scores"]
        lines += ["", f"## Budget {minutes} minutes on 2 cores: {budget['steps']} steps, "
                      f"{scores['follow_ups']} test follow-ups", "",
                  "| method | in-tumour MAE | x identity | x denoised | SSIM | PSNR (dB) | MAE vs clean truth | "
                  "volume-change error (pp) |", "|---|---|---|---|---|---|---|---|"]
        for row in scores["mean"]:
            lines.append(f"| {row['method']} | {row['mae_tumor']:.4f} | {row['mae_vs_identity']:.3f} | "
                         f"{row['mae_vs_denoised']:.3f} | {row['ssim_tumor']:.3f} | {row['psnr_tumor']:.2f} | "
                         f"{row['mae_tumor_clean']:.4f} | {row['change_error_pp']:.1f} |")
        lines += ["", "Paired in-tumour MAE difference against the denoised identity (patient bootstrap 95 % CI):", ""]
        for method, d in scores["paired_mae_difference_vs_denoised"].items():
            lines.append(f"- {method}: {d['mean']:+.4f} ({d['ci95'][0]:+.4f} .. {d['ci95'][1]:+.4f})")
    return "\n".join(lines) + "\n"


def _save(out: Path, results: dict) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
