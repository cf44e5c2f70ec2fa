"""Segmentation features: per-person aggregation in polars, scikit-learn transformers.

The features are named in docs/architecture.md. :func:`customer_features` aggregates the
prepared order lines of each person (``person_id``) into recency, frequency and monetary value
(RFM), the average basket, the share of spend and the share of order lines per product
category, the share of orders per channel and the share of spend per calendar quarter, and
joins the person's county, urban class, customer type and size band. The lines are read once
with the strings replaced by integer codes, reduced to orders and to (person, category) cells,
and only then aggregated per person, so it scales to tens of millions of lines.

The transformers keep scikit-learn's contract (``fit``/``transform``,
``get_feature_names_out``, ``set_output(transform="pandas")``). Every numeric feature is
clipped and scaled with **public** bounds taken from the policy (``privacy.feature_bounds``) or
the caller, never from the data, and the one-hot categories are the public code lists. So the
transformation itself learns nothing from private data, and the privately learned segments
reuse exactly the same features.

:func:`category_rule_labels` is the AL-2 category rule: a person's segment is the category
with the largest share of their own spend, a row-level function of their own purchases.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

from segments._tables import as_polars, to_pandas
from segments.exceptions import SchemaError
from segments.geography import counties_pl, municipalities_pl
from segments.schema import (
    CHANNELS,
    PERSON_TYPES,
    PRODUCT_CATEGORIES,
    SIZE_BANDS,
    require_columns,
)

__all__ = [
    "CATEGORICAL_FEATURES",
    "CATEGORY_SHARE_FEATURES",
    "CHANNEL_SHARE_FEATURES",
    "DEFAULT_FEATURE_BOUNDS",
    "FEATURE_GROUPS",
    "LINE_SHARE_FEATURES",
    "LOG_FEATURES",
    "NUMERIC_FEATURES",
    "QUARTER_SHARE_FEATURES",
    "RFM_FEATURES",
    "URBAN_CLASSES",
    "BoundedScaler",
    "FeatureClipper",
    "categorical_levels",
    "category_rule_labels",
    "customer_features",
    "feature_groups",
    "numeric_features",
    "make_feature_transformer",
    "rfm_features",
    "urban_class",
]

RFM_FEATURES = ("recency_days", "frequency_orders", "monetary_sek", "avg_basket_sek")
CATEGORY_SHARE_FEATURES = tuple(f"share_{c}" for c in PRODUCT_CATEGORIES)
#: Share of a person's order lines per category: unlike the share of spend it is not
#: swamped by a few expensive items (one desk outweighs a year of paper).
LINE_SHARE_FEATURES = tuple(f"line_share_{c}" for c in PRODUCT_CATEGORIES)
CHANNEL_SHARE_FEATURES = tuple(f"share_{c}" for c in CHANNELS)
QUARTER_SHARE_FEATURES = tuple(f"share_q{q}" for q in range(1, 5))
NUMERIC_FEATURES = (
    RFM_FEATURES
    + CATEGORY_SHARE_FEATURES
    + LINE_SHARE_FEATURES
    + CHANNEL_SHARE_FEATURES
    + QUARTER_SHARE_FEATURES
)
#: Numeric features that describe one aspect of buying together; with block weighting
#: (:func:`make_feature_transformer`) each group counts as much as a single feature, so an
#: aspect measured by ten shares does not outvote one measured by three.
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "rfm": RFM_FEATURES,
    "category_spend": CATEGORY_SHARE_FEATURES,
    "category_lines": LINE_SHARE_FEATURES,
    "channel": CHANNEL_SHARE_FEATURES,
    "season": QUARTER_SHARE_FEATURES,
}
CATEGORICAL_FEATURES = ("county_code", "urban_class", "customer_type", "size_band")
#: Heavy-tailed features scaled on a log1p scale (counts and amounts).
LOG_FEATURES = ("frequency_orders", "monetary_sek", "avg_basket_sek")

#: The public bounds of docs/architecture.md. Policies carry their own copy in
#: ``privacy.feature_bounds``; this default serves callers without a policy (tests, real data).
DEFAULT_FEATURE_BOUNDS: dict[str, tuple[float, float]] = {
    "recency_days": (0.0, 730.0),
    "frequency_orders": (0.0, 100.0),
    "monetary_sek": (0.0, 250_000.0),
    "avg_basket_sek": (0.0, 25_000.0),
    **dict.fromkeys(
        CATEGORY_SHARE_FEATURES
        + LINE_SHARE_FEATURES
        + CHANNEL_SHARE_FEATURES
        + QUARTER_SHARE_FEATURES,
        (0.0, 1.0),
    ),
}

URBAN_CLASSES = ("urban", "intermediate", "rural")
#: Municipality population at or above which a municipality is urban / intermediate.
_URBAN_MIN, _INTERMEDIATE_MIN = 100_000, 25_000
#: Private persons have no employee size band; they get this level instead of a null.
NO_SIZE_BAND = "n/a"

_LINE_COLUMNS = ("person_id", "order_id", "order_date", "channel", "category", "amount_sek")
_RFM_LINE_COLUMNS = ("person_id", "order_id", "order_date", "amount_sek")
_CUSTOMER_COLUMNS = ("person_id", "customer_type", "size_band", "municipality_code", "county_code")


# --- per-person aggregation (polars) ------------------------------------------------------
def _lazy(frame: Any) -> pl.LazyFrame:
    frame = as_polars(frame)  # the public functions take pandas too
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


def _require_columns(frame: pl.LazyFrame, table: str, needed: Sequence[str]) -> None:
    fix = f"pass the prepared {table} frame (segments.schema.PREPARED_TABLES)"
    require_columns(frame.collect_schema().names(), needed, table, fix)


def _order_key() -> pl.Expr:
    # A 64-bit hash of the order pseudonym: counting distinct orders on integers instead of
    # 32-character strings is several times faster on tens of millions of lines. Two orders
    # of one person would have to collide for a count to be off (odds about n^2 / 2^64).
    return pl.col("order_id").hash(seed=0)


def _rfm_aggregations() -> list[pl.Expr]:
    return [
        pl.col("order_date").max().alias("_last_order"),
        pl.col("_order").n_unique().alias("_n_orders"),
        pl.col("amount_sek").sum().alias("monetary_sek"),
    ]


def _rfm_columns(as_of: dt.date) -> list[pl.Expr]:
    n = pl.col("_n_orders").cast(pl.Float64)
    return [
        (pl.lit(as_of) - pl.col("_last_order"))
        .dt.total_days()
        .cast(pl.Float64)
        .alias("recency_days"),
        n.alias("frequency_orders"),
        (pl.col("monetary_sek") / n).alias("avg_basket_sek"),
    ]


def _check_as_of(per_person: pl.DataFrame, as_of: dt.date) -> None:
    late = per_person.filter(pl.col("_last_order") > as_of)
    if late.height:
        first = late["_last_order"].max()
        raise SchemaError(
            f"table 'lines', column 'order_date': rule 'not after as_of' — {late.height} "
            f"person(s) have orders after as_of={as_of} (latest: {first!s}); fix: pass the "
            "as_of the frames were prepared for"
        )


def _check_not_empty(per_person: pl.DataFrame) -> None:
    if per_person.height == 0:
        raise SchemaError(
            "table 'lines': rule 'not empty' — 0 order lines, so no person has features; "
            "fix: prepare frames whose retention window holds orders"
        )


def rfm_features(lines: Any, *, as_of: dt.date) -> pd.DataFrame:
    """Recency, frequency, monetary value and average basket per person.

    Parameters
    ----------
    lines : pandas or polars DataFrame, or polars LazyFrame
        Order lines with ``person_id``, ``order_id``, ``order_date`` and ``amount_sek``
        (the prepared lines, or a real export such as CDNOW mapped to those names).
    as_of : datetime.date
        The reference date: ``recency_days`` is the number of days from a person's last
        order to ``as_of``.

    Returns
    -------
    pandas.DataFrame
        One row per person with ``person_id`` and :data:`RFM_FEATURES` (float), sorted by
        ``person_id``.

    Raises
    ------
    SchemaError
        A column is missing, there are no lines, or an order is dated after ``as_of``.

    Examples
    --------
    >>> import datetime as dt, polars as pl
    >>> lines = pl.DataFrame({"person_id": ["aa" * 8] * 3, "order_id": ["01", "01", "02"],
    ...     "order_date": [dt.date(2026, 1, 1)] * 2 + [dt.date(2026, 3, 1)],
    ...     "amount_sek": [100.0, 50.0, 30.0]})
    >>> rfm_features(lines, as_of=dt.date(2026, 3, 31)).iloc[0, 1:].tolist()
    [30.0, 2.0, 180.0, 90.0]
    """
    return to_pandas(_rfm_features_pl(lines, as_of=as_of))


def _rfm_features_pl(lines: Any, *, as_of: dt.date) -> pl.DataFrame:
    """:func:`rfm_features` as polars (for internal callers)."""
    lazy = _lazy(lines)
    _require_columns(lazy, "lines", _RFM_LINE_COLUMNS)
    per_person = (
        lazy.with_columns(_order_key().alias("_order"))
        .group_by("person_id")
        .agg(_rfm_aggregations())
        .with_columns(_rfm_columns(as_of))
        .collect()
    )
    _check_not_empty(per_person)
    _check_as_of(per_person, as_of)
    return per_person.select("person_id", *RFM_FEATURES).sort("person_id")


def _keyed_lines(
    lines: pl.LazyFrame, people: pl.Series, categories: Sequence[str] = PRODUCT_CATEGORIES
) -> pl.DataFrame:
    """The needed line columns, with every string replaced by a small integer code.

    ``_person`` is the row of the person in ``people`` (an Enum over the customers'
    pseudonyms, so a line whose person is not a customer fails the cast), ``_order`` a
    64-bit hash of the order pseudonym, ``channel`` and ``category`` their index in the
    public code lists. Grouping 20 million lines on integers instead of 32-character
    strings is several times cheaper, and no pseudonym string is held per line.
    """
    return lines.select(
        pl.col("person_id").cast(pl.Enum(people)).to_physical().alias("_person"),
        _order_key().alias("_order"),
        "order_date",
        pl.col("channel").cast(pl.Enum(CHANNELS)).to_physical(),
        pl.col("category").cast(pl.Enum(categories)).to_physical(),
        "amount_sek",
    ).collect()


def _per_order(keyed: pl.DataFrame) -> pl.DataFrame:
    """One row per order: person, date, channel, spend (date and channel are order-level)."""
    return keyed.group_by("_order").agg(
        pl.col("_person").first(),
        pl.col("order_date").first(),
        pl.col("channel").first(),
        pl.col("amount_sek").sum(),
    )


def _order_aggregations() -> list[pl.Expr]:
    """RFM, orders per channel and spend per quarter, from the per-order rows."""
    amount, quarter = pl.col("amount_sek"), pl.col("order_date").dt.quarter()
    return [
        pl.col("order_date").max().alias("_last_order"),
        pl.len().alias("_n_orders"),
        amount.sum().alias("monetary_sek"),
        *((pl.col("channel") == i).sum().alias(f"_n_{c}") for i, c in enumerate(CHANNELS)),
        *(amount.filter(quarter == q).sum().alias(f"_sek_q{q}") for q in range(1, 5)),
    ]


def _per_category(
    keyed: pl.DataFrame, n_people: int, categories: Sequence[str] = PRODUCT_CATEGORIES
) -> pl.DataFrame:
    """Spend and line count per person (row ``_person``) and category, one row per person."""
    n_cat = len(categories)
    # One integer per (person, category) cell: a bincount is an exact, pivot-free group-by.
    cell = keyed["_person"].to_numpy().astype(np.int64) * n_cat + keyed["category"].to_numpy()
    sek = np.bincount(cell, weights=keyed["amount_sek"].to_numpy(), minlength=n_people * n_cat)
    count = np.bincount(cell, minlength=n_people * n_cat).astype(np.float64)
    sek, count = sek.reshape(n_people, n_cat), count.reshape(n_people, n_cat)
    return pl.DataFrame(
        {
            "_person": np.arange(n_people, dtype=np.uint32),
            "_n_lines": count.sum(axis=1),
            **{f"_sek_{c}": sek[:, i] for i, c in enumerate(categories)},
            **{f"_lines_{c}": count[:, i] for i, c in enumerate(categories)},
        }
    )


def _share_columns(categories: Sequence[str] = PRODUCT_CATEGORIES) -> list[pl.Expr]:
    # A person whose lines all cost 0 SEK has no spend to share out: their shares are 0.
    total, n_orders = pl.col("monetary_sek"), pl.col("_n_orders").cast(pl.Float64)
    spend = [*categories, *(f"q{q}" for q in range(1, 5))]
    return [
        *(
            pl.when(total > 0).then(pl.col(f"_sek_{n}") / total).otherwise(0.0).alias(f"share_{n}")
            for n in spend
        ),
        *(
            (pl.col(f"_lines_{c}") / pl.col("_n_lines")).alias(f"line_share_{c}")
            for c in categories
        ),
        *((pl.col(f"_n_{c}") / n_orders).alias(f"share_{c}") for c in CHANNELS),
    ]


def _check_people(people: pl.DataFrame) -> None:
    repeated = people.filter(pl.col("person_id").is_duplicated())
    if repeated.height:
        raise SchemaError(
            f"table 'customers', column 'person_id': rule 'one row per person' fails for "
            f"{repeated['person_id'].n_unique()} person(s) (first: "
            f"{repeated['person_id'].min()!r}); fix: pass the prepared customers frame"
        )


def _unknown_code_error(
    lines: pl.LazyFrame, people: pl.DataFrame, categories: Sequence[str] = PRODUCT_CATEGORIES
) -> SchemaError:
    """The error for a line whose person, channel or category is outside its code list."""
    for column, levels in (("channel", CHANNELS), ("category", tuple(categories))):
        bad = lines.filter(~pl.col(column).is_in(levels)).select(column).unique().collect()
        if bad.height:
            return SchemaError(
                f"table 'lines', column {column!r}: rule 'value in the public code list' fails "
                f"for {bad.height} value(s) (first: {bad[column].min()!r}); fix: use the codes "
                f"of segments.schema ({list(levels)})"
            )
    orphans = lines.select("person_id").unique().join(people.lazy(), on="person_id", how="anti")
    found = orphans.collect()
    return SchemaError(
        f"table 'lines', column 'person_id': rule 'references customers' fails for "
        f"{found.height} person(s) (first: {found['person_id'].min()!r}); fix: pass "
        "the customers frame prepared together with these lines"
    )


def urban_class(population: pl.Expr) -> pl.Expr:
    """The urban class of a municipality from its population.

    ``urban`` at 100 000 inhabitants or more, ``intermediate`` at 25 000 or more, else
    ``rural`` (docs/architecture.md).

    Examples
    --------
    >>> import polars as pl
    >>> pl.select(urban_class(pl.lit(30_000))).item()
    'intermediate'
    """
    return (
        pl.when(population >= _URBAN_MIN)
        .then(pl.lit("urban"))
        .when(population >= _INTERMEDIATE_MIN)
        .then(pl.lit("intermediate"))
        .otherwise(pl.lit("rural"))
    )


def _customer_categoricals(customers: pl.LazyFrame) -> pl.LazyFrame:
    population = municipalities_pl().lazy().select("municipality_code", "population")
    # a real export without geography or size bands (segments ingest): unknown, not invented
    present = customers.collect_schema().names()
    customers = customers.with_columns(
        pl.lit(None, pl.Utf8).alias(c) for c in _CUSTOMER_COLUMNS if c not in present
    )
    return (
        customers.select(_CUSTOMER_COLUMNS)
        .join(population, on="municipality_code", how="left")
        .select(
            "person_id",
            "county_code",
            urban_class(pl.col("population")).alias("urban_class"),
            "customer_type",
            pl.col("size_band").fill_null(NO_SIZE_BAND),
        )
    )


def customer_features(
    lines: Any,
    customers: Any,
    *,
    as_of: dt.date,
    categories: Sequence[str] = PRODUCT_CATEGORIES,
) -> pd.DataFrame:
    """All segmentation features per person, from the prepared frames.

    Parameters
    ----------
    lines : pandas or polars DataFrame, polars LazyFrame, or path
        Prepared order lines (``W/prepared/<purpose>/lines.parquet``); a LazyFrame from
        ``pl.scan_parquet`` keeps memory low on large data. Given as a path (a file or a
        folder of month partitions), the engine the ``--engine`` setting selects reads it
        (:mod:`segments.engine`): polars in memory, or an out-of-core engine that returns
        only the per-person sums (:meth:`segments.engine.Engine.person_feature_sums`).
    customers : pandas or polars DataFrame, or polars LazyFrame
        Prepared customers (``W/prepared/<purpose>/customers.parquet``).
    as_of : datetime.date
        Reference date of the preparation; recency counts days to it.
    categories : sequence of str, default PRODUCT_CATEGORIES
        The public product taxonomy (for an ingested export, the one its mapping declares:
        :func:`segments.ingest.public_domains`); ``share_<c>`` and ``line_share_<c>`` follow it.

    Returns
    -------
    pandas.DataFrame
        One row per person with at least one order line: ``person_id``,
        :data:`NUMERIC_FEATURES` (float; the category shares of ``categories``) and
        :data:`CATEGORICAL_FEATURES` (strings; a missing size band becomes ``"n/a"``),
        sorted by ``person_id``. People without purchases in the window have no purchase
        history to segment and are left out.

    Raises
    ------
    SchemaError
        A column is missing, there are no lines, an order is dated after ``as_of``, or a
        person in ``lines`` is not in ``customers``.
    """
    return to_pandas(_customer_features_pl(lines, customers, as_of=as_of, categories=categories))


def _customer_features_pl(
    lines: Any,
    customers: Any,
    *,
    as_of: dt.date,
    categories: Sequence[str] = PRODUCT_CATEGORIES,
) -> pl.DataFrame:
    """:func:`customer_features` as polars (for internal callers)."""
    if isinstance(lines, str | os.PathLike):
        from segments.engine import get_engine, line_files

        engine = get_engine(sources=[lines])
        if engine.name != "polars":
            return _engine_features(engine, Path(lines), as_polars(customers), as_of, categories)
        lines = pl.scan_parquet(line_files(lines))
    lazy_lines, lazy_customers = _lazy(lines), _lazy(customers)
    _require_columns(lazy_lines, "lines", _LINE_COLUMNS)
    _require_columns(lazy_customers, "customers", ("person_id", "customer_type"))
    people = _customer_categoricals(lazy_customers).collect()
    _check_people(people)
    try:
        keyed = _keyed_lines(lazy_lines, people["person_id"], categories)
    except pl.exceptions.InvalidOperationError as exc:  # a code outside its Enum
        raise _unknown_code_error(lazy_lines, people.select("person_id"), categories) from exc
    per_order = _per_order(keyed).group_by("_person").agg(_order_aggregations())
    per_category = _per_category(keyed, people.height, categories)
    del keyed
    per_person = (
        per_order.join(per_category, on="_person", how="left")
        .join(people.with_row_index("_person"), on="_person", how="left")
        .with_columns(*_rfm_columns(as_of), *_share_columns(categories))
    )
    _check_not_empty(per_person)
    _check_as_of(per_person, as_of)
    numeric = numeric_features(categories)
    return per_person.select("person_id", *numeric, *CATEGORICAL_FEATURES).sort("person_id")


@contextlib.contextmanager
def _spill_folder(lines: Path) -> Iterator[Path]:
    """Where an engine spills while it reads ``lines``: the private area of the workspace
    whose prepared frames they are (:meth:`segments.workspace.Workspace.scratch`: owner-only,
    swept after a ``kill -9``, never inside the signed prepared folder, where a leftover
    would hold pseudonymised lines and fail every release's check of that folder).

    Raises
    ------
    SchemaError
        ``lines`` are not a workspace's prepared lines (``W/prepared/<purpose>/lines.parquet``):
        an out-of-core engine's intermediates are per-person data, kept only in the private
        area of the workspace they come from, never in the system's temporary folder.
    """
    from segments.workspace import PREPARED_LINES, Workspace

    resolved = Path(lines).resolve()
    workspace = Workspace(resolved.parent.parent.parent)
    if resolved.name != PREPARED_LINES or resolved.parent.parent != workspace.prepared.resolve():
        raise SchemaError(
            f"parameter 'lines': {lines} is not a workspace's prepared lines "
            f"(W/prepared/<purpose>/{PREPARED_LINES}); rule: an out-of-core engine spills "
            "per-person intermediates only into the private area of the workspace they come "
            "from (W/.private), never the system's temporary folder; fix: pass the lines of a "
            "prepared folder, or a frame (read in memory), or choose --engine polars"
        )
    with workspace.scratch("features") as folder:
        yield folder


def _engine_features(
    engine: Any,
    lines: Path,
    customers: pl.DataFrame | pl.LazyFrame,
    as_of: dt.date,
    categories: Sequence[str],
) -> pl.DataFrame:
    """:func:`customer_features` from an engine's exact per-person sums (the same ratios as
    the in-memory path: :func:`_rfm_columns`, :func:`_share_columns`)."""
    people = _customer_categoricals(_lazy(customers)).collect()
    _check_people(people)
    with _spill_folder(lines) as scratch:
        sums = engine.person_feature_sums(lines, None, categories, CHANNELS, scratch=scratch)
    orphans = sums.select("person_id").join(people, on="person_id", how="anti")
    if orphans.height:
        raise SchemaError(
            f"table 'lines', column 'person_id': rule 'references customers' fails for "
            f"{orphans.height} person(s) (first: {orphans['person_id'].min()!r}); fix: pass "
            "the customers frame prepared together with these lines"
        )
    sek = [*categories, *(f"q{q}" for q in range(1, 5))]
    per_person = sums.select(
        "person_id",
        pl.col("last_order").alias("_last_order"),
        pl.col("orders").alias("_n_orders"),
        (pl.col("ore") / 100).alias("monetary_sek"),
        *(pl.col(f"orders_{c}").alias(f"_n_{c}") for c in CHANNELS),
        *((pl.col(f"ore_{n}") / 100).alias(f"_sek_{n}") for n in sek),
        pl.col("lines").cast(pl.Float64).alias("_n_lines"),
        *(pl.col(f"lines_{c}").cast(pl.Float64).alias(f"_lines_{c}") for c in categories),
    ).join(people, on="person_id", how="left")
    per_person = per_person.with_columns(*_rfm_columns(as_of), *_share_columns(categories))
    _check_not_empty(per_person)
    _check_as_of(per_person, as_of)
    numeric = numeric_features(categories)
    return per_person.select("person_id", *numeric, *CATEGORICAL_FEATURES).sort("person_id")


def feature_groups(categories: Sequence[str] = PRODUCT_CATEGORIES) -> dict[str, tuple[str, ...]]:
    """:data:`FEATURE_GROUPS` for a product taxonomy (the category groups follow it).

    Examples
    --------
    >>> feature_groups(["music"])["category_spend"]
    ('share_music',)
    """
    return {
        "rfm": RFM_FEATURES,
        "category_spend": tuple(f"share_{c}" for c in categories),
        "category_lines": tuple(f"line_share_{c}" for c in categories),
        "channel": CHANNEL_SHARE_FEATURES,
        "season": QUARTER_SHARE_FEATURES,
    }


def numeric_features(categories: Sequence[str] = PRODUCT_CATEGORIES) -> tuple[str, ...]:
    """:data:`NUMERIC_FEATURES` for a product taxonomy, in the same order."""
    return tuple(f for group in feature_groups(categories).values() for f in group)


def category_rule_labels(
    lines: Any, categories: Sequence[str] = PRODUCT_CATEGORIES
) -> pd.DataFrame:
    """The AL-2 category rule: each person's segment is their dominant product category.

    The segment is the category with the largest share of the person's own spend; ties are
    broken by the order of :data:`segments.schema.PRODUCT_CATEGORIES`. Spend is summed per
    category and rounded to whole öre first, so the result does not depend on the order in
    which lines are added up. Only categories the person bought compete (a person whose
    lines all cost 0 SEK gets the first of them in that order). Being a row-level function
    of each person's own purchases, it may key differential-privacy releases end to end.

    Parameters
    ----------
    lines : pandas or polars DataFrame, or polars LazyFrame
        Prepared order lines with ``person_id``, ``category`` and ``amount_sek``.
    categories : sequence of str, default PRODUCT_CATEGORIES
        The public taxonomy, in tie-breaking order (an ingested export's declared one).

    Returns
    -------
    pandas.DataFrame
        ``person_id`` and ``segment`` (the category id), one row per person, sorted by
        ``person_id``.

    Raises
    ------
    SchemaError
        A required column is missing.

    Examples
    --------
    >>> import polars as pl
    >>> lines = pl.DataFrame({"person_id": ["a1", "a1", "a1", "b2", "b2"],
    ...     "category": ["paper", "furniture", "furniture", "writing", "paper"],
    ...     "amount_sek": [300.0, 100.0, 150.0, 40.0, 40.0]})
    >>> category_rule_labels(lines).values.tolist()
    [['a1', 'paper'], ['b2', 'paper']]
    """
    return to_pandas(category_rule_labels_pl(lines, categories))


def category_rule_labels_pl(
    lines: Any, categories: Sequence[str] = PRODUCT_CATEGORIES
) -> pl.DataFrame:
    """:func:`category_rule_labels` as polars (for internal callers)."""
    lazy = _lazy(lines)
    _require_columns(lazy, "lines", ("person_id", "category", "amount_sek"))
    rank = {c: i for i, c in enumerate(categories)}
    spend = (
        lazy.group_by("person_id", "category")
        .agg((pl.col("amount_sek").sum() * 100).round(0).alias("_ore"))
        .with_columns(pl.col("category").replace_strict(rank, return_dtype=pl.Int32).alias("_rank"))
    )
    return (
        spend.group_by("person_id")
        .agg(
            pl.col("category")
            .sort_by(["_ore", "_rank"], descending=[True, False])
            .first()
            .alias("segment")
        )
        .sort("person_id")
        .collect()
    )


# --- scikit-learn transformers --------------------------------------------------------------
def _bounds_array(
    bounds: Mapping[str, Sequence[float]], names: Sequence[str], owner: str
) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(bounds, Mapping):
        raise TypeError(
            f"{owner}: parameter 'bounds' must map feature name -> (lower, upper), got "
            f"{type(bounds).__name__}; fix: pass the policy's privacy.feature_bounds"
        )
    missing = [n for n in names if n not in bounds]
    if missing:
        raise ValueError(
            f"{owner}: feature {missing[0]!r} has no public bound (missing: {missing}); "
            "rule: bounds are public facts, never computed from data; fix: add it to the "
            "policy's privacy.feature_bounds or to the bounds you pass"
        )
    lower = np.array([float(bounds[n][0]) for n in names])
    upper = np.array([float(bounds[n][1]) for n in names])
    bad = ~(np.isfinite(lower) & np.isfinite(upper) & (lower < upper))
    if bad.any():
        name = names[int(np.flatnonzero(bad)[0])]
        raise ValueError(
            f"{owner}: bounds of feature {name!r} are {tuple(bounds[name])}; rule: finite "
            "with lower < upper; fix the policy's privacy.feature_bounds"
        )
    return lower, upper


class FeatureClipper(TransformerMixin, BaseEstimator):
    """Clip every feature to public (lower, upper) bounds.

    ``fit`` learns nothing from the values: it only records the input features and looks
    up their bounds, so the output is a fixed, public function of each row.

    Parameters
    ----------
    bounds : mapping of str to (float, float)
        Public bounds per feature name, e.g. the policy's ``privacy.feature_bounds``. For
        arrays without column names the features are named ``x0``, ``x1``, …

    Attributes
    ----------
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a frame with string column names.
    lower_, upper_ : ndarray
        The bounds of the input features, in column order.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"recency_days": [-3.0, 10.0, 900.0]})
    >>> FeatureClipper({"recency_days": (0, 730)}).fit_transform(X).ravel().tolist()
    [0.0, 10.0, 730.0]
    """

    def __init__(self, bounds: Mapping[str, Sequence[float]]) -> None:
        self.bounds = bounds

    def _input_names(self) -> list[str]:
        return [str(n) for n in _check_feature_names_in(self, None)]

    def fit(self, X: Any, y: Any = None) -> FeatureClipper:
        """Record the input features and look up their public bounds; returns self."""
        validate_data(self, X, dtype=np.float64)
        self.lower_, self.upper_ = _bounds_array(
            self.bounds, self._input_names(), type(self).__name__
        )
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Clip each column to its bounds."""
        check_is_fitted(self, "lower_")
        values = validate_data(self, X, dtype=np.float64, reset=False)
        return np.clip(values, self.lower_, self.upper_)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The input feature names (clipping keeps the columns)."""
        check_is_fitted(self, "n_features_in_")
        return _check_feature_names_in(self, input_features)


class BoundedScaler(FeatureClipper):
    """Clip to public bounds, then scale each feature to [0, 1] by those bounds.

    Heavy-tailed features listed in ``log_features`` are scaled on a ``log1p`` scale, so a
    few big spenders do not squash everyone else together. Like :class:`FeatureClipper` it
    learns nothing from the data: the scale is a public fact.

    Parameters
    ----------
    bounds : mapping of str to (float, float)
        Public bounds per feature name.
    log_features : sequence of str, default ()
        Features scaled as ``(log1p(x) - log1p(lower)) / (log1p(upper) - log1p(lower))``;
        their lower bound must be at least 0.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"share_web": [0.25, 2.0], "monetary_sek": [0.0, 99.0]})
    >>> scaler = BoundedScaler({"share_web": (0, 1), "monetary_sek": (0, 9999)},
    ...                        log_features=("monetary_sek",))
    >>> scaler.fit_transform(X).round(2).tolist()
    [[0.25, 0.0], [1.0, 0.5]]
    """

    def __init__(
        self, bounds: Mapping[str, Sequence[float]], log_features: Sequence[str] = ()
    ) -> None:
        self.bounds = bounds
        self.log_features = log_features

    def fit(self, X: Any, y: Any = None) -> BoundedScaler:
        """Look up the bounds and the scale of each input feature; returns self."""
        super().fit(X, y)
        names = self._input_names()
        self.log_mask_ = np.array([n in set(self.log_features) for n in names], dtype=bool)
        negative = self.log_mask_ & (self.lower_ < 0)
        if negative.any():
            name = names[int(np.flatnonzero(negative)[0])]
            raise ValueError(
                f"BoundedScaler: log feature {name!r} has lower bound "
                f"{self.lower_[negative][0]}; rule: log features need a lower bound >= 0; "
                "fix: leave it out of log_features or correct its bound"
            )
        low, high = self._warp(self.lower_), self._warp(self.upper_)
        self.offset_, self.scale_ = low, high - low
        return self

    def _warp(self, values: np.ndarray) -> np.ndarray:
        return np.where(self.log_mask_, np.log1p(np.maximum(values, 0.0)), values)

    def transform(self, X: Any) -> np.ndarray:
        """Clip, then scale each column to [0, 1]."""
        clipped = super().transform(X)
        return (self._warp(clipped) - self.offset_) / self.scale_


def categorical_levels() -> dict[str, list[str]]:
    """The public list of levels of each categorical feature (not read from the data).

    Examples
    --------
    >>> categorical_levels()["urban_class"]
    ['urban', 'intermediate', 'rural']
    """
    return {
        "county_code": sorted(counties_pl()["county_code"].to_list()),
        "urban_class": list(URBAN_CLASSES),
        "customer_type": list(PERSON_TYPES),
        "size_band": [*SIZE_BANDS, NO_SIZE_BAND],
    }


def make_feature_transformer(
    bounds: Mapping[str, Sequence[float]],
    *,
    numeric: Iterable[str] = NUMERIC_FEATURES,
    categorical: Iterable[str] = (),
    log_features: Iterable[str] = LOG_FEATURES,
    categorical_weight: float = 0.5,
    standardize: bool = False,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> ColumnTransformer:
    """The model's column transformer: public-bound scaling and one-hot categories.

    Parameters
    ----------
    bounds : mapping of str to (float, float)
        Public bounds of the numeric features (the policy's ``privacy.feature_bounds``).
    numeric : iterable of str, default NUMERIC_FEATURES
    categorical : iterable of str, default ()
        Any of :data:`CATEGORICAL_FEATURES`; one-hot encoded over the public levels of
        :func:`categorical_levels`, so an unknown level is an error.
    log_features : iterable of str, default LOG_FEATURES
        Numeric features scaled on a log1p scale (only those also in ``numeric`` are used).
    categorical_weight : float, default 0.5
        Weight of each one-hot block relative to a [0, 1]-scaled numeric feature (or, with
        ``standardize``, to a standardised one).
    standardize : bool, default False
        Standardise the scaled numeric features to mean 0 and variance 1. The means and
        variances are then learned from the data: fine for the exploratory model, which is
        fitted on private data anyway; the private model keeps the public scale.
    groups : mapping of str to sequence of str, optional
        Block weighting, e.g. :data:`FEATURE_GROUPS`: the numeric features of each group are
        scaled together and weighted ``1 / sqrt(size)``, so that (standardised) every group
        has the total variance of one feature and counts as one aspect of buying, however
        many columns measure it. Numeric features in no group count as their own group.

    Returns
    -------
    sklearn.compose.ColumnTransformer
        Output names are the feature names (``share_paper``, ``county_code_01``, …).
    """
    numeric, categorical = list(numeric), list(categorical)
    unknown = [c for c in categorical if c not in CATEGORICAL_FEATURES]
    if unknown:
        raise ValueError(
            f"make_feature_transformer: parameter 'categorical' has unknown feature(s) "
            f"{unknown}; fix: choose from {list(CATEGORICAL_FEATURES)}"
        )
    if not numeric and not categorical:
        raise ValueError(
            "make_feature_transformer: no features selected; fix: pass at least one name "
            "in 'numeric' or 'categorical'"
        )
    # A plain dict of tuples: scikit-learn's clone deep-copies parameters, and a policy's
    # read-only mapping cannot be copied.
    bounds = {str(k): (float(v[0]), float(v[1])) for k, v in bounds.items()}
    levels = categorical_levels()
    logs = tuple(f for f in log_features if f in numeric)
    steps: list[tuple[str, Any, list[str]]] = []
    weights: dict[str, float] = {}
    for name, columns in _numeric_blocks(numeric, groups).items():
        scaler: Any = BoundedScaler(bounds, log_features=tuple(f for f in logs if f in columns))
        if standardize:
            scaler = make_pipeline(scaler, StandardScaler())
        steps.append((name, scaler, columns))
        if groups is not None:
            weights[name] = 1.0 / np.sqrt(len(columns))
    if categorical:
        encoder = OneHotEncoder(
            categories=[levels[c] for c in categorical], sparse_output=False, dtype=np.float64
        )
        steps.append(("categorical", encoder, categorical))
        weights["categorical"] = categorical_weight
    return ColumnTransformer(
        steps, transformer_weights=weights or None, verbose_feature_names_out=False
    )


def _numeric_blocks(
    numeric: list[str], groups: Mapping[str, Sequence[str]] | None
) -> dict[str, list[str]]:
    """The numeric columns per transformer: one block, or one per group (in input order)."""
    if groups is None:
        return {"numeric": numeric} if numeric else {}
    group_of = {f: g for g, members in groups.items() for f in members}
    blocks: dict[str, list[str]] = {}
    for f in numeric:
        blocks.setdefault(f"numeric_{group_of.get(f, f)}", []).append(f)
    return blocks
