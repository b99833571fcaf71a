"""The precision a step runs in: the configured one, except fp16 on a CPU and bf16 on a CPU without native bf16."""

import pytest
import torch

from oncodiff import precision
from oncodiff.config import load_config
from oncodiff.training.train import effective_precision, precision_note


@pytest.mark.parametrize(
    ("asked", "device", "native", "runs"),
    [("bf16-mixed", "cpu", True, "bf16-mixed"), ("16-mixed", "cpu", True, "bf16-mixed"),
     ("bf16-mixed", "cpu", False, "32"), ("16-mixed", "cpu", False, "32"), ("32", "cpu", True, "32"),
     ("16-mixed", "cuda", False, "16-mixed"), ("bf16-mixed", "cuda", False, "bf16-mixed")],
)
def test_runs_as(monkeypatch, asked, device, native, runs):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert precision.runs_as(asked, device) == runs


@pytest.mark.parametrize("native", [True, False])
def test_autocast_is_off_where_bf16_is_emulated(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    layer = torch.nn.Linear(4, 4)
    with precision.autocast("bf16-mixed", "cpu"):
        out = layer(torch.ones(2, 4))
    assert out.dtype == (torch.bfloat16 if native else torch.float32)
    with precision.autocast("32", "cpu"):
        assert layer(torch.ones(2, 4)).dtype == torch.float32


def test_training_says_when_it_runs_fp32_instead_of_bf16(monkeypatch):
    config = load_config("demo", ["training.accelerator=cpu"])
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert effective_precision(config) == "32"
    assert "no native bf16" in precision_note(config) and "training.precision='32'" in precision_note(config)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert effective_precision(config) == "bf16-mixed" and precision_note(config) is None
    assert precision_note(load_config("demo", ["training.accelerator=cpu", "training.precision='32'"])) is None
    assert load_config("demo", ["training.precision=32"]).training.precision == "32"  # the number, unquoted


def test_the_probe_answers_a_bool():
    assert isinstance(precision.cpu_has_native_bf16(), bool)
