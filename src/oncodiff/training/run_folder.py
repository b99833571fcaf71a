"""The run folder: everything one training run reads and writes, at fixed paths.

    RUN/config.json        the experiment config, written before anything runs
    RUN/splits.json        patient-grouped splits, written once
    RUN/cohort.json        the training cohort's fingerprint (folder, hash of its tables)
    RUN/preprocessing.json what preprocessing did to each scan pair (bias field, normalisation, registration)
    RUN/checkpoints/       Lightning checkpoints (best.ckpt, last.ckpt)
    RUN/logs/version_N/    Lightning CSV logs, one version per (re)start
    RUN/metrics.csv        all logged metrics of every version, in step order
    RUN/model/             the export: model.safetensors + config.json, all `predict` needs
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from oncodiff.config import Config
from oncodiff.errors import OncodiffError

COHORT_FILE = "cohort.json"
# Keys a resumed run may change: budgets and hardware, never the experiment itself.
RESUMABLE_CHANGES = ("training.max_epochs", "training.max_minutes", "training.devices", "training.num_nodes",
                     "training.accelerator", "data.num_workers")


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @property
    def config_json(self) -> Path:
        return self.root / "config.json"

    @property
    def splits_json(self) -> Path:
        return self.root / "splits.json"

    @property
    def cohort_json(self) -> Path:
        return self.root / COHORT_FILE

    @property
    def preprocessing_json(self) -> Path:
        return self.root / "preprocessing.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def metrics_csv(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    def consolidate_metrics(self) -> Path | None:
        """Concatenate every log version's metrics.csv into RUN/metrics.csv."""
        frames = [pd.read_csv(p) for p in sorted(self.logs.glob("version_*/metrics.csv"), key=_version)]
        if not frames:
            return None
        pd.concat(frames, ignore_index=True).to_csv(self.metrics_csv, index=False)
        return self.metrics_csv


def _version(path: Path) -> int:
    return int(path.parent.name.split("_")[-1])


def open_run_folder(out: str | Path, config: Config, resume: bool) -> RunFolder:
    """Create a new run folder (writing config.json first) or reopen one to resume."""
    run = RunFolder(Path(out).resolve())
    if resume:
        if not run.last_checkpoint.is_file():
            raise OncodiffError(f"--resume: {run.last_checkpoint} does not exist; start a new run without --resume")
        _check_same_experiment(run, config)
    elif run.config_json.exists():
        raise OncodiffError(f"{run.root} already holds a run; pass --resume to continue it, or choose a new --out")
    run.root.mkdir(parents=True, exist_ok=True)
    config.to_json(run.config_json)
    return run


def _check_same_experiment(run: RunFolder, config: Config) -> None:
    raw = json.loads(run.config_json.read_text(encoding="utf-8"))
    try:  # keys added to oncodiff since the run started take their defaults, which keep the old behaviour
        raw = Config.model_validate(raw).model_dump(mode="json")
    except ValidationError:
        pass  # compared as saved: the differences below name what no longer fits
    saved = _flatten(raw)
    now = _flatten(config.model_dump(mode="json"))
    changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise OncodiffError(f"--resume: the config differs from {run.config_json} ({detail}); resume with the same preset and --set")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out
