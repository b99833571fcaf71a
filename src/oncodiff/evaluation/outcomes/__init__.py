"""Response and survival prediction under patient-grouped cross-validation, and their baselines.

    cross_validation.py  folds, metrics and the one cross-validation loop every model runs
    heads.py             the feature-based heads (ImmunoDiff Stage 2) and the clinical linear baselines
    cnn.py               the from-scratch scan CNN baselines
    survival_curves.py   Kaplan-Meier curves by predicted risk group
"""

from oncodiff.evaluation.outcomes.cnn import CNNOptions, cross_validate_cnn_response, cross_validate_cnn_survival
from oncodiff.evaluation.outcomes.cross_validation import (
    NON_RESPONDER,
    RESPONDER,
    RESPONSE_METRICS,
    SURVIVAL_METRICS,
    UNKNOWN_RESPONSE,
    CVResult,
    concordance,
    cross_validate,
    folds_problem,
    make_folds,
    response_metrics,
    survival_metrics,
)
from oncodiff.evaluation.outcomes.heads import HeadOptions, cross_validate_response, cross_validate_survival
from oncodiff.evaluation.outcomes.survival_curves import (
    KaplanMeierCurve,
    KaplanMeierData,
    kaplan_meier_by_risk,
    plot_kaplan_meier,
)

__all__ = [
    "CNNOptions", "CVResult", "HeadOptions", "KaplanMeierCurve", "KaplanMeierData", "NON_RESPONDER", "RESPONDER",
    "RESPONSE_METRICS", "SURVIVAL_METRICS", "UNKNOWN_RESPONSE", "concordance", "cross_validate",
    "cross_validate_cnn_response", "cross_validate_cnn_survival", "cross_validate_response", "cross_validate_survival",
    "folds_problem", "kaplan_meier_by_risk", "make_folds", "plot_kaplan_meier", "response_metrics", "survival_metrics",
]
