"""benchmarks/prior_ceiling.py's scoring of mixture weights on hand-made class means (no model: the benchmark
itself is run by hand on a quality.py output)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from factory import load_benchmark


@pytest.fixture(scope="module")
def ceiling():
    return load_benchmark("prior_ceiling")


@pytest.fixture(scope="module")
def two_classes(ceiling):
    """Eight follow-ups (two per patient) whose truth is the mean of their own class plus a little noise; the
    'regression' predicts the even mixture of the two class means."""
    rng = np.random.default_rng(0)
    means = rng.uniform(0.2, 0.8, size=(2, 8, 16, 16)).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    post = means[labels, np.arange(8)] + rng.normal(0, 0.01, size=(8, 16, 16)).astype(np.float32)
    tumor = np.zeros((8, 16, 16), bool)
    tumor[:, 4:12, 4:12] = True
    truth = {"post": post, "tumor": tumor, "keys": [f"P{i // 2}/L1/t{i % 2}" for i in range(8)], "labels": labels,
             "evaluation": SimpleNamespace(bbox_margin=2, data_range=1.0)}
    regression = {"rows": ceiling.metrics(means.mean(0), truth)}
    return means, truth, regression


def test_true_class_weights_beat_an_even_mixture(ceiling, two_classes):
    means, truth, regression = two_classes
    oracle = ceiling.score("true class", np.eye(2)[truth["labels"]], means, truth, regression)
    assert oracle["log_loss"] == pytest.approx(0.0, abs=1e-9)
    assert oracle["psnr_tumor"] > ceiling.summarise(regression["rows"])["psnr_tumor"] + 10
    assert oracle["psnr_tumor_vs_regression"]["ci95"][0] > 0
    assert oracle["ssim_tumor_vs_regression"]["mean"] > 0


def test_even_weights_reproduce_the_even_mixture(ceiling, two_classes):
    means, truth, regression = two_classes
    even = ceiling.score("even", np.full((8, 2), 0.5), means, truth, regression)
    assert even["log_loss"] == pytest.approx(np.log(2))
    assert even["psnr_tumor_vs_regression"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert even["pooled_psnr_tumor"] == pytest.approx(ceiling.summarise(regression["rows"])["pooled_psnr_tumor"])


def test_wrong_confident_weights_lose(ceiling, two_classes):
    means, truth, regression = two_classes
    wrong = ceiling.score("wrong", np.eye(2)[1 - truth["labels"]], means, truth, regression)
    assert wrong["psnr_tumor_vs_regression"]["ci95"][1] < 0
    assert "| wrong |" in ceiling.markdown({"run": "R", "n_cases": 8, "n_patients": 4, "samples_per_class": 1,
                                            "regression": ceiling.summarise(regression["rows"]), "rows": [wrong]})
