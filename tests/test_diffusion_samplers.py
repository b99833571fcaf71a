import pytest
import torch
from monai.networks.schedulers import DDIMScheduler as MonaiDDIM
from monai.networks.schedulers import DDPMScheduler as MonaiDDPM

from oncodiff.config import SamplingConfig
from oncodiff.diffusion import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverPPSampler,
    NoiseSchedule,
    SingleStepSampler,
    make_sampler,
    sample,
    schedule_alphas_cumprod,
    trailing_timesteps,
)

PREDICTIONS = ("eps", "v", "x0")
DIFFUSERS_PREDICTION = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}
SAMPLERS = {
    "ddpm": lambda schedule, prediction: DDPMSampler(schedule, prediction),
    "ddim": lambda schedule, prediction: DDIMSampler(schedule, prediction),
    "ddim_eta_0.5": lambda schedule, prediction: DDIMSampler(schedule, prediction, eta=0.5),
    "dpmpp": lambda schedule, prediction: DPMSolverPPSampler(schedule, prediction),
    "single_step": lambda schedule, prediction: SingleStepSampler(schedule, prediction),
}


def linear_schedule(num_train_timesteps=100):
    return NoiseSchedule(schedule_alphas_cumprod("linear", num_train_timesteps, 1e-3, 0.1))


def dummy_model(x_t, t):
    """Elementwise, so batching cannot change any element's numbers; depends on t like a network."""
    t = torch.as_tensor(t, dtype=torch.float32).reshape(-1, *([1] * (x_t.ndim - 1)))
    return 0.5 * torch.sin(x_t) + 1e-3 * t


def generators(seeds):
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def single_point_oracle(schedule, data_point, prediction):
    """model_fn returning the exact output when the data distribution is the single point ``data_point``."""

    def model_fn(x_t, t):
        x0 = data_point.expand_as(x_t)
        return schedule.training_target(x0, schedule.eps_from_x0(x0, x_t, t), t, prediction)

    return model_fn


# --- the contract every sampler passes ------------------------------------------------------------


@pytest.mark.parametrize("spatial", [(8, 6), (5, 4, 3)], ids=["2d", "3d"])
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("name", SAMPLERS)
def test_sampler_contract(name, prediction, spatial):
    schedule = linear_schedule()
    sampler = SAMPLERS[name](schedule, prediction)
    x_T = torch.randn(3, 2, *spatial, generator=torch.Generator().manual_seed(0))
    out = sample(dummy_model, x_T, sampler, 5, generators([1, 2, 3]))
    assert out.shape == x_T.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert sampler.timesteps[0] == schedule.num_train_timesteps - 1
    # deterministic given the generators, and a case's result does not depend on its batch
    again = sample(dummy_model, x_T, sampler, 5, generators([1, 2, 3]))
    alone = sample(dummy_model, x_T[1:2], sampler, 5, generators([2]))
    torch.testing.assert_close(again, out, rtol=0, atol=0)
    torch.testing.assert_close(alone, out[1:2], rtol=0, atol=0)
    # bf16 autocast network and inference mode: the running sample stays float32
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = sample(lambda x, t: dummy_model(x, t).bfloat16(), x_T, sampler, 5, generators([1, 2, 3]))
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    torch.testing.assert_close(low, out, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("name", SAMPLERS)
def test_samplers_recover_a_single_data_point(name, prediction):
    schedule = linear_schedule()
    data_point = torch.linspace(-1, 1, 12).reshape(1, 1, 3, 4)
    x_T = torch.randn(2, 1, 3, 4, generator=torch.Generator().manual_seed(0))
    out = sample(
        single_point_oracle(schedule, data_point, prediction),
        x_T,
        SAMPLERS[name](schedule, prediction),
        7,
        generators([4, 5]),
    )
    torch.testing.assert_close(out, data_point.expand_as(out), rtol=1e-4, atol=1e-4)


def gaussian_data_oracle(schedule, mu, tau):
    """x0 oracle for data x0 ~ N(mu, tau^2) per voxel: E[x0 | x_t], a Gaussian posterior mean."""

    def model_fn(x_t, t):
        alpha, sigma = schedule.scales(t, x_t)
        return mu + alpha * tau**2 * (x_t - alpha * mu) / (alpha**2 * tau**2 + sigma**2)

    return model_fn


@pytest.mark.parametrize(("name", "steps"), [("ddim", 200), ("dpmpp", 25), ("ddpm", 1000)])
def test_samplers_reach_a_gaussian_data_distribution(name, steps):
    schedule = NoiseSchedule(schedule_alphas_cumprod("cosine", 1000, 0, 0))
    x_T = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    out = sample(gaussian_data_oracle(schedule, 0.7, 0.3), x_T, SAMPLERS[name](schedule, "x0"), steps, generators([1]))
    assert out.mean().item() == pytest.approx(0.7, abs=0.02)
    assert out.std().item() == pytest.approx(0.3, rel=0.03)


def test_dpm_solver_pp_is_closer_than_ddim_at_few_steps():
    """Second order beats first order at 10 steps on the Gaussian oracle (Lu et al. 2022, fig. 1)."""
    schedule = NoiseSchedule(schedule_alphas_cumprod("cosine", 1000, 0, 0))
    oracle, x_T = (
        gaussian_data_oracle(schedule, 0.7, 0.3),
        torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)),
    )
    exact = sample(oracle, x_T, DDIMSampler(schedule, "x0"), 1000)
    ddim_error = (sample(oracle, x_T, DDIMSampler(schedule, "x0"), 10) - exact).abs().mean()
    dpmpp_error = (sample(oracle, x_T, DPMSolverPPSampler(schedule, "x0"), 10) - exact).abs().mean()
    assert dpmpp_error < 0.75 * ddim_error


# --- numerical agreement with reference implementations ----------------------------------------------


def run_diffusers(scheduler, model_fn, x_T, steps, seeds, **step_args):
    scheduler.set_timesteps(steps)
    x = x_T.clone()
    gens = generators(seeds) if seeds else None
    for t in scheduler.timesteps:
        x = scheduler.step(model_fn(x, int(t)), t, x, generator=gens, **step_args).prev_sample
    return x


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_diffusers(prediction, eta):
    diffusers = pytest.importorskip("diffusers")
    reference = diffusers.DDIMScheduler(
        num_train_timesteps=100,
        beta_start=1e-3,
        beta_end=0.1,
        clip_sample=False,
        set_alpha_to_one=True,
        prediction_type=DIFFUSERS_PREDICTION[prediction],
        timestep_spacing="trailing",
    )
    x_T = torch.randn(2, 1, 6, 5, generator=torch.Generator().manual_seed(0))
    expected = run_diffusers(reference, dummy_model, x_T, 10, [7, 8], eta=eta)
    ours = sample(dummy_model, x_T, DDIMSampler(linear_schedule(), prediction, eta=eta), 10, generators([7, 8]))
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_strided_ddpm_matches_diffusers(prediction):
    diffusers = pytest.importorskip("diffusers")
    reference = diffusers.DDPMScheduler(
        num_train_timesteps=100,
        beta_start=1e-3,
        beta_end=0.1,
        clip_sample=False,
        variance_type="fixed_small",
        prediction_type=DIFFUSERS_PREDICTION[prediction],
        timestep_spacing="trailing",
    )
    x_T = torch.randn(2, 1, 6, 5, generator=torch.Generator().manual_seed(0))
    expected = run_diffusers(reference, dummy_model, x_T, 20, [7, 8])
    ours = sample(dummy_model, x_T, DDPMSampler(linear_schedule(), prediction), 20, generators([7, 8]))
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("steps", [4, 20])
def test_dpm_solver_pp_matches_diffusers(prediction, steps):
    diffusers = pytest.importorskip("diffusers")
    reference = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=100,
        beta_start=1e-3,
        beta_end=0.1,
        algorithm_type="dpmsolver++",
        solver_order=2,
        prediction_type=DIFFUSERS_PREDICTION[prediction],
        timestep_spacing="trailing",
        final_sigmas_type="zero",
    )
    x_T = torch.randn(2, 1, 6, 5, generator=torch.Generator().manual_seed(0))
    expected = run_diffusers(reference, dummy_model, x_T, steps, None)
    ours = sample(dummy_model, x_T, DPMSolverPPSampler(linear_schedule(), prediction), steps)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_trailing_timesteps_are_steps_distinct_timesteps_from_the_last():
    for train in (21, 22, 100, 1000):
        for steps in range(1, train + 1, 1 if train < 200 else 37):
            timesteps = trailing_timesteps(train, steps)
            assert len(timesteps) == steps and timesteps[0] == train - 1 and min(timesteps) >= 0
            assert all(a > b for a, b in zip(timesteps, timesteps[1:], strict=False))


def test_trailing_timesteps_match_diffusers():
    diffusers = pytest.importorskip("diffusers")
    for train, steps in [(1000, 10), (1000, 7), (21, 21), (21, 5), (100, 1)]:
        reference = diffusers.DDIMScheduler(num_train_timesteps=train, timestep_spacing="trailing")
        reference.set_timesteps(steps)
        assert trailing_timesteps(train, steps) == tuple(reference.timesteps.tolist())


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_full_chain_ddpm_matches_monai(prediction):
    monai_prediction = DIFFUSERS_PREDICTION[prediction]
    reference = MonaiDDPM(
        num_train_timesteps=30,
        schedule="linear_beta",
        beta_start=1e-3,
        beta_end=0.2,
        clip_sample=False,
        prediction_type=monai_prediction,
    )
    sampler = DDPMSampler(NoiseSchedule(reference.alphas_cumprod), prediction)
    sampler.set_timesteps(30)
    x = expected = torch.randn(1, 2, 5, 4, generator=torch.Generator().manual_seed(0))
    reference_generator, ours_generators = torch.Generator().manual_seed(3), generators([3])
    for t in sampler.timesteps:
        expected, _ = reference.step(dummy_model(expected, t), t, expected, generator=reference_generator)
        x = sampler.step(dummy_model(x, t), t, x, ours_generators)
    torch.testing.assert_close(x, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_steps_match_monai(prediction, eta):
    reference = MonaiDDIM(
        num_train_timesteps=100,
        schedule="linear_beta",
        beta_start=1e-3,
        beta_end=0.1,
        clip_sample=False,
        prediction_type=DIFFUSERS_PREDICTION[prediction],
    )
    reference.set_timesteps(10)  # MONAI steps from t to t - 100 // 10, as trailing spacing does here
    sampler = DDIMSampler(NoiseSchedule(reference.alphas_cumprod), prediction, eta=eta)
    sampler.set_timesteps(10)
    x_t = torch.randn(1, 1, 6, 5, generator=torch.Generator().manual_seed(0))
    for t in sampler.timesteps:
        expected, _ = reference.step(dummy_model(x_t, t), t, x_t, eta=eta, generator=torch.Generator().manual_seed(t))
        torch.testing.assert_close(
            sampler.step(dummy_model(x_t, t), t, x_t, generators([t])), expected, rtol=1e-4, atol=1e-4
        )


# --- options ---------------------------------------------------------------------------------------------


def test_clip_x0_clamps_the_prediction():
    sampler = SingleStepSampler(linear_schedule(), "x0", clip_x0=1.0)
    out = sample(lambda x, t: torch.full_like(x, 5.0), torch.zeros(1, 1, 2, 2), sampler, 1)
    torch.testing.assert_close(out, torch.ones(1, 1, 2, 2))


def test_single_step_calls_the_network_once_at_its_timestep():
    calls = []
    sampler = SingleStepSampler(linear_schedule(), "x0", timestep=40)
    sample(lambda x, t: calls.append(t.tolist()) or x, torch.zeros(2, 1, 3, 3), sampler, 20)
    assert calls == [[40, 40]]


def test_make_sampler_builds_each_config_option():
    schedule = linear_schedule()
    expected = {"ddpm": DDPMSampler, "ddim": DDIMSampler, "dpmpp": DPMSolverPPSampler, "single_step": SingleStepSampler}
    for name, kind in expected.items():
        sampler = make_sampler(SamplingConfig(sampler=name, eta=0.3, clip_x0=2.0), schedule, "v")
        assert type(sampler) is kind and sampler.prediction == "v" and sampler.clip_x0 == 2.0
    assert make_sampler(SamplingConfig(sampler="ddim", eta=0.3), schedule, "v").eta == 0.3


def test_invalid_arguments_are_refused():
    schedule = linear_schedule()
    with pytest.raises(ValueError, match="steps=101"):
        DDIMSampler(schedule, "eps").set_timesteps(101)
    with pytest.raises(ValueError, match="eta=-1"):
        DDIMSampler(schedule, "eps", eta=-1)
    with pytest.raises(ValueError, match="prediction='sample'"):
        DDPMSampler(schedule, "sample")
    with pytest.raises(ValueError, match="set_timesteps"):
        DDIMSampler(schedule, "eps").step(torch.zeros(1, 1, 2, 2), 99, torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        sample(dummy_model, torch.zeros(3, 1, 2, 2), DDPMSampler(schedule, "eps"), 3, generators([1, 2]))
