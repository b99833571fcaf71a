import dataclasses

import numpy as np
import pytest

from oncodiff.evaluation.distribution_scores import class_probability_scores
from oncodiff.outcomes.class_prior import (
    BASE_RATE, CLINICAL, CLINICAL_DENOISER, L2_C, ClassPrior, allocate_classes,
)


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
    s = class_probability_scores(p, labels, prior.frequencies)
    assert s["n"] == 3 and s["accuracy"] == 2 / 3 and s["auc"] == 1.0
    assert np.isclose(s["log_loss"], -np.mean(np.log([0.9, 0.8, 0.4])))
    assert np.isclose(s["brier"], np.mean([0.1**2, 0.2**2, 0.6**2]))
    assert np.isclose(s["base_rate_log_loss"], -np.mean(np.log([15 / 40, 25 / 40, 25 / 40])))
    assert np.isclose(s["base_rate_brier"], np.mean([(25 / 40) ** 2, (15 / 40) ** 2, (15 / 40) ** 2]))
    assert s["base_rate_auc"] == 0.5
    assert sum(s["reliability"]["count"]) == 3
    assert "status" in class_probability_scores(p, -np.ones(4, dtype=int), prior.frequencies)


def test_noise_features_choose_the_base_rate():
    # 60 patients, labels unrelated to either feature set: by chance some candidate scores a lower CV loss than
    # the training class rates (0.45 vs 0.50 with this seed), but not by more than a standard error.
    rng = np.random.default_rng(4)
    y = (rng.random(60) < 0.3).astype(int)
    sets = {CLINICAL: rng.normal(size=(60, 4)), CLINICAL_DENOISER: rng.normal(size=(60, 30))}
    prior = ClassPrior.select(sets, y, 2, groups=np.arange(60))
    assert prior.inputs == BASE_RATE and prior.shrinkage == 1.0
    np.testing.assert_allclose(prior.probabilities(sets[CLINICAL][:3]), np.tile([1 - y.mean(), y.mean()], (3, 1)))
    assert BASE_RATE in dict(prior.cv_log_loss)
    assert ClassPrior.from_dict(prior.to_dict()) == prior


def test_the_feature_set_that_carries_the_signal_is_chosen():
    rng = np.random.default_rng(5)
    clinical, denoiser = rng.normal(size=(120, 3)), rng.normal(size=(120, 5))
    y = (denoiser[:, 2] + 0.5 * rng.normal(size=120) > 0).astype(int)
    sets = {CLINICAL: clinical, CLINICAL_DENOISER: np.concatenate([clinical, denoiser], axis=1)}
    prior = ClassPrior.select(sets, y, 2, groups=np.arange(120), feature_timestep=100)
    assert prior.inputs == CLINICAL_DENOISER and prior.feature_timestep == 100
    assert ((prior.probabilities(sets[CLINICAL_DENOISER])[:, 1] > 0.5) == y).mean() > 0.8
    losses = dict(prior.cv_log_loss)
    assert min(v for k, v in losses.items() if k.startswith(CLINICAL_DENOISER)) < losses[BASE_RATE]


def test_shrinkage_mixes_towards_the_training_rates():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(100, 2))
    y = (x[:, 0] + rng.normal(size=100) > 0).astype(int)
    prior = ClassPrior.fit(x, y, 2)
    half = dataclasses.replace(prior, shrinkage=0.5, inputs=CLINICAL)
    unshrunk = dataclasses.replace(prior, shrinkage=0.0, inputs=CLINICAL)
    rates = np.asarray(prior.frequencies)
    np.testing.assert_allclose(half.probabilities(x), 0.5 * unshrunk.probabilities(x) + 0.5 * rates)


def test_an_export_without_the_new_fields_loads_as_an_unshrunk_clinical_prior():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(80, 2))
    y = (x[:, 0] > 0).astype(int)
    prior = ClassPrior.fit(x, y, 2)
    old = {k: v for k, v in prior.to_dict().items()
           if k not in ("inputs", "shrinkage", "feature_timestep", "cv_log_loss")}
    loaded = ClassPrior.from_dict(old)
    assert (loaded.inputs, loaded.shrinkage, loaded.cv_log_loss) == (CLINICAL, 0.0, ())
    if prior.inputs == CLINICAL and prior.shrinkage == 0:
        np.testing.assert_allclose(loaded.probabilities(x), prior.probabilities(x))


def test_survival_risk_comes_from_survival_class_probabilities(monkeypatch):
    from types import SimpleNamespace

    from oncodiff.pipeline import prior_inputs

    monkeypatch.setattr(prior_inputs, "class_prior_note", lambda model: "class probabilities from a prior")

    def model(kind):
        return SimpleNamespace(config=SimpleNamespace(model=SimpleNamespace(class_label=kind)))

    def cases(*keys):
        return SimpleNamespace(cases=[SimpleNamespace(follow_up_key=k) for k in keys],
                               follow_ups=lambda: [[i] for i in range(len(keys))])

    p = np.array([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 0.0, 1.0]])
    out = prior_inputs.survival_risk_summary(model("survival4"), cases("a", "b", "c"), p)
    assert out["risk"] == {"a": 1.0, "b": 0.5, "c": 0.0} and out["from"] == "class probabilities from a prior"
    two = prior_inputs.survival_risk_summary(model("survival2"), cases("a"), np.array([[0.7, 0.3]]))
    assert np.isclose(two["risk"]["a"], 0.7)  # P(survival shorter than the training median)
    assert "not available" in prior_inputs.survival_risk_summary(model("survival2"), cases("a"), None)["status"]


def _cox_data(seed: int, n: int = 150):
    """Exponential survival with log hazard 1.0 x0 - 0.5 x1 (x2 noise), censored at random."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    t = rng.exponential(1.0 / np.exp(x[:, 0] - 0.5 * x[:, 1]))
    c = rng.exponential(2.0, size=n)
    return x, np.minimum(t, c), (t <= c).astype(float)


def test_cox_survival_risk_recovers_the_hazard_ranking_and_round_trips():
    from oncodiff.outcomes.cross_validation import concordance
    from oncodiff.outcomes.survival_risk import SurvivalRisk

    x, time, event = _cox_data(10)
    prior = ClassPrior.fit(x, (x[:, 0] > 0).astype(int), 2)
    risk = SurvivalRisk.fit(np.repeat(x, 2, axis=0), np.repeat(time, 2), np.repeat(event, 2),
                            np.repeat(np.arange(150), 2), prior)  # two rows per patient count once
    assert risk.n_patients == 150 and risk.n_events == int(event.sum()) and risk.inputs == prior.inputs
    beta = np.asarray(risk.coef) / np.asarray(risk.scale)  # per unit of x
    assert beta[0] > 0.6 and beta[1] < -0.25 and abs(beta[2]) < 0.25
    x_new, t_new, e_new = _cox_data(11)
    assert concordance(t_new, risk.log_hazard(x_new), e_new) > 0.65
    assert abs(risk.log_hazard(x).mean()) < 1e-9  # 0 = the average training patient
    assert SurvivalRisk.from_dict(risk.to_dict()) == risk


def test_a_feature_constant_over_first_rows_gets_no_cox_weight_and_no_warning():
    """A patient's first follow-up has no earlier scan, so its interim features are constant there: the Cox model
    gives them coefficient 0 instead of an ill-posed fit with lifelines' warnings in the user's output."""
    import warnings

    from oncodiff.outcomes.survival_risk import SurvivalRisk

    x, time, event = _cox_data(10)
    with_constant = np.concatenate([x, np.zeros((len(x), 1))], axis=1)
    prior = ClassPrior.fit(with_constant, (x[:, 0] > 0).astype(int), 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        risk = SurvivalRisk.fit(with_constant, time, event, np.arange(len(x)), prior)
    assert risk.coef[-1] == 0.0 and risk.coef[0] != 0.0
    assert np.allclose(risk.log_hazard(with_constant), SurvivalRisk.fit(x, time, event, np.arange(len(x)),
                                                                        ClassPrior.fit(x, (x[:, 0] > 0).astype(int), 2)
                                                                        ).log_hazard(x))


def test_no_cox_model_for_a_base_rate_prior_or_too_few_events():
    from oncodiff.outcomes.survival_risk import SurvivalRisk

    x, time, event = _cox_data(12, 40)
    groups = np.arange(40)
    base = ClassPrior.select({CLINICAL: np.zeros((40, 1))}, (np.arange(40) % 2), 2, groups=groups)
    assert base.inputs == BASE_RATE and SurvivalRisk.fit(x, time, event, groups, base) is None
    prior = ClassPrior.fit(x, (x[:, 0] > 0).astype(int), 2)
    one_event = np.zeros(40)
    one_event[0] = 1
    assert SurvivalRisk.fit(x, time, one_event, groups, prior) is None


def _signal_sets(seed: int, n: int, strength: float):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = (strength * x[:, 0] + rng.normal(size=n) > 0).astype(int)
    return {CLINICAL: x}, y


def test_nested_cv_gain_is_positive_for_a_signal_and_not_for_noise():
    from oncodiff.outcomes import class_prior

    for strength, positive in ((3.0, True), (0.0, False)):
        sets, y = _signal_sets(8, 80, strength)
        standardised = {k: class_prior._standardised(v) for k, v in sets.items()}
        groups = np.arange(len(y))
        splits, _ = class_prior.grouped_folds(y, groups, 0)
        gain = class_prior._nested_gain(standardised, y, 2, splits, 0, groups)
        assert (gain > 0.05) if positive else (gain < 0.02), (strength, gain)


def test_a_choice_that_loses_in_nested_cv_gives_way_to_the_base_rate(monkeypatch):
    from oncodiff.outcomes import class_prior

    sets, y = _signal_sets(9, 80, 3.0)
    chosen = ClassPrior.select(sets, y, 2, groups=np.arange(80))
    assert chosen.inputs == CLINICAL and "nested-CV gain over the base rate +" in chosen.c_selection
    monkeypatch.setattr(class_prior, "_nested_gain", lambda *args: -0.01)
    kept = ClassPrior.select(sets, y, 2, groups=np.arange(80))
    assert kept.inputs == BASE_RATE and kept.c_selection.endswith("-0.010 nats, so the base rate")
    np.testing.assert_allclose(kept.probabilities(sets[CLINICAL][:2])[:, 1], y.mean())
