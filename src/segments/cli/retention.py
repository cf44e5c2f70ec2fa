"""``segments retention purge``: delete raw rows whose retention ended for every purpose."""

from __future__ import annotations

import argparse

from segments.cli.common import (
    add_actions,
    add_as_of_option,
    add_key_file_option,
    add_policy_option,
    add_workspace_option,
)


def register(sub: argparse._SubParsersAction) -> None:
    actions = add_actions(sub, "retention", "retention housekeeping on the raw tables")
    parser = actions.add_parser(
        "purge",
        help="delete raw rows no purpose may use any more (the policy's retention rules)",
        description="Delete raw customers, orders and order lines whose retention has ended for "
        "every purpose the policy declares; record what went in W/raw/purge_log.json. Persons "
        "flagged erasure_requested are erased everywhere first (see `segments subject erase`).",
    )
    add_workspace_option(parser)
    add_policy_option(parser)
    add_as_of_option(parser, "the day whose retention cutoffs apply (YYYY-MM-DD)", required=True)
    parser.add_argument("--dry-run", action="store_true", help="count only; change nothing")
    add_key_file_option(parser, "(to erase flagged persons from the prepared frames)")
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
