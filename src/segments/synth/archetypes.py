"""The planted truth: six latent customer archetypes and the parameters they drive.

Each archetype differs in several dimensions at once — category mix, order frequency,
basket size, quantities, channel mix, customer type, size band, industry and seasonality —
so a segmentation on purchase features can recover it, while a customer's own category mix
is drawn from a Dirichlet around the archetype mean, so archetypes overlap (at least 10 % of
customers buy a mix closer to another archetype's mean than to their own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from segments._tables import as_polars
from segments.schema import INDUSTRIES, PRODUCT_CATEGORIES, SIZE_BANDS

__all__ = ["ARCHETYPES", "Archetype", "archetype_names", "category_mix_overlap"]


@dataclass(frozen=True)
class Archetype:
    """Parameters of one latent archetype (all public constants of the generator).

    Attributes
    ----------
    name : str
    share : float
        Share of accounts.
    business_share : float
        Probability that an account is a business account.
    sole_trader_share : float
        Probability that a business account is a sole trader's.
    size_band : dict
        Employee size band -> probability (business accounts).
    industry : dict
        SNI section -> probability (business accounts).
    public_sector_share : float
        Share of (non sole-trader) business accounts that are public bodies.
    category_mean : tuple of float
        Mean share of order lines per category, in ``PRODUCT_CATEGORIES`` order.
    concentration : float
        Dirichlet concentration of a customer's mix around ``category_mean`` (lower: more
        overlap between archetypes).
    orders_per_month : float
        Mean order rate; a customer's rate is this times a Gamma(activity_shape) factor.
    activity_shape : float
        Gamma shape of the rate multiplier (smaller: heavier tail).
    lines_per_order : float
        Mean number of lines per order (at least 1).
    quantity_factor : float
        Multiplies the per-category mean quantity.
    channel_mean : tuple of float
        Mean share of orders per channel (web, store, phone).
    weekend_factor : float
        Order intensity on Saturdays and Sundays relative to weekdays.
    august_boost, july_factor : float
        Seasonal multipliers of August (back to office / school) and July (holidays).
    discount : tuple of float
        Range of a customer's contract discount on list prices.
    score_mean : float
        Mean survey score (0-10).
    """

    name: str
    share: float
    business_share: float
    sole_trader_share: float
    size_band: dict[str, float]
    industry: dict[str, float]
    public_sector_share: float
    category_mean: tuple[float, ...]
    concentration: float
    orders_per_month: float
    activity_shape: float
    lines_per_order: float
    quantity_factor: float
    channel_mean: tuple[float, float, float]
    weekend_factor: float
    august_boost: float
    july_factor: float
    discount: tuple[float, float]
    score_mean: float


#           paper toner writ  filing desk  coffee clean furn  it    pack
ARCHETYPES: tuple[Archetype, ...] = (
    Archetype(
        "bulk_office_buyer",
        0.10,
        1.0,
        0.0,
        {"50-249": 0.1, "250+": 0.9},
        {"K": 0.25, "M": 0.3, "J": 0.2, "L": 0.1, "N": 0.15},
        0.0,
        (0.27, 0.22, 0.10, 0.14, 0.06, 0.06, 0.04, 0.03, 0.05, 0.03),
        60.0,
        1.6,
        3.0,
        7.0,
        2.5,
        (0.70, 0.03, 0.27),
        0.03,
        1.35,
        0.55,
        (0.10, 0.20),
        7.6,
    ),
    Archetype(
        "small_business",
        0.33,
        1.0,
        0.15,
        {"1-9": 0.9, "10-49": 0.1},
        {"G": 0.3, "F": 0.2, "M": 0.15, "I": 0.1, "S": 0.1, "N": 0.1, "C": 0.05},
        0.0,
        (0.17, 0.13, 0.12, 0.08, 0.08, 0.08, 0.06, 0.04, 0.08, 0.16),
        50.0,
        0.45,
        2.0,
        3.5,
        1.2,
        (0.50, 0.38, 0.12),
        0.08,
        1.25,
        0.6,
        (0.0, 0.06),
        7.4,
    ),
    Archetype(
        "home_office",
        0.14,
        1.0,
        1.0,
        {"0": 0.9, "1-9": 0.1},
        {"M": 0.45, "J": 0.35, "S": 0.1, "R": 0.1},
        0.0,
        (0.11, 0.12, 0.07, 0.04, 0.15, 0.03, 0.02, 0.16, 0.25, 0.05),
        40.0,
        0.3,
        2.0,
        2.2,
        1.0,
        (0.90, 0.08, 0.02),
        0.6,
        1.2,
        0.7,
        (0.0, 0.0),
        8.0,
    ),
    Archetype(
        "school_public_sector",
        0.08,
        1.0,
        0.0,
        {"10-49": 0.1, "50-249": 0.9},
        {"P": 0.6, "O": 0.25, "Q": 0.15},
        0.85,
        (0.20, 0.04, 0.32, 0.12, 0.08, 0.02, 0.15, 0.04, 0.02, 0.01),
        60.0,
        0.8,
        2.5,
        8.0,
        2.2,
        (0.22, 0.03, 0.75),
        0.02,
        2.2,
        0.2,
        (0.12, 0.18),
        7.0,
    ),
    Archetype(
        "pantry_heavy_workplace",
        0.13,
        1.0,
        0.0,
        {"10-49": 0.9, "50-249": 0.1},
        {"C": 0.3, "F": 0.2, "H": 0.2, "Q": 0.15, "N": 0.15},
        0.0,
        (0.06, 0.04, 0.04, 0.03, 0.03, 0.40, 0.30, 0.02, 0.02, 0.06),
        50.0,
        1.0,
        2.5,
        5.0,
        1.8,
        (0.80, 0.05, 0.15),
        0.1,
        1.2,
        0.6,
        (0.05, 0.10),
        7.7,
    ),
    Archetype(
        "occasional_private_buyer",
        0.22,
        0.0,
        0.0,
        {},
        {},
        0.0,
        (0.17, 0.14, 0.23, 0.06, 0.12, 0.04, 0.02, 0.04, 0.10, 0.08),
        40.0,
        0.2,
        2.0,
        1.6,
        0.8,
        (0.25, 0.72, 0.03),
        1.2,
        1.1,
        0.85,
        (0.0, 0.0),
        8.2,
    ),
)

_total = sum(a.share for a in ARCHETYPES)
assert abs(_total - 1.0) < 1e-9, _total
for _a in ARCHETYPES:
    assert len(_a.category_mean) == len(PRODUCT_CATEGORIES), _a.name
    assert abs(sum(_a.category_mean) - 1.0) < 1e-9, _a.name
    assert set(_a.size_band) <= set(SIZE_BANDS) and set(_a.industry) <= set(INDUSTRIES)


def archetype_names() -> tuple[str, ...]:
    """Archetype names in their fixed order (the index used inside the generator)."""
    return tuple(a.name for a in ARCHETYPES)


def category_mix_overlap(
    order_lines: Any,
    orders: Any,
    products: Any,
    truth: Any,
    *,
    min_lines: int = 10,
) -> float:
    """Share of customers whose observed category mix is closer to another archetype's mean.

    The mix is each customer's share of order lines per category (customers with at least
    ``min_lines`` lines); distance is Euclidean to each archetype's ``category_mean``.

    Returns
    -------
    float
        Fraction in [0, 1] of those customers whose nearest mean is not their own archetype's.
    """
    # the tables as load_raw returns them (pandas) or as polars
    order_lines, orders, products, truth = map(as_polars, (order_lines, orders, products, truth))
    counts = (
        order_lines.select("order_id", "product_id")
        .join(orders.select("order_id", "customer_id"), on="order_id")
        .join(products.select("product_id", "category"), on="product_id")
        .group_by("customer_id", "category")
        .len()
        .pivot("category", index="customer_id", values="len")
        .fill_null(0)
    )
    for cat in PRODUCT_CATEGORIES:
        if cat not in counts.columns:
            counts = counts.with_columns(pl.lit(0, pl.UInt32).alias(cat))
    counts = counts.join(truth, on="customer_id")
    mix = counts.select(PRODUCT_CATEGORIES).to_numpy().astype(float)
    total = mix.sum(axis=1)
    keep = total >= min_lines
    mix = mix[keep] / total[keep, None]
    means = np.array([a.category_mean for a in ARCHETYPES])
    nearest = np.argmin(((mix[:, None, :] - means[None]) ** 2).sum(axis=2), axis=1)
    own = counts["archetype"].to_numpy()[keep]
    names = np.array(archetype_names())
    return float(np.mean(names[nearest] != own))
