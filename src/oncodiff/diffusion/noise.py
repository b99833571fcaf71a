"""Per-element random draws: element i of a batch draws only from ``generators[i]``.

This is what makes a case's samples independent of how cases are batched (design.md,
"Randomness is explicit"). ``generators=None`` falls back to torch's global RNG, which is what
training uses (Lightning seeds it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Generators = Sequence[torch.Generator] | None


def randn_per_element(
    shape: Sequence[int], generators: Generators, device: torch.device | str | None = None
) -> torch.Tensor:
    """Standard normal noise of ``shape`` = (N, *rest), float32; row i drawn with ``generators[i]``.

    A generator draws on its own device (CPU generators give CPU noise that is then moved), so
    row i is the same numbers whatever N is, as in ``diffusers.utils.torch_utils.randn_tensor``.
    """
    shape = tuple(shape)
    if generators is None:
        return torch.randn(shape, device=device)
    _check_count(generators, shape[0])
    rows = [torch.randn(shape[1:], generator=g, device=g.device) for g in generators]
    return torch.stack(rows).to(device)


def randint_per_element(
    high: int, generators: Generators, count: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """(count,) int64 integers uniform in [0, high); element i drawn with ``generators[i]``."""
    if generators is None:
        return torch.randint(high, (count,), device=device)
    _check_count(generators, count)
    draws = [torch.randint(high, (1,), generator=g, device=g.device) for g in generators]
    return torch.cat([d.to(device) for d in draws])


def _check_count(generators: Sequence[torch.Generator], batch: int) -> None:
    if len(generators) != batch:
        raise ValueError(
            f"got {len(generators)} generators for a batch of {batch}; pass one torch.Generator per batch "
            "element (or None to use the global RNG)"
        )
