"""Outcome heads: response classification and Cox survival on feature vectors or scans.

ImmunoDiff Stage 2 (Sec. 2.2, "Treatment Response Assessment") feeds features from the up-blocks of
the frozen denoiser to a classification head (responder vs non-responder) and to a survival head
whose hazard is h(t) = h0(t) exp(log_risk); we fit the latter with the Cox partial likelihood.
``ScanOutcomeCNN`` is the from-scratch image baseline of the paper's Table 1 (DenseNet-121 and
DenseNet-121 + clinical variables), shrunk to CPU size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import DenseNet
from torch import nn


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")


class _MLPHead(nn.Module):
    """(B, F) -> (B,): Linear-SiLU-Dropout-Linear, or a single Linear when ``hidden == 0``."""

    def __init__(self, in_features: int, hidden: int, dropout: float, output_bias: bool):
        super().__init__()
        _check_positive("in_features", in_features)
        if hidden < 0:
            raise ValueError(f"hidden must be >= 0 (0 = a linear head), got {hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if hidden == 0:
            self.net: nn.Module = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, 1, bias=output_bias))
        else:
            self.net = nn.Sequential(
                nn.Linear(in_features, hidden),
                nn.SiLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, 1, bias=output_bias),
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)


class ResponseHead(_MLPHead):
    """Response classifier: features ``(B, F)`` -> logit ``(B,)``; sigmoid(logit) = P(responder).

    ``hidden=0`` gives logistic regression; otherwise one hidden layer of width ``hidden``.
    """

    def __init__(self, in_features: int, hidden: int = 64, dropout: float = 0.2):
        super().__init__(in_features, hidden, dropout, output_bias=True)


class CoxHead(_MLPHead):
    """Cox survival head: features ``(B, F)`` -> log-risk ``(B,)`` (higher = shorter survival).

    The output layer has no bias: the Cox partial likelihood is invariant to a constant shift of the
    log-risk, so a bias would never be trained. ``hidden=0`` gives the linear Cox model.
    """

    def __init__(self, in_features: int, hidden: int = 64, dropout: float = 0.2):
        super().__init__(in_features, hidden, dropout, output_bias=False)


def cox_partial_likelihood(log_risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative log Cox partial likelihood with Breslow ties, averaged over events.

    ``log_risk``, ``time``, ``event``: ``(B,)``; ``event`` is 1 for an observed event, 0 censored.
    loss = -1/n_events * sum_{i: event_i} [log_risk_i - log sum_{j: time_j >= time_i} exp(log_risk_j)].
    With no event in the batch the likelihood has no terms: the loss is 0 and every gradient is 0
    (still connected to the graph, so ``backward`` works and an optimizer step changes nothing).
    """
    if not (log_risk.shape == time.shape == event.shape) or log_risk.ndim != 1:
        raise ValueError(
            f"log_risk, time and event must be 1-D of one length; got {tuple(log_risk.shape)}, "
            f"{tuple(time.shape)}, {tuple(event.shape)}"
        )
    if torch.isnan(time).any() or torch.isnan(event).any():
        raise ValueError("time and event contain NaN (unknown survival); drop those samples before the loss")
    observed = event > 0
    n_events = observed.sum()
    if n_events == 0:
        return log_risk.sum() * 0.0
    order = torch.argsort(time)
    time_sorted, risk_sorted = time[order], log_risk[order]
    # log sum over the risk set {j: time_j >= time_i}: a reversed cumulative logsumexp read at the
    # first sorted position with time >= time_i, so tied times share one risk set (Breslow).
    tail_logsumexp = torch.logcumsumexp(risk_sorted.flip(0), dim=0).flip(0)
    first_at_or_after = torch.searchsorted(time_sorted.contiguous(), time[observed].contiguous(), right=False)
    log_risk_set = tail_logsumexp[first_at_or_after]
    return -(log_risk[observed] - log_risk_set).sum() / n_events


class ScanOutcomeCNN(nn.Module):
    """From-scratch scan baseline: image ``(B, C, *spatial)`` [+ clinical ``(B, V)``] -> ``(B,)``.

    A MONAI DenseNet backbone (tiny widths by default, 2D or 3D) pooled to a vector; clinical
    variables, when ``clinical_features > 0``, are concatenated before the final linear layer.
    The output is a response logit or a Cox log-risk, depending on the loss it is trained with.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        clinical_features: int = 0,
        init_features: int = 8,
        growth_rate: int = 8,
        block_config: Sequence[int] = (2, 2),
        dropout: float = 0.0,
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        for name, value in (("in_channels", in_channels), ("init_features", init_features),
                            ("growth_rate", growth_rate)):
            _check_positive(name, value)
        if clinical_features < 0:
            raise ValueError(f"clinical_features must be >= 0, got {clinical_features}")
        if not block_config or min(block_config) < 1:
            raise ValueError(f"block_config needs at least one block of >= 1 layers, got {tuple(block_config)}")
        backbone = DenseNet(spatial_dims, in_channels, 1, init_features=init_features, growth_rate=growth_rate,
                            block_config=tuple(block_config), dropout_prob=dropout)
        embedding_size = backbone.class_layers.out.in_features
        backbone.class_layers.out = nn.Identity()  # keep MONAI's relu-pool-flatten, replace its classifier
        self.backbone = backbone
        self.clinical_features = clinical_features
        self.final = nn.Linear(embedding_size + clinical_features, 1)

    def forward(self, image: torch.Tensor, clinical: torch.Tensor | None = None) -> torch.Tensor:
        embedding = self.backbone(image)
        if self.clinical_features:
            if clinical is None or clinical.shape != (image.shape[0], self.clinical_features):
                got = None if clinical is None else tuple(clinical.shape)
                raise ValueError(f"clinical must be (B, {self.clinical_features}) for this network; got {got}")
            embedding = torch.cat([embedding, clinical.to(embedding.dtype)], dim=1)
        return self.final(embedding).squeeze(-1)
