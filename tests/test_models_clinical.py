"""Clinical encoders (tokens, cbi-Adapter), RoPE and the days embedding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from oncodiff.cohort.schema import ClinicalVariable
from oncodiff.models import (
    ROPE_BASE,
    CbiAdapter,
    ClinicalTokenizer,
    DaysEmbedding,
    apply_rope,
    fourier_features,
    rope_frequencies,
)

VARIABLES = (
    ClinicalVariable(name="age", type="numeric", group="demographics"),
    ClinicalVariable(name="sex", type="categorical", group="demographics", categories=("F", "M")),
    ClinicalVariable(name="nlr", type="numeric", group="blood"),
    ClinicalVariable(name="pdl1", type="categorical", group="immune", categories=("neg", "low", "high")),
)


def _clinical():
    values = torch.tensor([[0.5, 1.0, -0.3, 2.0], [-1.0, 0.0, 1.2, 1.0]])
    missing = torch.tensor([[False, False, False, False], [False, True, False, True]])
    return values, missing


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    query, key = torch.randn(5, 16), torch.randn(5, 16)
    positions = torch.arange(5)
    scores = apply_rope(query, positions) @ apply_rope(key, positions).T
    shifted = apply_rope(query, positions + 7) @ apply_rope(key, positions + 7).T
    torch.testing.assert_close(scores, shifted, atol=1e-4, rtol=1e-4)
    # ...but not invariant to a shift of the keys alone (the positions do matter).
    assert not torch.allclose(scores, apply_rope(query, positions) @ apply_rope(key, positions + 1).T, atol=1e-3)


def test_rope_uses_base_1e5_and_is_the_block_rotation_of_eq2():
    dim, position = 8, 3.0
    assert ROPE_BASE == 1e5
    theta = torch.tensor([1e5 ** (-2 * i / dim) for i in range(dim // 2)])
    torch.testing.assert_close(rope_frequencies(dim), theta)
    x = torch.randn(1, dim)
    rotated = apply_rope(x, torch.tensor([position]))
    expected = torch.empty(dim)
    for i in range(dim // 2):  # R = [[cos, -sin], [sin, cos]] acting on (x_2i, x_2i+1)
        c, s = math.cos(position * theta[i]), math.sin(position * theta[i])
        expected[2 * i] = c * x[0, 2 * i] - s * x[0, 2 * i + 1]
        expected[2 * i + 1] = s * x[0, 2 * i] + c * x[0, 2 * i + 1]
    torch.testing.assert_close(rotated[0], expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="even"):
        rope_frequencies(7)


def test_tokenizer_uses_learned_missing_embedding_and_identity():
    torch.manual_seed(0)
    tokenizer = ClinicalTokenizer(VARIABLES, token_dim=8)
    values, missing = _clinical()
    tokens = tokenizer(values, missing)
    assert tokens.shape == (2, 4, 8)
    expected_missing = tokenizer.missing_embedding + tokenizer.identity_embedding
    torch.testing.assert_close(tokens[1, 1], expected_missing[1])
    torch.testing.assert_close(tokens[1, 3], expected_missing[3])
    # A missing cell's stored value is irrelevant; a present cell's value changes only its own token.
    changed = values.clone()
    changed[1, 1], changed[1, 0] = 1.0, 0.7
    new_tokens = tokenizer(changed, missing)
    torch.testing.assert_close(new_tokens[1, 1:], tokens[1, 1:])
    assert not torch.allclose(new_tokens[1, 0], tokens[1, 0])


def test_tokenizer_rejects_out_of_range_category():
    tokenizer = ClinicalTokenizer(VARIABLES, token_dim=8)
    values, missing = _clinical()
    values[0, 1] = 2.0  # sex has categories 0..1
    with pytest.raises(ValueError, match="category indices"):
        tokenizer(values, missing)


def test_tokenizer_with_only_numeric_or_only_categorical_variables():
    numeric_only = ClinicalTokenizer(VARIABLES[0:1] + VARIABLES[2:3], token_dim=8)
    assert numeric_only.category_embedding is None
    assert numeric_only(torch.randn(3, 2), torch.zeros(3, 2, dtype=torch.bool)).shape == (3, 2, 8)
    categorical_only = ClinicalTokenizer(VARIABLES[1:2] + VARIABLES[3:4], token_dim=8)
    assert categorical_only.numeric_mlp is None
    assert categorical_only(torch.ones(3, 2), torch.zeros(3, 2, dtype=torch.bool)).shape == (3, 2, 8)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_cbi_fusion_equals_z_img_plus_lambda_sum_z_i(spatial_dims):
    adapter = CbiAdapter(
        spatial_dims, image_channels=2, out_channels=4, variables=VARIABLES, token_dim=8, cbi_lambda=0.05
    )
    assert adapter.groups == ("demographics", "blood", "immune")
    image_bias = torch.tensor([0.5, -1.0, 2.0, 0.0])
    group_bias = torch.tensor([[1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.0, 2.0], [0.25, 0.25, -3.0, 1.0]])
    with torch.no_grad():
        adapter.image_conv.conv.weight.zero_()
        adapter.image_conv.conv.bias.copy_(image_bias)
        for attention, bias in zip(adapter.group_attention, group_bias):
            attention.out.weight.zero_()
            attention.out.bias.copy_(bias)
    values, missing = _clinical()
    image = torch.randn(2, 2, *([6] * spatial_dims))
    c = adapter(image, values, missing)
    expected = F.silu(image_bias) + 0.05 * group_bias.sum(dim=0)  # c = Z_img + lambda * sum_i Z_i
    assert c.shape == (2, 4, *([6] * spatial_dims))
    torch.testing.assert_close(c.movedim(1, -1).reshape(-1, 4), expected.expand(c.numel() // 4, 4))


def test_cbi_groups_attend_only_within_their_group():
    torch.manual_seed(0)
    adapter = CbiAdapter(2, image_channels=1, out_channels=4, variables=VARIABLES, token_dim=8, cbi_lambda=0.05)
    values, missing = _clinical()
    before = adapter.group_embeddings(values, missing)
    changed = values.clone()
    changed[0, 2] = 3.0  # nlr, the only blood variable
    after = adapter.group_embeddings(changed, missing)
    assert before.shape == (2, 3, 4)
    torch.testing.assert_close(after[:, [0, 2]], before[:, [0, 2]])
    assert not torch.allclose(after[0, 1], before[0, 1])


def test_fourier_features_known_values_and_days_embedding_shape():
    years = torch.tensor([0.0, 1.0])
    features = fourier_features(years, n_frequencies=2, lowest_frequency=0.25)
    expected_one = [1.0, math.sin(2 * math.pi * 0.25), math.sin(2 * math.pi * 0.5),
                    math.cos(2 * math.pi * 0.25), math.cos(2 * math.pi * 0.5)]
    torch.testing.assert_close(features[1], torch.tensor(expected_one), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(features[0], torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0]))
    embedding = DaysEmbedding(32)
    out = embedding(torch.tensor([0.0, 42.0, 365.0]))
    assert out.shape == (3, 32)
    assert not torch.allclose(out[0], out[1])


def test_days_embedding_without_short_periods_ignores_them_and_loads_earlier_weights():
    """model.day_min_period: features with a shorter period are zeroed, so the embedding of a day is the MLP of the
    same features without them; days 120 and 140 (brain's and glioma's late follow-ups) lie further apart in the
    full embedding than in the smooth one; the layer keeps its shape."""
    torch.manual_seed(0)
    full, smooth = DaysEmbedding(32), DaysEmbedding(32, min_period_days=365.0)
    smooth.load_state_dict(full.state_dict())  # strict: the same tensors, so earlier checkpoints load
    assert smooth.feature_mask.tolist() == [1.0] + ([1.0] * 4 + [0.0] * 4) * 2  # periods 8, 4, 2, 1 years kept
    days = torch.tensor([120.0, 140.0])
    features = fourier_features(days / 365.0)
    features[:, 5:9] = 0.0  # sin of the periods under a year
    features[:, 13:17] = 0.0  # their cos
    torch.testing.assert_close(smooth(days), full.mlp(features))
    assert not torch.allclose(full(days), full.mlp(features))
    step_full = (full(days[:1]) - full(days[1:])).abs().mean()
    step_smooth = (smooth(days[:1]) - smooth(days[1:])).abs().mean()
    assert step_smooth < step_full
    with pytest.raises(ValueError, match="min_period_days"):
        DaysEmbedding(32, min_period_days=-1.0)


def test_day_min_period_reaches_the_denoiser_from_the_config():
    from oncodiff.config import load_config
    from oncodiff.models.factory import ModelLayout, build_network

    layout = ModelLayout(spatial_dims=2, image_condition_names=("pre",), clinical=VARIABLES, crop_size=(32, 32))
    for expected, overrides in ((0.0, []), (365.0, ["model.day_min_period=365"])):
        network = build_network(load_config("demo", overrides), layout)
        assert network.days_embedding.min_period_days == expected
