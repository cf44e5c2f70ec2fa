"""The ``orders`` and ``order_lines`` tables, fully vectorised.

Each account orders as a Poisson process between its start (signup, or the window start) and
its end (churn, or ``as_of``), with a rate from its archetype times a Gamma factor (a heavy
tail of very active accounts). Dates follow a day-weight curve per archetype — seasonality
(August back-to-office peak, July holidays, a late-December dip) times a weekday pattern —
drawn by inverting the cumulative weights, so no order falls outside the active period.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from segments.schema import CHANNELS, ORDER_LINES, ORDERS, PRODUCT_CATEGORIES
from segments.synth.archetypes import ARCHETYPES
from segments.synth.products import QUANTITY_MEAN

__all__ = ["MONTH_FACTOR", "day_weights", "generate_orders"]

#: Seasonality shared by all archetypes (Jan..Dec); July and August are set per archetype.
MONTH_FACTOR = (1.05, 1.0, 1.08, 0.97, 1.0, 0.9, 1.0, 1.0, 1.12, 1.08, 1.05, 0.85)
_DAYS_PER_MONTH = 365.25 / 12
_PRICE_GROWTH = 0.03  # list prices rise about 3 % a year; the catalogue holds as_of prices


def day_weights(window_start: dt.date, as_of: dt.date) -> np.ndarray:
    """Relative order intensity per archetype and day, shape (n_archetypes, n_days).

    Weights average about 1 over a year of weekdays and weekends, so an account's expected
    number of orders is ``rate * sum(weights over its active days) / 30.44``.
    """
    days = np.arange(np.datetime64(window_start, "D"), np.datetime64(as_of, "D") + 1)
    month = days.astype("datetime64[M]").astype(np.int64) % 12
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; 0 is Monday
    day_of_month = (days - days.astype("datetime64[M]")).astype(np.int64) + 1
    late_december = ((month == 11) & (day_of_month >= 22)) | ((month == 0) & (day_of_month == 1))
    out = np.empty((len(ARCHETYPES), len(days)))
    for i, a in enumerate(ARCHETYPES):
        season = np.array(MONTH_FACTOR)
        season[6], season[7] = a.july_factor, a.august_boost
        week = np.where(weekday >= 5, a.weekend_factor, 1.0)
        w = season[month] * week * np.where(late_december, 0.3, 1.0)
        norm = np.mean(season) * (5 + 2 * a.weekend_factor) / 7
        out[i] = w / norm
    return out


def _urn(mix: np.ndarray, slots: int) -> np.ndarray:
    """Per row of a (n, k) probability matrix, an urn of ``slots`` outcome codes whose counts
    follow the row's probabilities (largest-remainder rounding), shape (n, slots).

    Drawing a uniform slot from a row's urn samples that row's (rounded) distribution with a
    single gather per draw, which is much cheaper than a per-draw search.
    """
    bounds = np.rint(np.cumsum(mix, axis=1) * slots).astype(np.int64)
    bounds[:, -1] = slots
    counts = np.diff(bounds, axis=1, prepend=0)
    codes = np.tile(np.arange(mix.shape[1], dtype=np.int8), len(mix))
    return np.repeat(codes, counts.ravel()).reshape(len(mix), slots)


def _draw_from_urns(
    urns: np.ndarray,
    owner: np.ndarray,
    rng: np.random.Generator,
    repeats: np.ndarray | None = None,
) -> np.ndarray:
    """One draw from the urn of each ``owner`` (each repeated ``repeats`` times, if given)."""
    slots = urns.shape[1]
    pick = owner * slots if repeats is None else np.repeat(owner * slots, repeats)
    pick += rng.integers(0, slots, len(pick), dtype=np.int64)
    return urns.ravel()[pick]


def _search_sorted(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Exactly ``np.searchsorted(values, keys)`` (side left) for non-negative keys, with a
    guide table: the answer for the key's bucket start, then a short vectorised forward scan.

    On millions of random keys this avoids a branchy binary search per key. Buckets have a
    power-of-two width, so ``floor(key * per_unit) / per_unit <= key`` holds exactly and the
    scan only ever moves forward.
    """
    top = max(float(values[-1]), float(keys.max(initial=0.0)), 1e-300)
    per_unit = 2.0 ** np.round(np.log2(4 * len(values) / top))
    n_buckets = int(np.floor(top * per_unit)) + 1
    guide = np.searchsorted(values, np.arange(n_buckets + 1) / per_unit)
    found = guide[(keys * per_unit).astype(np.int64)]
    padded = np.append(values, np.inf)
    todo = np.flatnonzero(padded[found] < keys)
    while todo.size:
        found[todo] += 1
        todo = todo[padded[found[todo]] < keys[todo]]
    return found


def _poisson_table(means: np.ndarray, slots: int = 1024, k_max: int = 200) -> np.ndarray:
    """Poisson quantiles at ``slots`` evenly spaced levels for each mean: shape (m, slots)."""
    k = np.arange(k_max)
    log_pmf = (
        k[None, :] * np.log(means[:, None])
        - means[:, None]
        - np.cumsum(np.log(np.maximum(k, 1)))[None, :]
    )
    cdf = np.cumsum(np.exp(log_pmf), axis=1)
    levels = (np.arange(slots) + 0.5) / slots
    return np.array([np.searchsorted(row, levels) for row in cdf], dtype=np.int32)


def generate_orders(
    hidden: pl.DataFrame,
    products: pl.DataFrame,
    *,
    window_start: dt.date,
    as_of: dt.date,
    rng: np.random.Generator,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Draw orders and their lines for the accounts in ``hidden``.

    Parameters
    ----------
    hidden : polars.DataFrame
        Per account: ``customer_id``, ``arch``, ``is_business``, ``start_day``, ``end_day``
        (days since ``window_start``), ``rate``, ``discount``, ``basket_factor``.
    products : polars.DataFrame
        The catalogue (``products`` schema).
    window_start, as_of : date
    rng : numpy.random.Generator

    Returns
    -------
    orders, order_lines : polars.DataFrame
        Orders sorted by date with ``order_id`` from 1; lines in order-id order.
    """
    arch = hidden["arch"].to_numpy().astype(np.int64)
    start = hidden["start_day"].to_numpy()
    end = hidden["end_day"].to_numpy()
    n_customers = hidden.height
    weights = day_weights(window_start, as_of)
    n_days = weights.shape[1]

    # Cumulative weights, archetypes stacked end to end so one searchsorted serves all.
    cum = np.cumsum(weights, axis=1)
    span = cum[:, -1].max() + 1.0
    stacked = (cum + span * np.arange(len(ARCHETYPES))[:, None]).ravel()
    cum0 = np.concatenate([np.zeros((len(ARCHETYPES), 1)), cum], axis=1)
    low = cum0[arch, start]
    active_weight = cum0[arch, end + 1] - low
    expected = hidden["rate"].to_numpy() * active_weight / _DAYS_PER_MONTH
    n_orders = rng.poisson(expected)
    owner = np.repeat(np.arange(n_customers), n_orders)

    u = low[owner] + rng.random(len(owner)) * active_weight[owner] + span * arch[owner]
    flat = _search_sorted(stacked, u)
    day = np.clip(flat - arch[owner] * n_days, start[owner], end[owner])

    # Channel from each account's own channel mix (Dirichlet around the archetype's).
    channel_mean = np.array([a.channel_mean for a in ARCHETYPES])
    channel_mix = rng.gamma(20.0 * channel_mean[arch])
    channel_mix /= channel_mix.sum(axis=1, keepdims=True)
    channel = _draw_from_urns(_urn(channel_mix, 64), owner, rng)

    # Order ids follow the calendar, as in a real order system. ``owner`` is ascending, so a
    # stable sort by day alone orders by (day, owner); on int16 days numpy uses a radix sort.
    order_sort = np.argsort(day.astype(np.int16), kind="stable")
    owner, day, channel = owner[order_sort], day[order_sort], channel[order_sort]
    n_total = len(owner)
    customer_id = hidden["customer_id"].to_numpy()
    epoch = np.datetime64(window_start, "D")
    orders = pl.DataFrame(
        {
            "order_id": np.arange(1, n_total + 1, dtype=np.int64),
            "customer_id": customer_id[owner],
            "order_date": epoch + day.astype("timedelta64[D]"),
            "channel": pl.Series(channel.astype(np.uint32))
            .cast(pl.Enum(list(CHANNELS)))
            .cast(pl.Utf8),
        }
    ).select(pl.col(c.name).cast(c.dtype) for c in ORDERS.columns)

    # --- lines -------------------------------------------------------------------------------
    lines_mean = np.array([a.lines_per_order for a in ARCHETYPES])
    basket = lines_mean[arch] * hidden["basket_factor"].to_numpy()
    n_lines = 1 + rng.poisson(np.maximum(basket[owner] - 1.0, 0.0))
    line_order = np.repeat(np.arange(1, n_total + 1), n_lines)  # order ids
    # line numbers restart at 1 in every order: a cumulative sum of ones with resets
    step = np.ones(len(line_order), dtype=np.int16)  # baskets stay far below 32,767 lines
    step[np.cumsum(n_lines)[:-1]] = 1 - n_lines[:-1]
    line_no = np.cumsum(step, dtype=np.int16)

    # Category from each account's own mix (Dirichlet around the archetype mean).
    cat_mean = np.array([a.category_mean for a in ARCHETYPES])
    conc = np.array([a.concentration for a in ARCHETYPES])
    mix = rng.gamma(conc[arch, None] * cat_mean[arch])
    mix /= mix.sum(axis=1, keepdims=True)
    category = _draw_from_urns(_urn(mix, 128), owner, rng, repeats=n_lines)

    # Product within category: Zipf-like popularity, one searchsorted over all categories.
    product_category = products["category"].to_numpy()
    code = np.array([PRODUCT_CATEGORIES.index(c) for c in product_category])
    popularity = 1.0 / (1.0 + rng.permutation(products.height)) ** 0.6
    within = np.zeros(products.height)
    for c in range(len(PRODUCT_CATEGORIES)):
        sel = code == c
        within[sel] = np.cumsum(popularity[sel]) / popularity[sel].sum()
    product_cum = code + within  # increasing: products are grouped by category
    order_of_products = np.lexsort((np.arange(products.height), code))
    product_cum = product_cum[order_of_products]
    v = category + rng.random(len(line_order))
    product_idx = order_of_products[np.minimum(_search_sorted(product_cum, v), products.height - 1)]

    qty_cat = np.array([QUANTITY_MEAN[c] for c in PRODUCT_CATEGORIES])
    qty_factor = np.array([a.quantity_factor for a in ARCHETYPES])
    # Units: 1 + Poisson(category mean x archetype factor), from a quantile table per pair.
    pair_means = (qty_cat[None, :] * qty_factor[:, None]).ravel()
    table = _poisson_table(pair_means)
    # flat index into the table: (archetype x category pair) x slots + a uniform slot
    pick = np.repeat(arch[owner] * len(PRODUCT_CATEGORIES), n_lines)
    pick += category
    pick *= table.shape[1]
    pick += rng.integers(0, table.shape[1], len(pick))
    quantity = table.ravel()[pick]
    quantity += 1
    del pick

    # Price paid: list price x the customer's discount x the price level of the order day.
    price_level = 1.0 / (1 + _PRICE_GROWTH) ** ((n_days - 1 - np.arange(n_days)) / 365.25)
    order_factor = (1.0 - hidden["discount"].to_numpy()[owner]) * price_level[day]
    list_price = products["unit_price_sek"].to_numpy()[product_idx]
    # in place: rint(list_price x factor x 100) / 100, at least 0.01, without temporaries
    unit_price = np.repeat(order_factor, n_lines)
    np.multiply(list_price, unit_price, out=unit_price)
    unit_price *= 100.0
    np.rint(unit_price, out=unit_price)
    unit_price /= 100.0
    np.maximum(unit_price, 0.01, out=unit_price)
    del list_price

    order_lines = pl.DataFrame(
        {
            "order_id": line_order,
            "line_no": line_no,
            "product_id": products["product_id"].to_numpy()[product_idx],
            "quantity": quantity,
            "unit_price_sek": unit_price,
        }
    ).select(pl.col(c.name).cast(c.dtype) for c in ORDER_LINES.columns)
    return orders, order_lines
