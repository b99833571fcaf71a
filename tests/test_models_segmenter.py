"""The follow-up tumour segmenter (models/segmenter.py) and its fit loop (training/segmenter.py)."""

import math

import numpy as np
import pytest
import torch

from oncodiff.models.segmenter import TumorSegmenter
from oncodiff.training.segmenter import fit_segmenter


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
    report = fit_segmenter(segmenter, *train, val=val, steps=60, batch_size=8)
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
    report = fit_segmenter(segmenter, images, masks, steps=2, batch_size=2)
    assert math.isfinite(report["final_loss"]) and report["val_dice"] is None
    assert segmenter.predict(images).shape == images.shape


def test_segmenter_rejects_bad_arguments():
    with pytest.raises(ValueError, match="spatial_dims"):
        TumorSegmenter(spatial_dims=4)
    with pytest.raises(ValueError, match="channels"):
        TumorSegmenter(spatial_dims=2, channels=(8,))
    with pytest.raises(ValueError, match=r"\(N, 1, \*S\)"):
        TumorSegmenter(spatial_dims=2).predict(np.zeros((2, 8, 8)))
