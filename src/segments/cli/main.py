"""Entry point of the ``segments`` command.

Each command group lives in its own module in this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a function taking the
parsed arguments and returning an exit code. Errors from segments (subclasses of
ValueError, RuntimeError or PermissionError with a message that names the fix) are printed
without a traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

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
    "segments.cli.prepare",
    "segments.cli.retention",
    "segments.cli.subject",
    "segments.cli.segment",
    "segments.cli.target",
    "segments.cli.ledger",
    "segments.cli.release",
    "segments.cli.kanon",
    "segments.cli.forecast",
    "segments.cli.demo",
    "segments.cli.audit",
)

_USER_ERRORS = (
    SchemaError,
    PolicyError,
    WorkspaceError,
    BudgetExceededError,
    ReleaseRefusedError,
    KAnonymityError,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segments",
        description="Privacy-first customer segmentation sandbox (synthetic data, policy as "
        "code, k-anonymity and OpenDP releases).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except _USER_ERRORS as exc:
        print(f"segments {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
