"""Cohort format 2 (docs/dataset-format.md, "Format 2"): root, sequences, tumour label maps. Each test builds a
valid format-2 cohort, breaks one thing, and checks that validation names the file, row and column with a fix."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from factory import LABELS, edit_csv, edit_yaml, write_cohort, write_cohort_v2
from typer.testing import CliRunner

from oncodiff.cli import app
from oncodiff.cohort import load_cohort, read_image, validate_cohort, write_image

# write_cohort_v2(n_patients=2): scans.csv rows 1 P001 pre, 2 P001 week6, 3 P002 pre, 4 P002 week6;
# columns image:t1c (primary), image:t2, image:flair, tumor_labels (necrosis 1, oedema 2, enhancing 3).


@pytest.fixture
def cohort(tmp_path) -> Path:
    return write_cohort_v2(tmp_path / "cohort")


def only_problem(root: Path, file: str, row, column, text: str):
    problems = validate_cohort(root)
    assert len(problems) == 1, "\n".join(map(str, problems))
    problem = problems[0]
    assert (problem.file, problem.row, problem.column) == (file, row, column), str(problem)
    assert text in problem.message and problem.fix, str(problem)
    return problem


def test_valid_format2_cohorts(tmp_path):
    assert validate_cohort(write_cohort_v2(tmp_path / "c2")) == []
    assert validate_cohort(write_cohort_v2(tmp_path / "c3", dims=3)) == []
    assert validate_cohort(write_cohort_v2(tmp_path / "masks", label_maps=False)) == []
    assert validate_cohort(write_cohort_v2(tmp_path / "one", sequences=("t1c",))) == []


def test_loaded_cohort_reads_primary_and_tumour_union(tmp_path):
    reference = write_cohort(tmp_path / "v1", n_patients=2)
    cohort = load_cohort(write_cohort_v2(tmp_path / "v2"))
    assert cohort.spec.format == 2 and cohort.spec.primary_sequence == "t1c"
    assert list(cohort.scans["image"]) == list(cohort.scans["image:t1c"])
    row = cohort.scans.iloc[0]
    assert cohort.sequence_paths(row) == {"t1c": "P001/pre.nii.gz", "t2": "P001/pre_t2.nii.gz",
                                          "flair": "P001/pre_flair.nii.gz"}
    tumour = cohort.tumor(row).array
    labels = read_image(cohort.path(row["tumor_labels"])).array
    assert set(np.unique(labels)) == {0, 1, 2, 3}  # oedema (2) is in the map but not in the tumour
    np.testing.assert_array_equal(tumour, read_image(reference / "P001" / "pre_gtv.nii.gz").array)
    edit_yaml(cohort.root, tumor=["necrosis", "enhancing", "oedema"])
    np.testing.assert_array_equal(load_cohort(cohort.root).tumor(row).array, labels > 0)


def test_primary_is_named_sequence(tmp_path):
    root = write_cohort_v2(tmp_path / "c", sequences=("t1", "t1c"))
    edit_yaml(root, primary="t1c")
    scans = pd.read_csv(root / "scans.csv")
    scans = scans.rename(columns={"image:t1": "image:t1c", "image:t1c": "image:t1"})
    scans.to_csv(root / "scans.csv", index=False)
    cohort = load_cohort(root)
    assert cohort.spec.image_columns() == ("image:t1c", "image:t1")
    assert list(cohort.scans["image"]) == list(scans["image:t1c"])


def test_root_outside_the_cohort(tmp_path):
    root = write_cohort_v2(tmp_path / "cohort", image_root=tmp_path / "Imaging")
    assert not (root / "P001").exists() and (tmp_path / "Imaging" / "P001" / "pre.nii.gz").is_file()
    assert validate_cohort(root) == []
    cohort = load_cohort(root)
    assert cohort.data_root == (tmp_path / "Imaging").resolve()
    assert cohort.path("P001/pre.nii.gz") == (tmp_path / "Imaging" / "P001" / "pre.nii.gz").resolve()
    assert cohort.tumor(cohort.scans.iloc[0]).array.any()


def test_root_that_is_not_a_folder(tmp_path):
    root = write_cohort_v2(tmp_path / "cohort", image_root=tmp_path / "Imaging")
    edit_yaml(root, root="../Imagin")
    only_problem(root, "cohort.yaml", None, None, "'../Imagin' is not a folder")


def test_path_climbing_out_of_root(tmp_path):
    root = write_cohort_v2(tmp_path / "cohort", image_root=tmp_path / "Imaging")
    edit_csv(root, "scans.csv", 2, "image:t2", "../cohort/scans.csv")
    problem = only_problem(root, "scans.csv", 2, "image:t2", "climbs out of 'root'")
    assert "'root'" in problem.fix


@pytest.mark.parametrize("changes, text", [
    ({"format": 1}, "need format 2"),
    ({"format": 3}, "format 3 is not supported"),
    ({"primary": "t1"}, "primary 't1' is not one of the sequences"),
    ({"sequences": ["t1c", "t2", "t2", "flair"]}, "sequences listed twice: t2"),
    ({"sequences": ["t1c", "t2/x", "flair"]}, "sequence names"),
    ({"tumor": ["necrosis", "tumour"]}, "tumor names ['tumour']"),
    ({"labels": {"necrosis": 1, "oedema": 1, "enhancing": 3}}, "label values used by two names: [1]"),
    ({"labels": {"necrosis": 0, "oedema": 2, "enhancing": 3}}, "positive integers"),
])
def test_cohort_yaml_format2_keys(cohort, changes, text):
    edit_yaml(cohort, **changes)
    problems = validate_cohort(cohort)
    assert problems and all(p.file == "cohort.yaml" for p in problems), "\n".join(map(str, problems))
    assert any(text in p.message for p in problems), "\n".join(map(str, problems))


def test_format1_without_new_keys_reads_as_before(tmp_path):
    root = write_cohort(tmp_path / "v1", n_patients=2)
    cohort = load_cohort(root)
    assert cohort.spec.format == 1 and cohort.spec.image_columns() == ("image",) and cohort.data_root == root.resolve()
    assert cohort.sequence_paths(cohort.scans.iloc[0]) == {"image": "P001/pre.nii.gz"}


def test_missing_primary_column(cohort):
    scans = pd.read_csv(cohort / "scans.csv").drop(columns="image:t1c")
    scans.to_csv(cohort / "scans.csv", index=False)
    only_problem(cohort, "scans.csv", None, "image:t1c", "has no column 'image:t1c'")


def test_missing_sequence_column(cohort):
    pd.read_csv(cohort / "scans.csv").drop(columns="image:flair").to_csv(cohort / "scans.csv", index=False)
    only_problem(cohort, "scans.csv", None, "image:flair", "has no column 'image:flair'")


def test_unlisted_sequence_column(cohort):
    edit_yaml(cohort, sequences=["t1c", "t2"])
    only_problem(cohort, "scans.csv", None, "image:flair", "'sequences' does not list it")


def test_image_column_beside_sequences(cohort):
    scans = pd.read_csv(cohort / "scans.csv")
    scans["image"] = scans["image:t1c"]
    scans.to_csv(cohort / "scans.csv", index=False)
    only_problem(cohort, "scans.csv", None, "image", "replace it")


def test_sequence_columns_without_sequences(tmp_path):
    root = write_cohort(tmp_path / "v1", n_patients=2)
    scans = pd.read_csv(root / "scans.csv")
    scans["image:t2"] = scans["image"]
    scans.to_csv(root / "scans.csv", index=False)
    only_problem(root, "scans.csv", None, "image:t2", "lists no 'sequences'")


def test_primary_image_required_on_every_row(cohort):
    edit_csv(cohort, "scans.csv", 2, "image:t1c", "")
    only_problem(cohort, "scans.csv", 2, "image:t1c", "has no image of its primary sequence")


def test_missing_sequences_are_allowed_and_counted(cohort):
    edit_csv(cohort, "scans.csv", 2, "image:flair", "")
    edit_csv(cohort, "scans.csv", 4, "image:flair", "")
    edit_csv(cohort, "scans.csv", 1, "image:t2", "")
    assert validate_cohort(cohort) == []
    warnings = validate_cohort(cohort, warnings=True)
    assert all(w.warning for w in warnings) and len(warnings) == 2
    by_column = {w.column: w for w in warnings}
    assert "missing on 2 of 4 scans (rows 2, 4)" in by_column["image:flair"].message
    assert "missing on 1 of 4 scans (rows 1)" in by_column["image:t2"].message
    result = CliRunner().invoke(app, ["validate", str(cohort), "--no-check-alignment"])
    assert result.exit_code == 0 and "sequence 'flair' is missing on 2 of 4 scans" in result.output


def test_both_tumour_columns_on_one_row(cohort):
    scans = pd.read_csv(cohort / "scans.csv", dtype=str, keep_default_na=False)
    scans["tumor_mask"] = ""
    scans.loc[2, "tumor_mask"] = scans.loc[2, "tumor_labels"]  # row 3: P002's baseline
    scans.to_csv(cohort / "scans.csv", index=False)
    problems = validate_cohort(cohort)
    assert any(p.row == 3 and p.column == "tumor_labels" and "both" in p.message for p in problems), problems


def test_baseline_without_tumour(cohort):
    edit_csv(cohort, "scans.csv", 3, "tumor_labels", "")
    only_problem(cohort, "scans.csv", 3, "tumor_labels", "the baseline scan has no tumor_labels")


def test_followup_without_tumour_is_valid(cohort):
    edit_csv(cohort, "scans.csv", 2, "tumor_labels", "")
    assert validate_cohort(cohort) == []


def test_label_value_not_named(cohort):
    labels = read_image(cohort / "P002" / "week6_seg.nii.gz")
    write_image(np.where(labels.array == 2, 5, labels.array).astype(np.uint8), labels, cohort / "P002" / "week6_seg.nii.gz")
    only_problem(cohort, "scans.csv", 4, "tumor_labels", "has values [5] that cohort.yaml's 'labels' does not name")


def test_label_map_that_is_not_integer(cohort):
    labels = read_image(cohort / "P001" / "week6_seg.nii.gz")
    write_image(labels.array * 0.5, labels, cohort / "P001" / "week6_seg.nii.gz")
    only_problem(cohort, "scans.csv", 2, "tumor_labels", "is not a label map")


def test_baseline_label_map_without_tumour_labels(cohort):
    labels = read_image(cohort / "P001" / "pre_seg.nii.gz")
    write_image(np.where(labels.array > 0, 2, 0).astype(np.uint8), labels, cohort / "P001" / "pre_seg.nii.gz")
    only_problem(cohort, "scans.csv", 1, "tumor_labels", "marks no tumour")


def test_label_map_on_another_grid(cohort):
    labels = read_image(cohort / "P001" / "week6_seg.nii.gz")
    write_image(labels.array[:-2], labels, cohort / "P001" / "week6_seg.nii.gz")
    only_problem(cohort, "scans.csv", 2, "tumor_labels", "has shape (30, 32), but its image has shape (32, 32)")


def test_label_maps_without_labels_in_yaml(cohort):
    data = yaml.safe_load((cohort / "cohort.yaml").read_text())
    del data["labels"], data["tumor"]
    (cohort / "cohort.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    problems = validate_cohort(cohort)
    assert any(p.column == "tumor_labels" and "names no 'labels'" in p.message for p in problems), problems


def test_labels_constant_matches_factory():
    assert LABELS == {"necrosis": 1, "oedema": 2, "enhancing": 3}


def test_preprocessing_reads_label_maps_and_root_like_masks(tmp_path):
    """A format-2 cohort (label maps, images under root) preprocesses to the format-1 cohort's samples: its
    tumour (necrosis + enhancing) is write_cohort's mask, and its primary sequence is write_cohort's image."""
    from oncodiff.config import DataConfig
    from oncodiff.data import preprocess_cohort

    config = DataConfig(crop_size=(16, 16))
    v1 = preprocess_cohort(write_cohort(tmp_path / "v1", n_patients=2), config, cache_dir=tmp_path / "cache")
    v2 = preprocess_cohort(write_cohort_v2(tmp_path / "v2", image_root=tmp_path / "Imaging"), config,
                           cache_dir=tmp_path / "cache")
    assert not v2.cache_hit and v2.cache_path != v1.cache_path
    for key in ("pre", "post", "tumor_mask", "post_mask"):
        np.testing.assert_array_equal(v2.arrays[key], v1.arrays[key])
