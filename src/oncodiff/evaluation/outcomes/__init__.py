"""Response and survival prediction under patient-grouped cross-validation, and their baselines."""

from oncodiff.evaluation.outcomes.cross_validation import (
    NON_RESPONDER,
    RESPONDER,
    RESPONSE_METRICS,
    SURVIVAL_METRICS,
    UNKNOWN_RESPONSE,
    CNNOptions,
    CVResult,
    HeadOptions,
    KaplanMeierCurve,
    KaplanMeierData,
    concordance,
    cross_validate_cnn_response,
    cross_validate_cnn_survival,
    cross_validate_response,
    cross_validate_survival,
    kaplan_meier_by_risk,
    make_folds,
    plot_kaplan_meier,
    response_metrics,
    survival_metrics,
)

__all__ = [
    "CNNOptions", "CVResult", "HeadOptions", "KaplanMeierCurve", "KaplanMeierData", "NON_RESPONDER", "RESPONDER",
    "RESPONSE_METRICS", "SURVIVAL_METRICS", "UNKNOWN_RESPONSE", "concordance", "cross_validate_cnn_response",
    "cross_validate_cnn_survival", "cross_validate_response", "cross_validate_survival", "kaplan_meier_by_risk",
    "make_folds", "plot_kaplan_meier", "response_metrics", "survival_metrics",
]
