"""Coverage of the top-down forecast's 90 % intervals, dataset by dataset, on simulated panels
whose truth is known and whose release noise swamps the demand's own month-to-month change.

Each simulated dataset is ten categories sharing a total: a drifting level, a yearly season
and month-to-month shocks (the demand), each category a fixed share of it; every category is
released with Laplace noise of known scale. Each dataset is forecast 6 months ahead from
several origins (as benchmarks/backtest_forecast.py ``--origins``), with the interval over the
posterior of the demand's variance (``interval="posterior"``, segments.forecast) and with the
plug-in Student's t (``"plug-in"``, the default), on the same releases. A third row,
``plug-in scaled to the level``, widens or narrows every plug-in interval by the one factor
that makes the pooled coverage exactly the level (found from the truth: evaluation only, no
forecast can do it): how far one dataset's coverage still spreads when the pooled level is
right, since the categories of a dataset share the total's error. Seeds are drawn at run time
unless given.

    PYTHONPATH=src python benchmarks/sim_forecast_intervals.py --datasets 30
"""

from __future__ import annotations

import argparse
import json
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segments.forecast import forecast_panel

RESULTS = Path(__file__).parent / "results" / "sim_forecast_intervals.json"
INTERVALS = ("posterior", "plug-in")
LEVEL = 0.9


def simulated_panel(
    seed: int, n_months: int, noise_ratio: float, n_categories: int = 10
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(true values, released values, noise variances), months x categories. The total's
    demand has one-step shocks of sd 2 % of its level; each category is released with
    Laplace noise whose variance, summed over the categories, is ``noise_ratio**2`` times the
    variance of those shocks."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_months)
    level = 100_000.0 * (1.0 + np.cumsum(rng.normal(0.0, 0.01, n_months)))
    season = 1.0 + 0.3 * np.sin(2 * np.pi * (t + rng.integers(0, 12)) / 12)
    shock = rng.normal(0.0, 0.02 * 100_000.0 * np.sqrt(0.75), n_months)
    total = level * season + shock
    share = rng.dirichlet(np.full(n_categories, 4.0))
    truth = total[:, None] * share[None, :]
    total_noise_var = (noise_ratio * 0.02 * 100_000.0) ** 2
    var = np.full(n_categories, total_noise_var / n_categories)
    released = truth + rng.laplace(0.0, np.sqrt(var / 2.0), truth.shape)
    months = pd.date_range("2023-01-01", periods=n_months, freq="MS")
    cols = [f"c{k}" for k in range(n_categories)]
    frame = lambda a: pd.DataFrame(a, index=months, columns=cols)  # noqa: E731
    return frame(truth), frame(np.maximum(released, 0.0)), frame(np.broadcast_to(var, truth.shape))


def dataset_coverage(
    seed: int, noise_ratio: float, origins: list[int], horizon: int = 6, level: float = LEVEL
) -> tuple[dict[str, float], np.ndarray]:
    """Share of (category, month ahead, origin) cells whose truth lies inside each interval,
    and each cell's absolute error over its plug-in half-width."""
    truth, released, var = simulated_panel(seed, max(origins) + horizon, noise_ratio)
    inside: dict[str, list[np.ndarray]] = {k: [] for k in INTERVALS}
    ratios = []
    for origin in origins:
        past = slice(0, origin)
        values = {"units": released.iloc[past], "sek": released.iloc[past]}
        noise = {"units": var.iloc[past], "sek": var.iloc[past]}
        future = truth.iloc[origin : origin + horizon]
        for interval in INTERVALS:
            fc = forecast_panel(
                values, noise, horizon, "ets-topdown", level, interval=interval, noise_kurtosis=3.0
            )
            fc = fc[fc["category"] != "total"]
            true = pd.DataFrame(
                {
                    "month": np.repeat(future.index, future.shape[1]),
                    "category": np.tile(future.columns, len(future)),
                    "true": future.to_numpy().ravel(),
                }
            )
            joined = fc.merge(true, on=["month", "category"])
            if interval == "plug-in":
                half = (joined["units_upper"] - joined["units"]).to_numpy()
                error = (joined["true"] - joined["units"]).to_numpy()
                ratios.append(np.abs(error) / half)
            inside[interval].append(
                (
                    (joined["units_lower"] <= joined["true"])
                    & (joined["true"] <= joined["units_upper"])
                ).to_numpy()
            )
    return {k: float(np.concatenate(v).mean()) for k, v in inside.items()}, np.concatenate(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=30)
    parser.add_argument("--noise-ratios", type=float, nargs="+", default=[0.5, 1.5, 3.0])
    parser.add_argument("--origins", type=int, nargs="+", default=[26, 27, 28, 29, 30])
    parser.add_argument("--seed", type=int, default=None, help="first seed (default: drawn now)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    first = args.seed if args.seed is not None else secrets.randbelow(2**31 - 10_000)
    print(f"first seed {first}", flush=True)
    out: dict[str, Any] = {"first_seed": first, "origins": args.origins, "by_noise_ratio": {}}
    for ratio in args.noise_ratios:
        runs = [dataset_coverage(first + i, ratio, args.origins) for i in range(args.datasets)]
        rows = [r for r, _ in runs]
        # the one factor on every plug-in half-width that gives the level pooled (evaluation)
        factor = float(np.quantile(np.concatenate([q for _, q in runs]), LEVEL))
        for r, q in runs:
            r["plug-in scaled to the level"] = float((q <= factor).mean())
        summary: dict[str, Any] = {"scale_factor": round(factor, 3)}
        for interval in (*INTERVALS, "plug-in scaled to the level"):
            cov = np.array([r[interval] for r in rows])
            summary[interval] = {
                "pooled": round(float(cov.mean()), 3),
                "per_dataset": [round(float(c), 3) for c in cov],
                "share_within_85_95": round(float(((cov >= 0.85) & (cov <= 0.95)).mean()), 3),
                "share_below_85": round(float((cov < 0.85).mean()), 3),
                "share_above_95": round(float((cov > 0.95).mean()), 3),
            }
            print(f"noise/demand {ratio:g} {interval}: {summary[interval]}", flush=True)
        out["by_noise_ratio"][str(ratio)] = summary
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
