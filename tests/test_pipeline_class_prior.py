import numpy as np
import pytest

from oncodiff.pipeline.class_prior import L2_C, ClassPrior, allocate_classes


def test_allocation_matches_probabilities_and_sums_to_n():
    p = np.array([[0.25, 0.75], [1.0, 0.0], [0.5, 0.5], [0.1, 0.9]])
    classes = allocate_classes(p, 8).numpy()
    assert classes.shape == (4, 8)
    np.testing.assert_array_equal((classes == 1).sum(1), [6, 0, 4, 7])  # 0.9 * 8 = 7.2 -> 7


def test_allocation_with_four_classes_uses_largest_remainders():
    p = np.array([[0.1, 0.2, 0.3, 0.4]])
    counts = np.bincount(allocate_classes(p, 5).numpy()[0], minlength=4)
    # floors 0, 1, 1, 2 (sum 4); remainders 0.5, 0, 0.5, 0: the tie goes to the lower class
    assert counts.sum() == 5 and list(counts) == [1, 1, 1, 2]


def test_prior_learns_a_separable_rule_and_round_trips():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] + 0.2 * rng.normal(size=200) > 0).astype(int)
    y[:5] = -1  # unknown labels are left out
    prior = ClassPrior.fit(x, y, n_classes=2)
    p = prior.probabilities(x)
    assert prior.n_train == 195
    assert np.allclose(p.sum(1), 1)
    assert ((p[:, 1] > 0.5) == (y == 1))[5:].mean() > 0.9
    again = ClassPrior.from_dict(prior.to_dict())
    np.testing.assert_allclose(again.probabilities(x), p)


def test_prior_with_a_class_never_seen_gives_it_no_probability():
    x = np.arange(20, dtype=float)[:, None]
    y = (x[:, 0] > 9).astype(int) * 2  # classes 0 and 2 of 4
    p = ClassPrior.fit(x, y, n_classes=4).probabilities(x)
    assert p.shape == (20, 4) and p[:, [1, 3]].max() < 1e-6


def test_one_class_only_gives_no_prior():
    assert ClassPrior.fit(np.zeros((4, 2)), np.array([1, 1, 1, -1]), 2) is None


@pytest.mark.parametrize("n", [1, 3])
def test_allocation_small_n(n):
    assert allocate_classes(np.array([[0.4, 0.6]]), n).shape == (1, n)


def test_prior_keeps_an_imbalanced_base_rate():
    # The mixture samples classes in proportion to p: with features that carry no information, p must be the
    # training base rate (27 % responders, as in the lung cohort), not the 50 % that class weighting gives.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 2))
    y = (rng.random(400) < 0.27).astype(int)
    p = ClassPrior.fit(x, y, n_classes=2).probabilities(x)
    assert abs(p[:, 1].mean() - y.mean()) < 0.02


def test_regularisation_is_cross_validated_by_patient():
    # 40 patients with 10 identical rows each and labels unrelated to the features. Rows of one patient in
    # both the training and the held-out fold would reward memorising them (weak regularisation); folds that
    # keep patients whole choose a strong one, so the probabilities stay nearer the base rate.
    rng = np.random.default_rng(2)
    patient_x, patient_y = rng.normal(size=(40, 6)), rng.integers(0, 2, size=40)
    x, y, groups = np.repeat(patient_x, 10, axis=0), np.repeat(patient_y, 10), np.repeat(np.arange(40), 10)
    grouped = ClassPrior.fit(x, y, n_classes=2, groups=groups)
    leaky = ClassPrior.fit(x, y, n_classes=2)
    assert "patient-grouped CV" in grouped.c_selection
    assert grouped.c <= 0.03 < leaky.c
    spread = [np.abs(prior.probabilities(x)[:, 1] - y.mean()).mean() for prior in (grouped, leaky)]
    assert spread[0] < 0.7 * spread[1]


def test_a_real_signal_keeps_weak_regularisation():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 3))
    y = (2 * x[:, 0] + 0.3 * rng.normal(size=300) > 0).astype(int)
    prior = ClassPrior.fit(x, y, n_classes=2)
    assert prior.c >= 1.0
    assert ((prior.probabilities(x)[:, 1] > 0.5) == y).mean() > 0.9


def test_too_few_patients_for_folds_fall_back_to_the_default_and_old_exports_load():
    prior = ClassPrior.fit(np.arange(6, dtype=float)[:, None], np.array([0, 0, 0, 1, 1, 0]), n_classes=2)
    assert (prior.c, prior.c_selection) == (L2_C, "default")  # 2 patients of class 1: fewer than 2 folds of 2
    old = {k: v for k, v in prior.to_dict().items() if k not in ("c", "c_selection")}
    assert ClassPrior.from_dict(old).c == L2_C


def test_scores_against_known_classes_and_the_training_rates():
    x = np.repeat([[0.0], [1.0]], 20, axis=0)
    y = np.repeat([0, 1], 20)
    y[:5] = 1  # 25 of 40 in class 1
    prior = ClassPrior.fit(x, y, n_classes=2)
    assert prior.frequencies == (15 / 40, 25 / 40)
    labels = np.array([0, 1, 1, -1])
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    s = prior.scores(p, labels)
    assert s["n"] == 3 and s["accuracy"] == 2 / 3 and s["auc"] == 1.0
    assert np.isclose(s["log_loss"], -np.mean(np.log([0.9, 0.8, 0.4])))
    assert np.isclose(s["base_rate_log_loss"], -np.mean(np.log([15 / 40, 25 / 40, 25 / 40])))
    assert "status" in prior.scores(p, -np.ones(4, dtype=int))
