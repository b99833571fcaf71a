"""The conditional denoiser, its Conditions, and up-block features (tiny 2D and 3D models)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file

from oncodiff.cohort.schema import ClinicalVariable, CohortSpec
from oncodiff.config import ModelConfig, load_config
from oncodiff.models import (
    ConditionalDenoiser,
    Conditions,
    conditions_from_batch,
    count_parameters,
    upblock_feature_dim,
    upblock_features,
)
from oncodiff.models.conditions import BatchConditioning, image_condition_names
from oncodiff.models.factory import ModelLayout, build_denoiser, denoiser_arguments

VARIABLES = (
    ClinicalVariable(name="age", type="numeric", group="demographics"),
    ClinicalVariable(name="sex", type="categorical", group="demographics", categories=("F", "M")),
    ClinicalVariable(name="nlr", type="numeric", group="blood"),
)
SHAPES = {2: (16, 16), 3: (16, 16, 8)}
IMAGE_CHANNELS = 3  # pre, tumor_mask, one anatomy mask


def tiny_config(**overrides) -> ModelConfig:
    base = dict(channels=(8, 16), attention_levels=(False, True), num_head_channels=8, norm_num_groups=8,
                token_dim=8, num_res_blocks=1)
    return ModelConfig(**{**base, **overrides})


def tiny_model(spatial_dims=2, n_classes=2, seed=0, **overrides) -> ConditionalDenoiser:
    torch.manual_seed(seed)
    return ConditionalDenoiser(spatial_dims, 1, IMAGE_CHANNELS, VARIABLES, n_classes,
                               **denoiser_arguments(tiny_config(**overrides)))


def randomize(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """MONAI zero-initialises output and residual convolutions; perturb so every input can show."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return model


def make_inputs(spatial_dims=2, batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shape = SHAPES[spatial_dims]
    x_t = torch.randn(batch, 1, *shape, generator=generator)
    t = torch.tensor([3, 700][:batch] + [10] * max(0, batch - 2))
    cond = Conditions(
        image=torch.randn(batch, IMAGE_CHANNELS, *shape, generator=generator),
        clinical=torch.tensor([[0.4, 1.0, -0.2], [1.1, 0.0, 0.0]]).repeat(batch // 2 + 1, 1)[:batch],
        clinical_missing=torch.tensor([[False, False, False], [False, True, True]]).repeat(batch // 2 + 1, 1)[:batch],
        days=torch.tensor([42.0, 180.0]).repeat(batch // 2 + 1)[:batch],
        class_label=torch.tensor([0, 1]).repeat(batch // 2 + 1)[:batch],
    )
    return x_t, t, cond


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("clinical", ["none", "tokens", "cbi"])
@pytest.mark.parametrize("drift_head", ["none", "shared", "decoupled"])
def test_output_shapes_under_bf16_autocast(spatial_dims, clinical, drift_head):
    model = tiny_model(spatial_dims, clinical=clinical, drift_head=drift_head)
    assert model.unet.with_conditioning == (clinical == "tokens")
    x_t, t, cond = make_inputs(spatial_dims)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x_t, t, cond)
    assert out.prediction.shape == x_t.shape
    if drift_head == "none":
        assert out.drift is None
    else:
        assert out.drift.shape == (2, 1, *SHAPES[spatial_dims])
        assert torch.isfinite(out.drift.float()).all()
    assert torch.isfinite(out.prediction.float()).all()


@pytest.mark.parametrize("clinical", ["tokens", "cbi"])
def test_missing_values_are_ignored_and_present_values_used(clinical):
    model = randomize(tiny_model(clinical=clinical)).eval()
    x_t, t, cond = make_inputs()
    reference = model(x_t, t, cond).prediction
    missing_changed = replace(cond, clinical=cond.clinical.clone())
    missing_changed.clinical[1, 2] = 5.0  # nlr is missing in case 1
    torch.testing.assert_close(model(x_t, t, missing_changed).prediction, reference)
    present_changed = replace(cond, clinical=cond.clinical.clone())
    present_changed.clinical[1, 0] = -2.0  # age is present in case 1
    changed = model(x_t, t, present_changed).prediction
    assert not torch.allclose(changed[1], reference[1], atol=1e-5)
    torch.testing.assert_close(changed[0], reference[0])  # cases do not leak into each other


def test_clinical_none_ignores_clinical_values():
    model = randomize(tiny_model(clinical="none")).eval()
    x_t, t, cond = make_inputs()
    reference = model(x_t, t, cond).prediction
    torch.testing.assert_close(model(x_t, t, cond.null(2, drop_class=False, drop_clinical=True)).prediction, reference)


def test_null_class_is_index_n_classes_and_changes_the_output():
    model = randomize(tiny_model(n_classes=4, class_label="survival4")).eval()
    assert model.null_class == 4
    assert model.unet.class_embedding.num_embeddings == 5
    x_t, t, cond = make_inputs()
    null = cond.null(model.null_class)
    assert null.class_label.tolist() == [4, 4]
    assert not torch.allclose(model(x_t, t, null).prediction, model(x_t, t, cond).prediction, atol=1e-5)


def test_days_condition_the_output_only_when_configured():
    x_t, t, cond = make_inputs()
    later = replace(cond, days=cond.days + 300.0)
    with_days = randomize(tiny_model()).eval()
    assert not torch.allclose(with_days(x_t, t, later).prediction, with_days(x_t, t, cond).prediction, atol=1e-5)
    without = randomize(tiny_model(use_days=False)).eval()
    no_days = replace(cond, days=None)
    torch.testing.assert_close(without(x_t, t, no_days).prediction, without(x_t, t, cond).prediction)


@pytest.mark.parametrize(("clinical", "drift_head"), [("tokens", "decoupled"), ("cbi", "shared")])
def test_gradients_reach_every_parameter(clinical, drift_head):
    model = randomize(tiny_model(clinical=clinical, drift_head=drift_head))
    x_t, t, cond = make_inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x_t, t, cond)
        loss = out.prediction.float().pow(2).mean() + out.drift.float().pow(2).mean()
    loss.backward()
    # The class table has rows for classes absent from this batch; everything else must get gradient.
    dead = [name for name, p in model.named_parameters()
            if p.grad is None or (name != "unet.class_embedding.weight" and not p.grad.abs().sum() > 0)]
    assert dead == []
    used_rows = model.unet.class_embedding.weight.grad.abs().sum(dim=1) > 0
    assert used_rows.tolist() == [True, True, False]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_upblock_features_shape_and_region_pooling(spatial_dims):
    model = randomize(tiny_model(spatial_dims)).eval()
    x_t, t, cond = make_inputs(spatial_dims)
    global_features = upblock_features(model, x_t, t, cond)
    assert global_features.shape == (2, upblock_feature_dim(model)) == (2, 24)
    assert global_features.dtype == torch.float32 and not global_features.requires_grad
    everywhere = torch.ones(2, 1, *SHAPES[spatial_dims])
    torch.testing.assert_close(upblock_features(model, x_t, t, cond, everywhere), global_features)
    region = torch.zeros_like(everywhere)
    region[0, :, :4, :4] = 1.0  # case 0: a corner; case 1: empty -> global average
    masked = upblock_features(model, x_t, t, cond, region)
    assert not torch.allclose(masked[0], global_features[0])
    torch.testing.assert_close(masked[1], global_features[1])


@pytest.mark.parametrize("clinical", ["tokens", "cbi"])
def test_safetensors_round_trip_reproduces_outputs(tmp_path, clinical):
    model = randomize(tiny_model(clinical=clinical, drift_head="decoupled")).eval()
    x_t, t, cond = make_inputs()
    expected = model(x_t, t, cond)
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    fresh = tiny_model(clinical=clinical, drift_head="decoupled", seed=123).eval()
    fresh.load_state_dict(load_file(tmp_path / "model.safetensors"))
    got = fresh(x_t, t, cond)
    torch.testing.assert_close(got.prediction, expected.prediction)
    torch.testing.assert_close(got.drift, expected.drift)


def test_drop_labels_follows_the_configured_probabilities():
    x_t, t, cond = make_inputs(batch=6)
    keep = tiny_model(class_dropout=0.0, clinical_dropout=0.0)
    kept = keep.drop_labels(cond, torch.Generator().manual_seed(0))
    assert torch.equal(kept.class_label, cond.class_label) and torch.equal(kept.clinical_missing, cond.clinical_missing)
    drop = tiny_model(class_dropout=1.0, clinical_dropout=1.0)
    dropped = drop.drop_labels(cond, torch.Generator().manual_seed(0))
    assert dropped.class_label.tolist() == [2] * 6
    assert dropped.clinical_missing.all() and not dropped.clinical.any()
    half = tiny_model(class_dropout=0.5)
    first = half.drop_labels(cond, torch.Generator().manual_seed(7)).class_label
    assert torch.equal(first, half.drop_labels(cond, torch.Generator().manual_seed(7)).class_label)


def test_conditions_helpers():
    _, _, cond = make_inputs()
    repeated = cond.repeat_interleave(3)
    assert repeated.batch_size == 6 and repeated.class_label.tolist() == [0, 0, 0, 1, 1, 1]
    doubled = cond.cat(cond.null(2, drop_clinical=True))
    assert doubled.batch_size == 4 and doubled.class_label.tolist() == [0, 1, 2, 2]
    assert doubled.clinical_missing[2:].all() and not doubled.clinical_missing[0].any()
    assert cond.to("cpu").image.device.type == "cpu" and cond.select(slice(1, 2)).batch_size == 1
    with pytest.raises(ValueError, match="days"):
        cond.cat(replace(cond, days=None))


def test_conditions_from_batch_maps_unknown_labels_to_null_and_stacks_images():
    batch = {
        "pre": torch.zeros(3, 1, 8, 8), "tumor_mask": torch.ones(3, 1, 8, 8), "anatomy": torch.full((3, 2, 8, 8), 2.0),
        "clinical": torch.zeros(3, 3), "clinical_missing": torch.zeros(3, 3, dtype=torch.bool),
        "days": torch.tensor([10.0, 20.0, 30.0]), "response": torch.tensor([1, -1, 0]),
        "survival_class4": torch.tensor([3, -1, 0]),
    }
    cond = conditions_from_batch(batch, BatchConditioning(class_label="survival4"))
    assert cond.class_label.tolist() == [3, 4, 0]
    assert cond.image.shape == (3, 4, 8, 8) and cond.image[:, 2:].eq(2.0).all()
    plain = conditions_from_batch(batch, BatchConditioning(use_anatomy=False, class_label="response", use_days=False))
    assert plain.class_label.tolist() == [1, 2, 0] and plain.image.shape == (3, 2, 8, 8) and plain.days is None


def test_describe_and_parameter_counts():
    spec = CohortSpec(clinical=VARIABLES, anatomy=("lung",))
    layout = ModelLayout(2, image_condition_names(spec.anatomy, use_anatomy=True), spec.clinical)
    model = build_denoiser(tiny_config(clinical="cbi", drift_head="shared"), layout)
    layout = model.describe()
    assert layout["input_channels"] == ["x_t[0]", "pre", "tumor_mask", "lung"]
    assert layout["output_channels"] == {"prediction": 1, "drift": 1, "drift_head": "shared"}
    assert layout["clinical"]["groups"] == ["demographics", "blood"]
    assert layout["class_label"]["null_class"] == 2
    counts = count_parameters(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["total"] == sum(v for k, v in counts.items() if k not in ("total", "trainable"))


def test_invalid_arguments_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="n_classes"):
        tiny_model(n_classes=0)
    with pytest.raises(ValueError, match="spatial_dims"):
        ConditionalDenoiser(1, 1, 3, VARIABLES, 2)
    model = tiny_model()
    x_t, t, cond = make_inputs()
    with pytest.raises(ValueError, match="cond.image"):
        model(x_t, t, replace(cond, image=cond.image[:, :2]))
    with pytest.raises(ValueError, match="cond.days"):
        model(x_t, t, replace(cond, days=None))
    with pytest.raises(ValueError, match="t must be"):
        model(x_t, t[:1], cond)


def test_prompt_tokens_carry_days_and_class_instead_of_the_timestep_embedding():
    from dataclasses import replace

    from oncodiff.cohort.schema import ClinicalVariable
    from oncodiff.models import Conditions
    from oncodiff.models.factory import ModelLayout, build_denoiser

    config = load_config("nac-prompt", ["model.channels=[16, 32]", "model.attention_levels=[false, true]",
                                        "model.num_head_channels=16", "model.norm_num_groups=8"]).model
    her2 = ClinicalVariable(name="her2", type="categorical", group="receptors", categories=["negative", "positive"])
    net = build_denoiser(config, ModelLayout(2, ("pre", "tumor_mask"), (her2,))).eval()
    assert net.days_embedding is None and net.unet_arguments()["num_class_embeds"] is None
    cond = Conditions(image=torch.randn(2, 2, 8, 8), clinical=torch.tensor([[0.0], [1.0]]),
                      clinical_missing=torch.zeros(2, 1, dtype=torch.bool), days=torch.tensor([21.0, 84.0]),
                      class_label=torch.tensor([0, 1]))
    assert net.context(cond).shape == (2, 3, config.token_dim)  # HER2, time point, pCR
    with torch.no_grad():
        for parameter in net.parameters():  # MONAI zero-initialises cross-attention outputs
            if (parameter == 0).all():
                parameter.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
        x, t = torch.randn(2, 1, 8, 8), torch.tensor([5, 9])
        base = net(x, t, cond).prediction
        assert (net(x, t, replace(cond, days=torch.tensor([84.0, 21.0]))).prediction - base).abs().max() > 1e-4
        assert (net(x, t, replace(cond, class_label=torch.tensor([2, 2]))).prediction - base).abs().max() > 1e-4
