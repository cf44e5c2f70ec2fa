"""Benchmark: optimal k-anonymity search on a customer table (issue 7).

A synthetic customer table with six quasi-identifiers (birth year, gender, municipality,
customer type, company size band, industry; lattice of 1,080 nodes) is written to Parquet;
the timed part reads it back (load included), encodes it and runs the optimal full-domain
search for k = 10 with 5 % suppression and discernibility. Peak memory is the process's
maximum resident set size.

Run: ``.venv/bin/python benchmarks/bench_kanon.py [--rows 100000 1000000] [--baseline]``
(``--baseline`` also times brute force, every node computed from the bottom, at 100k rows).
"""

from __future__ import annotations

import argparse
import itertools
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from segments.anonymity import (
    EncodedTable,
    PrivacyModel,
    SearchResult,
    birth_year_hierarchy,
    customer_type_hierarchy,
    evaluate_node,
    flat_hierarchy,
    industry_hierarchy,
    municipality_hierarchy,
    optimal_generalisation,
    size_band_hierarchy,
)
from segments.geography import municipalities_pl
from segments.schema import GENDERS, INDUSTRIES, SIZE_BANDS


def customer_table(rows: int, seed: np.random.Generator) -> pl.DataFrame:
    """Customers spread over municipalities by population; companies get size and industry."""
    muni = municipalities_pl()
    weights = muni["population"].to_numpy().astype(float)
    kind = seed.choice(["private", "business", "sole_trader"], rows, p=[0.7, 0.2, 0.1])
    person = kind != "business"
    company = kind != "private"
    birth = seed.normal(1975, 16, rows).clip(1925, 2006).astype(int).astype(str)
    return pl.DataFrame(
        {
            "birth_year": np.where(person, birth, "n/a"),
            "gender": np.where(person, seed.choice(list(GENDERS), rows), "n/a"),
            "municipality_code": seed.choice(
                muni["municipality_code"].to_numpy(), rows, p=weights / weights.sum()
            ),
            "customer_type": kind,
            "size_band": np.where(
                company, seed.choice(list(SIZE_BANDS), rows, p=[0.3, 0.4, 0.2, 0.08, 0.02]), "n/a"
            ),
            "industry": np.where(company, seed.choice(list(INDUSTRIES), rows), "n/a"),
        }
    )


def hierarchies() -> dict:
    return {
        "birth_year": birth_year_hierarchy(),
        "gender": flat_hierarchy("gender", [*GENDERS, "n/a"]),
        "municipality_code": municipality_hierarchy(),
        "customer_type": customer_type_hierarchy(),
        "size_band": size_band_hierarchy(),
        "industry": industry_hierarchy(),
    }


def run(path: Path) -> tuple[float, SearchResult]:
    started = time.perf_counter()
    df = pl.read_parquet(path)
    result = optimal_generalisation(
        df, hierarchies(), PrivacyModel(k=10, suppression_limit=0.05), loss="discernibility"
    )
    return time.perf_counter() - started, result


def baseline(path: Path) -> tuple[float, tuple[int, ...]]:
    """Brute force over every node, each computed from the bottom (no roll-up, no pruning)."""
    started = time.perf_counter()
    table = EncodedTable(
        pl.read_parquet(path), hierarchies(), PrivacyModel(k=10, suppression_limit=0.05)
    )
    nodes = itertools.product(*(range(h + 1) for h in table.heights))
    best = min(
        (e.sort_key() for e in (evaluate_node(table, n) for n in nodes) if e.feasible),
        default=None,
    )
    assert best is not None
    return time.perf_counter() - started, best[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--baseline", action="store_true", help="also time brute force (slow; 100k rows only)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            path = Path(tmp) / f"customers_{rows}.parquet"
            customer_table(rows, np.random.default_rng(7)).write_parquet(path)
            seconds, result = run(path)
            peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
            print(
                f"rows={rows:>9,}  seconds={seconds:6.2f}  levels={result.levels}  "
                f"suppressed={result.suppressed}  nodes evaluated={result.evaluated}/"
                f"{result.lattice_size}  peak RSS={peak_gb:.2f} GB"
            )
            if args.baseline and rows <= 100_000:
                brute, levels = baseline(path)
                assert levels == result.best.levels, "brute force disagrees with the search"
                print(
                    f"rows={rows:>9,}  brute force seconds={brute:6.2f}  "
                    f"speed-up={brute / seconds:.1f}x"
                )


if __name__ == "__main__":
    main()
