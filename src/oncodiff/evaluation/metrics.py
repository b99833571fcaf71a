"""Image similarity between a predicted and a true follow-up scan: globally and in the tumour.

Arrays are numpy, one case ``(*spatial)`` or a batch ``(N, *spatial)``; 2D and 3D share one code
path. Without ``spatial_dims`` an array is one case; with it, an array with one more axis is a batch
and the functions return one value per case (a list) instead of a float.

Intensities: our preprocessing maps images to about [0, 1] (CT window or percentiles), so
``data_range`` defaults to 1.0. It is never inferred from the data, because a prediction's own
min/max would make PSNR and SSIM depend on the prediction.

Regions (glioblastoma LDM paper: PSNR, SSIM and MSE "locally to the GTV"):
  - ``tumor``: inside the baseline tumour mask;
  - ``bbox``: inside the mask's bounding box grown by ``bbox_margin`` voxels (clipped to the image).
A metric over an empty region is not defined and is ``None`` (the paper's code divided by zero here);
``MetricTable`` counts such cases as ``n_undefined``. Nothing here returns NaN.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from oncodiff.arrays import as_batch, bbox_mask

# Wang et al. 2004 (IEEE TIP 13(4)), the defaults of scikit-image and MONAI: an 11-voxel Gaussian
# window with sigma 1.5 and stability constants K1 = 0.01, K2 = 0.03.
SSIM_KERNEL_SIZE = 11
SSIM_KERNEL_SIGMA = 1.5

Value = float | None


def _pair(pred, target, spatial_dims, mask=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, bool]:
    if np.shape(pred) != np.shape(target):
        raise ValueError(f"pred and target must have the same shape, got {np.shape(pred)} and {np.shape(target)}")
    if mask is not None and np.shape(mask) != np.shape(pred):
        raise ValueError(f"mask shape {np.shape(mask)} differs from the image shape {np.shape(pred)}")
    pred_b, batched = as_batch(pred, spatial_dims)
    target_b, _ = as_batch(target, spatial_dims)
    mask_b = None if mask is None else np.asarray(mask).reshape(pred_b.shape) != 0
    return pred_b, target_b, mask_b, batched


def _region_mean(values: np.ndarray, mask: np.ndarray | None) -> list[Value]:
    """Per-case mean of ``values (N, *S)`` over ``mask (N, *S)``; None where the mask is empty."""
    if mask is None:
        return [float(v.mean()) for v in values]
    return [float(v[m].mean()) if m.any() else None for v, m in zip(values, mask)]


def _out(values: list, batched: bool):
    return values if batched else values[0]


def mse(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None, spatial_dims: int | None = None):
    """Mean squared error ``mean((pred - target)^2)`` over the image, or over ``mask != 0``.

    Shapes: ``(*S)`` -> float; with ``spatial_dims``, ``(N, *S)`` -> list. None where the mask is empty.
    """
    pred_b, target_b, mask_b, batched = _pair(pred, target, spatial_dims, mask)
    return _out(_region_mean((pred_b - target_b) ** 2, mask_b), batched)


def mae(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None, spatial_dims: int | None = None):
    """Mean absolute error ``mean(|pred - target|)`` over the image, or over ``mask != 0``.

    Shapes: ``(*S)`` -> float; with ``spatial_dims``, ``(N, *S)`` -> list. None where the mask is empty.
    """
    pred_b, target_b, mask_b, batched = _pair(pred, target, spatial_dims, mask)
    return _out(_region_mean(np.abs(pred_b - target_b), mask_b), batched)


def psnr_from_mse(mse_value: Value, data_range: float) -> Value:
    """``PSNR = 10 log10(data_range^2 / MSE)`` in dB; +inf when MSE is 0 (identical), None when MSE is None."""
    if mse_value is None:
        return None
    if mse_value == 0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse_value)


def psnr(
    pred: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray | None = None,
    data_range: float = 1.0,
    spatial_dims: int | None = None,
):
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB, over the image or ``mask != 0``.

    Equals ``skimage.metrics.peak_signal_noise_ratio`` on the whole image. Identical images give +inf
    (as scikit-image). Shapes as :func:`mse`.
    """
    _check_range(data_range)
    values = mse(pred, target, mask, spatial_dims)
    if isinstance(values, list):
        return [psnr_from_mse(v, data_range) for v in values]
    return psnr_from_mse(values, data_range)


def _check_range(data_range: float) -> None:
    if not data_range > 0:
        raise ValueError(f"data_range must be positive (the intensity span, 1.0 for [0, 1] images), got {data_range}")


def _windows(spatial_shape: Sequence[int], kernel_size: int) -> tuple[int, ...]:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"SSIM kernel_size must be a positive odd number of voxels (default 11), got {kernel_size}")
    # An axis shorter than the window (thin 3D crops, e.g. 16 or 8 slices) gets the largest odd
    # window that fits instead of an error; sigma stays the same.
    return tuple(min(kernel_size, n if n % 2 else n - 1) for n in spatial_shape)


def ssim_map(
    pred: np.ndarray,
    target: np.ndarray,
    data_range: float = 1.0,
    kernel_size: int = SSIM_KERNEL_SIZE,
    kernel_sigma: float = SSIM_KERNEL_SIGMA,
    spatial_dims: int | None = None,
) -> np.ndarray:
    """The local SSIM map (Wang et al. 2004, eq. 13) with the shape of the input, ``(*S)`` or ``(N, *S)``.

    SSIM(x, y) = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)),
    C1 = (0.01 R)^2, C2 = (0.03 R)^2, R = data_range; local statistics under a Gaussian window of
    ``kernel_size`` voxels and ``kernel_sigma`` (population covariance), with scipy's "reflect"
    boundary so the map keeps the image shape: scikit-image's ``full=True`` map. Computed in float64
    because MONAI's float32 ``compute_ssim_and_cs`` is off by up to 1e-3 on flat 3D regions
    (cancellation in E[x^2] - E[x]^2), and unlike scikit-image it batches and accepts axes shorter
    than the window.
    """
    _check_range(data_range)
    if not kernel_sigma > 0:
        raise ValueError(f"SSIM kernel_sigma must be positive (default 1.5), got {kernel_sigma}")
    pred_b, target_b, _, batched = _pair(pred, target, spatial_dims)
    radius = (0,) + tuple(w // 2 for w in _windows(pred_b.shape[1:], kernel_size))
    sigma = (0.0,) + (kernel_sigma,) * (pred_b.ndim - 1)  # sigma 0: no smoothing across cases

    def local_mean(x: np.ndarray) -> np.ndarray:
        return gaussian_filter(x, sigma=sigma, radius=radius, mode="reflect")

    mu_x, mu_y = local_mean(pred_b), local_mean(target_b)
    var_x = local_mean(pred_b * pred_b) - mu_x**2
    var_y = local_mean(target_b * target_b) - mu_y**2
    cov_xy = local_mean(pred_b * target_b) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    result = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return result if batched else result[0]


def ssim(
    pred: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray | None = None,
    data_range: float = 1.0,
    kernel_size: int = SSIM_KERNEL_SIZE,
    kernel_sigma: float = SSIM_KERNEL_SIGMA,
    spatial_dims: int | None = None,
):
    """Mean SSIM over the image, or over ``mask != 0``. Shapes as :func:`mse`.

    Whole image: the mean of the SSIM map without the half-window border, which equals
    ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)`` (and MONAI's float32 ``SSIMMetric`` to ~1e-3). In a mask: the SSIM map is computed
    over the whole image (:func:`ssim_map`) and averaged over the masked voxels, the usual masked
    SSIM; windows near the tumour edge therefore also see surrounding tissue. None for an empty mask.
    """
    pred_b, target_b, mask_b, batched = _pair(pred, target, spatial_dims, mask)
    maps = ssim_map(pred_b, target_b, data_range, kernel_size, kernel_sigma, spatial_dims=pred_b.ndim - 1)
    if mask_b is None:
        return _out(_region_mean(_interior(maps, kernel_size), None), batched)
    return _out(_region_mean(maps, mask_b), batched)


def _interior(maps: np.ndarray, kernel_size: int) -> np.ndarray:
    """``(N, *S)`` SSIM maps without the half-window border (the valid, unpadded region)."""
    windows = _windows(maps.shape[1:], kernel_size)
    return maps[(slice(None),) + tuple(slice(w // 2, n - w // 2) for w, n in zip(windows, maps.shape[1:]))]


def image_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    tumor_mask: np.ndarray,
    bbox_margin: int,
    data_range: float = 1.0,
    spatial_dims: int | None = None,
) -> dict[str, Value] | list[dict[str, Value]]:
    """MSE, MAE, PSNR and SSIM over the whole image, the tumour mask and the tumour bounding box.

    pred, target, tumor_mask: ``(*S)`` (one case -> dict) or, with ``spatial_dims``, ``(N, *S)`` (-> one
    dict per case). Keys: ``mse, mae, psnr, ssim`` (whole image), the same with ``_tumor`` (inside the
    baseline mask) and ``_bbox`` (inside its bounding box + ``bbox_margin`` voxels). Tumour and box
    metrics are None when the mask is empty.
    """
    _check_range(data_range)
    pred_b, target_b, mask_b, batched = _pair(pred, target, spatial_dims, tumor_mask)
    regions = {"": None, "_tumor": mask_b, "_bbox": bbox_mask(mask_b, bbox_margin, spatial_dims=mask_b.ndim - 1)}
    squared, absolute = (pred_b - target_b) ** 2, np.abs(pred_b - target_b)
    maps = ssim_map(pred_b, target_b, data_range, spatial_dims=pred_b.ndim - 1)
    columns: dict[str, list[Value]] = {}
    for suffix, region in regions.items():
        columns["mse" + suffix] = _region_mean(squared, region)
        columns["mae" + suffix] = _region_mean(absolute, region)
        columns["psnr" + suffix] = [psnr_from_mse(v, data_range) for v in columns["mse" + suffix]]
        whole_image = region is None
        columns["ssim" + suffix] = _region_mean(_interior(maps, SSIM_KERNEL_SIZE) if whole_image else maps, region)
    rows = [{name: values[i] for name, values in columns.items()} for i in range(len(pred_b))]
    return _out(rows, batched)


def summarize(values: Sequence[Value]) -> dict[str, float | int | None]:
    """Aggregate per-case values: ``{"mean", "std", "n", "n_undefined", "n_infinite"}``.

    None (and NaN) count as undefined and are left out. ``std`` is the sample standard deviation
    (ddof = 1), None below two defined values. Infinite values (PSNR of identical images) make the
    mean infinite and the std None. Never returns NaN.
    """
    defined = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    infinite = [v for v in defined if math.isinf(v)]
    finite = [v for v in defined if not math.isinf(v)]
    if infinite:
        mean = infinite[0] if len(set(infinite)) == 1 else None  # +inf and -inf together: undefined
        std = None
    else:
        mean = statistics.fmean(finite) if finite else None
        std = statistics.stdev(finite) if len(finite) >= 2 else None
    return {
        "mean": mean,
        "std": std,
        "n": len(defined),
        "n_undefined": len(values) - len(defined),
        "n_infinite": len(infinite),
    }


class MetricTable:
    """Per-case metric dicts collected per method ("identity", "regression", "diffusion", ...).

    MONAI-style accumulator: ``add`` per case or batch, ``aggregate`` for mean ± std and the count of
    undefined values per metric, ``values`` for the per-case list (e.g. the I-SPY SSIM histogram).
    """

    def __init__(self) -> None:
        self._rows: dict[str, list[dict]] = {}

    def add(
        self,
        method: str,
        metrics: Mapping[str, object] | Sequence[Mapping[str, object]],
        case_ids: str | Sequence[str] | None = None,
    ) -> None:
        """Add one case's metric dict, or a list of them, under ``method``; case_ids name the cases."""
        if not isinstance(method, str) or not method:
            raise ValueError(f"method must be a non-empty name such as 'diffusion', got {method!r}")
        batch = [metrics] if isinstance(metrics, Mapping) else list(metrics)
        ids = [case_ids] if isinstance(case_ids, str) else list(case_ids or [None] * len(batch))
        if len(ids) != len(batch):
            raise ValueError(f"{len(ids)} case_ids for {len(batch)} metric dicts; give one id per case")
        rows = self._rows.setdefault(method, [])
        for case_id, row in zip(ids, batch):
            rows.append({"case_id": case_id, **{k: _clean(k, v) for k, v in row.items()}})

    def reset(self) -> None:
        """Forget everything added."""
        self._rows.clear()

    @property
    def methods(self) -> list[str]:
        """Method names in the order they were first added."""
        return list(self._rows)

    def metric_names(self, method: str) -> list[str]:
        """Metric names seen for ``method``, in first-seen order."""
        names: dict[str, None] = {}
        for row in self._method_rows(method):
            names.update(dict.fromkeys(k for k in row if k != "case_id"))
        return list(names)

    def values(self, method: str, metric: str) -> list[Value]:
        """Per-case values of one metric for one method (None where undefined or missing)."""
        return [row.get(metric) for row in self._method_rows(method)]

    def rows(self) -> list[dict]:
        """Every case as a flat dict ``{"method", "case_id", metric: value, ...}`` (for a CSV)."""
        return [{"method": method, **row} for method, rows in self._rows.items() for row in rows]

    def aggregate(self) -> dict[str, dict[str, dict]]:
        """``{method: {metric: summarize(values)}}``; see :func:`summarize`."""
        return {m: {k: summarize(self.values(m, k)) for k in self.metric_names(m)} for m in self._rows}

    def _method_rows(self, method: str) -> list[dict]:
        if method not in self._rows:
            raise KeyError(f"no metrics for method {method!r}; methods: {', '.join(self._rows) or 'none yet'}")
        return self._rows[method]


def _clean(name: str, value: object) -> Value:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"metric {name!r}: expected a number or None, got {value!r}") from None
    return None if math.isnan(number) else number
