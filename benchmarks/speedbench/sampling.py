"""Sampling benchmarks: every setting against the reference on the same weights and noise (time, quality),
the whole test split, and the ways of running one forward pass (precision, memory format, compile)."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from oncodiff.diffusion import randn_per_element
from oncodiff.evaluation.metrics import image_metrics
from oncodiff.models import Conditions
from oncodiff.pipeline.cases import CaseSet
from oncodiff.pipeline.export import ExportedModel
from oncodiff.pipeline.predict import Predictions, case_conditions, predict_cases, predictions_from_generated
from oncodiff.pipeline.sampling import draw_samples, sample_generators
from oncodiff.pipeline.volumes import CaseVolumes, load_segmenter

from benchmarks.speedbench.common import CLASS_MODE, SSIM_TOLERANCE, log, now, sampling_config, sync
from benchmarks.speedbench.reference import reference_chain


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
    reference_net = copy_network(net).to(memory_format=torch.contiguous_format)
    cond = case_conditions(model, cases, CLASS_MODE).to(device)
    shape = (net.target_channels, *cond.image.shape[2:])
    keys = [c.key for c in cases.cases]
    configs = {name: sampling_config(config, sampler, steps) for name, sampler, steps in settings}
    _warm_up(model, reference_net, cond, shape, settings, keys, n_samples, seed, device)
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
    ours_n1 = {name: _one_sample_seconds(net, configs[name], cond, keys, seed, device) for name, _, _ in settings}
    reference_quality = quality(model, cases, predictions_from_generated(cases.batch["pre"], torch.cat(ref_out).cpu(),
                                                                         config.diffusion.target))
    reference = _reference_row(reference_steps, ref_chain_s, ref_case_s, n_samples, flops, reference_quality)
    rows = []
    for name, sampler, steps in settings:
        q = quality(model, cases, predictions_from_generated(cases.batch["pre"], torch.cat(ours_out[name]).cpu(),
                                                              config.diffusion.target))
        rows.append(_setting_row(name, sampler, steps, q, reference, float(np.mean(ours_case_s[name])),
                                 ours_n1[name], flops, n_samples, config.training.precision))
    return {"cases": keys, "samples": n_samples, "class_label": CLASS_MODE, "seed": seed,
            "reference": reference, "settings": rows}


def _warm_up(model: ExportedModel, reference_net: nn.Module, cond: Conditions, shape: tuple, settings: list,
             keys: list[str], n_samples: int, seed: int, device: torch.device) -> None:
    """First calls build oneDNN primitives; time none of them."""
    warm = cond.select(slice(0, 1))
    reference_chain(reference_net, model.config, warm, torch.randn((1, *shape), device=device), 2)
    for name, sampler, steps in settings:
        gens = sample_generators(seed + 1, keys[:1], n_samples)
        draw_samples(model.net, sampling_config(model.config, sampler, min(steps, 2)), warm, n_samples, gens)


def _one_sample_seconds(net: nn.Module, config, cond: Conditions, keys: list[str], seed: int,
                        device: torch.device) -> float:
    """Median seconds of one sample of the first case (3 runs); N = 1 (the reference's is its first chain of each
    case)."""
    times = []
    for _ in range(3):
        gens = sample_generators(seed, keys[:1], 1)
        start = now()
        draw_samples(net, config, cond.select(slice(0, 1)), 1, gens)
        sync(device)
        times.append(now() - start)
    return float(np.median(times))


def _reference_row(steps: int, chain_seconds: list[float], case_seconds: list[float], n_samples: int, flops: int,
                   q: dict) -> dict:
    """The reference's row: N = 1 is its first chain of each case, N its whole case."""
    n1, n = float(np.median(chain_seconds[::n_samples])), float(np.mean(case_seconds))
    return {"sampler": "MONAI DDIMScheduler via DiffusionInferer.sample", "steps": steps,
            "precision": "fp32", "batch": 1, "grad_mode": "no_grad",
            "n1_seconds": n1, "n_seconds": n, "chain_seconds_median": float(np.median(chain_seconds)),
            "achieved_tflops": flops * steps * n_samples / n / 1e12, **q}


def _setting_row(name: str, sampler: str, steps: int, q: dict, reference: dict, seconds: float, n1_seconds: float,
                 flops: int, n_samples: int, precision: str) -> dict:
    """One sampling setting's row: its times and speed-ups against the reference, and its quality."""
    delta = None if q["ssim_tumor"] is None or reference["ssim_tumor"] is None else \
        q["ssim_tumor"] - reference["ssim_tumor"]
    calls = 1 if sampler == "single_step" else steps
    return {
        "name": name, "sampler": sampler, "steps": calls, "precision": precision,
        "batch": n_samples, "grad_mode": "inference_mode",
        "n1_seconds": n1_seconds, "n_seconds": seconds,
        "speedup_n1": reference["n1_seconds"] / n1_seconds, "speedup_n": reference["n_seconds"] / seconds,
        "achieved_tflops": flops * calls * n_samples / seconds / 1e12,
        "ssim_tumor_delta": delta,
        "ssim_parity": None if delta is None else bool(abs(delta) <= SSIM_TOLERANCE),
        "ssim_no_loss": None if delta is None else bool(delta >= -SSIM_TOLERANCE),
        **q,
    }


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


def bench_variants(model: ExportedModel, cond: Conditions, batches: list[int], extra_batches: list[int], flops: int,
                   peak_bf16: float, repeats: int, try_compile: bool) -> list[dict]:
    """Forward-pass time per crop for each way of running the network (the utilisation experiments);
    ours also at ``extra_batches`` (how many rows per forward pass pay off: sampling.batch_size)."""
    net = model.net
    shape = (net.target_channels, *cond.image.shape[2:])
    plain = copy_network(net).to(memory_format=torch.contiguous_format)  # the network as built, default memory format
    rows = []
    for name, precision, grad_mode, change in _variant_list(net, cond, try_compile):
        sizes = batches + extra_batches if name.endswith("(ours)") else batches
        for batch in sizes if change != "compile" else batches[1:2]:  # compile: one shape, minutes of warm-up
            subject = plain
            c = cond.select(slice(0, 1)).repeat_interleave(batch)
            x = torch.randn((batch, *shape), device=cond.image.device)
            t = torch.full((batch,), 500, dtype=torch.long, device=cond.image.device)
            if change == "ours":
                subject = net
            elif change == "channels_last_input":
                subject = copy_network(plain).to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
                c = replace(c, image=c.image.contiguous(memory_format=torch.channels_last)) if x.dim() == 4 else c
            elif change == "bf16_weights":  # no per-call weight casts; the inputs stay float32 (autocast casts them)
                subject = copy_network(plain).to(torch.bfloat16)
            elif change == "compile":
                subject = torch.compile(copy_network(net))  # ours, compiled
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


def _variant_list(net: nn.Module, cond: Conditions, try_compile: bool) -> list[tuple]:
    """(name, precision context, grad mode, change) of every way of running the network."""
    bf16 = lambda: torch.autocast(cond.image.device.type, dtype=torch.bfloat16)
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
    return variants


def copy_network(net: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(net)
