"""What several benchmarks do alike: prepare a workspace and build the segmentation features,
print a summary table, and keep their results in a JSON file (one key per configuration, or
the seeded runs and their summary)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl

from segments.features import customer_features
from segments.policy import Policy
from segments.prepare import prepare
from segments.workspace import Workspace


def segmentation_features(ws: Workspace, policy: Policy | str, as_of: dt.date) -> pd.DataFrame:
    """Prepare ``ws`` for segmentation as of ``as_of`` and build each person's features from
    the prepared frames, as the segmentation job does."""
    report = prepare(ws, policy, "segmentation", as_of)
    folder = ws.prepared_dir("segmentation")
    return customer_features(
        pl.scan_parquet(folder / "lines.parquet"),
        pl.scan_parquet(folder / "customers.parquet"),
        as_of=report.as_of,
    )


def print_summary(summary: pd.DataFrame, digits: int = 3) -> None:
    """Print ``summary`` rounded to ``digits``, wide enough that no column wraps."""
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summary.round(digits).to_string(index=False))


def add_result(path: Path, key: str, report: dict[str, Any]) -> None:
    """Store ``report`` under ``key`` in the JSON results file ``path``, keeping the other
    keys (the results of other configurations run before)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(path.read_text()) if path.exists() else {}
    existing[key] = report
    path.write_text(json.dumps(existing, indent=1, default=str) + "\n")


def write_seeded_runs(
    path: Path,
    master_seed: int,
    dataset_seeds: list[int],
    rows: list[dict[str, Any]],
    summary: pd.DataFrame,
    **extra: Any,
) -> None:
    """Write the runs of a benchmark whose datasets were drawn from ``master_seed``: the
    seeds, every row, the summary table and ``extra`` facts (one file, replaced)."""
    path.write_text(
        json.dumps(
            {
                "master_seed": master_seed,
                "dataset_seeds": dataset_seeds,
                "rows": rows,
                "summary": json.loads(summary.to_json(orient="records")),
                **extra,
            },
            indent=2,
        )
    )
