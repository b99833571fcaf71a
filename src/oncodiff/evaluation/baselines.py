"""Baselines and ablations, trained on the run's own split by the same code, on demand.

Each trained baseline lives in ``RUN/baselines/NAME/`` (a run folder of its own, reused by later
evaluations) and differs from the run's config only as its definition below says:

  regression        the same U-Net trained deterministically with MSE to map pre to post (is the
                    diffusion model's spread worth more than one deterministic guess?)
  regression_drift  the same, predicting the drift post - pre (isolates the drift parameterisation)
  no_clinical       the diffusion model without clinical variables or class label (days kept)

For a latent-diffusion or ControlNet run, every baseline is the pixel-space model trained from scratch.

Two baselines need no training: identity (post = pre), and the denoised identity (post = the baseline
smoothed by a Gaussian whose sigma is chosen on the training split, data/denoise.py). On noisy scans the
follow-up's noise cannot be predicted, so post = pre pays for the noise of both scans; the denoised
identity is the trivial prediction a model must beat there.

A third needs no network: the mechanistic forecast (data/mechanistic.py, ``evaluation.mechanistic``),
a reaction-diffusion growth model run forward from the baseline tumour mask, whose few parameters are
fitted on the training split's pairs: post = the denoised baseline + c (u(days) - u(0)).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from oncodiff.config import SMOOTHING_MM, Config
from oncodiff.data.denoise import choose_smoothing
from oncodiff.data import mechanistic
from oncodiff.models.conditions import CLASS_LABEL_KEYS
from oncodiff.errors import OncodiffError
from oncodiff.pipeline.cases import CaseSet, load_cases
from oncodiff.pipeline.export import ExportedModel
from oncodiff.pipeline.predict import Predictions
from oncodiff.outputs import write_marker
from oncodiff.runs import RunFolder

# Baselines are pixel-space models trained from scratch, whatever the run's stage: a latent or ControlNet
# run's baseline does not load its autoencoders, locked denoiser or anatomy encoders.
FROM_SCRATCH = ["model.latent=none", "model.control=none", "training.init_from=null", "training.anatomy_from=null"]
TRAINED_BASELINES = {  # name: (label in tables, config overrides)
    "regression": ("regression U-Net (pre -> post, MSE)",
                   ["training.stage=regression", "diffusion.target=post", "model.class_label=none", *FROM_SCRATCH]),
    "regression_drift": ("regression U-Net (drift, MSE)",
                         ["training.stage=regression", "diffusion.target=drift", "model.class_label=none",
                          *FROM_SCRATCH]),
    "no_clinical": ("diffusion without clinical conditioning",
                    ["training.stage=diffusion", "model.clinical=none", "model.class_label=none", *FROM_SCRATCH]),
}
BASELINE_NAMES = ("identity", "denoised", "mechanistic", *TRAINED_BASELINES)
DENOISED_LABEL = "denoised identity (post = smoothed pre)"
MECHANISTIC_LABEL = "mechanistic forecast (reaction-diffusion from the baseline mask, fitted on the training split)"
MECHANISTIC_CLASS_LABEL = "mechanistic forecast, true class (oracle: parameters fitted per class)"
MIN_CLASS_CASES = mechanistic.MIN_CLASS_CASES  # training pairs a class needs for parameters of its own


def denoised_identity(exported: ExportedModel, cohort: str | Path, train_patients: list[str], cases: CaseSet,
                      cache_dir: str | Path | None = None) -> tuple[np.ndarray, float, str]:
    """(B, *S) the test cases' baselines smoothed by the sigma (mm) that best predicts the training split's
    follow-ups inside the tumour; returns the predictions, the sigma and a sentence saying how it was chosen."""
    train_cases = load_cases(exported, cohort, patients=train_patients, cache_dir=cache_dir)
    known = [i for i, c in enumerate(train_cases.cases) if c.has_truth]
    batch = train_cases.select(known).batch
    index, errors = choose_smoothing(batch["pre_smoothed"].numpy(), batch["post"].numpy(),
                                     batch["tumor_mask"].numpy())
    note = ", ".join(f"{s:g} mm: {e:.4f}" for s, e in zip(SMOOTHING_MM, errors))
    return (cases.batch["pre_smoothed"][:, index].numpy(), SMOOTHING_MM[index],
            f"sigma {SMOOTHING_MM[index]:g} mm, chosen on {len(known)} training cases (in-tumour MAE {note})")



def trivial_predictions(exported: ExportedModel, cohort: str | Path, train_patients: list[str], cases: CaseSet,
                        cache_dir: str | Path | None = None) -> tuple[Predictions, Predictions, str]:
    """The two baselines that need no training, as predictions of ``cases``: identity (post = the baseline as
    preprocessed) and the :func:`denoised_identity`; returns them with how the latter's sigma was chosen. With a
    generated mask, both keep the baseline tumour mask."""
    pre = cases.batch["pre_raw"][:, 0].numpy()
    masks = cases.batch["tumor_mask"][:, 0].numpy()[:, None] > 0 if exported.config.model.generate_mask else None
    denoised, _, note = denoised_identity(exported, cohort, train_patients, cases, cache_dir)
    return (Predictions(samples=pre[:, None].copy(), pre=pre, masks=masks),
            Predictions(samples=denoised[:, None].copy(), pre=denoised, masks=masks), note)


def _case_inputs(cases: CaseSet, index: int) -> dict:
    """What the mechanistic forecast reads of ``cases``: the baseline denoised by SMOOTHING_MM[index], the tumour,
    the anatomy masks and their names, the days and each crop's spacing (mm)."""
    batch = cases.batch
    ndim = batch["pre"].ndim - 2
    return {"denoised": batch["pre_smoothed"][:, index].numpy(), "tumour": batch["tumor_mask"][:, 0].numpy(),
            "anatomy": batch["anatomy"].numpy(), "names": tuple(cases.cohort.spec.anatomy),
            "days": batch["days"].numpy(), "spacings": [mechanistic.crop_spacing(c.geometry, ndim) for c in cases.cases]}


def _class_key(exported: ExportedModel) -> str:
    """The batch key of the class the per-class forecast is fitted by: the run's class label, else the response."""
    kind = exported.config.model.class_label
    return CLASS_LABEL_KEYS[kind] if kind != "none" else "response"


def mechanistic_predictions(exported: ExportedModel, cohort: str | Path, train_patients: list[str], cases: CaseSet,
                            cache_dir: str | Path | None = None) -> tuple[Predictions, Predictions | None, dict]:
    """The mechanistic forecast of ``cases`` with the outcome unknown (one parameter set, fitted on the training
    split), and given each case's true class (parameters per class; None when fewer than two classes have
    MIN_CLASS_CASES training pairs); returns them with a dict of what was fitted, on which pairs, and how."""
    train_cases = load_cases(exported, cohort, patients=train_patients, cache_dir=cache_dir)
    train_cases = train_cases.select([i for i, c in enumerate(train_cases.cases) if c.has_truth])
    if not len(train_cases):
        raise OncodiffError(f"{cohort}: the training split has no pair with a follow-up to fit the mechanistic "
                            "forecast on; turn it off with --set evaluation.mechanistic=false")
    batch = train_cases.batch
    index, _ = choose_smoothing(batch["pre_smoothed"].numpy(), batch["post"].numpy(), batch["tumor_mask"].numpy())
    rows = mechanistic.subsample(len(train_cases))
    fitting = train_cases.select(rows.tolist())
    inputs = _case_inputs(fitting, index)
    data = mechanistic.fit_data(inputs["denoised"], fitting.batch["post"][:, 0].numpy(), inputs["tumour"],
                                inputs["anatomy"], inputs["names"], inputs["days"], inputs["spacings"])
    print(f"mechanistic forecast: fitting D, rho, log-kill and contrast on {len(rows)} of {len(train_cases)} "
          "training pairs ...", flush=True)
    started = time.process_time()
    key = _class_key(exported)
    overall, per_class = mechanistic.fit_sets(data, fitting.batch[key].numpy(), MIN_CLASS_CASES,
                                              progress=lambda d: print(f"  simulated D = {d:g} mm^2/day", flush=True))
    print(f"  fitted in {time.process_time() - started:.0f} CPU-seconds", flush=True)
    test = _case_inputs(cases, index)
    unknown = mechanistic.forecast(test["denoised"], test["tumour"], test["anatomy"], test["names"], test["days"],
                                   test["spacings"], [overall] * len(cases))
    masks = cases.batch["tumor_mask"][:, 0].numpy()[:, None] > 0 if exported.config.model.generate_mask else None
    pre = test["denoised"]
    given = None
    if len(per_class) >= 2:
        true = cases.batch[key].numpy()
        given_mean = mechanistic.forecast(test["denoised"], test["tumour"], test["anatomy"], test["names"],
                                          test["days"], test["spacings"],
                                          [per_class.get(int(k), overall) for k in true])
        given = Predictions(samples=given_mean[:, None], pre=pre, masks=masks)
    note = {"fitted_on": f"{len(rows)} of {len(train_cases)} training pairs", "smoothing_mm": SMOOTHING_MM[index],
            "outcome_unknown": overall.to_dict(), "class_key": key,
            "per_class": {str(k): p.to_dict() for k, p in per_class.items()},
            "grid": {"diffusivity_mm2_per_day": list(mechanistic.D_GRID), "proliferation_per_day":
                     list(mechanistic.RHO_GRID), "log_kill": list(mechanistic.KILL_GRID),
                     "refined": f"Nelder-Mead, at most {mechanistic.REFINE_EVALUATIONS} evaluations, within "
                                f"{list(map(list, mechanistic.BOUNDS))}"},
            "anatomy": list(test["names"]), "dims": int(cases.batch["pre"].ndim - 2)}
    return Predictions(samples=unknown[:, None], pre=pre, masks=masks), given, note


def baseline_config(config: Config, name: str, minutes: float | None) -> Config:
    """The run's config changed only as baseline ``name`` says (and its time budget), trained on one device."""
    # One process: Lightning's DDP launcher would re-run the whole `oncodiff evaluate` command once per
    # extra device, and those copies evaluate (and load unfinished baselines) on their own.
    overrides = [*TRAINED_BASELINES[name][1], "training.devices=1", "training.num_nodes=1"]
    if minutes is not None:
        overrides.append(f"training.max_minutes={minutes}")
    return config.with_overrides(overrides)


def ensure_baseline(run: Path, cohort: str | Path, config: Config, name: str, minutes: float | None,
                    cache_dir: str | Path | None = None) -> Path:
    """The run folder of baseline ``name`` for ``run``: trained now if it is not there yet."""
    from oncodiff.training import train  # training is heavy; only evaluate's baselines need it

    baseline = RunFolder(run).baseline(name)
    folder = baseline.root
    if baseline.weights.is_file():
        return folder
    if folder.exists():  # an interrupted earlier attempt: start it again
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    write_marker(folder, "run", state="training")  # the run's own output (docs/outputs.md)
    shutil.copy(RunFolder(run).splits_json, baseline.splits_json)  # the same patients on each side
    print(f"training baseline {name!r} into {folder} ...", flush=True)
    return train(cohort, baseline_config(config, name, minutes), folder, cache_dir=cache_dir, within=run)
