"""``segments forecast``: purchasing forecasts from the DP release archive only (AO-4).

Reads ``W/releases/archive/monthly_category.parquet`` and nothing else, and writes
``W/forecasts/forecast.parquet`` (category, month, units and SEK: point, lower, upper),
``W/forecasts/purchasing_export.csv`` for the purchasing system, ``W/forecasts/forecast.png``
and ``W/forecasts/forecast_card.json`` (what was read and how the forecast was made). All
outputs are computed before the first file is written, and each is written atomically, so a
failure leaves no forecast behind.
"""

from __future__ import annotations

import argparse
import io
from typing import Any

import pandas as pd

from segments.cli.common import add_workspace_option
from segments.exceptions import PolicyError
from segments.workspace import Workspace, atomic_write, sha256_file, write_json

FORECAST_FILE = "forecast.parquet"
EXPORT_FILE = "purchasing_export.csv"
CHART_FILE = "forecast.png"
CARD_FILE = "forecast_card.json"


def register(subparsers: Any) -> None:
    from segments.forecast import FORECAST_MODELS

    parser = subparsers.add_parser(
        "forecast",
        help="purchasing forecasts per product category from the DP release archive",
        description="Forecast units and SEK per product category for the next months from "
        "the differentially private monthly release archive (post-processing: no privacy "
        "budget is spent). Build the archive with `segments release backfill`.",
    )
    add_workspace_option(parser)
    parser.add_argument(
        "--horizon", type=int, default=6, help="months ahead, 1-12 (default 6; purchasing: 3-6)"
    )
    parser.add_argument(
        "--model", choices=FORECAST_MODELS, default="ets", help="forecast model (default ets)"
    )
    parser.add_argument(
        "--level", type=float, default=0.9, help="prediction interval coverage (default 0.9)"
    )
    parser.set_defaults(func=run)


def purchasing_export(forecast: pd.DataFrame) -> pd.DataFrame:
    """The forecast as the purchasing system reads it: whole units and whole SEK per month.

    Parameters
    ----------
    forecast : pandas.DataFrame
        From :func:`segments.forecast.forecast_archive`.

    Returns
    -------
    pandas.DataFrame
        ``category``, ``month`` (YYYY-MM), ``units_point``, ``units_lower``, ``units_upper``,
        ``sek_point``, ``sek_lower``, ``sek_upper``, ``interval_level``, ``model``.
    """
    out = pd.DataFrame(
        {
            "category": forecast["category"],
            "month": pd.to_datetime(forecast["month"]).dt.strftime("%Y-%m"),
        }
    )
    for measure in ("units", "sek"):
        for suffix, column in (
            ("point", measure),
            ("lower", f"{measure}_lower"),
            ("upper", f"{measure}_upper"),
        ):
            out[f"{measure}_{suffix}"] = forecast[column].round().astype("int64")
    out["interval_level"] = forecast["level"]
    out["model"] = forecast["units_model"]
    return out


def _chart_png(archive: pd.DataFrame, forecast: pd.DataFrame) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segments.plots import plot_forecast_fans

    axes = plot_forecast_fans(archive, forecast, measure="units")
    fig = axes.ravel()[0].figure
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def run(args: argparse.Namespace) -> int:
    from segments.forecast import archive_path, forecast_archive, load_archive

    workspace: Workspace = args.workspace
    if not 0.0 < args.level < 1.0:
        raise PolicyError(f"--level={args.level!r} must lie in (0, 1), e.g. 0.9")
    archive = load_archive(workspace)
    try:
        forecast = forecast_archive(archive, args.horizon, args.model, args.level)
    except ValueError as exc:  # horizon or history too short: a user error, not a crash
        raise PolicyError(f"--horizon/--model: {exc}") from None
    # everything is computed before the first write: a failure leaves no forecast behind
    export = purchasing_export(forecast)
    chart = _chart_png(archive, forecast)
    table = forecast.assign(month=pd.to_datetime(forecast["month"]).dt.date)
    parquet = io.BytesIO()
    table.to_parquet(parquet, index=False)
    card = {
        "source": str(archive_path(workspace).relative_to(workspace.root)),
        "source_sha256": sha256_file(archive_path(workspace)),
        "months_used": [
            archive["month"].min().date().isoformat(),
            archive["month"].max().date().isoformat(),
        ],
        "release_ids": sorted(archive["release_id"].astype(str).unique()),
        "model": args.model,
        "horizon": args.horizon,
        "interval_level": args.level,
        "guarantee": "post-processing of DP releases: no further privacy loss; reads only the "
        "release archive",
        "intervals": "model error of the true series plus release noise propagated exactly "
        "through the fitted filter (see segments.forecast)",
        "reconciliation": "WLS by forecast variance (MinT, diagonal), non-negative; "
        "categories sum to the total",
    }
    folder = workspace.forecasts
    with atomic_write(folder / FORECAST_FILE, "wb") as fh:
        fh.write(parquet.getvalue())
    with atomic_write(folder / EXPORT_FILE, "w") as fh:
        export.to_csv(fh, index=False)
    with atomic_write(folder / CHART_FILE, "wb") as fh:
        fh.write(chart)
    write_json(folder / CARD_FILE, card)
    total = forecast[forecast["category"] == "total"]
    print(
        f"forecast {args.model}: {forecast['category'].nunique() - 1} categories x "
        f"{args.horizon} months from {len(card['release_ids'])} releases "
        f"({card['months_used'][0]}..{card['months_used'][1]}); total units "
        f"{total['units'].round().astype(int).tolist()}"
    )
    print(f"wrote {folder / FORECAST_FILE}, {folder / EXPORT_FILE}, {folder / CHART_FILE}")
    return 0
