"""Issue 21: prepare's line-level join runs on the engine the setting selects, one month
partition at a time, and writes the same bytes on every engine; the pseudonyms are computed
on the driver, so the engine receives pseudonyms and never the key or an identifier."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from segments.engine.embedded import DuckDBEngine
from segments.policy import Policy
from segments.prepare import prepare
from segments.schema import RAW_TABLES
from segments.workspace import Workspace

AS_OF = dt.date(2026, 10, 31)
#: What the driver hands the engine about an order: its raw id (the join key with the raw
#: lines), date, channel, the two keyed pseudonyms and their sort ranks — no person key.
ORDER_COLUMNS = {
    "order_id",
    "order_date",
    "channel",
    "order_pseudonym",
    "person_id",
    "_person_rank",
    "_order_rank",
}


def _prepared(ws: Workspace, purpose: str) -> dict[str, bytes]:
    folder = ws.prepared_dir(purpose)
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _same_bytes_on_both_engines(raw: Workspace, tmp_path: Path, purpose: str, monkeypatch) -> int:
    """Prepare ``raw`` on polars and on DuckDB; assert equal bytes; return the partitions
    DuckDB built (each from one month's orders)."""
    import shutil

    calls: list[set[str]] = []
    real = DuckDBEngine.join_order_lines

    def spy(self, lines, orders, products, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(set(orders.columns))
        assert orders["order_date"].dt.truncate("1mo").n_unique() <= 1  # one month at a time
        return real(self, lines, orders, products, **kwargs)

    monkeypatch.setattr(DuckDBEngine, "join_order_lines", spy)
    written = {}
    for engine in ("polars", "duckdb"):
        ws = Workspace(tmp_path / engine)
        shutil.copytree(raw.raw, ws.raw)
        monkeypatch.setenv("SEGMENTS_ENGINE", engine)
        prepare(ws, Policy.load("alloffice"), purpose, AS_OF)
        written[engine] = _prepared(ws, purpose)
    assert written["duckdb"] == written["polars"]  # every file, the signed record included
    identifiers = {c for s in RAW_TABLES.values() for c in s.direct_identifiers}
    assert calls and all(c == ORDER_COLUMNS and not c & identifiers for c in calls)
    return len(calls)


@pytest.mark.parametrize("purpose", ["statistics", "offers"])
def test_prepare_on_duckdb_writes_the_bytes_polars_writes_on_the_default_data(
    tmp_path, monkeypatch, purpose
):
    from segments import copy_default_dataset

    raw = Workspace(tmp_path / "raw")
    copy_default_dataset(raw)
    built = _same_bytes_on_both_engines(raw, tmp_path, purpose, monkeypatch)
    record = json.loads(
        (tmp_path / "duckdb" / "prepared" / purpose / "provenance.json").read_text()
    )
    partitions = [k for k in record["outputs"] if k.startswith("lines.parquet/month=")]
    assert built == len(partitions) >= 12  # one engine join per month partition written


@pytest.mark.slow
def test_prepare_on_duckdb_writes_the_bytes_polars_writes_at_a_million_lines(tmp_path, monkeypatch):
    from segments.synth import generate

    raw = Workspace(tmp_path / "raw")
    generate(raw, customers=40_000, months=12, as_of=AS_OF, progress=False)
    lines = pl.scan_parquet(raw.raw_table("order_lines")).select(pl.len()).collect().item()
    assert lines >= 1_000_000
    assert _same_bytes_on_both_engines(raw, tmp_path, "statistics", monkeypatch) >= 12
