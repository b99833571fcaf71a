"""benchmarks/distribution_designs.py's scores on hand-made ensembles (the benchmark itself is run by hand)."""

from __future__ import annotations

import numpy as np
import pytest

from factory import load_benchmark


@pytest.fixture(scope="module")
def designs():
    return load_benchmark("distribution_designs")


def test_a_calibrated_ensemble_scores_a_spread_skill_ratio_near_one(designs):
    rng = np.random.default_rng(0)
    cases, members, shape = 40, 4, (12, 12)
    centre = rng.normal(size=(cases, *shape))
    truth = centre + rng.normal(size=(cases, *shape))  # truth and members: exchangeable draws around the centre
    samples = centre[:, None] + rng.normal(size=(cases, members, *shape))
    boxes = np.zeros((cases, *shape), bool)
    boxes[:, 2:10, 2:10] = True
    assert designs.spread_skill(samples, truth, boxes) == pytest.approx(1.0, abs=0.05)
    # Copies of one prediction (the collapse): far under one; a single sample has no ratio.
    copies = np.repeat(samples[:, :1], members, axis=1) + 1e-3 * rng.normal(size=samples.shape)
    assert designs.spread_skill(copies, truth, boxes) < 0.01
    assert designs.spread_skill(samples[:, :1], truth, boxes) is None


def test_the_paired_interval_resamples_patients(designs):
    diff = np.array([0.1, 0.1, -0.1, -0.1, 0.0, 0.0])
    out = designs.paired(diff, np.array(["a", "a", "b", "b", "c", "c"]))
    assert out["n_patients"] == 3 and out["n_cases"] == 6 and out["mean"] == pytest.approx(0.0)
    assert out["ci95"][0] < 0 < out["ci95"][1]
    shifted = designs.paired(diff + 1.0, np.array(["a", "a", "b", "b", "c", "c"]))
    assert shifted["ci95"][0] > 0


def test_every_candidate_is_a_valid_configuration(designs):
    from oncodiff.config import load_config

    for name, (_, overrides) in designs.CANDIDATES.items():
        config = load_config("demo", overrides)
        for override in overrides:  # each override took effect (no silently ignored candidate)
            key, _, value = override.partition("=")
            section, field = key.split(".")
            assert str(getattr(getattr(config, section), field)) == value, (name, override)
