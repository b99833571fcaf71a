"""Image metrics: scikit-image as reference, constructed inputs with known answers, empty masks."""

import math

import numpy as np
import pytest
import torch
from monai.metrics import SSIMMetric
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from oncodiff.evaluation.metrics import (
    MetricTable,
    bbox_mask,
    image_metrics,
    mae,
    mse,
    psnr,
    ssim,
    ssim_map,
    summarize,
)

SHAPES = [(40, 33), (19, 17, 15)]


def _pair(shape, seed=0):
    rng = np.random.default_rng(seed)
    target = rng.random(shape)
    pred = np.clip(target + 0.1 * rng.standard_normal(shape), 0, 1)
    return pred, target


def _skimage_ssim(pred, target, full=False):
    return structural_similarity(
        pred, target, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=full
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_ssim_and_psnr_equal_scikit_image(shape):
    pred, target = _pair(shape)
    assert ssim(pred, target) == pytest.approx(_skimage_ssim(pred, target), abs=1e-12)
    assert psnr(pred, target) == pytest.approx(peak_signal_noise_ratio(target, pred, data_range=1.0), rel=1e-12)
    _, reference_map = _skimage_ssim(pred, target, full=True)
    assert ssim_map(pred, target).shape == shape
    np.testing.assert_allclose(ssim_map(pred, target), reference_map, atol=1e-10)
    monai_ssim = SSIMMetric(spatial_dims=len(shape), data_range=1.0)(
        torch.from_numpy(pred)[None, None], torch.from_numpy(target)[None, None]
    )
    assert ssim(pred, target) == pytest.approx(float(monai_ssim), abs=1e-3)  # MONAI works in float32


@pytest.mark.parametrize("shape", SHAPES)
def test_batched_equals_per_case(shape):
    pairs = [_pair(shape, seed) for seed in range(3)]
    preds, targets = np.stack([p for p, _ in pairs]), np.stack([t for _, t in pairs])
    mask = np.zeros((3, *shape))
    mask[0][tuple(slice(4, 9) for _ in shape)] = 1
    batch = image_metrics(preds, targets, mask, bbox_margin=2, spatial_dims=len(shape))
    assert len(batch) == 3
    for i in range(3):
        single = image_metrics(preds[i], targets[i], mask[i], bbox_margin=2)
        assert batch[i] == pytest.approx(single)
    assert ssim(preds, targets, spatial_dims=len(shape)) == pytest.approx([r["ssim"] for r in batch])


@pytest.mark.parametrize("shape", SHAPES)
def test_constant_offset_gives_known_mse_mae_psnr(shape):
    target = np.full(shape, 0.5)
    pred = target + 0.1
    assert mse(pred, target) == pytest.approx(0.01)
    assert mae(pred, target) == pytest.approx(0.1)
    assert psnr(pred, target) == pytest.approx(20.0)  # 10 log10(1 / 0.01)
    assert psnr(pred, target, data_range=2.0) == pytest.approx(20.0 + 20 * math.log10(2.0))


@pytest.mark.parametrize("shape", SHAPES)
def test_ssim_of_constant_images_is_the_luminance_term(shape):
    a, b = 0.3, 0.6
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * a * b + c1) / (a**2 + b**2 + c1)  # variances are 0, so the contrast term is C2 / C2 = 1
    mask = np.zeros(shape)
    mask[(0,) * len(shape)] = 1  # a corner voxel: the padded map must hold there too
    assert ssim(np.full(shape, a), np.full(shape, b)) == pytest.approx(expected, abs=1e-6)
    assert ssim(np.full(shape, a), np.full(shape, b), mask=mask) == pytest.approx(expected, abs=1e-6)


def test_identical_images():
    pred, _ = _pair((24, 24))
    assert ssim(pred, pred) == pytest.approx(1.0, abs=1e-6)
    assert psnr(pred, pred) == math.inf
    assert mse(pred, pred) == 0.0


@pytest.mark.parametrize("shape", SHAPES)
def test_errors_inside_the_mask_only(shape):
    target = np.full(shape, 0.5)
    mask = np.zeros(shape)
    inner = tuple(slice(6, 10) for _ in shape)
    mask[inner] = 1
    pred = target + 0.2 * mask
    out = image_metrics(pred, target, mask, bbox_margin=2)
    assert out["mse_tumor"] == pytest.approx(0.04)
    assert out["mae_tumor"] == pytest.approx(0.2)
    assert out["psnr_tumor"] == pytest.approx(10 * math.log10(1 / 0.04))
    assert out["mse"] == pytest.approx(0.04 * 4 ** len(shape) / np.prod(shape))
    box_voxels = (4 + 2 * 2) ** len(shape)  # 4-voxel cube grown by 2 on each side
    assert out["mae_bbox"] == pytest.approx(0.2 * 4 ** len(shape) / box_voxels)
    assert out["ssim_tumor"] < out["ssim_bbox"] < 1.0


def test_bbox_mask_is_grown_and_clipped():
    mask = np.zeros((10, 12), dtype=bool)
    mask[1, 3] = mask[3, 5] = True
    expected = np.zeros((10, 12), dtype=bool)
    expected[0:6, 1:8] = True  # rows 1..3 -> -1..5 clipped to 0..5; columns 3..5 -> 1..7
    np.testing.assert_array_equal(bbox_mask(mask, 2), expected)
    assert not bbox_mask(np.zeros((4, 4, 4)), 3).any()
    with pytest.raises(ValueError, match="margin"):
        bbox_mask(mask, -1)


@pytest.mark.filterwarnings("error")  # no division-by-zero or empty-mean warnings either
@pytest.mark.parametrize("shape", SHAPES)
def test_empty_mask_gives_none_not_nan(shape):
    pred, target = _pair(shape)
    out = image_metrics(pred, target, np.zeros(shape), bbox_margin=4)
    for key, value in out.items():
        if key.endswith(("_tumor", "_bbox")):
            assert value is None, key
        else:
            assert value is not None and math.isfinite(value), key
    assert mse(pred, target, mask=np.zeros(shape)) is None
    assert ssim(pred, target, mask=np.zeros(shape)) is None


def test_thin_3d_axis_uses_a_smaller_window():
    pred, target = _pair((24, 24, 4))
    assert ssim(pred, pred) == pytest.approx(1.0, abs=1e-6)
    assert -1.0 <= ssim(pred, target) < 1.0


def test_bad_inputs_raise_clear_errors():
    pred, target = _pair((16, 16))
    with pytest.raises(ValueError, match="same shape"):
        mse(pred, target[:8])
    with pytest.raises(ValueError, match="mask shape"):
        mse(pred, target, mask=np.ones((8, 8)))
    with pytest.raises(ValueError, match="data_range"):
        psnr(pred, target, data_range=0)
    with pytest.raises(ValueError, match="kernel_size"):
        ssim(pred, target, kernel_size=10)
    with pytest.raises(ValueError, match="kernel_sigma"):
        ssim(pred, target, kernel_sigma=0.0)
    with pytest.raises(ValueError, match="spatial"):
        mse(pred[None, None], target[None, None], spatial_dims=2)


def test_summarize_known_values():
    out = summarize([1.0, 2.0, 3.0, None, float("nan")])
    assert out == {"mean": 2.0, "std": 1.0, "n": 3, "n_undefined": 2, "n_infinite": 0}
    assert summarize([None, None]) == {"mean": None, "std": None, "n": 0, "n_undefined": 2, "n_infinite": 0}
    assert summarize([5.0])["std"] is None
    with_inf = summarize([30.0, math.inf])
    assert with_inf["mean"] == math.inf and with_inf["std"] is None and with_inf["n_infinite"] == 1


def test_metric_table_collects_per_method_and_counts_undefined():
    table = MetricTable()
    table.add("identity", {"ssim": 0.5, "ssim_tumor": None}, case_ids="P1")
    batch = [{"ssim": 0.7, "ssim_tumor": 0.2}, {"ssim": 0.9, "ssim_tumor": np.float32(0.4)}]
    table.add("identity", batch, ["P2", "P3"])
    table.add("diffusion", {"ssim": 0.8, "agree": True})
    assert table.methods == ["identity", "diffusion"]
    assert table.values("identity", "ssim") == [0.5, 0.7, 0.9]  # the per-case list for a histogram
    summary = table.aggregate()
    assert summary["identity"]["ssim"]["mean"] == pytest.approx(0.7)
    assert summary["identity"]["ssim"]["std"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1))
    assert summary["identity"]["ssim_tumor"]["n_undefined"] == 1
    assert summary["identity"]["ssim_tumor"]["mean"] == pytest.approx(0.3)
    assert summary["diffusion"]["agree"]["mean"] == 1.0
    assert table.rows()[0] == {"method": "identity", "case_id": "P1", "ssim": 0.5, "ssim_tumor": None}
    with pytest.raises(ValueError, match="case_ids"):
        table.add("identity", [{"ssim": 1.0}], ["a", "b"])
    with pytest.raises(ValueError, match="method"):
        table.add("", {"ssim": 1.0})
    with pytest.raises(ValueError, match="number"):
        table.add("identity", {"ssim": "high"})
    with pytest.raises(KeyError, match="regression"):
        table.values("regression", "ssim")
    table.reset()
    assert table.methods == []


def test_metric_table_takes_image_metrics_batches():
    preds = np.stack([_pair((20, 20), s)[0] for s in range(2)])
    targets = np.stack([_pair((20, 20), s)[1] for s in range(2)])
    masks = np.zeros((2, 20, 20))
    masks[0, 5:9, 5:9] = 1
    table = MetricTable()
    table.add("regression", image_metrics(preds, targets, masks, bbox_margin=1, spatial_dims=2), ["A", "B"])
    summary = table.aggregate()["regression"]
    assert summary["ssim"]["n"] == 2 and summary["ssim_tumor"]["n_undefined"] == 1
