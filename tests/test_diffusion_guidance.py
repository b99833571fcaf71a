import pytest
import torch

from oncodiff.diffusion import DDIMSampler, NoiseSchedule, guide, guided_model_fn, sample, schedule_alphas_cumprod


class TwoClassNetwork:
    """Output = x_t * 0.5 + offset, offset 1 for conditioned rows and -1 for null rows; logs its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, x_t, t, use_condition):
        self.calls.append((x_t.shape[0], use_condition.tolist()))
        offset = torch.where(use_condition, 1.0, -1.0).view(-1, *([1] * (x_t.ndim - 1)))
        return 0.5 * x_t + offset


def test_guide_known_answers():
    conditional, unconditional = torch.full((2, 1, 3, 3), 3.0), torch.full((2, 1, 3, 3), 1.0)
    torch.testing.assert_close(guide(conditional, unconditional, 1.0), conditional)
    torch.testing.assert_close(guide(conditional, unconditional, 0.0), unconditional)
    torch.testing.assert_close(guide(conditional, unconditional, 10.0), torch.full((2, 1, 3, 3), 21.0))
    assert guide(conditional.bfloat16(), unconditional.bfloat16(), 2.0).dtype == torch.float32


@pytest.mark.parametrize("spatial", [(4, 5), (3, 4, 2)], ids=["2d", "3d"])
def test_scale_one_and_zero_take_one_plain_pass(spatial):
    x_t, t = torch.randn(3, 1, *spatial), torch.full((3,), 7)
    for scale, use in [(1.0, True), (0.0, False)]:
        network = TwoClassNetwork()
        out = guided_model_fn(network, scale)(x_t, t)
        assert network.calls == [(3, [use] * 3)]
        torch.testing.assert_close(out, 0.5 * x_t + (1.0 if use else -1.0))


def test_other_scales_take_one_doubled_pass():
    network, x_t, t = TwoClassNetwork(), torch.randn(2, 1, 4, 4), torch.full((2,), 7)
    out = guided_model_fn(network, 4.0)(x_t, t)
    assert network.calls == [(4, [True, True, False, False])]
    torch.testing.assert_close(out, guide(0.5 * x_t + 1, 0.5 * x_t - 1, 4.0))


def test_guiding_x0_equals_guiding_eps():
    """Conversions are affine in the output with weights summing to one, so the space does not matter."""
    schedule = NoiseSchedule(schedule_alphas_cumprod("cosine", 100, 0, 0))
    x_t, t = torch.randn(2, 1, 5, 5), torch.tensor([40, 80])
    x0_conditional, x0_unconditional = torch.randn(2, 1, 5, 5), torch.randn(2, 1, 5, 5)
    guided_x0 = guide(x0_conditional, x0_unconditional, 7.5)
    eps = [schedule.eps_from_x0(x0, x_t, t) for x0 in (guided_x0, x0_conditional, x0_unconditional)]
    torch.testing.assert_close(eps[0], guide(eps[1], eps[2], 7.5), rtol=1e-4, atol=1e-4)


def test_guided_sampling_under_autocast_and_inference_mode():
    schedule = NoiseSchedule(schedule_alphas_cumprod("cosine", 100, 0, 0))
    network = TwoClassNetwork()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = sample(guided_model_fn(network, 3.0), torch.randn(2, 1, 4, 4), DDIMSampler(schedule, "x0"), 4)
    assert out.dtype == torch.float32 and torch.isfinite(out).all() and len(network.calls) == 4
