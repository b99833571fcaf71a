"""``oncodiff evaluate`` then ``oncodiff report`` end to end on a tiny trained run, with tiny budgets
(the trained baselines inherit the run's 4 steps; 2 folds, 1 CNN epoch, 10 head epochs)."""

from __future__ import annotations

import html
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from factory import TINY_MODEL, write_cohort
from oncodiff.pipeline.export import read_export_meta, update_export_meta
from oncodiff.cli import app
from oncodiff.config import load_config
from oncodiff.evaluation.baselines import TRAINED_BASELINES
from oncodiff.training import train

TINY = [*TINY_MODEL, "data.crop_size=[16,16]", "training.max_steps=4",
        "training.samples_per_epoch=8", "training.batch_size=4", "training.max_minutes=null",
        "evaluation.segmenter_steps=10", "sampling.calibration_folds=2"]  # 2 folds where a split needs them (demo)
BUDGETS = ["evaluation.folds=2", "evaluation.cnn_epochs=1", "evaluation.head_epochs=10",
           "evaluation.segmenter_steps=20", "sampling.samples=2", "sampling.steps=2",
           "evaluation.baselines=[regression,regression_drift,no_clinical]"]
SECTIONS = {"methods", "image_metrics", "size", "uncertainty", "distribution", "counterfactual", "class_prior",
            "proper_scores", "paired", "mechanistic",
            "outcomes", "per_case_size", "oncodiff_version", "run", "cohort", "data_hash", "config", "test_cases",
            "training_curves", "segmenter", "spread_calibration"}
DIFFUSION = {"diffusion", "diffusion_most_probable", "diffusion_null_class", "diffusion_true_class",
             "diffusion_as_drawn"}  # the fixture's spread factor is 3: the mixture with it undone is scored too
SPREAD_FACTOR = 3.0
METHODS = {"identity", "denoised", "mechanistic", *TRAINED_BASELINES, *DIFFUSION}


def expected_methods(summary: dict) -> set[str]:
    """METHODS, and the mechanistic forecast given the true class where two classes got parameters of their own."""
    return METHODS | ({"mechanistic_true_class"} if len(summary["mechanistic"]["per_class"]) >= 2 else set())


def sets(items) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def trained_run(root, n_patients: int):
    cohort = write_cohort(root / "cohort", n_patients=n_patients)
    config = load_config("demo", [*TINY, f"data.cache_dir={root / 'cache'}"])
    return cohort, train(cohort, config, root / "run")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    cohort, run = trained_run(root, n_patients=10)  # 2 test patients
    spread = read_export_meta(run)["spread_calibration"]
    update_export_meta(run, spread_calibration={**spread, "factor": SPREAD_FACTOR})  # whatever the tiny model fitted
    evaluation = invoke("evaluate", "--model", run, "--cohort", cohort, "--out", root / "evaluation", *sets(BUDGETS))
    assert evaluation.exit_code == 0, evaluation.output
    report = invoke("report", root / "evaluation")
    assert report.exit_code == 0, report.output
    return {"root": root, "cohort": cohort, "run": run, "out": root / "evaluation", "output": evaluation.output,
            "report_output": report.output}


def test_summary_has_every_section_and_method(evaluated):
    summary = json.loads((evaluated["out"] / "summary.json").read_text(encoding="utf-8"))
    assert SECTIONS <= summary.keys()
    assert set(summary["methods"]) == expected_methods(summary)
    assert set(summary["size"]) == set(summary["uncertainty"]) == set(summary["per_case_size"]) == set(summary["methods"])
    assert len(summary["test_cases"]) == 2
    assert {"response", "survival"} <= summary["outcomes"].keys()
    assert summary["config"]["evaluation"]["folds"] == 2 and summary["config"]["sampling"]["samples"] == 2
    assert summary["methods"]["diffusion"]["samples"] == 2 and summary["methods"]["regression"]["samples"] == 1
    for name in TRAINED_BASELINES:  # trained once into the run folder, for later evaluations to reuse
        assert (evaluated["run"] / "baselines" / name / "model" / "model.safetensors").is_file()


def test_the_class_prior_is_scored_on_the_test_cases(evaluated):
    summary = json.loads((evaluated["out"] / "summary.json").read_text(encoding="utf-8"))
    prior, tables = summary["class_prior"], (evaluated["out"] / "tables.md").read_text(encoding="utf-8")
    assert "### Class prior on the test cases" in tables
    if "status" in prior:  # a tiny training split can hold one class only
        assert prior["status"] in tables
    else:
        assert prior["n"] == 2 and np.isfinite(prior["log_loss"]) and 0 <= prior["accuracy"] <= 1
        assert np.isfinite(prior["brier"]) and np.isfinite(prior["base_rate_brier"])
        assert prior["inputs"] in ("clinical", "clinical + denoiser features", "base rate")
        assert sum(prior["reliability"]["count"]) == 2
        assert ("C = " in prior["fitted"] or "training class rates" in prior["fitted"])
        assert f"{prior['log_loss']:.3f}" in tables and f"{prior['base_rate_brier']:.3f}" in tables
        assert "Reliability of the class probabilities" in (evaluated["out"] / "report.html").read_text(encoding="utf-8")


def test_every_method_gets_proper_scores(evaluated):
    summary = json.loads((evaluated["out"] / "summary.json").read_text(encoding="utf-8"))
    scores, tables = summary["proper_scores"], (evaluated["out"] / "tables.md").read_text(encoding="utf-8")
    assert set(scores) == expected_methods(summary)
    for name, s in scores.items():
        assert s["in_tumour"]["n"] == 2 and s["in_tumour"]["crps"] >= 0, name
        volume = s["volume_change"]
        assert "status" in volume or volume["crps_pp"] >= 0, name
    # identity's margins come from the validation split, so its (no) change is scored as a Gaussian
    assert "Gaussian" in scores["identity"]["volume_change"].get("distribution", "Gaussian")
    assert "### Proper scores of the predicted distributions" in tables


def test_distribution_scores_and_paired_verdicts_reach_summary_tables_and_report(evaluated):
    summary = json.loads((evaluated["out"] / "summary.json").read_text(encoding="utf-8"))
    tables = (evaluated["out"] / "tables.md").read_text(encoding="utf-8")
    diffusion = summary["proper_scores"]["diffusion"]
    assert diffusion["spread_skill"]["samples"] == 2 and diffusion["spread_skill"]["ratio"] > 0
    ranks = diffusion["rank_histogram"]
    assert len(ranks["counts"]) == 3 and sum(ranks["counts"]) == ranks["voxels"] > 0
    assert "status" in summary["proper_scores"]["regression"]["spread_skill"]  # one prediction: no spread
    tumour = summary["proper_scores"]["identity"]["in_tumour"]
    assert tumour["crps"] == pytest.approx(tumour["mae_of_mean"])  # a point forecast's CRPS is its MAE
    paired = summary["paired"]
    assert paired["references"] == ["identity", "denoised", "regression"]
    row = paired["verdicts"]["diffusion"]["regression"]
    assert set(row) == {"mae_tumor", "ssim_tumor", "crps_box"}
    for d in row.values():
        assert d["n_cases"] == 2 and d["n_patients"] == 2 and d["verdict"] is None  # too few patients to judge
        assert d["ci95"][0] <= d["mean"] <= d["ci95"][1]
    assert "identity" not in paired["verdicts"]["identity"]  # not against itself
    assert "### Spread of the samples against their error, in the tumour box" in tables
    assert "### Paired verdicts against the reference predictions" in tables
    mae = row["mae_tumor"]
    assert f"{mae['mean']:+.4f} [{mae['ci95'][0]:+.4f}, {mae['ci95'][1]:+.4f}] not judged" in tables
    report = (evaluated["out"] / "report.html").read_text(encoding="utf-8")
    assert "Rank histograms in the tumour box" in report and "Paired verdicts" in report


def test_the_mechanistic_forecast_is_scored_beside_the_baselines(evaluated):
    summary = json.loads((evaluated["out"] / "summary.json").read_text(encoding="utf-8"))
    tables = (evaluated["out"] / "tables.md").read_text(encoding="utf-8")
    fit = summary["mechanistic"]
    from oncodiff.data.mechanistic import BOUNDS

    assert BOUNDS[0][0] <= fit["outcome_unknown"]["diffusivity"] <= BOUNDS[0][1]  # the grid's best point, refined
    assert "Nelder-Mead" in fit["grid"]["refined"]
    assert fit["outcome_unknown"]["mae"] >= 0 and fit["dims"] == 2 and fit["anatomy"] == ["organ"]
    assert set(summary["paired"]["verdicts"]["mechanistic"]) == {"identity", "denoised", "regression"}
    mae = summary["image_metrics"]["aggregate"]["mechanistic"]["mae_tumor"]["mean"]
    assert mae is not None and np.isfinite(mae)
    assert "### Mechanistic forecast: reaction-diffusion parameters fitted on the training split" in tables
    assert "| outcome unknown |" in tables


def test_the_mechanistic_forecast_is_fitted_on_training_patients_only(evaluated, monkeypatch):
    from oncodiff.evaluation import baselines
    from oncodiff.pipeline.cases import load_cases
    from oncodiff.pipeline.export import load_export
    from oncodiff.runs import RunFolder

    splits = RunFolder(evaluated["run"]).splits()
    exported = load_export(evaluated["run"])
    cache = evaluated["root"] / "cache"
    test = load_cases(exported, evaluated["cohort"], patients=list(splits.test), cache_dir=cache)
    asked = []
    monkeypatch.setattr(baselines, "load_cases", lambda *a, patients=None, **k: asked.append(list(patients))
                        or load_cases(*a, patients=patients, **k))
    _, _, fit = baselines.mechanistic_predictions(exported, evaluated["cohort"], list(splits.train), test, cache)
    assert asked == [list(splits.train)] and not set(splits.test) & set(asked[0])
    n_train = len(load_cases(exported, evaluated["cohort"], patients=list(splits.train), cache_dir=cache))
    assert fit["fitted_on"] == f"{n_train} of {n_train} training pairs"
    assert all(p["n_cases"] <= n_train for p in [fit["outcome_unknown"], *fit["per_class"].values()])


def test_survival_heads_get_a_patient_bootstrap_interval(evaluated):
    survival = json.loads((evaluated["out"] / "summary.json").read_text(encoding="utf-8"))["outcomes"]["survival"]
    if "status" in survival:
        pytest.skip(survival["status"])
    pooled = survival["denoiser features + Cox head"]["pooled_c_index"]
    assert pooled["n_patients"] == 10
    if pooled["c_index"] is not None and pooled["n_boot"]:
        assert pooled["ci95"][0] <= pooled["ci95"][1]


def test_calibrated_coverage_is_reported_for_the_outcome_unknown_predictions_only(evaluated):
    summary = json.loads((evaluated["out"] / "summary.json").read_text(encoding="utf-8"))
    uncertainty = summary["uncertainty"]
    calibrated = {name for name, u in uncertainty.items() if "calibrated" in u}
    # Margins are fitted for the mixture (and each trained baseline) at the end of its training, and for identity by
    # evaluate; the most probable class, null-class and oracle predictions are other distributions.
    assert calibrated == {"diffusion", "identity", *TRAINED_BASELINES}  # identity: from the validation truth
    for name in calibrated:
        entry = uncertainty[name]["calibrated"]
        assert entry["nominal"] == [0.5, 0.9] and entry["n_cases"] == 2
        # identity fits nothing: with 2 validation follow-ups (too few for 90 %) the training ones join them
        assert ("val + training cases" if name == "identity" else "val cases") in entry["fitted_on"]
    assert "x 1 prediction" in uncertainty["regression"]["calibrated"]["fitted_on"]  # deterministic: one per case
    assert "x 8 samples" in uncertainty["diffusion"]["calibrated"]["fitted_on"]  # the training config's count
    assert "applied to 2" in uncertainty["diffusion"]["calibrated"]["note"]  # evaluated with sampling.samples=2
    tables = (evaluated["out"] / "tables.md").read_text(encoding="utf-8")
    assert "calibrated @90%" in tables and "| regression U-Net (pre -> post, MSE) | 2 | - | - |" in tables


def test_the_spread_calibration_is_scored_against_the_same_samples_as_drawn(evaluated):
    summary = json.loads((evaluated["out"] / "summary.json").read_text(encoding="utf-8"))
    assert summary["spread_calibration"]["factor"] == SPREAD_FACTOR
    assert summary["methods"]["diffusion_as_drawn"]["label"].endswith(f"samples as drawn (spread x{SPREAD_FACTOR:g} undone)")
    metrics = summary["image_metrics"]["aggregate"]
    for key in ("mae_tumor", "ssim_tumor"):  # the same mean: scaling about each class mean keeps it
        assert metrics["diffusion_as_drawn"][key]["mean"] == pytest.approx(metrics["diffusion"][key]["mean"], abs=1e-5)
    box = summary["proper_scores"]
    scaled, drawn = box["diffusion"]["spread_skill"], box["diffusion_as_drawn"]["spread_skill"]
    assert scaled["rmse_of_mean"] == pytest.approx(drawn["rmse_of_mean"], rel=1e-4)
    # x3 within each class, the mixture's between-class part as drawn; with 2 samples a class drawn once is unscaled
    assert scaled["spread"] >= drawn["spread"] - 1e-9
    assert "calibrated" not in summary["uncertainty"]["diffusion_as_drawn"]  # the margins were fitted scaled


def test_tables_list_every_method(evaluated):
    summary = json.loads((evaluated["out"] / "summary.json").read_text(encoding="utf-8"))
    tables = (evaluated["out"] / "tables.md").read_text(encoding="utf-8")
    for name, method in summary["methods"].items():
        assert f"| {method['label']} |" in tables, name
    assert tables in evaluated["output"]  # printed as well as written
    for title in ("### Image metrics", "### Tumour volume change", "### Uncertainty", "### Counterfactuals",
                  "### Distribution distance", "### Response prediction", "### Survival prediction"):
        assert title in tables


def test_report_is_written_beside_the_evaluation(evaluated):
    page_path = evaluated["out"] / "report.html"
    assert f"report: {page_path}" in evaluated["report_output"]
    page = page_path.read_text(encoding="utf-8")
    summary = json.loads((evaluated["out"] / "summary.json").read_text(encoding="utf-8"))
    for method in summary["methods"].values():
        assert html.escape(method["label"]) in page
    for section in ("methods", "cases", "training"):
        assert f'<section id="{section}">' in page


def test_a_second_evaluation_reuses_the_trained_baselines(evaluated):
    again = invoke("evaluate", "--model", evaluated["run"], "--cohort", evaluated["cohort"],
                   "--out", evaluated["root"] / "again", *sets([*BUDGETS, "evaluation.folds=3"]))
    assert again.exit_code == 0, again.output
    assert "training baseline" in evaluated["output"] and "training baseline" not in again.output
    summary = json.loads((evaluated["root"] / "again" / "summary.json").read_text(encoding="utf-8"))
    assert summary["outcomes"]["folds"] == 3


def test_evaluate_refuses_to_write_into_the_cohort_or_to_score_a_non_run(evaluated):
    inside = invoke("evaluate", "--model", evaluated["run"], "--cohort", evaluated["cohort"],
                    "--out", evaluated["cohort"] / "evaluation")
    assert inside.exit_code == 2 and "inside the cohort folder" in inside.output
    not_a_run = invoke("evaluate", "--model", evaluated["run"] / "model", "--cohort", evaluated["cohort"],
                       "--out", evaluated["root"] / "x")
    assert not_a_run.exit_code == 2 and "not a run folder" in not_a_run.output


def test_a_single_test_case_is_evaluated_without_distribution_distances(tmp_path):
    # Six patients leave one for testing: MMD and FID compare sets and are not defined, everything else is.
    # The mechanistic forecast is switched off here (evaluation.mechanistic=false): it leaves the methods.
    cohort, run = trained_run(tmp_path, n_patients=6)
    result = invoke("evaluate", "--model", run, "--cohort", cohort, "--out", tmp_path / "evaluation",
                    *sets([*BUDGETS, "evaluation.baselines=[]", "evaluation.mechanistic=false"]))
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "evaluation" / "summary.json").read_text(encoding="utf-8"))
    assert len(summary["test_cases"]) == 1
    assert set(summary["methods"]) == {"identity", "denoised", *DIFFUSION}
    assert "off" in summary["mechanistic"]["status"]
    for name in summary["methods"]:
        assert summary["distribution"][name]["mmd"] is None
        assert "at least 2 test cases" in summary["distribution"][name]["status"]
    assert "at least 2 test cases" in summary["distribution"]["fid"]["status"]
    assert summary["image_metrics"]["aggregate"]
    assert invoke("report", tmp_path / "evaluation").exit_code == 0


def test_counterfactuals_reuse_the_true_class_predictions_without_changing_the_scores(evaluated):
    """evaluate hands its oracle (true-class) samples to the counterfactual check instead of sampling them again:
    the scores must be those of sampling them afresh (same seed, one generator per follow-up)."""
    from oncodiff.evaluation.counterfactual import evaluate_counterfactuals
    from oncodiff.pipeline.cases import load_cases
    from oncodiff.pipeline.export import load_export
    from oncodiff.pipeline.predict import predict_cases
    from oncodiff.runs import RunFolder

    import shutil

    import pandas as pd

    cohort = evaluated["root"] / "cohort_with_counterfactuals"  # the factory's cohort has none: the factual
    shutil.copytree(evaluated["cohort"], cohort)  # follow-ups stand in (only the equality is tested)
    scans = pd.read_csv(cohort / "scans.csv", dtype=str, keep_default_na=False)
    scans[scans["timepoint"] != "pre"].to_csv(cohort / "counterfactuals.csv", index=False)
    exported = load_export(evaluated["run"])
    config = exported.config.with_overrides(["sampling.samples=2", "sampling.steps=2"])
    cases = load_cases(exported, cohort, patients=list(RunFolder(evaluated["run"]).splits().test),
                       cache_dir=evaluated["root"] / "cache")
    cases = cases.select([i for i, c in enumerate(cases.cases) if c.has_truth])
    oracle = predict_cases(exported, cases, 2, config.training.seed, "true", config)
    fresh = evaluate_counterfactuals(exported, config, cases)
    reused = evaluate_counterfactuals(exported, config, cases, factual=oracle)
    assert "status" not in fresh, fresh
    assert json.dumps(reused, sort_keys=True, default=str) == json.dumps(fresh, sort_keys=True, default=str)
    assert oracle.select([1, 0]).samples[0].tobytes() == oracle.samples[1].tobytes()
