"""The engine layer (segments.engine): every backend gives the same per-person frames, reads
only the partitions a window needs, spills only into the workspace's private area, and is
chosen by one setting."""

from __future__ import annotations

import contextlib
import datetime as dt
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import polars as pl
import pytest
from engine_helpers import record_aggregate_plans
from polars.testing import assert_frame_equal
from release_helpers import release_context

from segments._tables import scan_table
from segments.engine import choose_engine, get_engine, line_files, memory_budget
from segments.engine.embedded import DuckDBEngine
from segments.engine.inmemory import PolarsEngine
from segments.exceptions import PolicyError, SchemaError, WorkspaceError
from segments.policy import Policy
from segments.privacy.releases import build_shared_frames
from segments.privacy.specs import PrivacyParams, SegmentSource
from segments.schema import CHANNELS, PRODUCT_CATEGORIES
from segments.workspace import Workspace

ENGINES = (PolarsEngine(), DuckDBEngine(memory_limit=256 * 2**20, threads=2))
AS_OF = dt.date(2026, 10, 31)


@pytest.fixture(scope="module")
def default_lines(tmp_path_factory) -> Path:
    """The committed default dataset prepared for statistics: its lines.parquet."""
    from segments import copy_default_dataset, prepare

    ws = Workspace(tmp_path_factory.mktemp("engine-default"))
    copy_default_dataset(ws)
    prepare(ws, Policy.load("alloffice"), "statistics", AS_OF)
    return ws.prepared_dir("statistics") / "lines.parquet"


def _lines(rows: list[tuple[str, str, dt.date, str, float, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "person_id": pl.Utf8,
            "order_id": pl.Utf8,
            "order_date": pl.Date,
            "category": pl.Utf8,
            "amount_sek": pl.Float64,
            "quantity": pl.Int32,
        },
        orient="row",
    )


@pytest.mark.parametrize("by_month", [False, True])
@pytest.mark.parametrize(
    "window", [None, (dt.date(2026, 9, 1), dt.date(2026, 10, 1))], ids=["all", "september"]
)
def test_backends_give_identical_cells_and_orders_on_the_default_data(
    default_lines, tmp_path, window, by_month
):
    polars_engine, duck = ENGINES
    expected = polars_engine.person_cells(
        default_lines, window, PRODUCT_CATEGORIES, by_month=by_month, scratch=tmp_path
    )
    got = duck.person_cells(
        default_lines, window, PRODUCT_CATEGORIES, by_month=by_month, scratch=tmp_path
    )
    assert expected.height > 1000
    assert_frame_equal(got, expected)
    # at most one row per public category (and month) per person leaves the engine
    per = ["person_id", "month"] if by_month else ["person_id"]
    assert expected.group_by(per).len()["len"].max() <= len(PRODUCT_CATEGORIES)
    assert_frame_equal(
        duck.person_orders(default_lines, window, scratch=tmp_path),
        polars_engine.person_orders(default_lines, window, scratch=tmp_path),
    )


@pytest.mark.parametrize("by_month", [False, True])
def test_streamed_cell_batches_are_the_cells_and_each_is_bounded(
    default_lines, tmp_path, monkeypatch, by_month
):
    """Issue 21: a release takes the cells as batches (keyed per batch, so the frame of
    64-character pseudonyms is never whole on the driver). DuckDB streams several Arrow
    batches; together they are exactly person_cells, each a checked CELL_SCHEMA frame within
    the public bound; a category outside the public list is refused from the batches too."""
    import segments.engine.embedded as embedded

    monkeypatch.setattr(embedded, "CELL_BATCH_ROWS", 5_000)
    order = ["person_id", "month", "category"] if by_month else ["person_id", "category"]
    for engine in ENGINES:
        batches = list(
            engine.person_cell_batches(
                default_lines, None, PRODUCT_CATEGORIES, by_month=by_month, scratch=tmp_path
            )
        )
        whole = engine.person_cells(
            default_lines, None, PRODUCT_CATEGORIES, by_month=by_month, scratch=tmp_path
        )
        if engine.name == "duckdb":
            assert len(batches) > 3 and max(b.height for b in batches) <= 5_000
        assert_frame_equal(pl.concat(batches).sort(order), whole)
    with pytest.raises(SchemaError, match="public code list"):
        list(
            ENGINES[1].person_cell_batches(
                default_lines, None, PRODUCT_CATEGORIES[1:], by_month=by_month, scratch=tmp_path
            )
        )


def test_shared_release_frames_are_identical_on_every_backend(default_lines, tmp_path):
    """The frames OpenDP measures (person and cells) do not depend on the engine."""
    customers = pl.scan_parquet(default_lines.parent / "customers.parquet")
    params = PrivacyParams.from_policy(Policy.load("alloffice"), "statistics")
    written = {}
    for engine in ENGINES:
        folder = tmp_path / engine.name
        folder.mkdir()
        written[engine.name] = build_shared_frames(
            customers,
            default_lines,
            SegmentSource.category_rule(),
            params,
            folder,
            (dt.date(2025, 11, 1), AS_OF),
            person_values=("orders", "units_total"),
            engine=engine,
        )
    for frame in ("person", "cells"):
        a, b = (pl.read_parquet(written[e.name][frame]) for e in ENGINES)
        assert a.height > 1000
        assert_frame_equal(a.sort(a.columns), b.sort(b.columns))
    # the LazyFrame path (the audit's) agrees with the engines too
    lazy = build_shared_frames(
        customers,
        scan_table(default_lines),
        SegmentSource.category_rule(),
        params,
        tmp_path,
        (dt.date(2025, 11, 1), AS_OF),
        person_values=("orders", "units_total"),
    )
    cells = pl.read_parquet(lazy["cells"])
    ref = pl.read_parquet(written["duckdb"]["cells"])
    assert_frame_equal(cells.sort(cells.columns), ref.sort(ref.columns))


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
def test_sums_are_exact_whatever_the_order_of_the_lines(engine, tmp_path):
    """A float sum depends on the order of its terms (0.1 + 0.2 ≠ 0.3): rounding it to SEK
    could flip at .50 and make two backends disagree. The öre sum is exact, half up."""
    day = dt.date(2026, 1, 5)
    amounts = [0.1, 0.2, 0.2, 1e6, -1e6, 0.0] * 50 + [0.25, 0.25]  # exactly 150.50 SEK
    rows = [("a" * 32, f"o{i}", day, "paper", x, 1) for i, x in enumerate(amounts)]
    rows.append(("b" * 32, "x", day, "paper", -0.5, 1))  # negative: half away from zero
    path = tmp_path / "lines.parquet"
    frame = _lines(rows)
    for shuffle in range(3):
        frame.sample(fraction=1.0, shuffle=True, seed=shuffle).write_parquet(path)
        cells = engine.person_cells(path, None, PRODUCT_CATEGORIES, scratch=tmp_path)
        exact = sum(Decimal(str(x)) for x in amounts).quantize(Decimal(1), ROUND_HALF_UP)
        assert cells["sek"].to_list() == [int(exact), -1]
        assert cells["units"].to_list() == [len(amounts), 1]


def _partitioned(tmp_path: Path) -> Path:
    folder = tmp_path / "lines"
    for month in (dt.date(2026, 1, 1), dt.date(2026, 2, 1), dt.date(2026, 3, 1)):
        part = folder / f"month={month:%Y-%m}"
        part.mkdir(parents=True)
        _lines(
            [("c" * 32, f"o{month.month}", month + dt.timedelta(days=3), "paper", 10.0, 2)]
        ).write_parquet(part / "part-0.parquet")
    return folder


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
def test_a_month_closing_reads_only_its_partitions(engine, tmp_path):
    """Attack: a damaged partition outside the window would fail any read that touched it."""
    folder = _partitioned(tmp_path)
    (folder / "month=2026-01" / "part-0.parquet").write_bytes(b"not parquet")
    (folder / "month=2026-03" / "part-0.parquet").write_bytes(b"not parquet")
    february = (dt.date(2026, 2, 1), dt.date(2026, 3, 1))
    assert [p.parent.name for p in line_files(folder, february)] == ["month=2026-02"]
    cells = engine.person_cells(folder, february, PRODUCT_CATEGORIES, scratch=tmp_path)
    assert cells.select("sek", "units").row(0) == (10, 2)
    assert engine.person_orders(folder, february, scratch=tmp_path)["orders"].to_list() == [1]
    empty = engine.person_cells(
        folder, (dt.date(2027, 1, 1), dt.date(2027, 2, 1)), PRODUCT_CATEGORIES, scratch=tmp_path
    )
    assert empty.height == 0


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
def test_a_category_outside_the_public_list_is_refused(engine, tmp_path):
    path = tmp_path / "lines.parquet"
    _lines([("d" * 32, "o", dt.date(2026, 1, 1), "weapons", 5.0, 1)]).write_parquet(path)
    with pytest.raises(SchemaError, match="column 'category'.*'weapons'"):
        engine.person_cells(path, None, PRODUCT_CATEGORIES, scratch=tmp_path)


@pytest.mark.parametrize("by_month", [False, True])
@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
def test_a_line_without_a_public_category_is_refused_beside_good_ones(engine, by_month, tmp_path):
    """DuckDB sums a window's lines per person, one column per public category: a line of
    no category (NULL) or of another one falls in no column, so it must be refused there
    too, never dropped from the person's cells."""
    path = tmp_path / "lines.parquet"
    day = dt.date(2026, 1, 5)
    for odd in (None, "weapons"):
        rows = [("e" * 32, "o1", day, "paper", 5.0, 1), ("f" * 32, "o3", day, "paper", 1.0, 1)]
        _lines([*rows, ("e" * 32, "o2", day, odd, 7.0, 1)]).write_parquet(path)
        for cells in (
            lambda: engine.person_cells(path, None, PRODUCT_CATEGORIES, scratch=tmp_path),
            lambda: list(
                engine.person_key_cell_batches(
                    path, None, PRODUCT_CATEGORIES, by_month=by_month, scratch=tmp_path
                )
            ),
        ):
            with pytest.raises(SchemaError, match=f"column 'category'.*'{odd}'"):
                cells()


@pytest.mark.parametrize("by_month", [False, True])
def test_a_category_listed_twice_is_one_cell_on_every_backend(default_lines, tmp_path, by_month):
    """r12a F2: an ingested taxonomy may list a category twice; DuckDB's per-person sums (a
    column per listed category) must still give each person one cell of it, as polars does."""
    twice = (*PRODUCT_CATEGORIES, PRODUCT_CATEGORIES[0])
    polars_engine, duck = ENGINES
    expected = polars_engine.person_cells(
        default_lines, None, twice, by_month=by_month, scratch=tmp_path
    )
    got = duck.person_cells(default_lines, None, twice, by_month=by_month, scratch=tmp_path)
    assert_frame_equal(got, expected)
    keyed = pl.concat(
        duck.person_key_cell_batches(
            default_lines, None, twice, by_month=by_month, scratch=tmp_path
        )
    )
    assert keyed.height == expected.height


def test_missing_lines_name_the_command(tmp_path):
    with pytest.raises(WorkspaceError, match="segments prepare"):
        line_files(tmp_path / "nowhere")


def test_duckdb_spills_only_into_the_callers_scratch_folder(tmp_path):
    scratch = tmp_path / "private" / "scratch-1"
    engine = DuckDBEngine(memory_limit=64 * 2**20, threads=1)
    with engine.connect(scratch) as con:
        spill = con.execute("SELECT current_setting('temp_directory')").fetchone()[0]
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert Path(spill) == scratch / "duckdb-spill"
    assert oct((scratch / "duckdb-spill").stat().st_mode & 0o777) == "0o700"
    assert "MiB" in limit or "MB" in limit


def test_the_setting_selects_the_engine(monkeypatch, tmp_path):
    path = tmp_path / "lines.parquet"
    _lines([("e" * 32, "o", dt.date(2026, 1, 1), "paper", 5.0, 1)]).write_parquet(path)
    monkeypatch.delenv("SEGMENTS_ENGINE", raising=False)
    monkeypatch.setenv("SEGMENTS_MEMORY_LIMIT", "8GB")
    assert memory_budget() == 8 * 2**30
    assert choose_engine([path]) == "polars"  # small data: in memory
    monkeypatch.setenv("SEGMENTS_MEMORY_LIMIT", "1KB")
    assert choose_engine([path]) == "duckdb"  # larger than the budget allows: out of core
    monkeypatch.setenv("SEGMENTS_ENGINE", "polars")
    assert get_engine(sources=[path]).name == "polars"
    assert get_engine("embedded").name == "duckdb"
    monkeypatch.setenv("SEGMENTS_ENGINE", "hadoop")
    with pytest.raises(PolicyError, match="engine 'hadoop'.*SEGMENTS_ENGINE"):
        get_engine()
    monkeypatch.setenv("SEGMENTS_MEMORY_LIMIT", "lots")
    with pytest.raises(PolicyError, match="SEGMENTS_MEMORY_LIMIT='lots'"):
        memory_budget()


@pytest.mark.parametrize(
    "window", [None, (dt.date(2026, 4, 1), dt.date(2026, 10, 1))], ids=["all", "half-year"]
)
def test_backends_give_identical_feature_sums_on_the_default_data(default_lines, tmp_path, window):
    polars_engine, duck = ENGINES
    args = (default_lines, window, PRODUCT_CATEGORIES, CHANNELS)
    expected = polars_engine.person_feature_sums(*args, scratch=tmp_path)
    assert expected.height > 1000
    assert_frame_equal(duck.person_feature_sums(*args, scratch=tmp_path), expected)
    # the sums add up: channels to orders, quarters and categories to spend and lines
    orders = sum(expected[f"orders_{c}"] for c in CHANNELS)
    assert (orders == expected["orders"]).all()
    assert (sum(expected[f"ore_q{q}"] for q in range(1, 5)) == expected["ore"]).all()
    assert (sum(expected[f"ore_{c}"] for c in PRODUCT_CATEGORIES) == expected["ore"]).all()
    assert (sum(expected[f"lines_{c}"] for c in PRODUCT_CATEGORIES) == expected["lines"]).all()


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
def test_feature_sums_refuse_a_channel_outside_the_public_list(engine, tmp_path):
    path = tmp_path / "lines.parquet"
    _lines([("f" * 32, "o", dt.date(2026, 1, 1), "paper", 5.0, 1)]).with_columns(
        pl.lit("fax").alias("channel")
    ).write_parquet(path)
    with pytest.raises(SchemaError, match="column 'channel'.*'fax'"):
        engine.person_feature_sums(path, None, PRODUCT_CATEGORIES, CHANNELS, scratch=tmp_path)


def test_segmentation_features_are_the_same_from_the_embedded_engine(default_lines, monkeypatch):
    """customer_features on the path with the out-of-core engine = the in-memory path (the
    engine's sums are exact; the in-memory path sums floats, so equal to ~1e-12)."""
    # the polars engine of the public (pandas) customer_features, compared exactly
    from segments.features import _customer_features_pl as customer_features

    customers = pl.read_parquet(default_lines.parent / "customers.parquet")
    expected = customer_features(pl.scan_parquet(default_lines), customers, as_of=AS_OF)
    monkeypatch.setenv("SEGMENTS_ENGINE", "duckdb")
    got = customer_features(default_lines, customers, as_of=AS_OF)
    assert expected.height > 1000
    assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)
    # nothing the engine spilled is left beside the frames
    assert not [p for p in default_lines.parent.iterdir() if p.name.startswith(".scratch")]
    monkeypatch.setenv("SEGMENTS_ENGINE", "polars")
    assert_frame_equal(customer_features(default_lines, customers, as_of=AS_OF), expected)


def _month_closing(lines: Path, workspace: Workspace, engine_name: str, monkeypatch) -> dict:
    """The month_closing release on ``engine_name``: its card and tables."""
    import json

    from segments.privacy.ledger import Ledger
    from segments.privacy.releases import plan_release
    from segments.privacy.specs import SPECS

    monkeypatch.setenv("SEGMENTS_ENGINE", engine_name)
    policy = Policy.load("alloffice")
    params = PrivacyParams.from_policy(policy, "statistics")
    # a signed verdict, as prove_synthetic gives for the default dataset (without regenerating it)
    from prepared_frames import synthetic_proof

    ledger = Ledger.for_workspace(
        workspace,
        policy.controller,
        evaluation=True,
        synthetic=synthetic_proof(workspace),
        policy=policy,
    )
    with plan_release(
        SPECS["month_closing"],
        params,
        purpose="statistics",  # the workspace's verified frames: what a release charges for
        segments=SegmentSource.category_rule(),
        as_of=AS_OF,
        window=(dt.date(2026, 9, 1), dt.date(2026, 10, 1)),
        workspace=workspace,
    ) as plan:
        accuracy = plan._accuracy_pl()  # compared as polars (the API hands out pandas)
        result = plan.execute(
            release_context(
                ledger,
                workspace,
                policy,
                purpose="statistics",
                recipient="purchasing",
                synthetic=True,
            )
        )
    card = json.loads((result.path / "card.json").read_text())
    return {"card": card, "tables": result._tables, "accuracy": accuracy}


def _key_columns(table: pl.DataFrame) -> list[str]:
    """A released table's keys: its string columns, but a mean's ``<name>_status``
    ("published" or why not), which follows its noisy count and so may differ between two
    draws of the noise (it did: a fresh-clone make test of 65dfa86)."""
    keys = [c for c in table.columns if table[c].dtype == pl.Utf8 and not c.endswith("_status")]
    assert keys, table.columns
    return keys


@pytest.mark.slow
def test_the_opendp_step_ledger_and_card_do_not_depend_on_the_engine(
    default_lines, tmp_path, monkeypatch
):
    """Released keys, charges, bounds and the planned accuracy are equal; values differ only
    by noise."""
    # the prepared workspace itself: an evaluation ledger needs data proven synthetic
    workspace = Workspace(default_lines.parents[2])
    runs = {
        name: _month_closing(default_lines, workspace, name, monkeypatch)
        for name in ("polars", "duckdb")
    }
    a, b = runs["polars"], runs["duckdb"]
    assert_frame_equal(a["accuracy"], b["accuracy"])
    fields = ("privacy_loss", "privacy_loss_per_query", "guarantee", "mechanism", "population")
    for field in fields:
        assert field in a["card"] and a["card"][field] == b["card"][field], field
    # (a private bound chosen at run time, and the accuracy it implies, are noisy)
    released = [[(q["aggregate"], q["cells"]) for q in run["card"]["aggregates"]] for run in (a, b)]
    assert released[0] == released[1]
    assert a["tables"].keys() == b["tables"].keys()
    for name, table in a["tables"].items():
        other = b["tables"][name]
        keys = _key_columns(table)
        assert table.columns == other.columns
        assert_frame_equal(table.select(keys), other.select(keys))
        # (noise scales may come from a private bound, itself noisy: not compared)


@pytest.mark.slow
def test_a_small_memory_limit_makes_a_month_closing_run_out_of_core_by_itself(
    tmp_path, monkeypatch
):
    """Issue 21's automatic choice: with no engine set (``auto``) and ``SEGMENTS_MEMORY_LIMIT``
    below what the default data's lines need in memory, the month-closing picks DuckDB by
    itself — at its least memory and one thread — and completes, releasing the same keys
    with the same charges as on polars (the values differ only by noise)."""
    from segments import copy_default_dataset, prepare
    from segments.privacy import releases

    workspace = Workspace(tmp_path / "ws")
    copy_default_dataset(workspace)
    prepare(workspace, Policy.load("alloffice"), "statistics", AS_OF)
    lines = workspace.prepared_dir("statistics") / "lines.parquet"
    monkeypatch.setenv("SEGMENTS_MEMORY_LIMIT", "8GB")
    assert choose_engine([lines], "auto") == "polars"  # the default data fits: in memory
    # the release reads its month's lines from a copy in its scratch (188 KB here): "1MB"
    # left that month in memory; a budget below the copy's in-memory need picks DuckDB
    monkeypatch.setenv("SEGMENTS_MEMORY_LIMIT", "1KB")
    assert choose_engine([lines], "auto") == "duckdb"
    chosen: list[object] = []
    real = releases.get_engine

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        chosen.append(real(*args, **kwargs))
        return chosen[-1]

    monkeypatch.setattr(releases, "get_engine", spy)
    auto = _month_closing(lines, workspace, "auto", monkeypatch)
    assert chosen and all(
        isinstance(e, DuckDBEngine) and e.memory_limit == 2**10 and e.threads == 1 for e in chosen
    ), chosen
    monkeypatch.delenv("SEGMENTS_MEMORY_LIMIT")
    in_memory = _month_closing(lines, workspace, "polars", monkeypatch)
    released = [
        [(q["aggregate"], q["cells"]) for q in run["card"]["aggregates"]]
        for run in (auto, in_memory)
    ]
    assert released[0] == released[1] and released[0]
    assert auto["card"]["privacy_loss"] == in_memory["card"]["privacy_loss"]
    for name, table in in_memory["tables"].items():
        keys = _key_columns(table)
        assert_frame_equal(auto["tables"][name].select(keys), table.select(keys))
    assert not workspace.private.exists() or not any(workspace.private.iterdir())


def test_the_per_person_aggregate_completes_far_below_its_table_spilling_only_into_scratch(
    tmp_path, monkeypatch
):
    """r13a F4: the month-closing's per-person aggregate (:func:`_persons_sql`, one row per
    person with a spend and a units sum per category) under DuckDB's smallest limit
    (:data:`MIN_MEMORY_LIMIT`), below what its hash table needs by the plan's estimate
    (200,000 customers and 400,000 lines per 64 MB of the floor). At 64 MB this aggregate
    raised OutOfMemoryException in one pass (here and on 10 million lines; at 128 MB on the
    10 million lines too); :func:`person_aggregate_plan` gives it passes over person-hash
    parts. It completes, spills (the table of persons) into the job's scratch folder and
    nowhere else (not the working directory, not the system temp folder), and its streamed
    cells and keyed cells (the month-closing's path) equal the polars engine's."""
    import contextlib
    import os
    import threading
    import time

    import numpy as np

    from segments.engine import embedded
    from segments.privacy._frames import write_prepared_frames

    scale = embedded.MIN_MEMORY_LIMIT // (64 * 2**20)
    lines = write_prepared_frames(
        tmp_path / "frames", 200_000 * scale, 400_000 * scale, seed=np.random.default_rng(5)
    )["lines"]
    elsewhere = [tmp_path / "cwd", tmp_path / "tmp"]
    for folder in elsewhere:
        folder.mkdir()
    monkeypatch.chdir(elsewhere[0])
    monkeypatch.setenv("TMPDIR", str(elsewhere[1]))
    plans: list[embedded.AggregatePlan] = []
    plan = embedded.person_aggregate_plan
    monkeypatch.setattr(
        embedded, "person_aggregate_plan", lambda **kw: plans.append(plan(**kw)) or plans[-1]
    )
    engine = DuckDBEngine(memory_limit=embedded.MIN_MEMORY_LIMIT, threads=2)
    ws = Workspace(tmp_path / "ws")
    spilled: set[str] = set()
    done = threading.Event()
    with ws.scratch("closing") as scratch:

        def watch() -> None:  # DuckDB removes its spill files when the connection closes
            while not done.is_set():
                with contextlib.suppress(OSError):
                    spilled.update(os.listdir(scratch / "duckdb-spill"))
                time.sleep(0.001)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            got = pl.concat(
                engine.person_cell_batches(lines, None, PRODUCT_CATEGORIES, scratch=scratch)
            ).sort("person_id", "category")
            keyed = pl.concat(
                engine.person_key_cell_batches(lines, None, PRODUCT_CATEGORIES, scratch=scratch)
            )
        finally:
            done.set()
            watcher.join()
    assert plans and all(p.threads == 1 and p.passes > 1 for p in plans), plans
    assert any("storage" in name for name in spilled), spilled
    assert all(not any(folder.iterdir()) for folder in elsewhere)
    polars = PolarsEngine()
    expected = polars.person_cells(lines, None, PRODUCT_CATEGORIES, scratch=tmp_path)
    assert got.height > 200_000 * scale
    assert_frame_equal(got, expected)
    expected_keys = pl.concat(
        polars.person_key_cell_batches(lines, None, PRODUCT_CATEGORIES, scratch=tmp_path)
    )
    order = list(expected_keys.columns)
    assert_frame_equal(keyed.sort(order), expected_keys.sort(order))
    assert not ws.private.exists()


def test_the_aggregate_retries_on_one_thread_with_twice_the_passes_when_out_of_memory(
    tmp_path, monkeypatch
):
    """r14a F1: the plan's persons are one file's (a lower bound), so a window whose persons
    spread over many months can get too few passes. An OutOfMemoryException of the
    aggregate drops the partial table and runs it again on one thread with twice the
    passes, the same frame as polars'; past :data:`MAX_AGGREGATE_PASSES` it is raised."""
    import duckdb
    import numpy as np

    from segments.engine import embedded
    from segments.privacy._frames import write_prepared_frames

    lines = write_prepared_frames(tmp_path / "f", 2_000, 8_000, seed=np.random.default_rng(2))[
        "lines"
    ]
    failures = {"left": 1}

    class Tight:  # a connection whose first aggregate pass runs out of memory
        def __init__(self, con: object) -> None:
            self.con = con

        def execute(self, sql: str, *args: object) -> object:
            if sql.startswith(f"CREATE TEMP TABLE {embedded._PERSONS}") and failures["left"]:
                failures["left"] -= 1
                raise duckdb.OutOfMemoryException("Out of Memory Error: (test)")
            return self.con.execute(sql, *args)

        def __getattr__(self, name: str) -> object:
            return getattr(self.con, name)

    class TightEngine(DuckDBEngine):
        @contextlib.contextmanager
        def connect(self, scratch: Path):  # type: ignore[override]
            with super().connect(scratch) as con:
                yield Tight(con)

    plans = record_aggregate_plans(monkeypatch)
    monkeypatch.setattr(
        embedded, "person_aggregate_plan", lambda **kw: embedded.AggregatePlan(2, 1)
    )
    engine = TightEngine(memory_limit=2**30, threads=2)
    got = pl.concat(
        engine.person_cell_batches(lines, None, PRODUCT_CATEGORIES, scratch=tmp_path / "s")
    )
    assert plans == [embedded.AggregatePlan(2, 1), embedded.AggregatePlan(1, 2)]
    expected = PolarsEngine().person_cells(lines, None, PRODUCT_CATEGORIES, scratch=tmp_path)
    assert_frame_equal(got.sort("person_id", "category"), expected)
    last = embedded.AggregatePlan(1, embedded.MAX_AGGREGATE_PASSES)
    monkeypatch.setattr(embedded, "person_aggregate_plan", lambda **kw: last)
    failures["left"] = 1
    with pytest.raises(WorkspaceError, match="out of memory at its memory limit of 1 GB") as oom:
        list(engine.person_cell_batches(lines, None, PRODUCT_CATEGORIES, scratch=tmp_path / "s"))
    assert isinstance(oom.value.__cause__, duckdb.OutOfMemoryException)


#: DuckDB's words for a spill it could not write, as it raised them (DuckDB 2.0.1): the spill
#: folder on an 8 MB tmpfs, once past its cap and once past the disk's free space; a spill
#: file past the process's file-size limit (``ulimit -f``, r15a F2).
SPILL_DISK_FULL = {
    "cap": (
        "OutOfMemoryException",
        "Out of Memory Error: failed to offload data block of size 256.0 KiB (7.0 MiB/7.1 MiB "
        "used).\nThis limit was set by the 'max_temp_directory_size' setting.\nBy default, this "
        "setting utilizes the available disk space on the drive where the 'temp_directory' is "
        "located.",
    ),
    "disk": (
        "IOException",
        'IO Error: Could not write file "{spill}/duckdb_temp_9835_3_storage_DEFAULT-0.tmp": No '
        "space left on device",
    ),
    "too large": (
        "IOException",
        'IO Error: Could not write file "{spill}/duckdb_temp_19403_0_storage_DEFAULT-0.tmp": '
        "File too large",
    ),
}


@pytest.mark.parametrize("kind", SPILL_DISK_FULL)
def test_a_full_spill_disk_in_the_aggregate_is_one_workspace_error_never_retried(
    tmp_path, monkeypatch, kind
):
    """h21d: a full disk under the spill folder while the per-person aggregate runs (either of
    DuckDB's words for it, one of them an OutOfMemoryException), or a spill file past the
    file-size limit, is raised at once as the engine's one-line WorkspaceError — the engine,
    the memory limit, the spill folder and its free space, what was being built, the fix —
    not retried with more passes (each a scan of all the lines: 189 scans before the error
    at an 8 MB limit, before this). A memory shortage is retried, up to
    :data:`MAX_AGGREGATE_PASSES` passes and no more (r15a F1: 96 before)."""
    import duckdb
    import numpy as np

    from segments.engine import embedded
    from segments.privacy._frames import write_prepared_frames

    lines = write_prepared_frames(tmp_path / "f", 2_000, 8_000, seed=np.random.default_rng(2))[
        "lines"
    ]
    error, text = SPILL_DISK_FULL[kind]
    into = embedded._PERSONS

    class Full:  # a connection whose aggregate finds the spill disk full
        def __init__(self, con: object, spill: Path) -> None:
            self.con, self.spill = con, spill

        def execute(self, sql: str, *args: object) -> object:
            if sql.startswith((f"CREATE TEMP TABLE {into}", f"INSERT INTO {into}")):
                raise getattr(duckdb, error)(text.format(spill=self.spill))
            return self.con.execute(sql, *args)

        def __getattr__(self, name: str) -> object:
            return getattr(self.con, name)

    class FullEngine(DuckDBEngine):
        @contextlib.contextmanager
        def connect(self, scratch: Path):  # type: ignore[override]
            with super().connect(scratch) as con:
                yield Full(con, scratch / "duckdb-spill")

    plans = record_aggregate_plans(monkeypatch)
    monkeypatch.setattr(
        embedded, "person_aggregate_plan", lambda **kw: embedded.AggregatePlan(1, 3)
    )
    engine = FullEngine(memory_limit=2**20, threads=1)
    ws = Workspace(tmp_path / "ws")
    with ws.scratch("closing") as scratch, pytest.raises(WorkspaceError) as raised:
        list(engine.person_key_cell_batches(lines, None, PRODUCT_CATEGORIES, scratch=scratch))
    assert plans == [embedded.AggregatePlan(1, 3)]  # not run again with more passes
    message = str(raised.value)
    assert isinstance(raised.value.__cause__, getattr(duckdb, error))
    assert "\n" not in message
    spill = scratch / "duckdb-spill"
    what, fix = (
        (
            f"the disk under the spill folder {spill} is full",
            f"fix: free disk space under {ws.private}, or ",
        )
        if kind != "too large"
        else (
            f"a spill file in {spill} is larger than this process may write",
            "fix: raise that limit (`ulimit -f unlimited`), or ",
        )
    )
    for part in (
        f"engine duckdb: {what}",
        "building the per-person cells of all the lines",
        "memory limit of 128 MB (the 1 MB asked for, raised to DuckDB's least)",
        "GB is free there",
        fix + "raise SEGMENTS_MEMORY_LIMIT above 128 MB so less spills",
    ):
        assert part in message, (part, message)
    assert ("max_temp_directory_size" in message) == (kind == "cap")
    assert not ws.private.exists()
    # a memory shortage without a full disk is still retried with more passes, up to
    # MAX_AGGREGATE_PASSES, then raised as the engine's one line too (r15a F3)
    plans.clear()
    error, text = (
        "OutOfMemoryException",
        (
            "Out of Memory Error: could not allocate block of size 256.0 KiB (7.5 MiB/7.6 MiB used)"
            "\n\nPossible solutions:\n* Reducing the number of threads (SET threads=X)"
        ),
    )
    with pytest.raises(WorkspaceError) as oom:
        list(engine.person_cell_batches(lines, None, PRODUCT_CATEGORIES, scratch=tmp_path / "s"))
    assert [p.passes for p in plans] == [3, 6, 12, 24, 48, 64]
    assert isinstance(oom.value.__cause__, duckdb.OutOfMemoryException)
    message = str(oom.value)
    assert "\n" not in message and "Possible solutions" not in message
    for part in (
        "engine duckdb: out of memory at its memory limit of 128 MB (the 1 MB asked for, "
        "raised to DuckDB's least): building the per-person cells of all the lines",
        "could not allocate block of size 256.0 KiB",
        "fix: raise SEGMENTS_MEMORY_LIMIT above 128 MB (e.g. SEGMENTS_MEMORY_LIMIT=256MB)",
    ):
        assert part in message, (part, message)


def test_the_aggregate_plan_takes_every_core_only_for_a_long_window_that_fits():
    """:func:`person_aggregate_plan` on the measured cases (issue 21): the month-closing's
    10 million lines of ~300,000 persons (34 lines a person) on one thread, 60 million lines
    of the same persons on both cores when one is idle and on one at load 6; one thread
    where two tables would not fit in half the limit (3.3 million persons at 1 GB), and
    passes only below what one table needs."""
    from segments.engine.embedded import AggregatePlan, person_aggregate_plan

    gb, idle, busy = 2**30, 1.2, 6.0
    assert person_aggregate_plan(10_000_000, 212_834, 10, gb, 2, idle) == AggregatePlan(1, 1)
    assert person_aggregate_plan(60_000_000, 212_834, 10, gb, 2, idle) == AggregatePlan(2, 1)
    assert person_aggregate_plan(60_000_000, 212_834, 10, gb, 2, busy) == AggregatePlan(1, 1)
    assert person_aggregate_plan(60_000_000, 212_834, 10, 12 * gb, 1, 0.0) == AggregatePlan(1, 1)
    assert person_aggregate_plan(500_000_000, 3_300_000, 10, gb, 2, idle).threads == 1
    assert person_aggregate_plan(10_000_000, 212_834, 10, 64 * 2**20, 2, idle) == AggregatePlan(
        1, 6
    )
    assert person_aggregate_plan(10_000_000, 212_834, 10, 128 * 2**20, 2, idle) == AggregatePlan(
        1, 2
    )


def test_feature_sums_spill_into_the_workspaces_private_area_not_the_prepared_folder(
    tmp_path, monkeypatch
):
    """r21 #2: an engine computing the segmentation features spills (Spark's shuffle files:
    pseudonymised lines) into the workspace's private area, which sweep clears after a
    kill -9, never beside the signed prepared frames, where a leftover failed every release's
    check of the folder and survived an erasure. Nothing is left behind."""
    from prepared_frames import AS_OF, segmentation_workspace

    from segments.features import customer_features

    ws = segmentation_workspace(tmp_path / "ws", 60)
    folder = ws.prepared_dir("segmentation")
    before = sorted(p.name for p in folder.iterdir())
    seen: list[tuple[Path, list[str]]] = []
    real = DuckDBEngine.person_feature_sums

    def spy(self, lines, window, categories, channels, *, scratch):  # type: ignore[no-untyped-def]
        seen.append((Path(scratch), sorted(p.name for p in folder.iterdir())))
        return real(self, lines, window, categories, channels, scratch=scratch)

    monkeypatch.setattr(DuckDBEngine, "person_feature_sums", spy)
    monkeypatch.setenv("SEGMENTS_ENGINE", "duckdb")
    customers = pl.read_parquet(folder / "customers.parquet")
    features = customer_features(folder / "lines.parquet", customers, as_of=AS_OF)
    assert len(features) > 0 and len(seen) == 1
    scratch, during = seen[0]
    assert scratch.resolve().is_relative_to(ws.private.resolve()), scratch
    assert during == before  # nothing inside the signed folder while the engine ran
    assert sorted(p.name for p in folder.iterdir()) == before
    assert not ws.private.exists() or not any(ws.private.iterdir())


@pytest.mark.parametrize("where", ["outside any workspace", "beside the prepared folder"])
def test_attack_feature_lines_outside_the_prepared_folder_never_spill_to_tmp(
    where, tmp_path, monkeypatch
):
    """r15b #3: prepared lines copied anywhere else (a home folder, beside the prepared
    folder) and read by an out-of-core engine made it spill pseudonymised per-person
    intermediates into the system's temporary folder, which no workspace sweep clears.
    Now such lines are refused in one line before the engine runs (on main the engine ran
    with a scratch outside every workspace's private area). Control: the same lines from
    the workspace's prepared folder are read, spilling into its private area."""
    import shutil

    from prepared_frames import AS_OF, segmentation_workspace

    from segments.features import customer_features

    ws = segmentation_workspace(tmp_path / "ws", 60)
    folder = ws.prepared_dir("segmentation")
    target = tmp_path / "elsewhere" if where == "outside any workspace" else ws.root / "copy"
    target.mkdir()
    lines = target / "lines.parquet"
    source = folder / "lines.parquet"
    (shutil.copytree if source.is_dir() else shutil.copyfile)(source, lines)
    seen: list[Path] = []
    real = DuckDBEngine.person_feature_sums

    def spy(self, lines, window, categories, channels, *, scratch):  # type: ignore[no-untyped-def]
        seen.append(Path(scratch))
        return real(self, lines, window, categories, channels, scratch=scratch)

    monkeypatch.setattr(DuckDBEngine, "person_feature_sums", spy)
    monkeypatch.setenv("SEGMENTS_ENGINE", "duckdb")
    customers = pl.read_parquet(folder / "customers.parquet")
    with pytest.raises(SchemaError, match=r"parameter 'lines': .* is not a workspace's prepared"):
        customer_features(lines, customers, as_of=AS_OF)
    assert seen == []  # the engine never ran
    features = customer_features(folder / "lines.parquet", customers, as_of=AS_OF)  # control
    assert len(features) > 0 and seen[0].resolve().is_relative_to(ws.private.resolve())


# --- the compact person key (issue 21) -----------------------------------------------------------
@pytest.mark.parametrize("by_month", [False, True])
@pytest.mark.parametrize(
    "window", [None, (dt.date(2026, 9, 1), dt.date(2026, 10, 1))], ids=["all", "september"]
)
def test_key_cell_batches_are_the_cells_keyed_on_every_backend(
    default_lines, tmp_path, monkeypatch, window, by_month
):
    """A release's cells carry the pseudonym's 60-bit key, computed inside the engine (DuckDB;
    polars keys its pseudonym rows): the same rows as person_cells keyed on the driver, a
    check that is the pseudonym's first digits, no pseudonym leaving the engine."""
    import segments.engine.embedded as embedded
    from segments.engine.base import key_cell_schema, person_check, person_key

    monkeypatch.setattr(embedded, "CELL_BATCH_ROWS", 5_000)
    month = ["month"] if by_month else []
    expected = (
        ENGINES[0]
        .person_cells(
            default_lines, window, PRODUCT_CATEGORIES, by_month=by_month, scratch=tmp_path
        )
        .select(person_key(), *month, "category", "sek", "units", person_check())
        .sort("pid", *month, "category")
    )
    assert expected.height > 500 and expected["pid"].n_unique() > 100
    for engine in ENGINES:
        batches = list(
            engine.person_key_cell_batches(
                default_lines, window, PRODUCT_CATEGORIES, by_month=by_month, scratch=tmp_path
            )
        )
        if engine.name == "duckdb" and window is None:
            assert len(batches) > 3
        got = pl.concat(batches).sort("pid", *month, "category")
        assert got.schema == pl.Schema(key_cell_schema(by_month))
        assert_frame_equal(got, expected)


def _colliding(first: str = "1", second: str = "2") -> tuple[str, str]:
    """Two pseudonyms with one key (last 15 hex digits) and different checks."""
    tail = "abcdef01234567899"
    return first * 15 + tail, second * 15 + tail


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
@pytest.mark.parametrize("categories", [("paper", "paper"), ("paper", "furniture")])
def test_two_people_of_one_key_are_refused_not_merged(engine, tmp_path, categories):
    """Attack: two pseudonyms that share the key's digits. One row per key would add two
    people's spend under one person's bound; the engine keeps one row per pseudonym and the
    release refuses a key with two checks, whether they share a cell or not."""
    from segments.engine.base import person_key_of

    a, b = _colliding()
    assert person_key_of(a) == person_key_of(b) and a != b
    path = tmp_path / "lines.parquet"
    day = dt.date(2026, 1, 5)
    _lines(
        [(a, "o1", day, categories[0], 10.0, 1), (b, "o2", day, categories[1], 20.0, 1)]
    ).write_parquet(path)
    customers = pl.LazyFrame(
        {"person_id": [a, b], "county_code": ["01", "01"], "customer_type": ["private"] * 2}
    )
    # the engine keeps them apart: two rows, one per pseudonym, with their own checks
    rows = pl.concat(
        engine.person_key_cell_batches(path, None, PRODUCT_CATEGORIES, scratch=tmp_path)
    )
    assert rows.height == 2 and rows["pid_check"].n_unique() == 2
    params = PrivacyParams.from_policy(Policy.load("alloffice"), "statistics")
    with pytest.raises(SchemaError, match=r"column 'person_id'.*one person per release key"):
        build_shared_frames(
            customers, path, SegmentSource.category_rule(), params, tmp_path, engine=engine
        )
    written = sorted(p.name for p in tmp_path.glob("*.parquet"))
    assert written == ["lines.parquet"]  # nothing written half-way


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
def test_a_buyer_sharing_a_customers_key_is_refused(engine, tmp_path):
    """A buyer whose key is another customer's (the buyer not in customers) would be
    released with that customer's county and type: refused too."""
    a, b = _colliding()
    path = tmp_path / "lines.parquet"
    _lines([(a, "o1", dt.date(2026, 1, 5), "paper", 10.0, 1)]).write_parquet(path)
    customers = pl.LazyFrame(
        {"person_id": [b], "county_code": ["01"], "customer_type": ["private"]}
    )
    params = PrivacyParams.from_policy(Policy.load("alloffice"), "statistics")
    with pytest.raises(SchemaError, match="one person per release key"):
        build_shared_frames(
            customers, path, SegmentSource.category_rule(), params, tmp_path, engine=engine
        )
    # without the collision the same frames are built
    _lines([(b, "o1", dt.date(2026, 1, 5), "paper", 10.0, 1)]).write_parquet(path)
    paths = build_shared_frames(
        customers, path, SegmentSource.category_rule(), params, tmp_path, engine=engine
    )
    assert pl.read_parquet(paths["cells"])["sek"].sum() > 0


@pytest.mark.parametrize(
    ("limit_gb", "says"),
    [
        (
            1,
            "fix: raise SEGMENTS_MEMORY_LIMIT above 1 GB (e.g. SEGMENTS_MEMORY_LIMIT=2048MB), "
            "then run the command again",
        ),
        (
            8,
            "fix: raise SEGMENTS_MEMORY_LIMIT above 8 GB (e.g. SEGMENTS_MEMORY_LIMIT=12288MB), "
            "then run the command again",
        ),
        (
            12,
            "fix: SEGMENTS_MEMORY_LIMIT is already 12 GB of this machine's 16 GB of RAM: run "
            "the command on a machine with more memory",
        ),
    ],
)
def test_the_out_of_memory_fix_never_asks_for_more_than_the_machine_has(
    monkeypatch, limit_gb, says
):
    """r15a F8: the fix suggested twice the limit in force; at the default (half the RAM) that
    is all of it. On a 16 GB machine: twice 1 GB; at 8 GB (the default) 12 GB, three quarters;
    at 12 GB nothing larger fits, so a machine with more memory."""
    import duckdb

    import segments.engine as engines

    monkeypatch.setattr(engines, "physical_memory", lambda: 16 * 2**30)
    engine = DuckDBEngine(memory_limit=limit_gb * 2**30)
    error = engine._out_of_memory(
        duckdb.OutOfMemoryException("Out of Memory Error: failed to allocate data of size 1 MiB"),
        Path("/w/.private/scratch-x/duckdb-spill"),
        "the per-person cells of all the lines",
    )
    assert str(error).endswith(says), str(error)
