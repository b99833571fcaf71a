"""Classifier-free guidance (Ho & Salimans 2022).

Guidance is applied to the raw network output, whatever its kind (eps | v | x0). For a fixed x_t and
t, each of eps, v and x0 is an affine function of the others with the same x_t, and the guidance
weights (1 - s) and s sum to one, so guiding x0 or v gives exactly the eps-guided result of the paper.

``scale`` s follows Ho & Salimans eq. 6 with s = 1 + w: s = 1 is the conditional model, s = 0 the
unconditional one, s > 1 pushes further toward the condition (the glioblastoma LDM used s = 10).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from oncodiff.diffusion.samplers import ModelFn

MaskedModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``model_fn(x_t (N, C, *spatial), t (N,), use_condition (N,) bool) -> output``; rows with
use_condition False get the trained null condition."""


def guide(conditional: torch.Tensor, unconditional: torch.Tensor, scale: float) -> torch.Tensor:
    """uncond + s * (cond - uncond), computed in float32 (Ho & Salimans 2022 eq. 6, s = 1 + w)."""
    unconditional = unconditional.float()
    return unconditional + scale * (conditional.float() - unconditional)


def guided_model_fn(model_fn: MaskedModelFn, scale: float) -> ModelFn:
    """A ``model_fn(x_t, t)`` that applies classifier-free guidance with ``scale``.

    ``model_fn(x_t, t, use_condition)`` is called once per step: with the batch doubled,
    ``[x_t, x_t]`` and use_condition ``[True] * N + [False] * N`` (rows i and N + i are the same case,
    so the closure tiles its conditions), or, for s == 1 (conditional only) and s == 0 (unconditional
    only), with the plain batch and use_condition all True or all False.
    """
    if scale == 1.0 or scale == 0.0:
        use = scale == 1.0

        def single_pass(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return model_fn(x_t, t, torch.full((x_t.shape[0],), use, dtype=torch.bool, device=x_t.device))

        return single_pass

    def doubled_pass(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n = x_t.shape[0]
        use_condition = torch.arange(2 * n, device=x_t.device) < n
        conditional, unconditional = model_fn(torch.cat([x_t, x_t]), torch.cat([t, t]), use_condition).chunk(2)
        return guide(conditional, unconditional, scale)

    return doubled_pass
