"""``segments subject export``: one customer's register extract (access, portability, AK-5)."""

from __future__ import annotations

import argparse
from pathlib import Path

from segments.cli.common import add_workspace_option


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("subject", help="data-subject requests")
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    parser = actions.add_parser(
        "export",
        help="write one customer's register extract as JSON (AK-5)",
        description="Everything the raw tables hold about the person behind --customer (all "
        "their accounts and orders) and, if segments exist, their segment and how it was "
        "derived. Identifiers leave here for the data subject only.",
    )
    add_workspace_option(parser)
    parser.add_argument("--customer", required=True, type=int, metavar="ID")
    parser.add_argument("--policy", help="policy name, to name the controller in the extract")
    parser.add_argument(
        "--output", "-o", type=Path, metavar="FILE", help="write here instead of standard output"
    )
    parser.add_argument(
        "--key-file",
        type=Path,
        metavar="FILE",
        help="the steward's key file (to find the person's segment)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segments.subjects import subject_export, write_subject_export

    extract = subject_export(
        args.workspace, args.customer, policy=args.policy, key_file=args.key_file
    )
    write_subject_export(extract, args.output)
    return 0
