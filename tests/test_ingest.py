"""Tests of segments.ingest: real transaction exports into the raw schema."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import polars as pl
import pytest
from realexports import CDNOW

from segments import load_transactions
from segments.exceptions import SchemaError
from segments.ingest import TransactionMapping
from segments.schema import ORDER_LINES, ORDERS

CDNOW_MAPPING = {
    "customer_id": "customer_id",
    "order_date": "date",
    "quantity": "number_of_cds",
    "amount": "dollar_value",
}


@pytest.mark.skipif(
    not CDNOW.exists(),
    reason=f"CDNOW reference data not found at {CDNOW} (expected ../shared beside the repository)",
)
def test_cdnow_master_into_raw_schema() -> None:
    public = load_transactions(CDNOW, CDNOW_MAPPING, as_of=dt.date(1998, 6, 30))
    assert all(
        isinstance(getattr(public, n), pd.DataFrame)
        for n in ("orders", "order_lines", "customers", "products")
    )
    # the tables are pandas (pandas has no date type: order_date is datetime64); checked
    # here in polars against the raw schema
    t = SimpleNamespace(
        orders=pl.from_pandas(public.orders).with_columns(pl.col("order_date").cast(pl.Date)),
        order_lines=pl.from_pandas(public.order_lines),
        customers=pl.from_pandas(public.customers),
        geography=public.geography,
    )
    assert t.order_lines.height == 69_659  # every transaction row becomes a line
    assert t.customers.height == 23_570
    assert t.orders["order_date"].min() == dt.date(1997, 1, 1)
    assert t.orders["order_date"].max() == dt.date(1998, 6, 30)
    total = (t.order_lines["quantity"] * t.order_lines["unit_price_sek"]).sum()
    assert total == pytest.approx(2_500_315.63, rel=1e-4)  # unit prices rounded to öre
    assert t.orders.schema == pl.Schema(ORDERS.polars_schema())
    assert t.order_lines.schema == pl.Schema(ORDER_LINES.polars_schema())
    # same-day rows of one customer form one order with numbered lines
    assert t.orders.height < t.order_lines.height
    assert (
        t.order_lines.group_by("order_id").agg(pl.col("line_no").max() == pl.len())["line_no"].all()
    )
    # geography is unknown and says so
    assert t.geography == "unknown"
    assert not t.customers["geography_known"].any()
    assert t.customers["county_code"].null_count() == t.customers.height
    assert set(t.orders["channel"]) == {"web"}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "export.csv"
    path.write_text(text)
    return path


#: The mapping of the space-separated exports below (columns id, date, n, usd).
SPACED = {"customer_id": "id", "order_date": "date", "quantity": "n", "amount": "usd"}


def _refused(
    tmp_path: Path,
    text: str,
    match: str,
    mapping: dict[str, str] = SPACED,
    as_of: dt.date | None = None,
) -> None:
    """``load_transactions`` of the export ``text`` refuses with a message matching ``match``."""
    path = _write(tmp_path, text)
    with pytest.raises(SchemaError, match=match):
        load_transactions(path, mapping, as_of=as_of)


def test_csv_with_order_ids_products_and_exchange_rate(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "kund;datum;antal;pris;order;artikel;kanal\n"
        "K1;2024-03-01;2;10.0;A;p1;Store\n"
        "K1;2024-03-01;1;5.0;B;p2;web\n"
        "K2;2024-02-01;3;1.5;C;p1;phone\n",
    )
    mapping = TransactionMapping(
        customer_id="kund",
        order_date="datum",
        quantity="antal",
        unit_price="pris",
        order_id="order",
        product_id="artikel",
        channel="kanal",
        separator=";",
        date_format="%Y-%m-%d",
        sek_per_unit=10.0,
    )
    t = load_transactions(path, mapping)
    assert isinstance(t.orders, pd.DataFrame) and isinstance(t.order_lines, pd.DataFrame)
    assert t.orders["channel"].to_list() == ["phone", "store", "web"]  # by date, customer
    assert len(t.orders) == 3 and len(t.customers) == 2
    assert t.order_lines["unit_price_sek"].to_list() == [15.0, 100.0, 50.0]
    assert t.products["source_product_id"].to_list() == ["p1", "p2"]


def test_missing_mapped_column(tmp_path: Path) -> None:
    _refused(
        tmp_path,
        "id date n usd\n1 20240101 1 2.0\n",
        r"table 'transactions' \(export.csv\), column "
        r"'qty': rule 'mapped column present'.*fix: correct the mapping",
        {**CDNOW_MAPPING, **SPACED, "quantity": "qty"},
    )


def test_negative_quantity_refused(tmp_path: Path) -> None:
    _refused(
        tmp_path,
        "id date n usd\n1 20240101 -1 2.0\n",
        r"table 'order_lines', column 'quantity': rule "
        r"'greater_than_or_equal_to\(1\)' fails for 1 value\(s\) \(first: '-1'\)",
    )


def test_bad_date_and_number(tmp_path: Path) -> None:
    _refused(
        tmp_path,
        "id date n usd\n1 2024-01-01 1 2.0\n",
        r"column 'date': rule 'date in format %Y%m%d' "
        r"fails for 1 value\(s\) \(first: '2024-01-01'\)",
    )
    _refused(
        tmp_path,
        "id date n usd\n1 20240101 one 2.0\n",
        r"column 'n': rule 'integer quantity'.*'one'",
    )


def test_dates_after_as_of(tmp_path: Path) -> None:
    _refused(
        tmp_path,
        "id date n usd\n1 20240105 1 2.0\n",
        r"table 'orders', column 'order_date': rule 'not "
        r"after as_of'.*\(first: 2024-01-05\)",
        as_of=dt.date(2024, 1, 1),
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of 'amount'"),
        ({"amount": "a", "unit_price": "u"}, "exactly one of 'amount'"),
        ({"amount": "a", "default_channel": "fax"}, "'default_channel' must be one of"),
        ({"amount": "a", "sek_per_unit": 0.0}, "'sek_per_unit' must be positive"),
    ],
)
def test_mapping_guards(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TransactionMapping(customer_id="c", order_date="d", quantity="q", **kwargs)  # type: ignore[arg-type]


def test_load_transactions_reads_the_file_as_segments_ingest_does(tmp_path: Path) -> None:
    """Issue 15 (r15b #5): one reader of an export's file. load_transactions parses through
    ingest's read_export, so it reads a file the way ingest does — a gzipped whitespace
    export gives the rows ingest reads (a blank line is still no row for it), and a file in
    another encoding is refused in one line naming the rule (before: a raw parser error)."""
    import gzip

    from segments.ingest import IngestMapping, _ExportFormat, read_export

    text = "id date n usd\n 00001 19970101 2 11.50\n\n 00002  19970102 1 3.00\n"
    path = tmp_path / "export.txt.gz"
    path.write_bytes(gzip.compress(text.encode()))
    t = load_transactions(path, SPACED)
    assert len(t.order_lines) == 2 and t.customers["source_customer_id"].to_list() == [
        "00001",
        "00002",
    ]
    ingest_mapping = IngestMapping(
        **SPACED, format="text", date_format="%Y%m%d", categories=("cds",), category="cds"
    )
    as_ingest = read_export(path, ingest_mapping).drop_nulls()
    as_load = read_export(path, _ExportFormat(format="text", skip_blank_lines=True))
    assert as_ingest.equals(as_load)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("id,date,n,usd\nÅsa,20240101,1,2.0\n".encode("latin-1"))
    with pytest.raises(SchemaError, match=r"rule 'text in the declared encoding utf-8'"):
        load_transactions(latin, {**SPACED, "separator": ","})
