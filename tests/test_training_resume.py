"""Resuming an interrupted run: it continues from the saved step, keeps its plan, and ends with the weights
of a run that was never interrupted (train.py's claim: every source of randomness is a function of the
seed, the step and the epoch)."""

from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file

from factory import TINY_MODEL, write_cohort
from oncodiff.config import load_config
from oncodiff.errors import OncodiffError
from oncodiff.training import train

# 8 samples per epoch in batches of 4: 2 steps per epoch, 3 epochs, a validation and checkpoint after each.
TINY = [*TINY_MODEL, "data.crop_size=[16,16]", "training.max_steps=6",
        "training.samples_per_epoch=8", "training.batch_size=4", "training.warmup_steps=2",
        "training.max_minutes=null", "evaluation.segmenter_steps=2"]
INTERRUPT_AT = 3  # mid-way through the second epoch; the last checkpoint is the first epoch's, at step 2


class Interrupted(Exception):
    pass


class StopAt(Callback):
    """Raises before optimiser step ``step``, like a crash or a lost machine."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise Interrupted(f"interrupted at step {self.step}")


class FirstStep(Callback):
    """Records the global step training starts from."""

    def __init__(self):
        self.step = None

    def on_train_start(self, trainer, pl_module):
        self.step = trainer.global_step


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    cohort = write_cohort(root / "cohort", dims=2, n_patients=6)
    config = load_config("demo", TINY)
    cache = root / "cache"
    uninterrupted = train(cohort, config, root / "uninterrupted", cache_dir=cache)
    with pytest.raises(Interrupted):
        train(cohort, config, root / "resumed", cache_dir=cache, callbacks=[StopAt(INTERRUPT_AT)])
    resumed = root / "resumed"
    before = {"plan": (resumed / "plan.json").read_text(encoding="utf-8"),
              "saved_step": torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)["global_step"],
              "exported": (resumed / "model").exists()}
    first = FirstStep()
    train(cohort, config, resumed, resume=True, cache_dir=cache, callbacks=[first])
    return {"cohort": cohort, "config": config, "cache": cache, "uninterrupted": uninterrupted, "resumed": resumed,
            "before": before, "first_step": first.step}


def _checkpoint(run, name="last.ckpt"):
    return torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=False)


def test_the_interrupted_run_saved_an_earlier_step_and_exported_nothing(runs):
    assert runs["before"]["saved_step"] == 2
    assert not runs["before"]["exported"]


def test_resumed_run_starts_from_the_saved_step_and_keeps_the_plan(runs):
    assert runs["first_step"] == runs["before"]["saved_step"] == 2
    resumed = runs["resumed"]
    assert (resumed / "plan.json").read_text(encoding="utf-8") == runs["before"]["plan"]
    assert json.loads(runs["before"]["plan"])["total_steps"] == 6
    for run in (runs["uninterrupted"], resumed):
        assert json.loads((run / "train_summary.json").read_text(encoding="utf-8"))["global_step"] == 6
        assert _checkpoint(run)["global_step"] == 6


def test_resumed_run_ends_with_the_uninterrupted_weights(runs):
    expected = load_file(runs["uninterrupted"] / "model" / "model.safetensors")
    got = load_file(runs["resumed"] / "model" / "model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-5, msg=name)
    # The raw (non-EMA) weights and the optimiser's moments agree too, not only the exported average.
    a, b = _checkpoint(runs["uninterrupted"]), _checkpoint(runs["resumed"])
    for name, value in a["current_model_state"].items():
        torch.testing.assert_close(b["current_model_state"][name], value, rtol=0, atol=1e-5, msg=name)
    for state_a, state_b in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        torch.testing.assert_close(state_b["exp_avg"], state_a["exp_avg"], rtol=0, atol=1e-5)
    assert b["lr_schedulers"][0]["last_epoch"] == a["lr_schedulers"][0]["last_epoch"] == 6


def test_resumed_run_logs_both_parts_in_one_metrics_file(runs):
    resumed = runs["resumed"]
    assert sorted(p.name for p in (resumed / "logs").iterdir()) == ["version_0", "version_1"]
    import pandas as pd

    metrics = pd.read_csv(resumed / "metrics.csv")
    assert metrics["val_loss"].notna().sum() == 3  # one validation per epoch, none repeated or lost


def test_checkpoints_hold_the_early_stopping_check_of_their_epoch(runs):
    # A checkpoint written before early stopping looked at its epoch's val_loss resumes with a stale
    # best score and patience count; both callbacks must have seen the same validations.
    for run in (runs["uninterrupted"], runs["resumed"]):
        callbacks = _checkpoint(run)["callbacks"]
        stopping = next(v for k, v in callbacks.items() if k.startswith("EarlyStopping"))
        checkpointing = next(v for k, v in callbacks.items() if k.startswith("ModelCheckpoint"))
        assert float(stopping["best_score"]) == float(checkpointing["best_model_score"])


def test_resume_refuses_a_changed_experiment(runs):
    changed = runs["config"].with_overrides(["model.channels=[16,16]"])
    with pytest.raises(OncodiffError, match="model.channels"):
        train(runs["cohort"], changed, runs["resumed"], resume=True, cache_dir=runs["cache"])


def test_resume_without_a_checkpoint_and_a_second_run_into_one_folder_are_refused(runs, tmp_path):
    with pytest.raises(OncodiffError, match="holds no run; start a new run without --resume"):
        train(runs["cohort"], runs["config"], tmp_path / "new", resume=True, cache_dir=runs["cache"])
    with pytest.raises(OncodiffError, match="already holds a run"):
        train(runs["cohort"], runs["config"], runs["uninterrupted"], cache_dir=runs["cache"])


def test_a_run_without_a_validation_split_trains_and_exports(runs, tmp_path):
    # No validation: early stopping never checks, the last checkpoint is the one exported.
    config = runs["config"].with_overrides(["data.val_fraction=0", "training.max_steps=2"])
    run = train(runs["cohort"], config, tmp_path / "no_val", cache_dir=runs["cache"])
    assert json.loads((run / "splits.json").read_text(encoding="utf-8"))["val"] == []
    summary = json.loads((run / "train_summary.json").read_text(encoding="utf-8"))
    assert summary["global_step"] == 2 and summary["best_checkpoint"] == "last.ckpt"
    assert (run / "model" / "model.safetensors").is_file()


def test_resume_accepts_a_run_started_before_new_config_keys_existed(tmp_path):
    """A config.json without keys that oncodiff added later is compared with their defaults filled in."""
    from oncodiff.runs import RunFolder
    from oncodiff.training.run_folder import _check_same_experiment

    config = load_config("demo")
    run = RunFolder(tmp_path)
    saved = config.model_dump(mode="json")
    del saved["sampling"]["agreement_threshold"], saved["diffusion"]["source"]  # keys of a later version
    run.config_json.write_text(json.dumps(saved), encoding="utf-8")
    _check_same_experiment(run, config)  # no error
    with pytest.raises(OncodiffError, match="sampling.steps"):
        _check_same_experiment(run, config.with_overrides(["sampling.steps=7"]))
    with pytest.raises(OncodiffError, match="diffusion.source"):  # a default filled in still compares
        _check_same_experiment(run, config.with_overrides(["diffusion.source=pre"]))


def test_last_checkpoint_is_the_last_epoch_even_when_validation_stopped_improving(runs, tmp_path):
    """With a learning rate too small to move any weight, the validation loss never improves after the first
    epoch: "best" stays at step 2, and last.ckpt must still be the last epoch's (Lightning's save_last writes it
    only together with a new best, which resumed such a run from its best epoch)."""
    frozen = runs["config"].with_overrides(["training.lr=1e-20", "training.patience=100"])
    run = train(runs["cohort"], frozen, tmp_path / "frozen", cache_dir=runs["cache"])
    assert _checkpoint(run, "best.ckpt")["global_step"] == 2
    assert _checkpoint(run)["global_step"] == 6
