"""Simulated history: the raw extract as it stood on a past day (synthetic data only).

The purchasing series releases each month once, when it closes and while its data is inside
retention (AO-4). To build that archive for a synthetic history, ``segments release
backfill`` replays the past: for each month it rewinds the raw tables to the day the month
closed and prepares them as of that day, so the month is released from exactly what the
policy allowed then — never from data that had already left retention. Real data cannot be
rewound (what was deleted is gone), so this module refuses it.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from segments._tables import read_table, reads_bound_to
from segments.exceptions import PolicyError
from segments.workspace import Workspace, atomic_write_with, parquet_digests, write_json

__all__ = ["rewind_raw"]

_TABLES = ("customers", "products", "orders", "order_lines", "surveys")


def _rewind_customers(customers: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """Customers who had signed up by ``day``, with the facts known on that day."""
    later = pl.lit(None, dtype=pl.Date)
    return customers.filter(pl.col("signup_date") <= day).with_columns(
        pl.min_horizontal("last_contact_date", pl.lit(day)).alias("last_contact_date"),
        pl.when(pl.col("end_date") <= day).then("end_date").otherwise(later).alias("end_date"),
        pl.when(pl.col("consent_withdrawn_date") <= day)
        .then("consent_withdrawn_date")
        .otherwise(later)
        .alias("consent_withdrawn_date"),
    )


def rewind_raw(source: Workspace, day: dt.date, target: Workspace) -> Workspace:
    """Write ``target/raw/`` as ``source/raw/`` would have been on ``day``.

    Orders after ``day`` and their lines, customers who signed up later and survey months
    that had not started are dropped; end dates and consent withdrawals after ``day`` are
    unknown then. Flags without a date (erasure, restriction, objection, opt-outs) keep their
    current value, which can only exclude more. The rewound rows are not the generator's
    output for the replay's manifest, so the replay is prepared under the source's key (the
    backfill passes it: the demo key only when the source is proven synthetic), giving the
    same pseudonyms.

    Raises
    ------
    PolicyError
        If the source data is not marked synthetic.
    """
    from segments.provenance import raw_hashes

    _check_synthetic(source, source.read_manifest(required=True))  # refused before hashing
    source_raw = raw_hashes(source)  # what the replay is rewound from, for its signed record
    with reads_bound_to(source.raw, source_raw):  # the rows rewound are the bytes it names
        manifest = source.read_manifest(required=True)  # and so is the manifest, read once
        _check_synthetic(source, manifest)
        return _rewind(source, manifest, source_raw, day, target)


def _check_synthetic(source: Workspace, manifest: dict[str, Any]) -> None:
    if not manifest.get("synthetic", False):
        raise PolicyError(
            f"{source.manifest}: only synthetic data can be rewound to a past day; real data "
            "that left retention is gone, so its history cannot be replayed"
        )


def _rewind(
    source: Workspace,
    manifest: dict[str, Any],
    source_raw: dict[str, str],
    day: dt.date,
    target: Workspace,
) -> Workspace:
    from segments.provenance import _sign_replay

    frames = {t: read_table(source.raw_table(t)) for t in _TABLES}  # refused before a write
    if target.raw.exists():
        shutil.rmtree(target.raw)
    target.raw.mkdir(parents=True)
    customers = _rewind_customers(frames["customers"], day)
    orders = frames["orders"].filter(pl.col("order_date") <= day)
    rewound = {
        "customers": customers,
        "products": frames["products"],
        "orders": orders,
        "order_lines": frames["order_lines"].join(orders.select("order_id"), on="order_id"),
        "surveys": frames["surveys"].filter(pl.col("survey_month") <= day),
    }
    files: dict[str, str] = {}
    for name, frame in rewound.items():
        path = target.raw_table(name)
        if source.raw_table(name).is_dir():  # month partitions: the past months as they were
            from segments.prepare.retention import stage_partitions

            stage_partitions(source.raw_table(name), frame, path)
        else:
            atomic_write_with(path, frame.write_parquet)
        files |= parquet_digests(path, f"{name}.parquet")
    write_json(
        target.manifest,
        {
            **{k: v for k, v in manifest.items() if k not in ("files", "row_counts")},
            "parameters": {**manifest.get("parameters", {}), "as_of": day.isoformat()},
            "rewound_from": str(Path(source.root)),
            "files": files,
            "row_counts": {k: v.height for k, v in rewound.items()},
        },
    )
    _sign_replay(source_raw, day, target)  # binds the replay to the source's raw files
    return target
