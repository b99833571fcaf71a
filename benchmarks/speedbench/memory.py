"""Peak memory of each sampling job, measured in fresh processes."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

from oncodiff.models import Conditions
from oncodiff.pipeline.export import load_export
from oncodiff.pipeline.sampling import draw_samples, sample_generators

from benchmarks.speedbench.common import log, sampling_config
from benchmarks.speedbench.reference import reference_chain

ROOT = Path(__file__).resolve().parents[2]  # the repository root, where `python -m benchmarks.run` runs
RUN_MODULE = "benchmarks.run"  # its --child-memory runs a job


def child_memory(spec_path: Path) -> None:
    """Run a memory measurement's jobs (in a fresh process), printing each job's peak RSS as one JSON line."""
    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec["threads"])
    model = load_export(spec["run"])
    saved = torch.load(spec["conditions"], weights_only=False)
    shape = saved["shape"]
    import_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for job in spec["jobs"]:
        resident = _rss_mb()
        try:  # Linux: reset the peak RSS, so the peak below is this job's, not the imports' (or an earlier job's)
            Path("/proc/self/clear_refs").write_text("5")
            reset = True
        except OSError:
            reset = False
        kind, n = job["job"], job["samples"]
        if kind == "reference":
            for _ in range(n):
                reference_chain(model.net, model.config, saved["one"], torch.randn(1, *shape), job["steps"])
        elif kind in ("ours", "split"):
            cond = saved["split"] if kind == "split" else saved["one"]
            config = sampling_config(model.config, job["sampler"], job["steps"])
            draw_samples(model.net, config, cond, n, sample_generators(0, [str(i) for i in range(cond.batch_size)], n))
        peak = _status_mb("VmHWM") if reset else None  # ru_maxrss keeps the import peak in a threaded process
        print(json.dumps({"name": job["name"], "maxrss_mb": peak or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                          / 1024, "loaded_mb": resident, "import_peak_mb": import_peak, "peak_reset": reset}))


def _rss_mb() -> float | None:
    return _status_mb("VmRSS")


def _status_mb(field: str) -> float | None:
    try:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return None


def bench_memory(run: Path, out: Path, cond: Conditions, split_cond: Conditions, shape, threads: int,
                 groups: list[list[dict]]) -> dict:
    """Peak RSS of each job, torch's allocations included, in fresh processes (one per group of jobs, run
    concurrently); on Linux the peak is reset before each job (/proc/self/clear_refs), so it is the job's own."""
    work = out / "memory"
    work.mkdir(exist_ok=True)
    conditions = work / "conditions.pt"
    torch.save({"one": cond.select(slice(0, 1)), "split": split_cond, "shape": shape}, conditions)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH"))
                                                       if p)}  # oncodiff from this checkout, as in the parent
    running = []
    for k, jobs in enumerate(groups):
        spec = work / f"group{k}.json"
        spec.write_text(json.dumps({"jobs": jobs, "run": str(run), "conditions": str(conditions), "threads": threads}))
        running.append((jobs, subprocess.Popen([sys.executable, "-m", RUN_MODULE, "--child-memory", str(spec)], cwd=ROOT,
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)))
    results = {}
    for jobs, process in running:
        stdout, stderr = process.communicate()
        measured = {}
        for line in stdout.strip().splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                measured[row.pop("name")] = row
        for job in jobs:
            if job["name"] not in measured:
                results[job["name"]] = {"error": stderr[-500:] or f"exit status {process.returncode}", **job}
                continue
            row = results[job["name"]] = {**measured[job["name"]], **job}
            row["above_loaded_mb"] = None if row["loaded_mb"] is None else row["maxrss_mb"] - row["loaded_mb"]
            log(f"memory {job['name']}: {row['maxrss_mb']:.0f} MB")
    for path in work.iterdir():
        path.unlink()
    work.rmdir()
    return results
