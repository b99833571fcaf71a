"""The outcome models' one standardisation (outcomes/scaling.py) and one fold engine (outcomes/folds.py)."""

import numpy as np

from oncodiff.outcomes import class_prior
from oncodiff.outcomes.folds import folds_for, make_folds
from oncodiff.outcomes.scaling import Standardisation, standardise


def test_standardisation_zscores_with_the_training_statistics_and_flags_constant_columns():
    train = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [5.0, 5.0, 6.0]])
    scaling = Standardisation.fit(train)
    np.testing.assert_allclose(scaling(train).mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(scaling(train)[:, [0, 2]].std(0), 1.0)
    assert scaling.varying.tolist() == [True, False, True] and scaling.scale[1] == 1.0
    np.testing.assert_allclose(scaling(np.array([[3.0, 7.0, 4.0]])), [[0.0, 2.0, 0.0]])  # scale 1 kept, not dropped


def test_a_fold_drops_the_columns_constant_on_its_training_part():
    train = np.array([[1.0, 5.0], [3.0, 5.0]])
    z_train, z_test = standardise(train, np.array([[2.0, 9.0]]))
    assert z_train.shape == (2, 1) and z_test.tolist() == [[0.0]]


def test_the_class_prior_cross_validates_on_the_one_fold_engine():
    labels = np.array([0, 1] * 12)
    patients = np.repeat(np.arange(12), 2)  # two rows per patient, one of each class
    splits, folds = class_prior.grouped_folds(labels, patients, seed=3)
    assert folds == folds_for(labels, patients, class_prior.CV_FOLDS, class_prior.MIN_PATIENTS_PER_CLASS) == 5
    for (train, test), (train_ref, test_ref) in zip(splits, make_folds(labels, patients, folds, seed=3)):
        np.testing.assert_array_equal(test, test_ref)
        assert not set(patients[train]) & set(patients[test])  # no patient on both sides
    assert class_prior.grouped_folds(labels[:6], patients[:6], seed=3) == (None, 1)  # 3 patients per class
