"""The residual design (diffusion.residual=regression, CorrDiff): a tiny 2D run trains its regression U-Net
into RUN/residual_mean/, then the residual diffusion model; the export carries both, and a prediction's
samples are the regression mean plus the generated residuals."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from factory import train_tiny
from oncodiff.config import load_config
from oncodiff.diffusion import NoiseSchedule, make_sampler, randn_per_element, sample
from oncodiff.errors import ConfigError
from oncodiff.models.residual import ResidualDenoiser
from oncodiff.pipeline import predict, predict_cases
from oncodiff.pipeline.cases import load_cases
from oncodiff.pipeline.export import load_export
from oncodiff.pipeline.predict import case_conditions
from oncodiff.pipeline.sampling import draw_samples, regress, sample_generators
from oncodiff.runs import RunFolder

TINY = ["model.channels=[8,16]", "model.attention_levels=[false,true]", "model.norm_num_groups=8",
        "model.num_head_channels=8", "model.token_dim=16", "training.max_steps=4", "training.samples_per_epoch=8",
        "training.batch_size=4", "training.max_minutes=null", "evaluation.segmenter_steps=10", "sampling.samples=3",
        "sampling.steps=2", "data.crop_size=[16,16]", "diffusion.residual=regression"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("residual"), TINY, n_patients=6)


def test_the_regression_trains_first_on_its_share_and_the_export_carries_both(trained):
    run, mean = RunFolder(trained["run"]), RunFolder(trained["run"]).residual_mean()
    assert mean.weights.is_file() and run.weights.is_file()
    assert load_export(mean.root).config.training.max_steps == 2  # residual_share 0.5 of training.max_steps=4
    exported = load_export(run.root, device="cpu")
    assert isinstance(exported.net, ResidualDenoiser)
    # Round trip: the export's frozen mean is the regression run's network, tensor for tensor.
    regression = load_file(str(mean.weights))
    mine = {k.removeprefix("mean."): v for k, v in load_file(str(run.weights)).items() if k.startswith("mean.")}
    assert mine.keys() == regression.keys()
    assert all(torch.equal(mine[k], regression[k]) for k in regression)
    loaded = exported.net.mean.state_dict()
    assert all(torch.equal(loaded[k].cpu(), regression[k]) for k in regression)
    # The residual model sees the class and the regression mean (pre, tumour mask, mean image, mean mask).
    assert exported.net.n_classes == 2 and exported.net.mean.n_classes == 0
    assert exported.net.image_condition_channels == exported.net.mean.image_condition_channels + 2


def test_the_sample_mean_is_the_regression_mean_plus_the_mean_residual(trained):
    exported = load_export(trained["run"], device="cpu")
    config, net = exported.config, exported.net
    cases = load_cases(exported, trained["cohort"], patients=["P001", "P002"], cache_dir=trained["cache"])
    cond = case_conditions(exported, cases, "true")
    n = 3
    keys = [c.follow_up_key for c in cases.cases]
    generated = draw_samples(net, config, cond, n, sample_generators(0, keys, n))
    # The regression U-Net as its own run exported it, and the residuals sampled directly by the residual model.
    mean = regress(load_export(RunFolder(trained["run"]).residual_mean().root, device="cpu").net, config, cond)[:, 0]
    rows = net.encode_conditions(cond).repeat_interleave(n)
    schedule = NoiseSchedule.from_config(config.diffusion)
    sampler = make_sampler(config.sampling, schedule, config.diffusion.prediction)
    gens = sample_generators(0, keys, n)
    x_T = randn_per_element((len(gens), net.target_channels, *cond.image.shape[2:]), gens, "cpu")
    with torch.inference_mode():
        residuals = sample(lambda x, t: net(x, t, rows).prediction, x_T, sampler, config.sampling.steps, gens)
    residuals = residuals.float().reshape(len(cases), n, *residuals.shape[1:])
    assert residuals.abs().max() > 0
    torch.testing.assert_close(generated.mean(1), mean + residuals.mean(1), atol=2e-2, rtol=0)
    torch.testing.assert_close(generated, mean[:, None] + residuals, atol=2e-2, rtol=0)


def test_the_residual_model_keeps_the_class_and_predict_works(trained):
    exported = load_export(trained["run"], device="cpu")
    cases = load_cases(exported, trained["cohort"], patients=["P001"], cache_dir=trained["cache"])
    cond = case_conditions(exported, cases, "true")
    keys = [c.follow_up_key for c in cases.cases]
    by_class = [draw_samples(exported.net, exported.config, replace(cond, class_label=torch.full_like(
        cond.class_label, label)), 2, sample_generators(0, keys, 2)) for label in (0, 1)]
    assert not torch.allclose(*by_class)  # same noise, another class: other residuals
    prediction = predict_cases(exported, cases, 2, class_label="predicted")  # the class prior's mixture
    assert prediction.samples.shape[:2] == (len(cases), 2)
    out = predict(trained["run"], trained["cohort"], trained["root"] / "predictions", patients=["P001"],
                  cache_dir=trained["cache"])
    assert (out / "summary.json").is_file()


def test_the_residual_design_refuses_a_pre_source():
    with pytest.raises(ConfigError, match="diffusion.source=noise"):
        load_config("demo", ["diffusion.residual=regression", "diffusion.source=pre"])
