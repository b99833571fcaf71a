"""``oncodiff predict``: an exported model + a cohort -> N samples per case, their mean, uncertainty,
drift, tumour volume change with an interval, and the implied response.

Outputs per follow-up (folder ``OUT/<patient>_<lesion>_<timepoint>``; a follow-up predicted on several crops,
such as the tumour slices of a 3D scan, has them stitched into one volume), all in the geometry of the
baseline scan they were predicted from (same affine and shape), in the scan's own intensity units:
mean, std (uncertainty), drift (mean post - pre), agreement (the share of samples that agree on the
kind of change, PULSAR's several-seeds confidence), sample_KK, tumor_probability (the fraction of
samples in which the segmenter finds tumour), PNG previews for 2D cohorts, and summary.json.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace as dc_replace
from pathlib import Path

import numpy as np
import torch

from oncodiff.cohort import load_cohort, same_cohort, write_image
from oncodiff.cohort.io import stored_shape, with_stored_shape
from oncodiff.config import PREDICTING_STAGES, Config
from oncodiff.data import baseline_scan, paste_crops
from oncodiff.data.denoise import smoothed
from oncodiff.errors import OncodiffError
from oncodiff.layouts import PNG, PredictionsFolder
from oncodiff.outputs import (
    RunLock, check_output, check_run_finished, read_marker, reads_cohort, staged_folder, write_marker,
)
from oncodiff.models import Conditions, conditions_from_batch, post_from_target
from oncodiff.models.factory import batch_conditioning
from oncodiff.pipeline.calibration import IntervalCalibration, minimum_cases
from oncodiff.pipeline.cases import CaseSet, load_cases
from oncodiff.outcomes.class_prior import allocate_classes
from oncodiff.pipeline.export import ExportedModel, load_export, read_export_meta, update_export_meta
from oncodiff.pipeline.prior_inputs import class_prior_note, class_probabilities, survival_risk_summary
from oncodiff.pipeline.sampling import case_seed, draw_samples, regress, sample_generators
from oncodiff.pipeline.spread import SpreadCalibration, box_samples, scale_spread
from oncodiff.pipeline.volumes import CaseVolumes, load_segmenter
from oncodiff.runs import RunFolder


@dataclass
class Predictions:
    """Generated follow-ups for B cases: ``samples`` (B, N, *S) normalised units, ``pre`` (B, *S);
    ``masks`` (B, N, *S) bool, each sample's own tumour mask when the model generates one
    (model.generate_mask); with class marginalisation, ``class_probability`` (B, K) and each
    sample's class (B, N)."""

    samples: np.ndarray
    pre: np.ndarray
    masks: np.ndarray | None = None
    class_probability: np.ndarray | None = None
    sample_classes: np.ndarray | None = None

    @property
    def mean(self) -> np.ndarray:
        return self.samples.mean(axis=1)

    @property
    def std(self) -> np.ndarray:
        return self.samples.std(axis=1, ddof=1) if self.samples.shape[1] > 1 else np.zeros_like(self.pre)

    @property
    def drift(self) -> np.ndarray:
        return self.mean - self.pre

    def select(self, index: Sequence[int]) -> Predictions:
        """The predictions of cases ``index`` (as CaseSet.select picks cases)."""
        index = list(index)
        pick = (lambda v: None if v is None else v[index])
        return Predictions(self.samples[index], self.pre[index], pick(self.masks), pick(self.class_probability),
                           pick(self.sample_classes))

    def agreement(self, threshold: float) -> np.ndarray:
        """(B, *S) in [1/3, 1]: how many of a case's samples agree on the change at each voxel (PULSAR:
        "if all generated outcomes are similar regardless of noise, the model likely has high confidence")."""
        return agreement_map(self.samples, self.pre, threshold)


def agreement_map(samples: np.ndarray, pre: np.ndarray, threshold: float) -> np.ndarray:
    """Share of samples in the most common change category per voxel: (B, N, *S), (B, *S) -> (B, *S).

    Each sample's drift (sample - pre) is a decrease (< -threshold), no change (|drift| <= threshold) or an
    increase (> threshold); 1 means every seed predicts the same kind of change there.
    """
    if threshold < 0:
        raise ValueError(f"agreement threshold must be >= 0, got {threshold}")
    drift = samples - pre[:, None]
    category = np.sign(drift) * (np.abs(drift) > threshold)
    shares = np.stack([(category == c).mean(axis=1) for c in (-1, 0, 1)])
    return shares.max(axis=0)


CLASS_MODES = ("given", "predicted", "most_probable", "true", "null")
# sampling.unknown_class -> the class mode of a prediction with the outcome unknown ("predicted": the mixture,
# the name stored in calibrations fitted before most_probable existed)
UNKNOWN_CLASS_MODES = {"mixture": "predicted", "most_probable": "most_probable"}
MASK_THRESHOLD = 0.5  # a generated mask channel in [0, 1] is tumour above this


def case_conditions(model: ExportedModel, cases: CaseSet, class_label: str = "given") -> Conditions:
    """Conditions for ``cases``. class_label: "given" (the case set's: an override, else null),
    "true" (the known outcome: the papers' oracle protocol) or "null"; "predicted" (the class prior's
    mixture) and "most_probable" (its most probable class) are handled by :func:`predict_cases` per sample
    and give the null class here."""
    if class_label not in CLASS_MODES:
        raise ValueError(f"class_label must be one of {CLASS_MODES}, got {class_label!r}")
    cond = conditions_from_batch(cases.batch, batch_conditioning(model.config.model), model.layout.image_condition_names)
    if cond.class_label is None or class_label == "true":
        return cond
    if class_label in ("null", "predicted", "most_probable"):
        return cond.null(model.net.null_class)
    return dc_replace(cond, class_label=cases.batch["class_label"])


def predict_cases(model: ExportedModel, cases: CaseSet, n_samples: int, seed: int = 0,
                  class_label: str = "given", config: Config | None = None) -> Predictions:
    """Draw ``n_samples`` follow-ups for every case (one generator per case and sample); a regression
    run gives its single deterministic prediction."""
    config = config or model.config
    device = next(model.net.parameters()).device
    cond = case_conditions(model, cases, class_label).to(device)
    probability = class_probabilities(model, cases) if class_label in ("predicted", "most_probable") else None
    classes = None
    if probability is not None:
        chosen = np.eye(probability.shape[1])[probability.argmax(1)] if class_label == "most_probable" else probability
        classes = allocate_classes(chosen, n_samples)
    if model.config.training.stage == "regression":  # deterministic: one prediction per case
        generated = regress(model.net, config, cond)
    else:
        # Keyed by follow-up: the crops (slices) of one follow-up start sample k from the same noise.
        generators = sample_generators(seed, [c.follow_up_key for c in cases.cases], n_samples)
        generated = draw_samples(model.net, config, cond, n_samples, generators, sample_classes=classes)
    predictions = predictions_from_generated(cases.batch["pre"].to(device), generated, config.diffusion.target,
                                             class_probability=probability,
                                             sample_classes=None if classes is None else classes.numpy())
    return with_spread(predictions, spread_calibration(model, config))


def predict_modes(model: ExportedModel, cases: CaseSet, n_samples: int, seed: int = 0,
                  modes: dict[str, str | torch.Tensor] | None = None,
                  config: Config | None = None) -> dict[str, Predictions]:
    """:func:`predict_cases` under several class modes at once, each (case, sample, class) drawn only once.

    ``modes``: name -> a class mode of :data:`CLASS_MODES`, or a (B,) tensor of class labels (e.g. the flipped
    class of a counterfactual check). Sample k of a case under class c is the same draw whichever mode asks for
    it (the same generator, the same conditions): the mixture's samples are the true and the flipped class's,
    the most probable class's are one of them. So a binary class needs 3 classes' samples (both classes and the
    null class) where 5 modes would draw 5 times. A model without a class label, or a regression run, draws each
    mode as :func:`predict_cases` does."""
    config = config or model.config
    modes = modes or {}
    if not modes or not len(cases) or model.config.model.class_label == "none" \
            or model.config.training.stage == "regression":
        return {name: predict_cases(model, cases, n_samples, seed, mode if isinstance(mode, str) else "given", config)
                for name, mode in modes.items()}
    device = next(model.net.parameters()).device
    cond = case_conditions(model, cases, "true").to(device)
    b = len(cases)
    probability = None
    if any(isinstance(m, str) and m in ("predicted", "most_probable") for m in modes.values()):
        probability = class_probabilities(model, cases)
    classes, extra = {}, {}
    for name, mode in modes.items():
        if not isinstance(mode, str):
            labels = torch.as_tensor(mode, dtype=torch.long).reshape(b, 1).expand(b, n_samples)
        elif mode not in CLASS_MODES:
            raise ValueError(f"class mode must be one of {CLASS_MODES} or a tensor of labels, got {mode!r}")
        elif mode == "null":
            labels = torch.full((b, n_samples), model.net.null_class, dtype=torch.long)
        elif mode == "true":
            labels = cond.class_label.cpu().reshape(b, 1).expand(b, n_samples)
        elif mode == "given":
            labels = cases.batch["class_label"].long().reshape(b, 1).expand(b, n_samples)
        else:
            chosen = np.eye(probability.shape[1])[probability.argmax(1)] if mode == "most_probable" else probability
            labels = allocate_classes(chosen, n_samples)
            extra[name] = {"class_probability": probability, "sample_classes": labels.numpy()}
        classes[name] = labels
    # every distinct (case, sample, class), case-major: the rows sampled once
    wanted = sorted({(i, k, int(c)) for labels in classes.values() for (i, k), c in np.ndenumerate(labels.numpy())})
    position = {row: r for r, row in enumerate(wanted)}
    keys = [c.follow_up_key for c in cases.cases]  # keyed by follow-up, as predict_cases seeds them
    generators = [torch.Generator(device=device).manual_seed(case_seed(seed, keys[i], k)) for i, k, _ in wanted]
    rows = torch.tensor([i for i, _, _ in wanted], dtype=torch.long)
    labels = torch.tensor([c for _, _, c in wanted], dtype=torch.long)
    generated = draw_samples(model.net, config, cond, 1, generators, sample_classes=labels[:, None], case_index=rows)
    pre = cases.batch["pre"].to(device)
    out, spread = {}, spread_calibration(model, config)
    for name, labels in classes.items():
        pick = torch.tensor([[position[i, k, int(labels[i, k])] for k in range(n_samples)] for i in range(b)])
        drawn = predictions_from_generated(pre, generated[pick.reshape(-1), 0].reshape(b, n_samples,
                                                                                        *generated.shape[2:]),
                                           config.diffusion.target, **extra.get(name, {}))
        out[name] = with_spread(drawn, spread)
    print(f"sampled {len(wanted)} (case, sample, class) draws for {len(modes)} class modes of {b} cases x "
          f"{n_samples} samples", flush=True)
    return out


def predictions_from_generated(pre: torch.Tensor, generated: torch.Tensor, target: str, **extra) -> Predictions:
    """(B, 1, *S) pre and (B, N, Ct, *S) generated targets (drift or post; a mask channel with
    model.generate_mask) -> Predictions in image space; ``extra``: Predictions' class fields."""
    post = post_from_target(pre.unsqueeze(1), generated[:, :, :1], target)  # (B, N, 1, *S)
    masks = generated[:, :, 1].cpu().numpy() > MASK_THRESHOLD if generated.shape[2] > 1 else None
    return Predictions(samples=post[:, :, 0].float().cpu().numpy(), pre=pre[:, 0].cpu().numpy(), masks=masks, **extra)


def spread_calibration(model: ExportedModel, config: Config | None = None) -> SpreadCalibration | None:
    """The export's fitted spread factor when ``sampling.spread`` is calibrated (oncodiff/pipeline/spread.py), or
    None: raw samples (asked for, or no factor was fitted)."""
    if (config or model.config).sampling.spread != "calibrated":
        return None
    raw = read_export_meta(model.path).get("spread_calibration")
    return SpreadCalibration.from_dict(raw) if raw and raw.get("factor") is not None else None


def with_spread(predictions: Predictions, spread: SpreadCalibration | None) -> Predictions:
    """``predictions`` with each sample's deviation from its class mean scaled by ``spread``'s factor (None: as
    drawn)."""
    return predictions if spread is None else rescale_spread(predictions, spread.factor)


def rescale_spread(predictions: Predictions, factor: float) -> Predictions:
    """``predictions`` with each sample's deviation from its class mean multiplied by ``factor`` (1 / a factor
    applied before gives the samples as drawn again)."""
    if factor == 1.0 or predictions.samples.shape[1] < 2:
        return predictions
    return dc_replace(predictions, samples=scale_spread(predictions.samples, predictions.sample_classes, factor))


def load_calibration(model: ExportedModel) -> IntervalCalibration | None:
    """The export's conformal interval margins (fitted at the end of training), or None."""
    raw = read_export_meta(model.path).get("interval_calibration")
    return IntervalCalibration.from_dict(raw) if raw and "margins" in raw else None


@reads_cohort("calibrate")
def calibrate_run(run: str | Path, cohort: str | Path, samples: int | None = None, seed: int = 0,
                  cache_dir: str | Path | None = None, overrides: Sequence[str] = ()) -> dict:
    """``oncodiff calibrate``: (re)fit the conformal interval margins of a run on its validation split, e.g.
    for predictions with another ``--samples`` or ``--set sampling.KEY=V`` (``overrides``: sampling.* only), with
    the out-of-fold predictions of the run's calibration folds (RUN/calibration_folds/, trained by ``oncodiff
    train``) when the validation split is too small; returns what was stored in RUN/model/config.json."""
    for item in overrides:
        if not item.partition("=")[0].strip().startswith("sampling."):
            raise OncodiffError(f"--set {item!r}: calibrate takes sampling.KEY=VALUE only (how the validation "
                                "split is sampled, as predict will), e.g. --set sampling.unknown_class=most_probable")
    run = Path(run)
    folder = RunFolder(run)
    if not folder.splits_json.is_file():
        raise OncodiffError(f"{run}: not a run folder (no {folder.splits_json.name}); calibration needs the run "
                            "written by `oncodiff train`, to sample its own validation split")
    val = list(folder.splits().val)
    with RunLock(run, command="calibrate"):
        folds = [(f.root, list(f.splits().test)) for f in folder.calibration_folds()]
        result = calibrate_export(run, cohort, val, seed, cache_dir, samples, overrides, folds)
        if (read_marker(run) or {}).get("state") == "calibrating":
            write_marker(run, "run")  # the calibration a stopped training left unfinished is now done
    return result


def calibrate_export(folder: str | Path, cohort: str | Path, patients: Sequence[str], seed: int = 0,
                     cache_dir: str | Path | None = None, samples: int | None = None,
                     overrides: Sequence[str] = (), folds: Sequence[tuple[str | Path, Sequence[str]]] = ()) -> dict:
    """Sample ``patients`` (the validation split) as ``predict`` does with the outcome unknown, fit the samples'
    spread factor (oncodiff/pipeline/spread.py) and then, on the samples so scaled, conformal margins for the
    volume-change intervals, and store both in the export's config.json; returns what was stored for the margins
    (``{"calibrated": False, "reason": ...}`` when they cannot be fitted). ``samples``: per case (default: the
    model's sampling.samples); ``overrides``: sampling.KEY=V settings to sample with. ``folds``: (export folder,
    held-out patients) of models trained without those patients; when the validation split has fewer follow-ups
    than the widest level needs (calibration.minimum_cases), each fold's patients are sampled by their fold's model
    and their out-of-fold predictions join the validation split's (cross-conformal margins; the spread factor is
    fitted on them too)."""
    exported = _predicting_export(folder)
    config = exported.config.with_overrides(list(overrides)) if overrides else exported.config
    n = samples or config.sampling.samples
    mode = UNKNOWN_CLASS_MODES[config.sampling.unknown_class]
    levels = config.evaluation.coverage_levels
    segmenter = load_segmenter(exported.path)  # one instrument measures every fold's predictions too
    val = _sampled(exported, cohort, patients, n, seed, mode, config, "validation", cache_dir)
    parts, notes = [(*val[:2], "validation")] if val[0] is not None else [], [val[2]]
    split = "val"
    if folds and (val[0] is None or len(val[0].follow_ups()) < minimum_cases(levels)):
        print(f"the validation split has too few follow-ups for a {max(levels):.0%} margin: adding the out-of-fold "
              f"predictions of {len(folds)} models trained without one fold of the training split each", flush=True)
        fold_parts = [_sampled(_predicting_export(f), cohort, held, n, seed, mode, config, f"fold {k + 1}",
                               cache_dir) for k, (f, held) in enumerate(folds)]
        parts += [(*p[:2], f"fold {k + 1}") for k, p in enumerate(fold_parts) if p[0] is not None]
        notes += [p[2] for p in fold_parts]
        split = f"val + out-of-fold training ({len(folds)} folds)"
    spread = _fit_spread(exported, parts, config, split)
    changes = []
    for cases, predictions, which in parts:
        change, true, note = _changes(segmenter, cases, with_spread(predictions, spread), config, which)
        notes.append(note)
        if change is not None:
            changes.append((change, true))
    result: dict = {"calibrated": False}
    calibration = None
    if changes:
        drawn = changes[0][0].shape[1]  # 1 for a regression model
        calibration = IntervalCalibration.fit(np.concatenate([c[0] for c in changes]),
                                              np.concatenate([c[1] for c in changes]), drawn, mode, levels, split,
                                              1.0 if spread is None else spread.factor)
    if calibration is None:
        result["reason"] = "; ".join(note for note in notes if note)
    else:
        result = {"calibrated": True, **calibration.to_dict()}
        print(calibration.describe(), flush=True)
    update_export_meta(exported.path, interval_calibration=result)
    return result


def _fit_spread(exported: ExportedModel, parts: Sequence[tuple[CaseSet, Predictions, str]], config: Config,
                split: str) -> SpreadCalibration | None:
    """Fit the samples' spread factor on ``parts`` (sampled raw), store it in the export (or why there is none)
    and return it when ``sampling.spread`` asks for it."""
    boxes = [box for cases, predictions, _ in parts
             for box in box_samples(predictions.samples, predictions.sample_classes, cases.batch["post"][:, 0].numpy(),
                                    cases.batch["tumor_mask"][:, 0].numpy(), config.evaluation.bbox_margin)]
    fitted = SpreadCalibration.fit(boxes, split)
    if fitted is None:
        why = ("one prediction per case" if parts and parts[0][1].samples.shape[1] < 2
               else "no validation follow-up was sampled, or none has a baseline tumour")
        update_export_meta(exported.path, spread_calibration={"factor": None, "reason": why})
        return None
    update_export_meta(exported.path, spread_calibration=fitted.to_dict())
    print(fitted.describe(), flush=True)
    return fitted if config.sampling.spread == "calibrated" else None


def _sampled(exported: ExportedModel, cohort: str | Path, patients: Sequence[str], n: int, seed: int, mode: str,
             config: Config, which: str, cache_dir) -> tuple[CaseSet | None, Predictions | None, str]:
    """``patients``' follow-ups with a true scan and their raw samples (no spread factor), or Nones and why not."""
    if not patients:
        return None, None, f"the {which} split is empty"
    cases = load_cases(exported, cohort, patients, cache_dir=cache_dir)
    cases = cases.select([i for i, c in enumerate(cases.cases) if c.has_truth])
    if not len(cases):
        return None, None, f"no {which} patient has a follow-up scan"
    print(f"calibrating the spread and the volume-change intervals on {len(cases)} {which} cases ...", flush=True)
    raw = config.with_overrides(["sampling.spread=raw"])
    return cases, predict_cases(exported, cases, n, seed, mode, raw), ""


def _changes(segmenter, cases: CaseSet, predictions: Predictions, config: Config,
             which: str) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """(B, N) sampled and (B,) true volume changes of the follow-ups of ``cases``, or Nones and why not."""
    volumes = CaseVolumes.measure(segmenter, cases, predictions,
                                  config.evaluation.response_threshold).grouped(cases.follow_ups())
    change, true = volumes.change(), volumes.true_change()
    if not (np.isfinite(true) & np.isfinite(change).all(1)).any():
        return None, None, (f"no {which} case has a measurable volume change ({volumes.source}"
                            f"{': ' + volumes.note if volumes.note else ''})")
    return change, true, ""


@reads_cohort("predict")
def predict(model: str | Path, cohort: str | Path, out: str | Path, patients: Sequence[str] | None = None,
            samples: int | None = None, days: float | None = None, overrides: Sequence[str] = (), seed: int = 0,
            cache_dir: str | Path | None = None, overwrite: bool = False, within: Path | None = None) -> Path:
    """Predict follow-ups for a cohort's cases and write them under ``out``, one folder per follow-up (the crops
    of a follow-up, e.g. its tumour slices, stitched into the baseline scan); returns ``out``.

    ``patients`` None: the run's test split when ``cohort`` is the cohort the run was trained on, else every
    patient of ``cohort``. ``out`` is written whole or not at all (oncodiff/outputs.py); ``overwrite`` replaces an
    earlier prediction there, never mixing its files with the new ones; ``within``: the output folder that
    owns ``out`` (the viewer's cache inside a predictions or run folder)."""
    out = check_output(out, "predictions", overwrite, inputs={"cohort": cohort, "model": model}, within=within)
    exported = _predicting_export(model)
    config_overrides, case_overrides = _split_overrides(overrides)
    config = exported.config.with_overrides(config_overrides) if config_overrides else exported.config
    if patients is None:
        patients, which = default_patients(Path(model), cohort)
        print(f"predicting {which}", flush=True)
    cases = load_cases(exported, cohort, patients, days, case_overrides, cache_dir)
    days_note = exported.layout.days_note([case.days for case in cases.cases])
    if days_note:
        print(days_note, flush=True)
    n = samples or config.sampling.samples
    # Without a class override the outcome is unknown: the class prior gives it (sampling.unknown_class).
    given = {"response", "survival_class"} & case_overrides.keys()
    mode = "given" if given else UNKNOWN_CLASS_MODES[config.sampling.unknown_class]
    prior_note = _class_prior_used(exported, mode)
    spread, spread_note = _spread_used(exported, config)  # read once: what summary.json says is what is applied
    predictions = with_spread(predict_cases(exported, cases, n, seed, mode,
                                            config.with_overrides(["sampling.spread=raw"])), spread)
    volumes = CaseVolumes.measure(load_segmenter(exported.path), cases, predictions,
                                  config.evaluation.response_threshold)
    calibration, calibration_note = _calibration_for(exported, mode, predictions.samples.shape[1],
                                                     1.0 if spread is None else spread.factor)
    with staged_folder(out, "predictions") as partial:
        summaries = [write_follow_up(partial, cases, group, predictions, volumes, config.sampling.agreement_threshold,
                                     calibration, exported.layout.smoothing_mm) for group in cases.follow_ups()]
        PredictionsFolder(partial).summary_json.write_text(json.dumps({
            "model": str(exported.path), "cohort": str(cases.cohort.root), "samples": n, "seed": seed,
            "overrides": list(overrides), "sampling": config.sampling.model_dump(mode="json"),
            "interval_calibration": calibration_note, "spread_calibration": spread_note,
            "spread_factor": 1.0 if spread is None else spread.factor,
            "class_prior": prior_note, "days_note": days_note,
            "survival_risk": survival_risk_summary(exported, cases, predictions.class_probability),
            "cases": summaries,
        }, indent=2) + "\n", encoding="utf-8")
    return out


def _class_prior_used(model: ExportedModel, mode: str) -> str:
    """Which predictor the class probabilities come from (printed, and in summary.json)."""
    note = "class given (--set), no class prior used" if mode == "given" else class_prior_note(model)
    print(note, flush=True)
    return note


def _predicting_export(path: str | Path) -> ExportedModel:
    check_run_finished(Path(path), reading="predict from")
    exported = load_export(path)
    stage = exported.config.training.stage
    if stage not in PREDICTING_STAGES:
        raise OncodiffError(f"{path}: this run trained the {stage!r} stage, which does not generate follow-ups; "
                            f"pass a run of one of the stages {', '.join(PREDICTING_STAGES)} (e.g. the chain's last)")
    return exported


def _spread_used(model: ExportedModel, config: Config) -> tuple[SpreadCalibration | None, str]:
    """The spread factor this prediction's samples were scaled by, and a sentence for summary.json saying so."""
    spread = spread_calibration(model, config)
    if spread is not None:
        note = spread.describe()
    elif config.sampling.spread == "raw":
        note = "samples as drawn (sampling.spread=raw)"
    else:
        stored = read_export_meta(model.path).get("spread_calibration") or {}
        why = stored.get("reason", "calibrated before spread calibration existed, "
                                   "or trained without sampling.calibrate")
        note = f"samples as drawn: the model has no fitted spread factor ({why})"
    print(note, flush=True)
    return spread, note


def _calibration_for(model: ExportedModel, mode: str, n_samples: int,
                     spread_factor: float = 1.0) -> tuple[IntervalCalibration | None, str]:
    """The calibration that applies to this prediction (whose samples' spread was scaled by ``spread_factor``),
    and a sentence for summary.json saying which."""
    calibration = load_calibration(model)
    if calibration is None:
        stored = read_export_meta(model.path).get("interval_calibration") or {}
        reason = stored.get("reason", "the model was trained without sampling.calibrate")
        if stored.get("unfinished"):
            print(f"warning: intervals not calibrated: {reason}", file=sys.stderr, flush=True)
        return None, f"intervals not calibrated: {reason}"
    if mode == "given":
        return None, ("intervals not calibrated: the margins were fitted with the outcome unknown and do not apply "
                      "to predictions under a given response or survival class")
    if mode != calibration.mode:
        names = {v: k for k, v in UNKNOWN_CLASS_MODES.items()}
        return None, (f"intervals not calibrated: the margins were fitted with sampling.unknown_class="
                      f"{names.get(calibration.mode, calibration.mode)}, this prediction used {names[mode]}; refit "
                      f"them with `oncodiff calibrate --model RUN --cohort DIR --set sampling.unknown_class="
                      f"{names[mode]}`")
    note = calibration.describe()
    if n_samples != calibration.n_samples:
        note += f"; this prediction drew {n_samples} samples per case, so the calibrated coverage is approximate"
    if spread_factor != calibration.spread_factor:
        note += (f"; the margins were fitted on samples with spread x{calibration.spread_factor:g} and this "
                 f"prediction's are x{spread_factor:g}, so the calibrated coverage is approximate")
    return calibration, note


def _split_overrides(overrides: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    config, cases = [], {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise OncodiffError(f"--set {item!r}: expected KEY=VALUE, e.g. --set response=responder")
        key = key.strip()
        if key.startswith(("sampling.", "evaluation.")):
            config.append(item)
        elif key.startswith("clinical.") or key in ("response", "survival_class"):
            cases[key] = value.strip()
        else:
            raise OncodiffError(f"--set {key}: predict takes sampling.KEY, evaluation.KEY, clinical.NAME, "
                                "response or survival_class")
    return config, cases


def default_patients(model: Path, cohort: str | Path) -> tuple[list[str] | None, str]:
    """The patients to predict when none are named, and a sentence saying which: the run's test split when
    ``cohort`` is the cohort the run was trained on (RUN/cohort.json: the same folder, or byte-identical tables;
    a run without that record: every patient of the run's splits is in ``cohort``), else every patient."""
    run = RunFolder(model)
    if not run.splits_json.is_file():
        return None, f"every patient of {cohort}"
    split = run.splits()
    if run.cohort_json.is_file():
        trained_here = same_cohort(json.loads(run.cohort_json.read_text(encoding="utf-8")), cohort)
    else:
        listed = set(load_cohort(cohort).patients.index.astype(str))
        trained_here = {*split.train, *split.val, *split.test} <= listed
    test = list(split.test)
    if trained_here and test:
        shown = ", ".join(test[:8]) + (", ..." if len(test) > 8 else "")
        return test, f"the run's test split of its training cohort {cohort} ({len(test)} patients: {shown})"
    return None, f"every patient of {cohort}" + ("" if trained_here else " (not the run's training cohort)")


def write_follow_up(out: Path, cases: CaseSet, group: Sequence[int], predictions: Predictions,
                    volumes: CaseVolumes, agreement_threshold: float = 0.05,
                    calibration: IntervalCalibration | None = None, smoothing_mm: float = 0.0) -> dict:
    """Write one follow-up's images (its crops ``group`` stitched into the baseline scan's geometry, scanner
    units) and return its summary; volumes are summed over the crops. Outside the crops the mean and the samples
    are the baseline as the model saw it: smoothed by ``smoothing_mm`` (the run's data.smoothing; the denoised
    baseline of `oncodiff evaluate` when chosen the same way), so a stitched volume is the model's everywhere."""
    first = cases.cases[group[0]]
    layout = PredictionsFolder(out)
    folder = layout.follow_up(first.follow_up_key)
    folder.mkdir(parents=True, exist_ok=True)
    background = smoothed(baseline_scan(cases.cohort.root, first.baseline_image, first.geometry), smoothing_mm).array
    geometries = [cases.cases[i].geometry for i in group]
    intensity = first.pre_intensity
    agreement = agreement_map(predictions.samples[group], predictions.pre[group], agreement_threshold)
    crops = {"mean": (intensity.invert(predictions.mean[group]), background),
             "std": (intensity.invert_difference(predictions.std[group]), None),
             "drift": (intensity.invert_difference(predictions.drift[group]), None),
             "agreement": (agreement, None), "tumor_probability": (volumes.probability[group], None)}
    for k in range(predictions.samples.shape[1]):
        crops[f"sample_{k:02d}"] = (intensity.invert(predictions.samples[group, k]), background)
    files, shape = {}, stored_shape(cases.cohort.path(first.baseline_image))  # singleton axes included
    for name, (arrays, base) in crops.items():
        image = paste_crops(geometries, list(arrays), 1, base)
        files[name] = write_image(with_stored_shape(image.array, shape), image,
                                  layout.layer(first.follow_up_key, name)).name
        if image.ndim == 2 and not name.startswith("sample_"):
            write_image(image.array, image, layout.layer(first.follow_up_key, name, PNG))
    summary = {"key": first.follow_up_key, "patient_id": first.patient_id, "lesion_id": first.lesion_id,
               "timepoint": first.timepoint, "days": first.days, "crops": len(group),
               "priors": [{"timepoint": t, "days": d} for t, d in first.priors],
               **volumes.grouped([list(group)]).summary(0, calibration), "files": files}
    if predictions.class_probability is not None:
        summary["class_probability"] = [float(p) for p in predictions.class_probability[group[0]]]
        summary["sample_classes"] = [int(c) for c in predictions.sample_classes[group[0]]]
    layout.follow_up_summary_json(first.follow_up_key).write_text(json.dumps(summary, indent=2) + "\n",
                                                                  encoding="utf-8")
    return summary
