"""The raw order lines a purge or an erasure rewrites, one partition file at a time (issue 21).

The order lines are the raw table that grows with the history (hundreds of millions of rows
at a national chain); the purge and the erasure decide per order (its person's retention, its
account's erasure), and the orders are one row per order. So the lines are never held whole:

- :func:`checked_line_counts` checks the raw lines as :func:`segments.prepare.frames.
  load_raw_tables` checks the whole table (the digests the manifest lists; the schema and the
  key of each file, a key repeated across two files found from the orders they share; the
  foreign keys to the orders and products the caller holds) and returns one row per order
  and file with its number of lines: what every count of a purge needs (the dry run's too).
- :class:`KeptLines` stands in for the lines frame in :func:`segments.prepare.retention.
  replace_raw_tables`: which orders' lines go (per file, or the same for every file);
  :func:`stage_kept_lines` then stages the table one file at a time, as
  :func:`segments.prepare.retention.stage_partitions` stages a frame: a file whose rows all
  stay is copied byte for byte (its SHA-256 unchanged: history is not rewritten), an emptied
  month goes (the last one stays, for the table's schema, when nothing else is left), the
  others keep their remaining rows in their order.

Every file is read through :func:`segments._tables.table_file_bytes`: inside the caller's
:func:`segments._tables.reads_bound_to`, the bytes of its one hashing of W/raw/ (a file
swapped meanwhile is refused, never copied). The driver holds one file of lines at a time,
plus the per-order counts and the tables of one row per account, order or product.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from segments._tables import (
    bound_table_digests,
    check_bound_files,
    raise_empty,
    read_table,
    table_file_bytes,
)
from segments.exceptions import SchemaError, WorkspaceError
from segments.prepare.raw_lines import check_keys_across_files, lines_per_order, shared_orders
from segments.schema import RAW_TABLES, check_foreign_key, validate
from segments.workspace import Workspace, parquet_digests, parquet_files

__all__ = ["KeptLines", "checked_line_counts", "stage_kept_lines"]

_TABLE = "order_lines"
#: The column numbering the file (in :func:`parquet_files` order) of a per-order count.
FILE = "_file"


def _bound_read(file: Path, columns: list[str] | None = None) -> pl.DataFrame:
    """A raw file parsed from its bytes (inside a binding: the bytes hashed)."""
    return pl.read_parquet(io.BytesIO(table_file_bytes(file)), columns=columns)


def _check_listed(ws: Workspace, as_of: dt.date) -> None:
    """The lines' files are those the manifest lists, with its digests: the check the raw
    tables' loaders make before they read a table (with their messages)."""
    from segments.ingest import read_real_manifest

    real = read_real_manifest(ws)
    if real is not None:  # as segments.ingest.load_real_raw checks it
        path = ws.require(ws.raw_table(_TABLE), "segments ingest")
        rel = f"{_TABLE}.parquet"
        listed = {k: v for k, v in real["files"].items() if k == rel or k.startswith(rel + "/")}
        found = bound_table_digests(path, rel)
        if found is None:
            found = parquet_digests(path, rel)
        if not listed or found != listed:
            raise WorkspaceError(
                f"table {_TABLE!r}: {path} does not match its SHA-256 in {ws.manifest}; fix: "
                "ingest the export again instead of editing raw files"
            )
        return
    try:
        from segments.synth.generate import checked_raw_path
    except ImportError:  # generator not installed: load_raw_tables checks no digest either
        return
    checked_raw_path(ws, _TABLE, as_of)


def checked_line_counts(
    ws: Workspace, as_of: dt.date, orders: pl.DataFrame, products: pl.DataFrame
) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """Check the raw order lines one file at a time and count them per order and file.

    ``orders`` and ``products`` are the checked raw tables (the foreign keys' parents). The
    checks are those :func:`segments.prepare.frames.load_raw_tables` makes of the whole
    table, with the same messages (a table of several files names the file that fails).

    Returns
    -------
    tuple
        The counts: ``order_id``, ``n_lines`` and ``_file`` (the file's index in
        :func:`parquet_files` order), one row per order and file holding its lines; and the
        files' names inside the table, in that order (:attr:`KeptLines.gone`'s keys).

    Raises
    ------
    WorkspaceError
        The table is missing, or its files are not those the manifest (or the caller's
        hashing of W/raw/) lists.
    SchemaError
        A file breaks the schema, a key repeats (in a file or across two), or a line refers
        to an order or product that does not exist.
    """
    target = ws.require(ws.raw_table(_TABLE), "segments generate")
    _check_listed(ws, as_of)
    files = parquet_files(target)
    if not files:
        raise_empty(target)
    check_bound_files(target, files)
    schema = RAW_TABLES[_TABLE]
    counts: list[pl.DataFrame] = []
    for number, file in enumerate(files):
        try:
            lines = _bound_read(file)
        except (OSError, pl.exceptions.PolarsError) as exc:  # as the table loaders say it
            raise SchemaError(
                f"table {_TABLE!r}: cannot read {file} as Parquet ({exc}); fix: regenerate or "
                "re-export the table"
            ) from None
        try:
            validate(lines, schema, as_of=as_of)
            check_foreign_key(lines, _TABLE, orders, "orders", "order_id")
            check_foreign_key(lines, _TABLE, products, "products", "product_id")
        except SchemaError as exc:
            if len(files) == 1:  # the whole table: the whole-table check's own message
                raise
            raise SchemaError(f"{exc} (in file {file})") from None
        per_order = lines_per_order(lines.get_column("order_id"))
        del lines
        counts.append(per_order.with_columns(pl.lit(number, pl.UInt32).alias(FILE)))
    per_file = pl.concat(counts)
    del counts
    check_keys_across_files(files, per_file, shared_orders(per_file["order_id"]), _bound_read)
    return per_file, tuple(_name(target, f) for f in files)


def _name(target: Path, file: Path) -> str:
    """A file's name inside its table (``month=2026-01/part-00000.parquet``; the table's own
    name when it is one file)."""
    return file.name if file == target else file.relative_to(target).as_posix()


@dataclass(eq=False)
class KeptLines:
    """The raw order lines a rewrite keeps: every line but those of the ``gone`` orders.

    ``gone`` is the order ids whose lines go, the same for every file (an erasure's few
    orders), or by file name inside the table (a purge's, from :func:`checked_line_counts`:
    each file is probed only by its own orders; a file not named loses no line). ``expected``,
    when given, is the number of lines the caller counted would stay: staging refuses to
    write anything else. :attr:`height` and :attr:`removed` are the lines staged and left
    out (set by staging, as a frame's height is read by the manifest)."""

    gone: pl.Series | Mapping[str, pl.Series]
    expected: int | None = None
    height: int = field(default=0, init=False)
    removed: int = field(default=0, init=False)

    def gone_in(self, name: str) -> pl.Series:
        """The order ids whose lines go from the file ``name`` (inside the table)."""
        if isinstance(self.gone, pl.Series):
            return self.gone
        return self.gone.get(name, pl.Series("order_id", [], pl.Int64))

    def _staged(self, height: int, removed: int) -> None:
        self.height, self.removed = height, removed
        if self.expected is not None and height != self.expected:
            raise WorkspaceError(
                f"table {_TABLE!r}: {height} lines would stay, not the {self.expected} counted "
                "when the raw data was checked; nothing was changed; fix: run again when no "
                "other process writes W/raw/"
            )

    def whole(self, target: Path) -> pl.DataFrame:
        """The kept lines of a table stored as one file (read whole: it is one file)."""
        lines = read_table(target)
        kept = lines.filter(~pl.col("order_id").is_in(self.gone_in(target.name).implode()))
        self._staged(kept.height, lines.height - kept.height)
        return kept


def stage_kept_lines(target: Path, kept: KeptLines, staging: Path) -> dict[str, str]:
    """Stage the partitioned lines table ``target`` into ``staging`` as ``kept`` says, one
    file at a time (module docstring); returns the SHA-256 of each file copied unchanged
    whose bytes were read bound to a hashing of W/raw/, keyed by its path inside the table,
    as :func:`segments.prepare.retention.stage_partitions` does."""
    parts = parquet_files(target)
    check_bound_files(target, parts)  # inside reads_bound_to: the partitions hashed, all of them
    staging.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not parts:
        kept._staged(0, 0)
        return {}
    bound = bound_table_digests(target, target.name) or {}
    copied: dict[str, str] = {}
    height = removed = 0
    for part in parts:
        data = table_file_bytes(part)  # read once: parsed, or copied as it was hashed
        ids = pl.read_parquet(io.BytesIO(data), columns=["order_id"]).get_column("order_id")
        gone = kept.gone_in(_name(target, part))
        drop = ids.is_in(gone.implode()) if gone.len() else None
        dropped = 0 if drop is None else int(drop.sum())
        height += ids.len() - dropped
        removed += dropped
        out = staging / part.relative_to(target)
        if ids.len() == dropped and not (part == parts[-1] and not any(staging.iterdir())):
            continue  # an emptied month goes (the last one stays, for the table's schema)
        out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if dropped == 0:
            out.write_bytes(data)
            rel = part.relative_to(target).as_posix()
            if f"{target.name}/{rel}" in bound:
                copied[rel] = bound[f"{target.name}/{rel}"]
        else:
            assert drop is not None
            pl.read_parquet(io.BytesIO(data)).filter(~drop).write_parquet(out)
        del data, ids, drop
    kept._staged(height, removed)
    return copied
