"""Tiny hand-made cohort folders for tests (fast, fully controlled; `oncodiff synth` makes realistic ones)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import yaml

from oncodiff.cohort import affine_from_spacing, write_image

CLINICAL = [
    {"name": "age", "type": "numeric", "group": "demographics", "unit": "years"},
    {"name": "sex", "type": "categorical", "group": "demographics", "categories": ["F", "M"]},
    {"name": "nlr", "type": "numeric", "group": "blood"},
]


# The tiny denoiser every end-to-end test trains (train -> predict -> evaluate in seconds): a config file's
# `--set` items. A test adds its own data, training and sampling sizes: TINY = [*TINY_MODEL, "training.max_steps=4"].
TINY_MODEL = ["model.channels=[8,16]", "model.attention_levels=[false,true]", "model.norm_num_groups=8",
              "model.num_head_channels=8", "model.token_dim=16"]

def ball(shape: tuple[int, ...], center: tuple[float, ...], radius: float) -> np.ndarray:
    """Binary ball (disc in 2D) of ``radius`` voxels."""
    grid = np.indices(shape, dtype=np.float32)
    dist2 = sum((g - c) ** 2 for g, c in zip(grid, center))
    return (dist2 <= radius**2).astype(np.uint8)


def write_cohort(
    root: str | Path,
    n_patients: int = 6,
    dims: int = 2,
    shape: tuple[int, ...] | None = None,
    followups: tuple[tuple[str, int], ...] = (("week6", 42),),
    anatomy: tuple[str, ...] = ("organ",),
    spacing: tuple[float, ...] | None = None,
    seed: int = 0,
) -> Path:
    """Write a valid cohort: a bright disc/ball tumour that shrinks in responders, grows otherwise."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    shape = shape or ((32, 32) if dims == 2 else (24, 24, 8))
    spacing = spacing or (1.0,) * dims
    affine = affine_from_spacing(spacing)
    center = tuple(s / 2 for s in shape)
    organ = ball(shape, center, min(shape) * 0.45)
    patients, scans = [], []
    for i in range(n_patients):
        pid = f"P{i + 1:03d}"
        responder = i % 2 == 0
        radius = 3.0 + rng.uniform(0, 2)
        patients.append({
            "patient_id": pid, "age": float(rng.integers(40, 80)), "sex": "F" if i % 3 else "M",
            "nlr": "" if i == 1 else round(float(rng.uniform(1, 6)), 2),
            "response": "responder" if responder else "non-responder",
            "os_days": int(rng.integers(100, 900)), "death": int(i % 3 != 0),
        })
        (root / pid).mkdir(parents=True, exist_ok=True)
        write_image(organ, affine, root / pid / "organ.nii.gz")
        timepoints = (("pre", 0, radius),) + tuple(
            (label, day, radius * (0.6 if responder else 1.3) ** (k + 1)) for k, (label, day) in enumerate(followups)
        )
        for label, day, r in timepoints:
            mask = ball(shape, center, r)
            image = (0.2 * organ + 0.6 * mask + 0.02 * rng.standard_normal(shape)).astype(np.float32)
            write_image(image, affine, root / pid / f"{label}.nii.gz")
            write_image(mask, affine, root / pid / f"{label}_gtv.nii.gz")
            row = {"patient_id": pid, "lesion_id": "L1", "timepoint": label, "days": day,
                   "image": f"{pid}/{label}.nii.gz", "tumor_mask": f"{pid}/{label}_gtv.nii.gz"}
            for name in anatomy:
                row[f"anatomy:{name}"] = f"{pid}/organ.nii.gz" if label == "pre" else ""
            scans.append(row)
    spec = {
        "format": 1, "name": "tiny", "modality": "MRI", "baseline": "pre", "clinical": CLINICAL,
        "outcomes": {"response": {"column": "response", "positive": "responder"},
                     "survival": {"time": "os_days", "event": "death"}},
        "anatomy": list(anatomy),
    }
    (root / "cohort.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    pd.DataFrame(patients).to_csv(root / "patients.csv", index=False)
    pd.DataFrame(scans).to_csv(root / "scans.csv", index=False)
    return root


def edit_csv(root: str | Path, name: str, row: int, column: str, value: object) -> None:
    """Set one cell of a cohort CSV; ``row`` is the 1-based data row (the header is row 0)."""
    path = Path(root) / name
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.loc[row - 1, column] = value
    table.to_csv(path, index=False)


def edit_yaml(root: str | Path, /, **changes: object) -> None:
    """Change top-level keys of a cohort's cohort.yaml."""
    path = Path(root) / "cohort.yaml"
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    spec.update(changes)
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")


def train_tiny(root: Path, overrides: list[str], n_patients: int) -> dict:
    """A tiny 2D cohort of ``n_patients`` under ``root`` and a demo-preset run trained on it with ``overrides``:
    {"root", "cohort", "run", "cache"} (a module fixture's result)."""
    from oncodiff.config import load_config
    from oncodiff.training import train

    cohort = write_cohort(root / "cohort", n_patients=n_patients, dims=2, shape=(28, 24))
    run = train(cohort, load_config("demo", overrides), root / "run", cache_dir=root / "cache")
    return {"root": root, "cohort": cohort, "run": run, "cache": root / "cache"}


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/NAME.py as the module ``benchmarks.NAME`` (the repository root is on pytest's pythonpath)."""
    return importlib.import_module(f"benchmarks.{name}")
LABELS = {"necrosis": 1, "oedema": 2, "enhancing": 3}


def write_cohort_v2(
    root: str | Path, n_patients: int = 2, dims: int = 2, sequences: tuple[str, ...] = ("t1c", "t2", "flair"),
    label_maps: bool = True, image_root: str | Path | None = None, followups: tuple[tuple[str, int], ...] = (("week6", 42),),
    **options,
) -> Path:
    """A valid format-2 cohort: :func:`write_cohort`'s scans as the primary sequence (the first of ``sequences``),
    each other sequence a different contrast of the same scan (tumour darker in t2, oedema bright in flair),
    tumours as label maps (necrosis 1 at the centre, enhancing 3 around it, oedema 2 in a ring outside; the
    tumour is necrosis + enhancing, i.e. exactly write_cohort's mask) and, with ``image_root``, every image in
    that folder (``root:`` in cohort.yaml, written relative to the cohort folder)."""
    from scipy import ndimage

    from oncodiff.cohort import read_image

    root = write_cohort(root, n_patients=n_patients, dims=dims, followups=followups, **options)
    scans = pd.read_csv(root / "scans.csv", dtype=str, keep_default_na=False)
    for k, row in scans.iterrows():
        image = read_image(root / row["image"])
        mask = read_image(root / row["tumor_mask"]).array > 0
        for name in sequences[1:]:
            inverted = 0.2 * (image.array > 0.1) + (0.4 - 0.3 * mask if name == "t2" else 0.2 * mask)
            oedema = ndimage.binary_dilation(mask, iterations=2) & ~mask
            values = (inverted + (0.5 if name == "flair" else 0.1) * oedema).astype(np.float32)
            relative = row["image"].replace(".nii.gz", f"_{name}.nii.gz")
            write_image(values, image.affine, root / relative)
            scans.loc[k, f"image:{name}"] = relative
        if label_maps:
            core = ndimage.binary_erosion(mask, iterations=1)
            labels = np.where(core, 1, np.where(mask, 3, 2 * (ndimage.binary_dilation(mask, iterations=2) & ~mask)))
            relative = row["tumor_mask"].replace("_gtv", "_seg")
            write_image(labels.astype(np.uint8), image.affine, root / relative)
            scans.loc[k, "tumor_labels"] = relative
    scans = scans.rename(columns={"image": f"image:{sequences[0]}"})
    if label_maps:
        scans = scans.drop(columns="tumor_mask")
    scans.to_csv(root / "scans.csv", index=False)
    changes = {"format": 2, "sequences": list(sequences)}
    if label_maps:
        changes |= {"labels": dict(LABELS), "tumor": ["necrosis", "enhancing"]}
    if image_root is not None:
        image_root = Path(image_root)
        image_root.mkdir(parents=True, exist_ok=True)
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            folder.rename(image_root / folder.name)
        changes["root"] = os.path.relpath(image_root.resolve(), root.resolve())
    edit_yaml(root, **changes)
    return root
