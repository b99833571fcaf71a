"""Starting a stage from earlier ones: training.init_from / anatomy_from, and freezing.

``prepare_network`` applies training.init_from / anatomy_from, the stage's own freezing, then
training.freeze, for every stage. An export fills the components of the new network that have its
type (ConditionalDenoiser, ControlNetBranch, LatentCodec, AnatomyEncoders): every exported tensor must
find a tensor of the same name and shape there; tensors of modules new to this stage keep their
initialisation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from oncodiff.config import Config
from oncodiff.errors import OncodiffError
from oncodiff.models import ConditionalDenoiser
from oncodiff.models.anatomy import AnatomyEncoders
from oncodiff.models.autoencoder import LatentCodec
from oncodiff.models.controlnet import ControlledDenoiser, ControlNetBranch
from oncodiff.models.factory import ModelLayout, build_network
from oncodiff.pipeline.export import export_folder, read_export_meta
from oncodiff.runs import WEIGHTS

COMPONENT_TYPES: tuple[type[nn.Module], ...] = (ConditionalDenoiser, ControlNetBranch, LatentCodec, AnatomyEncoders)


@dataclass
class InitReport:
    """What prepare_network did: the tensors loaded (names in the new network), the tensors copied from the
    denoiser into a fresh ControlNet, and the parameter counts that end up frozen (requires_grad False: what
    the stage and training.freeze froze, the always-frozen autoencoders and anatomy encoders under a
    denoiser, and a VQ codebook, which learns by EMA) and trainable."""

    loaded: list[str] = field(default_factory=list)
    copied_to_controlnet: list[str] = field(default_factory=list)
    frozen_parameters: int = 0
    trainable_parameters: int = 0

    def summary(self) -> str:
        return (f"{len(self.loaded)} tensors loaded, {len(self.copied_to_controlnet)} copied into the ControlNet; "
                f"{self.trainable_parameters:,} parameters train, {self.frozen_parameters:,} are frozen")


def component_prefixes(net: nn.Module) -> dict[type[nn.Module], str]:
    """Where each component type sits in ``net``: {type: "name." prefix} ("" for the root).

    A network holds at most one component of each type, and components never nest in one another.
    """
    found: dict[type[nn.Module], str] = {}
    for name, module in net.named_modules():
        kind = type(module)
        if kind in COMPONENT_TYPES and kind not in found:
            found[kind] = f"{name}." if name else ""
    return found


def load_components(net: nn.Module, run: str, kinds: Sequence[type[nn.Module]] = COMPONENT_TYPES) -> list[str]:
    """Load the export of ``run`` (a run folder or its model/ folder) into the matching components of ``net``.

    Strict: every exported tensor of a component type in ``kinds`` must exist in ``net``'s component of that
    type with the same shape, else OncodiffError naming each mismatching tensor. Tensors of ``net`` that the
    export lacks keep their values. Returns the names (in ``net``) of the tensors loaded.
    """
    folder = export_folder(run)
    meta = read_export_meta(folder)
    source_config = Config.model_validate(meta["config"])
    with torch.device("meta"):  # only the structure is needed: where each component sits
        source = build_network(source_config, ModelLayout.from_dict(meta["layout"]))
    state = load_file(str(folder / WEIGHTS))
    targets = component_prefixes(net)
    updates: dict[str, Tensor] = {}
    problems: list[str] = []
    for kind, source_prefix in component_prefixes(source).items():
        if kind not in kinds:
            continue
        if kind not in targets:
            problems.append(f"the export holds a {kind.__name__}, which this stage's network has no place for")
            continue
        part = {name[len(source_prefix):]: value for name, value in state.items() if name.startswith(source_prefix)}
        problems += _match(part, targets[kind], net.state_dict(), updates)
    if problems:
        raise OncodiffError(
            f"{folder} (stage {source_config.training.stage}) does not fit this stage's network, "
            f"{len(problems)} problem(s):\n  " + "\n  ".join(problems[:30]) + ("\n  ..." if len(problems) > 30 else "")
            + "\nThe model options (model.channels, model.autoencoder, model.anatomy_encoder...) and the cohort's "
              "channels must match that run's config.json.")
    net.load_state_dict(updates, strict=False)
    return sorted(updates)


def _match(part: dict[str, Tensor], prefix: str, target: dict[str, Tensor], updates: dict[str, Tensor]) -> list[str]:
    """Put each tensor of an exported component into ``updates`` under ``prefix``; return the misfits."""
    problems = []
    for name, value in part.items():
        target_name = prefix + name
        if target_name not in target:
            problems.append(f"{name}: no tensor {target_name} in this network")
        elif tuple(target[target_name].shape) != tuple(value.shape):
            problems.append(f"{name}: export {tuple(value.shape)}, this network {tuple(target[target_name].shape)}")
        else:
            updates[target_name] = value
    return problems


def freeze_parameters(net: nn.Module, prefixes: Iterable[str]) -> int:
    """Set requires_grad False on the parameters whose names start with a prefix ("denoiser.unet" or
    "denoiser.unet."); returns how many parameter elements were newly frozen. A prefix that matches no
    parameter is a ValueError (a typo would otherwise train everything)."""
    prefixes = [p.rstrip(".") for p in prefixes]
    parameters = dict(net.named_parameters())
    unmatched = [p for p in prefixes if not any(_under(name, p) for name in parameters)]
    if unmatched:
        top = sorted({name.split(".")[0] for name in parameters})
        raise ValueError(f"training.freeze: {unmatched} match(es) no parameter; names start with {top}")
    return _freeze(net, lambda name: any(_under(name, p) for p in prefixes))


def _under(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def _freeze(net: nn.Module, chosen: Callable[[str], bool]) -> int:
    count = 0
    for name, parameter in net.named_parameters():
        if chosen(name) and parameter.requires_grad:
            parameter.requires_grad_(False)
            count += parameter.numel()
    return count


def prepare_network(net: nn.Module, config: Config) -> InitReport:
    """Apply training.init_from / anatomy_from, the stage's own freezing, then training.freeze (see the module doc)."""
    training = config.training
    report = InitReport()
    if training.init_from:
        report.loaded += load_components(net, training.init_from)
    if training.anatomy_from:
        report.loaded += load_components(net, training.anatomy_from, kinds=(AnatomyEncoders,))
    if training.stage == "controlnet":
        _prepare_controlnet(net, report)
    elif training.stage == "latent_diffusion":
        _require_loaded(net, report, LatentCodec, "training.stage=latent_diffusion starts from trained autoencoders: "
                        "set training.init_from to an autoencoder (or latent_diffusion) run")
    freeze_parameters(net, training.freeze)
    report.frozen_parameters = sum(p.numel() for p in net.parameters() if not p.requires_grad)
    report.trainable_parameters = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return report


def _prepare_controlnet(net: nn.Module, report: InitReport) -> None:
    controlled = next(m for m in net.modules() if isinstance(m, ControlledDenoiser))
    _require_loaded(net, report, ConditionalDenoiser, "training.stage=controlnet locks a pre-trained denoiser: set "
                    "training.init_from to a diffusion, latent_diffusion or controlnet run")
    if controlled.anatomy_encoders is not None:
        _require_loaded(net, report, AnatomyEncoders, "model.control=anatomy needs pre-trained anatomy encoders: "
                        "set training.anatomy_from to a contrastive run")
    if not _loaded_into(net, report, ControlNetBranch):  # the ControlNet recipe: start from the denoiser's copy
        report.copied_to_controlnet = controlled.controlnet.copy_from(controlled.denoiser)
    denoiser_prefix = component_prefixes(net)[ConditionalDenoiser]
    loaded = {name for name in report.loaded if name.startswith(denoiser_prefix)}
    _freeze(net, lambda name: name in loaded)


def _loaded_into(net: nn.Module, report: InitReport, kind: type[nn.Module]) -> bool:
    prefix = component_prefixes(net).get(kind)
    return prefix is not None and any(name.startswith(prefix) for name in report.loaded)


def _require_loaded(net: nn.Module, report: InitReport, kind: type[nn.Module], message: str) -> None:
    if not _loaded_into(net, report, kind):
        raise OncodiffError(message)


