"""The engine contract: what every backend of the line-level stages computes, and how.

An engine reads order lines (Parquet: one file, or a folder of month partitions
``month=YYYY-MM/part-*.parquet``) and returns small per-person frames as polars DataFrames on
the driver. Everything the backends share — which partition files a window needs, the output
schemas, the exact arithmetic — is defined here once, so two backends given the same files
return equal frames (``tests/test_engine.py``).

Exact arithmetic: a line's amount is counted in whole öre, ``floor(amount_sek * 100 + 0.5)``
(the amounts carry at most two decimals, so this is the amount itself), summed as 64-bit
integers (order-independent, unlike a float sum) and rounded to whole SEK half away from
zero in integers (:func:`ore_to_sek`). Every backend must follow it.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from segments.exceptions import WorkspaceError
from segments.workspace import month_partition, parquet_files

__all__ = [
    "CELL_SCHEMA",
    "KEY_HEX_DIGITS",
    "ORDER_COUNT_SCHEMA",
    "Engine",
    "LineQuery",
    "LineSource",
    "OrderLineJoin",
    "Window",
    "cell_schema",
    "check_one_person_per_key",
    "empty_cells",
    "feature_sum_schema",
    "key_cell_schema",
    "line_files",
    "month_partition",
    "ore_to_sek",
    "person_check",
    "person_key",
    "person_key_of",
]

#: A half-open ``[start, end)`` range of order dates; None means every line.
Window = tuple[dt.date, dt.date] | None
#: Prepared or raw order lines: a Parquet file, or a folder of month partitions.
LineSource = str | os.PathLike[str]

#: The columns of :meth:`Engine.person_cells` (``month`` only when asked ``by_month``).
CELL_SCHEMA: dict[str, pl.DataType] = {
    "person_id": pl.Utf8(),
    "month": pl.Utf8(),
    "category": pl.Utf8(),
    "sek": pl.Int64(),
    "units": pl.Int64(),
}
#: The columns of :meth:`Engine.person_orders`.
ORDER_COUNT_SCHEMA: dict[str, pl.DataType] = {"person_id": pl.Utf8(), "orders": pl.Int64()}

#: Hex digits of the pseudonym a release's compact person key is read from (60 bits, a
#: positive 64-bit integer on every engine). A pseudonym is a keyed HMAC's hex digits (16 to
#: 64, ``segments.schema``), uniform, so the last 15 are as good a key as any 60-bit hash,
#: and every engine computes them identically (a polars ``hash()`` is polars' own). The
#: first 15 are the check (:func:`person_check`): two pseudonyms of one key are refused,
#: never merged into one row (``segments.privacy.releases``).
KEY_HEX_DIGITS = 15


def person_key(column: str = "person_id") -> pl.Expr:
    """The compact person key ``pid``: the last :data:`KEY_HEX_DIGITS` hex digits of the
    pseudonym as an Int64 (what a release groups, sorts and joins on).

    Examples
    --------
    >>> frame = pl.DataFrame({"person_id": ["0" * 17 + "ff", "a" * 32]})
    >>> frame.select(person_key())["pid"].to_list() == [255, int("a" * 15, 16)]
    True
    """
    digits = pl.col(column).str.slice(-KEY_HEX_DIGITS, KEY_HEX_DIGITS)
    return digits.str.to_integer(base=16, dtype=pl.Int64).alias("pid")


def person_check(column: str = "person_id") -> pl.Expr:
    """The check of :func:`person_key` (``pid_check``): the pseudonym's first
    :data:`KEY_HEX_DIGITS` hex digits as an Int64. Two pseudonyms with one key and one check
    agree on 30 of their digits (all of them up to 30 digits)."""
    digits = pl.col(column).str.slice(0, KEY_HEX_DIGITS)
    return digits.str.to_integer(base=16, dtype=pl.Int64).alias("pid_check")


def person_key_of(pseudonym: str) -> int:
    """:func:`person_key` of one pseudonym (to find a known person's rows).

    Examples
    --------
    >>> person_key_of("f" * 64) == 2**60 - 1
    True
    """
    return int(pseudonym[-KEY_HEX_DIGITS:], 16)


def line_files(source: LineSource, window: Window = None) -> list[Path]:
    """The Parquet files a window needs: the file itself, or the month partitions it meets
    (:func:`segments.workspace.parquet_files`, the one reader of the layout).

    A month-closing reads only the partitions of its months; a partition folder holds one or
    more ``*.parquet`` files (a new month is a new folder, history is never rewritten).

    Raises
    ------
    WorkspaceError
        If ``source`` does not exist.
    """
    path = Path(source)
    if not path.exists():
        raise WorkspaceError(f"order lines {path} do not exist; run `segments prepare` first")
    return parquet_files(path, window)


def ore_to_sek(ore: pl.Expr) -> pl.Expr:
    """Whole SEK from öre, rounded half away from zero, in integers (exact).

    Examples
    --------
    >>> ore = pl.Series("ore", [250, -250, 249, -249])
    >>> pl.select(ore_to_sek(pl.lit(ore))).to_series().to_list()
    [3, -3, 2, -2]
    """
    return pl.when(ore >= 0).then((ore + 50) // 100).otherwise(-((50 - ore) // 100)).cast(pl.Int64)


def feature_sum_schema(
    categories: Sequence[str], channels: Sequence[str]
) -> dict[str, pl.DataType]:
    """The columns of :meth:`Engine.person_feature_sums`, in order: integers (and one date)
    only, so every backend's sums are exact and equal."""
    return {
        "person_id": pl.Utf8(),
        "last_order": pl.Date(),
        "orders": pl.Int64(),
        "ore": pl.Int64(),
        **{f"orders_{c}": pl.Int64() for c in channels},
        **{f"ore_q{q}": pl.Int64() for q in range(1, 5)},
        "lines": pl.Int64(),
        **{f"ore_{c}": pl.Int64() for c in categories},
        **{f"lines_{c}": pl.Int64() for c in categories},
    }


def cell_schema(by_month: bool) -> dict[str, pl.DataType]:
    """:data:`CELL_SCHEMA`, with ``month`` only for cells by month."""
    return {k: v for k, v in CELL_SCHEMA.items() if by_month or k != "month"}


def key_cell_schema(by_month: bool) -> dict[str, pl.DataType]:
    """The columns of :meth:`Engine.person_key_cell_batches`: :func:`cell_schema` with the
    pseudonym replaced by its key ``pid`` and its check ``pid_check`` last (Int64 both)."""
    keyed = {"pid": pl.Int64(), **{k: v for k, v in cell_schema(by_month).items()}}
    keyed.pop("person_id")
    return {**keyed, "pid_check": pl.Int64()}


def check_one_person_per_key(merged: int) -> None:
    """Refuse cells whose key held two pseudonyms (``merged`` rows found so): one row must be
    one person, or the per-person bound the noise is scaled to no longer holds."""
    if merged:
        from segments.exceptions import SchemaError

        raise SchemaError(
            f"table 'lines', column 'person_id': rule 'one person per release key (the "
            f"pseudonym's last {KEY_HEX_DIGITS} hex digits)' fails for {merged} row(s): two "
            "pseudonyms share a key; nothing was released or charged; fix: re-run `segments "
            "prepare` with a new pseudonymisation key"
        )


def empty_cells(by_month: bool) -> pl.DataFrame:
    """A cell frame with no rows (a window with no partition)."""
    return pl.DataFrame(schema=cell_schema(by_month))


@dataclass(frozen=True)
class LineQuery:
    """What a backend computes one per-person frame from: the Parquet files the window needs
    (never empty: :class:`Engine` answers an empty window itself), the window, and the public
    code lists the result is checked against."""

    files: tuple[Path, ...]
    window: Window
    categories: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    by_month: bool = False

    @property
    def cell_schema(self) -> dict[str, pl.DataType]:
        """The schema of this query's cells (:func:`cell_schema`)."""
        return cell_schema(self.by_month)


@dataclass(frozen=True)
class OrderLineJoin:
    """The inputs of prepare's line-level join (:meth:`Engine.join_order_lines`)."""

    lines: tuple[Path, ...]
    orders: pl.DataFrame
    products: pl.DataFrame
    order_by: tuple[str, ...]


class Engine:
    """A backend of the line-level stages (polars in memory, DuckDB embedded, Spark).

    Inputs are Parquet paths and public parameters; outputs are per-person polars frames on
    the driver, each at most a public number of rows per person. ``scratch`` is an owner-only
    folder inside the workspace's private area (``Workspace.scratch`` or a release plan's
    scratch folder) that the caller removes: an engine spills there and nowhere else.

    The public methods are the contract and are the same for every backend: they pick the
    partition files a window needs (:func:`line_files`) and answer a window with none by the
    empty frame of the right schema, so a backend implements only ``_cells``, ``_orders``
    and ``_feature_sums`` on a :class:`LineQuery` (and may override ``_cell_batches`` to
    stream, ``_join`` to run prepare's join itself).
    """

    #: The setting's value that selects this engine (``--engine`` / ``SEGMENTS_ENGINE``).
    name: str

    def person_cells(
        self,
        lines: LineSource,
        window: Window,
        categories: Sequence[str],
        *,
        by_month: bool = False,
        scratch: Path,
    ) -> pl.DataFrame:
        """Spend and units per person and category (and month) of the lines in ``window``.

        Returns :data:`CELL_SCHEMA` (``month`` as ``YYYY-MM`` only with ``by_month``): one
        row per person × category (× month) with at least one line, so at most
        ``len(categories)`` rows per person (and month); ``sek`` is the öre sum rounded to
        whole SEK (module docstring), ``units`` the sum of quantities. Sorted by
        ``person_id``, ``month``, ``category``. A line whose category is not in
        ``categories`` is an error (:class:`segments.exceptions.SchemaError`).
        """
        query = _query(lines, window, categories, by_month=by_month)
        return empty_cells(by_month) if query is None else self._cells(query, scratch)

    def person_cell_batches(
        self,
        lines: LineSource,
        window: Window,
        categories: Sequence[str],
        *,
        by_month: bool = False,
        scratch: Path,
    ) -> Iterator[pl.DataFrame]:
        """The rows of :meth:`person_cells` in batches, in no particular order (each batch
        :data:`CELL_SCHEMA`; every category checked as there). For a caller that reduces
        each batch as it comes — a release replaces the 64-character pseudonym by a 64-bit
        key — so the whole frame of pseudonyms is never held on the driver."""
        query = _query(lines, window, categories, by_month=by_month)
        if query is not None:
            yield from self._cell_batches(query, scratch)

    def person_key_cell_batches(
        self,
        lines: LineSource,
        window: Window,
        categories: Sequence[str],
        *,
        by_month: bool = False,
        scratch: Path,
    ) -> Iterator[pl.DataFrame]:
        """:meth:`person_cell_batches` with each row's pseudonym replaced by its compact key
        inside the engine (:func:`key_cell_schema`: ``pid``, ``month`` with ``by_month``,
        ``category``, ``sek``, ``units``, ``pid_check``): no pseudonym leaves the engine, and
        the driver holds 8-byte keys instead of 32 to 64 hex characters per row.

        Still one row per pseudonym and category (and month), never one per key: two people
        of one key are two rows with different checks, which the caller refuses
        (:func:`check_one_person_per_key`), rather than one row under one person's bound.
        """
        query = _query(lines, window, categories, by_month=by_month)
        if query is not None:
            yield from self._key_cell_batches(query, scratch)

    def person_orders(self, lines: LineSource, window: Window, *, scratch: Path) -> pl.DataFrame:
        """Distinct orders per person in ``window`` (:data:`ORDER_COUNT_SCHEMA`), sorted by
        ``person_id``."""
        query = _query(lines, window)
        if query is None:
            return pl.DataFrame(schema=ORDER_COUNT_SCHEMA)
        return self._orders(query, scratch)

    def person_feature_sums(
        self,
        lines: LineSource,
        window: Window,
        categories: Sequence[str],
        channels: Sequence[str],
        *,
        scratch: Path,
    ) -> pl.DataFrame:
        """The per-person sums the segmentation features are ratios of (one row per person
        with a line in ``window``; :func:`feature_sum_schema`, sorted by ``person_id``).

        An order's date and channel are the smallest over its lines (one value in prepared
        data); ``last_order`` is the latest order date, ``orders`` the distinct orders,
        ``ore`` the spend in öre, ``orders_<channel>`` the orders per channel, ``ore_q<q>``
        the spend of orders dated in calendar quarter q, ``lines`` the lines, ``ore_<c>``
        and ``lines_<c>`` the spend and lines per category. A category or channel outside
        the public lists is an error (:class:`segments.exceptions.SchemaError`).
        """
        query = _query(lines, window, categories, channels)
        if query is None:
            return pl.DataFrame(schema=feature_sum_schema(categories, channels))
        return self._feature_sums(query, scratch)

    def join_order_lines(
        self,
        lines: Sequence[Path],
        orders: pl.DataFrame,
        products: pl.DataFrame,
        *,
        order_by: Sequence[str],
        scratch: Path,
    ) -> pl.DataFrame:
        """The line-level join of ``segments prepare``: each raw line (read from the Parquet
        files ``lines``, at least one, prepare's checked private copies) of one of ``orders``
        with its order's columns (joined on ``order_id``) and its product's (on
        ``product_id``), its ``amount_sek = quantity × unit_price_sek``, sorted by
        ``order_by`` (unique per line). ``orders`` carries what the caller wants on each line
        (prepare: the date and the pseudonyms' sort ranks, computed on the driver, which
        gathers the pseudonyms themselves into the sorted lines): the pseudonymisation key
        never enters an engine."""
        join = OrderLineJoin(tuple(lines), orders, products, tuple(order_by))
        return self._join(join, scratch)

    def _cells(self, query: LineQuery, scratch: Path) -> pl.DataFrame:
        raise NotImplementedError

    def _cell_batches(self, query: LineQuery, scratch: Path) -> Iterator[pl.DataFrame]:
        # one batch, the whole frame: a backend that can stream its result overrides this
        yield self._cells(query, scratch)

    def _key_cell_batches(self, query: LineQuery, scratch: Path) -> Iterator[pl.DataFrame]:
        # keyed on the driver from the pseudonyms' batches: a backend that can key its rows
        # itself overrides this
        month = ["month"] if query.by_month else []
        for cells in self._cell_batches(query, scratch):
            yield cells.select(person_key(), *month, "category", "sek", "units", person_check())

    def _orders(self, query: LineQuery, scratch: Path) -> pl.DataFrame:
        raise NotImplementedError

    def _feature_sums(self, query: LineQuery, scratch: Path) -> pl.DataFrame:
        raise NotImplementedError

    def _join(self, join: OrderLineJoin, scratch: Path) -> pl.DataFrame:
        # in polars on the driver (the lines scanned, only the orders' kept), on every
        # backend: the month it builds is written from the driver whatever the engine, and
        # DuckDB's join held a second copy of it (segments.engine.embedded's docstring)
        query = (
            pl.scan_parquet(list(join.lines))
            .join(join.orders.lazy(), on="order_id")
            .join(join.products.lazy(), on="product_id")
            .with_columns((pl.col("quantity") * pl.col("unit_price_sek")).alias("amount_sek"))
        )
        return collect_sorted(query, join.order_by)


def collect_sorted(query: pl.LazyFrame, by: Sequence[str]) -> pl.DataFrame:
    """``query.collect().sort(*by)`` (``by`` unique per row, so the order is total), sorted
    one column at a time: the sort's permutation, then each column gathered and its unsorted
    buffer let go, so the rows are held once plus one column, not twice as a whole-frame sort
    holds them (issue 21: prepare's month join). The frame is collected here, so no caller
    holds the unsorted one.

    Examples
    --------
    >>> frame = pl.DataFrame({"k": [3, 1, 2], "v": ["c", "a", "b"]})
    >>> collect_sorted(frame.lazy(), ["k"]).equals(frame.sort("k"))
    True
    """
    frame = query.collect()
    order = frame.select(pl.arg_sort_by(list(by))).to_series()
    for name in frame.columns:
        frame = frame.with_columns(frame.get_column(name).gather(order))
    return frame


def _query(
    lines: LineSource,
    window: Window,
    categories: Sequence[str] = (),
    channels: Sequence[str] = (),
    *,
    by_month: bool = False,
) -> LineQuery | None:
    """The query over the partition files ``window`` needs, or None when it needs none."""
    files = line_files(lines, window)
    if not files:
        return None
    return LineQuery(tuple(files), window, tuple(categories), tuple(channels), by_month)


def check_categories(
    found: Sequence[str | None], categories: Sequence[str], column: str = "category"
) -> None:
    """Refuse lines whose category (or channel) is outside the public list (no engine
    invents a key)."""
    from segments.exceptions import SchemaError

    unknown = sorted({str(c) for c in found} - set(categories))
    if unknown:
        raise SchemaError(
            f"table 'lines', column {column!r}: rule 'value in the public code list' fails "
            f"for {len(unknown)} value(s) (first: {unknown[0]!r}); fix: use the codes "
            f"the policy declares ({list(categories)})"
        )
