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
import io
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from segments._tables import (
    check_bound_files,
    read_table,
    reads_bound_to,
    table_file_bytes,
    table_schema,
)
from segments.exceptions import PolicyError
from segments.workspace import (
    Workspace,
    atomic_write_with,
    month_partition,
    parquet_digests,
    parquet_files,
    write_json,
)

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


def rewind_raw(
    source: Workspace,
    day: dt.date,
    target: Workspace,
    *,
    lines_window: tuple[dt.date, dt.date] | None = None,
) -> Workspace:
    """Write ``target/raw/`` as ``source/raw/`` would have been on ``day``.

    Orders after ``day`` and their lines, customers who signed up later and survey months
    that had not started are dropped; end dates and consent withdrawals after ``day`` are
    unknown then. Flags without a date (erasure, restriction, objection, opt-outs) keep their
    current value, which can only exclude more. The rewound rows are not the generator's
    output for the replay's manifest, so the replay is prepared under the source's key (the
    backfill passes it: the demo key only when the source is proven synthetic), giving the
    same pseudonyms.

    With ``lines_window`` (a half-open ``[start, end)`` range of dates), the order lines are
    only those of orders dated inside it (and on or before ``day``); every other table is
    rewound whole. A month-closing reads one month's lines, but the persons it counts, and
    the retention and exclusions that decide who they are, come from the customers and
    orders, which stay whole: prepared as of ``day``, the replay gives the same customers
    frame and the same lines partition of that month as the full rewind, and no partition of
    any other month (``tests/test_archive.py`` compares them). The source's order lines are
    read only from the partitions of those months (they are partitioned by order month), so
    a replayed month costs one month's lines, not the whole history's. The manifest states
    the window (``lines_window``).

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
        return _rewind(source, manifest, source_raw, day, target, lines_window)


def _check_synthetic(source: Workspace, manifest: dict[str, Any]) -> None:
    if not manifest.get("synthetic", False):
        raise PolicyError(
            f"{source.manifest}: only synthetic data can be rewound to a past day; real data "
            "that left retention is gone, so its history cannot be replayed"
        )


def _lines_of_window(
    source: Workspace, orders: pl.DataFrame, window: tuple[dt.date, dt.date]
) -> tuple[pl.DataFrame, list[tuple[Path, bytes]]]:
    """The source's order lines of ``orders`` (rewound, dated inside ``window``), read only
    from the month partitions meeting ``window`` (the whole table when it is one file), and
    the bytes of the files read (the bytes hashed, inside :func:`reads_bound_to`)."""
    table = source.raw_table("order_lines")
    files = parquet_files(table)
    check_bound_files(table, files)  # no partition added or removed (listing reads nothing)
    if table.is_dir():  # month partitions, by the orders' month
        files = parquet_files(table, window)
    data = [(f, table_file_bytes(f)) for f in files]
    if not data:  # no partition of the window: an empty table of the source's columns
        lines = pl.DataFrame(schema=table_schema(table))
    else:
        parts = [pl.read_parquet(io.BytesIO(d)) for _, d in data]
        lines = parts[0] if len(parts) == 1 else pl.concat(parts, how="vertical")
    return lines.join(orders.select("order_id"), on="order_id", maintain_order="left"), data


def _stage_window(
    table: Path,
    data: list[tuple[Path, bytes]],
    kept: pl.DataFrame,
    staging: Path,
    window: tuple[dt.date, dt.date],
) -> None:
    """Write the partitions ``data`` (file, bytes) of the partitioned ``table`` into
    ``staging`` with only the rows of ``kept``: a partition whose rows all stay is copied
    byte for byte, as :func:`segments.prepare.retention.stage_partitions` copies them; when
    none keeps a row, one empty partition of the window's first month holds the schema."""
    staging.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys = kept.select("order_id", "line_no")
    for file, raw in data:
        part = pl.read_parquet(io.BytesIO(raw))
        remaining = part.join(keys, on=["order_id", "line_no"], how="semi", maintain_order="left")
        if remaining.is_empty():
            continue
        out = staging / file.relative_to(table)
        out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if remaining.height == part.height:
            out.write_bytes(raw)
        else:
            remaining.write_parquet(out)
    if not any(staging.iterdir()):
        out = staging / month_partition(window[0]) / "part-00000.parquet"
        out.parent.mkdir(mode=0o700, parents=True)
        kept.clear().write_parquet(out)


def _rewind(
    source: Workspace,
    manifest: dict[str, Any],
    source_raw: dict[str, str],
    day: dt.date,
    target: Workspace,
    lines_window: tuple[dt.date, dt.date] | None,
) -> Workspace:
    from segments.provenance import _sign_replay

    # every table is read (and refused) before a write; with a window, the order lines only
    # from its months' partitions
    whole = _TABLES if lines_window is None else tuple(t for t in _TABLES if t != "order_lines")
    frames = {t: read_table(source.raw_table(t)) for t in whole}
    customers = _rewind_customers(frames["customers"], day)
    orders = frames["orders"].filter(pl.col("order_date") <= day)
    lines_data: list[tuple[Path, bytes]] = []
    if lines_window is None:
        lines = frames["order_lines"].join(orders.select("order_id"), on="order_id")
    else:
        start, end = lines_window
        in_window = orders.filter(pl.col("order_date").is_between(start, end, closed="left"))
        lines, lines_data = _lines_of_window(source, in_window, lines_window)
    if target.raw.exists():
        shutil.rmtree(target.raw)
    target.raw.mkdir(parents=True)
    rewound = {
        "customers": customers,
        "products": frames["products"],
        "orders": orders,
        "order_lines": lines,
        "surveys": frames["surveys"].filter(pl.col("survey_month") <= day),
    }
    files: dict[str, str] = {}
    for name, frame in rewound.items():
        path = target.raw_table(name)
        if name == "order_lines" and lines_window is not None and source.raw_table(name).is_dir():
            # the window's month partitions as they were
            _stage_window(source.raw_table(name), lines_data, frame, path, lines_window)
        elif source.raw_table(name).is_dir():
            from segments.prepare.retention import stage_partitions

            stage_partitions(source.raw_table(name), frame, path)
        else:
            atomic_write_with(path, frame.write_parquet)
        files |= parquet_digests(path, f"{name}.parquet")
    window = None if lines_window is None else [d.isoformat() for d in lines_window]
    write_json(
        target.manifest,
        {
            **{k: v for k, v in manifest.items() if k not in ("files", "row_counts")},
            "parameters": {**manifest.get("parameters", {}), "as_of": day.isoformat()},
            "rewound_from": str(Path(source.root)),
            **({"lines_window": window} if window else {}),
            "files": files,
            "row_counts": {k: v.height for k, v in rewound.items()},
        },
    )
    _sign_replay(source_raw, day, target)  # binds the replay to the source's raw files
    return target
