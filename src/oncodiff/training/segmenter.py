"""Training the tumour segmenter (``models/segmenter.py``) at the end of ``oncodiff train``.

Following the NAC breast paper's protocol it learns (true follow-up crop -> follow-up GTV) pairs, and
baseline crops with their masks, from the TRAINING split only: Dice + cross-entropy (MONAI
``DiceCELoss``), Adam, random flips and bf16 autocast (fp32 on a CPU without native bf16:
``oncodiff.precision``). Validation Dice is on the validation split's follow-ups.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss

from oncodiff.arrays import Value, dice
from oncodiff.config import Config
from oncodiff.data import CohortDataModule
from oncodiff.models.segmenter import TumorSegmenter, as_images, pad_to_multiple
from oncodiff.precision import autocast


def fit_segmenter(
    segmenter: TumorSegmenter,
    images: np.ndarray,
    masks: np.ndarray,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    steps: int = 300,
    batch_size: int = 8,
) -> dict[str, Value | int]:
    """Train ``segmenter`` on images/masks ``(N, 1, *S)``; ``val=(images, masks)`` reports validation Dice.

    Returns ``{"steps", "final_loss", "val_dice", "val_undefined"}``: val_dice is the mean Dice
    over validation cases (None without val), val_undefined counts cases where it is not
    defined (empty prediction and empty truth).
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    dims, multiple, device = segmenter.spatial_dims, segmenter.multiple, segmenter.device
    x = pad_to_multiple(as_images(images, dims, "images"), multiple, "replicate")
    y = pad_to_multiple((as_images(masks, dims, "masks") > 0).float(), multiple, "constant")
    if x.shape != y.shape:
        raise ValueError(f"images {np.shape(images)} and masks {np.shape(masks)} must have the same shape")
    generator = torch.Generator().manual_seed(segmenter.seed)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(segmenter.network.parameters(), lr=segmenter.learning_rate)
    segmenter.network.train()
    for _ in range(steps):
        index = torch.randint(len(x), (min(batch_size, len(x)),), generator=generator)
        batch_x, batch_y = _flip(x[index], y[index], dims, generator)
        with autocast("bf16-mixed", device):
            logits = segmenter.network(batch_x.to(device))
        loss = loss_fn(logits.float(), batch_y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    report: dict[str, Value | int] = {"steps": steps, "final_loss": loss.item()}
    report.update(val_dice=None, val_undefined=0)
    if val is not None:
        scores = dice(segmenter.predict(val[0])[:, 0], np.asarray(val[1])[:, 0] > 0, spatial_dims=dims)
        defined = [s for s in scores if s is not None]
        report["val_dice"] = float(np.mean(defined)) if defined else None
        report["val_undefined"] = len(scores) - len(defined)
    return report


def _flip(x: torch.Tensor, y: torch.Tensor, spatial_dims: int,
          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    axes = [2 + a for a in range(spatial_dims) if torch.rand((), generator=generator) < 0.5]
    return (x.flip(axes), y.flip(axes)) if axes else (x, y)


def train_segmenter(data: CohortDataModule, config: Config, path: Path) -> dict:
    """Fit the tumour segmenter on the training split's true follow-ups (NAC paper's protocol) and
    baseline scans; validation Dice is on the validation split's follow-ups."""
    path.parent.mkdir(parents=True, exist_ok=True)
    splits = {name: _post_with_masks(data, name) for name in ("train", "val")}
    post, post_masks = splits["train"]
    if not len(post):
        return {"trained": False, "reason": "no follow-up tumour masks in the training split"}
    train = data.dataset("train").indices
    arrays = data.preprocessed.arrays
    images = np.concatenate([post, arrays["pre"][train]])
    masks = np.concatenate([post_masks, arrays["tumor_mask"][train]])
    print(f"training the tumour segmenter on {len(post)} true follow-ups and {len(train)} baseline crops ...",
          flush=True)
    segmenter = TumorSegmenter(spatial_dims=data.spatial_dims, seed=config.training.seed, device="cpu")
    report = fit_segmenter(segmenter, images, masks, val=splits["val"] if len(splits["val"][0]) else None,
                           steps=config.evaluation.segmenter_steps)
    segmenter.save(path)
    print(f"segmenter validation Dice {report['val_dice']}", flush=True)
    return {"trained": True, **report}


def _post_with_masks(data: CohortDataModule, split: str) -> tuple[np.ndarray, np.ndarray]:
    dataset = data.dataset(split)
    arrays = data.preprocessed.arrays
    keep = [i for i in dataset.indices if data.records[i].has_post_mask]
    return arrays["post"][keep], arrays["post_mask"][keep]
