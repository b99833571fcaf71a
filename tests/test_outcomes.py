"""Outcome heads, the Cox loss, metrics and patient-grouped cross-validation (oncodiff.outcomes)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.utils import concordance_index

from oncodiff.cohort.schema import ClinicalVariable
from oncodiff.config import EvaluationConfig
from oncodiff.data.clinical import clinical_design_matrix
from oncodiff.outcomes.cnn import CNNOptions
from oncodiff.outcomes.cross_validation import RESPONDER, concordance, response_metrics
from oncodiff.outcomes.folds import make_folds
from oncodiff.outcomes.heads import HeadOptions, cross_validate_response, cross_validate_survival
from oncodiff.outcomes.survival_curves import kaplan_meier_by_risk, plot_kaplan_meier
from oncodiff.outcomes.networks import CoxHead, ResponseHead, cox_partial_likelihood

FAST = HeadOptions(epochs=100, hidden=16)


def _cox_data(n, seed, beta=(0.8, -0.5, 0.3), ties=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(beta)))
    time = rng.exponential(1.0 / np.exp(x @ np.asarray(beta)))
    censor = rng.exponential(2.0, size=n)
    event = (time <= censor).astype(float)
    time = np.minimum(time, censor)
    if ties:
        time = np.ceil(time * 4) / 4
    return x, time, event


# ------------------------------------------------------------------ heads and the Cox loss


def test_heads_shapes_and_argument_checks():
    features = torch.randn(5, 7)
    assert ResponseHead(7)(features).shape == (5,)
    assert CoxHead(7, hidden=0)(features).shape == (5,)
    with pytest.raises(ValueError, match="dropout"):
        ResponseHead(7, dropout=1.0)
    with pytest.raises(ValueError, match="hidden"):
        CoxHead(7, hidden=-1)
    with pytest.raises(ValueError, match="in_features"):
        CoxHead(0)


def test_cox_loss_fits_lifelines_coefficients_and_likelihood():
    x, time, event = _cox_data(150, seed=1)
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(time=time, event=event)
    reference = CoxPHFitter(penalizer=0.0).fit(frame, "time", "event")

    head = CoxHead(3, hidden=0, dropout=0.0).double()
    xt, tt, et = (torch.as_tensor(a, dtype=torch.float64) for a in (x, time, event))
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=200, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = cox_partial_likelihood(head(xt), tt, et)
        loss.backward()
        return loss

    optimizer.step(closure)
    fitted = head.net[1].weight.detach().numpy().ravel()
    np.testing.assert_allclose(fitted, reference.params_.to_numpy(), atol=1e-4)
    # The loss is the negative partial log-likelihood averaged over events (no ties: Breslow = Efron).
    at_reference = torch.as_tensor(x @ reference.params_.to_numpy())
    loss = cox_partial_likelihood(at_reference, tt, et).item()
    assert loss == pytest.approx(-reference.log_likelihood_ / event.sum(), rel=1e-8)


def test_cox_loss_breslow_ties_match_the_definition():
    x, time, event = _cox_data(40, seed=2, ties=True)
    assert len(np.unique(time)) < len(time)  # the case has tied times
    log_risk = np.random.default_rng(3).normal(size=40)
    terms = [log_risk[i] - np.log(np.exp(log_risk[time >= time[i]]).sum()) for i in np.flatnonzero(event)]
    expected = -np.mean(terms)
    got = cox_partial_likelihood(*(torch.as_tensor(a) for a in (log_risk, time, event))).item()
    assert got == pytest.approx(expected, rel=1e-10)


def test_cox_loss_without_events_is_zero_with_zero_gradient():
    log_risk = torch.randn(6, requires_grad=True)
    loss = cox_partial_likelihood(log_risk, torch.arange(6.0), torch.zeros(6))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(log_risk.grad, torch.zeros(6))
    with pytest.raises(ValueError, match="NaN"):
        cox_partial_likelihood(torch.zeros(2), torch.tensor([1.0, float("nan")]), torch.ones(2))


# ------------------------------------------------------------------ metrics


def test_concordance_matches_a_hand_computed_case():
    # Admissible pairs (earlier time has an event): (0,1) (0,2) (0,3) (1,2) (1,3) -> 5.
    # risk 4 beats 1, 1, 2 -> 3 concordant; risk 1 ties 1 (0.5) and loses to 2 -> 3.5 / 5.
    time, event, risk = [1, 2, 3, 4], [1, 1, 0, 1], [4.0, 1.0, 1.0, 2.0]
    assert concordance(time, risk, event) == pytest.approx(0.7)
    assert concordance([1, 2], [1.0, 0.0], [0, 0]) is None  # no event: no admissible pair


def test_concordance_matches_brute_force_pair_count_with_ties():
    rng = np.random.default_rng(4)
    time = rng.integers(1, 8, size=30).astype(float)
    event = rng.integers(0, 2, size=30)
    risk = rng.integers(0, 4, size=30).astype(float)
    concordant = pairs = 0.0
    for i in range(30):
        for j in range(30):
            # Harrell: i had the event first; a subject censored at i's time counts as outliving it
            if event[i] and (time[i] < time[j] or (time[i] == time[j] and not event[j])):
                pairs += 1
                concordant += 1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0
    assert concordance(time, risk, event) == pytest.approx(concordant / pairs)
    assert concordance(time, risk, event) == pytest.approx(concordance_index(time, -risk, event))


def test_predicting_responders_as_one_gives_recall_one_never_inverted():
    labels = np.array([1, 1, 0, 0, 0, 0])
    metrics = response_metrics(labels, probability=labels.astype(float))
    assert metrics == {"balanced_accuracy": 1.0, "f1": 1.0, "precision": 1.0, "recall": 1.0, "auc": 1.0}
    inverted = response_metrics(labels, probability=1.0 - labels)
    assert inverted["recall"] == 0.0 and inverted["auc"] == 0.0
    partial = response_metrics(labels, np.array([0.9, 0.2, 0.7, 0.1, 0.1, 0.1]))
    assert partial["recall"] == 0.5 and partial["precision"] == 0.5
    assert partial["balanced_accuracy"] == pytest.approx((0.5 + 0.75) / 2)


@pytest.mark.parametrize("model", ["head", "logistic"])
def test_cross_validation_never_inverts_labels(model):
    labels = np.array([1, 0, 0, 0] * 10)  # responders are the minority and come first
    features = labels[:, None] + 0.01 * np.random.default_rng(13).normal(size=(40, 2))
    result = cross_validate_response(features, labels, np.arange(40), folds=5, seed=0, model=model, options=FAST)
    assert result.pooled["recall"] == 1.0 and result.pooled["precision"] == 1.0
    assert (result.oof[labels == RESPONDER] > 0.5).all()


def test_response_metrics_on_a_single_class_are_none_not_a_crash():
    metrics = response_metrics(np.zeros(4, dtype=int), np.array([0.1, 0.2, 0.3, 0.4]))
    assert metrics["auc"] is None and metrics["balanced_accuracy"] is None and metrics["recall"] is None
    assert metrics["precision"] is None  # nothing predicted a responder


# ------------------------------------------------------------------ folds


def test_folds_are_grouped_by_patient_stratified_and_seeded():
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(40), 3)  # three lesions per patient
    labels = np.repeat(rng.integers(0, 2, size=40), 3)
    folds = make_folds(labels, groups, folds=5, seed=0)
    assert len(folds) == 5
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested) == list(range(120))
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        assert 0 < labels[test].mean() < 1
    again = make_folds(labels, groups, folds=5, seed=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    other = make_folds(labels, groups, folds=5, seed=1)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, other))
    with pytest.raises(ValueError, match="at least 5 patients"):
        make_folds(labels[:9], groups[:9], folds=5, seed=0)


# ------------------------------------------------------------------ response cross-validation


@pytest.mark.parametrize("model", ["head", "logistic"])
def test_response_cv_separable_is_near_one_and_keeps_patients_apart(model):
    rng = np.random.default_rng(6)
    groups = np.repeat(np.arange(40), 2)
    labels = np.repeat((np.arange(40) % 3 == 0).astype(int), 2)  # imbalanced: a third respond
    features = rng.normal(size=(80, 6))
    features[:, 2] += 6.0 * labels
    result = cross_validate_response(features, labels, groups, folds=5, seed=0, model=model, options=FAST)
    assert result.task == "response" and result.model == model and len(result.per_fold) == 5
    assert result.mean["balanced_accuracy"] > 0.9 and result.mean["recall"] > 0.9
    assert result.pooled["auc"] > 0.97
    assert result.oof.shape == (80,) and not np.isnan(result.oof).any()
    for patient in range(40):
        assert len(set(result.test_fold[groups == patient])) == 1
    assert set(result.formatted()) == {"balanced_accuracy", "f1", "precision", "recall", "auc"}


@pytest.mark.parametrize("model", ["head", "logistic"])
def test_response_cv_random_labels_is_near_half(model):
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, size=200)
    result = cross_validate_response(rng.normal(size=(200, 5)), labels, np.arange(200), folds=5, seed=0,
                                     model=model, options=FAST)
    assert abs(result.pooled["balanced_accuracy"] - 0.5) < 0.12
    assert abs(result.mean["auc"] - 0.5) < 0.12


@pytest.mark.filterwarnings("ignore:The least populated class:UserWarning")
def test_response_cv_degenerate_folds_and_unknown_labels():
    labels = np.array([1, 1] + [0] * 17 + [-1])  # two responders: three test folds hold none
    features = np.random.default_rng(8).normal(size=(20, 3))
    features[:, 0] += 3.0 * (labels == 1)
    result = cross_validate_response(features, labels, np.arange(20), folds=5, seed=0, model="logistic")
    assert result.undefined["auc"] == 3 and result.undefined["recall"] == 3
    assert sum(fold["auc"] is None for fold in result.per_fold) == 3
    assert result.mean["auc"] is not None
    assert np.isnan(result.oof[-1]) and result.test_fold[-1] == -1
    # one responder: the fold holding it out trains on non-responders only
    single = cross_validate_response(features[1:], labels[1:], np.arange(19), folds=5, seed=0, model="logistic")
    assert len(single.notes) == 1 and "one class" in single.notes[0]
    result_dict = json.loads(json.dumps(single.to_dict()))
    assert result_dict["oof"][-1] is None and len(result_dict["per_fold"]) == 5


def test_response_cv_rejects_bad_input():
    with pytest.raises(ValueError, match="labels must be"):
        cross_validate_response(np.zeros((4, 2)), np.array([0, 1, 2, 1]), np.arange(4))
    with pytest.raises(ValueError, match="both responders"):
        cross_validate_response(np.zeros((4, 2)), np.zeros(4, dtype=int), np.arange(4))
    with pytest.raises(ValueError, match="response model"):
        cross_validate_response(np.zeros((4, 2)), np.array([0, 1, 0, 1]), np.arange(4), model="svm")
    with pytest.raises(ValueError, match="NaN"):
        cross_validate_response(np.full((4, 2), np.nan), np.array([0, 1, 0, 1]), np.arange(4))


# ------------------------------------------------------------------ survival cross-validation


@pytest.mark.parametrize("model", ["cox_head", "coxph"])
def test_survival_cv_finds_the_signal_and_skips_unknowns(model):
    x, time, event = _cox_data(100, seed=9, beta=(1.5, 0.0, 0.0))
    time[:3] = np.nan
    result = cross_validate_survival(x, time, event, np.arange(100) // 2, folds=5, seed=0, model=model,
                                     options=FAST)
    assert result.task == "survival" and result.undefined == {"c_index": 0}
    assert result.mean["c_index"] > 0.7 and result.pooled["c_index"] > 0.7
    assert np.isnan(result.oof[:3]).all() and (result.test_fold[:3] == -1).all()
    assert not np.isnan(result.oof[3:]).any()


def test_survival_cv_clinical_baseline_on_encoded_variables():
    rng = np.random.default_rng(10)
    n = 80
    stage = rng.integers(0, 3, size=n).astype(float)
    age = rng.normal(size=n)
    missing = np.column_stack([rng.random(n) < 0.1, np.zeros(n, dtype=bool)])
    values = np.column_stack([np.where(missing[:, 0], 0.0, age), stage])
    time = rng.exponential(1.0 / np.exp(1.2 * stage))
    variables = (ClinicalVariable(name="age", type="numeric"),
                 ClinicalVariable(name="stage", type="categorical", categories=("I", "II", "III")))
    design = clinical_design_matrix(values, missing, variables)
    result = cross_validate_survival(design, time, np.ones(n), np.arange(n), model="coxph")
    assert result.mean["c_index"] > 0.65


# ------------------------------------------------------------------ Kaplan-Meier


def test_kaplan_meier_by_risk_matches_lifelines_and_separates_groups():
    x, time, event = _cox_data(120, seed=11, beta=(2.0, 0.0, 0.0))
    risk = 2.0 * x[:, 0]
    risk[0] = np.nan
    km = kaplan_meier_by_risk(time, event, risk)
    low, high = km.curves
    assert (low.label, high.label) == ("low risk", "high risk") and low.n + high.n == 119
    assert km.logrank_p < 1e-4
    mask = risk[1:] > km.threshold
    reference = KaplanMeierFitter().fit(time[1:][mask], event[1:][mask])
    np.testing.assert_allclose(high.survival, reference.survival_function_.iloc[:, 0].to_numpy())
    assert (np.diff(high.survival) <= 0).all() and (high.ci_lower <= high.survival).all()
    assert (high.survival <= high.ci_upper).all()
    assert set(json.loads(json.dumps(km.to_dict()))) == {"curves", "threshold", "logrank_p"}
    equal = kaplan_meier_by_risk(time, event, np.zeros(120))
    assert len(equal.curves) == 1 and equal.logrank_p is None


def test_plot_kaplan_meier_draws_both_groups():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, time, event = _cox_data(40, seed=12)
    fig, ax = plt.subplots()
    plot_kaplan_meier(kaplan_meier_by_risk(time, event, x[:, 0]), ax)
    assert len(ax.get_lines()) == 2 and "log-rank" in ax.get_title()
    plt.close(fig)


def test_options_are_checked_and_read_from_the_config():
    with pytest.raises(ValueError, match="HeadOptions.epochs"):
        HeadOptions(epochs=0)
    with pytest.raises(ValueError, match="CNNOptions.precision"):
        CNNOptions(precision="fp8")
    config = EvaluationConfig(head_epochs=7, cnn_epochs=3)
    assert HeadOptions.from_config(config).epochs == 7 and CNNOptions.from_config(config).epochs == 3


def test_folds_problem_names_the_option_when_no_stratified_split_exists():
    """6 patients, 2 responders, 5 folds: scikit-learn has no stratified split; the reason names evaluation.folds."""
    from oncodiff.outcomes.folds import folds_problem

    small = np.array([1, 1, 0, 0, 0, 0])
    problem = folds_problem(small, 5)
    assert problem is not None and "evaluation.folds=4" in problem and "largest class has 4" in problem
    assert folds_problem(small, 4) is None
    assert folds_problem(np.array([]), 2) == "no patient has a known outcome"
    with pytest.raises(ValueError, match="Lower evaluation.folds"):
        make_folds(small, np.array([f"P{i}" for i in range(6)]), 5, seed=0)
    assert len(make_folds(small, np.array([f"P{i}" for i in range(6)]), 4, seed=0)) == 4
