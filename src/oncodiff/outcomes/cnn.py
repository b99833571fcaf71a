"""The scan CNN baselines under cross-validation (ImmunoDiff Table 1: DenseNet-121, and DenseNet-121 +
clinical variables): a from-scratch MONAI DenseNet on the pre-treatment crops, run through
``cross_validation.py: cross_validate`` on the same folds as every other model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from oncodiff.config import EvaluationConfig
from oncodiff.outcomes.cross_validation import (
    CVResult, centred, check_groups, check_labels, check_matrix, check_options, check_survival, cross_validate,
    response_task, survival_task,
)
from oncodiff.outcomes.heads import balanced_bce
from oncodiff.outcomes.networks import ScanOutcomeCNN, cox_partial_likelihood
from oncodiff.outcomes.scaling import standardise


@dataclass(frozen=True)
class CNNOptions:
    """The from-scratch scan CNN baseline (MONAI DenseNet, tiny widths so it trains on a CPU).

    ``precision="bf16-mixed"`` autocasts to bf16 on GPU and for 2D on CPU; 3D on CPU trains in
    float32 because this torch's CPU bf16 conv3d weight gradients are wrong (see ``_autocast``).
    """

    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    init_features: int = 8
    growth_rate: int = 8
    block_config: tuple[int, ...] = (2, 2)
    precision: Literal["bf16-mixed", "32"] = "bf16-mixed"
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        check_options(self, positive=("epochs", "batch_size", "lr", "init_features", "growth_rate"),
                       non_negative=("weight_decay",))
        if self.precision not in ("bf16-mixed", "32"):
            raise ValueError(f"CNNOptions.precision must be 'bf16-mixed' or '32', got {self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"CNNOptions.device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")

    @classmethod
    def from_config(cls, config: EvaluationConfig) -> CNNOptions:
        return cls(epochs=config.cnn_epochs)


def check_images(images: np.ndarray, n: int) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim not in (4, 5) or images.shape[0] != n:
        raise ValueError(f"images must be (N, C, *spatial) with 2 or 3 spatial axes and N = {n}; "
                         f"got shape {images.shape}")
    if not np.isfinite(images).all():
        raise ValueError("images contain NaN or inf")
    return images


# Scan CNN baselines (ImmunoDiff Table 1: DenseNet-121, and DenseNet-121 + clinical variables)


def cross_validate_cnn_response(
    images: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 0,
    clinical: np.ndarray | None = None, options: CNNOptions | None = None,
) -> CVResult:
    """Cross-validate a from-scratch CNN on pre-treatment crops ``(N, C, *spatial)`` for response.

    With ``clinical`` ``(N, F)`` (e.g. ``clinical_design_matrix(...)``, standardised inside each fold)
    the clinical variables join the image embedding before the final layer. Labels as in
    ``cross_validate_response``; same folds for the same labels, groups, folds and seed.
    """
    labels = check_labels(labels)
    images, groups, clinical, options = _inputs(images, groups, clinical, options, len(labels))

    def fit_predict(k: int, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        clinical_train, clinical_test = _fold_clinical(clinical, train, test)
        y = torch.as_tensor(labels[train], dtype=torch.float32)
        bce = balanced_bce(y)
        net = _train_scan_cnn(images[train], clinical_train, lambda out, batch: bce(out, y[batch].to(out.device)),
                              options, seed + k)
        return 1.0 / (1.0 + np.exp(-_predict_scan_cnn(net, images[test], clinical_test, options)))

    name = "cnn+clinical" if clinical is not None else "cnn"
    return cross_validate(response_task(labels), fit_predict, groups, folds, seed, name)


def cross_validate_cnn_survival(
    images: np.ndarray, time: np.ndarray, event: np.ndarray, groups: np.ndarray, folds: int = 5,
    seed: int = 0, clinical: np.ndarray | None = None, options: CNNOptions | None = None,
) -> CVResult:
    """Cross-validate a from-scratch CNN with a Cox output on crops ``(N, C, *spatial)``.

    Trained with the Cox partial likelihood over the risk sets inside each mini-batch (a batch
    without events contributes no gradient). ``clinical`` as in ``cross_validate_cnn_response``.
    """
    time, event, known = check_survival(time, event)
    images, groups, clinical, options = _inputs(images, groups, clinical, options, len(time))

    def fit_predict(k: int, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        clinical_train, clinical_test = _fold_clinical(clinical, train, test)
        t, e = torch.as_tensor(time[train], dtype=torch.float32), torch.as_tensor(event[train], dtype=torch.float32)

        def loss(out: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
            return cox_partial_likelihood(out, t[batch].to(out.device), e[batch].to(out.device))

        net = _train_scan_cnn(images[train], clinical_train, loss, options, seed + k)
        train_risk = _predict_scan_cnn(net, images[train], clinical_train, options)
        return centred(train_risk, _predict_scan_cnn(net, images[test], clinical_test, options))

    name = "cnn+clinical" if clinical is not None else "cnn"
    return cross_validate(survival_task(time, event, known), fit_predict, groups, folds, seed, name)


def _inputs(images: np.ndarray, groups: np.ndarray, clinical: np.ndarray | None, options: CNNOptions | None,
            n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, CNNOptions]:
    images, groups = check_images(images, n), check_groups(groups, n)
    clinical = None if clinical is None else check_matrix("clinical", clinical, n)
    return images, groups, clinical, options or CNNOptions()


def _fold_clinical(clinical: np.ndarray | None, train: np.ndarray,
                   test: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    if clinical is None:
        return None, None
    return standardise(clinical[train], clinical[test])


def _device(options: CNNOptions) -> torch.device:
    if options.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(options.device)


def _autocast(options: CNNOptions, device: torch.device, spatial_dims: int) -> torch.autocast:
    # bf16 autocast: the CPUs we target have AMX bf16 (design.md), GPUs have bf16 tensor cores.
    # Except 3D on CPU: oneDNN's bf16 conv3d weight gradient is wrong (NaN or >5 % off, every time)
    # when the first spatial axis is 2 and in_channels >= 16 (torch 2.13 CPU, with or without AMX),
    # which this network's deepest block reaches on small crops. Forward and input gradients are fine.
    enabled = options.precision == "bf16-mixed" and not (device.type == "cpu" and spatial_dims == 3)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    # Near-equal batches of at least batch_size (when possible): no size-1 batch for BatchNorm.
    return list(torch.tensor_split(order, max(1, len(order) // batch_size)))


def _as_tensors(images: np.ndarray, clinical: np.ndarray | None,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = torch.as_tensor(images, dtype=torch.float32, device=device)
    c = None if clinical is None else torch.as_tensor(clinical, dtype=torch.float32, device=device)
    return x, c


def _train_scan_cnn(images: np.ndarray, clinical: np.ndarray | None,
                    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], options: CNNOptions,
                    seed: int) -> ScanOutcomeCNN:
    device = _device(options)
    x, c = _as_tensors(images, clinical, device)
    cuda_devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        net = ScanOutcomeCNN(spatial_dims=x.ndim - 2, in_channels=x.shape[1],
                             clinical_features=0 if c is None else c.shape[1], init_features=options.init_features,
                             growth_rate=options.growth_rate, block_config=options.block_config).to(device)
        optimizer = torch.optim.AdamW(net.parameters(), lr=options.lr, weight_decay=options.weight_decay)
        shuffle = torch.Generator().manual_seed(seed)
        net.train()
        for _ in range(options.epochs):
            for batch in _batches(torch.randperm(len(x), generator=shuffle), options.batch_size):
                with _autocast(options, device, x.ndim - 2):
                    out = net(x[batch.to(device)], None if c is None else c[batch.to(device)])
                optimizer.zero_grad()
                loss(out.float(), batch).backward()
                optimizer.step()
    return net.eval()


def _predict_scan_cnn(net: ScanOutcomeCNN, images: np.ndarray, clinical: np.ndarray | None,
                      options: CNNOptions) -> np.ndarray:
    device = next(net.parameters()).device
    x, c = _as_tensors(images, clinical, device)
    outputs = []
    with torch.no_grad(), _autocast(options, device, x.ndim - 2):
        for batch in torch.arange(len(x), device=device).split(options.batch_size):
            outputs.append(net(x[batch], None if c is None else c[batch]).float().cpu())
    return torch.cat(outputs).numpy().astype(float)
