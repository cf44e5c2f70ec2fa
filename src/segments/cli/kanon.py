"""``segments kanon``: a k-anonymous (optionally l-diverse) customer table, recorded in the ledger.

``segments kanon --workspace W --policy NAME --purpose P --recipient R --k K
[--l L --sensitive COL]`` reads ``W/prepared/<purpose>/{customers,lines}.parquet``, builds the
customer-level table (county, segment and spend band by default; ``--columns`` to choose),
finds the optimal full-domain generalisation within the policy's suppression limit, refuses
a table with more columns fully generalised than the policy's
``privacy.max_fully_generalised_columns`` (an explicit ``--max-fully-generalised`` overrides
it, recorded), checks it against the earlier k-anonymous releases of
the same people in the ledger, reserves the release in the ledger (AO-2 and AO-10 refusals
apply), and writes ``W/releases/<release-id>/table.parquet`` and ``certificate.json``.
Segments come from the category rule (AL-2) or the private model; labels of a model fitted on
the same data stay in the sandbox (AO-5).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from segments.cli.common import (
    add_as_of_option,
    add_ledger_options,
    add_policy_option,
    add_release_parties,
    add_workspace_option,
    ledger_when_needed,
    non_negative_int,
    positive_int,
    print_ledger_label,
)
from segments.workspace import Workspace


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "kanon",
        help="k-anonymous customer table (optimal generalisation), recorded in the ledger",
        description="Release a k-anonymous, optionally l-diverse customer-level table with "
        "the least information loss the hierarchies allow.",
    )
    add_workspace_option(parser)
    add_policy_option(parser, "policy name (e.g. alloffice)")
    add_release_parties(parser)
    parser.add_argument(
        "--k", type=positive_int, required=True, help="k (at least the policy's min_k)"
    )
    parser.add_argument(
        "--l", type=positive_int, help="l-diversity of --sensitive (>= policy min_l)"
    )
    parser.add_argument("--sensitive", help="sensitive column, released as is (e.g. spend_band)")
    parser.add_argument(
        "--diversity", choices=["distinct", "entropy"], default="distinct", help="l-diversity"
    )
    parser.add_argument(
        "--loss",
        choices=["discernibility", "loss", "precision", "height"],
        default="discernibility",
        help="loss the search minimises",
    )
    parser.add_argument(
        "--columns",
        help="comma-separated release columns, only those the purpose needs (default: "
        "county_code,segment,spend_band; others: birth_year, gender, postcode, "
        "municipality_code, customer_type, size_band, industry); fewer columns keep more "
        "detail in each",
    )
    parser.add_argument(
        "--max-fully-generalised",
        type=non_negative_int,
        metavar="N",
        help="columns allowed to end up one value in every row (default: the policy's "
        "privacy.max_fully_generalised_columns; above it is an explicit override, recorded "
        "in the ledger and the certificate)",
    )
    parser.add_argument(
        "--hierarchies",
        type=Path,
        metavar="DIR",
        help="ARX-style hierarchy files (hierarchy_<column>.csv, ';'-separated, one row per "
        "value) for columns without a built-in one (dates, countries and the customer "
        "columns have theirs)",
    )
    parser.add_argument(
        "--segments",
        default="category_rule",
        choices=["category_rule", "private", "fitted"],
        help="segment source (fitted is refused: its labels are personal data)",
    )
    add_as_of_option(parser)
    parser.add_argument(
        "--seed", type=non_negative_int, help="seed of the row permutation (default: random)"
    )
    add_ledger_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segments.anonymity.job import release_kanon
    from segments.policy import Policy
    from segments.privacy.publishing import ReleaseContext

    workspace: Workspace = args.workspace
    policy = Policy.load(args.policy)
    context = ReleaseContext.open(
        ledger_when_needed(args, policy),
        workspace,
        policy,
        purpose=args.purpose,
        recipient=args.recipient,
        destination=args.destination,
    )
    result = release_kanon(
        context,
        k=args.k,
        l=args.l,
        sensitive=args.sensitive,
        diversity=args.diversity,
        loss=args.loss,
        columns=args.columns.split(",") if args.columns else None,
        max_fully_generalised=args.max_fully_generalised,
        hierarchies=args.hierarchies,
        segments=args.segments,
        as_of=args.as_of,
        seed=args.seed,
    )
    print_ledger_label(result.ledger_label)
    anon, model = result.anonymised, result.model
    util = anon.metrics["utility"]
    print(
        f"released {result.release_id}: {anon.rows} rows, {model.name}, levels "
        f"{anon.levels}, {anon.suppressed} rows suppressed, {util['classes']} classes "
        f"(average size {util['average_class_size']:.1f}), highest prosecutor risk "
        f"{anon.metrics['risk']['prosecutor']['highest']:.3f}"
    )
    print("information kept per column (level of the hierarchy; 1 released value = none):")
    for c in anon.column_loss:
        print(
            f"  {c['column']:<14} level {c['level']}/{c['height']}  "
            f"{c['values before']:>6} values -> {c['released values']:<6}"
            + ("  FULLY GENERALISED" if c["fully generalised"] else "")
        )
    for warning in anon.warnings():
        print(f"warning: {warning}")
    if result.threshold["override"]:
        print(
            f"override: {len(anon.fully_generalised)} column(s) fully generalised where "
            f"policy {policy.name!r} allows {result.threshold['policy_max']} "
            f"({policy.cite('useful_release')}); recorded in the ledger and the certificate"
        )
    print(f"written to {result.path}")
    return 0
