"""The peak-memory estimate train checks before it makes a run folder (oncodiff/training/memory.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from oncodiff.config import load_config
from oncodiff.errors import ConfigError
from oncodiff.training.memory import BASE_BYTES, check_memory, estimate_peak_bytes

GiB = 2**30


def config(crop: int, batch: int, *extra: str):
    return load_config("demo", [f"data.crop_size=[{crop},{crop}]", f"training.batch_size={batch}", *extra])


def step_bytes(crop: int, batch: int, *extra: str) -> float:
    return estimate_peak_bytes(config(crop, batch, *extra), spatial_dims=2, in_channels=3) - BASE_BYTES


def test_the_estimate_grows_with_batch_and_crop():
    assert step_bytes(64, 32) == pytest.approx(2 * step_bytes(64, 16), rel=0.05)  # weights are a small share
    # No attention: linear in the voxels; attention at the lowest level: faster than linear.
    flat = ["model.attention_levels=[false,false,false]"]
    assert step_bytes(128, 16, *flat) == pytest.approx(4 * step_bytes(64, 16, *flat), rel=0.05)
    assert step_bytes(256, 16) > 5 * step_bytes(128, 16)


def test_a_config_that_cannot_fit_is_refused_naming_the_settings():
    big = config(512, 16)
    with pytest.raises(ConfigError) as refused:
        check_memory(big, 2, 3, available=24 * GiB, on_gpu=False)
    message = str(refused.value)
    assert "data.crop_size=[512, 512]" in message and "training.batch_size" in message and "24.0 GiB" in message
    assert check_memory(config(64, 16), 2, 3, available=24 * GiB, on_gpu=False) < 24 * GiB


MEASURE = """
import json, resource, sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from factory import write_cohort
from oncodiff.config import load_config
from oncodiff.data import CohortDataModule
from oncodiff.training.train import measure_step_seconds, model_layout
root, crop = Path(sys.argv[1]), int(sys.argv[3])
cohort = write_cohort(root / "c", n_patients=6, shape=(crop, crop))
config = load_config("demo", [f"data.crop_size=[{crop},{crop}]", "training.batch_size=16", "training.accelerator=cpu"])
data = CohortDataModule(cohort, config, cache_dir=root / "cache")
data.prepare_data()
data.setup()
layout = model_layout(data, config)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
measure_step_seconds(config, layout, data, repeats=1)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"step": after - before, "in_channels": len(layout.image_condition_names)}))
"""


@pytest.mark.slow
def test_the_estimate_stays_above_a_measured_training_step(tmp_path):
    crop = 96
    run = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path), str(Path(__file__).parent), str(crop)],
                         capture_output=True, text=True, check=True)
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    estimate = estimate_peak_bytes(config(crop, 16), 2, measured["in_channels"]) - BASE_BYTES
    assert measured["step"] < estimate < 4 * measured["step"], (measured, estimate)
