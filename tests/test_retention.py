"""Tests of segments.prepare.retention: the purge of raw rows whose retention ended everywhere."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from rawframes import AS_OF, cli_args, customer, raw_tables, read_json, rewrite_raw, write_raw

from segments.cli.main import main
from segments.exceptions import SchemaError
from segments.policy import Policy
from segments.prepare.retention import purge
from segments.workspace import Workspace, sha256_file

DAY = dt.timedelta(days=1)


def _workspace(tmp_path: Path) -> Workspace:
    """AllOffice: the longest window is AO-6, 24 months from the order (and AO-4/5 14 months
    from the last contact or order for the customer record)."""
    ao6 = Policy.load("alloffice").purpose("segmentation").retention[1].cutoff(AS_OF)
    assert ao6 is not None
    cs = [
        customer(1, last_contact_date=AS_OF),  # active: keeps recent orders
        customer(2, last_contact_date=dt.date(2022, 1, 1), signup_date=dt.date(2021, 1, 1)),
    ]
    orders = [(1, 1, ao6), (2, 1, ao6 - DAY), (3, 1, AS_OF), (4, 2, dt.date(2022, 1, 1))]
    tables = raw_tables(cs, orders, lines_per_order=2)
    return write_raw(Workspace(tmp_path / "ws"), tables)


def test_purge_removes_only_rows_expired_for_every_purpose(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    result = purge(ws, "alloffice", AS_OF)
    assert result.removed == {"customers": 1, "orders": 2, "order_lines": 4}
    orders = pl.read_parquet(ws.raw_table("orders"))
    assert sorted(orders["order_id"]) == [1, 3]  # the day on the AO-6 cutoff survives
    assert pl.read_parquet(ws.raw_table("customers"))["customer_id"].to_list() == [1]
    assert set(pl.read_parquet(ws.raw_table("order_lines"))["order_id"]) == {1, 3}


def test_purge_records_what_went_and_updates_the_manifest(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    result = purge(ws, "alloffice", AS_OF)
    log = read_json(result.log_path)
    assert len(log) == 1 and log[0]["rows_removed"]["orders"] == 2
    assert {"AO-4", "AO-5", "AO-6"} <= {c for r in log[0]["rules"] for c in r["clause_ids"]}
    assert "customer_id" not in str(log)  # no ids of what was deleted are kept
    manifest = read_json(ws.manifest)
    for table in ("customers", "orders", "order_lines"):
        assert manifest["files"][f"{table}.parquet"] == sha256_file(ws.raw_table(table))
    assert manifest["row_counts"]["orders"] == 2 and manifest["synthetic"] is True
    assert purge(ws, "alloffice", AS_OF).total_removed == 0  # idempotent


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    before = sha256_file(ws.raw_table("orders"))
    result = purge(ws, "alloffice", AS_OF, dry_run=True)
    assert result.removed["orders"] == 2 and result.log_path is None
    assert sha256_file(ws.raw_table("orders")) == before


def test_active_customers_are_never_purged_by_end_of_relationship(tmp_path: Path) -> None:
    cs = [customer(1), customer(2, end_date=dt.date(2023, 1, 1))]
    orders = [(1, 1, dt.date(2017, 1, 1)), (2, 2, dt.date(2022, 6, 1))]
    ws = write_raw(Workspace(tmp_path / "ws"), raw_tables(cs, orders))
    result = purge(ws, "allkontor", AS_OF)  # AK-3: while a customer and 24 months thereafter
    assert result.removed == {"customers": 1, "orders": 1, "order_lines": 1}
    assert pl.read_parquet(ws.raw_table("orders"))["order_id"].to_list() == [1]


def test_bad_input_changes_nothing(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    orders = pl.read_parquet(ws.raw_table("orders"))
    rewrite_raw(ws, "orders", orders.with_columns(order_date=pl.lit(AS_OF + DAY)))
    before = {t: sha256_file(ws.raw_table(t)) for t in ("customers", "order_lines")}
    with pytest.raises(SchemaError, match=r"after as_of"):
        purge(ws, "alloffice", AS_OF)
    assert before == {t: sha256_file(ws.raw_table(t)) for t in ("customers", "order_lines")}
    assert not (ws.raw / "purge_log.json").exists()


def test_cli_purge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = _workspace(tmp_path)
    args = cli_args("retention", "purge", workspace=ws)
    assert main([*args, "--dry-run"]) == 0
    assert "would remove 1 customers, 2 orders, 4 order_lines" in capsys.readouterr().out
    assert main(args) == 0
    assert "purge_log.json" in capsys.readouterr().out
    assert main([*args[:5], "nope", *args[6:]]) == 2
    assert "unknown policy 'nope'" in capsys.readouterr().err
