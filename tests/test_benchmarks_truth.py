"""The benchmarks' scoring truth (benchmarks/volumetric.py TestTruth): its intensity scales."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.volumetric import TestTruth as Truth  # not collected as a test class
from benchmarks.volumetric import tissue_match
from oncodiff.cohort.io import read_image
from oncodiff.synth import synthesize


def test_tissue_match_undoes_a_gain_and_offset():
    rng = np.random.default_rng(0)
    reference = np.concatenate([np.zeros(4000), rng.normal(100.0, 3.0, 20000), rng.normal(300.0, 5.0, 500)])
    source = 1.7 * reference + 20.0
    matched = tissue_match(source, reference)(source)
    assert np.abs(matched - reference).max() < 2.0  # within a histogram bin of the mode
    assert abs(np.median(matched[4000:24000]) - 100.0) < 2.0


def test_an_unknown_truth_scale_is_refused(tmp_path):
    with pytest.raises(ValueError, match="truth scale 'percentiles'"):
        Truth(tmp_path, "percentiles")


@pytest.fixture(scope="module")
def glioma3d(tmp_path_factory):
    return synthesize(site="glioma", n_patients=2, dims=3, seed=7, out=tmp_path_factory.mktemp("truth") / "cohort",
                      acquisition="clinical")


def test_the_clean_scale_is_the_truth_at_the_baseline_gain(glioma3d):
    truth = pd.read_csv(glioma3d / "truth" / "scans.csv")
    scans = pd.read_csv(glioma3d / "scans.csv")
    # the recorded gain and offset are the acquisition's: the baseline as acquired is its truth at them (bias field
    # and noise aside), so the clean scale puts a follow-up's truth where the baseline's intensities are
    for patient in sorted(set(scans["patient_id"])):
        row = truth[(truth["patient_id"] == patient) & (truth["timepoint"] == "pre") & (truth["counterfactual"] == 0)]
        clean = read_image(glioma3d / row.iloc[0]["truth_image"]).array.astype(np.float64)
        acquired = read_image(glioma3d / scans[(scans["patient_id"] == patient) & (scans["timepoint"] == "pre")]
                              .iloc[0]["image"]).array.astype(np.float64)
        body = clean > np.percentile(clean, 60)
        ratio = np.median(acquired[body] / (row.iloc[0]["gain"] * clean[body] + row.iloc[0]["offset"]))
        assert 0.85 < ratio < 1.15
    own, clean = Truth(glioma3d, "own"), Truth(glioma3d, "clean")
    patient, timepoint = own.follow_ups()[0]
    baseline, mask, transform = own.baseline(patient)
    a, b = own.follow_up(patient, timepoint, baseline), clean.follow_up(patient, timepoint, baseline)
    meta = truth[(truth["patient_id"] == patient) & (truth["timepoint"] == timepoint) & (truth["counterfactual"] == 0)]
    pre = truth[(truth["patient_id"] == patient) & (truth["timepoint"] == "pre") & (truth["counterfactual"] == 0)]
    underlying = read_image(glioma3d / meta.iloc[0]["truth_image"]).array.astype(np.float32)
    expected = transform.apply(float(pre.iloc[0]["gain"]) * underlying + float(pre.iloc[0]["offset"]))
    np.testing.assert_allclose(b["image"], expected, atol=1e-6)
    assert not np.allclose(a["image"], b["image"], atol=1e-3)  # own: the acquired scan, its own percentiles
    np.testing.assert_array_equal(a["mask"], b["mask"])
