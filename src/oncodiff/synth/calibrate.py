"""Check that the synthetic cohorts reproduce the published numbers they are anchored to.

    python -m oncodiff.synth.calibrate [--patients 300] [--dims 2] [--seed 0] [--workers 1] [--sites brain,lung,breast]

prints, per site, each target next to the value measured on freshly simulated patients with its
sampling error (95 % interval), and how often a patient's sensitivity had to be pushed into its
class (see simulate._simulate_arm). Targets:

- lung: 26 % responders (ImmunoDiff, paper 000: 19 of 74, RECIST at 6 weeks);
- breast: 35 % pCR; mean MIP tumour size reduction 47.9 % (pCR) and 43.1 % (non-pCR) at 3 weeks,
  87.5 % and 59.3 % at 12 weeks (NAC paper 003, Table 3, ground truth rows);
- brain: median overall survival 15 months (paper 001, Stupp protocol) and half good responders
  (>= 20 % volume reduction, PULSAR paper 002; the paper does not state its split, see the docs).
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from oncodiff.synth.registry import SITES
from oncodiff.synth.simulate import simulate_patient

DAYS_PER_MONTH = 365.25 / 12


def _summary(site_name: str, index: int, seed: int, dims: int) -> dict:
    record = simulate_patient(SITES[site_name], index, seed, dims)
    sizes = [s.size for s in record.scans]
    return {"label": record.label, "drawn": record.truth["responder_drawn"], "cf_label": record.cf_label,
            "pushed": int(record.truth["strengthened"] > 0) + int(record.truth["cf_strengthened"] > 0),
            "reduction": [1 - s / sizes[0] for s in sizes[1:]], "os_days": record.survival_days,
            "death": record.death}


def _proportion(values) -> tuple[float, float]:
    p = float(np.mean(values))
    return p, 1.96 * np.sqrt(p * (1 - p) / len(values))


def _mean(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return float(values.mean()), 1.96 * float(values.std(ddof=1)) / np.sqrt(len(values))


def _median_os_months(rows) -> tuple[float, float, float]:
    from lifelines import KaplanMeierFitter
    from lifelines.utils import median_survival_times

    kmf = KaplanMeierFitter().fit([r["os_days"] for r in rows], [r["death"] for r in rows])
    low, high = median_survival_times(kmf.confidence_interval_).to_numpy().ravel()
    return tuple(v / DAYS_PER_MONTH for v in (kmf.median_survival_time_, low, high))


def _by_label(rows, label: bool, visit: int) -> list[float]:
    return [100 * r["reduction"][visit] for r in rows if r["label"] == label]


def site_checks(site_name: str, rows: list[dict]) -> list[tuple[str, float | None, float, float]]:
    """(quantity, target or None, measured, 95 % half-width) for one site's simulated patients."""
    checks = []
    rate = _proportion([r["label"] for r in rows])
    if site_name == "lung":
        checks.append(("responders %", 100 * 19 / 74, 100 * rate[0], 100 * rate[1]))
    if site_name == "breast":
        checks.append(("pCR %", 35.0, 100 * rate[0], 100 * rate[1]))
        for visit, week, targets in ((0, 3, (47.93, 43.13)), (1, 12, (87.48, 59.28))):
            for label, target in zip((True, False), targets):
                name = f"size reduction week {week}, {'pCR' if label else 'non-pCR'} %"
                checks.append((name, target, *_mean(_by_label(rows, label, visit))))
    if site_name == "brain":
        checks.append(("good response (>= 20 % volume reduction) %", 50.0, 100 * rate[0], 100 * rate[1]))
    median, low, high = _median_os_months(rows)
    checks.append(("median overall survival, months", 15.0 if site_name == "brain" else None, median,
                   (high - low) / 2))
    checks.append(("rule label = simulated class %", 100.0, 100 * np.mean([r["label"] == r["drawn"] for r in rows]),
                   0.0))
    checks.append(("arms pushed into their class %", None, 100 * np.mean([r["pushed"] for r in rows]) / 2, 0.0))
    return checks


def simulate_summaries(site_name: str, n_patients: int, seed: int, dims: int, workers: int) -> list[dict]:
    jobs = [(site_name, i, seed, dims) for i in range(n_patients)]
    if workers == 1:
        return [_summary(*job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_summary, *zip(*jobs)))


def format_table(results: dict[str, list[tuple]], n_patients: int) -> str:
    lines = [f"{'site':7s} {'quantity':45s} {'target':>8s} {'measured':>9s} {'95% +-':>7s}  within",
             "-" * 88]
    for site_name, checks in results.items():
        for name, target, measured, half in checks:
            target_text = "-" if target is None else f"{target:8.1f}"
            within = "" if target is None else ("yes" if abs(measured - target) <= max(half, 1e-9) else "NO")
            measured_text = f"{measured:9.1f}" if np.isfinite(measured) else "not reached"
            half_text = f"{half:7.1f}" if np.isfinite(half) else "-"
            lines.append(f"{site_name:7s} {name:45s} {target_text:>8s} {measured_text:>9s} {half_text:>7s}  {within}")
    lines.append(f"({n_patients} simulated patients per site)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description="Synthetic cohorts against their published anchors.")
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--dims", type=int, default=2, choices=(2, 3))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--sites", default="brain,lung,breast")
    args = parser.parse_args(argv)
    results = {name: site_checks(name, simulate_summaries(name, args.patients, args.seed, args.dims, args.workers))
               for name in args.sites.split(",")}
    table = format_table(results, args.patients)
    print(table)
    return table


if __name__ == "__main__":
    main()
