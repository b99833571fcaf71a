"""The from-scratch scan CNN baselines (with and without clinical variables), 2D and 3D."""

import numpy as np
import pytest
import torch

from oncodiff.outcomes.cnn import CNNOptions, cross_validate_cnn_response, cross_validate_cnn_survival
from oncodiff.outcomes.networks import ScanOutcomeCNN



pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = CNNOptions(epochs=2, batch_size=8, init_features=4, growth_rate=4, block_config=(1, 1))


@pytest.mark.parametrize("spatial", [(16, 16), (16, 16, 8)])
def test_scan_cnn_shapes_2d_3d_with_clinical(spatial):
    net = ScanOutcomeCNN(len(spatial), in_channels=2, clinical_features=3, init_features=4, growth_rate=4,
                         block_config=(1, 1))
    out = net(torch.randn(4, 2, *spatial), torch.randn(4, 3))
    assert out.shape == (4,)
    with pytest.raises(ValueError, match="clinical must be"):
        net(torch.randn(4, 2, *spatial))
    with pytest.raises(ValueError, match="spatial_dims"):
        ScanOutcomeCNN(1)


@pytest.mark.parametrize("spatial", [(16, 16), (16, 16, 8)])
def test_cnn_baselines_run_end_to_end(spatial):
    rng = np.random.default_rng(0)
    n = 20
    images = rng.normal(size=(n, 1, *spatial)).astype(np.float32)
    labels = np.array([0, 1] * (n // 2))
    labels[0] = -1  # unknown response: left out
    groups = np.arange(n)
    clinical = rng.normal(size=(n, 3))
    response = cross_validate_cnn_response(images, labels, groups, folds=4, seed=0, clinical=clinical, options=TINY)
    assert response.model == "cnn+clinical" and len(response.per_fold) == 4
    assert response.oof.shape == (n,) and np.isnan(response.oof[0])
    assert ((response.oof[1:] >= 0) & (response.oof[1:] <= 1)).all()
    time = rng.exponential(100.0, size=n)
    event = (rng.random(n) < 0.7).astype(float)
    survival = cross_validate_cnn_survival(images, time, event, groups, folds=4, seed=0, options=TINY)
    assert survival.model == "cnn" and set(survival.mean) == {"c_index"}
    assert np.isfinite(survival.oof).all()


def test_cnn_baseline_is_seeded_and_learns_an_obvious_signal():
    rng = np.random.default_rng(1)
    labels = np.array([0, 1] * 12)
    images = rng.normal(size=(24, 1, 16, 16)).astype(np.float32)
    images[labels == 1, :, 4:12, 4:12] += 3.0  # responders carry a bright square
    options = CNNOptions(epochs=10, lr=3e-3, batch_size=8, init_features=4, growth_rate=4, block_config=(1, 1),
                         precision="32")
    first = cross_validate_cnn_response(images, labels, np.arange(24), folds=3, seed=0, options=options)
    again = cross_validate_cnn_response(images, labels, np.arange(24), folds=3, seed=0, options=options)
    np.testing.assert_array_equal(first.oof, again.oof)
    assert first.pooled["auc"] > 0.8


def test_cnn_baseline_rejects_bad_images():
    with pytest.raises(ValueError, match="images must be"):
        cross_validate_cnn_response(np.zeros((4, 16, 16)), np.array([0, 1, 0, 1]), np.arange(4), options=TINY)
