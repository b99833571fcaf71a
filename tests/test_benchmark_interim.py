"""benchmarks/interim.py's scores: the CRPS of a weighted empirical forecast and the patient bootstrap."""

import numpy as np
from factory import load_benchmark

interim = load_benchmark("interim")


def test_crps_of_a_point_mass_is_the_absolute_error():
    assert interim.crps_empirical(np.array([2.0]), np.array([1.0]), 5.0) == 3.0


def test_crps_matches_the_integral_of_the_squared_cdf_difference():
    values, weights, y = np.array([-1.0, 0.5, 2.0]), np.array([0.2, 0.5, 0.3]), 0.8
    grid = np.linspace(-5, 5, 200001)
    cdf = (weights[None, :] * (values[None, :] <= grid[:, None])).sum(1)
    integral = np.trapezoid((cdf - (grid >= y)) ** 2, grid)
    assert abs(interim.crps_empirical(values, weights, y) - integral) < 1e-3


def test_bootstrap_interval_covers_the_mean():
    differences = np.random.default_rng(0).normal(-0.2, 0.1, 40)
    mean, low, high = interim.bootstrap(differences, np.arange(40), 0)  # one row per patient
    assert low < mean < high < 0 and abs(mean - differences.mean()) < 1e-12


def test_the_denoiser_benchmark_pairs_the_priors_model_with_each_reference():
    import pandas as pd

    denoiser = load_benchmark("interim_denoiser")
    rng = np.random.default_rng(0)
    rows = []
    for k in range(8):
        base = rng.uniform(0.1, 0.2)
        for method, shift in ((denoiser.PRIORS_MODEL, 0.0), *((r, 0.05) for r in denoiser.REFERENCES)):
            rows.append({"patient": f"P{k}", "method": method, "mae_tumor": base + shift, "ssim_tumor": 0.5 - shift})
    summary = denoiser.summarise(pd.DataFrame(rows))
    assert summary["patients"] == 8
    for reference in denoiser.REFERENCES:
        mae = summary["paired (priors model - reference)"]["mae_tumor"][reference]
        assert abs(mae["mean"] + 0.05) < 1e-12 and mae["ci95"][1] < 0 and mae["n_patients"] == 8


def test_the_denoiser_benchmark_scores_each_models_volume_change_distribution(tmp_path):
    import json

    denoiser = load_benchmark("interim_denoiser")
    baseline_only = denoiser.REFERENCES[1]
    folders = {}
    for name, samples in ((denoiser.PRIORS_MODEL, [-60.0, -40.0]), (baseline_only, [10.0, None])):
        folders[name] = tmp_path / name.replace(" ", "_")
        folders[name].mkdir()
        cases = [{"patient_id": "P1", "timepoint": denoiser.FINAL, "change_pct_true": -50.0,
                  "change_pct_samples": samples},
                 {"patient_id": "P2", "timepoint": denoiser.FINAL, "change_pct_true": None,  # no truth: left out
                  "change_pct_samples": samples}]
        (folders[name] / "summary.json").write_text(json.dumps({"cases": cases}))
    frame = denoiser.volume_change(folders).set_index("method")
    assert list(frame.patient) == ["P1"] * 3
    # two samples 10 pp either side of the truth: mean |X - y| 10 minus half of mean |X - X'| (10): 5
    assert frame.loc[denoiser.PRIORS_MODEL, "crps_change_pp"] == 5.0
    assert frame.loc[baseline_only, "crps_change_pp"] == 60.0  # the undefined sample is left out: a point mass
    assert frame.loc["no change (post = pre)", "crps_change_pp"] == 50.0
    summary = denoiser.summarise_volumes(frame.reset_index())
    assert summary["ratio priors / baseline only"] == 5.0 / 60.0
    assert summary["paired (priors model - baseline only)"]["mean"] == -55.0


def test_given_the_class_the_two_models_are_paired_with_each_other():
    import pandas as pd

    denoiser = load_benchmark("interim_denoiser")
    rows = []
    for k in range(6):
        for method, mae in ((denoiser.PRIORS_MODEL, 0.2), *((r, 0.3) for r in denoiser.REFERENCES),
                            (denoiser.GIVEN[0], 0.10 + 0.01 * k), (denoiser.GIVEN[1], 0.12 + 0.01 * k)):
            rows.append({"patient": f"P{k}", "method": method, "mae_tumor": mae, "ssim_tumor": 0.5})
    summary = denoiser.summarise(pd.DataFrame(rows))
    given = summary["paired given the class (priors - baseline only)"]
    assert abs(given["mean"] + 0.02) < 1e-12 and given["n_patients"] == 6
    assert "paired given the class (priors - baseline only)" not in denoiser.summarise(
        pd.DataFrame([r for r in rows if r["method"] not in denoiser.GIVEN]))
