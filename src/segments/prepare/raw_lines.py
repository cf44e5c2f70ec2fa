"""prepare's pass over the raw order lines, one partition file at a time.

The order lines are the raw table that grows with the history (hundreds of millions of rows
at a national chain); everything else prepare holds on the driver is one row per account,
order or product. So the lines are never read whole: each raw file is copied once into
prepare's private scratch folder and hashed from the bytes copied
(:func:`segments.workspace.copy_hashed`); that digest must be the one prepare's signed record
names for the file (taken at the start of the run) and the one the workspace's manifest lists,
so the lines prepare validates and joins are exactly the bytes its record vouches for, even if
``W/raw`` is rewritten meanwhile. Each copy is then checked alone — the schema and its key
within the file, the foreign keys to the orders and products on the driver — and reduced to
lines per order and the order months it holds; a key repeated in two files is found from the
orders the files share. The line-level join (:meth:`segments.engine.base.Engine.
join_order_lines`) then reads, month by month, only the copies that hold that month's orders,
on the engine the setting selects. So the driver holds one raw lines file at a time, plus the
per-order counts (one row per order, as the orders table it holds anyway); the copies take as
much disk in the private area as the raw lines, until prepare ends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from segments import schema as schemas
from segments._tables import raise_empty
from segments.exceptions import SchemaError, WorkspaceError
from segments.schema import RAW_TABLES, check_foreign_key, validate
from segments.workspace import Workspace, copy_hashed, parquet_files, stray_file_error

__all__ = [
    "RawLines",
    "check_keys_across_files",
    "copy_raw_lines",
    "lines_per_order",
    "read_raw_lines",
    "shared_orders",
]

_TABLE = "order_lines"


@dataclass(frozen=True)
class RawLines:
    """The raw order lines as prepare checked them: private copies of the raw files, which
    copies hold lines of each month's orders, the lines of every order and their count."""

    files: tuple[Path, ...]
    files_by_month: Mapping[dt.date, tuple[Path, ...]]
    lines_per_order: pl.DataFrame
    count: int

    def files_of(self, month: dt.date) -> tuple[Path, ...]:
        """The copies holding lines of orders dated in ``month`` (its first day)."""
        return self.files_by_month.get(month, ())

    def without_counts(self) -> RawLines:
        """The same lines without :attr:`lines_per_order` (emptied): once each order carries
        its count, the build needs only the files, and the driver holds nothing per order
        for them."""
        return replace(self, lines_per_order=self.lines_per_order.clear())


def lines_per_order(order_ids: pl.Series) -> pl.DataFrame:
    """Number of lines of each order; a run-length count when the lines come sorted by order
    (as extracts usually do), which is ~10x cheaper than hashing 20 million ids."""
    if order_ids.is_sorted():
        runs = order_ids.rle().struct.unnest()
        return runs.select(pl.col("value").alias("order_id"), pl.col("len").alias("n_lines"))
    return order_ids.to_frame().group_by("order_id").agg(pl.len().alias("n_lines"))


def _listed_digests(ws: Workspace) -> tuple[dict[str, str] | None, str, str]:
    """What the workspace's manifest lists for the order lines (None: nothing to check), the
    fix a mismatch names and the command that writes the table — the checks the raw tables'
    loaders make of the other tables."""
    from segments.ingest import read_real_manifest

    rel = ws.raw_table(_TABLE).name
    real = read_real_manifest(ws)
    if real is not None:  # an ingested export: every file must be listed
        files = real.get("files", {})
        fix = "ingest the export again instead of editing raw files"
        listed = {k: v for k, v in files.items() if k == rel or k.startswith(rel + "/")}
        return listed, fix, "segments ingest"
    listed = {
        k: v
        for k, v in ws.read_manifest().get("files", {}).items()
        if k == rel or k.startswith(rel + "/")
    }
    fix = "regenerate with `segments generate --force` instead of editing raw files"
    return (listed or None), fix, f"segments generate --workspace {ws.root}"


def read_raw_lines(
    ws: Workspace,
    as_of: dt.date,
    orders: pl.DataFrame,
    products: pl.DataFrame,
    raw: Mapping[str, str],
    scratch: Path,
) -> RawLines:
    """Copy, check and count the raw order lines one file at a time (module docstring).

    ``orders`` and ``products`` are the checked raw tables (the foreign keys' parents);
    ``raw`` is the SHA-256 of every raw file prepare's signed record will name
    (:func:`segments.provenance.raw_hashes`, taken first); the copies go to
    ``scratch/raw-order-lines`` (the workspace's private area, removed with it).

    Raises
    ------
    WorkspaceError
        The table is missing, a file is not the one the manifest lists, or it changed since
        prepare hashed ``W/raw``.
    SchemaError
        A file breaks the schema, a line's key is repeated (in a file or across two), or a
        line refers to an order or product that does not exist.
    """
    files, sources_in_order = copy_raw_lines(ws, raw, scratch / "raw-order-lines")
    order_ids = orders.get_column("order_id")
    # orders in key order (as generated, and as most extracts come): a file's order months
    # are found by binary search in the orders, with no second per-order frame held
    month_of = (
        None
        if order_ids.is_sorted()
        else orders.select("order_id", pl.col("order_date").dt.truncate("1mo").alias("_month"))
    )
    counts: list[pl.DataFrame] = []  # order_id, n_lines, _file: one row per order and file
    by_month: dict[dt.date, list[Path]] = {}
    for number, copy in enumerate(files):  # then checked and counted, one in memory at a time
        lines = pl.read_parquet(copy)
        try:
            validate(lines, RAW_TABLES[_TABLE], as_of=as_of)
            check_foreign_key(lines, _TABLE, orders, "orders", "order_id")
            check_foreign_key(lines, _TABLE, products, "products", "product_id")
        except SchemaError as exc:  # which of the table's files: the copy's name is private
            raise SchemaError(f"{exc} (in file {sources_in_order[number]})") from None
        per_order = lines_per_order(lines["order_id"])
        del lines
        counts.append(per_order.with_columns(pl.lit(number, pl.UInt32).alias("_file")))
        # the months of this file's orders: each found in the sorted orders (every id is
        # an order's: the foreign key is checked), or the orders cut to the file's (a set of
        # this file's ids probed by every order), no hash table of every order built per file
        if month_of is None:
            at = order_ids.search_sorted(per_order.get_column("order_id"))
            months = orders.get_column("order_date").gather(at).dt.truncate("1mo")
            del at
        else:
            held = per_order.get_column("order_id").implode()
            months = month_of.filter(pl.col("order_id").is_in(held)).get_column("_month")
        for month in months.unique().to_list():
            by_month.setdefault(month, []).append(copy)
    per_file = pl.concat(counts)
    del counts
    shared = shared_orders(per_file.get_column("order_id"))
    check_keys_across_files(files, per_file, shared)
    per_order = per_file.drop("_file")
    if shared.len():  # an order whose lines two files hold: its counts summed, once
        split = pl.col("order_id").is_in(shared.implode())
        per_order = pl.concat(
            [
                per_order.filter(~split),
                per_order.filter(split).group_by("order_id").agg(pl.col("n_lines").sum()),
            ]
        )
    return RawLines(
        files=tuple(files),
        files_by_month={m: tuple(fs) for m, fs in by_month.items()},
        lines_per_order=per_order,
        count=int(per_order["n_lines"].sum()),
    )


def copy_raw_lines(
    ws: Workspace, raw: Mapping[str, str], folder: Path
) -> tuple[list[Path], list[Path]]:
    """Copy every raw order lines file into ``folder`` (created owner-only), hashed from the
    bytes copied, after checking the files are those the manifest lists and ``raw`` (the
    run's digests) names: the private copies, and the raw files they copy, in name order
    (:func:`read_raw_lines`'s first step; prepare's chunked pass makes the same one).

    Raises
    ------
    WorkspaceError
        As :func:`read_raw_lines`.
    """
    listed, fix, command = _listed_digests(ws)
    table = ws.require(ws.raw_table(_TABLE), command)
    sources = parquet_files(table)
    if not sources:
        raise_empty(table)
    names = {f.relative_to(ws.raw).as_posix(): f for f in sources}
    if listed is not None and set(listed) != set(names):
        first = sorted(set(listed) ^ set(names))[0]
        raise WorkspaceError(
            f"table {_TABLE!r}: {ws.raw / first} does not match its SHA-256 in {ws.manifest} "
            f"(missing, added or changed); fix: {fix}"
        )
    prefix = table.relative_to(ws.raw).as_posix()
    hashed = {n for n in raw if n == prefix or n.startswith(prefix + "/")}
    if set(names) != hashed:  # a file removed or added after the start: the record names it
        first = sorted(set(names) ^ hashed)[0]
        if first not in names and (ws.raw / first).is_file():  # there, but not a partition
            raise stray_file_error(table, ws.raw / first)
        raise WorkspaceError(
            f"table {_TABLE!r}: {ws.raw / first} was {'added' if first in names else 'removed'} "
            "while prepare read W/raw (the files differ from those hashed at the start); fix: "
            "run prepare again once nothing writes the raw data"
        )
    folder.mkdir(mode=0o700)
    files: list[Path] = []
    sources_in_order = [names[name] for name in sorted(names)]
    for number, (name, source) in enumerate(sorted(names.items())):  # every file hashed first
        files.append(folder / f"part-{number:05d}.parquet")
        digest = copy_hashed(source, files[-1])
        if listed is not None and listed[name] != digest:
            raise WorkspaceError(
                f"table {_TABLE!r}: {source} does not match its SHA-256 in {ws.manifest} "
                f"(missing, added or changed); fix: {fix}"
            )
        if raw.get(name) != digest:  # what the signed record names is what is read
            raise WorkspaceError(
                f"table {_TABLE!r}: {source} changed while prepare read W/raw (its SHA-256 "
                "differs from the one taken at the start); fix: run prepare again once "
                "nothing writes the raw data"
            )
    return files, sources_in_order


def _read_columns(file: Path, columns: list[str]) -> pl.DataFrame:
    return pl.read_parquet(file, columns=columns)


def shared_orders(order_ids: pl.Series) -> pl.Series:
    """The order ids found more than once in ``order_ids`` (one entry per order and file):
    the orders whose lines two files share. Found by sorting (free when the files come in
    key order, as generated and most extracts do) and comparing neighbours, which holds one
    sorted copy of the ids instead of a hash table of every order."""
    ids = order_ids if order_ids.is_sorted() else order_ids.sort()
    return ids.filter(ids.diff().fill_null(1) == 0).unique()


def check_keys_across_files(
    files: list[Path],
    per_file: pl.DataFrame,
    shared: pl.Series,
    read: Callable[[Path, list[str]], pl.DataFrame] = _read_columns,
) -> None:
    """Each file's keys are unique within it (:func:`validate`); a key repeated in two files
    shares its order, so only the lines of orders found in more than one file (``shared``;
    ``per_file``: order_id and _file, one row per order and file) are read again and checked
    together (``read(file, columns)``: a raw file's bound bytes for a purge)."""
    if shared.len() == 0:
        return
    holders = per_file.filter(pl.col("order_id").is_in(shared.implode()))
    key = ["order_id", "line_no"]
    keys = pl.concat(
        read(files[number], key).join(
            holders.filter(pl.col("_file") == number).select("order_id"), on="order_id", how="semi"
        )
        for number in holders["_file"].unique().sort().to_list()
    )
    schemas._check_unique_key(keys, RAW_TABLES[_TABLE])  # validate's own rule and message
