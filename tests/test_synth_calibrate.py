"""Calibration of the synthetic cohorts against their published anchors (see oncodiff.synth.calibrate)."""

import numpy as np
import pytest

from oncodiff.synth import calibrate
from oncodiff.synth.registry import SITES

RATE_TARGETS = {"lung": 19 / 74, "breast": 0.35, "brain": 0.5, "glioma": 0.5}


@pytest.mark.parametrize("site", list(SITES))
def test_logistic_intercept_reproduces_the_published_response_rate(site):
    # The marginal P(responder) over the clinical population, without images: cheap and exact in expectation.
    model, rng = SITES[site], np.random.default_rng(0)
    probabilities = [model.response_probability(model.draw_clinical(rng)) for _ in range(20000)]
    assert np.mean(probabilities) == pytest.approx(RATE_TARGETS[site], abs=0.01)


def test_clinical_effects_point_the_documented_way():
    lung, breast, brain = SITES["lung"], SITES["breast"], SITES["brain"]
    base = {"age": 66.0, "sex": "M", "nlr": 3.5}
    p = [lung.response_probability({**base, "pdl1": level}) for level in ("negative", "low", "high")]
    assert p[0] < p[1] < p[2]
    assert lung.response_probability({**base, "pdl1": "low", "nlr": 8.0}) < p[1]
    hr_pos = breast.response_probability({"age": 49.0, "hr": "positive", "her2": "negative"})
    her2_pos = breast.response_probability({"age": 49.0, "hr": "negative", "her2": "positive"})
    assert hr_pos < 0.2 < 0.5 < her2_pos
    young = brain.response_probability({"age": 45.0, "sex": "F", "kps": 90.0, "mgmt": "methylated"})
    old = brain.response_probability({"age": 75.0, "sex": "F", "kps": 60.0, "mgmt": "unmethylated"})
    assert old < 0.25 < 0.75 < young


def test_calibration_table_runs_on_a_few_patients():
    rows = calibrate.simulate_summaries("lung", 4, seed=0, dims=2, workers=1)
    checks = calibrate.site_checks("lung", rows)
    names = [c[0] for c in checks]
    assert "responders %" in names and "rule label = simulated class %" in names
    table = calibrate.format_table({"lung": checks}, 4)
    assert "responders %" in table and "(4 simulated patients per site)" in table


@pytest.mark.slow
def test_every_anchor_is_met_within_sampling_error():
    table = calibrate.main(["--patients", "300", "--workers", "2"])
    assert " NO" not in table
