"""benchmarks/sequences.py: its arms, the cohort each arm reads, and the truth it scores against."""

import numpy as np
import pandas as pd
import yaml
from factory import load_benchmark

from oncodiff.cohort import load_cohort
from oncodiff.synth import synthesize

sequences = load_benchmark("sequences")


def test_one_arm_leaves_out_each_non_primary_sequence():
    assert sequences.arms() == {"all four": ("t1c", "t1", "t2", "flair"), "without t1": ("t1c", "t2", "flair"),
                                "without t2": ("t1c", "t1", "flair"), "without flair": ("t1c", "t1", "t2"),
                                "t1c only": ("t1c",)}


def test_an_arm_cohort_reads_synths_files_with_fewer_sequences(tmp_path):
    written = synthesize("brain", 2, 2, 0, tmp_path / "synth", sequences=sequences.SEQUENCES)
    folder = sequences.arm_cohort(written, tmp_path / "arm", ("t1c", "flair"))
    cohort = load_cohort(folder)
    assert list(cohort.spec.sequences) == ["t1c", "flair"] and not list(folder.glob("**/*.nii.gz"))  # nothing copied
    scans = pd.read_csv(folder / "scans.csv", dtype=str)
    assert [c for c in scans.columns if c.startswith("image:")] == ["image:t1c", "image:flair"]
    assert yaml.safe_load((written / "cohort.yaml").read_text())["sequences"] == list(sequences.SEQUENCES)  # as written

    truth = sequences.SequenceTruth(written)
    patient = truth.follow_ups()[0][0]
    baseline, mask, _ = truth.baseline(patient)
    labels = np.asarray(__import__("nibabel").load(written / f"{patient}/pre_seg.nii.gz").dataobj)
    assert mask.any() and np.array_equal(mask, np.isin(labels, [1, 3]))  # necrosis and enhancing, not oedema
    assert baseline.shape == mask.shape


def test_with_an_interim_one_arm_gives_the_priors_their_primary_alone(tmp_path):
    assert sequences.NO_PRIOR_SEQUENCES not in sequences.chosen_arms(None, interim=False)
    assert sequences.chosen_arms(["all four", sequences.NO_PRIOR_SEQUENCES], interim=True) == {
        "all four": sequences.SEQUENCES, sequences.NO_PRIOR_SEQUENCES: sequences.SEQUENCES}
    written = synthesize("brain", 2, 2, 0, tmp_path / "synth", sequences=sequences.SEQUENCES, interim=(28,))
    folder = sequences.arm_cohort(written, tmp_path / "arm", sequences.SEQUENCES, prior_sequences=False)
    cohort = load_cohort(folder)  # blanked sequences are missing ones, which a format-2 cohort allows
    scans = pd.read_csv(folder / "scans.csv", dtype=str, keep_default_na=False)
    later = scans["timepoint"] != cohort.spec.baseline
    assert later.sum() > len(scans) / 2 and (~later).sum() == 2
    assert (scans.loc[later, ["image:t1", "image:t2", "image:flair"]] == "").all().all()
    assert (scans.loc[later, "image:t1c"] != "").all() and (scans.loc[~later, "image:flair"] != "").all()
