"""Treatments as a cumulative log surviving fraction L(t) of viable tumour cells (t in days, L(0) = 0).

The growth model (growth.py) multiplies the viable density by exp(L(t + dt) - L(t)) each step and
moves the killed cells to the dead compartment, so every treatment shares one interface.

- Radiotherapy, linear-quadratic model: each fraction of d Gy leaves exp(-(alpha d + beta d^2)).
- Immunotherapy: a kill hazard that ramps up as the T-cell response builds,
  k(t) = kappa (1 - exp(-t / tau)), so L(t) = -kappa (t - tau (1 - exp(-t / tau))).
- Chemotherapy (Norton-Simon / Goldie-Coldman mixture): a fraction f of cells resistant to the first
  drug beside sensitive cells; after N_i doses of phase i with log kills eps_s,i and eps_r,i,
  S = (1 - f) exp(-sum_i eps_s,i N_i) + f exp(-sum_i eps_r,i N_i). Sensitive cells go first (similar
  early shrinkage in every tumour); how well later, non-cross-resistant phases reach the resistant
  cells decides between pCR and residual disease.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


def weekdays(first_day: int, count: int) -> tuple[int, ...]:
    """``count`` treatment days, Monday to Friday, from ``first_day`` (a Monday)."""
    days = [d for d in range(first_day, first_day + 2 * count + 7) if (d - first_day) % 7 < 5]
    return tuple(days[:count])


@dataclass(frozen=True)
class Radiotherapy:
    """Fractionated radiotherapy; ``alpha`` in 1/Gy, ``beta`` in 1/Gy^2."""

    alpha: float
    beta: float
    dose_per_fraction_gy: float
    fraction_days: tuple[int, ...]

    def log_survival(self, day: float) -> float:
        fractions = np.searchsorted(self.fraction_days, day, side="right")
        d = self.dose_per_fraction_gy
        return -float(fractions) * (self.alpha * d + self.beta * d * d)

    def scaled(self, factor: float) -> Radiotherapy:
        """Radiosensitivity times ``factor`` (alpha/beta kept)."""
        return replace(self, alpha=self.alpha * factor, beta=self.beta * factor)


@dataclass(frozen=True)
class Immunotherapy:
    """Immune kill rate ``kill_rate`` (1/day) reached with time constant ``onset_days``."""

    kill_rate: float
    onset_days: float

    def log_survival(self, day: float) -> float:
        t = max(float(day), 0.0)
        return -self.kill_rate * (t - self.onset_days * (1.0 - np.exp(-t / self.onset_days)))

    def scaled(self, factor: float) -> Immunotherapy:
        return replace(self, kill_rate=self.kill_rate * factor)


@dataclass(frozen=True)
class ChemoPhase:
    """One drug regimen: dose days and its log kill per dose of sensitive and of resistant cells."""

    dose_days: tuple[int, ...]
    log_kill_sensitive: float
    log_kill_resistant: float

    def doses(self, day: float) -> int:
        return int(np.searchsorted(self.dose_days, day, side="right"))


@dataclass(frozen=True)
class Chemotherapy:
    """A sequence of non-cross-resistant phases acting on sensitive cells and a ``resistant_fraction``."""

    resistant_fraction: float
    phases: tuple[ChemoPhase, ...]

    def log_survival(self, day: float) -> float:
        sensitive = sum(p.doses(day) * p.log_kill_sensitive for p in self.phases)
        resistant = sum(p.doses(day) * p.log_kill_resistant for p in self.phases)
        f = self.resistant_fraction
        return float(np.log((1 - f) * np.exp(-sensitive) + f * np.exp(-resistant)))

    def scaled(self, factor: float) -> Chemotherapy:
        """Stronger (factor > 1) or weaker chemosensitivity: every log kill times ``factor``."""
        phases = tuple(replace(p, log_kill_sensitive=p.log_kill_sensitive * factor,
                               log_kill_resistant=p.log_kill_resistant * factor) for p in self.phases)
        return replace(self, phases=phases)
