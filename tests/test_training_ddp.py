"""A 2-process DDP run on CPU (gloo) through ``oncodiff train --devices 2``.

Lightning's DDP launcher re-runs the command once per extra rank; train() lets only rank 0 create the
run folder and write plan.json (the other rank reads them), and only rank 0 exports the model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

import oncodiff
from factory import TINY_MODEL, write_cohort
from oncodiff.config import Config
from oncodiff.evaluation.baselines import TRAINED_BASELINES, baseline_config

TINY = [*TINY_MODEL, "data.crop_size=[16,16]", "training.max_steps=4",
        "training.samples_per_epoch=8", "training.batch_size=4", "training.max_minutes=null",
        "evaluation.segmenter_steps=10", "model.generate_mask=false"]  # the segmenter too is trained on rank 0 only


def test_two_process_ddp_on_cpu_trains_and_exports_once(tmp_path):
    cohort = write_cohort(tmp_path / "cohort", n_patients=6)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "oncodiff.cli", "train", "--cohort", str(cohort), "--out", str(run),
               "--devices", "2", "--set", "training.accelerator=cpu", "--verbose"]  # Lightning's lines show the ranks
    for item in TINY:
        command += ["--set", item]
    # The same package in the child processes as in this one; one thread per rank on a small machine.
    env = {**os.environ, "PYTHONPATH": str(Path(oncodiff.__file__).parents[1]), "XDG_CACHE_HOME": str(tmp_path),
           "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, encoding="utf-8",
                          errors="replace", timeout=300)  # the locale may have been reset to ASCII by now
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "MEMBER: 2/2" in output and "distributed_backend=gloo" in output  # two processes really ran

    plan = json.loads((run / "plan.json").read_text(encoding="utf-8"))
    summary = json.loads((run / "train_summary.json").read_text(encoding="utf-8"))
    assert plan["total_steps"] == summary["global_step"] == 4
    assert plan["world_size"] == 2 and plan["steps_per_epoch"] == 1  # 8 samples per epoch, 4 per rank, batch 4
    # Rank 0 alone finished the run: one segmenter, one export, one log version.
    assert output.count("training the tumour segmenter") == 1
    assert sorted(p.name for p in (run / "model").iterdir()) == ["config.json", "model.safetensors",
                                                                 "segmenter.safetensors"]
    assert [p.name for p in (run / "logs").iterdir()] == ["version_0"]
    # 8 samples per epoch shared by 2 ranks in batches of 4: one step per epoch, a validation after each.
    assert pd.read_csv(run / "metrics.csv")["val_loss"].notna().sum() == 4
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert config["training"]["devices"] == 2


def test_evaluation_trains_its_baselines_in_one_process():
    # A baseline trained with the run's --devices 2 would re-launch `oncodiff evaluate` once per rank.
    config = Config().with_overrides(["training.devices=2", "training.num_nodes=2"])
    for name in TRAINED_BASELINES:
        training = baseline_config(config, name, minutes=None).training
        assert (training.devices, training.num_nodes) == (1, 1)


def test_world_size_is_read_from_the_device_options(monkeypatch):
    from oncodiff.training.train import world_size

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cases = {("auto", 1): 1, (2, 1): 2, ("3", 2): 6, ("0,1", 1): 2, ("-1", 1): 1}
    for (devices, nodes), expected in cases.items():
        config = Config().with_overrides([f"training.devices={devices}", f"training.num_nodes={nodes}",
                                          "training.accelerator=cpu"])
        assert world_size(config) == expected, (devices, nodes)
    monkeypatch.setenv("WORLD_SIZE", "8")  # torchrun / SLURM know best
    assert world_size(Config()) == 8
