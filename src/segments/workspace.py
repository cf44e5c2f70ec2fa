"""The workspace: one folder per pipeline stage, and the only place that knows the paths.

A workspace (default ``data/workspace/``) holds ``raw/``, ``prepared/<purpose>/``,
``segments/``, ``releases/<release-id>/``, ``forecasts/`` and ``report/``. Every command takes
``--workspace DIR`` and reads and writes through a :class:`Workspace`, so a stage never builds
a path by hand. Writes are atomic: :func:`atomic_write` writes to a temporary file in the same
folder and renames it into place, so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segments.exceptions import WorkspaceError

__all__ = [
    "DEFAULT_WORKSPACE",
    "SAFE_NAME",
    "STAGES",
    "Workspace",
    "atomic_write",
    "atomic_write_with",
    "check_name",
    "copy_hashed",
    "folder_files",
    "forget_raw_hashes",
    "make_private",
    "month_partition",
    "parquet_digests",
    "parquet_files",
    "parquet_sha256",
    "partition_meets",
    "private_folder",
    "raw_hashed_once",
    "raw_hashes",
    "sha256_file",
    "write_json",
]

DEFAULT_WORKSPACE = Path("data/workspace")
STAGES = ("raw", "prepared", "segments", "releases", "forecasts", "report")

# --- the names of the files a stage writes, and the only place they are spelled -------------
# (tests/test_architecture.py fails on one of these written anywhere else: the paths are
# built here, by the Workspace methods below, and other modules name them by these constants)
MANIFEST = "manifest.json"
POLICY_REPORT = "policy_report.json"
PREPARED_CUSTOMERS = "customers.parquet"
PREPARED_LINES = "lines.parquet"
LABELS = "labels.parquet"
SEGMENT_PROFILES = "profiles.parquet"
SEGMENT_METADATA = "metadata.json"
CENTROIDS = "centroids.parquet"
CARD = "card.json"
CERTIFICATE = "certificate.json"
#: What proves a release: a DP release's card, a k-anonymous release's certificate.
CARD_NAMES = (CARD, CERTIFICATE)
ARCHIVE_TABLE = "monthly_category.parquet"
#: Folder names inside the stages (``W/segments/private``, ``W/releases/archive``, ...).
PRIVATE_SEGMENTS = "private"
TARGETS = "targets"
ARCHIVE = "archive"
LEDGER_FOLDER = "ledger"
HISTORY = ".history"
#: Every name above: the architecture test's list of names spelled only in this module.
FILE_NAMES = (
    MANIFEST,
    POLICY_REPORT,
    PREPARED_CUSTOMERS,
    PREPARED_LINES,
    LABELS,
    SEGMENT_PROFILES,
    SEGMENT_METADATA,
    CENTROIDS,
    CARD,
    CERTIFICATE,
    ARCHIVE_TABLE,
)
FOLDER_NAMES = (PRIVATE_SEGMENTS, TARGETS, ARCHIVE, LEDGER_FOLDER, HISTORY, *STAGES)

#: What a purpose, spec, recipient or release name may look like: names are data, never
#: paths — no separator, no dot-dot, no leading dot or dash, at most 100 characters.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,99}")
_RELEASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,159}")

#: Private scratch and staging folders carry the creating process id, so a later run can tell
#: a crashed writer's leftovers (pid gone) from a concurrent writer's work in progress.
_PRIVATE = ".private"
#: The journal of a replacement of files under ``W/raw/`` (an erasure's or a purge's new
#: tables, manifest and log) in progress, beside ``raw/``: present from the moment every
#: new file is staged and durable until every one is renamed into place.
RAW_JOURNAL = ".raw-journal.json"
_STALE_PATTERNS = (
    (".", ".raw-staging-*"),
    (".", ".raw-old-*"),
    (".", ".raw.old.*"),  # the raw data an ingest was replacing when it was killed
    ("prepared", ".*.tmp"),
    ("prepared", ".*.old.*"),
    (_PRIVATE, "scratch-*"),
    ("raw", ".*.tmp"),
    ("raw", ".*.old.*"),  # a partitioned raw table an erasure or purge was replacing
    ("raw/truth", ".*.tmp"),
    # a killed rewrite of one month partition (erasure, purge, generate, prepare)
    ("raw", "*.parquet/month=*/.*.tmp"),
    ("prepared", "*/*.parquet/month=*/.*.tmp"),
    (".", ".raw.*.tmp"),
    (".", f".{RAW_JOURNAL}.*.tmp"),  # a journal being written when its writer was killed
    ("segments", ".*.tmp"),
    ("segments/targets", ".*.tmp"),
    ("subjects", ".*.tmp"),
    # a killed private k-means's replaced folder (labels; older versions staged here too)
    ("segments", ".private-*"),
    ("releases", ".*.tmp"),  # a killed publication's staging (the ledger reconciles its charge)
    (".", ".synthetic-proof-*"),  # regenerated raw data of a killed synthetic proof
)


#: A month partition's folder name inside a partitioned table (``order_lines.parquet/``).
_PARTITION = re.compile(r"^month=(\d{4})-(\d{2})$")


def month_partition(month: Any) -> str:
    """The folder name of a month's partition (``month`` is a date).

    Examples
    --------
    >>> import datetime
    >>> month_partition(datetime.date(2026, 2, 1))
    'month=2026-02'
    """
    return f"month={month:%Y-%m}"


def folder_files(folder: str | os.PathLike[str], *, holds_tables: bool = False) -> list[Path]:
    """Every regular file under ``folder``, sorted: the one enumeration of the files of a
    table (a month-partitioned folder, :func:`parquet_files`) and of a folder of tables
    (``W/raw/``: :func:`raw_hashes`; a prepared folder: its signed record's check).

    Hashing and reading enumerate the same files this way, so what is read is what was
    hashed. A symbolic link anywhere inside is refused, whether it leads to a file or a
    folder: the SHA-256 recorded for a table would vouch for whatever the link leads to next
    (``rglob`` does not descend into a linked folder while a reader of the table does, so the
    two disagreed on which files a table has). ``holds_tables``: ``folder`` holds tables, so
    the table an error names is the entry under it (else ``folder`` itself).

    Raises
    ------
    WorkspaceError
        A symbolic link under ``folder`` (one line: the table, the link, the rule, the fix).
    """
    root = Path(folder)
    found: list[Path] = []

    def walk(directory: Path) -> None:
        with os.scandir(directory) as entries:
            for entry in entries:
                path = Path(entry.path)
                if entry.is_symlink():
                    table = root / path.relative_to(root).parts[0] if holds_tables else root
                    raise WorkspaceError(
                        f"table {table}: {path} is a symbolic link (to {os.readlink(path)}); "
                        "rule: a workspace table holds its own files, never a link to files "
                        "elsewhere (the SHA-256 recorded for the table would not cover what "
                        "the link leads to); fix: replace the link with a copy of the files it "
                        "leads to, or remove it"
                    )
                if entry.is_dir(follow_symlinks=False):
                    walk(path)
                elif entry.is_file(follow_symlinks=False):
                    found.append(path)

    walk(root)
    return sorted(found)


def parquet_files(
    table: str | os.PathLike[str], months: tuple[Any, Any] | None = None
) -> list[Path]:
    """The Parquet files of a table: the file itself, or the files of its month partitions.

    A table is one Parquet file (``customers.parquet``) or a folder of that name holding
    ``month=YYYY-MM/part-NNNNN.parquet`` files (order lines, raw and prepared): a new month
    is a new folder, history is never rewritten. The files come sorted (month, then part), so
    reading them in this order gives the table's rows in their written order. With ``months``
    (a half-open ``[start, end)`` range of dates), only the partitions meeting it. A folder's
    files are enumerated by :func:`folder_files`, as :func:`raw_hashes` hashes them.

    Raises
    ------
    WorkspaceError
        If ``table`` does not exist, or a partition folder or file in it (or the folder
        itself) is a symbolic link.
    """
    path = Path(table)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise WorkspaceError(f"table {path} does not exist; run the command that writes it")
    if path.is_symlink():
        raise WorkspaceError(
            f"table {path}: the table's folder is a symbolic link (to {os.readlink(path)}); "
            "rule: a workspace table holds its own files, never a link to files elsewhere (the "
            "SHA-256 recorded for the table would not cover what the link leads to); fix: "
            "replace the link with a copy of the files it leads to, or remove it"
        )
    files: list[Path] = []
    for file in folder_files(path):
        parts = file.relative_to(path).parts
        if len(parts) == 2 and parts[1].endswith(".parquet") and partition_meets(parts[0], months):
            files.append(file)
    return files


def stray_file_error(table: str | os.PathLike[str], file: str | os.PathLike[str]) -> WorkspaceError:
    """The one-line refusal of a file inside a month-partitioned table's folder that is not
    one of its partitions (a ``.crc`` a Hadoop copy leaves, an editor's backup, a README):
    hashing covers every file of the folder, reading only the partitions, so the two would
    disagree on what the table is."""
    return WorkspaceError(
        f"table {Path(table).name}: {file} is not one of its month partitions; rule: a "
        "partitioned table's folder holds only month=YYYY-MM/<part>.parquet files (any other "
        "file would be hashed with the table but never read); nothing was written. Fix: move "
        "that file out of the table's folder"
    )


def partition_meets(folder: str, months: tuple[Any, Any] | None) -> bool:
    """True when ``folder`` is a month partition's name (``month=YYYY-MM``) and that month
    meets the half-open ``[start, end)`` date range ``months`` (any month when None).

    Examples
    --------
    >>> import datetime
    >>> september = (datetime.date(2026, 9, 1), datetime.date(2026, 10, 1))
    >>> partition_meets("month=2026-09", september), partition_meets("month=2026-10", september)
    (True, False)
    >>> partition_meets("part-00000.parquet", None)
    False
    """
    from segments.months import next_month

    found = _PARTITION.match(folder)
    if found is None:
        return False
    if months is None:
        return True
    first = dt.date(int(found[1]), int(found[2]), 1)
    start, end = months
    return next_month(first) > start and first < end  # else wholly outside the range


def parquet_digests(
    table: str | os.PathLike[str], name: str, months: tuple[Any, Any] | None = None
) -> dict[str, str]:
    """SHA-256 of every file of a table (file or month partitions; with ``months``, only
    the partitions meeting that date range), keyed by its path relative to the table's
    parent (``name`` is the table's file name there): what a manifest or a signed record
    lists, one entry per partition file."""
    path = Path(table)
    return {
        (name + "/" + f.relative_to(path).as_posix()) if f != path else name: sha256_file(f)
        for f in parquet_files(path, months)
    }


def parquet_sha256(table: str | os.PathLike[str], months: tuple[Any, Any] | None = None) -> str:
    """One SHA-256 for a table: the file's, or for month partitions the SHA-256 of the
    sorted JSON of every partition file's digest (any change to any partition changes it);
    with ``months``, of the partitions meeting that date range only (what a release of that
    window reads, :func:`segments.provenance.verified_frames`)."""
    path = Path(table)
    if path.is_file():
        return sha256_file(path)
    digests = parquet_digests(path, path.name, months)
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()


#: The raw folders hashed so far by the call running in this context (folder → digests), or
#: None outside one (:func:`raw_hashed_once`).
_RAW_HASHED: contextvars.ContextVar[dict[Path, dict[str, str]] | None] = contextvars.ContextVar(
    "segments_raw_hashed", default=None
)


def require_raw_as_recorded(ws: Workspace, digests: Mapping[str, str], doing: str) -> None:
    """Refuse (in one line) when W/raw/'s tables in ``digests`` (a hashing of W/raw/,
    :func:`raw_hashes`) are not the files W/raw/manifest.json records: a table added,
    removed or edited by hand. A command that rewrites W/raw/ and records the new files'
    digests in the manifest (erasure, restriction) checks this first, or the manifest would
    vouch for the edit (review r10a F5)."""
    recorded = ws.read_manifest().get("files", {})
    found = {name: digest for name, digest in digests.items() if name.endswith(".parquet")}
    differ = sorted(set(found) ^ set(recorded)) or sorted(
        n for n in found if found[n] != recorded[n]
    )
    if differ:
        raise WorkspaceError(
            f"{doing}: {ws.raw / differ[0]} does not match its SHA-256 in {ws.manifest} "
            "(added, removed or edited since it was written); rule: W/raw/ is rewritten only "
            "from the files its manifest records; nothing was changed. "
            "Fix: restore W/raw/ from a backup (or regenerate or ingest it again)"
        )


def raw_hashes(workspace: Workspace | str | os.PathLike[str]) -> dict[str, str]:
    """SHA-256 of every file under ``W/raw/`` (relative path → digest), enumerated by
    :func:`folder_files` as every reader of a raw table enumerates them (a symbolic link
    inside ``W/raw/`` is refused).

    Inside :func:`raw_hashed_once` a folder is hashed the first time only and its digests
    handed to every later reader of the same call."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace))
    root = ws.raw
    hashed = _RAW_HASHED.get()
    folder = root.resolve()
    if hashed is not None and folder in hashed:
        return dict(hashed[folder])
    finish_raw_replacement(ws)  # a killed writer's committed replacement: completed first
    digests = (
        {
            path.relative_to(root).as_posix(): sha256_file(path)
            for path in folder_files(root, holds_tables=True)
        }
        if root.is_dir()
        else {}
    )
    if hashed is not None:
        hashed[folder] = digests
    return dict(digests)


@contextlib.contextmanager
def raw_hashed_once() -> Iterator[None]:
    """Within the block, each workspace's ``W/raw/`` is hashed once (:func:`raw_hashes`).

    A release binds its frames to the raw data three ways — prepare's signed record, the
    month's as-of in it, a simulated-time ledger's synthetic proof — and each needs the raw
    files' digests: at 500 million lines one pass is ~35 GB read. The digests live in memory
    for one call only (a context variable, so another thread or call hashes afresh), never on
    disk: a cache keyed by file times could vouch for bytes rewritten within their
    granularity. A call that writes ``W/raw/`` in this scope hands on the digests of what it
    wrote (an erasure, a purge: :func:`remember_raw_writes`) or drops them (a rewind hashes
    its own writes afresh, :func:`forget_raw_hashes`). A block inside another shares the
    outer one's digests."""
    if _RAW_HASHED.get() is not None:
        yield
        return
    token = _RAW_HASHED.set({})
    try:
        yield
    finally:
        _RAW_HASHED.reset(token)


def forget_raw_hashes(workspace: Workspace) -> None:
    """Drop the digests of ``workspace``'s raw folder held for the running call (a writer of
    ``W/raw/`` calls this, so nothing vouches for the bytes it replaced)."""
    hashed = _RAW_HASHED.get()
    if hashed is not None:
        hashed.pop(workspace.raw.resolve(), None)


def remember_raw_writes(
    workspace: Workspace, replaced: list[str], digests: Mapping[str, str]
) -> None:
    """A writer of ``W/raw/`` inside :func:`raw_hashed_once` (an erasure, a purge): the
    digests held for the running call drop every file under ``replaced`` (paths relative to
    ``W/raw/``: a file, or a table's folder) and take ``digests``, the SHA-256 of the bytes it
    wrote in their place (hashed as it staged them). A later reader of the same call is bound
    to exactly those bytes (an edit after the write is refused as any other) without a second
    hashing of all of ``W/raw/``. Outside such a scope, or when nothing is held: nothing."""
    hashed = _RAW_HASHED.get()
    folder = workspace.raw.resolve()
    if hashed is None or folder not in hashed:
        return
    kept = {
        name: digest
        for name, digest in hashed[folder].items()
        if not any(name == r or name.startswith(r + "/") for r in replaced)
    }
    hashed[folder] = {**kept, **digests}


def check_name(kind: str, value: object) -> str:
    """Return ``value`` if it is a safe name (:data:`SAFE_NAME`), else refuse it.

    Names of purposes, specs and recipients come from policy files and command lines and
    end up in folder names; a name like ``../../victim`` must never become a path.

    Examples
    --------
    >>> check_name("purpose", "segmentation")
    'segmentation'
    >>> check_name("purpose", "../raw")
    Traceback (most recent call last):
    ...
    segments.exceptions.WorkspaceError: purpose '../raw' is not a safe name: ...
    """
    pattern = _RELEASE_ID if kind == "release id" else SAFE_NAME
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise WorkspaceError(
            f"{kind} {value!r} is not a safe name: use letters, digits, '_' and '-' only "
            "(starting with a letter or digit, at most 100 characters); names are never paths"
        )
    return value


def private_folder(folder: str | os.PathLike[str]) -> Path:
    """Create ``folder`` and every missing parent owner-only (0700) and return it.

    ``mkdir(mode=0o700, parents=True)`` gives the parents it creates 0755 (the per-user
    ``~/.local/share/segments`` was world-readable). Folders under the per-user data folder
    of segments that already exist are tightened to 0700 too (they are ours alone)."""
    import platformdirs

    target = Path(folder)
    missing = []
    probe = target
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
    root = Path(platformdirs.user_data_dir("segments"))
    if target == root or root in target.parents:
        for path in (root, *(p for p in target.parents if root in p.parents), target):
            info = path.stat()
            if info.st_uid == os.getuid() and info.st_mode & 0o077:
                path.chmod(0o700)
    return target


def make_private(path: str | os.PathLike[str]) -> None:
    """Make ``path`` owner-only: 0700 for folders (recursively), 0600 for files."""
    target = Path(path)
    if target.is_dir():
        target.chmod(0o700)
        for child in target.rglob("*"):
            if not child.is_symlink():
                child.chmod(0o700 if child.is_dir() else 0o600)
    elif target.exists():
        target.chmod(0o600)


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries durable (a rename or a new file in it survives a crash);
    best effort where the file system cannot sync a folder."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_tree(path: Path) -> None:
    """Make a staged file, or every file and folder of a staged folder, durable."""
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for each in paths:
        if each.is_dir():
            fsync_dir(each)
        else:
            fd = os.open(each, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def replace_raw_files(ws: Workspace, moves: list[tuple[Path, Path]]) -> None:
    """Rename every staged file or folder into place (``moves``: staged path → target, all
    under ``ws.root``) as one transaction: after a ``kill -9`` at any point the files are
    either all as they were or all replaced, never some of each.

    The staged files are made durable, then the journal (:data:`RAW_JOURNAL`) naming every
    move is written atomically: that is the commit. Killed before it, the staged files are a
    dead writer's leftovers that the next :meth:`Workspace.sweep` removes (rolled back);
    killed after, the next sweep, or the next hashing of ``W/raw/``
    (:func:`finish_raw_replacement`), completes the moves (rolled forward). A folder target
    (a month-partitioned table) is moved aside first (``.<name>.old.<pid>``; a folder cannot
    be renamed over a non-empty one) and removed once every move is done.
    """
    pid = os.getpid()
    steps = []
    for staged, target in moves:
        old = target.with_name(f".{target.name}.old.{pid}") if target.is_dir() else None
        steps.append(
            {
                "staged": staged.relative_to(ws.root).as_posix(),
                "target": target.relative_to(ws.root).as_posix(),
                "old": None if old is None else old.relative_to(ws.root).as_posix(),
            }
        )
        _fsync_tree(staged)
    for folder in {staged.parent for staged, _ in moves}:
        fsync_dir(folder)
    journal = ws.root / RAW_JOURNAL
    write_json(journal, {"pid": pid, "steps": steps})  # the commit
    make_private(journal)
    fsync_dir(ws.root)
    _roll_forward(ws, steps)
    journal.unlink()
    fsync_dir(ws.root)


def _roll_forward(ws: Workspace, steps: list[dict[str, Any]]) -> None:
    """Complete a journalled replacement's moves; each step is done once whatever was done
    before (a staged path that is gone was moved already)."""
    for step in steps:
        staged, target = ws.root / step["staged"], ws.root / step["target"]
        if not (staged.exists() or staged.is_symlink()):
            continue
        if step["old"] is not None and target.exists():
            os.replace(target, ws.root / step["old"])
        os.replace(staged, target)
        fsync_dir(target.parent)
    for step in steps:
        if step["old"] is not None:
            shutil.rmtree(ws.root / step["old"], ignore_errors=True)


def finish_raw_replacement(ws: Workspace) -> bool:
    """Complete a replacement of ``W/raw/``'s files that a killed writer committed
    (:func:`replace_raw_files`): True when one was rolled forward. A replacement whose
    writer still runs (another process) is left to it."""
    journal = ws.root / RAW_JOURNAL
    try:
        fd = os.open(journal, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # one finisher at a time
        try:
            if os.fstat(fd).st_ino != os.stat(journal).st_ino:
                return False  # finished (and removed) by another process meanwhile
        except FileNotFoundError:
            return False
        with os.fdopen(os.dup(fd), encoding="utf-8") as fh:
            text = fh.read()
        pid, steps = _journal_steps(ws, text)
        if pid != os.getpid() and pid_alive(pid):
            return False
        _roll_forward(ws, steps)
        journal.unlink()
        fsync_dir(ws.root)
    finally:
        os.close(fd)
    forget_raw_hashes(ws)  # nothing vouches for bytes hashed before they were replaced
    return True


#: What a journalled rewrite of W/raw/ may name (:func:`replace_raw_files`'s callers): a raw
#: table (or a truth table under ``raw/truth/``), the manifest or the purge log.
_RAW_TARGET = re.compile(
    r"(raw|raw/truth)/([A-Za-z0-9_]{1,64}\.parquet)|raw/(manifest\.json|purge_log\.json)"
)


def _journal_steps(ws: Workspace, text: str) -> tuple[int, list[dict[str, Any]]]:
    """The writer's pid and the moves of :data:`RAW_JOURNAL`, each path checked to be one
    :func:`replace_raw_files` could have written: a target directly under ``W/raw/`` that
    the erasure or purge rewrites, the writer's own staged sibling of it, and its own aside
    name. The journal is a file in the workspace: what it names is never trusted further
    than that (review r10a F1: an edited journal moved files over the ledger)."""
    journal = ws.root / RAW_JOURNAL
    fix = (
        f"fix: check W/raw/ against W/raw/{MANIFEST} (restore it from a backup if they "
        f"differ), then remove {journal}"
    )

    def refuse(what: str) -> WorkspaceError:
        return WorkspaceError(
            f"{journal}: {what}; rule: a journalled rewrite of W/raw/ names only W/raw/'s "
            f"tables, manifest and purge log and its writer's own staged files; {fix}"
        )

    try:
        entry = json.loads(text)
    except ValueError:
        raise refuse("not valid JSON") from None
    if not isinstance(entry, dict) or not isinstance(entry.get("steps"), list):
        raise refuse("no list of steps")
    pid = entry.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= 2**22:
        raise refuse(f"pid {pid!r} is not a process id")  # 2**22: Linux's largest pid_max
    if ws.raw.is_symlink() or (ws.raw / "truth").is_symlink():
        raise refuse("W/raw/ or W/raw/truth/ is a symbolic link")
    steps = []
    for i, step in enumerate(entry["steps"], 1):
        if not isinstance(step, dict) or set(step) != {"staged", "target", "old"}:
            raise refuse(f"step {i} is not a move (staged, target, old)")
        target, staged, old = step["target"], step["staged"], step["old"]
        if not isinstance(target, str) or not _RAW_TARGET.fullmatch(target):
            raise refuse(f"step {i}'s target {target!r} is not a file the rewrite replaces")
        folder, name = target.rsplit("/", 1)
        own = re.compile(rf"{folder}/\.{re.escape(name)}\.p{pid}-[A-Za-z0-9_]{{1,64}}\.tmp")
        if not isinstance(staged, str) or not own.fullmatch(staged):
            raise refuse(f"step {i}'s staged file {staged!r} is not its writer's ({pid})")
        aside = f"{folder}/.{name}.old.{pid}"
        if old is not None and old != aside:
            raise refuse(f"step {i}'s aside name {old!r} is not {aside}")
        steps.append({"staged": staged, "target": target, "old": old})
    return pid, steps


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one owned by another user
    counts as running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # beyond any pid: no such process
        return False
    except PermissionError:
        return True
    return True


def _pid_of(name: str) -> int | None:
    """The writer's pid encoded in a staging name (``.p<pid>-`` or ``.old.<pid>``), if any."""
    old = re.search(r"\.old\.(\d+)$", name)
    if old:
        return int(old.group(1))
    found = re.findall(r"[-.]p(\d+)-", name)
    return int(found[-1]) if found else None


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
        return self.inside(self.root / "raw")

    @property
    def truth(self) -> Path:
        """Planted ground truth, kept apart: only evaluations read it."""
        return self.inside(self.raw / "truth")

    @property
    def prepared(self) -> Path:
        """Analytic frames prepared per purpose (pseudonymised, minimised)."""
        return self.inside(self.root / "prepared")

    @property
    def segments(self) -> Path:
        """Segmentation outputs: labels, profiles, metadata (never released)."""
        return self.inside(self.root / "segments")

    @property
    def releases(self) -> Path:
        """Released tables, each in its own folder with its card or certificate."""
        return self.inside(self.root / "releases")

    @property
    def forecasts(self) -> Path:
        """Forecasts made from the DP release archive only."""
        return self.inside(self.root / "forecasts")

    @property
    def report(self) -> Path:
        """The audit report (``audit.json``, ``audit.html``, ``audit.md``)."""
        return self.inside(self.root / "report")

    # --- derived paths -----------------------------------------------------------------
    def raw_table(self, table: str) -> Path:
        """Path of a raw table: a Parquet file, or a folder of that name holding month
        partitions (:func:`parquet_files`; the generator writes ``order_lines`` so)."""
        return self.raw / f"{table}.parquet"

    def partition_file(self, table: Path, month: Any, part: int) -> Path:
        """Part ``part`` of ``month``'s partition of a partitioned table (``table`` is the
        table's folder, e.g. :meth:`raw_table` or :meth:`prepared_frame`)."""
        return self.inside(Path(table) / month_partition(month) / f"part-{part:05d}.parquet")

    @property
    def manifest(self) -> Path:
        """The raw data's manifest (rows, hashes, generator parameters, ``synthetic``)."""
        return self.raw / MANIFEST

    def read_manifest(self, *, required: bool = False) -> dict[str, Any]:
        """The raw data's manifest (``W/raw/manifest.json``): the one reader of it.

        Parameters
        ----------
        required : bool, default False
            Raise :class:`~segments.exceptions.WorkspaceError` (naming the command that
            writes it) when there is none; otherwise an absent manifest reads as ``{}``.

        Inside :func:`segments._tables.reads_bound_to` of ``W/raw/`` (a run that hashed the
        raw files first: prepare, the synthetic proof, the key resolution, the rewind), the
        manifest is parsed from the bytes the run hashed, never read a second time: a
        manifest swapped after the hashing is refused (``RawChangedError``).
        """
        from segments._tables import bound_file_bytes

        raw = bound_file_bytes(self.manifest)  # inside a run's binding: the bytes it hashed
        if raw is None:
            if required:
                self.require(self.manifest, f"segments generate --workspace {self.root}")
            return {}
        data = json.loads(raw.decode("utf-8"))
        return data if isinstance(data, dict) else {}

    def declared_synthetic(self) -> bool | None:
        """The manifest's ``synthetic`` flag (``None`` without a manifest): a declaration
        recorded on a release request, which the ledger checks against its proof."""
        if not self.manifest.is_file():
            return None
        return bool(self.read_manifest().get("synthetic", False))

    def prepared_dir(self, purpose: str) -> Path:
        """Folder of the analytic frames prepared for one purpose (a safe name)."""
        return self.inside(self.prepared / check_name("purpose", purpose))

    def release_dir(self, release_id: str) -> Path:
        """Folder of one release (its files and its card)."""
        return self.inside(self.releases / check_name("release id", release_id))

    @property
    def targets(self) -> Path:
        """Offer lists written by ``segments target`` (pseudonyms of people to contact)."""
        return self.inside(self.segments / TARGETS)

    def prepared_frame(self, purpose: str, name: str) -> Path:
        """A prepared frame (:data:`PREPARED_CUSTOMERS` or :data:`PREPARED_LINES`): a
        Parquet file, or for the lines a folder of that name holding month partitions
        (:func:`parquet_files`)."""
        return self.prepared_dir(purpose) / name

    def policy_report(self, purpose: str) -> Path:
        """Prepare's evidence for one purpose (``W/prepared/<purpose>/policy_report.json``)."""
        return self.prepared_dir(purpose) / POLICY_REPORT

    def prepared_as_of(self, purpose: str) -> dt.date:
        """The as-of ``policy_report.json`` states for the prepared frames of ``purpose``:
        an editable report, read for display (the audit). Whatever reads the frames takes
        the date from prepare's signed record (:func:`segments.provenance.prepared_as_of`,
        which refuses a report that disagrees)."""
        report = self.policy_report(purpose)
        if report.is_file():
            value = json.loads(report.read_text(encoding="utf-8")).get("as_of")
            if value:
                return dt.date.fromisoformat(str(value)[:10])
        raise WorkspaceError(
            f"{report}: no 'as_of' recorded for the prepared frames; fix: pass as_of "
            "(`--as-of YYYY-MM-DD`) or re-run `segments prepare`"
        )

    @property
    def labels(self) -> Path:
        """The exploratory model's labels (``W/segments/labels.parquet``): never released."""
        return self.segments / LABELS

    @property
    def segment_profiles(self) -> Path:
        """Profiles of the exploratory model's segments."""
        return self.segments / SEGMENT_PROFILES

    @property
    def segment_metadata(self) -> Path:
        """The exploratory segmentation's metadata (names, provenance, purpose)."""
        return self.segments / SEGMENT_METADATA

    @property
    def private_segments(self) -> Path:
        """The DP k-means folder ``W/segments/private/`` (centroids, card, labels, names)."""
        return self.inside(self.segments / PRIVATE_SEGMENTS)

    def private_segments_replaced(self, release_id: str) -> Path:
        """Where the DP k-means job moves the folder its release ``release_id`` replaces,
        during the rename: a hidden sibling of :attr:`private_segments` (its staging folder
        is the publishing path's, ``.<release-id>.p<pid>-*.tmp``)."""
        return self.segments / f".private-old-{check_name('release id', release_id)}"

    @property
    def archive(self) -> Path:
        """The monthly purchasing series archive (``W/releases/archive/...``)."""
        return self.archive_in(self.releases)

    @staticmethod
    def archive_in(releases: str | os.PathLike[str]) -> Path:
        """The archive inside a releases folder (``segments ledger --cards DIR``)."""
        return Path(releases) / ARCHIVE / ARCHIVE_TABLE

    @property
    def ledger_folder(self) -> Path:
        """The demo's and evaluations' throw-away ledgers (``W/ledger/``)."""
        return self.root / LEDGER_FOLDER

    @property
    def history(self) -> Workspace:
        """The backfill's replay of the raw history (``W/.history``), a workspace itself."""
        return Workspace(self.root / HISTORY)

    @property
    def subject_log(self) -> Path:
        """Record of erasure and restriction requests carried out (keyed hashes, no ids)."""
        return self.inside(self.root / "subjects" / "requests.json")

    @property
    def private(self) -> Path:
        """The workspace's private area: scratch files of running jobs, owner-only.

        A real folder, never a symbolic link: a link (even to another folder of the
        workspace, such as ``W/releases``) would put person-level scratch where it is
        published or never swept after a crash.
        """
        path = self.root / _PRIVATE
        if path.is_symlink():
            raise WorkspaceError(
                f"workspace {self.root}: {path} is a symbolic link (to {os.readlink(path)}); "
                "rule: the private area holding person-level scratch is the workspace's own "
                "owner-only folder, never a link (its files would land wherever the link "
                "leads, and a crash's leftovers would never be swept); nothing was written. "
                "Fix: remove the link (segments creates the folder itself)"
            )
        return self.inside(path)

    @property
    def lock_file(self) -> Path:
        """The workspace lock: erasure and restriction hold it exclusively, writers of
        person-level data (prepare, segment, target) share it while they publish. An empty
        owner-only file beside the stages (not in :attr:`private`, which must be empty when
        no job runs)."""
        return self.root / ".workspace.lock"

    @contextlib.contextmanager
    def lock(self, *, exclusive: bool, wait: bool = True) -> Iterator[None]:
        """Hold the workspace lock (``fcntl.flock``) for the block.

        ``exclusive`` without ``wait`` refuses when another process holds it (an erasure
        must not leave data behind that a concurrent writer is about to publish).
        """
        self.check_usable()
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            flags = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            try:
                fcntl.flock(fd, flags if wait else flags | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WorkspaceError(
                    f"workspace {self.root}: another segments command (prepare, segment, "
                    "target, erase, restrict or purge) is writing to it; nothing was changed. "
                    "Fix: run this again when it has finished"
                ) from None
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def erasure_log_state(self) -> str:
        """A fingerprint of the subject request log ('' when there is none)."""
        try:
            return hashlib.sha256(self.subject_log.read_bytes()).hexdigest()
        except FileNotFoundError:
            return ""

    @contextlib.contextmanager
    def publishing(self, log_state: str, what: str) -> Iterator[None]:
        """Publish person-level data under the shared lock, refusing if an erasure or a
        restriction was recorded since ``log_state`` was read (it would bring them back)."""
        with self.lock(exclusive=False):
            if self.erasure_log_state() != log_state:
                raise WorkspaceError(
                    f"{what}: an erasure or restriction was recorded in {self.subject_log} "
                    "while this command ran; nothing was written, so the person stays out. "
                    "Fix: run it again"
                )
            yield

    def inside(self, path: str | os.PathLike[str]) -> Path:
        """Return ``path`` if, resolved, it stays inside the workspace; refuse otherwise."""
        candidate = Path(path)
        root = self.root.resolve()
        resolved = (candidate if candidate.is_absolute() else Path.cwd() / candidate).resolve()
        if resolved != root and root not in resolved.parents:
            raise WorkspaceError(
                f"path {candidate} resolves to {resolved}, outside workspace {root}; a "
                "workspace command reads and writes only inside its workspace (a symbolic "
                "link pointing out of it is refused: replace it with a real folder)"
            )
        return candidate

    def check_usable(self) -> Workspace:
        """Refuse a workspace path that is a file (or under one); returns self."""
        for path in (self.root, *self.root.parents):
            if path.exists():
                if not path.is_dir():
                    raise WorkspaceError(
                        f"workspace {self.root}: {path} is a file, not a folder; pass "
                        "--workspace a folder (or a path that does not exist yet)"
                    )
                break
        private = self.private  # refuses a linked private area
        if private.exists() and not private.is_dir():  # not ours: never removed for the user
            raise WorkspaceError(
                f"workspace {self.root}: {private} is a file, but segments keeps its private "
                "scratch folder there; nothing was changed. Fix: move or delete that file"
            )
        return self

    @contextlib.contextmanager
    def scratch(self, label: str) -> Iterator[Path]:
        """A fresh owner-only folder in the private area, removed on success and failure.

        A crash (``kill -9``) leaves it behind; :meth:`sweep` removes it on the next run.
        """
        self.private.mkdir(parents=True, exist_ok=True)
        self.private.chmod(0o700)
        try:
            folder = Path(
                tempfile.mkdtemp(
                    dir=self.private,
                    prefix=f"scratch-{check_name('label', label)}-p{os.getpid()}-",
                )
            )
        except BaseException:  # a full or read-only disk: leave the workspace as it was
            with contextlib.suppress(OSError):
                self.private.rmdir()
            raise
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.private.rmdir()  # only when empty: another run may be using it

    def sweep(self, *, exclusive: bool = False) -> list[Path]:
        """Remove staging and scratch leftovers of writers that are no longer running.

        Returns the removed paths. A leftover whose writer's pid is still alive is kept (a
        concurrent run's work in progress). With ``exclusive`` (the caller holds the lock
        exclusively, as an erasure does) leftovers without a pid in their name go too.
        """
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        # a killed erasure's or purge's committed replacement of W/raw/ is completed first:
        # its staged files would otherwise be swept as a dead writer's leftovers
        finish_raw_replacement(self)
        for folder, pattern in _STALE_PATTERNS:
            base = self.root / folder
            if not base.is_dir() or base.is_symlink():
                continue
            for path in base.glob(pattern):
                pid = _pid_of(path.name)
                if pid is None and not exclusive:
                    continue
                if pid is not None and (pid == os.getpid() or pid_alive(pid)):
                    continue
                if folder.startswith("raw") and (self.root / RAW_JOURNAL).exists():
                    # a replacement committed meanwhile (its writer died after the finisher
                    # looked) still needs its staged and aside files (review r10a F8)
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                removed.append(path)
        return removed

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
        self.check_usable()
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in STAGES:
            (self.root / name).mkdir(mode=0o700, parents=True, exist_ok=True)
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
    fd, tmp = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.p{os.getpid()}-", suffix=".tmp"
    )
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
    fd, tmp = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.p{os.getpid()}-", suffix=".tmp"
    )
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
        dump_json(obj, fh)


def dump_json(obj: Any, fh: Any) -> None:
    """Write ``obj`` to the open text file ``fh`` as :func:`write_json` formats it (a staged
    file renamed into place later, :func:`replace_raw_files`, is written this way)."""
    json.dump(obj, fh, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    fh.write("\n")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def copy_hashed(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> str:
    """Copy ``source`` to a new file ``target`` and return the SHA-256 of the bytes copied:
    one read of the source, and the digest is of exactly the bytes the copy holds (what is
    hashed is what a reader of the copy reads).

    A write the system refuses (a full disk, a file-size limit) is raised naming ``target``:
    the system's error names no file (r15a F2)."""
    digest = hashlib.sha256()
    try:
        with open(source, "rb") as src, open(target, "xb") as dst:
            for block in iter(lambda: src.read(1 << 20), b""):
                digest.update(block)
                dst.write(block)
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(target)) from exc
    return digest.hexdigest()
