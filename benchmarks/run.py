"""Speed benchmarks (issue 7): our training and sampling against a plain reference, measured in one run.

    python benchmarks/run.py --out benchmarks/results/speed --run RUN --cohort COHORT   # a trained demo run
    python benchmarks/run.py --out DIR                      # synthesises a brain cohort, trains the demo preset
    python benchmarks/run.py --out DIR --quick              # tiny sizes: a smoke test (tests/test_benchmark_run.py)

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
import platform
import resource
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import DiffusionInferer
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from oncodiff.config import Config, load_config
from oncodiff.diffusion import randn_per_element
from oncodiff.evaluation.metrics import image_metrics
from oncodiff.evaluation.report.tables import markdown
from oncodiff.models import (
    Conditions,
    conditions_from_batch,
    target_from_batch,
)
from oncodiff.pipeline.cases import CaseSet, load_cases
from oncodiff.models.factory import ModelLayout
from oncodiff.pipeline.export import ExportedModel, load_export
from oncodiff.pipeline.predict import Predictions, case_conditions, predict_cases, predictions_from_generated
from oncodiff.pipeline.sampling import draw_samples, sample_generators
from oncodiff.pipeline.volumes import CaseVolumes, load_segmenter
from oncodiff.runs import RunFolder

REFERENCE_STEPS = 200
SSIM_TOLERANCE = 0.01  # issue 7: a speed setting's in-tumour SSIM within 0.01 of the reference's
SAMPLING_GOAL = 20.0  # issue 7: 8 samples of one 2D case >= 20x faster than the reference
TRAINING_GOAL = 2.0  # issue 7: training throughput >= 2x the fp32 reference loop on CPU
CLASS_MODE = "null"  # every method samples with the null class: outcome unknown, and no class prior involved

# (name, sampler, steps, quick steps). "ours" = our sampling path (draw_samples): the run's precision
# (bf16 autocast), all samples of a case batched into one forward pass, inference_mode.
SETTINGS = [
    ("ddim200", "ddim", 200, 4),
    ("ddim50", "ddim", 50, 3),
    ("ddim20", "ddim", 20, 2),
    ("dpmpp20", "dpmpp", 20, 2),
    ("ddim10", "ddim", 10, 2),
    ("dpmpp10", "dpmpp", 10, 2),
    ("ddim5", "ddim", 5, 2),
    ("dpmpp5", "dpmpp", 5, 2),
    ("single_step", "single_step", 1, 1),
]
QUICK_REFERENCE_STEPS = 4
TEST_SPLIT_SETTINGS = ("ddim20", "ddim10", "dpmpp10", "dpmpp5", "single_step")  # the whole split: fast ones only
QUICK_MODEL = ["model.channels=[8,16]", "model.attention_levels=[false,true]", "model.norm_num_groups=8",
               "model.num_head_channels=8", "model.token_dim=16", "data.crop_size=[32,32]"]


# ---------------------------------------------------------------------------------------------- helpers


def now() -> float:
    return time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        flags = ""
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "avx512": "avx512f" in flags, "amx": "amx_tile" in flags,
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "python": platform.python_version()}


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(n: int, dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    """Best TFLOP/s of an n x n @ n x n matmul (2 n^3 FLOPs) over ``repeats`` timed runs."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = now()
        torch.mm(a, b)
        sync(device)
        best = min(best, now() - start)
    return 2 * n**3 / best / 1e12


def forward_flops(net: nn.Module, cond: Conditions, shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass for one crop, counted by torch.utils.flop_counter (convolutions and matmuls)."""
    x = torch.zeros((1, *shape), device=cond.image.device)
    t = torch.full((1,), 500, dtype=torch.long, device=cond.image.device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x, t, cond.select(slice(0, 1)))
    return int(counter.get_total_flops())


def sampling_config(config: Config, sampler: str, steps: int) -> Config:
    return config.with_overrides([f"sampling.sampler={sampler}", f"sampling.steps={steps}", "sampling.eta=0.0",
                                  "sampling.guidance_scale=1.0"])


# -------------------------------------------------------------------------------------------- reference


class _ReferenceModel(nn.Module):
    """Our network with one case's conditions bound, called as DiffusionInferer calls a MONAI U-Net."""

    def __init__(self, net: nn.Module, cond: Conditions):
        super().__init__()
        self.net, self.cond = net, cond

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context=None) -> torch.Tensor:
        t = timesteps.long().expand(x.shape[0])
        return self.net(x, t, self.cond).prediction


def reference_scheduler(config: Config, steps: int) -> DDIMScheduler:
    """MONAI DDIM for our training schedule and parameterisation; no x0 clipping (our sampling.clip_x0=null)."""
    diffusion = config.diffusion
    schedules = {"cosine": "cosine", "linear": "linear_beta", "scaled_linear": "scaled_linear_beta"}
    if diffusion.schedule not in schedules:
        raise SystemExit(f"the reference uses MONAI schedulers; diffusion.schedule={diffusion.schedule} has none")
    prediction = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}[diffusion.prediction]
    kwargs = {} if diffusion.schedule == "cosine" else {"beta_start": diffusion.beta_start,
                                                        "beta_end": diffusion.beta_end}
    scheduler = DDIMScheduler(num_train_timesteps=diffusion.num_train_timesteps,
                              schedule=schedules[diffusion.schedule], clip_sample=False,
                              prediction_type=prediction, **kwargs)
    scheduler.set_timesteps(steps)
    return scheduler


def reference_chain(net: nn.Module, config: Config, cond: Conditions, x_T: torch.Tensor, steps: int) -> torch.Tensor:
    """One sample, the papers' way: DiffusionInferer.sample, MONAI DDIM, fp32, batch 1, no_grad."""
    scheduler = reference_scheduler(config, steps)
    inferer = DiffusionInferer(scheduler)
    with torch.no_grad():
        return inferer.sample(input_noise=x_T, diffusion_model=_ReferenceModel(net, cond), scheduler=scheduler,
                              verbose=False)


# --------------------------------------------------------------------------------------------- sampling


def quality(model: ExportedModel, cases: CaseSet, predictions: Predictions) -> dict:
    """In-tumour SSIM (of the mean prediction, and of single samples) and the volume-change error."""
    config = model.config
    post = cases.batch["post"][:, 0].numpy()
    tumor = cases.batch["tumor_mask"][:, 0].numpy() > 0
    dims = post.ndim - 1
    ev = config.evaluation
    mean_rows = image_metrics(predictions.mean, post, tumor, ev.bbox_margin, ev.data_range, spatial_dims=dims)
    n = predictions.samples.shape[1]
    sample_rows = image_metrics(predictions.samples.reshape(-1, *post.shape[1:]), np.repeat(post, n, axis=0),
                                np.repeat(tumor, n, axis=0), ev.bbox_margin, ev.data_range, spatial_dims=dims)
    volumes = CaseVolumes.measure(load_segmenter(model.path), cases, predictions, ev.response_threshold)
    change = volumes.change()
    pred = np.nanmean(change, axis=1) if np.isfinite(change).any() else np.full(len(cases), np.nan)
    true = volumes.true_change()
    ok = np.isfinite(pred) & np.isfinite(true)
    per_case = [r["ssim_tumor"] for r in mean_rows]
    return {
        "ssim_tumor": _mean(per_case),
        "ssim_tumor_per_case": per_case,
        "sample_ssim_tumor": _mean([r["ssim_tumor"] for r in sample_rows]),
        "psnr_tumor": _mean([r["psnr_tumor"] for r in mean_rows]),
        "volume_change_mae_pp": float(100 * np.abs(pred[ok] - true[ok]).mean()) if ok.any() else None,
        "volume_change_pred_pp": [None if not np.isfinite(p) else float(100 * p) for p in pred],
        "volume_source": volumes.source,
        "volume_cases": int(ok.sum()),
    }


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


def bench_sampling(model: ExportedModel, cases: CaseSet, settings: list, reference_steps: int, n_samples: int,
                   seed: int, flops: int, device: torch.device) -> dict:
    """Each case: the reference's N chains one at a time, then every setting's N samples batched.

    Interleaving per case spreads the machine's load changes over all methods alike.
    """
    net, config = model.net, model.config
    # The reference is what a user writes: the network as built, in PyTorch's default (contiguous) memory format,
    # not our channels_last export (load_export).
    reference_net = _copy(net).to(memory_format=torch.contiguous_format)
    cond = case_conditions(model, cases, CLASS_MODE).to(device)
    shape = (net.target_channels, *cond.image.shape[2:])
    keys = [c.key for c in cases.cases]
    configs = {name: sampling_config(config, sampler, steps) for name, sampler, steps in settings}
    # Warm-up: first calls build oneDNN primitives; time none of them.
    warm = cond.select(slice(0, 1))
    reference_chain(reference_net, config, warm, torch.randn((1, *shape), device=device), 2)
    for name, sampler, steps in settings:
        gens = sample_generators(seed + 1, keys[:1], n_samples)
        draw_samples(net, sampling_config(config, sampler, min(steps, 2)), warm, n_samples, gens)
    ref_out, ref_chain_s, ref_case_s = [], [], []
    ours_out = {name: [] for name, _, _ in settings}
    ours_case_s = {name: [] for name, _, _ in settings}
    for i, key in enumerate(keys):
        one = cond.select(slice(i, i + 1))
        gens = sample_generators(seed, [key], n_samples)
        chains, start_case = [], now()
        for k in range(n_samples):
            x_T = randn_per_element((1, *shape), gens[k:k + 1], device)  # the same x_T as draw_samples' row k
            start = now()
            chains.append(reference_chain(reference_net, config, one, x_T, reference_steps))
            sync(device)
            ref_chain_s.append(now() - start)
        ref_case_s.append(now() - start_case)
        ref_out.append(torch.cat(chains)[None])
        log(f"case {i + 1}/{len(keys)}: reference {ref_case_s[-1]:.1f} s for {n_samples} samples")
        for name, _, _ in settings:
            gens = sample_generators(seed, [key], n_samples)
            start = now()
            ours_out[name].append(draw_samples(net, configs[name], one, n_samples, gens))
            sync(device)
            ours_case_s[name].append(now() - start)
        log("  ours: " + ", ".join(f"{name} {ours_case_s[name][-1]:.2f} s" for name, _, _ in settings))
    # N = 1: one sample of the first case (the reference's is its first chain of each case).
    ours_n1 = {}
    for name, _, _ in settings:
        times = []
        for _ in range(3):
            gens = sample_generators(seed, keys[:1], 1)
            start = now()
            draw_samples(net, configs[name], cond.select(slice(0, 1)), 1, gens)
            sync(device)
            times.append(now() - start)
        ours_n1[name] = float(np.median(times))
    ref_n1 = float(np.median(ref_chain_s[::n_samples]))
    ref_n8 = float(np.mean(ref_case_s))
    reference_quality = quality(model, cases, predictions_from_generated(cases.batch["pre"], torch.cat(ref_out).cpu(),
                                                                         config.diffusion.target))
    reference = {"sampler": "MONAI DDIMScheduler via DiffusionInferer.sample", "steps": reference_steps,
                 "precision": "fp32", "batch": 1, "grad_mode": "no_grad",
                 "n1_seconds": ref_n1, "n_seconds": ref_n8, "chain_seconds_median": float(np.median(ref_chain_s)),
                 "achieved_tflops": flops * reference_steps * n_samples / ref_n8 / 1e12, **reference_quality}
    rows = []
    for name, sampler, steps in settings:
        q = quality(model, cases, predictions_from_generated(cases.batch["pre"], torch.cat(ours_out[name]).cpu(),
                                                              config.diffusion.target))
        seconds = float(np.mean(ours_case_s[name]))
        delta = None if q["ssim_tumor"] is None or reference_quality["ssim_tumor"] is None else \
            q["ssim_tumor"] - reference_quality["ssim_tumor"]
        calls = 1 if sampler == "single_step" else steps
        rows.append({
            "name": name, "sampler": sampler, "steps": calls, "precision": config.training.precision,
            "batch": n_samples, "grad_mode": "inference_mode",
            "n1_seconds": ours_n1[name], "n_seconds": seconds,
            "speedup_n1": ref_n1 / ours_n1[name], "speedup_n": ref_n8 / seconds,
            "achieved_tflops": flops * calls * n_samples / seconds / 1e12,
            "ssim_tumor_delta": delta,
            "ssim_parity": None if delta is None else bool(abs(delta) <= SSIM_TOLERANCE),
            "ssim_no_loss": None if delta is None else bool(delta >= -SSIM_TOLERANCE),
            **q,
        })
    return {"cases": keys, "samples": n_samples, "class_label": CLASS_MODE, "seed": seed,
            "reference": reference, "settings": rows}


def bench_test_split(model: ExportedModel, split: CaseSet, settings: list, n_samples: int, seed: int,
                     reference_chain_s: float, reference_steps: int, device: torch.device) -> dict:
    """Every test case x N samples through predict_cases (sampling.batch_size rows per forward pass)."""
    rows = []
    for name, sampler, steps in settings:
        config = sampling_config(model.config, sampler, steps)
        start = now()
        predict_cases(model, split, n_samples, seed, CLASS_MODE, config)
        sync(device)
        rows.append({"name": name, "seconds": now() - start, "batch_size": config.sampling.batch_size})
    estimate = reference_chain_s * len(split) * n_samples
    for row in rows:
        row["speedup_vs_reference_estimate"] = estimate / row["seconds"]
    return {"cases": len(split), "samples": n_samples, "settings": rows,
            "reference_estimate_seconds": estimate,
            "reference_estimate": f"median reference chain ({reference_steps} steps) x cases x samples; not run"}


# --------------------------------------------------------------------------------------------- variants


def bench_variants(model: ExportedModel, cond: Conditions, batches: list[int], extra_batches: list[int], flops: int,
                   peak_bf16: float, repeats: int, try_compile: bool) -> list[dict]:
    """Forward-pass time per crop for each way of running the network (the utilisation experiments);
    ours also at ``extra_batches`` (how many rows per forward pass pay off: sampling.batch_size)."""
    net = model.net
    shape = (net.target_channels, *cond.image.shape[2:])
    bf16 = lambda: torch.autocast(cond.image.device.type, dtype=torch.bfloat16)
    plain = _copy(net).to(memory_format=torch.contiguous_format)  # the network as built, default memory format
    variants = [
        ("fp32, no_grad", nullcontext, torch.no_grad, None),
        ("bf16 autocast, no_grad", bf16, torch.no_grad, None),
        ("bf16 autocast, inference_mode", bf16, torch.inference_mode, None),
        ("bf16 autocast, inference_mode, channels_last weights and input", bf16, torch.inference_mode,
         "channels_last_input"),
        ("bf16 weights + bf16 autocast, inference_mode", bf16, torch.inference_mode, "bf16_weights"),
    ]
    if net.spatial_dims == 2:  # load_export's 2D networks: channels_last weights, inputs as they come
        variants.insert(3, ("bf16 autocast, inference_mode, channels_last weights (ours)", bf16, torch.inference_mode,
                            "ours"))
    else:
        variants[2] = ("bf16 autocast, inference_mode (ours)", bf16, torch.inference_mode, None)
    if try_compile:
        variants.append(("bf16 autocast, inference_mode, torch.compile", bf16, torch.inference_mode, "compile"))
    rows = []
    for name, precision, grad_mode, change in variants:
        sizes = batches + extra_batches if name.endswith("(ours)") else batches
        for batch in sizes if change != "compile" else batches[1:2]:  # compile: one shape, minutes of warm-up
            subject = plain
            c = cond.select(slice(0, 1)).repeat_interleave(batch)
            x = torch.randn((batch, *shape), device=cond.image.device)
            t = torch.full((batch,), 500, dtype=torch.long, device=cond.image.device)
            if change == "ours":
                subject = net
            elif change == "channels_last_input":
                subject = _copy(plain).to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
                c = replace(c, image=c.image.contiguous(memory_format=torch.channels_last)) if x.dim() == 4 else c
            elif change == "bf16_weights":  # no per-call weight casts; the inputs stay float32 (autocast casts them)
                subject = _copy(plain).to(torch.bfloat16)
            elif change == "compile":
                subject = torch.compile(_copy(net))  # ours, compiled
            start = now()
            with grad_mode(), precision():
                try:
                    subject(x, t, c)
                except (RuntimeError, TypeError, ValueError, NotImplementedError) as e:  # a result too
                    rows.append({"name": name, "batch": batch, "error": f"{type(e).__name__}: {e}"[:300]})
                    continue
                warmup = now() - start
                times = []
                for _ in range(repeats):
                    start = now()
                    subject(x, t, c)
                    sync(x.device)
                    times.append(now() - start)
            seconds = float(np.median(times))
            tflops = flops * batch / seconds / 1e12
            rows.append({"name": name, "batch": batch, "ms_per_crop": 1e3 * seconds / batch, "tflops": tflops,
                         "fraction_bf16_peak": tflops / peak_bf16, "first_call_seconds": warmup})
    return rows


def _copy(net: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(net)


# --------------------------------------------------------------------------------------------- training


def training_batch(cases: CaseSet, batch_size: int, dims: int, depth: int) -> dict:
    """A training batch of ``batch_size`` from the cases (repeated); 3D by stacking each 2D crop ``depth`` times."""
    index = [i % len(cases) for i in range(batch_size)]
    batch = {k: v[index] for k, v in cases.batch.items() if isinstance(v, torch.Tensor)}
    if dims == 3:
        for key in ("pre", "post", "tumor_mask", "post_mask", "anatomy"):
            batch[key] = batch[key].unsqueeze(-1).repeat(*([1] * batch[key].dim()), depth).contiguous()
    return batch


def reference_training_step(net: nn.Module, config: Config, batch: dict, optimizer, scheduler) -> float:
    """A plain fp32 step: MONAI add_noise, the network, MSE on its parameterisation's target, Adam."""
    cond = conditions_from_batch(batch, config.model)
    x0 = target_from_batch(batch, config.diffusion.target, config.model.generate_mask).float()
    noise = torch.randn_like(x0)
    t = torch.randint(0, scheduler.num_train_timesteps, (x0.shape[0],), device=x0.device)
    x_t = scheduler.add_noise(original_samples=x0, noise=noise, timesteps=t)
    target = {"eps": noise, "x0": x0, "v": None}[config.diffusion.prediction]
    if target is None:
        target = scheduler.get_velocity(x0, noise, t)
    loss = F.mse_loss(net(x_t, t, cond).prediction, target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def bench_training(config: Config, layout: ModelLayout, state: dict | None, cases: CaseSet, batch_size: int,
                   steps: int, dims: int, crop: tuple[int, ...]) -> dict:
    """Samples/s: our step (the training module's objective under its precision, AdamW) vs the fp32 reference."""
    from oncodiff.training.stages import (
        module_class,  # lightning: imported where needed, not in memory children
    )

    config = config.with_overrides([f"data.dims={dims}", f"data.crop_size={list(crop)}"])
    layout = replace(layout, spatial_dims=dims, crop_size=tuple(crop))
    batch = training_batch(cases, batch_size, dims, crop[-1] if dims == 3 else 1)
    module = module_class(config)(config, layout, total_steps=1000)
    if state is not None:
        module.net.load_state_dict(state)
    reference_net = _copy(module.net)
    ours_opt = torch.optim.AdamW(module.parameters(), lr=1e-5)
    ref_opt = torch.optim.Adam(reference_net.parameters(), lr=1e-5)
    schedule = {"cosine": "cosine", "linear": "linear_beta", "scaled_linear": "scaled_linear_beta"}
    scheduler = DDPMScheduler(num_train_timesteps=config.diffusion.num_train_timesteps,
                              schedule=schedule.get(config.diffusion.schedule, "cosine"))
    precision = config.training.precision
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed")

    def ours() -> None:
        with autocast:
            loss, _ = module.objective(batch, validation=False)
        ours_opt.zero_grad(set_to_none=True)
        loss.backward()
        ours_opt.step()

    def reference() -> None:
        reference_training_step(reference_net, config, batch, ref_opt, scheduler)

    ours(), reference()  # warm-up
    times = {"ours": [], "reference": []}
    for _ in range(steps):  # interleaved, so load changes hit both alike
        for name, fn in (("ours", ours), ("reference", reference)):
            start = now()
            fn()
            times[name].append(now() - start)
    ours_s, ref_s = float(np.median(times["ours"])), float(np.median(times["reference"]))
    return {"dims": dims, "crop": list(crop), "batch": batch_size, "steps_timed": steps, "precision": precision,
            "parameters": sum(p.numel() for p in module.net.parameters()),
            "ours_step_seconds": ours_s, "reference_step_seconds": ref_s,
            "ours_samples_per_s": batch_size / ours_s, "reference_samples_per_s": batch_size / ref_s,
            "ratio": ref_s / ours_s}


# ----------------------------------------------------------------------------------------------- memory


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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    running = []
    for k, jobs in enumerate(groups):
        spec = work / f"group{k}.json"
        spec.write_text(json.dumps({"jobs": jobs, "run": str(run), "conditions": str(conditions), "threads": threads}))
        running.append((jobs, subprocess.Popen([sys.executable, __file__, "--child-memory", str(spec)],
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


# ------------------------------------------------------------------------------------------------- main


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


def main(argv: list[str] | None = None) -> dict:
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
    args = parser.parse_args(argv)
    if args.child_memory:
        child_memory(args.child_memory)
        return {}
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.quick:
        args.patients, args.train_steps, args.cases = min(args.patients, 10), min(args.train_steps, 2), min(args.cases, 2)
    args.out.mkdir(parents=True, exist_ok=True)
    started, load_start = now(), loadavg()
    run, cohort, provenance = prepare(args)
    cache_dir = args.out / "cache" if args.run is None else None
    model = load_export(run, device)
    torch.manual_seed(args.seed)
    split = test_cases(run, model, cohort, cache_dir)
    cases = split.select(range(min(args.cases, len(split))))
    cond = case_conditions(model, cases, CLASS_MODE).to(device)
    shape = (model.net.target_channels, *cond.image.shape[2:])
    flops = forward_flops(model.net, cond, shape)
    settings = [(name, sampler, quick if args.quick else steps) for name, sampler, steps, quick in SETTINGS]
    if model.config.diffusion.prediction != "x0":  # single-step returns the x0 prediction: x0 models only
        settings = [s for s in settings if s[1] != "single_step"]
    reference_steps = QUICK_REFERENCE_STEPS if args.quick else REFERENCE_STEPS

    n_matmul = 512 if args.quick else 4096
    log(f"matmul peak ({n_matmul}^2) ...")
    peak = {"n": n_matmul, "bf16_tflops": matmul_peak(n_matmul, torch.bfloat16, device, 3),
            "fp32_tflops": matmul_peak(n_matmul, torch.float32, device, 3)}
    log(f"peak bf16 {peak['bf16_tflops']:.3f}, fp32 {peak['fp32_tflops']:.3f} TFLOP/s; sampling {len(cases)} cases ...")
    sampling = bench_sampling(model, cases, settings, reference_steps, args.samples, args.seed, flops, device)
    for row in [sampling["reference"], *sampling["settings"]]:
        row["fraction_bf16_peak"] = row["achieved_tflops"] / peak["bf16_tflops"]
        row["fraction_fp32_peak"] = row["achieved_tflops"] / peak["fp32_tflops"]
    log("test split ...")
    fast = [s for s in settings if s[0] in TEST_SPLIT_SETTINGS]
    test_split = bench_test_split(model, split, fast, args.samples, args.seed,
                                  sampling["reference"]["chain_seconds_median"], reference_steps, device)
    log("forward-pass variants ...")
    variants = bench_variants(model, cond, [1, args.samples, 32] if not args.quick else [2],
                              [] if args.quick else [128], flops, peak["bf16_tflops"], 2 if args.quick else 5,
                              args.compile)
    log("training throughput ...")
    state = model.net.state_dict()
    crop = tuple(model.config.data.crop_size)
    crop3d = (crop[0], crop[1], 4 if args.quick else 16)
    training = {
        "2d": bench_training(model.config, model.layout, state, cases, 4 if args.quick else model.config.training.batch_size,
                             1 if args.quick else 4, 2, crop),
        "3d": bench_training(model.config, model.layout, None, cases, 2, 1 if args.quick else 3, 3, crop3d),
    }
    training["3d"]["model"] = "the demo model's network as 3D (no 3D preset in this tree), randomly initialised"
    peak_end = {"bf16_tflops": matmul_peak(n_matmul, torch.bfloat16, device, 3),
                "fp32_tflops": matmul_peak(n_matmul, torch.float32, device, 3)}
    log("peak memory (fresh processes) ...")
    mem_steps = 2 if args.quick else 20
    jobs = [] if args.quick else [{"name": "loaded", "job": "loaded", "samples": 0, "steps": 0}]
    jobs += [{"name": "reference", "job": "reference", "samples": args.samples, "steps": mem_steps},
             {"name": "ours_one_case", "job": "ours", "sampler": "ddim", "samples": args.samples, "steps": mem_steps}]
    if not args.quick:
        jobs.append({"name": "ours_test_split", "job": "split", "sampler": "ddim", "samples": args.samples,
                     "steps": mem_steps})
    groups = [jobs] if args.quick else [[job] for job in jobs]  # quick: one process (its numbers mean nothing)
    split_cond = case_conditions(model, split, CLASS_MODE)
    memory = bench_memory(run, args.out, cond.to("cpu"), split_cond, shape, args.threads, groups)
    results = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else "main(" + repr(argv) + ")",
        "quick": args.quick,
        "machine": machine() | {"device": str(device), "loadavg_start": load_start, "loadavg_end": loadavg()},
        "model": {"provenance": provenance, "run": str(run), "preset": model.config.preset,
                  "crop": list(crop), "parameters": sum(p.numel() for p in model.net.parameters()),
                  "prediction": model.config.diffusion.prediction, "precision": model.config.training.precision,
                  "flops_per_forward_per_crop": flops, "generate_mask": model.config.model.generate_mask},
        "peak": peak | {"at_end": peak_end},
        "sampling": sampling,
        "test_split": test_split,
        "training": training,
        "memory": memory,
        "variants": variants,
        "seconds": now() - started,
    }
    results["goals"] = goals(results)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = tables(results)
    (args.out / "table.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    return results


def goals(r: dict) -> dict:
    settings = r["sampling"]["settings"]
    parity = [s for s in settings if s["ssim_parity"]]
    best = max(parity, key=lambda s: s["speedup_n"]) if parity else None
    fastest_sampling = max((s["achieved_tflops"] for s in settings), default=0.0)
    return {
        "sampling": {"goal": f">= {SAMPLING_GOAL:g}x the reference for {r['sampling']['samples']} samples of one "
                             f"case, in-tumour SSIM within {SSIM_TOLERANCE} of the reference",
                     "best_setting": None if best is None else best["name"],
                     "speedup": None if best is None else best["speedup_n"],
                     "met": bool(best is not None and best["speedup_n"] >= SAMPLING_GOAL)},
        "training": {"goal": f">= {TRAINING_GOAL:g}x the fp32 reference loop's samples/s (2D demo)",
                     "ratio_2d": r["training"]["2d"]["ratio"], "ratio_3d": r["training"]["3d"]["ratio"],
                     "met": bool(r["training"]["2d"]["ratio"] >= TRAINING_GOAL)},
        "utilisation": {"best_sampling_fraction_bf16_peak": fastest_sampling / r["peak"]["bf16_tflops"]},
    }


def md(header: list, rows: list) -> str:
    return markdown([str(h) for h in header], [[str(c) for c in row] for row in rows])


def _f(value, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def tables(r: dict) -> str:
    s, ref = r["sampling"], r["sampling"]["reference"]
    m = r["machine"]
    lines = [f"# Speed benchmark{' (--quick: smoke test, numbers mean nothing)' if r['quick'] else ''}", "",
             (f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['torch']}, {m['threads']} threads, "
             f"OMP_WAIT_POLICY={m['omp_wait_policy']}, device {m['device']}; load average {m['loadavg_start']} at "
             f"start, {m['loadavg_end']} at end. Command: `{r['command']}`."),
             (f"Model: {r['model']['provenance']}; crop {r['model']['crop']}, {r['model']['parameters']:,} parameters, "
             f"{r['model']['flops_per_forward_per_crop'] / 1e9:.2f} GFLOP per forward pass per crop."),
             (f"Measured matmul peak ({r['peak']['n']}^2): bf16 {r['peak']['bf16_tflops']:.3f} TFLOP/s, "
             f"fp32 {r['peak']['fp32_tflops']:.3f} TFLOP/s (at the end: {r['peak']['at_end']['bf16_tflops']:.3f}, "
             f"{r['peak']['at_end']['fp32_tflops']:.3f})."), "",
             (f"## Sampling: one case, N = 1 and N = {s['samples']} (mean over {len(s['cases'])} test cases, "
             f"same seeds and starting noise for every method)"), ""]
    rows = [["reference: MONAI DDIM, fp32, batch 1", ref["steps"], _f(ref["n1_seconds"]), _f(ref["n_seconds"]),
             "1", "1", _f(ref["achieved_tflops"], ".3f"), _f(100 * ref["fraction_bf16_peak"], ".1f"),
             _f(ref["ssim_tumor"], ".4f"), "-", _f(ref["volume_change_mae_pp"], ".1f")]]
    for row in s["settings"]:
        rows.append([f"ours {row['name']} ({row['precision']}, batched)", row["steps"], _f(row["n1_seconds"]),
                     _f(row["n_seconds"]), _f(row["speedup_n1"], ".1f"), _f(row["speedup_n"], ".1f"),
                     _f(row["achieved_tflops"], ".3f"), _f(100 * row["fraction_bf16_peak"], ".1f"),
                     _f(row["ssim_tumor"], ".4f"), _f(row["ssim_tumor_delta"], "+.4f"),
                     _f(row["volume_change_mae_pp"], ".1f")])
    lines.append(md(["method", "network calls", "N=1 s", f"N={s['samples']} s", "speed-up N=1",
                           f"speed-up N={s['samples']}", "TFLOP/s", "% bf16 peak", "in-tumour SSIM",
                           "SSIM vs ref", "vol. change MAE pp"], rows))
    t = r["test_split"]
    lines += ["", f"## Whole test split: {t['cases']} cases x {t['samples']} samples (predict_cases)", "",
              md(["setting", "seconds", "speed-up vs reference (estimated)"],
                       [[x["name"], _f(x["seconds"], ".1f"), _f(x["speedup_vs_reference_estimate"], ".0f")]
                        for x in t["settings"]]),
              f"Reference estimate: {t['reference_estimate_seconds']:.0f} s ({t['reference_estimate']})."]
    tr = r["training"]
    lines += ["", "## Training throughput (samples/s; interleaved steps, median)", "",
              md(["config", "crop", "batch", "ours (bf16 autocast, AdamW)", "reference (fp32, Adam)", "ratio"],
                       [[k, "x".join(map(str, v["crop"])), v["batch"], _f(v["ours_samples_per_s"]),
                         _f(v["reference_samples_per_s"]), _f(v["ratio"])] for k, v in tr.items()])]
    lines += ["", "## Peak memory (ru_maxrss of a fresh process)", "",
              md(["job", "peak RSS during the job MB", "resident before the job MB", "job's increase MB"],
                       [[k, _f(v.get("maxrss_mb"), ".0f"), _f(v.get("loaded_mb"), ".0f"),
                         _f(v.get("above_loaded_mb"), ".0f")]
                        for k, v in r["memory"].items()])]
    lines += ["", "## Forward-pass variants (median ms per crop)", "",
              md(["variant", "batch", "ms/crop", "TFLOP/s", "% bf16 peak"],
                       [[v["name"], v["batch"], _f(v.get("ms_per_crop")), _f(v.get("tflops"), ".3f"),
                         _f(100 * v["fraction_bf16_peak"], ".1f") if "fraction_bf16_peak" in v else v.get("error", "-")]
                        for v in r["variants"]])]
    g = r["goals"]
    lines += ["", "## Goals", "",
              (f"- Sampling: {g['sampling']['goal']}: best setting at parity {g['sampling']['best_setting']} "
              f"({_f(g['sampling']['speedup'], '.1f')}x): {'met' if g['sampling']['met'] else 'NOT met'}."),
              (f"- Training: {g['training']['goal']}: {g['training']['ratio_2d']:.2f}x (3D: "
              f"{g['training']['ratio_3d']:.2f}x): {'met' if g['training']['met'] else 'NOT met'}."),
              (f"- Utilisation: best sampling setting reaches "
              f"{100 * g['utilisation']['best_sampling_fraction_bf16_peak']:.1f} % of the measured bf16 peak.")]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
