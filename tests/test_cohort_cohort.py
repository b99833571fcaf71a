import numpy as np

from oncodiff.cohort import load_cohort, read_image


def test_tiny_cohort_loads_with_pairs(tiny_cohort_2d):
    cohort = load_cohort(tiny_cohort_2d)
    pairs = cohort.pairs()
    assert len(pairs) == 6
    assert set(pairs.columns) >= {"patient_id", "lesion_id", "timepoint", "image", "pre_image", "pre_tumor_mask"}
    img = read_image(cohort.path(pairs.iloc[0]["pre_image"]))
    assert img.shape == (32, 32) and np.allclose(img.spacing, (1.0, 1.0))
    assert cohort.dims == 2
    assert cohort.spec.groups == ("demographics", "blood")


def test_3d_cohort(tiny_cohort_3d):
    assert load_cohort(tiny_cohort_3d).dims == 3
