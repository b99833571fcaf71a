"""The ``oncodiff`` verbs through Typer's CliRunner: presets, synth -> validate -> preprocess, train, and
predict with counterfactual and clinical overrides, and the errors a user meets (bad --set keys, an
output folder inside the cohort, a new patient without --days)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from factory import TINY_MODEL, write_cohort
from oncodiff.cli import app

TINY = [*TINY_MODEL, "data.crop_size=[16,16]", "training.max_steps=4",
        "training.samples_per_epoch=8", "training.batch_size=4", "training.max_minutes=null",
        "evaluation.segmenter_steps=10", "sampling.steps=2"]


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def invoke(*args) -> "Result":  # noqa: F821 - click's Result
    return CliRunner().invoke(app, [str(a) for a in args])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A cohort (P007 has only a baseline scan) and a run trained by ``oncodiff train``."""
    root = tmp_path_factory.mktemp("cli")
    cohort = write_cohort(root / "cohort", n_patients=7)
    scans = pd.read_csv(cohort / "scans.csv", dtype=str, keep_default_na=False)
    scans[(scans.patient_id != "P007") | (scans.timepoint == "pre")].to_csv(cohort / "scans.csv", index=False)
    cache = root / "cache"
    result = invoke("train", "--cohort", cohort, "--out", root / "run", *sets(*TINY, f"data.cache_dir={cache}"))
    assert result.exit_code == 0, result.output
    return {"root": root, "cohort": cohort, "run": root / "run", "train_output": result.output}


def test_presets_lists_the_shipped_presets():
    result = invoke("presets")
    assert result.exit_code == 0
    assert result.output.split()[0] == "demo" and "2D synthetic cohort" in result.output
    # each paper's chain, from the registry
    assert "immunodiff-encoders -> immunodiff-ddpm -> immunodiff-controlnet -> immunodiff" in result.output
    assert "arXiv:2505.23675" in result.output


def test_synth_validate_preprocess_chain(tmp_path):
    cohort = tmp_path / "synthetic"
    made = invoke("synth", "--out", cohort, "--patients", 3, "--seed", 1)
    assert made.exit_code == 0, made.output
    assert len(pd.read_csv(cohort / "patients.csv")) == 3
    again = invoke("synth", "--out", cohort, "--patients", 3)
    assert again.exit_code == 2 and "overwrite" in again.output  # never silently replaces a cohort
    valid = invoke("validate", cohort)
    assert valid.exit_code == 0 and "valid" in valid.output
    cached = invoke("preprocess", cohort, "--cache-dir", tmp_path / "cache", *sets("data.crop_size=[16,16]"))
    assert cached.exit_code == 0, cached.output
    assert "3 patients" in cached.output
    (cohort / "P0002" / "pre.nii.gz").unlink()
    broken = invoke("validate", cohort)
    assert broken.exit_code == 1 and "P0002/pre.nii.gz" in broken.output


def test_train_writes_a_run_folder(trained):
    assert f"run folder: {trained['run']}" in trained["train_output"]
    config = json.loads((trained["run"] / "config.json").read_text(encoding="utf-8"))
    assert config["model"]["channels"] == [8, 16] and config["training"]["max_steps"] == 4
    assert (trained["run"] / "model" / "model.safetensors").is_file()


def test_train_refuses_a_misspelt_key_before_anything_runs(tmp_path):
    result = invoke("train", "--cohort", tmp_path, "--out", tmp_path / "run", *sets("training.max_step=4"))
    assert result.exit_code == 2
    assert "max_step" in result.output and "max_steps" in result.output  # the close valid key is suggested
    assert not (tmp_path / "run").exists()


def test_predict_then_counterfactual_and_clinical_what_ifs(trained):
    root, run, cohort = trained["root"], trained["run"], trained["cohort"]
    common = ["--model", run, "--cohort", cohort, "--patient", "P002", "--samples", 2]
    plain = invoke("predict", *common, "--out", root / "plain")
    assert plain.exit_code == 0, plain.output
    assert f"predictions: {root / 'plain'}" in plain.output
    what_if = invoke("predict", *common, "--out", root / "what_if",
                     *sets("response=responder", "clinical.age=70", "sampling.steps=3"))
    assert what_if.exit_code == 0, what_if.output
    summary = json.loads((root / "what_if" / "summary.json").read_text(encoding="utf-8"))
    assert summary["overrides"] == ["response=responder", "clinical.age=70", "sampling.steps=3"]
    assert summary["sampling"]["steps"] == 3 and summary["samples"] == 2
    (case,) = summary["cases"]
    assert case["patient_id"] == "P002" and "sample_classes" not in case  # responder given: no mixture
    plain_case = json.loads((root / "plain" / "summary.json").read_text(encoding="utf-8"))["cases"][0]
    assert len(plain_case["sample_classes"]) == 2  # outcome unknown: marginalised over the predicted class


@pytest.mark.parametrize("item, message", [
    ("tumour=big", "--set tumour: predict takes sampling.KEY, evaluation.KEY, clinical.NAME, response"),
    ("sampling.stepz=3", "stepz"),
    ("response=maybe", "--set response=maybe"),
    ("clinical.height=180", "height"),
    ("response", "expected KEY=VALUE"),
    ("survival_class=1", "conditioned on model.class_label=response; it takes --set response="),
])
def test_predict_names_a_bad_set_item(trained, item, message):
    result = invoke("predict", "--model", trained["run"], "--cohort", trained["cohort"], "--patient", "P001",
                    "--out", trained["root"] / "bad", *sets(item))
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_predict_never_writes_into_the_cohort(trained):
    cohort = trained["cohort"]
    result = invoke("predict", "--model", trained["run"], "--cohort", cohort, "--patient", "P001",
                    "--out", cohort / "predictions")
    assert result.exit_code == 2 and "inside the cohort folder" in result.output
    assert not (cohort / "predictions").exists()


def test_predict_a_new_patient_needs_days(trained):
    args = ["predict", "--model", trained["run"], "--cohort", trained["cohort"], "--patient", "P007"]
    missing = invoke(*args, "--out", trained["root"] / "new_patient")
    assert missing.exit_code == 2
    assert "patient P007 has no follow-up scan" in missing.output and "--days" in missing.output
    given = invoke(*args, "--out", trained["root"] / "new_patient", "--days", 120)
    assert given.exit_code == 0, given.output
    assert (trained["root"] / "new_patient" / "P007_L1_day120" / "mean.nii.gz").is_file()
    unknown = invoke("predict", "--model", trained["run"], "--cohort", trained["cohort"], "--patient", "P999",
                     "--out", trained["root"] / "unknown")
    assert unknown.exit_code == 2 and "P999" in unknown.output and "patients.csv" in unknown.output


def test_calibrate_refits_the_margins_for_another_sample_count(trained):
    meta_path = trained["run"] / "model" / "config.json"
    fitted_at_training = json.loads(meta_path.read_text(encoding="utf-8"))["interval_calibration"]
    assert fitted_at_training["calibrated"] and fitted_at_training["n_samples"] == 8
    result = invoke("calibrate", "--model", trained["run"], "--cohort", trained["cohort"], "--samples", 3)
    assert result.exit_code == 0, result.output
    stored = json.loads(meta_path.read_text(encoding="utf-8"))["interval_calibration"]
    assert stored["n_samples"] == 3 and json.loads(result.output.strip().splitlines()[-1]) == stored
    not_a_run = invoke("calibrate", "--model", trained["run"] / "model", "--cohort", trained["cohort"])
    assert not_a_run.exit_code == 2 and "not a run folder" in not_a_run.output
    restored = invoke("calibrate", "--model", trained["run"], "--cohort", trained["cohort"])  # as training left it
    assert restored.exit_code == 0 and json.loads(meta_path.read_text(encoding="utf-8"))["interval_calibration"] == \
        fitted_at_training
