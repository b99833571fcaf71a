"""benchmarks/preprocessing.py on one patient: every figure is written, and the default undoes the acquisition."""

import json

import pytest
from factory import load_benchmark


@pytest.mark.slow
def test_one_patient_run_writes_results_and_the_default_beats_no_preprocessing(tmp_path):
    results = load_benchmark("preprocessing").main(["--patients", "1", "--out", str(tmp_path)])
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["follow_ups"] == results["follow_ups"] == 2
    variants = {v["variant"]: v for v in on_disk["variants"]}
    raw, default = variants["resampled only (raw units)"], variants["+ registration auto = default"]
    assert default["misalignment_mm_mean"] < 1.0 < raw["misalignment_mm_mean"]
    assert default["intensity_error_pct_mean"] < raw["intensity_error_pct_mean"]
    assert on_disk["ideal"]["registered"] == 0
    assert "| + N4 |" in (tmp_path / "table.md").read_text()
