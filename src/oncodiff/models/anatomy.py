"""Anatomy encoders and their contrastive loss (ImmunoDiff sec. 2.1, "VL pre-training").

ImmunoDiff encodes the vessel and lobe masks with encoders F_v, F_l, projects the pooled embeddings with
heads g(h) = W2 ReLU(W1 h) and trains them with a contrastive loss at temperature 0.5; the frozen encoders
then give the ControlNet its control c_a = Z_v (+) Z_l. Here every anatomy structure of the cohort has
its own encoder; its embedding map (B, E, *S) stays at full resolution so that it can serve as a
ControlNet control image, and h is that map averaged over space (the paper's AvgPool output).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import Tensor, nn

from oncodiff.models.denoiser import count_parameters


class AnatomyEncoder(nn.Module):
    """F: one structure's mask (B, 1, *S) -> embedding map (B, width, *S).

    ``depth`` 3x3 convolutions at full resolution with dilations 1, 2, 4, ... (a receptive field of
    2^(depth+1) - 1 voxels without downsampling), SiLU between them. Without biases the map is exactly 0
    away from the structure (SiLU(0) = 0), so h reflects the structure, not a shared background. No
    normalisation layer: per-case
    (instance, group) norms remove the per-case means that the pooled embedding h must keep, and batch
    norm is unreliable at the batch sizes of 3D training (ImmunoDiff: 2).
    """

    def __init__(self, spatial_dims: int, width: int, depth: int):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims={spatial_dims}: anatomy encoders are 2D or 3D")
        if width < 1 or depth < 1:
            raise ValueError(f"AnatomyEncoder: width={width} and depth={depth} must be >= 1")
        layers = []
        for k in range(depth):
            last = k == depth - 1
            layers.append(Convolution(
                spatial_dims, 1 if k == 0 else width, width, kernel_size=3, dilation=2**k, padding=2**k,
                act=None if last else "SWISH", conv_only=last, bias=False,
            ))
        self.layers = nn.Sequential(*layers)

    def forward(self, mask: Tensor) -> Tensor:
        return self.layers(mask)


class ProjectionHead(nn.Module):
    """g(h) = W2 ReLU(W1 h): (B, width) -> (B, projection_dim) (ImmunoDiff, SimCLR).

    Without biases, as the paper writes it: g is positively homogeneous, so the cosine similarities of
    the loss see the directions of the embeddings h from the first step (biases would dominate small h).
    """

    def __init__(self, width: int, projection_dim: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(width, width, bias=False), nn.ReLU(),
                                    nn.Linear(width, projection_dim, bias=False))

    def forward(self, h: Tensor) -> Tensor:
        return self.layers(h)


class AnatomyEncoders(nn.Module):
    """One encoder and projection head per anatomy structure (e.g. vessels, lobes).

    maps(anatomy (B, A, *S)) -> c_a (B, A * width, *S): the structures' embedding maps concatenated on
      channels, c_a = Z_1 (+) ... (+) Z_A (ImmunoDiff: c_a = Z_v (+) Z_l), the ControlNet's control.
    pooled(anatomy) -> h (B, A, width); project(anatomy) -> (B, A, projection_dim) for the contrastive loss.
    """

    def __init__(self, spatial_dims: int, structures: Sequence[str], width: int = 16, depth: int = 3,
                 projection_dim: int = 64):
        """``width``, ``depth``, ``projection_dim``: model.anatomy_encoder's fields (models/factory.py maps them)."""
        super().__init__()
        self.structures = tuple(structures)
        if not self.structures:
            raise ValueError("structures=(): anatomy encoders need at least one anatomy structure; this cohort lists "
                             "none under 'anatomy' in cohort.yaml")
        for name, value in (("width", width), ("depth", depth), ("projection_dim", projection_dim)):
            if value < 1:
                raise ValueError(f"{name}={value} must be >= 1")
        self.spatial_dims = spatial_dims
        self.width = width
        self.encoders = nn.ModuleList(AnatomyEncoder(spatial_dims, width, depth) for _ in self.structures)
        self.heads = nn.ModuleList(ProjectionHead(width, projection_dim) for _ in self.structures)

    @property
    def map_channels(self) -> int:
        return len(self.structures) * self.width

    def maps(self, anatomy: Tensor) -> Tensor:
        self._check(anatomy)
        return torch.cat([encoder(anatomy[:, k : k + 1]) for k, encoder in enumerate(self.encoders)], dim=1)

    def pooled(self, anatomy: Tensor) -> Tensor:
        self._check(anatomy)
        spatial_axes = tuple(range(2, anatomy.dim()))
        return torch.stack([encoder(anatomy[:, k : k + 1]).mean(dim=spatial_axes)
                            for k, encoder in enumerate(self.encoders)], dim=1)

    def project(self, anatomy: Tensor) -> Tensor:
        h = self.pooled(anatomy)
        return torch.stack([head(h[:, k]) for k, head in enumerate(self.heads)], dim=1)

    def _check(self, anatomy: Tensor) -> None:
        if anatomy.dim() != self.spatial_dims + 2 or anatomy.shape[1] != len(self.structures):
            raise ValueError(f"anatomy must be (B, {len(self.structures)}, *S) ({', '.join(self.structures)}) with "
                             f"{self.spatial_dims} spatial axes; got {tuple(anatomy.shape)}")

    def describe(self) -> dict:
        return {"structures": list(self.structures), "width": self.width, "map_channels": self.map_channels,
                "parameters": count_parameters(self)}


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """SimCLR's normalized temperature-scaled cross entropy (Chen et al. 2020, eq. 1) of N positive pairs.

    z1, z2: (N, D), row i of each a view of case i. Over the 2N views, view a with positive p(a):
      l(a) = -log exp(sim(a, p(a)) / tau) / sum_{k != a} exp(sim(a, k) / tau),  sim = cosine similarity,
    averaged over all 2N views; the other 2N - 2 views are the negatives. ImmunoDiff's eq. 1 (tau = 0.5)
    is the z1 -> z2 half of this with cross-view negatives only.
    """
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(f"nt_xent needs two (N, D) batches of equal shape; got {tuple(z1.shape)}, {tuple(z2.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be positive")
    similarity, positives = _view_similarity(z1, z2)
    return F.cross_entropy(similarity / temperature, positives)


def positive_is_nearest(z1: Tensor, z2: Tensor) -> Tensor:
    """Fraction of the 2N views whose most similar other view is their positive (a retrieval accuracy)."""
    similarity, positives = _view_similarity(z1, z2)
    return (similarity.argmax(dim=1) == positives).float().mean()


def _view_similarity(z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
    """Cosine similarities of the 2N views (2N, 2N), -inf on the diagonal, and each view's positive (2N,)."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    similarity = (z @ z.T).masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return similarity, positives
