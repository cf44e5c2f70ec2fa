"""prepare's chunked pass over the raw orders (segments.prepare.chunked, issue 21): the same
prepared bytes and report as the whole-table path, the same one-line errors on bad input, and
nothing written on a failure. A tiny chunk size is forced (SEGMENTS_PREPARE_CHUNK_ROWS), so
the default dataset's orders come in ~100 chunks, most months spanning two of them."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from rawframes import rewrite_raw

from segments import copy_default_dataset
from segments.exceptions import SchemaError
from segments.policy import Policy
from segments.prepare import chunked, frames, prepare
from segments.prepare.chunked import CHUNK_ROWS_ENV
from segments.workspace import Workspace, sha256_file, write_json

AS_OF = dt.date(2026, 10, 31)
POLICIES = ("allcall", "allkontor", "alloffice", "alocenter", "offix")


@pytest.fixture(scope="module")
def default_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = Workspace(tmp_path_factory.mktemp("chunked") / "ws")
    copy_default_dataset(ws)
    return ws.root


def _copy(default_raw: Path, to: Path) -> Workspace:
    shutil.copytree(default_raw, to)
    return Workspace(to)


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "provenance.json"
    }


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """How each prepare read the orders: 'chunked', or 'whole' (the chunked pass refused)."""
    paths: list[str] = []
    original = chunked.read_by_month

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            out = original(*args, **kwargs)
        except chunked.Unusual:
            paths.append("whole")
            raise
        paths.append("chunked")
        return out

    monkeypatch.setattr(chunked, "read_by_month", spy)
    monkeypatch.setenv(CHUNK_ROWS_ENV, "700")
    return paths


def _both(
    ws: Workspace, policy: str, purpose: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, str], dict[str, str]]:
    """The prepared files' digests by the whole-table path, then by the chunked one."""
    out = []
    for chunk in (False, True):
        monkeypatch.setattr(frames, "_CHUNKED", chunk)
        prepare(ws, Policy.load(policy), purpose, AS_OF)
        out.append(_digests(ws.prepared_dir(purpose)))
    return out[0], out[1]


def _errors_of_both(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The one-line error of the whole-table path, then of the chunked one."""
    messages = []
    for chunk in (False, True):
        monkeypatch.setattr(frames, "_CHUNKED", chunk)
        with pytest.raises(SchemaError) as caught:
            prepare(ws, Policy.load("alloffice"), "statistics", AS_OF)
        messages.append(str(caught.value))
    return messages


@pytest.mark.parametrize("purpose", ["statistics", "offers"])
def test_chunked_orders_give_the_whole_paths_prepared_bytes(
    default_raw, tmp_path, monkeypatch, taken, purpose
):
    """Same files (the lines' month partitions, the customers, the policy report with every
    rule's rows) whether the orders are read whole or in 700-row chunks and ruled by month."""
    ws = _copy(default_raw, tmp_path / "ws")
    whole, by_month = _both(ws, "alloffice", purpose, monkeypatch)
    assert taken == ["chunked"]
    assert len(whole) > 10 and whole == by_month
    report = json.loads((ws.prepared_dir(purpose) / "policy_report.json").read_text())
    assert any(r["kind"] == "retention" and r["rows_removed"] for r in report["rules"])


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["polars", "duckdb"])
@pytest.mark.parametrize("policy", POLICIES)
def test_chunked_orders_give_the_same_bytes_on_every_policy_and_purpose(
    default_raw, tmp_path, monkeypatch, taken, policy, engine
):
    monkeypatch.setenv("SEGMENTS_ENGINE", engine)
    ws = _copy(default_raw, tmp_path / "ws")
    for purpose in Policy.load(policy).purposes:
        whole, by_month = _both(ws, policy, purpose, monkeypatch)
        assert whole == by_month, (policy, purpose)
    assert set(taken) == {"chunked"}


def test_shuffled_orders_take_the_whole_path_with_the_same_bytes(
    default_raw, tmp_path, monkeypatch, taken
):
    """Ids out of order could repeat across chunks: the whole-table path reads them."""
    sorted_ws = _copy(default_raw, tmp_path / "sorted")
    prepare(sorted_ws, Policy.load("alloffice"), "statistics", AS_OF)
    ws = _copy(default_raw, tmp_path / "shuffled")
    orders = pl.read_parquet(ws.raw_table("orders"))
    rewrite_raw(ws, "orders", orders.sample(fraction=1.0, shuffle=True, seed=5))
    prepare(ws, Policy.load("alloffice"), "statistics", AS_OF)
    assert taken == ["chunked", "whole"]
    assert _digests(ws.prepared_dir("statistics")) == _digests(sorted_ws.prepared_dir("statistics"))


def _late_bad_orders(orders: pl.DataFrame, case: str) -> pl.DataFrame:
    """``orders`` broken in a late chunk (the whole table's message names every bad row)."""
    n = orders.height
    if case == "date after as_of":
        bad = pl.int_range(n).is_in([n - 5, n - 2])
        return orders.with_columns(
            pl.when(bad)
            .then(pl.lit(dt.date(2027, 1, 1)))
            .otherwise("order_date")
            .alias("order_date")
        )
    if case == "customer missing":
        bad = pl.int_range(n).is_in([n - 900, n - 3])
        return orders.with_columns(
            pl.when(bad).then(pl.lit(10**9)).otherwise("customer_id").alias("customer_id")
        )
    if case == "id repeated across chunks":
        bad = pl.int_range(n) == n - 10
        first = orders.item(5, "order_id")
        return orders.with_columns(
            pl.when(bad).then(pl.lit(first)).otherwise("order_id").alias("order_id")
        )
    if case == "channel not allowed":
        bad = pl.int_range(n) == n - 1
        return orders.with_columns(
            pl.when(bad).then(pl.lit("fax")).otherwise("channel").alias("channel")
        )
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    ["date after as_of", "customer missing", "id repeated across chunks", "channel not allowed"],
)
def test_bad_orders_give_the_whole_paths_one_line_error(
    default_raw, tmp_path, monkeypatch, taken, case
):
    """A bad row in a late chunk: the same message as the whole-table path (counts of the
    whole table included), nothing written, no scratch left in the workspace."""
    ws = _copy(default_raw, tmp_path / "ws")
    rewrite_raw(ws, "orders", _late_bad_orders(pl.read_parquet(ws.raw_table("orders")), case))
    messages = _errors_of_both(ws, monkeypatch)
    assert messages[0] == messages[1] and "\n" not in messages[1]
    assert "table 'orders'" in messages[1]
    assert taken == ["whole"]
    assert not ws.prepared_dir("statistics").exists()
    assert not any(ws.private.rglob("*.parquet"))


def _rewrite_lines(ws: Workspace, month: str, frame: pl.DataFrame) -> None:
    name = f"order_lines.parquet/month={month}/part-00000.parquet"
    frame.write_parquet(ws.raw / name)
    manifest = json.loads(ws.manifest.read_text(encoding="utf-8"))
    manifest["files"][name] = sha256_file(ws.raw / name)
    write_json(ws.manifest, manifest)


def _lines(ws: Workspace, month: str) -> pl.DataFrame:
    return pl.read_parquet(ws.raw / f"order_lines.parquet/month={month}/part-00000.parquet")


@pytest.mark.parametrize("where", ["above the last order", "below the first order"])
def test_a_line_of_no_order_gives_the_whole_paths_error(
    default_raw, tmp_path, monkeypatch, taken, where
):
    """A line whose order is missing, its id past either end of the orders' ids (r12a F1:
    below the first one once crashed the month search)."""
    ws = _copy(default_raw, tmp_path / "ws")
    orders = pl.read_parquet(ws.raw_table("orders"))
    if where == "below the first order":  # the first order gone, its lines kept
        rewrite_raw(ws, "orders", orders.slice(1))
    else:
        missing = int(orders["order_id"].max()) + 1
        lines = _lines(ws, "2026-05")
        last = pl.int_range(lines.height) == lines.height - 1
        _rewrite_lines(
            ws,
            "2026-05",
            lines.with_columns(
                pl.when(last).then(pl.lit(missing)).otherwise("order_id").alias("order_id")
            ),
        )
    messages = _errors_of_both(ws, monkeypatch)
    assert messages[0] == messages[1] and "references orders" in messages[1]
    assert taken == ["whole"]
    assert not ws.prepared_dir("statistics").exists()


def test_an_orders_lines_in_two_files_take_the_whole_path(
    default_raw, tmp_path, monkeypatch, taken
):
    """A line of a May order written into June's file (valid: its key is still unique): the
    chunked pass meets the order in two files and leaves it to the whole path, which checks
    the keys across files and sums the counts; the same bytes either way."""
    ws = _copy(default_raw, tmp_path / "ws")
    may, june = _lines(ws, "2026-05"), _lines(ws, "2026-06")
    counts = may.group_by("order_id").len()
    order = counts.filter(pl.col("len") >= 2)["order_id"].max()
    moved = may.filter(pl.col("order_id") == order).tail(1)
    _rewrite_lines(ws, "2026-05", may.join(moved, on=["order_id", "line_no"], how="anti"))
    _rewrite_lines(ws, "2026-06", pl.concat([june, moved]))
    whole, by_month = _both(ws, "alloffice", "statistics", monkeypatch)
    assert whole == by_month and taken == ["whole"]
    assert not any(p.name == "by-month" for p in ws.private.rglob("*"))


def test_streamed_orders_file_month_row_groups_give_the_whole_paths_bytes(
    tmp_path, monkeypatch, taken
):
    """The orders file as a 500 M history is written (streamed, one row group a month:
    ORDERS_IN_MEMORY forced low), read one row group at a time without a chunk size: the
    same bytes as the whole path, on polars and on DuckDB."""
    import sys

    import pyarrow.parquet as pq

    import segments.synth.generate  # noqa: F401  (the package exports a function of that name)
    from segments.synth.generate import generate

    monkeypatch.setattr(sys.modules["segments.synth.generate"], "ORDERS_IN_MEMORY", 200)
    ws = Workspace(tmp_path / "ws")
    generate(ws, customers=300, months=14, as_of=AS_OF, progress=False)
    assert pq.ParquetFile(ws.raw_table("orders")).num_row_groups >= 12
    monkeypatch.delenv(CHUNK_ROWS_ENV)
    for engine in ("polars", "duckdb"):
        monkeypatch.setenv("SEGMENTS_ENGINE", engine)
        whole, by_month = _both(ws, "alocenter", "offers", monkeypatch)
        assert len(whole) > 10 and whole == by_month
    assert taken == ["chunked", "chunked"]


def test_an_ingested_export_gives_the_whole_paths_bytes_read_in_chunks(
    tmp_path, monkeypatch, taken
):
    """A real export (CDNOW through segments ingest: its orders numbered in date order, its
    lines one file): read in 700-row chunks, the same bytes as the whole path."""
    from realexports import CDNOW

    from segments.ingest import ingest
    from segments.prepare.pseudonym import KEY_ENV_VAR

    if not CDNOW.exists():
        pytest.skip(f"{CDNOW} not found")
    examples = Path(__file__).resolve().parents[1] / "examples" / "cdnow"
    monkeypatch.setenv(KEY_ENV_VAR, "cd" * 32)
    ws = Workspace(tmp_path / "ws")
    ingest(CDNOW, examples / "mapping.toml", ws.root)
    policy = Policy.load(examples / "policy.toml")
    for purpose in ("statistics",):
        out = []
        for chunk in (False, True):
            monkeypatch.setattr(frames, "_CHUNKED", chunk)
            prepare(ws, policy, purpose, dt.date(1998, 6, 30))
            out.append(_digests(ws.prepared_dir(purpose)))
        assert len(out[0]) > 5 and out[0] == out[1], purpose
    assert taken == ["chunked"]


def test_lines_without_an_order_date_give_the_whole_paths_bytes(
    default_raw, tmp_path, monkeypatch, taken
):
    """A purpose whose lines drop the order date is written as one file, built from every
    kept order at once: the month files read back into one frame give the same bytes."""
    import dataclasses
    import types

    policy = Policy.load("alloffice")
    spec = policy.purpose("statistics")
    lines = tuple(c for c in spec.columns["lines"] if c != "order_date")
    spec = dataclasses.replace(spec, columns={**spec.columns, "lines": lines})
    purposes = types.MappingProxyType({**policy.purposes, "statistics": spec})
    policy = dataclasses.replace(policy, purposes=purposes)
    ws = _copy(default_raw, tmp_path / "ws")
    out = []
    for chunk in (False, True):
        monkeypatch.setattr(frames, "_CHUNKED", chunk)
        prepare(ws, policy, "statistics", AS_OF)
        out.append(_digests(ws.prepared_dir("statistics")))
    assert "lines.parquet" in out[0] and out[0] == out[1]
    assert taken == ["chunked"]


def test_orders_in_one_row_group_are_read_whole_unless_chunks_are_asked_for(
    default_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One row group is read whole by either path, so the chunked pass's copy, hash and month
    files would be pure cost: prepare skips it then, and takes it for more row groups or when
    a chunk size is asked for."""
    import pyarrow.parquet as pq

    ws = _copy(default_raw, tmp_path / "ws")
    orders = ws.raw_table("orders")
    assert pq.ParquetFile(orders).metadata.num_row_groups == 1
    monkeypatch.delenv(CHUNK_ROWS_ENV, raising=False)
    assert not chunked.worth_chunking(orders)
    monkeypatch.setenv(CHUNK_ROWS_ENV, "700")
    assert chunked.worth_chunking(orders)
    monkeypatch.delenv(CHUNK_ROWS_ENV)
    two = tmp_path / "two.parquet"
    pq.write_table(pq.read_table(orders), two, row_group_size=1000)
    assert chunked.worth_chunking(two)

    calls: list[int] = []
    original = chunked.read_by_month
    monkeypatch.setattr(
        chunked, "read_by_month", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    prepare(ws, Policy.load("alloffice"), "statistics", AS_OF)
    assert calls == []
