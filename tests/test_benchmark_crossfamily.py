"""benchmarks/crossfamily.py's bookkeeping: every route a choice, each command kept, merged parts' notes kept."""

import json
import sys

import numpy as np
import pytest

from factory import load_benchmark

crossfamily = load_benchmark("crossfamily")


def test_every_route_is_a_choice_and_a_same_steps_route_has_its_reason():
    choices = next(a for a in crossfamily._parser()._actions if a.dest == "routes").choices
    assert set(crossfamily.ROUTES) | {"regression"} == set(choices)
    assert set(crossfamily.SAME_STEPS_AS) == set(crossfamily.STEP_NOTES) <= set(crossfamily.ROUTES)
    assert crossfamily.ROUTES["intensity"] == ["data.intensity_augmentation=true"]


def test_a_second_command_on_the_same_out_is_added_to_the_first(tmp_path, monkeypatch):
    (tmp_path / "results.json").write_text(json.dumps({"command": "crossfamily.py --routes edm", "runs": {}}))
    monkeypatch.setattr(sys, "argv", ["crossfamily.py", "--routes", "intensity"])
    results = crossfamily._results(tmp_path, None)
    assert results["command"] == "crossfamily.py --routes edm ; crossfamily.py --routes intensity"
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert crossfamily._results(tmp_path, None)["command"] == results["command"]  # the same command again: once


def test_merge_keeps_each_parts_runs_and_notes_once(tmp_path):
    part = {"command": "a", "truth_scale": "own", "machine": "m", "cohorts": {}, "denoised_sigma_mm": {"brain": 3.0, "glioma": 3.0},
            "speed": {}, "notes": ["shared note"]}
    paths = []
    def probe(seconds):
        return {"crop": [64, 64], "cpu_seconds_per_step": seconds}

    for name, key, speed in (("one", "5min/brain/edm", {"edm": probe(2.5)}),
                             ("two", "5min/glioma/edm", {"edm": probe(9.0), "3d": probe(3.5)})):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({**part, "command": name, "runs": {key: {"steps": 117, "minutes": 5}},
                                    "speed": speed}))
        paths.append(str(path))
    (tmp_path / "merged").mkdir()
    assert crossfamily._merge(paths, tmp_path / "merged", ["added"]) == 0
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert merged["command"] == "one ; two" and merged["notes"] == ["shared note", "added"]
    assert set(merged["runs"]) == {"5min/brain/edm", "5min/glioma/edm"}
    assert merged["speed"] == {"edm": probe(2.5), "3d": probe(3.5)}  # every part's probes, the first's where both


def test_the_summary_has_one_line_per_run_and_test_family():
    def rows(given):
        return {"follow_ups": 16, "paired": {}, "mean": [
            {"method": "denoised identity", "ssim_tumor": 0.485, "mae_vs_denoised identity": 1.0},
            {"method": "oncodiff (given)", "mae_vs_denoised identity": given, "ssim_tumor": 0.73,
             "spread_skill_box": 0.18},
            {"method": "oncodiff (unknown)", "mae_vs_denoised identity": 0.905,
             "crps_vs_denoised identity mae": 0.734, "spread_skill_box": float("nan"), "box_outside": 0.55,
             "box_zero_spread": 0.22}]}

    results = {"runs": {"5min/brain/edm-seed1": {"steps": 117, "scores": {"glioma": rows(0.889), "brain": rows(0.5)}},
                        "5min/glioma/edm": {"steps": 117}}}  # not scored yet: no line
    lines = [line for line in crossfamily._summary(results) if line.startswith("| brain ->")]
    assert lines == ["| brain -> glioma | edm-seed1 | 5min (117 steps) | 0.889 | 0.905 | 0.734 | 0.730 (0.485) | "
                     "0.18 / - | 0.55 (0.22) |",
                     "| brain -> brain | edm-seed1 | 5min (117 steps) | 0.500 | 0.905 | 0.734 | 0.730 (0.485) | "
                     "0.18 / - | 0.55 (0.22) |"]


def test_box_scores_count_the_voxels_where_the_samples_do_not_differ_and_the_truth_outside_them():
    rng = np.random.default_rng(0)
    mask = np.zeros((12, 12, 12), bool)
    mask[5:7, 5:7, 5:7] = True  # its box, 4 voxels around: 10 x 10 x 10
    truth = rng.normal(size=mask.shape)
    samples = rng.normal(size=(4, *mask.shape))
    samples[:, :, :, :3] = 0.0  # the box's first two slices (z 1, 2) alike in every sample: no spread there
    scores = crossfamily.box_scores(samples, truth, mask)
    assert scores["zero_spread_share"] == pytest.approx(0.2)  # 2 of the box's 10 slices
    # truth and samples exchangeable elsewhere: outside 2 / 5 there, and (almost) always at the alike slices
    assert scores["outside_share"] == pytest.approx(0.8 * 0.4 + 0.2 * 1.0, abs=0.04)
    assert scores["samples"] == 4 and scores["n"] == 1
    assert crossfamily.run_name("edm", 0) == "edm" and crossfamily.run_name("edm", 1) == "edm-seed1"


def test_spread_calibrated_runs_get_a_summary_line_and_a_paired_crps_line_for_the_samples_as_drawn(tmp_path):
    import json

    rows = {"follow_ups": 16, "mean": [
        {"method": "denoised identity", "ssim_tumor": 0.485, "mae_vs_denoised identity": 1.0},
        {"method": "oncodiff (unknown)", "mae_vs_denoised identity": 0.9, "crps_vs_denoised identity mae": 0.6,
         "spread_skill_box": 0.9},
        {"method": "oncodiff raw spread (unknown)", "mae_vs_denoised identity": 0.9,
         "crps_vs_denoised identity mae": 0.7, "spread_skill_box": 0.3}],
        "paired": {"crps_tumor": {"oncodiff raw spread (unknown)": {
            "oncodiff (unknown)": {"mean": -0.01, "ci95": [-0.02, -0.005]}}}}}
    results = {"runs": {"5min/brain/edm": {"steps": 117, "scores": {"glioma": rows}}}}
    lines = [line for line in crossfamily._summary(results) if line.startswith("| brain ->")]
    assert lines == ["| brain -> glioma | edm | 5min (117 steps) | - | 0.900 | 0.600 | - (0.485) | - / 0.90 | - (-) |",
                     "| brain -> glioma | edm, samples as drawn | 5min (117 steps) | - | 0.900 | 0.700 | - (0.485) | "
                     "- / 0.30 | - (-) |"]
    assert crossfamily._spread_lines(rows) == [
        "CRPS of oncodiff (unknown) minus the same samples as drawn (spread calibration undone): -0.0100 "
        "(95 % CI -0.0200 .. -0.0050).", ""]
    # the factor predict applied (summary.json) and the one the export the predictions name has now
    export = tmp_path / "run" / "model"
    export.mkdir(parents=True)
    (export / "model.safetensors").write_bytes(b"")
    from oncodiff.pipeline.export import EXPORT_FORMAT

    (export / "config.json").write_text(json.dumps({"format": EXPORT_FORMAT, "spread_calibration": {"factor": 4.0}}))
    folder = tmp_path / "predictions"
    folder.mkdir()
    for applied in (4.0, 1.0):  # scaled by predict, or predicted before the run was calibrated
        (folder / "summary.json").write_text(json.dumps({"model": str(tmp_path / "run"), "spread_factor": applied}))
        assert crossfamily.spread_factors(folder) == (applied, 4.0)
