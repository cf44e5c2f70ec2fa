"""Issue 21: prepare's line-level join runs on the engine the setting selects, one month
partition at a time, and writes the same bytes on every engine; the pseudonyms are computed
on the driver, so the engine receives their sort ranks and never the key, a pseudonym or an
identifier."""

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
#: lines), date and the two keyed pseudonyms' sort ranks — no person key, no pseudonym (the
#: driver gathers the pseudonyms and the channel into the sorted lines itself).
ORDER_COLUMNS = {"order_id", "order_date", "_person_rank", "_order_rank"}


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


# --- the raw order lines, one file at a time ------------------------------------------------
def test_prepare_holds_one_month_of_prepared_lines_at_a_time(tmp_path, monkeypatch):
    """When a month's lines are built, every earlier month's frame is written and let go:
    neither the partition generator nor the writer still holds it (issue 21: the driver holds
    one month of prepared lines, not two)."""
    import weakref

    from segments import copy_default_dataset
    from segments.prepare import frames

    ws = Workspace(tmp_path / "ws")
    copy_default_dataset(ws)
    built: list[weakref.ref[pl.DataFrame]] = []
    alive: list[int] = []  # earlier months' frames still held when a month is built
    real = frames._LinePlan.build

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        alive.append(sum(ref() is not None for ref in built))
        out = real(self, *args, **kwargs)
        built.append(weakref.ref(out))
        return out

    monkeypatch.setattr(frames._LinePlan, "build", spy)
    prepare(ws, Policy.load("alloffice"), "statistics", AS_OF)
    assert len(built) >= 12 and alive == [0] * len(built), alive


def test_kept_orders_spilled_per_month_give_the_same_bytes_in_any_order(tmp_path, monkeypatch):
    """The kept orders are written one private file per month and read back per month
    (issue 21): the prepared files are the bytes the plan writes from the orders it holds,
    whether the orders come sorted by date or not, and the spill lies in prepare's scratch."""
    import dataclasses
    import shutil

    from segments import copy_default_dataset
    from segments.prepare import frames

    raw = Workspace(tmp_path / "raw")
    copy_default_dataset(raw)
    real = frames._LinePlan.spill
    spilled: list[int] = []

    def held(self, folder):  # type: ignore[no-untyped-def]
        return self

    def shuffled(self, folder):  # type: ignore[no-untyped-def]
        orders = self.orders.sample(fraction=1.0, shuffle=True, seed=3)
        assert not orders["order_date"].is_sorted()
        plan = real(dataclasses.replace(self, orders=orders), folder)
        spilled.append(len(plan.months))
        assert plan.orders.height == 0 and all(p.parent == folder for p in plan.months.values())
        return plan

    # the spill of the orders the run held whole (the path unusual raw orders take; the
    # chunked pass writes its month files itself: tests/test_prepare_chunked.py)
    monkeypatch.setattr(frames, "_CHUNKED", False)
    written = {}
    for label, spill in (("held", held), ("spilled", real), ("shuffled", shuffled)):
        ws = Workspace(tmp_path / label)
        shutil.copytree(raw.raw, ws.raw)
        monkeypatch.setattr(frames._LinePlan, "spill", spill)
        prepare(ws, Policy.load("alloffice"), "statistics", AS_OF)
        written[label] = _prepared(ws, "statistics")
    assert spilled and spilled[0] >= 12
    assert written["spilled"] == written["held"] == written["shuffled"]


def test_prepare_reads_the_raw_order_lines_one_file_at_a_time(tmp_path, monkeypatch):
    """Prepare's peak memory is bounded by a raw partition, not the history: no reader (the
    raw tables' loaders, the checks, the engine's join) is handed the whole raw lines table
    or more than one of its files at once; every file is read from prepare's private copy,
    each copied once."""
    import builtins
    import os

    from segments import copy_default_dataset

    ws = Workspace(tmp_path / "ws")
    copy_default_dataset(ws)
    table = ws.raw_table("order_lines")
    raw_files = sorted(table.rglob("*.parquet"))
    assert len(raw_files) >= 12
    reads: list[list[Path]] = []
    opened: list[Path] = []

    def files_of(source: object) -> list[Path]:
        items = source if isinstance(source, list | tuple) else [source]
        return [Path(str(p)) for p in items if isinstance(p, str | os.PathLike)]

    def spy(real):  # type: ignore[no-untyped-def]
        def read(source, *args, **kwargs):  # type: ignore[no-untyped-def]
            reads.append(files_of(source))
            return real(source, *args, **kwargs)

        return read

    real_open = builtins.open

    def spying_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(file, str | os.PathLike) and table in Path(file).parents:
            opened.append(Path(file))
        return real_open(file, *args, **kwargs)

    for name in ("read_parquet", "scan_parquet"):
        monkeypatch.setattr(pl, name, spy(getattr(pl, name)))
    monkeypatch.setattr(builtins, "open", spying_open)
    prepare(ws, Policy.load("alloffice"), "statistics", AS_OF)
    monkeypatch.undo()

    def raw_lines(path: Path) -> bool:
        return path == table or table in path.parents or "raw-order-lines" in path.parts

    lines_reads = [r for r in reads if any(raw_lines(p) for p in r)]
    assert lines_reads, "the spy saw no read of the order lines"
    assert all(len(r) == 1 for r in lines_reads), [len(r) for r in lines_reads if len(r) > 1]
    assert not [r for r in lines_reads if r[0] == table or table in r[0].parents]  # copies only
    # each raw file opened twice: hashed for the signed record, then copied (and hashed)
    assert sorted(opened) == sorted(raw_files * 2)


def _hand_made(tmp_path: Path, name: str = "ws") -> Workspace:
    """Hand-made raw tables whose order lines are two month partitions (orders 1 and 2 in
    May, order 3 in June; two lines each)."""
    from rawframes import AS_OF as RAW_AS_OF
    from rawframes import customer, raw_tables, write_raw

    may, june = RAW_AS_OF.replace(day=1) - dt.timedelta(days=20), RAW_AS_OF
    tables = raw_tables(
        [customer(1), customer(2)], [(1, 1, may), (2, 2, may), (3, 1, june)], lines_per_order=2
    )
    lines = tables.pop("order_lines")
    ws = write_raw(Workspace(tmp_path / name), tables)
    folder = ws.raw_table("order_lines")
    for month, orders in (("2026-05", [1, 2]), ("2026-06", [3])):
        (folder / f"month={month}").mkdir(parents=True)
        part = lines.filter(pl.col("order_id").is_in(orders))
        part.write_parquet(folder / f"month={month}" / "part-00000.parquet")
    return ws


def _rewrite(ws: Workspace, month: str, change) -> None:  # type: ignore[no-untyped-def]
    path = ws.raw_table("order_lines") / f"month={month}" / "part-00000.parquet"
    change(pl.read_parquet(path)).write_parquet(path)


def _june_takes(ws: Workspace, line: dict) -> None:  # type: ignore[type-arg]
    june = ws.raw_table("order_lines") / "month=2026-06" / "part-00000.parquet"
    frame = pl.read_parquet(june)
    pl.concat([frame, pl.DataFrame([line], schema=frame.schema)]).write_parquet(june)


def test_an_order_whose_lines_span_two_raw_files_is_counted_and_joined_whole(tmp_path):
    from rawframes import AS_OF as RAW_AS_OF
    from test_prepare import KEY

    ws = _hand_made(tmp_path)
    _june_takes(
        ws, {"order_id": 1, "line_no": 3, "product_id": 4, "quantity": 1, "unit_price_sek": 25.0}
    )
    report = prepare(ws, "alloffice", "statistics", RAW_AS_OF, key=KEY)
    assert report.input_counts["lines"] == 7 and report.output_counts["lines"] == 7
    lines = pl.read_parquet(ws.prepared_dir("statistics") / "lines.parquet" / "month=2026-05")
    assert lines.height == 5  # order 1's third line, from June's file, in May's partition


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            {"order_id": 1, "line_no": 2, "product_id": 4, "quantity": 1, "unit_price_sek": 25.0},
            r"table 'order_lines', columns \('order_id', 'line_no'\): rule 'unique key'.*"
            r"'order_id': 1, 'line_no': 2",
        ),
        (
            {"order_id": 99, "line_no": 1, "product_id": 4, "quantity": 1, "unit_price_sek": 25.0},
            r"table 'order_lines', column 'order_id': rule 'references orders'.*first: 99",
        ),
        (
            {"order_id": 3, "line_no": 9, "product_id": 404, "quantity": 1, "unit_price_sek": 25.0},
            r"column 'product_id': rule 'references products'.*first: 404",
        ),
    ],
    ids=["key-repeated-in-another-file", "orphan-order", "orphan-product"],
)
def test_attack_a_bad_line_in_another_raw_file_is_refused_and_nothing_written(
    tmp_path, line, message
):
    """Each file is checked alone, so the one check that spans files — a line's key
    repeated in a second file — is made from the orders the files share; foreign keys hold
    in every file."""
    from rawframes import AS_OF as RAW_AS_OF
    from test_prepare import KEY

    from segments.exceptions import SchemaError

    ws = _hand_made(tmp_path)
    _june_takes(ws, line)
    with pytest.raises(SchemaError, match=message):
        prepare(ws, "alloffice", "statistics", RAW_AS_OF, key=KEY)
    assert not ws.prepared.exists() or not any(ws.prepared.iterdir())
    assert not ws.private.exists() or not any(ws.private.iterdir())  # no copy left behind


def test_an_extra_column_in_one_raw_lines_file_names_the_column_and_the_file(tmp_path):
    """r21 LOW 6: an undeclared column in one of the table's files is refused naming that
    column (not the table) under the rule, and the raw file it is in; nothing written."""
    from rawframes import AS_OF as RAW_AS_OF
    from test_prepare import KEY

    from segments.exceptions import SchemaError

    ws = _hand_made(tmp_path)
    _rewrite(ws, "2026-06", lambda frame: frame.with_columns(pl.lit("x").alias("note")))
    june = ws.raw_table("order_lines") / "month=2026-06" / "part-00000.parquet"
    with pytest.raises(SchemaError) as refused:
        prepare(ws, "alloffice", "statistics", RAW_AS_OF, key=KEY)
    message = str(refused.value)
    assert message.startswith("table 'order_lines', column 'note': rule 'column_in_schema'")
    assert "fix: drop the column, or declare it in segments.schema" in message
    assert message.endswith(f"(in file {june})") and "\n" not in message
    assert not ws.prepared.exists() or not any(ws.prepared.iterdir())


def test_attack_raw_lines_swapped_after_prepare_hashed_them_are_refused(tmp_path, monkeypatch):
    """The lines prepare validates and joins are its private copies, whose digests must be
    the ones its signed record names: bytes swapped in W/raw after prepare hashed it (here:
    the record's digest of June's file is another's) are refused, nothing written."""
    from rawframes import AS_OF as RAW_AS_OF
    from test_prepare import KEY

    import segments.provenance as provenance
    from segments.exceptions import WorkspaceError

    ws = _hand_made(tmp_path)
    real = provenance.raw_hashes

    def hashed_before_the_swap(workspace):  # type: ignore[no-untyped-def]
        digests = real(workspace)
        digests["order_lines.parquet/month=2026-06/part-00000.parquet"] = "0" * 64
        return digests

    monkeypatch.setattr(provenance, "raw_hashes", hashed_before_the_swap)
    with pytest.raises(WorkspaceError, match=r"month=2026-06.*changed while prepare read W/raw"):
        prepare(ws, "alloffice", "statistics", RAW_AS_OF, key=KEY)
    assert not ws.prepared.exists() or not any(ws.prepared.iterdir())
    monkeypatch.undo()
    prepare(ws, "alloffice", "statistics", RAW_AS_OF, key=KEY)  # the same data, not swapped


def test_attack_a_raw_lines_file_removed_after_prepare_hashed_it_is_refused(tmp_path, monkeypatch):
    """r21 #1: after prepare hashed W/raw, a writer moves June's lines file away (and drops
    it from the manifest): the record would name a file whose lines the frames lack. The
    files read must be the files hashed: refused, nothing written."""
    from rawframes import AS_OF as RAW_AS_OF
    from test_prepare import KEY

    import segments.provenance as provenance
    from segments.exceptions import WorkspaceError
    from segments.workspace import write_json

    ws = _hand_made(tmp_path)
    june = "order_lines.parquet/month=2026-06/part-00000.parquet"
    real = provenance.raw_hashes

    def hashed_then_removed(workspace):  # type: ignore[no-untyped-def]
        digests = real(workspace)
        assert june in digests
        (ws.raw / june).rename(tmp_path / "june.parquet")
        manifest = ws.read_manifest() if ws.manifest.exists() else None
        if manifest is not None and june in manifest.get("files", {}):
            del manifest["files"][june]
            write_json(ws.manifest, manifest)
        return digests

    monkeypatch.setattr(provenance, "raw_hashes", hashed_then_removed)
    with pytest.raises(WorkspaceError, match=r"month=2026-06.*removed while prepare read W/raw"):
        prepare(ws, "alloffice", "statistics", RAW_AS_OF, key=KEY)
    assert not ws.prepared.exists() or not any(ws.prepared.iterdir())


def test_orders_shared_by_raw_files_are_found_sorted_or_not():
    """The cross-file check and the summed counts rest on the orders found in more than one
    file: found by sorting, the same whether the files come in key order or not."""
    from segments.prepare.raw_lines import shared_orders

    ids = pl.Series("order_id", [1, 2, 3, 3, 4, 5, 5, 5, 6])  # file order: sorted
    assert shared_orders(ids).sort().to_list() == [3, 5]
    shuffled = pl.Series("order_id", [5, 3, 1, 6, 5, 2, 3, 4, 5])
    assert shared_orders(shuffled).sort().to_list() == [3, 5]
    assert shared_orders(pl.Series("order_id", [4, 1, 2], dtype=pl.Int64)).len() == 0


def test_an_order_whose_lines_three_raw_files_share_is_counted_once(tmp_path):
    """An order split over three files (not in key order) is counted with all its lines,
    once, and every other order keeps its own count."""
    from rawframes import AS_OF as RAW_AS_OF
    from test_prepare import KEY

    ws = _hand_made(tmp_path)
    folder = ws.raw_table("order_lines") / "month=2026-06"
    third = {"order_id": 1, "line_no": 4, "product_id": 4, "quantity": 1, "unit_price_sek": 5.0}
    _june_takes(
        ws, {"order_id": 1, "line_no": 3, "product_id": 4, "quantity": 1, "unit_price_sek": 25.0}
    )
    june = pl.read_parquet(folder / "part-00000.parquet")
    pl.DataFrame([third], schema=june.schema).write_parquet(folder / "part-00001.parquet")
    report = prepare(ws, "alloffice", "statistics", RAW_AS_OF, key=KEY)
    assert report.input_counts["lines"] == 8 and report.output_counts["lines"] == 8
    may = pl.read_parquet(ws.prepared_dir("statistics") / "lines.parquet" / "month=2026-05")
    assert may.height == 6  # order 1's four lines and order 2's two


def test_a_foreign_key_check_against_a_larger_parent_names_the_same_orphans():
    """check_foreign_key cuts a larger parent to the child's values first: the orphans it
    counts and the first one it names are those of the plain anti-join."""
    from segments.exceptions import SchemaError
    from segments.schema import check_foreign_key

    parent = pl.DataFrame({"order_id": list(range(1, 1001))})
    child = pl.DataFrame({"order_id": [5, 2000, 7, 1500, 2000, None]})
    with pytest.raises(SchemaError, match=r"fails for 3 value\(s\) \(first: 1500\)"):
        check_foreign_key(child, "order_lines", parent, "orders", "order_id")
    check_foreign_key(child.head(3).filter(pl.col("order_id") < 1000), "x", parent, "y", "order_id")
    narrow = parent.cast({"order_id": pl.Int32})  # another dtype: the plain anti-join path
    with pytest.raises(SchemaError, match=r"fails for 3 value\(s\)"):
        check_foreign_key(child, "order_lines", narrow, "orders", "order_id")


@pytest.mark.parametrize(
    "counted",
    [
        [1, 3, 5, 7, 9],  # every order, in key order: the binary search
        [1, 5, 9, 11],  # some orders without lines, a count of no order: the search
        [0, 1, 2],  # below and inside the ids: the search
        [9, 1, 5],  # not in key order: the hash join
    ],
)
def test_orders_carry_their_line_counts_whichever_order_the_counts_come_in(counted):
    """Each order's line count is found by binary search when the counts come in key order
    (issue 21: no hash table of every order), by a join otherwise; both give each order its
    own count and 0 to an order without lines."""
    from segments.prepare import frames

    orders = pl.DataFrame(
        {
            "order_id": [5, 1, 3, 9, 7],
            "customer_id": [1, 2, 1, 3, 2],
            "order_date": [dt.date(2026, 1, d) for d in (5, 1, 3, 9, 7)],
            "channel": ["web", "store", "web", "phone", "web"],
        }
    )
    roots = pl.DataFrame({"customer_id": [1, 2, 3], "person_root": [1, 2, 1]})
    n_lines = pl.DataFrame(
        {"order_id": counted, "n_lines": [10 * i + 2 for i in counted]},
        schema={"order_id": pl.Int64, "n_lines": pl.UInt32},
    )
    out = frames._orders_with_persons(orders, n_lines, roots).sort("order_id")
    expected = {i: (10 * i + 2 if i in counted else 0) for i in (1, 3, 5, 7, 9)}
    assert dict(zip(out["order_id"], out["n_lines"], strict=True)) == expected
    assert out["person_root"].to_list() == [2, 1, 1, 2, 1]
    assert out.columns == ["order_id", "person_root", "order_date", "channel", "n_lines"]


def test_prepare_holds_no_raw_account_while_it_writes(tmp_path, monkeypatch):
    """The raw accounts (names, e-mail, street, phone, personnummer) are let go once the
    persons are built: when the prepared frames are written, no frame with a raw account's
    direct identifier is alive (issue 21: the driver holds no raw account through the write;
    AL-5)."""
    import gc
    import weakref

    from segments import copy_default_dataset
    from segments.prepare import frames

    ws = Workspace(tmp_path / "ws")
    copy_default_dataset(ws)
    held: list[weakref.ref[pl.DataFrame]] = []
    real_link, real_write = frames.link_persons, frames._write_atomically

    def link(accounts):  # type: ignore[no-untyped-def]
        held.append(weakref.ref(accounts))
        return real_link(accounts)

    alive: list[int] = []

    def write(*args, **kwargs):  # type: ignore[no-untyped-def]
        gc.collect()
        alive.append(sum(ref() is not None for ref in held))
        return real_write(*args, **kwargs)

    monkeypatch.setattr(frames, "link_persons", link)
    monkeypatch.setattr(frames, "_write_atomically", write)
    prepare(ws, Policy.load("alloffice"), "statistics", AS_OF)
    assert held and alive == [0], alive


@pytest.mark.parametrize("chunk_rows", [None, "700"], ids=["whole", "chunked"])
def test_prepare_lets_the_persons_go_before_the_months_are_built(tmp_path, monkeypatch, chunk_rows):
    """Issue 21 (prepare's resident floor under the month build): when a month's lines are
    built, neither the persons as linked (what the rules cut) nor the prepared customers'
    frame (written first) is alive; on the chunked path the raw accounts (every identifier
    column) are let go before the persons are built, not held by the monthly orders."""
    import gc
    import weakref

    from segments import copy_default_dataset
    from segments.prepare import chunked, frames

    if chunk_rows is None:
        monkeypatch.delenv(chunked.CHUNK_ROWS_ENV, raising=False)
        monkeypatch.setattr(frames, "_CHUNKED", False)
    else:
        monkeypatch.setenv(chunked.CHUNK_ROWS_ENV, chunk_rows)
    ws = Workspace(tmp_path / "ws")
    copy_default_dataset(ws)
    refs: dict[str, weakref.ref[pl.DataFrame]] = {}
    seen: list[tuple[str, ...]] = []
    real_link, real_persons = frames.link_persons, frames._persons
    real_pseudonymise, real_build = frames._pseudonymise, frames._LinePlan.build

    def alive() -> tuple[str, ...]:
        gc.collect()
        return tuple(sorted(name for name, ref in refs.items() if ref() is not None))

    def link(accounts):  # type: ignore[no-untyped-def]
        refs.setdefault("raw accounts", weakref.ref(accounts))  # the first: every column
        return real_link(accounts)

    def persons(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(("persons start", *alive()))
        out = real_persons(*args, **kwargs)
        refs["persons"] = weakref.ref(out)
        return out

    def pseudonymise(*args, **kwargs):  # type: ignore[no-untyped-def]
        customers, plan = real_pseudonymise(*args, **kwargs)
        refs["customers"] = weakref.ref(customers)
        return customers, plan

    def build(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(("build", *alive()))
        return real_build(self, *args, **kwargs)

    monkeypatch.setattr(frames, "link_persons", link)
    monkeypatch.setattr(frames, "_persons", persons)
    monkeypatch.setattr(frames, "_pseudonymise", pseudonymise)
    monkeypatch.setattr(frames._LinePlan, "build", build)
    report = prepare(ws, Policy.load("alloffice"), "statistics", AS_OF)
    assert report.output_counts["lines"] > 0
    builds = [s for s in seen if s[0] == "build"]
    assert builds and all(s == ("build",) for s in builds), seen
    if chunk_rows is not None:  # the whole path links the accounts it passes on
        assert ("persons start",) in seen, seen


def test_raw_orders_in_any_row_order_give_the_same_prepared_bytes(tmp_path):
    """A raw lines file's order months are found by binary search when the raw orders come
    in key order (as generated), by a probe of every order otherwise (issue 21): raw orders
    shuffled give the bytes the sorted ones give (every file but the signed record)."""
    import hashlib

    from rawframes import rewrite_raw

    from segments import copy_default_dataset

    digests = []
    for shuffled in (False, True):
        ws = Workspace(tmp_path / f"ws{shuffled}")
        copy_default_dataset(ws)
        if shuffled:
            orders = pl.read_parquet(ws.raw_table("orders"))
            rewrite_raw(ws, "orders", orders.sample(fraction=1.0, shuffle=True, seed=3))
            assert not pl.read_parquet(ws.raw_table("orders"))["order_id"].is_sorted()
        prepare(ws, Policy.load("alloffice"), "statistics", AS_OF)
        out = ws.prepared_dir("statistics")
        digests.append(
            {
                p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(out.rglob("*"))
                if p.is_file() and p.name != "provenance.json"
            }
        )
    assert len(digests[0]) > 3 and digests[0] == digests[1]
