"""benchmarks/run.py --quick: every figure is in results.json with sane values (no timed assertions:
the machines are shared and timings are noise; ratios are only checked to be positive and finite)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from factory import load_benchmark

pytestmark = pytest.mark.slow  # the quick benchmark takes about 40 s: `make test-slow`


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("run")


@pytest.fixture(scope="module")
def common(bench):
    """benchmarks/speedbench/common.py: the settings and goals."""
    import benchmarks.speedbench.common

    return benchmarks.speedbench.common


@pytest.fixture(scope="module")
def quick(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("speed")
    threads = torch.get_num_threads()
    try:
        results = bench.main(["--quick", "--out", str(out), "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    return out, results


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_results_json_and_table_are_written_and_agree(quick):
    out, results = quick
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["quick"] is True
    assert set(on_disk) >= {"machine", "model", "peak", "sampling", "test_split", "training", "memory", "variants",
                            "goals"}
    table = (out / "table.md").read_text()
    for row in on_disk["sampling"]["settings"]:
        assert f"ours {row['name']} " in table
    assert "reference: MONAI DDIM, fp32, batch 1" in table
    assert on_disk["goals"] == results["goals"]


def test_sampling_has_every_setting_and_positive_ratios(quick, common):
    _, r = quick
    s = r["sampling"]
    assert [row["name"] for row in s["settings"]] == [name for name, *_ in common.SETTINGS]
    assert s["samples"] == 8 and len(s["cases"]) >= 1
    ref = s["reference"]
    assert ref["steps"] == common.QUICK_REFERENCE_STEPS and ref["precision"] == "fp32" and ref["batch"] == 1
    for row in [ref, *s["settings"]]:
        assert _positive(row["n1_seconds"]) and _positive(row["n_seconds"])
        assert _positive(row["achieved_tflops"])
    peak = max(r["peak"]["bf16_tflops"], r["peak"]["at_end"]["bf16_tflops"])
    for row in s["settings"]:
        assert _positive(row["speedup_n1"]) and _positive(row["speedup_n"])
        assert row["speedup_n"] == pytest.approx(ref["n_seconds"] / row["n_seconds"])
        # No method can beat the machine: a generous bound on achieved FLOP/s (timing noise aside).
        assert row["achieved_tflops"] <= 10 * peak
        assert row["fraction_bf16_peak"] == pytest.approx(row["achieved_tflops"] / r["peak"]["bf16_tflops"])
    single = next(row for row in s["settings"] if row["sampler"] == "single_step")
    assert single["steps"] == 1


def test_quality_is_measured_for_every_setting_against_the_reference(quick, common):
    _, r = quick
    ref = r["sampling"]["reference"]
    assert -1.0 <= ref["ssim_tumor"] <= 1.0
    assert ref["volume_source"] == "generated masks"  # the demo preset generates the follow-up mask
    for row in r["sampling"]["settings"]:
        assert -1.0 <= row["ssim_tumor"] <= 1.0 and -1.0 <= row["sample_ssim_tumor"] <= 1.0
        assert row["ssim_tumor_delta"] == pytest.approx(row["ssim_tumor"] - ref["ssim_tumor"])
        assert row["ssim_parity"] == (abs(row["ssim_tumor_delta"]) <= common.SSIM_TOLERANCE)
        assert len(row["ssim_tumor_per_case"]) == len(r["sampling"]["cases"])
        mae = row["volume_change_mae_pp"]
        assert mae is None or (math.isfinite(mae) and mae >= 0)


def test_peak_memory_training_test_split_and_variants(quick):
    _, r = quick
    assert r["peak"]["bf16_tflops"] > 0 and r["peak"]["fp32_tflops"] > 0
    for name in ("reference", "ours_one_case"):
        job = r["memory"][name]
        assert "error" not in job, job.get("error")
        assert job["maxrss_mb"] > 10 and job["loaded_mb"] > 10
    for dims, entry in (("2d", 2), ("3d", 3)):
        t = r["training"][dims]
        assert t["dims"] == entry and len(t["crop"]) == entry
        assert _positive(t["ours_samples_per_s"]) and _positive(t["reference_samples_per_s"]) and _positive(t["ratio"])
        assert t["ratio"] == pytest.approx(t["reference_step_seconds"] / t["ours_step_seconds"])
    split = r["test_split"]
    assert split["cases"] >= len(r["sampling"]["cases"]) and split["settings"]
    assert all(_positive(x["seconds"]) and _positive(x["speedup_vs_reference_estimate"]) for x in split["settings"])
    ran = [v for v in r["variants"] if "error" not in v]
    assert any(v["name"].endswith("(ours)") for v in ran)
    assert all(_positive(v["ms_per_crop"]) for v in ran)


def test_goal_verdicts_follow_the_numbers(quick, common):
    _, r = quick
    g = r["goals"]
    parity = [s for s in r["sampling"]["settings"] if s["ssim_parity"]]
    best = max((s["speedup_n"] for s in parity), default=None)
    assert g["sampling"]["met"] == (best is not None and best >= common.SAMPLING_GOAL)
    assert g["training"]["met"] == (r["training"]["2d"]["ratio"] >= common.TRAINING_GOAL)


def test_the_reference_runs_our_network_on_the_same_noise(quick, bench, common):
    """One MONAI DDIM step to alpha_bar = 1 returns the x0 prediction at t = T - 1, as our single-step sampler
    does: with the same weights, conditions, starting noise and fp32, the two must agree."""
    from oncodiff.diffusion import randn_per_element
    from oncodiff.pipeline.export import load_export
    from oncodiff.pipeline.sampling import draw_samples, sample_generators
    from benchmarks.speedbench.reference import reference_chain

    out, _ = quick
    model = load_export(out / "run")
    cases = bench.test_cases(out / "run", model, out / "cohort", out / "cache")
    cond = bench.case_conditions(model, cases, common.CLASS_MODE).select(slice(0, 1))
    key = cases.cases[0].key
    config = common.sampling_config(model.config, "single_step", 1).with_overrides(["training.precision='32'"])
    ours = draw_samples(model.net, config, cond, 2, sample_generators(3, [key], 2))[0]
    shape = (model.net.target_channels, *cond.image.shape[2:])
    for k in range(2):
        x_T = randn_per_element((1, *shape), sample_generators(3, [key], 2)[k:k + 1])
        reference = reference_chain(model.net, model.config, cond, x_T, 1)
        torch.testing.assert_close(reference[0], ours[k], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(ours[0], ours[1])  # different noise per sample, so the check above means something
