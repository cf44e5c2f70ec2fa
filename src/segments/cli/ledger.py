"""``segments ledger``: a controller's privacy budget — balance, rolling totals and history.

Reads the ledger only (it never creates or changes one). Which ledger: ``--ledger PATH``, else
the default ledger of ``--policy``'s controller (or its throw-away ledger in ``--workspace``),
else every ledger in the default folder (``$SEGMENTS_LEDGER_DIR`` or the per-user data folder).
The chain and its anchors are verified on every run; ``--cards DIR`` also recomputes the
SHA-256 of every released file and card under DIR. Reservations a crash left unpublished are
reconciled first (finished if their folder is complete, else aborted, the charge still
counted) and reported. ``--adopt-policy`` records a change of the policy's privacy parameters
(only a tightening before a full period has passed). Exit status 1 when verification finds a
problem or a rolling period is over budget (on an evaluation ledger: over its stated cap,
``EVALUATION_CAP_FACTOR`` times the policy's budget).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from segments.cli.common import add_as_of_option, add_policy_option
from segments.exceptions import WorkspaceError
from segments.privacy.ledger_report import (
    ACCOUNTING_RULE,
    find_cards,
    ledger_report,
    open_ledgers,
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "ledger",
        help="privacy budget: balance, rolling totals and history of releases",
        description="Show a controller's privacy ledger: per population the spending in the "
        "rolling budget period, over the policy's window and at its peak, the remaining "
        "budget, and (--history) every release. " + ACCOUNTING_RULE,
    )
    add_policy_option(parser, "policy name or .toml path (its controller's ledger)", required=False)
    parser.add_argument("--ledger", type=Path, metavar="PATH", help="a ledger file")
    parser.add_argument(
        "--workspace",
        "-w",
        type=Path,
        metavar="DIR",
        help="show the demo's throw-away ledger(s) in DIR/ledger/",
    )
    parser.add_argument(
        "--evaluation",
        action="store_true",
        help="show the policy's evaluation ledger (synthetic data only) instead",
    )
    add_as_of_option(parser, "balance on DATE (default: latest release)")
    parser.add_argument("--history", action="store_true", help="list every release")
    parser.add_argument(
        "--cards",
        type=Path,
        metavar="DIR",
        help="verify the release cards (card.json, certificate.json) under DIR",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--adopt-policy",
        action="store_true",
        help="record --policy's privacy parameters as the ledger's (a change may only tighten "
        "before a full budget period has passed)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segments.cli.common import report_reconciliation

    policy = _load_policy(args.policy) if args.policy else None
    if args.adopt_policy and policy is None:
        raise WorkspaceError("--adopt-policy needs --policy NAME (the policy to adopt)")
    ledgers = open_ledgers(
        policy=policy, path=args.ledger, workspace=args.workspace, evaluation=args.evaluation
    )
    for ledger in ledgers:
        if args.adopt_policy and policy is not None:
            params = ledger.change_policy(policy)
            print(f"ledger {ledger.path} now bound to policy {policy.name!r}: {params}")
        report_reconciliation(ledger)
        if args.cards and Path(args.cards).is_dir():  # the archive is derived: repaired
            from segments.privacy.archive import rebuild_archive

            for change in rebuild_archive(args.cards, ledger):
                print(f"release archive repaired: {change}", file=sys.stderr if args.json else None)
    cards = find_cards(args.cards) if args.cards else None
    reports = [ledger_report(ledger, args.as_of, cards, args.cards) for ledger in ledgers]
    if args.json:
        records = [report.to_dict(args.history) for report in reports]
        print(
            json.dumps(
                records if len(records) != 1 else records[0],
                indent=2,
                default=str,
                ensure_ascii=False,
            )
        )
    else:
        print("\n\n".join(report.render(args.history) for report in reports))
    sound = all(report.verification.ok and not report.over_budget for report in reports)
    return 0 if sound else 1


def _load_policy(name: str) -> Any:
    from segments.policy import Policy

    return Policy.load(name)
