"""prepare's bounded pass over the raw orders: read in chunks, held one month at a time.

The orders table grows with the history (one row per order: ~100 million at 500 million
lines), so prepare does not read it whole when it need not (issue 21). The one orders file is
copied into prepare's private scratch area and hashed from the bytes copied (the digest must be
the one prepare's signed record names: the bytes parsed are the bytes hashed), then parsed one
row group at a time (or :data:`CHUNK_ROWS_ENV` rows, for tests). Each chunk is checked as
the whole table is (schema, dates not after ``as_of``, customers foreign key) and reduced to
compact orders (order id, person, date, channel as an enum) written one file per month and
chunk, plus each account's last order date (one row per account).

This is only done when the raw data allows it to be done exactly: the order ids strictly
increase over the file and their dates never decrease (as the generator and ``segments
ingest`` write them: a generated workspace or an ingested export alike), so no
key can repeat across chunks and each month's orders are one range of ids. The order lines
are then checked one file at a time against the ranges and that month's order ids, and
counted per order into one small file per month and lines file. Anything else — a chunk that
fails a check, ids or dates out of order, an order whose lines two files share — raises
:class:`Unusual`, and prepare takes the whole-table path instead, which
reports a failure with its exact one-line message (counts included). So only bad or unusual
input pays memory in proportion to the orders.

What the driver holds here is one chunk, one lines file (an ingested export's lines are one
file, read whole as before), one month's orders and the per-account and per-person facts;
:class:`MonthlyOrders` names the spilled month files, which prepare's order rules then read
one month at a time (:class:`segments.prepare.frames._MonthlyRun`).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from segments.exceptions import SchemaError
from segments.prepare.raw_lines import RawLines, copy_raw_lines, lines_per_order
from segments.schema import CHANNELS, ORDERS, RAW_TABLES, TableSchema, check_foreign_key, validate
from segments.workspace import Workspace, copy_hashed

__all__ = [
    "CHUNK_ROWS_ENV",
    "MonthlyOrders",
    "Unusual",
    "chunk_rows",
    "read_by_month",
    "worth_chunking",
]

#: Rows per chunk of the raw orders (unset: one chunk per Parquet row group, as written).
CHUNK_ROWS_ENV = "SEGMENTS_PREPARE_CHUNK_ROWS"

#: The channel as the driver holds it per order (the values ORDERS allows).
CHANNEL = pl.Enum(CHANNELS)
#: The compact columns of an order prepare keeps (and its line count, ``n_lines``).
COMPACT = ("order_id", "person_root", "order_date", "channel")


#: The spill files' compression (private scratch, read back once or twice: speed over size).
SPILL: Final = "lz4"


class _Folded:
    """One row per ``key`` with ``agg`` of the rows :meth:`add` was given (a max date, a sum
    of lines), folded whenever the rows held pass ``rows`` (one row per account or person
    at most twice over, not one per order), not after every chunk."""

    def __init__(self, key: str, agg: pl.Expr, rows: int) -> None:
        self.key, self.agg, self.rows = key, agg, max(rows, 1 << 16)
        self.parts: list[pl.DataFrame] = []
        self.held = 0

    def add(self, frame: pl.DataFrame) -> None:
        part = frame.group_by(self.key).agg(self.agg)
        self.parts.append(part)
        self.held += part.height
        if self.held > 2 * self.rows:
            self.parts = [self.frame()]
            self.held = self.parts[0].height

    def frame(self) -> pl.DataFrame:
        if len(self.parts) == 1:
            return self.parts[0]
        return pl.concat(self.parts).group_by(self.key).agg(self.agg)


class Unusual(Exception):
    """The raw data is not in the shape the chunked pass reads exactly (or a check failed):
    prepare reads the tables whole instead, which reports any failure with its own message."""


def chunk_rows() -> int | None:
    """The rows per chunk :data:`CHUNK_ROWS_ENV` asks for (None: one chunk per row group).

    Examples
    --------
    >>> os.environ.pop(CHUNK_ROWS_ENV, None) and None
    >>> chunk_rows() is None
    True
    """
    value = os.environ.get(CHUNK_ROWS_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise SchemaError(
            f"parameter {CHUNK_ROWS_ENV!r}: {value!r} is not a positive number of rows; fix: "
            "unset it (one chunk per row group) or give a row count such as 1000000"
        )
    return int(value)


@dataclass(frozen=True)
class MonthlyOrders:
    """The checked raw tables but the orders, and the orders as month files.

    ``months`` maps a month (its first day) to a file of its orders' compact columns and line
    counts (:data:`COMPACT`, ``n_lines``); ``empty`` is a zero-row frame of those columns."""

    customers: pl.DataFrame
    products: pl.DataFrame
    roots: pl.DataFrame
    lines: RawLines
    months: Mapping[dt.date, Path]
    empty: pl.DataFrame
    n_orders: int
    last_orders: pl.DataFrame  # customer_id, order_date: each account's last order
    person_lines: pl.DataFrame  # person_root, n_lines: each person's lines


def _chunks(copy: Path, rows: int | None) -> Iterator[pl.DataFrame]:
    """The orders file's rows, a row group (or ``rows`` rows) at a time, in the dtypes
    :func:`polars.read_parquet` gives the whole file."""
    schema = pl.read_parquet_schema(copy)
    handle = pq.ParquetFile(copy)
    for group in range(handle.num_row_groups):
        frame = pl.from_arrow(handle.read_row_group(group))
        assert isinstance(frame, pl.DataFrame)
        frame = frame.cast(schema)  # type: ignore[arg-type]
        if rows is None:
            yield frame
        else:
            for offset in range(0, frame.height, rows):
                yield frame.slice(offset, rows)
        del frame


def _checked(check: object, *args: object) -> None:
    """Run a check; a failure makes the input :class:`Unusual` (the whole-table path then
    raises the check's message over the whole table, counts included)."""
    try:
        check(*args)  # type: ignore[operator]
    except SchemaError as exc:
        raise Unusual(str(exc)) from None


def worth_chunking(orders: Path) -> bool:
    """Whether the chunked pass can hold less than the whole table: only when the orders file
    has more than one row group, or :data:`CHUNK_ROWS_ENV` asks for chunks (tests). One row
    group is read whole either way, and the pass's private copy, hash and month files are
    then pure cost (the same bytes come out of both paths).

    >>> worth_chunking(Path("/nonexistent/orders.parquet"))
    True
    """
    if chunk_rows() is not None:
        return True
    try:
        return bool(pq.ParquetFile(orders).metadata.num_row_groups > 1)
    except (OSError, pa.ArrowException):  # partitions, a missing file: let the pass decide
        return True


def read_by_month(
    ws: Workspace,
    as_of: dt.date,
    raw: Mapping[str, str],
    folder: Path,
    link: object,
) -> MonthlyOrders:
    """Read and check the customers, products, orders (in chunks) and order lines (a file at
    a time) of a generated workspace or an ingested export, the orders spilled per month
    into ``folder`` (created owner-only inside prepare's scratch area; removed with it).
    ``link`` maps the accounts to persons (:func:`segments.prepare.frames.link_persons`).

    Raises
    ------
    Unusual
        Not a shape read exactly in chunks, or a check failed (module docstring).
    WorkspaceError, SchemaError
        As the whole-table readers, for the customers and products (read whole, first) and
        for the raw files' digests.
    """
    from segments.ingest import read_real_manifest

    rows = chunk_rows()
    real = read_real_manifest(ws)
    day: dt.date | None
    if real is not None:  # an ingested export (segments ingest)
        customers, products, path, schema, day, listed = _real_tables(ws, as_of, real)
    else:
        try:
            from segments.synth.generate import checked_raw_path, load_raw_pl
        except ImportError:  # pragma: no cover - the generator is part of the package
            raise Unusual("no generator loader") from None
        customers = load_raw_pl(ws, "customers", as_of)
        products = load_raw_pl(ws, "products", as_of)
        path, schema, day = checked_raw_path(ws, "orders", as_of)  # the manifest's digest
        listed = None
    roots = link(customers)  # type: ignore[operator]
    if not path.is_file():  # month partitions of orders: not a shape this pass reads
        raise Unusual("orders in partitions")
    folder.mkdir(mode=0o700)
    copy = folder / "orders.parquet"
    digest = copy_hashed(path, copy)
    if raw.get(path.relative_to(ws.raw).as_posix()) != digest or listed not in (None, digest):
        raise Unusual("orders changed since hashed")  # the whole path refuses it, its words
    spill = folder / "orders"
    spill.mkdir(mode=0o700)
    parts: dict[dt.date, list[Path]] = {}
    firsts: list[int] = []  # each month's first and last order id, months ascending
    lasts: list[int] = []
    last_id: int | None = None
    last_date: dt.date | None = None
    n_orders = 0
    last_orders = _Folded("customer_id", pl.col("order_date").max(), customers.height)
    empty: pl.DataFrame | None = None
    try:
        for number, chunk in enumerate(_chunks(copy, rows)):
            _checked(lambda c: validate(c, schema, as_of=day), chunk)
            if chunk.height == 0:
                continue
            ids, dates = chunk.get_column("order_id"), chunk.get_column("order_date")
            if (
                (last_id is not None and ids[0] <= last_id)
                or (last_date is not None and dates[0] < last_date)
                or not bool((ids.diff().drop_nulls() > 0).all())
                or not dates.is_sorted()
            ):
                raise Unusual("order ids or dates out of order")
            last_id, last_date = ids[-1], dates[-1]
            n_orders += chunk.height
            last_orders.add(chunk.select("customer_id", "order_date"))
            # each order's person, and the customers foreign key in the same join: an order
            # of no account has no person (every account has one: ``roots`` is the accounts')
            compact = chunk.join(roots, on="customer_id", how="left", maintain_order="left").select(
                "order_id", "person_root", "order_date", pl.col("channel").cast(CHANNEL)
            )
            del chunk
            if compact.get_column("person_root").null_count():
                raise Unusual("an order of no account")  # the whole path counts them all
            if empty is None:
                empty = compact.clear()
            runs = compact.get_column("order_date").dt.truncate("1mo").rle().struct.unnest()
            offset = 0
            for length, first in runs.iter_rows():
                piece = compact.slice(offset, length)
                offset += length
                if first not in parts:
                    parts[first] = []
                    firsts.append(piece.item(0, "order_id"))
                    lasts.append(0)
                lasts[-1] = piece.item(-1, "order_id")
                parts[first].append(spill / f"{first:%Y-%m}-{number:06d}.parquet")
                piece.write_parquet(parts[first][-1], compression=SPILL)
            del compact
    except (OSError, pl.exceptions.PolarsError, pa.ArrowException) as exc:
        raise Unusual(f"orders not read in chunks ({exc})") from None
    if empty is None:  # no orders: the whole path reads it
        raise Unusual("no orders")
    copy.unlink()
    months = list(parts)
    copies, _ = copy_raw_lines(ws, raw, folder / "raw-order-lines")  # today's checks, words
    try:  # a surprise past the checks (a bug or an input they missed): the whole path
        lines, counts = _lines_by_month(
            as_of, copies, folder, products, months, firsts, lasts, parts
        )
        files, person_lines = _months_with_counts(folder, parts, counts)
    except (OSError, pl.exceptions.PolarsError, pa.ArrowException) as exc:
        raise Unusual(f"lines not counted by month ({exc})") from None
    return MonthlyOrders(
        customers=customers,
        products=products,
        roots=roots,
        lines=lines,
        months=files,
        empty=empty.with_columns(pl.lit(0, pl.Int64).alias("n_lines")).clear(),
        n_orders=n_orders,
        last_orders=last_orders.frame(),
        person_lines=person_lines,
    )


def _real_tables(
    ws: Workspace, as_of: dt.date, manifest: Mapping[str, object]
) -> tuple[pl.DataFrame, pl.DataFrame, Path, TableSchema, dt.date, str | None]:
    """An ingested export's customers and products, checked as
    :func:`segments.ingest.load_real_raw` checks them (which also checks the products'
    taxonomy, after the orders' schema: any failure here leaves the order of the messages to
    the whole path), and the orders' path, schema, as-of and listed digest."""
    from segments.exceptions import WorkspaceError
    from segments.ingest import load_real_raw

    try:
        small = load_real_raw(ws, as_of, ("customers", "products"))
    except (SchemaError, WorkspaceError) as exc:
        raise Unusual(str(exc)) from None
    files = manifest.get("files")
    listed = files.get("orders.parquet") if isinstance(files, dict) else None
    if not isinstance(listed, str):
        raise Unusual("orders not listed as one file")
    path = ws.require(ws.raw_table("orders"), "segments ingest")
    return small["customers"], small["products"], path, ORDERS, as_of, listed


def _month_ids(parts: list[Path]) -> pl.Series:
    return pl.concat([pl.read_parquet(p, columns=["order_id"]) for p in parts]).to_series()


def _lines_by_month(
    as_of: dt.date,
    files: list[Path],
    folder: Path,
    products: pl.DataFrame,
    months: list[dt.date],
    firsts: list[int],
    lasts: list[int],
    parts: Mapping[dt.date, list[Path]],
) -> tuple[RawLines, dict[dt.date, list[Path]]]:
    """The raw order lines' private copies ``files`` checked a file at a time (as
    :func:`segments.prepare.raw_lines.read_raw_lines` does), each line's order found in its
    month's ids (the month by the id ranges), the lines per order written one file per month
    and lines file: the lines as read, and those count files by month."""
    counted = folder / "counts"
    counted.mkdir(mode=0o700)
    starts = pl.Series("first", firsts, pl.Int64)
    ends = pl.Series("last", lasts, pl.Int64)
    counts: dict[dt.date, list[Path]] = {}
    by_month: dict[dt.date, list[Path]] = {}
    held: tuple[int, pl.Series] | None = None  # the month whose ids are read (one at a time)
    total = 0
    table = RAW_TABLES["order_lines"]
    for number, copy in enumerate(files):
        lines = pl.read_parquet(copy)
        _checked(lambda frame: validate(frame, table, as_of=as_of), lines)
        _checked(check_foreign_key, lines, "order_lines", products, "products", "product_id")
        per_order = lines_per_order(lines.get_column("order_id"))
        del lines
        ids = per_order.get_column("order_id")
        at = starts.search_sorted(ids, side="right").cast(pl.Int64) - 1  # -1: below all
        if ids.len() and (at.min() < 0 or bool((ids > ends.gather(at.clip(0))).any())):  # type: ignore[operator]
            raise Unusual("a line of no order")
        per_order = per_order.with_columns(at.alias("_month"))
        for index in at.unique().sort().to_list():
            mine = per_order.filter(pl.col("_month") == index).drop("_month")
            if held is None or held[0] != index:
                held = (index, _month_ids(parts[months[index]]))
            if not bool(mine.get_column("order_id").is_in(held[1].implode()).all()):
                raise Unusual("a line of no order")
            month = months[index]
            counts.setdefault(month, []).append(counted / f"{month:%Y-%m}-{number:06d}.parquet")
            mine.write_parquet(counts[month][-1], compression=SPILL)
            by_month.setdefault(month, []).append(copy)
            total += int(mine.get_column("n_lines").sum())
        del per_order
    lines_read = RawLines(
        files=tuple(files),
        files_by_month={m: tuple(fs) for m, fs in by_month.items()},
        lines_per_order=pl.DataFrame(
            {"order_id": [], "n_lines": []}, schema={"order_id": pl.Int64, "n_lines": pl.UInt32}
        ),
        count=total,
    )
    return lines_read, counts


def _months_with_counts(
    folder: Path, parts: Mapping[dt.date, list[Path]], counts: Mapping[dt.date, list[Path]]
) -> tuple[dict[dt.date, Path], pl.DataFrame]:
    """Each month's orders as one file with their line counts (``n_lines``, 0 for an order
    without lines), the chunk files removed; and every person's lines (person_root,
    n_lines), summed month by month."""
    out = folder / "months"
    out.mkdir(mode=0o700)
    files: dict[dt.date, Path] = {}
    person_lines = _Folded("person_root", pl.col("n_lines").sum(), 1 << 20)
    for month, pieces in parts.items():
        orders = pl.concat([pl.read_parquet(p) for p in pieces])
        if counts.get(month):
            lines = pl.concat(
                [pl.read_parquet(p) for p in counts[month]], how="vertical_relaxed"
            ).with_columns(pl.col("n_lines").cast(pl.Int64))
            if lines.get_column("order_id").is_duplicated().any():
                # an order whose lines two files hold: the whole path checks their keys
                raise Unusual("an order's lines in two files")
            orders = orders.join(lines, on="order_id", how="left", maintain_order="left")
            orders = orders.with_columns(pl.col("n_lines").fill_null(0))
        else:
            orders = orders.with_columns(pl.lit(0, pl.Int64).alias("n_lines"))
        files[month] = out / f"{month:%Y-%m}.parquet"
        orders.write_parquet(files[month], compression=SPILL)
        for piece in [*pieces, *counts.get(month, [])]:
            piece.unlink()
        person_lines.add(orders.select("person_root", "n_lines"))
        del orders
    return files, person_lines.frame()


def discard(folder: Path) -> None:
    """Remove what an abandoned chunked pass left in ``folder``."""
    shutil.rmtree(folder, ignore_errors=True)
