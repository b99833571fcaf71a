"""benchmarks/preprocessing_workers.py on two patients (two lesions, so two workers share them): every run is
timed and writes the 1-worker cache."""

import json

import pytest
from factory import load_benchmark


@pytest.mark.slow
def test_two_patient_run_times_each_path_and_they_write_the_same_cache(tmp_path):
    pytest.importorskip("distributed")
    results = load_benchmark("preprocessing_workers").main(["--patients", "2", "--dask", "--out", str(tmp_path)])
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["pairs"] == results["pairs"] == 4
    assert [run["same_cache_as_one_worker"] for run in on_disk["runs"]] == [True, True, True]
    assert on_disk["speedup"] == pytest.approx(on_disk["runs"][0]["seconds"] / on_disk["runs"][1]["seconds"])
    assert "| preprocess_workers=2 |" in (tmp_path / "table.md").read_text()
