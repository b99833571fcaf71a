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


def _age(root, seconds=60):
    """Move every file of a cohort ``seconds`` into the past, so its validation may be remembered (RACY_SECONDS)."""
    import os
    import time

    past = time.time_ns() - int(seconds * 1e9)
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(past, past))


def _count_reads(monkeypatch):
    import oncodiff.cohort.validate as validate

    reads = []
    real = validate.read_image
    monkeypatch.setattr(validate, "read_image", lambda path, *a, **k: reads.append(path) or real(path, *a, **k))
    return reads


def test_validation_is_remembered_until_a_file_changes(tiny_cohort_2d, monkeypatch):
    import os

    import pytest

    from oncodiff.errors import CohortError
    from factory import edit_csv

    _age(tiny_cohort_2d)
    reads = _count_reads(monkeypatch)
    load_cohort(tiny_cohort_2d)
    first = len(reads)
    assert first > 0
    load_cohort(tiny_cohort_2d)
    assert len(reads) == first  # nothing changed: no image read again
    image = tiny_cohort_2d / "P001" / "pre.nii.gz"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # touched: validated again
    load_cohort(tiny_cohort_2d)
    assert len(reads) == 2 * first
    _age(tiny_cohort_2d)
    load_cohort(tiny_cohort_2d)
    load_cohort(tiny_cohort_2d)
    assert len(reads) == 3 * first
    # a broken image (same name, new content) and an edited table are seen, and raise every time
    image.write_bytes(b"not an image")
    for _ in range(2):
        with pytest.raises(CohortError, match="pre.nii.gz"):
            load_cohort(tiny_cohort_2d)
    assert len(reads) == 5 * first
    write_back = tiny_cohort_2d / "P001" / "week6.nii.gz"
    edit_csv(tiny_cohort_2d, "scans.csv", 1, "image", write_back.relative_to(tiny_cohort_2d).as_posix())
    _age(tiny_cohort_2d)
    load_cohort(tiny_cohort_2d)  # valid again (row 1 now names week6's image), then remembered
    load_cohort(tiny_cohort_2d)
    assert len(reads) == 6 * first - 1  # the broken file is no longer named: one file fewer to read


def test_a_recently_written_cohort_is_validated_every_time(tiny_cohort_2d, monkeypatch):
    reads = _count_reads(monkeypatch)
    load_cohort(tiny_cohort_2d)  # written just now: a second write within the file system's clock tick could hide
    load_cohort(tiny_cohort_2d)
    assert len(reads) > 0 and len(reads) % 2 == 0 and reads[: len(reads) // 2] == reads[len(reads) // 2:]
