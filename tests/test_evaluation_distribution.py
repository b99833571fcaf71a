"""MMD, Fréchet distance (scipy sqrtm and MONAI as references), FID/LPIPS with local TorchScript files."""

import numpy as np
import pytest
import scipy.linalg
import torch
from monai.metrics.fid import get_fid_score

from oncodiff.errors import ConfigError
from oncodiff.evaluation.distribution import (
    NO_FID_WEIGHTS,
    NO_LPIPS_WEIGHTS,
    fid,
    frechet_distance,
    frechet_distance_from_moments,
    lpips,
    median_heuristic_bandwidth,
    mmd,
)


def _mmd_by_loops(x, y, bandwidth):
    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * bandwidth**2))

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd_point_masses_known_answers():
    near, far = np.zeros((3, 2)), np.full((4, 2), 100.0)
    assert mmd(near, far, bandwidth=1.0) == pytest.approx(2.0)  # within-kernels 1, cross-kernel 0
    assert mmd(near, np.zeros((5, 2)), bandwidth=1.0) == pytest.approx(0.0)


def test_mmd_matches_the_definition():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)), rng.normal(0.5, 1.0, size=(5, 3))
    assert mmd(x, y, bandwidth=1.3) == pytest.approx(_mmd_by_loops(x, y, 1.3), rel=1e-12)
    bandwidth = median_heuristic_bandwidth(x, y)
    assert mmd(x, y) == pytest.approx(_mmd_by_loops(x, y, bandwidth), rel=1e-12)


def test_mmd_on_images_flattens_and_detects_a_shift():
    rng = np.random.default_rng(1)
    real = rng.random((8, 6, 6))
    same = rng.random((8, 6, 6))
    shifted = rng.random((8, 6, 6)) + 0.5
    assert mmd(real, same) < mmd(real, shifted)
    assert mmd(real, same) == pytest.approx(mmd(real.reshape(8, -1), same.reshape(8, -1)))


def test_median_heuristic_known_answer():
    # pooled 0, 1, 3, 3: distances 1, 3, 3, 2, 2 (and 0, left out) -> median 2
    assert median_heuristic_bandwidth(np.array([[0.0], [1.0]]), np.array([[3.0], [3.0]])) == 2.0
    assert median_heuristic_bandwidth(np.ones((2, 3)), np.ones((2, 3))) == 1.0


def test_mmd_bad_inputs():
    with pytest.raises(ValueError, match="at least 2"):
        mmd(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="features"):
        mmd(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="bandwidth"):
        mmd(np.zeros((2, 3)), np.zeros((2, 3)), bandwidth=0.0)


def test_frechet_known_answer_in_1d_and_diagonal():
    # 1D: (mu_a - mu_b)^2 + (s_a - s_b)^2 with standard deviations s
    one_d = frechet_distance_from_moments(np.array([0.0]), np.array([[4.0]]), np.array([1.0]), np.array([[1.0]]))
    assert one_d == pytest.approx(2.0)
    cov_a, cov_b = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    expected = 3 * 1.0 + (1 + 0 + 4)  # |mean diff|^2 = 3; sum (sqrt a_i - sqrt b_i)^2 = 1 + 0 + 4
    assert frechet_distance_from_moments(np.zeros(3), cov_a, np.ones(3), cov_b) == pytest.approx(expected)


def test_frechet_matches_scipy_sqrtm_and_monai():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(60, 5)) @ rng.normal(size=(5, 5))
    b = rng.normal(0.3, 1.0, size=(50, 5)) @ rng.normal(size=(5, 5))
    mu_a, mu_b, cov_a, cov_b = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b).real
    reference = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean)
    assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-9)
    monai_value = float(get_fid_score(torch.from_numpy(a), torch.from_numpy(b)))
    assert frechet_distance(a, b) == pytest.approx(monai_value, rel=1e-9)


def test_frechet_with_singular_covariances_stays_finite():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(4, 16)), rng.normal(size=(5, 16))  # N < D: rank-deficient covariances
    value = frechet_distance(a, b)
    assert np.isfinite(value) and value > 0
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


class _MeanPool(torch.nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([images.mean(dim=(1, 2, 3)), images.amax(dim=(1, 2, 3))], dim=1)


class _MeanAbs(torch.nn.Module):
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred - target).abs().mean(dim=(1, 2, 3))


def test_fid_without_weights_says_not_computed():
    images = np.zeros((4, 8, 8))
    assert fid(images, images, None) == {"value": None, "status": NO_FID_WEIGHTS}
    assert "--set evaluation.fid_weights=PATH" in NO_FID_WEIGHTS
    assert lpips(images, images, None)["values"] is None
    assert lpips(images, images, None)["status"] == NO_LPIPS_WEIGHTS


def test_fid_and_lpips_with_a_torchscript_file(tmp_path):
    rng = np.random.default_rng(4)
    pred, true = rng.random((5, 8, 8)), rng.random((6, 8, 8))
    extractor_path = tmp_path / "features.pt"
    torch.jit.save(torch.jit.script(_MeanPool()), str(extractor_path))
    out = fid(pred, true, extractor_path, batch_size=2)
    features = [np.stack([x.mean(axis=(1, 2)), x.max(axis=(1, 2))], axis=1) for x in (pred, true)]
    assert out["status"] == "computed"
    assert out["value"] == pytest.approx(frechet_distance(*features), rel=1e-5)

    lpips_path = tmp_path / "lpips.pt"
    torch.jit.save(torch.jit.script(_MeanAbs()), str(lpips_path))
    result = lpips(pred, true[:5], lpips_path, batch_size=2)
    np.testing.assert_allclose(result["values"], np.abs(pred - true[:5]).mean(axis=(1, 2)), rtol=1e-5)
    assert result["mean"] == pytest.approx(np.mean(result["values"]))


def test_missing_or_invalid_weights_name_the_option(tmp_path):
    images = np.zeros((3, 8, 8))
    with pytest.raises(ConfigError, match="evaluation.fid_weights"):
        fid(images, images, tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_text("not a model", encoding="utf-8")
    with pytest.raises(ConfigError, match="evaluation.lpips_weights"):
        lpips(images, images, junk)
