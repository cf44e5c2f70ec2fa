"""The workspace: one folder per pipeline stage, and the only place that knows the paths.

A workspace (default ``data/workspace/``) holds ``raw/``, ``prepared/<purpose>/``,
``segments/``, ``releases/<release-id>/``, ``forecasts/`` and ``report/``. Every command takes
``--workspace DIR`` and reads and writes through a :class:`Workspace`, so a stage never builds
a path by hand. Writes are atomic: :func:`atomic_write` writes to a temporary file in the same
folder and renames it into place, so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segments.exceptions import WorkspaceError

__all__ = [
    "DEFAULT_WORKSPACE",
    "STAGES",
    "Workspace",
    "atomic_write",
    "atomic_write_with",
    "sha256_file",
    "write_json",
]

DEFAULT_WORKSPACE = Path("data/workspace")
STAGES = ("raw", "prepared", "segments", "releases", "forecasts", "report")


@dataclass(frozen=True)
class Workspace:
    """Paths of one workspace.

    Parameters
    ----------
    root : str or Path
        The workspace folder. It is created on first write, not on construction.

    Examples
    --------
    >>> ws = Workspace("/tmp/ws")
    >>> ws.raw.name, ws.prepared_dir("segmentation").name
    ('raw', 'segmentation')
    """

    root: Path

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_WORKSPACE) -> None:
        object.__setattr__(self, "root", Path(root))

    # --- one property per stage -------------------------------------------------------
    @property
    def raw(self) -> Path:
        """Raw tables written by ``segments generate`` (direct identifiers present)."""
        return self.root / "raw"

    @property
    def truth(self) -> Path:
        """Planted ground truth, kept apart: only evaluations read it."""
        return self.raw / "truth"

    @property
    def prepared(self) -> Path:
        return self.root / "prepared"

    @property
    def segments(self) -> Path:
        return self.root / "segments"

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def forecasts(self) -> Path:
        return self.root / "forecasts"

    @property
    def report(self) -> Path:
        return self.root / "report"

    # --- derived paths -----------------------------------------------------------------
    def raw_table(self, table: str) -> Path:
        """Path of a raw table's Parquet file."""
        return self.raw / f"{table}.parquet"

    @property
    def manifest(self) -> Path:
        return self.raw / "manifest.json"

    def prepared_dir(self, purpose: str) -> Path:
        """Folder of the analytic frames prepared for one purpose."""
        return self.prepared / purpose

    def release_dir(self, release_id: str) -> Path:
        """Folder of one release (its files and its card)."""
        return self.releases / release_id

    def stage(self, name: str) -> Path:
        """Path of a stage by name; raises for an unknown stage."""
        if name not in STAGES:
            raise WorkspaceError(
                f"unknown workspace stage {name!r}; the stages are {', '.join(STAGES)}"
            )
        return self.root / name

    def require(self, path: Path, made_by: str) -> Path:
        """Return ``path`` if it exists, else explain which command makes it."""
        if not path.exists():
            raise WorkspaceError(
                f"{path} does not exist in workspace {self.root}; run `{made_by}` first"
            )
        return path

    def create(self) -> Workspace:
        """Create the workspace folder and every stage folder; returns self."""
        for name in STAGES:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        return self


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; rename it over ``path`` only on success.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> with atomic_write(p, "w") as fh:
    ...     _ = fh.write("hello")
    >>> p.read_text()
    'hello'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_with(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` then rename ``tmp_path`` to ``path`` (for libraries that
    want a file name, such as ``DataFrame.write_parquet``)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer(Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as pretty, key-sorted JSON, atomically."""
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, ensure_ascii=False, default=str)
        fh.write("\n")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
