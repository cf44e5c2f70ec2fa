"""The ``surveys`` table (AC-2): anonymous monthly customer-satisfaction responses.

Each month a random sample of the previous month's active customers (at least one order
that month) who have not opted out of surveys is asked; a response keeps only the month
surveyed, the respondent's county and customer type and a 0-10 score — no customer id, and
rows are sorted by their values so not even the row order links back to an account.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from segments.schema import SURVEYS
from segments.synth.archetypes import ARCHETYPES

__all__ = ["SURVEY_SAMPLE_RATE", "generate_surveys"]

#: Share of last month's active, non-opted-out customers who are sampled and answer.
SURVEY_SAMPLE_RATE = 0.05


def _active_pairs(orders: pl.DataFrame, last_surveyed: dt.date) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (month, customer_id) pairs with an order, up to ``last_surveyed``, sorted by
    month then customer id: a bitmap per month when it fits in memory (linear, no sort),
    otherwise a sort of packed keys."""
    month = orders["order_date"].to_numpy().astype("datetime64[M]")
    customer_id = orders["customer_id"].to_numpy()
    keep = month <= np.datetime64(last_surveyed, "M")
    month, customer_id = month[keep].astype(np.int64), customer_id[keep]
    if not len(month):
        return month.astype("datetime64[M]"), customer_id
    first, n_months = month.min(), int(month.max() - month.min()) + 1
    size = int(customer_id.max()) + 1
    if n_months * size <= 2**30:
        seen = np.zeros((n_months, size), dtype=bool)
        seen[month - first, customer_id] = True
        m, c = np.nonzero(seen)
    else:
        packed = np.unique((month - first) * size + customer_id)
        m, c = np.divmod(packed, size)
    return (m + first).astype("datetime64[M]"), c.astype(np.int64)


def generate_surveys(
    orders: pl.DataFrame,
    customers: pl.DataFrame,
    hidden: pl.DataFrame,
    *,
    as_of: dt.date,
    rng: np.random.Generator,
    sample_rate: float = SURVEY_SAMPLE_RATE,
) -> pl.DataFrame:
    """Draw the survey responses.

    The survey about month *m* is sent in month *m + 1*, so only months whose following month
    has started by ``as_of`` are surveyed.

    Parameters
    ----------
    orders, customers : polars.DataFrame
        Raw tables.
    hidden : polars.DataFrame
        ``customer_id`` and ``arch`` (the archetype drives the mean score).
    as_of : date
    rng : numpy.random.Generator
    sample_rate : float

    Returns
    -------
    polars.DataFrame
        The ``surveys`` table (schema :data:`segments.schema.SURVEYS`).
    """
    last_surveyed = (as_of.replace(day=1) - dt.timedelta(days=1)).replace(day=1)
    month, customer_id = _active_pairs(orders, last_surveyed)
    # per-customer facts by id, through lookup tables (ids are small positive integers)
    asked = customers.filter(~pl.col("survey_opt_out"))
    asked_ids, hidden_ids = asked["customer_id"].to_numpy(), hidden["customer_id"].to_numpy()
    size = 1 + max(
        (int(a.max()) for a in (asked_ids, hidden_ids, customer_id) if len(a)), default=0
    )
    row_of = np.full(size, -1, dtype=np.int64)
    row_of[asked_ids] = np.arange(asked.height)
    arch_of = np.full(size, -1, dtype=np.int64)
    arch_of[hidden_ids] = hidden["arch"].to_numpy()
    keep = (row_of[customer_id] >= 0) & (arch_of[customer_id] >= 0)
    month, customer_id = month[keep], customer_id[keep]
    picked = rng.random(len(customer_id)) < sample_rate
    month, customer_id = month[picked], customer_id[picked]
    rows = pl.Series(row_of[customer_id])
    chosen = pl.DataFrame(
        {
            "month": month.astype("datetime64[D]"),
            "county_code": asked["county_code"].gather(rows),
            "customer_type": asked["customer_type"].gather(rows),
            "arch": arch_of[customer_id],
        }
    )
    means = np.array([a.score_mean for a in ARCHETYPES])[chosen["arch"].to_numpy()]
    score = np.clip(np.rint(rng.normal(means, 1.8)), 0, 10)
    return (
        chosen.select(
            pl.col("month").alias("survey_month"),
            "county_code",
            "customer_type",
            pl.Series("score", score).cast(pl.Int8),
        )
        .sort("survey_month", "county_code", "customer_type", "score")
        .select(pl.col(c.name).cast(c.dtype) for c in SURVEYS.columns)
    )
