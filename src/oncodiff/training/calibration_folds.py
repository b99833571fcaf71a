"""Models trained without one fold of the training split each: out-of-fold predictions for cross-conformal
interval margins (oncodiff.pipeline.calibration) when the validation split is too small to calibrate alone.

Each fold model is the run's own config trained on the training split without its fold's patients (validation
split unchanged, for its checkpoints), with 1/K of the run's step budget, on one device, into
RUN/calibration_folds/foldK/ (a run folder of its own, with the fold's patients as its test split). Its
segmenter is trained for one step only: every fold's predictions are measured by the run's own segmenter.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from oncodiff.config import Config
from oncodiff.outputs import write_marker
from oncodiff.pipeline.calibration import minimum_cases, patient_folds
from oncodiff.pipeline.cases import load_cases
from oncodiff.pipeline.export import load_export
from oncodiff.runs import RunFolder, Splits


def train_calibration_folds(run: RunFolder, cohort: str | Path, config: Config,
                            cache_dir: str | Path | None = None) -> list[RunFolder]:
    """Train (or reuse) the fold models when the validation split has fewer follow-ups than the widest calibrated
    level needs, the training split's would make up the difference, and ``sampling.calibration_folds`` >= 2;
    returns the fold runs (none when not needed or of no use)."""
    k = config.sampling.calibration_folds
    splits = run.splits()
    needed = minimum_cases(config.evaluation.coverage_levels)
    have, training = (follow_ups(run, cohort, split, cache_dir) for split in (splits.val, splits.train))
    folds = patient_folds(list(splits.train), k, config.training.seed) if k >= 2 else []
    if have >= needed or have + training < needed or len(folds) < 2:
        return []
    fold_config = calibration_fold_config(config, len(folds))
    print(f"{have} validation follow-ups, fewer than the {needed} a {max(config.evaluation.coverage_levels):.0%} "
          f"interval needs: training {len(folds)} models without one fold of the training split each, for "
          f"cross-conformal margins ({_budget(fold_config)} each; the test patients stay out of every fold)",
          flush=True)
    runs = []
    for i, held in enumerate(folds):
        fold = run.calibration_fold(i)
        if not (fold.weights.is_file() and fold.splits_json.is_file() and list(fold.splits().test) == held):
            if fold.root.exists():  # an interrupted or stale earlier fold: train it again
                shutil.rmtree(fold.root)
            fold.root.mkdir(parents=True)
            write_marker(fold.root, "run", state="training")  # the run's own output (docs/outputs.md)
            Splits(train=tuple(p for p in splits.train if p not in held), val=splits.val, test=tuple(held),
                   seed=splits.seed, method=f"calibration fold {i} of {len(folds)}").to_json(fold.splits_json)
            print(f"training calibration fold {i + 1} of {len(folds)} ({len(held)} patients held out) into "
                  f"{fold.root} ...", flush=True)
            from oncodiff.training.train import train  # train.py imports this module

            train(cohort, fold_config, fold.root, cache_dir=cache_dir, within=run.root)
        runs.append(fold)
    return runs


def calibration_fold_config(config: Config, k: int) -> Config:
    """The run's config for a fold model: 1/k of the step budget, one device, no calibration of its own."""
    overrides = ["sampling.calibrate=false", "training.devices=1", "training.num_nodes=1",
                 "evaluation.segmenter_steps=1"]
    if config.training.max_steps is not None:
        overrides.append(f"training.max_steps={max(1, config.training.max_steps // k)}")
    elif config.training.max_minutes is not None:
        overrides.append(f"training.max_minutes={config.training.max_minutes / k}")
    return config.with_overrides(overrides)


def follow_ups(run: RunFolder, cohort: str | Path, patients, cache_dir: str | Path | None = None) -> int:
    """How many follow-ups with a true scan ``patients`` (one of the run's splits) have."""
    if not patients:
        return 0
    cases = load_cases(load_export(run.model_dir), cohort, list(patients), cache_dir=cache_dir)
    return len({c.follow_up_key for c in cases.cases if c.has_truth})


def _budget(config: Config) -> str:
    t = config.training
    if t.max_steps is not None:
        return f"{t.max_steps} steps"
    return "no time limit" if t.max_minutes is None else f"{t.max_minutes:.2g} minutes"
