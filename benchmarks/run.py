"""Speed benchmarks: our training and sampling against a plain reference, measured in one run.

    python -m benchmarks.run --out benchmarks/results/speed --run RUN --cohort COHORT   # a trained demo run
    python -m benchmarks.run --out DIR                      # synthesises a brain cohort, trains the demo preset
    python -m benchmarks.run --out DIR --quick              # tiny sizes: a smoke test (tests/test_benchmark_run.py)

The reference is what a user would write from the papers: MONAI's ``DiffusionInferer.sample`` with
MONAI's ``DDIMScheduler`` at 200 steps, fp32, no autocast, one sample at a time, under
``torch.no_grad()``, on the same network weights and the same starting noise as ours. Training's
reference is a plain fp32 loop (MONAI ``DDPMScheduler.add_noise``, MSE, ``torch.optim.Adam``) on the
same network and batch. Every ratio compares two measurements taken in this one process, interleaved
where they are long, because absolute times on a shared machine are noise.

Writes OUT/results.json (every figure) and OUT/table.md (the short table). benchmarks/README.md says
what each number means.
"""

from __future__ import annotations

import os

# Before torch is imported: with the default (active) OpenMP wait policy, 2 threads on 2 cores shared
# with other processes spin at every barrier, and one fp32 forward pass of the demo U-Net took 2.5 s
# instead of 0.04 s on our shared machine. PASSIVE threads sleep instead. Recorded in results.json.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import sys
from pathlib import Path

import torch

from oncodiff.config import load_config
from oncodiff.pipeline.cases import CaseSet, load_cases
from oncodiff.pipeline.export import ExportedModel, load_export
from oncodiff.pipeline.predict import case_conditions
from oncodiff.runs import RunFolder

from benchmarks.speedbench.common import (
    CLASS_MODE, QUICK_MODEL, QUICK_REFERENCE_STEPS, REFERENCE_STEPS, SETTINGS, TEST_SPLIT_SETTINGS, forward_flops,
    loadavg, log, machine, matmul_peak, now,
)
from benchmarks.speedbench.memory import bench_memory, child_memory
from benchmarks.speedbench.sampling import bench_sampling, bench_test_split, bench_variants
from benchmarks.speedbench.tables import goals, tables
from benchmarks.speedbench.training import bench_training


def prepare(args) -> tuple[Path, Path, str]:
    """(run, cohort, provenance): the given run and cohort, or a synthesised cohort and a fresh short training."""
    from oncodiff.synth import synthesize
    from oncodiff.training import train

    cohort = args.cohort
    if cohort is None:
        cohort = args.out / "cohort"
        if not (cohort / "cohort.yaml").is_file():
            log(f"synthesising a {args.patients}-patient brain cohort ...")
            synthesize("brain", args.patients, 2, seed=0, out=cohort, overwrite=True, workers=min(2, os.cpu_count()))
    if args.run is not None:
        return args.run, cohort, f"trained run {args.run}"
    run = args.out / "run"
    if not RunFolder(run).weights.is_file():
        overrides = [f"training.max_steps={args.train_steps}", "training.max_minutes=null", "evaluation.baselines=[]"]
        if args.quick:
            overrides += [*QUICK_MODEL, "training.batch_size=4", "training.samples_per_epoch=8",
                          "evaluation.segmenter_steps=5"]
        log(f"training the demo preset for {args.train_steps} steps ...")
        train(cohort, load_config("demo", overrides), run, cache_dir=args.out / "cache")
    return run, cohort, f"demo preset trained here for {args.train_steps} steps (undertrained: quality is a parity check)"


def test_cases(run: Path, model: ExportedModel, cohort: Path, cache_dir) -> CaseSet:
    folder = RunFolder(run)
    patients = list(folder.splits().test) if folder.splits_json.is_file() else None
    cases = load_cases(model, cohort, patients or None, cache_dir=cache_dir)
    return cases.select([i for i, c in enumerate(cases.cases) if c.has_truth] or range(len(cases)))


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speed"))
    parser.add_argument("--run", type=Path, help="a trained run folder (model/model.safetensors + config.json)")
    parser.add_argument("--cohort", type=Path, help="its cohort (default: synthesise a brain cohort under OUT)")
    parser.add_argument("--patients", type=int, default=40, help="patients of a synthesised cohort")
    parser.add_argument("--train-steps", type=int, default=200, help="training steps when no --run is given")
    parser.add_argument("--cases", type=int, default=4, help="test cases sampled by every method (quality, timing)")
    parser.add_argument("--samples", type=int, default=8, help="samples per case (the issue's N = 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (minutes of warm-up)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, no meaningful numbers")
    parser.add_argument("--child-memory", type=Path, help=argparse.SUPPRESS)
    return parser


def sampling_settings(model: ExportedModel, quick: bool) -> tuple[list[tuple], int]:
    """(name, sampler, steps) of every sampling setting this model can run, and the reference's steps."""
    settings = [(name, sampler, quick_steps if quick else steps) for name, sampler, steps, quick_steps in SETTINGS]
    if model.config.diffusion.prediction != "x0":  # single-step returns the x0 prediction: x0 models only
        settings = [s for s in settings if s[1] != "single_step"]
    return settings, QUICK_REFERENCE_STEPS if quick else REFERENCE_STEPS


def model_info(model: ExportedModel, run: Path, provenance: str, flops: float) -> dict:
    return {"provenance": provenance, "run": str(run), "preset": model.config.preset,
            "crop": list(model.config.data.crop_size), "parameters": sum(p.numel() for p in model.net.parameters()),
            "prediction": model.config.diffusion.prediction, "precision": model.config.training.precision,
            "flops_per_forward_per_crop": flops, "generate_mask": model.config.model.generate_mask}


def measure_peak(n: int, device: torch.device) -> dict:
    """bf16 and fp32 matmul TFLOP/s of an n x n product on ``device``."""
    return {"bf16_tflops": matmul_peak(n, torch.bfloat16, device, 3),
            "fp32_tflops": matmul_peak(n, torch.float32, device, 3)}


def bench_trainings(model: ExportedModel, cases: CaseSet, quick: bool) -> dict:
    """Training throughput of the model's network at its 2D crop, and of the same network as 3D."""
    state = model.net.state_dict()
    crop = tuple(model.config.data.crop_size)
    crop3d = (crop[0], crop[1], 4 if quick else 16)
    training = {
        "2d": bench_training(model.config, model.layout, state, cases, 4 if quick else model.config.training.batch_size,
                             1 if quick else 4, 2, crop),
        "3d": bench_training(model.config, model.layout, None, cases, 2, 1 if quick else 3, 3, crop3d),
    }
    training["3d"]["model"] = "the demo model's network as 3D (no 3D preset in this tree), randomly initialised"
    return training


def memory_groups(args: argparse.Namespace) -> list[list[dict]]:
    """The peak-memory jobs, one fresh process per group."""
    mem_steps = 2 if args.quick else 20
    jobs = [] if args.quick else [{"name": "loaded", "job": "loaded", "samples": 0, "steps": 0}]
    jobs += [{"name": "reference", "job": "reference", "samples": args.samples, "steps": mem_steps},
             {"name": "ours_one_case", "job": "ours", "sampler": "ddim", "samples": args.samples, "steps": mem_steps}]
    if not args.quick:
        jobs.append({"name": "ours_test_split", "job": "split", "sampler": "ddim", "samples": args.samples,
                     "steps": mem_steps})
    return [jobs] if args.quick else [[job] for job in jobs]  # quick: one process (its numbers mean nothing)


def command_line(argv: list[str] | None) -> str:
    return " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else "main(" + repr(argv) + ")"


def write_results(out: Path, results: dict) -> None:
    """results.json (with the goals) and table.md under ``out``; the table is printed too."""
    results["goals"] = goals(results)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = tables(results)
    (out / "table.md").write_text(table + "\n", encoding="utf-8")
    print(table)


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    if args.child_memory:
        child_memory(args.child_memory)
        return {}
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.quick:  # tiny sizes
        args.patients, args.train_steps, args.cases = min(args.patients, 10), min(args.train_steps, 2), min(args.cases, 2)
    started, load_start = now(), loadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    run, cohort, provenance = prepare(args)
    cache_dir = args.out / "cache" if args.run is None else None
    model = load_export(run, device)
    torch.manual_seed(args.seed)
    split = test_cases(run, model, cohort, cache_dir)
    cases = split.select(range(min(args.cases, len(split))))
    cond = case_conditions(model, cases, CLASS_MODE).to(device)
    shape = (model.net.target_channels, *cond.image.shape[2:])
    flops = forward_flops(model.net, cond, shape)
    settings, reference_steps = sampling_settings(model, args.quick)
    n_matmul = 512 if args.quick else 4096
    log(f"matmul peak ({n_matmul}^2) ...")
    peak = {"n": n_matmul} | measure_peak(n_matmul, device)
    log(f"peak bf16 {peak['bf16_tflops']:.3f}, fp32 {peak['fp32_tflops']:.3f} TFLOP/s; sampling {len(cases)} cases ...")
    sampling = bench_sampling(model, cases, settings, reference_steps, args.samples, args.seed, flops, device)
    for row in [sampling["reference"], *sampling["settings"]]:
        row |= {f"fraction_{kind}_peak": row["achieved_tflops"] / peak[f"{kind}_tflops"] for kind in ("bf16", "fp32")}
    log("test split ...")
    fast = [s for s in settings if s[0] in TEST_SPLIT_SETTINGS]
    test_split = bench_test_split(model, split, fast, args.samples, args.seed,
                                  sampling["reference"]["chain_seconds_median"], reference_steps, device)
    log("forward-pass variants ...")
    variants = bench_variants(model, cond, [1, args.samples, 32] if not args.quick else [2],
                              [] if args.quick else [128], flops, peak["bf16_tflops"], 2 if args.quick else 5,
                              args.compile)
    log("training throughput ...")
    training = bench_trainings(model, cases, args.quick)
    peak_end = measure_peak(n_matmul, device)
    log("peak memory (fresh processes) ...")
    memory = bench_memory(run, args.out, cond.to("cpu"), case_conditions(model, split, CLASS_MODE), shape, args.threads,
                          memory_groups(args))
    results = {"command": command_line(argv), "quick": args.quick,
               "machine": machine() | {"device": str(device), "loadavg_start": load_start, "loadavg_end": loadavg()},
               "model": model_info(model, run, provenance, flops), "peak": peak | {"at_end": peak_end},
               "sampling": sampling, "test_split": test_split, "training": training, "memory": memory,
               "variants": variants, "seconds": now() - started}
    write_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
