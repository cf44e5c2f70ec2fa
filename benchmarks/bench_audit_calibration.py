"""Speed of the DP audit's power calibration: one numpy batch against one audit at a time.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_audit_calibration.py \
        [--trials 200] [--epsilons 0.0996 0.223 1.0 1.25] [--confidences 0.95 0.998] \
        [--output results/bench_audit_calibration.json]

The audit states its power (:func:`segments.audit.dp_audit.detectable_violation`) from a
simulation of its own test: at each grid point of a bisection, 400 simulated audits of a
Laplace release. The main job's audit and notebook 08 each state it for every audited
release (a distinct ε or Bonferroni confidence is a new calibration). The calibration runs
the 400 audits as one batch (``_lower_bounds``); the baseline in the same command runs them
one audit at a time through :func:`~segments.audit.dp_audit.epsilon_lower_bound`, as before
the batch. Every grid point the bisection visits is computed both ways and must be equal to
the bit; the ratio of the two times is the figure.

No OpenDP noise is drawn: the calibration is a seeded simulation of the test, not a release.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from segments.audit import dp_audit
from segments.audit.dp_audit import epsilon_lower_bound


def per_audit_quantile(trials: int, step: int, confidence: float, power: float) -> float:
    """``_bound_quantile`` computed one simulated audit at a time (the baseline)."""
    true_epsilon = 2.0 ** (step / dp_audit._GRID_STEPS_PER_OCTAVE)
    on_d, on_neighbour = dp_audit._calibration_noise(trials)
    bounds = [
        epsilon_lower_bound(true_epsilon + a, b, confidence=confidence)[0]
        for a, b in zip(on_d, on_neighbour, strict=True)
    ]
    rank = int(stats.binom.ppf(0.05, dp_audit._CALIBRATION_REPS, 1.0 - power))
    return float(np.sort(bounds)[max(rank - 1, 0)])


def timed_calibration(trials: int, epsilon: float, confidence: float) -> dict[str, Any]:
    """Both ways for one (trials, ε, confidence): seconds, grid points and equality."""
    dp_audit.detectable_violation.cache_clear()
    dp_audit._bound_quantile.cache_clear()
    dp_audit._calibration_noise(trials)  # the seeded draws: shared, not timed
    started = time.perf_counter()
    factor = dp_audit.detectable_violation(trials, epsilon, confidence=confidence)
    batched = time.perf_counter() - started
    visited = _visited_points(trials, epsilon, confidence)
    started = time.perf_counter()
    baseline = [per_audit_quantile(*point) for point, _ in visited]
    one_at_a_time = time.perf_counter() - started
    return {
        "trials": trials,
        "claimed_epsilon": epsilon,
        "confidence": confidence,
        "detectable_factor": factor,
        "grid_points": len(visited),
        "batched_s": round(batched, 3),
        "one_audit_at_a_time_s": round(one_at_a_time, 3),
        "equal_to_the_bit": [value for _, value in visited] == baseline,
    }


def _visited_points(
    trials: int, epsilon: float, confidence: float
) -> list[tuple[tuple[int, int, float, float], float]]:
    """The grid points the bisection asks for, with the batched quantile at each."""
    seen: list[tuple[tuple[int, int, float, float], float]] = []
    batched = dp_audit._bound_quantile.__wrapped__

    def spy(trials: int, step: int, confidence: float, power: float) -> float:
        value = batched(trials, step, confidence, power)
        seen.append(((trials, step, confidence, power), value))
        return value

    dp_audit.detectable_violation.cache_clear()
    saved = dp_audit._bound_quantile
    dp_audit._bound_quantile = spy  # type: ignore[assignment]
    try:
        dp_audit.detectable_violation(trials, epsilon, confidence=confidence)
    finally:
        dp_audit._bound_quantile = saved
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[200])
    # the main job's monthly, overview, mix and private-segment ε (AllOffice, 50,000)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.09958, 0.2229, 1.0, 1.251])
    # one release alone, and one of 25 audited together (Bonferroni)
    parser.add_argument("--confidences", type=float, nargs="+", default=[0.95, 0.998])
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for trials in args.trials:
        for epsilon in args.epsilons:
            for confidence in args.confidences:
                row = timed_calibration(trials, epsilon, confidence)
                print(json.dumps(row), flush=True)
                rows.append(row)
    batched = sum(float(r["batched_s"]) for r in rows)
    baseline = sum(float(r["one_audit_at_a_time_s"]) for r in rows)
    summary = {
        "calibrations": len(rows),
        "batched_s": round(batched, 2),
        "one_audit_at_a_time_s": round(baseline, 2),
        "speed-up": round(baseline / batched, 1),
        "all_equal_to_the_bit": all(r["equal_to_the_bit"] for r in rows),
    }
    print(json.dumps(summary))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
