"""Wall time of `oncodiff synth` (not a test: machines are shared and timings are noisy).

    python -m benchmarks.synth_speed [--workers 2] [--sites brain,lung,breast] [--quick]

Targets: 200 patients in 2D under 60 s and 100 patients in 3D (96 x 96 x 16 or larger)
under 5 minutes, on 2 CPU cores. ``--quick`` runs a tenth of the patients to smoke-test the script.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

from oncodiff.cohort import load_cohort, read_image
from oncodiff.synth import synthesize

TARGETS = {2: (200, 60.0), 3: (100, 300.0)}  # dims -> (patients, seconds)


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_site(site: str, dims: int, n_patients: int, workers: int, root: Path):
    """(wall seconds, CPU seconds, image shape, MB written) for one synthesis."""
    out = root / f"{site}{dims}d"
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    synthesize(site, n_patients, dims, seed=0, out=out, workers=workers)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    cohort = load_cohort(out)
    shape = read_image(cohort.path(cohort.scans.iloc[0]["image"])).shape
    megabytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    shutil.rmtree(out)
    return seconds, cpu, shape, megabytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sites", default="brain,lung,breast")
    parser.add_argument("--dims", default="2,3")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(f"{'site':7s} {'dims':>4s} {'patients':>8s} {'shape':>15s} {'seconds':>8s} {'cpu-s':>7s} {'target':>7s} "
          f"{'MB':>6s}  ok")
    with tempfile.TemporaryDirectory() as tmp:
        for dims in (int(d) for d in args.dims.split(",")):
            n_patients, target = TARGETS[dims]
            if args.quick:
                n_patients, target = n_patients // 10, target / 10
            for site in args.sites.split(","):
                seconds, cpu, shape, megabytes = time_site(site, dims, n_patients, args.workers, Path(tmp))
                ok = "yes" if seconds < target else "NO"
                print(f"{site:7s} {dims:4d} {n_patients:8d} {str(shape):>15s} {seconds:8.1f} {cpu:7.1f} {target:7.0f} "
                      f"{megabytes:6.0f}  {ok}", flush=True)
    print(f"workers={args.workers}; cpu-s / 2 estimates the wall time on two idle cores (shared machines are noisy)")


if __name__ == "__main__":
    main()
