"""Options shared by several commands."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

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


def add_ledger_options(parser: argparse.ArgumentParser) -> None:
    """Which ledger a release is charged to: the controller's (default), the workspace's
    throw-away demo ledger, or the evaluation ledger (synthetic data only)."""
    ledger = parser.add_mutually_exclusive_group()
    ledger.add_argument("--ledger", help="ledger file (default: the controller's ledger)")
    ledger.add_argument(
        "--demo-ledger", action="store_true", help="the throw-away demo ledger in W/ledger/"
    )
    ledger.add_argument(
        "--evaluation-ledger",
        action="store_true",
        help="the evaluation ledger in W/ledger/ (synthetic data only)",
    )


def is_synthetic(workspace: Workspace) -> bool:
    """True when the workspace's raw manifest marks its data synthetic."""
    if not workspace.manifest.exists():
        return False
    manifest = json.loads(workspace.manifest.read_text(encoding="utf-8"))
    return bool(manifest.get("synthetic", False))


def open_ledger(args: argparse.Namespace, policy: Any, synthetic: bool) -> Any:
    """The ledger chosen by :func:`add_ledger_options`."""
    from segments.privacy.ledger import Ledger

    if args.demo_ledger or args.evaluation_ledger:
        return Ledger.for_workspace(
            args.workspace,
            str(policy.controller),
            evaluation=bool(args.evaluation_ledger),
            synthetic=synthetic,
            policy=policy,
        )
    return Ledger.for_policy(policy, path=args.ledger, synthetic=synthetic)
