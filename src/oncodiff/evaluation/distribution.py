"""Distances between sets of images: MMD (ImmunoDiff), FID and LPIPS (NAC paper).

MMD works on feature vectors or flattened images and needs no network. FID and LPIPS need
pretrained networks that oncodiff cannot download; give them as local TorchScript files
(``--set evaluation.fid_weights=PATH``, ``evaluation.lpips_weights=PATH``). Without one the result
says "not computed" instead of reporting a number from an untrained network.

TorchScript contracts (wrap the network together with its own preprocessing: channel repeat,
resizing, ImageNet normalisation, ...):
  - FID feature extractor: ``extractor(images)`` with images ``(B, 1, *S)`` float32, intensities as
    our preprocessing leaves them (about [0, 1]) -> features ``(B, D)`` (extra trailing singleton
    axes, e.g. ``(B, D, 1, 1)``, are flattened).
  - LPIPS network: ``net(pred, target)``, each ``(B, 1, *S)`` float32 in about [0, 1] -> distances
    ``(B,)`` (or any shape with B elements, e.g. ``(B, 1, 1, 1)``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.spatial.distance import cdist, pdist

from oncodiff.errors import ConfigError

NO_FID_WEIGHTS = "not computed: no feature-extractor weights given (pass --set evaluation.fid_weights=PATH)"
NO_LPIPS_WEIGHTS = "not computed: no LPIPS network weights given (pass --set evaluation.lpips_weights=PATH)"
COMPUTED = "computed"


def _flatten(samples: np.ndarray, name: str) -> np.ndarray:
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim < 2 or samples.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples as (N, ...) with N >= 2, got shape {samples.shape}")
    return samples.reshape(samples.shape[0], -1)


def median_heuristic_bandwidth(x: np.ndarray, y: np.ndarray) -> float:
    """Median Euclidean distance between distinct points of the pooled sample (Gretton et al. 2012).

    x ``(M, ...)``, y ``(N, ...)``, flattened per sample. Zero distances (duplicate points) are left
    out; if every point is the same, returns 1.0 (every bandwidth then gives MMD 0).
    """
    pooled = np.concatenate([_flatten(x, "x"), _flatten(y, "y")])
    distances = pdist(pooled)
    positive = distances[distances > 0]
    return float(np.median(positive)) if positive.size else 1.0


def mmd(x: np.ndarray, y: np.ndarray, bandwidth: float | None = None) -> float:
    """Unbiased squared maximum mean discrepancy with an RBF kernel (Gretton et al. 2012, JMLR, eq. 3).

    x ``(M, ...)`` and y ``(N, ...)``: feature vectors or images, flattened per sample; M, N >= 2.
    MMD^2_u = 1/(M(M-1)) sum_{i!=j} k(x_i, x_j) + 1/(N(N-1)) sum_{i!=j} k(y_i, y_j)
              - 2/(MN) sum_{i,j} k(x_i, y_j),   k(a, b) = exp(-|a - b|^2 / (2 bandwidth^2)).
    ``bandwidth=None`` uses :func:`median_heuristic_bandwidth`. Being unbiased, the estimate can be
    slightly negative when the two distributions match; it is at most 2.
    """
    x_flat, y_flat = _flatten(x, "x"), _flatten(y, "y")
    if x_flat.shape[1] != y_flat.shape[1]:
        widths = (x_flat.shape[1], y_flat.shape[1])
        raise ValueError(f"x and y must have the same number of features per sample, got {widths[0]} and {widths[1]}")
    if bandwidth is None:
        bandwidth = median_heuristic_bandwidth(x_flat, y_flat)
    if not bandwidth > 0:
        raise ValueError(f"MMD bandwidth must be positive (or None for the median heuristic), got {bandwidth}")

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.exp(-cdist(a, b, "sqeuclidean") / (2.0 * bandwidth**2))

    m, n = len(x_flat), len(y_flat)
    k_xx, k_yy, k_xy = kernel(x_flat, x_flat), kernel(y_flat, y_flat), kernel(x_flat, y_flat)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def frechet_distance_from_moments(
    mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray
) -> float:
    """Fréchet distance between N(mean_a, cov_a) and N(mean_b, cov_b) (Heusel et al. 2017, FID).

    d^2 = |mean_a - mean_b|^2 + tr(cov_a) + tr(cov_b) - 2 tr((cov_a cov_b)^(1/2)); means ``(D,)``,
    covariances ``(D, D)``. tr((A B)^(1/2)) is computed as the sum of square roots of the
    eigenvalues of the symmetric A^(1/2) B A^(1/2) (same spectrum as A B), which stays real and
    finite for the singular covariances of small cohorts (N <= D), where scipy's ``sqrtm`` of the
    non-symmetric product (pytorch-fid, MONAI) needs an epsilon fix-up. Rounding can make d^2 a
    hair below 0; it is clipped to 0.
    """
    mean_a, mean_b = np.asarray(mean_a, dtype=np.float64), np.asarray(mean_b, dtype=np.float64)
    cov_a, cov_b = np.atleast_2d(cov_a).astype(np.float64), np.atleast_2d(cov_b).astype(np.float64)
    if cov_a.shape != cov_b.shape or cov_a.shape != (mean_a.size, mean_a.size) or mean_a.shape != mean_b.shape:
        shapes = (mean_a.shape, cov_a.shape, mean_b.shape, cov_b.shape)
        raise ValueError(f"means (D,) and covariances (D, D) must agree, got shapes {shapes}")
    root_a = _psd_sqrt(cov_a)
    product_eigenvalues = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_sqrt = np.sqrt(np.clip(product_eigenvalues, 0.0, None)).sum()
    distance = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt
    return float(max(distance, 0.0))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two feature sets ``(N, D)`` and ``(M, D)``; N, M >= 2.

    Means and sample covariances (ddof = 1, as pytorch-fid and MONAI), then
    :func:`frechet_distance_from_moments`. With Inception features this is the FID.
    """
    a, b = _flatten(features_a, "features_a"), _flatten(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets differ in width: {a.shape[1]} and {b.shape[1]}")
    return frechet_distance_from_moments(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def load_torchscript(weights: str | Path | torch.nn.Module, option: str) -> torch.nn.Module:
    """A TorchScript module from a local file (or a module passed through), in eval mode on CPU.

    ``option`` names the config key for error messages, e.g. ``"evaluation.fid_weights"``.
    """
    if isinstance(weights, torch.nn.Module):
        return weights.eval()
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"{option}={weights}: no such file; give the path of a TorchScript (.pt) file")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as e:
        raise ConfigError(f"{option}={weights}: not a TorchScript file (save one with torch.jit.save): {e}") from e
    return module.eval()


@torch.no_grad()
def extract_features(extractor: torch.nn.Module, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Run a feature extractor over images ``(N, *S)`` in batches -> features ``(N, D)`` float64."""
    images = np.asarray(images, dtype=np.float32)
    features = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start : start + batch_size])[:, None]
        features.append(extractor(batch).float().reshape(len(batch), -1).numpy())
    return np.concatenate(features).astype(np.float64)


def fid(
    pred_images: np.ndarray,
    true_images: np.ndarray,
    weights: str | Path | torch.nn.Module | None,
    batch_size: int = 16,
) -> dict[str, object]:
    """FID between generated ``(N, *S)`` and true ``(M, *S)`` images with a local TorchScript extractor.

    Returns ``{"value": float | None, "status": "computed" | reason}``; with ``weights=None`` the value
    is None and the status says how to supply weights (no untrained-network numbers).
    """
    if weights is None:
        return {"value": None, "status": NO_FID_WEIGHTS}
    extractor = load_torchscript(weights, "evaluation.fid_weights")
    features = [extract_features(extractor, images, batch_size) for images in (pred_images, true_images)]
    return {"value": frechet_distance(*features), "status": COMPUTED}


@torch.no_grad()
def lpips(
    pred: np.ndarray,
    target: np.ndarray,
    weights: str | Path | torch.nn.Module | None,
    batch_size: int = 16,
) -> dict[str, object]:
    """Per-case LPIPS between paired images ``(N, *S)`` with a local TorchScript LPIPS network.

    Returns ``{"values": list[float] | None, "mean": float | None, "status": ...}``; with
    ``weights=None`` nothing is computed and the status says how to supply weights.
    """
    if weights is None:
        return {"values": None, "mean": None, "status": NO_LPIPS_WEIGHTS}
    if np.shape(pred) != np.shape(target) or np.ndim(pred) < 3:
        shapes = (np.shape(pred), np.shape(target))
        raise ValueError(f"LPIPS needs paired batches (N, *S) of one shape, got {shapes[0]} and {shapes[1]}")
    net = load_torchscript(weights, "evaluation.lpips_weights")
    pred, target = np.asarray(pred, dtype=np.float32), np.asarray(target, dtype=np.float32)
    values: list[float] = []
    for start in range(0, len(pred), batch_size):
        a, b = (torch.from_numpy(x[start : start + batch_size])[:, None] for x in (pred, target))
        values.extend(net(a, b).float().reshape(len(a)).tolist())
    return {"values": values, "mean": float(np.mean(values)), "status": COMPUTED}
