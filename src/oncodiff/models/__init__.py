"""oncodiff.models: networks only (see docs/design.md). Never imports data, training or cli."""

from oncodiff.models.clinical import CbiAdapter, ClinicalTokenizer, GroupAttention
from oncodiff.models.conditions import (
    CLASS_COUNTS,
    CLASS_LABEL_KEYS,
    Conditions,
    conditions_from_batch,
    image_condition_names,
    post_from_target,
    target_from_batch,
)
from oncodiff.models.denoiser import ConditionalDenoiser, DecoupledDriftHead, DenoiserOutput, count_parameters
from oncodiff.models.embeddings import ROPE_BASE, DaysEmbedding, apply_rope, fourier_features, rope_frequencies
from oncodiff.models.features import upblock_feature_dim, upblock_features

__all__ = [
    "CLASS_COUNTS",
    "CLASS_LABEL_KEYS",
    "ROPE_BASE",
    "CbiAdapter",
    "ClinicalTokenizer",
    "ConditionalDenoiser",
    "Conditions",
    "DaysEmbedding",
    "DecoupledDriftHead",
    "DenoiserOutput",
    "GroupAttention",
    "apply_rope",
    "conditions_from_batch",
    "count_parameters",
    "fourier_features",
    "image_condition_names",
    "post_from_target",
    "target_from_batch",
    "rope_frequencies",
    "upblock_feature_dim",
    "upblock_features",
]
