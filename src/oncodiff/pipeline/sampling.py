"""Drawing N samples per case from a trained denoiser: the one sampling path of predict and evaluate.

Each (case, sample) pair has its own torch.Generator, seeded from (seed, case key, sample index), so
a case's samples are the same however cases are batched (design.md, "Randomness is explicit").
All samples of all cases are flattened into rows and run through the sampler in chunks of
``sampling.batch_size`` rows: one forward pass serves many samples and cases.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch import Tensor

from oncodiff.config import Config
from oncodiff.diffusion import NoiseSchedule, guided_model_fn, make_sampler, randn_per_element, sample
from oncodiff.models import ConditionalDenoiser, Conditions, source_in_target_space
from oncodiff.precision import autocast


def case_seed(seed: int, case_key: str, sample_index: int) -> int:
    """A 63-bit seed from (seed, case key, sample index), stable across runs and platforms."""
    digest = hashlib.sha256(f"{seed}|{case_key}|{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def sample_generators(seed: int, case_keys: Sequence[str], n_samples: int,
                      device: torch.device | str = "cpu") -> list[torch.Generator]:
    """Generators for rows ordered case-major: case 0 samples 0..N-1, case 1 samples 0..N-1, ..."""
    return [torch.Generator(device=device).manual_seed(case_seed(seed, key, k))
            for key in case_keys for k in range(n_samples)]


def autocast_for(config: Config, device: torch.device):
    """bf16 (or fp16 on GPU) autocast as the training precision says; nothing for fp32, or on a CPU without
    native bf16 (oncodiff.precision)."""
    return autocast(config.training.precision, device)


def draw_samples(net: ConditionalDenoiser, config: Config, cond: Conditions, n_samples: int,
                 generators: Sequence[torch.Generator], guidance_drop_clinical: bool = False,
                 sample_classes: Tensor | None = None, case_index: Tensor | None = None) -> Tensor:
    """(B, N, Ct, *S) generated targets (drift or post, per diffusion.target) for B cases, N samples each.

    ``generators``: B * N, case-major (see :func:`sample_generators`). Guidance (sampling.guidance_scale)
    nulls the class label, and the clinical variables too when ``guidance_drop_clinical``.
    ``sample_classes`` (B, N): a class label per sample (marginalising over the class), else cond's.
    ``case_index`` (R,): rows of any cases in any order instead (row r is a sample of case ``case_index[r]``, with
    ``generators[r]``; n_samples must be 1): (R, 1, Ct, *S), each row as it comes out of a (B, N) draw.
    Every network samples through the same three steps (``models/denoiser.py: PixelSpace``): a latent
    model encodes the conditions once, samples on the latent grid and decodes, so its targets come back in
    image space like a pixel model's (glioblastoma LDM, Algorithm 2). x_T is :func:`initial_state`'s.
    """
    device = cond.image.device
    if case_index is not None and n_samples != 1:
        raise ValueError(f"rows given by case_index are one sample each: n_samples must be 1, got {n_samples}")
    cases = cond.batch_size if case_index is None else len(case_index)
    if len(generators) != cases * n_samples:
        raise ValueError(f"need {cases * n_samples} generators ({cases} cases x {n_samples} samples), "
                         f"got {len(generators)}")
    index = None if case_index is None else torch.as_tensor(case_index, dtype=torch.long, device=device)
    mask_rows = (cond.image[:, 1:2].repeat_interleave(n_samples, dim=0) if index is None
                 else cond.image[index, 1:2])
    if getattr(net, "encodes_class", False):  # the class picks a condition (diffusion.residual=mechanistic):
        rows = cond.repeat_interleave(n_samples) if index is None else cond.select(index)  # encode each sample
        if sample_classes is not None:  # with its own class
            rows = replace(rows, class_label=sample_classes.reshape(-1).to(device))
        with torch.inference_mode(), autocast_for(config, device):
            work = rows = net.encode_conditions(rows)
    else:
        with torch.inference_mode(), autocast_for(config, device):
            work = net.encode_conditions(cond)
        rows = work.repeat_interleave(n_samples) if index is None else work.select(index)
        if sample_classes is not None:
            rows = replace(rows, class_label=sample_classes.reshape(-1).to(device))
    schedule = NoiseSchedule.from_config(config.diffusion)
    sampler = make_sampler(config.sampling, schedule, config.diffusion.prediction)
    mask = mask_rows.float() if config.model.generate_mask else None
    start = initial_state(schedule, source_in_target_space(net.sampling_pre(rows), config.diffusion.target,
                                                           config.diffusion.source, mask))
    chunk = max(1, config.sampling.batch_size // (1 if config.sampling.guidance_scale in (0.0, 1.0) else 2))
    out = []
    with torch.inference_mode(), autocast_for(config, device):
        for begin in range(0, cases * n_samples, chunk):
            index = slice(begin, min(begin + chunk, cases * n_samples))
            gens, chunk_rows = generators[index], rows.select(index)
            x_T = start(randn_per_element((len(gens), net.target_channels, *work.image.shape[2:]), gens, device), index)
            model_fn = _guided(net, chunk_rows, config.sampling.guidance_scale, guidance_drop_clinical)
            generated = sample(model_fn, x_T, sampler, config.sampling.steps, gens)
            out.append(net.decode_target(generated, chunk_rows, config.diffusion.target).float())
    generated = torch.cat(out)
    return generated.reshape(cases, n_samples, *generated.shape[1:])


def initial_state(schedule: NoiseSchedule, source: Tensor | None) -> Callable[[Tensor, slice], Tensor]:
    """``x_T(noise, rows)``: where sampling starts for the rows ``rows`` given their noise (R, Ct, *S).

    Pure noise, or with diffusion.source=pre (PULSAR) the source (one per row, in the sampling space and
    as a target: ``models/conditions.py: source_in_target_space``) noised to the schedule's last timestep.
    """
    if source is None:
        return lambda noise, rows: noise
    last = schedule.num_train_timesteps - 1
    return lambda noise, rows: schedule.add_noise(source[rows].float(), noise, last)


def regress(net: ConditionalDenoiser, config: Config, cond: Conditions) -> Tensor:
    """(B, 1, Ct, *S): the deterministic regression baseline's one prediction per case (zeros in, t = 0)."""
    shape = (cond.batch_size, net.target_channels, *cond.image.shape[2:])
    out = []
    with torch.inference_mode(), autocast_for(config, cond.image.device):
        for start in range(0, cond.batch_size, config.sampling.batch_size):
            index = slice(start, min(start + config.sampling.batch_size, cond.batch_size))
            rows = cond.select(index)
            zeros = torch.zeros((rows.batch_size, *shape[1:]), device=cond.image.device)
            t = torch.zeros(rows.batch_size, dtype=torch.long, device=cond.image.device)
            out.append(net(zeros, t, rows).prediction.float())
    return torch.cat(out).unsqueeze(1)


def _guided(net: ConditionalDenoiser, cond: Conditions, scale: float, drop_clinical: bool):
    def masked_fn(x_t: Tensor, t: Tensor, use_condition: Tensor) -> Tensor:
        rows = cond if x_t.shape[0] == cond.batch_size else cond.cat(cond)
        if not bool(use_condition.all()):
            rows = rows.null_where(~use_condition, net.null_class, drop_class=True, drop_clinical=drop_clinical)
        return net(x_t, t, rows).prediction

    return guided_model_fn(masked_fn, scale)
