"""``oncodiff demo`` end to end (what ``make demo`` runs), at tiny sizes: synth, validate, train, predict three
ways, evaluate, report; and a second call reuses the trained model."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from oncodiff.cli import app
from test_evaluation_protocol import BUDGETS, TINY, sets


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo-output"
    overrides = [*TINY, *BUDGETS, "evaluation.baselines=[regression]", f"data.cache_dir={out.parent / 'cache'}"]
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--patients", "8", *sets(overrides)])
    assert result.exit_code == 0, result.output
    return out, result.output, overrides


def test_demo_writes_every_stage_and_the_report(demo):
    out, output, _ = demo
    assert (out / "cohort" / "cohort.yaml").is_file() and (out / "run" / "model" / "model.safetensors").is_file()
    for scenario in ("outcome-unknown", "if-responder", "if-non-responder"):
        summaries = list((out / "predictions" / scenario).rglob("summary.json"))
        assert summaries, f"no predictions for {scenario}"
    summary = json.loads((out / "evaluation" / "summary.json").read_text(encoding="utf-8"))
    assert {"identity", "regression", "diffusion"} <= set(summary["methods"])
    report = (out / "evaluation" / "report.html").read_text(encoding="utf-8")
    assert report.startswith("<!DOCTYPE html>") and "data:image/png;base64," in report
    assert f"demo finished: open {out / 'evaluation' / 'report.html'}" in " ".join(output.split())


def test_counterfactual_scenarios_ask_for_opposite_classes_and_differ(demo):
    out, _, _ = demo
    summaries = {scenario: json.loads((out / "predictions" / scenario / "summary.json").read_text(encoding="utf-8"))
                 for scenario in ("outcome-unknown", "if-responder", "if-non-responder")}
    assert summaries["outcome-unknown"]["overrides"] == []
    assert summaries["if-non-responder"]["overrides"] == ["response=non-responder"]
    assert len(summaries["if-responder"]["overrides"]) == 1
    assert summaries["if-responder"]["overrides"][0].startswith("response=")
    assert summaries["if-responder"]["overrides"] != summaries["if-non-responder"]["overrides"]
    keys = [case["key"] for case in summaries["if-responder"]["cases"]]
    assert keys and keys == [case["key"] for case in summaries["if-non-responder"]["cases"]]


def test_a_second_demo_reuses_the_trained_model(demo):
    out, _, overrides = demo
    weights = (out / "run" / "model" / "model.safetensors").stat().st_mtime_ns
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--patients", "8", *sets(overrides)])
    assert result.exit_code == 0, result.output
    assert "reusing the trained model" in result.output
    assert (out / "run" / "model" / "model.safetensors").stat().st_mtime_ns == weights
