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
    active = (
        orders.select("customer_id", pl.col("order_date").dt.truncate("1mo").alias("month"))
        .filter(pl.col("month") <= last_surveyed)
        .unique()
        .sort("month", "customer_id")
        .join(
            customers.filter(~pl.col("survey_opt_out")).select(
                "customer_id", "county_code", "customer_type"
            ),
            on="customer_id",
        )
        .join(hidden.select("customer_id", "arch"), on="customer_id")
        .sort("month", "customer_id")
    )
    chosen = active.filter(pl.Series(rng.random(active.height) < sample_rate))
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
