"""Tumour size on generated and true follow-ups: volumes, size change, "match", Dice, response.

Generated follow-ups have no masks, so the tumour is segmented on both the generated and the
true follow-up by one network, :class:`TumorSegmenter`, trained on (true follow-up -> follow-up
GTV) pairs of the training split; this follows the NAC breast paper, which trained nnU-Net on
ground-truth follow-ups and reported the size change from baseline and the "match" (generated
size / true size, Table 3). Our segmenter is a small MONAI U-Net instead of nnU-Net.

Masks are numpy, ``(*S)`` for one case or ``(N, *S)``; nonzero = tumour. ``spacing`` (mm per
axis) gives the number of spatial axes, so volumes are in mm^3 (3D) or mm^2 (2D).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from safetensors import safe_open
from safetensors.torch import save_file

from oncodiff.evaluation.metrics import as_batch

Value = float | None


def dice(pred_mask: np.ndarray, true_mask: np.ndarray, spatial_dims: int | None = None):
    """Dice overlap ``2 |P & T| / (|P| + |T|)`` of binary masks (nonzero = inside).

    ``(*S)`` -> float; with ``spatial_dims``, ``(N, *S)`` -> list. None when both masks are empty
    (overlap is not defined there; counted as undefined by ``MetricTable``).
    """
    if np.shape(pred_mask) != np.shape(true_mask):
        raise ValueError(f"masks differ in shape: {np.shape(pred_mask)} and {np.shape(true_mask)}")
    pred_b, batched = as_batch(np.asarray(pred_mask) != 0, spatial_dims)
    true_b, _ = as_batch(np.asarray(true_mask) != 0, spatial_dims)
    values: list[Value] = []
    for p, t in zip(pred_b != 0, true_b != 0):
        total = int(p.sum() + t.sum())
        values.append(2.0 * int((p & t).sum()) / total if total else None)
    return values if batched else values[0]


def _spatial(mask: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, bool]:
    if len(spacing) not in (2, 3) or any(not s > 0 for s in spacing):
        raise ValueError(f"spacing must give 2 or 3 positive voxel sizes in mm, got {tuple(spacing)}")
    return as_batch(np.asarray(mask) != 0, len(spacing))


def volume(mask: np.ndarray, spacing: Sequence[float]):
    """Tumour volume in mm^3 (3D) or area in mm^2 (2D): voxel count x prod(spacing).

    mask ``(*S)`` -> float, or ``(N, *S)`` -> list (batched when it has one axis more than spacing).
    """
    mask_b, batched = _spatial(mask, spacing)
    voxel = float(np.prod(spacing))
    values = [float(np.count_nonzero(m)) * voxel for m in mask_b]
    return values if batched else values[0]


def relative_change(volume_after: float, volume_before: float) -> Value:
    """``(after - before) / before`` as a fraction; None when ``before`` is 0 (not defined)."""
    return None if volume_before == 0 else (volume_after - volume_before) / volume_before


def size_metrics(
    pred_mask: np.ndarray,
    true_mask: np.ndarray,
    baseline_mask: np.ndarray,
    spacing: Sequence[float],
    response_threshold: float = -0.20,
):
    """Size change, "match", Dice and response agreement of a predicted follow-up tumour.

    pred_mask: tumour on the generated follow-up; true_mask: on the true follow-up (ground truth,
    or the segmenter's output as in the NAC paper); baseline_mask: baseline GTV. Each ``(*S)`` (->
    dict) or ``(N, *S)`` (-> list of dicts); ``spacing`` in mm, one value per spatial axis.
    Keys (volumes in mm^3, or mm^2 in 2D):
      volume_baseline, volume_pred, volume_true;
      change_pred_pct, change_true_pct: 100 (V - V_baseline) / V_baseline (NAC Table 3 "size");
      change_error_pp: change_pred_pct - change_true_pct, in percentage points;
      match_pct: 100 V_pred / V_true (NAC Table 3 "match");
      dice: Dice of pred_mask and true_mask;
      response_pred, response_true: 1 when the change is <= response_threshold (a fraction; PULSAR
      -20 %), else 0; response_agree: 1 when they agree.
    Undefined values are None: changes and responses when V_baseline = 0, match when V_true = 0,
    Dice when both follow-up masks are empty.
    """
    shapes = {np.shape(pred_mask), np.shape(true_mask), np.shape(baseline_mask)}
    if len(shapes) != 1:
        raise ValueError(f"pred_mask, true_mask and baseline_mask must share one shape, got {sorted(shapes)}")
    volumes = [volume(m, spacing) for m in (baseline_mask, pred_mask, true_mask)]
    batched = isinstance(volumes[0], list)
    dices = dice(pred_mask, true_mask, spatial_dims=len(spacing))
    rows = [
        _size_row(base, pred, true, overlap, response_threshold)
        for base, pred, true, overlap in zip(*(v if batched else [v] for v in (*volumes, dices)))
    ]
    return rows if batched else rows[0]


def _size_row(v_base: float, v_pred: float, v_true: float, overlap: Value, threshold: float) -> dict[str, Value]:
    change_pred, change_true = relative_change(v_pred, v_base), relative_change(v_true, v_base)
    response_pred = None if change_pred is None else int(change_pred <= threshold)
    response_true = None if change_true is None else int(change_true <= threshold)
    both = change_pred is not None and change_true is not None
    return {
        "volume_baseline": v_base,
        "volume_pred": v_pred,
        "volume_true": v_true,
        "change_pred_pct": None if change_pred is None else 100.0 * change_pred,
        "change_true_pct": None if change_true is None else 100.0 * change_true,
        "change_error_pp": 100.0 * (change_pred - change_true) if both else None,
        "match_pct": None if v_true == 0 else 100.0 * v_pred / v_true,
        "dice": overlap,
        "response_pred": response_pred,
        "response_true": response_true,
        "response_agree": int(response_pred == response_true) if both else None,
    }


def _pad_to_multiple(x: torch.Tensor, multiple: int, mode: str) -> torch.Tensor:
    # MONAI's UNet halves every axis per level; pad at the far end so the crop back is [:size].
    pad: list[int] = []
    for size in reversed(x.shape[2:]):
        pad += [0, -size % multiple]
    return F.pad(x, pad, mode=mode) if any(pad) else x


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _as_images(array: np.ndarray, spatial_dims: int, name: str) -> torch.Tensor:
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != spatial_dims + 2 or array.shape[1] != 1:
        raise ValueError(f"{name} must be (N, 1, *S) with {spatial_dims} spatial axes, got shape {array.shape}")
    return torch.from_numpy(array)


class TumorSegmenter:
    """Small MONAI U-Net that segments the tumour on a follow-up image (NAC paper, Sec. "size").

    Trained on (true follow-up crop -> follow-up GTV) pairs from the TRAINING split only, with
    Dice + cross-entropy (MONAI ``DiceCELoss``), Adam, random flips and bf16 autocast (CPU and GPU);
    then applied to true and generated follow-ups alike, so both sizes come from one method.
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
        self._multiple = 2 ** (len(self.channels) - 1)

    def fit(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        val: tuple[np.ndarray, np.ndarray] | None = None,
        steps: int = 300,
        batch_size: int = 8,
    ) -> dict[str, Value | int]:
        """Train on images/masks ``(N, 1, *S)``; ``val=(images, masks)`` reports validation Dice.

        Returns ``{"steps", "final_loss", "val_dice", "val_undefined"}``: val_dice is the mean Dice
        over validation cases (None without val), val_undefined counts cases where it is not
        defined (empty prediction and empty truth).
        """
        if steps < 1 or batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
        x = _pad_to_multiple(_as_images(images, self.spatial_dims, "images"), self._multiple, "replicate")
        y = _pad_to_multiple((_as_images(masks, self.spatial_dims, "masks") > 0).float(), self._multiple, "constant")
        if x.shape != y.shape:
            raise ValueError(f"images {np.shape(images)} and masks {np.shape(masks)} must have the same shape")
        generator = torch.Generator().manual_seed(self.seed)
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        optimizer = torch.optim.Adam(self.network.parameters(), lr=self.learning_rate)
        self.network.train()
        for _ in range(steps):
            index = torch.randint(len(x), (min(batch_size, len(x)),), generator=generator)
            batch_x, batch_y = self._flip(x[index], y[index], generator)
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                logits = self.network(batch_x.to(self.device))
            loss = loss_fn(logits.float(), batch_y.to(self.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        report: dict[str, Value | int] = {"steps": steps, "final_loss": loss.item()}
        report.update(val_dice=None, val_undefined=0)
        if val is not None:
            scores = dice(self.predict(val[0])[:, 0], np.asarray(val[1])[:, 0] > 0, spatial_dims=self.spatial_dims)
            defined = [s for s in scores if s is not None]
            report["val_dice"] = float(np.mean(defined)) if defined else None
            report["val_undefined"] = len(scores) - len(defined)
        return report

    def _flip(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        axes = [2 + a for a in range(self.spatial_dims) if torch.rand((), generator=generator) < 0.5]
        return (x.flip(axes), y.flip(axes)) if axes else (x, y)

    @torch.no_grad()
    def predict(self, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """Binary tumour masks ``(N, 1, *S)`` bool for images ``(N, 1, *S)`` (argmax of the two classes)."""
        x = _as_images(images, self.spatial_dims, "images")
        self.network.eval()
        out = []
        for start in range(0, len(x), batch_size):
            batch = _pad_to_multiple(x[start : start + batch_size], self._multiple, "replicate").to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
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
