"""The goals the numbers are checked against, and the short table (OUT/table.md)."""

from __future__ import annotations



from oncodiff.evaluation.report.tables import markdown

from benchmarks.speedbench.common import SAMPLING_GOAL, SSIM_TOLERANCE, TRAINING_GOAL


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
    return "\n".join(_header(r) + [_sampling_table(r["sampling"])] + _other_tables(r) + _goal_lines(r["goals"]))


def _header(r: dict) -> list[str]:
    s = r["sampling"]
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
    return lines


def _sampling_table(s: dict) -> str:
    ref = s["reference"]
    rows = [["reference: MONAI DDIM, fp32, batch 1", ref["steps"], _f(ref["n1_seconds"]), _f(ref["n_seconds"]),
             "1", "1", _f(ref["achieved_tflops"], ".3f"), _f(100 * ref["fraction_bf16_peak"], ".1f"),
             _f(ref["ssim_tumor"], ".4f"), "-", _f(ref["volume_change_mae_pp"], ".1f")]]
    for row in s["settings"]:
        rows.append([f"ours {row['name']} ({row['precision']}, batched)", row["steps"], _f(row["n1_seconds"]),
                     _f(row["n_seconds"]), _f(row["speedup_n1"], ".1f"), _f(row["speedup_n"], ".1f"),
                     _f(row["achieved_tflops"], ".3f"), _f(100 * row["fraction_bf16_peak"], ".1f"),
                     _f(row["ssim_tumor"], ".4f"), _f(row["ssim_tumor_delta"], "+.4f"),
                     _f(row["volume_change_mae_pp"], ".1f")])
    return md(["method", "network calls", "N=1 s", f"N={s['samples']} s", "speed-up N=1",
               f"speed-up N={s['samples']}", "TFLOP/s", "% bf16 peak", "in-tumour SSIM", "SSIM vs ref",
               "vol. change MAE pp"], rows)


def _other_tables(r: dict) -> list[str]:
    t = r["test_split"]
    lines = ["", f"## Whole test split: {t['cases']} cases x {t['samples']} samples (predict_cases)", "",
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
    return lines


def _goal_lines(g: dict) -> list[str]:
    return ["", "## Goals", "",
            (f"- Sampling: {g['sampling']['goal']}: best setting at parity {g['sampling']['best_setting']} "
             f"({_f(g['sampling']['speedup'], '.1f')}x): {'met' if g['sampling']['met'] else 'NOT met'}."),
            (f"- Training: {g['training']['goal']}: {g['training']['ratio_2d']:.2f}x (3D: "
             f"{g['training']['ratio_3d']:.2f}x): {'met' if g['training']['met'] else 'NOT met'}."),
            (f"- Utilisation: best sampling setting reaches "
             f"{100 * g['utilisation']['best_sampling_fraction_bf16_peak']:.1f} % of the measured bf16 peak.")]
