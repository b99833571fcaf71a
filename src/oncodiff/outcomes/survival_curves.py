"""Kaplan-Meier curves of the patients split by predicted risk (lifelines), with a log-rank test."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test

# Kaplan-Meier curves by predicted risk group


@dataclass(frozen=True)
class KaplanMeierCurve:
    """One group's Kaplan-Meier estimate: step function values at ``time`` (days), 95 % CI."""

    label: str
    n: int
    events: int
    time: np.ndarray
    survival: np.ndarray
    ci_lower: np.ndarray
    ci_upper: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        arrays = {k: getattr(self, k).tolist() for k in ("time", "survival", "ci_lower", "ci_upper")}
        return {"label": self.label, "n": self.n, "events": self.events, **arrays}


@dataclass(frozen=True)
class KaplanMeierData:
    """Curves of the low- and high-risk groups (split at the median risk) and the log-rank p-value
    (None when a group is empty)."""

    curves: tuple[KaplanMeierCurve, ...]
    threshold: float
    logrank_p: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"curves": [c.to_dict() for c in self.curves], "threshold": self.threshold,
                "logrank_p": self.logrank_p}


def kaplan_meier_by_risk(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> KaplanMeierData:
    """Kaplan-Meier curves of patients above vs at-or-below the median predicted risk.

    ``time`` (N,) days, ``event`` (N,) 1/0, ``risk`` (N,) e.g. ``CVResult.oof`` of a survival model;
    samples with NaN in any of them are left out.
    """
    time, event, risk = (np.asarray(a, dtype=float) for a in (time, event, risk))
    if not time.shape == event.shape == risk.shape or time.ndim != 1:
        raise ValueError(f"time, event and risk must be (N,) of one length; got {time.shape}, {event.shape}, "
                         f"{risk.shape}")
    known = np.isfinite(time) & np.isfinite(event) & np.isfinite(risk)
    if not known.any():
        raise ValueError("no sample has a known time, event and risk")
    time, event, risk = time[known], event[known], risk[known]
    threshold = float(np.median(risk))
    high = risk > threshold
    groups = [(label, mask) for label, mask in (("low risk", ~high), ("high risk", high)) if mask.any()]
    curves = tuple(_kaplan_meier_curve(label, time[mask], event[mask]) for label, mask in groups)
    p_value = None
    if len(groups) == 2:
        p_value = float(logrank_test(time[~high], time[high], event_observed_A=event[~high],
                                     event_observed_B=event[high]).p_value)
    return KaplanMeierData(curves=curves, threshold=threshold, logrank_p=p_value)


def _kaplan_meier_curve(label: str, time: np.ndarray, event: np.ndarray) -> KaplanMeierCurve:
    fitter = KaplanMeierFitter().fit(time, event_observed=event, label=label)
    interval = fitter.confidence_interval_survival_function_
    return KaplanMeierCurve(
        label=label, n=len(time), events=int(event.sum()),
        time=fitter.survival_function_.index.to_numpy(dtype=float),
        survival=fitter.survival_function_[label].to_numpy(dtype=float),
        ci_lower=interval[f"{label}_lower_0.95"].to_numpy(dtype=float),
        ci_upper=interval[f"{label}_upper_0.95"].to_numpy(dtype=float),
    )


def plot_kaplan_meier(km: KaplanMeierData, ax: Any = None) -> Any:
    """Draw the risk-group curves with their 95 % CI bands on a matplotlib ``ax``; returns the ax."""
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    for curve in km.curves:
        line = ax.step(curve.time, curve.survival, where="post", label=f"{curve.label} (n={curve.n})")[0]
        ax.fill_between(curve.time, curve.ci_lower, curve.ci_upper, step="post", alpha=0.2,
                        color=line.get_color())
    p_text = "n/a" if km.logrank_p is None else f"{km.logrank_p:.3g}"
    ax.set(xlabel="days since baseline", ylabel="survival probability", ylim=(0.0, 1.05),
           title=f"Kaplan-Meier by predicted risk (log-rank p = {p_text})")
    ax.legend()
    return ax
