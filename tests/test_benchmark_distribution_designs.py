"""benchmarks/distribution_designs.py's scores on hand-made ensembles (the benchmark itself is run by hand)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

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


class _Cases:
    def __init__(self, n=3, size=16):
        rng = np.random.default_rng(0)
        pre = torch.from_numpy(rng.normal(size=(n, 1, size, size)).astype(np.float32))
        tumor = torch.zeros(n, 1, size, size)
        tumor[:, :, 6:10, 6:10] = 1
        self.batch = {"pre": pre, "post": pre + 0.5 * torch.from_numpy(rng.normal(size=pre.shape).astype(np.float32)),
                      "tumor_mask": tumor, "post_mask": tumor}

    def __len__(self):
        return self.batch["pre"].shape[0]


def _fake_model(uses_x_t: bool):
    from types import SimpleNamespace

    from oncodiff.config import load_config

    class Net(torch.nn.Module):
        def encode_conditions(self, cond):
            return cond

        def forward(self, x_t, t, cond):  # x0 prediction: x_t itself, or a constant (the conditional mean)
            return SimpleNamespace(prediction=x_t if uses_x_t else torch.zeros_like(x_t))

    config = load_config("demo", ["model.generate_mask=false"])
    return SimpleNamespace(config=config, net=Net())


@pytest.mark.parametrize("uses_x_t", [True, False])
def test_the_noise_profile_tells_a_denoiser_that_ignores_x_t(designs, monkeypatch, uses_x_t):
    monkeypatch.setattr(designs, "load_export", lambda run: _fake_model(uses_x_t))
    monkeypatch.setattr(designs, "case_conditions", lambda model, cases, mode: None)
    profile = designs.noise_profile(Path("run"), _Cases())
    rmse = [row["rmse_x0_box"] for row in profile]
    spread = [row["noise_spread_x0_box"] for row in profile]
    assert [row["noise_level"] for row in profile] == pytest.approx(designs.NOISE_LEVELS, abs=0.01)
    if uses_x_t:  # x0 = x_t: the error grows with the noise, and so does the spread over noise draws
        assert rmse[0] < 0.5 * rmse[-1] and spread[0] < 0.5 * spread[-1] and spread[-1] > 0.5
    else:  # a constant: the same error at every level, no spread
        assert max(rmse) == pytest.approx(min(rmse)) and max(spread) == 0.0
