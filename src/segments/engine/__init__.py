"""The engine layer: the line-level stages on a backend chosen by one setting.

Everything heavy in segments is line-level work that ends in a per-person frame (one row per
person, or per person and cell, at most a public number of rows per person); every DP
measurement then runs in OpenDP on that small frame on the driver. An *engine* does the
line-level part. Backends:

``polars``
    In-memory polars on the driver (:class:`~segments.engine.inmemory.PolarsEngine`): the
    baseline, fastest on small data.
``duckdb`` (alias ``embedded``)
    DuckDB in the driver's process (:class:`~segments.engine.embedded.DuckDBEngine`):
    out of core, spilling to the workspace's private area under a memory limit.
``spark``
    PySpark (``segments.engine.spark``, local mode or a cluster's master).
``auto`` (the default)
    ``duckdb`` when the lines a job reads are larger than the memory budget allows for the
    in-memory path, else ``polars`` (:func:`choose_engine`).

The setting: ``segments --engine NAME`` or the environment variable ``SEGMENTS_ENGINE``; the
memory budget: ``SEGMENTS_MEMORY_LIMIT`` (e.g. ``8GB``; default half the machine's memory).

The contract (:class:`~segments.engine.base.Engine`, module :mod:`segments.engine.base`):

* inputs are Parquet paths (a file, or a folder of ``month=YYYY-MM/`` partitions, of which
  only the window's months are read: :func:`~segments.engine.base.line_files`) and public
  parameters (window dates, the public category list); outputs are polars DataFrames on the
  driver with fixed schemas, sorted, equal on every backend (exact integer arithmetic);
* every output has at most a public number of rows per person (per-person bounds hold
  before a frame leaves the engine; the policy's tighter truncation is then applied by the
  same driver code for every backend, :func:`segments.privacy.releases.build_shared_frames`);
* ``scratch`` is an owner-only folder in the workspace's private area; an engine writes
  intermediate data there and nowhere else;
* no key and no noise: pseudonyms are computed on the driver (prepare), the OpenDP step, the
  ledger and the cards stay on the driver and do not depend on the engine.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segments.exceptions import PolicyError

if TYPE_CHECKING:
    from segments.engine.base import Engine, LineSource, Window, line_files

__all__ = [
    "ENGINES",
    "ENGINE_ENV_VAR",
    "MEMORY_ENV_VAR",
    "SPARK_MASTER_ENV_VAR",
    "Engine",
    "LineSource",
    "Window",
    "choose_engine",
    "get_engine",
    "line_files",
    "memory_budget",
    "physical_memory",
]

#: Names re-exported from :mod:`segments.engine.base`, loaded on first use: the CLI reads
#: this package's setting at start-up without loading polars.
_FROM_BASE = ("Engine", "LineSource", "Window", "line_files")


def __getattr__(name: str) -> Any:
    if name in _FROM_BASE:
        from segments.engine import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


ENGINE_ENV_VAR = "SEGMENTS_ENGINE"
MEMORY_ENV_VAR = "SEGMENTS_MEMORY_LIMIT"
#: The Spark master (``--master``) when the engine is ``spark``: ``local[2]`` by default.
SPARK_MASTER_ENV_VAR = "SEGMENTS_SPARK_MASTER"
#: The setting's accepted values.
ENGINES = ("auto", "polars", "duckdb", "embedded", "spark")
#: Peak memory of the in-memory path per byte of Parquet it reads (measured at 10 million
#: prepared lines, benchmarks/bench_engines.py: 0.69 GB of Parquet, ~2 GB peak; rounded up).
INMEMORY_BYTES_PER_PARQUET_BYTE = 4
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)


def physical_memory() -> int:
    """Bytes of RAM this machine has (8 GB where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


def memory_budget() -> int:
    """Bytes a job may use for line-level work: ``SEGMENTS_MEMORY_LIMIT`` or half the RAM.

    Raises
    ------
    PolicyError
        If the setting is not a size such as ``8GB`` or ``512MB``.
    """
    raw = os.environ.get(MEMORY_ENV_VAR, "").strip()
    if not raw:
        return physical_memory() // 2
    found = _SIZE.match(raw)
    if not found or float(found[1]) <= 0:
        raise PolicyError(
            f"setting {MEMORY_ENV_VAR}={raw!r} is not a memory size; give e.g. 8GB or 512MB"
        )
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[found[2].upper()]
    return int(float(found[1]) * scale)


def _setting(name: str | None) -> str:
    value = (name or os.environ.get(ENGINE_ENV_VAR) or "auto").strip().lower()
    if value not in ENGINES:
        raise PolicyError(
            f"engine {value!r} (--engine / {ENGINE_ENV_VAR}) is not one of {list(ENGINES)}; "
            "give auto, polars, duckdb or spark"
        )
    return "duckdb" if value == "embedded" else value


def choose_engine(sources: Iterable[LineSource] = (), name: str | None = None) -> str:
    """The engine's name for a job that reads ``sources``: the setting, or if ``auto``,
    ``duckdb`` when their Parquet bytes × :data:`INMEMORY_BYTES_PER_PARQUET_BYTE` exceed
    :func:`memory_budget`, else ``polars``."""
    from segments.engine.base import line_files

    setting = _setting(name)
    if setting != "auto":
        return setting
    size = 0
    for source in sources:
        path = Path(source)
        if path.is_file() or path.is_dir():
            size += sum(f.stat().st_size for f in line_files(path))
    return "duckdb" if size * INMEMORY_BYTES_PER_PARQUET_BYTE > memory_budget() else "polars"


def get_engine(name: str | None = None, sources: Iterable[LineSource] = ()) -> Engine:
    """The engine the setting selects (``name`` overrides ``SEGMENTS_ENGINE``).

    Raises
    ------
    PolicyError
        For an unknown name, or ``spark`` without its backend installed.
    """
    chosen = choose_engine(sources, name)
    if chosen == "polars":
        from segments.engine.inmemory import PolarsEngine

        return PolarsEngine()
    if chosen == "duckdb":
        from segments.engine.embedded import DuckDBEngine

        return DuckDBEngine()
    try:
        from segments.engine.spark import SparkEngine  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise PolicyError(
            f"engine 'spark' is not available ({exc}); install it with `make setup` "
            "(PySpark and a Java runtime) or choose --engine duckdb"
        ) from None
    return SparkEngine()  # type: ignore[no-any-return,unused-ignore]
