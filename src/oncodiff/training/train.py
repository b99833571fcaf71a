"""``oncodiff train``: cohort + config -> run folder (its layout: oncodiff/runs.py).

The step budget is fixed before the first step and saved in RUN/plan.json: either
training.max_steps, or as many steps as training.max_minutes allows at the throughput measured on
this machine. The cosine schedule spans exactly that many steps, and a resumed run reads the same
plan, so resuming reproduces an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger

from oncodiff.cohort import cohort_fingerprint
from oncodiff.config import PREDICTING_STAGES, Config, bf16_conv3d_problem
from oncodiff.data import CohortDataModule
from oncodiff.data.preprocess import write_preprocessing_report
from oncodiff.data.route import volumetric_route
from oncodiff.errors import ConfigError, OncodiffError
from oncodiff.data.mechanistic import ForecastSets
from oncodiff.models import image_condition_names
from oncodiff.models.conditions import forecast_condition_names
from oncodiff.pipeline.prior_inputs import fit_export_class_prior
from oncodiff.models.factory import ModelLayout
from oncodiff.pipeline.export import save_export
from oncodiff.outputs import reads_cohort, write_marker
from oncodiff.precision import runs_as
from oncodiff.runs import SEGMENTER, RunFolder
from oncodiff.pipeline.predict import calibrate_run
from oncodiff.training.calibration_folds import train_calibration_folds
from oncodiff.training.callbacks import EpochLine, SaveLast, ValidateLastStep
from oncodiff.training.ema import WarmupEMA
from oncodiff.training.forecast import prepare_forecast, uses_forecast
from oncodiff.training.memory import check_memory
from oncodiff.training.stages import module_class
from oncodiff.training.run_folder import check_run_out, consolidate_metrics, open_run_folder
from oncodiff.training.segmenter import train_segmenter

BUDGET_MARGIN = 0.85  # share of max_minutes planned for training steps; the rest covers validation and export


@reads_cohort("train")
def train(cohort: str | Path, config: Config, out: str | Path, resume: bool = False,
          cache_dir: str | Path | None = None, overwrite: bool = False, within: Path | None = None,
          callbacks: Sequence[Callback] = ()) -> Path:
    """Train the model ``config`` describes on ``cohort``; returns the run folder.

    The cohort is validated and preprocessed, and the memory a step needs estimated, before the run folder
    is created; the run folder is locked while training runs (docs/outputs.md). ``within``: the run that
    owns this one (evaluate's baselines train inside their run). A 3D cohort with a preset for 2D crops is
    trained by the volumetric route (data/route.py), which is printed and written to config.json.
    ``callbacks``: extra Lightning callbacks for the stage's Trainer, after ours (a caller's hooks, e.g. one
    that stops at a given step)."""
    config, route = volumetric_route(config, cohort)
    if route and _is_rank_zero():
        print(route, flush=True)
    if not _on_gpu(config) and effective_precision(config) != "32" and (problem := bf16_conv3d_problem(config)):
        raise ConfigError(problem)
    note = precision_note(config)
    if note and _is_rank_zero():
        print(note, flush=True)
    L.seed_everything(config.training.seed, workers=True, verbose=False)
    if not _is_rank_zero():  # torchrun/SLURM start every rank at once: read what rank 0 decided, never decide again
        run = RunFolder(Path(out).resolve())
        _wait_for((run.config_json, run.splits_json, run.plan_json))
        return _fit(run, cohort, config, resume, cache_dir, _prepared(cohort, config, cache_dir, run), callbacks)
    run = check_run_out(out, cohort, resume, overwrite, within)
    data = _prepared(cohort, config, cache_dir, run)
    check_memory(config, data.spatial_dims, len(image_condition_names(data.anatomy_names, config.model.use_anatomy,
                                                                      *data.prior_inputs)) + uses_forecast(config))
    lock = open_run_folder(run, config, resume, overwrite, cohort)
    try:
        return _fit(run, cohort, config, resume, cache_dir, data, callbacks)
    finally:
        lock.release()


def _prepared(cohort: str | Path, config: Config, cache_dir: str | Path | None, run: RunFolder) -> CohortDataModule:
    """The data module with the cohort validated and preprocessed (into the cache, not the run folder)."""
    data = CohortDataModule(cohort, config, cache_dir=cache_dir, splits_path=run.splits_json)
    data.prepare_data()
    return data


def _fit(run: RunFolder, cohort: str | Path, config: Config, resume: bool, cache_dir: str | Path | None,
         data: CohortDataModule, callbacks: Sequence[Callback] = ()) -> Path:
    data.setup()
    if _is_rank_zero():
        run.cohort_json.write_text(json.dumps(cohort_fingerprint(cohort), indent=2) + "\n", encoding="utf-8")
        write_preprocessing_report(data.preprocessed, run.preprocessing_json)
    if config.data.smoothing != "none":
        print(data.smoothing_note, flush=True)
    layout = model_layout(data, config, prepare_forecast(data, config))
    residual = config.training.stage == "diffusion" and config.diffusion.residual == "regression"
    mean_run = _residual_mean(run, cohort, config, cache_dir) if residual else None
    budget = residual_budget(config, diffusion=True) if residual else config
    total_steps = _plan_steps(run, budget, layout, data)
    if _is_rank_zero():
        print(f"training the {config.training.stage} stage on {len(data.dataset('train'))} training samples: "
              f"{total_steps} steps, into {run.root}", flush=True)
    module = module_class(config)(config, layout, total_steps)
    if mean_run is not None:
        load_residual_mean(module.net, mean_run)
    trainer = _trainer(run, budget, total_steps, callbacks)
    trainer.fit(module, datamodule=data, ckpt_path=str(run.last_checkpoint) if resume else None, weights_only=True)
    if trainer.is_global_zero:
        calibrate = config.training.stage in PREDICTING_STAGES and config.sampling.calibrate
        _finish(run, config, layout, module, trainer, data, cohort if calibrate else None, mean_run)
        if config.training.stage in PREDICTING_STAGES:
            # After the export: the prior's candidates include the trained denoiser's features.
            fit_export_class_prior(run.model_dir, cohort, list(data.splits.train), config.training.seed, cache_dir)
        if calibrate:  # samples by the class prior, so after it
            write_marker(run.root, "run", state="calibrating",
                         finish=f"finish it with `oncodiff calibrate --model {run.root} --cohort {cohort}`")
            train_calibration_folds(run, cohort, config, cache_dir)  # only when the validation split is small
            _calibrate(run, cohort, config, cache_dir)
        write_marker(run.root, "run")
    return run.root


def residual_budget(config: Config, diffusion: bool) -> Config:
    """The budget of one part of the residual design: diffusion.residual_share of training.max_minutes or
    training.max_steps for the regression U-Net (``diffusion=False``), the rest for the diffusion model."""
    share = config.diffusion.residual_share if not diffusion else 1.0 - config.diffusion.residual_share
    train = config.training
    overrides = []
    if train.max_steps is not None:
        overrides.append(f"training.max_steps={max(1, round(train.max_steps * share))}")
    if train.max_minutes is not None:
        overrides.append(f"training.max_minutes={train.max_minutes * share}")
    return config.with_overrides(overrides) if overrides else config


def residual_mean_config(config: Config) -> Config:
    """The config of the residual design's regression U-Net: the run's, trained deterministically (MSE, zeros in,
    t = 0) on the run's target without the class label or a drift head (``models/factory.py:
    residual_mean_model``), on its share of the budget, on one device, with no calibration of its own."""
    return residual_budget(config, diffusion=False).with_overrides([
        "training.stage=regression", "model.class_label=none", "model.drift_head=none", "diffusion.residual=none",
        "sampling.calibrate=false", "training.devices=1", "training.num_nodes=1"])


def _residual_mean(run: RunFolder, cohort: str | Path, config: Config, cache_dir: str | Path | None) -> RunFolder:
    """The residual design's regression U-Net, trained first into RUN/residual_mean/ on the run's split (kept
    when a resumed run finds it finished). Other ranks wait for rank 0 to train it."""
    mean = run.residual_mean()
    if not _is_rank_zero():
        _wait_for((mean.weights,), timeout_s=24 * 3600.0)
        return mean
    if mean.weights.is_file() and mean.train_summary_json.is_file():
        return mean
    if mean.root.exists():  # an interrupted earlier attempt: start it again
        shutil.rmtree(mean.root)
    mean.root.mkdir(parents=True)
    write_marker(mean.root, "run", state="training")  # the run's own output (docs/outputs.md)
    shutil.copy(run.splits_json, mean.splits_json)  # the same patients on each side
    print(f"diffusion.residual=regression: training the regression U-Net (the mean) into {mean.root} ...", flush=True)
    train(cohort, residual_mean_config(config), mean.root, cache_dir=cache_dir, within=run.root)
    return mean


def load_residual_mean(net: torch.nn.Module, mean_run: RunFolder) -> None:
    """Load the trained regression U-Net's exported weights into the residual design's frozen ``net.mean``."""
    from safetensors.torch import load_file

    net.mean.load_state_dict(load_file(str(mean_run.weights)), strict=True)
    net.mean.requires_grad_(False)
    net.mean.eval()


def model_layout(data: CohortDataModule, config: Config, forecast: ForecastSets | None = None) -> ModelLayout:
    """What the network's inputs are, read off the data module; ``forecast``: the mechanistic forecast's fitted
    sets (diffusion.residual=mechanistic, training/forecast.py), whose channels join the image conditions."""
    spec = data.spec
    if forecast is None and uses_forecast(config):
        forecast = prepare_forecast(data, config)
    names = image_condition_names(data.anatomy_names, config.model.use_anatomy, *data.prior_inputs)
    if forecast is not None:
        names = (*names, *forecast_condition_names(forecast.n_classes))
    return ModelLayout(
        spatial_dims=data.spatial_dims,
        image_condition_names=names,
        clinical=tuple(spec.clinical),
        anatomy=data.anatomy_names,
        target_channels=1 + int(config.model.generate_mask),
        crop_size=tuple(config.data.crop_size),
        clinical_encoder=data.clinical_encoder.to_dict(),
        response_positive=spec.outcomes.response.positive if spec.outcomes.response else None,
        survival_classes=data.survival_classes.to_dict(),
        smoothing_mm=data.smoothing_mm,
        mechanistic=None if forecast is None else forecast.to_dict(),
        training_days=tuple(sorted({float(data.records[i].days) for i in data.dataset("train").indices})),
    )


def _on_gpu(config: Config) -> bool:
    accelerator = config.training.accelerator
    return accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())


def effective_precision(config: Config) -> str:
    """training.precision as the Trainer runs it. On a CPU, 16-mixed (fp16) becomes bf16-mixed (I-SPY: "16-bit
    mixed precision" on CUDA, CPU fallback), since CPUs have no fp16 autocast; and either becomes 32 on a CPU
    without native bf16 (oncodiff.precision), where bf16 is several times slower than fp32."""
    return runs_as(config.training.precision, "cuda" if _on_gpu(config) else "cpu")


def precision_note(config: Config) -> str | None:
    """The line training prints when it runs another precision than training.precision asks for, or None."""
    precision, runs = config.training.precision, effective_precision(config)
    if runs == precision or runs == "bf16-mixed":  # fp16 -> bf16 on CPU is the documented, silent fallback
        return None
    return (f"training.precision={precision}: this CPU has no native bf16 (oneDNN needs AVX-512 or AMX), so it "
            "trains in fp32 (precision 32), several times faster here; set training.precision='32' to silence this")


def world_size(config: Config) -> int:
    """Processes taking part in training: torchrun/SLURM's WORLD_SIZE, else devices x nodes (devices="auto":
    every visible GPU when training on GPUs, one process on CPU)."""
    if os.environ.get("WORLD_SIZE"):
        return int(os.environ["WORLD_SIZE"])
    devices, every_gpu = config.training.devices, max(torch.cuda.device_count(), 1) if _on_gpu(config) else 1
    if isinstance(devices, str):
        text = devices.strip().strip("[]")
        if "," in text:  # a list of device indices
            devices = len([d for d in text.split(",") if d.strip()])
        else:
            devices = int(text) if text.lstrip("-").isdigit() else every_gpu
    return (every_gpu if devices == -1 else max(int(devices), 1)) * config.training.num_nodes


def _is_rank_zero() -> bool:
    # Lightning's DDP launcher and torchrun set these in every process but the first.
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def _wait_for(paths: tuple[Path, ...], timeout_s: float = 1800.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(p.is_file() for p in paths):
        if time.monotonic() > deadline:
            missing = ", ".join(str(p) for p in paths if not p.is_file())
            raise OncodiffError(f"rank {os.environ.get('RANK', '?')}: rank 0 did not write {missing} within "
                                f"{timeout_s:.0f} s; check rank 0's log")
        time.sleep(1.0)


def _plan_steps(run: RunFolder, config: Config, layout: ModelLayout, data: CohortDataModule) -> int:
    """Total optimiser steps, decided once per run and stored in RUN/plan.json."""
    path = run.plan_json
    if path.is_file():
        return int(json.loads(path.read_text(encoding="utf-8"))["total_steps"])
    train = config.training
    world = world_size(config)
    # Lightning shares each epoch's samples out over the ranks (padded to a multiple of the world size).
    per_rank = -(-(train.samples_per_epoch or len(data.dataset("train"))) // world)
    steps_per_epoch = -(-per_rank // train.batch_size)
    by_epochs = train.max_epochs * steps_per_epoch
    plan = {"world_size": world, "steps_per_epoch": steps_per_epoch, "by_epochs": by_epochs}
    if train.max_steps is not None:
        total = min(train.max_steps, by_epochs)
    elif train.max_minutes is not None:
        seconds = measure_step_seconds(config, layout, data)
        plan["measured_step_seconds"] = round(seconds, 4)
        affordable = int(train.max_minutes * 60 * BUDGET_MARGIN / seconds)
        # Every affordable step (at least one epoch): the last one is validated inside its epoch (ValidateLastStep).
        total = min(by_epochs, max(steps_per_epoch, affordable))
    else:
        total = by_epochs
    plan["total_steps"] = total
    if _is_rank_zero():
        path.write_text(json.dumps(plan, indent=2) + "\n", encoding="utf-8")
    return total


def measure_step_seconds(config: Config, layout: ModelLayout, data: CohortDataModule, repeats: int = 3) -> float:
    """Seconds per training step (loading the batch, forward, backward, optimiser) of this model on the device
    training will use: the GPU when training.accelerator selects one (a CPU timing there would plan a GPU run a
    fraction of the steps its budget allows), under the precision the Trainer will run. The batch is loaded in
    the timed step because on a GPU loading is a large share of it."""
    device = torch.device("cuda") if _on_gpu(config) else torch.device("cpu")
    module = module_class(config)(config, layout, total_steps=1).to(device)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-9)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(effective_precision(config))
    batches = _endless(data)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in next(batches).items()}
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss, _ = module.objective(batch, validation=False)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    del module, optimizer, batch
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return sorted(times[1:])[len(times[1:]) // 2]


def _endless(data: CohortDataModule):
    """Training batches, epoch after epoch (a tiny training split has fewer batches than the probe's steps)."""
    while True:
        yield from data.train_dataloader()


def _trainer(run: RunFolder, config: Config, total_steps: int, extra: Sequence[Callback] = ()) -> L.Trainer:
    train = config.training
    callbacks = [
        # Both act when validation ends (early stopping first: Lightning runs checkpointing last), so a checkpoint
        # holds its epoch's early-stopping check. Saved at the train epoch's end instead, a resumed run replays
        # that end: the sampler is then set to the next epoch twice (data order one epoch ahead) and early
        # stopping finds no val_loss logged yet and fails.
        ModelCheckpoint(dirpath=run.checkpoints, filename=run.best_checkpoint.stem, monitor="val_loss", mode="min",
                        save_on_train_epoch_end=False),
        # Checked after validation only: a run whose budget ends inside its first epoch has no val_loss yet.
        EarlyStopping(monitor="val_loss", mode="min", patience=train.patience, check_on_train_epoch_end=False),
        SaveLast(run.last_checkpoint),
        LearningRateMonitor(logging_interval="step"),
        WarmupEMA(decay=train.ema_decay),
        EpochLine(total_steps),
        ValidateLastStep(total_steps),
    ]
    interactive = sys.stderr.isatty()
    if interactive:
        callbacks.append(TQDMProgressBar(refresh_rate=5))
    callbacks.extend(extra)
    return L.Trainer(
        accelerator=train.accelerator, devices=train.devices, num_nodes=train.num_nodes,
        precision=effective_precision(config), max_epochs=train.max_epochs, max_steps=total_steps,
        max_time={"minutes": train.max_minutes} if train.max_minutes else None,
        check_val_every_n_epoch=train.val_every_n_epochs, callbacks=callbacks,
        logger=CSVLogger(run.root, name=run.logs.name), log_every_n_steps=10, enable_progress_bar=interactive,
        enable_model_summary=False, num_sanity_val_steps=0, deterministic=False,
    )


def _finish(run: RunFolder, config: Config, layout: ModelLayout, module: L.LightningModule,
            trainer: L.Trainer, data: CohortDataModule, calibrate_on: str | Path | None = None,
            mean_run: RunFolder | None = None) -> None:
    """Export the best EMA weights and the tumour segmenter, and write the run summary. ``calibrate_on``: the
    cohort the calibration that follows will sample; the export says it is unfinished until it has.
    ``mean_run``: the residual design's regression run, whose weights are exported exactly as it exported them
    (the EMA's float arithmetic moves even a frozen weight by rounding)."""
    best = Path(trainer.checkpoint_callback.best_model_path or run.last_checkpoint)
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    if mean_run is not None:
        load_residual_mean(module.net, mean_run)
    summary = {
        "global_step": trainer.global_step, "epochs": trainer.current_epoch,
        "best_checkpoint": best.name, "best_val_loss": _float(trainer.checkpoint_callback.best_model_score),
        "stopped_early": bool(getattr(trainer.early_stopping_callback, "stopped_epoch", 0)),
    }
    extra = {"training": summary}
    if config.training.stage in PREDICTING_STAGES:
        extra["segmenter"] = ({"trained": False, "reason": "model.generate_mask: every sample carries its own mask"}
                              if config.model.generate_mask else train_segmenter(data, config, run.model_dir / SEGMENTER))
    if calibrate_on is not None:
        extra["interval_calibration"] = {"calibrated": False, "unfinished": True, "reason": (
            f"the calibration did not finish (training stopped while calibrating); finish it with "
            f"`oncodiff calibrate --model {run.root} --cohort {calibrate_on}`")}
    save_export(run.model_dir, module.net, config, layout, extra=extra, source=run.root)
    consolidate_metrics(run)
    run.train_summary_json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def _calibrate(run: RunFolder, cohort: str | Path, config: Config, cache_dir: str | Path | None) -> None:
    """Conformal margins for the volume-change intervals from the validation split, into the export and
    train_summary.json."""
    result = calibrate_run(run.root, cohort, seed=config.training.seed, cache_dir=cache_dir)
    path = run.train_summary_json
    summary = json.loads(path.read_text(encoding="utf-8"))
    summary["interval_calibration"] = result
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def _float(value) -> float | None:
    return None if value is None else float(value)
