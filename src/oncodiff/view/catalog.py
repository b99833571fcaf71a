"""What the page shows of a case: its summary row, and its image layers as NIfTI URLs in the baseline's geometry.

Layers come from the cohort (baseline scan, true follow-up, their tumour masks) and from an ``oncodiff predict``
output folder (mean, uncertainty, drift, agreement, tumour probability, single samples). Tumour masks are shown
as contours (the mask's edge voxels), written with any cohort image NiiVue cannot read (DICOM, PNG, ...) into the
viewer's cache: the cohort itself is never written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from oncodiff.cohort import Cohort, read_image, write_image
from oncodiff.cohort.io import NIFTI_SUFFIXES
from oncodiff.layouts import PredictionsFolder
from oncodiff.view.folders import ViewerFolders, touch

PREDICTED_LAYERS = ("mean", "std", "drift", "agreement", "tumor_probability")
TUMOUR_PROBABILITY_CUT = 0.5  # a voxel is predicted tumour when at least half of the samples find tumour there


@dataclass(frozen=True)
class PredictionSet:
    """One ``oncodiff predict`` output: ``folder`` with summary.json and a folder per case; ``id`` names it in
    the API ("given" for --predictions, else the cache key of the request that made it)."""

    id: str
    folder: Path
    summary: dict

    @classmethod
    def read(cls, set_id: str, folder: Path) -> PredictionSet:
        return cls(set_id, folder, json.loads(PredictionsFolder(folder).summary_json.read_text(encoding="utf-8")))

    def case(self, slot: tuple[str, str, str]) -> dict | None:
        """The case entry of summary.json for a (patient, lesion, slice) slot, or None."""
        return next((c for c in self.summary["cases"] if case_slot(c["key"]) == slot), None)

    def case_folder(self, case: dict) -> Path:
        return PredictionsFolder(self.folder).follow_up(case["key"])


def case_slot(key: str) -> tuple[str, str, str]:
    """(patient, lesion, slice) of a case key ``patient/lesion/timepoint[/zN]``: the same place at any time."""
    parts = key.split("/")
    return parts[0], parts[1], parts[3] if len(parts) > 3 else ""


def summary_row(case: dict, cohort: Cohort, set_id: str) -> dict[str, Any]:
    """The patient list's row of a predicted case: predicted change and interval, response probability, truth."""
    interval = case.get("change_pct_interval_90_calibrated") or case.get("change_pct_interval_90")
    return {"key": case["key"], "set": set_id, "patient_id": case["patient_id"], "lesion_id": case["lesion_id"],
            "timepoint": case["timepoint"], "days": case["days"], "predicted": True,
            "change_pct": case.get("change_pct_mean"), "change_pct_interval_90": interval,
            "interval_calibrated": bool(case.get("change_pct_interval_90_calibrated")),
            "response_probability": case.get("response_probability"), "response": case.get("response"),
            "change_pct_true": case.get("change_pct_true"), "response_true": true_response(cohort, case["patient_id"])}


def true_response(cohort: Cohort, patient: str) -> str | None:
    """The patient's recorded response (patients.csv), or None when the cohort has none for them."""
    outcome = cohort.spec.outcomes.response if cohort.spec.outcomes else None
    if outcome is None or outcome.column not in cohort.patients.columns:
        return None
    value = cohort.patients.loc[patient, outcome.column]
    return None if value is None or str(value).strip() in ("", "nan") else str(value)


def case_layers(folders: ViewerFolders, cohort: Cohort, predictions: PredictionSet, case: dict) -> dict[str, Any]:
    """Every layer of a predicted case: ``{name: {"url": ...} | {"error": ...}}``, plus ``samples`` (a list)."""
    folder = predictions.case_folder(case)
    files = case.get("files", {})
    layers: dict[str, Any] = {name: _file_layer(folders, folder / files[name]) for name in PREDICTED_LAYERS
                              if name in files}
    if "tumor_probability" in files:
        layers["predicted_contour"] = _contour_layer(folders, folder / files["tumor_probability"])
    layers["samples"] = [_file_layer(folders, folder / files[name]) for name in sorted(files)
                         if name.startswith("sample_")]
    baseline, followup = _scan_rows(cohort, case)
    for name, row in (("baseline", baseline), ("followup", followup)):
        if row is not None:
            layers[name] = _cohort_layer(folders, cohort, row["image"])
            if str(row.get("tumor_mask", "") or "").strip():
                layers[f"{name}_contour"] = _contour_layer(folders, cohort.path(row["tumor_mask"]))
    return layers


def timeline(folders: ViewerFolders, cohort: Cohort, case: dict) -> list[dict[str, Any]]:
    """A lesion's scans in time order, each with its ``role`` for this prediction, and the predicted day.

    Roles: ``baseline`` (always an input), ``input`` (an earlier scan the prediction was made from: summary.json's
    ``priors``), ``not used`` (before the predicted day but not an input: beyond data.max_priors, or a model that
    does not read earlier scans), ``truth`` (the scan on the predicted day: ground truth, not an input), ``later``
    (after it), ``unknown`` (an earlier scan, with predictions made before oncodiff recorded their inputs); then
    ``{"role": "predicted"}`` at the case's day, after a scan of the same day. Each scan has its image ``layer``."""
    scans = cohort.scans
    lesion = scans[(scans["patient_id"] == case["patient_id"]) & (scans["lesion_id"].astype(str) == case["lesion_id"])]
    recorded = case.get("priors")
    used = None if recorded is None else {str(p["timepoint"]) for p in recorded}
    days = float(case["days"])
    items = []
    for _, row in lesion.iterrows():
        timepoint, day = str(row["timepoint"]), float(row["days"])
        if timepoint == cohort.spec.baseline:
            role = "baseline"
        elif day == days:
            role = "truth"
        elif day > days:
            role = "later"
        elif used is None:
            role = "unknown"
        else:
            role = "input" if timepoint in used else "not used"
        items.append({"timepoint": timepoint, "days": day, "role": role,
                      "layer": _cohort_layer(folders, cohort, row["image"])})
    items.sort(key=lambda item: (item["days"], item["role"] != "baseline"))
    place = sum(1 for item in items if item["days"] <= days)
    items.insert(place, {"timepoint": case["timepoint"], "days": days, "role": "predicted"})
    return items


def geometry(cohort: Cohort, case: dict) -> dict[str, Any]:
    """The baseline scan's true geometry: shape, spacing (mm) and the orientation of its axes (RAS codes)."""
    baseline, _ = _scan_rows(cohort, case)
    image = read_image(cohort.path(baseline["image"]))
    return {"dims": image.ndim, "shape": list(image.shape), "spacing_mm": [round(s, 4) for s in image.spacing],
            "orientation": "".join(nib.aff2axcodes(image.affine)[: image.ndim])}


def _scan_rows(cohort: Cohort, case: dict) -> tuple[dict, dict | None]:
    scans = cohort.scans
    lesion = scans[(scans["patient_id"] == case["patient_id"]) & (scans["lesion_id"].astype(str) == case["lesion_id"])]
    baseline = lesion[lesion["timepoint"] == cohort.spec.baseline]
    followup = lesion[lesion["timepoint"] == case["timepoint"]]
    return (baseline.iloc[0].to_dict(),
            None if followup.empty or case["timepoint"] == cohort.spec.baseline else followup.iloc[0].to_dict())


def _file_layer(folders: ViewerFolders, path: Path) -> dict[str, str]:
    try:
        nib.load(str(path))  # reads the header: a corrupt or missing file is reported, not served
    except Exception as e:  # noqa: BLE001 - nibabel raises many kinds; the page shows the message
        return {"error": f"{path.name}: cannot be read ({e})"}
    return {"url": folders.url(path)}


def _cohort_layer(folders: ViewerFolders, cohort: Cohort, relative: str) -> dict[str, str]:
    path = cohort.path(relative)
    if path.name.endswith(NIFTI_SUFFIXES):
        return _file_layer(folders, path)
    return _derived(folders, path, "image", lambda image: image.array.astype(np.float32))


def _contour_layer(folders: ViewerFolders, mask_path: Path) -> dict[str, str]:
    return _derived(folders, mask_path, "contour", _contour)


def _contour(image) -> np.ndarray:
    """Edge voxels of a mask (or of a probability map cut at one half): 1 on the edge, 0 elsewhere."""
    inside = image.array >= TUMOUR_PROBABILITY_CUT
    return (inside & ~ndimage.binary_erosion(inside)).astype(np.uint8)


def _derived(folders: ViewerFolders, source: Path, kind: str, make) -> dict[str, str]:
    """A NIfTI made from ``source`` by ``make(Image) -> array``, kept in the cache keyed by path and mtime."""
    try:
        stamp = f"{source.resolve()}:{source.stat().st_mtime_ns}"
        target = folders.cache / kind / (hashlib.sha1(stamp.encode()).hexdigest()[:20] + ".nii.gz")
        if not target.is_file():
            image = read_image(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name("partial-" + target.name)  # never a half-written file under the final name
            write_image(make(image), image, partial)
            partial.replace(target)
        else:
            touch(target)  # recently used: kept when the cache is trimmed
    except Exception as e:  # noqa: BLE001 - any reader error is reported in the page
        return {"error": f"{source.name}: cannot be read ({e})"}
    return {"url": folders.url(target)}
