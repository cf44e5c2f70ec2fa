"""Options shared by several commands."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from segments.workspace import DEFAULT_WORKSPACE, Workspace


def add_workspace_option(
    parser: argparse.ArgumentParser, default: Path = DEFAULT_WORKSPACE
) -> None:
    parser.add_argument(
        "--workspace",
        "-w",
        type=Workspace,
        default=Workspace(default),
        metavar="DIR",
        help=f"workspace folder (default: {default})",
    )


def iso_date(text: str) -> dt.date:
    """argparse type for YYYY-MM-DD dates."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date in YYYY-MM-DD form") from None
