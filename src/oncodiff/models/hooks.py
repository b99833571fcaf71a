"""Forward hooks that live for one call only, so MONAI's UNet is extended without copying its forward."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import Tensor, nn


@contextmanager
def added_to_output(module: nn.Module, addition: Tensor) -> Iterator[None]:
    """Inside the block, ``module(x)`` returns ``module(x) + addition`` (broadcast)."""
    handle = module.register_forward_hook(lambda _module, _inputs, output: output + addition.to(output.dtype))
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def captured_outputs(modules: Sequence[nn.Module]) -> Iterator[list[Tensor | None]]:
    """Inside the block, the yielded list holds each module's latest output (None until it runs)."""
    outputs: list[Tensor | None] = [None] * len(modules)

    def keep(position: int):
        def hook(_module, _inputs, output):
            outputs[position] = output

        return hook

    handles = [module.register_forward_hook(keep(k)) for k, module in enumerate(modules)]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()
