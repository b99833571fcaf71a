"""Anatomy encoders (ImmunoDiff's vessel/lobe encoders) and NT-Xent against a loop over its definition."""

from __future__ import annotations

import math

import pytest
import torch

from oncodiff.models.anatomy import AnatomyEncoders, nt_xent, positive_is_nearest

SHAPES = {2: (16, 16), 3: (16, 16, 8)}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def nt_xent_by_definition(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    """SimCLR (Chen et al. 2020), Algorithm 1, written as loops over the 2N views."""
    views = [v.double() for v in torch.cat([z1, z2])]
    n = z1.shape[0]

    def sim(u, v):
        return float(u @ v / (u.norm() * v.norm()))

    total = 0.0
    for a in range(2 * n):
        positive = a + n if a < n else a - n
        denominator = sum(math.exp(sim(views[a], views[k]) / tau) for k in range(2 * n) if k != a)
        total += -math.log(math.exp(sim(views[a], views[positive]) / tau) / denominator)
    return total / (2 * n)


@pytest.mark.parametrize("tau", [0.5, 0.1])
def test_nt_xent_matches_the_definition(tau):
    generator = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=generator), torch.randn(5, 7, generator=generator)
    assert float(nt_xent(z1, z2, tau)) == pytest.approx(nt_xent_by_definition(z1, z2, tau), rel=1e-5)


def test_nt_xent_rewards_matching_views():
    distinct = torch.eye(4)  # four cases pointing in orthogonal directions
    matched = float(nt_xent(distinct, distinct + 0.01, 0.5))
    shuffled = float(nt_xent(distinct, distinct.roll(1, dims=0), 0.5))
    assert matched < shuffled
    # Perfect views: positive similarity 1, six negatives at similarity 0 -> -log(e^2 / (e^2 + 6)).
    assert float(nt_xent(distinct, distinct, 0.5)) == pytest.approx(-math.log(math.e**2 / (math.e**2 + 6)), rel=1e-5)
    assert float(positive_is_nearest(distinct, distinct + 0.01)) == 1.0
    assert float(positive_is_nearest(distinct, distinct.roll(1, dims=0))) == 0.0
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(distinct, distinct, 0.0)
    with pytest.raises(ValueError, match="equal shape"):
        nt_xent(distinct, distinct[:3], 0.5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_encoders_make_full_resolution_maps_per_structure(spatial_dims):
    torch.manual_seed(0)
    encoders = AnatomyEncoders(spatial_dims, ("vessels", "lobes"), width=4, depth=3, projection_dim=6)
    shape = SHAPES[spatial_dims]
    anatomy = (torch.rand(3, 2, *shape) > 0.7).float()
    maps = encoders.maps(anatomy)
    assert tuple(maps.shape) == (3, 8, *shape) and encoders.map_channels == 8
    assert tuple(encoders.pooled(anatomy).shape) == (3, 2, 4)
    assert tuple(encoders.project(anatomy).shape) == (3, 2, 6)
    torch.testing.assert_close(encoders.pooled(anatomy), maps.unflatten(1, (2, 4)).flatten(3).mean(-1))
    changed = anatomy.clone()
    changed[:, 1] = 1 - changed[:, 1]  # c_a = Z_v (+) Z_l: the vessel map ignores the lobes
    torch.testing.assert_close(encoders.maps(changed)[:, :4], maps[:, :4])
    assert not torch.allclose(encoders.maps(changed)[:, 4:], maps[:, 4:])


def test_encoder_arguments_are_checked():
    with pytest.raises(ValueError, match="at least one anatomy structure"):
        AnatomyEncoders(2, ())
    with pytest.raises(ValueError, match="width=0"):
        AnatomyEncoders(2, ("vessels",), width=0)
    encoders = AnatomyEncoders(2, ("vessels", "lobes"), width=4)
    with pytest.raises(ValueError, match=r"anatomy must be \(B, 2, \*S\) \(vessels, lobes\)"):
        encoders.maps(torch.zeros(1, 3, 16, 16))
