"""``segments subject``: data-subject requests — export (access, portability), erase and
restrict (AK-5)."""

from __future__ import annotations

import argparse
from pathlib import Path

from segments.cli.common import (
    add_actions,
    add_key_file_option,
    add_policy_option,
    add_workspace_option,
    iso_date,
)


def register(sub: argparse._SubParsersAction) -> None:
    actions = add_actions(sub, "subject", "data-subject requests")
    parser = actions.add_parser(
        "export",
        help="write one customer's register extract as JSON (right of access)",
        description="Everything the raw tables hold about the person behind --customer (all "
        "their accounts and orders) and, if segments exist, their segment and how it was "
        "derived. Identifiers leave here for the data subject only.",
    )
    add_workspace_option(parser)
    parser.add_argument(
        "--customer",
        required=True,
        metavar="ID",
        help="any account id of the person (for an ingested export: the export's own id)",
    )
    add_policy_option(parser, "policy name, to name the controller in the extract", required=False)
    parser.add_argument(
        "--output", "-o", type=Path, metavar="FILE", help="write here instead of standard output"
    )
    add_key_file_option(parser, "(to find the person's segment)")
    parser.set_defaults(func=run)

    for action, what in (
        ("erase", "erase the person everywhere in the workspace (GDPR art. 17)"),
        ("restrict", "restrict processing: keep stored, remove from every frame (art. 18)"),
    ):
        request = actions.add_parser(
            action,
            help=f"{what}; recorded with date and clause ids",
            description=f"{what.capitalize()}: raw data, prepared frames, segment labels and "
            "target lists; recorded in W/subjects/requests.json as a keyed hash with the date, "
            "the deadline and the policy's clause ids. Released aggregates are not recalled.",
        )
        add_workspace_option(request)
        request.add_argument(
            "--customer",
            required=True,
            metavar="ID",
            help="any account id of the person (for an ingested export: the export's own id)",
        )
        add_policy_option(request)
        request.add_argument(
            "--requested-on",
            type=iso_date,
            metavar="DATE",
            help="when the request was received (default today; the deadline runs from it)",
        )
        add_key_file_option(request, "(to find the person in the prepared frames)")
        request.set_defaults(func=run_request)


def run(args: argparse.Namespace) -> int:
    from segments.prepare.subjects import subject_export, write_subject_export

    extract = subject_export(
        args.workspace, args.customer, policy=args.policy, key_file=args.key_file
    )
    write_subject_export(extract, args.output)
    return 0


def run_request(args: argparse.Namespace) -> int:
    from segments.prepare.subjects import erase, restrict

    act = erase if args.action == "erase" else restrict
    done = act(
        args.workspace,
        args.policy,
        args.customer,
        requested_on=args.requested_on,
        key_file=args.key_file,
    )
    rows = ", ".join(f"{n} in {where}" for where, n in done.rows.items()) or "no rows"
    timing = "within" if done.on_time else "AFTER"
    print(
        f"{done.action} of customer {args.customer} carried out on {done.done_on} ({timing} the "
        f"deadline {done.deadline}, clauses {', '.join(done.clause_ids)}): {rows}"
    )
    print(f"recorded in {done.log_path} (keyed hash, no identity in clear)")
    return 0
