"""data.inputs=prior: each target comes with the earlier scans of its lesion and the baseline's other sequences,
registered to the baseline and cut on its crops, with presence flags; data.inputs=baseline: none of them."""

import numpy as np
from factory import edit_csv, write_cohort, write_cohort_v2

from oncodiff.config import DataConfig
from oncodiff.data import preprocess_cohort

CONFIG = DataConfig(crop_size=(16, 16))
FOLLOWUPS = (("week3", 21), ("week6", 42), ("week9", 63))


def _index(preprocessed, patient, timepoint):
    return next(i for i, r in enumerate(preprocessed.records) if r.patient_id == patient and r.timepoint == timepoint)


def test_each_target_gets_its_earlier_scans(tmp_path):
    root = write_cohort(tmp_path / "c", n_patients=2, followups=FOLLOWUPS)
    result = preprocess_cohort(root, CONFIG.model_copy(update={"max_priors": 2}), cache_dir=tmp_path / "cache")
    assert result.arrays["priors"].shape == (6, 2, 16, 16) and result.arrays["prior_days"].shape == (6, 2)
    assert result.arrays["sequences"].shape == (6, 0, 16, 16)
    first, second, third = (_index(result, "P001", t) for t, _ in FOLLOWUPS)
    assert np.isnan(result.arrays["prior_days"][first]).all() and not result.arrays["priors"][first].any()
    np.testing.assert_array_equal(result.arrays["prior_days"][second], [21, np.nan])
    np.testing.assert_array_equal(result.arrays["priors"][second, 0], result.arrays["post"][first, 0])
    np.testing.assert_array_equal(result.arrays["prior_masks"][second, 0], result.arrays["post_mask"][first, 0])
    np.testing.assert_array_equal(result.arrays["prior_days"][third], [21, 42])  # the K latest, oldest first
    np.testing.assert_array_equal(result.arrays["priors"][third, 1], result.arrays["post"][second, 0])


def test_only_the_latest_k_and_rows_in_any_order(tmp_path):
    root = write_cohort(tmp_path / "c", n_patients=1, followups=FOLLOWUPS)
    scans = (root / "scans.csv").read_text().splitlines()
    (root / "scans.csv").write_text("\n".join([scans[0], scans[1], scans[4], scans[3], scans[2]]) + "\n")
    result = preprocess_cohort(root, CONFIG.model_copy(update={"max_priors": 1}), cache_dir=tmp_path / "cache")
    assert [r.timepoint for r in result.records] == ["week9", "week6", "week3"]  # the table's order, as before
    np.testing.assert_array_equal(result.arrays["prior_days"][:, 0], [42, 21, np.nan])
    np.testing.assert_array_equal(result.arrays["priors"][0, 0], result.arrays["post"][1, 0])


def test_baseline_inputs_keep_format1_behaviour(tmp_path):
    root = write_cohort(tmp_path / "c", n_patients=2, followups=FOLLOWUPS)
    prior = preprocess_cohort(root, CONFIG, cache_dir=tmp_path / "cache")
    baseline = preprocess_cohort(root, CONFIG.model_copy(update={"inputs": "baseline"}), cache_dir=tmp_path / "cache")
    assert baseline.arrays["priors"].shape == (6, 0, 16, 16) and baseline.arrays["prior_days"].shape == (6, 0)
    for key in ("pre", "post", "tumor_mask", "post_mask", "anatomy"):
        np.testing.assert_array_equal(prior.arrays[key], baseline.arrays[key])
    assert [r.to_dict() for r in prior.records] == [r.to_dict() for r in baseline.records]


def test_baseline_sequences_with_presence_flags(tmp_path):
    root = write_cohort_v2(tmp_path / "c", n_patients=2, sequences=("t1c", "t2", "flair"))
    edit_csv(root, "scans.csv", 3, "image:flair", "")  # P002's baseline has no FLAIR
    result = preprocess_cohort(root, CONFIG, cache_dir=tmp_path / "cache")
    assert result.arrays["sequences"].shape == (2, 2, 16, 16)
    p1, p2 = _index(result, "P001", "week6"), _index(result, "P002", "week6")
    np.testing.assert_array_equal(result.arrays["sequence_present"][[p1, p2]], [[1, 1], [1, 0]])
    assert not result.arrays["sequences"][p2, 1].any() and result.arrays["sequences"][p2, 0].any()
    t2 = result.arrays["sequences"][p1, 0]
    tumour = result.arrays["tumor_mask"][p1, 0] > 0
    assert t2[tumour].mean() < t2[~tumour & (t2 > 0.05)].mean()  # the tumour is dark in this T2, on the same crop


def test_prior_scans_bring_their_own_sequences(tmp_path):
    root = write_cohort_v2(tmp_path / "c", n_patients=2, sequences=("t1c", "t2", "flair"),
                           followups=(("week3", 21), ("week6", 42)))
    scans = (root / "scans.csv").read_text().splitlines()
    p2_week3 = next(k for k, line in enumerate(scans) if line.startswith("P002,") and ",week3," in line)
    edit_csv(root, "scans.csv", p2_week3, "image:flair", "")  # P002's interim has no FLAIR
    result = preprocess_cohort(root, CONFIG.model_copy(update={"max_priors": 2}), cache_dir=tmp_path / "cache")
    assert result.arrays["prior_sequences"].shape == (4, 4, 16, 16)  # K = 2 slots x Q = 2 sequences, slot-major
    assert result.arrays["post_sequences"].shape == (4, 2, 16, 16)
    week3, week6 = _index(result, "P001", "week3"), _index(result, "P001", "week6")
    np.testing.assert_array_equal(result.arrays["prior_sequence_present"][week3], [0, 0, 0, 0])  # no earlier scan
    assert not result.arrays["prior_sequences"][week3].any()
    np.testing.assert_array_equal(result.arrays["prior_sequence_present"][week6], [1, 1, 0, 0])  # slot 1: week3
    np.testing.assert_array_equal(result.arrays["prior_sequences"][week6, :2], result.arrays["post_sequences"][week3])
    assert not result.arrays["prior_sequences"][week6, 2:].any()
    t2 = result.arrays["prior_sequences"][week6, 0]  # week3's own T2, not the baseline's: its tumour has shrunk
    tumour = result.arrays["prior_masks"][week6, 0] > 0
    assert t2[tumour].mean() < t2[~tumour & (t2 > 0.05)].mean()
    assert not np.array_equal(t2, result.arrays["sequences"][week6, 0])
    p2_week6 = _index(result, "P002", "week6")
    np.testing.assert_array_equal(result.arrays["prior_sequence_present"][p2_week6], [1, 0, 0, 0])
    assert not result.arrays["prior_sequences"][p2_week6, 1].any()  # missing: zeros, never imputed
    baseline_only = preprocess_cohort(root, CONFIG.model_copy(update={"inputs": "baseline"}),
                                      cache_dir=tmp_path / "cache")
    assert baseline_only.arrays["prior_sequences"].shape == (4, 0, 16, 16)
