"""``segments demo``: the main job — the whole flow on the default data in a fresh workspace."""

from __future__ import annotations

import argparse
from typing import Any

from segments.cli.common import add_policy_option, add_workspace_option
from segments.workspace import DEFAULT_WORKSPACE

DEMO_WORKSPACE = DEFAULT_WORKSPACE / "demo"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole flow on a seeded 50,000-customer dataset in a fresh workspace "
        "(the main job)",
        description="Generate a seeded 50,000-customer dataset, prepare, segment "
        "(exploratory and private), plan the budget by accuracy (a charged scale probe), DP "
        "releases and the monthly archive, a k-anonymous "
        "release, forecast and audit, then execute the notebooks. Every release is charged to "
        "the workspace's throw-away demo ledger. The workspace is emptied first.",
    )
    # its own folder: notebooks keep their workspaces beside it under data/workspace/
    add_workspace_option(parser, DEMO_WORKSPACE)
    add_policy_option(parser, "policy (default: alloffice)", required=False, default="alloffice")
    parser.add_argument("--no-notebooks", action="store_true", help="skip executing the notebooks")
    parser.add_argument(
        "--override-accuracy",
        action="store_true",
        help="release even what the accuracy plan refuses (expected error above the policy's "
        "max_relative_error)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segments.pipeline import print_summary, run_demo

    summary = run_demo(
        args.workspace.root,
        args.policy,
        notebooks=not args.no_notebooks,
        override_accuracy=args.override_accuracy,
    )
    return print_summary(summary)


__all__ = ["register", "run"]
