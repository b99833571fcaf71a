"""LightningModules: the diffusion model and the deterministic regression baseline.

Both wrap the same :class:`~oncodiff.models.ConditionalDenoiser`, so "the same U-Net trained
deterministically" (the regression baseline, evaluation/baselines.py) differs from the diffusion model only in
its objective. Randomness in a training step (timesteps, noise, label dropout) comes from generators
seeded by (seed, global step, rank, element): a resumed run replays exactly what an uninterrupted
run would have drawn.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from oncodiff.config import Config
from oncodiff.diffusion import DiffusionLoss, NoiseSchedule
from oncodiff.models import (
    Conditions, conditions_from_batch, source_in_target_space, target_from_batch, target_weights,
)
from oncodiff.models.factory import ModelLayout, batch_conditioning, build_network
from oncodiff.training.init import prepare_network

VALIDATION_SEED = 12345  # validation draws the same t and noise for each case at every check


def step_generators(seed: int, step: int, rank: int, n: int) -> list[torch.Generator]:
    """One generator per batch element, a pure function of (seed, step, rank, element)."""
    base = (seed * 1_000_003 + step) * 1_009 + rank
    return [torch.Generator().manual_seed(base * 1_013 + i) for i in range(n)]


def tumor_weight_map(tumor_mask: Tensor, weight: float, dilation: int = 3) -> Tensor | None:
    """1 everywhere plus ``weight`` inside the tumour mask dilated by ``dilation`` voxels. (B, 1, *S)."""
    if weight <= 0:
        return None
    pool = F.max_pool2d if tumor_mask.ndim == 4 else F.max_pool3d
    dilated = pool(tumor_mask.float(), kernel_size=2 * dilation + 1, stride=1, padding=dilation)
    return 1.0 + weight * dilated


class TrainingModule(L.LightningModule):
    """What every stage shares: its network (``build_network`` for training.stage, then init-from and
    freezing), the optimiser and LR schedule, seeded generators, and logging. Subclasses define
    ``objective(batch, validation) -> (loss, parts)``."""

    def __init__(self, config: Config, layout: ModelLayout, total_steps: int):
        super().__init__()
        self.config = config
        self.layout = layout
        self.total_steps = max(1, total_steps)
        self.net = build_network(config, layout)
        self.init_report = prepare_network(self.net, config)

    def configure_optimizers(self) -> dict[str, Any]:
        train = self.config.training
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
        warmup = min(train.warmup_steps, self.total_steps // 4)

        def lr_factor(step: int) -> float:  # linear warm-up, then cosine to zero over total_steps
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = min(1.0, (step - warmup) / max(1, self.total_steps - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _generators(self, batch: dict, validation: bool) -> list[torch.Generator]:
        n = batch["pre"].shape[0]
        if validation:
            return [torch.Generator().manual_seed(VALIDATION_SEED + int(i)) for i in batch["index"]]
        return step_generators(self.config.training.seed, self.global_step, self.global_rank, n)

    def _log_parts(self, parts: dict[str, Tensor], stage: str, batch_size: int) -> None:
        on_step = stage == "train"
        for name, value in parts.items():
            key = f"{stage}_{name}" if name != "loss" else f"{stage}_loss"
            self.log(key, value, on_step=on_step, on_epoch=True, prog_bar=name == "loss", batch_size=batch_size,
                     sync_dist=not on_step)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, parts = self.objective(batch, validation=False)
        self._log_parts(parts, "train", batch["pre"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        _, parts = self.objective(batch, validation=True)
        self._log_parts(parts, "val", batch["pre"].shape[0])

    def objective(self, batch: dict, validation: bool) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError


class _DenoiserModule(TrainingModule):
    """A stage whose network is a (wrapped) ConditionalDenoiser conditioned on the batch."""

    def _conditions(self, batch: dict, generators: list[torch.Generator] | None) -> Conditions:
        cond = conditions_from_batch(batch, batch_conditioning(self.config.model), self.layout.image_condition_names)
        if generators is None:  # validation: conditional, nothing dropped
            return cond
        return self.net.drop_labels(cond, generator=generators[0])


class DiffusionModule(_DenoiserModule):
    """Conditional diffusion on the target (post or drift) with the configured parameterisation."""

    def __init__(self, config: Config, layout: ModelLayout, total_steps: int):
        super().__init__(config, layout, total_steps)
        self.loss_fn = DiffusionLoss.from_config(config.diffusion, NoiseSchedule.from_config(config.diffusion))

    def objective(self, batch: dict, validation: bool) -> tuple[Tensor, dict[str, Tensor]]:
        generators = self._generators(batch, validation)
        cond = self._conditions(batch, None if validation else generators)
        diffusion, with_mask = self.config.diffusion, self.config.model.generate_mask
        x0 = target_from_batch(batch, diffusion.target, with_mask)
        drift_target = (batch["post"] - batch["pre"]) if self.net.drift_head is not None else None

        def model_fn(x_t: Tensor, t: Tensor):
            out = self.net(x_t, t, cond)
            return out.prediction if drift_target is None else (out.prediction, out.drift)

        weight = target_weights(batch, tumor_weight_map(batch["tumor_mask"], diffusion.tumor_loss_weight), with_mask)
        source = source_in_target_space(batch["pre"].float(), diffusion.target, diffusion.source,
                                        batch["tumor_mask"].float() if with_mask else None)
        return self.loss_fn(model_fn, x0, generators, weight_map=weight, source=source, drift_target=drift_target)


class ResidualDiffusionModule(DiffusionModule):
    """diffusion.residual=regression (CorrDiff): diffusion on the residual, the target minus the frozen
    regression U-Net's mean, with that mean as an extra image condition (``models/residual.py``). The regression
    sees the conditions before label dropout: at sampling it always sees the case's own clinical variables."""

    def _conditions(self, batch: dict, generators: list[torch.Generator] | None) -> Conditions:
        cond = self.net.encode_conditions(conditions_from_batch(batch, batch_conditioning(self.config.model)))
        return cond if generators is None else self.net.drop_labels(cond, generator=generators[0])

    def objective(self, batch: dict, validation: bool) -> tuple[Tensor, dict[str, Tensor]]:
        generators = self._generators(batch, validation)
        cond = self._conditions(batch, None if validation else generators)
        diffusion, with_mask = self.config.diffusion, self.config.model.generate_mask
        x0 = target_from_batch(batch, diffusion.target, with_mask).float() - self.net.mean_from_encoded(cond)
        drift_target = (batch["post"] - batch["pre"]) if self.net.drift_head is not None else None

        def model_fn(x_t: Tensor, t: Tensor):
            out = self.net(x_t, t, cond)
            return out.prediction if drift_target is None else (out.prediction, out.drift)

        weight = target_weights(batch, tumor_weight_map(batch["tumor_mask"], diffusion.tumor_loss_weight), with_mask)
        return self.loss_fn(model_fn, x0, generators, weight_map=weight, source=None, drift_target=drift_target)


class ForecastResidualModule(ResidualDiffusionModule):
    """diffusion.residual=mechanistic: diffusion on the target minus the mechanistic forecast of the sample's class
    (its forecasts precomputed into the batch, data/mechanistic.py), that forecast an extra image condition
    (``models/residual.py: ForecastResidualDenoiser``). The class picks the forecast before label dropout, so a
    sample whose label is dropped keeps the forecast its residual is measured from; an unknown class gets the
    outcome-unknown forecast."""

    def _conditions(self, batch: dict, generators: list[torch.Generator] | None) -> Conditions:
        cond = self.net.encode_conditions(conditions_from_batch(batch, batch_conditioning(self.config.model),
                                                                self.layout.image_condition_names))
        return cond if generators is None else self.net.drop_labels(cond, generator=generators[0])


class RegressionModule(_DenoiserModule):
    """The deterministic baseline: the same U-Net, no noise, fed zeros and t = 0, trained with MSE."""

    def objective(self, batch: dict, validation: bool) -> tuple[Tensor, dict[str, Tensor]]:
        generators = self._generators(batch, validation)
        cond = self._conditions(batch, None if validation else generators)
        with_mask = self.config.model.generate_mask
        target = target_from_batch(batch, self.config.diffusion.target, with_mask)
        prediction = self.net(torch.zeros_like(target), torch.zeros(target.shape[0], dtype=torch.long,
                                                                    device=target.device), cond).prediction.float()
        weight = target_weights(batch, tumor_weight_map(batch["tumor_mask"], self.config.diffusion.tumor_loss_weight),
                                with_mask)
        squared = (prediction - target).square()
        mse = (squared * weight).mean() if weight is not None else squared.mean()
        return mse, {"mse": mse.detach(), "loss": mse.detach()}


MODULES = {"diffusion": DiffusionModule, "regression": RegressionModule}


def diffusion_module_class(config: Config) -> type[DiffusionModule]:
    """The module of training.stage=diffusion: the residual design's when diffusion.residual asks for it."""
    return {"regression": ResidualDiffusionModule, "mechanistic": ForecastResidualModule}.get(
        config.diffusion.residual, DiffusionModule)
