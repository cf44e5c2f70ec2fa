"""The API boundary's one table type: pandas out, pandas or polars in.

Every public function or property that returns a table returns a pandas DataFrame (issue 17:
an analyst should not meet polars in one place and pandas in another); the work inside stays
in polars, in private ``_..._pl`` helpers that internal callers use. Public functions that
take tables accept either kind, so what one returns can be passed to the next.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import polars as pl

__all__ = ["as_polars", "read_table", "scan_table", "table_schema", "to_pandas"]


def as_polars(frame: Any) -> Any:
    """``frame`` as polars: a pandas frame is converted (its index dropped), a polars
    DataFrame or LazyFrame passes through unchanged.

    Examples
    --------
    >>> as_polars(pd.DataFrame({"a": [1, 2]})).shape
    (2, 1)
    """
    if isinstance(frame, pd.DataFrame):
        return pl.from_pandas(frame.reset_index(drop=True))
    return frame


def to_pandas(frame: pl.DataFrame | pl.LazyFrame) -> pd.DataFrame:
    """A polars table as the pandas frame the public API returns (a LazyFrame is collected).

    Examples
    --------
    >>> to_pandas(pl.DataFrame({"a": [1]})).to_dict("list")
    {'a': [1]}
    """
    if isinstance(frame, pl.LazyFrame):
        frame = frame.collect()
    return frame.to_pandas()


def scan_table(path: Any, columns: list[str] | None = None) -> pl.LazyFrame:
    """Lazily read a Parquet table: one file or a folder of month partitions
    (:func:`segments.workspace.parquet_files`), rows in written order, no partition column
    added (the month is a fact of the rows' dates, not a column of the table)."""
    from segments.workspace import parquet_files

    files = parquet_files(path)
    if not files:
        raise_empty(path)
    lazy = pl.scan_parquet(files, hive_partitioning=False)
    return lazy.select(columns) if columns is not None else lazy


def read_table(path: Any, columns: list[str] | None = None) -> pl.DataFrame:
    """Read a Parquet table (a file or month partitions) as one polars frame; see
    :func:`scan_table`."""
    from segments.workspace import parquet_files

    files = parquet_files(path)
    if not files:
        raise_empty(path)
    if len(files) == 1:
        return pl.read_parquet(files[0], columns=columns)
    return pl.read_parquet(files, columns=columns, hive_partitioning=False)


def table_schema(path: Any) -> dict[str, pl.DataType]:
    """The schema of a Parquet table (a file, or the first file of its partitions)."""
    from segments.workspace import parquet_files

    files = parquet_files(path)
    if not files:
        raise_empty(path)
    return pl.read_parquet_schema(files[0])


def raise_empty(path: Any) -> None:
    """Refuse a partitioned table with no partition file (a folder emptied by hand)."""
    from segments.exceptions import WorkspaceError

    raise WorkspaceError(
        f"table {path}: a partitioned table without any month=YYYY-MM/*.parquet file; fix: "
        "run the command that writes it again"
    )
