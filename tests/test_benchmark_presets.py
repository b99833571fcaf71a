"""benchmarks/presets.py's outcome-blind reference on hand-made arrays (no training: the benchmark is run by hand)."""

from __future__ import annotations

import numpy as np
import pytest

from factory import load_benchmark


def test_outcome_blind_reference_follows_each_class_and_the_mixture():
    presets = load_benchmark("presets")
    rng = np.random.default_rng(0)
    pre = rng.uniform(0.3, 0.7, size=(4, 6, 6, 3))
    tumor = np.zeros(pre.shape, bool)
    tumor[:, 2:4, 2:4, 1] = True
    responder = np.array([True, False, False, False])
    shrink, grow = pre - 0.5 * tumor, pre + 0.1 * tumor   # the two courses of every case
    post = np.where(responder[:, None, None, None], shrink, grow)
    counter = np.where(responder[:, None, None, None], grow, shrink)
    out = presets.outcome_blind_mae(pre, post, counter, responder, tumor)
    assert out["cases"] == 4 and out["responder_fraction"] == 0.25
    # every case as a non-responder: right for the three non-responders, 0.6 off for the responder
    assert out["mae_tumor_all_non_responders"] == pytest.approx(0.6 / 4)
    assert out["mae_tumor_all_responders"] == pytest.approx(3 * 0.6 / 4)
    # the mixture mean (0.75 grow + 0.25 shrink) is 0.45 off for the responder and 0.15 for the others
    assert out["mae_tumor_mixture"] == pytest.approx((0.45 + 3 * 0.15) / 4)
    assert out["mae_tumor_post_equals_pre"] == pytest.approx((0.5 + 3 * 0.1) / 4)
    # the bimodal outcome of the synthetic lung cohort: post = pre beats the mixture, not the better class
    assert out["mae_tumor_all_non_responders"] < out["mae_tumor_post_equals_pre"] < out["mae_tumor_mixture"]


def test_mae_by_response_class_and_the_spread_of_samples():
    presets = load_benchmark("presets")
    post = np.zeros((3, 4, 4))
    tumor = np.zeros(post.shape, bool)
    tumor[:, 1:3, 1:3] = True
    prediction = post + np.array([0.5, 0.1, 0.3])[:, None, None] * tumor  # off by 0.5, 0.1, 0.3 in the tumour
    out = presets.mae_by_response(prediction, post, tumor, np.array([1, 0, -1]))
    assert out == {"responders": {"cases": 1, "mae_tumor": pytest.approx(0.5)},
                   "non_responders": {"cases": 1, "mae_tumor": pytest.approx(0.1)}}  # the unknown case is left out
    same = np.repeat(prediction[:, None], 2, axis=1)
    assert presets.sample_spread(same, tumor) == 0.0
    apart = same.copy()
    apart[:, 1] += 0.2 * tumor  # the second sample 0.2 higher in the tumour: std of (x, x + 0.2) is 0.1
    assert presets.sample_spread(apart, tumor) == pytest.approx(0.1)
    assert presets.sample_spread(same[:, :1], tumor) is None
