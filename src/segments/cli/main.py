"""Entry point of the ``segments`` command.

Each command group lives in its own module in this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a function taking the
parsed arguments and returning an exit code.

:func:`main` is the one error boundary: whatever fails, the command prints one line
``segments <cmd>: error: <what failed>; fix: <...> (<whether privacy budget was spent>)``
and exits with status 2 (1 for an unexpected fault, 130 when interrupted). The traceback is
shown only with ``segments --debug <cmd>`` (or ``SEGMENTS_DEBUG=1``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import json
import os
import re
import sqlite3
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from segments.exceptions import (
    BudgetExceededError,
    KAnonymityError,
    PolicyError,
    ReleaseRefusedError,
    SchemaError,
    WorkspaceError,
)

# Command modules in data-flow order; each adds one command (or group) to the parser.
COMMAND_MODULES = (
    "segments.cli.generate",
    "segments.cli.ingest",
    "segments.cli.prepare",
    "segments.cli.retention",
    "segments.cli.subject",
    "segments.cli.segment",
    "segments.cli.target",
    "segments.cli.ledger",
    "segments.cli.release",
    "segments.cli.query",
    "segments.cli.kanon",
    "segments.cli.forecast",
    "segments.cli.demo",
    "segments.cli.audit",
)

#: Tests set this to let the exception through the boundary and inspect it.
RAISE_ERRORS = False

_USER_ERRORS = (
    SchemaError,
    PolicyError,
    WorkspaceError,
    BudgetExceededError,
    ReleaseRefusedError,
    KAnonymityError,
)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (the error boundary's format), status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}; see `{self.prog} -h`\n")


def _version() -> str:
    """The installed distribution's version, else the package's own."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("segments")
    except PackageNotFoundError:
        from segments import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    from segments.engine import ENGINES

    parser = _Parser(
        prog="segments",
        description="Privacy-first customer segmentation sandbox (synthetic data, policy as "
        "code, k-anonymity and OpenDP releases).",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback when a command fails"
    )
    parser.add_argument("--version", action="version", version=f"segments {_version()}")
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="backend of the line-level stages (default: SEGMENTS_ENGINE, else auto: DuckDB "
        "out of core when the lines exceed SEGMENTS_MEMORY_LIMIT's budget, else polars)",
    )
    parser.add_argument(
        "--master",
        default=None,
        metavar="URL",
        help="the Spark master for --engine spark: local[2] (the default, or "
        "SEGMENTS_SPARK_MASTER), local[*], spark://HOST:7077, yarn, k8s://HOST:PORT",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _os_error(exc: OSError, workspace: object = None) -> str:
    """What an operating-system fault means for the user, and the fix."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        if not where and workspace is not None:  # polars does not say which file
            where = f" (the disk holding {workspace})"
        return f"the disk is full{where}; free space on that disk and run the command again"
    if exc.errno == errno.EFBIG:
        if not where and workspace is not None:
            where = f" (a file under {workspace})"
        return (
            f"a file is larger than this process may write{where}: its file-size limit "
            "(`ulimit -f`) or the file system's largest file; raise that limit (`ulimit -f "
            "unlimited`) or use a disk whose file system allows larger files, and run the "
            "command again"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"permission denied{where}; make the workspace (and the ledger folder) writable by "
            "you, or pass another --workspace"
        )
    if exc.errno == errno.EROFS:
        return f"read-only file system{where}; pass a writable --workspace or --ledger"
    if exc.errno == errno.ENOTDIR:
        return f"a path component is a file, not a folder{where}; pass a folder"
    if exc.errno == errno.EISDIR:
        return f"expected a file but found a folder{where}; pass a file path"
    if exc.errno == errno.ENOENT:
        return f"no such file or folder{where}; check the path"
    return f"{exc.strerror or exc}{where}; check the path and its permissions"


def _wrapped_os_error(exc: BaseException) -> OSError | None:
    """The operating-system fault inside a library's error, e.g. polars' "underlying IO error:
    No space left on device (os error 28)", as an OSError; None when there is none."""
    found = re.search(r"\(os error (\d+)\)", str(exc))
    if found is None or not type(exc).__module__.startswith(("polars", "pyarrow")):
        return None
    code = int(found.group(1))
    return OSError(code, os.strerror(code))


def _raised_by_segments(exc: BaseException) -> bool:
    """True when the innermost frame of ``exc`` is segments' own code (not a library's)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(package + os.sep)


def describe_failure(exc: BaseException, workspace: object = None) -> str:
    """One line naming what failed and the fix, for any exception (``workspace``: the
    command's, named when the fault names no file)."""
    if isinstance(exc, _USER_ERRORS):
        return _one_line(str(exc))
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc)
        if "full" in text:
            return (
                f"privacy ledger: SQLite says {text!r}; free space on the ledger's disk and run "
                "the command again"
            )
        if "readonly" in text or "read-only" in text:
            return (
                f"privacy ledger: SQLite says {text!r}; make the ledger file and its folder "
                "writable by you (or pass --ledger a writable file)"
            )
        if "locked" in text or "busy" in text:
            return f"privacy ledger: {text}; another release holds it, try again shortly"
        return f"privacy ledger: {text}; check the ledger file and its folder"
    if isinstance(exc, sqlite3.DatabaseError):
        return f"privacy ledger: {exc}; point --ledger at a segments privacy ledger"
    if isinstance(exc, json.JSONDecodeError):
        return (
            f"a JSON file is damaged ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "restore it from a backup, or run again the command that wrote it"
        )
    if isinstance(exc, UnicodeError):
        return (
            f"an input is not valid UTF-8 text ({_one_line(str(exc))}); re-encode it as UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8)"
        )
    if isinstance(exc, OSError):
        return _os_error(exc, workspace)
    wrapped = _wrapped_os_error(exc)
    if wrapped is not None:  # polars wraps the system's fault (a full disk is no bad file)
        return _os_error(wrapped, workspace)
    if type(exc).__module__.startswith("polars") and "parquet" in str(exc).lower():
        return (
            f"a data file could not be read as Parquet ({_one_line(str(exc))[:160]}); it is "
            "damaged or not Parquet: run again the command that wrote it (generate, prepare, "
            "segment)"
        )
    if isinstance(exc, MemoryError):
        return "out of memory; use a smaller dataset or free memory"
    if isinstance(exc, ValueError) and _raised_by_segments(exc):
        return _one_line(str(exc))  # segments' own checks name the parameter and the fix
    kind = type(exc).__name__
    return (
        f"unexpected {kind}: {_one_line(str(exc))[:300]}; this is a bug or an input the checks "
        "missed: run again with `segments --debug ...` for the traceback and report it"
    )


def _workspace_root(args: argparse.Namespace) -> Any:
    """The command's workspace folder, if it has one."""
    folder = getattr(args, "workspace", None)
    return getattr(folder, "root", folder)


def _sweep_leftovers(args: argparse.Namespace) -> None:
    """Every command first removes the staging and scratch leftovers of killed writers of
    its workspace (lock-free: only those whose pid is gone); a failure here is left to the
    command itself to report."""
    from segments.workspace import Workspace

    folder = getattr(args, "workspace", None)
    if folder is None:
        return
    with contextlib.suppress(Exception):
        Workspace(folder).sweep()


def main(argv: Sequence[str] | None = None) -> int:
    from segments.cli.common import OPENED_LEDGERS, budget_statement

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage errors (one line, status 2) and --help (status 0)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    debug = bool(args.debug or os.environ.get("SEGMENTS_DEBUG"))
    # Everything a command creates (raw data, frames, keys, the ledger, releases) is
    # owner-only; a release reaches its recipient by an explicit copy, never by the mode.
    old_umask = os.umask(0o077)
    OPENED_LEDGERS.clear()
    _sweep_leftovers(args)
    from segments.engine import ENGINE_ENV_VAR, SPARK_MASTER_ENV_VAR

    old_engine = os.environ.get(ENGINE_ENV_VAR)
    old_master = os.environ.get(SPARK_MASTER_ENV_VAR)
    if args.engine:  # one setting: every stage asks segments.engine.get_engine()
        os.environ[ENGINE_ENV_VAR] = args.engine
    if args.master:
        if os.environ.get(ENGINE_ENV_VAR, "").strip().lower() != "spark":
            os.umask(old_umask)
            _restore(ENGINE_ENV_VAR, old_engine)
            print(
                f"segments {args.command}: error: --master {args.master} applies to the Spark "
                "engine only; add --engine spark (nothing was run)",
                file=sys.stderr,
            )
            return 2
        os.environ[SPARK_MASTER_ENV_VAR] = args.master
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(
            f"segments {args.command}: error: interrupted; nothing was published "
            f"({budget_statement()})",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:  # noqa: BLE001 - the one error boundary of every command
        if RAISE_ERRORS:
            raise
        if debug:
            traceback.print_exc()
        expected = (
            *_USER_ERRORS,
            OSError,
            sqlite3.Error,
            UnicodeError,
            MemoryError,
            json.JSONDecodeError,
        )
        ours = isinstance(exc, ValueError) and _raised_by_segments(exc)
        ours = ours or "could not be read as Parquet" in describe_failure(exc)
        ours = ours or _wrapped_os_error(exc) is not None
        status = 2 if isinstance(exc, expected) or ours else 1
        print(
            f"segments {args.command}: error: "
            f"{describe_failure(exc, _workspace_root(args))} ({budget_statement()})",
            file=sys.stderr,
        )
        return status
    finally:
        OPENED_LEDGERS.clear()
        os.umask(old_umask)
        _restore(ENGINE_ENV_VAR, old_engine)
        _restore(SPARK_MASTER_ENV_VAR, old_master)


def _restore(name: str, value: str | None) -> None:
    """Put an environment setting back as it was before a command set it."""
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
