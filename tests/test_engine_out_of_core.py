"""Issue 21: every operation of the embedded engine (DuckDB) completes out of core and gives
the polars engine's frames.

The engine runs as ``get_engine`` builds it under ``SEGMENTS_MEMORY_LIMIT=1MB``: DuckDB's
least memory (:data:`~segments.engine.embedded.MIN_MEMORY_LIMIT`, 128 MB) and the one thread that
limit allows, on 800,000 prepared lines of 200,000 people (64-character pseudonyms, 14 months,
10 categories). Each operation runs twice on the same data: once with spilling forbidden
(``max_temp_directory_size = 0``), which must fail as DuckDB does on a full spill disk — the
working set does not fit, so the test cannot pass in memory — and end in the engine's one-line
error (h21d), and once as the engine runs, which must complete with
the in-memory frame (values, order and dtypes), spill files only into its scratch folder in
the workspace's private area (owner-only), and leave none behind.

The whole-window per-person aggregate (``person_cells`` without months, and the batches of a
whole window, :meth:`DuckDBEngine._cell_rows`) has its own small-limit test (here: only its
sorted frame, on 3 million lines); prepare's join (``join_order_lines``) runs in polars on
every engine (:mod:`segments.engine.embedded`).

A full disk while DuckDB spills (h21d) ends the two commands that spill — a month-closing
release and ``segment`` — in one line, spending nothing, on a generated workspace whose
aggregates spill at a lowered limit, with DuckDB's own cap on its spill folder at 0 bytes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from engine_helpers import record_aggregate_plans
from polars.testing import assert_frame_equal

from segments.engine import get_engine
from segments.engine.base import Engine, key_cell_schema
from segments.engine.embedded import MIN_MEMORY_LIMIT, DuckDBEngine
from segments.engine.inmemory import PolarsEngine
from segments.exceptions import WorkspaceError
from segments.schema import CHANNELS, PRODUCT_CATEGORIES
from segments.workspace import Workspace

CATEGORIES = list(PRODUCT_CATEGORIES)


@pytest.fixture(scope="module")
def lines(tmp_path_factory) -> Path:
    """800,000 prepared lines of 200,000 customers: at 128 MB every operation below needs
    to spill (measured: each fails with spilling forbidden, the control below)."""
    import numpy as np

    from segments.privacy._frames import write_prepared_frames

    folder = tmp_path_factory.mktemp("out-of-core")
    return write_prepared_frames(folder, 200_000, 800_000, seed=np.random.default_rng(21))["lines"]


def _sorted(batches: Iterator[pl.DataFrame], *by: str) -> pl.DataFrame:
    return pl.concat(list(batches)).sort(*by)


#: Each operation of the engine (other than the whole-window aggregate), as a frame sorted
#: by its keys (batches are streamed in no order).
OPERATIONS: dict[str, Callable[[Engine, Path, Path], pl.DataFrame]] = {
    "person_cells by month": lambda e, lines, s: e.person_cells(
        lines, None, CATEGORIES, by_month=True, scratch=s
    ),
    "person_cell_batches by month": lambda e, lines, s: _sorted(
        e.person_cell_batches(lines, None, CATEGORIES, by_month=True, scratch=s),
        "person_id",
        "month",
        "category",
    ),
    "person_key_cell_batches by month": lambda e, lines, s: _sorted(
        e.person_key_cell_batches(lines, None, CATEGORIES, by_month=True, scratch=s),
        "pid",
        "month",
        "category",
    ),
    "person_orders": lambda e, lines, s: e.person_orders(lines, None, scratch=s),
    "person_feature_sums": lambda e, lines, s: e.person_feature_sums(
        lines, None, CATEGORIES, CHANNELS, scratch=s
    ),
}


class _Recorded(DuckDBEngine):
    """The engine ``get_engine`` built (same limit and threads), recording what DuckDB was
    given on each connection; with ``spill=False`` DuckDB may write no spill file."""

    def __init__(self, engine: DuckDBEngine, *, spill: bool = True) -> None:
        super().__init__(engine.memory_limit, engine.threads)
        self.spill = spill
        self.settings: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def connect(self, scratch: Path) -> Iterator[Any]:
        with super().connect(scratch) as con:
            ((limit, threads, folder),) = con.execute(
                "SELECT current_setting('memory_limit'), current_setting('threads'), "
                "current_setting('temp_directory')"
            ).fetchall()
            mode = Path(folder).stat().st_mode & 0o777
            self.settings.append(
                {"limit": limit, "threads": threads, "folder": Path(folder), "mode": mode}
            )
            if not self.spill:
                con.execute("SET max_temp_directory_size = '0KiB'")
            yield con


class _SpillWatch:
    """The names and the most bytes of the files in ``folder`` while a query runs (DuckDB
    removes its spill files when the query ends)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.names, self.most = folder, set[str](), 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch)

    def _watch(self) -> None:
        while not self._done.is_set():
            with contextlib.suppress(OSError):
                files = list(os.scandir(self.folder))
                self.names.update(f.name for f in files)
                self.most = max(self.most, sum(f.stat().st_size for f in files))
            time.sleep(0.001)

    def __enter__(self) -> _SpillWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


#: Run in the fast suite (a few seconds each): the cells by month, and the features (the
#: query rewritten to go out of core); the rest with the slow tests.
FAST = ("person_cells by month", "person_feature_sums")


def test_a_small_limit_gets_duckdbs_least_memory_and_a_thread_per_128_mb(tmp_path):
    assert [DuckDBEngine(memory_limit=mb * 2**20, threads=8).threads for mb in (1, 255, 256)] == [
        1,
        1,
        2,
    ]
    assert DuckDBEngine(memory_limit=8 * 2**30, threads=2).threads == 2
    with DuckDBEngine(memory_limit=2**20).connect(tmp_path) as con:
        ((limit,),) = con.execute("SELECT current_setting('memory_limit')").fetchall()
    shown = MIN_MEMORY_LIMIT // 2**20 * 10**6 / 2**20  # DuckDB's MB are 10^6 bytes, shown in MiB
    assert limit == f"{int(shown * 10) / 10:.1f} MiB"


@pytest.mark.parametrize(
    "operation",
    [pytest.param(name, marks=[] if name in FAST else [pytest.mark.slow]) for name in OPERATIONS],
)
def test_every_operation_completes_out_of_core_with_the_in_memory_frame(
    operation, lines, tmp_path, monkeypatch
):
    import duckdb

    run = OPERATIONS[operation]
    # DuckDB's default spill folder is ./.tmp: an empty working directory shows none is made
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir(), tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.delenv("SEGMENTS_ENGINE", raising=False)
    monkeypatch.setenv("SEGMENTS_MEMORY_LIMIT", "1MB")
    built = get_engine("duckdb")
    assert isinstance(built, DuckDBEngine) and built.memory_limit == 2**20
    assert built.threads == 1  # one thread per 128 MB of the limit

    ws = Workspace(tmp_path / "ws")
    # the control: spilling forbidden, the same operation fails as on a full spill disk (DuckDB
    # could not offload past its cap), and that ends in the engine's one-line error (h21d)
    forbidden = _Recorded(built, spill=False)
    with ws.scratch("no-spill") as scratch, pytest.raises(WorkspaceError) as full:
        run(forbidden, lines, scratch)
    cause = full.value.__cause__
    assert isinstance(cause, duckdb.OutOfMemoryException) and "offload" in str(cause)
    message = str(full.value)
    assert "\n" not in message and message.startswith(
        f"engine duckdb: the disk under the spill folder {scratch / 'duckdb-spill'} is full: "
        "building the per-person "
    )
    assert "memory limit of 128 MB (the 1 MB asked for, raised to DuckDB's least)" in message
    assert f"free disk space under {ws.private}, or raise SEGMENTS_MEMORY_LIMIT" in message
    engine = _Recorded(built)
    with ws.scratch("spill") as scratch:
        spill = scratch / "duckdb-spill"
        with _SpillWatch(spill) as watch:
            got = run(engine, lines, scratch)
        assert scratch.parent == ws.private
        assert list(spill.iterdir()) == []  # every spill file removed when the query ended
    assert not ws.private.exists()  # the scratch, its spill folder with it, went with the job
    assert list(cwd.iterdir()) == [] and list(tmp.iterdir()) == []

    # it went out of core: DuckDB had 128 MB and one thread, and wrote spill files there
    assert engine.settings and all(
        s["folder"] == spill and s["mode"] == 0o700 and s["threads"] == 1 for s in engine.settings
    ), engine.settings
    limits = {s["limit"] for s in engine.settings}
    assert limits == {forbidden.settings[0]["limit"]}
    assert float(re.sub(r"[^0-9.]", "", limits.pop())) * 2**20 <= MIN_MEMORY_LIMIT  # MiB shown
    assert watch.names and all(n.startswith("duckdb_temp") for n in watch.names), watch.names
    assert watch.most > 0

    expected = run(PolarsEngine(), lines, tmp_path)
    assert got.height > 150_000
    assert_frame_equal(got, expected)  # values, order and dtypes
    if operation.startswith("person_key_cell_batches"):
        # no pseudonym leaves: the key and its check are integers, the only text the public
        # category and the month
        assert got.schema == pl.Schema(key_cell_schema(True))
        assert set(got["category"].unique()) <= set(CATEGORIES)
        assert got["month"].str.contains(r"^\d{4}-\d{2}$").all()


@pytest.mark.slow
def test_a_whole_windows_sorted_cells_complete_at_the_least_memory(tmp_path, monkeypatch):
    """The sorted frame of a whole window's cells (``person_cells``): DuckDB's ORDER BY of
    the aggregate's rows raised OutOfMemoryException at 128 MB on these 3 million lines
    after the aggregate had completed; the rows are streamed out and sorted on the driver."""
    import numpy as np

    from segments.privacy._frames import write_prepared_frames

    lines = write_prepared_frames(
        tmp_path / "frames", 300_000, 3_000_000, seed=np.random.default_rng(21)
    )["lines"]
    monkeypatch.setenv("SEGMENTS_MEMORY_LIMIT", "1MB")
    engine = get_engine("duckdb")
    ws = Workspace(tmp_path / "ws")
    with ws.scratch("cells") as scratch:
        got = engine.person_cells(lines, None, CATEGORIES, scratch=scratch)
    expected = PolarsEngine().person_cells(lines, None, CATEGORIES, scratch=tmp_path)
    assert got.height > 1_000_000
    assert_frame_equal(got, expected)
    assert not ws.private.exists()


def test_a_spill_file_past_the_file_size_limit_is_one_line_naming_the_limit(
    lines, tmp_path, monkeypatch
):
    """r15a F2: under a file-size limit (``ulimit -f``; Python ignores SIGXFSZ, so the write
    fails with EFBIG) DuckDB's spill file outgrows it — DuckDB's own IOException "File too
    large", nothing injected — and the engine raises its one-line error naming the spill
    folder, the limit and the fix; the scratch goes with the job."""
    import resource

    monkeypatch.setenv("SEGMENTS_MEMORY_LIMIT", "1MB")
    engine = get_engine("duckdb")
    ws = Workspace(tmp_path / "ws")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    with ws.scratch("cells") as scratch, pytest.raises(WorkspaceError) as raised:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, hard))  # 1 MB a file
        try:
            engine.person_cells(lines, None, CATEGORIES, by_month=True, scratch=scratch)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    message = str(raised.value)
    assert "File too large" in str(raised.value.__cause__)
    assert "\n" not in message and message.startswith(
        f"engine duckdb: a spill file in {scratch / 'duckdb-spill'} is larger than this process "
        "may write (its file-size limit, `ulimit -f`, or the file system's largest file): "
        "building the per-person cells by month of all the lines"
    ), message
    assert "fix: raise that limit (`ulimit -f unlimited`), or raise SEGMENTS_MEMORY_LIMIT" in (
        message
    )
    assert not ws.private.exists()


AS_OF_SPILL = dt.date(2026, 10, 31)
RELEASE = ["release", "--policy", "alloffice", "--purpose", "statistics", "--recipient",
           "purchasing", "--as-of", str(AS_OF_SPILL)]  # fmt: skip


@pytest.fixture(scope="module")
def spilling_workspace(tmp_path_factory) -> Path:
    """A generated workspace of 20,000 customers over 24 months (608,805 prepared lines of
    14,927 persons for statistics), prepared for statistics and segmentation: at DuckDB's
    128 MB its aggregates fit in memory; at 8 MB (the month-closing's) and 32 MB (segment's
    features) they spill (measured: they complete spilling, and fail with spilling capped at
    0 bytes; at 16 MB and below the features run out of memory without spilling)."""
    from segments import prepare
    from segments.synth import generate

    root = tmp_path_factory.mktemp("spilling") / "ws"
    generate(Workspace(root), customers=20_000, months=24, as_of=AS_OF_SPILL, seed=11)
    for purpose in ("statistics", "segmentation"):
        prepare(Workspace(root), "alloffice", purpose, AS_OF_SPILL)
    return root


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "floor_mb", "building"),
    [
        (
            [*RELEASE, "--spec", "month_closing"],
            8,
            "the per-person cells of all the lines before 2026-10-31",
        ),
        (["segment", "--k-range", "3-3"], 32, "the per-person feature sums of all the lines"),
    ],
    ids=["release month_closing", "segment"],
)
def test_a_command_whose_spill_finds_the_disk_full_ends_in_one_line_and_spends_nothing(
    spilling_workspace, tmp_path, monkeypatch, capsys, command, floor_mb, building
):
    """h21d: the commands that spill on DuckDB, run for real on a workspace whose aggregates
    must spill at DuckDB's limit (its floor lowered to make them spill on small data), with
    DuckDB's cap on its spill folder at 0 bytes — the state of a full disk (DuckDB's own
    error, no fault injected): one line naming the engine, the limit, the spill folder and
    what was being built, status 2, no traceback; after an earlier release the ledger gains
    no charge, no release, card or partial file is written, the scratch is swept; and the
    month-closing's aggregate is not run again with more passes."""
    import hashlib
    import shutil

    from segments.cli.main import main
    from segments.engine import embedded

    ws, ledgers = tmp_path / "ws", tmp_path / "ledgers"
    shutil.copytree(spilling_workspace, ws)
    monkeypatch.setenv("SEGMENTS_LEDGER_DIR", str(ledgers))
    monkeypatch.delenv("SEGMENTS_MEMORY_LIMIT", raising=False)
    at = ["-w", str(ws)]
    earlier = [*RELEASE, "--spec", "category_mix", *at]
    assert main(["--engine", "polars", *earlier]) == 0, capsys.readouterr().err

    def files() -> dict[str, str]:
        return {
            str(p): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for root in (ws, ledgers)
            for p in sorted(root.rglob("*"))
        }

    before = files()
    monkeypatch.setattr(embedded, "MIN_MEMORY_LIMIT", floor_mb * 2**20)
    monkeypatch.setenv("SEGMENTS_MEMORY_LIMIT", "1KB")
    real = DuckDBEngine.connect

    @contextlib.contextmanager
    def capped(self: DuckDBEngine, scratch: Path) -> Iterator[Any]:
        with real(self, scratch) as con:
            con.execute("SET max_temp_directory_size = '0KiB'")  # the disk is full
            yield con

    monkeypatch.setattr(DuckDBEngine, "connect", capped)
    plans = record_aggregate_plans(monkeypatch)
    capsys.readouterr()
    status = main(["--engine", "duckdb", *command[:1], *at, *command[1:]])
    err = capsys.readouterr().err
    assert status == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(
        f"segments {command[0]}: error: engine duckdb: the disk under the spill folder "
        f"{ws / '.private'}/scratch-"
    ), err
    for part in (
        f"building {building}",
        f"memory limit of {floor_mb} MB (the 1 KB asked for, raised to DuckDB's least)",
        "failed to offload",
        f"fix: free disk space under {ws / '.private'}, or raise SEGMENTS_MEMORY_LIMIT above "
        f"{floor_mb} MB so less spills",
        "(no privacy budget was spent)",
    ):
        assert part in err, (part, err)
    assert len(plans) <= 1, plans  # the month-closing's aggregate ran once, not retried
    assert files() == before  # no charge, no release or card, nothing half-written
    assert not (ws / ".private").exists()
