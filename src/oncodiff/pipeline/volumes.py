"""Tumour size of generated follow-ups: one segmenter for generated and true scans alike.

The NAC paper measured tumour size on generated images with a segmentation network trained on
ground-truth follow-ups; so do we (``TumorSegmenter``, trained at the end of ``oncodiff train`` on
the training split's true follow-ups and exported beside the model). Each sample is segmented, so
the volume change comes with an interval across samples, and the response probability is the
fraction of samples whose change meets the response rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from oncodiff.data import GeometryRecord
from oncodiff.data.geometry import crop_spacing
from oncodiff.models.segmenter import TumorSegmenter
from oncodiff.pipeline.calibration import IntervalCalibration, sample_interval
from oncodiff.runs import SEGMENTER

if TYPE_CHECKING:  # avoid an import cycle: predict imports this module
    from oncodiff.pipeline.cases import CaseSet
    from oncodiff.pipeline.predict import Predictions



def load_segmenter(folder: str | Path) -> TumorSegmenter | None:
    """The exported segmenter, or None when the run had no follow-up masks to train one."""
    path = Path(folder) / SEGMENTER
    return TumorSegmenter.load(path) if path.is_file() else None


@dataclass
class CaseVolumes:
    """Tumour volumes of B cases: baseline (B,) from the baseline mask, ``baseline_segmented`` (B,) the
    baseline as measured by the instrument of the predictions, per sample (B, N), truth (B,) from the
    follow-up mask (NaN unknown), and the per-voxel tumour probability across samples (B, *S).
    Units: mm^3 for 3D crops, mm^2 for 2D.

    Predicted volumes come from each sample's own generated mask when the model generates one (then
    the baseline mask is the reference), else from the segmenter on the generated scan compared with
    the segmenter on the baseline scan: one instrument at both ends, so its systematic error cancels
    and post = pre reads as no change. True changes compare the ground-truth masks."""

    baseline: np.ndarray
    baseline_segmented: np.ndarray
    samples: np.ndarray
    true: np.ndarray
    probability: np.ndarray
    unit: str
    threshold: float
    source: str = "segmenter"  # what measured the predicted volumes: "generated masks" | "segmenter" | "none"
    note: str = ""

    @classmethod
    def measure(cls, segmenter: TumorSegmenter | None, cases: CaseSet, predictions: Predictions,
                threshold: float) -> CaseVolumes:
        n_cases, n_samples = predictions.samples.shape[:2]
        spatial = predictions.samples.shape[2:]
        voxel = np.array([np.prod(crop_spacing(c.geometry)) for c in cases.cases])
        baseline = cases.batch["tumor_mask"][:, 0].reshape(n_cases, -1).sum(1).numpy() * voxel
        known = cases.batch["has_post_mask"].numpy()
        true = np.where(known, cases.batch["post_mask"][:, 0].reshape(n_cases, -1).sum(1).numpy() * voxel, np.nan)
        unit = "mm3" if len(cases.cases[0].geometry.original_shape) == 3 else "mm2"
        # slices beyond those the model was trained on (data.train_slice_margin) hold no predicted tumour
        counted = np.array([c.volume_counted for c in cases.cases]).reshape(n_cases, 1, *[1] * len(spatial))
        if predictions.masks is not None:  # each sample's own mask, in the units of the cohort's masks
            masks = predictions.masks & counted
            volumes = masks.reshape(n_cases, n_samples, -1).sum(-1) * voxel[:, None]
            return cls(baseline, baseline.copy(), volumes, true, masks.mean(axis=1).astype(np.float32),
                       unit, threshold, source="generated masks")
        if segmenter is None:
            nan = np.full((n_cases, n_samples), np.nan)
            return cls(baseline, np.full(n_cases, np.nan), nan, true, np.zeros((n_cases, *spatial), np.float32), unit,
                       threshold, source="none", note="no segmenter: the training cohort had no follow-up tumour masks")
        images = np.concatenate([predictions.pre[:, None], predictions.samples], axis=1)  # (B, 1 + N, *S)
        masks = segmenter.predict(images.reshape(n_cases * (n_samples + 1), 1, *spatial))
        masks = masks.reshape(n_cases, n_samples + 1, *spatial) & counted
        volumes = masks.reshape(n_cases, n_samples + 1, -1).sum(-1) * voxel[:, None]
        probability = masks[:, 1:].mean(axis=1).astype(np.float32)
        return cls(baseline, volumes[:, 0], volumes[:, 1:], true, probability, unit, threshold, source="segmenter")

    def grouped(self, groups: list[list[int]]) -> CaseVolumes:
        """Volumes of whole follow-ups, each the sum over its crops (``groups``: case indices per follow-up, as
        :meth:`CaseSet.follow_ups` gives); a follow-up's true volume is unknown when any crop's is. The per-voxel
        probability stays with the crops (an empty array here)."""
        def total(values: np.ndarray) -> np.ndarray:
            return np.stack([values[g].sum(axis=0) for g in groups])

        return CaseVolumes(total(self.baseline), total(self.baseline_segmented), total(self.samples),
                           total(self.true), np.zeros((len(groups), 0), np.float32), self.unit, self.threshold,
                           self.source, self.note)

    def change(self) -> np.ndarray:
        """(B, N) relative volume change of each sample from the segmented baseline; NaN where the
        segmenter finds no tumour on the baseline scan."""
        base = self.baseline_segmented[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(base > 0, self.samples / base - 1.0, np.nan)

    def true_change(self) -> np.ndarray:
        """(B,) true relative change (from the follow-up's ground-truth mask); NaN where unknown."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.baseline > 0, self.true / self.baseline - 1.0, np.nan)

    def summary(self, i: int, calibration: IntervalCalibration | None = None) -> dict:
        """JSON-ready sizes of case i; None where undefined (``change_pct_samples``: each sample's change, in
        sample order, the distribution a volume-change CRPS is scored on). With ``calibration``, the conformally
        calibrated intervals too (``change_pct_interval_50_calibrated``, ...; None for a level it has no
        margin for)."""
        change = self.change()[i]
        defined = change[np.isfinite(change)]
        out = {"volume_unit": self.unit, "volume_source": self.source, "volume_baseline": float(self.baseline[i]),
               "volume_baseline_segmented": _num(self.baseline_segmented[i]),
               "volume_pred_mean": _num(np.nanmean(self.samples[i]) if np.isfinite(self.samples[i]).any() else None),
               "change_pct_mean": None, "change_pct_samples": [_num(100 * c) for c in change],
               "change_pct_interval_50": None, "change_pct_interval_90": None,
               "response": None, "response_probability": None, "response_rule": f"change <= {self.threshold:+.0%}"}
        if calibration is not None:
            out.update({f"change_pct_interval_{round(100 * level)}_calibrated": None for level in calibration.levels})
        if defined.size:
            out.update(
                change_pct_mean=100 * float(defined.mean()),
                change_pct_interval_50=[100 * float(q) for q in sample_interval(defined, 0.5)],
                change_pct_interval_90=[100 * float(q) for q in sample_interval(defined, 0.9)],
                response="responder" if defined.mean() <= self.threshold else "non-responder",
                response_probability=float((defined <= self.threshold).mean()),
            )
            if calibration is not None:
                for level in calibration.levels:
                    bounds = calibration.interval(defined, level)
                    out[f"change_pct_interval_{round(100 * level)}_calibrated"] = (
                        None if bounds is None else [100 * float(b) for b in bounds])
        if np.isfinite(self.true[i]):
            out["volume_true"] = float(self.true[i])
            out["change_pct_true"] = _num(100 * self.true_change()[i])
        if self.note:
            out["note"] = self.note
        return out


def _num(value) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)
