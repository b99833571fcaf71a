"""The patient bootstrap and the paired verdicts (oncodiff.evaluation.paired)."""

from __future__ import annotations

import numpy as np
import pytest

from oncodiff.evaluation.paired import mean_difference, paired_verdicts, patient_bootstrap, verdict


def test_the_bootstrap_resamples_patients_not_rows():
    # Two patients, each with many identical rows: resampling rows would give a tight interval around 0.5;
    # resampling patients can only draw {0, 0}, {0, 1} or {1, 1}.
    values = np.array([0.0] * 50 + [1.0] * 50)
    patients = np.array(["A"] * 50 + ["B"] * 50)
    boot = patient_bootstrap(lambda rows: values[rows].mean(), patients, n_boot=400, seed=0)
    assert boot["value"] == pytest.approx(0.5) and boot["n_patients"] == 2 and boot["n_boot"] == 400
    assert boot["ci95"] == [0.0, 1.0]


def test_undefined_draws_are_skipped_and_counted():
    patients = np.array(["A", "B", "C"])
    boot = patient_bootstrap(lambda rows: None if len(set(rows)) < 2 else float(len(rows)), patients, 200, seed=1)
    assert 0 < boot["n_boot"] < 200  # draws of one patient three times are not defined
    assert patient_bootstrap(lambda rows: None, patients, 10)["ci95"] == [None, None]


def test_verdict_words_follow_the_direction_of_the_score():
    assert verdict([-0.2, -0.1], lower_is_better=True) == "better"
    assert verdict([-0.2, -0.1], lower_is_better=False) == "worse"
    assert verdict([0.1, 0.2], lower_is_better=False) == "better"
    assert verdict([-0.1, 0.2], lower_is_better=True) == "ties"
    assert verdict([None, None], lower_is_better=True) is None


def test_paired_verdicts_against_each_reference():
    rng = np.random.default_rng(0)
    patients = np.repeat([f"P{i}" for i in range(15)], 2)
    reference = 0.2 + 0.05 * rng.random(30)
    scores = {"identity": {"mae": reference, "ssim": 1 - reference},
              "good": {"mae": reference - 0.05 + 0.005 * rng.normal(size=30), "ssim": 1.05 - reference},
              "same": {"mae": reference + 0.02 * rng.normal(size=30), "ssim": [None] * 30}}
    out = paired_verdicts(scores, patients, ["identity", "missing"], {"mae": True, "ssim": False}, n_boot=500)
    assert set(out) == {"good", "same"}  # identity against itself is skipped, and so is an absent reference
    assert out["good"]["identity"]["mae"]["verdict"] == "better"
    assert out["good"]["identity"]["ssim"]["verdict"] == "better"  # higher SSIM
    assert out["good"]["identity"]["mae"]["mean"] == pytest.approx(-0.05, abs=0.005)
    assert out["same"]["identity"]["mae"]["verdict"] == "ties"
    assert out["same"]["identity"]["ssim"] == {"mean": None, "ci95": [None, None], "n_cases": 0, "n_patients": 0,
                                               "verdict": None}  # no case has the score


def test_no_verdict_with_fewer_than_five_patients():
    patients = ["A", "A", "B", "B", "C", "C"]
    scores = {"ref": {"mae": [0.2] * 6}, "m": {"mae": [0.1, 0.11, 0.1, 0.12, 0.1, 0.1]}}
    d = paired_verdicts(scores, patients, ["ref"], {"mae": True}, n_boot=100)["m"]["ref"]["mae"]
    assert d["ci95"][1] < 0 and d["verdict"] is None  # a clear interval, but 3 patients are too few to judge


def test_mean_difference_leaves_out_undefined_cases():
    d = mean_difference([1.0, np.nan, 3.0], [0.0, 0.0, 1.0], ["A", "B", "C"], n_boot=50)
    assert d["mean"] == pytest.approx(1.5) and d["n_cases"] == 2 and d["n_patients"] == 2
