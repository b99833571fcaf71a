"""The tumour segmenter: a small MONAI U-Net that finds the tumour on a follow-up image.

Generated follow-ups have no masks, so the NAC breast paper segmented generated and true follow-ups
with one network trained on ground-truth follow-ups (nnU-Net there; a small U-Net here). The network,
its prediction and its file live here; its fit loop is ``training/segmenter.py``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from safetensors import safe_open
from safetensors.torch import save_file

from oncodiff.precision import autocast


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str) -> torch.Tensor:
    """``(N, C, *S)`` padded at the far end of each spatial axis to a multiple of ``multiple``."""
    # MONAI's UNet halves every axis per level; pad at the far end so the crop back is [:size].
    pad: list[int] = []
    for size in reversed(x.shape[2:]):
        pad += [0, -size % multiple]
    return F.pad(x, pad, mode=mode) if any(pad) else x


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def as_images(array: np.ndarray, spatial_dims: int, name: str) -> torch.Tensor:
    """``(N, 1, *S)`` numpy -> float32 tensor; ``name`` names the argument in the error."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != spatial_dims + 2 or array.shape[1] != 1:
        raise ValueError(f"{name} must be (N, 1, *S) with {spatial_dims} spatial axes, got shape {array.shape}")
    return torch.from_numpy(array)


class TumorSegmenter:
    """Small MONAI U-Net that segments the tumour on a follow-up image (NAC paper, Sec. "size").

    Trained by ``training/segmenter.py: fit_segmenter`` on the TRAINING split only, then applied to
    true and generated follow-ups alike, so both sizes come from one method.
    Images ``(N, 1, *S)`` normalised as by our preprocessing; masks ``(N, 1, *S)`` in {0, 1}.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: Sequence[int] = (8, 16, 32),
        learning_rate: float = 3e-3,
        device: str = "auto",
        seed: int = 0,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if len(channels) < 2 or any(c < 1 for c in channels):
            raise ValueError(f"channels needs two or more positive widths (one per U-Net level), got {tuple(channels)}")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate}")
        self.spatial_dims, self.channels = spatial_dims, tuple(int(c) for c in channels)
        self.learning_rate, self.seed = learning_rate, seed
        self.device = _resolve_device(device)
        with torch.random.fork_rng(devices=[]):  # seeded weights without touching the global RNG
            torch.manual_seed(seed)
            self.network = UNet(
                spatial_dims=spatial_dims,
                in_channels=1,
                out_channels=2,  # background, tumour
                channels=self.channels,
                strides=(2,) * (len(self.channels) - 1),
                num_res_units=1,
            ).to(self.device)
        self.multiple = 2 ** (len(self.channels) - 1)

    @torch.no_grad()
    def predict(self, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """Binary tumour masks ``(N, 1, *S)`` bool for images ``(N, 1, *S)`` (argmax of the two classes)."""
        x = as_images(images, self.spatial_dims, "images")
        self.network.eval()
        out = []
        for start in range(0, len(x), batch_size):
            batch = pad_to_multiple(x[start : start + batch_size], self.multiple, "replicate").to(self.device)
            with autocast("bf16-mixed", self.device):
                logits = self.network(batch)
            crop = (slice(None), slice(None)) + tuple(slice(0, s) for s in x.shape[2:])
            out.append((logits.float().argmax(dim=1, keepdim=True) == 1)[crop].cpu())
        return torch.cat(out).numpy()

    def save(self, path: str | Path) -> None:
        """Write the weights as safetensors, with spatial_dims and channels in the file's metadata."""
        metadata = {"spatial_dims": str(self.spatial_dims), "channels": json.dumps(self.channels)}
        state = {k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}
        save_file(state, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> TumorSegmenter:
        """A segmenter from a file written by :meth:`save`."""
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
        if "spatial_dims" not in metadata or "channels" not in metadata:
            raise ValueError(f"{path}: not a TumorSegmenter file (no spatial_dims/channels metadata); use save()")
        segmenter = cls(int(metadata["spatial_dims"]), json.loads(metadata["channels"]), device=device)
        segmenter.network.load_state_dict(state)
        return segmenter
