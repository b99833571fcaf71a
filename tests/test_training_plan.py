"""The step plan of a time budget: every affordable step is trained, and the last one is validated (and so
checked, checkpointed and exported) even where it falls inside an epoch."""

from __future__ import annotations

import csv
import json

import pytest

from factory import TINY_MODEL, write_cohort
from oncodiff.config import load_config
from oncodiff.training import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_budget_trains_every_affordable_step_and_validates_the_last(tmp_path, monkeypatch):
    import importlib

    training = importlib.import_module("oncodiff.training.train")

    minutes = 0.5
    # the probe says 7.5 steps are affordable: 7 steps, in epochs of 2 (8 samples in batches of 4)
    monkeypatch.setattr(training, "measure_step_seconds",
                        lambda *a, **k: minutes * 60 * training.BUDGET_MARGIN / 7.5)
    cohort = write_cohort(tmp_path / "cohort", dims=2, n_patients=6)
    config = load_config("demo", [*TINY_MODEL, "data.crop_size=[16,16]", "training.samples_per_epoch=8",
                                  "training.batch_size=4", "training.warmup_steps=2", f"training.max_minutes={minutes}",
                                  "training.max_steps=null", "evaluation.segmenter_steps=2", "sampling.samples=2"])
    run = train(cohort, config, tmp_path / "run", cache_dir=tmp_path / "cache")
    plan = json.loads((run / "plan.json").read_text(encoding="utf-8"))
    assert plan["steps_per_epoch"] == 2 and plan["total_steps"] == 7  # not rounded down to 6 (whole epochs)
    summary = json.loads((run / "train_summary.json").read_text(encoding="utf-8"))
    assert summary["global_step"] == 7
    with open(run / "metrics.csv", encoding="utf-8") as f:
        validated = [int(row["step"]) for row in csv.DictReader(f) if row.get("val_loss")]
    # after epochs 1-3 (steps 2, 4, 6) and at step 7 (metrics.csv counts from 0)
    assert validated == [1, 3, 5, 6]
