"""oncodiff: predict post-treatment tumour scans with conditional diffusion models."""

__version__ = "0.1.0"
