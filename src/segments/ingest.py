"""Real transaction exports into the ``orders`` / ``order_lines`` schema.

A real export rarely carries geography or identities; :func:`load_transactions` maps the
columns it does have onto the raw schema and returns the customers it found with their
geography explicitly marked as unknown (``geography_known`` is False and the geography
columns are null), so later stages can tell real data from synthetic and skip geographic
features rather than invent them.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl

from segments.exceptions import SchemaError
from segments.schema import CHANNELS, ORDER_LINES, ORDERS, validate

__all__ = ["TransactionMapping", "Transactions", "load_transactions"]


@dataclass(frozen=True)
class TransactionMapping:
    """Which source column holds which field, and how to read the file.

    Parameters
    ----------
    customer_id, order_date, quantity : str
        Source columns (required).
    amount : str, optional
        Line total in the source currency; ``unit_price`` is then ``amount / quantity``.
    unit_price : str, optional
        Unit price in the source currency (give ``amount`` or ``unit_price``).
    order_id : str, optional
        Source order id; without it, one order per customer and day.
    product_id : str, optional
        Source product id; without it every line is product 1 (unknown product).
    channel : str, optional
        Source channel column (values web, store, phone); else ``default_channel``.
    default_channel : str
    date_format : str
        ``strptime`` format of ``order_date``.
    separator : str
        Field separator, or ``"whitespace"`` for runs of spaces (CDNOW).
    has_header : bool
    column_names : tuple of str, optional
        Column names for a file without a header.
    sek_per_unit : float
        SEK per unit of the source currency: an exchange rate the caller states (public).

    Examples
    --------
    >>> TransactionMapping(customer_id="id", order_date="date", quantity="n", amount="usd",
    ...                    sek_per_unit=10.5).default_channel
    'web'
    """

    customer_id: str
    order_date: str
    quantity: str
    amount: str | None = None
    unit_price: str | None = None
    order_id: str | None = None
    product_id: str | None = None
    channel: str | None = None
    default_channel: str = "web"
    date_format: str = "%Y%m%d"
    separator: str = "whitespace"
    has_header: bool = True
    column_names: tuple[str, ...] | None = None
    sek_per_unit: float = 1.0

    def __post_init__(self) -> None:
        if (self.amount is None) == (self.unit_price is None):
            raise ValueError(
                "mapping: give exactly one of 'amount' (line total) or "
                "'unit_price'; fix: name the source column that holds prices"
            )
        if self.default_channel not in CHANNELS:
            raise ValueError(
                f"mapping: 'default_channel' must be one of {CHANNELS}, got "
                f"{self.default_channel!r}"
            )
        if not self.sek_per_unit > 0:
            raise ValueError(
                f"mapping: 'sek_per_unit' must be positive, got "
                f"{self.sek_per_unit!r}; fix: pass the exchange rate to SEK"
            )


@dataclass(frozen=True)
class Transactions:
    """A real export in the raw schema.

    Attributes
    ----------
    orders, order_lines : polars.DataFrame
        Validated against :data:`segments.schema.ORDERS` and ``ORDER_LINES``.
    customers : polars.DataFrame
        ``customer_id``, ``source_customer_id``, ``geography_known`` (False),
        ``postcode``, ``municipality_code``, ``county_code`` (null: unknown).
    products : polars.DataFrame
        ``product_id`` and ``source_product_id`` (categories unknown).
    source : str
        The file read.
    geography : str
        ``"unknown"``: real exports carry no geography.
    """

    orders: pl.DataFrame
    order_lines: pl.DataFrame
    customers: pl.DataFrame
    products: pl.DataFrame
    source: str
    geography: str = "unknown"


def _read(path: Path, m: TransactionMapping) -> pl.DataFrame:
    header = 0 if m.has_header else None
    names = list(m.column_names) if m.column_names else None
    if m.separator == "whitespace":
        frame = pd.read_csv(
            path,
            sep=r"\s+",
            dtype=str,
            header=header,
            names=names,
            engine="python" if names else "c",
        )
        return pl.from_pandas(frame)
    df = pl.read_csv(
        path, separator=m.separator, has_header=m.has_header, infer_schema=False, new_columns=names
    )
    return df


def _require_columns(df: pl.DataFrame, m: TransactionMapping, source: str) -> None:
    for f in fields(m):
        if f.name in (
            "customer_id",
            "order_date",
            "quantity",
            "amount",
            "unit_price",
            "order_id",
            "product_id",
            "channel",
        ):
            column = getattr(m, f.name)
            if column is not None and column not in df.columns:
                raise SchemaError(
                    f"table 'transactions' ({source}), column {column!r}: rule 'mapped column "
                    f"present' fails (mapping.{f.name}={column!r}; the file has "
                    f"{df.columns}); fix: correct the mapping or the export"
                )


def _parse(df: pl.DataFrame, column: str, dtype: Any, source: str, what: str) -> pl.Series:
    parsed = df[column].str.strip_chars().cast(dtype, strict=False)
    bad = df.filter(parsed.is_null() & df[column].is_not_null())[column]
    if len(bad):
        raise SchemaError(
            f"table 'transactions' ({source}), column {column!r}: rule '{what}' fails for "
            f"{len(bad)} value(s) (first: {bad[0]!r}); fix: clean the export or the mapping"
        )
    return parsed


def _dense_ids(values: pl.Series) -> pl.Series:
    """Integer ids >= 1: the values themselves if all are positive integers, else ranks."""
    as_int = values.str.strip_chars().cast(pl.Int64, strict=False)
    if as_int.null_count() == 0 and (as_int >= 1).all():
        return as_int
    return values.rank("dense").cast(pl.Int64)


def load_transactions(
    path: str | os.PathLike[str],
    mapping: TransactionMapping | dict[str, Any],
    *,
    as_of: dt.date | None = None,
) -> Transactions:
    """Read a real transaction export into the ``orders`` / ``order_lines`` schema.

    Parameters
    ----------
    path : path
        The export (CSV, or whitespace-separated text such as CDNOW's).
    mapping : TransactionMapping or dict
        Source columns and reading options (a dict is passed to :class:`TransactionMapping`).
    as_of : date, optional
        Refuse dates after it.

    Returns
    -------
    Transactions
        Orders and lines validated against the raw schema; geography marked unknown.

    Raises
    ------
    SchemaError
        Naming the table, column, rule, an offending value and the fix (missing mapped
        column, unparseable date or number, negative quantity, date after ``as_of``...).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.txt"
    >>> _ = p.write_text("id date n usd\\r\\n 00001 19970101 2 11.50\\r\\n")
    >>> t = load_transactions(p, {"customer_id": "id", "order_date": "date",
    ...                           "quantity": "n", "amount": "usd"})
    >>> t.order_lines["unit_price_sek"].to_list(), t.geography
    ([5.75], 'unknown')
    """
    m = mapping if isinstance(mapping, TransactionMapping) else TransactionMapping(**mapping)
    path = Path(path)
    source = path.name
    df = _read(path, m)
    _require_columns(df, m, source)
    date = df[m.order_date].str.strip_chars().str.to_date(m.date_format, strict=False)
    bad = df.filter(date.is_null())[m.order_date]
    if len(bad):
        raise SchemaError(
            f"table 'transactions' ({source}), column {m.order_date!r}: rule 'date in format "
            f"{m.date_format}' fails for {len(bad)} value(s) (first: {bad[0]!r}); fix: clean "
            "the export or set mapping.date_format"
        )
    quantity = _parse(df, m.quantity, pl.Int64, source, "integer quantity")
    price_col = m.amount if m.amount is not None else m.unit_price
    assert price_col is not None
    price = _parse(df, price_col, pl.Float64, source, "number")
    unit = price / quantity if m.amount is not None else price
    lines = pl.DataFrame(
        {
            "source_customer_id": df[m.customer_id].str.strip_chars(),
            "customer_id": _dense_ids(df[m.customer_id]),
            "order_date": date,
            "quantity": quantity,
            "unit_price_sek": (unit * m.sek_per_unit).round(2),
            "source_product_id": (
                df[m.product_id].str.strip_chars()
                if m.product_id
                else pl.repeat("unknown", df.height, eager=True)
            ),
            "channel": (
                df[m.channel].str.strip_chars().str.to_lowercase()
                if m.channel
                else pl.repeat(m.default_channel, df.height, eager=True)
            ),
            "source_order": (
                df[m.order_id].str.strip_chars()
                if m.order_id
                else pl.repeat(None, df.height, dtype=pl.Utf8, eager=True)
            ),
        }
    ).with_row_index("_row")
    # order ids follow the calendar; a source order id splits same-day orders further
    order_key = ["order_date", "customer_id", *(["source_order"] if m.order_id else [])]
    lines = (
        lines.with_columns(
            pl.col("source_product_id").rank("dense").cast(pl.Int32).alias("product_id"),
            pl.struct(order_key).rank("dense").cast(pl.Int64).alias("order_id"),
        )
        .sort("order_id", "_row")
        .with_columns((pl.int_range(pl.len()).over("order_id") + 1).cast(pl.Int16).alias("line_no"))
    )
    orders = (
        lines.group_by("order_id", maintain_order=True)
        .agg(pl.col("customer_id").first(), pl.col("order_date").first(), pl.col("channel").first())
        .select(pl.col(c.name).cast(c.dtype) for c in ORDERS.columns)
    )
    order_lines = lines.select(
        pl.col(c.name).cast(c.dtype, strict=False) for c in ORDER_LINES.columns
    )
    validate(orders, ORDERS, as_of=as_of)
    validate(order_lines, ORDER_LINES, as_of=as_of)
    customers = (
        lines.group_by("customer_id")
        .agg(pl.col("source_customer_id").first())
        .sort("customer_id")
        .with_columns(
            pl.lit(False).alias("geography_known"),
            *(
                pl.lit(None, pl.Utf8).alias(c)
                for c in ("postcode", "municipality_code", "county_code")
            ),
        )
    )
    products = (
        lines.group_by("product_id").agg(pl.col("source_product_id").first()).sort("product_id")
    )
    return Transactions(orders, order_lines, customers, products, str(path))
