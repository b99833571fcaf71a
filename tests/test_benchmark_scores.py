"""benchmarks/scores.py's verdicts on a hand-made evaluation summary (the benchmark itself is run by hand)."""

from __future__ import annotations

import pytest

from factory import load_benchmark


@pytest.fixture(scope="module")
def scores():
    return load_benchmark("scores")


def summary(crps: dict, tumour: dict, r: dict, log_loss: float, base: float) -> dict:
    proper = {m: {"volume_change": {"crps_pp": crps[m]}, "in_tumour": {"crps": tumour[m]}} for m in crps}
    pooled = {"c_index": 0.61, "ci95": [0.52, 0.70], "n_patients": 60}
    return {"proper_scores": proper, "size": {m: {"pearson_r": v} for m, v in r.items()},
            "class_prior": {"log_loss": log_loss, "base_rate_log_loss": base, "fitted": "the training class rates"},
            "outcomes": {"survival": {"denoiser features + Cox head": {"pooled_c_index": pooled}}}}


def test_goals_are_judged_against_both_baselines(scores):
    rows = scores.goals(summary({"diffusion": 20.0, "regression": 25.0, "identity": 19.0},
                                {"diffusion": 0.01, "regression": 0.02, "identity": 0.03},
                                {"diffusion": 0.3, "regression": 0.2}, 0.60, 0.65))
    verdicts = {goal: met for goal, _, met in rows}
    text = {goal: numbers for goal, numbers, _ in rows}
    assert verdicts["mixture beats regression and identity on CRPS of the volume change (pp)"] is False  # identity 19
    assert verdicts["mixture beats regression and identity on mean per-voxel CRPS in the tumour box"] is True
    assert verdicts["volume-change Pearson r > 0 and >= regression's"] is True
    assert verdicts["class prior test log loss <= the training class rates'"] is True
    survival = next(n for g, n, _ in rows if "denoiser features + Cox head" in g)
    assert survival == "0.61 (0.52..0.70), 60 patients"
    assert "- (-..-)" in next(n for g, n, _ in rows if "clinical (Cox PH)" in g)  # not in the summary: dashes
    assert text["volume-change Pearson r > 0 and >= regression's"] == "diffusion 0.30, regression 0.20"


def test_a_prior_worse_than_the_base_rate_fails(scores):
    rows = scores.goals(summary({"diffusion": 1.0, "regression": 2.0, "identity": 3.0},
                                {"diffusion": 1.0, "regression": 2.0, "identity": 3.0},
                                {"diffusion": -0.1, "regression": 0.2}, 0.70, 0.65))
    verdicts = {goal: met for goal, _, met in rows}
    assert verdicts["class prior test log loss <= the training class rates'"] is False
    assert verdicts["volume-change Pearson r > 0 and >= regression's"] is False
