"""The device training runs on: the step-time probe that turns training.max_minutes into a step budget times
the CPU or the GPU, whichever the Trainer will use; on a CUDA GPU a tiny model trains and predicts in bf16 and
fp16 mixed precision. The GPU tests are skipped without one (CI has none); on a GPU machine:
``pytest tests/test_training_device.py``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factory import TINY_MODEL, write_cohort
from oncodiff.config import load_config
from oncodiff.data import CohortDataModule
from oncodiff.pipeline import predict_cases
from oncodiff.pipeline.cases import load_cases
from oncodiff.pipeline.export import load_export
from oncodiff.training import train
from oncodiff.training.train import effective_precision, measure_step_seconds, model_layout

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = [*TINY_MODEL, "training.samples_per_epoch=8", "training.batch_size=4",
        "evaluation.segmenter_steps=10", "sampling.samples=2", "sampling.steps=2", "data.crop_size=[16,16]",
        "training.max_minutes=1"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("gpu") / "cohort", n_patients=6, dims=2, shape=(32, 28))


def probe(cohort, tmp_path, accelerator: str) -> float:
    config = load_config("demo", [*TINY, f"training.accelerator={accelerator}"])
    data = CohortDataModule(cohort, config, splits_path=tmp_path / "splits.json")
    data.prepare_data()
    data.setup()
    return measure_step_seconds(config, model_layout(data, config), data)


def test_the_step_probe_times_the_cpu(cohort, tmp_path):
    seconds = probe(cohort, tmp_path, "cpu")
    assert np.isfinite(seconds) and seconds > 0


@needs_gpu
def test_the_step_probe_times_the_gpu(cohort, tmp_path):
    torch.cuda.reset_peak_memory_stats()
    assert probe(cohort, tmp_path, "gpu") > 0
    assert torch.cuda.max_memory_allocated() > 0  # the probe's model and batch were on the GPU


@needs_gpu
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_a_tiny_model_trains_and_predicts_on_the_gpu(cohort, tmp_path, precision):
    config = load_config("demo", [*TINY, "training.accelerator=gpu", f"training.precision={precision}",
                                  "training.max_steps=4", "training.max_minutes=null"])
    assert effective_precision(config) == precision  # fp16 stays fp16 on a GPU
    train(cohort, config, tmp_path / "run")
    model = load_export(tmp_path / "run")
    assert next(model.net.parameters()).device.type == "cuda"
    cases = load_cases(model, cohort)
    predictions = predict_cases(model, cases, 2, 0, "predicted")
    assert predictions.samples.shape[:2] == (len(cases), 2)
    assert np.isfinite(predictions.samples).all()
