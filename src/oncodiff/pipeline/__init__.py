"""oncodiff.pipeline: checkpoint + inputs -> predictions, with no training code."""

from oncodiff.pipeline.predict import Predictions, predict, predict_cases

__all__ = ["Predictions", "predict", "predict_cases"]
