"""``segments forecast``: purchasing forecasts from the DP release archive only (AO-4).

A thin layer over :func:`segments.purchasing.forecast_purchasing`, which reads only the
archive (and, from the ledger its releases were charged to, the policy they were made under)
and writes ``W/forecasts/``.
"""

from __future__ import annotations

import argparse
from typing import Any

from segments.cli.common import add_workspace_option, int_in, open_fraction


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "forecast",
        help="purchasing forecasts per product category from the DP release archive",
        description="Forecast units and SEK per product category for the next months from "
        "the differentially private monthly release archive (post-processing: no privacy "
        "budget is spent). The archive grows by one `segments release --spec monthly_category` per "
        "closed month (`segments release backfill` builds a history for synthetic data only).",
    )
    add_workspace_option(parser)
    parser.add_argument(
        "--horizon",
        type=int_in(1, 12),
        default=6,
        help="months ahead, 1-12 (default 6; purchasing: 3-6)",
    )
    parser.add_argument(
        "--model",
        default="auto",
        help="forecast model, one of segments.forecast.FORECAST_MODELS, or auto (default): "
        "the richest model the released history supports (non-seasonal under 13 months)",
    )
    parser.add_argument(
        "--level",
        type=open_fraction,
        default=0.9,
        help="prediction interval coverage (default 0.9)",
    )
    parser.add_argument(
        "--ledger",
        help="the ledger that published the archive's releases (default: the one ledger, "
        "the controller's or the workspace's, that claims them; two are refused); its chain "
        "and the release cards must verify, and its recorded policy sets the reliability limit",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segments.purchasing import forecast_purchasing

    result = forecast_purchasing(
        args.workspace, args.horizon, args.model, args.level, ledger=args.ledger
    )
    forecast, card = result.forecast, result.card
    total = forecast[forecast["category"] == "total"]
    print(
        f"forecast {card['model']}: {forecast['category'].nunique() - 1} categories x "
        f"{args.horizon} months from {len(card['release_ids'])} releases "
        f"({card['months_used'][0]}..{card['months_used'][1]}); total units "
        f"{total['units'].round().astype(int).tolist()}"
    )
    print(f"model: {card['model_note']}")
    policy = card["policy"]
    print(
        f"policy {policy['name']!r} as ledger {policy['ledger']} recorded it: reliability "
        f"limit max_relative_error {policy['max_relative_error']:g}"
    )
    paths = result.paths
    print(f"wrote {paths['forecast']}, {paths['export']}, {paths['chart']}")
    return 0
