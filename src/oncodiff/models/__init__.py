"""oncodiff.models: networks only (see docs/design.md). Never imports data, training or cli.

The networks take plain arguments, as MONAI's do; ``factory.py`` alone reads the config and maps it onto them."""

from oncodiff.models.anatomy import AnatomyEncoder, AnatomyEncoders, nt_xent
from oncodiff.models.autoencoder import Autoencoder, LatentCodec, LatentDenoiser
from oncodiff.models.clinical import CbiAdapter, ClinicalTokenizer, GroupAttention
from oncodiff.models.conditions import (
    CLASS_COUNTS,
    CLASS_LABEL_KEYS,
    BatchConditioning,
    Conditions,
    conditions_from_batch,
    control_from_batch,
    image_condition_names,
    post_from_target,
    prior_layout,
    source_in_target_space,
    target_from_batch,
    target_weights,
)
from oncodiff.models.controlnet import ControlledDenoiser, ControlNetBranch
from oncodiff.models.denoiser import (
    ConditionalDenoiser,
    DecoupledDriftHead,
    DenoiserOutput,
    PixelSpace,
    WrappedDenoiser,
    count_parameters,
)
from oncodiff.models.embeddings import ROPE_BASE, DaysEmbedding, apply_rope, fourier_features, rope_frequencies
from oncodiff.models.features import upblock_feature_dim, upblock_features

__all__ = [
    "CLASS_COUNTS",
    "CLASS_LABEL_KEYS",
    "ROPE_BASE",
    "AnatomyEncoder",
    "AnatomyEncoders",
    "Autoencoder",
    "BatchConditioning",
    "CbiAdapter",
    "ClinicalTokenizer",
    "ConditionalDenoiser",
    "Conditions",
    "ControlNetBranch",
    "ControlledDenoiser",
    "DaysEmbedding",
    "DecoupledDriftHead",
    "DenoiserOutput",
    "GroupAttention",
    "LatentCodec",
    "LatentDenoiser",
    "PixelSpace",
    "WrappedDenoiser",
    "apply_rope",
    "conditions_from_batch",
    "control_from_batch",
    "count_parameters",
    "fourier_features",
    "image_condition_names",
    "nt_xent",
    "post_from_target",
    "prior_layout",
    "source_in_target_space",
    "target_from_batch",
    "target_weights",
    "rope_frequencies",
    "upblock_feature_dim",
    "upblock_features",
]
