"""How far each preprocessing step brings clinically acquired follow-ups toward the truth-aligned ones.

    python -m benchmarks.preprocessing [--patients 8] [--seed 0] [--out benchmarks/results/preprocessing]

Synthesises a 3D brain cohort with ``--acquisition clinical`` (motion, 4 mm slices, bias field, gain
and offset, Rician noise) and an ideal one of the same seed, then runs preprocessing's own building
blocks (bias.py, intensity.py, registration.py, geometry.sample) on every factual follow-up and scores
it on the baseline's grid against the truth the synthesiser wrote:

- residual misalignment: mean distance (mm) over the baseline's foreground between where the
  estimated map and the true one (truth/scans.csv ``world_map``) send each point;
- intensity error: mean |normalised follow-up (through the estimated map) - the clean truth-aligned
  follow-up normalised by the same method| over the brain, in % of the truth's 1-99 percentile range
  (scale-free, so methods with different units compare);
- bias residual: standard deviation of log(scan / truth) over the brain on the scan's own grid, before and
  after N4 (the field's spread, plus noise);
- seconds per scan of each step (shared machines: noisy; compare within one run).

Variants are cumulative (resampling onto the baseline's grid is always on: a follow-up on its own grid
must be sampled onto the baseline's to be paired), then one step at a time off from the default.
Writes OUT/results.json and OUT/table.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from oncodiff.cohort import Image, read_image
from oncodiff.config import DataConfig
from oncodiff.data.bias import correct_bias
from oncodiff.data.geometry import Grid, sample
from oncodiff.data.intensity import fit_intensity
from oncodiff.data.preprocess import register_followup
from oncodiff.data.registration import displacement_mm, measure_misalignment
from oncodiff.synth import synthesize
from oncodiff.synth.acquisition import world_map_from_truth

NORMALISATIONS = ("percentile", "nonzero_zscore", "whitestripe")
# (name, N4, normalisation, registration): cumulative, then the default with one step changed
VARIANTS = (
    ("resampled only (raw units)", False, "none", "none"),
    ("+ normalisation (percentile)", False, "percentile", "none"),
    ("+ N4", True, "percentile", "none"),
    ("+ registration auto = default", True, "percentile", "auto"),
    ("default without N4", False, "percentile", "auto"),
    ("default with nonzero_zscore", True, "nonzero_zscore", "auto"),
    ("default with whitestripe", True, "whitestripe", "auto"),
)


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


class Pair:
    """One factual follow-up, its baseline and their truth, with each step's outputs computed once."""

    def __init__(self, root: Path, row: pd.Series, baseline_row: pd.Series):
        self.row, self.times = row, {}
        self.baseline = read_image(root / row.patient_id / "pre.nii.gz")
        self.followup = read_image(root / row.patient_id / f"{row.timepoint}.nii.gz")
        self.truth = read_image(root / row.truth_image)
        self.truth_baseline = read_image(root / baseline_row.truth_image)
        self.world_map = world_map_from_truth(row.world_map)
        self.brain = self.truth_baseline.array > 0.2 * np.percentile(self.truth_baseline.array, 99)
        self.corrected = {False: (self.baseline, self.followup)}
        (pre, _), t_pre = _timed(correct_bias, self.baseline)
        (post, _), t_post = _timed(correct_bias, self.followup)
        self.corrected[True] = (pre, post)
        self.times["n4"] = [t_pre, t_post]
        self.maps: dict[tuple[bool, str], tuple[np.ndarray, dict]] = {}

    def registration(self, n4: bool, kind: str) -> tuple[np.ndarray, dict]:
        """(map, steps) of ``data.registration=kind`` on the percentile-normalised (N4-corrected) pair."""
        if (n4, kind) not in self.maps:
            config = DataConfig(registration=kind)
            pre, post = (Image(fit_intensity(x.array, "percentile", config).apply(x.array), x.affine)
                         for x in self.corrected[n4])
            self.maps[(n4, kind)], seconds = _timed(register_followup, pre, post, config)
            self.times[f"registration {kind}{' after N4' if n4 else ''}"] = [seconds]
        return self.maps[(n4, kind)]

    def score(self, n4: bool, normalisation: str, kind: str) -> dict:
        world_map, steps = self.registration(n4, kind) if kind != "none" else (np.eye(4), {})
        config = DataConfig()
        post = self.corrected[n4][1]
        start = time.perf_counter()
        transform = fit_intensity(post.array, normalisation, config)
        self.times.setdefault(f"normalisation {normalisation}", []).append(time.perf_counter() - start)
        grid = Grid(self.truth.affine, self.truth.shape)
        start = time.perf_counter()
        on_baseline = sample(transform.apply(post.array), post.affine, grid, order=1, world_map=world_map)
        self.times.setdefault("resampling", []).append(time.perf_counter() - start)
        truth = fit_intensity(self.truth.array, normalisation, config).apply(self.truth.array)
        spread = np.percentile(truth[self.brain], 99) - np.percentile(truth[self.brain], 1)
        return {
            "misalignment_mm": displacement_mm(self.baseline, np.linalg.inv(self.world_map) @ world_map),
            "intensity_error_pct": float(100 * np.abs(on_baseline - truth)[self.brain].mean() / spread),
            "registered": steps.get("registration", "none"),
        }

    def bias_residual(self) -> dict:
        """Spread of log(scan / truth) over the brain on the follow-up's grid, before and after N4."""
        grid = Grid(self.followup.affine, self.followup.shape)
        truth = sample(self.truth.array.astype(np.float32), self.truth.affine, grid, order=1,
                       world_map=np.linalg.inv(self.world_map))
        brain = truth > 0.2 * np.percentile(truth, 99)
        offset = float(self.row.offset)
        return {name: float(np.log(np.clip(image.array[brain] - offset, 1.0, None) / truth[brain]).std())
                for name, image in (("before", self.followup), ("after", self.corrected[True][1]))}


def clinical_pairs(root: Path) -> list[Pair]:
    truth = pd.read_csv(root / "truth" / "scans.csv", dtype={"patient_id": str})
    factual = truth[truth.counterfactual == 0]
    baselines = factual[factual.timepoint == "pre"].set_index("patient_id")
    return [Pair(root, row, baselines.loc[row.patient_id]) for row in factual[factual.timepoint != "pre"].itertuples()]


def ideal_check(root: Path) -> dict:
    """What data.registration=auto measures and decides on aligned follow-ups (an ideal cohort)."""
    truth = pd.read_csv(root / "truth" / "scans.csv", dtype={"patient_id": str})
    factual = truth[(truth.counterfactual == 0) & (truth.timepoint != "pre")]
    measured = [measure_misalignment(read_image(root / r.patient_id / "pre.nii.gz"),
                                     read_image(root / r.patient_id / f"{r.timepoint}.nii.gz"))[0]
                for r in factual.itertuples()]
    threshold = DataConfig().registration_threshold_mm
    return {"follow_ups": len(measured), "measured_mm_max": float(max(measured)),
            "registered": int(sum(m > threshold for m in measured)), "threshold_mm": threshold}


def summarise(pairs: list[Pair]) -> list[dict]:
    rows = []
    for name, n4, normalisation, kind in VARIANTS:
        scores = [p.score(n4, normalisation, kind) for p in pairs]
        misalignment = [s["misalignment_mm"] for s in scores]
        rows.append({"variant": name, "n4": n4, "normalization": normalisation, "registration": kind,
                     "misalignment_mm_mean": float(np.mean(misalignment)),
                     "misalignment_mm_max": float(max(misalignment)),
                     "intensity_error_pct_mean": float(np.mean([s["intensity_error_pct"] for s in scores])),
                     "registered": sum(s["registered"] != "none" for s in scores), "per_follow_up": scores})
    return rows


def _times(pairs: list[Pair]) -> dict[str, float]:
    keys = sorted({k for p in pairs for k in p.times})
    return {k: float(np.mean([t for p in pairs for t in p.times.get(k, [])])) for k in keys}


def _machine() -> dict:
    return {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "omp_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_average_start": list(os.getloadavg())}


def table(results: dict) -> str:
    m, a = results["machine"], results["arguments"]
    lines = [
        "# Preprocessing benchmark: clinical acquisition, 3D brain", "",
        f"Command: `python -m benchmarks.preprocessing --patients {a['patients']} --seed {a['seed']}`. Machine: "
        f"{m['processor']}, {m['cpus']} logical CPUs, OMP_NUM_THREADS={m['omp_threads']}, load average "
        f"{m['load_average_start']} at start, {m['load_average_end']} at end (shared: timings are noisy).",
        f"{results['follow_ups']} factual follow-ups of {a['patients']} patients; scored on the baseline's grid.", "",
        "| variant | residual misalignment mm (mean / max) | intensity error % of range | registered |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['variant']} | {r['misalignment_mm_mean']:.2f} / {r['misalignment_mm_max']:.2f} | "
              f"{r['intensity_error_pct_mean']:.2f} | {r['registered']} of {results['follow_ups']} |"
              for r in results["variants"]]
    b, i = results["bias_residual"], results["ideal"]
    lines += ["", f"Bias residual (sd of log(follow-up / truth) over the brain): {b['before']:.3f} before N4, "
              f"{b['after']:.3f} after.",
              f"Ideal (aligned) cohort, same seed: auto measured at most {i['measured_mm_max']:.2f} mm and registered "
              f"{i['registered']} of {i['follow_ups']} follow-ups (threshold {i['threshold_mm']} mm).", "",
              "| step | seconds per scan (mean) |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in results["seconds_per_scan"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/preprocessing"))
    args = parser.parse_args(argv)
    results = {"machine": _machine(), "arguments": {"patients": args.patients, "seed": args.seed}}
    with tempfile.TemporaryDirectory() as tmp:
        clinical = synthesize("brain", args.patients, 3, args.seed, Path(tmp) / "clinical", acquisition="clinical")
        ideal = synthesize("brain", args.patients, 3, args.seed, Path(tmp) / "ideal")
        pairs = clinical_pairs(clinical)
        results["variants"] = summarise(pairs)
        residuals = [p.bias_residual() for p in pairs]
        results["bias_residual"] = {k: float(np.mean([r[k] for r in residuals])) for k in ("before", "after")}
        results["ideal"] = ideal_check(ideal)
    results["follow_ups"] = len(pairs)
    results["seconds_per_scan"] = _times(pairs)
    results["machine"]["load_average_end"] = list(os.getloadavg())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    (args.out / "table.md").write_text(table(results), encoding="utf-8")
    print(table(results))
    return results


if __name__ == "__main__":
    main()
