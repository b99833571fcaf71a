"""pipeline/cases.py: the cases predict and evaluate load."""

import torch


def test_cases_get_survival_classes_from_the_training_thresholds():
    from types import SimpleNamespace

    from oncodiff.pipeline.cases import survival_classes

    layout = SimpleNamespace(survival_classes={"median": 300.0, "quartiles": [200.0, 300.0, 400.0]})
    batch = {"patient_id": ["a", "b", "c", "d"], "survival_time": torch.tensor([100.0, 350.0, 500.0, 250.0]),
             "survival_event": torch.tensor([1.0, 1.0, 0.0, 0.0])}
    class2, class4 = survival_classes(SimpleNamespace(layout=layout), batch)
    assert class2.tolist() == [0, 1, 1, -1] and class4.tolist() == [0, 2, 3, -1]  # censored early: unknown
    unknown, _ = survival_classes(SimpleNamespace(layout=SimpleNamespace(survival_classes={})), batch)
    assert unknown.tolist() == [-1] * 4
