"""Empirical check of the DP audit's power statement (issue 13 item 9e).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_audit_power.py [--reps 200] \
        [--trials 500 20000] [--epsilons 0.2 0.5 1.0] [--output results/bench_audit_power.json]

The audit states its power analytically (:func:`segments.audit.dp_audit.detectable_violation`:
the smallest factor m such that a release whose true ε is m x the stated ε is refuted with
95 % probability at the trials used). Here that statement is tested: an OpenDP Laplace count
(sensitivity 1, neighbours 100 vs 101) whose card states ε but which really runs at 2 x ε
(and, separately, at the stated detectable factor m x ε) is audited ``--reps`` times with the
audit's own test (:func:`segments.audit.dp_audit.epsilon_lower_bound`, Clopper-Pearson 95 %,
selection and test halves); the empirical refutation rate is compared with the stated one.
The baseline in the same command is an honest release at the stated ε: its refutation rate
is the audit's false-alarm rate (at most 2.5 % by construction).

Noise comes from OpenDP only (one vector measurement per side gives ``trials`` independent
draws); it cannot be seeded, so figures vary slightly between runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import opendp.prelude as dp

from segments.audit.dp_audit import detectable_violation, epsilon_lower_bound

dp.enable_features("contrib")


def laplace_draws(true_epsilon: float, value: float, trials: int) -> np.ndarray:
    """``trials`` independent OpenDP Laplace releases of ``value`` (sensitivity 1)."""
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l1_distance(T=float)
    measurement = dp.m.make_laplace(*space, scale=1.0 / true_epsilon)
    return np.asarray(measurement([float(value)] * trials), dtype=float)


def refutation_rate(stated: float, true_epsilon: float, trials: int, reps: int) -> float:
    """Share of ``reps`` audits whose lower bound exceeds the stated ε."""
    refuted = 0
    for _ in range(reps):
        on_d = laplace_draws(true_epsilon, 101.0, trials)
        on_neighbour = laplace_draws(true_epsilon, 100.0, trials)
        bound, _, _ = epsilon_lower_bound(on_d, on_neighbour)
        refuted += bound > stated
    return refuted / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--trials", type=int, nargs="+", default=[500, 20_000])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.2, 0.5, 1.0])
    parser.add_argument("--output", type=Path)
    parser.add_argument(
        "--rates",
        nargs="+",
        choices=["2x", "factor", "honest"],
        default=["2x", "factor", "honest"],
        help="which refutation rates to measure (each costs reps x 2 x trials OpenDP draws)",
    )
    args = parser.parse_args()
    rows = []
    for trials in args.trials:
        for stated in args.epsilons:
            start = time.perf_counter()
            factor = detectable_violation(trials, stated)
            row = {
                "trials": trials,
                "stated_epsilon": stated,
                "stated_detectable_factor": factor,
                "stated_rate_at_2x": ">= 0.95" if factor <= 2.0 else "< 0.95",
                "refuted_at_2x": (
                    refutation_rate(stated, 2.0 * stated, trials, args.reps)
                    if "2x" in args.rates
                    else None
                ),
                "refuted_at_factor": (
                    refutation_rate(stated, factor * stated, trials, args.reps)
                    if np.isfinite(factor) and "factor" in args.rates
                    else None
                ),
                "baseline_refuted_honest": (
                    refutation_rate(stated, stated, trials, args.reps)
                    if "honest" in args.rates
                    else None
                ),
                "reps": args.reps,
            }
            row["seconds"] = round(time.perf_counter() - start, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
