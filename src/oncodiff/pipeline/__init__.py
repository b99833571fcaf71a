"""oncodiff.pipeline: checkpoint + inputs -> predictions, with no training code."""
