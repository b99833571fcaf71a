"""CPU seconds per optimiser step, measured by training's own step probe: turns a CPU-minute budget into steps.

A budget in CPU time of this process (not wall time) does not depend on how busy a shared machine is, so
the same command trains the same number of steps whatever else runs beside it. The benchmarks budget their
runs this way (benchmarks/presets.py, benchmarks/volumetric.py).
"""

from __future__ import annotations

import time
from pathlib import Path

from oncodiff.config import Config


def cpu_seconds_per_step(cohort: Path, config: Config, cache: Path, repeats: int = 5) -> dict:
    """Training's step probe (loading, forward, backward, optimiser) for ``config`` on ``cohort``, in CPU
    seconds of this process; registration is skipped (a step's cost does not depend on it)."""
    from oncodiff.data import CohortDataModule
    from oncodiff.training.train import measure_step_seconds, model_layout  # lazily: train imports Lightning

    config = config.with_overrides(["data.registration=none"])
    data = CohortDataModule(cohort, config, cache_dir=cache)
    data.prepare_data()
    data.setup()
    layout = model_layout(data, config)
    cpu, wall = time.process_time(), time.perf_counter()
    median_wall = measure_step_seconds(config, layout, data, repeats=repeats)
    cpu_per_step = (time.process_time() - cpu) / (repeats + 1)
    return {"cpu_seconds_per_step": cpu_per_step, "wall_seconds_per_step_median": median_wall,
            "steps_per_cpu_minute": 60.0 / cpu_per_step,
            "samples_per_follow_up": len(data.preprocessed) / max(len({(r.patient_id, r.timepoint)
                                                                        for r in data.preprocessed.records}), 1),
            "crop": list(config.data.crop_size), "probe_wall_seconds": time.perf_counter() - wall}


def steps_for(cpu_minutes: float, cost: dict, minimum: int = 2) -> int:
    """Optimiser steps that ``cpu_minutes`` of CPU time buys at the probed cost."""
    return max(minimum, int(cpu_minutes * 60 / cost["cpu_seconds_per_step"]))
