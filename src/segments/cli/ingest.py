"""``segments ingest``: a real export and its mapping file into ``W/raw`` (synthetic: false)."""

from __future__ import annotations

import argparse
from pathlib import Path

from segments.cli.common import add_workspace_option, iso_date


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
    parser.add_argument(
        "--as-of",
        type=iso_date,
        metavar="DATE",
        help="the day of the extract (default: the last order date); later dates are refused",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing W/raw")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segments.ingest import ingest

    result = ingest(args.export, args.mapping, args.workspace, as_of=args.as_of, force=args.force)
    print(result.summary())
    return 0
