"""pipeline/export.py: an export is model.safetensors + config.json, found in a run folder's model/, rebuilt
strictly (the same network, the same outputs), and refused with a clear error when damaged or foreign."""

from __future__ import annotations

import json

import pytest
import torch

from oncodiff.config import Config
from oncodiff.errors import OncodiffError
from oncodiff.models.factory import ModelLayout, build_network
from oncodiff.pipeline.export import EXPORT_FORMAT, export_folder, load_export, read_export_meta, save_export, \
    update_export_meta
from oncodiff.runs import EXPORT_CONFIG, WEIGHTS, RunFolder

from factory import TINY_MODEL

LAYOUT = ModelLayout(spatial_dims=2, image_condition_names=("pre", "tumor_mask"), clinical=(), crop_size=(16, 16))


@pytest.fixture
def exported(tmp_path):
    torch.manual_seed(0)
    config = Config().with_overrides([*TINY_MODEL, "data.crop_size=[16,16]"])
    net = build_network(config, LAYOUT)
    with torch.no_grad():
        for p in net.parameters():  # MONAI zero-initialises the output layer: make every weight count
            p.add_(0.01 * torch.randn_like(p))
    run = RunFolder(tmp_path / "run")
    save_export(run.model_dir, net, config, LAYOUT, extra={"note": "x"}, source=run.root)
    return run, net, config


def test_an_export_rebuilds_the_same_network(exported):
    run, net, config = exported
    model = load_export(run.root, device="cpu")  # a run folder: its model/ is found
    assert model.path == run.model_dir and model.layout == LAYOUT and model.config == config
    assert not model.net.training
    loaded, saved = model.net.state_dict(), net.state_dict()
    assert loaded.keys() == saved.keys()
    for name, tensor in saved.items():
        assert torch.equal(loaded[name].cpu().contiguous(), tensor.cpu().contiguous()), name

def test_config_json_records_the_weights_and_extra_entries(exported):
    run, _, _ = exported
    meta = read_export_meta(run.root)
    assert meta["format"] == EXPORT_FORMAT and meta["note"] == "x" and meta["source_run"] == str(run.root.resolve())
    assert len(meta["weights_sha256"]) == 64
    update_export_meta(run.root, calibration={"q": 1.5})
    assert read_export_meta(run.model_dir)["calibration"] == {"q": 1.5}
    assert not list(run.model_dir.glob("*.partial"))


def test_missing_damaged_and_foreign_exports_are_clear_errors(exported, tmp_path):
    run, _, _ = exported
    with pytest.raises(OncodiffError, match="no model.safetensors"):
        export_folder(tmp_path / "elsewhere")
    meta = json.loads((run.model_dir / EXPORT_CONFIG).read_text(encoding="utf-8"))
    (run.model_dir / EXPORT_CONFIG).write_text(json.dumps({**meta, "format": 99}), encoding="utf-8")
    with pytest.raises(OncodiffError, match="format 99 is not supported"):
        load_export(run.root, device="cpu")
    (run.model_dir / EXPORT_CONFIG).write_text(json.dumps(meta), encoding="utf-8")
    weights = run.model_dir / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    with pytest.raises(OncodiffError, match=str(weights.name)):
        load_export(run.root, device="cpu")


def test_the_layout_keeps_the_training_days_and_says_when_a_day_lies_outside_them():
    from dataclasses import replace

    layout = replace(LAYOUT, training_days=(60.0, 120.0))
    assert ModelLayout.from_dict(layout.to_dict()) == layout
    assert layout.days_note([60, 90, 120]) is None
    note = layout.days_note([70, 140, 20, 140])
    assert note.startswith("note: day(s) 20, 140 after baseline lie outside the follow-up days this model was trained "
                           "on (60, 120)")
    old = {k: v for k, v in layout.to_dict().items() if k != "training_days"}  # a model exported before it was kept
    assert ModelLayout.from_dict(old).training_days == () and ModelLayout.from_dict(old).days_note([999]) is None
