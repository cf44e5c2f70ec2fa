"""``segments retention purge``: delete raw rows whose retention ended for every purpose."""

from __future__ import annotations

import argparse
from pathlib import Path

from segments.cli.common import add_workspace_option, iso_date


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("retention", help="retention housekeeping on the raw tables")
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    parser = actions.add_parser(
        "purge",
        help="delete raw rows no purpose may use any more (the policy's retention rules)",
        description="Delete raw customers, orders and order lines whose retention has ended for "
        "every purpose the policy declares; record what went in W/raw/purge_log.json. Persons "
        "flagged erasure_requested are erased everywhere first (see `segments subject erase`).",
    )
    add_workspace_option(parser)
    parser.add_argument("--policy", required=True, help="policy name or .toml path")
    parser.add_argument("--as-of", required=True, type=iso_date, metavar="DATE")
    parser.add_argument("--dry-run", action="store_true", help="count only; change nothing")
    parser.add_argument(
        "--key-file",
        type=Path,
        metavar="FILE",
        help="the steward's key file (to erase flagged persons from the prepared frames)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segments.prepare.retention import purge

    result = purge(
        args.workspace, args.policy, args.as_of, dry_run=args.dry_run, key_file=args.key_file
    )
    verb = "would remove" if result.dry_run else "removed"
    if result.erased_accounts:
        rows = ", ".join(f"{n} {t}" for t, n in result.erased_rows.items())
        print(
            f"erasure requests: {verb.replace('remove', 'erase')} {result.erased_persons} "
            f"person(s) with {result.erased_accounts} account(s), every linked account "
            f"included, everywhere in the workspace ({rows} in raw; W/subjects/requests.json)"
        )
    counts = ", ".join(f"{n} {t}" for t, n in result.removed.items())
    print(f"retention purge ({result.policy}, as of {result.as_of}): {verb} {counts}")
    if result.log_path is not None:
        print(f"record written to {result.log_path}")
    return 0
