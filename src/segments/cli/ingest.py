"""``segments ingest``: a real export and its mapping file into ``W/raw`` (synthetic: false)."""

from __future__ import annotations

import argparse
from pathlib import Path

from segments.cli.common import (
    add_as_of_option,
    add_key_file_option,
    add_policy_option,
    add_workspace_option,
    epsilon_value,
    open_fraction,
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "ingest",
        help="bring your own data: a real export + a mapping file into W/raw",
        description="Read a real transaction export (CSV with any separator and declared "
        "encoding, whitespace text, gzip, or Parquet) with a TOML mapping file (columns, date "
        "format, currency and rate, how returns are marked, non-product codes, the product "
        "taxonomy, an optional public geography hierarchy) and write W/raw with a manifest "
        "that says synthetic: false, the export's SHA-256, row counts and every row dropped "
        "and why, in rows and value. Returns and cancellations are netted per customer, month "
        "and product; a net below zero is clipped at zero.",
    )
    add_workspace_option(parser)
    parser.add_argument("export", type=Path, help="the export file")
    parser.add_argument(
        "--mapping", required=True, type=Path, metavar="TOML", help="the mapping file"
    )
    add_as_of_option(
        parser, "the day of the extract (default: the last order date); later dates are refused"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing W/raw")
    add_key_file_option(
        parser,
        "(needed when the workspace's request log records erasures: erased people are left "
        "out of the new raw data)",
    )
    parser.set_defaults(func=run)
    register_bounds(sub)


def run(args: argparse.Namespace) -> int:
    from segments.ingest import ingest

    result = ingest(
        args.export,
        args.mapping,
        args.workspace,
        as_of=args.as_of,
        force=args.force,
        key_file=args.key_file,
    )
    print(result.summary())
    return 0


def register_bounds(sub: argparse._SubParsersAction) -> None:
    from segments.cli.common import add_ledger_options

    parser = sub.add_parser(
        "bounds",
        help="choose a policy's clipping bounds privately (DP quantiles, charged)",
        description="For a new business: choose spend_bound_sek, cell_spend_bound_sek, "
        "cell_units_bound and the order-count and basket feature bounds as a high quantile "
        "of the per-person values with OpenDP's private quantile over a public grid up to "
        "public ceilings; the ε is charged to the ledger before anything runs, and a TOML "
        "snippet for the policy file is printed. Bounds from public facts need no command: "
        "write them into the policy.",
    )
    add_workspace_option(parser)
    add_policy_option(parser)
    parser.add_argument("--purpose", required=True, help="prepared frames to read")
    parser.add_argument("--recipient", required=True, help="declared (internal) recipient")
    parser.add_argument("--epsilon", type=epsilon_value, required=True, help="total ε, charged")
    parser.add_argument(
        "--ceiling",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="public largest value of a bound (repeat for each: spend_bound_sek, "
        "cell_spend_bound_sek, cell_units_bound, feature_bounds.frequency_orders, "
        "feature_bounds.avg_basket_sek; optionally per category of the declared taxonomy: "
        "cell_units_by_category.<category>, cell_spend_sek_by_category.<category>)",
    )
    parser.add_argument("--quantile", type=open_fraction, default=0.98, help="target quantile")
    add_as_of_option(parser)
    add_ledger_options(parser)
    parser.set_defaults(func=run_bounds)


def run_bounds(args: argparse.Namespace) -> int:
    import datetime as dt

    from segments.cli.common import is_synthetic, open_ledger, print_ledger_label
    from segments.exceptions import PolicyError
    from segments.policy import Policy
    from segments.privacy.policy_bounds import choose_policy_bounds

    ceilings: dict[str, float] = {}
    for item in args.ceiling:
        key, sep, value = item.partition("=")
        try:
            ceilings[key.strip()] = float(value)
        except ValueError:
            raise PolicyError(
                f"--ceiling {item!r}: give KEY=VALUE with a number, e.g. spend_bound_sek=50000"
            ) from None
        if not sep:
            raise PolicyError(f"--ceiling {item!r}: give KEY=VALUE")
    policy = Policy.load(args.policy)
    synthetic = is_synthetic(args.workspace)
    ledger = open_ledger(args, policy, synthetic)
    result = choose_policy_bounds(
        args.workspace,
        policy,
        ledger,
        purpose=args.purpose,
        recipient=args.recipient,
        as_of=args.as_of or dt.date.today(),
        epsilon=args.epsilon,
        ceilings=ceilings,
        quantile=args.quantile,
    )
    print_ledger_label(ledger.label)
    print(result.toml())
    print(f"evidence: {result.path}")
    return 0
