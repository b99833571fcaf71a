"""oncodiff.evaluation: metrics, tumour size, baselines, downstream heads and the report."""

from oncodiff.evaluation.distribution import (
    extract_features,
    fid,
    frechet_distance,
    frechet_distance_from_moments,
    load_torchscript,
    lpips,
    median_heuristic_bandwidth,
    mmd,
)
from oncodiff.evaluation.metrics import (
    MetricTable,
    bbox_mask,
    image_metrics,
    mae,
    mse,
    psnr,
    ssim,
    ssim_map,
    summarize,
)
from oncodiff.evaluation.protocol import evaluate
from oncodiff.evaluation.report import write_report
from oncodiff.evaluation.tumor_size import dice, relative_change, size_metrics, volume
from oncodiff.evaluation.uncertainty import calibration_curve, coverage, spread_error_correlation


__all__ = [
    "evaluate",
    "write_report",
    "MetricTable",
    "bbox_mask",
    "calibration_curve",
    "coverage",
    "dice",
    "extract_features",
    "fid",
    "frechet_distance",
    "frechet_distance_from_moments",
    "image_metrics",
    "load_torchscript",
    "lpips",
    "mae",
    "median_heuristic_bandwidth",
    "mmd",
    "mse",
    "psnr",
    "relative_change",
    "size_metrics",
    "spread_error_correlation",
    "ssim",
    "ssim_map",
    "summarize",
    "volume",
]
