"""Empirical differential-privacy audit: a statistical lower bound on a mechanism's ε.

A mechanism M is (ε, δ)-DP only if, for neighbouring datasets D and D' (here: with and
without one heavy person) and every set S of outputs, P[M(D) ∈ S] ≤ e^ε · P[M(D') ∈ S] + δ.
The audit runs M many times on both datasets, picks a threshold set S = {output > t} (or
{output < t}) on one half of the runs, and on the other, held-out half computes
Clopper–Pearson bounds p_lo ≤ P[M(D) ∈ S] and q_hi ≥ P[M(D') ∈ S]. Then

    ε_lower = ln((p_lo − δ) / q_hi)

is a lower bound on the true ε with the stated confidence: if ε_lower exceeds the claimed ε,
the claim is false (with that confidence). Selecting S on separate runs keeps the bound
honest. A sound mechanism passes; a mechanism whose contribution bound is missing fails,
because the heavy person shifts its output far more than the noise hides.

The mechanism is called as a plain function, typically an already *resolved* OpenDP
measurement, so thousands of trials take seconds.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "DpAuditResult",
    "audit_mechanism",
    "detectable_violation",
    "epsilon_lower_bound",
    "family_confidence",
]


@dataclass(frozen=True)
class DpAuditResult:
    """Outcome of an empirical audit of one mechanism."""

    name: str
    claimed_epsilon: float
    delta: float
    epsilon_lower_bound: float
    confidence: float
    trials: int
    threshold: float
    direction: str

    @property
    def power(self) -> float:
        """The smallest true ε, as a multiple of the claim, refuted with 95 % probability at
        the trials and confidence this audit used."""
        return detectable_violation(self.trials, self.claimed_epsilon, confidence=self.confidence)

    @property
    def passed(self) -> bool:
        """True when the data do not refute the claim."""
        return self.epsilon_lower_bound <= self.claimed_epsilon

    def record(self, clause: str) -> dict[str, Any]:
        """Structured result for the report: name, clause, verdict and evidence."""
        return {
            "name": self.name,
            "clause": clause,
            "verdict": "pass" if self.passed else "fail",
            "evidence": {
                "claimed_epsilon": self.claimed_epsilon,
                "delta": self.delta,
                "epsilon_lower_bound": round(self.epsilon_lower_bound, 4),
                "confidence": self.confidence,
                "trials_per_dataset": self.trials,
                "detects_with_95_percent": (
                    f"a true ε of {self.power:.2f} x the claim or more in the Laplace model "
                    f"({self.trials} trials, confidence {self.confidence:.4g}); optimistic: "
                    "the measured power is lower (benchmarks/README, bench_audit_power)"
                    if self.claimed_epsilon > 0
                    else "n/a"
                ),
            },
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "mechanism": self.name,
            "claimed ε": self.claimed_epsilon,
            "δ": self.delta,
            "empirical ε lower bound": round(self.epsilon_lower_bound, 4),
            "confidence": self.confidence,
            "trials per dataset": self.trials,
            "result": "pass" if self.passed else "FAIL: claim refuted",
        }


def _one_sided_alpha(confidence: float) -> float:
    """Error rate of each Clopper-Pearson bound: a test joins two bounds (p_lo, q_hi) and tries
    both orders of the datasets on the held-out runs, so four one-sided errors share
    ``1 - confidence``."""
    return (1 - confidence) / 4


def family_confidence(confidence: float, tests: int) -> float:
    """Per-test confidence so that ``tests`` audits together keep ``confidence`` (Bonferroni).

    A workspace's audit tests dozens of releases at once; at 95 % each, a sound release would
    be refuted by chance in some runs (the test suite and the main job saw it happen).

    Examples
    --------
    >>> round(family_confidence(0.95, 25), 4)
    0.998
    """
    return 1 - (1 - confidence) / max(tests, 1)


def _clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    lo = 0.0 if k == 0 else float(stats.beta.ppf(alpha, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - alpha, k + 1, n - k))
    return lo, hi


def _best_threshold(a0: np.ndarray, a1: np.ndarray, delta: float) -> tuple[float, str]:
    """Choose the set {x > t} or {x < t} that best separates D from D' on the selection
    half (smoothed log ratio, so rare sets are not chosen by luck)."""
    candidates = np.unique(np.quantile(np.concatenate([a0, a1]), np.linspace(0.01, 0.99, 99)))
    best = (-math.inf, float(candidates[0]), ">")
    n0, n1 = len(a0), len(a1)
    for t in candidates:
        for direction in (">", "<"):
            s0 = np.count_nonzero(a0 > t if direction == ">" else a0 < t)
            s1 = np.count_nonzero(a1 > t if direction == ">" else a1 < t)
            p, q = (s0 + 1) / (n0 + 2), (s1 + 1) / (n1 + 2)
            score = math.log(max(p - delta, 1e-12) / q)
            if score > best[0]:
                best = (score, float(t), direction)
    return best[1], best[2]


def epsilon_lower_bound(
    out_d: np.ndarray,
    out_d_prime: np.ndarray,
    *,
    delta: float = 0.0,
    confidence: float = 0.95,
) -> tuple[float, float, str]:
    """Lower bound on ε from scalar outputs on D and D' (equal counts).

    Returns (ε lower bound, threshold, direction). Both orders (D vs D' and D' vs D) are
    tried on the selection half; the bound is computed on the held-out half.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> lb, _, _ = epsilon_lower_bound(rng.normal(0, 1, 4000), rng.normal(0, 1, 4000))
    >>> lb <= 0.2
    True
    """
    out_d, out_d_prime = np.asarray(out_d, float), np.asarray(out_d_prime, float)
    half = len(out_d) // 2
    sel0, test0 = out_d[:half], out_d[half:]
    sel1, test1 = out_d_prime[:half], out_d_prime[half:]
    alpha = _one_sided_alpha(confidence)
    best = (0.0, 0.0, ">")
    for a, b, ta, tb in ((sel0, sel1, test0, test1), (sel1, sel0, test1, test0)):
        t, direction = _best_threshold(a, b, delta)
        ka = int(np.count_nonzero(ta > t if direction == ">" else ta < t))
        kb = int(np.count_nonzero(tb > t if direction == ">" else tb < t))
        p_lo, _ = _clopper_pearson(ka, len(ta), alpha)
        _, q_hi = _clopper_pearson(kb, len(tb), alpha)
        if p_lo - delta > 0 and q_hi > 0:
            lb = math.log((p_lo - delta) / q_hi)
            if lb > best[0]:
                best = (lb, t, direction)
    return best


def audit_mechanism(
    name: str,
    mechanism: Callable[[Any], Any],
    dataset: Any,
    neighbour: Any,
    *,
    claimed_epsilon: float,
    delta: float = 0.0,
    trials: int = 2000,
    confidence: float = 0.95,
    statistic: Callable[[Any], float] | None = None,
) -> DpAuditResult:
    """Run ``mechanism`` ``trials`` times on each dataset and bound its ε from below.

    Parameters
    ----------
    name : str
        Shown in the report.
    mechanism : callable
        Takes a dataset, returns a release (a number, an array or a frame). Its noise comes
        from OpenDP; nothing here adds or seeds noise.
    dataset, neighbour : any
        Neighbouring inputs: the same people, with and without one (heavy) person.
    claimed_epsilon, delta : float
        The guarantee the release card states.
    statistic : callable, optional
        Maps a release to one number (e.g. the cell the heavy person is in); default
        ``float``.
    """
    stat = statistic or float
    out_d = np.array([stat(mechanism(dataset)) for _ in range(trials)])
    out_n = np.array([stat(mechanism(neighbour)) for _ in range(trials)])
    lb, t, direction = epsilon_lower_bound(out_d, out_n, delta=delta, confidence=confidence)
    return DpAuditResult(name, claimed_epsilon, delta, lb, confidence, trials, t, direction)


@functools.lru_cache(maxsize=256)
def detectable_violation(
    trials: int, epsilon: float, *, power: float = 0.95, confidence: float = 0.95
) -> float:
    """The audit's statistical power: the smallest factor m such that a mechanism whose true
    ε is m x ``epsilon`` is refuted with probability about ``power`` at ``trials`` trials.

    Modelled on the Laplace mechanism with a unit shift (a neighbour moving one released
    value by its sensitivity). For each threshold set {x > t}, the held-out counts (half the
    trials) are taken at their pessimistic ``power`` quantile (normal approximation: the
    count on D low, on D' high), and the audit's Clopper-Pearson bound is computed from them;
    m is detected if some threshold's bound exceeds ``epsilon``. Bisection on m in [1, 64];
    ``inf`` beyond.

    Examples
    --------
    >>> detectable_violation(20000, 1.0) < detectable_violation(500, 1.0)
    True
    >>> 1.0 < detectable_violation(20000, 0.5) < 3.0
    True
    """
    held_out = trials - trials // 2
    z = float(stats.norm.ppf(power))
    alpha = _one_sided_alpha(confidence)

    def refuted(factor: float) -> bool:
        scale = 1.0 / (factor * epsilon)
        t = np.linspace(-5 * scale, 1 + 12 * scale, 400)
        p = np.where(t < 1, 1 - 0.5 * np.exp((t - 1) / scale), 0.5 * np.exp(-(t - 1) / scale))
        q = np.where(t < 0, 1 - 0.5 * np.exp(t / scale), 0.5 * np.exp(-t / scale))
        k_p = np.floor(held_out * p - z * np.sqrt(held_out * p * (1 - p)))
        k_q = np.ceil(held_out * q + z * np.sqrt(held_out * q * (1 - q)))
        ok = (k_p > 0) & (k_q < held_out)
        if not ok.any():
            return False
        k_p, k_q = k_p[ok], np.maximum(k_q[ok], 0)
        p_lo = stats.beta.ppf(alpha, k_p, held_out - k_p + 1)
        q_hi = stats.beta.ppf(1 - alpha, k_q + 1, held_out - k_q)
        return bool(np.max(np.log(p_lo / q_hi)) > epsilon)

    low, high = 1.0, 64.0
    if not refuted(high):
        return math.inf
    for _ in range(30):
        mid = (low + high) / 2
        low, high = (low, mid) if refuted(mid) else (mid, high)
    return round(high, 2)
