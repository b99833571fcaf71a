import torch

from oncodiff.training.ema import WarmupEMA, warmup_ema_fn


def test_warmup_forgets_the_initial_weights_quickly():
    fn = warmup_ema_fn(0.999)
    avg, current = torch.zeros(3), torch.ones(3)
    for n in range(100):
        avg = fn(avg, current, n)
    # Plain EMA at 0.999 would still hold 0.999**100 = 90 % of the zeros.
    assert float(avg[0]) > 0.99


def test_decay_caps_at_the_configured_value():
    fn = warmup_ema_fn(0.9)
    avg = fn(torch.zeros(1), torch.ones(1), 10_000)
    assert torch.allclose(avg, torch.tensor([0.1]))


def test_integer_tensors_are_copied_not_averaged():
    fn = warmup_ema_fn(0.999)
    index = torch.tensor([0, 1, 3, 7])
    out = index
    for n in range(50):
        out = fn(out, index, n)
    assert out.dtype == torch.long and torch.equal(out, index)


def test_buffers_are_not_averaged():
    assert WarmupEMA(0.99)._use_buffers is False
