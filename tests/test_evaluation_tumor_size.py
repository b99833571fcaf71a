"""Tumour size: volumes, change, match, Dice, response agreement (evaluation/tumor_size.py)."""

import math

import numpy as np
import pytest

from oncodiff.evaluation.metrics import MetricTable
from oncodiff.evaluation.tumor_size import dice, relative_change, size_metrics, volume


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
