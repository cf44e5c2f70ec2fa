"""Plot helpers (matplotlib): each takes data and an optional ``Axes`` and returns the Axes.

Helpers are grouped by pipeline stage; add new ones at the end of the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


# --- features and segmentation (issue 4) ------------------------------------------------------
def _axes(
    ax: Any,
    figsize: tuple[float, float],
    nrows: int = 1,
    ncols: int = 1,
    layout: str | None = "constrained",
    **options: Any,
) -> Any:
    """The caller's ``ax`` (one Axes or a grid), else a new figure's: every chart draws into
    given axes or its own figure (pyplot is imported only then)."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=figsize, layout=layout, **options)[1]


def plot_selection_scores(scores: Any, chosen_k: int | None = None, axes: Any = None) -> Any:
    """Silhouette, BIC and bootstrap stability against the number of segments.

    Parameters
    ----------
    scores : pandas.DataFrame
        ``SegmentModel.scores``: columns ``k``, ``silhouette``, ``bic``,
        ``stability_ari_mean``.
    chosen_k : int, optional
        Marked with a vertical line on every panel.
    axes : sequence of three matplotlib Axes, optional

    Returns
    -------
    numpy.ndarray of matplotlib Axes
    """
    axes = _axes(axes, (12, 3.2), 1, 3)
    axes = np.asarray(axes).ravel()
    panels = (
        ("silhouette", "silhouette (higher is better)"),
        ("bic", "BIC (lower is better)"),
        ("stability_ari_mean", "bootstrap stability (ARI)"),
    )
    for ax, (column, title) in zip(axes, panels, strict=True):
        ax.plot(scores["k"], scores[column], marker="o")
        if chosen_k is not None:
            ax.axvline(chosen_k, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel("number of segments k")
        ax.set_title(title)
    return axes


def plot_profile_heatmap(
    profiles: Any, columns: Sequence[str] | None = None, ax: Any = None
) -> Any:
    """Heatmap of segment profiles: by default each category's mean share of order lines
    (what segments buy, as their names say), or of spend when the profiles lack line shares.

    Parameters
    ----------
    profiles : pandas.DataFrame
        From ``segment_profiles``: one row per segment with ``name``, ``size`` and
        ``line_share_<category>_mean`` or ``share_<category>_mean`` columns.
    columns : sequence of str, optional
        Profile columns to show (default: every ``line_share_<category>_mean``, else every
        ``share_<category>_mean``). Each column is shown as is, so mix only columns on one
        scale.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    from segments.keys import key_labels
    from segments.schema import PRODUCT_CATEGORIES

    if columns is None:
        lines = [f"line_share_{c}_mean" for c in PRODUCT_CATEGORIES]
        has_lines = all(c in profiles for c in lines)
        columns = lines if has_lines else [f"share_{c}_mean" for c in PRODUCT_CATEGORIES]
        title = f"mean share of {'order lines' if has_lines else 'spend'} per category"
    else:
        title = None
    columns = list(columns)
    ax = _axes(ax, (1.0 + 0.8 * len(columns), 0.9 + 0.5 * len(profiles)), layout=None)
    values = profiles[columns].to_numpy(dtype=float)
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        colour = "white" if v < values.max() / 2 else "black"
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color=colour)
    categories = key_labels("category")  # the registry's names, as every output shows them
    keys = [c.removeprefix("line_").removeprefix("share_").removesuffix("_mean") for c in columns]
    labels = [categories.get(k, k) for k in keys]  # the title says lines or spend
    ax.set_xticks(range(len(columns)), labels, rotation=45, ha="right")
    rows = [
        f"{s}: {n} ({z})"
        for s, n, z in zip(profiles["segment"], profiles["name"], profiles["size"], strict=True)
    ]
    ax.set_yticks(range(len(profiles)), rows)
    ax.figure.colorbar(image, ax=ax, fraction=0.03)
    if title:
        ax.set_title(title)
    return ax


def plot_segments_2d(
    X: Any, segments: Any, *, max_points: int = 3000, seed: int = 0, ax: Any = None
) -> Any:
    """A 2-D principal-component projection of the model's features, coloured by segment.

    Parameters
    ----------
    X : array-like of shape (n, d)
        The transformed features (what the model saw).
    segments : array-like of int
        Segment of each row.
    max_points : int, default 3000
        At most this many people are drawn (a seeded random sample) so the plot stays small.
    seed : int, default 0
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    from sklearn.decomposition import PCA

    X, segments = np.asarray(X, dtype=float), np.asarray(segments)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(X), size=min(max_points, len(X)), replace=False))
    pca = PCA(n_components=2, svd_solver="full").fit(X)
    points = pca.transform(X[keep])
    ax = _axes(ax, (6, 4.5), layout=None)
    for seg in np.unique(segments):
        mask = segments[keep] == seg
        ax.scatter(points[mask, 0], points[mask, 1], s=6, alpha=0.6, label=f"segment {seg}")
    ratio = pca.explained_variance_ratio_
    ax.set_xlabel(f"PC 1 ({ratio[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({ratio[1]:.0%} of variance)")
    ax.legend(markerscale=3, fontsize=8)
    return ax


# --- generate (issue 2): what the raw dataset holds, as aggregates only -----------------------
def plot_orders_per_month(orders: Any, ax: Any = None) -> Any:
    """Number of orders per calendar month (bars), from the ``orders`` table.

    Parameters
    ----------
    orders : pandas.DataFrame or polars.DataFrame
        Needs ``order_date``.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    import polars as pl

    ax = _axes(ax, (10, 3))
    orders = _as_polars(orders)
    monthly = (
        orders.group_by(pl.col("order_date").dt.truncate("1mo").alias("month")).len().sort("month")
    )
    months = monthly["month"].to_list()
    colours = [
        "tab:orange" if m.month == 8 else "tab:grey" if m.month == 7 else "tab:blue" for m in months
    ]
    ax.bar(months, monthly["len"].to_list(), width=25, color=colours)
    ax.set_ylabel("orders")
    ax.set_title("Orders per month (August orange, July grey)")
    return ax


def _county_polygons() -> dict[str, list[np.ndarray]]:
    """County code -> outer rings (lon, lat) from the shipped GeoJSON."""
    import json

    from segments.geography import county_geojson_path

    features = json.loads(county_geojson_path().read_text(encoding="utf-8"))["features"]
    rings: dict[str, list[np.ndarray]] = {}
    for feature in features:
        geometry = feature["geometry"]
        polygons = (
            geometry["coordinates"]
            if geometry["type"] == "MultiPolygon"
            else [geometry["coordinates"]]
        )
        rings[feature["properties"]["county_code"]] = [np.asarray(p[0]) for p in polygons]
    return rings


def _ring_area_centroid(ring: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Area and area-weighted centroid of a closed ring (shoelace formula)."""
    x, y = ring[:, 0], ring[:, 1]
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    area = cross.sum() / 2
    if abs(area) < 1e-12:
        return 0.0, (float(x.mean()), float(y.mean()))
    cx = ((x + np.roll(x, -1)) * cross).sum() / (6 * area)
    cy = ((y + np.roll(y, -1)) * cross).sum() / (6 * area)
    return abs(float(area)), (float(cx), float(cy))


#: Where the labels of small, crowded counties go instead of their centroid (offset in the
#: map's units: degrees of latitude; longitude scaled by cos 62°): out to sea or apart.
_LABEL_NUDGE = {
    "13": (-0.75, 0.0),  # Halland: into the Kattegat
    "08": (0.15, 0.1),  # Kalmar
    "09": (0.45, 0.0),  # Gotland: east of the island
    "10": (0.6, -0.3),  # Blekinge: south-east, into the Baltic
    "07": (-0.05, -0.15),  # Kronoberg
    "01": (0.45, -0.05),  # Stockholm: towards the archipelago
    "03": (0.15, 0.2),  # Uppsala
    "19": (-0.05, 0.1),  # Västmanland
    "04": (0.1, -0.1),  # Södermanland
    "18": (-0.2, -0.1),  # Örebro
}


def _as_polars(frame: Any) -> Any:
    """A pandas frame (what the public API returns) as polars; polars frames pass through."""
    import polars as pl

    if isinstance(frame, pl.DataFrame):
        return frame
    return pl.from_pandas(frame.reset_index(drop=True))


def plot_county_map(
    values: Any,
    column: str,
    ax: Any = None,
    cmap: str = "viridis",
    *,
    interval: tuple[str, str] | None = None,
    names: bool = True,
    label: str | None = None,
    fontsize: float = 7.0,
) -> Any:
    """Choropleth of Sweden's counties (matplotlib polygons, no geopandas), labelled.

    Each county is labelled with its short name and its value (or the interval
    ``interval = (lower column, upper column)``), in white on a dark fill and black on a light
    one, with a contrasting outline so the text stays readable on any colour.

    Parameters
    ----------
    values : pandas.DataFrame or polars.DataFrame
        ``county_code`` and the numeric ``column`` to colour by (counties missing are grey),
        e.g. a :class:`segments.Session` release keyed by county.
    column : str
    ax : matplotlib Axes, optional
    cmap : str
    interval : (str, str), optional
        Columns of the lower and upper bound printed under each county's name.
        With ``<column>_reliable`` (every DP release's tables carry it) an unreliable
        county is hatched, its name marked †, and a legend line says how many.
    names : bool
        Print the counties' names.
    label : str, optional
        Colour-bar label (default: ``column``).
    fontsize : float

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import polars as pl
    >>> from segments.geography import counties
    >>> ax = plot_county_map(counties(), "population")  # doctest: +SKIP
    """
    import matplotlib.patheffects as pe
    import matplotlib.pyplot as plt
    from matplotlib.collections import PatchCollection
    from matplotlib.colors import Normalize
    from matplotlib.patches import Polygon

    from segments.keys import key_labels

    ax = _axes(ax, (5.5, 9))
    values = _as_polars(values)
    rows = {r["county_code"]: r for r in values.iter_rows(named=True)}
    by_county = {code: r[column] for code, r in rows.items()}
    short = key_labels("county_code")  # the registry's county names
    shown = [float(v) for v in by_county.values() if v is not None]
    norm = Normalize(min(0.0, *shown) if shown else 0.0, max(shown) if shown else 1.0)
    colormap = plt.get_cmap(cmap)
    patches, colours, missing = [], [], []
    anchors: dict[str, tuple[float, float]] = {}
    for code, rings in sorted(_county_polygons().items()):
        biggest = 0.0
        for ring in rings:
            # longitude scaled by cos(62°) so Sweden keeps its shape
            scaled = np.column_stack([ring[:, 0] * 0.47, ring[:, 1]])
            area, centre = _ring_area_centroid(scaled)
            if area > biggest:
                biggest, anchors[code] = area, centre
            patch = Polygon(scaled, closed=True)
            if by_county.get(code) is not None:
                patches.append(patch)
                colours.append(float(by_county[code]))
            else:
                missing.append(patch)
    collection = PatchCollection(
        patches, cmap=colormap, norm=norm, edgecolor="white", linewidth=0.5
    )
    collection.set_array(np.asarray(colours, dtype=float))
    ax.add_collection(collection)
    ax.add_collection(PatchCollection(missing, facecolor="lightgrey", edgecolor="white"))
    flag = f"{column}_reliable"
    weak = {c for c, r in rows.items() if flag in r and r[flag] is not None and not r[flag]}
    if weak:  # a release's mark: the county's noise is wider than the policy accepts
        hatched = [
            Polygon(np.column_stack([ring[:, 0] * 0.47, ring[:, 1]]), closed=True)
            for code, rings in sorted(_county_polygons().items())
            if code in weak
            for ring in rings
        ]
        ax.add_collection(
            PatchCollection(
                hatched, facecolor="none", edgecolor="grey", hatch="////", linewidth=0.0
            )
        )
    for code, (x, y) in anchors.items():
        dx, dy = _LABEL_NUDGE.get(code, (0.0, 0.0))
        x, y = x + dx, y + dy
        lines = [short.get(code, code) + (" †" if code in weak else "")] if names else []
        if code in rows and interval is not None:
            lo, hi = rows[code][interval[0]], rows[code][interval[1]]
            lines.append(f"{lo:,.0f}–{hi:,.0f}")
        elif by_county.get(code) is not None:
            lines.append(f"{by_county[code]:,.4g}")
        if not lines:
            continue
        value = by_county.get(code)
        r, g, b, _ = colormap(norm(value)) if value is not None else (0.83, 0.83, 0.83, 1)
        dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
        ink, halo = ("white", "black") if dark else ("black", "white")
        ax.text(
            x,
            y,
            "\n".join(lines),
            ha="center",
            va="center",
            fontsize=fontsize,
            color=ink,
            linespacing=1.0,
            path_effects=[pe.withStroke(linewidth=1.6, foreground=halo, alpha=0.7)],
        )
    ax.autoscale_view()
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.figure.colorbar(collection, ax=ax, shrink=0.6, label=label or column)
    if weak:
        ax.text(
            0.0,
            0.0,
            f"† hatched: {len(weak)} count{'s' * (len(weak) > 1)} unreliable (interval wider "
            "than the policy's max_relative_error of the value)",
            transform=ax.transAxes,
            fontsize=fontsize,
            va="top",
        )
    return ax


def plot_category_mix(mix: Any, ax: Any = None) -> Any:
    """Stacked horizontal bars: share of spend per product category, one bar per group.

    Parameters
    ----------
    mix : pandas.DataFrame or polars.DataFrame
        First column the group label (e.g. ``archetype``), then one column per category
        holding shares that sum to 1 per row.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    import matplotlib.pyplot as plt

    from segments.keys import key_labels

    mix = _as_polars(mix)
    ax = _axes(ax, (10, 0.5 * mix.height + 1.5))
    labels = mix[mix.columns[0]].to_list()
    left = np.zeros(mix.height)
    colours = plt.get_cmap("tab10")
    for i, category in enumerate(mix.columns[1:]):
        share = mix[category].to_numpy()
        name = key_labels("category").get(category, category)
        ax.barh(labels, share, left=left, color=colours(i % 10), label=name)
        left += share
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of spend")
    ax.legend(ncols=5, fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.25))
    return ax


# --- forecast (issue 8) ----------------------------------------------------------------------
def plot_forecast_fan(
    archive: Any, forecast: Any, category: str, measure: str = "units", ax: Any = None
) -> Any:
    """One category's released history and its forecast with the prediction interval.

    Parameters
    ----------
    archive : pandas.DataFrame
        The release archive (``month``, ``category``, ``units``, ``sek``), or any frame with
        those columns (e.g. true totals, in evaluations).
    forecast : pandas.DataFrame
        From :func:`segments.forecast.forecast_archive`; ``"total"`` plots the sum of the
        categories' released values against the total forecast.
        With ``<measure>_reliable`` (:func:`segments.purchasing.mark_unreliable_forecast`)
        the unreliable months are hatched and marked with a cross.
    category : str
    measure : {"units", "sek"}
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    import pandas as pd

    from segments.keys import key_labels

    ax = _axes(ax, (6, 3))
    history = archive if category == "total" else archive[archive["category"] == category]
    series = history.groupby("month")[measure].sum().sort_index()
    ahead = forecast[forecast["category"] == category].sort_values("month")
    months = pd.to_datetime(ahead["month"])
    ax.plot(pd.to_datetime(series.index), series.to_numpy(), color="C0", label="released")
    ax.fill_between(
        months,
        ahead[f"{measure}_lower"],
        ahead[f"{measure}_upper"],
        color="C1",
        alpha=0.3,
        label=f"{ahead['level'].iloc[0]:.0%} interval",
    )
    ax.plot(months, ahead[measure], color="C1", marker="o", markersize=3, label="forecast")
    flag = f"{measure}_reliable"
    if flag in ahead.columns:  # marked by segments.purchasing.mark_unreliable_forecast
        weak = ~ahead[flag].astype(bool).to_numpy()
        if weak.any():  # a hatched bar over each marked month's interval
            ax.bar(
                months[weak],
                (ahead[f"{measure}_upper"] - ahead[f"{measure}_lower"]).to_numpy()[weak],
                bottom=ahead[f"{measure}_lower"].to_numpy()[weak],
                width=20,
                facecolor="none",
                edgecolor="grey",
                hatch="////",
                linewidth=0,
                label="† unreliable: interval wider than the policy's limit",
            )
            ax.plot(
                months[weak],
                ahead[measure].to_numpy()[weak],
                linestyle="none",
                marker="X",
                color="black",
                markersize=5,
            )
    ax.set_title(key_labels("category").get(category, category), fontsize="medium")
    ax.set_ylim(bottom=0)
    ax.tick_params(axis="x", labelrotation=30, labelsize="small")
    return ax


def plot_forecast_fans(
    archive: Any, forecast: Any, measure: str = "units", axes: Any = None
) -> Any:
    """Fan charts for every category of a forecast, and the total, in a grid.

    Parameters
    ----------
    archive, forecast : pandas.DataFrame
        As :func:`plot_forecast_fan`.
    measure : {"units", "sek"}
    axes : array of matplotlib Axes, optional
        At least as many as categories plus one.

    Returns
    -------
    numpy.ndarray of matplotlib Axes
    """
    categories = list(dict.fromkeys(forecast["category"]))
    rows = -(-len(categories) // 3)
    axes = _axes(axes, (13, 2.6 * rows), rows, 3, squeeze=False)
    axes = np.asarray(axes)
    flat = axes.ravel()
    for ax, category in zip(flat, categories, strict=False):
        plot_forecast_fan(archive, forecast, category, measure, ax=ax)
    for ax in flat[len(categories) :]:
        ax.set_visible(False)
    # one legend for the grid: every label any panel drew (the unreliable mark may be in any)
    handles: dict[str, Any] = {}
    for ax in flat[: len(categories)]:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(text, handle)
    flat[0].legend(list(handles.values()), list(handles), fontsize="small")
    flat[0].figure.suptitle(f"{measure} per month: released history and forecast")
    return axes


def plot_privacy_cost(table: Any, ax: Any = None) -> Any:
    """Forecast error (median MAPE with its 10–90 % spread) against the per-month ε, one line
    per forecasting method, each beside its own baseline from the true totals.

    Parameters
    ----------
    table : pandas.DataFrame
        Rows of the backtest (:func:`segments.backtest_table`): ``epsilon`` (missing for the
        true-totals baselines), ``method`` (e.g. ``"DP archive eps=1, ETS"``; the text after
        the last ", " names the forecasting method), ``mape_median``, ``mape_q10``,
        ``mape_q90``.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax, (7, 4))
    model = table["method"].astype(str).str.rsplit(", ", n=1).str[-1]
    dp = table[table["epsilon"].notna()]
    models = list(dict.fromkeys(model[dp.index]))
    for i, name in enumerate(models):
        colour = f"C{i}"
        rows = dp[model[dp.index] == name].sort_values("epsilon")
        # a small horizontal offset keeps the error bars of the methods apart
        x = rows["epsilon"] * (1 + 0.04 * (i - (len(models) - 1) / 2))
        ax.errorbar(
            x,
            rows["mape_median"],
            yerr=[rows["mape_median"] - rows["mape_q10"], rows["mape_q90"] - rows["mape_median"]],
            marker="o",
            capsize=3,
            color=colour,
            label=f"{name} from the DP archive (median, 10–90 %)",
        )
        for _, row in table[table["epsilon"].isna() & (model == name)].iterrows():
            ax.axhline(
                row["mape_median"],
                linestyle="--",
                color=colour,
                alpha=0.8,
                label=f"{name} from the true totals",
            )
    ax.set_xscale("log", base=2)
    ticks = sorted(dp["epsilon"].unique())
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("ε per released month")
    ax.set_ylabel("MAPE over the 6 held-out months (%)")
    ax.legend(fontsize="small")
    return ax


# --- choice of k with its uncertainty (issue 20) ------------------------------------------------
def plot_selection_evidence(scores: Any, selection: Any = None, axes: Any = None) -> Any:
    """Held-out Davies-Bouldin index and split-half stability per k, with their intervals.

    Parameters
    ----------
    scores : pandas.DataFrame
        ``SegmentModel.scores``: ``k``, ``davies_bouldin`` (+ ``_low``/``_high``) and
        ``stability_ari_mean`` (+ ``stability_ari_low``/``_high``).
    selection : segments.segmentation.Selection, optional
        The chosen k is marked in black, the k too close to call with it in orange.
    axes : sequence of two matplotlib Axes, optional

    Returns
    -------
    numpy.ndarray of matplotlib Axes
    """
    axes = _axes(axes, (10, 3.4), 1, 2)
    axes = np.asarray(axes).ravel()
    panels = (
        ("davies_bouldin", "held-out Davies-Bouldin index (lower is better)"),
        ("stability_ari", "split-half stability, ARI (higher is better)"),
    )
    ks = scores["k"].to_numpy()
    for ax, (column, title) in zip(axes, panels, strict=True):
        mean = scores[column if column == "davies_bouldin" else f"{column}_mean"].to_numpy()
        low, high = scores[f"{column}_low"].to_numpy(), scores[f"{column}_high"].to_numpy()
        ax.errorbar(ks, mean, yerr=[mean - low, high - mean], marker="o", capsize=3)
        if selection is not None:
            ax.axvline(selection.k, color="black", linestyle="--", linewidth=1, label="chosen k")
            for k in selection.too_close_to_call:
                ax.axvline(k, color="tab:orange", linestyle=":", linewidth=1.5)
        ax.set_xlabel("number of segments k")
        ax.set_title(title, fontsize="medium")
    if selection is not None and selection.too_close_to_call:
        axes[0].plot([], [], color="tab:orange", linestyle=":", label="too close to call")
    if selection is not None:
        axes[0].legend(fontsize="small")
    return axes


# --- privacy–utility curves (issue 19) ----------------------------------------------------------
def plot_privacy_utility(
    curve: Any,
    error: str,
    *,
    epsilon: str = "epsilon",
    by: str | None = None,
    labels: Any = None,
    used_epsilon: float | None = None,
    used_label: str = "ε used",
    budget_epsilon: float | None = None,
    budget_label: str = "the policy's whole budget per period",
    target: float | None = None,
    target_label: str = "target",
    ylabel: str | None = None,
    xlabel: str = "ε",
    logy: bool = True,
    percent: bool = False,
    ax: Any = None,
) -> Any:
    """Error (or utility) against ε, one labelled line per group, with the ε actually used,
    the policy's whole budget (beyond it shaded: no release can spend more) and a target.

    Parameters
    ----------
    curve : pandas or polars DataFrame
        One row per ε (and group): columns ``epsilon`` and ``error``.
    error : str
        The column drawn on the y axis.
    epsilon : str, default 'epsilon'
    by : str, optional
        A column naming the groups (e.g. the design or the method): one line each, sorted by
        ε within the group, so groups never join into one line.
    labels : mapping, optional
        Legend text per group value (default: the value).
    used_epsilon : float, optional
        The ε the release really uses (from its ledger entry or the policy's plan): a
        vertical line, its value in the legend, and the curve's value there written beside it.
    budget_epsilon : float, optional
        The policy's ``budget_epsilon``: the region beyond it is shaded.
    target : float, optional
        A horizontal line (e.g. the policy's ``max_relative_error``).
    ylabel, xlabel : str
    logy : bool, default True
        Logarithmic y axis (the x axis is always logarithmic).
    percent : bool, default False
        Multiply ``error`` (and ``target``) by 100 for display.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    import pandas as pd
    from matplotlib.ticker import FuncFormatter, NullLocator

    frame = curve.to_pandas() if hasattr(curve, "to_pandas") else pd.DataFrame(curve)
    missing = [c for c in (epsilon, error, *([by] if by else [])) if c not in frame.columns]
    if missing:
        raise ValueError(
            f"curve has no column {missing[0]!r}; columns: {list(frame.columns)}; pass "
            "epsilon=, error= or by= naming its columns"
        )
    ax = _axes(ax, (7, 4))
    scale = 100.0 if percent else 1.0
    groups = list(dict.fromkeys(frame[by])) if by else [None]
    names = dict(labels or {})
    at_used: list[tuple[float, str]] = []
    for i, group in enumerate(groups):
        rows = frame if group is None else frame[frame[by] == group]
        rows = rows.sort_values(epsilon)
        x = rows[epsilon].to_numpy(dtype=float)
        y = rows[error].to_numpy(dtype=float) * scale
        label = names.get(group, str(group)) if group is not None else ylabel or error
        ax.plot(x, y, marker="o", color=f"C{i}", label=label)
        if used_epsilon is not None and x.size > 1 and x.min() <= used_epsilon <= x.max():
            # the curve's value at the ε used, interpolated on the log-log scale
            log_y = np.interp(np.log(used_epsilon), np.log(x), np.log(np.maximum(y, 1e-300)))
            value = float(np.exp(log_y)) if logy else float(np.interp(used_epsilon, x, y))
            ax.plot([used_epsilon], [value], marker="D", color=f"C{i}", ms=7, zorder=5)
            at_used.append((value, f"C{i}"))
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    low, high = float(frame[epsilon].min()), float(frame[epsilon].max())
    if budget_epsilon is not None:
        right = max(high, budget_epsilon) * 1.6
        ax.axvspan(budget_epsilon, right, color="0.85", zorder=0)
        beyond = f"{budget_label}: ε = {budget_epsilon:.3g} (beyond it, shaded)"
        ax.axvline(budget_epsilon, color="tab:red", linestyle="--", lw=1.2, label=beyond)
        ax.set_xlim(low / 1.3, right)
    if used_epsilon is not None:
        ax.axvline(
            used_epsilon, color="black", lw=1.2, label=f"{used_label}: ε = {used_epsilon:.3g}"
        )
        for value, colour in at_used:
            text = f"{value:.3g}{' %' if percent else ''}"
            ax.annotate(text, (used_epsilon, value), xytext=(6, 4), textcoords="offset points",
                        color=colour, fontsize=9, fontweight="bold")  # fmt: skip
    if target is not None:
        unit = " %" if percent else ""
        ax.axhline(target * scale, color="grey", linestyle=":", lw=1.2,
                   label=f"{target_label}: {target * scale:g}{unit}")  # fmt: skip
    ticks = sorted(set(frame[epsilon].astype(float)))
    ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    if logy:  # plain numbers; within one decade the minor ticks are the only ones, so label them
        plain = FuncFormatter(lambda value, _: f"{value:.3g}")
        ax.yaxis.set_major_formatter(plain)
        low_y, high_y = ax.get_ylim()
        if high_y / low_y < 10:
            ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel or error)
    # below the axes: inside, it would hide the curve where it matters
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16))
    return ax


def plot_intervals_by_key(
    table: Any,
    x: str,
    value: str,
    *,
    by: str | None = None,
    ax: Any = None,
    ylabel: str | None = None,
    legend: bool = True,
) -> Any:
    """Released values with their intervals along a key (e.g. months), one line per ``by``.

    Reads ``<value>``, ``<value>_lower`` and ``<value>_upper`` (the columns of every DP
    release). A hollow marker is a cell whose interval reaches zero: its noise is as large
    as its value, so a "0" there (a negative noisy value made non-negative) says "not
    distinguishable from none", not "none". Lines of ``by`` are offset slightly along ``x``
    so their bars do not overlap.

    Parameters
    ----------
    table : pandas.DataFrame or polars.DataFrame
        A release, e.g. a :class:`segments.Session` query grouped by ``category`` and
        ``month``.
    x : str
        The key along the axis (its values sorted).
    value : str
        The released column (``sum_units``, ``count``...).
    by : str, optional
        The key of the lines; its ``<by>_name`` label column is used when present.
    ax : matplotlib Axes, optional
    ylabel : str, optional
    legend : bool

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> ax = plot_intervals_by_key(units, "month", "sum_units", by="category")  # doctest: +SKIP
    """
    ax = _axes(ax, (9, 4.5))
    frame = _as_polars(table)
    missing = [c for c in (x, value, f"{value}_lower", f"{value}_upper") if c not in frame.columns]
    if by is not None and by not in frame.columns:
        missing.append(by)
    if missing:
        raise ValueError(
            f"plot_intervals_by_key: table has no column {missing[0]!r}; pass a released "
            f"table with {value}, {value}_lower and {value}_upper"
        )
    label_of = f"{by.removesuffix('_code')}_name" if by is not None else None
    positions = {v: i for i, v in enumerate(sorted(frame[x].unique().to_list()))}
    groups: list[tuple[Any, Any]] = (
        [(None, frame)] if by is None else sorted(frame.group_by(by), key=lambda g: str(g[0][0]))
    )
    width = 0.6 / max(len(groups), 1)
    for i, (key, rows) in enumerate(groups):
        rows = rows.sort(x)
        offset = (i - (len(groups) - 1) / 2) * width / 2
        xs = np.array([positions[v] for v in rows[x].to_list()], dtype=float) + offset
        values = rows[value].cast(float).to_numpy()
        lower = rows[f"{value}_lower"].cast(float).to_numpy()
        upper = rows[f"{value}_upper"].cast(float).to_numpy()
        name = None
        if key is not None:
            name = str(rows[label_of][0] if label_of in rows.columns else key[0])
        line = ax.errorbar(
            xs,
            values,
            yerr=[np.maximum(values - lower, 0), np.maximum(upper - values, 0)],
            marker="o",
            capsize=2,
            label=name,
        )
        reaches_zero = lower <= 0
        ax.scatter(
            xs[reaches_zero],
            values[reaches_zero],
            s=40,
            facecolor="white",
            edgecolor=line[0].get_color(),
            zorder=3,
        )
    ax.set_xticks(range(len(positions)), [str(v) for v in positions])
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel or f"{value} (DP, interval)")
    if legend and by is not None:
        ax.legend(ncols=2, fontsize="small")
    return ax


def plot_rows_removed(rules: Any, ax: Any = None, title: str | None = None) -> Any:
    """Order lines each prepare rule removed, labelled with the policy clauses it cites.

    Parameters
    ----------
    rules : pandas.DataFrame or polars.DataFrame
        ``segments.PolicyReport.to_frame()``: ``rule``, ``clause_ids``, ``rows_removed``
        (rules that removed nothing are left out).
    ax : matplotlib Axes, optional
    title : str, optional

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> ax = plot_rows_removed(report.to_frame())  # doctest: +SKIP
    """
    import polars as pl

    frame = _as_polars(rules).filter(pl.col("rows_removed") > 0)
    # a retention rule is named after its purpose; the title says which
    labels = [
        f"{clauses}: {rule.split(': ')[-1]}"
        for clauses, rule in zip(frame["clause_ids"], frame["rule"], strict=True)
    ]
    ax = _axes(ax, (8, 0.5 + 0.45 * max(len(labels), 1)))
    from matplotlib.ticker import MaxNLocator, StrMethodFormatter

    ax.barh(labels[::-1], frame["rows_removed"].to_list()[::-1], color="#4C72B0")
    ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))  # 200,000 not 200000
    ax.set_xlabel("order lines removed")
    if title:
        ax.set_title(title)
    return ax


def plot_class_sizes(sizes: Any, k: int, ax: Any = None) -> Any:
    """Histogram of the equivalence-class sizes of a k-anonymous release, with the policy's
    ``k`` marked: every bar must lie at or right of the line.

    Parameters
    ----------
    sizes : sequence of int
        People per class (e.g. recounted from the released file alone).
    k : int
        The policy's smallest class size.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> ax = plot_class_sizes([5, 7, 12], k=5)  # doctest: +SKIP
    """
    ax = _axes(ax, (7, 3))
    ax.hist(np.asarray(sizes, dtype=float), bins=30, color="tab:blue")
    ax.axvline(k, color="tab:red", linestyle="--", label=f"k = {k}")
    ax.set_xlabel("class size (people sharing the released values)")
    ax.set_ylabel("classes")
    ax.legend()
    return ax


def plot_interval_panels(
    table: Any,
    x: str,
    value: str,
    *,
    panel: str,
    top: int = 6,
    ncols: int = 3,
    axes: Any = None,
    ylabel: str | None = None,
) -> Any:
    """Small multiples: one panel per ``panel`` key (its ``top`` largest), each cell's
    released value along ``x`` with its own interval — a crowded key × key chart made
    readable without pooling cells.

    Panels are ordered by the sum of their released values (post-processing of the release;
    with noise, so neighbours in that order may swap) and share one y scale from zero, so
    panels compare as bars would. A hollow marker is a cell whose interval
    reaches zero ("not distinguishable from none"); a cell withheld by the release (its value
    missing, or a ``<value>_status`` other than ``published``) is a grey cross on the axis
    labelled "withheld" — never drawn as a zero. The keys left out are named in the title.

    Parameters
    ----------
    table : pandas.DataFrame or polars.DataFrame
        A release with ``<value>``, ``<value>_lower`` and ``<value>_upper``.
    x : str
        The key along each panel's axis (e.g. ``month``; its values sorted).
    value : str
    panel : str
        The key of the panels (e.g. ``category``); its ``<panel>_name`` labels the panels.
    top : int
        Panels drawn (the largest); the others are listed, not drawn.
    ncols : int
    axes : array of matplotlib Axes, optional
        At least ``min(top, keys)`` of them.
    ylabel : str, optional

    Returns
    -------
    numpy.ndarray of matplotlib Axes

    Examples
    --------
    >>> axes = plot_interval_panels(units, "month", "sum_units", panel="category")  # doctest: +SKIP
    """
    import polars as pl

    frame = _as_polars(table)
    needed = (x, value, f"{value}_lower", f"{value}_upper", panel)
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(
            f"plot_interval_panels: table has no column {missing[0]!r}; pass a released table "
            f"with {x}, {panel}, {value}, {value}_lower and {value}_upper"
        )
    if top < 1 or ncols < 1:
        raise ValueError(f"plot_interval_panels: top={top} and ncols={ncols} must be at least 1")
    status = f"{value}_status"
    withheld = pl.col(value).is_null() | pl.col(value).cast(pl.Float64).is_nan()
    if status in frame.columns:
        withheld = withheld | (pl.col(status) != "published")
    frame = frame.with_columns(withheld.alias("_withheld"))
    label_of = f"{panel.removesuffix('_code')}_name"
    totals = (
        frame.group_by(panel)
        .agg(pl.col(value).cast(pl.Float64).fill_nan(None).sum().alias("_total"))
        .sort(["_total", panel], descending=[True, False])
    )
    keys = totals[panel].to_list()
    shown, left_out = keys[:top], keys[top:]
    names = (
        dict(zip(frame[panel].to_list(), frame[label_of].to_list(), strict=True))
        if (label_of in frame.columns)
        else {k: k for k in keys}
    )
    positions = {v: i for i, v in enumerate(sorted(frame[x].unique().to_list()))}
    rows, cols = -(-len(shown) // ncols), min(ncols, len(shown))
    axes = _axes(axes, (4.2 * cols, 2.7 * rows), rows, cols, squeeze=False, sharey=True)
    axes = np.asarray(axes)
    flat = axes.ravel()
    for ax, key in zip(flat, shown, strict=False):
        rows_of = frame.filter(pl.col(panel) == key).sort(x)
        xs = np.array([positions[v] for v in rows_of[x].to_list()], dtype=float)
        out = rows_of["_withheld"].to_numpy()
        values = rows_of[value].cast(pl.Float64).fill_null(np.nan).to_numpy()
        lower = rows_of[f"{value}_lower"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        upper = rows_of[f"{value}_upper"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        kept = ~out
        line = ax.errorbar(
            xs[kept],
            values[kept],
            yerr=[np.maximum(values - lower, 0)[kept], np.maximum(upper - values, 0)[kept]],
            marker="o",
            capsize=2,
        )
        zero = kept & (lower <= 0)
        ax.scatter(
            xs[zero], values[zero], s=40, facecolor="white", edgecolor=line[0].get_color(), zorder=3
        )
        if out.any():
            ax.scatter(xs[out], np.zeros(int(out.sum())), marker="x", color="grey", zorder=3)
            for position in xs[out]:
                ax.annotate(
                    "withheld", (position, 0), xytext=(0, 6), textcoords="offset points",
                    ha="center", fontsize="x-small", color="grey",
                )  # fmt: skip
        ax.set_title(str(names.get(key, key)), fontsize="medium")
        ax.set_ylim(bottom=0)
        ax.set_xticks(range(len(positions)), [str(v) for v in positions], fontsize="small")
        ax.tick_params(axis="x", labelrotation=45)
        ax.grid(axis="y", alpha=0.3)
    for ax in flat[len(shown) :]:
        ax.set_visible(False)
    for ax in axes[:, 0] if axes.ndim == 2 else flat[:1]:
        ax.set_ylabel(ylabel or f"{value} (DP, interval)")
    if left_out:
        others = ", ".join(str(names.get(k, k)) for k in left_out)
        flat[0].figure.suptitle(
            f"{len(left_out)} more with smaller released totals, not drawn: {others}",
            fontsize="small",
        )
    return axes
