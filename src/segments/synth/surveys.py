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

__all__ = ["SURVEY_SAMPLE_RATE", "SurveyDraw", "generate_surveys"]

#: Share of last month's active, non-opted-out customers who are sampled and answer.
SURVEY_SAMPLE_RATE = 0.05


def _active_pairs(
    orders: pl.DataFrame, last_surveyed: np.datetime64
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (month, customer_id) pairs with an order, up to ``last_surveyed``, sorted by
    month then customer id: a bitmap per month when it fits in memory (linear, no sort),
    otherwise a sort of packed keys."""
    month = orders["order_date"].to_numpy().astype("datetime64[M]")
    customer_id = orders["customer_id"].to_numpy()
    keep = month <= last_surveyed
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


class SurveyDraw:
    """The survey responses drawn from the orders a month at a time (:func:`generate_surveys`
    on the whole table draws the same rows: the same stream, in the same order).

    Each month's distinct customers with an order are the month's active customers; those
    who can be asked are sampled as the month comes (one draw each), so only the sampled
    ones are kept; :meth:`finish` draws their scores.
    """

    def __init__(
        self,
        customers: pl.DataFrame,
        hidden: pl.DataFrame,
        *,
        as_of: dt.date,
        rng: np.random.Generator,
        sample_rate: float = SURVEY_SAMPLE_RATE,
    ):
        self.rng, self.sample_rate = rng, sample_rate
        self.last_surveyed = np.datetime64(
            (as_of.replace(day=1) - dt.timedelta(days=1)).replace(day=1), "M"
        )
        # per-customer facts by id, through lookup tables (ids are small positive integers)
        self.asked = customers.select(
            "county_code", "customer_type", "customer_id", "survey_opt_out"
        ).filter(~pl.col("survey_opt_out"))
        asked_ids = self.asked["customer_id"].to_numpy()
        hidden_ids = hidden["customer_id"].to_numpy()
        size = 1 + max((int(a.max()) for a in (asked_ids, hidden_ids) if len(a)), default=0)
        self.row_of = np.full(size, -1, dtype=np.int64)
        self.row_of[asked_ids] = np.arange(self.asked.height)
        self.arch_of = np.full(size, -1, dtype=np.int64)
        self.arch_of[hidden_ids] = hidden["arch"].to_numpy()
        self.picked: list[tuple[np.ndarray, np.ndarray]] = []
        self.last_month: np.datetime64 | None = None

    def add(self, orders: pl.DataFrame) -> None:
        """Sample the active customers of the months of ``orders`` (later months than any
        added before, in calendar order)."""
        month, customer_id = _active_pairs(orders, self.last_surveyed)
        if not len(month):
            return
        if self.last_month is not None and month[0] <= self.last_month:
            raise ValueError("SurveyDraw.add: months must come in calendar order, each once")
        self.last_month = month[-1]
        # ids never seen by the lookup tables are neither askable nor of a known archetype
        known = customer_id < len(self.row_of)
        month, customer_id = month[known], customer_id[known]
        keep = (self.row_of[customer_id] >= 0) & (self.arch_of[customer_id] >= 0)
        month, customer_id = month[keep], customer_id[keep]
        picked = self.rng.random(len(customer_id)) < self.sample_rate
        self.picked.append((month[picked], customer_id[picked]))

    def finish(self) -> pl.DataFrame:
        """The ``surveys`` table (schema :data:`segments.schema.SURVEYS`)."""
        month = np.concatenate([m for m, _ in self.picked] or [np.empty(0, "datetime64[M]")])
        customer_id = np.concatenate([c for _, c in self.picked] or [np.empty(0, np.int64)])
        rows = pl.Series(self.row_of[customer_id])
        chosen = pl.DataFrame(
            {
                "month": month.astype("datetime64[D]"),
                "county_code": self.asked["county_code"].gather(rows),
                "customer_type": self.asked["customer_type"].gather(rows),
                "arch": self.arch_of[customer_id],
            }
        )
        means = np.array([a.score_mean for a in ARCHETYPES])[chosen["arch"].to_numpy()]
        score = np.clip(np.rint(self.rng.normal(means, 1.8)), 0, 10)
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
    has started by ``as_of`` are surveyed. :class:`SurveyDraw` draws the same responses
    from the orders a month at a time.

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
    draw = SurveyDraw(customers, hidden, as_of=as_of, rng=rng, sample_rate=sample_rate)
    draw.add(orders)
    return draw.finish()
