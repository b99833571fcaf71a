"""Clinical encoders: one token per variable, and the ImmunoDiff cbi-Adapter built on those tokens."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import Tensor, nn

from oncodiff.cohort.schema import ClinicalVariable
from oncodiff.models.embeddings import DaysEmbedding, apply_rope


class ClinicalTokenizer(nn.Module):
    """Clinical values (B, V) and missing flags (B, V) -> tokens (B, V, token_dim).

    A token is the variable's value embedding (numeric: a per-variable MLP of the standardised value;
    categorical: a per-variable embedding table) or, where the value is missing, a learned per-variable
    missing embedding (never a silent zero), plus a learned variable-identity embedding.
    NAC (prompt tuning): one learned token per factor through its own MLP; pCR, HR, HER2 are simply
    categorical variables here.
    """

    def __init__(self, variables: Sequence[ClinicalVariable], token_dim: int):
        super().__init__()
        if not variables:
            raise ValueError(
                "ClinicalTokenizer needs at least one clinical variable; use model.clinical=none without any"
            )
        if token_dim < 1:
            raise ValueError(f"ClinicalTokenizer: token_dim={token_dim} must be >= 1")
        self.variables = tuple(variables)
        self.token_dim = token_dim
        numeric = [i for i, v in enumerate(variables) if v.type == "numeric"]
        categorical = [i for i, v in enumerate(variables) if v.type == "categorical"]
        sizes = [len(variables[i].categories or ()) for i in categorical]
        # Derived from the variables, so kept out of the state dict (non-persistent buffers).
        self.register_buffer("numeric_index", torch.tensor(numeric, dtype=torch.long), persistent=False)
        self.register_buffer("categorical_index", torch.tensor(categorical, dtype=torch.long), persistent=False)
        self.register_buffer("category_count", torch.tensor(sizes, dtype=torch.long), persistent=False)
        offsets = [sum(sizes[:k]) for k in range(len(sizes))]
        self.register_buffer("category_offset", torch.tensor(offsets, dtype=torch.long), persistent=False)
        # Tokens are built numeric-first then categorical; this permutation restores the spec's order.
        self.register_buffer("spec_order", torch.argsort(torch.tensor(numeric + categorical)), persistent=False)
        self.numeric_mlp = PerVariableMLP(len(numeric), token_dim) if numeric else None
        self.category_embedding = nn.Embedding(sum(sizes), token_dim) if categorical else None
        self.missing_embedding = nn.Parameter(torch.randn(len(variables), token_dim))
        self.identity_embedding = nn.Parameter(torch.randn(len(variables), token_dim))

    def _categorical_tokens(self, values: Tensor, missing: Tensor) -> Tensor:
        index = torch.where(missing, torch.zeros_like(values), values).round().long()
        if ((index < 0) | (index >= self.category_count)).any():
            names = [self.variables[i].name for i in self.categorical_index.tolist()]
            raise ValueError(f"categorical clinical values must be category indices 0..K-1 (variables {names})")
        return self.category_embedding(index + self.category_offset)

    def forward(self, clinical: Tensor, clinical_missing: Tensor) -> Tensor:
        missing = clinical_missing.bool()
        parts = []
        if self.numeric_mlp is not None:
            parts.append(self.numeric_mlp(clinical[:, self.numeric_index].float()))
        if self.category_embedding is not None:
            index = self.categorical_index
            parts.append(self._categorical_tokens(clinical[:, index], missing[:, index]))
        values = torch.cat([p.float() for p in parts], dim=1)[:, self.spec_order]
        tokens = torch.where(missing[..., None], self.missing_embedding.to(values.dtype), values)
        return tokens + self.identity_embedding


class PerVariableMLP(nn.Module):
    """Values (B, N) -> (B, N, D): a separate two-layer MLP per variable, batched over variables."""

    def __init__(self, n_variables: int, dim: int):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(n_variables, dim))
        self.b1 = nn.Parameter(torch.zeros(n_variables, dim))
        self.w2 = nn.Parameter(torch.randn(n_variables, dim, dim) / math.sqrt(dim))
        self.b2 = nn.Parameter(torch.zeros(n_variables, dim))

    def forward(self, values: Tensor) -> Tensor:
        hidden = F.silu(values[..., None] * self.w1 + self.b1)  # (B, N, D)
        return torch.einsum("bvh,vhd->bvd", hidden, self.w2) + self.b2


class GroupAttention(nn.Module):
    """One clinical group's tokens (B, V_i, D) -> group embedding Z_i (B, out_channels).

    ImmunoDiff sec. 2.2: linear maps L_i give Q_i, K_i, V_i; 1-D RoPE (eq. 2, b = 1e5) over the
    variables' positions in the group; Attn(Q_i, K_i, V_i); then mean over the group's variables and a
    linear map into the image-embedding channels so Z_i can be added to Z_img.
    RoPE rotates Q and K (RoFormer), which gives the relative-position property the paper relies on.
    """

    def __init__(self, token_dim: int, out_channels: int):
        super().__init__()
        self.qkv = nn.Linear(token_dim, 3 * token_dim)
        self.out = nn.Linear(token_dim, out_channels)

    def forward(self, tokens: Tensor) -> Tensor:
        query, key, value = self.qkv(tokens).chunk(3, dim=-1)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        query, key = apply_rope(query, positions), apply_rope(key, positions)
        attended = F.scaled_dot_product_attention(query, key, value.to(query.dtype))
        return self.out(attended.mean(dim=1))


class CbiAdapter(nn.Module):
    """ImmunoDiff cbi-Adapter: image (B, Cc, *S) + clinical (B, V) -> c (B, out_channels, *S).

    c = Z_img + lambda * sum_i Z_i (ImmunoDiff sec. 2.2, L_final), Z_img = SiLU(Conv(image)) and Z_i the
    attention embedding of clinical group i (groups from ClinicalVariable.group), broadcast over space.
    """

    def __init__(
        self,
        spatial_dims: int,
        image_channels: int,
        out_channels: int,
        variables: Sequence[ClinicalVariable],
        token_dim: int,
        cbi_lambda: float,
    ):
        super().__init__()
        if image_channels < 1 or out_channels < 1:
            raise ValueError(f"CbiAdapter: image_channels={image_channels}, out_channels={out_channels} must be >= 1")
        self.cbi_lambda = float(cbi_lambda)
        self.tokenizer = ClinicalTokenizer(variables, token_dim)
        self.groups = tuple(dict.fromkeys(v.group for v in variables))
        self.group_members = tuple([i for i, v in enumerate(variables) if v.group == g] for g in self.groups)
        self.group_attention = nn.ModuleList(GroupAttention(token_dim, out_channels) for _ in self.groups)
        self.image_conv = Convolution(
            spatial_dims, image_channels, out_channels, kernel_size=3, padding=1, conv_only=True
        )

    def image_embedding(self, image: Tensor) -> Tensor:
        """Z_img = SiLU(Conv(image)): (B, Cc, *S) -> (B, out_channels, *S)."""
        return F.silu(self.image_conv(image))

    def group_embeddings(self, clinical: Tensor, clinical_missing: Tensor) -> Tensor:
        """Z_i for every group: (B, V), (B, V) -> (B, G, out_channels), groups in first-seen order."""
        tokens = self.tokenizer(clinical, clinical_missing)
        return torch.stack(
            [attention(tokens[:, members]) for attention, members in zip(self.group_attention, self.group_members)],
            dim=1,
        )

    def forward(self, image: Tensor, clinical: Tensor, clinical_missing: Tensor) -> Tensor:
        z_image = self.image_embedding(image)
        z_clinical = self.group_embeddings(clinical, clinical_missing).sum(dim=1)
        broadcast = z_clinical.reshape(*z_clinical.shape, *([1] * (image.dim() - 2)))
        return z_image + self.cbi_lambda * broadcast.to(z_image.dtype)


class PromptTokens(nn.Module):
    """NAC prompt tuning (sec. 2.1, eq. 1): one learned token per factor, T = MLP(c), for the target time
    point and the class label; the clinical factors (HR, HER2) are ClinicalTokenizer's tokens.

    forward(days (B,) or None, class_label (B,) or None) -> (B, P, token_dim), P = the factors used. The time
    point is days since baseline through Fourier features and an MLP (one model for every follow-up time,
    NAC: 3 and 12 weeks); the class label (index n_classes = the null class) through an MLP on its one-hot
    code, i.e. an embedding table followed by SiLU and a linear layer.
    """

    def __init__(self, token_dim: int, days: bool, n_class_embeddings: int, day_min_period: float = 0.0):
        super().__init__()
        if token_dim < 1 or n_class_embeddings < 0 or not (days or n_class_embeddings):
            raise ValueError(f"PromptTokens: token_dim={token_dim} must be >= 1 and at least one factor is needed "
                             f"(days={days}, n_class_embeddings={n_class_embeddings})")
        self.days = DaysEmbedding(token_dim, min_period_days=day_min_period) if days else None
        self.class_mlp = nn.Sequential(
            nn.Embedding(n_class_embeddings, token_dim), nn.SiLU(), nn.Linear(token_dim, token_dim)
        ) if n_class_embeddings else None

    def forward(self, days: Tensor | None, class_label: Tensor | None) -> Tensor:
        tokens = []
        if self.days is not None:
            tokens.append(self.days(days))
        if self.class_mlp is not None:
            tokens.append(self.class_mlp(class_label.long()))
        return torch.stack(tokens, dim=1)
