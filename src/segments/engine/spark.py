"""The Spark backend: the line-level stages on Apache Spark, in local mode or on a cluster.

Selected by ``segments --engine spark --master local[2]`` (or ``spark://host:7077``, ``yarn``,
…) or the settings ``SEGMENTS_ENGINE=spark`` and ``SEGMENTS_SPARK_MASTER``. Spark reads the
workspace's Parquet lines (only the partitions of the window's months,
:func:`segments.engine.base.line_files`), aggregates them per person (and cell), and hands
the small per-person frame back to the driver as Arrow, where it becomes a polars frame for
the unchanged OpenDP step. What stays on the driver: the per-person frame, OpenDP, the ledger,
the cards and the pseudonymisation key (no key ever enters a Spark job; the engine only
groups and sums columns that are already pseudonymised).

Intermediate data (shuffle and spill files) goes to ``spark.local.dir``, which the engine
sets to a folder inside the caller's ``scratch`` (the workspace's private area) when it
starts the session itself. A session the caller passes in keeps its own settings.

Exact arithmetic as in :mod:`segments.engine.base`: a line's amount in whole öre,
``floor(amount_sek * 100 + 0.5)``, summed as 64-bit integers and rounded to whole SEK half
away from zero with integer division, so Spark returns the same frames as polars and DuckDB.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from segments.engine import SPARK_MASTER_ENV_VAR
from segments.engine.base import (
    KEY_HEX_DIGITS,
    ORDER_COUNT_SCHEMA,
    Engine,
    LineQuery,
    Window,
    check_categories,
    feature_sum_schema,
    key_cell_schema,
)
from segments.exceptions import PolicyError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

__all__ = [
    "DEFAULT_MASTER",
    "MASTER_ENV_VAR",
    "SparkEngine",
    "check_master",
    "spark_conf",
    "start_session",
]

#: The setting that names the Spark master when ``--master`` is not given.
MASTER_ENV_VAR = SPARK_MASTER_ENV_VAR
#: Local mode on two cores: what the tests and a single machine use.
DEFAULT_MASTER = "local[2]"
_LOCAL = re.compile(r"^local(\[(\d+|\*)(,\d+)?\])?$")
_MASTER = re.compile(r"^(local(\[(\d+|\*)(,\d+)?\])?|(spark|mesos|k8s)://\S+|yarn)$")
#: PySpark 4 warns on import that pandas 3 is not "fully" supported; the engine never goes
#: through pandas (Arrow straight into polars), so the warning says nothing about this use.
_PANDAS_WARNING = "PySpark does not yet fully support pandas"
#: Spark's own log: errors only (the JVM's INFO and WARN lines would drown a command's output).
_LOG4J = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = spark: %p %c{1}: %m%n
"""


def check_master(master: str | None = None) -> str:
    """The Spark master to use: ``master``, else ``SEGMENTS_SPARK_MASTER``, else ``local[2]``.

    Raises
    ------
    PolicyError
        If it is not a master URL Spark knows (``local[N]``, ``spark://…``, ``yarn``, ``k8s://…``).

    Examples
    --------
    >>> check_master("local[2]")
    'local[2]'
    >>> check_master("spark://head:7077")
    'spark://head:7077'
    """
    value = (master or os.environ.get(MASTER_ENV_VAR) or DEFAULT_MASTER).strip()
    if not _MASTER.match(value):
        raise PolicyError(
            f"Spark master {value!r} (--master / {MASTER_ENV_VAR}) is not a master URL; give "
            "local[2], local[*], spark://HOST:7077, yarn or k8s://HOST:PORT"
        )
    return value


def _local_cores(master: str) -> int | None:
    found = _LOCAL.match(master)
    if not found:
        return None
    cores = found[2]
    return os.cpu_count() or 1 if cores in (None, "*") else int(cores)


def spark_conf(master: str, local_dir: Path, *, driver_memory: str | None = None) -> dict[str, str]:
    """The settings the engine starts Spark with.

    No web UI and no console progress bar; spill and shuffle files in ``local_dir``; the
    session's clock in UTC (order dates are calendar dates). In local mode: few shuffle
    partitions (the default 200 is made for clusters) and a driver on the loopback address.
    Everything else (executor memory and cores on a cluster, …) comes from Spark's own
    ``spark-defaults.conf`` (``SPARK_CONF_DIR``).

    Examples
    --------
    >>> conf = spark_conf("local[2]", Path("/w/.private/x/spark-local"))
    >>> conf["spark.local.dir"], conf["spark.sql.shuffle.partitions"], conf["spark.ui.enabled"]
    ('/w/.private/x/spark-local', '4', 'false')
    """
    log4j = local_dir / "log4j2.properties"
    conf = {
        "spark.master": master,
        "spark.app.name": "segments",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.local.dir": str(local_dir),
        "spark.sql.warehouse.dir": str(local_dir / "warehouse"),
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{log4j}",
    }
    if driver_memory:
        conf["spark.driver.memory"] = driver_memory
    cores = _local_cores(master)
    if cores is not None:
        conf["spark.sql.shuffle.partitions"] = str(max(2 * cores, 2))
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    return conf


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PANDAS_WARNING, category=FutureWarning)
        yield


def start_session(
    master: str | None, local_dir: Path, *, driver_memory: str | None = None
) -> SparkSession:
    """Start (or join) this process's Spark session with :func:`spark_conf`.

    ``local_dir`` is created owner-only. A process has one Spark session at a time; if one is
    already running, Spark returns it with the settings it was started with.

    Raises
    ------
    PolicyError
        If PySpark is not installed or Java cannot be started (naming ``make setup``).
    """
    try:
        with _quiet():
            from pyspark.sql import SparkSession
    except ImportError as exc:
        raise PolicyError(
            f"engine 'spark' needs PySpark ({exc}); install it with `make setup` "
            "(or pip install 'segments[spark]') or choose --engine duckdb"
        ) from None
    local_dir = Path(local_dir)
    local_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (local_dir / "log4j2.properties").write_text(_LOG4J, encoding="utf-8")
    builder: Any = SparkSession.builder
    for key, value in spark_conf(
        check_master(master), local_dir, driver_memory=driver_memory
    ).items():
        builder = builder.config(key, value)
    try:
        with _quiet():
            session = builder.getOrCreate()
    except Exception as exc:  # the JVM did not start: no Java, or an unusable one
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PolicyError(
            f"engine 'spark' could not start Spark ({first}); it needs a Java 17+ runtime "
            "(`make java` installs Debian's as root) or choose --engine duckdb"
        ) from None
    session.sparkContext.setLogLevel("ERROR")
    return session


#: The session this module started (at most one per process), shared by every engine.
_STARTED: dict[str, SparkSession] = {}


def _running_session() -> SparkSession | None:
    """The session already running in this thread (a notebook's, the tests'), if any."""
    try:
        with _quiet():
            from pyspark.sql import SparkSession
    except ImportError:
        return None
    return SparkSession.getActiveSession()


def _in_window(window: Window) -> Column:
    from pyspark.sql import functions as F

    if window is None:
        return F.lit(True)
    start, end = (d if isinstance(d, dt.date) else dt.date.fromisoformat(str(d)) for d in window)
    return (F.col("order_date") >= F.lit(start)) & (F.col("order_date") < F.lit(end))


def _to_polars(frame: DataFrame, schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """Collect a (small, per-person) Spark frame to the driver as Arrow, then polars."""
    with _quiet():
        table = frame.toArrow()
    out = pl.from_arrow(table)
    assert isinstance(out, pl.DataFrame)
    return out.cast(dict(schema))  # type: ignore[arg-type]


class SparkEngine(Engine):
    """Apache Spark (PySpark): local mode on one machine or a cluster's master.

    Parameters
    ----------
    master : str, optional
        ``local[2]``, ``spark://HOST:7077``, ``yarn``, … (default: ``SEGMENTS_SPARK_MASTER``,
        else ``local[2]``).
    session : pyspark.sql.SparkSession, optional
        A running session to use as it is (the tests share one per run; a session already
        running in the thread is used the same way). Otherwise the engine starts one at its
        first job, with ``spark.local.dir`` inside that job's ``scratch``.
    driver_memory : str, optional
        The driver's JVM heap when the engine starts Spark (default: half of
        :func:`segments.engine.memory_budget`, at least 1 GB). In local mode the driver does
        all the work.
    """

    name = "spark"

    def __init__(
        self,
        master: str | None = None,
        *,
        session: SparkSession | None = None,
        driver_memory: str | None = None,
    ) -> None:
        self.master = check_master(master)
        self._session = session
        self.driver_memory = driver_memory

    def session(self, scratch: Path) -> SparkSession:
        """The Spark session for a job whose private scratch folder is ``scratch``.

        The caller's session (``session=`` or one already running in the thread) is used as
        it is. Otherwise the engine starts one with ``spark.local.dir`` inside ``scratch``,
        and later jobs of the process reuse it while that folder exists; once it is removed
        (the caller removes its scratch after each job), Spark is restarted in the new job's
        scratch — in the same JVM, a second or two — so spill files always land in a
        private folder that exists.
        """
        if self._session is not None:
            return self._session
        started = _STARTED.get("session")
        if started is not None:
            local = started.conf.get("spark.local.dir")
            alive = _running_session() is started
            master = started.conf.get("spark.master")
            if alive and local and Path(local).is_dir() and master == self.master:
                return started
            started.stop()
            _STARTED.clear()
        running = _running_session()
        if running is not None:  # a process has one Spark session: the caller's, as it is
            return running
        memory = self.driver_memory
        if memory is None:
            from segments.engine import memory_budget

            memory = f"{max(memory_budget() // 2**21, 1024)}m"
        session = start_session(self.master, Path(scratch) / "spark-local", driver_memory=memory)
        _STARTED["session"] = session
        return session

    def stop(self) -> None:
        """Stop the session the engine started, if any (a caller's session is the caller's)."""
        if self._session is None and "session" in _STARTED:
            _STARTED.pop("session").stop()

    def _read(self, query: LineQuery, scratch: Path) -> DataFrame:
        session = self.session(scratch)
        files = (str(f) for f in query.files)
        return session.read.parquet(*files).where(_in_window(query.window))

    def _cells(self, query: LineQuery, scratch: Path) -> pl.DataFrame:
        """:meth:`Engine.person_cells <segments.engine.base.Engine.person_cells>` on Spark."""
        keys = ["person_id", *(["month"] if query.by_month else []), "category"]
        out = self._collect_cells(query, scratch, keyed=False)
        return out.sort(keys)  # on the driver: the frame is small, a Spark sort is a shuffle

    def _key_cell_batches(self, query: LineQuery, scratch: Path) -> Iterator[pl.DataFrame]:
        """:meth:`Engine.person_key_cell_batches
        <segments.engine.base.Engine.person_key_cell_batches>` on Spark: each row keyed by
        Spark, so no pseudonym is collected to the driver (one batch, unsorted)."""
        yield self._collect_cells(query, scratch, keyed=True)

    def _collect_cells(self, query: LineQuery, scratch: Path, *, keyed: bool) -> pl.DataFrame:
        from pyspark.sql import functions as F

        categories = query.categories
        keys = ["person_id", *(["month"] if query.by_month else []), "category"]
        frame = self._read(query, scratch)
        if query.by_month:
            frame = frame.withColumn("month", F.date_format("order_date", "yyyy-MM"))
        ore = F.floor(F.col("amount_sek") * 100 + 0.5).cast("bigint")
        sek = F.when(F.col("_ore") >= 0, F.expr("(_ore + 50) div 100")).otherwise(
            -F.expr("(50 - _ore) div 100")
        )
        cells = (
            frame.groupBy(*keys)
            .agg(
                F.sum(ore).alias("_ore"),
                F.sum(F.col("quantity").cast("bigint")).alias("units"),
            )
            .select(*keys, sek.cast("bigint").alias("sek"), "units")
        )
        schema = dict(query.cell_schema)
        if keyed:  # the pseudonym's hex digits as integers (segments.engine.base.person_key)
            digits = KEY_HEX_DIGITS
            key = F.conv(F.substring("person_id", -digits, digits), 16, 10).cast("bigint")
            check = F.conv(F.substring("person_id", 1, digits), 16, 10).cast("bigint")
            cells = cells.withColumn("pid", key).withColumn("pid_check", check)
            schema = key_cell_schema(query.by_month)
        # The bound holds before the frame leaves Spark: a category outside the public list
        # is found on the aggregate (kept by Spark, spilling to spark.local.dir) and refused,
        # and only public categories are collected — at most one row per category a person.
        outside = F.col("category").isNull() | ~F.col("category").isin(list(categories))
        cells = cells.persist()
        try:
            unknown = cells.where(outside).select(F.coalesce("category", F.lit("None")))
            check_categories([row[0] for row in unknown.distinct().limit(20).collect()], categories)
            return _to_polars(cells.where(~outside).select(*schema), schema)
        finally:
            cells.unpersist()

    def _orders(self, query: LineQuery, scratch: Path) -> pl.DataFrame:
        """:meth:`Engine.person_orders <segments.engine.base.Engine.person_orders>` on Spark."""
        from pyspark.sql import functions as F

        orders = (
            self._read(query, scratch)
            .groupBy("person_id")
            .agg(F.countDistinct("order_id").cast("bigint").alias("orders"))
        )
        return _to_polars(orders, ORDER_COUNT_SCHEMA).sort("person_id")

    def _feature_sums(self, query: LineQuery, scratch: Path) -> pl.DataFrame:
        """:meth:`Engine.person_feature_sums
        <segments.engine.base.Engine.person_feature_sums>` on Spark.

        The public-list check rides along in the same pass: each person's smallest category
        and channel outside the lists (``None`` for a missing one) comes back with the sums
        and is dropped on the driver after the check.
        """
        from pyspark.sql import functions as F

        lines = self._read(query, scratch)  # starts the session: F.col needs a running one
        categories, channels = query.categories, query.channels
        schema = feature_sum_schema(categories, channels)
        ore = F.col("_ore")

        def count_if(condition: Column) -> Column:
            return F.sum(F.when(condition, F.lit(1)).otherwise(F.lit(0))).cast("bigint")

        def sum_if(condition: Column) -> Column:
            return F.sum(F.when(condition, ore).otherwise(F.lit(0))).cast("bigint")

        def outside(column: str, allowed: Sequence[str]) -> Column:
            value = F.col(column)
            unknown = value.isNull() | ~value.isin(list(allowed))
            return F.min(F.when(unknown, F.coalesce(value, F.lit("None"))))

        kept = lines.select(
            "person_id",
            "order_id",
            "order_date",
            "channel",
            "category",
            F.floor(F.col("amount_sek") * 100 + 0.5).cast("bigint").alias("_ore"),
        )
        per_order = kept.groupBy("person_id", "order_id").agg(
            F.min("order_date").alias("order_date"),
            F.min("channel").alias("channel"),
            F.sum(ore).alias("_ore"),
            outside("channel", channels).alias("_bad_channel"),
        )
        quarter = F.quarter("order_date")
        per_person = per_order.groupBy("person_id").agg(
            F.max("order_date").alias("last_order"),
            F.count(F.lit(1)).cast("bigint").alias("orders"),
            F.sum(ore).cast("bigint").alias("ore"),
            *(count_if(F.col("channel") == c).alias(f"orders_{c}") for c in channels),
            *(sum_if(quarter == q).alias(f"ore_q{q}") for q in range(1, 5)),
            F.min("_bad_channel").alias("_bad_channel"),
        )
        per_category = kept.groupBy("person_id").agg(
            F.count(F.lit(1)).cast("bigint").alias("lines"),
            *(sum_if(F.col("category") == c).alias(f"ore_{c}") for c in categories),
            *(count_if(F.col("category") == c).alias(f"lines_{c}") for c in categories),
            outside("category", categories).alias("_bad_category"),
        )
        joined = per_person.join(per_category, on="person_id")
        checks = {"_bad_channel": pl.Utf8(), "_bad_category": pl.Utf8()}
        out = _to_polars(joined.select(*schema, *checks), {**schema, **checks})
        check_categories(out["_bad_category"].drop_nulls().unique().to_list(), categories)
        check_categories(out["_bad_channel"].drop_nulls().unique().to_list(), channels, "channel")
        return out.drop(list(checks)).sort("person_id")
