import lightning as L
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


class _WithFloatBuffer(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(2))
        self.register_buffer("table", torch.zeros(2))  # a constant such as an index table, stored as float


def test_parameters_are_averaged_and_buffers_never_blended():
    module, ema = _WithFloatBuffer(), WarmupEMA(0.99)
    ema.setup(None, module, "fit")
    ema._average_model.update_parameters(module)  # the first update copies: the average starts at zeros
    with torch.no_grad():
        module.weight.fill_(1.0)
        module.table.fill_(1.0)
    for _ in range(2):
        ema._average_model.update_parameters(module)
    averaged = ema._average_model.module
    assert 0.0 < float(averaged.weight[0]) < 1.0  # an average of the old and new weights
    assert float(averaged.table[0]) in (0.0, 1.0)  # a buffer is one of its values, never a blend of them
