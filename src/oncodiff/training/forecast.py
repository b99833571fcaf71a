"""diffusion.residual=mechanistic at training time: the mechanistic forecast fitted on the training split and
precomputed into every training and validation sample.

The parameter sets (data/mechanistic.py: one with the outcome unknown, one per class of model.class_label) are
fitted on the training split's pairs only, exactly as the model sees them (its pre scan, denoised as
data.smoothing says, and its target follow-up), never on a validation or test patient. Each sample then carries
the forecast under every set as batch entry ``mechanistic`` (1 + K channels), flipped and rotated with the
sample, and the export's layout carries the sets, so ``predict`` (pipeline/cases.py) computes the same channels
for the cases it predicts.
"""

from __future__ import annotations

import time

import numpy as np

from oncodiff.config import Config
from oncodiff.data import CohortDataModule
from oncodiff.data import mechanistic
from oncodiff.errors import OncodiffError
from oncodiff.models.conditions import CLASS_COUNTS, CLASS_LABEL_KEYS, FORECAST_KEY

MIN_FIT_PAIRS = 3  # training pairs with a baseline tumour the fit needs


def uses_forecast(config: Config) -> bool:
    """True when the run's network is conditioned on the mechanistic forecast."""
    return config.training.stage == "diffusion" and config.diffusion.residual == "mechanistic"


def _inputs(data: CohortDataModule, split: str, positions) -> dict:
    """What the forecast reads of the ``positions`` of ``split``'s dataset, unaugmented: the model's pre scan (the
    denoised baseline under data.smoothing), its follow-up, the tumour, the anatomy, days, spacings, labels."""
    dataset = data.dataset(split)
    samples = [dataset[int(p)] for p in positions]  # an int item: no augmentation
    ndim = data.spatial_dims
    stack = lambda key: np.stack([s[key].numpy() for s in samples]) if samples else np.zeros((0,))
    return {"pre": stack("pre")[:, 0], "post": stack("post")[:, 0], "tumour": stack("tumor_mask")[:, 0],
            "anatomy": stack("anatomy"), "days": np.array([float(s["days"]) for s in samples]),
            "spacings": [mechanistic.crop_spacing(data.records[int(s["index"])].geometry, ndim) for s in samples],
            "index": np.array([int(s["index"]) for s in samples], dtype=np.int64), "samples": samples}


def fit_forecast(data: CohortDataModule, config: Config) -> mechanistic.ForecastSets:
    """The parameter sets fitted on (at most mechanistic.MAX_FIT_CASES of) the training split's samples."""
    train = data.dataset("train")
    kind = config.model.class_label
    n_classes, key = CLASS_COUNTS[kind], CLASS_LABEL_KEYS.get(kind)
    rows = mechanistic.subsample(len(train))
    inputs = _inputs(data, "train", rows)
    with_tumour = inputs["tumour"].reshape(len(rows), -1).max(axis=1) > 0 if len(rows) else np.zeros(0, bool)
    if with_tumour.sum() < MIN_FIT_PAIRS:
        raise OncodiffError(
            f"{data.cohort_root}: diffusion.residual=mechanistic fits the mechanistic forecast on the training "
            f"split's pairs, and it has {int(with_tumour.sum())} with a baseline tumour (at least {MIN_FIT_PAIRS} "
            "needed); add patients with follow-ups, or set diffusion.residual=none (or regression)")
    fit = mechanistic.fit_data(inputs["pre"], inputs["post"], inputs["tumour"], inputs["anatomy"],
                               data.anatomy_names, inputs["days"], inputs["spacings"])
    labels = np.array([int(s[key]) for s in inputs["samples"]]) if key else None
    print(f"diffusion.residual=mechanistic: fitting the forecast's D, rho, log-kill and contrast on {len(rows)} of "
          f"{len(train)} training samples (training patients only) ...", flush=True)
    started = time.process_time()
    unknown, per_class = mechanistic.fit_sets(
        fit, labels, progress=lambda d: print(f"  simulated D = {d:g} mm^2/day", flush=True))
    seconds = time.process_time() - started
    sets = mechanistic.ForecastSets(unknown, per_class, n_classes, tuple(data.anatomy_names), key,
                                    f"{len(rows)} of {len(train)} training samples", round(seconds, 2))
    print(f"  fitted in {seconds:.0f} CPU-seconds; outcome unknown: {unknown.describe()}", flush=True)
    for k in range(n_classes):
        line = per_class[k].describe() if k in per_class else (
            f"fewer than {mechanistic.MIN_CLASS_CASES} training samples: the outcome-unknown set")
        print(f"  class {k} ({key}): {line}", flush=True)
    return sets


def attach_forecasts(data: CohortDataModule, sets: mechanistic.ForecastSets, chunk: int = 128) -> float:
    """Precompute every training and validation sample's forecasts (1 + K channels) into the data module's batch
    entry ``mechanistic``; returns the CPU-seconds it took."""
    started = time.process_time()
    shape = (len(data.preprocessed.records), 1 + sets.n_classes, *data.spatial_shape)
    forecasts = np.zeros(shape, np.float32)  # test samples stay zeros: training never reads them
    total = sum(len(data.dataset(split)) for split in ("train", "val"))
    print(f"  forecasting the {total} training and validation samples ...", flush=True)
    for split in ("train", "val"):
        n = len(data.dataset(split))
        for start in range(0, n, chunk):
            inputs = _inputs(data, split, range(start, min(start + chunk, n)))
            forecasts[inputs["index"]] = mechanistic.forecast_channels(
                inputs["pre"], inputs["tumour"], inputs["anatomy"], sets.anatomy, inputs["days"], inputs["spacings"],
                sets)
    data.add_sample_array(FORECAST_KEY, forecasts)
    seconds = time.process_time() - started
    print(f"  forecasts in {seconds:.0f} CPU-seconds", flush=True)
    return seconds


def prepare_forecast(data: CohortDataModule, config: Config) -> mechanistic.ForecastSets | None:
    """For a run conditioned on the forecast: fit the parameter sets and attach the samples' forecasts; else None."""
    if not uses_forecast(config):
        return None
    started = time.process_time()
    sets = fit_forecast(data, config)
    attach_forecasts(data, sets)
    return mechanistic.ForecastSets(**{**sets.__dict__, "cpu_seconds": round(time.process_time() - started, 2)})
