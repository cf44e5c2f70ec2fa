"""Post-processing of noisy releases into figures a purchaser can use (no privacy cost).

Everything here reads only released values and their public noise scales, so the guarantee
is unchanged (post-processing). Three steps, applied by :meth:`ReleasePlan.tables`:

* **Non-negative.** Counts, units and SEK are never negative; a noisy value below zero is
  published as 0.
* **Consistent.** Where a release holds a table and its margin (customers per county ×
  segment and per county; spend per county × segment and per segment), the finer cells are
  fitted by non-negative weighted least squares to both noisy tables, each weighted by its
  released variance (:func:`consistent_leaves`); the margin is then the sum of its cells.
* **Means where supported.** A mean is sum / count only where the noisy count's interval
  excludes zero and its relative half-width is at most ``max_relative_error``; elsewhere it
  is null and marked, never clamped to a bound (:func:`mean_where_supported`). A mean of a
  value clipped at a policy bound (spend) is also withheld where it is a large share of the
  bound: so many people may sit at the bound that the mean is biased low, which no noise
  interval shows (:data:`MAX_CLIPPED_SHARE`).

Intervals still hold after post-processing: each published interval contains the raw
interval at the stated confidence cut at zero (the truth is never negative), widened where
needed to contain the post-processed value, so it covers the truth at least as often.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
from scipy.optimize import lsq_linear

__all__ = [
    "CLIPPED_SUMS",
    "MAX_CLIPPED_SHARE",
    "UNRELIABLE_MARK",
    "consistent_leaves",
    "is_reliable",
    "mark_unreliable_cells",
    "mean_where_supported",
    "noise_variance",
    "nonnegative",
    "published_count_problems",
    "reliability_footnote",
    "with_reliability_marks",
]

#: The mark a reader's table puts beside a cell whose noise is wider than the policy accepts
#: (:func:`with_reliability_marks`); :func:`reliability_footnote` is its legend.
UNRELIABLE_MARK = "†"


#: Sums of a value each person contributes clipped at a public policy bound (``spend_sek`` at
#: ``spend_bound_sek``); survey scores are bounded by the survey's scale, not clipped.
CLIPPED_SUMS = frozenset({"spend_sek"})
#: A mean of a clipped value is published only below this share of the bound. By Markov's
#: inequality at most that share of the people reach the bound (P(X ≥ C) ≤ E[min(X, C)] / C),
#: so most of the segment is not clipped. Measured by benchmarks/bench_utility.py (50,000
#: customers): AloCenter's 100,000 SEK bound clips 17–41 % of five segments whose true mean
#: spend is 56,000–139,000 SEK, and their means came out 26–64 % low at any ε (median error
#: of the published means 40 %); the means below a fifth of the bound were within 0–19 %.
MAX_CLIPPED_SHARE = 0.2


def noise_variance(distribution: str, scale: float | np.ndarray) -> np.ndarray:
    """Variance of OpenDP's noise at ``scale``: 2·scale² (Laplace), scale² (Gaussian)."""
    s = np.asarray(scale, dtype=float)
    return 2.0 * s**2 if "Laplace" in distribution or distribution == "laplace" else s**2


def nonnegative(frame: pl.DataFrame, aggregates: Sequence[str]) -> pl.DataFrame:
    """Publish each aggregate as max(value, 0), its interval cut at zero (``<agg>_lower``,
    ``<agg>_upper``); the unbiased noisy value is kept as ``<agg>_noisy``.

    Examples
    --------
    >>> f = pl.DataFrame({"n": [-3, 5], "n_lower": [-9.0, -1.0], "n_upper": [3.0, 11.0]})
    >>> nonnegative(f, ["n"]).select("n", "n_lower", "n_upper").rows()
    [(0, 0.0, 3.0), (5, 0.0, 11.0)]
    """
    columns: list[pl.Expr] = []
    for agg in aggregates:
        columns += [
            pl.col(agg).alias(f"{agg}_noisy"),
            pl.col(agg).clip(lower_bound=0).alias(agg),
            pl.col(f"{agg}_lower").clip(lower_bound=0.0).alias(f"{agg}_lower"),
            pl.col(f"{agg}_upper").clip(lower_bound=0.0).alias(f"{agg}_upper"),
        ]
    return frame.with_columns(columns)


def consistent_leaves(
    leaves: np.ndarray,
    leaf_variance: np.ndarray,
    parents: np.ndarray,
    parent_variance: np.ndarray,
    parent_of: np.ndarray,
) -> np.ndarray:
    """Non-negative leaves that best fit noisy leaves and noisy parent totals.

    Minimises Σ (x_l − y_l)² / v_l + Σ_p (Σ_{l ∈ p} x_l − y_p)² / v_p over x ≥ 0 (weighted
    least squares with the released variances, OpenDP noise being independent per cell).

    Parameters
    ----------
    leaves, leaf_variance : arrays of shape (L,)
    parents, parent_variance : arrays of shape (P,)
    parent_of : int array of shape (L,)
        Index of each leaf's parent.

    Returns
    -------
    numpy.ndarray
        The fitted leaves; the consistent parents are their sums.

    Examples
    --------
    >>> x = consistent_leaves(np.array([10.0, -2.0]), np.ones(2), np.array([12.0]),
    ...                       np.ones(1), np.array([0, 0]))
    >>> bool((x >= 0).all()), round(float(x.sum()), 6)
    (True, 11.0)
    """
    leaves = np.asarray(leaves, dtype=float)
    n_leaves, n_parents = leaves.size, np.asarray(parents).size
    membership = np.zeros((n_parents, n_leaves))
    membership[np.asarray(parent_of), np.arange(n_leaves)] = 1.0
    weights = np.concatenate(
        [1.0 / np.sqrt(np.asarray(leaf_variance, float)), 1.0 / np.sqrt(parent_variance)]
    )
    design = np.vstack([np.eye(n_leaves), membership]) * weights[:, None]
    target = np.concatenate([leaves, np.asarray(parents, dtype=float)]) * weights
    start = np.clip(leaves, 0.0, None)
    fit = lsq_linear(design, target, bounds=(0.0, np.inf), method="bvls", tol=1e-12)
    return np.asarray(fit.x if fit.success else start, dtype=float)


def mean_where_supported(
    total: np.ndarray,
    count: np.ndarray,
    sum_acc: float | np.ndarray,
    count_acc: float | np.ndarray,
    lower: float,
    upper: float,
    name: str,
    max_relative_error: float,
    max_clipped_share: float | None = None,
    judged_acc: tuple[float | np.ndarray, float | np.ndarray] | None = None,
) -> list[pl.Series]:
    """Mean = noisy sum / noisy count where they support it; else null and marked.

    The mean's interval is the range of sum / count over the box of the two intervals (each
    at half the error rate: they hold together by a union bound), cut to the public bounds
    ``[lower, upper]`` of a person's clipped value (the true mean lies there). A mean is
    published where the count's interval excludes zero and the mean's interval is at most
    ``max_relative_error`` × the mean on either side; the published mean is not clamped.
    With ``max_clipped_share`` (a sum of values clipped at ``upper``) a mean at or above that
    share of ``upper`` is withheld too: up to that share of the people may be clipped, and
    the mean biased low by an amount no interval states. ``judged_acc`` (the sum's and the
    count's accuracies at the level support is judged at) decides publication when given, so
    the decision does not move with the level the interval is shown at; the interval stays at
    ``sum_acc``/``count_acc``'s level (the public bounds where that count interval holds 0).

    Examples
    --------
    >>> mean, _, _, status = mean_where_supported(
    ...     np.array([1.5e6, 6e6]), np.array([100.0, 100.0]), 1e3, 1.0, 0, 1e5, "m", 0.5, 0.2
    ... )
    >>> mean.to_list(), status.to_list()[1][:40]
    ([15000.0, None], 'not published: the mean is 60% of the bo')

    Returns
    -------
    list of polars.Series
        ``name``, ``name_lower``, ``name_upper``, ``name_status``.
    """
    total = np.asarray(total, dtype=float)
    count = np.asarray(count, dtype=float)
    positive, mean, low, high = _mean_box(total, count, sum_acc, count_acc)
    j_positive, _, j_low, j_high = (
        (positive, mean, low, high)
        if judged_acc is None
        else _mean_box(total, count, judged_acc[0], judged_acc[1])
    )
    supported = (
        j_positive
        & (mean > 0)
        & (j_high - mean <= max_relative_error * mean)
        & (mean - j_low <= max_relative_error * mean)
    )
    # shown at its own level: where that count interval holds 0, the public bounds
    low = np.where(positive, low, -np.inf)
    high = np.where(positive, high, np.inf)
    status = np.where(
        supported,
        "published",
        f"not published: the noisy sum and count do not support a mean (interval wider "
        f"than ±{max_relative_error:g} of it)",
    ).astype(object)
    if max_clipped_share is not None:
        near_bound = supported & (mean >= max_clipped_share * upper)
        for i in np.flatnonzero(near_bound):
            status[i] = (
                f"not published: the mean is {mean[i] / upper:.0%} of the bound {upper:g} "
                f"each person's value is clipped at, so up to that share of the people may "
                f"be clipped (Markov) and the mean biased low; a larger policy bound "
                f"publishes it"
            )
        supported = supported & ~near_bound
    return [
        pl.Series(name, np.where(supported, mean, np.nan), nan_to_null=True),
        pl.Series(
            f"{name}_lower",
            np.where(supported, np.clip(low, lower, upper), np.nan),
            nan_to_null=True,
        ),
        pl.Series(
            f"{name}_upper",
            np.where(supported, np.clip(high, lower, upper), np.nan),
            nan_to_null=True,
        ),
        pl.Series(f"{name}_status", status.astype(str)),
    ]


def _mean_box(
    total: np.ndarray,
    count: np.ndarray,
    sum_acc: float | np.ndarray,
    count_acc: float | np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(count interval excludes 0, sum / count, low, high) over the box of the two intervals."""
    count_acc = np.broadcast_to(np.asarray(count_acc, dtype=float), count.shape)
    sum_acc = np.broadcast_to(np.asarray(sum_acc, dtype=float), total.shape)
    positive = count - count_acc > 0
    den = np.where(positive, count, 1.0)
    den_low = np.where(positive, count - count_acc, 1.0)
    den_high = np.where(positive, count + count_acc, 1.0)
    num_low, num_high = total - sum_acc, total + sum_acc
    low = np.where(num_low >= 0, num_low / den_high, num_low / den_low)
    high = np.where(num_high >= 0, num_high / den_low, num_high / den_high)
    return positive, total / den, low, high


def is_reliable(
    value: float | np.ndarray, half_width: float | np.ndarray, max_relative_error: float
) -> np.ndarray:
    """The one reliability rule: a cell is reliable where its value is positive and its
    interval's half-width is at most ``max_relative_error`` times the value.

    Used for released cells (the half-width around the raw noisy value, OpenDP's accuracy)
    and for forecasts (half the prediction interval): a cell that fails it is still
    published, marked, never clamped or dropped.

    Examples
    --------
    >>> is_reliable(np.array([100.0, 8.0, 0.0]), np.array([20.0, 20.0, 18.0]), 0.5).tolist()
    [True, False, False]
    """
    v = np.asarray(value, dtype=float)
    h = np.asarray(half_width, dtype=float)
    return np.asarray((v > 0) & (h <= max_relative_error * v), dtype=bool)


def mark_unreliable_cells(
    frame: pl.DataFrame,
    aggregates: Sequence[str],
    max_relative_error: float,
    judged_at: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Mark the cells whose noise is wider than the policy accepts for a typical cell.

    ``<agg>_reliable`` is false where the interval's half-width (around the raw noisy value,
    ``<agg>_upper - <agg>_noisy``, after :func:`nonnegative`) exceeds ``max_relative_error``
    times the published value, or the value is 0 (:func:`is_reliable`). The accuracy plan's
    ±10 % is a typical cell's; a small segment's or county's cells are smaller (and a small
    segment's own private bound is unreliable: the quantile needs well over a thousand
    people at its ε), so the category mix's p90 cell error was 60-100 % while its median met
    10 % (benchmarks/README.md). The mark says so per cell, in every table of every release,
    instead of letting the table imply the plan's figure for all of them.

    ``judged_at``, when given, is the same table (same rows, same order) with its intervals
    at the level the mark is judged at; the half-width is taken from it, so the mark does
    not move with the level ``frame``'s intervals are shown at.

    Examples
    --------
    >>> f = pl.DataFrame({"n": [100, 8, 0], "n_noisy": [100, 8, -2],
    ...                   "n_lower": [80.0, 0.0, 0.0], "n_upper": [120.0, 28.0, 18.0]})
    >>> mark_unreliable_cells(f, ["n"], 0.5)["n_reliable"].to_list()
    [True, False, False]
    """
    judged = frame if judged_at is None else judged_at
    if judged.height != frame.height:
        raise ValueError("judged_at must hold the same rows as frame")
    return frame.with_columns(
        pl.Series(
            f"{agg}_reliable",
            is_reliable(
                frame[agg].to_numpy(),
                (judged[f"{agg}_upper"] - judged[f"{agg}_noisy"]).to_numpy(),
                max_relative_error,
            ),
        )
        for agg in aggregates
    )


def _reliability_columns(frame: Any) -> list[str]:
    """The aggregates of ``frame`` that carry a ``<agg>_reliable`` mark, in column order."""
    columns = list(frame.columns)
    return [c for c in columns if f"{c}_reliable" in columns]


def reliability_footnote(
    frame: Any, max_relative_error: float, *, what: str = "cell", level: float | None = None
) -> str:
    """The legend of a table's reliability marks: which mark, what it means, how many cells.

    Parameters
    ----------
    frame : polars.DataFrame or pandas.DataFrame
        A table carrying ``<agg>_reliable`` columns (a release's tables, the purchasing
        export, the private segments' profiles).
    max_relative_error : float
        The policy's limit the marks were set against.
    what : str
        What a row is, for the legend ("cell", "forecast month", "segment").
    level : float, optional
        Confidence of the intervals, stated when given.

    Returns
    -------
    str
        One line: the mark, the rule, and the count per aggregate (or that every cell is
        reliable).

    Examples
    --------
    >>> f = pl.DataFrame({"n": [5, 100], "n_reliable": [False, True]})
    >>> print(reliability_footnote(f, 0.5)[:70])
    † unreliable (n: 1 of 2 cells): its interval is wider than ±50% of the
    """
    marked = _reliability_columns(frame)
    if not marked:
        raise ValueError(
            "reliability_footnote: the table has no <aggregate>_reliable column; mark it "
            "first (mark_unreliable_cells, or a release's tables)"
        )
    counts = []
    for agg in marked:
        flags = [bool(v) for v in list(frame[f"{agg}_reliable"])]
        counts.append((agg, flags.count(False), len(flags)))
    interval = "its interval" if level is None else f"its {level:.0%} interval"
    limit = f"±{max_relative_error:.0%} of the value (the policy's max_relative_error)"
    if not any(n for _, n, _ in counts):
        return (
            f"every {what} reliable ({', '.join(marked)}): each has {interval} within {limit} "
            f"(no {UNRELIABLE_MARK} mark)"
        )
    rule = (
        f"{interval} is wider than {limit} or the value is 0; read it through its interval, "
        "not as a figure"
    )
    return (
        f"{UNRELIABLE_MARK} unreliable ("
        + ", ".join(f"{agg}: {n} of {total} {what}s" for agg, n, total in counts)
        + f"): {rule}"
    )


def with_reliability_marks(frame: Any, columns: Sequence[str] | None = None) -> Any:
    """A table for a reader: each marked aggregate's value with :data:`UNRELIABLE_MARK` beside
    it where ``<agg>_reliable`` is false (values as text, rounded to whole numbers).

    Parameters
    ----------
    frame : polars.DataFrame or pandas.DataFrame
        A table carrying ``<agg>_reliable`` columns.
    columns : sequence of str, optional
        The columns to show (default: every column but the marks); a marked aggregate among
        them is shown with its mark, the ``_reliable`` columns are dropped.

    Returns
    -------
    pandas.DataFrame

    Examples
    --------
    >>> f = pl.DataFrame({"key": ["a", "b"], "n": [5, 100], "n_reliable": [False, True]})
    >>> with_reliability_marks(f)["n"].tolist()
    ['5 †', '100']
    >>> g = pl.DataFrame({"top": ["paper, toner"], "top_reliable": [False]})
    >>> with_reliability_marks(g)["top"].tolist()
    ['paper, toner †']
    """
    import pandas as pd

    table = frame if isinstance(frame, pd.DataFrame) else frame.to_pandas()
    marked = _reliability_columns(table)
    if not marked:
        raise ValueError(
            "with_reliability_marks: the table has no <aggregate>_reliable column; mark it "
            "first (mark_unreliable_cells, or a release's tables)"
        )
    shown = (
        list(columns)
        if columns is not None
        else [c for c in table.columns if not str(c).endswith("_reliable")]
    )
    out = table[shown].copy()
    for agg in marked:
        if agg not in out.columns:
            continue
        flags = table[f"{agg}_reliable"].astype(bool).to_numpy()
        text = [
            v
            if isinstance(v, str)
            else ("" if pd.isna(v) else f"{float(v):,.0f}".replace(",", " "))
            for v in table[agg]
        ]
        out[agg] = [
            t if ok else f"{t} {UNRELIABLE_MARK}" for t, ok in zip(text, flags, strict=True)
        ]
    return out


def published_count_problems(
    published: Sequence[float] | np.ndarray, noisy: Sequence[float] | np.ndarray
) -> list[str]:
    """What is wrong with published counts as the post-processing of the recorded noisy ones.

    A check on the published file that does not trust the projection: the published counts
    must be whole and non-negative, add up to the noisy total (rounded, at least 0), and be
    the projection of the noisy counts (``kmeans_estimator.nonnegative_counts``). Counts
    published raw (a noisy ``-21``), edited after the projection, or projected from other
    noisy counts each fail it.

    Parameters
    ----------
    published : sequence of float
        The counts as published (read from the release's file).
    noisy : sequence of float
        The raw noisy counts the release recorded before post-processing.

    Returns
    -------
    list of str
        One line per problem, naming the cell and its value; empty when the counts are sound.

    Examples
    --------
    >>> published_count_problems([109, 0, 23, 0], [120.4, -21.0, 35.2, -3.0])
    []
    >>> published_count_problems([120, -21, 35, -3], [120.4, -21.0, 35.2, -3.0])[0][:42]
    'published count of cell 1 is -21, negative'
    """
    from segments.privacy.kmeans_estimator import nonnegative_counts

    values = np.asarray(published, dtype=float)
    raw = np.asarray(noisy, dtype=float)
    problems = [
        f"published count of cell {i} is {v:g}, negative; publish the non-negative projection "
        "of the noisy counts"
        for i, v in enumerate(values)
        if v < 0
    ]
    problems += [
        f"published count of cell {i} is {v:g}, not a whole number"
        for i, v in enumerate(values)
        if np.isfinite(v) and v != np.round(v)
    ]
    if values.shape != raw.shape:
        return [*problems, f"{values.size} published counts for {raw.size} noisy ones"]
    total = max(int(round(float(raw.sum()))), 0)
    if not np.isclose(values.sum(), total):
        problems.append(
            f"published counts add up to {values.sum():g}, the noisy total is {total}; the "
            "projection keeps the total"
        )
    expected = nonnegative_counts(raw)
    differ = np.flatnonzero(values != expected)
    if len(differ):
        i = int(differ[0])
        problems.append(
            f"{len(differ)} published count(s) differ from the projection of the noisy counts "
            f"(first: cell {i}, {values[i]:g} published, {expected[i]} projected)"
        )
    return problems
