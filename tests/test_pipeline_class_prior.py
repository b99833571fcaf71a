import numpy as np
import pytest

from oncodiff.pipeline.class_prior import ClassPrior, allocate_classes


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
