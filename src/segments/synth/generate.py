"""Orchestrate the generator: draw every table, validate it, write ``W/raw/`` atomically.

``generate`` writes ``customers``, ``products``, ``orders``, ``order_lines`` and ``surveys``
as Parquet, the planted truth to ``W/raw/truth/`` (``archetypes.parquet`` and
``persons.parquet``, which links a sole trader's two accounts to one person), and
``manifest.json`` (seed, parameters, row counts, schema version, ``"synthetic": true`` and
the SHA-256 of every file). Everything is written to a temporary folder first and renamed
into place, so a failed run leaves nothing half-written. ``load_raw`` reads one table back
and validates it, including foreign keys and dates after ``as_of``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
from tqdm import tqdm

from segments import schema
from segments._tables import bound_table_digests, read_table, to_pandas
from segments.exceptions import SchemaError, WorkspaceError
from segments.months import add_months, month_start
from segments.schema import (
    ARCHETYPES,
    RAW_TABLES,
    SCHEMA_VERSION,
    TableSchema,
    check_foreign_key,
    validate,
)
from segments.synth.customers import (
    AccountDraw,
    build_customers,
    draw_accounts,
    finish_customers,
)
from segments.synth.defaults import DEFAULT_DATASET, DefaultDataset
from segments.synth.orders import generate_orders
from segments.synth.products import generate_products
from segments.synth.surveys import SurveyDraw
from segments.workspace import (
    MANIFEST,
    Workspace,
    atomic_write_with,
    make_private,
    parquet_digests,
    sha256_file,
    write_json,
)

__all__ = [
    "DEFAULT_DATASET",
    "PERSONS",
    "TRUTH_TABLES",
    "DefaultDataset",
    "GenerateResult",
    "copy_default_dataset",
    "generate",
    "load_raw",
    "read_manifest",
    "window_start",
]

PERSONS = TableSchema(
    "persons",
    (
        schema.Column("customer_id", pl.Int64, "B", min_value=1),
        schema.Column(
            "person_id",
            pl.Int64,
            "B",
            min_value=1,
            description="same for a sole trader's private and business account",
        ),
    ),
    key=("customer_id",),
    description="planted truth: which accounts belong to one person (sole traders)",
)
TRUTH_TABLES: dict[str, TableSchema] = {"archetypes": ARCHETYPES, "persons": PERSONS}
#: Foreign keys checked on load: child table -> [(column, parent table)].
FOREIGN_KEYS = {
    "orders": [("customer_id", "customers")],
    "order_lines": [("order_id", "orders"), ("product_id", "products")],
    "archetypes": [("customer_id", "customers")],
    "persons": [("customer_id", "customers")],
}
#: Above this many rows pandera checks a slice; every rule is still checked on all rows
#: (in polars, see ``_fast_check``), so the slice only bounds pandera's cost.
PANDERA_MAX_ROWS = 20_000
_PARQUET: dict[str, Any] = {"compression": "zstd", "compression_level": 1, "statistics": True}
#: The order lines (nine tenths of the bytes) in LZ4: about a third larger than zstd, but
#: cheaper to write and two to three times faster to read back.
_PARQUET_ORDER_LINES: dict[str, Any] = {"compression": "lz4", "statistics": True}


@dataclass(frozen=True)
class GenerateResult:
    """What :func:`generate` wrote: the raw folder, its manifest and seconds per step."""

    path: Path
    manifest: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def window_start(as_of: dt.date, months: int) -> dt.date:
    """First day of the order history: the first of the month ``months - 1`` months before
    ``as_of``'s month.

    Examples
    --------
    >>> window_start(dt.date(2026, 10, 31), 36)
    datetime.date(2023, 11, 1)
    """
    return add_months(month_start(as_of), -(months - 1))


def _check_parameters(
    customers: int, months: int, as_of: dt.date, seed: int, workers: int = 1
) -> None:
    if not isinstance(customers, int) or customers < 1:
        raise ValueError(
            f"parameter 'customers' must be a positive integer, got {customers!r}; "
            "fix: pass --customers N with N >= 1"
        )
    if not isinstance(months, int) or not 1 <= months <= 240:
        raise ValueError(
            f"parameter 'months' must be an integer in 1..240, got {months!r}; "
            "fix: pass --months M with 1 <= M <= 240"
        )
    if not isinstance(as_of, dt.date):
        raise ValueError(
            f"parameter 'as_of' must be a date, got {as_of!r}; fix: pass --as-of YYYY-MM-DD"
        )
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"parameter 'seed' must be a non-negative integer, got {seed!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(
            f"parameter 'workers' must be a positive integer, got {workers!r}; "
            "fix: pass workers=1 or more (2 on this machine)"
        )


def _refuse_erased(ws: Workspace) -> None:
    """Refuse to replace raw data of a workspace whose subject log records erasures: the
    regenerated (or recopied) data would hold the erased people again (AK-5)."""
    if not ws.subject_log.is_file():
        return
    try:
        entries = json.loads(ws.subject_log.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        entries = [{"action": "erasure"}]  # unreadable: assume the worst
    erasures = [e for e in entries if not isinstance(e, dict) or e.get("action") == "erasure"]
    if erasures:
        raise WorkspaceError(
            f"workspace {ws.root}: the erasure log {ws.subject_log} records "
            f"{len(erasures)} erasure(s); replacing W/raw would bring the erased people back. "
            "Fix: generate into a new --workspace (or delete this workspace, erasure log "
            "included, if it holds only synthetic data you no longer need)"
        )


def _refuse_non_empty(raw: Path, force: bool) -> None:
    if raw.exists() and any(raw.iterdir()) and not force:
        raise WorkspaceError(
            f"{raw} is not empty; refusing to overwrite generated data. Fix: pass --force "
            "(force=True) to replace it, or choose another --workspace"
        )


@contextlib.contextmanager
def _staging(ws: Workspace) -> Iterator[Path]:
    """A temporary folder beside ``W/raw`` that replaces it only if the block succeeds."""
    ws.check_usable()
    ws.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    ws.sweep()  # leftovers of a killed generate or prepare
    tmp = Path(tempfile.mkdtemp(dir=ws.root, prefix=f".raw-staging-p{os.getpid()}-"))
    try:
        yield tmp
        _make_private(tmp)
        old = None
        if ws.raw.exists():
            old = Path(tempfile.mkdtemp(dir=ws.root, prefix=f".raw-old-p{os.getpid()}-"))
            os.replace(ws.raw, old / ws.raw.name)
        os.replace(tmp, ws.raw)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_parquet(frame: pl.DataFrame, settings: dict[str, Any], path: Path) -> None:
    frame.write_parquet(path, **settings)


def _write_and_hash(path: Path, frame: pl.DataFrame) -> str:
    """Write ``frame`` to ``path`` atomically; its SHA-256."""
    settings = _PARQUET_ORDER_LINES if path.name == "order_lines.parquet" else _PARQUET
    atomic_write_with(path, partial(_write_parquet, frame, settings))
    return sha256_file(path)


#: Month 0 of the order-line partitioning (numpy's datetime64[M] counts months from it).
_EPOCH = dt.date(1970, 1, 1)


class _PartitionedLines:
    """Writes the order lines block by block, as drawn, into month partitions
    (``order_lines.parquet/month=YYYY-MM/part-<block>.parquet``): the whole table is never
    held in memory, and a month is a folder of its own (history is never rewritten).

    Every block is checked on all its rows before it is written: the column rules, the key
    (blocks cover disjoint order-id ranges in order, so a key unique in each block is unique
    in the table) and both foreign keys (a block's lines reference the block's own orders).
    Order ids run 1..n in date order, so a block's lines fall into consecutive months and
    reading the partitions in sorted order gives the lines in order-id order: the same rows,
    in the same order, for a seed.
    """

    def __init__(self, ws: Workspace, folder: Path, products: pl.DataFrame, as_of: dt.date):
        self.ws, self.folder, self.products, self.as_of = ws, folder, products, as_of
        self.table = RAW_TABLES["order_lines"]
        self.digests: dict[str, str] = {}
        self.rows = 0

    def __call__(
        self, block: int, lines: pl.DataFrame, first_order_id: int, order_month: np.ndarray
    ) -> None:
        if block == 0:
            _validate_slice(lines, self.table, self.as_of)
        if not _fast_check(lines, self.table, self.as_of):
            validate(lines, self.table, as_of=self.as_of)  # raises the detailed error
        if not _key_strictly_increasing(lines, self.table):
            schema._check_unique_key(lines, self.table)
        _check_foreign_key(lines, "order_lines", self.products, "products", "product_id")
        order_id = lines["order_id"].to_numpy()
        position = order_id - first_order_id
        if len(order_id) and (position.min() < 0 or position.max() >= len(order_month)):
            block_orders = pl.DataFrame(
                {"order_id": np.arange(first_order_id, first_order_id + len(order_month))}
            )
            check_foreign_key(lines, "order_lines", block_orders, "orders", "order_id")  # raises
        month = order_month[position]
        cuts = np.flatnonzero(np.diff(month)) + 1
        for first, stop in zip([0, *cuts.tolist()], [*cuts.tolist(), len(month)], strict=True):
            if stop <= first:
                continue
            day = add_months(_EPOCH, int(month[first]))  # months since 1970-01
            path = self.ws.partition_file(self.folder, day, block)
            path.parent.mkdir(parents=True, exist_ok=True)
            part = lines.slice(first, stop - first)
            atomic_write_with(path, partial(_write_parquet, part, _PARQUET_ORDER_LINES))
            rel = path.relative_to(self.folder.parent).as_posix()
            self.digests[rel] = sha256_file(path)
        self.rows += lines.height


#: Up to this many orders the ``orders`` table is gathered and written in one piece (the
#: default dataset and the test sizes: the same file as always); above it each month is
#: checked and appended to the file as a row group of its own as it is drawn, so the table
#: is never held in memory. The rows are the same either way.
ORDERS_IN_MEMORY = 1 << 23


class _OrdersFile:
    """Collects the months of the ``orders`` table; past :data:`ORDERS_IN_MEMORY` orders,
    checks each month on all its rows (column rules, key, customers foreign key) and
    appends it to ``orders.parquet`` instead."""

    def __init__(self, path: Path, customer_ids: pl.DataFrame, as_of: dt.date):
        self.path, self.customer_ids, self.as_of = path, customer_ids, as_of
        self.table = RAW_TABLES["orders"]
        self.months: list[pl.DataFrame] = []
        self.held = 0
        self.rows = 0
        self.writer: pq.ParquetWriter | None = None
        self.last_id = 0

    def __call__(self, orders: pl.DataFrame) -> None:
        self.rows += orders.height
        if self.writer is None:
            self.months.append(orders)
            self.held += orders.height
            if self.held <= ORDERS_IN_MEMORY:
                return
            held, self.months = self.months, []
            for month in held:
                self._append(month)
        else:
            self._append(orders)

    def _append(self, orders: pl.DataFrame) -> None:
        if orders.height == 0:
            return
        if self.writer is None:
            _validate_slice(orders, self.table, self.as_of)
        if not _fast_check(orders, self.table, self.as_of):
            validate(orders, self.table, as_of=self.as_of)  # raises the detailed error
        ids = orders["order_id"]
        if ids[0] != self.last_id + 1 or not _key_strictly_increasing(orders, self.table):
            schema._check_unique_key(orders, self.table)
            raise SchemaError(  # pragma: no cover - the generator numbers orders 1..n
                "table 'orders', column 'order_id': rule 'ids 1..n in date order', "
                f"value {ids[0]}; fix: report this generator bug"
            )
        self.last_id = int(ids[-1])
        _check_foreign_key(orders, "orders", self.customer_ids, "customers", "customer_id")
        table = orders.to_arrow()
        if self.writer is None:
            self.writer = pq.ParquetWriter(
                self.path,
                table.schema,
                compression="zstd",
                compression_level=_PARQUET["compression_level"],
                write_statistics=True,
            )
        self.writer.write_table(table.cast(self.writer.schema))

    @property
    def streamed(self) -> bool:
        return self.writer is not None

    def frame(self) -> pl.DataFrame:
        """The whole table (when it was held)."""
        assert self.writer is None
        return pl.concat(self.months)

    def close(self) -> str:
        """Finish the streamed file; its SHA-256."""
        assert self.writer is not None
        self.writer.close()
        return sha256_file(self.path)


def _build_customers(draw: AccountDraw) -> pl.DataFrame:
    """:func:`build_customers`, then the draw's per-account frame is dropped: its columns
    were needed for the strings only (``hidden``, ``truth`` and ``persons`` keep theirs)."""
    table = build_customers(draw)
    draw.accounts = draw.accounts.clear()
    return table


def _make_private(folder: Path) -> None:
    """Raw data holds direct identifiers: owner-only (0700 folders, 0600 files), whatever
    the umask."""
    make_private(folder)


def _fast_check(df: pl.DataFrame, table: TableSchema, as_of: dt.date) -> bool:
    """Every column rule of ``table`` and ``as_of`` on every row in one polars pass; True if
    all hold.

    Cheaper than pandera on tens of millions of rows (polars evaluates the rules in parallel);
    when a rule fails, the caller runs :func:`segments.schema.validate` for the detailed error.
    """
    if df.columns != table.names or any(df.schema[c.name] != c.dtype for c in table.columns):
        return False
    checks: list[pl.Expr] = []
    for c in table.columns:
        col = pl.col(c.name)
        if not c.nullable:
            checks.append(col.null_count() == 0)
        if c.allowed is not None:
            checks.append((col.is_in(list(c.allowed)) | col.is_null()).all())
        if c.pattern is not None:
            checks.append((col.str.contains(f"^(?:{c.pattern})$") | col.is_null()).all())
        if c.min_value is not None:
            checks.append((col >= c.min_value).all())
        if c.max_value is not None:
            checks.append((col <= c.max_value).all())
        if c.dtype == pl.Date:
            checks.append((col <= as_of).all())
    return not checks or all(df.select(e.alias(f"rule_{i}") for i, e in enumerate(checks)).row(0))


def _key_strictly_increasing(df: pl.DataFrame, table: TableSchema) -> bool:
    """True if the integer key of ``table`` strictly increases down the rows, which proves it
    unique in one linear pass (the generator writes every table in key order); False means
    "not proven", and the caller falls back to the hash-based check."""
    key = list(table.key)
    if not 1 <= len(key) <= 2 or not all(df.schema[k].is_integer() for k in key):
        return False
    if any(df[k].null_count() for k in key):
        return False
    if df.height < 2:
        return True
    if len(key) == 1:
        packed = df[key[0]].to_numpy().astype(np.int64, copy=False)
    else:
        hi, lo = (df[k].to_numpy() for k in key)
        if not (hi.min() >= 0 and hi.max() < 2**46 and lo.min() >= 0 and lo.max() < 2**16):
            return False
        # both parts small and non-negative: packing keeps the (hi, lo) order
        packed = hi.astype(np.int64) << 16
        packed |= lo
    return bool(np.all(packed[1:] > packed[:-1]))


def _validate_for_write(df: pl.DataFrame, table: TableSchema, as_of: dt.date) -> None:
    """Validate with pandera (on a slice of large tables) and every rule on all rows."""
    _validate_slice(df, table, as_of)
    _validate_all_rows(df, table, as_of)


def _validate_slice(df: pl.DataFrame, table: TableSchema, as_of: dt.date) -> None:
    """Validate with pandera the first :data:`PANDERA_MAX_ROWS` rows (a small table: all)."""
    validate(df.head(PANDERA_MAX_ROWS), table, as_of=as_of)


def _validate_all_rows(df: pl.DataFrame, table: TableSchema, as_of: dt.date) -> None:
    """Every rule of ``table`` on all rows of a table larger than pandera's slice."""
    if df.height <= PANDERA_MAX_ROWS:
        return
    if not _fast_check(df, table, as_of):
        validate(df, table, as_of=as_of)  # raises the detailed error
    if table.key and not _key_strictly_increasing(df, table):
        schema._check_unique_key(df, table)


def _check_foreign_key(
    child: pl.DataFrame, child_table: str, parent: pl.DataFrame, parent_table: str, column: str
) -> None:
    """:func:`segments.schema.check_foreign_key`, with a fast path for integer keys: a lookup
    table over the parent's key range checks every child row in one gather instead of a
    hash join; anything it cannot prove goes to the general check (and its error)."""
    keys, refs = parent[column], child[column]
    integer = keys.dtype.is_integer() and refs.dtype.is_integer()
    if integer and keys.len() and refs.len() and keys.null_count() == refs.null_count() == 0:
        key_values, ref_values = keys.to_numpy(), refs.to_numpy()
        lo, hi = int(key_values.min()), int(key_values.max())
        if lo >= 0 and hi < 2**28:
            known = np.zeros(hi + 1, dtype=np.bool_)
            known[key_values] = True
            # the bounds are checked first, so the gather below stays inside the table
            if lo <= ref_values.min() and ref_values.max() <= hi and known[ref_values].all():
                return
    check_foreign_key(child, child_table, parent, parent_table, column)


def generate(
    workspace: Workspace | str | os.PathLike[str],
    *,
    customers: int = DEFAULT_DATASET.customers,
    months: int = DEFAULT_DATASET.months,
    as_of: dt.date = DEFAULT_DATASET.as_of,
    seed: int = DEFAULT_DATASET.seed,
    force: bool = False,
    progress: bool | None = None,
    workers: int = 2,
) -> GenerateResult:
    """Generate the synthetic raw tables into ``W/raw/``.

    Parameters
    ----------
    workspace : Workspace or path
    customers : int
        Number of customer accounts.
    months : int
        Length of the order history in months, ending at ``as_of``.
    as_of : date
        Last day of the history; no date in any table is later.
    seed : int
        Seed of every random draw: same seed and parameters give byte-identical files.
    force : bool
        Replace a non-empty ``W/raw/``.
    progress : bool, optional
        Show a progress bar (default: for 100,000 customers or more).
    workers : int
        Threads drawing the order lines; the files are identical for any number.

    Returns
    -------
    GenerateResult

    Raises
    ------
    ValueError
        For an invalid parameter.
    WorkspaceError
        If ``W/raw/`` is not empty and ``force`` is false.

    Examples
    --------
    >>> import tempfile, datetime
    >>> result = generate(tempfile.mkdtemp(), customers=200, months=3,
    ...                   as_of=datetime.date(2026, 3, 31), seed=1)
    >>> result.manifest["synthetic"], result.manifest["row_counts"]["customers"]
    (True, 200)
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    _check_parameters(customers, months, as_of, seed, workers)
    _refuse_non_empty(ws.raw, force)
    _refuse_erased(ws)
    start = window_start(as_of, months)
    rng_customers, rng_products, rng_orders, rng_surveys, rng_finish = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )
    seconds: dict[str, float] = {}
    show = customers >= 100_000 if progress is None else progress
    bar = tqdm(total=7, desc="segments generate", unit="step", disable=not show)
    clock = time.perf_counter()

    def step(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 3)
        clock = now
        bar.set_postfix_str(name)
        bar.update(1)

    tables: dict[str, pl.DataFrame] = {}
    digests: dict[str, Future[str]] = {}
    verdicts: list[Future[None]] = []
    # Each table is checked on all rows and written (and hashed) on background threads as
    # soon as it is drawn, while the main thread draws the next; polars, numpy and hashlib
    # release the GIL in their loops, so both cores stay busy. A failed check raises before
    # the staging folder is published, so nothing is ever written half-way.
    with bar, _staging(ws) as tmp, ThreadPoolExecutor(max_workers=4) as pool:
        try:

            def publish(
                rel: str,
                frame: pl.DataFrame,
                table: TableSchema,
                checks: tuple[Callable[[], None], ...] = (),
            ) -> None:
                """Check ``frame`` (pandera here; the all-row rules and ``checks`` on one
                background thread) and write it (on another); failures surface below."""
                _validate_slice(frame, table, as_of)

                def check() -> None:
                    _validate_all_rows(frame, table, as_of)
                    for extra in checks:
                        extra()

                tables[rel] = frame
                verdicts.append(pool.submit(check))
                digests[rel] = pool.submit(_write_and_hash, tmp / rel, frame)

            products_job = pool.submit(generate_products, rng_products)
            accounts = draw_accounts(customers, window_start=start, as_of=as_of, rng=rng_customers)
            customer_job = pool.submit(_build_customers, accounts)  # strings, beside the orders
            step("customers")
            products = products_job.result()
            publish(ws.raw_table("products").name, products, RAW_TABLES["products"])
            step("products")
            lines_writer = _PartitionedLines(ws, tmp / "order_lines.parquet", products, as_of)
            ids = accounts.hidden.select("customer_id")
            orders_file = _OrdersFile(tmp / ws.raw_table("orders").name, ids, as_of)
            survey: SurveyDraw | None = None

            def take_month(month: pl.DataFrame) -> None:
                nonlocal survey
                orders_file(month)
                if survey is None:  # askable customers come from the customer table
                    survey = SurveyDraw(
                        customer_job.result(), accounts.hidden, as_of=as_of, rng=rng_surveys
                    )
                survey.add(month)

            spill = tmp / ".orders-by-month"
            drawn = generate_orders(
                accounts.hidden,
                products,
                window_start=start,
                as_of=as_of,
                rng=rng_orders,
                workers=workers,
                line_sink=lines_writer,
                order_sink=take_month,
                spill=spill,
            )
            shutil.rmtree(spill, ignore_errors=True)
            fk = _check_foreign_key
            step("orders")
            customer_table = finish_customers(
                customer_job.result(),
                drawn.last_order_day,
                window_start=start,
                as_of=as_of,
                rng=rng_finish,
            )
            publish(ws.raw_table("customers").name, customer_table, RAW_TABLES["customers"])
            orders_name = ws.raw_table("orders").name
            if orders_file.streamed:
                digests[orders_name] = pool.submit(orders_file.close)
            else:
                orders = orders_file.frame()
                publish(
                    orders_name,
                    orders,
                    RAW_TABLES["orders"],
                    (partial(fk, orders, "orders", customer_table, "customers", "customer_id"),),
                )
            assert survey is not None  # a window has at least one month
            publish(ws.raw_table("surveys").name, survey.finish(), RAW_TABLES["surveys"])
            step("surveys")
            for name, frame in {"archetypes": accounts.truth, "persons": accounts.persons}.items():
                publish(
                    f"truth/{name}.parquet",
                    frame,
                    TRUTH_TABLES[name],
                    (partial(fk, frame, name, customer_table, "customers", "customer_id"),),
                )
            step("validate")
            for verdict in verdicts:
                verdict.result()  # a failed check raises here; the staging folder is removed
            written = {rel: digests[rel].result() for rel in digests} | lines_writer.digests
            files = dict(sorted(written.items()))
            step("write")
        except BaseException:
            pool.shutdown(cancel_futures=True)  # the staging folder is then removed
            raise
        manifest = {
            "synthetic": True,
            "generator": "segments.synth",
            "schema_version": SCHEMA_VERSION,
            "seed": seed,
            "parameters": {
                "customers": customers,
                "months": months,
                "as_of": as_of.isoformat(),
                "window_start": start.isoformat(),
            },
            "row_counts": dict(
                sorted(
                    {rel.removesuffix(".parquet"): f.height for rel, f in tables.items()}.items()
                    | {("order_lines", lines_writer.rows), ("orders", orders_file.rows)}
                )
            ),
            "personnummer": accounts.stats,
            "files": files,
        }
        write_json(tmp / MANIFEST, manifest)
        step("hash")
    return GenerateResult(ws.raw, manifest, seconds)


def read_manifest(ws: Workspace) -> dict[str, Any]:
    """The manifest of ``W/raw/`` (raises WorkspaceError if there is none): see
    :meth:`Workspace.read_manifest <segments.workspace.Workspace.read_manifest>`."""
    return ws.read_manifest(required=True)


def _table_path(ws: Workspace, table: str) -> tuple[Path, str, TableSchema]:
    if table in RAW_TABLES:
        return ws.raw_table(table), f"{table}.parquet", RAW_TABLES[table]
    if table in TRUTH_TABLES:
        return ws.truth / f"{table}.parquet", f"truth/{table}.parquet", TRUTH_TABLES[table]
    raise ValueError(
        f"parameter 'table': unknown table {table!r}; "
        f"choose one of {sorted(RAW_TABLES) + sorted(TRUTH_TABLES)}"
    )


def load_raw(
    workspace: Workspace | str | os.PathLike[str],
    table: str,
    as_of: dt.date | None = None,
    *,
    verify_hash: bool = True,
) -> pd.DataFrame:
    """Read one raw (or truth) table and validate it.

    Checks the file against the manifest's SHA-256, the schema (columns, dtypes, nulls,
    allowed values, patterns, bounds, unique key), dates after ``as_of`` (default: the
    manifest's ``as_of``) and foreign keys into the parent tables.

    Parameters
    ----------
    workspace : Workspace or path
    table : str
        ``customers``, ``products``, ``orders``, ``order_lines``, ``surveys``, or a truth
        table (``archetypes``, ``persons``; only evaluations read these).
    as_of : date, optional
    verify_hash : bool
        Compare the file with the manifest's SHA-256 when a manifest exists.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    SchemaError
        Naming the table, column, rule, an offending value and the fix.
    WorkspaceError
        If the table is missing or differs from the manifest.
    """
    return to_pandas(load_raw_pl(workspace, table, as_of, verify_hash=verify_hash))


def load_raw_pl(
    workspace: Workspace | str | os.PathLike[str],
    table: str,
    as_of: dt.date | None = None,
    *,
    verify_hash: bool = True,
) -> pl.DataFrame:
    """:func:`load_raw` as polars (for internal callers)."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    path, table_schema, as_of = checked_raw_path(ws, table, as_of, verify_hash=verify_hash)
    try:
        df = read_table(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise SchemaError(
            f"table {table!r}: cannot read {path} as Parquet ({exc}); fix: "
            "regenerate or re-export the table"
        ) from None
    validate(df, table_schema, as_of=as_of)
    for column, parent in FOREIGN_KEYS.get(table, []):
        parent_path = ws.raw_table(parent)
        ws.require(parent_path, f"segments generate --workspace {ws.root}")
        parent_keys = read_table(parent_path, columns=[column])
        check_foreign_key(df, table, parent_keys, parent, column)
    return df


def checked_raw_path(
    ws: Workspace, table: str, as_of: dt.date | None = None, *, verify_hash: bool = True
) -> tuple[Path, TableSchema, dt.date | None]:
    """:func:`load_raw_pl`'s checks before it reads ``table``: the file exists and (with
    ``verify_hash``) its SHA-256 is the one the manifest records; the table's path, schema
    and the ``as_of`` its dates are checked against (the manifest's when not given). A
    reader that parses the table in pieces (prepare's chunked orders) makes these checks
    first, with the same messages."""
    path, rel, table_schema = _table_path(ws, table)
    ws.require(path, f"segments generate --workspace {ws.root}")
    manifest = ws.read_manifest()
    recorded = {
        name: digest
        for name, digest in manifest.get("files", {}).items()
        if name == rel or name.startswith(rel + "/")
    }
    if verify_hash and not recorded:
        # a manifest that vouches for nothing would switch the check off (review r10a F9)
        raise WorkspaceError(
            f"table {table!r}: {ws.manifest} records no SHA-256 for {rel} (its 'files' were "
            "removed or never written); rule: every raw table is read against the digest its "
            "writer recorded; fix: regenerate with `segments generate --force` or ingest the "
            "export again instead of editing W/raw/"
        )
    if verify_hash:
        # every partition file, none left out; inside a run's binding to W/raw/ (a purge),
        # the digests of its one hashing, which the read below is checked against
        found = bound_table_digests(path, rel)
        if found is None:
            found = parquet_digests(path, rel)
        if found != recorded:
            differ = sorted(set(found) ^ set(recorded)) or sorted(
                n for n in found if found[n] != recorded[n]
            )
            raise WorkspaceError(
                f"table {table!r}: {ws.raw / differ[0]} does not match its SHA-256 in "
                f"{ws.manifest} (missing, added or changed); fix: regenerate with "
                "`segments generate --force` instead of editing raw files"
            )
    if as_of is None and "parameters" in manifest:
        as_of = dt.date.fromisoformat(manifest["parameters"]["as_of"])
    return path, table_schema, as_of


def copy_default_dataset(
    workspace: Workspace | str | os.PathLike[str],
    *,
    force: bool = False,
    source: Path | None = None,
) -> Path:
    """Copy the committed default dataset into ``W/raw/`` after checking its manifest hashes.

    Parameters
    ----------
    workspace : Workspace or path
    force : bool
        Replace a non-empty ``W/raw/``.
    source : Path, optional
        The dataset folder (default :data:`DEFAULT_DATASET`'s path).

    Returns
    -------
    Path
        ``W/raw``.

    Raises
    ------
    WorkspaceError
        If the dataset is missing, a file does not match its SHA-256, or ``W/raw/`` is not
        empty and ``force`` is false.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    src = Path(source) if source is not None else DEFAULT_DATASET.path
    d = DEFAULT_DATASET
    regenerate = (
        f"segments generate --customers {d.customers} --months {d.months} "
        f"--as-of {d.as_of} --seed {d.seed}"
    )
    if not (src / MANIFEST).exists():
        raise WorkspaceError(f"default dataset not found at {src}; fix: run `{regenerate}`")
    manifest = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    for rel, digest in manifest["files"].items():
        found = sha256_file(src / rel) if (src / rel).exists() else "missing"
        if found != digest:
            raise WorkspaceError(
                f"default dataset file {src / rel}: SHA-256 {found[:12]} does not match the "
                f"manifest ({digest[:12]}); fix: restore it from git or run `{regenerate}`"
            )
    _refuse_non_empty(ws.raw, force)
    _refuse_erased(ws)
    with _staging(ws) as tmp:
        for rel in [*manifest["files"], MANIFEST]:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, tmp / rel)
    return ws.raw
