"""Clinical encoding (train-split statistics, explicit missing flags, counterfactuals) and outcome labels."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from oncodiff.cohort import load_cohort
from oncodiff.cohort.schema import ClinicalVariable, CohortSpec
from oncodiff.data import ClinicalEncoder, SurvivalClasses, patient_outcomes
from oncodiff.data.clinical import clinical_design_matrix

VARIABLES = (
    ClinicalVariable(name="age", type="numeric"),
    ClinicalVariable(name="sex", type="categorical", categories=("F", "M")),
    ClinicalVariable(name="nlr", type="numeric", group="blood"),
)


def patients_table():
    table = pd.DataFrame({
        "patient_id": ["A", "B", "C", "D", "E"],
        "age": [40.0, 50.0, 60.0, np.nan, 500.0],  # E (not in training) is an outlier
        "sex": ["F", "M", np.nan, "F", "M"],
        "nlr": [1.0, 3.0, np.nan, 2.0, 9.0],
    })
    return table.set_index("patient_id", drop=False)


def test_numeric_variables_are_standardised_with_training_statistics_only():
    encoder = ClinicalEncoder.fit(VARIABLES, patients_table(), train_ids=["A", "B", "C", "D"])
    assert encoder.mean["age"] == pytest.approx(50.0)  # D is missing: not a zero, not counted
    assert encoder.std["age"] == pytest.approx(np.std([40, 50, 60]))
    assert encoder.mean["nlr"] == pytest.approx(2.0) and encoder.std["nlr"] == pytest.approx(np.std([1, 3, 2]))
    values, missing = encoder.encode_patients(patients_table(), ["E", "A"])
    np.testing.assert_allclose(values[0], [(500 - 50) / np.std([40, 50, 60]), 1.0, (9 - 2) / np.std([1, 3, 2])],
                               rtol=1e-6)
    assert values.dtype == np.float32 and missing.dtype == bool and not missing.any()


def test_missing_cells_are_flagged_never_imputed():
    encoder = ClinicalEncoder.fit(VARIABLES, patients_table(), ["A", "B", "C"])
    values, missing = encoder.encode_patients(patients_table(), ["C", "D"])
    np.testing.assert_array_equal(missing, [[False, True, True], [True, False, False]])
    assert values[0, 1] == 0.0 and values[0, 2] == 0.0 and values[1, 0] == 0.0
    assert values[1, 1] == 0.0  # F is category 0: the flag, not the value, tells it apart from missing


def test_counterfactual_overrides_and_their_errors():
    encoder = ClinicalEncoder.fit(VARIABLES, patients_table(), ["A", "B", "C"])
    row = patients_table().loc["A"].to_dict()
    values, missing = encoder.encode(row, overrides={"clinical.sex": "M", "age": 70})
    assert values[1] == 1.0 and values[0] == pytest.approx((70 - 50) / np.std([40, 50, 60]))
    values, missing = encoder.encode(row, overrides={"nlr": ""})
    assert missing[2] and values[2] == 0.0
    with pytest.raises(ValueError, match=r"clinical.sex='X' is not a category of sex; choose one of F, M"):
        encoder.encode(row, overrides={"sex": "X"})
    with pytest.raises(ValueError, match="no such clinical variable; the model knows age, sex, nlr"):
        encoder.encode(row, overrides={"clinical.weight": 80})
    with pytest.raises(ValueError, match="age is numeric; give a number"):
        encoder.encode(row, overrides={"age": "old"})


def test_encoder_round_trips_through_json():
    encoder = ClinicalEncoder.fit(VARIABLES, patients_table(), ["A", "B", "C"])
    again = ClinicalEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    table = patients_table()
    for a, b in zip(encoder.encode_patients(table, list(table.index)), again.encode_patients(table, list(table.index))):
        np.testing.assert_array_equal(a, b)


def test_constant_or_absent_training_values_do_not_divide_by_zero():
    table = patients_table()
    encoder = ClinicalEncoder.fit(VARIABLES, table, ["A"])
    assert encoder.std["age"] == 1.0
    encoder = ClinicalEncoder.fit(VARIABLES, table, ["C"])  # C has no nlr
    assert encoder.mean["nlr"] == 0.0 and encoder.std["nlr"] == 1.0
    assert np.isfinite(encoder.encode_patients(table, list(table.index))[0]).all()


def test_survival_classes_from_training_quartiles():
    classes = SurvivalClasses.fit([100.0, 200.0, 300.0, 400.0, math.nan])
    assert classes.median == 250.0 and classes.quartiles == (175.0, 250.0, 325.0)
    assert classes.classify(260.0, 1.0) == (1, 2)
    assert classes.classify(100.0, 1.0) == (0, 0)
    assert classes.classify(100.0, 0.0) == (-1, -1)  # censored early: could still be a long survivor
    assert classes.classify(400.0, 0.0) == (1, 3)  # censored beyond every threshold: certainly long
    assert classes.classify(math.nan, 1.0) == (-1, -1)
    assert SurvivalClasses.from_dict(json.loads(json.dumps(classes.to_dict()))) == classes
    empty = SurvivalClasses.fit([])
    assert empty.classify(10.0, 1.0) == (-1, -1)
    assert SurvivalClasses.from_dict(json.loads(json.dumps(empty.to_dict()))).classify(1.0, 1.0) == (-1, -1)


def test_patient_outcomes_from_the_cohort(tiny_cohort_2d):
    cohort = load_cohort(tiny_cohort_2d)
    outcomes = patient_outcomes(cohort.patients, cohort.spec)
    assert list(outcomes["response"]) == [1, 0, 1, 0, 1, 0]
    np.testing.assert_array_equal(outcomes["survival_event"], [0, 1, 1, 0, 1, 1])
    assert outcomes["survival_time"].notna().all()
    table = pd.DataFrame({"patient_id": ["A", "B"], "response": ["responder", np.nan]}).set_index("patient_id")
    spec = CohortSpec(outcomes={"response": {"column": "response", "positive": "responder"}})
    assert list(patient_outcomes(table, spec)["response"]) == [1, -1]
    assert patient_outcomes(table, CohortSpec())["survival_time"].isna().all()


def test_clinical_design_matrix_one_hot_and_missing_indicators():
    variables = (ClinicalVariable(name="age", type="numeric"),
                 ClinicalVariable(name="sex", type="categorical", categories=("F", "M")))
    values = np.array([[0.5, 1.0], [0.0, 0.0], [-1.0, 0.0]])
    missing = np.array([[False, False], [True, True], [False, False]])
    design = clinical_design_matrix(values, missing, variables)
    # columns: age, age missing, sex=F, sex=M, sex missing
    np.testing.assert_array_equal(design, [[0.5, 0, 0, 1, 0], [0, 1, 0, 0, 1], [-1, 0, 1, 0, 0]])
    assert clinical_design_matrix(values, missing).shape == (3, 4)  # all numeric
    with pytest.raises(ValueError, match="category codes"):
        clinical_design_matrix(np.array([[0.0, 2.0]]), np.zeros((1, 2), dtype=bool), variables)
