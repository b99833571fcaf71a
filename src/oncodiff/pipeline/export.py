"""The exported model: ``model.safetensors`` + ``config.json``, all that ``predict`` needs.

config.json holds the experiment config, the layout (spatial dims, input channels, clinical
variables, class count) and the fitted clinical encoding (training-split statistics), so a model
is rebuilt from plain data: no pickled code, no training code.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from safetensors.torch import load_file, save_file

from oncodiff import __version__
from oncodiff.cohort.schema import ClinicalVariable
from oncodiff.config import Config, ModelConfig
from oncodiff.errors import OncodiffError
from oncodiff.models import CLASS_COUNTS, ConditionalDenoiser
from oncodiff.models.anatomy import AnatomyEncoders
from oncodiff.models.autoencoder import LatentCodec, LatentDenoiser, latent_condition_names
from oncodiff.models.controlnet import ControlledDenoiser
from oncodiff.runs import EXPORT_CONFIG, MODEL_DIR, WEIGHTS

EXPORT_FORMAT = 1


@dataclass(frozen=True)
class ModelLayout:
    """What the network's inputs are: enough to rebuild it without the cohort."""

    spatial_dims: int
    image_condition_names: tuple[str, ...]
    clinical: tuple[ClinicalVariable, ...]
    anatomy: tuple[str, ...] = ()
    target_channels: int = 1
    crop_size: tuple[int, ...] = ()
    clinical_encoder: dict[str, Any] = field(default_factory=dict)
    response_positive: str | None = None
    survival_classes: dict[str, Any] = field(default_factory=dict)  # training-split median / quartiles (days)
    smoothing_mm: float = 0.0  # the Gaussian sigma of the pre scans the model was trained on (data.smoothing)

    def n_classes(self, model: ModelConfig) -> int:
        return CLASS_COUNTS[model.class_label]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["clinical"] = [v.model_dump(mode="json") for v in self.clinical]
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelLayout:
        raw = dict(raw)
        raw["clinical"] = tuple(ClinicalVariable.model_validate(v) for v in raw.get("clinical", ()))
        for key in ("image_condition_names", "anatomy", "crop_size"):
            raw[key] = tuple(raw.get(key, ()))
        return cls(**raw)


def build_denoiser(model: ModelConfig, layout: ModelLayout) -> ConditionalDenoiser:
    """The denoiser for ``layout``, freshly initialised."""
    return ConditionalDenoiser(
        spatial_dims=layout.spatial_dims,
        target_channels=layout.target_channels,
        image_condition_channels=len(layout.image_condition_names),
        clinical=layout.clinical,
        n_classes=layout.n_classes(model),
        config=model,
        image_condition_names=layout.image_condition_names,
    )


def build_network(config: Config, layout: ModelLayout) -> nn.Module:
    """The freshly initialised network that ``config.training.stage`` trains and exports, for ``layout``."""
    stage, model = config.training.stage, config.model
    if stage in ("diffusion", "regression"):
        return build_denoiser(model, layout)
    if stage == "contrastive":
        return AnatomyEncoders(layout.spatial_dims, layout.anatomy, model.anatomy_encoder)
    if stage == "autoencoder":
        return LatentCodec(layout.spatial_dims, model.latent, model.autoencoder)
    if model.latent == "none":  # a pixel-space ControlNet
        return _controlled(build_denoiser(model, layout), config, layout, control_downsample_levels=0)
    codec = LatentCodec(layout.spatial_dims, model.latent, model.autoencoder)
    if layout.crop_size:
        codec.latent_shape(layout.crop_size)  # fail now, naming the crop size, rather than at the first batch
    names = latent_condition_names(codec, layout.image_condition_names)
    denoiser = ConditionalDenoiser(layout.spatial_dims, codec.latent_channels, len(names), layout.clinical,
                                   CLASS_COUNTS[model.class_label], model, image_condition_names=names)
    if stage == "controlnet":
        denoiser = _controlled(denoiser, config, layout, control_downsample_levels=codec.downsample_levels)
    return LatentDenoiser(codec, denoiser, layout.image_condition_names)


def _controlled(denoiser: ConditionalDenoiser, config: Config, layout: ModelLayout,
                control_downsample_levels: int) -> ControlledDenoiser:
    model = config.model
    encoders = None
    if model.control == "anatomy":
        encoders = AnatomyEncoders(layout.spatial_dims, layout.anatomy, model.anatomy_encoder)
    channels = len(layout.anatomy) if model.control == "anatomy" else 1
    return ControlledDenoiser(denoiser, model.control, channels, model.control_embedding_width,
                              control_downsample_levels, anatomy_encoders=encoders)


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
        # channels_last convolution weights: 12-20 % less time per forward pass of the 2D demo U-Net on CPU in
        # bf16 at every batch size from 1 to 64 (benchmarks/run.py, issue 7); outputs change by bf16 rounding only.
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
