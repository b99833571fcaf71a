"""The run folder's layout: every path one training run reads and writes, and the splits file.

    RUN/config.json        the experiment config, written before anything runs
    RUN/splits.json        patient-grouped splits, written once (:class:`Splits`; users may edit it)
    RUN/cohort.json        the training cohort's fingerprint (folder, hash of its tables)
    RUN/preprocessing.json what preprocessing did to each scan pair (bias field, normalisation, registration)
    RUN/plan.json          the step budget fixed before the first step (training/train.py)
    RUN/checkpoints/       Lightning checkpoints (best.ckpt, last.ckpt)
    RUN/logs/version_N/    Lightning CSV logs, one version per (re)start
    RUN/metrics.csv        all logged metrics of every version, in step order
    RUN/train_summary.json what training did: steps, best checkpoint, calibration
    RUN/model/             the export: model.safetensors + config.json (+ segmenter.safetensors), all
                           `predict` needs; an export folder may also stand alone, outside a run
    RUN/baselines/NAME/    a baseline's own run folder, trained by `oncodiff evaluate`
    RUN/calibration_folds/foldK/  a run folder trained without the K-th fold of the training split, for
                           cross-conformal interval margins when the validation split is small (training/)
    RUN/.oncodiff-output.json  the marker: training, then calibrating, then complete (docs/outputs.md)
    RUN/train.lock         held by the process writing the run (pid, host); stale once that process is gone

This module is the one place these names are spelled, except the marker and the lock, whose names
``outputs.py`` owns for every output folder (``outputs.MARKER``, ``outputs.LOCK``). It sits low in the stack
(it imports only ``errors``) so that training, pipeline, evaluation, the viewer and the benchmarks all read a
run through it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oncodiff.errors import ConfigError

MODEL_DIR = "model"
WEIGHTS = "model.safetensors"  # in an export folder
EXPORT_CONFIG = "config.json"  # in an export folder: the config, the layout and what training measured
SEGMENTER = "segmenter.safetensors"  # in an export folder, when training fitted the tumour segmenter

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Splits:
    """Patient ids per split, and how they were drawn (``method``: stratified fractions, fractions, kfold or file)."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    seed: int
    method: str
    folds: int | None = None
    fold: int | None = None

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for name in SPLIT_NAMES:
            for patient in getattr(self, name):
                if patient in seen:
                    raise ValueError(f"patient {patient} is in both {seen[patient]} and {name}; "
                                     "a patient belongs to one split")
                seen[patient] = name

    def split_of(self, patient_id: str) -> str | None:
        """'train', 'val', 'test', or None for a patient left out of every split."""
        return next((name for name in SPLIT_NAMES if patient_id in getattr(self, name)), None)

    def to_dict(self) -> dict[str, Any]:
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test), "seed": self.seed,
                "method": self.method, "folds": self.folds, "fold": self.fold}

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> Splits:
        """Read a splits.json; ConfigError naming the file and the fix when it is malformed."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: cannot read splits ({e})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected an object with train, val and test lists of patient ids")
        lists = {}
        for name in SPLIT_NAMES:
            value = raw.get(name, [])
            if not isinstance(value, list) or not all(isinstance(p, (str, int)) for p in value):
                raise ConfigError(f"{path}: {name!r} must be a list of patient ids, e.g. [\"P001\", \"P002\"]")
            lists[name] = tuple(str(p) for p in value)
        try:
            return cls(**lists, seed=int(raw.get("seed", 0)), method=str(raw.get("method", "file")),
                       folds=raw.get("folds"), fold=raw.get("fold"))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{path}: {e}") from None


@dataclass(frozen=True)
class RunFolder:
    """The paths of the run folder at ``root`` (a str is taken as a path)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config_json(self) -> Path:
        return self.root / "config.json"

    @property
    def plan_json(self) -> Path:
        return self.root / "plan.json"

    @property
    def train_summary_json(self) -> Path:
        return self.root / "train_summary.json"

    @property
    def splits_json(self) -> Path:
        return self.root / "splits.json"

    @property
    def cohort_json(self) -> Path:
        return self.root / "cohort.json"

    @property
    def preprocessing_json(self) -> Path:
        return self.root / "preprocessing.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best_checkpoint(self) -> Path:
        """Lightning's best checkpoint on the validation loss (its ModelCheckpoint names it by the stem)."""
        return self.checkpoints / "best.ckpt"

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
        return self.root / MODEL_DIR

    @property
    def weights(self) -> Path:
        """The exported weights; the run has finished training when this file is there."""
        return self.model_dir / WEIGHTS

    def baseline(self, name: str) -> RunFolder:
        """The run folder of baseline ``name`` inside this run."""
        return RunFolder(self.root / "baselines" / name)

    def calibration_fold(self, k: int) -> RunFolder:
        """The run folder of the model trained without fold ``k`` of this run's training split."""
        return RunFolder(self.root / "calibration_folds" / f"fold{k}")

    def calibration_folds(self) -> list[RunFolder]:
        """The trained fold runs (their weights exported), in fold order."""
        folder = self.root / "calibration_folds"
        runs = [RunFolder(p) for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
        return sorted((r for r in runs if r.weights.is_file()), key=lambda r: int(r.root.name.removeprefix("fold")))

    def residual_mean(self) -> RunFolder:
        """The run folder of the residual design's regression U-Net inside this run (diffusion.residual)."""
        return RunFolder(self.root / "residual_mean")

    def splits(self) -> Splits:
        """The run's splits.json; ConfigError naming the file when it is malformed."""
        return Splits.from_json(self.splits_json)
