"""Training throughput: our training step against the plain fp32 reference loop, on the same network and batch."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from monai.networks.schedulers import DDPMScheduler

from oncodiff.config import Config
from oncodiff.pipeline.cases import CaseSet
from oncodiff.models.factory import ModelLayout

from benchmarks.speedbench.common import now
from benchmarks.speedbench.reference import reference_training_step
from benchmarks.speedbench.sampling import copy_network


def training_batch(cases: CaseSet, batch_size: int, dims: int, depth: int) -> dict:
    """A training batch of ``batch_size`` from the cases (repeated); 3D by stacking each 2D crop ``depth`` times."""
    index = [i % len(cases) for i in range(batch_size)]
    batch = {k: v[index] for k, v in cases.batch.items() if isinstance(v, torch.Tensor)}
    if dims == 3:
        for key in ("pre", "post", "tumor_mask", "post_mask", "anatomy"):
            batch[key] = batch[key].unsqueeze(-1).repeat(*([1] * batch[key].dim()), depth).contiguous()
    return batch


def bench_training(config: Config, layout: ModelLayout, state: dict | None, cases: CaseSet, batch_size: int,
                   steps: int, dims: int, crop: tuple[int, ...]) -> dict:
    """Samples/s: our step (the training module's objective under its precision, AdamW) vs the fp32 reference."""
    from oncodiff.training.stages import (
        module_class,  # lightning: imported where needed, not in memory children
    )

    config = config.with_overrides([f"data.dims={dims}", f"data.crop_size={list(crop)}"])
    layout = replace(layout, spatial_dims=dims, crop_size=tuple(crop))
    batch = training_batch(cases, batch_size, dims, crop[-1] if dims == 3 else 1)
    module = module_class(config)(config, layout, total_steps=1000)
    if state is not None:
        module.net.load_state_dict(state)
    reference_net = copy_network(module.net)
    ours_opt = torch.optim.AdamW(module.parameters(), lr=1e-5)
    ref_opt = torch.optim.Adam(reference_net.parameters(), lr=1e-5)
    schedule = {"cosine": "cosine", "linear": "linear_beta", "scaled_linear": "scaled_linear_beta"}
    scheduler = DDPMScheduler(num_train_timesteps=config.diffusion.num_train_timesteps,
                              schedule=schedule.get(config.diffusion.schedule, "cosine"))
    precision = config.training.precision
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed")

    def ours() -> None:
        with autocast:
            loss, _ = module.objective(batch, validation=False)
        ours_opt.zero_grad(set_to_none=True)
        loss.backward()
        ours_opt.step()

    def reference() -> None:
        reference_training_step(reference_net, config, batch, ref_opt, scheduler)

    ours(), reference()  # warm-up
    times = {"ours": [], "reference": []}
    for _ in range(steps):  # interleaved, so load changes hit both alike
        for name, fn in (("ours", ours), ("reference", reference)):
            start = now()
            fn()
            times[name].append(now() - start)
    ours_s, ref_s = float(np.median(times["ours"])), float(np.median(times["reference"]))
    return {"dims": dims, "crop": list(crop), "batch": batch_size, "steps_timed": steps, "precision": precision,
            "parameters": sum(p.numel() for p in module.net.parameters()),
            "ours_step_seconds": ours_s, "reference_step_seconds": ref_s,
            "ours_samples_per_s": batch_size / ours_s, "reference_samples_per_s": batch_size / ref_s,
            "ratio": ref_s / ours_s}
