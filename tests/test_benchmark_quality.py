"""benchmarks/quality.py's verdicts on hand-made evaluation summaries: the paired difference and its
patient bootstrap interval, and the claim rows (no training: the benchmark itself is run by hand)."""

from __future__ import annotations

import numpy as np
import pytest

from factory import load_benchmark


@pytest.fixture(scope="module")
def quality():
    return load_benchmark("quality")


def summary(ours: list[float], regression: list[float], **others: list[float]) -> dict:
    cases = [f"P{i // 2:03d}/L1/t{i % 2}" for i in range(len(ours))]  # two follow-ups per patient
    methods = {"diffusion": ours, "regression": regression, "identity": [0.0] * len(ours), **others}
    per_case = [{"method": m, "case_id": c, "psnr_tumor": v, "ssim_tumor": v / 40}
                for m, values in methods.items() for c, v in zip(cases, values)]
    aggregate = {m: {k: {"mean": float(np.mean([r[k] for r in per_case if r["method"] == m]))}
                     for k in ("psnr_tumor", "ssim_tumor")} for m in methods}
    size = {"pearson_r": 0.5, "change_mae_pp": 10.0}
    return {"test_cases": cases, "image_metrics": {"per_case": per_case, "aggregate": aggregate},
            "size": {"diffusion": size, "identity": {"change_mae_pp": 20.0}},
            "counterfactual": {"fraction_right_direction": 1.0, "n_scored": len(cases)},
            "uncertainty": {"diffusion": {"coverage": {"nominal": [0.5, 0.9], "empirical": [0.4, 0.8]},
                                          "calibrated": {"nominal": [0.5, 0.9], "empirical": [0.5, None],
                                                         "mean_width_pp": [20.0, None]}}}}


def test_a_consistent_gain_has_an_interval_above_zero(quality):
    rng = np.random.default_rng(0)
    regression = list(18 + rng.normal(size=40))
    ours = [v + 1.0 + 0.1 * rng.normal() for v in regression]
    d = quality.paired_difference(summary(ours, regression), "psnr_tumor", "regression")
    assert d["n_cases"] == 40 and d["n_patients"] == 20
    assert d["mean"] == pytest.approx(1.0, abs=0.1) and 0 < d["ci95"][0] < d["mean"] < d["ci95"][1]


def test_a_noisy_tie_has_an_interval_around_zero(quality):
    rng = np.random.default_rng(1)
    regression = list(18 + rng.normal(size=20))
    ours = [v + 2.0 * rng.normal() for v in regression]
    d = quality.paired_difference(summary(ours, regression), "psnr_tumor", "regression")
    assert d["ci95"][0] < 0 < d["ci95"][1]


def test_claim_rows_carry_the_verdicts_and_the_calibrated_coverage(quality):
    rows = quality.claims(summary([20.0, 21.0, 19.0, 20.0], [19.0, 20.0, 19.5, 19.0]))
    verdicts = {claim: verdict for claim, _, verdict in rows}
    assert verdicts["1. in-tumour PSNR beats both baselines"] is True
    text = dict((claim, numbers) for claim, numbers, _ in rows)
    assert "paired difference vs regression +0.625" in text["1. in-tumour PSNR beats both baselines"]
    calibrated = next(numbers for claim, numbers, _ in rows if "calibrated" in claim)
    assert calibrated == "50 %: 0.50, 90 %: -; mean width 20 pp, -"
    assert text["2. volume change correlates with the truth (Pearson r > 0)"] == "r = 0.50"
    assert text["3. counterfactuals move the right way (> 50 % of cases)"] == "4 of 4 cases"


def test_the_other_way_of_sampling_an_unknown_outcome_gets_its_own_claim_rows(quality):
    rows = quality.claims(summary([20.0, 21.0, 19.0, 20.0], [19.0, 20.0, 19.5, 19.0],
                                  diffusion_most_probable=[10.0, 30.0, 10.0, 30.0]))
    verdicts = {claim: verdict for claim, _, verdict in rows}
    assert verdicts["1. in-tumour PSNR beats both baselines"] is True
    assert verdicts["1. (diffusion_most_probable) in-tumour PSNR beats both baselines"] is True  # mean 20 > 19.4
    # ... while the mean MSE of its committed predictions is far worse: PSNR of mean(0.1, 0.001) = 12.97 dB.
    pooled = next(numbers for claim, numbers, _ in rows if claim.startswith("1. PSNR of the mean"))
    assert "diffusion_most_probable 12.97" in pooled and "regression 19.36" in pooled
    assert quality.pooled_psnr(summary([10.0, 20.0], [0.0, 0.0]), "diffusion") == pytest.approx(
        -10 * np.log10((0.1 + 0.01) / 2))
