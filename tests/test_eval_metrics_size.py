"""Tumour size: volumes, change, match, Dice, response agreement, and the follow-up segmenter."""

import math

import numpy as np
import pytest
import torch

from oncodiff.evaluation.metrics import MetricTable
from oncodiff.evaluation.tumor_size import TumorSegmenter, dice, relative_change, size_metrics, volume


def _cube(shape, n_voxels_side, start=0):
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(start, start + n_voxels_side) for _ in shape)] = True
    return mask


def test_volume_uses_spacing_and_batches():
    mask = _cube((8, 8, 8), 2)  # 8 voxels
    assert volume(mask, (1.0, 2.0, 0.5)) == pytest.approx(8.0)
    assert volume(mask[:, :, 0], (0.5, 0.5)) == pytest.approx(4 * 0.25)
    assert volume(np.stack([mask, ~mask]), (1.0, 1.0, 1.0)) == [8.0, 504.0]
    with pytest.raises(ValueError, match="spacing"):
        volume(mask, (1.0, 0.0, 1.0))


def test_dice_known_values_and_both_empty():
    a = np.zeros((6, 6), dtype=bool)
    b = a.copy()
    a[0:2, 0:2] = True  # 4 voxels
    b[1:3, 0:2] = True  # 4 voxels, 2 shared
    assert dice(a, b) == pytest.approx(2 * 2 / 8)
    assert dice(a, a) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0
    assert dice(np.zeros_like(a), np.zeros_like(a)) is None
    assert dice(np.stack([a, a * 0]), np.stack([b, b * 0]), spatial_dims=2) == [0.5, None]


def test_size_metrics_known_answers():
    spacing = (1.0, 1.0, 2.0)
    baseline = _cube((10, 10, 10), 5)  # 125 voxels
    true = _cube((10, 10, 10), 4)  # 64 voxels: -48.8 %
    pred = _cube((10, 10, 10), 4, start=1)  # 64 voxels, shifted by one voxel
    out = size_metrics(pred, true, baseline, spacing, response_threshold=-0.20)
    assert out["volume_baseline"] == 250.0 and out["volume_true"] == 128.0
    assert out["change_true_pct"] == pytest.approx(100 * (64 - 125) / 125)
    assert out["change_pred_pct"] == pytest.approx(out["change_true_pct"])
    assert out["change_error_pp"] == pytest.approx(0.0)
    assert out["match_pct"] == pytest.approx(100.0)
    assert out["dice"] == pytest.approx(2 * 27 / 128)  # overlap 3^3
    assert (out["response_pred"], out["response_true"], out["response_agree"]) == (1, 1, 1)

    grown = _cube((10, 10, 10), 6)  # 216 voxels: +72.8 %, non-responder
    out = size_metrics(grown, true, baseline, spacing)
    assert out["change_error_pp"] == pytest.approx(100 * (216 - 64) / 125)
    assert out["match_pct"] == pytest.approx(100 * 216 / 64)
    assert (out["response_pred"], out["response_true"], out["response_agree"]) == (0, 1, 0)


def test_response_threshold_is_inclusive():
    baseline = _cube((10, 10), 10)  # 100 voxels
    eighty = np.zeros((10, 10), dtype=bool)
    eighty[:8] = True  # exactly -20 %
    out = size_metrics(eighty, eighty, baseline, (1.0, 1.0), response_threshold=-0.20)
    assert out["change_pred_pct"] == pytest.approx(-20.0)
    assert out["response_pred"] == 1


@pytest.mark.filterwarnings("error")
def test_empty_masks_give_none_and_are_counted():
    empty = np.zeros((8, 8), dtype=bool)
    tumour = _cube((8, 8), 3)
    no_baseline = size_metrics(tumour, tumour, empty, (1.0, 1.0))
    undefined = ("change_pred_pct", "change_true_pct", "change_error_pp")
    undefined += ("response_pred", "response_true", "response_agree")
    for key in undefined:
        assert no_baseline[key] is None, key
    assert no_baseline["match_pct"] == 100.0 and no_baseline["dice"] == 1.0
    vanished = size_metrics(empty, empty, tumour, (1.0, 1.0))
    assert vanished["change_true_pct"] == -100.0 and vanished["match_pct"] is None and vanished["dice"] is None
    assert relative_change(5.0, 0.0) is None

    table = MetricTable()
    follow_ups = np.stack([tumour, tumour])
    table.add("diffusion", size_metrics(follow_ups, follow_ups, np.stack([empty, tumour]), (1.0, 1.0)))
    summary = table.aggregate()["diffusion"]
    assert summary["change_pred_pct"]["n_undefined"] == 1 and summary["change_pred_pct"]["n"] == 1
    assert all(v["mean"] is None or not math.isnan(v["mean"]) for v in summary.values())


@pytest.fixture
def one_thread():
    # A tiny U-Net gains nothing from a second thread, and on shared 2-core machines OpenMP threads
    # that wait for a busy core make these steps 5-10x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _discs(n, rng, shape=(24, 24)):
    grid = np.indices(shape)
    images, masks = [], []
    for _ in range(n):
        center, radius = rng.uniform(7, 17, 2), rng.uniform(3, 6)
        disc = (grid[0] - center[0]) ** 2 + (grid[1] - center[1]) ** 2 <= radius**2
        images.append(0.3 + 0.4 * disc + 0.15 * rng.standard_normal(shape))
        masks.append(disc)
    return np.stack(images)[:, None].astype(np.float32), np.stack(masks)[:, None]


def test_segmenter_learns_a_bright_disc_and_round_trips(tmp_path, one_thread):
    rng = np.random.default_rng(0)
    train, val = _discs(16, rng), _discs(8, rng)
    segmenter = TumorSegmenter(spatial_dims=2, channels=(8, 16, 32), learning_rate=1e-2, seed=0)
    report = segmenter.fit(*train, val=val, steps=60, batch_size=8)
    assert report["val_dice"] > 0.8, report
    predicted = segmenter.predict(val[0])
    assert predicted.shape == val[1].shape and predicted.dtype == bool
    segmenter.save(tmp_path / "segmenter.safetensors")
    loaded = TumorSegmenter.load(tmp_path / "segmenter.safetensors")
    np.testing.assert_array_equal(loaded.predict(val[0]), predicted)


def test_segmenter_3d_shapes_not_divisible_by_the_strides(one_thread):
    rng = np.random.default_rng(1)
    images = rng.random((3, 1, 10, 9, 6)).astype(np.float32)
    masks = images > 0.7
    segmenter = TumorSegmenter(spatial_dims=3, channels=(4, 8))
    report = segmenter.fit(images, masks, steps=2, batch_size=2)
    assert math.isfinite(report["final_loss"]) and report["val_dice"] is None
    assert segmenter.predict(images).shape == images.shape


def test_segmenter_rejects_bad_arguments():
    with pytest.raises(ValueError, match="spatial_dims"):
        TumorSegmenter(spatial_dims=4)
    with pytest.raises(ValueError, match="channels"):
        TumorSegmenter(spatial_dims=2, channels=(8,))
    with pytest.raises(ValueError, match=r"\(N, 1, \*S\)"):
        TumorSegmenter(spatial_dims=2).predict(np.zeros((2, 8, 8)))
