"""Preprocessing on several cores (issue 33): one worker against N, in one run, and the Dask path's cache.

    python -m benchmarks.preprocessing_workers [--patients 24] [--workers 2] [--dask]
        [--out benchmarks/results/preprocessing_workers]

Synthesises a 3D brain cohort with ``--acquisition clinical`` (motion, thick slices, bias field): ``--patients``
patients with two follow-ups each, i.e. 2 x patients (baseline, follow-up) pairs; 24 patients = 48 pairs. Then
preprocesses it with N4 on every scan and rigid registration of every follow-up (``data.bias_correction=n4``,
``data.registration=rigid``), into a fresh cache each time:

- with 1 worker, then with ``--workers`` local processes: wall seconds and the speed-up ratio (1 worker / N);
- ``--dask``: on a local Dask cluster of ``--workers`` processes through ``data.scheduler`` (joblib's Dask
  backend), to show the cluster path writes the same cache;
- whether each run's cache entry (arrays.npz's arrays and samples.json) is byte-identical to the 1-worker one.

The ratio is only meaningful on a quiet machine with at least ``--workers`` free cores (the load average before
and after each run is recorded). Writes OUT/results.json and OUT/table.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from oncodiff.config import DataConfig
from oncodiff.data import preprocess_cohort
from oncodiff.data.parallel import available_cores
from oncodiff.synth import synthesize

CONFIG = DataConfig(dims=3, crop_size=(32, 32, 16), bias_correction="n4", registration="rigid")


def entry_digest(result) -> str:
    """SHA-256 over a cache entry's arrays (by name) and its samples.json."""
    digest = hashlib.sha256()
    for key in sorted(result.arrays):
        digest.update(key.encode() + result.arrays[key].tobytes())
    digest.update((result.cache_path / "samples.json").read_bytes())
    return digest.hexdigest()


def timed_run(cohort: Path, cache: Path, **options) -> dict:
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    result = preprocess_cohort(cohort, CONFIG.model_copy(update=options), cache_dir=cache)
    seconds = time.perf_counter() - start
    assert not result.cache_hit
    return {"options": options, "seconds": seconds, "pairs": len({(r.patient_id, r.timepoint) for r in result.records}),
            "digest": entry_digest(result), "load_before": load_before, "load_after": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=24, help="patients (2 pairs each); 24 = 48 pairs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dask", action="store_true", help="also run on a local Dask cluster of --workers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/preprocessing_workers"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="oncodiff-workers-") as scratch:
        scratch = Path(scratch)
        cohort = synthesize("brain", args.patients, 3, args.seed, scratch / "cohort", acquisition="clinical")
        runs = [timed_run(cohort, scratch / "one", preprocess_workers=1),
                timed_run(cohort, scratch / "many", preprocess_workers=args.workers)]
        if args.dask:
            from distributed import LocalCluster

            with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster:
                runs.append(timed_run(cohort, scratch / "dask", scheduler=cluster.scheduler_address))
    reference = runs[0]["digest"]
    for run in runs:
        run["same_cache_as_one_worker"] = run["digest"] == reference
    results = {
        "pairs": runs[0]["pairs"], "patients": args.patients, "workers": args.workers,
        "speedup": runs[0]["seconds"] / runs[1]["seconds"], "runs": runs,
        "config": CONFIG.model_dump(mode="json", include={"dims", "crop_size", "bias_correction", "registration"}),
        "machine": {"cores_available": available_cores(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    lines = ["| run | seconds | speed-up vs 1 worker | same cache as 1 worker | load avg before / after |",
             "|---|---|---|---|---|"]
    for run in runs:
        name = ", ".join(f"{k}={v}" for k, v in run["options"].items())
        lines.append(f"| {name} | {run['seconds']:.1f} | {runs[0]['seconds'] / run['seconds']:.2f}x | "
                     f"{'yes' if run['same_cache_as_one_worker'] else 'NO'} | "
                     f"{run['load_before']:.1f} / {run['load_after']:.1f} |")
    table = (f"{results['pairs']} 3D pairs (N4 on every scan, rigid registration of every follow-up), "
             f"{available_cores()} cores available\n\n" + "\n".join(lines) + "\n")
    (args.out / "table.md").write_text(table, encoding="utf-8")
    print(table)
    return results


if __name__ == "__main__":
    main()
