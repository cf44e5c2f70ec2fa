"""``segments query FILE``: an analyst's own private queries from a TOML or JSON file.

The file names the policy, purpose, recipient, privacy loss and queries
(:class:`segments.session.QueryFile`); the command plans them (expected accuracy per cell,
guarantee, loss), and unless ``--dry-run`` charges the ledger once and publishes one release
folder with a table per query and its card — the same path as ``segments release``.
"""

from __future__ import annotations

import argparse
from typing import Any

from segments.cli.common import (
    add_ledger_options,
    add_workspace_option,
    positive_int,
    print_ledger_label,
    report_reconciliation,
    track_ledger,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "query",
        help="your own private queries from a TOML/JSON file, charged to the privacy ledger",
        description="Plan and release an analyst's own DP queries (filters on public person "
        "attributes, public keys, count/sum/mean of bounded per-person values) written in a "
        "file; see examples/query.toml.",
    )
    parser.add_argument("file", help="query file (.toml or .json)")
    add_workspace_option(parser)
    parser.add_argument(
        "--dry-run", action="store_true", help="plan only: show accuracy, spend nothing"
    )
    parser.add_argument("--rows", type=positive_int, default=10, help="rows of each table to print")
    add_ledger_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segments.session import load_query_file, open_release_ledger

    query_file = load_query_file(args.file)
    session = query_file.open(
        args.workspace,
        demo_ledger=bool(args.demo_ledger),
        evaluation_ledger=bool(args.evaluation_ledger),
    )
    queries = query_file.build(session)  # refusals first: nothing is read or charged
    planned = session.plan(queries, query_file.epsilon, query_file.weights)
    print(planned)
    if args.dry_run:
        print("dry run: nothing was charged or released")
        return 0
    ledger = open_release_ledger(
        args.workspace,
        session.policy,
        path=args.ledger,
        demo=bool(args.demo_ledger),
        evaluation=bool(args.evaluation_ledger),
        init=bool(args.init_ledger),
        reconcile=False,
        purpose=session.purpose,
    )
    report_reconciliation(ledger)
    session.use_ledger(track_ledger(ledger))
    result = session.release(queries, query_file.epsilon, query_file.weights)
    print_ledger_label(ledger.label)
    print(f"released {result.release_id} -> {result.path}")
    print(f"ledger head hash {result.card['ledger_head_hash']}")
    for name, table in result.items():
        print(f"\n{name} ({len(table)} rows; {result.guarantee}):")
        text, reasons = _printable(table, args.rows)
        print(text)
        for reason in reasons:
            print(reason)
    return 0


def _printable(table: Any, rows: int) -> tuple[str, list[str]]:
    """The first ``rows`` rows as text, with every ``*_status`` column: a withheld cell shows
    ``not published [n]`` and reason ``[n]`` is printed once below the table."""
    shown = table[[c for c in table.columns if not c.endswith("_noisy")]].head(rows).copy()
    reasons: dict[str, int] = {}

    def short(status: Any) -> Any:
        if not isinstance(status, str) or status == "published":
            return status
        verdict, _, why = status.partition(": ")
        number = reasons.setdefault(why or status, len(reasons) + 1)
        return f"{verdict} [{number}]"

    for column in [c for c in shown.columns if c.endswith("_status")]:
        shown[column] = shown[column].map(short)
    notes = [f"[{number}] {why}" for why, number in reasons.items()]
    return shown.to_string(index=False), notes


__all__ = ["register", "run"]
