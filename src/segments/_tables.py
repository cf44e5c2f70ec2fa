"""The API boundary's one table type: pandas out, pandas or polars in.

Every public function or property that returns a table returns a pandas DataFrame (issue 17:
an analyst should not meet polars in one place and pandas in another); the work inside stays
in polars, in private ``_..._pl`` helpers that internal callers use. Public functions that
take tables accept either kind, so what one returns can be passed to the next.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl

from segments.exceptions import WorkspaceError

__all__ = [
    "RawChangedError",
    "as_polars",
    "bound_file_bytes",
    "check_bound_files",
    "read_table",
    "reads_bound_to",
    "scan_table",
    "table_file_bytes",
    "table_schema",
    "to_pandas",
]


class RawChangedError(WorkspaceError):
    """A file bound by :func:`reads_bound_to` does not hold the bytes its run recorded."""


#: Folders whose reads are bound to recorded digests (:func:`reads_bound_to`).
_BOUND: ContextVar[dict[tuple[Path, Path], dict[str, str]] | None] = ContextVar(
    "_BOUND", default=None
)


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


@contextmanager
def reads_bound_to(folder: Path, digests: dict[str, str]) -> Iterator[None]:
    """Within the block, :func:`read_table` of a file under ``folder`` parses the bytes it
    hashed, and refuses a file whose SHA-256 is not ``digests[its path relative to folder]``.

    A run that signs or caches a verdict about ``W/raw/``'s digests (prepare's record, the
    synthetic proof) must parse those very bytes: hashing a file and reading it again later
    lets another process swap it in between (a time-of-check/time-of-use race)."""
    outer = _BOUND.get() or {}
    where = (Path(os.path.abspath(folder)), Path(folder).resolve())  # as named, as resolved
    token = _BOUND.set({**outer, where: dict(digests)})
    try:
        yield
    finally:
        _BOUND.reset(token)


def bound_table_digests(table: Path, name: str) -> dict[str, str] | None:
    """Inside :func:`reads_bound_to`, the digests the run recorded for the files of the
    table ``table`` (a file, or month partitions), keyed as
    :func:`segments.workspace.parquet_digests` keys them (``name`` for the table); None when
    no binding covers it. What the run reads of the table is checked against these digests
    (:func:`read_table`), so comparing them with a manifest needs no second hashing."""
    from segments.workspace import partition_meets

    bound = _BOUND.get()
    if not bound:
        return None
    named = Path(os.path.abspath(table))
    for (folder, _), digests in bound.items():
        if not named.is_relative_to(folder):
            continue
        prefix = named.relative_to(folder).as_posix()
        found: dict[str, str] = {}
        for key, digest in digests.items():
            if key == prefix:
                found[name] = digest
            elif key.startswith(prefix + "/"):
                parts = key[len(prefix) + 1 :].split("/")
                month_file = len(parts) == 2 and parts[1].endswith(".parquet")
                if month_file and partition_meets(parts[0], None):
                    found[name + "/" + "/".join(parts)] = digest
        return found
    return None


def _bound_bytes(file: Path) -> bytes | None:
    """``file``'s bytes when its folder is bound (:func:`reads_bound_to`), checked against
    the recorded digest; None when no binding covers it.

    A file is bound by where it is named (its path as given, or resolved), not where a link
    leads: a raw file replaced by a symlink to other bytes is read, hashed and refused."""
    bound = _BOUND.get()
    if not bound:
        return None
    named, resolved = Path(os.path.abspath(file)), Path(file).resolve()
    for folder, digests in bound.items():
        if named.is_relative_to(folder[0]):
            name = named.relative_to(folder[0]).as_posix()
        elif resolved.is_relative_to(folder[1]):
            name = resolved.relative_to(folder[1]).as_posix()
        else:
            continue
        data = Path(file).read_bytes()  # the bytes parsed are the bytes hashed
        if digests.get(name) != hashlib.sha256(data).hexdigest():
            raise RawChangedError(
                f"raw file {file} changed while this run read it (its SHA-256 is not the one "
                "the run recorded when it started); nothing was written or cached; fix: run "
                "again when no other process writes W/raw/"
            )
        return data
    return None


def table_file_bytes(file: Path) -> bytes:
    """A table file's bytes; inside :func:`reads_bound_to`, the bytes recorded for it (a
    writer that copies a raw file byte for byte copies what was hashed, not what is there)."""
    data = _bound_bytes(file)
    return data if data is not None else Path(file).read_bytes()


def bound_file_bytes(file: Path) -> bytes | None:
    """A small file's bytes (the raw manifest), None when it does not exist; inside
    :func:`reads_bound_to`, the bytes recorded for it: a file recorded but gone, or present
    but not recorded, changed since the run hashed its folder and is refused
    (:class:`RawChangedError`), so what a run trusts of it is what it hashed."""
    if Path(file).is_file():
        return table_file_bytes(file)
    bound = _BOUND.get() or {}
    named = Path(os.path.abspath(file))
    for (folder, _), digests in bound.items():
        if named.is_relative_to(folder) and named.relative_to(folder).as_posix() in digests:
            raise RawChangedError(
                f"raw file {file} was removed while this run read it (the run recorded its "
                "SHA-256 when it started); nothing was written or cached; fix: run again when "
                "no other process writes W/raw/"
            )
    return None


def check_bound_files(path: Any, files: list[Path]) -> None:
    """Inside :func:`reads_bound_to`: a bound table's files are exactly those recorded for
    it (a partition removed or added after the hashes were taken is refused)."""
    from segments.workspace import stray_file_error

    bound = _BOUND.get()
    if not bound:
        return
    named = Path(os.path.abspath(path))
    for (folder, _), digests in bound.items():
        if not named.is_relative_to(folder):
            continue
        prefix = named.relative_to(folder).as_posix()
        recorded = {n for n in digests if n == prefix or n.startswith(prefix + "/")}
        found = {Path(os.path.abspath(f)).relative_to(folder).as_posix() for f in files}
        if found != recorded:
            first = sorted(found ^ recorded)[0]
            if first not in found and (folder / first).is_file():  # there, but not a partition
                raise stray_file_error(named, folder / first)
            raise RawChangedError(
                f"raw file {folder / first} was {'added' if first in found else 'removed'} "
                "while this run read the table (the files differ from those recorded when it "
                "started); nothing was written or cached; fix: run again when no other "
                "process writes W/raw/"
            )


def read_table(path: Any, columns: list[str] | None = None) -> pl.DataFrame:
    """Read a Parquet table (a file or month partitions) as one polars frame; see
    :func:`scan_table` (inside :func:`reads_bound_to`, the bytes of the digests recorded)."""
    from segments.workspace import parquet_files

    files = parquet_files(path)
    if not files:
        raise_empty(path)
    check_bound_files(path, files)
    bound = [_bound_bytes(f) for f in files]
    if any(data is not None for data in bound):
        parts = [
            pl.read_parquet(io.BytesIO(data) if data is not None else f, columns=columns)
            for f, data in zip(files, bound, strict=True)
        ]
        return parts[0] if len(parts) == 1 else pl.concat(parts, how="vertical")
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
