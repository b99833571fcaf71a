"""The paper presets, by behaviour: each loads and says what it is, its stages are the registry's chain and fit
together (each starts from an earlier stage's run), and its untrained network starts from post = pre. What a
preset's values are is the YAML's business, not restated here; each mechanism is tested in its module's tests.
End-to-end runs: tests/test_presets_slow.py."""

import numpy as np
import pytest
import torch

from oncodiff.config import Config, bf16_conv3d_problem, first_axis_sizes, load_config, preset_names, preset_path
from oncodiff.presets.papers import PAPERS, Paper, Stage, markdown_table, paper_of
from oncodiff.synth.registry import SITES

CHAINS = {paper.key: paper.presets for paper in PAPERS}  # paper -> its presets in the order they run
PAPER_PRESETS = [name for chain in CHAINS.values() for name in chain]
# Keys that may differ between the stages of one paper (everything else in data and model must match, or a
# later stage could not load the earlier one's weights).
STAGE_DIFFERENCES = {"immunodiff": {"model.clinical"}, "pulsar": {"diffusion.prediction", "sampling.sampler",
                                                                   "sampling.steps"}}


def _flat(section: dict, prefix: str) -> dict:
    out = {}
    for key, value in section.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_preset_loads_and_says_what_it_is(name):
    config = load_config(name)
    assert config.preset == name and name in preset_names()
    first_line = preset_path(name).read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith("# ") and len(first_line) > 30  # `oncodiff presets` lists this line


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_preset_survives_the_run_folders_config_json(name, tmp_path):
    config = load_config(name)  # what `oncodiff train --preset NAME` writes before step 0, and predict reads back
    config.to_json(tmp_path / "config.json")
    assert Config.from_json(tmp_path / "config.json") == config


@pytest.mark.parametrize("paper", [p for p, chain in CHAINS.items() if len(chain) > 1])
def test_stages_of_a_paper_share_data_model_and_diffusion(paper):
    configs = [load_config(name).model_dump(mode="json") for name in CHAINS[paper]]
    allowed = STAGE_DIFFERENCES.get(paper, set())
    for section in ("data", "model", "diffusion", "sampling"):
        first = _flat(configs[0][section], f"{section}.")
        for other in configs[1:]:
            differing = {k for k, v in _flat(other[section], f"{section}.").items() if first[k] != v}
            assert differing <= allowed, f"{paper}: {differing - allowed} differ between stages"


@pytest.mark.parametrize("paper", PAPERS, ids=lambda p: p.key)
def test_registry_stages_are_yamls_whose_init_from_follow_the_chain(paper):
    """The registry is the chain; the YAMLs' ``training.init_from`` / ``anatomy_from`` (the run folders the
    documented commands write) must name the runs of the stages the registry says each one starts from."""
    assert paper.site in SITES
    for stage in paper.stages:
        assert preset_path(stage.preset).is_file() and paper_of(stage.preset) is paper
        training = load_config(stage.preset).training
        assert load_config(stage.preset).data.dims == paper.dims, stage.preset
        expected = {"init_from": stage.init_from, "anatomy_from": stage.anatomy_from}
        for key, earlier in expected.items():
            assert getattr(training, key) == (paper.stage(earlier).run if earlier else None), (stage.preset, key)


def test_registry_chains_and_the_stage_kinds_they_train():
    immunodiff = next(p for p in PAPERS if p.key == "immunodiff")
    assert [load_config(name).training.stage for name in immunodiff.presets] == [
        "contrastive", "diffusion", "controlnet", "controlnet"]
    pulsar = next(p for p in PAPERS if p.key == "pulsar")
    assert list(pulsar.chains()) == ["pulsar-drift", "pulsar-drift-method1"]  # two methods, not a chain
    assert [s.preset for s in immunodiff.chains()["immunodiff"]] == list(immunodiff.presets)
    assert all(p.citation.identifier or p.citation.note for p in PAPERS)


def test_registry_refuses_a_stage_that_starts_from_a_later_or_unknown_one():
    with pytest.raises(ValueError, match="not an earlier stage"):
        Paper(key="x", name="X", seed="999", citation=PAPERS[0].citation, site="lung", data="CT", dims=2,
              stages=(Stage("b", "runs/b", init_from="a"), Stage("a", "runs/a")), training="diffusion",
              headline="ssim", departures=())
    with pytest.raises(ValueError, match="cohort"):
        Stage("a", "runs/a", cohort="elsewhere")


def test_docs_table_of_the_papers_is_the_registrys():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "presets.md").read_text(encoding="utf-8")
    assert markdown_table() in page, "regenerate the table: python -c 'from oncodiff.presets.papers import " \
        "markdown_table; print(markdown_table())'"


def test_paper_settings_that_are_relations():
    gbm, pulsar = load_config("gbm-ldm"), load_config("pulsar-drift")
    assert gbm.model.class_dropout > 0  # a trained null class for classifier-free guidance
    assert pulsar.sampling.samples > 1  # several seeds -> agreement map


def test_pulsar_schedule_is_the_papers_first_noise_levels():
    from oncodiff.diffusion import NoiseSchedule

    levels = 1 - NoiseSchedule.from_config(load_config("pulsar-drift").diffusion).alphas_cumprod.numpy()
    np.testing.assert_allclose(levels, np.linspace(0.05, 0.95, 21)[:4])  # T = 21, up to the 20 % noise


@pytest.mark.parametrize("name", CHAINS["immunodiff"])
def test_immunodiff_3d_default_never_halves_the_first_axis_to_2(name):
    config = load_config(name, ["training.accelerator=cpu"])  # validation would refuse it
    assert 2 not in first_axis_sizes(config) and bf16_conv3d_problem(config) is None


IDENTITY_PATH = {  # preset -> tiny crop: each paper preset's untrained network predicts post = pre
    "ispy-ddpm": [16, 16], "pulsar-drift": [16, 16], "pulsar-drift-method1": [16, 16], "nac-prompt-base": [16, 16],
    "gbm-ldm": [16, 16], "immunodiff-ddpm": [16, 16, 8],
}


@pytest.mark.parametrize("name", list(IDENTITY_PATH))
def test_untrained_paper_preset_predicts_post_equals_pre(name):
    """The identity path of docs/presets.md: a drift target with a zero-initialised output layer, so training
    starts from post = pre (and a latent drift decodes as a residual on the pre scan, without the codec's error)."""
    from oncodiff.cohort.schema import ClinicalVariable
    from oncodiff.models import Conditions
    from oncodiff.models.factory import ModelLayout, build_network
    from oncodiff.pipeline.sampling import draw_samples, sample_generators

    crop = IDENTITY_PATH[name]
    config = load_config(name, [f"data.crop_size={crop}", "sampling.steps=3"])
    layout = ModelLayout(len(crop), ("pre", "tumor_mask"), (ClinicalVariable(name="age", type="numeric", group="d"),),
                         crop_size=tuple(crop))
    torch.manual_seed(0)
    net = build_network(config, layout).eval()
    pre, mask = torch.rand(2, 1, *crop), (torch.rand(2, 1, *crop) > 0.5).float()
    if name == "gbm-ldm":
        net.codec.calibrate(pre, mask)
    cond = Conditions(image=torch.cat([pre, mask], dim=1), clinical=torch.zeros(2, 1),
                      clinical_missing=torch.ones(2, 1, dtype=torch.bool), days=torch.tensor([90.0, 180.0]),
                      class_label=torch.tensor([0, 1]))
    drift = draw_samples(net, config, cond, 2, sample_generators(0, ["a", "b"], 2))
    assert config.diffusion.target == "drift"
    assert drift.abs().max() < 1e-3, f"{name}: an untrained network moved the pre scan by {drift.abs().max():.3g}"
