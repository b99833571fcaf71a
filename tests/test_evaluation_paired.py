"""The patient bootstrap and the paired verdicts (oncodiff.evaluation.paired)."""

from __future__ import annotations

import numpy as np
import pytest

from oncodiff.evaluation.paired import (
    bootstrap_mean, mean_difference, paired_difference, paired_verdicts, patient_bootstrap, verdict,
)


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


def _loop_bootstrap(statistic, patients, n_boot, seed):
    """The bootstrap as it was written before it drew all resamples at once: one generator call per draw."""
    patients = np.asarray(patients)
    ids = np.unique(patients)
    rows = [np.flatnonzero(patients == p) for p in ids]
    rng = np.random.default_rng(seed)
    draws = [statistic(np.concatenate([rows[i] for i in rng.integers(0, len(ids), len(ids))])) for _ in range(n_boot)]
    draws = [d for d in draws if d is not None and np.isfinite(d)]
    tail = 100 * (1 - 0.95) / 2
    return [float(q) for q in np.percentile(draws, [tail, 100 - tail])], len(draws)


@pytest.mark.parametrize("seed", [0, 7])
def test_all_draws_at_once_give_the_one_at_a_time_loops_interval(seed):
    rng = np.random.default_rng(100 + seed)
    patients = np.repeat([f"P{i}" for i in range(13)], rng.integers(1, 5, 13))  # 1 to 4 rows per patient
    values = rng.normal(0.3, 1.0, len(patients))
    mean = lambda rows: values[rows].mean()  # noqa: E731
    ci, n = _loop_bootstrap(mean, patients, 700, seed)
    generic = patient_bootstrap(mean, patients, 700, seed)
    assert generic["ci95"] == ci and generic["n_boot"] == n == 700  # the same draws, the same numbers
    fast = bootstrap_mean(values, patients, 700, seed)
    assert fast["ci95"] == pytest.approx(ci, rel=1e-12, abs=1e-12) and fast["n_boot"] == 700
    assert fast["value"] == pytest.approx(values.mean()) and fast["n_patients"] == 13
    assert bootstrap_mean(values, patients, 700, seed + 1)["ci95"] != pytest.approx(ci, rel=1e-12)
    # blocks of draws (bounded memory) continue one generator stream
    from oncodiff.evaluation import paired

    blocks = list(paired._resamples(13, 700, seed, block_cells=13 * 64))
    assert len(blocks) == 11 and np.array_equal(np.concatenate(blocks), next(paired._resamples(13, 700, seed)))


def test_mean_difference_and_paired_difference_keep_their_intervals():
    rng = np.random.default_rng(3)
    patients = np.repeat(["A", "B", "C", "D", "E", "F"], 2)
    ours, other = rng.normal(1.0, 1.0, 12), rng.normal(0.0, 1.0, 12)
    d = mean_difference(ours, other, patients, n_boot=500, seed=2)
    ci, _ = _loop_bootstrap(lambda rows: (ours - other)[rows].mean(), patients, 500, 2)
    assert d["ci95"] == pytest.approx(ci, rel=1e-12, abs=1e-12) and d["n_patients"] == 6
    cases = [f"{p}/L1/t{k}" for k, p in enumerate(patients)]
    summary = {"test_cases": cases, "image_metrics": {"per_case": [
        {"method": m, "case_id": c, "mae": float(v[k])} for m, v in (("diffusion", ours), ("identity", other))
        for k, c in enumerate(cases)]}}
    p = paired_difference(summary, "mae", "identity", n_boot=500, seed=2)
    assert p["ci95"] == pytest.approx(ci, rel=1e-12, abs=1e-12) and p["n_cases"] == 12
