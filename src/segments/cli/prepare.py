"""``segments prepare``: apply a policy and write the pseudonymised frames of one purpose."""

from __future__ import annotations

import argparse
import sys

from segments.cli.common import (
    add_as_of_option,
    add_key_file_option,
    add_policy_option,
    add_workspace_option,
    safe_name,
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "prepare",
        help="apply a policy: retention, exclusions, minimisation, pseudonyms",
        description="Read W/raw, apply the policy's rules for one purpose on --as-of and write "
        "W/prepared/<purpose>/{customers,lines}.parquet and policy_report.json. The "
        "pseudonymisation key comes from --key-file or SEGMENTS_PSEUDONYM_KEY (a demo key is "
        "used only for data whose manifest says synthetic).",
    )
    add_workspace_option(parser)
    add_policy_option(parser, "policy name (e.g. alloffice) or .toml path")
    parser.add_argument(
        "--purpose", required=True, type=safe_name, help="a purpose the policy declares"
    )
    add_as_of_option(parser, "evaluate the rules on this day (YYYY-MM-DD)", required=True)
    add_key_file_option(parser, "(outside the workspace and data folder)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segments.prepare.frames import ERASED_EARLIER, prepare

    report = prepare(args.workspace, args.policy, args.purpose, args.as_of, key_file=args.key_file)
    out = args.workspace.prepared_dir(report.purpose)
    print(
        f"prepared {report.output_counts['persons']} persons and "
        f"{report.output_counts['lines']} order lines for purpose {report.purpose!r} "
        f"({report.policy}, as of {report.as_of}) in {out}"
    )
    print(f"pseudonymisation key: {report.key_provenance} (key id {report.key_id})")
    for rule in report.rules:
        removed = rule.rows_removed or rule.persons_removed
        if removed:
            print(
                f"  {', '.join(rule.clause_ids):<16} {rule.rule}: {rule.persons_removed} persons, "
                f"{rule.rows_removed} lines removed"
            )
        if rule.rule == ERASED_EARLIER and rule.persons_removed:
            print(
                f"warning: {rule.persons_removed} person(s) erased earlier are in the raw data "
                f"again (a backup restored after the erasure?); they were kept out of these "
                f"frames, but their raw rows must go: run `segments retention purge -w "
                f"{args.workspace.root} --policy {report.policy}` (or `segments subject erase` "
                "again)",
                file=sys.stderr,
            )
    return 0
