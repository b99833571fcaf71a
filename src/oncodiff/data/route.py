"""The default route for 3D cohorts: how a volumetric cohort is trained when the config does not say.

A preset made for 2D crops (the demo's) cannot take 3D scans as they are. Rather than refuse, ``oncodiff
train`` then trains on the tumour's axial slices (2.5D: each slice a 2D sample, stitched back into one
volume per follow-up by ``predict``), with these settings:

- ``data.slices=tumor``, ``data.slice_margin`` = ``evaluation.bbox_margin`` (4 voxels by default) and
  ``data.train_slice_margin=2``: every slice with tumour and as many more on each side as the tumour box
  (``evaluation.bbox_margin`` voxels beyond the tumour) reaches are cut and predicted, so every voxel of that box is
  the model's and its samples can differ there; training takes the tumour's slices and two more on each side (the
  route before 2026-12-08 cut and predicted those only). With two slices predicted, the box's outer slices were the
  denoised baseline in every sample: 22 % of the box's voxels had no spread in a 3D test cohort, pulling its
  spread-skill ratio down and putting the truth outside every sample there. Training on all four slices as well was
  measured: the distribution spread more, but the in-tumour MAE across families was worse (docs/results.md, "Slices
  of the whole box"). No tumour volume is counted on the slices beyond those trained on (``Case.volume_counted``):
  there a glioma-trained model grew brain tumours that were not there;
- ``data.smoothing=auto``: the model starts from the denoised baseline and learns the change, not the
  noise of two independent acquisitions (data/denoise.py);
- ``diffusion.noise_sampling=lognormal`` (when the config leaves it at ``auto``): training draws its noise levels
  as EDM does (log sigma ~ N(-1.2, 1.2^2)) rather than uniformly over the timesteps. Measured across two synthetic
  families written independently (``benchmarks/crossfamily.py``, 5 CPU-minutes): trained on brain and tested on
  glioma, in-tumour MAE 0.89x the denoised baseline's given the true class and 0.91x with the outcome unknown,
  against 1.12x and 1.11x with uniform levels; the other direction and in-family within a run's spread;

Registration, bias correction and normalisation are preprocessing's defaults for every cohort
(``data.registration=auto`` registers a follow-up rigidly when it is measurably misaligned).

Why slices and not 3D patches: on 2 CPU cores a 2D step costs a fraction of a 3D one, and a 48-patient
cohort gives ~20 slices per follow-up, so the same budget sees far more training samples
(``benchmarks/volumetric.py`` measures both routes' steps per minute and their quality). A user who sets
``data.slices`` or ``data.dims=3`` keeps what they set.
"""

from __future__ import annotations

from pathlib import Path

from oncodiff.cohort import load_cohort
from oncodiff.config import Config

VOLUMETRIC_ROUTE = ("data.slices=tumor", "data.smoothing=auto", "diffusion.noise_sampling=lognormal")
_NOISE_LEVELS = "diffusion.noise_sampling"
TRAIN_SLICE_MARGIN = 2  # the slices beyond the tumour's that training takes (the route cuts the box's)


def route_overrides(config: Config) -> list[str]:
    """The route's settings for ``config``: :data:`VOLUMETRIC_ROUTE`, the slices of its tumour box cut and
    predicted, and :data:`TRAIN_SLICE_MARGIN` of them trained on."""
    margin = config.evaluation.bbox_margin
    return [*VOLUMETRIC_ROUTE, f"data.slice_margin={margin}",
            f"data.train_slice_margin={min(TRAIN_SLICE_MARGIN, margin)}"]


def needs_route(config: Config, cohort_dims: int | None) -> bool:
    """True when ``config`` asks for 2D crops without saying how a 3D cohort becomes 2D."""
    return cohort_dims == 3 and config.data.dims == 2 and config.data.slices == "none"


def volumetric_route(config: Config, cohort: str | Path) -> tuple[Config, str | None]:
    """``config`` with the 3D route applied when the cohort is 3D and the config has no way to take it
    (:func:`needs_route`), and a sentence saying what was chosen and why; else ``(config, None)``."""
    dims = load_cohort(cohort).dims
    if not needs_route(config, dims):
        return config, None
    # a noise-level distribution the config names is kept; auto becomes the route's
    kept = config.diffusion.noise_sampling != "auto"
    overrides = route_overrides(config)
    routed = config.with_overrides([o for o in overrides if not (kept and o.startswith(_NOISE_LEVELS))])
    crop = "x".join(str(s) for s in config.data.crop_size)
    levels = ("EDM's log-normal noise levels (diffusion.noise_sampling=lognormal)" if not kept else
              f"the configured noise levels (diffusion.noise_sampling={config.diffusion.noise_sampling})")
    return routed, (f"3D cohort, 2D preset: training on the tumour's axial slices ({crop} crops; the tumour's slices "
                    f"+-{routed.data.train_slice_margin} trained on, +-{routed.data.slice_margin} predicted: the "
                    "tumour box of evaluation.bbox_margin), from the denoised baseline (data.smoothing=auto), "
                    f"at {levels}; "
                    "predict stitches the slices into one volume per follow-up. Why: 2D steps "
                    "are much cheaper than 3D ones and each follow-up gives many slices (benchmarks/volumetric.py); "
                    "log-normal noise levels transferred better between two synthetic families "
                    "(benchmarks/crossfamily.py). "
                    f"Set: {' '.join('--set ' + o for o in overrides)} to pin this, or data.dims=3 with a "
                    "3-value data.crop_size for 3D patches")
