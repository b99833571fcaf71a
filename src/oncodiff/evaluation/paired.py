"""The patient bootstrap, and the paired verdicts it gives: is a method better than a reference on these cases?

A patient's follow-ups (and a 3D follow-up's slices) are not independent cases, so every interval here
resamples patients with replacement, never cases: :func:`patient_bootstrap` draws as many patient ids as
there are patients, concatenates the rows of the drawn patients (a patient drawn twice counts twice) and
evaluates any statistic on them; the 95 % interval is the 2.5th and 97.5th percentile of the draws
(percentile bootstrap; draws where the statistic is not defined are skipped and counted).

A paired difference is the mean over cases of (method - reference) of one per-case score, both methods
scored on the same cases. Its verdict, for a score where ``lower`` is better (MAE, CRPS): ``better`` when
the whole interval is below 0, ``worse`` when it is above 0, ``ties`` when it contains 0 (the test set
cannot tell the two apart); mirrored for a score where higher is better (SSIM). With fewer than
``MIN_PATIENTS`` patients the interval is still reported but no verdict is given: resampling 2 to 4 patients
gives only a handful of distinct draws, and an interval far narrower than the uncertainty.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

BOOTSTRAP_DRAWS = 2000
MIN_PATIENTS = 5  # fewer patients give a percentile interval of only a few distinct resamples: no verdict
VERDICTS = ("better", "ties", "worse")


def patient_bootstrap(statistic: Callable[[np.ndarray], float | None], patients: Sequence,
                      n_boot: int = BOOTSTRAP_DRAWS, seed: int = 0, level: float = 0.95) -> dict:
    """``statistic(rows)`` on every row, and its percentile interval over patient resamples.

    ``patients`` (n,): the patient of each row; ``statistic`` takes an index array into those rows (rows of a
    patient drawn k times appear k times) and returns a number, or None where it is not defined. Returns
    ``{"value", "ci95": [low, high] (None without a defined draw), "n_patients", "n_boot" (defined draws)}``;
    the interval's key stays ``ci95`` whatever ``level`` (it is the default and the only one the tool reports).
    For a mean, :func:`bootstrap_mean` gives the same draws without a Python call per draw.
    """
    patients = np.asarray(patients)
    ids = np.unique(patients)
    rows = [np.flatnonzero(patients == p) for p in ids]
    value = statistic(np.arange(len(patients))) if len(patients) else None
    draws = []
    for picks in _resamples(len(ids), n_boot, seed):
        for pick in picks:
            drawn = statistic(np.concatenate([rows[i] for i in pick]))
            if drawn is not None and np.isfinite(drawn):
                draws.append(float(drawn))
    return _interval(value, draws, len(ids), level)


def bootstrap_mean(values: Sequence[float], patients: Sequence, n_boot: int = BOOTSTRAP_DRAWS, seed: int = 0,
                   level: float = 0.95) -> dict:
    """:func:`patient_bootstrap` of the mean of ``values`` (n,) over rows, computed for all draws at once: the same
    resamples (same ``seed``, same patient draws), each draw's mean from how many times it drew each patient
    (sum of count x the patient's sum over sum of count x its rows), so the interval equals the loop's to rounding."""
    values, patients = np.asarray(values, dtype=np.float64), np.asarray(patients)
    ids, which = np.unique(patients, return_inverse=True)
    value = float(values.mean()) if len(values) else None
    sums, sizes = np.bincount(which, values, len(ids)), np.bincount(which, minlength=len(ids)).astype(np.float64)
    draws = []
    for picks in _resamples(len(ids), n_boot, seed):
        offsets = (picks + len(ids) * np.arange(len(picks))[:, None]).ravel()
        counts = np.bincount(offsets, minlength=len(picks) * len(ids)).reshape(len(picks), len(ids))
        means = (counts @ sums) / (counts @ sizes)
        draws.extend(means[np.isfinite(means)].tolist())
    return _interval(value, draws, len(ids), level)


def _resamples(n_patients: int, n_boot: int, seed: int, block_cells: int = 1 << 22):
    """(draws, n_patients) blocks of patient indices drawn with replacement, ``n_boot`` rows in all (none without
    patients); blocks of one generator stream, so the draws are those of ``n_boot`` calls of one draw each."""
    if not n_patients:
        return
    rng = np.random.default_rng(seed)
    block = max(1, block_cells // n_patients)
    for start in range(0, n_boot, block):
        yield rng.integers(0, n_patients, (min(block, n_boot - start), n_patients))


def _interval(value, draws: list[float], n_patients: int, level: float) -> dict:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail]) if draws else (None, None)
    return {"value": None if value is None else float(value),
            "ci95": [None if low is None else float(low), None if high is None else float(high)],
            "n_patients": n_patients, "n_boot": len(draws)}


def mean_difference(ours: Sequence[float], other: Sequence[float], patients: Sequence, n_boot: int = BOOTSTRAP_DRAWS,
                    seed: int = 0) -> dict:
    """Mean of (ours - other) over the cases where both are finite, with its patient-bootstrap 95 % interval:
    ``{"mean", "ci95", "n_cases", "n_patients"}``."""
    diff = np.asarray(ours, dtype=np.float64) - np.asarray(other, dtype=np.float64)
    keep = np.isfinite(diff)
    diff, patients = diff[keep], np.asarray(patients)[keep]
    boot = bootstrap_mean(diff, patients, n_boot, seed)
    return {"mean": boot["value"], "ci95": boot["ci95"], "n_cases": int(len(diff)), "n_patients": boot["n_patients"]}


def verdict(ci95: Sequence[float | None], lower_is_better: bool) -> str | None:
    """``better`` / ``ties`` / ``worse`` from the interval of (method - reference); None without an interval."""
    low, high = ci95
    if low is None or high is None:
        return None
    if low <= 0 <= high:
        return "ties"
    return "better" if (high < 0) == lower_is_better else "worse"


def paired_verdicts(scores: Mapping[str, Mapping[str, Sequence[float | None]]], patients: Sequence,
                    references: Sequence[str], lower_is_better: Mapping[str, bool], n_boot: int = BOOTSTRAP_DRAWS,
                    seed: int = 0) -> dict:
    """Every method against every reference, per score: ``{method: {reference: {score: difference + verdict}}}``.

    ``scores[method][score]``: (n,) per-case values in the order of ``patients`` (None or NaN: not defined for
    that case, left out of the pair); a reference absent from ``scores`` is skipped, and so is a method
    against itself.
    """
    out: dict = {}
    for method, values in scores.items():
        for reference in references:
            if reference == method or reference not in scores:
                continue
            row = {}
            for score, lower in lower_is_better.items():
                if score not in values or score not in scores[reference]:
                    continue
                d = mean_difference(_floats(values[score]), _floats(scores[reference][score]), patients, n_boot, seed)
                judged = d["n_cases"] and d["n_patients"] >= MIN_PATIENTS
                row[score] = d | {"verdict": verdict(d["ci95"], lower) if judged else None}
            out.setdefault(method, {})[reference] = row
    return out


def paired_difference(summary: dict, metric: str, other: str, n_boot: int = BOOTSTRAP_DRAWS, seed: int = 0,
                      main: str = "diffusion") -> dict:
    """From an evaluation summary: mean of (``main`` - ``other``) of one per-case image metric
    (``summary["image_metrics"]["per_case"]``), with a 95 % bootstrap interval that resamples patients
    (the first part of a case key); the benchmarks' claims use it."""
    rows = summary["image_metrics"]["per_case"]
    values = {(r["method"], r["case_id"]): r[metric] for r in rows}
    cases = [c for c in summary["test_cases"] if None not in (values.get((main, c)), values.get((other, c)))]
    diff = np.array([values[(main, c)] - values[(other, c)] for c in cases])
    patients = np.array([c.split("/")[0] for c in cases])
    boot = bootstrap_mean(diff, patients, n_boot, seed)
    return {"mean": boot["value"], "ci95": boot["ci95"], "n_cases": len(diff), "n_patients": boot["n_patients"]}


def _floats(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
