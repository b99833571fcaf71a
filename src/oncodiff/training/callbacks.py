"""Small Lightning callbacks: one readable line per epoch where no progress bar fits; last.ckpt after every
validation."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, Checkpoint


class EpochLine(Callback):
    """Prints ``epoch 3/200  step 150/900  train_loss 0.0123  val_loss 0.0150  lr 1.9e-04  2.1 min``."""

    def __init__(self, total_steps: int):
        self.total_steps = total_steps
        self.start = time.monotonic()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}",
                 f"step {trainer.global_step}/{self.total_steps}"]
        for key in ("train_loss_epoch", "val_loss"):
            if key in metrics:
                parts.append(f"{key.removesuffix('_epoch')} {float(metrics[key]):.5f}")
        optimizers = trainer.optimizers
        if optimizers:
            parts.append(f"lr {optimizers[0].param_groups[0]['lr']:.2e}")
        parts.append(f"{(time.monotonic() - self.start) / 60:.1f} min")
        print("  ".join(parts), flush=True)


class ValidateLastStep(Callback):
    """Stops training at its planned last step with a validation there, also inside an epoch: Lightning validates
    at an epoch's end, or when asked to stop (``should_stop``), so a budget of 117 steps in epochs of 32 trains
    117 steps with the last 21 validated (checked, checkpointed, exported), not 96."""

    def __init__(self, total_steps: int):
        self.total_steps = total_steps

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.total_steps:
            trainer.should_stop = True


class SaveLast(Checkpoint):
    """Writes ``path`` (the run's last.ckpt) after every validation, and at the end of a run that never validated.

    Lightning's ``ModelCheckpoint(save_last=True)`` writes last.ckpt only together with a better "best"
    checkpoint, so a run interrupted after its validation loss had stopped improving resumed from that older
    epoch; this callback is the only writer of last.ckpt. As a ``Checkpoint``, Lightning runs it after every
    other callback and after the ModelCheckpoint listed before it, so the file holds the epoch's early-stopping
    check and best score."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.saved = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            trainer.save_checkpoint(self.path)
            self.saved = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.saved:  # no validation split: the export falls back to this checkpoint
            trainer.save_checkpoint(self.path)
