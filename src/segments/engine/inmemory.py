"""The polars backend: today's in-memory path, the baseline every other engine is held to.

Lines are scanned with ``pl.scan_parquet`` and aggregated by polars' own engine on the
driver; nothing spills, so memory grows with the lines a window holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from segments.engine.base import (
    ORDER_COUNT_SCHEMA,
    Engine,
    LineQuery,
    Window,
    cell_schema,
    check_categories,
    feature_sum_schema,
    ore_to_sek,
)

__all__ = ["PolarsEngine", "lazy_cells", "lazy_feature_sums", "lazy_orders"]


def _in_window(window: Window) -> pl.Expr:
    if window is None:
        return pl.lit(True)
    start, end = window
    return (pl.col("order_date") >= start) & (pl.col("order_date") < end)


def lazy_cells(
    lines: pl.LazyFrame, window: Window, categories: Sequence[str], *, by_month: bool = False
) -> pl.DataFrame:
    """:meth:`Engine.person_cells <segments.engine.base.Engine.person_cells>` of a polars
    LazyFrame of lines (also used for lines that are already in memory)."""
    month = [pl.col("order_date").dt.strftime("%Y-%m").alias("month")] if by_month else []
    ore = (pl.col("amount_sek") * 100 + 0.5).floor().cast(pl.Int64)
    cells = (
        lines.filter(_in_window(window))
        .group_by("person_id", *month, "category")
        .agg(
            ore.sum().alias("_ore"),
            pl.col("quantity").cast(pl.Int64).sum().alias("units"),
        )
        .collect(engine="streaming")
    )
    check_categories(cells["category"].unique().to_list(), categories)
    order = ["person_id", *(["month"] if by_month else []), "category"]
    return (
        cells.select(*order, ore_to_sek(pl.col("_ore")).alias("sek"), pl.col("units"))
        .cast(cell_schema(by_month))  # type: ignore[arg-type]
        .sort(order)
    )


def lazy_orders(lines: pl.LazyFrame, window: Window) -> pl.DataFrame:
    """:meth:`Engine.person_orders <segments.engine.base.Engine.person_orders>` of a polars
    LazyFrame of lines."""
    return (
        lines.filter(_in_window(window))
        .group_by("person_id")
        .agg(pl.col("order_id").n_unique().cast(pl.Int64).alias("orders"))
        .collect(engine="streaming")
        .cast(ORDER_COUNT_SCHEMA)  # type: ignore[arg-type]
        .sort("person_id")
    )


def _ore() -> pl.Expr:
    return (pl.col("amount_sek") * 100 + 0.5).floor().cast(pl.Int64).alias("_ore")


def lazy_feature_sums(
    lines: pl.LazyFrame, window: Window, categories: Sequence[str], channels: Sequence[str]
) -> pl.DataFrame:
    """:meth:`Engine.person_feature_sums <segments.engine.base.Engine.person_feature_sums>`
    of a polars LazyFrame of lines."""
    schema = feature_sum_schema(categories, channels)
    kept = lines.filter(_in_window(window)).select(
        "person_id", "order_id", "order_date", "channel", "category", _ore()
    )
    codes = kept.select(
        pl.col("category").unique().implode(), pl.col("channel").unique().implode()
    ).collect(engine="streaming")
    check_categories(codes["category"][0].to_list(), categories)
    check_categories(codes["channel"][0].to_list(), channels, "channel")
    ore, quarter = pl.col("_ore"), pl.col("order_date").dt.quarter()
    per_order = kept.group_by("person_id", "order_id").agg(
        pl.col("order_date").min(), pl.col("channel").min(), ore.sum()
    )
    per_person = per_order.group_by("person_id").agg(
        pl.col("order_date").max().alias("last_order"),
        pl.len().alias("orders"),
        ore.sum().alias("ore"),
        *((pl.col("channel") == c).sum().alias(f"orders_{c}") for c in channels),
        *(ore.filter(quarter == q).sum().alias(f"ore_q{q}") for q in range(1, 5)),
    )
    per_category = kept.group_by("person_id").agg(
        pl.len().alias("lines"),
        *(ore.filter(pl.col("category") == c).sum().alias(f"ore_{c}") for c in categories),
        *((pl.col("category") == c).sum().alias(f"lines_{c}") for c in categories),
    )
    return (
        per_person.join(per_category, on="person_id")
        .select(list(schema))
        .collect(engine="streaming")
        .cast(schema)  # type: ignore[arg-type]
        .sort("person_id")
    )


class PolarsEngine(Engine):
    """In-memory polars (the baseline). ``scratch`` is unused: polars does not spill here."""

    name = "polars"

    def _cells(self, query: LineQuery, scratch: Path) -> pl.DataFrame:
        return lazy_cells(_scan(query), query.window, query.categories, by_month=query.by_month)

    def _orders(self, query: LineQuery, scratch: Path) -> pl.DataFrame:
        return lazy_orders(_scan(query), query.window)

    def _feature_sums(self, query: LineQuery, scratch: Path) -> pl.DataFrame:
        return lazy_feature_sums(_scan(query), query.window, query.categories, query.channels)


def _scan(query: LineQuery) -> pl.LazyFrame:
    return pl.scan_parquet(list(query.files))
