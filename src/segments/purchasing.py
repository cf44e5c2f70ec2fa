"""The purchasing forecast job: from the DP release archive only (AO-4) to ``W/forecasts/``.

Reads ``W/releases/archive/monthly_category.parquet`` and nothing else, and writes
``W/forecasts/forecast.parquet`` (category, month, units and SEK: point, lower, upper),
``W/forecasts/purchasing_export.csv`` for the purchasing system, ``W/forecasts/forecast.png``
and ``W/forecasts/forecast_card.json`` (what was read and how the forecast was made). All
outputs are computed before the first file is written, and each is written atomically, so a
failure leaves no forecast behind. Forecasting is post-processing of DP releases: no privacy
budget is spent.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segments.exceptions import PolicyError
from segments.forecast import clip_correction, forecast_archive, load_archive
from segments.policy import PrivacyParameters
from segments.privacy.postprocess import is_reliable, reliability_footnote
from segments.workspace import Workspace, atomic_write, sha256_file, write_json

FORECAST_FILE = "forecast.parquet"
EXPORT_FILE = "purchasing_export.csv"
CHART_FILE = "forecast.png"
CARD_FILE = "forecast_card.json"


@dataclass(frozen=True)
class PurchasingForecast:
    """What :func:`forecast_purchasing` wrote: the forecast table, its card and the files."""

    forecast: pd.DataFrame
    card: dict[str, Any]
    paths: dict[str, Path]


#: The policy default of ``max_relative_error``, for a forecast made without a policy at hand
#: (``segments forecast`` reads only the archive); the main job passes its policy's own.
DEFAULT_MAX_RELATIVE_ERROR = float(PrivacyParameters.max_relative_error)


def mark_unreliable_forecast(
    forecast: pd.DataFrame, max_relative_error: float = DEFAULT_MAX_RELATIVE_ERROR
) -> pd.DataFrame:
    """The forecast with ``units_reliable`` and ``sek_reliable``: false where the prediction
    interval reaches further than ``max_relative_error`` of the point on either side, or the
    point is 0 (:func:`segments.privacy.postprocess.is_reliable`, the rule every released
    table's marks follow). Such a month is still forecast, never clamped: a purchaser reads
    it through its interval.

    Examples
    --------
    >>> f = pd.DataFrame({"units": [100.0, 10.0], "units_lower": [80.0, 0.0],
    ...                   "units_upper": [125.0, 30.0], "sek": [1e4, 0.0],
    ...                   "sek_lower": [9e3, 0.0], "sek_upper": [1.1e4, 5.0]})
    >>> mark_unreliable_forecast(f, 0.5)[["units_reliable", "sek_reliable"]].values.tolist()
    [[True, True], [False, False]]
    """
    out = forecast.copy()
    for measure in ("units", "sek"):
        point = out[measure].to_numpy(dtype=float)
        reach = np.maximum(
            out[f"{measure}_upper"].to_numpy(dtype=float) - point,
            point - out[f"{measure}_lower"].to_numpy(dtype=float),
        )
        out[f"{measure}_reliable"] = is_reliable(point, reach, max_relative_error)
    return out


def purchasing_export(
    forecast: pd.DataFrame, max_relative_error: float = DEFAULT_MAX_RELATIVE_ERROR
) -> pd.DataFrame:
    """The forecast as the purchasing system reads it: whole units and whole SEK per month,
    each month marked where its interval is too wide to act on as a figure.

    Parameters
    ----------
    forecast : pandas.DataFrame
        From :func:`segments.forecast.forecast_archive`.
    max_relative_error : float
        The policy's limit for the reliability marks (:func:`mark_unreliable_forecast`).

    Returns
    -------
    pandas.DataFrame
        ``category``, ``month`` (YYYY-MM), ``units_point``, ``units_lower``, ``units_upper``,
        ``sek_point``, ``sek_lower``, ``sek_upper``, ``interval_level``, ``model``,
        ``units_reliable``, ``sek_reliable`` (the card's ``reliability`` is their legend).
    """
    if "units_reliable" not in forecast.columns:
        forecast = mark_unreliable_forecast(forecast, max_relative_error)
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
    # last, so a reader of the earlier columns by position is not moved
    for measure in ("units", "sek"):
        out[f"{measure}_reliable"] = forecast[f"{measure}_reliable"].astype(bool).to_numpy()
    return out


def _chart_png(archive: pd.DataFrame, forecast: pd.DataFrame) -> bytes:
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from segments.plots import plot_forecast_fans

    axes = plot_forecast_fans(archive, forecast, measure="units")
    fig = axes.ravel()[0].figure
    FigureCanvasAgg(fig)  # render off-screen whatever backend the caller uses
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def forecast_purchasing(
    workspace: Workspace | str | Path,
    horizon: int = 6,
    model: str = "auto",
    level: float = 0.9,
    max_relative_error: float = DEFAULT_MAX_RELATIVE_ERROR,
) -> PurchasingForecast:
    """Forecast units and SEK per category from the DP archive and write ``W/forecasts/``.

    Parameters
    ----------
    workspace : Workspace or path
        Whose ``W/releases/archive/`` is read (nothing else is).
    horizon : int
        Months ahead, 1-12 (purchasing plans 3-6).
    model : str
        One of :data:`segments.forecast.FORECAST_MODELS`, or ``auto`` (default): the richest
        model the released history supports, non-seasonal under 13 months (the card says so).
    level : float
        Prediction interval coverage, in (0, 1).
    max_relative_error : float
        The policy's limit: a month whose interval reaches further than this share of its
        point is marked unreliable in the export, the chart and the card (default: the
        policy default; the main job passes its policy's).

    Returns
    -------
    PurchasingForecast

    Raises
    ------
    PolicyError
        A bad level, horizon or model, or a history too short for the model (the message
        names the parameter and the fix); nothing is written.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    if not 0.0 < level < 1.0:
        raise PolicyError(f"--level={level!r} must lie in (0, 1), e.g. 0.9")
    archive = load_archive(ws)
    try:
        forecast = forecast_archive(archive, horizon, model, level)
    except ValueError as exc:  # horizon or history too short: a user error, not a crash
        raise PolicyError(f"--horizon/--model: {exc}") from None
    # everything is computed before the first write: a failure leaves no forecast behind
    forecast = mark_unreliable_forecast(forecast, max_relative_error)
    export = purchasing_export(forecast)
    chart = _chart_png(archive, forecast)
    table = forecast.assign(month=pd.to_datetime(forecast["month"]).dt.date)
    parquet = io.BytesIO()
    table.to_parquet(parquet, index=False)
    card = {
        "source": str(ws.archive.relative_to(ws.root)),
        "source_sha256": sha256_file(ws.archive),
        "months_used": [
            archive["month"].min().date().isoformat(),
            archive["month"].max().date().isoformat(),
        ],
        "release_ids": sorted(archive["release_id"].astype(str).unique()),
        "model": str(forecast["model_chosen"].iloc[0]),
        "model_requested": model,
        "model_note": str(forecast["model_note"].iloc[0]),
        "horizon": horizon,
        "interval_level": level,
        "guarantee": "post-processing of DP releases: no further privacy loss; reads only the "
        "release archive",
        "intervals": "model error of the true series plus release noise propagated exactly "
        "through the fitted filter (see segments.forecast)",
        "reconciliation": "WLS by forecast variance (MinT, diagonal), non-negative; "
        "categories sum to the total",
        "reliability": reliability_footnote(
            export.rename(columns={"units_point": "units", "sek_point": "sek"}),
            max_relative_error,
            what="forecast month",
            level=level,
        ),
        "clip_correction": _clip_statement(archive),
    }
    folder = ws.forecasts
    paths = {
        "forecast": folder / FORECAST_FILE,
        "export": folder / EXPORT_FILE,
        "chart": folder / CHART_FILE,
        "card": folder / CARD_FILE,
    }
    with atomic_write(paths["forecast"], "wb") as fh:
        fh.write(parquet.getvalue())
    with atomic_write(paths["export"], "w") as fh:
        export.to_csv(fh, index=False)
    with atomic_write(paths["chart"], "wb") as fh:
        fh.write(chart)
    write_json(paths["card"], card)
    return PurchasingForecast(forecast=forecast, card=card, paths=paths)


def _clip_statement(archive: pd.DataFrame) -> dict[str, Any]:
    """What the card says of the clip's bias: per measure, the pooled clipped share the
    forecast added (:func:`segments.forecast.clip_correction`), its standard error and the
    months whose charged clip excess it pools; or that none was measured."""
    shares = clip_correction(archive)
    out: dict[str, Any] = {
        "method": "each monthly release measures the mass its contribution clip removed "
        "(an OpenDP sum charged with the release); the forecast scales its points by 1 + the "
        "pooled share and widens its intervals by that estimate's noise; mass above twice "
        "the clip bound is not estimated",
    }
    for measure in ("units", "sek"):
        column = f"{measure}_clip_excess"
        if measure not in shares:
            out[measure] = (
                "not corrected: no released month carries a clip excess (released before it "
                "was measured); the forecast is biased low by the clip (3-4 % on synthetic data)"
            )
            continue
        share, variance = shares[measure]
        out[measure] = {
            "clipped_share": round(share, 5),
            "standard_error": round(variance**0.5, 5),
            "months": int(archive.loc[archive[column].notna(), "month"].nunique()),
        }
    return out
