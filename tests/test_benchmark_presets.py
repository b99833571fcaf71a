"""benchmarks/presets.py's outcome-blind reference on hand-made arrays (no training: the benchmark is run by hand)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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
    assert "noise_free" not in out


def test_noise_free_references_are_scored_against_the_noisy_follow_ups():
    presets = load_benchmark("presets")
    shape = (4, 8, 8)
    tumor = np.zeros(shape, bool)
    tumor[:, 2:6, 2:6] = True
    responder = np.array([True, False, False, False])
    clean_pre = np.full(shape, 0.5)
    shrink, grow = clean_pre - 0.4 * tumor, clean_pre + 0.1 * tumor
    clean_post = np.where(responder[:, None, None], shrink, grow)
    clean_counter = np.where(responder[:, None, None], grow, shrink)
    checker = np.indices(shape[1:]).sum(axis=0) % 2 * 2.0 - 1.0
    noise = 0.05 * np.broadcast_to(checker, shape)  # |noise| = 0.05, as often +0.05 as -0.05 in the tumour
    post, counter = clean_post + noise, clean_counter + noise
    pre = clean_pre - noise
    keys = ["P1/L1/week6", "P2/L1/week6", "P3/L1/week6", "P3/L1/week12"]
    likely = np.array([True, True, False, False])  # the clinical call: right on all but the second case
    out = presets.outcome_blind_mae(pre, post, counter, responder, tumor, clean_post, clean_counter, keys=keys,
                                    likely=likely)
    clean = out["noise_free"]
    assert clean["mae_tumor_true_course"] == pytest.approx(0.05)  # the noise floor: the class known, not the noise
    # every case as a non-responder: the noise on the three, the noise around 0.5 off on the responder
    assert clean["mae_tumor_all_non_responders"] == pytest.approx((3 * 0.05 + 0.5) / 4)
    assert out["mae_tumor_all_non_responders"] == pytest.approx(0.5 / 4)  # knowing the noise: 0 on the three
    assert clean["mae_tumor_all_responders"] == pytest.approx((0.05 + 3 * 0.5) / 4)
    assert clean["mae_tumor_mixture"] > clean["mae_tumor_all_non_responders"]
    # post = pre is off by the noise of both scans (0.1) and the course (0.4 or 0.1)
    assert out["mae_tumor_post_equals_pre"] == pytest.approx((0.4 + 3 * 0.1) / 4)
    assert clean["best_class"] == "non_responders"
    difference = clean["best_vs_post_equals_pre"]
    assert difference["mean"] == pytest.approx(0.1625 - 0.175)  # +0.1 on the responder, -0.05 on each other
    assert difference["n_patients"] == 3 and difference["ci95"][0] <= difference["mean"] <= difference["ci95"][1]
    # the clinical call: the true course on three cases (the noise, 0.05), the wrong one on the second (0.5 off)
    assert clean["likely_class_responders"] == 2
    assert clean["mae_tumor_likely_class"] == pytest.approx((0.05 + 0.5 + 2 * 0.05) / 4)
    assert clean["likely_vs_post_equals_pre"]["mean"] == pytest.approx((0.05 + 0.5 + 2 * 0.05) / 4 - 0.175)
    text = presets.bound_text(out)
    assert "Noise-free: every case as a non-responder 0.1625" in text and "the true course 0.0500" in text
    assert "(3 patients)" in text and "2 of 4 called responders) 0.1625" in text


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


def test_latent_ceiling_decodes_the_true_latent_drift_as_the_samples_are():
    from test_models_autoencoder import SHAPES, blobs, latent_denoiser

    from oncodiff.models import Conditions

    presets = load_benchmark("presets")
    net = latent_denoiser(2, kind="kl").eval()  # an untrained VQ codebook snaps both scans to the same codes
    shape = SHAPES[2]
    pre, post, mask = blobs(2, shape), blobs(2, shape, seed=5), (blobs(2, shape, seed=6) > 0.5).float()
    net.codec.calibrate(torch.cat([pre, post]), mask)
    cond = Conditions(image=torch.cat([pre, mask, mask], dim=1), clinical=torch.zeros(2, 1),
                      clinical_missing=torch.ones(2, 1, dtype=torch.bool), days=torch.tensor([30.0, 90.0]))
    same = presets.latent_ceiling(net, cond, pre, pre, "drift")
    np.testing.assert_array_equal(same.mean, pre[:, 0].numpy())  # no change decodes to exactly post = pre
    moved = presets.latent_ceiling(net, cond, pre, post, "drift")
    latent = net.encode_conditions(cond)
    expected = pre + net.decode_target(net.encode_target(post, latent, "drift"), latent, "drift")
    np.testing.assert_allclose(moved.mean, expected[:, 0].numpy(), atol=1e-6)
    assert np.abs(moved.mean - pre[:, 0].numpy()).mean() > 1e-4
    assert presets.latent_ceiling(net.denoiser, cond, pre, post, "drift") is None  # a pixel-space network


def test_stage_steps_show_where_early_stopping_ended_a_stage():
    presets = load_benchmark("presets")
    assert presets.stage_steps({"steps": 1018, "trained_steps": 352}) == "1018 (352)"
    assert presets.stage_steps({"steps": 409, "trained_steps": 409}) == "409"
    assert presets.stage_steps({"steps": 409}) == "409"  # a record from before the field


def test_every_registry_stage_has_a_budget_share_summing_to_the_chains_budget():
    from oncodiff.presets.papers import chains

    presets = load_benchmark("presets")
    for last, (paper, stages) in chains().items():
        assert sum(presets.BUDGET[s.preset][1] for s in stages) == pytest.approx(1.0), last
        chain = presets.CHAINS[last]
        assert [s.preset for s in chain.stages] == [s.preset for s in stages] and chain.site == paper.site
    assert len({folder for folder, _ in presets.BUDGET.values()}) == len(presets.BUDGET)  # one run folder each
