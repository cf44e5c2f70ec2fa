"""Tests of segments.prepare.raw_rewrite: the purge and the erasure rewrite the raw order lines
one partition file at a time (issue 21), and write the bytes the whole-table rewrite wrote.

The reference is the whole-table path the purge and the erasure took before: the lines read
whole (``load_raw_tables``), the rows that stay chosen as it chose them (each order joined
with its whole person row; the flagged persons' orders), staged by ``stage_partitions``
(which history still uses).
Each test compares every partition file's bytes, the manifest's digests and row counts and
the log's digests with it, and checks that no frame of more lines than one file is built.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from rawframes import customer, raw_tables, write_raw

from segments._tables import read_table, reads_bound_to
from segments.exceptions import SchemaError
from segments.policy import Policy
from segments.prepare.frames import (
    link_persons,
    load_raw_tables,
    person_anchor,
    person_table,
    row_anchor,
)
from segments.prepare.pseudonym import KEY_ENV_VAR
from segments.prepare.retention import _keep, purge, stage_partitions
from segments.prepare.subjects import erase, flagged_persons
from segments.workspace import Workspace, raw_hashed_once, raw_hashes, sha256_file, write_json

LINES = "order_lines"
#: A steward's key: the public demo key would have the raw data proven synthetic first (a
#: proof that regenerates and compares the data, outside what these tests measure).
KEY = "the steward's key of these tests, 32 bytes or more"


@pytest.fixture(autouse=True)
def _no_steward_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV_VAR, raising=False)


@pytest.fixture
def ws(small_raw: Workspace, tmp_path: Path) -> Workspace:
    """A copy of the small generated workspace (24 month partitions of order lines)."""
    root = tmp_path / "ws"
    shutil.copytree(small_raw.root, root)
    return Workspace(root)


def _files(table: Path) -> dict[str, bytes]:
    """Every partition file of a partitioned table (or staging folder), by relative path."""
    files = sorted(table.rglob("*.parquet"))
    return {p.relative_to(table).as_posix(): p.read_bytes() for p in files}


def _largest_file(ws: Workspace) -> int:
    return max(pl.read_parquet(p).height for p in ws.raw_table(LINES).rglob("*.parquet"))


@pytest.fixture
def bounded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Record the height of every frame of order lines polars reads or concatenates: a
    rewrite one file at a time never builds one larger than the largest file."""
    heights: list[int] = []
    real_read, real_concat = pl.read_parquet, pl.concat

    def seen(frame: Any) -> Any:
        if isinstance(frame, pl.DataFrame) and {"line_no", "quantity"} <= set(frame.columns):
            heights.append(frame.height)
        return frame

    monkeypatch.setattr(pl, "read_parquet", lambda *a, **k: seen(real_read(*a, **k)))
    monkeypatch.setattr(pl, "concat", lambda *a, **k: seen(real_concat(*a, **k)))
    yield heights


def _record(ws: Workspace, table: str, path: Path) -> None:
    """Record ``path``'s digest in the manifest, as the writer of W/raw/ would have."""
    manifest = json.loads(ws.manifest.read_text(encoding="utf-8"))
    manifest["files"][path.relative_to(ws.raw).as_posix()] = sha256_file(path)
    write_json(ws.manifest, manifest)


def _whole_retained(
    policy: Policy, frames: dict[str, pl.DataFrame], as_of: dt.date
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The accounts and orders a purge keeps, decided as the whole-table purge decided them
    (every order joined with its whole person row)."""
    persons = person_table(frames["customers"], frames["orders"])
    roots = link_persons(frames["customers"])
    orders = frames["orders"].join(roots, on="customer_id").join(persons, on="person_root")
    person_keep = pl.lit(False)
    order_keep = pl.lit(False)
    for purpose in policy.purposes.values():
        in_customer = _keep(purpose.rules_for("customer"), as_of, person_anchor)
        person_keep = person_keep | in_customer
        order_keep = order_keep | (
            in_customer & _keep(purpose.rules_for("transactions"), as_of, row_anchor)
        )
    kept_roots = persons.filter(person_keep).select("person_root")
    kept_accounts = roots.join(kept_roots, on="person_root", how="semi").select("customer_id")
    return kept_accounts, orders.filter(order_keep).select("order_id")


def _expected(ws: Workspace, policy: str, day: dt.date, tmp: Path) -> tuple[dict, dict, int]:
    """The whole-table path: the order lines a purge keeps (after erasing the flagged
    persons), staged as partitions by ``stage_partitions``; with the lines it removes by
    retention and the lines it erases."""
    frames = load_raw_tables(ws, day)
    accounts = [a for group in flagged_persons(frames["customers"]).values() for a in group]
    gone = pl.col("customer_id").is_in(accounts)
    erased_orders = frames["orders"].filter(gone)["order_id"].implode()
    erased_lines = frames[LINES].filter(pl.col("order_id").is_in(erased_orders)).height
    frames = {
        **frames,
        "customers": frames["customers"].filter(~gone),
        "orders": frames["orders"].filter(~gone),
        LINES: frames[LINES].filter(~pl.col("order_id").is_in(erased_orders)),
    }
    kept_accounts, kept_orders = _whole_retained(Policy.load(policy), frames, day)
    kept = frames[LINES].join(kept_orders, on="order_id", how="semi")
    removed = {
        "customers": frames["customers"].join(kept_accounts, on="customer_id", how="anti").height,
        "orders": frames["orders"].join(kept_orders, on="order_id", how="anti").height,
        LINES: frames[LINES].height - kept.height,
    }
    return _staged(ws, kept, tmp), removed, erased_lines


def _staged(ws: Workspace, lines: pl.DataFrame, tmp: Path) -> dict[str, bytes]:
    staging = tmp / "reference"
    shutil.rmtree(staging, ignore_errors=True)
    with raw_hashed_once(), reads_bound_to(ws.raw, raw_hashes(ws)):
        stage_partitions(ws.raw_table(LINES), lines, staging)
    return _files(staging)


def _check_written(ws: Workspace, expected: dict[str, bytes], before: dict[str, bytes]) -> None:
    """W/raw/'s order lines are ``expected`` byte for byte; the manifest lists each file's
    digest and their row count; a file whose rows all stayed kept its bytes."""
    table = ws.raw_table(LINES)
    written = _files(table)
    assert sorted(written) == sorted(expected)
    assert written == expected
    manifest = json.loads(ws.manifest.read_text(encoding="utf-8"))
    listed = {k: v for k, v in manifest["files"].items() if k.startswith(f"{LINES}.parquet/")}
    assert listed == {f"{LINES}.parquet/{n}": sha256_file(table / n) for n in written}
    assert manifest["row_counts"][LINES] == read_table(table).height
    for name, data in written.items():  # a file whose rows all stayed: its bytes unchanged
        if name in before and pl.read_parquet(before[name]).height == pl.read_parquet(data).height:
            assert data == before[name], name


_POLICIES = [
    ("alloffice", dt.date(2026, 10, 31)),
    ("alloffice", dt.date(2027, 9, 30)),  # whole months emptied
    ("allkontor", dt.date(2027, 3, 31)),
    ("offix", dt.date(2026, 12, 31)),
    ("allcall", dt.date(2027, 6, 30)),
    ("alocenter", dt.date(2026, 10, 31)),
]


@pytest.mark.parametrize(("policy", "day"), _POLICIES)
def test_purge_writes_the_whole_table_paths_bytes_one_file_at_a_time(
    ws: Workspace, tmp_path: Path, bounded: list[int], policy: str, day: dt.date
) -> None:
    before = _files(ws.raw_table(LINES))
    expected, removed, erased = _expected(ws, policy, day, tmp_path)
    assert erased > 0  # the generated data flags persons for erasure: they go first
    largest = _largest_file(ws)
    bounded.clear()
    preview = purge(ws, policy, day, dry_run=True, key=KEY)
    result = purge(ws, policy, day, key=KEY)  # erases the flagged persons first
    assert bounded and max(bounded) <= largest  # never the lines whole
    for counted in (preview, result):
        assert dict(counted.removed) == removed
        assert counted.erased_rows[LINES] == erased
    _check_written(ws, expected, before)
    log = json.loads((ws.raw / "purge_log.json").read_text(encoding="utf-8"))[-1]
    assert log["rows_removed"] == removed
    assert log["rows_remaining"][LINES] == read_table(ws.raw_table(LINES)).height
    assert purge(ws, policy, day, key=KEY).total_removed == 0  # idempotent


def test_purge_with_an_empty_month_and_an_order_split_across_two_files(
    ws: Workspace, tmp_path: Path, bounded: list[int]
) -> None:
    """An empty partition (it goes, as it went before) and one month's lines in two files,
    an order cut between them (the key checked across the two files)."""
    table = ws.raw_table(LINES)
    months = sorted(p for p in table.iterdir() if p.is_dir())
    manifest = json.loads(ws.manifest.read_text(encoding="utf-8"))
    # an empty month in the middle of the history
    empty = table / "month=2010-01" / "part-00000.parquet"
    empty.parent.mkdir()
    pl.read_parquet(next(months[0].glob("*.parquet"))).clear().write_parquet(empty)
    # a month whose lines are written as two files, cutting an order's lines in two
    middle = months[len(months) // 2]
    (whole,) = middle.glob("*.parquet")
    lines = pl.read_parquet(whole)
    ids = lines["order_id"]
    cut = next(i for i in range(1, lines.height) if ids[i] == ids[i - 1])
    del manifest["files"][whole.relative_to(ws.raw).as_posix()]
    whole.unlink()
    lines.head(cut).write_parquet(middle / "part-00000.parquet")
    lines.slice(cut).write_parquet(middle / "part-00001.parquet")
    write_json(ws.manifest, manifest)
    for path in (empty, middle / "part-00000.parquet", middle / "part-00001.parquet"):
        _record(ws, LINES, path)
    before = _files(table)
    day = dt.date(2027, 3, 31)
    expected, removed, _ = _expected(ws, "alloffice", day, tmp_path)
    assert "month=2010-01/part-00000.parquet" not in expected
    largest = _largest_file(ws)
    bounded.clear()
    preview = purge(ws, "alloffice", day, dry_run=True, key=KEY)
    result = purge(ws, "alloffice", day, key=KEY)
    assert max(bounded) <= largest
    assert preview.removed == result.removed
    assert dict(result.removed) == removed
    _check_written(ws, expected, before)


def test_purge_refuses_a_key_repeated_across_two_files(ws: Workspace) -> None:
    table = ws.raw_table(LINES)
    first = sorted(table.rglob("*.parquet"))[0]
    extra = first.parent / "part-09999.parquet"
    pl.read_parquet(first).head(1).write_parquet(extra)
    _record(ws, LINES, extra)
    before = _files(table)
    repeated = r"table 'order_lines', columns \('order_id', 'line_no'\)"
    with pytest.raises(SchemaError, match=repeated):
        purge(ws, "alloffice", dt.date(2027, 9, 30), key=KEY)
    assert _files(table) == before and not (ws.raw / "purge_log.json").exists()


def test_purge_names_the_file_whose_lines_break_the_schema(ws: Workspace) -> None:
    table = ws.raw_table(LINES)
    last = sorted(table.rglob("*.parquet"))[-1]
    lines = pl.read_parquet(last)
    lines.with_columns(quantity=pl.lit(-1, lines.schema["quantity"])).write_parquet(last)
    _record(ws, LINES, last)
    with pytest.raises(SchemaError, match=rf"table 'order_lines', column 'quantity'.*{last}"):
        purge(ws, "alloffice", dt.date(2026, 10, 31), key=KEY)
    assert not (ws.raw / "purge_log.json").exists()


def test_purge_refuses_a_file_that_is_not_parquet_in_one_line(ws: Workspace) -> None:
    table = ws.raw_table(LINES)
    last = sorted(table.rglob("*.parquet"))[-1]
    last.write_bytes(b"not a parquet file")
    _record(ws, LINES, last)  # a writer that recorded what it wrote
    before = _files(table)
    with pytest.raises(SchemaError, match=rf"table 'order_lines': cannot read {last} as Parquet"):
        purge(ws, "alloffice", dt.date(2026, 10, 31), key=KEY)
    assert _files(table) == before and not (ws.raw / "purge_log.json").exists()


def test_purge_emptying_every_month_keeps_the_last_one_empty(ws: Workspace, tmp_path: Path) -> None:
    day = dt.date(2035, 1, 1)  # past every order's 24 months (AO-6)
    expected, removed, _ = _expected(ws, "alloffice", day, tmp_path)
    assert len(expected) == 1 and pl.read_parquet(next(iter(expected.values()))).height == 0
    result = purge(ws, "alloffice", day, key=KEY)
    assert dict(result.removed) == removed and result.remaining[LINES] == 0
    table = ws.raw_table(LINES)
    assert _files(table) == expected
    assert json.loads(ws.manifest.read_text(encoding="utf-8"))["row_counts"][LINES] == 0


def _sole_trader(ws: Workspace) -> list[int]:
    """The two accounts (private and business) of one sole trader with orders."""
    customers = pl.read_parquet(ws.raw_table("customers"))
    roots = link_persons(customers)
    linked = roots.filter(pl.col("person_root").is_duplicated())
    root = linked["person_root"][0]
    return sorted(roots.filter(pl.col("person_root") == root)["customer_id"].to_list())


def _without_orders(ws: Workspace) -> list[int]:
    """The one account of a person with no order at all."""
    customers = pl.read_parquet(ws.raw_table("customers"))
    roots = link_persons(customers)
    ordered = pl.read_parquet(ws.raw_table("orders"))["customer_id"].unique().implode()
    alone = roots.filter(
        ~pl.col("person_root").is_duplicated() & ~pl.col("customer_id").is_in(ordered)
    )
    return [int(alone["customer_id"][0])]


def _alone_in_a_file(ws: Workspace) -> list[int]:
    """A sole trader whose lines of one month are written as a file of their own (the
    month's other lines in another): the erasure empties that file, which goes."""
    accounts = _sole_trader(ws)
    orders = pl.read_parquet(ws.raw_table("orders"))
    theirs = orders.filter(pl.col("customer_id").is_in(accounts))["order_id"].implode()
    manifest = json.loads(ws.manifest.read_text(encoding="utf-8"))
    for month in sorted(p for p in ws.raw_table(LINES).iterdir() if p.is_dir()):
        (whole,) = month.glob("*.parquet")
        lines = pl.read_parquet(whole)
        mine = pl.col("order_id").is_in(theirs)
        if lines.filter(mine).height:
            del manifest["files"][whole.relative_to(ws.raw).as_posix()]
            whole.unlink()
            lines.filter(~mine).write_parquet(month / "part-00000.parquet")
            lines.filter(mine).write_parquet(month / "part-00001.parquet")
            write_json(ws.manifest, manifest)
            for path in sorted(month.glob("*.parquet")):
                _record(ws, LINES, path)
            return accounts
    raise AssertionError("the sole trader has no lines")  # pragma: no cover


@pytest.mark.parametrize("person", [_sole_trader, _without_orders, _alone_in_a_file])
def test_erasure_writes_the_whole_table_paths_bytes_one_file_at_a_time(
    ws: Workspace, tmp_path: Path, bounded: list[int], person: Any
) -> None:
    accounts = person(ws)
    orders = pl.read_parquet(ws.raw_table("orders"))
    gone = orders.filter(pl.col("customer_id").is_in(accounts))["order_id"]
    lines = read_table(ws.raw_table(LINES))
    erased = lines.filter(pl.col("order_id").is_in(gone.implode())).height
    assert (erased > 0) == (person is not _without_orders)
    expected = _staged(ws, lines.filter(~pl.col("order_id").is_in(gone.implode())), tmp_path)
    before = _files(ws.raw_table(LINES))
    if person is _alone_in_a_file:
        assert len(expected) == len(before) - 1  # the file of theirs alone goes
    largest = _largest_file(ws)
    del lines
    bounded.clear()
    done = erase(ws, "alloffice", accounts[-1], key=KEY, today=dt.date(2026, 11, 2))
    assert max(bounded, default=0) <= largest  # (a file that loses nothing is not parsed)
    assert done.rows.get(f"raw/{LINES}.parquet", 0) == erased
    assert done.rows.get("raw/orders.parquet", 0) == gone.len()
    assert done.rows["raw/customers.parquet"] == len(accounts)
    _check_written(ws, expected, before)
    unchanged = sum(before.get(n) == data for n, data in expected.items())
    assert unchanged >= len(before) - len(gone) - 1  # only the months of their orders


def test_erasure_of_a_table_stored_as_one_file(tmp_path: Path) -> None:
    """Lines stored as one file (an ingested export's): rewritten whole, as before."""
    cs = [customer(1), customer(2), customer(3)]
    day = dt.date(2026, 10, 1)
    orders = [(1, 1, day), (2, 2, day), (3, 1, day), (4, 3, day)]
    ws = write_raw(Workspace(tmp_path / "ws"), raw_tables(cs, orders, lines_per_order=3))
    lines = pl.read_parquet(ws.raw_table(LINES))
    expected = tmp_path / "expected.parquet"
    lines.filter(~pl.col("order_id").is_in([1, 3])).write_parquet(expected)
    done = erase(ws, "alloffice", 1, key=KEY)
    assert done.rows[f"raw/{LINES}.parquet"] == 6
    assert ws.raw_table(LINES).read_bytes() == expected.read_bytes()
    manifest = json.loads(ws.manifest.read_text(encoding="utf-8"))
    assert manifest["files"][f"{LINES}.parquet"] == sha256_file(expected)
    assert manifest["row_counts"][LINES] == 6
