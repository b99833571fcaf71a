"""What the denoiser is conditioned on (docs/contracts.md section 2), and how a training batch maps onto it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


# Which batch key holds the class label for each `model.class_label` option, and its class count.
CLASS_LABEL_KEYS = {"response": "response", "survival2": "survival_class2", "survival4": "survival_class4"}
CLASS_COUNTS = {"none": 0, "response": 2, "survival2": 2, "survival4": 4}


@dataclass
class Conditions:
    """Everything the denoiser sees besides the noisy target and the timestep.

    image: (B, Cc, *S) channels concatenated to the noisy target (pre, tumor_mask, anatomy...).
    clinical: (B, V) float; clinical_missing: (B, V) bool, True where the value is unknown.
    days: (B,) float, days since baseline of the target scan.
    class_label: (B,) int64, 0..n_classes-1, or n_classes = the trained null class.
    control: (B, Ck, *S_image) the ControlNet's control image at image resolution (model.control: the pre scan,
        or the anatomy masks that frozen anatomy encoders turn into c_a); kept by ``null`` like ``image``.
    Fields a model does not use may be None.
    """

    image: Tensor
    clinical: Tensor | None = None
    clinical_missing: Tensor | None = None
    days: Tensor | None = None
    class_label: Tensor | None = None
    control: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.image.shape[0]

    def _map(self, fn: Callable[[Tensor], Tensor]) -> Conditions:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Conditions(**{k: None if v is None else fn(v) for k, v in values.items()})

    def to(self, device: torch.device | str) -> Conditions:
        """The same conditions on ``device`` (dtypes unchanged)."""
        return self._map(lambda v: v.to(device))

    def repeat_interleave(self, n: int) -> Conditions:
        """Each case repeated ``n`` times in a row: (B, ...) -> (B * n, ...), for N samples per case."""
        return self._map(lambda v: v.repeat_interleave(n, dim=0))

    def select(self, index: Tensor | slice) -> Conditions:
        """The cases at ``index`` along the batch axis."""
        return self._map(lambda v: v[index])

    def cat(self, other: Conditions) -> Conditions:
        """``self`` followed by ``other`` along the batch axis, e.g. to double a batch for guidance."""
        merged = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if (mine is None) != (theirs is None):
                raise ValueError(f"Conditions.cat: field {f.name!r} is set in one batch and None in the other")
            merged[f.name] = None if mine is None else torch.cat([mine, theirs], dim=0)
        return Conditions(**merged)

    def null(self, null_class: int, drop_class: bool = True, drop_clinical: bool = False) -> Conditions:
        """The unconditional version for classifier-free guidance.

        drop_class: class_label -> ``null_class`` (the denoiser's ``null_class``, = n_classes).
        drop_clinical: every clinical variable marked missing, so its learned missing embedding is used.
        """
        out = self
        if drop_class and self.class_label is not None:
            out = replace(out, class_label=torch.full_like(self.class_label, null_class))
        if drop_clinical and self.clinical is not None:
            out = replace(
                out,
                clinical=torch.zeros_like(self.clinical),
                clinical_missing=torch.ones_like(self.clinical, dtype=torch.bool),
            )
        return out

    def null_where(self, mask: Tensor, null_class: int, drop_class: bool = True,
                   drop_clinical: bool = False) -> Conditions:
        """Per case, the :meth:`null` version where ``mask`` (B,) bool is True, ``self`` elsewhere."""
        nulled = self.null(null_class, drop_class=drop_class, drop_clinical=drop_clinical)
        out = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(nulled, f.name)
            if mine is None or theirs is mine:
                out[f.name] = mine
            else:
                pick = mask.reshape(-1, *([1] * (mine.dim() - 1)))
                out[f.name] = torch.where(pick, theirs, mine)
        return Conditions(**out)


FORECAST_KEY = "mechanistic"  # batch key of the mechanistic forecasts (B, 1 + K, *S): outcome unknown, then class k
FORECAST_PREFIX = "forecast:"  # their channels: forecast:unknown, forecast:class0, ... (diffusion.residual=mechanistic)
PRIOR_PREFIX = "prior"  # channels prior<k>, prior<k>_present, prior<k>_days for k = 1..K
SEQUENCE_PREFIX = "seq:"  # channels seq:<name>, seq:<name>_present for each non-primary sequence


def prior_condition_names(n_priors: int, sequences: Sequence[str], prior_sequences: bool = False) -> tuple[str, ...]:
    """Names of the channels that carry a target's prior scans (data.inputs=prior; K = ``n_priors`` slots, each the
    registered scan, its presence flag and its day as a fraction of the target's day, constant over the crop), the
    baseline's other sequences (each the registered image and its presence flag) and, with ``prior_sequences``,
    each prior slot's own other sequences (``prior<k>:seq:<name>`` and its presence flag, slot by slot)."""
    names = []
    for k in range(1, n_priors + 1):
        names += [f"{PRIOR_PREFIX}{k}", f"{PRIOR_PREFIX}{k}_present", f"{PRIOR_PREFIX}{k}_days"]
    for name in sequences:
        names += [f"{SEQUENCE_PREFIX}{name}", f"{SEQUENCE_PREFIX}{name}_present"]
    for k in range(1, n_priors + 1 if prior_sequences else 1):
        for name in sequences:
            channel = f"{PRIOR_PREFIX}{k}:{SEQUENCE_PREFIX}{name}"
            names += [channel, f"{channel}_present"]
    return tuple(names)


def image_condition_names(anatomy: Sequence[str], use_anatomy: bool, n_priors: int = 0,
                          sequences: Sequence[str] = (), prior_sequences: bool = False) -> tuple[str, ...]:
    """Names of the image condition channels, in order: pre, tumor_mask, then ``anatomy`` when ``use_anatomy``
    (model.use_anatomy), then the prior scans' and sequences' channels (:func:`prior_condition_names`; none for a
    cohort without them)."""
    return ("pre", "tumor_mask", *(tuple(anatomy) if use_anatomy else ()),
            *prior_condition_names(n_priors, sequences, prior_sequences))


def forecast_condition_names(n_classes: int) -> tuple[str, ...]:
    """The channels of the mechanistic forecasts a model of diffusion.residual=mechanistic reads from the batch: the
    outcome-unknown forecast, then one per class (``n_classes``, 0 for a model without a class label)."""
    return (f"{FORECAST_PREFIX}unknown", *(f"{FORECAST_PREFIX}class{k}" for k in range(n_classes)))


def n_forecasts(names: Sequence[str]) -> int:
    """How many forecast channels (:func:`forecast_condition_names`) image condition ``names`` carry."""
    return sum(1 for n in names if n.startswith(FORECAST_PREFIX))


def prior_layout(names: Sequence[str]) -> tuple[int, int, bool]:
    """(K prior slots, Q sequences, whether the prior slots carry their own sequences) that image condition
    ``names`` (a model's layout) carry: K = 0 for a model that does not see earlier scans; False for a model
    trained before the prior scans' sequences were read (its channels stay as they were)."""
    priors = sum(1 for n in names if n.startswith(PRIOR_PREFIX) and n[len(PRIOR_PREFIX):].isdigit())
    sequences = sum(1 for n in names if n.startswith(SEQUENCE_PREFIX) and not n.endswith("_present"))
    prior_sequences = any(n.startswith(PRIOR_PREFIX) and f":{SEQUENCE_PREFIX}" in n for n in names)
    return priors, sequences, prior_sequences


def sequence_names(names: Sequence[str]) -> tuple[str, ...]:
    """The non-primary sequences, in channel order, that image condition ``names`` (a model's layout) read."""
    return tuple(n[len(SEQUENCE_PREFIX):] for n in names
                 if n.startswith(SEQUENCE_PREFIX) and not n.endswith("_present"))


def prior_channels(batch: Mapping[str, Tensor], n_priors: int, n_sequences: int,
                   prior_sequences: bool = False) -> Tensor:
    """(B, 3 K + 2 Q [+ 2 K Q], *S): per prior slot its scan, presence (1/0) and day / the target's day; per
    sequence its image and presence; with ``prior_sequences``, per prior slot and sequence that scan's own image and
    presence. An empty slot or a missing sequence is zeros with presence 0, never an imputed image."""
    pre = batch["pre"]
    shape = (pre.shape[0], 1, *pre.shape[2:])
    channels = []
    if n_priors:
        days = batch["prior_days"][:, :n_priors].float()
        present = torch.isfinite(days)
        target = batch["days"].float().clamp_min(1.0)[:, None]
        relative = torch.where(present, days / target, torch.zeros_like(days))
        images = batch["priors"][:, :n_priors].float()
        for k in range(n_priors):
            flag = present[:, k].to(pre.dtype).reshape(-1, *([1] * (pre.dim() - 1)))
            channels += [images[:, k:k + 1] * flag, flag.expand(shape),
                         relative[:, k].to(pre.dtype).reshape(flag.shape).expand(shape)]
    if n_sequences:
        present = batch["sequence_present"][:, :n_sequences].to(pre.dtype)
        images = batch["sequences"][:, :n_sequences].float()
        for q in range(n_sequences):
            flag = present[:, q].reshape(-1, *([1] * (pre.dim() - 1)))
            channels += [images[:, q:q + 1] * flag, flag.expand(shape)]
    if prior_sequences and n_priors and n_sequences:
        stored = batch["prior_sequences"].shape[1] // batch["priors"].shape[1]  # Q of preprocessing, slot-major
        present = batch["prior_sequence_present"].to(pre.dtype)
        images = batch["prior_sequences"].float()
        for k in range(n_priors):
            for q in range(n_sequences):
                flag = present[:, k * stored + q].reshape(-1, *([1] * (pre.dim() - 1)))
                channels += [images[:, k * stored + q:k * stored + q + 1] * flag, flag.expand(shape)]
    return torch.cat(channels, dim=1).to(pre.dtype)


CONTROLS = ("none", "pre", "anatomy")


@dataclass(frozen=True)
class BatchConditioning:
    """Which of a batch's entries condition the model: the anatomy masks (``use_anatomy``), the class label
    (``class_label``: "none", "response", "survival2" or "survival4"), the days since baseline (``use_days``) and
    the ControlNet's control image (``control``: "none", "pre" or "anatomy"). models/factory.py maps
    model.use_anatomy, model.class_label, model.use_days and model.control onto it."""

    use_anatomy: bool = True
    class_label: str = "none"
    use_days: bool = True
    control: str = "none"

    def __post_init__(self) -> None:
        if self.class_label not in CLASS_COUNTS:
            raise ValueError(f"class_label={self.class_label!r}: must be one of {', '.join(CLASS_COUNTS)}")
        if self.control not in CONTROLS:
            raise ValueError(f"control={self.control!r}: must be one of {', '.join(CONTROLS)}")


def conditions_from_batch(batch: Mapping[str, object], conditioning: BatchConditioning,
                          image_names: Sequence[str] | None = None) -> Conditions:
    """Conditions from a training batch (docs/contracts.md section 1). ``image_names``: the model's image
    condition channels (its layout); the prior and sequence channels are added when they name some.

    Unknown class labels (-1) become the null class: an unknown label is exactly the unconditional case.
    """
    images = [batch["pre"], batch["tumor_mask"]]
    anatomy = batch.get("anatomy")
    if conditioning.use_anatomy and anatomy is not None and anatomy.shape[1] > 0:
        images.append(anatomy)
    n_priors, n_sequences, prior_sequences = prior_layout(image_names or ())
    if n_priors or n_sequences:
        images.append(prior_channels(batch, n_priors, n_sequences, prior_sequences))
    if forecasts := n_forecasts(image_names or ()):  # diffusion.residual=mechanistic: last, so a wrapper picks one
        if batch.get(FORECAST_KEY) is None:
            raise ValueError(f"this model is conditioned on the mechanistic forecast but the batch has no "
                             f"{FORECAST_KEY!r} entry (its export's layout carries the fitted parameters)")
        images.append(batch[FORECAST_KEY][:, :forecasts].to(batch["pre"].dtype))
    class_label = None
    if conditioning.class_label != "none":
        labels = batch[CLASS_LABEL_KEYS[conditioning.class_label]].long()
        class_label = torch.where(labels < 0, torch.full_like(labels, CLASS_COUNTS[conditioning.class_label]), labels)
    return Conditions(
        image=torch.cat(images, dim=1),
        clinical=batch["clinical"].float(),
        clinical_missing=batch["clinical_missing"].bool(),
        days=batch["days"].float() if conditioning.use_days else None,
        class_label=class_label,
        control=control_from_batch(batch, conditioning.control),
    )


def control_from_batch(batch: Mapping[str, Tensor], control: str) -> Tensor | None:
    """The ControlNet's control image (B, Ck, *S) for ``control`` (model.control): the pre scan, the anatomy masks,
    or None without a ControlNet."""
    if control == "none":
        return None
    if control == "pre":
        return batch["pre"].float()
    anatomy = batch.get("anatomy")
    if anatomy is None or anatomy.shape[1] == 0:
        raise ValueError("model.control=anatomy needs anatomy masks in the batch; this cohort has none "
                         "(list them under 'anatomy' in cohort.yaml) or set model.control=pre")
    return anatomy.float()


def target_from_batch(batch: Mapping[str, Tensor], target: str, with_mask: bool = False) -> Tensor:
    """What the network generates: the follow-up ``post`` or the drift post - pre (PULSAR eq. 1), (B, 1, *S);
    with ``with_mask`` the follow-up tumour mask as a second channel, (B, 2, *S)."""
    if target == "drift":
        image = batch["post"] - batch["pre"]
    elif target == "post":
        image = batch["post"]
    else:
        raise ValueError(f"diffusion.target must be 'post' or 'drift', got {target!r}")
    return torch.cat([image, batch["post_mask"].to(image.dtype)], dim=1) if with_mask else image


def target_weights(batch: Mapping[str, Tensor], image_weight: Tensor | None, with_mask: bool) -> Tensor | None:
    """Per-voxel loss weights for :func:`target_from_batch`'s channels: ``image_weight`` (B, 1, *S) or 1 on
    the image; on the mask channel, 1 where the case has a follow-up mask and 0 where it has none."""
    if not with_mask:
        return image_weight
    like = batch["post"]
    image = image_weight if image_weight is not None else torch.ones_like(like)
    known = batch["has_post_mask"].to(like.dtype).reshape(-1, *([1] * (like.dim() - 1))).expand_as(like)
    return torch.cat([image, known], dim=1)


def source_in_target_space(pre: Tensor, target: str, source: str, tumor_mask: Tensor | None = None) -> Tensor | None:
    """What the forward process noises instead of the clean target (diffusion.source), (B, C, *S).

    "pre" (PULSAR): the pre-treatment scan expressed as a target, i.e. ``pre`` itself for a post target and a
    zero drift (no change) for a drift target; x_T is then the noised pre scan. "noise": None (the usual
    diffusion, x_T ~ N(0, I)). ``pre`` may be a latent z_pre for latent diffusion. With ``tumor_mask`` (a model
    that generates the follow-up mask), the baseline mask is the mask channel's source: no change.
    """
    if source == "noise":
        return None
    if source != "pre":
        raise ValueError(f"diffusion.source must be 'noise' or 'pre', got {source!r}")
    image = pre if target == "post" else torch.zeros_like(pre)
    return image if tumor_mask is None else torch.cat([image, tumor_mask.to(image.dtype)], dim=1)


def post_from_target(pre: Tensor, generated_image: Tensor, target: str) -> Tensor:
    """The follow-up implied by the generated image channel: pre + drift, or the generated post itself."""
    return pre + generated_image if target == "drift" else generated_image
