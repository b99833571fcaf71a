"""The default route for 3D cohorts (data/route.py), denoising (data/denoise.py), stitching the crops of a
follow-up into one prediction (data/geometry.py: paste_crops; pipeline/volumes.py: CaseVolumes.grouped), and
predicting a cohort the run was not trained on."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from factory import TINY_MODEL, write_cohort
from oncodiff.cohort.image import Image, affine_from_spacing
from oncodiff.config import SMOOTHING_MM, DataConfig, load_config
from oncodiff.data.crop import _tumor_slices
from oncodiff.data.denoise import choose_smoothing, smoothed, smoothing_index
from oncodiff.data.geometry import GeometryRecord, paste_crops
from oncodiff.data.route import VOLUMETRIC_ROUTE, volumetric_route
from oncodiff.pipeline import predict
from oncodiff.pipeline.predict import default_patients
from oncodiff.pipeline.volumes import CaseVolumes
from oncodiff.training import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = [*TINY_MODEL, "training.max_steps=3", "training.samples_per_epoch=8",
        "training.batch_size=4", "training.max_minutes=null", "sampling.samples=2", "sampling.steps=2",
        "data.crop_size=[16,16]", "sampling.calibrate=false"]
SHAPE = (24, 20, 10)


def test_smoothing_is_chosen_where_the_follow_ups_are_noisy_and_not_where_they_are_clean():
    rng = np.random.default_rng(0)
    clean = np.zeros((20, 1, 16, 16), np.float32)
    clean[:, :, 4:12, 4:12] = 0.6
    mask = (clean > 0).astype(np.uint8)
    image_affine = affine_from_spacing((1.0, 1.0))

    def smoothed_stack(pre: np.ndarray) -> np.ndarray:
        return np.stack([np.stack([smoothed(Image(p[0], image_affine), s).array for s in SMOOTHING_MM])
                         for p in pre])

    noisy_pre = clean + 0.2 * rng.standard_normal(clean.shape).astype(np.float32)
    noisy_post = clean + 0.2 * rng.standard_normal(clean.shape).astype(np.float32)
    index, errors = choose_smoothing(smoothed_stack(noisy_pre), noisy_post, mask)
    assert index > 0 and errors[index] < 0.95 * errors[0]
    index, _ = choose_smoothing(smoothed_stack(clean), clean, mask)
    assert index == 0  # smoothing a clean, sharp-edged scan only blurs its edges
    assert smoothing_index("none", smoothed_stack(noisy_pre), noisy_post, mask)[0] == 0
    assert smoothing_index(1.5, smoothed_stack(noisy_pre), noisy_post, mask)[0] == SMOOTHING_MM.index(1.5)
    assert "chosen on the training split" in smoothing_index("auto", smoothed_stack(noisy_pre), noisy_post, mask)[1]


def test_smoothing_sigma_is_in_mm_on_anisotropic_voxels():
    impulse = np.zeros((21, 21, 21), np.float32)
    impulse[10, 10, 10] = 1.0
    out = smoothed(Image(impulse, affine_from_spacing((1.0, 1.0, 2.0))), 2.0).array
    profile_x, profile_z = out[:, 10, 10], out[10, 10, :]
    # the same physical width: 2 mm is 2 voxels along x and 1 voxel along z
    assert profile_x[12] / profile_x[10] == pytest.approx(np.exp(-0.5), rel=0.05)
    assert profile_z[11] / profile_z[10] == pytest.approx(np.exp(-0.5), rel=0.05)


def test_a_config_rejects_a_smoothing_sigma_preprocessing_does_not_compute():
    with pytest.raises(ValueError, match="data.smoothing"):
        DataConfig(smoothing=1.2)


def test_slice_margin_adds_neighbouring_slices_within_the_scan():
    tumor = np.zeros((8, 8, 12), np.uint8)
    tumor[3:5, 3:5, 5:7] = 1
    assert _tumor_slices(tumor, DataConfig(slices="tumor")) == [5, 6]
    assert _tumor_slices(tumor, DataConfig(slices="tumor", slice_margin=2)) == [3, 4, 5, 6, 7, 8]
    tumor[:, :, 0] = 1
    assert _tumor_slices(tumor, DataConfig(slices="tumor", slice_margin=2))[0] == 0


def _slab(z: int, shape=(6, 6, 4)) -> GeometryRecord:
    crop = np.eye(4)
    crop[2, 3] = z
    return GeometryRecord(original_affine=np.eye(4), original_shape=shape, grid_affine=np.eye(4), grid_shape=shape,
                          crop_affine=crop, crop_shape=(6, 6), slice_index=z)


def test_paste_crops_stitches_slices_and_averages_overlaps():
    background = np.full((6, 6, 4), -1.0, np.float32)
    out = paste_crops([_slab(1), _slab(2)], [np.full((6, 6), 3.0), np.full((6, 6), 5.0)], 1, background).array
    assert np.all(out[:, :, 1] == 3.0) and np.all(out[:, :, 2] == 5.0)
    assert np.all(out[:, :, [0, 3]] == -1.0)  # slices no crop covers keep the background
    overlap = paste_crops([_slab(1), _slab(1)], [np.full((6, 6), 3.0), np.full((6, 6), 5.0)], 1).array
    assert np.all(overlap[:, :, 1] == 4.0) and np.all(overlap[:, :, 0] == 0.0)


def test_grouped_volumes_sum_over_the_crops_of_a_follow_up():
    volumes = CaseVolumes(baseline=np.array([2.0, 3.0, 10.0]), baseline_segmented=np.array([2.0, 3.0, 10.0]),
                          samples=np.array([[1.0, 2.0], [1.0, 2.0], [5.0, 20.0]]), true=np.array([1.0, np.nan, 4.0]),
                          probability=np.zeros((3, 4, 4), np.float32), unit="mm3", threshold=-0.2)
    grouped = volumes.grouped([[0, 1], [2]])
    assert grouped.baseline.tolist() == [5.0, 10.0]
    assert grouped.samples.tolist() == [[2.0, 4.0], [5.0, 20.0]]
    assert np.isnan(grouped.true[0]) and grouped.true[1] == 4.0  # one crop unknown: the follow-up is unknown
    np.testing.assert_allclose(grouped.change()[1], [-0.5, 1.0])


@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    root = tmp_path_factory.mktemp("route3d")
    cohort = write_cohort(root / "cohort", n_patients=8, dims=3, shape=SHAPE, spacing=(1.0, 1.0, 2.0))
    run = train(cohort, load_config("demo", TINY), root / "run", cache_dir=root / "cache")
    return {"root": root, "cohort": cohort, "run": run, "cache": root / "cache"}


def test_a_3d_cohort_with_a_2d_preset_trains_on_tumour_slices_and_says_so(routed, capsys):
    saved = json.loads((routed["run"] / "config.json").read_text(encoding="utf-8"))
    config = saved["data"]
    # the slices reach as far as the tumour box evaluation scores (evaluation.bbox_margin, 4 by default)
    assert (config["slices"], config["slice_margin"], config["train_slice_margin"], config["smoothing"]) == (
        "tumor", 4, 2, "auto")
    assert saved["diffusion"]["noise_sampling"] == "lognormal"  # the run records what it trained with
    routed_again, sentence = volumetric_route(load_config("demo", TINY), routed["cohort"])
    assert routed_again.data.slices == "tumor" and "tumour's axial slices" in sentence
    assert routed_again.diffusion.noise_sampling == "lognormal" and "log-normal noise levels" in sentence
    assert all(f"--set {o}" in sentence for o in VOLUMETRIC_ROUTE) and "--set data.slice_margin=4" in sentence
    wider, _ = volumetric_route(load_config("demo", [*TINY, "evaluation.bbox_margin=6"]), routed["cohort"])
    assert wider.data.slice_margin == 6  # a wider box scored: as many more slices predicted
    explicit, none = volumetric_route(load_config("demo", [*TINY, "data.slices=largest"]), routed["cohort"])
    assert none is None and explicit.data.slices == "largest"  # what a user sets is kept
    assert explicit.diffusion.noise_sampling == "auto"  # no route: training draws uniform levels
    uniform, sentence = volumetric_route(load_config("demo", [*TINY, "diffusion.noise_sampling=uniform"]),
                                         routed["cohort"])
    assert uniform.data.slices == "tumor" and uniform.diffusion.noise_sampling == "uniform"  # named: kept
    assert "diffusion.noise_sampling=uniform" in sentence
    layout = json.loads((routed["run"] / "model" / "config.json").read_text(encoding="utf-8"))["layout"]
    assert layout["smoothing_mm"] in SMOOTHING_MM


def test_predict_writes_one_stitched_volume_per_follow_up(routed):
    out = predict(routed["run"], routed["cohort"], routed["root"] / "pred", cache_dir=routed["cache"])
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    test = json.loads((routed["run"] / "splits.json").read_text(encoding="utf-8"))["test"]
    assert sorted(c["patient_id"] for c in summary["cases"]) == sorted(test)  # the training cohort: its test split
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == sorted(f"{p}_L1_week6" for p in test)  # one folder per follow-up, none per slice
    for case in summary["cases"]:
        assert "/z" not in case["key"] and case["crops"] > 1 and case["volume_unit"] == "mm3"
        folder = out / f"{case['patient_id']}_L1_week6"
        baseline = nib.load(str(routed["cohort"] / case["patient_id"] / "pre.nii.gz"))
        mean = nib.load(str(folder / "mean.nii.gz"))
        assert mean.shape == baseline.shape == SHAPE
        np.testing.assert_allclose(mean.affine, baseline.affine)
        # outside the predicted slices: the baseline as the model saw it (smoothed by the run's chosen sigma)
        meta = json.loads((routed["run"] / "model" / "config.json").read_text(encoding="utf-8"))
        sigma = meta["layout"]["smoothing_mm"]
        background = smoothed(Image(baseline.get_fdata().astype(np.float32), baseline.affine), sigma).array
        changed = np.flatnonzero(np.any(~np.isclose(mean.get_fdata(), background, atol=1e-4), axis=(0, 1)))
        tumour_slices = np.flatnonzero(nib.load(str(routed["cohort"] / case["patient_id"] / "pre_gtv.nii.gz"))
                                       .get_fdata().any(axis=(0, 1)))
        assert set(changed) <= set(range(tumour_slices.min() - 2, tumour_slices.max() + 3))
        assert set(tumour_slices) <= set(changed)  # every tumour slice was predicted and pasted
        # the samples of one follow-up share one class: the stitched sample shows one outcome
        assert len(case["sample_classes"]) == 2


def test_a_stitched_volume_is_the_denoised_baseline_outside_the_predicted_slices(routed, tmp_path):
    # The same run as if its model had been trained on baselines smoothed by 2 mm (data.smoothing=2): outside the
    # predicted slices, every stitched image is that denoised baseline, not the raw scan with its noise.
    run = tmp_path / "run"
    shutil.copytree(routed["run"], run, ignore=shutil.ignore_patterns("baselines"))
    meta_path = run / "model" / "config.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["layout"]["smoothing_mm"] = 2.0
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    patient = json.loads((run / "splits.json").read_text(encoding="utf-8"))["test"][0]
    out = predict(run, routed["cohort"], tmp_path / "pred", patients=[patient], cache_dir=routed["cache"])
    baseline = nib.load(str(routed["cohort"] / patient / "pre.nii.gz"))
    raw = baseline.get_fdata().astype(np.float32)
    denoised = smoothed(Image(raw, baseline.affine), 2.0).array
    folder = out / f"{patient}_L1_week6"
    images = {name: nib.load(str(folder / f"{name}.nii.gz")).get_fdata() for name in ("mean", "sample_00", "sample_01")}
    # no crop covers a voxel where the two samples agree exactly (the crops are 16 x 16 of a 24 x 20 plane; a few
    # predicted voxels may agree by chance)
    outside = np.isclose(images["sample_00"], images["sample_01"], rtol=0, atol=1e-6)
    assert 0.2 < outside.mean() < 0.9
    for image in images.values():
        assert np.isclose(image[outside], denoised[outside], rtol=0, atol=1e-4).mean() > 0.99
        assert np.isclose(image[outside], raw[outside], rtol=0, atol=1e-3).mean() < 0.5  # the scan's noise is gone


def test_a_new_cohort_is_predicted_whole(routed, capsys):
    # Same patient ids as the training cohort's first three, but other scans: not the training cohort.
    other = write_cohort(routed["root"] / "other", n_patients=3, dims=3, shape=SHAPE, spacing=(1.0, 1.0, 2.0), seed=7)
    patients, sentence = default_patients(routed["run"], other)
    assert patients is None and "not the run's training cohort" in sentence
    out = predict(routed["run"], other, routed["root"] / "pred_other", cache_dir=routed["cache"])
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert sorted(c["patient_id"] for c in summary["cases"]) == ["P001", "P002", "P003"]
    assert "every patient of" in capsys.readouterr().out
    copied = routed["root"] / "copy"
    copied.mkdir()
    for name in ("cohort.yaml", "patients.csv", "scans.csv"):  # byte-identical tables: the training cohort
        (copied / name).write_bytes((routed["cohort"] / name).read_bytes())
    test = json.loads((routed["run"] / "splits.json").read_text(encoding="utf-8"))["test"]
    assert default_patients(routed["run"], copied)[0] == test
    assert pd.read_csv(routed["cohort"] / "scans.csv").shape[0] == 16  # the cohort was not written to


def test_evaluate_scores_a_new_cohort_whole_with_the_denoised_baseline_and_one_volume_per_follow_up(routed):
    from oncodiff.evaluation import evaluate

    other = write_cohort(routed["root"] / "other_eval", n_patients=4, dims=3, shape=SHAPE, spacing=(1.0, 1.0, 2.0),
                         seed=11)
    budgets = ["evaluation.folds=2", "evaluation.cnn_epochs=1", "evaluation.head_epochs=5", "evaluation.baselines=[]"]
    summary = json.loads(evaluate(routed["run"], other, routed["root"] / "eval_other", budgets,
                                  cache_dir=routed["cache"]).read_text(encoding="utf-8"))
    assert {"identity", "denoised"} <= set(summary["methods"])
    follow_ups = {row["key"] for row in summary["per_case_size"]["identity"]}
    assert follow_ups == {f"P00{i}/L1/week6" for i in range(1, 5)}  # every patient, one row per follow-up
    crops = {row["case_id"] for row in summary["image_metrics"]["per_case"]}
    assert len(crops) > len(follow_ups)  # image metrics stay per crop (tumour slice)


def test_training_takes_the_slices_near_the_tumour_and_prediction_every_slice_cut(routed):
    from oncodiff.config import Config
    from oncodiff.data.datamodule import CohortDataModule, training_slices

    config = Config.from_json(routed["run"] / "config.json")
    module = CohortDataModule(routed["cohort"], config, cache_dir=routed["cache"])
    module.setup()
    records, tumour = module.records, module.preprocessed.arrays["tumor_mask"]
    by_follow_up: dict = {}
    for i, r in enumerate(records):
        by_follow_up.setdefault((r.patient_id, r.timepoint), []).append(i)
    distance = {}
    for group in by_follow_up.values():
        z_tumour = [records[i].geometry.slice_index for i in group if tumour[i].any()]
        for i in group:
            z = records[i].geometry.slice_index
            distance[i] = max(min(z_tumour) - z, z - max(z_tumour), 0)
    assert max(distance.values()) == 2  # this small scan (10 slices) clips the 4-slice margin at 2
    kept = training_slices(module.preprocessed, config.data)
    assert kept == set(range(len(records)))  # every slice here is within the 2 trained on
    one = training_slices(module.preprocessed, config.data.model_copy(update={"train_slice_margin": 1}))
    assert one == {i for i, d in distance.items() if d <= 1} and len(one) < len(records)
    assert set(module.dataset("train").indices) <= kept and set(module.dataset("val").indices) <= kept
    # no training margin, or one as wide as the cut: every sample
    assert training_slices(module.preprocessed, config.data.model_copy(update={"train_slice_margin": None})) is None
    assert training_slices(module.preprocessed, config.data.model_copy(update={"train_slice_margin": 4})) is None


def test_no_tumour_volume_is_counted_on_slices_beyond_those_trained_on(routed):
    from oncodiff.pipeline.cases import _mark_untrained_slices, load_cases
    from oncodiff.pipeline.export import load_export
    from oncodiff.pipeline.predict import Predictions

    model = load_export(routed["run"] / "model")
    cases = load_cases(model, routed["cohort"], cache_dir=routed["cache"])
    assert all(c.volume_counted for c in cases.cases)  # this scan clips the cut at 2 slices: all were trained on
    narrower = model.config.data.model_copy(update={"train_slice_margin": 1})
    marked = _mark_untrained_slices(cases, narrower)
    tumour = cases.batch["tumor_mask"].reshape(len(cases), -1).sum(1).numpy() > 0
    uncounted = np.array([not c.volume_counted for c in marked.cases])
    assert uncounted.any() and not (uncounted & tumour).any()  # only slices without tumour, the far ones
    shape = tuple(cases.batch["pre"].shape[2:])
    everywhere = np.ones((len(cases), 2, *shape), bool)  # every sample's mask: tumour in every voxel
    pre = cases.batch["pre"][:, 0].numpy()
    volumes = CaseVolumes.measure(None, marked, Predictions(np.stack([pre, pre], 1), pre, everywhere), -0.2)
    assert (volumes.samples[uncounted] == 0).all() and (volumes.samples[~uncounted] > 0).all()
    assert (volumes.probability[uncounted] == 0).all() and (volumes.probability[~uncounted] == 1).all()
