"""Coverage of quantile value intervals (issue 17, review r17 #1), baseline in the same run.

    PYTHONPATH=src python benchmarks/bench_quantile_coverage.py --customers 50000 --runs 20

Generates a seeded dataset, prepares it under the policy and releases, outside any ledger
(the tests' ``run_unaccounted`` helper: an evaluation on synthetic data), the session query
``table('customers').group_by(<by>).agg(median('spend', bounds=(0, <bound>), interval=d))``
``--runs`` times; OpenDP's noise is fresh each run. Every cell of every run is compared with
the exact clipped median of the same frame the mechanism reads (the smallest value ``v``
with ``#{clip(x) <= v} >= n / 2``):

* **now**: the intervals the session publishes (``quantile_50_spend_status`` starting with
  'published': the count supports every margin, an end whose guard quantile is at its bound
  widened to the bound, the ends ordered);
* **count rule**: the same releases' ``[q - d, q + d]`` ends wherever the count alone
  supports them (``d x count_lower >= R'``, the rule before review r17): what the guards add;
* **baseline**: the mechanism before this change — the same query built without clipping
  the value inside the quantile (people beyond a bound lie beyond every candidate), run as
  many times — under the count rule and under the previous rule (ends ordered and neither
  within one candidate of a bound, h17b).

Stated: each published interval holds the exact quantile with probability >= 95 %. The
coverage is given with its Clopper-Pearson 95 % interval; cells whose exact median is at
the upper bound are counted separately (r17: industry K, all 18 misses).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from _common import add_result
from scipy.stats import beta

import segments
from segments.policy import Policy
from segments.privacy import releases
from segments.session import _QuantileRanks, _to_pandas
from segments.synth import DEFAULT_DATASET

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from release_helpers import run_unaccounted  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "bench_quantile_coverage.json"


def clopper_pearson(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval of a binomial proportion."""
    if trials == 0:
        return (float("nan"), float("nan"))
    tail = (1.0 - level) / 2.0
    low = beta.ppf(tail, successes, trials - successes + 1) if successes > 0 else 0.0
    high = beta.ppf(1 - tail, successes + 1, trials - successes) if successes < trials else 1.0
    return (float(low), float(high))


def exact_quantiles(
    frame: Path, by: str, value: str, bounds: tuple[int, int], q: float, active_only: bool
) -> dict[Any, float]:
    """The exact ``q``-quantile of the clipped value per key, from the frame OpenDP reads."""
    people = pl.read_parquet(frame)
    if active_only:
        people = people.filter(pl.col("spend_sek") > 0)
    out = {}
    for (key,), rows in people.group_by(by):
        values = np.sort(rows[value].clip(*bounds).to_numpy())
        out[key] = float(values[int(np.ceil(q * len(values))) - 1])  # inverted CDF
    return out


@contextlib.contextmanager
def unclipped_quantiles() -> Iterator[None]:
    """While building a measurement: ``Expr.clip`` is the identity (the quantile as it was
    before the clipped frame; the person frame's other aggregates do not clip in polars)."""
    original = pl.Expr.clip
    pl.Expr.clip = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        pl.Expr.clip = original  # type: ignore[method-assign]


def baseline_plan(plan: Any, query_plan: Any) -> Any:
    """The query's measurement without the clip inside the quantile (same scales, keys)."""
    with unclipped_quantiles():
        return releases._build_polars_query(
            query_plan.query,
            query_plan.loss,
            plan.params,
            query_plan.data_path,
            plan.segments,
            1.0 - plan.confidence,
        )


def run(customers: int, runs: int, epsilon: float, interval: float, bound: int, by: str, seed: int):
    from segments.prepare import prepare
    from segments.synth.generate import generate
    from segments.workspace import Workspace

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_qcov_") as tmp:
        ws = Workspace(Path(tmp) / "ws").create()
        as_of = DEFAULT_DATASET.as_of
        generate(ws, customers=customers, months=DEFAULT_DATASET.months, as_of=as_of, seed=seed)
        prepare(ws, Policy.load("alloffice"), "statistics", as_of)
        prepared_s = time.perf_counter() - started
        session = segments.Session(ws, "alloffice", "statistics", "purchasing", as_of=as_of)
        query = (
            session.table("customers")
            .group_by(by)
            .agg(segments.agg.median("spend", bounds=(0, bound), interval=interval))
        )
        spec, window = session._spec([query], epsilon, None)
        rows: list[dict[str, Any]] = []
        with session._plan(spec, window, [query]) as plan:
            ranks = _QuantileRanks.of(plan)
            (value_interval,) = ranks.value_intervals(query)
            (query_plan,) = plan.queries
            truth = exact_quantiles(
                query_plan.data_path, by, "spend_sek", (0, bound), 0.5, query_plan.query.active_only
            )
            end_error = value_interval.end_error
            before = baseline_plan(plan, query_plan)
            step = (bound - 0) / 100  # the candidates' spacing
            name = query.definition().name
            for run_index in range(runs):
                raw = plan.tables(run_unaccounted(plan))[name]
                table = _to_pandas(pl.from_pandas(raw), query, ranks)
                old_raw = before.measurement(pl.scan_parquet(query_plan.data_path)).collect()
                old = _to_pandas(pl.from_pandas(plan.tables({name: old_raw})[name]), query, ranks)
                for (_, row), (_, old_row) in zip(table.iterrows(), old.iterrows(), strict=True):
                    old_ends = old_row[value_interval.low], old_row[value_interval.high]
                    exact = truth.get(row[by], float("nan"))  # a key nobody has
                    low, high = row["quantile_50_spend_lower"], row["quantile_50_spend_upper"]
                    ends = row[value_interval.low], row[value_interval.high]
                    rows.append(
                        {
                            "run": run_index,
                            "key": row[by],
                            "exact": exact,
                            "status": row["quantile_50_spend_status"],
                            "now_holds": bool(low <= exact <= high) if low == low else None,
                            "count_supports": bool(row["count_lower"] * interval >= end_error),
                            "ends_hold": bool(ends[0] <= exact <= ends[1]),
                            "before_count_supports": bool(
                                old_row["count_lower"] * interval >= end_error
                            ),
                            "before_ends_hold": bool(old_ends[0] <= exact <= old_ends[1]),
                            "before_previous_rule": bool(
                                old_ends[0] <= old_ends[1]
                                and old_ends[0] > step
                                and old_ends[1] < bound - step
                            ),
                        }
                    )
    return rows, prepared_s, time.perf_counter() - started, value_interval


def summarize(rows: list[dict[str, Any]], bound: int) -> dict[str, Any]:
    def coverage(selected: list[dict[str, Any]], key: str) -> dict[str, Any]:
        held = sum(bool(r[key]) for r in selected)
        low, high = clopper_pearson(held, len(selected))
        return {
            "published": len(selected),
            "held": held,
            "coverage": held / len(selected) if selected else float("nan"),
            "clopper_pearson_95": [low, high],
        }

    rows = [r for r in rows if not np.isnan(r["exact"])]  # keys with nobody: no quantile
    now = [r for r in rows if r["status"].startswith("published")]
    baseline = [r for r in rows if r["count_supports"]]
    at_bound = [r for r in rows if r["exact"] >= bound]
    return {
        "cells": len(rows),
        "now": coverage(now, "now_holds"),
        "count_rule": coverage(baseline, "ends_hold"),
        "baseline_unclipped_count_rule": coverage(
            [r for r in rows if r["before_count_supports"]], "before_ends_hold"
        ),
        "baseline_unclipped_previous_rule": coverage(
            [r for r in rows if r["before_count_supports"] and r["before_previous_rule"]],
            "before_ends_hold",
        ),
        "at_bound_cells": len(at_bound),
        "at_bound_published_now": sum(r["status"].startswith("published") for r in at_bound),
        "at_bound_baseline": coverage([r for r in at_bound if r["count_supports"]], "ends_hold"),
        "widened_by_a_guard": sum("widened" in r["status"] for r in rows),
        "withheld_both_guards": sum("both guards" in r["status"] for r in rows),
        "withheld_by_count": sum("count's lower bound" in r["status"] for r in rows),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--epsilon", type=float, default=2.0)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--bound", type=int, default=50_000)
    parser.add_argument("--by", default="industry")
    parser.add_argument("--seed", type=int, default=1717)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows, prepared_s, total_s, value_interval = run(
        args.customers, args.runs, args.epsilon, args.interval, args.bound, args.by, args.seed
    )
    report = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "end_rank_error": value_interval.end_error,
        "count_needed": value_interval.needed,
        "guards": [value_interval.guard_low, value_interval.guard_high],
        "prepare_s": round(prepared_s, 1),
        "total_s": round(total_s, 1),
        **summarize(rows, args.bound),
    }
    now, base = report["now"], report["baseline_unclipped_count_rule"]
    prev = report["baseline_unclipped_previous_rule"]
    report["summary"] = (
        f"now: {now['held']}/{now['published']} published intervals hold the exact clipped "
        f"median ({now['coverage']:.1%}, Clopper-Pearson 95 % lower bound "
        f"{now['clopper_pearson_95'][0]:.1%}); baseline (unclipped quantile, count rule): "
        f"{base['held']}/{base['published']} ({base['coverage']:.1%}, lower bound "
        f"{base['clopper_pearson_95'][0]:.1%}); baseline, previous rule: {prev['held']}/"
        f"{prev['published']} ({prev['coverage']:.1%}); cells with the median at the bound: "
        f"{report['at_bound_cells']}, published now {report['at_bound_published_now']}"
    )
    print(report["summary"], flush=True)
    key = f"{args.by}-{args.customers}-bound{args.bound}-eps{args.epsilon:g}-d{args.interval:g}"
    add_result(args.out, key, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
