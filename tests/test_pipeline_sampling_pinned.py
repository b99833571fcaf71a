"""draw_samples pinned: fixed seeds give the samples recorded in tests/data/sampling_pinned.safetensors.

The record was written by the sampling loop as it stood before the latent model moved behind the pixel
model's interface and the noised-source start became an explicit initial-state step; the refactor left
every sample bit-identical on the machine that wrote it. The latent drift entry was rewritten once since, on
purpose, when a latent drift began to decode as a residual on the pre scan. Tolerance 1e-5 covers float sums that another
CPU's kernels order differently. Regenerate (only for an intended change of the samples) with
``PYTHONPATH=src python tests/test_pipeline_sampling_pinned.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from oncodiff.cohort.schema import ClinicalVariable
from oncodiff.config import Config, ModelConfig, load_config
from oncodiff.models import ConditionalDenoiser, Conditions
from oncodiff.models.factory import ModelLayout, build_network, denoiser_arguments
from oncodiff.pipeline.sampling import draw_samples, sample_generators

RECORD = Path(__file__).parent / "data" / "sampling_pinned.safetensors"
VARIABLES = (ClinicalVariable(name="age", type="numeric", group="demographics"),)
MODEL = dict(channels=(8, 16), attention_levels=(False, True), num_head_channels=8, norm_num_groups=8, token_dim=8,
             class_label="response")
KEYS, N = ["P001/L1/week6", "P002/L1/day90"], 3


def _pixel(target_channels: int = 1, **model) -> ConditionalDenoiser:
    torch.manual_seed(0)
    net = ConditionalDenoiser(2, target_channels, 2, VARIABLES, 2, **denoiser_arguments(ModelConfig(**{**MODEL, **model})))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # MONAI zero-initialises output convolutions: perturb so the condition shows
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return net.eval()


def _config(diffusion: dict | None = None, model: dict | None = None, **sampling) -> Config:
    return Config.model_validate({
        "model": {**MODEL, **(model or {})}, "training": {"precision": "32"},
        "diffusion": {"num_train_timesteps": 50, "prediction": "x0", **(diffusion or {})},
        "sampling": {"sampler": "ddim", "eta": 1.0, "steps": 3, **sampling}})


def _cond() -> Conditions:
    g = torch.Generator().manual_seed(2)
    pre = torch.rand(2, 1, 8, 8, generator=g)
    mask = torch.zeros_like(pre)
    mask[..., 2:5, 2:5] = 1
    return Conditions(image=torch.cat([pre, mask], dim=1), clinical=torch.tensor([[0.5], [-1.0]]),
                      clinical_missing=torch.tensor([[False], [True]]), days=torch.tensor([42.0, 90.0]),
                      class_label=torch.tensor([1, 2]))


def _latent() -> tuple[torch.nn.Module, Config]:
    config = load_config("gbm-ldm", ["model.autoencoder.channels=[8, 8]", "model.channels=[16, 16]",
                                     "model.attention_levels=[false, true]", "model.num_head_channels=16",
                                     "model.norm_num_groups=8", "data.crop_size=[8, 8]", "sampling.steps=3",
                                     "diffusion.target=drift", 'training.precision="32"',
                                     "model.class_label=response", "sampling.guidance_scale=2.0"])
    layout = ModelLayout(2, ("pre", "tumor_mask"), VARIABLES, crop_size=(8, 8))
    torch.manual_seed(3)
    net = build_network(config, layout).eval()
    cond = _cond()
    net.codec.calibrate(cond.image[:, :1], cond.image[:, 1:2])
    return net, config


def pinned_draws() -> dict[str, torch.Tensor]:
    """Every sampling path: guidance with per-sample classes, the PULSAR noised-source start (post and drift
    targets, and with a generated mask), and a latent model."""
    cond, generators = _cond(), sample_generators(0, KEYS, N)
    classes = torch.tensor([[0, 1, 1], [1, 0, 2]])
    latent, latent_config = _latent()
    runs = {
        "pixel_guided_classes": (_pixel(), _config(guidance_scale=2.5), {"sample_classes": classes}),
        "pixel_noised_source_post": (_pixel(), _config({"source": "pre"}), {}),
        "pixel_noised_source_drift": (_pixel(), _config({"source": "pre", "target": "drift"}), {}),
        "pixel_noised_source_mask": (_pixel(2, generate_mask=True),
                                     _config({"source": "pre"}, {"generate_mask": True}), {}),
        "latent_guided_drift": (latent, latent_config, {"guidance_drop_clinical": True}),
    }
    return {name: draw_samples(net, config, cond, N, generators, **kwargs).contiguous()
            for name, (net, config, kwargs) in runs.items()}


@pytest.fixture(scope="module")
def draws(one_torch_thread):
    return pinned_draws()


@pytest.mark.parametrize("name", ["pixel_guided_classes", "pixel_noised_source_post", "pixel_noised_source_drift",
                                  "pixel_noised_source_mask", "latent_guided_drift"])
def test_samples_match_the_record(draws, name):
    torch.testing.assert_close(draws[name], load_file(RECORD)[name], rtol=1e-5, atol=1e-5)


if __name__ == "__main__":
    torch.set_num_threads(1)
    RECORD.parent.mkdir(exist_ok=True)
    save_file(pinned_draws(), str(RECORD))
    print(f"wrote {RECORD}")
