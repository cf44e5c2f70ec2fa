"""Bad input is refused with an error naming table, column, rule, example value and fix."""

from __future__ import annotations

import datetime as dt
import shutil

import polars as pl
import pytest

from segments.exceptions import SchemaError
from segments.schema import CUSTOMERS, ORDER_LINES, ORDERS, validate
from segments.synth.generate import load_raw_pl
from segments.workspace import Workspace


@pytest.fixture
def lines() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "order_id": [1, 1, 2],
            "line_no": [1, 2, 1],
            "product_id": [3, 4, 3],
            "quantity": [1, 2, 5],
            "unit_price_sek": [9.5, 120.0, 9.5],
        },
        schema=ORDER_LINES.polars_schema(),
    )


@pytest.fixture
def orders() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "order_id": [1, 2],
            "customer_id": [7, 8],
            "order_date": [dt.date(2026, 5, 2), dt.date(2026, 7, 3)],
            "channel": ["web", "store"],
        },
        schema=ORDERS.polars_schema(),
    )


def test_valid_frames_pass(lines: pl.DataFrame, orders: pl.DataFrame) -> None:
    validate(lines, ORDER_LINES)
    validate(orders, ORDERS, as_of=dt.date(2026, 7, 31))


def test_missing_column(lines: pl.DataFrame) -> None:
    with pytest.raises(
        SchemaError,
        match=r"table 'order_lines', column 'quantity': rule "
        r"'required column'.*missing \['quantity'\]; fix: add the column",
    ):
        validate(lines.drop("quantity"), ORDER_LINES)


def test_wrong_dtype(lines: pl.DataFrame) -> None:
    bad = lines.with_columns(pl.col("quantity").cast(pl.Utf8))
    with pytest.raises(
        SchemaError,
        match=r"table 'order_lines', column 'quantity': rule "
        r"'dtype\('Int32'\)'.*first: 'String'.*fix: cast the column",
    ):
        validate(bad, ORDER_LINES)


def test_duplicate_keys(lines: pl.DataFrame) -> None:
    bad = pl.concat([lines, lines.head(1)])
    with pytest.raises(
        SchemaError,
        match=r"table 'order_lines', columns \('order_id', "
        r"'line_no'\): rule 'unique key'.*first: \{'order_id': 1, 'line_no': 1\}"
        r".*fix: de-duplicate",
    ):
        validate(bad, ORDER_LINES)


def test_dates_after_as_of(orders: pl.DataFrame) -> None:
    with pytest.raises(
        SchemaError,
        match=r"table 'orders', column 'order_date': rule 'not "
        r"after as_of' — 1 date\(s\) after as_of=2026-06-30 \(first: 2026-07-03\);"
        r" fix the extract or pass a later as_of",
    ):
        validate(orders, ORDERS, as_of=dt.date(2026, 6, 30))


def test_negative_quantity(lines: pl.DataFrame) -> None:
    bad = lines.with_columns(pl.Series("quantity", [1, -2, 5], dtype=pl.Int32))
    with pytest.raises(
        SchemaError,
        match=r"table 'order_lines', column 'quantity': rule "
        r"'greater_than_or_equal_to\(1\)' fails for 1 value\(s\) \(first: '-2'\); "
        r"fix: correct or drop",
    ):
        validate(bad, ORDER_LINES)


@pytest.fixture
def customers(small_raw: Workspace) -> pl.DataFrame:
    return load_raw_pl(small_raw, "customers")


@pytest.mark.parametrize("postcode", ["01234", "1234", "12 345", "ABCDE"])
def test_invalid_postcode(customers: pl.DataFrame, postcode: str) -> None:
    bad = customers.with_columns(
        pl.when(pl.col("customer_id") == 5)
        .then(pl.lit(postcode))
        .otherwise("postcode")
        .alias("postcode")
    )
    with pytest.raises(
        SchemaError,
        match=r"table 'customers', column 'postcode': rule "
        r"'str_matches\('\^\(\?:\[1-9\]\\d\{4\}\)\$'\)' fails for 1 value\(s\) "
        rf"\(first: '{postcode}'\); fix: correct or drop",
    ):
        validate(bad, CUSTOMERS)


def test_order_line_whose_order_does_not_exist(small_raw: Workspace, tmp_path) -> None:
    shutil.copytree(small_raw.raw, tmp_path / "raw")
    ws = Workspace(tmp_path)
    last = sorted(ws.raw_table("order_lines").glob("month=*/*.parquet"))[-1]  # a partition
    lines = pl.read_parquet(last)
    orphan = lines.tail(1).with_columns(pl.lit(10**9, pl.Int64).alias("order_id"))
    pl.concat([lines, orphan]).write_parquet(last)
    with pytest.raises(
        SchemaError,
        match=r"table 'order_lines', column 'order_id': rule "
        r"'references orders' fails for 1 value\(s\) \(first: 1000000000\); "
        r"fix: include the referenced orders rows or drop the orphaned",
    ):
        load_raw_pl(ws, "order_lines", verify_hash=False)


def test_load_raw_applies_manifest_as_of(small_raw: Workspace, tmp_path) -> None:
    shutil.copytree(small_raw.raw, tmp_path / "raw")
    ws = Workspace(tmp_path)
    orders = pl.read_parquet(ws.raw_table("orders"))
    late = orders.with_columns(
        pl.when(pl.col("order_id") == 1)
        .then(pl.lit(dt.date(2027, 1, 5)))
        .otherwise("order_date")
        .alias("order_date")
    )
    late.write_parquet(ws.raw_table("orders"))
    with pytest.raises(
        SchemaError,
        match=r"table 'orders', column 'order_date': rule 'not "
        r"after as_of'.*as_of=2026-10-31 \(first: 2027-01-05\)",
    ):
        load_raw_pl(ws, "orders", verify_hash=False)
