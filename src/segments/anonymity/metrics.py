"""Risk and utility of a (released) table, measured from the table itself.

Everything here recounts equivalence classes with polars from the table's own columns, so it
checks a release independently of the search that produced it.

Risk (re-identification, per the usual attacker models):

* prosecutor: the attacker knows the person is in the table; a record's risk is 1 / its
  class size. Highest and average (= classes / rows).
* journalist: the attacker does not know who is in the table and links against a population
  table (generalised the same way); a record's risk is 1 / the size of its class in the
  population. Highest and average.
* marketer: the expected share of records an attacker linking every record would re-identify
  (classes / rows without a population; the mean of sample / population class sizes with one).

Utility: discernibility (sum of squared class sizes, each suppressed row charged the original
table size), average class size (and its ratio to k), suppressed rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from segments._tables import as_polars
from segments.anonymity.models import class_sizes_pl as class_sizes
from segments.exceptions import KAnonymityError

__all__ = [
    "journalist_risk",
    "marketer_risk",
    "prosecutor_risk",
    "risk_metrics",
    "utility_metrics",
]


def prosecutor_risk(df: pl.DataFrame, qis: Sequence[str]) -> dict[str, float]:
    """Highest and average prosecutor risk, and the share of records at the highest risk.

    Examples
    --------
    >>> import polars as pl
    >>> prosecutor_risk(pl.DataFrame({"a": ["x", "x", "y"]}), ["a"])["highest"]
    1.0
    """
    if df.height == 0:
        return {"highest": 0.0, "average": 0.0, "records_at_highest": 0.0}
    sizes = class_sizes(df, qis)["n"]
    smallest = int(sizes.min())  # type: ignore[arg-type]
    return {
        "highest": 1.0 / smallest,
        "average": sizes.len() / df.height,
        "records_at_highest": float(sizes.filter(sizes == smallest).sum()) / df.height,
    }


def _population_sizes(
    df: pl.DataFrame, qis: Sequence[str], population: pl.DataFrame
) -> pl.DataFrame:
    sample = class_sizes(df, qis).rename({"n": "f"})
    pop = class_sizes(population, qis).rename({"n": "F"})
    joined = sample.join(pop, on=list(qis), how="left")
    missing = joined.filter(pl.col("F").is_null() | (pl.col("F") < pl.col("f")))
    if missing.height:
        raise KAnonymityError(
            f"the population table has fewer people than the release in class "
            f"{missing.drop('f', 'F').row(0, named=True)}; the population must contain every "
            "released person, generalised with the same levels"
        )
    return joined


def journalist_risk(
    df: pl.DataFrame, qis: Sequence[str], population: pl.DataFrame
) -> dict[str, float]:
    """Highest and average journalist risk against ``population`` (same generalised columns)."""
    if df.height == 0:
        return {"highest": 0.0, "average": 0.0}
    joined = _population_sizes(df, qis, population)
    risk = 1.0 / joined["F"]
    return {
        "highest": float(risk.max()),  # type: ignore[arg-type]
        "average": float((joined["f"] * risk).sum()) / df.height,
    }


def marketer_risk(
    df: pl.DataFrame, qis: Sequence[str], population: pl.DataFrame | None = None
) -> float:
    """Expected share of records re-identified by an attacker who links every record."""
    if df.height == 0:
        return 0.0
    if population is None:
        return class_sizes(df, qis).height / df.height
    joined = _population_sizes(df, qis, population)
    return float((joined["f"] / joined["F"]).sum()) / df.height


def risk_metrics(df: Any, qis: Sequence[str], population: Any = None) -> dict[str, Any]:
    """Prosecutor, journalist (with a population) and marketer risk of a table (pandas or
    polars)."""
    df = as_polars(df)
    population = None if population is None else as_polars(population)
    out: dict[str, Any] = {
        "prosecutor": prosecutor_risk(df, qis),
        "marketer": marketer_risk(df, qis, population),
    }
    if population is not None:
        out["journalist"] = journalist_risk(df, qis, population)
    return out


def utility_metrics(
    df: Any, qis: Sequence[str], *, suppressed: int = 0, k: int | None = None
) -> dict[str, Any]:
    """Discernibility, average class size (and its ratio to ``k``) and suppressed rows.

    Parameters
    ----------
    df : polars.DataFrame
        The released table (suppressed rows already removed).
    qis : sequence of str
    suppressed : int
        Rows removed by suppression; each is charged the original table size.
    k : int, optional

    Examples
    --------
    >>> import polars as pl
    >>> utility_metrics(pl.DataFrame({"a": ["x", "x", "y", "y"]}), ["a"], suppressed=1)
    {'discernibility': 13, 'average_class_size': 2.0, 'classes': 2, 'suppressed_rows': 1, 'rows': 4}
    """
    df = as_polars(df)
    n_total = df.height + suppressed
    sizes = class_sizes(df, qis)["n"] if df.height else pl.Series("n", [], dtype=pl.Int64)
    out: dict[str, Any] = {
        "discernibility": int((sizes.cast(pl.Int64) ** 2).sum()) + n_total * suppressed,
        "average_class_size": df.height / sizes.len() if sizes.len() else 0.0,
        "classes": sizes.len(),
        "suppressed_rows": suppressed,
        "rows": df.height,
    }
    if k is not None:
        out["normalised_average_class_size"] = out["average_class_size"] / k
    return out
