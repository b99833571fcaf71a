"""oncodiff.pipeline: checkpoint + inputs -> predictions, with no training code."""

from oncodiff.pipeline.predict import Predictions, calibrate_run, predict, predict_cases, predict_modes

__all__ = ["Predictions", "calibrate_run", "predict", "predict_cases", "predict_modes"]
