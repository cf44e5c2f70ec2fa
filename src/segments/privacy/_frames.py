"""Prepared-shaped synthetic frames for release tests, calibration and benchmarks.

Not the project's generator (``segments.synth``): a fast, seeded stand-in with the columns of
``PREPARED_CUSTOMERS`` and ``PREPARED_LINES`` that the release code reads, so tests and
benchmarks do not depend on the generate and prepare stages.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import polars as pl

from segments.schema import CHANNELS, PERSON_TYPES, PRODUCT_CATEGORIES
from segments.workspace import PREPARED_CUSTOMERS, PREPARED_LINES

__all__ = ["write_prepared_frames", "write_survey_frame"]


def _pseudonyms(n: int, seed: np.random.Generator) -> pl.Series:
    """Random 64-hex-digit ids shaped like the HMAC-SHA256 pseudonyms of prepare."""
    raw = seed.bytes(32 * n)
    return pl.Series([raw[i : i + 32].hex() for i in range(0, 32 * n, 32)], dtype=pl.Utf8)


def write_prepared_frames(
    folder: str | os.PathLike[str],
    n_customers: int,
    n_lines: int,
    *,
    seed: np.random.Generator,
    start: dt.date = dt.date(2025, 1, 1),
    months: int = 14,
) -> dict[str, Path]:
    """Write ``customers.parquet`` and ``lines.parquet`` with prepared columns.

    Parameters
    ----------
    folder : path
    n_customers, n_lines : int
    seed : numpy.random.Generator
    start : date
        First order date; orders spread uniformly over ``months`` months (≈30.4 days each).
    months : int

    Returns
    -------
    dict
        ``{"customers": path, "lines": path}``.
    """
    from segments.geography import counties_pl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    county = counties_pl()
    weights = county["population"].to_numpy().astype(float)
    ids = _pseudonyms(n_customers, seed)
    customers = pl.DataFrame(
        {
            "person_id": ids,
            "customer_type": seed.choice(PERSON_TYPES, n_customers, p=[0.6, 0.3, 0.1]),
            "county_code": seed.choice(
                county["county_code"].to_numpy(), n_customers, p=weights / weights.sum()
            ),
        }
    )
    # Each customer prefers one category, so segments differ in size.
    favourite = seed.integers(0, len(PRODUCT_CATEGORIES), n_customers)
    activity = seed.gamma(1.0, 1.0, n_customers)
    who = seed.choice(n_customers, n_lines, p=activity / activity.sum())
    category = np.where(
        seed.random(n_lines) < 0.6,
        favourite[who],
        seed.integers(0, len(PRODUCT_CATEGORIES), n_lines),
    )
    days = int(months * 30.4)
    quantity = seed.integers(1, 6, n_lines).astype(np.int32)
    price = np.round(seed.lognormal(4.5, 0.8, n_lines), 2)
    lines = pl.DataFrame(
        {
            "person_id": ids.gather(who),
            "order_id": ids.gather(seed.integers(0, n_customers, n_lines)),
            "order_date": pl.Series(
                np.datetime64(start) + seed.integers(0, days, n_lines).astype("timedelta64[D]")
            ).cast(pl.Date),
            "channel": seed.choice(CHANNELS, n_lines),
            "product_id": seed.integers(1, 500, n_lines).astype(np.int32),
            "category": np.asarray(PRODUCT_CATEGORIES)[category],
            "quantity": quantity,
            "amount_sek": quantity * price,
        }
    )
    paths = {"customers": folder / PREPARED_CUSTOMERS, "lines": folder / PREPARED_LINES}
    customers.write_parquet(paths["customers"])
    lines.write_parquet(paths["lines"])
    return paths


def write_survey_frame(
    path: str | os.PathLike[str],
    n_responses: int,
    *,
    seed: np.random.Generator,
    month: dt.date = dt.date(2026, 1, 1),
) -> Path:
    """Write anonymous survey responses (``survey_month``, ``county_code``,
    ``customer_type``, ``score``) — no customer id (AC-2)."""
    from segments.geography import counties_pl
    from segments.schema import CUSTOMER_TYPES

    codes = counties_pl()["county_code"].to_numpy()
    frame = pl.DataFrame(
        {
            "survey_month": [month] * n_responses,
            "county_code": seed.choice(codes, n_responses),
            "customer_type": seed.choice(CUSTOMER_TYPES, n_responses),
            "score": seed.integers(0, 11, n_responses).astype(np.int8),
        }
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(Path(path))
    return Path(path)
