"""The stage modules (autoencoder, contrastive, latent diffusion, ControlNet) and init-from / freezing."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from oncodiff.cohort.schema import ClinicalVariable
from oncodiff.config import Config
from oncodiff.errors import ConfigError, OncodiffError
from oncodiff.models import ConditionalDenoiser, LatentCodec
from oncodiff.models.factory import ModelLayout, build_network
from oncodiff.pipeline.export import save_export
from oncodiff.training.init import component_prefixes, freeze_parameters, prepare_network
from oncodiff.training.module import DiffusionModule
from oncodiff.training.stages import (
    AutoencoderModule,
    ContrastiveModule,
    ControlNetModule,
    LatentDiffusionModule,
    module_class,
)

VARIABLES = (
    ClinicalVariable(name="age", type="numeric", group="demographics"),
    ClinicalVariable(name="nlr", type="numeric", group="blood"),
)
ANATOMY = ("vessels", "lobes")
SHAPES = {2: (16, 16), 3: (16, 16, 8)}
TINY = {
    "model.channels": [8, 16], "model.attention_levels": [False, True], "model.num_head_channels": 8,
    "model.norm_num_groups": 8, "model.token_dim": 8, "model.control_embedding_width": 4,
    "model.autoencoder.channels": [8, 16], "model.autoencoder.latent_channels": 2,
    "model.autoencoder.norm_num_groups": 8, "model.autoencoder.codebook_size": 16,
    "model.anatomy_encoder.width": 4, "model.anatomy_encoder.depth": 2, "model.anatomy_encoder.projection_dim": 8,
    "diffusion.num_train_timesteps": 50, "training.warmup_steps": 0,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_config(dims: int = 2, **overrides) -> Config:
    """A tiny config; keyword names use __ for dots: training__stage="autoencoder"."""
    settings = {**TINY, "data.dims": dims, "data.crop_size": list(SHAPES[dims])}
    settings.update({key.replace("__", "."): value for key, value in overrides.items()})
    return Config().with_overrides(settings)


def make_layout(dims: int = 2, clinical=VARIABLES, anatomy=ANATOMY) -> ModelLayout:
    return ModelLayout(spatial_dims=dims, image_condition_names=("pre", "tumor_mask", *anatomy),
                       clinical=tuple(clinical), anatomy=tuple(anatomy), crop_size=SHAPES[dims])


def make_batch(dims: int = 2, batch: int = 3, seed: int = 0, n_anatomy: int = 2, n_clinical: int = 2) -> dict:
    """A training batch as in CONTRACTS section 1."""
    g = torch.Generator().manual_seed(seed)
    shape = SHAPES[dims]
    return {
        "pre": torch.rand(batch, 1, *shape, generator=g),
        "post": torch.rand(batch, 1, *shape, generator=g),
        "tumor_mask": (torch.rand(batch, 1, *shape, generator=g) > 0.7).float(),
        "post_mask": (torch.rand(batch, 1, *shape, generator=g) > 0.7).float(),
        "has_post_mask": torch.tensor([True, False, True, True][:batch]),
        "anatomy": (torch.rand(batch, n_anatomy, *shape, generator=g) > 0.5).float(),
        "clinical": torch.randn(batch, n_clinical, generator=g),
        "clinical_missing": torch.rand(batch, n_clinical, generator=g) > 0.7,
        "days": torch.tensor([42.0, 90.0, 180.0, 30.0][:batch]),
        "response": torch.tensor([1, 0, -1, 1][:batch]),
        "survival_time": torch.tensor([300.0, float("nan"), 700.0, 20.0][:batch]),
        "survival_event": torch.tensor([1.0, float("nan"), 0.0, 1.0][:batch]),
        "survival_class2": torch.tensor([0, -1, 1, 0][:batch]),
        "survival_class4": torch.tensor([0, -1, 3, 1][:batch]),
        "patient_id": [f"P{i}" for i in range(batch)], "lesion_id": ["L1"] * batch, "timepoint": ["w6"] * batch,
        "index": torch.arange(batch),
    }


def randomize(net: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """MONAI zero-initialises output convolutions; perturb so every input can show."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return net


def export(tmp_path, name: str, module: L.LightningModule, layout: ModelLayout) -> str:
    return str(save_export(tmp_path / name, module.net, module.config, layout))


def same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


# ------------------------------------------------------------------------------------------- autoencoder


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kind", ["vqvae", "kl"])
def test_autoencoder_objective(dims, kind):
    torch.manual_seed(0)
    config = make_config(dims, training__stage="autoencoder", model__latent=kind)
    module = AutoencoderModule(config, make_layout(dims), total_steps=10)
    batch = make_batch(dims)
    loss, parts = module.objective(batch, validation=False)
    regulariser = "kl" if kind == "kl" else "vq"
    assert {"image_l1", f"image_{regulariser}", "mask_l1", f"mask_{regulariser}", "loss"} <= set(parts)
    loss.backward()
    assert all(p.grad is not None for p in module.net.image.network.encoder.parameters())
    assert all(p.grad is not None for p in module.net.mask.network.encoder.parameters())
    _, validation = module.objective(batch, validation=True)
    assert validation["psnr"] > 0 and -1 <= validation["ssim"] <= 1


def test_mask_autoencoder_dice_term_punishes_an_empty_mask():
    """L1 alone scores an all-empty reconstruction of a small tumour well; the soft Dice term does not."""
    from oncodiff.training.stages import SOFT_DICE

    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 6:9, 6:9] = 1
    assert float(SOFT_DICE(torch.zeros_like(mask), mask)) > 0.85 and float(SOFT_DICE(mask, mask)) < 1e-6
    torch.manual_seed(0)
    with_dice = AutoencoderModule(make_config(2, training__stage="autoencoder", model__latent="vqvae"),
                                  make_layout(2), total_steps=10)
    without = AutoencoderModule(make_config(2, training__stage="autoencoder", model__latent="vqvae",
                                            model__autoencoder__mask_dice_weight=0.0), make_layout(2), total_steps=10)
    _, parts = with_dice.objective(make_batch(2), validation=False)
    _, plain = without.objective(make_batch(2), validation=False)
    assert parts["mask_dice_loss"] > 0 and "mask_dice_loss" not in plain


def test_adversarial_term_trains_the_discriminator_only_on_its_own_loss():
    torch.manual_seed(0)
    config = make_config(training__stage="autoencoder", model__latent="vqvae",
                         model__autoencoder__adversarial_weight=0.5)
    module = AutoencoderModule(config, make_layout(), total_steps=10)
    _, parts = module.objective(make_batch(), validation=False)
    assert {"generator", "discriminator"} <= set(parts)
    adversarial = module.adversarial
    images = torch.rand(4, 1, 16, 16)
    reconstruction = torch.rand(4, 1, 16, 16, requires_grad=True)
    total, terms = adversarial(images, reconstruction)
    total.backward()
    with_generator = [p.grad.clone() for p in adversarial.discriminator.parameters()]
    assert reconstruction.grad.abs().sum() > 0  # the generator term reaches the reconstruction
    adversarial.discriminator.zero_grad()
    _, terms = adversarial(images, reconstruction.detach())
    terms["discriminator"].backward()
    for a, b in zip(with_generator, adversarial.discriminator.parameters()):
        torch.testing.assert_close(a, b.grad)


# ------------------------------------------------------------------------------------------- contrastive


@pytest.mark.parametrize("dims, positives", [(2, "views"), (2, "anatomy"), (3, "views")])
def test_contrastive_objective(dims, positives):
    torch.manual_seed(0)
    config = make_config(dims, training__stage="contrastive", model__anatomy_encoder__positives=positives)
    module = ContrastiveModule(config, make_layout(dims), total_steps=10)
    batch = make_batch(dims, batch=4)
    loss, parts = module.objective(batch, validation=False)
    assert torch.isfinite(loss) and 0 <= parts["positive_nearest"] <= 1
    loss.backward()
    assert all(p.grad is not None for p in module.net.parameters())
    first, _ = module.objective(batch, validation=True)
    second, _ = module.objective(batch, validation=True)
    assert float(first.detach()) == float(second.detach())  # validation views are drawn from per-case seeds


def test_a_few_contrastive_steps_tell_cases_apart():
    torch.manual_seed(0)
    module = ContrastiveModule(make_config(training__stage="contrastive"), make_layout(), total_steps=20)
    batch = make_batch(batch=6)
    grid = torch.stack(torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij"))
    distance = ((grid - 7.5) ** 2).sum(0).sqrt()
    radius = torch.arange(6.0)[:, None, None] + 1.5  # case i: vessels a disc of radius 1.5 + i, lobes half that
    batch["anatomy"] = torch.stack([distance <= radius, distance <= radius * 0.5 + 1], dim=1).float()
    optimizer = torch.optim.Adam(module.net.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss, _ = module.objective(batch, validation=False)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert min(losses[-5:]) < losses[0] - 0.15


def test_contrastive_anatomy_positives_need_two_structures():
    config = make_config(training__stage="contrastive", model__anatomy_encoder__positives="anatomy")
    with pytest.raises(OncodiffError, match="positives=anatomy"):
        ContrastiveModule(config, make_layout(anatomy=("lung",)), total_steps=10)


@pytest.mark.parametrize("stage", ["autoencoder", "contrastive"])
def test_stage_modules_run_in_a_lightning_trainer(stage):
    torch.manual_seed(0)
    config = make_config(training__stage=stage, model__latent="kl")
    module = module_class(config)(config, make_layout(), total_steps=4)
    before = [p.detach().clone() for p in module.net.parameters() if p.requires_grad]
    batches = DataLoader([make_batch(seed=s) for s in range(2)], batch_size=None)
    trainer = L.Trainer(fast_dev_run=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, batches, batches)
    after = [p for p in module.net.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


# -------------------------------------------------------------------------------------- latent diffusion


def autoencoder_export(tmp_path, dims: int = 2, kind: str = "vqvae") -> tuple[str, AutoencoderModule]:
    torch.manual_seed(0)
    config = make_config(dims, training__stage="autoencoder", model__latent=kind)
    module = AutoencoderModule(config, make_layout(dims), total_steps=1)
    return export(tmp_path, "autoencoder", module, make_layout(dims)), module


def test_predict_and_calibrate_refuse_a_stage_that_does_not_generate_follow_ups(tmp_path):
    from oncodiff.errors import OncodiffError
    from oncodiff.pipeline import predict
    from oncodiff.pipeline.predict import calibrate_export

    run, _ = autoencoder_export(tmp_path)
    with pytest.raises(OncodiffError, match="'autoencoder' stage, which does not generate follow-ups"):
        predict(run, tmp_path / "cohort", tmp_path / "out")
    with pytest.raises(OncodiffError, match="does not generate follow-ups"):
        calibrate_export(run, tmp_path / "cohort", ["P001"])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dims", [2, 3])
def test_latent_diffusion_trains_the_denoiser_in_the_frozen_latent_space(tmp_path, dims):
    run, autoencoder = autoencoder_export(tmp_path, dims)
    config = make_config(dims, training__stage="latent_diffusion", model__latent="vqvae", training__init_from=run)
    module = module_class(config)(config, make_layout(dims), total_steps=10)
    assert isinstance(module, LatentDiffusionModule)
    assert same_tensors(module.net.codec, autoencoder.net)
    assert not any(p.requires_grad for p in module.net.codec.parameters())
    assert module.init_report.trainable_parameters == sum(p.numel() for p in module.net.denoiser.parameters())
    optimised = {id(p) for group in module.configure_optimizers()["optimizer"].param_groups for p in group["params"]}
    assert optimised == {id(p) for p in module.net.denoiser.parameters()}
    batch = make_batch(dims)
    loss, parts = module.objective(batch, validation=False)
    assert module.net.codec.calibrated and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None for p in module.net.codec.parameters())
    assert module.net.base.unet.out[-1].conv.weight.grad.abs().sum() > 0
    first, _ = module.objective(batch, validation=True)
    second, _ = module.objective(batch, validation=True)
    assert float(first.detach()) == float(second.detach())


def test_latent_diffusion_needs_autoencoders(tmp_path):
    config = make_config(training__stage="diffusion")
    run = export(tmp_path, "pixel", DiffusionModule(config, make_layout(), 1), make_layout())
    latent = make_config(training__stage="latent_diffusion", model__latent="vqvae", training__init_from=run)
    with pytest.raises(OncodiffError, match="does not fit"):
        LatentDiffusionModule(latent, make_layout(), total_steps=1)


# --------------------------------------------------------------------------------------------- ControlNet


def diffusion_export(tmp_path, dims: int = 2, **overrides) -> tuple[str, DiffusionModule]:
    torch.manual_seed(0)
    config = make_config(dims, training__stage="diffusion", **overrides)
    module = DiffusionModule(config, make_layout(dims), total_steps=1)
    randomize(module.net)
    return export(tmp_path, "diffusion", module, make_layout(dims)), module


@pytest.mark.parametrize("dims", [2, 3])
def test_controlnet_starts_as_the_frozen_denoiser(tmp_path, dims):
    run, pretrained = diffusion_export(tmp_path, dims)
    config = make_config(dims, training__stage="controlnet", model__control="pre", training__init_from=run)
    module = module_class(config)(config, make_layout(dims), total_steps=10)
    assert isinstance(module, ControlNetModule)
    assert same_tensors(module.net.denoiser, pretrained.net)
    assert not any(p.requires_grad for p in module.net.denoiser.parameters())
    assert module.init_report.copied_to_controlnet  # the ControlNet starts from the denoiser's weights
    batch = make_batch(dims)
    loss, _ = module.objective(batch, validation=True)
    reference, _ = pretrained.objective(batch, validation=True)
    assert float(loss.detach()) == float(reference.detach())
    loss, _ = module.objective(batch, validation=False)
    loss.backward()
    assert all(p.grad is None for p in module.net.denoiser.parameters())
    assert module.net.controlnet.controlnet.controlnet_mid_block.conv.weight.grad.abs().sum() > 0


def test_anatomy_control_uses_the_frozen_contrastive_encoders(tmp_path):
    run, _ = diffusion_export(tmp_path)
    contrastive = ContrastiveModule(make_config(training__stage="contrastive"), make_layout(), total_steps=1)
    randomize(contrastive.net)
    encoders = export(tmp_path, "contrastive", contrastive, make_layout())
    settings = dict(training__stage="controlnet", model__control="anatomy", training__init_from=run)
    module = ControlNetModule(make_config(**settings, training__anatomy_from=encoders), make_layout(), 10)
    assert same_tensors(module.net.anatomy_encoders, contrastive.net)
    assert not any(p.requires_grad for p in module.net.anatomy_encoders.parameters())
    loss, _ = module.objective(make_batch(), validation=False)
    assert torch.isfinite(loss)
    with pytest.raises(OncodiffError, match="training.anatomy_from"):
        ControlNetModule(make_config(**settings), make_layout(), 10)


def test_second_stage_loads_the_controlnet_and_trains_the_new_modules(tmp_path):
    # ImmunoDiff: a denoiser and ControlNet pre-trained without clinical data, then the cbi-Adapter on a
    # treated cohort. Modules new to stage 2 (cbi-Adapter, class embeddings) train; loaded ones stay frozen.
    public = make_layout(clinical=())
    torch.manual_seed(0)
    stage1 = make_config(training__stage="diffusion", model__class_label="none", model__clinical="cbi")
    pretrained = randomize(DiffusionModule(stage1, public, 1))
    base = export(tmp_path, "base", pretrained, public)
    control1 = make_config(training__stage="controlnet", model__control="pre", model__class_label="none",
                           model__clinical="cbi", training__init_from=base)
    first = randomize(ControlNetModule(control1, public, 1).net, seed=2)
    run = str(save_export(tmp_path / "controlnet", first, control1, public))
    control2 = make_config(training__stage="controlnet", model__control="pre", model__clinical="cbi",
                           training__init_from=run)
    module = ControlNetModule(control2, make_layout(), total_steps=10)
    report = module.init_report
    assert not report.copied_to_controlnet
    torch.testing.assert_close(module.net.controlnet.state_dict()["controlnet.conv_in.conv.weight"],
                               first.controlnet.state_dict()["controlnet.conv_in.conv.weight"])
    trainable = {name for name, p in module.net.named_parameters() if p.requires_grad}
    assert any(name.startswith("denoiser.cbi_adapter.") for name in trainable)
    assert "denoiser.unet.class_embedding.weight" in trainable
    assert "denoiser.unet.conv_in.conv.weight" not in trainable
    assert "controlnet.controlnet.conv_in.conv.weight" in trainable


def test_latent_controlnet_starts_as_the_latent_denoiser(tmp_path):
    run, _ = autoencoder_export(tmp_path)
    latent = make_config(training__stage="latent_diffusion", model__latent="vqvae", training__init_from=run)
    pretrained = LatentDiffusionModule(latent, make_layout(), total_steps=1)
    batch = make_batch()
    pretrained.objective(batch, validation=True)  # sets the latent scales, exported with the weights
    randomize(pretrained.net.denoiser)
    latent_run = export(tmp_path, "latent", pretrained, make_layout())
    config = make_config(training__stage="controlnet", model__latent="vqvae", model__control="pre",
                         training__init_from=latent_run)
    module = module_class(config)(config, make_layout(), total_steps=10)
    assert isinstance(module, LatentDiffusionModule)
    assert module.net.codec.calibrated and module.net.denoiser.controlnet.control_downsample_levels == 1
    loss, _ = module.objective(batch, validation=True)
    reference, _ = pretrained.objective(batch, validation=True)
    assert float(loss.detach()) == float(reference.detach())


# ------------------------------------------------------------------------------ init-from and freezing


def test_a_mismatching_export_names_the_tensors(tmp_path):
    run, _ = diffusion_export(tmp_path)
    wider = make_config(training__stage="controlnet", model__control="pre", training__init_from=run,
                        model__channels=[16, 16])
    with pytest.raises(OncodiffError, match=r"unet.conv_in.conv.weight: export \(8, 5, 3, 3\), this network "
                                            r"\(16, 5, 3, 3\)"):
        ControlNetModule(wider, make_layout(), total_steps=1)
    autoencoder, _ = autoencoder_export(tmp_path)
    pixel = make_config(training__stage="controlnet", model__control="pre", training__init_from=autoencoder)
    with pytest.raises(OncodiffError, match="LatentCodec, which this stage's network has no place for"):
        ControlNetModule(pixel, make_layout(), total_steps=1)


def test_fine_tuning_a_denoiser_with_freeze_prefixes(tmp_path):
    run, pretrained = diffusion_export(tmp_path)
    config = make_config(training__stage="diffusion", training__init_from=run,
                         training__freeze=["unet.down_blocks", "days_embedding."])
    net = build_network(config, make_layout())
    report = prepare_network(net, config)
    assert same_tensors(net, pretrained.net) and len(report.loaded) == len(net.state_dict())
    frozen = {name for name, p in net.named_parameters() if not p.requires_grad}
    assert frozen and all(name.startswith(("unet.down_blocks.", "days_embedding.")) for name in frozen)
    assert report.frozen_parameters == sum(p.numel() for p in net.parameters() if not p.requires_grad)


def test_freeze_parameters_counts_and_checks_prefixes():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    assert freeze_parameters(net, ["0"]) == 3 * 4 + 4
    assert freeze_parameters(net, ["0."]) == 0  # already frozen
    assert not net[0].weight.requires_grad and net[1].weight.requires_grad
    with pytest.raises(ValueError, match=r"\['2'\] match\(es\) no parameter"):
        freeze_parameters(net, ["2"])


def test_component_prefixes_of_each_stage_network(tmp_path):
    run, _ = autoencoder_export(tmp_path)
    config = make_config(training__stage="controlnet", model__latent="vqvae", model__control="anatomy",
                         training__init_from=run)
    with torch.device("meta"):
        net = build_network(config, make_layout())
    prefixes = {kind.__name__: prefix for kind, prefix in component_prefixes(net).items()}
    assert prefixes == {"LatentCodec": "codec.", "ConditionalDenoiser": "denoiser.denoiser.",
                        "AnatomyEncoders": "denoiser.anatomy_encoders.", "ControlNetBranch": "denoiser.controlnet."}
    assert isinstance(build_network(make_config(training__stage="autoencoder", model__latent="kl"), make_layout()),
                      LatentCodec)
    assert isinstance(build_network(make_config(), make_layout()), ConditionalDenoiser)


@pytest.mark.parametrize("settings, message", [
    (dict(training__stage="autoencoder"), "needs an autoencoder kind"),
    (dict(training__stage="diffusion", model__latent="kl"), "use training.stage=latent_diffusion"),
    (dict(training__stage="controlnet", training__init_from="run"), "needs model.control"),
    (dict(training__stage="controlnet", model__control="pre"), "set training.init_from"),
    (dict(training__stage="latent_diffusion", model__latent="kl", training__init_from="run",
          model__drift_head="shared"), "model.drift_head"),
])
def test_stage_prerequisites_are_checked_in_the_config(settings, message):
    with pytest.raises(ConfigError, match=message):
        make_config(**settings)
