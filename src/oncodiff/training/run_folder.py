"""Opening a run folder for ``oncodiff train``: checks on ``--out``, the lock, the marker, resuming.

The folder's layout is ``oncodiff/runs.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from oncodiff.config import Config
from oncodiff.errors import OncodiffError
from oncodiff.outputs import RunLock, check_output, is_own_output, make_folder, write_marker
from oncodiff.runs import RunFolder

# Keys a resumed run may change: budgets and hardware, never the experiment itself.
RESUMABLE_CHANGES = ("training.max_epochs", "training.max_minutes", "training.devices", "training.num_nodes",
                     "training.accelerator", "data.num_workers")


def consolidate_metrics(run: RunFolder) -> Path | None:
    """Concatenate every log version's metrics.csv into RUN/metrics.csv."""
    frames = [pd.read_csv(p) for p in sorted(run.logs.glob("version_*/metrics.csv"), key=_version)]
    if not frames:
        return None
    pd.concat(frames, ignore_index=True).to_csv(run.metrics_csv, index=False)
    return run.metrics_csv


def _version(path: Path) -> int:
    return int(path.parent.name.split("_")[-1])


def check_run_out(out: str | Path, cohort: str | Path, resume: bool, overwrite: bool,
                  within: Path | None = None) -> RunFolder:
    """Check ``--out`` for ``oncodiff train`` (oncodiff/outputs.py's rules) before anything is written.
    ``within``: the run that owns this one (a baseline run lives inside its run)."""
    if resume and overwrite:
        raise OncodiffError("--resume continues a run and --overwrite starts it again; pass one of them")
    path = check_output(out, "run", overwrite, inputs={"cohort": cohort}, allow_existing=True, within=within)
    run = RunFolder(path)
    owner = RunLock(path).holder()
    if owner is not None:
        raise OncodiffError(f"{path} is in use by `oncodiff {owner.get('command')}` (pid {owner.get('pid')}); "
                            "a run folder has one writer: wait for it to finish or stop it")
    # A run has started once config.json is written (a marked folder without one was only prepared).
    has_run, has_checkpoint = is_own_output(path, "run") and run.config_json.is_file(), run.last_checkpoint.is_file()
    if resume and not has_checkpoint:
        why = "holds no run" if not has_run else "has no checkpoint (training stopped before its first one)"
        fix = "start a new run without --resume" if not has_run else "start it again with --overwrite"
        raise OncodiffError(f"--resume: {path} {why}; {fix}")
    if has_run and not (resume or overwrite):
        fix = "pass --resume to continue it, " if has_checkpoint else "it stopped before its first checkpoint: "
        raise OncodiffError(f"{path} already holds a run; {fix}pass --overwrite to start it again, or choose a "
                            "new --out")
    return run


def open_run_folder(run: RunFolder, config: Config, resume: bool, overwrite: bool, cohort: str | Path) -> RunLock:
    """Create the run folder (or reopen it), lock it, mark it as training and write config.json; returns the
    lock, which the caller releases when training ends."""
    make_folder(run.root)
    lock = RunLock(run.root).acquire()
    try:
        if resume:
            _check_same_experiment(run, config)
        elif overwrite:
            for entry in run.root.iterdir():
                if entry != lock.path:
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        finish = (f"resume it with `oncodiff train --cohort {cohort} --out {run.root} --resume` (same preset and "
                  "--set), or start it again with --overwrite")
        write_marker(run.root, "run", state="training", finish=finish)
        config.to_json(run.config_json)
    except BaseException:
        lock.release()
        raise
    return lock


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
