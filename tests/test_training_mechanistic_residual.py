"""diffusion.residual=mechanistic: the diffusion model generates the follow-up minus the mechanistic forecast
(data/mechanistic.py), whose parameter sets are fitted on the training split when training starts and travel in
the export; a sample conditioned on class k is measured from class k's forecast, the null class from the
outcome-unknown one."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from factory import TINY_MODEL, train_tiny, write_cohort
from oncodiff.cohort import read_image, write_image
from oncodiff.config import load_config
from oncodiff.data import CohortDataModule, mechanistic
from oncodiff.errors import ConfigError, OncodiffError
from oncodiff.models.conditions import FORECAST_KEY
from oncodiff.models.factory import ModelLayout
from oncodiff.models.residual import ForecastResidualDenoiser
from oncodiff.pipeline import predict, predict_cases
from oncodiff.pipeline.cases import load_cases
from oncodiff.pipeline.export import load_export
from oncodiff.pipeline.predict import case_conditions, predictions_from_generated
from oncodiff.pipeline.sampling import draw_samples, sample_generators
from oncodiff.runs import RunFolder
from oncodiff.training.forecast import fit_forecast

TINY = [*TINY_MODEL, "training.max_steps=4", "training.samples_per_epoch=8", "training.batch_size=4",
        "training.max_minutes=null", "evaluation.segmenter_steps=10", "sampling.samples=3", "sampling.steps=2",
        "data.crop_size=[16,16]", "diffusion.residual=mechanistic"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("mechanistic_residual"), TINY, n_patients=8)


def test_the_config_option_and_its_refusals():
    assert load_config("demo", ["diffusion.residual=mechanistic"]).diffusion.residual == "mechanistic"
    with pytest.raises(ConfigError, match="diffusion.source=noise"):
        load_config("demo", ["diffusion.residual=mechanistic", "diffusion.source=pre"])
    with pytest.raises(ConfigError, match="pixel-space"):
        load_config("demo", ["diffusion.residual=mechanistic", "training.stage=latent_diffusion", "model.latent=kl",
                             "training.init_from=x"])
    # An export from before this design has no parameters in its layout, and loads as one without them.
    raw = ModelLayout(spatial_dims=2, image_condition_names=("pre", "tumor_mask"), clinical=()).to_dict()
    raw.pop("mechanistic")
    assert ModelLayout.from_dict(raw).mechanistic is None


def test_the_export_carries_the_fitted_sets_and_predict_round_trips(trained):
    exported = load_export(trained["run"], device="cpu")
    assert isinstance(exported.net, ForecastResidualDenoiser)
    fitted = exported.layout.mechanistic
    assert fitted["n_classes"] == 2 and fitted["class_key"] == "response"
    assert set(fitted["per_class"]) == {"0", "1"} and fitted["cpu_seconds"] >= 0
    assert exported.layout.image_condition_names[-3:] == ("forecast:unknown", "forecast:class0", "forecast:class1")
    # The network sees the run's conditions plus one forecast, not all three.
    assert exported.net.image_condition_channels == len(exported.layout.image_condition_names) - 2
    written = json.loads((RunFolder(trained["run"]).model_dir / "config.json").read_text())
    assert written["layout"]["mechanistic"]["unknown"] == fitted["unknown"]
    out = predict(trained["run"], trained["cohort"], trained["root"] / "predictions", cache_dir=trained["cache"])
    assert (out / "summary.json").is_file()
    cases = load_cases(exported, trained["cohort"], patients=["P001"], cache_dir=trained["cache"])
    mixture = predict_cases(exported, cases, 4, class_label="predicted")  # the class prior's draw, per sample
    assert mixture.samples.shape[:2] == (len(cases), 4) and np.isfinite(mixture.samples).all()


def test_each_forecast_channel_is_its_class_and_the_class_picks_it(trained):
    exported = load_export(trained["run"], device="cpu")
    sets = mechanistic.ForecastSets.from_dict(exported.layout.mechanistic)
    cases = load_cases(exported, trained["cohort"], patients=["P001", "P002"], cache_dir=trained["cache"])
    batch = cases.batch
    channels = batch[FORECAST_KEY]
    assert channels.shape[1] == 3
    spacings = [mechanistic.crop_spacing(c.geometry, 2) for c in cases.cases]
    for channel, parameters in enumerate([sets.unknown, sets.per_class[0], sets.per_class[1]]):
        expected = mechanistic.forecast(batch["pre"][:, 0].numpy(), batch["tumor_mask"][:, 0].numpy(),
                                        batch["anatomy"].numpy(), sets.anatomy, batch["days"].numpy(), spacings,
                                        [parameters] * len(cases))
        np.testing.assert_allclose(channels[:, channel].numpy(), expected, atol=1e-6)
    assert not torch.allclose(channels[:, 1], channels[:, 2])  # the classes' forecasts differ
    net = exported.net
    cond = case_conditions(exported, cases, "true")
    for label, channel in ((0, 1), (1, 2), (net.null_class, 0)):
        rows = net.encode_conditions(replace(cond, class_label=torch.full_like(cond.class_label, label)))
        torch.testing.assert_close(net.forecast_from_encoded(rows), channels[:, channel:channel + 1])


def test_a_zero_residual_reproduces_the_class_forecast(trained):
    exported = load_export(trained["run"], device="cpu")
    net = exported.net
    cases = load_cases(exported, trained["cohort"], patients=["P001", "P002"], cache_dir=trained["cache"])
    cond = case_conditions(exported, cases, "true")
    for label in (0, 1):
        rows = net.encode_conditions(replace(cond, class_label=torch.full_like(cond.class_label, label)))
        zeros = torch.zeros((len(cases), net.target_channels, *rows.image.shape[2:]))
        generated = net.decode_target(zeros, rows, exported.config.diffusion.target)
        post = predictions_from_generated(cases.batch["pre"], generated[:, None], exported.config.diffusion.target)
        np.testing.assert_allclose(post.samples[:, 0], cases.batch[FORECAST_KEY][:, 1 + label].numpy(), atol=1e-5)
    # Sampling by class: with the same noise, each sample is measured from its own class's forecast.
    keys = [c.follow_up_key for c in cases.cases]
    by_class = [draw_samples(net, exported.config, cond, 2, sample_generators(0, keys, 2),
                             sample_classes=torch.full((len(cases), 2), label)) for label in (0, 1)]
    assert not torch.allclose(*by_class)


def test_the_fit_reads_training_patients_only(trained, tmp_path):
    """Replacing every validation and test patient's follow-up changes nothing in the fit; replacing a training
    patient's does."""
    config = load_config("demo", TINY)
    splits = RunFolder(trained["run"]).splits()

    def fitted(cohort):
        data = CohortDataModule(cohort, config, cache_dir=tmp_path / "cache", splits_path=RunFolder(trained["run"]).splits_json)
        data.prepare_data()
        data.setup()
        return fit_forecast(data, config).to_dict()

    def scrambled(patients, name):
        cohort = tmp_path / name
        shutil.copytree(trained["cohort"], cohort)
        for patient in patients:
            image = read_image(cohort / patient / "week6.nii.gz")
            noise = np.random.default_rng(1).uniform(0, 3, image.array.shape).astype(np.float32)
            write_image(noise, image.affine, cohort / patient / "week6.nii.gz")
        return cohort

    original = fitted(trained["cohort"])
    others = fitted(scrambled([*splits.val, *splits.test], "others"))
    for key in ("unknown", "per_class"):
        assert others[key] == original[key]
    changed = fitted(scrambled([splits.train[0]], "one_training"))
    assert changed["unknown"] != original["unknown"]


def test_a_cohort_without_enough_training_follow_ups_is_refused(tmp_path):
    cohort = write_cohort(tmp_path / "cohort", n_patients=8, dims=2, shape=(28, 24))
    config = load_config("demo", TINY)
    data = CohortDataModule(cohort, config, cache_dir=tmp_path / "cache")
    data.prepare_data()
    data.setup()
    train_set = data.dataset("train")
    train_set.indices = train_set.indices[:2]
    with pytest.raises(OncodiffError, match="diffusion.residual=none"):
        fit_forecast(data, config)
