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
from typing import Any, Literal

import numpy as np
from scipy import special, stats

__all__ = [
    "DpAuditResult",
    "audit_mechanism",
    "detectable_violation",
    "epsilon_lower_bound",
    "laplace_likelihood_ratio",
    "family_confidence",
]


#: An empirical audit's verdict (see :attr:`DpAuditResult.verdict`).
Verdict = Literal["pass", "fail", "inconclusive"]


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
    #: Runs of one release composed per output, their statistics summed (a sequence case):
    #: the power is calibrated on the sum of that many Laplace releases.
    copies: int = 1

    @property
    def power(self) -> float:
        """The smallest true ε, as a multiple of the claim, refuted with 95 % probability at
        the trials and confidence this audit used."""
        return detectable_violation(
            self.trials, self.claimed_epsilon, confidence=self.confidence, copies=self.copies
        )

    @property
    def passed(self) -> bool:
        """True when the data do not refute the claim."""
        return self.epsilon_lower_bound <= self.claimed_epsilon

    @property
    def verdict(self) -> Verdict:
        """``fail`` when the claim is refuted; ``pass`` when it is not and the test could
        have refuted a violation (its :attr:`power` is finite); ``inconclusive`` when it is
        not refuted but no violation of any size would have been: a test that cannot fail
        does not pass."""
        if not self.passed:
            return "fail"
        return "pass" if math.isfinite(self.power) else "inconclusive"

    def record(self, clause: str) -> dict[str, Any]:
        """Structured result for the report: name, clause, verdict and evidence."""
        return {
            "name": self.name,
            "clause": clause,
            "verdict": self.verdict,
            "evidence": {
                "claimed_epsilon": self.claimed_epsilon,
                "delta": self.delta,
                "epsilon_lower_bound": round(self.epsilon_lower_bound, 4),
                "confidence": self.confidence,
                "trials_per_dataset": self.trials,
                "detects_with_95_percent": self.power_statement(),
            }
            | ({"copies_composed": self.copies} if self.copies > 1 else {}),
        }

    def power_statement(self) -> str:
        """What this test can refute, in words: the one wording of every case's power (and,
        for an inconclusive one, why it cannot pass)."""
        if self.claimed_epsilon <= 0:
            return "n/a"
        how = (
            f"{self.trials} trials, confidence {self.confidence:.4g}; calibrated on simulated "
            + (
                "audits of a Laplace release by this test, checked by "
                "benchmarks/bench_audit_power.py"
                if self.copies == 1
                else f"audits of the sum of {self.copies} Laplace releases by this test (not "
                "checked on OpenDP releases)"
            )
        )
        if not math.isfinite(self.power):
            # at a small ε and few trials no violation is caught 95 % of the time: say so
            return (
                "inconclusive: consistent with the claim, but this test cannot refute it: no "
                f"violation of any size is caught with 95 % probability at this ε ({how})"
            )
        return f"a true ε of {self.power:.2f} x the claim or more ({how})"

    def as_dict(self) -> dict[str, Any]:
        """The audit's result as a JSON-able dict (the evidence of a check)."""
        return {
            "mechanism": self.name,
            "claimed ε": self.claimed_epsilon,
            "δ": self.delta,
            "empirical ε lower bound": round(self.epsilon_lower_bound, 4),
            "confidence": self.confidence,
            "trials per dataset": self.trials,
            "result": {
                "pass": "pass",
                "fail": "FAIL: claim refuted",
                "inconclusive": "INCONCLUSIVE: not refuted, but this test cannot refute it",
            }[self.verdict],
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


#: The candidate thresholds of a test: the 1st..99th percentiles of its selection half.
_LEVELS = np.linspace(0.01, 0.99, 99)


def _percentiles(sorted_rows: np.ndarray) -> np.ndarray:
    """``np.quantile(row, _LEVELS)`` (the default, linear method) of every row of an array
    sorted along its rows, without numpy's partition: numpy's own arithmetic (index
    ``(n - 1) q``, a lerp taken from the nearer end), so the values are the same to the bit
    (``tests/test_audit_dp.py`` holds it to ``np.quantile``)."""
    n = sorted_rows.shape[1]
    virtual = (n - 1) * _LEVELS
    previous = np.floor(virtual)
    gamma = virtual - previous
    low = np.minimum(previous.astype(np.intp), n - 1)
    high = np.minimum(low + 1, n - 1)
    a, b = sorted_rows[:, low], sorted_rows[:, high]
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


def _counts_beyond(sorted_rows: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each row (sorted) and each of its ``thresholds``: the runs above the threshold and
    the runs below it, interleaved per threshold (rows × 2t: t₁ ">", t₁ "<", t₂ ">", …)."""
    n = sorted_rows.shape[1]
    counts = np.empty((len(sorted_rows), thresholds.shape[1], 2), dtype=np.int64)
    for i, (row, t) in enumerate(zip(sorted_rows, thresholds, strict=True)):
        counts[i, :, 0] = n - np.searchsorted(row, t, "right")
        counts[i, :, 1] = np.searchsorted(row, t, "left")
    return counts.reshape(len(sorted_rows), -1)


def _best_thresholds(
    a0: np.ndarray, a1: np.ndarray, candidates: np.ndarray, delta: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per audit (a row of ``a0`` and of ``a1``, both sorted): the set {x > t} or {x < t}
    among the ``candidates`` (ascending) that best separates D from D' on the selection half
    (smoothed log ratio, so rare sets are not chosen by luck). Returns the thresholds and
    whether each set is ``>``.

    The first best in the order (t ascending, ``>`` before ``<``) wins, so a candidate
    repeated (ties in discrete outputs) changes nothing."""
    n0, n1 = a0.shape[1], a1.shape[1]
    p = (_counts_beyond(a0, candidates) + 1) / (n0 + 2)
    q = (_counts_beyond(a1, candidates) + 1) / (n1 + 2)
    best = np.argmax(np.log(np.maximum(p - delta, 1e-12) / q), axis=1)
    return candidates[np.arange(len(a0)), best // 2], best % 2 == 0


def _clopper_pearson_bounds(k: np.ndarray, n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson lower and upper bounds for ``k`` successes of ``n`` (arrays of k), each
    at one-sided error ``alpha``: the beta quantile (scipy.stats.beta.ppf) through its special
    function, ~50x cheaper."""
    k = np.asarray(k, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):  # the ends are set just below
        lo = special.betaincinv(k, n - k + 1, alpha)
        hi = special.betaincinv(k + 1, n - k, 1 - alpha)
    return np.where(k == 0, 0.0, lo), np.where(k == n, 1.0, hi)


def _lower_bounds(
    out_d: np.ndarray, out_d_prime: np.ndarray, delta: float, confidence: float
) -> tuple[list[float], np.ndarray, np.ndarray]:
    """:func:`epsilon_lower_bound` for a batch of audits (rows of runs, equal counts), in
    one numpy pass: (bounds, thresholds, whether each set is ``>``)."""
    half = out_d.shape[1] // 2
    sel0, test0 = out_d[:, :half], out_d[:, half:]
    sel1, test1 = out_d_prime[:, :half], out_d_prime[:, half:]
    alpha = _one_sided_alpha(confidence)
    audits = len(out_d)
    bounds = [0.0] * audits
    thresholds, above = np.zeros(audits), np.ones(audits, dtype=bool)
    sel0, sel1 = np.sort(sel0, axis=1), np.sort(sel1, axis=1)
    # the candidates: the percentiles of both selection halves (either order), ascending
    both = np.sort(np.concatenate([sel0, sel1], axis=1), axis=1)
    candidates = np.sort(_percentiles(both), axis=1)
    for a, b, ta, tb in ((sel0, sel1, test0, test1), (sel1, sel0, test1, test0)):
        t, greater = _best_thresholds(a, b, candidates, delta)
        ka = np.where(greater, (ta > t[:, None]).sum(axis=1), (ta < t[:, None]).sum(axis=1))
        kb = np.where(greater, (tb > t[:, None]).sum(axis=1), (tb < t[:, None]).sum(axis=1))
        p_lo, _ = _clopper_pearson_bounds(ka, ta.shape[1], alpha)
        _, q_hi = _clopper_pearson_bounds(kb, tb.shape[1], alpha)
        for i in range(audits):
            if p_lo[i] - delta > 0 and q_hi[i] > 0:
                lb = math.log((float(p_lo[i]) - delta) / float(q_hi[i]))
                if lb > bounds[i]:  # the first order wins a tie, as the set it chose
                    bounds[i], thresholds[i], above[i] = lb, t[i], greater[i]
    return bounds, thresholds, above


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
    bounds, thresholds, above = _lower_bounds(out_d[None], out_d_prime[None], delta, confidence)
    return bounds[0], float(thresholds[0]), ">" if above[0] else "<"


def laplace_likelihood_ratio(
    pilot_d: np.ndarray, pilot_d_prime: np.ndarray
) -> Callable[[np.ndarray], float]:
    """A scalar test statistic for a release of several numbers: the log likelihood ratio of
    D against D' were each number independent Laplace noise around its centre.

    The threshold test on one released number sees only that number's share of ε (a count
    and a sum in a person's cell each carry half); the likelihood ratio adds up the evidence
    of every number the person moves, so a release that spends twice its claim is caught at
    the claim's own ε. Centres (medians) and scales (mean absolute deviations, pooled) are
    fitted on *pilot* runs (rows: runs, columns: numbers) kept out of the audit, so the
    statistic is fixed before the audited runs are drawn and the lower bound stays valid
    whatever the noise's true shape (a poor fit only costs power).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> d, d_prime = rng.laplace([1.0, 5.0], 1.0, (500, 2)), rng.laplace([0.0, 5.0], 1.0, (500, 2))
    >>> ratio = laplace_likelihood_ratio(d, d_prime)
    >>> ratio(np.array([3.0, 5.0])) > 0.5 > ratio(np.array([-2.0, 5.0]))
    True
    """
    pilot_d = np.atleast_2d(np.asarray(pilot_d, dtype=float))
    pilot_d_prime = np.atleast_2d(np.asarray(pilot_d_prime, dtype=float))
    centre_d, centre_d_prime = np.median(pilot_d, axis=0), np.median(pilot_d_prime, axis=0)
    spread = np.concatenate(
        [np.abs(pilot_d - centre_d), np.abs(pilot_d_prime - centre_d_prime)]
    ).mean(axis=0)
    scale = np.where(spread > 0, spread, np.inf)  # a number without noise carries no evidence

    def log_ratio(numbers: np.ndarray) -> float:
        x = np.asarray(numbers, dtype=float)
        return float(np.sum((np.abs(x - centre_d_prime) - np.abs(x - centre_d)) / scale))

    return log_ratio


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
    copies: int = 1,
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
    copies : int
        How many runs of one release each invocation composes, their statistics summed
        (a sequence): the power is calibrated on such a sum.
    """
    stat = statistic or float
    out_d = np.array([stat(mechanism(dataset)) for _ in range(trials)])
    out_n = np.array([stat(mechanism(neighbour)) for _ in range(trials)])
    lb, t, direction = epsilon_lower_bound(out_d, out_n, delta=delta, confidence=confidence)
    return DpAuditResult(
        name, claimed_epsilon, delta, lb, confidence, trials, t, direction, copies=copies
    )


#: Simulated audits per point of the power curve (the 5 % quantile of their bounds is taken
#: conservatively: an order statistic below the true quantile with 95 % confidence).
_CALIBRATION_REPS = 400
#: The curve's grid of true ε (per unit shift): 2^(k/16) for k in [-160, 128], ~0.001–256.
_GRID_STEPS_PER_OCTAVE = 16
_GRID = (-160, 128)
_CALIBRATION_SEED = 20261205


@functools.lru_cache(maxsize=8)
def _calibration_noise(trials: int, copies: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Standard Laplace draws for ``_CALIBRATION_REPS`` simulated audits of ``trials`` per
    side, each the sum of ``copies`` draws. Seeded: the calibration is a pure function of
    its arguments. This is a simulation of the test, not a release, so it does not need (or
    use) OpenDP's unseedable noise."""
    rng = np.random.default_rng([_CALIBRATION_SEED, trials] + ([copies] if copies > 1 else []))
    shape = (_CALIBRATION_REPS, trials)
    on_d, on_neighbour = rng.laplace(0.0, 1.0, shape), rng.laplace(0.0, 1.0, shape)
    for _ in range(copies - 1):
        on_d += rng.laplace(0.0, 1.0, shape)
        on_neighbour += rng.laplace(0.0, 1.0, shape)
    return on_d, on_neighbour


@functools.lru_cache(maxsize=4096)
def _bound_quantile(
    trials: int, step: int, confidence: float, power: float, copies: int = 1
) -> float:
    """The ``1 - power`` quantile of the real test's ε lower bound
    (:func:`epsilon_lower_bound`) over simulated audits of a Laplace release whose true ε is
    ``2^(step/16)`` (unit sensitivity, neighbours one unit apart; the test is invariant to
    rescaling its outputs, so this covers every scale); with ``copies``, of the sum of that
    many releases whose ε add up to it (each shifted by 1 / copies of the total)."""
    true_epsilon = 2.0 ** (step / _GRID_STEPS_PER_OCTAVE)
    on_d, on_neighbour = _calibration_noise(trials, copies)
    # the real test's own code, every simulated audit in one batch
    bounds, _, _ = _lower_bounds(true_epsilon + on_d, on_neighbour, 0.0, confidence)
    # a conservative order statistic: with 95 % confidence it lies below the true
    # ``1 - power`` quantile, so the stated power is not an artefact of the simulation's luck
    rank = int(stats.binom.ppf(0.05, _CALIBRATION_REPS, 1.0 - power))
    return float(np.sort(bounds)[max(rank - 1, 0)])


@functools.lru_cache(maxsize=256)
def detectable_violation(
    trials: int,
    epsilon: float,
    *,
    power: float = 0.95,
    confidence: float = 0.95,
    copies: int = 1,
) -> float:
    """The audit's statistical power: the smallest factor m such that a release whose true ε
    is m x ``epsilon`` is refuted with probability ``power`` at ``trials`` trials.

    Calibrated on a simulation of the real test, not a model of it: a Laplace release (the
    neighbour moves the released value by its sensitivity) whose true ε lies on a grid
    (2^(1/16) apart) is audited ``400`` times by :func:`epsilon_lower_bound` itself (the
    threshold chosen on the selection half, Clopper-Pearson bounds on the held-out half at
    ``confidence``, which the caller sets for Bonferroni); the factor is the smallest true ε
    whose ``1 - power`` quantile of the bounds exceeds ``epsilon`` (found by bisection on
    the grid, interpolated between grid points), divided by ``epsilon``. Seeded, hence a
    pure function of its arguments, and cached; about 0.4 ms per simulated audit at 500
    trials. With ``copies``, the release audited is a sequence: ``copies`` runs of one
    Laplace release whose statistics the test sums; the sum of their noise has thinner
    tails than one Laplace, so a composed claim is refuted far less easily than one
    release at the same ε. ``inf`` when even a true ε of 256 (or 64 x the claim) would not
    be refuted with that probability. ``benchmarks/bench_audit_power.py`` checks the
    statement against OpenDP's own Laplace releases.

    Examples
    --------
    >>> detectable_violation(2000, 1.0) < detectable_violation(500, 1.0)
    True
    >>> 1.0 < detectable_violation(2000, 1.0) < 3.0
    True
    """
    if epsilon <= 0 or trials < 4:
        return math.inf

    def refuted(step: int) -> bool:
        return _bound_quantile(trials, step, confidence, power, copies) > epsilon

    low, high = _GRID
    # the factor is at least 1 (an honest release is refuted only by chance, < 1 - power)
    low = max(low, math.floor(_GRID_STEPS_PER_OCTAVE * math.log2(epsilon)))
    high = min(high, math.ceil(_GRID_STEPS_PER_OCTAVE * math.log2(64 * epsilon)))
    if low >= high or not refuted(high):
        return math.inf
    if refuted(low):
        return round(max(2.0 ** (low / _GRID_STEPS_PER_OCTAVE) / epsilon, 1.0), 2)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if refuted(mid) else (mid, high)
    return round(max(2.0 ** (high / _GRID_STEPS_PER_OCTAVE) / epsilon, 1.0), 2)
