"""The exported model: ``model.safetensors`` + ``config.json``, all that ``predict`` needs.

config.json holds the experiment config, the layout (spatial dims, input channels, clinical
variables, class count) and the fitted clinical encoding (training-split statistics), so a model
is rebuilt from plain data (``models/factory.py: build_network``): no pickled code, no training code.
This module only saves and loads; the folder's file names are ``oncodiff/runs.py``'s.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from safetensors.torch import load_file, save_file

from oncodiff import __version__
from oncodiff.config import Config
from oncodiff.errors import OncodiffError
from oncodiff.models.factory import ModelLayout, build_network
from oncodiff.runs import EXPORT_CONFIG, MODEL_DIR, WEIGHTS

EXPORT_FORMAT = 1


@dataclass
class ExportedModel:
    """A loaded export: the network in eval mode, its config and its layout."""

    net: torch.nn.Module
    config: Config
    layout: ModelLayout
    path: Path


def save_export(folder: str | Path, net: torch.nn.Module, config: Config, layout: ModelLayout,
                extra: dict[str, Any] | None = None, source: str | Path | None = None) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/config.json``, each renamed into place, readable as any
    other file the user writes (the umask decides). config.json records the weights' SHA-256 and the run they
    came from (``source``), which :func:`load_export` checks."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    partial = folder / f".{WEIGHTS}.partial"
    save_file(state, str(partial))
    partial.chmod(0o666 & ~_umask())
    partial.replace(folder / WEIGHTS)
    meta = {"format": EXPORT_FORMAT, "oncodiff_version": __version__, "config": config.model_dump(mode="json"),
            "layout": layout.to_dict(), "weights_sha256": file_sha256(folder / WEIGHTS),
            "source_run": None if source is None else str(Path(source).resolve()), **(extra or {})}
    partial = folder / f".{EXPORT_CONFIG}.partial"
    partial.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    partial.replace(folder / EXPORT_CONFIG)
    return folder


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def update_export_meta(folder: str | Path, **entries: Any) -> None:
    """Add or replace top-level entries of an export's config.json (written whole, then renamed)."""
    path = export_folder(folder) / EXPORT_CONFIG
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta.update(entries)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)


def export_folder(path: str | Path) -> Path:
    """The folder holding model.safetensors: ``path`` itself, or a run folder's ``model/``."""
    path = Path(path)
    for candidate in (path, path / MODEL_DIR):
        if (candidate / WEIGHTS).is_file() and (candidate / EXPORT_CONFIG).is_file():
            return candidate
    raise OncodiffError(f"{path}: no {WEIGHTS} + {EXPORT_CONFIG} here or in {path / MODEL_DIR}; "
                        "pass a run folder written by `oncodiff train` (training must have finished)")


def read_export_meta(path: str | Path) -> dict[str, Any]:
    """config.json of an export, checked for a supported format."""
    config = export_folder(path) / EXPORT_CONFIG
    try:
        meta = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:
        raise OncodiffError(f"{config}: cannot be read ({error}); the export is damaged: copy it again from its "
                            "run, or train again") from None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        meta = meta if isinstance(meta, dict) else {}
        raise OncodiffError(f"{path}: export format {meta.get('format')} is not supported (expected {EXPORT_FORMAT})")
    return meta


def load_export(path: str | Path, device: str | torch.device = "auto") -> ExportedModel:
    """Rebuild the network from an export and load its weights (strictly: every tensor must match).

    ``device="auto"``: the GPU when torch sees one (predict and evaluate then sample there), else the CPU.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    folder = export_folder(path)
    meta = read_export_meta(folder)
    config, layout, net = _rebuild(folder, meta)
    _check_weights(folder, meta)
    try:
        state = load_file(str(folder / WEIGHTS))
    except Exception as error:  # safetensors raises its own error types for a truncated or foreign file
        raise OncodiffError(f"{folder / WEIGHTS}: cannot be read as safetensors ({_first_line(error)}); the file is "
                            "damaged or truncated: copy the export again from its run, or train again") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise OncodiffError(f"{folder / WEIGHTS} does not fit the network {folder / EXPORT_CONFIG} describes "
                            f"({_first_line(error)}); the two files come from different models: use the pair one "
                            "training run exported") from None
    net = net.to(device).eval()
    if layout.spatial_dims == 2:
        # channels_last convolution weights: a faster forward pass of the 2D U-Net on CPU in bf16 at every batch
        # size (benchmarks/README.md, forward-pass variants); outputs change by bf16 rounding only.
        net = net.to(memory_format=torch.channels_last)
    return ExportedModel(net=net, config=config, layout=layout, path=folder)


def _rebuild(folder: Path, meta: dict[str, Any]) -> tuple[Config, ModelLayout, nn.Module]:
    """The config, layout and freshly built network an export's config.json describes."""
    try:
        config = Config.model_validate(meta["config"])
        layout = ModelLayout.from_dict(meta["layout"])
        return config, layout, build_network(config, layout)
    except Exception as error:  # a hand-edited config.json: pydantic, KeyError, or the network refusing it
        raise OncodiffError(f"{folder / EXPORT_CONFIG}: does not describe a network this oncodiff can build "
                            f"({_first_line(error)}); restore the config.json the run exported") from None


def _check_weights(folder: Path, meta: dict[str, Any]) -> None:
    """Refuse weights whose SHA-256 is not the one the export recorded (exports without one are not checked)."""
    expected = meta.get("weights_sha256")
    if expected and file_sha256(folder / WEIGHTS) != expected:
        source = meta.get("source_run") or "the run that exported it"
        raise OncodiffError(f"{folder / WEIGHTS} is not the file exported with {folder / EXPORT_CONFIG} (its SHA-256 "
                            f"differs: replaced, or copied from another run); restore the weights of {source}, or "
                            "use the export folder that holds both files")


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 300 else text[:300] + "..."
