"""oncodiff.training: LightningModules, callbacks and run folders. Never imported by models, diffusion or pipeline."""

from oncodiff.training.train import train

__all__ = ["train"]
