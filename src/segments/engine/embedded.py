"""The embedded out-of-core backend: DuckDB in the driver's process, spilling to the workspace.

Chosen over polars' streaming engine by measurement on the project's 2-core machine
(``benchmarks/bench_engines.py``; 10 million prepared lines, cells per person and category:
DuckDB 1.8 s and 1.0 GB peak, polars streaming 4.1 s and 1.8 GB). DuckDB keeps its working
memory under ``memory_limit`` and writes what does not fit to ``temp_directory``, which is
always a folder inside the caller's ``scratch`` (the workspace's private area), never the
system temp folder. Every query is built from public parameters (dates, file paths of the
workspace); no data value is ever spliced into SQL.

Prepare's join of one month's raw lines with its orders (:meth:`Engine.join_order_lines`)
is the base class's, in polars, here as on Spark: the month's prepared lines are built on
the driver anyway (polars writes the partition's bytes, the same on every engine), and a
join in DuckDB added the engine's copy of the month to the driver's — one month of 10
million lines (555,248 lines): DuckDB +482 MB over the start and 11.3 s, +391 MB streamed
out unsorted, polars +209 MB and 5.0 s (issue 21).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from segments.engine.base import (
    KEY_HEX_DIGITS,
    ORDER_COUNT_SCHEMA,
    Engine,
    LineQuery,
    Window,
    check_categories,
    collect_sorted,
    feature_sum_schema,
    key_cell_schema,
)
from segments.exceptions import WorkspaceError

__all__ = ["DuckDBEngine"]

#: SQL of :func:`segments.engine.base.ore_to_sek` (half away from zero, in integers).
#: SQL of one line's amount in öre, exact (the sums are in integers).
_ORE = "CAST(floor(amount_sek * 100 + 0.5) AS BIGINT)"
_ORE_TO_SEK = "CASE WHEN _ore >= 0 THEN (_ore + 50) // 100 ELSE -((50 - _ore) // 100) END"


def _quoted(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _files_sql(files: Sequence[Path]) -> str:
    return f"read_parquet([{', '.join(map(_quoted, files))}])"


def _window_sql(window: Window) -> str:
    if window is None:
        return "TRUE"
    start, end = (d if isinstance(d, dt.date) else dt.date.fromisoformat(str(d)) for d in window)
    return f"order_date >= DATE '{start.isoformat()}' AND order_date < DATE '{end.isoformat()}'"


def _rows_sql(query: LineQuery) -> str:
    """``FROM`` this: the query's lines in its window."""
    return f"{_files_sql(query.files)} WHERE {_window_sql(query.window)}"


#: The least memory DuckDB is given, whatever ``memory_limit`` says. Measured (DuckDB 2.0.1,
#: one thread, prepared lines with 64-character pseudonyms; tests/test_engine_out_of_core.py;
#: issue 21): at 64 MB, the floor before, the features' per-person sums (a 22-column
#: aggregate) of 1.6 million lines raised OutOfMemoryException within 0.1 s; at 128 MB the
#: cells and batches by month, the orders and the features completed on 6.4 million lines
#: (1.28 million persons), spilling.
MIN_MEMORY_LIMIT = 128 * 2**20

#: DuckDB's words for a full disk under its spill folder. Reproduced (DuckDB 2.0.1, 128 MB
#: limit, 800,000 lines, the spill folder on an 8 MB tmpfs; h21d): a write of a spill file
#: that the disk refuses raises ``IOException`` 'IO Error: Could not write file
#: ".../duckdb_temp_..._storage_DEFAULT-0.tmp": No space left on device'; reaching the
#: folder's cap, ``max_temp_directory_size`` (by default 90 % of the disk's free space),
#: raises ``OutOfMemoryException`` 'Out of Memory Error: failed to offload data block of size
#: 256.0 KiB (7.0 MiB/7.1 MiB used). This limit was set by the 'max_temp_directory_size'
#: setting...' — the form a filling disk takes first, the cap following the free space
#: (r15a F1). A memory shortage without a full disk says "could not allocate" or "failed to
#: allocate" and names no such setting.
_DISK_FULL_IO = ("No space left on device", "Disk quota exceeded")
_DISK_FULL_CAP = "max_temp_directory_size"
#: DuckDB's words when a spill file outgrows the largest file the process may write (``ulimit
#: -f``, which Python's ignored SIGXFSZ turns into EFBIG; r15a F2): 'IO Error: Could not write
#: file ".../duckdb_temp_..._0.tmp": File too large'.
_FILE_TOO_LARGE = "File too large"


def spill_refused(exc: BaseException) -> bool:
    """True when ``exc`` is DuckDB saying it could not spill: the disk under its spill
    folder is full (:data:`_DISK_FULL_IO`, :data:`_DISK_FULL_CAP`) or a spill file outgrew
    the largest file the process may write (:data:`_FILE_TOO_LARGE`)."""
    import duckdb

    text = str(exc)
    if isinstance(exc, duckdb.IOException):
        return any(words in text for words in (*_DISK_FULL_IO, _FILE_TOO_LARGE))
    return isinstance(exc, duckdb.OutOfMemoryException) and _DISK_FULL_CAP in text


def _size(count: float) -> str:
    """Bytes for a person: ``1.5 GB``, ``128 MB``, ``12 KB`` (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" or count >= 100 else f"{count:.3g} {unit}"
        count /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _free(folder: Path) -> int | None:
    """Bytes free on the disk holding ``folder`` (or its nearest existing parent)."""
    for place in (folder, *folder.parents):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(place).free
    return None  # pragma: no cover - the root always exists


#: A window starting on or before this day is described as reading every line before its end.
_OPEN_START = dt.date(1900, 1, 1)


def _window_text(query: LineQuery) -> str:
    if query.window is None:
        return "all the lines"
    start, end = query.window
    if start <= _OPEN_START:  # a release's window without a start opens on 1900-01-01 (r15a F4)
        return f"all the lines before {end}"
    return f"the lines from {start} to {end} (end excluded)"


#: Rows per Arrow record batch a streamed result is handed over in (~50 MB of pseudonyms).
CELL_BATCH_ROWS = 1 << 19


def _cells_sql(query: LineQuery) -> str:
    """Spend (öre summed, then whole SEK) and units per person and category (and month)."""
    month = "strftime(order_date, '%Y-%m') AS month, " if query.by_month else ""
    keys = "person_id, month, category" if query.by_month else "person_id, category"
    return f"""
        WITH agg AS (
            SELECT person_id, {month}category,
                   sum({_ORE}) AS _ore,
                   sum(CAST(quantity AS BIGINT)) AS units
            FROM {_rows_sql(query)}
            GROUP BY ALL
        )
        SELECT {keys}, CAST({_ORE_TO_SEK} AS BIGINT) AS sek, CAST(units AS BIGINT) AS units
        FROM agg
    """


#: The table :meth:`DuckDBEngine._cell_rows` aggregates a window's lines into: one row per person.
_PERSONS = "_persons"

#: Lines per person of a window from which the per-person aggregate runs on every core
#: (:func:`person_aggregate_plan`).
PARALLEL_LINES_PER_PERSON = 100


def _person_row_bytes(categories: int) -> int:
    """Bytes of the per-person aggregate's hash table per person: the pseudonym and a sum
    state per category for spend and for units, with the table's own overhead. Calibrated
    on 10 million lines (10 categories, 294,052 persons): each thread's table added
    200-210 MB to the peak, ~700 bytes a person (issue 21)."""
    return 64 + 64 * categories


#: Of ``memory_limit``, what DuckDB needs beside the aggregate's hash table (the Parquet
#: reader's row groups, the result's blocks): measured, the 10-million-line aggregate of a
#: 150 MB table failed at a 64 MB limit in one pass and in four, and completed in eight.
AGGREGATE_OVERHEAD = 40 * 2**20


#: The most passes the per-person aggregate is retried with (twice the passes each time, this
#: many at most): an OutOfMemoryException at this many is raised (:meth:`DuckDBEngine._aggregate`).
MAX_AGGREGATE_PASSES = 64


@dataclass(frozen=True)
class AggregatePlan:
    """How :meth:`DuckDBEngine._cell_rows` runs the per-person aggregate: on ``threads``
    threads, in ``passes`` passes over the lines (pass ``i`` aggregates the persons whose
    pseudonym hashes to ``i`` modulo ``passes``)."""

    threads: int
    passes: int


def person_aggregate_plan(
    lines: int, persons: int, categories: int, memory_limit: int, cores: int, load: float
) -> AggregatePlan:
    """The per-person aggregate's threads and passes, from what is known before it runs:
    the window's ``lines`` (the Parquet files' row counts), the ``persons`` expected (the
    distinct pseudonyms of the window's largest file, a lower bound), the ``categories``
    (the width of a person's row), DuckDB's ``memory_limit``, the ``cores`` it may use and
    the machine's ``load`` (its one-minute load average, this job's own work included).

    Each thread builds its own hash table of the persons whose lines it scans, and every
    month holds most persons, so each thread's table holds nearly all of them: a thread
    more costs a table more of memory (``persons`` × :func:`_person_row_bytes`) and wins
    scan time in proportion to the lines. Measured on the month-closing's frames (294,052
    persons, 10 categories, 1 GB limit, the aggregate alone; issue 21):

    * 10 million lines (34 a person): 2 threads 626-632 MB peak against 1 thread's
      413-420 MB, wall 2.0-3.9 s against 3.5-3.8 s at the same CPU time. The month-closing's
      peak would grow from 645 MB (×0.40 of the in-memory path's 1606 MB) to ~855 MB, past
      the goal of half: **one thread**.
    * 60 million lines (204 a person): 2 threads 646-651 MB against 433-449 MB (×0.09 of
      the in-memory path's 7 GB either way), wall 15.6-20.3 s against 25.6-46.5 s at the
      same CPU time (21-22 s): **every core** — when a core is free. The whole month-closing
      at 60 M on a machine at load 6-12 (three runs, one command each beside main's one
      thread): two threads 66.0 / 98.1 / 121.6 s wall against one thread's 62.2 / 76.2 /
      93.0 s, CPU 42-45 s against 40-42 s: with no idle core the second thread only waits.

    (The 60 million lines are the 10 million frames' lines six times: the same persons,
    204 lines each. A window of the prepare benchmarks' shape — 1,980,000 customers over 14
    months, ~30 lines a person — stays below the threshold and runs on one thread, not
    measured at 60 million here; r14a F3.)

    So every core when the window holds at least :data:`PARALLEL_LINES_PER_PERSON` lines a
    person, the tables of all threads fit in half of what the limit leaves beside
    :data:`AGGREGATE_OVERHEAD`, and the load is below the cores (a core idle); one thread
    otherwise. (The load includes the job's own earlier work: in four 60 M month-closings
    right after the in-memory baseline's two-thread run this took one thread every time,
    ×0.61–×0.83 of the baseline's wall, ×0.72–×0.78 its CPU.) Passes: as many as it takes for the
    threads' tables to fit in what the limit leaves, so a small limit completes by scanning
    the lines again rather than failing with DuckDB's OutOfMemoryException (r13a F4: on the
    10 million lines' frames it raised it for this wide aggregate in one pass at 64 MB and at
    128 MB, the floor, where two passes completed; on other data one pass completes at
    128 MB — r14a F4: 1.5 million persons, 7 million lines over 36 months). One
    pass at any limit that holds the tables. ``persons`` being a lower bound, too few passes
    are caught where they fail: :meth:`DuckDBEngine._aggregate` runs out of memory and the
    aggregate is run again on one thread with twice the passes (r14a F1)."""
    table = max(persons, 1) * _person_row_bytes(categories)
    budget = max(memory_limit - AGGREGATE_OVERHEAD, memory_limit // 4)
    long = lines >= PARALLEL_LINES_PER_PERSON * max(persons, 1)
    idle = load < cores
    threads = cores if cores > 1 and long and idle and cores * table <= budget // 2 else 1
    passes = max(1, -(-threads * table // budget))
    return AggregatePlan(threads=threads, passes=passes)


def _persons_sql(query: LineQuery, slots: Sequence[str], part: tuple[int, int] = (0, 1)) -> str:
    """One row per person of the window: each public category's öre sum ``o<i>`` and units
    ``u<i>`` (columns named by the category's position, its name bound as ``slots[i]``, never
    spliced into SQL; NULL where the person has no line of it), and ``_other``, the person's
    lines of no public category (refused by the caller).

    Grouped on the person alone: the hash aggregate holds one 64-character pseudonym per
    person instead of one per person and category. Measured, the bare queries on 10 million
    lines (303,030 persons, 1,841,376 cells, 2 threads, 1 GB limit): 509-515 MB peak against
    685-732 MB for the aggregate per (person, category), at the same CPU time (4.6-5.9 s
    against 4.4-5.0 s; issue 21).

    ``part`` ``(i, k)``: only the persons whose pseudonym hashes to ``i`` modulo ``k`` (one
    pass of :func:`person_aggregate_plan`)."""
    i, k = part
    persons = f" AND hash(person_id) % {k} = {i}" if k > 1 else ""
    sums = ", ".join(
        f"sum({_ORE}) FILTER (WHERE category = {slot}) AS o{i}, "
        f"sum(CAST(quantity AS BIGINT)) FILTER (WHERE category = {slot}) AS u{i}"
        for i, slot in enumerate(slots)
    )
    return f"""
        SELECT person_id, {sums},
               count(*) FILTER (WHERE category IS NULL OR category NOT IN ({", ".join(slots)}))
                   AS _other
        FROM {_rows_sql(query)}{persons}
        GROUP BY person_id
    """


def _cells_of_persons_sql(slots: Sequence[str]) -> str:
    """The rows of :func:`_cells_sql` read back from :data:`_PERSONS`: one per person and
    category with a line (its öre sum or units not NULL: amount and quantity are required
    columns of prepared lines), öre rounded to whole SEK."""
    cells = " UNION ALL ".join(
        f"SELECT person_id, CAST({slot} AS VARCHAR) AS category, o{i} AS _ore, u{i} AS units "
        f"FROM {_PERSONS} WHERE o{i} IS NOT NULL OR u{i} IS NOT NULL"
        for i, slot in enumerate(slots)
    )
    return f"""
        WITH agg AS ({cells})
        SELECT person_id, category, CAST({_ORE_TO_SEK} AS BIGINT) AS sek,
               CAST(units AS BIGINT) AS units
        FROM agg
    """


def _key_cells_sql(query: LineQuery, cells: str | None = None) -> str:
    """:func:`_cells_sql` with each row's pseudonym replaced by its key ``pid`` and check
    ``pid_check`` inside DuckDB (:func:`segments.engine.base.person_key`), so no pseudonym
    leaves the engine.

    Keyed after the aggregate, one row per person and category: grouping the lines on the
    key instead (its hex digits parsed on every line) measured no lower peak here — DuckDB
    holds its aggregate under ``memory_limit`` either way: 10 million lines, 1.5 million
    cells, 686-703 against 626-739 MB; 30 million lines, 15 million cells, 1337-1341
    against 1330-1369 MB — for half again the CPU (3.3 against 2.2 s; 18-19 against 16-17 s).
    """
    digits = KEY_HEX_DIGITS
    month = "month, " if query.by_month else ""
    return f"""
        WITH cells AS ({cells or _cells_sql(query)})
        SELECT CAST(concat('0x', substr(person_id, strlen(person_id) - {digits - 1}))
                    AS BIGINT) AS pid,
               {month}category, sek, units,
               CAST(concat('0x', substr(person_id, 1, {digits})) AS BIGINT) AS pid_check
        FROM cells
    """


#: Memory per worker thread: the engine uses at most ``limit // THREAD_MEMORY`` threads (at
#: least one). Every thread holds its own hash tables and buffers, which a small limit cannot
#: hold twice. Measured (as for :data:`MIN_MEMORY_LIMIT`): 2 threads at 64 MB failed (cells
#: by month, orders: 400,000 lines) where 1 thread completed; at 128 MB 2 threads failed the
#: features (1.6 million lines) where 1 thread completed; 2 threads at 192 and 256 MB
#: completed. A limit of 256 MB or more (the default is half the RAM) keeps 2 threads.
THREAD_MEMORY = 128 * 2**20
#: Most of the machine's RAM the out-of-memory line suggests giving DuckDB (the driver, the OS
#: and other jobs need the rest).
MAX_RAM_SHARE = 0.75


class DuckDBEngine(Engine):
    """DuckDB, out of core.

    Parameters
    ----------
    memory_limit : int, optional
        Bytes DuckDB may hold before spilling (default: the ``SEGMENTS_MEMORY_LIMIT``
        setting, see :func:`segments.engine.memory_budget`); DuckDB is given at least
        :data:`MIN_MEMORY_LIMIT` (128 MB) whatever this says.
    threads : int, optional
        Worker threads (default: the machine's cores), at most one per
        :data:`THREAD_MEMORY` of the limit.
    """

    name = "duckdb"

    def __init__(self, memory_limit: int | None = None, threads: int | None = None) -> None:
        from segments.engine import memory_budget

        self.memory_limit = memory_limit if memory_limit is not None else memory_budget()
        self.threads = min(
            threads or os.cpu_count() or 1, max(1, self.duckdb_memory_limit // THREAD_MEMORY)
        )

    @property
    def duckdb_memory_limit(self) -> int:
        """The bytes DuckDB is given: ``memory_limit``, at least :data:`MIN_MEMORY_LIMIT`."""
        return max(self.memory_limit, MIN_MEMORY_LIMIT)

    @contextlib.contextmanager
    def connect(self, scratch: Path) -> Iterator[Any]:
        """A fresh in-memory database that spills into ``scratch/duckdb-spill``."""
        import duckdb

        spill = Path(scratch) / "duckdb-spill"
        spill.mkdir(mode=0o700, parents=True, exist_ok=True)
        con = duckdb.connect(
            ":memory:",
            config={
                "memory_limit": f"{self.duckdb_memory_limit // 2**20}MB",
                "temp_directory": str(spill),
                "threads": self.threads,
                "preserve_insertion_order": False,
                "enable_external_access": True,
            },
        )
        try:
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def _session(self, scratch: Path, building: str) -> Iterator[Any]:
        """:meth:`connect`, with DuckDB's failures of the environment raised as one
        :class:`~segments.exceptions.WorkspaceError` once the connection is closed: a spill
        it could not write (:meth:`_disk_full`) or memory its limit could not hold
        (:meth:`_out_of_memory`); ``building``: what the connection computes."""
        import duckdb

        spill = Path(scratch) / "duckdb-spill"
        try:
            with self.connect(scratch) as con:
                yield con
        except Exception as exc:
            if spill_refused(exc):
                raise self._disk_full(exc, spill, building) from exc
            if isinstance(exc, duckdb.OutOfMemoryException):
                raise self._out_of_memory(exc, spill, building) from exc
            raise

    def _limit_text(self) -> str:
        """The memory limit in force, and what was asked for when DuckDB's least raised it."""
        limit = _size(self.duckdb_memory_limit)
        if self.memory_limit < MIN_MEMORY_LIMIT:
            limit += f" (the {_size(self.memory_limit)} asked for, raised to DuckDB's least)"
        return limit

    def _out_of_memory(self, exc: BaseException, spill: Path, building: str) -> WorkspaceError:
        """The one-line error of DuckDB out of memory with no disk involved (its words say
        "could not allocate" or "failed to allocate"; r15a F3): a part of the work it holds in
        memory (a hash table's, a row group's) did not fit its limit, spilling or not — after
        the per-person aggregate's retries, if it was that. The fix is a larger limit."""
        said = " ".join(str(exc).split()).split(" Possible solutions")[0]
        return WorkspaceError(
            f"engine duckdb: out of memory at its memory limit of {self._limit_text()}: "
            f"building {building}, what DuckDB must hold in memory did not fit (it spills the "
            f"rest to {spill}; DuckDB: {said}); fix: {self._more_memory_fix()}"
        )

    def _more_memory_fix(self) -> str:
        """A larger limit to try — twice the one in force, never above ``MAX_RAM_SHARE`` of
        the machine's RAM (the driver and the OS need the rest; r15a F8: twice the default,
        half the RAM, was all of it) — or, past that, a machine with more memory."""
        from segments.engine import MEMORY_ENV_VAR, physical_memory

        ram = physical_memory()
        larger = min(2 * self.duckdb_memory_limit, int(MAX_RAM_SHARE * ram)) // 2**20
        if larger * 2**20 <= self.duckdb_memory_limit:
            return (
                f"{MEMORY_ENV_VAR} is already {_size(self.duckdb_memory_limit)} of this "
                f"machine's {_size(ram)} of RAM: run the command on a machine with more memory"
            )
        return (
            f"raise {MEMORY_ENV_VAR} above {_size(self.duckdb_memory_limit)} (e.g. "
            f"{MEMORY_ENV_VAR}={larger}MB), then run the command again"
        )

    def _disk_full(self, exc: BaseException, spill: Path, building: str) -> WorkspaceError:
        """The one-line error of a spill DuckDB could not write (:func:`spill_refused`): the
        engine, the memory limit in force, the spill folder and the disk's free space there
        (measured once the connection is closed: DuckDB has removed the failed query's spill
        files, so this is what a run can spill into), what was being built, and the fix."""
        from segments.engine import MEMORY_ENV_VAR

        said = " ".join(str(exc).split())
        if _DISK_FULL_CAP in said:  # DuckDB's cap, by default 90 % of the disk's free space
            said = said.split(" This limit was set")[0] + (
                f" DuckDB's {_DISK_FULL_CAP}, by default 90 % of the disk's free space when it"
                " started, was reached"
            )
        limit = self._limit_text()
        free = _free(spill)
        room = f"{'an unknown amount' if free is None else _size(free)} is free there"
        less = f"raise {MEMORY_ENV_VAR} above {_size(self.duckdb_memory_limit)} so less spills"
        if _FILE_TOO_LARGE in said:
            what = (
                f"a spill file in {spill} is larger than this process may write (its file-size "
                "limit, `ulimit -f`, or the file system's largest file)"
            )
            fix = f"raise that limit (`ulimit -f unlimited`), or {less}"
        else:
            what = f"the disk under the spill folder {spill} is full"
            fix = f"free disk space under {spill.parent.parent}, or {less}"
        return WorkspaceError(
            f"engine duckdb: {what}: building {building}, DuckDB held its memory limit of "
            f"{limit} and spilled the rest there, and {room} with its spill removed (DuckDB: "
            f"{said}); fix: {fix}, then run the command again"
        )

    def _cell_rows(self, con: Any, query: LineQuery) -> tuple[str, list[str]]:
        """The SQL (and its parameters) of the query's cells, :func:`_cells_sql`'s rows.

        A whole window's cells are aggregated per person first, into :data:`_PERSONS`
        (:func:`_persons_sql`; a line of a category outside the public list is refused
        here, before any row is read), then read back one row per person and category.
        Cells per month keep the aggregate per (person, month, category): a person's month
        holds few of the categories, so a row per person and month would mostly be empty."""
        if query.by_month or not query.categories:
            return _cells_sql(query), []
        params = list(dict.fromkeys(query.categories))  # one column each, even if listed twice
        slots = [f"${i}" for i in range(1, len(params) + 1)]
        plan = self._aggregate_plan(con, query, len(params))
        while not self._aggregate(con, query, slots, params, plan):
            # the plan's persons are a lower bound (one file's): a window whose persons
            # spread over many months can need more passes than planned (r14a F1)
            # (at most MAX_AGGREGATE_PASSES: the last retry runs exactly that many; r15a F1)
            plan = AggregatePlan(threads=1, passes=min(plan.passes * 2, MAX_AGGREGATE_PASSES))
        ((other,),) = con.execute(f"SELECT coalesce(sum(_other), 0) FROM {_PERSONS}").fetchall()
        if other:
            found = con.execute(f"SELECT DISTINCT category FROM {_rows_sql(query)}").fetchall()
            check_categories([row[0] for row in found], query.categories)
        return _cells_of_persons_sql(slots), params

    def _aggregate(
        self, con: Any, query: LineQuery, slots: list[str], params: list[str], plan: AggregatePlan
    ) -> bool:
        """Build :data:`_PERSONS` as ``plan`` says; False (nothing left behind) if DuckDB ran
        out of memory and fewer than :data:`MAX_AGGREGATE_PASSES` passes were tried.

        A full spill disk (:func:`spill_refused`, one of whose forms is also an
        ``OutOfMemoryException``) is raised at once, not retried: more passes scan all the
        lines again each time, and a smaller table per pass need not fit on the disk either.
        Before (h21d): the month-closing of a 20,000-customer workspace (608,805 lines), DuckDB
        given 8 MB (the floor lowered for the trial) and its spill capped at 0 bytes, ran the
        aggregate in 3, 6, 12, 24, 48 and 96 passes — 189 scans of its lines — and then
        raised the out-of-memory error."""
        import duckdb

        con.execute(f"SET threads = {plan.threads}")
        try:
            for i in range(plan.passes):
                rows = _persons_sql(query, slots, (i, plan.passes))
                into = f"INSERT INTO {_PERSONS} " if i else f"CREATE TEMP TABLE {_PERSONS} AS "
                con.execute(into + rows, params)
                con.fetchall()  # DuckDB takes no other statement while a result is unfinished
        except duckdb.OutOfMemoryException as exc:
            if plan.passes >= MAX_AGGREGATE_PASSES or spill_refused(exc):
                raise
            con.execute(f"DROP TABLE IF EXISTS {_PERSONS}")
            return False
        finally:
            con.execute(f"SET threads = {self.threads}")
        return True

    def _aggregate_plan(self, con: Any, query: LineQuery, categories: int) -> AggregatePlan:
        """:func:`person_aggregate_plan` of the query's window: its lines from the Parquet
        files' footers, its persons from the distinct pseudonyms (HyperLogLog) of its
        largest file — one read of that file's ``person_id`` column, ~0.1 s of 10 million
        lines' 3.5 s aggregate."""
        listed = ", ".join(map(_quoted, query.files))
        sizes = con.execute(
            f"SELECT file_name, num_rows FROM parquet_file_metadata([{listed}])"
        ).fetchall()
        largest = _quoted(max(sizes, key=lambda row: row[1])[0])
        ((persons,),) = con.execute(
            f"SELECT approx_count_distinct(person_id) FROM read_parquet({largest})"
        ).fetchall()
        return person_aggregate_plan(
            lines=sum(row[1] for row in sizes),
            persons=int(persons or 0),
            categories=categories,
            memory_limit=self.duckdb_memory_limit,
            cores=self.threads,
            load=os.getloadavg()[0],
        )

    def _cells(self, query: LineQuery, scratch: Path) -> pl.DataFrame:
        # streamed out as _cell_batches' (each batch checked) and sorted on the driver, which
        # holds the whole frame anyway: DuckDB's ORDER BY of a whole window's cells, read
        # into polars, raised OutOfMemoryException at 128 MB on 3 million lines (300,000
        # customers, 1 thread) after the aggregate had completed; streamed, it completed in
        # 14.7 s and equals polars. The driver's sort costs CPU (1.6 million lines, 1 GB, 2
        # threads: x1.2 a whole window, x1.4 by month); no stage calls this, a release
        # takes the keyed batches (issue 21).
        order = ["person_id", *(["month"] if query.by_month else []), "category"]
        batches = list(self._cell_batches(query, scratch))
        if not batches:
            return pl.DataFrame(schema=query.cell_schema)
        return collect_sorted(pl.concat(batches).lazy(), order)

    def _cell_batches(self, query: LineQuery, scratch: Path) -> Iterator[pl.DataFrame]:
        # the aggregate streamed out unsorted (a sort would hold the whole result): the
        # driver holds one batch of pseudonyms at a time
        yield from self._batches(lambda cells: cells, query, query.cell_schema, scratch)

    def _key_cell_batches(self, query: LineQuery, scratch: Path) -> Iterator[pl.DataFrame]:
        # keyed in DuckDB, streamed out unsorted like _cell_batches: a row is one pseudonym,
        # so two people of one key are two rows, found by the caller (never one row)
        schema = key_cell_schema(query.by_month)
        keyed = functools.partial(_key_cells_sql, query)
        yield from self._batches(keyed, query, schema, scratch)

    def _batches(
        self, wrap: Callable[[str], str], query: LineQuery, schema: Any, scratch: Path
    ) -> Iterator[pl.DataFrame]:
        """The rows of ``wrap`` of the query's cells (:meth:`_cell_rows`) as Arrow record
        batches of ``schema``, each batch's categories checked against the query's."""
        month = " by month" if query.by_month else ""
        building = f"the per-person cells{month} of {_window_text(query)}"
        with self._session(scratch, building) as con:
            sql, params = self._cell_rows(con, query)
            reader = con.sql(wrap(sql), params=params or None).to_arrow_reader(CELL_BATCH_ROWS)
            for batch in reader:
                cells = pl.from_arrow(batch)
                assert isinstance(cells, pl.DataFrame)
                check_categories(cells["category"].unique().to_list(), query.categories)
                yield cells.cast(schema)

    def _orders(self, query: LineQuery, scratch: Path) -> pl.DataFrame:
        # distinct (person, order) pairs first: a plain hash aggregate that spills, ~25 %
        # faster here than count(DISTINCT ...) per person
        sql = f"""
            SELECT person_id, CAST(count(*) AS BIGINT) AS orders
            FROM (
                SELECT DISTINCT person_id, order_id
                FROM {_rows_sql(query)}
            )
            GROUP BY person_id ORDER BY person_id
        """
        building = f"the per-person order counts of {_window_text(query)}"
        with self._session(scratch, building) as con:
            return con.sql(sql).pl().cast(ORDER_COUNT_SCHEMA)

    def _feature_sums(self, query: LineQuery, scratch: Path) -> pl.DataFrame:
        categories, channels = query.categories, query.channels
        schema = feature_sum_schema(categories, channels)
        # Codes are bound as parameters and columns named by position: a declared
        # category's name never becomes SQL.
        channel_params: list[str] = list(channels)
        category_params: list[str] = list(categories)
        by_channel = ", ".join(
            f"count(*) FILTER (WHERE channel = ${i + 1}) AS ch{i}" for i in range(len(channels))
        )
        by_quarter = ", ".join(
            f"coalesce(sum(_ore) FILTER (WHERE quarter(order_date) = {q}), 0) AS q{q}"
            for q in range(1, 5)
        )
        slots = [f"${i + 1}" for i in range(len(categories))]
        by_category = ", ".join(
            [
                *(f"coalesce(sum(_ore) FILTER (WHERE category = {s}), 0)" for s in slots),
                *(f"count(*) FILTER (WHERE category = {s})" for s in slots),
            ]
        )
        # Two queries, each sorted by person, put side by side on the driver (the same persons:
        # every line is of an order): one CTE of the lines read twice (materialised) and two
        # wide aggregates joined in one query did not go out of core. Measured (one thread,
        # 1.6 million lines, 320,149 persons): that query failed with OutOfMemoryException at
        # 128 MB, and at 1 GB (2 threads) took the same CPU as these two (2.9-3.2 against
        # 3.0-3.2 s); these completed at 128 MB, spilling, and on 6.4 million lines at 128 MB
        # (issue 21).
        lines = f"""
            SELECT person_id, order_id, order_date, channel, category,
                   CAST(floor(amount_sek * 100 + 0.5) AS BIGINT) AS _ore
            FROM {_rows_sql(query)}
        """
        per_order = f"""
            WITH o AS (
                SELECT person_id, min(order_date) AS order_date, min(channel) AS channel,
                       sum(_ore) AS _ore
                FROM ({lines}) GROUP BY person_id, order_id
            )
            SELECT person_id, max(order_date) AS last_order, count(*) AS orders,
                   sum(_ore) AS ore, {by_channel}, {by_quarter}
            FROM o GROUP BY person_id ORDER BY person_id
        """
        per_line = f"""
            SELECT person_id, count(*) AS lines, {by_category}
            FROM ({lines}) GROUP BY person_id ORDER BY person_id
        """
        codes = f"SELECT DISTINCT {{0}} FROM {_rows_sql(query)}"
        building = f"the per-person feature sums of {_window_text(query)}"
        with self._session(scratch, building) as con:
            found = {
                column: [r[0] for r in con.execute(codes.format(column)).fetchall()]
                for column in ("category", "channel")
            }
            check_categories(found["category"], categories)
            check_categories(found["channel"], channels, "channel")
            orders = con.sql(per_order, params=channel_params or None).pl()
            sums = con.sql(per_line, params=category_params or None).pl()
        if not orders["person_id"].equals(sums["person_id"]):  # pragma: no cover - invariant
            raise AssertionError("the per-order and per-line sums hold different persons")
        sums = orders.hstack(sums.drop("person_id"))
        sums.columns = list(schema)
        return sums.cast(schema)
