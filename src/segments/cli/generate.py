"""``segments generate``: write the synthetic raw tables into a workspace."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from segments.cli.common import add_workspace_option, iso_date, non_negative_int, positive_int
from segments.synth.defaults import DEFAULT_DATASET


def register(subparsers: Any) -> None:
    """Add the ``generate`` command."""
    d = DEFAULT_DATASET
    parser = subparsers.add_parser(
        "generate",
        help="generate the synthetic Swedish office-supply dataset into W/raw/",
        description="Generate customers, products, orders, order lines and surveys as Parquet "
        "in W/raw/ with manifest.json (seed, parameters, row counts, SHA-256 of every file) "
        "and the planted truth in W/raw/truth/. Same seed and parameters give identical "
        "files. With --default, copy the committed default dataset instead.",
    )
    # the dataset's size and history: each defaults to the committed default dataset's
    for option, kind, metavar, what in (
        ("customers", positive_int, "N", "number of customer accounts"),
        ("months", positive_int, "M", "months of order history ending at --as-of"),
        ("as_of", iso_date, "YYYY-MM-DD", "last day of the history"),
        ("seed", non_negative_int, "S", "random seed"),
    ):
        default = getattr(d, option)
        parser.add_argument(
            "--" + option.replace("_", "-"),
            type=kind,
            default=default,
            metavar=metavar,
            help=f"{what} (default: {default})",
        )
    add_workspace_option(parser)
    parser.add_argument("--force", action="store_true", help="replace a non-empty W/raw/")
    parser.add_argument(
        "--default",
        action="store_true",
        help="copy the committed default dataset (data/synthetic/default) "
        "after checking its SHA-256s, instead of generating",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segments.synth.generate import copy_default_dataset, generate

    if args.default:
        path = copy_default_dataset(args.workspace, force=args.force)
        print(f"copied the default dataset to {path}")
        return 0
    try:
        result = generate(
            args.workspace,
            customers=args.customers,
            months=args.months,
            as_of=args.as_of,
            seed=args.seed,
            force=args.force,
        )
    except ValueError as exc:  # a bad parameter: the message names it and the fix
        print(f"segments generate: error: {exc}", file=sys.stderr)
        return 2
    counts = ", ".join(
        f"{k} {v:,}" for k, v in result.manifest["row_counts"].items() if not k.startswith("truth/")
    )
    print(f"wrote {result.path}: {counts}")
    return 0
