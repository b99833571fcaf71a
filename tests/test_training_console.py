"""``oncodiff train`` prints oncodiff's own lines only (what it does, per-epoch lines when not on a terminal,
where the run is); ``--verbose`` brings Lightning's start-up lines and warnings back."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from factory import write_cohort
from test_cli import TINY, sets

FRAMEWORK_LINES = ("GPU available", "TPU available", "litlogger", "LeafSpec", "Automatic Mixed Precision")


def train_output(tmp_path, *extra: str) -> str:
    cohort = write_cohort(tmp_path / "cohort", n_patients=6)
    command = [sys.executable, "-m", "oncodiff.cli", "train", "--cohort", str(cohort), "--out", str(tmp_path / "run"),
               *sets(*TINY, "training.max_steps=2", "sampling.calibrate=false"), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run(command, capture_output=True, encoding="utf-8", errors="replace", env=env,
                          timeout=300)  # Lightning's advertisement has an emoji; the locale may be ASCII
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout + done.stderr


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_train_prints_framework_lines_only_when_verbose(tmp_path, verbose):
    output = train_output(tmp_path, *(["--verbose"] if verbose else []))
    assert "run folder:" in output and "epoch 1/" in output  # oncodiff's own lines, per epoch off a terminal
    shown = [line for line in FRAMEWORK_LINES if line in output]
    if verbose:
        assert "GPU available" in shown
    else:
        assert shown == [], output
