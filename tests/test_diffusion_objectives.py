import pytest
import torch
from skimage.metrics import structural_similarity

from oncodiff.config import DiffusionConfig
from oncodiff.diffusion import DiffusionLoss, NoiseSchedule, schedule_alphas_cumprod

PREDICTIONS = ("eps", "v", "x0")


def schedule():
    return NoiseSchedule(schedule_alphas_cumprod("linear", 100, 1e-3, 0.1))


def generators(seeds):
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def oracle(noise_schedule, x0, prediction):
    """The exact network: it knows x0, so it can return the true target for any (x_t, t)."""

    def model_fn(x_t, t):
        return noise_schedule.training_target(x0, noise_schedule.eps_from_x0(x0, x_t, t), t, prediction)

    return model_fn


class Recorder:
    """A model_fn that returns zeros and remembers what it was called with."""

    def __call__(self, x_t, t):
        self.x_t, self.t = x_t, t
        return torch.zeros_like(x_t)


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("spatial", [(12, 10), (8, 9, 7)], ids=["2d", "3d"])
def test_the_exact_network_has_zero_loss(prediction, spatial):
    noise_schedule, x0 = schedule(), torch.rand(3, 1, *spatial)
    loss = DiffusionLoss(noise_schedule, prediction, ssim_weight=0.1)
    value, parts = loss(oracle(noise_schedule, x0, prediction), x0, generators([0, 1, 2]))
    assert value.shape == () and set(parts) == {"mse", "ssim", "loss"}
    assert value.item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_source_image_is_noised_but_targets_stay_relative_to_x0(prediction):
    """PULSAR: x_t is the noised pre-treatment scan; the exact network still has zero loss."""
    noise_schedule, x0, pre = schedule(), torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    recorder = Recorder()
    DiffusionLoss(noise_schedule, prediction)(recorder, x0, generators([0, 1]), source=pre)
    gens = generators([0, 1])
    for g in gens:  # each generator draws t first, then eps
        torch.randint(100, (1,), generator=g)
    eps = torch.stack([torch.randn(1, 8, 8, generator=g) for g in gens])
    torch.testing.assert_close(recorder.x_t, noise_schedule.add_noise(pre, eps, recorder.t))
    value, _ = DiffusionLoss(noise_schedule, prediction)(
        oracle(noise_schedule, x0, prediction), x0, generators([0, 1]), source=pre
    )
    assert value.item() == pytest.approx(0.0, abs=1e-4)


def test_mse_known_answer_with_weight_map_and_min_snr():
    noise_schedule, x0 = schedule(), torch.rand(4, 1, 6, 6)
    weight_map = 1 + 2 * (torch.rand(4, 1, 6, 6) > 0.5).float()
    recorder = Recorder()
    value, parts = DiffusionLoss(noise_schedule, "x0")(recorder, x0, generators(range(4)), weight_map=weight_map)
    assert value.item() == pytest.approx((weight_map * x0**2).mean().item(), rel=1e-5)  # zero output, x0 target
    value, _ = DiffusionLoss(noise_schedule, "x0", min_snr_gamma=5.0)(recorder, x0, generators(range(4)))
    factor = noise_schedule.snr(recorder.t).clamp(max=5.0)  # Hang et al. 2023: x0 weight min(SNR, gamma)
    assert value.item() == pytest.approx((factor * (x0**2).flatten(1).mean(1)).mean().item(), rel=1e-5)


def test_l1_known_answer_with_weight_map():
    noise_schedule, x0 = schedule(), torch.rand(4, 1, 6, 6) - 0.5
    weight_map = 1 + 2 * (torch.rand(4, 1, 6, 6) > 0.5).float()
    value, parts = DiffusionLoss(noise_schedule, "x0", error="l1")(Recorder(), x0, generators(range(4)),
                                                                   weight_map=weight_map)
    assert set(parts) == {"l1", "loss"}
    assert value.item() == pytest.approx((weight_map * x0.abs()).mean().item(), rel=1e-5)


@pytest.mark.parametrize(("error", "expected"), [("mse", "mean"), ("l1", "median")])
def test_a_blind_denoiser_learns_the_mean_or_the_median_of_a_bimodal_target(error, expected):
    """Three quarters of the targets stay (+0.05), a quarter shrink (-0.5), and the network cannot tell which:
    MSE fits the mixture mean (-0.0875), L1 the median (+0.05), the course with the lower expected MAE."""
    x0 = torch.tensor([0.05, 0.05, 0.05, -0.5]).view(4, 1, 1, 1).expand(4, 1, 4, 4).contiguous()
    course = torch.zeros((), requires_grad=True)
    optimiser = torch.optim.Adam([course], lr=0.01)
    loss = DiffusionLoss(schedule(), "x0", error=error)
    for step in range(400):
        optimiser.zero_grad()
        value, _ = loss(lambda x_t, t: course.expand_as(x_t), x0, generators(range(4 * step, 4 * step + 4)))
        value.backward()
        optimiser.step()
    target = {"mean": x0.mean().item(), "median": 0.05}[expected]
    assert course.item() == pytest.approx(target, abs=0.015)


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [("eps", lambda snr: snr.clamp(max=5) / snr), ("v", lambda snr: snr.clamp(max=5) / (snr + 1))],
)
def test_min_snr_factor_per_parameterisation(prediction, expected):
    loss = DiffusionLoss(schedule(), prediction, min_snr_gamma=5.0)
    t = torch.tensor([0, 30, 99])
    torch.testing.assert_close(loss._min_snr_factor(t), expected(loss.schedule.snr(t)))


def test_ssim_part_matches_scikit_image():
    x0 = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    blurred = torch.nn.functional.avg_pool2d(x0, 3, stride=1, padding=1)
    value, parts = DiffusionLoss(schedule(), "x0", ssim_weight=1.0)(lambda x_t, t: blurred, x0, generators([0]))
    data_range = (x0.max() - x0.min()).item()
    reference = structural_similarity(
        blurred[0, 0].numpy(),
        x0[0, 0].numpy(),
        data_range=data_range,
        win_size=7,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert parts["ssim"].item() == pytest.approx(1 - reference, abs=5e-3)
    assert value.item() == pytest.approx(parts["ssim"].item())


def test_drift_head_loss_is_weighted_in():
    noise_schedule, x0 = schedule(), torch.rand(2, 1, 8, 8)
    exact = oracle(noise_schedule, x0, "x0")
    loss = DiffusionLoss(noise_schedule, "x0", drift_loss_weight=3.0)
    value, parts = loss(lambda x_t, t: (exact(x_t, t), torch.zeros_like(x_t)), x0, drift_target=torch.ones(2, 1, 8, 8))
    assert parts["drift"].item() == pytest.approx(1.0) and value.item() == pytest.approx(3.0, abs=1e-5)
    with pytest.raises(ValueError, match="drift_target"):
        loss(lambda x_t, t: (exact(x_t, t), x_t), x0)
    with pytest.raises(ValueError, match=r"\(prediction, drift map\)"):
        loss(exact, x0, drift_target=x0)


def test_draws_are_per_element():
    x0 = torch.rand(3, 1, 8, 8)
    batched, alone = Recorder(), Recorder()
    loss = DiffusionLoss(schedule(), "eps")
    loss(batched, x0, generators([5, 6, 7]))
    loss(alone, x0[1:2], generators([6]))
    assert batched.t[1] == alone.t[0]
    torch.testing.assert_close(batched.x_t[1:2], alone.x_t, rtol=0, atol=0)


def test_lognormal_noise_levels_follow_edm_distribution():
    # Cosine schedule, T = 1000: log sigma_t spans about -7.7 .. +6.6, so N(-1.2, 1.2^2) is well inside it and
    # the drawn timesteps' log sigma must have EDM's mean and std (up to the grid's spacing and sampling error).
    config = DiffusionConfig(schedule="cosine", noise_sampling="lognormal")
    loss = DiffusionLoss.from_config(config)
    torch.manual_seed(0)
    t = loss.draw_timesteps(20000, None, torch.device("cpu"))
    ab = loss.schedule.alphas_cumprod[t]
    log_sigma = 0.5 * ((1 - ab) / ab).log()
    assert abs(log_sigma.mean().item() - -1.2) < 0.03 and abs(log_sigma.std().item() - 1.2) < 0.03
    default = DiffusionLoss.from_config(DiffusionConfig(schedule="cosine"))
    assert default.noise_sampling == "uniform"  # auto: uniform, unless the 3D route (data/route.py) chose lognormal
    uniform = default.draw_timesteps(20000, None, "cpu")
    assert t.float().median() < uniform.float().median() - 200  # more low-noise draws than uniform t
    # a shifted mean moves the draws to more noise, and an extreme one clamps at the schedule's ends
    high = DiffusionLoss.from_config(DiffusionConfig(noise_sampling="lognormal", lognormal_mean=1.0))
    assert high.draw_timesteps(2000, None, "cpu").float().median() > t.float().median()
    ends = DiffusionLoss.from_config(DiffusionConfig(noise_sampling="lognormal", lognormal_mean=40.0))
    assert (ends.draw_timesteps(100, None, "cpu") == 999).all()


def test_lognormal_draws_are_per_element():
    loss = DiffusionLoss(schedule(), "x0", noise_sampling="lognormal")
    batched = loss.draw_timesteps(3, generators([5, 6, 7]), "cpu")
    assert batched[1] == loss.draw_timesteps(1, generators([6]), "cpu")[0]
    assert batched.dtype == torch.int64 and ((batched >= 0) & (batched < 100)).all()
    # each t is the timestep whose log sigma is nearest the element's own draw
    ab = loss.schedule.alphas_cumprod
    table = 0.5 * ((1 - ab) / ab).log()
    for seed, t in zip([5, 6, 7], batched):
        draw = -1.2 + 1.2 * torch.randn((), generator=torch.Generator().manual_seed(seed)).double()
        assert t == (table - draw).abs().argmin()


def test_bf16_autocast_network_trains():
    network = torch.nn.Conv3d(1, 1, 3, padding=1)
    loss = DiffusionLoss.from_config(DiffusionConfig(prediction="v", ssim_weight=0.1, min_snr_gamma=5.0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value, parts = loss(lambda x_t, t: network(x_t), torch.rand(2, 1, 8, 8, 8))
    assert value.dtype == torch.float32 and torch.isfinite(value)
    value.backward()
    assert network.weight.grad is not None and torch.isfinite(network.weight.grad).all()


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match="ssim_weight"):
        DiffusionLoss(schedule(), "x0", ssim_weight=1.5)
    with pytest.raises(ValueError, match="min_snr_gamma"):
        DiffusionLoss(schedule(), "x0", min_snr_gamma=0.0)
    with pytest.raises(ValueError, match="prediction"):
        DiffusionLoss(schedule(), "noise")
    with pytest.raises(ValueError, match="noise_sampling"):
        DiffusionLoss(schedule(), "x0", noise_sampling="edm")
    with pytest.raises(ValueError, match="lognormal_std"):
        DiffusionLoss(schedule(), "x0", noise_sampling="lognormal", lognormal_std=0.0)
    with pytest.raises(ValueError, match="error='l2'"):
        DiffusionLoss(schedule(), "x0", error="l2")
    with pytest.raises(ValueError, match="weight_map of shape"):
        DiffusionLoss(schedule(), "x0")(Recorder(), torch.rand(2, 1, 4, 4), weight_map=torch.ones(2, 1, 3, 4))
