"""Is the posterior of the demand's own variance calibrated? (issue 14; h14m's open check)

``interval="posterior"`` (segments.forecast, "The demand's variance is an estimate") widens
the forecast interval over a posterior of the demand's one-step variance ``s2_x``. Here the
truth is simulated from ETS(A,Ad,A) itself (alpha 0.2, beta 0.02, gamma 0.05, phi 0.9, a
seasonal swing of ±30 %) with innovation sd ``s``, so ``s2_x = s**2`` exactly; 30 months are
released with Laplace noise of variance ``(ratio x s)**2`` and forecast 6 months ahead by the
top-down model's total (ETS(A,Ad,A), noise-weighted). Per series, the probability integral
transform PIT = posterior CDF at the true ``s**2`` (uniform if calibrated: mean 0.5, 90 % of
series in its central 90 %), and the 90 % interval's coverage of the true path, plug-in
(Student's t, the default) vs posterior, on the same releases. Seed drawn at run time unless
given.

    PYTHONPATH=src python benchmarks/sim_signal_posterior.py --series 80
"""

from __future__ import annotations

import argparse
import secrets
import warnings

import numpy as np
from scipy import stats

from segments.forecast import forecast_series

RATIOS = (0.0, 0.5, 1.5, 3.0)
LEVEL = 0.9


def simulate(rng: np.random.Generator, n: int, s: float) -> np.ndarray:
    """One path of ETS(A,Ad,A) with innovation sd ``s``."""
    alpha, beta, gamma, phi = 0.2, 0.02, 0.05, 0.9
    level, slope = 100_000.0, 200.0
    season = list(30_000.0 * np.sin(2 * np.pi * (np.arange(12) + rng.integers(0, 12)) / 12))
    y = np.empty(n)
    for t in range(n):
        e = rng.normal(0.0, s)
        y[t] = level + phi * slope + season[0] + e
        level, slope = level + phi * slope + alpha * e, phi * slope + beta * e
        season = [*season[1:], season[0] + gamma * e]
    return y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=80)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = secrets.randbelow(2**31) if args.seed is None else args.seed
    print(f"seed {seed}, {args.series} series per noise ratio", flush=True)
    rng = np.random.default_rng(seed)
    warnings.simplefilter("ignore")  # statsmodels' start-value warnings on short series
    s = 2000.0
    for ratio in RATIOS:
        pits, zero = [], 0
        inside: dict[str, list[float]] = {"plug-in": [], "posterior": []}
        for _ in range(args.series):
            path = simulate(rng, 36, s)
            v = (ratio * s) ** 2
            released = path[:30] + (rng.laplace(0.0, np.sqrt(v / 2), 30) if v else 0.0)
            fc = forecast_series(released, np.full(30, v), 6, "ets-topdown", 3.0)
            pits.append(float(np.mean(fc.signal_draws <= s**2)))
            zero += fc.signal_variance == 0
            half = {
                "plug-in": stats.t.ppf(0.5 + LEVEL / 2, fc.dof) * np.sqrt(fc.variance),
                "posterior": fc.half_width(LEVEL),
            }
            for name, h in half.items():
                inside[name].append(float(np.mean(np.abs(path[30:] - fc.point) <= h)))
        pit = np.asarray(pits)
        central = float(np.mean((pit > 0.05) & (pit < 0.95)))
        print(
            f"noise/demand {ratio}: PIT mean {pit.mean():.3f} (0.5 if calibrated), in its "
            f"central 90 % {central:.3f} (0.90), below 0.05 {np.mean(pit <= 0.05):.3f}; plug-in "
            f"s2_x = 0 in {zero / args.series:.2f}; 90 % coverage 6 months ahead: plug-in "
            f"{np.mean(inside['plug-in']):.3f}, posterior {np.mean(inside['posterior']):.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
