"""Differentially private releases with OpenDP: plan, show accuracy, charge, run, publish.

The flow of one release (:func:`plan_release` then :meth:`ReleasePlan.execute`):

1. **Shared aggregates.** The prepared order lines are read once, by the engine the
   ``--engine`` setting selects (:mod:`segments.engine`: polars, DuckDB out of core, Spark),
   and turned into the aggregates every query of the release shares: one row per person
   (``person``: county, customer type, segment, total spend), and at most
   ``max_cells_per_person`` rows per person, one per product category (``cells``: spend and
   units per cell, each multiplied by its category's weight so that OpenDP's clip at the
   largest bound is the category's own bound, and its noise follows that bound). They are
   written to a private temporary folder and handed to OpenDP as ``pl.scan_parquet``
   LazyFrames, so no order line is scanned twice.
2. **Plan.** Each query becomes an OpenDP measurement with explicit noise scales computed
   from its sensitivity (the stated contribution bound × the clipping bound) and its share of
   the release's loss. OpenDP then computes the privacy loss itself (``measurement.map``),
   which must not exceed the planned share, and its accuracy (``summarize``) is shown before
   anything is spent.
3. **Charge.** The loss OpenDP computed is reserved in the ledger (refusals and budget errors
   come from there).
4. **Run.** Each measurement is submitted to an OpenDP ``Context`` that is a privacy filter
   capped at that loss; noise comes only from OpenDP.
5. **Publish.** Tables (with interval columns and the noise scale) and ``card.json`` are
   written to a hidden folder, published in the ledger with their SHA-256, and the folder is
   renamed into ``W/releases/<release-id>/`` — nothing appears half-way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import polars as pl
from opendp.accuracy import summarize_polars_measurement

import segments.privacy._opendp as dp
from segments._tables import as_polars, to_pandas
from segments.engine import Engine, get_engine, line_files
from segments.engine.base import (
    check_one_person_per_key,
    key_cell_schema,
    person_check,
    person_key,
)
from segments.engine.inmemory import lazy_cells, lazy_orders
from segments.exceptions import PolicyError, WorkspaceError
from segments.months import months_between, next_month
from segments.policy import Guarantee
from segments.privacy.composition import (
    DPFamily,
    PrivacyLoss,
    epsilon_to_rho,
    noise_accuracy,
    noise_scale,
    privacy_measure,
    rho_to_epsilon,
)
from segments.privacy.planner import REFUSAL_CONFIDENCE
from segments.privacy.postprocess import (
    CLIPPED_SUMS,
    MAX_CLIPPED_SHARE,
    consistent_leaves,
    mark_unreliable_cells,
    mean_where_supported,
    noise_variance,
    nonnegative,
)
from segments.privacy.publishing import Publication, ReleaseContext, begin, own_clause_ids
from segments.privacy.specs import (
    SURVEY_ACCOUNTS_PER_PERSON,
    PrivacyParams,
    QueryDef,
    ReleaseSpec,
    SegmentSource,
    is_series_query,
)
from segments.privacy.vectors import (
    BOUND_LOSS_CAP,
    EXCESS_SHARE,
    EXCESS_SPAN,
    GROUP_BOUND_SPREAD,
    VectorRelease,
    choose_mechanism,
)
from segments.provenance import hashing_raw_once
from segments.schema import CUSTOMER_TYPES, PERSON_TYPES, PREPARED_LINES, PRODUCT_CATEGORIES
from segments.workspace import (
    CARD,
    Workspace,
    sha256_file,
    write_json,
)
from segments.workspace import (
    PREPARED_CUSTOMERS as CUSTOMERS_FILE,
)
from segments.workspace import (
    PREPARED_LINES as LINES_FILE,
)

if TYPE_CHECKING:
    from segments.policy import Policy


__all__ = [
    "PUBLIC_MAX_ROWS",
    "QueryPlan",
    "ReleasePlan",
    "ReleaseResult",
    "build_query",
    "build_shared_frames",
    "check_public_keys",
    "cells_per_person",
    "epsilon_to_rho",
    "plan_release",
    "shared_frame_options",
]

dp.enable_features("contrib")

#: A public upper bound on the rows of any frame handed to OpenDP (its sums need one).
PUBLIC_MAX_ROWS = 1_000_000_000
_CELL_AGGREGATES = ("sek", "units")  # per-cell sums with per-category bounds
#: Per-person values a person frame may carry besides ``spend_sek`` (session queries): total
#: units, distinct orders, and ``spend_sek_<category>`` (one category's spend).
PERSON_VALUES = ("units_total", "orders")
PERSON_CATEGORY_SPEND = "spend_sek_"
#: A quantile aggregate is named ``quantile_<percent>_<value>`` (e.g. ``quantile_50_spend_sek``):
#: OpenDP's exponential mechanism over public candidates between the value's bounds.
QUANTILE_PREFIX = "quantile_"
#: Public candidates of a quantile: this many evenly spaced points between the bounds.
QUANTILE_CANDIDATES = 101


def quantile_of(aggregate: str) -> tuple[float, str] | None:
    """``(alpha, value)`` of a quantile aggregate's name, else None.

    Examples
    --------
    >>> quantile_of("quantile_50_spend_sek")
    (0.5, 'spend_sek')
    >>> quantile_of("spend_sek") is None
    True
    """
    if not aggregate.startswith(QUANTILE_PREFIX):
        return None
    percent, _, value = aggregate.removeprefix(QUANTILE_PREFIX).partition("_")
    return int(percent) / 100.0, value


_ERROR_SUFFIXES = ("lower", "upper", "scale")


def _window_filter(window: tuple[dt.date, dt.date] | None) -> pl.Expr:
    if window is None:
        return pl.lit(True)
    start, end = window
    return (pl.col("order_date") >= start) & (pl.col("order_date") < end)


def _person_key(column: str = "person_id") -> pl.Expr:
    """A 64-bit key per pseudonym (``pid``, :func:`segments.engine.base.person_key`): cheaper
    to group and sort than hex strings, and the same on every engine. Two people of one key
    are refused (:func:`_one_person_per_key`), never merged into one row."""
    return person_key(column)


def _cells(
    lines: _Lines,
    window: tuple[dt.date, dt.date] | None,
    categories: tuple[str, ...] = PRODUCT_CATEGORIES,
    by_month: bool = False,
) -> pl.DataFrame:
    """Spend (whole SEK) and units per person and category (and month) inside the window,
    keyed by ``pid`` with the key's check ``pid_check``
    (:meth:`segments.engine.Engine.person_key_cell_batches`).

    The engine keys its rows itself: no pseudonym leaves it, and the driver holds 8-byte
    keys instead of hex strings (at 30 million lines, ~6 million cells). Unsorted, one row
    per pseudonym: every caller checks :func:`_one_person_per_key` and sorts by ``pid`` and
    the cell's own values (:func:`_checked`)."""
    rank = {c: i for i, c in enumerate(categories)}
    month = ["month"] if by_month else []

    def ranked(cells: pl.DataFrame) -> pl.DataFrame:
        return cells.with_columns(
            pl.col("category").replace_strict(rank, return_dtype=pl.Int32).alias("_rank")
        )

    if isinstance(lines, pl.LazyFrame):
        cells = lazy_cells(lines, window, categories, by_month=by_month)
        return ranked(
            cells.select(_person_key(), *month, "category", "sek", "units", person_check())
        )
    batches = [
        ranked(batch)
        for batch in lines.engine.person_key_cell_batches(
            lines.path, window, categories, by_month=by_month, scratch=lines.scratch
        )
    ]
    if batches:
        return pl.concat(batches, rechunk=False)
    return ranked(pl.DataFrame(schema=key_cell_schema(by_month)))


def _checked(cells: pl.DataFrame, customers: pl.LazyFrame) -> pl.LazyFrame:
    """``cells`` (of :func:`_cells`) once :func:`_one_person_per_key` holds against the
    customers, without the check, sorted largest cell first per person (and month): the
    order the category rule and the truncation share."""
    _one_person_per_key(cells.lazy(), customers.select(_person_key(), person_check()))
    return _largest_first(cells.drop("pid_check").lazy()).collect().lazy()


def _one_person_per_key(*keyed: pl.LazyFrame) -> None:
    """Refuse when one ``pid`` holds two people: two values of ``pid_check`` for one ``pid``
    across the frames ``keyed`` (a person's cells in other categories or months, the
    customers). A merged row would carry two people's spend under one person's bound."""
    pairs = pl.concat([frame.select("pid", "pid_check") for frame in keyed])
    merged = (
        pairs.group_by("pid")
        .agg(pl.col("pid_check").min().alias("lo"), pl.col("pid_check").max().alias("hi"))
        .filter(pl.col("lo") != pl.col("hi"))
    )
    check_one_person_per_key(merged.select(pl.len()).collect().item())


@dataclass(frozen=True)
class _EngineLines:
    """Prepared lines on disk and the engine that reads them (``scratch``: its spill folder)."""

    path: Path
    engine: Engine
    scratch: Path

    def scan(self, window: tuple[dt.date, dt.date] | None) -> pl.LazyFrame:
        """The window's lines as a polars LazyFrame (for what only polars computes)."""
        files = line_files(self.path, window)
        if not files:
            return pl.LazyFrame(schema=PREPARED_LINES.polars_schema())
        return pl.scan_parquet(files)


_Lines = pl.LazyFrame | _EngineLines


def _lazy_lines(lines: _Lines, window: tuple[dt.date, dt.date] | None) -> pl.LazyFrame:
    return lines if isinstance(lines, pl.LazyFrame) else lines.scan(window)


def _person_values(
    cells: pl.LazyFrame,
    lines: _Lines,
    window: tuple[dt.date, dt.date] | None,
    values: tuple[str, ...],
) -> pl.LazyFrame:
    """Per-person values of :data:`PERSON_VALUES` and ``spend_sek_<category>`` (``pid`` key)."""
    out = cells.select("pid").unique()
    if "units_total" in values:
        out = out.join(
            cells.group_by("pid").agg(pl.col("units").sum().alias("units_total")), on="pid"
        )
    for value in values:
        if value.startswith(PERSON_CATEGORY_SPEND):
            category = value.removeprefix(PERSON_CATEGORY_SPEND)
            spend = cells.filter(pl.col("category") == category).select("pid", pl.col("sek"))
            out = out.join(spend.rename({"sek": value}), on="pid", how="left")
    if "orders" in values:
        if isinstance(lines, pl.LazyFrame):
            orders = lazy_orders(lines, window)
        else:
            orders = lines.engine.person_orders(lines.path, window, scratch=lines.scratch)
        out = out.join(orders.lazy().select(_person_key(), "orders"), on="pid", how="left")
    return out


def _largest_first(cells: pl.LazyFrame) -> pl.LazyFrame:
    """Order each person's cells (each person's and month's, if by month) by spend, ties
    broken by the order of PRODUCT_CATEGORIES."""
    month = ["month"] if "month" in cells.collect_schema().names() else []
    order = ["pid", *month, "sek", "_rank"]
    return cells.sort(order, descending=[column == "sek" for column in order])


def _category_rule(cells: pl.LazyFrame) -> pl.LazyFrame:
    """AL-2: a person's segment is the category with the largest spend (a row-level rule).

    ``cells`` must be ordered by :func:`_largest_first`.
    """
    return (
        cells.filter(pl.col("sek") > 0)
        .group_by("pid", maintain_order=True)
        .first()
        .select("pid", pl.col("category").alias("segment"))
    )


def _segment_labels(
    source: SegmentSource,
    cells: pl.LazyFrame,
    customers: pl.LazyFrame,
    lines: _Lines,
    window: tuple[dt.date, dt.date] | None,
) -> pl.LazyFrame:
    """Each person's segment. The category rule and the private model are computed here,
    from each person's own purchases (and the verified DP centroids); only a fitted model's
    labels are read from a file, and they key "DP given a non-private segmentation" only."""
    if source.provenance == "category_rule":
        return _category_rule(cells)
    if source.provenance == "private_model":
        from segments.privacy.kmeans import private_model_labels

        start, end = window or (dt.date(1900, 1, 1), dt.date.today())
        in_window = _lazy_lines(lines, (start, end)).filter(_window_filter((start, end)))
        labels = private_model_labels(source.model, customers, in_window, end)
        return labels.select(_person_key(), pl.col("segment").cast(pl.Utf8))
    assert source.labels_path is not None
    if not Path(source.labels_path).exists():
        raise WorkspaceError(
            f"segment labels {source.labels_path} do not exist; run `segments segment` first "
            "or release with the category rule"
        )
    labels = pl.scan_parquet(source.labels_path)
    twice = (
        labels.group_by("person_id")
        .len()
        .filter(pl.col("len") > 1)
        .sort("person_id")
        .head(1)
        .collect()
    )
    if twice.height:  # a person in two segments: checked here, so the labels file is named
        raise WorkspaceError(
            f"segment labels {source.labels_path}: column person_id holds "
            f"{twice['person_id'][0]!r} in {twice['len'][0]} rows; rule: one segment per person "
            "(the per-person bound counts each person once). Fix: re-run "
            "`segments segment`, which writes one label per person"
        )
    return labels.select(_person_key(), pl.col("segment").cast(pl.Utf8))


def build_shared_frames(
    customers: pl.LazyFrame,
    lines: pl.LazyFrame | str | os.PathLike[str],
    segments: SegmentSource | None,
    params: PrivacyParams,
    folder: str | os.PathLike[str],
    window: tuple[dt.date, dt.date] | None = None,
    *,
    person_columns: tuple[str, ...] = (),
    person_values: tuple[str, ...] = (),
    cell_columns: tuple[str, ...] = (),
    cell_months: bool = False,
    engine: Engine | None = None,
) -> dict[str, Path]:
    """Write the per-person and per-cell aggregates every query of a release shares.

    Parameters
    ----------
    customers : polars.LazyFrame
        Prepared customers (``docs/architecture.md``).
    lines : polars.LazyFrame or path
        Prepared lines: a LazyFrame (aggregated by polars in this process), or the path of
        ``lines.parquet`` or of a folder of month partitions, aggregated by ``engine``
        (default: the ``--engine`` / ``SEGMENTS_ENGINE`` setting; only the window's
        partitions are read).
    segments : SegmentSource or None
        Segment labels; None when no query groups by segment.
    params : PrivacyParams
        ``max_cells_per_person`` bounds the cells kept per person.
    folder : path
        A private temporary folder; the caller removes it.
    window : (date, date), optional
        Half-open ``[start, end)`` range of order dates; default all lines.
    person_columns : tuple of str
        Further public attributes of the person copied into both frames (industry,
        size_band, municipality_code, a declared geography), for filters and keys.
    person_values : tuple of str
        Further per-person values: :data:`PERSON_VALUES` and ``spend_sek_<category>``.
    cell_columns : tuple of str
        Attributes of the person copied into the cells (keys and filters of cell queries).
    cell_months : bool
        Cells per person, month (``month``, ``YYYY-MM``) and category, at most
        ``max_cells_per_person`` per person and month (largest spend first); the person's
        segment still comes from the whole window.
    engine : Engine, optional
        The backend for ``lines`` given as a path (:mod:`segments.engine`).

    Returns
    -------
    dict
        ``{"person": path, "cells": path}``: one row per person (``pid``, a 64-bit key of
        the pseudonym; ``county_code``, ``customer_type``, ``segment``, ``spend_sek``), and at
        most ``max_cells_per_person`` rows per person, one per category (``pid``,
        ``segment``, ``category``, ``sek``, ``units``). No pseudonym is written.

    Raises
    ------
    SchemaError
        Two people of one ``pid`` among the cells or the customers (refused before anything
        is written or charged, never merged into one person's row).
    """
    folder = Path(folder)
    source: _Lines
    if isinstance(lines, pl.LazyFrame):
        source = lines
    else:
        path = Path(lines)
        source = _EngineLines(path, engine or get_engine(sources=[path]), folder)
    # Sorted once (largest cell first per person): the category rule and the truncation share it.
    cells = _checked(_cells(source, window, params.categories), customers)
    totals = cells.group_by("pid").agg(pl.col("sek").sum().alias("spend_sek"))
    # data without a declared geography (segments ingest) has no county: keyed queries refuse
    has_county = "county_code" in customers.collect_schema().names()
    geography = (
        pl.col("county_code")
        if params.geography_column == "county_code" and has_county
        else pl.lit(None, pl.Utf8).alias("county_code")
    )
    person = customers.select(_person_key(), geography, "customer_type").join(
        totals, on="pid", how="left"
    )
    person = person.with_columns(pl.col("spend_sek").fill_null(0))
    missing = [c for c in person_columns if c not in customers.collect_schema().names()]
    if missing:
        raise PolicyError(
            f"prepared customers.parquet has no column {missing[0]!r} (not a column of this "
            "purpose or this data); group or filter by a column the purpose keeps"
        )
    if person_columns:
        person = person.join(customers.select(_person_key(), *person_columns), on="pid", how="left")
    if person_values:  # a session's further per-person values (named specs need none)
        values = _person_values(cells, source, window, person_values)
        person = person.join(values, on="pid", how="left").with_columns(
            pl.col(v).fill_null(0) for v in person_values
        )
    if segments is not None:
        labels = _segment_labels(segments, cells, customers, source, window)
        person = person.join(labels, on="pid", how="inner")
    else:
        person = person.with_columns(pl.lit("all").alias("segment"))
    person_df = person.collect()
    if person_df["pid"].n_unique() != person_df.height:
        raise WorkspaceError(
            "prepared customers.parquet has duplicate person_id rows; a person must be one "
            "row (accounts linked) before the per-person bound holds — re-run prepare"
        )
    # Keep each person's largest cells (a deterministic, row-level truncation).
    per = ["pid"]
    if cell_months:
        per = ["pid", "month"]
        cells = _checked(_cells(source, window, params.categories, by_month=True), customers)
    # the window is applied only where it cuts: when no person (and month) has more cells
    # than the bound, it keeps every row, and its ranking of every cell cost ~50 MB at 10
    # million lines (issue 21); the count per person is taken on the cells themselves
    most = cells.group_by(per).len().select(pl.col("len").max()).collect().item()
    if most is not None and most > cells_per_person(params):
        cells = cells.filter(pl.int_range(pl.len()).over(per) < cells_per_person(params))
    people = person_df.lazy().select("pid", "segment", *cell_columns)

    def kept(part: pl.LazyFrame) -> pl.DataFrame:
        return _on_largest_bound_scale(
            part.join(people, on="pid", how="inner").select(
                "pid",
                "segment",
                *cell_columns,
                *(["month"] if cell_months else []),
                "category",
                "sek",
                "units",
            ),
            params,
        ).collect()

    paths = {"person": folder / "person.parquet", "cells": folder / "cells.parquet"}
    person_df.write_parquet(paths["person"])
    _write_in_slices(cells.collect(), kept, paths["cells"])
    return paths


#: Rows of the shared cells joined and written at a time (:func:`_write_in_slices`).
CELL_SLICE_ROWS = 1 << 18


def _write_in_slices(
    frame: pl.DataFrame, step: Callable[[pl.LazyFrame], pl.DataFrame], path: Path
) -> None:
    """Write ``step`` of ``frame``, :data:`CELL_SLICE_ROWS` rows at a time, into one Parquet
    file, in the frame's order (``step`` is row-wise: a join on ``pid`` and per-row
    columns). The whole result is never held: at 10 million lines the kept cells joined to
    their persons at once were ~140 MB on top of the cells, the month-closing's peak
    (issue 21)."""
    import pyarrow.parquet as pq

    writer: pq.ParquetWriter | None = None
    try:
        for start in range(0, max(frame.height, 1), CELL_SLICE_ROWS):
            table = step(frame.slice(start, CELL_SLICE_ROWS).lazy()).to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="zstd")
            writer.write_table(table.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()


def _weight_of_category(params: PrivacyParams, aggregate: str) -> pl.Expr:
    return pl.col("category").replace_strict(params.cell_weights(aggregate), return_dtype=pl.Int64)


def _on_largest_bound_scale(cells: pl.LazyFrame, params: PrivacyParams) -> pl.LazyFrame:
    """Multiply each cell by its category's weight (largest bound / own bound).

    OpenDP then clips every cell to ``[0, largest bound]`` — exactly the category's own bound
    times its weight — and adds one noise scale; dividing a category's noisy sum by its weight
    (:func:`_to_category_scale`, post-processing) leaves noise proportional to the category's
    own bound: ten chairs, not a hundred reams, set the furniture noise.
    """
    return cells.with_columns(
        (pl.col(agg) * _weight_of_category(params, agg)).alias(agg) for agg in _CELL_AGGREGATES
    )


def _to_category_scale(
    frame: pl.DataFrame, aggregates: tuple[str, ...], params: PrivacyParams
) -> pl.DataFrame:
    """Undo :func:`_on_largest_bound_scale` on released cells: value, interval and scale."""
    columns: list[pl.Expr] = []
    for agg in aggregates:
        weight = _weight_of_category(params, agg)
        columns += [
            (pl.col(agg) / weight).round(0).cast(pl.Int64).alias(agg),
            *((pl.col(f"{agg}_{s}") / weight).alias(f"{agg}_{s}") for s in _ERROR_SUFFIXES),
        ]
    return frame.with_columns(columns)


def survey_months(
    as_of: dt.date, month: dt.date | None, params: PrivacyParams
) -> tuple[dt.date, dt.date]:
    """Half-open ``[first, end)`` range of survey months a release reads (a public rule).

    One month if ``month`` is given; otherwise the last ``retention_months`` closed months
    before ``as_of`` — never the whole table, whose length no public fact bounds.
    """
    from segments.policy import months_before

    if month is not None:
        first = month.replace(day=1)
        return first, next_month(first)
    end = as_of.replace(day=1)  # the month of as_of has not closed
    return months_before(end, params.retention_months), end


def survey_responses_per_person(window: tuple[dt.date, dt.date]) -> int:
    """Most survey responses one person can give in ``window`` (the survey's public design).

    The survey samples accounts, one response per sampled account and month (AC-2), and a
    person holds at most :data:`SURVEY_ACCOUNTS_PER_PERSON` accounts (a sole trader's
    private and business accounts are one person), so a person gives at most
    ``months x accounts`` responses: the release's sensitivity is that many rows.

    Examples
    --------
    >>> survey_responses_per_person((dt.date(2026, 1, 1), dt.date(2026, 2, 1)))
    2
    """
    return months_between(*window) * SURVEY_ACCOUNTS_PER_PERSON


def check_survey_accounts(workspace: Workspace, policy: Policy) -> None:
    """Check the survey's design fact on the linked data before anything is charged: no
    person holds more than :data:`SURVEY_ACCOUNTS_PER_PERSON` accounts (the bound the survey
    release's sensitivity rests on), linking a sole trader's accounts as prepare does.

    Raises
    ------
    PolicyError
        A person in ``W/raw/customers.parquet`` holds more accounts (no count is stated: it
        would describe a person), citing the policy's person-linkage clause.
    """
    from segments.prepare.frames import link_persons

    path = workspace.raw_table("customers")
    if not path.is_file():
        return  # no customer table: nothing links responses to people (AC-2 surveys)
    columns = ["customer_id", "customer_type", "is_sole_trader", "personnummer", "org_number"]
    present = [c for c in columns if c in pl.read_parquet_schema(path)]
    if present != columns:
        return  # a customer table without personnummer links no accounts
    roots = link_persons(pl.read_parquet(path, columns=columns))
    most = roots.group_by("person_root").len()["len"].max()
    if most is not None and int(most) > SURVEY_ACCOUNTS_PER_PERSON:  # type: ignore[arg-type]
        loaded = policy if hasattr(policy, "clauses_for") else None
        if loaded is None:
            from segments.policy import Policy

            loaded = Policy.load(str(policy))
        ids = ", ".join(loaded.clauses_for("person_linkage")) or "the project's rule"
        raise PolicyError(
            f"survey release refused before anything was charged: table 'customers' "
            f"({path}), rule 'a person's accounts are one person' ({ids}): a person holds more "
            f"than {SURVEY_ACCOUNTS_PER_PERSON} accounts, but the survey's sensitivity assumes "
            f"at most {SURVEY_ACCOUNTS_PER_PERSON} responses per person and month; fix the "
            "customer table's personnummer/org_number links, or do not release the survey"
        )


def _survey_frame(surveys: pl.LazyFrame, window: tuple[dt.date, dt.date], folder: Path) -> Path:
    from segments.keys import NATIONAL

    first, end = window
    frame = surveys.filter((pl.col("survey_month") >= first) & (pl.col("survey_month") < end))
    path = folder / "survey.parquet"
    frame.select(
        "county_code",
        "customer_type",
        pl.lit(NATIONAL[0]).alias("scope"),  # the national table's one public key
        pl.col("score").cast(pl.Int64),
    ).collect().write_parquet(path)
    return path


# --- keys, bounds, sensitivity ------------------------------------------------------------------
def public_keys(
    by: tuple[str, ...],
    segments: SegmentSource | None,
    *,
    params: PrivacyParams,
    survey: bool = False,
    declared: tuple[tuple[str, tuple[str, ...]], ...] = (),
) -> pl.DataFrame:
    """The public key set of a grouping: the cross product of each column's public list
    (the taxonomy and geography of ``params``: built-in, or declared by an ingested export's
    mapping; the registry :mod:`segments.keys` for the others; ``declared`` lists the caller
    named, e.g. a window's months; never the values the data contains).

    Raises
    ------
    PolicyError
        A grouping by county on data that declares no Swedish county geography.
    """
    from segments.geography import counties_pl

    if "county_code" in by and params.geography_column != "county_code":
        raise PolicyError(
            f"a release grouped by county_code needs data with a declared county geography; "
            f"this workspace declares {params.geography_column or 'no geography'}; fix: choose "
            "a spec without county (spend_by_segment, category_mix, monthly_category)"
        )
    from segments.keys import key_values

    lists: dict[str, list[str]] = {
        "county_code": list(params.geography_values) or counties_pl()["county_code"].to_list(),
        "category": list(params.categories),
        "customer_type": list(CUSTOMER_TYPES if survey else PERSON_TYPES),
        "segment": list(segments.keys) if segments is not None else ["all"],
        **{column: list(values) for column, values in declared},
    }
    for column in by:
        if column not in lists:
            lists[column] = list(key_values(column, domains=params))
    keys = pl.DataFrame({by[0]: lists[by[0]]}, schema={by[0]: pl.Utf8})
    for column in by[1:]:
        keys = keys.join(
            pl.DataFrame({column: lists[column]}, schema={column: pl.Utf8}), how="cross"
        )
    return keys


def check_public_keys(
    spec: ReleaseSpec,
    params: PrivacyParams,
    *,
    window: tuple[dt.date, dt.date] | None,
    segments: SegmentSource | None,
    cite: str = "",
) -> None:
    """Refuse a release whose cells or filters are not public key sets (before anything is
    read or charged).

    A released key list is part of the output: a list taken from the data (every person's
    pseudonym, the months someone bought in) releases the data, whatever the noise on the
    cells. So every ``by`` column must be a key set of :data:`segments.keys.KEY_SETS` (or the
    data's declared geography), every filter a public attribute of the person with values
    from its public list, and a caller's own key list (``QueryDef.key_values``) is allowed
    for ``month`` only, and only as the months of the release's window.

    Raises
    ------
    ReleaseRefusedError
        Naming the query, the column and the fix; ``cite`` (the policy's clause) appended.
    """
    from segments.exceptions import ReleaseRefusedError
    from segments.keys import KEY_COLUMNS, key_values, month_keys

    geography = params.geography_column
    group_keys = {*KEY_COLUMNS, *((geography,) if geography else ())}
    # attributes of the person, not of a line or the whole table
    person_keys = group_keys - {"category", "month", "scope"}
    why = f" ({cite})" if cite else ""
    for query in spec.query_defs:
        for column in query.by:
            if column == "scope" and query.frame != "survey":
                raise ReleaseRefusedError(
                    f"release {spec.name!r}, query {query.name!r}: group by 'scope' (one "
                    f"national cell) is for survey tables only{why}; drop it from the keys"
                )
            if column not in group_keys:
                raise ReleaseRefusedError(
                    f"release {spec.name!r}, query {query.name!r}: group by {column!r} refused: "
                    f"not a public key set; released cells come from public lists, never from "
                    f"the data{why}; group by one of {sorted(group_keys)}"
                )
        for column, values in query.key_values:
            if column != "month":
                raise ReleaseRefusedError(
                    f"release {spec.name!r}, query {query.name!r}: key_values for {column!r} "
                    f"refused: only the months of the window may be listed by the caller; "
                    f"{column!r} keys come from its public list{why}; drop key_values"
                )
            months = month_keys(*window) if window is not None else None
            if months is None or tuple(values) != months:
                raise ReleaseRefusedError(
                    f"release {spec.name!r}, query {query.name!r}: key_values for 'month' must "
                    f"be the months of the release's window "
                    f"({'no window given' if months is None else f'{months[0]}..{months[-1]}'})"
                    f", not a list of its own{why}; pass window= and list its months"
                )
        for column, values in query.where:
            if column not in person_keys:
                raise ReleaseRefusedError(
                    f"release {spec.name!r}, query {query.name!r}: filter on {column!r} "
                    f"refused: not a public attribute of the person; a release may keep or "
                    f"drop whole people by public attributes only{why}; filter on one of "
                    f"{sorted(person_keys)}"
                )
            if column == "segment":
                allowed: tuple[str, ...] = tuple(segments.keys) if segments is not None else ()
            elif column == "customer_type" and query.frame == "survey":
                allowed = CUSTOMER_TYPES
            else:
                allowed = key_values(column, domains=params)
            unknown = [v for v in values if v not in allowed]
            if unknown:
                raise ReleaseRefusedError(
                    f"release {spec.name!r}, query {query.name!r}: filter {column}="
                    f"{unknown[0]!r} is not in the public list of {column}{why}; fix the value"
                )


def _aggregate_bounds(query: QueryDef, agg: str, params: PrivacyParams) -> tuple[int, int]:
    """Public clipping bounds (lower, upper) of one aggregate; (0, 1) for a count.

    A caller's bound (``query.clip``, recorded in the card) wins; a person's spend in one
    category (``spend_sek_<category>``) is one cell, bounded by the category's cell bound.
    """
    if agg == "count":
        return (0, 1)
    quantile = quantile_of(agg)
    if quantile is not None:
        return _aggregate_bounds(query, quantile[1], params)
    given = dict(query.clip)
    if agg in given:
        low, high = given[agg]
        return (int(low), int(high))
    if agg.startswith(PERSON_CATEGORY_SPEND):
        bounds = params.cell_bounds("sek")
        category = agg.removeprefix(PERSON_CATEGORY_SPEND)
        if category in bounds:
            return (0, bounds[category])
    if agg == "spend_sek":
        return (0, params.spend_bound_sek)
    if agg == "sek":
        return (0, params.cell_spend_bound_sek)
    if agg == "units":
        return (0, params.cell_units_bound)
    if agg == "score":
        return params.survey_score_bounds
    raise PolicyError(f"query {query.name!r}: aggregate {agg!r} has no public bound")


def cells_per_person(params: PrivacyParams) -> int:
    """Cells one person may touch: ``max_cells_per_person``, and never more than the number
    of product categories (a person has one segment, so one cell per category at most)."""
    return min(params.max_cells_per_person, len(params.categories))


def _cells_per_unit(query: QueryDef, params: PrivacyParams, survey_rows: int = 1) -> int:
    if query.frame == "survey":
        return survey_rows
    return cells_per_person(params) if query.frame == "cells" else 1


def _sensitivity(
    query: QueryDef, agg: str, params: PrivacyParams, survey_rows: int = 1
) -> tuple[float, float]:
    """(L1, L2) sensitivity of one aggregate's vector of cells to one person.

    A person adds or removes at most ``k`` rows (``k = max_cells_per_person`` for per-cell
    queries, each in a different cell; ``survey_rows`` survey responses, possibly all in one
    cell; else 1), each clipped to ``[lower, upper]``.
    """
    lower, upper = _aggregate_bounds(query, agg, params)
    per_cell = max(abs(lower), abs(upper))
    k = _cells_per_unit(query, params, survey_rows)
    if query.frame == "survey":
        return float(k * per_cell), float(k * per_cell)
    return float(k * per_cell), float(math.sqrt(k) * per_cell)


def _privacy_unit(query: QueryDef, params: PrivacyParams, survey_rows: int = 1) -> tuple[Any, Any]:
    if query.frame == "survey":
        return dp.unit_of(contributions=survey_rows)
    if query.frame != "cells":
        return dp.unit_of(contributions=1)
    k = cells_per_person(params)
    by = list(query.by)
    return dp.unit_of(
        contributions=[
            dp.polars.Bound(by=[], per_group=k),
            dp.polars.Bound(by=by, per_group=1),
            dp.polars.Bound(by=by, num_groups=k),
        ]
    )


def _domain(path: Path) -> Any:
    domain = dp.domain_of(pl.scan_parquet(path), infer=True)
    return dp.with_margin(domain, dp.polars.Margin(by=[], max_length=PUBLIC_MAX_ROWS))


# --- plans ------------------------------------------------------------------------------------
@dataclass
class QueryPlan:
    """One query, resolved: its OpenDP measurement, loss and accuracy.

    Attributes
    ----------
    query : QueryDef
    measurement : opendp.mod.Measurement
    d_in : object
        The privacy unit's distance handed to OpenDP.
    loss : float
        ε (pure) or ρ (zCDP) as OpenDP computed it with ``measurement.map(d_in)``.
    summary : pandas.DataFrame
        Per aggregate: distribution, scale, accuracy (half-width at the confidence level),
        sensitivity and bounds.
    keys : pandas.DataFrame
        The public key set.
    data_path : Path
        The shared aggregate the query reads.
    """

    query: QueryDef
    measurement: Any
    d_in: Any
    loss: float
    _summary: pl.DataFrame  # polars inside; the properties below are the API's pandas
    _keys: pl.DataFrame
    data_path: Path
    half_accuracy: dict[str, float] = field(default_factory=dict)
    vector: VectorRelease | None = None
    alpha: float = 0.05

    @property
    def summary(self) -> pd.DataFrame:
        """The query's noise per aggregate (see the class's ``summary``)."""
        return to_pandas(self._summary)

    @property
    def keys(self) -> pd.DataFrame:
        """The public key set the query answers for."""
        return to_pandas(self._keys)


def _with_accuracy(summary: pl.DataFrame, alpha: float) -> pl.DataFrame:
    """``summarize_polars_measurement(measurement, alpha)``, with the accuracy cached."""
    accuracy = [
        noise_accuracy(d, float(sc), alpha)
        for d, sc in zip(summary["distribution"], summary["scale"], strict=True)
    ]
    return summary.with_columns(pl.Series("accuracy", accuracy, dtype=pl.Float64))


def build_query(
    query: QueryDef,
    loss: float,
    params: PrivacyParams,
    path: Path,
    segments: SegmentSource | None,
    alpha: float,
    survey_rows: int = 1,
    window_months: int = 1,
) -> QueryPlan:
    """Build one OpenDP measurement with explicit scales and check OpenDP's loss."""
    if query.frame == "cells":
        return _build_vector_query(query, loss, params, path, segments, alpha, window_months)
    return _build_polars_query(query, loss, params, path, segments, alpha, survey_rows)


def _build_polars_query(
    query: QueryDef,
    loss: float,
    params: PrivacyParams,
    path: Path,
    segments: SegmentSource | None,
    alpha: float,
    survey_rows: int = 1,
) -> QueryPlan:
    """An OpenDP polars measurement: per-row clipping at public bounds, ``k`` rows per unit.

    For per-cell queries this is the earlier per-cell design (L1 = cells × bound), kept as
    the baseline benchmarks/bench_utility.py measures the norm-bounded release against.
    """
    metric, d_in = _privacy_unit(query, params, survey_rows)
    domain = _domain(path)
    n_aggs = len(query.aggregates)
    exprs = []
    rows: list[dict[str, Any]] = []
    for agg in query.aggregates:
        l1, l2 = _sensitivity(query, agg, params, survey_rows)
        share = loss / n_aggs
        scale = noise_scale(
            params.dp_family, l1 if params.dp_family == DPFamily.PURE else l2, share
        )
        bounds = _aggregate_bounds(query, agg, params)
        quantile = quantile_of(agg)
        if quantile is not None:
            level, value = quantile  # not `alpha`: that is the intervals' level
            candidates = quantile_candidates(bounds)
            schema = pl.scan_parquet(path).collect_schema()
            scale = _quantile_scale(
                domain, schema, metric, d_in, value, level, candidates, share, params, bounds
            )
            # clipped to the bounds: the people beyond a bound tie AT its candidate (not
            # beyond every candidate, where the scores near the bound go flat), as the value
            # interval's guard quantiles need (session.quantile)
            dp_col = pl.col(value).clip(*bounds).dp  # type: ignore[attr-defined]
            exprs.append(dp_col.quantile(level, candidates, scale=scale).alias(agg))
            rows.append({"aggregate": agg, "bounds": list(bounds), "l1": None, "l2": None})
            continue
        if agg == "count":
            exprs.append(dp.len(signed=True, scale=scale).alias("count"))
        else:
            dp_col = pl.col(agg).dp  # type: ignore[attr-defined]
            exprs.append(dp_col.sum(bounds, scale=scale).alias(agg))
        rows.append({"aggregate": agg, "bounds": list(bounds), "l1": l1, "l2": l2})
    keys = public_keys(
        query.by, segments, survey=query.frame == "survey", params=params, declared=query.key_values
    )
    plan = pl.LazyFrame(schema=pl.scan_parquet(path).collect_schema())
    if query.active_only:
        plan = plan.filter(pl.col("spend_sek") > 0)
    where = query.filter_expression()
    if where is not None:  # public person attributes: a row-level filter inside the plan
        plan = plan.filter(where)
    plan = keys.lazy().join(
        plan.group_by(list(query.by)).agg(exprs), how="left", on=list(query.by), nulls_equal=True
    )
    measure = privacy_measure(params.dp_family)
    measurement = dp.m.make_private_lazyframe(
        input_domain=domain,
        input_metric=metric,
        output_measure=measure,
        lazyframe=plan,
        global_scale=None,
    )
    opendp_loss = float(measurement.map(d_in))
    if opendp_loss > loss * (1 + 1e-9):
        raise RuntimeError(
            f"query {query.name!r}: OpenDP computes a loss of {opendp_loss} for the stated "
            f"bounds, above the planned {loss}; a sensitivity is understated — report this bug"
        )
    summary = _with_accuracy(summarize_polars_measurement(measurement), alpha)
    half = _with_accuracy(summarize_polars_measurement(measurement), alpha / 2.0)
    summary = summary.with_columns(
        pl.Series("bounds", [r["bounds"] for r in rows]),
        pl.Series("sensitivity_l1", [r["l1"] for r in rows], dtype=pl.Float64),
        pl.Series("sensitivity_l2", [r["l2"] for r in rows], dtype=pl.Float64),
        pl.lit(query.name).alias("query"),
        pl.lit(keys.height).alias("cells"),
    )
    return QueryPlan(
        query,
        measurement,
        d_in,
        opendp_loss,
        summary,
        keys,
        path,
        dict(zip(half["column"].to_list(), half["accuracy"].to_list(), strict=True)),
        alpha=alpha,
    )


def recorded_steps(q: QueryPlan) -> list[dict[str, Any]]:
    """Each OpenDP step of query ``q`` with what rebuilds it, for the ledger: its noise
    (``laplace`` or ``gaussian`` on integers, or ``quantile``, the exponential mechanism of a
    private bound), its scale and its sensitivity for one person (a whole number; for a
    quantile its public candidates and alpha). A step of another kind (a quantile column of a
    session query) is recorded with ``noise: None``: the audit then says its recorded facts are
    insufficient rather than rebuilding it (:func:`segments.audit.mechanisms.recorded_composition`).
    """
    from segments.privacy.bounds import quantile_scale

    out: list[dict[str, Any]] = []
    if q.vector is None:
        for row in q._summary.iter_rows(named=True):
            gaussian = "gaussian" in str(row["distribution"]).lower()
            laplace = "laplace" in str(row["distribution"]).lower()
            sensitivity = row["sensitivity_l2" if gaussian else "sensitivity_l1"]
            out.append(
                {
                    "step": str(row["column"]),
                    "noise": "gaussian" if gaussian else "laplace" if laplace else None,
                    "scale": float(row["scale"]),
                    "sensitivity": None if sensitivity is None else float(sensitivity),
                }
            )
        return out
    v = q.vector
    for a in v.aggregates:
        if v.private(a):
            candidates = [float(c) for c in v.candidates(a)]
            out.append(
                {
                    "step": f"private bound of {a}",
                    "noise": "quantile",
                    "scale": quantile_scale(candidates, v.quantile, v.family, v.bound_losses[a]),
                    "sensitivity": 1,
                    "candidates": candidates,
                    "alpha": v.quantile,
                }
            )
    for a in v.aggregates:
        out.append(
            {
                "step": f"noisy sum of {a}",
                "noise": v.mechanism,
                "scale": v.scale(a),
                "sensitivity": int(math.ceil(v.bound(a))),
            }
        )
    for a in v.aggregates:
        if a in v.excess_losses:
            out.append(
                {
                    "step": f"clip excess of {a}",
                    "noise": v.mechanism,
                    "scale": v.excess_scale(a),
                    "sensitivity": v.excess_span(a),
                }
            )
    return out


def quantile_candidates(bounds: tuple[int, int]) -> list[int]:
    """Evenly spaced public candidates between the bounds (whole numbers, no duplicates)."""
    low, high = bounds
    points = np.linspace(low, high, QUANTILE_CANDIDATES).round().astype(np.int64)
    return sorted({int(p) for p in points})


def _quantile_scale(
    domain: Any,
    schema: Any,
    metric: Any,
    d_in: Any,
    value: str,
    alpha: float,
    candidates: list[int],
    share: float,
    params: PrivacyParams,
    bounds: tuple[int, int],
) -> float:
    """The scale at which OpenDP's quantile (of the value clipped to ``bounds``) costs
    ``share``: its loss is mapped at scales 1 and 2 (ε falls as 1/scale, ρ as 1/scale²), and
    the scale is solved from that."""
    measure = privacy_measure(params.dp_family)

    def loss_at(scale: float) -> float:
        clipped = pl.col(value).clip(*bounds).dp  # type: ignore[attr-defined]
        probe = pl.LazyFrame(schema=schema).select(clipped.quantile(alpha, candidates, scale=scale))
        m = dp.m.make_private_lazyframe(
            input_domain=domain, input_metric=metric, output_measure=measure, lazyframe=probe
        )
        return float(m.map(d_in))

    one, two = loss_at(1.0), loss_at(2.0)
    power = math.log2(one / two)  # 1 for ε, 2 for ρ
    return (one / share) ** (1.0 / power) * (1.0 + 1e-9)


def _norm_bounds(
    params: PrivacyParams, months: int = 1
) -> tuple[dict[str, float], dict[str, float]]:
    """Public largest L1 and L2 norms of a person's weighted vector (the per-cell design's
    worst case: ``k`` cells at the largest bound, in each of ``months`` months: the month
    keys of a month-keyed query, else the months of its window) — the top candidate of a
    private bound."""
    k = cells_per_person(params) * months
    l1: dict[str, float] = {}
    l2: dict[str, float] = {}
    for agg in _CELL_AGGREGATES:
        top = float(max(params.cell_bounds(agg).values()))
        l1[agg], l2[agg] = k * top, math.sqrt(k) * top
    return l1, l2


def _public_norm_bound(params: PrivacyParams, agg: str) -> float | None:
    value = params.units_norm_bound if agg == "units" else params.sek_norm_bound
    return float(value) if value > 0 else None


def _vector_release(
    query: QueryDef,
    loss: float,
    params: PrivacyParams,
    segments: SegmentSource | None,
    window_months: int = 1,
) -> VectorRelease:
    """A per-cell query as norm-bounded vector sums (:mod:`segments.privacy.vectors`).

    The top candidate of the private bound is a month's public worst case times the months
    a person's vector spans: the month keys of a month-keyed query, else the months of the
    window (``window_months``). A year's category mix clipped at one month's ceiling kept 54 %
    of the units under zCDP's L2 norm (issue 14: a 40 % median error at ε 3.8)."""
    by_month = "month" in query.by
    months = len(dict(query.key_values).get("month", ())) if by_month else window_months
    l1, l2 = _norm_bounds(params, max(months, 1))
    n_aggs = len(query.aggregates)
    share = loss / n_aggs
    publics = {a: _public_norm_bound(params, a) for a in query.aggregates}
    # pure: ε per aggregate; zCDP: ρ per aggregate — the mechanism with less error wins
    mechanism = choose_mechanism(params.dp_family, l1["units"], l2["units"], share)
    upper = l1 if mechanism == "laplace" else l2
    # the private bound takes its share of each aggregate's loss, at most BOUND_LOSS_CAP: a
    # quantile needs no more, and the rest goes to the sums' noise
    bound_loss = min(share * params.contribution_bound_share, BOUND_LOSS_CAP[params.dp_family])
    # the purchasing series also measures its clip's excess (charged, EXCESS_SHARE of each
    # aggregate's loss), which the forecast pools over months to correct the clip's bias
    excess = share * EXCESS_SHARE if is_series_query(query) else 0.0
    keys = public_keys(query.by, segments, params=params, declared=query.key_values)
    return VectorRelease(
        by=tuple(query.by),
        keys=keys,
        aggregates=tuple(query.aggregates),
        family=params.dp_family,
        mechanism=mechanism,
        sum_losses={
            a: (share - bound_loss if publics[a] is None else share) - excess
            for a in query.aggregates
        },
        excess_losses={a: excess for a in query.aggregates} if excess else {},
        excess_weights={a: _key_weights(keys, params, a) for a in query.aggregates}
        if excess
        else {},
        bound_losses={a: bound_loss if publics[a] is None else 0.0 for a in query.aggregates},
        public_bounds=publics,
        upper_bounds={a: upper[a] for a in query.aggregates},
        quantile=params.contribution_quantile,
        factor=params.contribution_bound_factor,
        where=query.filter_expression(),
        # a person has one segment: each segment gets its own private bound (parallel)
        partition="segment" if "segment" in query.by else None,
    )


def _key_weights(keys: pl.DataFrame, params: PrivacyParams, aggregate: str) -> np.ndarray:
    """Per public key row of a cells query: the category weight its cells were multiplied
    by (:func:`_on_largest_bound_scale`)."""
    weights = params.cell_weights(aggregate)
    return np.array([weights[c] for c in keys["category"].to_list()], dtype=np.float64)


def _vector_summary(q: QueryPlan) -> tuple[pl.DataFrame, dict[str, float]]:
    """Summary and half-level accuracies of a vector query at the bounds in force."""
    assert q.vector is not None
    vector = q.vector
    summary = vector.summary(q.alpha)
    half = vector.summary(q.alpha / 2.0)
    summary = summary.with_columns(
        pl.Series("bounds", [[0.0, vector.bound(a)] for a in vector.aggregates]),
        pl.Series(
            "sensitivity_l1",
            [vector.bound(a) if vector.norm == "l1" else None for a in vector.aggregates],
            dtype=pl.Float64,
        ),
        pl.Series(
            "sensitivity_l2",
            [vector.bound(a) if vector.norm == "l2" else None for a in vector.aggregates],
            dtype=pl.Float64,
        ),
        pl.lit(q.query.name).alias("query"),
        pl.lit(vector.keys.height).alias("cells"),
    )
    return summary, dict(zip(half["column"].to_list(), half["accuracy"].to_list(), strict=True))


def _build_vector_query(
    query: QueryDef,
    loss: float,
    params: PrivacyParams,
    path: Path,
    segments: SegmentSource | None,
    alpha: float,
    window_months: int = 1,
) -> QueryPlan:
    vector = _vector_release(query, loss, params, segments, window_months)
    opendp_loss = vector.loss
    if opendp_loss > loss * (1 + 1e-9):
        raise RuntimeError(
            f"query {query.name!r}: OpenDP computes a loss of {opendp_loss}, above the "
            f"planned {loss}; a sensitivity is understated — report this bug"
        )
    plan = QueryPlan(
        query,
        vector.measurement(),
        1,
        opendp_loss,
        pl.DataFrame(),
        vector.keys,
        path,
        vector=vector,
        alpha=alpha,
    )
    plan._summary, plan.half_accuracy = _vector_summary(plan)
    return plan


def _run_query(q: QueryPlan) -> pl.DataFrame:
    """Run a vector query's compositor (private bounds, then sums); refresh its accuracy."""
    assert q.vector is not None
    answer = q.vector.run(pl.scan_parquet(q.data_path))
    q.measurement = q.vector.measurement()
    q._summary, q.half_accuracy = _vector_summary(q)
    return answer


@dataclass
class ReleasePlan:
    """A planned release: measurements built, loss and accuracy known, nothing spent.

    Use :attr:`accuracy` to see the expected accuracy of every released number, then
    :meth:`execute` to charge the ledger and release. The plan owns a private temporary
    folder with the shared aggregates; :meth:`close` (or ``with``) removes it.
    """

    spec: ReleaseSpec
    params: PrivacyParams
    segments: SegmentSource | None
    confidence: float
    queries: list[QueryPlan]
    folder: Path
    window: tuple[dt.date, dt.date] | None
    as_of: dt.date
    source: dict[str, Any]
    #: Input (customers, lines, surveys) -> (workspace root, purpose, frame name, SHA-256)
    #: when it was a verified copy of a prepared frame (:func:`segments.provenance.
    #: verified_origin`), else None: :meth:`execute` charges only for the frames of its
    #: workspace and purpose.
    read_from: dict[str, tuple[Path, str, str, str] | None] = field(default_factory=dict)

    # --- what is claimed ------------------------------------------------------------------
    @property
    def mechanism(self) -> str:
        """The queries' noise mechanisms, joined by ``+``, as the card states them."""
        default = "laplace" if self.params.dp_family == DPFamily.PURE else "gaussian"
        used = {q.vector.mechanism if q.vector is not None else default for q in self.queries}
        return "+".join(sorted(used))

    @property
    def survey_rows(self) -> int:
        """Survey responses one person may give in the release (1 without a survey query)."""
        return int(self.source.get("survey_responses_per_person", 1))

    @property
    def guarantee(self) -> Guarantee:
        """The guarantee the release may claim: its segments', else end to end."""
        return self.segments.guarantee if self.segments is not None else Guarantee.END_TO_END

    @property
    def loss(self) -> PrivacyLoss:
        """The release's privacy loss as OpenDP computed it: ε, or ρ with its (ε, δ) form."""
        total = math.fsum(q.loss for q in self.queries)
        if self.params.dp_family == DPFamily.PURE:
            return PrivacyLoss(epsilon=total)
        delta = self.params.delta
        return PrivacyLoss(epsilon=rho_to_epsilon(total, delta), delta=delta, rho=total)

    @property
    def accuracy(self) -> pd.DataFrame:
        """Expected accuracy of every released aggregate, before any budget is spent.

        ``accuracy`` is the half-width of the ``confidence`` interval of each noisy cell; for
        per-category cells it is that of the category with the largest bound (the others'
        are smaller by their weight, :meth:`PrivacyParams.cell_weights`, and each released
        row carries its own ``<aggregate>_scale``).
        """
        return to_pandas(self._accuracy_pl())

    def _accuracy_pl(self) -> pl.DataFrame:
        frame = pl.concat([q._summary for q in self.queries], how="diagonal_relaxed")
        return frame.select(
            "query",
            pl.col("column").alias("aggregate"),
            "distribution",
            "scale",
            "accuracy",
            pl.lit(self.confidence).alias("confidence"),
            "cells",
            "bounds",
            "sensitivity_l1",
            "sensitivity_l2",
        )

    def quantile_rank_accuracy(
        self, confidence: float | None = None
    ) -> dict[tuple[str, str], float]:
        """Data-free rank half-width of each quantile, in people, at ``confidence`` (default
        the plan's): :func:`~segments.privacy.composition.quantile_rank_halfwidth` of the
        mechanism OpenDP runs under the policy's family (exponential noise under ε-DP,
        Gumbel noise under zCDP) at the loss OpenDP maps for it."""
        from segments.privacy.composition import quantile_rank_halfwidth

        beta = 1.0 - (self.confidence if confidence is None else confidence)
        out = {}
        for q in self.queries:
            share = q.loss / max(len(q.query.aggregates), 1)  # OpenDP's loss: at most the plan's
            _, d_in = _privacy_unit(q.query, self.params, self.survey_rows)
            for aggregate in q.query.aggregates:
                quantile = quantile_of(aggregate)
                if quantile is None or share <= 0:
                    continue
                candidates = len(
                    quantile_candidates(_aggregate_bounds(q.query, aggregate, self.params))
                )
                out[(q.query.name, aggregate)] = quantile_rank_halfwidth(
                    self.params.dp_family, share, quantile[0], float(d_in), candidates, beta
                )
        return out

    def bounds(self) -> dict[str, Any]:
        """Contribution bounds and clipping bounds, per query (for the ledger and card), with
        the facts that rebuild each OpenDP step the query measures (``steps``,
        :func:`recorded_steps`): the audit composes those, never a re-plan by later code."""
        out: dict[str, Any] = {}
        for q in self.queries:
            out[q.query.name] = {
                "family": str(self.params.dp_family),
                "steps": recorded_steps(q),
                "influence": q.query.influence,
                "rows_per_unit": _cells_per_unit(q.query, self.params, self.survey_rows),
                "rows_per_cell_per_unit": 1,
                "clipping": {
                    a: list(_aggregate_bounds(q.query, a, self.params))
                    for a in q.query.aggregates
                    if a != "count"
                },
            }
            if q.vector is not None:
                v = q.vector
                out[q.query.name].update(
                    rows_per_unit="all of a person's cells (one vector per person)",
                    clipping={},
                    category_weights={a: self.params.cell_weights(a) for a in v.aggregates},
                    norm=v.norm,
                    mechanism=v.mechanism,
                    norm_bounds={
                        a: {
                            "bound": v.bound(a),
                            "source": "public policy fact"
                            if not v.private(a)
                            else (
                                "chosen privately"
                                if a in v.chosen
                                else "to be chosen privately (shown: the public largest)"
                            ),
                            **({"private_choice": v.chosen[a].to_dict()} if a in v.chosen else {}),
                            **(
                                {
                                    "bound_per_segment": dict(v.group_bounds[a]),
                                    "per_segment": "each segment's own bound, factor x its own "
                                    "private quantile (one quantile's loss: a person is in one "
                                    "segment), at most GROUP_BOUND_SPREAD="
                                    f"{GROUP_BOUND_SPREAD:g} x the median segment's; 'bound' "
                                    "is the largest; a segment's cells have noise scaled to "
                                    "its own bound",
                                }
                                if v.group_bounds.get(a)
                                else {}
                            ),
                            "loss_of_bound": v.bound_losses[a],
                            "loss_of_sum": v.sum_losses[a],
                            **(
                                {
                                    "loss_of_clip_excess": v.excess_losses[a],
                                    "clip_excess": "each person's norm above the bound, at "
                                    f"most EXCESS_SPAN={EXCESS_SPAN:g} x the bound, summed "
                                    "over people with its own noise (an OpenDP measurement "
                                    "in the same compositor, charged with the release): the "
                                    "mass the clip removed, for a forecast to correct the "
                                    f"level; column {a}_clip_excess (in the categories' own "
                                    "units) and its noise scale "
                                    f"{a}_clip_excess_scale; mass above (1 + EXCESS_SPAN) x "
                                    "the bound is not estimated",
                                }
                                if a in v.excess_losses
                                else {}
                            ),
                        }
                        for a in v.aggregates
                    },
                )
        return out

    # --- execution --------------------------------------------------------------------------
    def _run(self) -> dict[str, pl.DataFrame]:
        """Run each measurement through an OpenDP privacy filter capped at its loss."""
        answers: dict[str, pl.DataFrame] = {}
        for q in self.queries:
            if q.vector is not None:  # its own OpenDP compositor, capped at its loss
                answers[q.query.name] = _run_query(q)
                continue
            metric, d_in = _privacy_unit(q.query, self.params, self.survey_rows)
            loss = (
                dp.loss_of(epsilon=q.loss)
                if self.params.dp_family == DPFamily.PURE
                else dp.loss_of(rho=q.loss)
            )
            context = dp.Context.compositor(
                data=pl.scan_parquet(q.data_path),
                privacy_unit=(metric, d_in),
                privacy_loss=loss,
                margins=[dp.polars.Margin(by=[], max_length=PUBLIC_MAX_ROWS)],
            )
            answers[q.query.name] = context(q.measurement).collect()
        return answers

    def tables(self, answers: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
        """Post-process noisy answers (no new privacy loss): intervals, noise scale,
        non-negative and consistent values, means where the count supports them
        (:mod:`segments.privacy.postprocess`)."""
        tables = self._tables_pl({name: as_polars(a) for name, a in answers.items()})
        return {name: to_pandas(t) for name, t in tables.items()}

    def _tables_pl(self, answers: Mapping[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
        plans = {q.query.name: q for q in self.queries}
        tables = _fitted_tables(answers, self.queries, self.params)
        # every cell of every table says whether its noise is within the policy's limit, on
        # the value as finally published (after the consistency fit): a reader's table shows
        # the mark (postprocess.with_reliability_marks, reliability_footnote). The mark is
        # judged at one public level, the planner's REFUSAL_CONFIDENCE, whatever level the
        # intervals show: a caller's --confidence 0.05 must not call a noisy cell reliable.
        judging = [_at_alpha(q, 1.0 - REFUSAL_CONFIDENCE) for q in self.queries]
        judged = (
            tables
            if all(j is q for j, q in zip(judging, self.queries, strict=True))
            else _fitted_tables(answers, judging, self.params)
        )
        return {
            name: mark_unreliable_cells(
                _whole_count_interval(table),
                plans[name].query.aggregates,
                self.params.max_relative_error,
                judged_at=judged[name],
            )
            for name, table in tables.items()
        }

    @hashing_raw_once
    def execute(
        self, context: ReleaseContext, *, extra_card: Mapping[str, Any] | None = None
    ) -> ReleaseResult:
        """Charge the ledger, run the queries and publish tables and card atomically.

        Parameters
        ----------
        context : segments.privacy.publishing.ReleaseContext
            The ledger charged, the workspace, the policy (its facts drive the ledger's
            guards), purpose, recipient, destination and the clauses the card cites (the
            policy's own for the purpose; ids the spec names must be among them, else the
            release is refused before any charge).
        extra_card : mapping, optional
            Caller's notes, written under the card's ``"extra"`` key: they never shadow a
            field the release computes (loss, guarantee, clauses, spec, month).

        A plan of a monthly series query (:data:`segments.privacy.specs.SERIES_QUERIES`)
        over one calendar month is released once per population and month: the key is
        derived here from the query and the window and checked in the ledger's reserving
        transaction, so no caller (spec name, flag) can release the month twice.

        Returns
        -------
        ReleaseResult

        Raises
        ------
        BudgetExceededError, ReleaseRefusedError
            From the ledger, before any query runs.
        WorkspaceError
            The release folder cannot be written — before anything is charged.
        """
        workspace, policy, purpose = context.workspace, context.policy, context.purpose
        self._check_inputs(workspace, policy, purpose)  # before anything is charged
        # the spec's own clause ids, if any, must be the policy's (refused before any charge)
        own_clause_ids(policy, purpose, self.spec.clause_ids)
        ledger = context.ledger
        # a demo or evaluation ledger takes releases of the data its proof was about, only
        ledger.check_workspace(workspace)
        if self.segments is not None and self.segments.model is not None:
            from segments.privacy.kmeans import verify_private_model

            verify_private_model(self.segments.model, ledger)  # same ledger, before charging
        if any(q.query.frame == "survey" for q in self.queries):
            check_survey_accounts(workspace, policy)  # the sensitivity's design fact, checked
        loss = self.loss
        once_key = self._once_key()
        request = context.request(
            population=self.spec.population,
            spec=self.describe(),
            guarantee=self.guarantee,
            mechanism=self.mechanism,
            bounds=self.bounds(),
            epsilon=loss.epsilon,
            delta=loss.delta,
            rho=loss.rho,
            as_of=self.as_of,
            kind="dp",
            # the plan's own parameters (the policy's for the purpose, or a caller's stricter)
            budget_epsilon=self.params.budget_epsilon,
            budget_period_months=self.params.budget_period_months,
            budget_window_months=self.params.budget_window_months,
            policy_delta=self.params.delta if self.params.dp_family == DPFamily.ZCDP else None,
            population_fingerprint=self.fingerprint,
            release_id=f"{self.spec.name}-{self.as_of:%Y%m%d}-{uuid.uuid4().hex[:8]}",
            once_key=once_key,
        )
        assert request.release_id is not None
        publication = begin(
            ledger, request, policy=policy, final=workspace.release_dir(request.release_id)
        )
        try:
            tables = self._tables_pl(self._run())
        except BaseException as exc:
            publication.fail(exc)
            raise
        return _publish(self, publication, tables, request, extra_card)

    def series_month(self) -> dt.date | None:
        """The closed month a monthly series plan releases (the window's first day), or None
        when the plan holds no series query.

        Raises
        ------
        ReleaseRefusedError
            A series query over a window that is not exactly one calendar month.
        """
        from segments.exceptions import ReleaseRefusedError
        from segments.months import month_start, next_month
        from segments.privacy.specs import is_series_query

        series = [q.query.name for q in self.queries if is_series_query(q.query)]
        if not series:
            return None
        start = self.window[0] if self.window is not None else None
        if (
            start is None
            or start != month_start(start)
            or self.window != (start, next_month(start))
        ):
            raise ReleaseRefusedError(
                f"release spec {self.spec.name!r}: the monthly series query {series[0]!r} is "
                f"released for one closed calendar month, not the window {self.window}; plan "
                "it with month= the first day of that month (segments release --month)"
            )
        return start

    def _once_key(self) -> str | None:
        """The ledger's "once" key of a monthly series plan: ``<query>/<YYYY-MM>``, from the
        series query (whatever the spec is called) and the window, never from a caller."""
        from segments.privacy.specs import is_series_query

        month = self.series_month()
        if month is None:
            return None
        names = sorted(q.query.name for q in self.queries if is_series_query(q.query))
        return f"{'+'.join(names)}/{month:%Y-%m}"

    def _check_inputs(self, workspace: Workspace, policy: Policy, purpose: str) -> None:
        """Refuse, before any charge, a plan whose person-level inputs are not the verified
        prepared frames of ``purpose`` in ``workspace`` (survey responses: those, or the
        workspace's raw survey table): a ledger charge and a card claiming end-to-end DP
        over Parquet files from anywhere (another purpose's folder, /tmp) is what rev13
        finding 3 released."""
        from segments.exceptions import ReleaseRefusedError
        from segments.provenance import verify_replay

        # the workspace's frames, or the backfill's replay of its history (W/.history) when
        # a signed record binds the replay's raw data to this workspace's raw files
        replay = workspace.history
        roots = {workspace.root.resolve(), replay.root.resolve()}
        unbound: str | None = None
        for key, path in self.source.items():
            if key not in ("customers", "lines", "surveys"):
                continue
            origin = self.read_from.get(key)
            if origin is not None and (
                origin[0].resolve() in roots
                and origin[1] == purpose
                and origin[2] in (f"{key}.parquet", key)  # a file, or month partitions
            ):
                if origin[0].resolve() != replay.root.resolve():
                    continue
                unbound = verify_replay(workspace, replay)
                if unbound is None:
                    continue
            if key == "surveys" and origin is None:
                raw = workspace.raw_table("surveys")
                if Path(path).resolve() == raw.resolve():
                    continue
            clauses = (
                tuple(policy.clauses_for("anonymous_release"))
                if hasattr(policy, "clauses_for")
                else ()
            )
            rule = f" (rule: the anonymity claim of every release, clause {', '.join(clauses)})"
            read = f"{origin[0]}/prepared/{origin[1]}/{origin[2]}" if origin is not None else path
            if unbound is not None:
                raise ReleaseRefusedError(
                    f"release {self.spec.name!r} refused before anything was charged"
                    f"{rule if clauses else ''}: its {key} were read from {read}, a replay not "
                    f"bound to this workspace ({unbound}); fix: let `segments release backfill` "
                    "rewind this workspace's raw data (no privacy budget was spent)"
                )
            raise ReleaseRefusedError(
                f"release {self.spec.name!r} refused before anything was charged"
                f"{rule if clauses else ''}: its {key} were read from {read}, which is not a "
                f"copy of {workspace.prepared_dir(purpose) / (key + '.parquet')} checked "
                "against prepare's signed record; fix: "
                f"plan it with segments.privacy.jobs.plan_spec(workspace, policy, spec, "
                f"purpose={purpose!r}, ...) (or read the frames through "
                "segments.provenance.verified_frames) after `segments prepare --purpose "
                f"{purpose}` (no privacy budget was spent)"
            )

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the input files naming the population (customers, else surveys): the
        digest of the bytes the release read when they were verified against prepare's
        signed record, else of the file."""
        for key in ("customers", "surveys"):
            if key in self.source:
                verified = self.source.get("sha256", {}).get(key)
                return str(verified) if verified else sha256_file(self.source[key])
        return ""

    def describe(self) -> dict[str, Any]:
        """The JSON-able specification recorded in the ledger and the card."""
        return {
            **self.spec.to_dict(),
            "dp_family": self.params.dp_family,
            "segments": None if self.segments is None else self.segments.to_dict(),
            "window": None if self.window is None else [d.isoformat() for d in self.window],
            "as_of": self.as_of.isoformat(),
            "source": self.source,
        }

    def close(self) -> None:
        """Remove the private temporary folder of shared aggregates (and the private area
        itself when nothing else is in it)."""
        _remove_scratch(self.folder)

    def __enter__(self) -> ReleasePlan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class ReleaseResult:
    """A published release: its id, folder, tables (pandas) and card."""

    release_id: str
    path: Path
    _tables: dict[str, pl.DataFrame]  # as written; :attr:`tables` is the API's pandas
    card: dict[str, Any]

    @functools.cached_property
    def tables(self) -> dict[str, pd.DataFrame]:
        """The released tables by query name, as pandas."""
        return {name: to_pandas(t) for name, t in self._tables.items()}

    def __repr__(self) -> str:
        loss = self.card.get("privacy_loss") or {}
        stated = (
            f"ρ = {loss['rho']:.4g}"
            if loss.get("rho") is not None
            else f"ε = {loss.get('epsilon', float('nan')):.4g}"
        )
        tables = ", ".join(f"{n} ({t.height} rows)" for n, t in self._tables.items())
        return (
            f"ReleaseResult({self.release_id}: {self.card.get('guarantee', '?')}, {stated}; "
            f"{tables}; in {self.path})"
        )


def _to_group_scale(frame: pl.DataFrame, vector: VectorRelease) -> pl.DataFrame:
    """Undo the group weights of a vector release with per-segment bounds
    (:meth:`~segments.privacy.vectors.VectorRelease.group_weights`): value, interval and
    scale of a segment's cells divided by ``C_max / C_segment``, so its noise follows its
    own bound (post-processing)."""
    assert vector.partition is not None
    for agg, bounds in vector.group_bounds.items():
        top = max(bounds.values())
        weights = pl.DataFrame(
            {vector.partition: list(bounds), "_weight": [top / b for b in bounds.values()]},
            schema={vector.partition: frame.schema[vector.partition], "_weight": pl.Float64},
        )
        frame = (
            frame.join(weights, on=vector.partition, how="left", maintain_order="left")
            .with_columns(
                (pl.col(agg) / pl.col("_weight")).round(0).cast(pl.Int64).alias(agg),
                *(
                    (pl.col(f"{agg}_{s}") / pl.col("_weight")).alias(f"{agg}_{s}")
                    for s in _ERROR_SUFFIXES
                ),
            )
            .drop("_weight")
        )
    return frame


def _fitted_tables(
    answers: Mapping[str, pl.DataFrame], queries: Sequence[QueryPlan], params: PrivacyParams
) -> dict[str, pl.DataFrame]:
    """Each query's answer with its intervals (at the plan's level), fitted consistent."""
    tables = {q.query.name: _with_intervals(q, answers[q.query.name], params) for q in queries}
    return _make_consistent(tables, {q.query.name: q for q in queries})


def _at_alpha(q: QueryPlan, alpha: float) -> QueryPlan:
    """``q`` with its accuracies at level ``1 - alpha`` (post-processing facts only; the same
    measurement and noise), or ``q`` itself when it is at that level already."""
    if abs(q.alpha - alpha) < 1e-12:
        return q
    other = replace(q, alpha=alpha)
    if q.vector is not None:
        other._summary, other.half_accuracy = _vector_summary(other)
    else:
        half = _with_accuracy(q._summary, alpha / 2.0)
        other._summary = _with_accuracy(q._summary, alpha)
        other.half_accuracy = dict(
            zip(half["column"].to_list(), half["accuracy"].to_list(), strict=True)
        )
    return other


def _with_intervals(q: QueryPlan, answer: pl.DataFrame, params: PrivacyParams) -> pl.DataFrame:
    """Intervals, noise scale, non-negative values and supported means (post-processing)."""
    summary = q._summary
    by = list(q.query.by)
    frame = q._keys.join(answer, on=by, how="left", nulls_equal=True)
    columns: list[pl.Expr] = []
    for row in summary.iter_rows(named=True):
        name, acc, scale = row["column"], row["accuracy"], row["scale"]
        columns += [
            (pl.col(name) - acc).alias(f"{name}_lower"),
            (pl.col(name) + acc).alias(f"{name}_upper"),
            pl.lit(scale).alias(f"{name}_scale"),
        ]
    frame = frame.with_columns(pl.col(a).cast(pl.Int64) for a in q.query.aggregates).with_columns(
        columns
    )
    if q.query.frame == "cells":
        frame = _to_category_scale(frame, q.query.aggregates, params)
    if q.vector is not None and q.vector.excess:
        frame = _with_clip_excess(frame, q.vector)
    if q.vector is not None and q.vector.group_bounds:
        frame = _to_group_scale(frame, q.vector)
    # a mean is published where the count supports it at one public level (the planner's
    # REFUSAL_CONFIDENCE), whatever level its interval is shown at
    judging = _at_alpha(q, 1.0 - REFUSAL_CONFIDENCE) if q.query.means else q
    for mean_name, sum_col, count_col in q.query.means:
        lower, upper = _aggregate_bounds(q.query, sum_col, params)
        frame = frame.with_columns(
            mean_where_supported(
                frame[sum_col].to_numpy(),
                frame[count_col].to_numpy(),
                q.half_accuracy[sum_col],
                q.half_accuracy[count_col],
                lower,
                upper,
                mean_name,
                params.max_relative_error,
                MAX_CLIPPED_SHARE if sum_col in CLIPPED_SUMS else None,
                judged_acc=(judging.half_accuracy[sum_col], judging.half_accuracy[count_col]),
            )
        )
    # sums of non-negative values and counts are never negative: publish max(value, 0)
    return nonnegative(frame, q.query.aggregates)


def _with_clip_excess(frame: pl.DataFrame, vector: VectorRelease) -> pl.DataFrame:
    """The released clipped excess of each aggregate (:attr:`VectorRelease.excess`, in the
    categories' own units) on every row as ``<agg>_clip_excess``, with its noise scale
    ``<agg>_clip_excess_scale``."""
    columns: list[pl.Expr] = []
    for agg, value in vector.excess.items():
        columns += [
            pl.lit(value, dtype=pl.Int64).alias(f"{agg}_clip_excess"),
            pl.lit(vector.excess_scale(agg), dtype=pl.Float64).alias(f"{agg}_clip_excess_scale"),
        ]
    return frame.with_columns(columns)


#: (finer query, its margin, aggregates) fitted together by weighted least squares.
_HIERARCHIES = (
    ("customers_by_county_segment", "customers_by_county", ("count",)),
    ("spend_by_county_segment", "spend_by_segment", ("count", "spend_sek")),
)


def _make_consistent(
    tables: dict[str, pl.DataFrame], plans: Mapping[str, QueryPlan]
) -> dict[str, pl.DataFrame]:
    """Fit the finer tables to their margins (non-negative WLS), margins = sums of cells."""
    for leaf_name, parent_name, aggregates in _HIERARCHIES:
        if leaf_name not in tables or parent_name not in tables:
            continue
        leaf, parent = tables[leaf_name], tables[parent_name]
        parent_by = list(plans[parent_name].query.by)
        parent_index = parent.select(parent_by).with_row_index("_parent")
        leaf = leaf.join(parent_index, on=parent_by, how="left", maintain_order="left")
        distribution = {
            name: dict(
                zip(
                    plans[name]._summary["column"],
                    plans[name]._summary["distribution"],
                    strict=True,
                )
            )
            for name in (leaf_name, parent_name)
        }
        for agg in aggregates:
            fitted = consistent_leaves(
                leaf[f"{agg}_noisy"].to_numpy(),
                noise_variance(distribution[leaf_name][agg], leaf[f"{agg}_scale"].to_numpy()),
                parent[f"{agg}_noisy"].to_numpy(),
                noise_variance(distribution[parent_name][agg], parent[f"{agg}_scale"].to_numpy()),
                leaf["_parent"].to_numpy(),
            )
            values = np.round(fitted).astype(np.int64)
            totals = np.bincount(
                leaf["_parent"].to_numpy(), weights=values, minlength=parent.height
            )
            leaf = _replace_value(leaf, agg, values)
            parent = _replace_value(parent, agg, totals.astype(np.int64))
        tables[leaf_name], tables[parent_name] = leaf.drop("_parent"), parent
    return tables


def _whole_count_interval(frame: pl.DataFrame) -> pl.DataFrame:
    """A count's interval rounded inward to whole numbers (post-processing): the true count
    is a whole number, so it lies in [ceil(lower), floor(upper)] exactly when it lies in
    [lower, upper] — the same coverage, without ends like 170.55 that no count can take. An
    interval holding no whole number (possible only near zero) is rounded outward instead."""
    if "count_lower" not in frame.columns or "count_upper" not in frame.columns:
        return frame
    low, high = pl.col("count_lower"), pl.col("count_upper")
    inner_low, inner_high = (low - _WHOLE_SLACK).ceil(), (high + _WHOLE_SLACK).floor()
    crossed = inner_low > inner_high
    rounded = frame.with_columns(
        pl.when(crossed).then(low.floor()).otherwise(inner_low).alias("count_lower"),
        pl.when(crossed).then(high.ceil()).otherwise(inner_high).alias("count_upper"),
    )
    # ceil(-1e-9) is -0.0, which prints as "-0"
    return rounded.with_columns(
        pl.when(pl.col(c) == 0).then(pl.lit(0.0)).otherwise(pl.col(c)).alias(c)
        for c in ("count_lower", "count_upper")
    )


#: Float slack before rounding an end: 171.0000000001 is the whole number 171, not 172.
_WHOLE_SLACK = 1e-9


def _replace_value(frame: pl.DataFrame, agg: str, values: np.ndarray) -> pl.DataFrame:
    """New published values; intervals widened (never narrowed) to contain them."""
    new = pl.Series(agg, values, dtype=pl.Int64)
    return frame.with_columns(new).with_columns(
        pl.min_horizontal(pl.col(f"{agg}_lower"), new.cast(pl.Float64)).alias(f"{agg}_lower"),
        pl.max_horizontal(pl.col(f"{agg}_upper"), new.cast(pl.Float64)).alias(f"{agg}_upper"),
    )


def _publish(
    plan: ReleasePlan,
    publication: Publication,
    tables: dict[str, pl.DataFrame],
    request: Any,
    extra_card: Mapping[str, Any] | None,
) -> ReleaseResult:
    """Write the tables and card into the staging folder, then complete the publication
    (:mod:`segments.privacy.publishing`: fsync, rename, then publish in the ledger)."""
    staging = publication.staging
    # every key carries its human label (county and industry names...) from the one registry
    by = {q.query.name: q.query.by for q in plan.queries}
    # a named segment source's names are part of the release: its segment_name column
    names = plan.segments.names if plan.segments is not None else None
    segment_names = None if names is None else names.names
    tables = {
        name: _with_key_labels(table, by.get(name, ()), segment_names)
        for name, table in tables.items()
    }
    try:
        for name, table in tables.items():
            table.write_parquet(staging / f"{name}.parquet")
        # the ledger's fields, the parties and the files' hashes: Publication.complete
        write_json(staging / CARD, _card(plan, extra_card))
    except BaseException as exc:
        publication.fail(exc)
        raise
    _, card = publication.complete(CARD)
    return ReleaseResult(publication.release_id, publication.final, tables, card)


def _with_key_labels(
    table: pl.DataFrame, keys: Sequence[str], segment_names: Mapping[str, str] | None = None
) -> pl.DataFrame:
    """``<key>_name`` beside each key column the registry labels (:mod:`segments.keys`):
    public facts, so post-processing; codes without a label keep the code. ``segment`` is
    labelled by ``segment_names`` (the segment source's, :class:`SegmentNames`) when given."""
    from segments.keys import key_labels, label_column

    for key in keys:
        labels = dict(segment_names) if key == "segment" and segment_names else key_labels(key)
        name = label_column(key)
        if not labels or key not in table.columns or name in table.columns:
            continue
        named = pl.col(key).cast(pl.Utf8).replace_strict(labels, default=pl.col(key).cast(pl.Utf8))
        table = table.with_columns(named.alias(name))
        order = list(table.columns)
        order.remove(name)
        order.insert(order.index(key) + 1, name)
        table = table.select(order)
    return table


def _card(plan: ReleasePlan, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    accuracy = plan._accuracy_pl()
    return {
        "guarantee": plan.guarantee,
        "mechanism": plan.mechanism,
        "privacy_loss": plan.loss.to_dict(),
        "privacy_loss_per_query": {q.query.name: q.loss for q in plan.queries},
        "confidence": plan.confidence,
        "aggregates": accuracy.to_dicts(),
        "contribution_bounds": plan.bounds(),
        "spec": plan.describe(),
        "as_of": plan.as_of.isoformat(),
        "noise": "OpenDP 0.16 (integer Laplace or Gaussian); the unbiased noisy values are "
        "the <aggregate>_noisy columns; published values are post-processed (non-negative, "
        "finer tables fitted to their margins by weighted least squares, means only where "
        "the count supports them); each interval contains the noisy value's interval at the "
        "stated confidence cut at zero, so it holds each cell at least at that confidence; a "
        "count's interval is rounded inward to whole numbers (the true count is a whole "
        "number, so the coverage is the same)",
        **_segmentation_loss(plan),
        **_segment_names_card(plan),
        **({"month": month.isoformat()} if (month := plan.series_month()) else {}),
        # the caller's notes under their own key: never shadowing what the release computed
        **({"extra": dict(extra)} if extra else {}),
    }


def _segmentation_loss(plan: ReleasePlan) -> dict[str, Any]:
    """The ledger entries a release keyed by private segments rests on, and its end-to-end
    loss: the DP k-means's loss plus the release's own (basic composition)."""
    model = plan.segments.model if plan.segments is not None else None
    if model is None:
        return {}
    own, seg = plan.loss, model.loss
    delta = float(own.delta or 0.0) + float(seg.delta or 0.0)
    return {
        "segmentation": {**model.to_dict(), "provenance": "private_model"},
        "rests_on": [model.release_id],
        "end_to_end_privacy_loss": {
            "epsilon": float(own.epsilon or 0.0) + float(seg.epsilon or 0.0),
            "delta": delta,
            "note": "the DP k-means (entry above, same ledger) plus this release",
        },
    }


def _segment_names_card(plan: ReleasePlan) -> dict[str, Any]:
    """The names the release's ``segment_name`` column shows, where they came from (which
    segmentation, its guarantee) and their SHA-256 (also in the ledger entry's spec)."""
    source = plan.segments
    if source is None or source.names is None:
        return {}
    return {
        "segment_names": {
            **source.names.to_dict(),
            "segmentation": source.provenance,
            "guarantee": source.guarantee,
            **({"rests_on": source.model.to_dict()} if source.model is not None else {}),
        }
    }


# --- planning entry point -------------------------------------------------------------------
@hashing_raw_once
def plan_release(
    spec: ReleaseSpec,
    params: PrivacyParams,
    *,
    customers: str | os.PathLike[str] | None = None,
    lines: str | os.PathLike[str] | None = None,
    surveys: str | os.PathLike[str] | None = None,
    segments: SegmentSource | None = None,
    as_of: dt.date,
    window: tuple[dt.date, dt.date] | None = None,
    survey_month: dt.date | None = None,
    confidence: float = 0.95,
    workspace: Workspace | None = None,
    origins: Mapping[str, tuple[str, str]] | None = None,
    purpose: str | None = None,
) -> ReleasePlan:
    """Build the shared aggregates and the OpenDP measurements of a release; spend nothing.

    Parameters
    ----------
    spec : ReleaseSpec
    params : PrivacyParams
        Public bounds and the mechanism family (``PrivacyParams.from_policy(policy)``).
    customers, lines : path, optional
        Prepared ``customers.parquet`` and ``lines.parquet`` (needed by person and cell
        queries). :meth:`ReleasePlan.execute` charges only for copies
        :func:`segments.provenance.verified_frames` hashed from the prepared frames of its
        workspace and purpose; give ``workspace`` and ``purpose`` instead to have them read
        that way here.
    surveys : path, optional
        Survey responses (``survey_month``, ``county_code``, ``customer_type``, ``score``).
    segments : SegmentSource, optional
        Required when a query groups by segment.
    as_of : date
        The release date recorded in the ledger; no order line on or after it is read.
    window : (date, date), optional
        ``[start, end)`` of order dates (default: everything before ``as_of``).
    survey_month : date, optional
        Only responses of this month (first day); default all.
    confidence : float
        Level of the intervals shown before release and written in the tables.
    workspace : Workspace, optional
        Where the per-person aggregates are kept while the plan lives: the workspace's
        private area (swept of a crashed run's leftovers first). Without a workspace they
        go in a hidden owner-only folder beside the input files — never the system temp.
    origins : mapping, optional
        Input path → (the workspace file it is a verified copy of, SHA-256 of the bytes
        read) (:class:`segments.provenance.VerifiedFrames.origins`): the card names the
        workspace's prepared tables and their digests, not the private copies. Checked
        against what :func:`~segments.provenance.verified_frames` hashed.
    purpose : str, optional
        With ``workspace`` and no ``customers``/``lines``: read ``W/prepared/<purpose>/``
        customers and lines through :func:`~segments.provenance.verified_frames` (refused
        before anything is charged when their bytes are not the ones prepare signed).

    Returns
    -------
    ReleasePlan

    Raises
    ------
    PolicyError
        For a missing segment source, a bad confidence level or missing inputs.
    """
    if not 0.0 < confidence < 1.0:
        raise PolicyError(f"--confidence={confidence!r} must lie in (0, 1), e.g. 0.95")
    if spec.needs_segments and segments is None:
        raise PolicyError(
            f"release spec {spec.name!r} groups by segment; pass a segment source "
            "(SegmentSource.category_rule() or labels with their provenance)"
        )
    check_public_keys(spec, params, window=window, segments=segments)
    if window is None:
        window = (dt.date(1900, 1, 1), as_of)
    elif window[1] > as_of:
        raise PolicyError(
            f"window end {window[1]} is after as_of={as_of}; a release reads only closed data"
        )
    month_after = (
        None if survey_month is None else (survey_month.replace(day=1) + dt.timedelta(days=32))
    )
    if month_after is not None and month_after.replace(day=1) > as_of:
        raise PolicyError(
            f"survey_month={survey_month} has not closed before as_of={as_of}; release a "
            "survey month once it is over"
        )
    reads_people = any(q.frame in ("person", "cells") for q in spec.query_defs)
    if reads_people and purpose is not None and workspace is not None and lines is None:
        from segments.provenance import verified_frames

        names = (CUSTOMERS_FILE, LINES_FILE)
        with verified_frames(workspace, purpose, names, window=window) as copies:
            return plan_release(
                spec,
                params,
                customers=copies[CUSTOMERS_FILE],
                lines=copies[LINES_FILE],
                surveys=surveys,
                segments=segments,
                as_of=as_of,
                window=window,
                survey_month=survey_month,
                confidence=confidence,
                workspace=workspace,
                origins=copies.origins,
            )
    folder = _scratch_folder(workspace, customers if customers is not None else surveys)
    try:
        paths: dict[str, Path] = {}
        frames = {q.frame for q in spec.query_defs}
        source: dict[str, Any] = {}
        if frames & {"person", "cells"}:
            if customers is None or lines is None:
                raise PolicyError(
                    f"release spec {spec.name!r} needs prepared customers and lines; pass the "
                    "paths (W/prepared/<purpose>/{customers,lines}.parquet)"
                )
            paths.update(
                build_shared_frames(
                    pl.scan_parquet(Path(customers)),
                    Path(lines),
                    segments if spec.needs_segments else None,
                    params,
                    folder,
                    window,
                    **shared_frame_options(spec),
                )
            )
            _record_source(source, origins, customers=customers, lines=lines)
        if "survey" in frames:
            if surveys is None:
                raise PolicyError(
                    f"release spec {spec.name!r} needs survey responses; pass surveys=path"
                )
            months = survey_months(as_of, survey_month, params)
            survey_rows = survey_responses_per_person(months)
            paths["survey"] = _survey_frame(pl.scan_parquet(Path(surveys)), months, folder)
            _record_source(source, origins, surveys=surveys)
            source.update(
                {
                    "survey_month": str(survey_month),
                    "survey_months": [m.isoformat() for m in months],
                    "survey_responses_per_person": survey_rows,
                }
            )
        losses = _query_losses(spec, params)
        alpha = 1.0 - confidence
        # months a person's contributions can span: the window's, never more than the
        # purpose keeps (public facts; the window opens in 1900 when none is given)
        window_months = max(1, min(months_between(*window), int(params.retention_months)))
        queries = [
            build_query(
                q,
                loss,
                params,
                paths[q.frame],
                segments,
                alpha,
                source.get("survey_responses_per_person", 1),
                window_months,
            )
            for q, loss in zip(spec.query_defs, losses, strict=True)
        ]
    except BaseException:
        _remove_scratch(folder)
        raise
    from segments.provenance import verified_origin

    read_from = {
        key: verified_origin(path)
        for key, path in (("customers", customers), ("lines", lines), ("surveys", surveys))
        if key in source and path is not None
    }
    return ReleasePlan(
        spec, params, segments, confidence, queries, folder, window, as_of, source, read_from
    )


def _record_source(
    source: dict[str, Any],
    origins: Mapping[str, tuple[str, str]] | None,
    **inputs: str | os.PathLike[str],
) -> None:
    """Name each input on the card: the workspace file a verified copy was read from and the
    SHA-256 of the bytes read (``source["sha256"]``), else the path given.

    Whether a path is a verified copy is asked of :func:`segments.provenance.verified_origin`
    (what :func:`~segments.provenance.verified_frames` hashed), never taken from the
    caller's ``origins``: an ``origins`` entry that disagrees with it is refused."""
    from segments.exceptions import ReleaseRefusedError
    from segments.provenance import verified_origin

    for key, path in inputs.items():
        verified = verified_origin(path)
        stated = (origins or {}).get(str(path))
        if verified is None:
            if stated is not None:
                raise ReleaseRefusedError(
                    f"parameter 'origins': {path} is not a copy verified_frames hashed, yet "
                    f"is stated to be {stated[0]}; fix: pass the origins of the "
                    "segments.provenance.verified_frames block the path comes from (nothing "
                    "was charged)"
                )
            source[key] = str(path)
            continue
        root, purpose, name, digest = verified
        source[key] = str(Workspace(root).prepared_dir(purpose) / name)
        source.setdefault("sha256", {})[key] = digest
        if stated is not None and (stated[0], stated[1]) != (source[key], digest):
            raise ReleaseRefusedError(
                f"parameter 'origins': {path} was verified as {source[key]} (SHA-256 "
                f"{digest[:12]}…), not {stated[0]}; fix: pass the origins of the "
                "verified_frames block the path comes from (nothing was charged)"
            )


#: Columns every person frame carries already (beside ``pid`` and the values).
_PERSON_FRAME_COLUMNS = ("county_code", "customer_type", "segment")


def shared_frame_options(spec: ReleaseSpec) -> dict[str, Any]:
    """What an ad-hoc spec's queries need in the shared frames beyond the named queries':
    further person attributes (keys and filters), per-person values, month cells."""
    person_frames = [q for q in spec.query_defs if q.frame in ("person", "cells")]
    columns = {
        c
        for q in person_frames
        for c in (*q.by, *(w for w, _ in q.where))
        if c not in (*_PERSON_FRAME_COLUMNS, "category", "month")
    }
    # a quantile reads its value column as a sum does (quantile_50_orders reads orders)
    values = {
        value
        for q in spec.query_defs
        if q.frame == "person"
        for a in q.aggregates
        for value in [(quantile_of(a) or (0.0, a))[1]]
        if value in PERSON_VALUES or value.startswith(PERSON_CATEGORY_SPEND)
    }
    cells = [q for q in spec.query_defs if q.frame == "cells"]
    cell_columns = {c for q in cells for c in (*q.by, *(w for w, _ in q.where))} - {
        "segment",
        "category",
        "month",
    }
    monthly = {"month" in q.by for q in cells}
    if len(monthly) > 1:
        raise PolicyError(
            f"release {spec.name!r} mixes purchase queries keyed by month with ones that are "
            "not; release them separately (a person's cells are bounded per month in one, "
            "over the window in the other)"
        )
    return {
        "person_columns": tuple(sorted(columns)),
        "person_values": tuple(sorted(values)),
        "cell_columns": tuple(sorted(cell_columns)),
        "cell_months": monthly == {True},
    }


def _scratch_folder(workspace: Workspace | None, near: str | os.PathLike[str] | None) -> Path:
    """An owner-only folder for a plan's private aggregates, inside the sandbox."""
    pid = os.getpid()
    if workspace is not None:
        workspace.sweep()
        workspace.private.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            return Path(tempfile.mkdtemp(dir=workspace.private, prefix=f"scratch-release-p{pid}-"))
        except BaseException:
            with contextlib.suppress(OSError):
                workspace.private.rmdir()
            raise
    if near is None:
        raise PolicyError("plan_release needs input files (customers/lines or surveys)")
    return Path(tempfile.mkdtemp(dir=Path(near).parent, prefix=f".scratch-release-p{pid}-"))


def _remove_scratch(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    if folder.parent.name == ".private":
        with contextlib.suppress(OSError):
            folder.parent.rmdir()  # only when empty: another run may be using it


def _query_losses(spec: ReleaseSpec, params: PrivacyParams) -> tuple[float, ...]:
    """Each query's loss: ε under pure DP, ρ under zCDP (from the spec's ε at the policy's δ)."""
    if params.dp_family == DPFamily.PURE:
        return spec.query_epsilons()
    rho = epsilon_to_rho(spec.epsilon, params.delta)
    return tuple(rho * e / spec.epsilon for e in spec.query_epsilons())
