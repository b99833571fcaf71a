"""draw_samples with a real (tiny, randomised) ConditionalDenoiser: classifier-free guidance at scales 0
and 1, and samples that depend only on (seed, case, sample index), not on batching."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from oncodiff.cohort.schema import ClinicalVariable
from oncodiff.config import Config, ModelConfig, load_config
from oncodiff.diffusion import NoiseSchedule, make_sampler, randn_per_element, sample
from oncodiff.models import ConditionalDenoiser, Conditions, PixelSpace
from oncodiff.models.factory import denoiser_arguments
from oncodiff.pipeline.sampling import draw_samples, sample_generators

VARIABLES = (
    ClinicalVariable(name="age", type="numeric", group="demographics"),
    ClinicalVariable(name="nlr", type="numeric", group="blood"),
)
SHAPES = {2: (16, 16), 3: (16, 16, 8)}
KEYS = ["P001/L1/week6", "P002/L1/week6", "P003/L1/day90"]
N_SAMPLES = 2
# Float sums run in another order when the batch size changes (oneDNN blocking): ~1e-5 on O(1) values.
# A case meeting another case's noise or condition would be off by O(1).
BATCHING = dict(rtol=1e-4, atol=1e-4)
MODEL = dict(channels=(8, 16), attention_levels=(False, True), num_head_channels=8, norm_num_groups=8, token_dim=8,
             class_label="response")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_config(**sampling) -> Config:
    """fp32 (exact comparisons), a stochastic sampler (every step draws from the generators), 3 steps."""
    settings = {"model": MODEL, "diffusion": {"num_train_timesteps": 50, "prediction": "x0"},
                "training": {"precision": "32"},
                "sampling": {"sampler": "ddim", "eta": 1.0, "steps": 3, **sampling}}
    return Config.model_validate(settings)


def make_net(dims: int = 2) -> ConditionalDenoiser:
    torch.manual_seed(0)
    net = ConditionalDenoiser(dims, 1, 2, VARIABLES, 2, **denoiser_arguments(ModelConfig(**MODEL)))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # MONAI zero-initialises output convolutions: perturb so the condition shows
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return net.eval()


def make_cond(dims: int = 2) -> Conditions:
    g = torch.Generator().manual_seed(2)
    return Conditions(
        image=torch.rand(3, 2, *SHAPES[dims], generator=g),
        clinical=torch.tensor([[0.5, -1.0], [1.2, 0.3], [-0.7, 0.0]]),
        clinical_missing=torch.tensor([[False, False], [False, True], [False, False]]),
        days=torch.tensor([42.0, 42.0, 90.0]),
        class_label=torch.tensor([1, 0, 1]),
    )


def draw(net, cond, keys=KEYS, seed=0, **sampling) -> torch.Tensor:
    return draw_samples(net, make_config(**sampling), cond, N_SAMPLES, sample_generators(seed, keys, N_SAMPLES))


def reference_draw(net, cond, keys=KEYS, seed=0) -> torch.Tensor:
    """The sampler loop run directly on the plain network, one case-major row per (case, sample)."""
    config = make_config()
    generators = sample_generators(seed, keys, N_SAMPLES)
    rows = cond.repeat_interleave(N_SAMPLES)
    sampler = make_sampler(config.sampling, NoiseSchedule.from_config(config.diffusion), config.diffusion.prediction)
    x_T = randn_per_element((len(generators), 1, *cond.image.shape[2:]), generators)
    with torch.no_grad():
        x0 = sample(lambda x, t: net(x, t, rows).prediction, x_T, sampler, config.sampling.steps, generators)
    return x0.reshape(cond.batch_size, N_SAMPLES, 1, *cond.image.shape[2:])


# ------------------------------------------------------------------------------------------ guidance


def test_scale_one_is_the_conditional_and_scale_zero_the_unconditional_model():
    net, cond = make_net(), make_cond()
    null = cond.null(net.null_class)
    conditional, unconditional = draw(net, cond, guidance_scale=1.0), draw(net, cond, guidance_scale=0.0)
    torch.testing.assert_close(conditional, reference_draw(net, cond))
    torch.testing.assert_close(unconditional, reference_draw(net, null))
    # The same draws with the class forced to the null class, same generators.
    torch.testing.assert_close(unconditional, draw(net, null, guidance_scale=1.0))
    assert not torch.allclose(conditional, unconditional, atol=1e-3)  # the class label matters to this network


def test_the_doubled_guidance_pass_meets_the_single_passes_at_its_ends():
    # Scales other than 0 and 1 run conditional and null rows in one doubled batch; near 1 and 0 they must
    # agree with the single passes, which fails if the halves were swapped or a case met another's condition.
    net, cond = make_net(), make_cond()
    for single, near in ((1.0, 1.0 + 1e-4), (0.0, 1e-4)):
        torch.testing.assert_close(draw(net, cond, guidance_scale=near), draw(net, cond, guidance_scale=single),
                                   rtol=0, atol=1e-3)
    guided = draw(net, cond, guidance_scale=3.0)
    assert not torch.allclose(guided, draw(net, cond, guidance_scale=1.0), atol=1e-3)


def test_guidance_can_also_drop_the_clinical_variables():
    net, cond = make_net(), make_cond()
    config = make_config(guidance_scale=0.0)
    generators = sample_generators(0, KEYS, N_SAMPLES)
    dropped = draw_samples(net, config, cond, N_SAMPLES, generators, guidance_drop_clinical=True)
    both_null = cond.null(net.null_class, drop_clinical=True)
    torch.testing.assert_close(dropped, draw(net, both_null, guidance_scale=1.0))
    assert not torch.allclose(dropped, draw(net, cond, guidance_scale=0.0), atol=1e-3)


def test_per_sample_classes_replace_the_case_class():
    net, cond = make_net(), make_cond()
    classes = torch.tensor([[0, 1], [1, 1], [0, 0]])
    mixed = draw_samples(net, make_config(), cond, N_SAMPLES, sample_generators(0, KEYS, N_SAMPLES),
                         sample_classes=classes)
    for label in (0, 1):
        fixed = draw(net, replace(cond, class_label=torch.full((3,), label)))
        torch.testing.assert_close(mixed[classes == label], fixed[classes == label])


# ------------------------------------------------------------------------------------------ batching


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_samples_do_not_depend_on_batch_size_or_on_the_other_cases(dims, scale):
    net, cond = make_net(dims), make_cond(dims)
    full = draw(net, cond, guidance_scale=scale, batch_size=64)
    assert full.shape == (3, N_SAMPLES, 1, *SHAPES[dims])
    for batch_size in (1, 3, 4):  # 3 and 4 cut chunks across cases; with guidance a chunk holds half as many
        torch.testing.assert_close(draw(net, cond, guidance_scale=scale, batch_size=batch_size), full, **BATCHING)
    subset = draw(net, cond.select(torch.tensor([2, 0])), keys=[KEYS[2], KEYS[0]], guidance_scale=scale, batch_size=3)
    torch.testing.assert_close(subset, full[[2, 0]], **BATCHING)
    assert not torch.allclose(full[:, 0], full[:, 1], atol=1e-3)  # samples of a case differ
    assert not torch.allclose(draw(net, cond, seed=1, guidance_scale=scale), full, atol=1e-3)  # and follow the seed


def test_a_case_key_not_its_position_picks_its_noise():
    net, cond = make_net(), make_cond()
    same_case_twice = cond.select(torch.tensor([0, 0]))
    out = draw(net, same_case_twice, keys=[KEYS[0], KEYS[1]])
    assert not torch.allclose(out[0], out[1], atol=1e-3)
    torch.testing.assert_close(out[0], draw(net, cond)[0])


def test_generator_count_is_checked():
    net, cond = make_net(), make_cond()
    with pytest.raises(ValueError, match="need 6 generators"):
        draw_samples(net, make_config(), cond, N_SAMPLES, sample_generators(0, KEYS[:2], N_SAMPLES))


class _EchoNet(PixelSpace, torch.nn.Module):
    """x0-predicting stand-in that returns its input: a single step then returns x_T itself."""

    target_channels, null_class = 1, 0

    def forward(self, x_t, t, cond):
        from oncodiff.models import DenoiserOutput

        return DenoiserOutput(x_t, None)

@pytest.mark.parametrize("target", ["post", "drift"])
def test_pulsar_sampling_starts_from_the_noised_pre_scan(target):
    from oncodiff.diffusion import NoiseSchedule, randn_per_element
    from oncodiff.models import Conditions
    from oncodiff.pipeline.sampling import draw_samples, sample_generators

    config = load_config("pulsar-drift-method1", ["model.class_label=none", f"diffusion.target={target}"])
    pre = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    cond = Conditions(image=torch.cat([pre, torch.zeros_like(pre)], dim=1))
    drawn = draw_samples(_EchoNet(), config, cond, 3, sample_generators(0, ["a", "b"], 3))
    schedule = NoiseSchedule.from_config(config.diffusion)
    alpha, sigma = schedule.scales(schedule.num_train_timesteps - 1, pre)
    noise = randn_per_element((6, 1, 8, 8), sample_generators(0, ["a", "b"], 3))
    source = pre if target == "post" else torch.zeros_like(pre)
    expected = alpha * source.repeat_interleave(3, dim=0) + sigma * noise
    torch.testing.assert_close(drawn.reshape(6, 1, 8, 8), expected, atol=2e-2, rtol=0)  # bf16 autocast

def test_pulsar_source_with_a_generated_mask_starts_the_mask_at_the_baseline_mask():
    from oncodiff.diffusion import NoiseSchedule, randn_per_element
    from oncodiff.models import Conditions
    from oncodiff.pipeline.sampling import draw_samples, sample_generators

    class TwoChannelEcho(_EchoNet):
        target_channels = 2

    config = load_config("pulsar-drift-method1", ["model.class_label=none", "model.generate_mask=true",
                                                  "diffusion.target=post"])
    pre = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros_like(pre)
    mask[..., 2:5, 2:5] = 1
    drawn = draw_samples(TwoChannelEcho(), config, Conditions(image=torch.cat([pre, mask], dim=1)), 4,
                         sample_generators(0, ["a"], 4))
    assert drawn.shape == (1, 4, 2, 8, 8)
    schedule = NoiseSchedule.from_config(config.diffusion)
    alpha, sigma = schedule.scales(schedule.num_train_timesteps - 1, pre)
    noise = randn_per_element((4, 2, 8, 8), sample_generators(0, ["a"], 4))
    source = torch.cat([pre, mask], dim=1)  # the pre scan (post target) and the baseline mask: no change
    torch.testing.assert_close(drawn[0], alpha * source + sigma * noise, atol=2e-2, rtol=0)

def test_latent_model_samples_come_back_in_image_space():
    from oncodiff.cohort.schema import ClinicalVariable
    from oncodiff.models import Conditions
    from oncodiff.models.factory import ModelLayout, build_network
    from oncodiff.pipeline.sampling import draw_samples, sample_generators

    config = load_config("gbm-ldm", ["model.autoencoder.channels=[8, 8]", "model.channels=[16, 16]",
                                     "model.attention_levels=[false, true]", "model.num_head_channels=16",
                                     "model.norm_num_groups=8", "data.crop_size=[8, 8]", "sampling.steps=3",
                                     "diffusion.target=drift"])
    layout = ModelLayout(2, ("pre", "tumor_mask"), (ClinicalVariable(name="age", type="numeric", group="d"),),
                         crop_size=(8, 8))
    net = build_network(config, layout).eval()
    pre = torch.rand(2, 1, 8, 8)
    mask = (torch.rand(2, 1, 8, 8) > 0.5).float()
    net.codec.calibrate(pre, mask)
    cond = Conditions(image=torch.cat([pre, mask], dim=1), clinical=torch.zeros(2, 1),
                      clinical_missing=torch.ones(2, 1, dtype=torch.bool), days=torch.zeros(2),
                      class_label=torch.tensor([0, 2]))
    drawn = draw_samples(net, config, cond, 2, sample_generators(0, ["a", "b"], 2))
    assert drawn.shape == (2, 2, 1, 8, 8) and torch.isfinite(drawn).all()
    post = drawn + pre[:, None]  # a drift target: the decoded post minus the pre scan
    with torch.no_grad():
        codes = net.codec.image.encode(post.reshape(4, 1, 8, 8).clamp(-5, 5))
    assert codes.shape == (4, config.model.autoencoder.latent_channels, 4, 4)


def test_rows_of_any_cases_in_any_order_are_the_same_draws():
    # predict_modes draws (case, sample, class) rows picked from several class modes: row r of a case_index draw
    # is sample k of its case under its class, as a (B, N) draw gives it.
    net, cond = make_net(), make_cond()
    classes = torch.tensor([[0, 1], [1, 1], [0, 0]])
    full = draw_samples(net, make_config(), cond, N_SAMPLES, sample_generators(0, KEYS, N_SAMPLES),
                        sample_classes=classes)
    wanted = [(2, 1), (0, 0), (2, 1), (1, 0), (0, 1)]  # out of order, one row twice
    generators = [g for i, k in wanted for g in sample_generators(0, [KEYS[i]], N_SAMPLES)[k:k + 1]]
    rows = draw_samples(net, make_config(batch_size=2), cond, 1, generators,
                        sample_classes=torch.tensor([[int(classes[i, k])] for i, k in wanted]),
                        case_index=torch.tensor([i for i, _ in wanted]))
    assert rows.shape == (len(wanted), 1, *full.shape[2:])
    torch.testing.assert_close(rows[:, 0], torch.stack([full[i, k] for i, k in wanted]), **BATCHING)
    with pytest.raises(ValueError, match="n_samples must be 1"):
        draw_samples(net, make_config(), cond, 2, generators * 2, case_index=torch.tensor([i for i, _ in wanted]))
