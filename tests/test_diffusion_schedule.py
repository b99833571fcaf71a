import pytest
import torch
from monai.networks.schedulers import DDPMScheduler as MonaiDDPM

from oncodiff.config import DiffusionConfig
from oncodiff.diffusion import NoiseSchedule, pulsar_alphas_cumprod, schedule_alphas_cumprod

PREDICTIONS = ("eps", "v", "x0")


@pytest.mark.parametrize(
    ("ours", "monai_name"), [("linear", "linear_beta"), ("scaled_linear", "scaled_linear_beta"), ("cosine", "cosine")]
)
def test_schedules_match_monai(ours, monai_name):
    config = DiffusionConfig(schedule=ours, num_train_timesteps=50, beta_start=1e-3, beta_end=0.1)
    schedule_args = {} if ours == "cosine" else {"beta_start": 1e-3, "beta_end": 0.1}
    reference = MonaiDDPM(num_train_timesteps=50, schedule=monai_name, **schedule_args).alphas_cumprod
    torch.testing.assert_close(
        NoiseSchedule.from_config(config).alphas_cumprod.float(), reference, rtol=1e-5, atol=1e-7
    )


def test_pulsar_noise_levels_are_one_minus_alpha_bar():
    alphas_cumprod = pulsar_alphas_cumprod(21)
    assert alphas_cumprod.shape == (21,)
    torch.testing.assert_close(1 - alphas_cumprod[[0, 10, 20]], torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64))
    schedule = NoiseSchedule.from_config(DiffusionConfig(schedule="pulsar", num_train_timesteps=21))
    assert schedule.num_train_timesteps == 21
    assert schedule.snr(torch.tensor([10])).item() == pytest.approx(1.0)  # "50 % noise level": SNR 1


def test_add_noise_matches_monai():
    monai = MonaiDDPM(num_train_timesteps=100, schedule="linear_beta")
    schedule = NoiseSchedule(monai.alphas_cumprod)
    x0, eps = torch.randn(3, 2, 5, 6), torch.randn(3, 2, 5, 6)
    t = torch.tensor([0, 50, 99])
    torch.testing.assert_close(schedule.add_noise(x0, eps, t), monai.add_noise(x0, eps, t))
    torch.testing.assert_close(schedule.training_target(x0, eps, t, "v"), monai.get_velocity(x0, eps, t))


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("spatial", [(6, 5), (4, 5, 3)])
def test_training_target_converts_back_to_x0_and_eps(prediction, spatial):
    schedule = NoiseSchedule(schedule_alphas_cumprod("cosine", 200, 0, 0))
    x0, eps = torch.randn(3, 1, *spatial), torch.randn(3, 1, *spatial)
    for t in (torch.tensor([0, 100, 180]), 120):
        x_t = schedule.add_noise(x0, eps, t)
        output = schedule.training_target(x0, eps, t, prediction)
        x0_hat, eps_hat = schedule.predict_x0_and_eps(output, x_t, t, prediction)
        torch.testing.assert_close(x0_hat, x0, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(eps_hat, eps, rtol=1e-4, atol=1e-4)


def test_int_and_tensor_timesteps_agree():
    schedule = NoiseSchedule.from_config(DiffusionConfig())
    x0, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    torch.testing.assert_close(schedule.add_noise(x0, eps, 321), schedule.add_noise(x0, eps, torch.tensor([321, 321])))


@pytest.mark.parametrize(
    "alphas_cumprod", [[0.9], [0.9, 0.95, 0.5], [1.0, 0.5], [0.9, 0.0]], ids=["short", "increasing", "one", "zero"]
)
def test_invalid_schedules_are_refused(alphas_cumprod):
    with pytest.raises(ValueError, match="alphas_cumprod|at least 2"):
        NoiseSchedule(torch.tensor(alphas_cumprod))


def test_invalid_options_are_refused():
    schedule = NoiseSchedule.from_config(DiffusionConfig())
    with pytest.raises(ValueError, match="prediction='noise'"):
        schedule.predict_x0_and_eps(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), 3, "noise")
    with pytest.raises(ValueError, match="beta_start"):
        schedule_alphas_cumprod("linear", 10, 0.1, 0.01)
    with pytest.raises(ValueError, match="schedule='sigmoid'"):
        schedule_alphas_cumprod("sigmoid", 10, 1e-4, 0.02)


def test_truncated_schedule_keeps_the_low_noise_levels():
    from oncodiff.diffusion.schedule import truncate_at_noise_level

    alphas = 1 - torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    assert truncate_at_noise_level(alphas, 0.25).tolist() == pytest.approx([0.9, 0.8])
    with pytest.raises(ValueError, match="keeps 1 timestep"):
        truncate_at_noise_level(alphas, 0.15)
