"""The ``orders`` and ``order_lines`` tables, fully vectorised.

Each account orders as a Poisson process between its start (signup, or the window start) and
its end (churn, or ``as_of``), with a rate from its archetype times a Gamma factor (a heavy
tail of very active accounts). Dates follow a day-weight curve per archetype — seasonality
(August back-to-office peak, July holidays, a late-December dip) times a weekday pattern —
drawn by inverting the cumulative weights, so no order falls outside the active period.

Lines are drawn per fixed block of orders (in order-id order), each block with its own child
seed, on worker threads; per-account category urns and per-category product and quantity
tables turn one 31-bit random draw into a line. Blocks never depend on the number of workers,
so the tables are identical for any number of them.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from segments.schema import CHANNELS, ORDER_LINES, ORDERS, PRODUCT_CATEGORIES
from segments.synth.archetypes import ARCHETYPES
from segments.synth.products import QUANTITY_MEAN

__all__ = ["MONTH_FACTOR", "ORDERS_PER_CHUNK", "OrderDraw", "day_weights", "generate_orders"]

#: Orders per block of lines drawn with one child seed (fixed: the output never depends on
#: the number of workers).
ORDERS_PER_CHUNK = 1 << 17
_CATEGORY_SLOTS = 128  # per-account category urn (resolution 1/128)
_PRODUCT_SLOTS = 4096  # per-category product urn
_QUANTITY_SLOTS = 1024  # Poisson quantiles per (archetype, category)
_URN_ACCOUNTS_PER_STEP = 1 << 18  # accounts whose category urns are built at once

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


def _urn(mix: np.ndarray, slots: int, codes: np.ndarray | None = None) -> np.ndarray:
    """Per column of a (k, n) probability matrix, an urn of ``slots`` outcome codes whose
    counts follow the column's probabilities (largest-remainder rounding), shape (n, slots).

    Drawing a uniform slot from a row's urn samples that row's (rounded) distribution with a
    single gather per draw, which is much cheaper than a per-draw search. ``codes`` (k, n)
    are the values stored for each outcome (default: the outcome index). Accounts run along
    the second axis so that the cumulative sums vectorise over accounts.
    """
    k, n = mix.shape
    bounds = np.rint(np.cumsum(mix, axis=0) * slots).astype(np.int32)
    bounds[-1] = slots
    counts = np.diff(bounds, axis=0, prepend=0)
    if codes is None:
        code_type = np.int8 if k <= 127 else np.int16
        codes = np.broadcast_to(np.arange(k, dtype=code_type)[:, None], (k, n))
    return np.repeat(codes.T.ravel(), counts.T.ravel()).reshape(n, slots)


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


class OrderDraw(NamedTuple):
    """The ``orders`` and ``order_lines`` tables, and each account's last order day."""

    #: None when the orders were handed to an ``order_sink`` month by month
    orders: pl.DataFrame | None
    #: None when the lines were handed to a ``line_sink`` block by block
    order_lines: pl.DataFrame | None
    #: per row of ``hidden``: day of the last order (days since the window start), -1 if none
    last_order_day: np.ndarray


@dataclass(frozen=True)
class _AccountTables:
    """Read-only per-account urns and lookup tables shared by the line chunks."""

    extra_lines: np.ndarray  # per account: Poisson mean of lines beyond the first
    #: flat (n_accounts x _CATEGORY_SLOTS): (archetype, category) pair codes of each account
    pair_urns: np.ndarray
    product_by_pair: np.ndarray  # flat (pairs x _PRODUCT_SLOTS): product rows
    quantity_by_pair: np.ndarray  # flat (pairs x _QUANTITY_SLOTS): units - 1
    product_id: np.ndarray
    list_price: np.ndarray


@dataclass(frozen=True)
class _LineTables:
    """Per-order facts (in order-id order) plus the account tables."""

    owner: np.ndarray  # row of the ordering account
    order_factor: np.ndarray  # discount x price level of the order day
    accounts: _AccountTables
    first: int = 0  # position (in order-id order) of the first order held


def _account_tables(
    hidden: pl.DataFrame, products: pl.DataFrame, rng: np.random.Generator
) -> _AccountTables:
    """Basket sizes, category urns (each account's own mix, Dirichlet around its archetype's
    mean), product urns and quantity quantiles: everything lines need that orders do not."""
    arch = hidden["arch"].to_numpy().astype(np.int64)
    lines_mean = np.array([a.lines_per_order for a in ARCHETYPES])
    basket = lines_mean[arch] * hidden["basket_factor"].to_numpy()
    cat_mean = np.array([a.category_mean for a in ARCHETYPES])
    conc = np.array([a.concentration for a in ARCHETYPES])
    n_categories = len(PRODUCT_CATEGORIES)
    # (category, account); single precision halves the cost and is ample for 1/128 slots
    mix = rng.standard_gamma((conc[arch] * cat_mean[arch].T).astype(np.float32), dtype=np.float32)
    mix /= mix.sum(axis=0)
    pair_type = np.int8 if len(ARCHETYPES) * n_categories <= 127 else np.int16
    # the urns a run of accounts at a time (each account's urn is its own column's): their
    # intermediates stay bounded beside the (accounts x slots) result
    pair_urns = np.empty(len(arch) * _CATEGORY_SLOTS, dtype=pair_type)
    for first in range(0, len(arch), _URN_ACCOUNTS_PER_STEP):
        stop = min(first + _URN_ACCOUNTS_PER_STEP, len(arch))
        codes = arch[first:stop] * n_categories + np.arange(n_categories)[:, None]
        urns = _urn(mix[:, first:stop], _CATEGORY_SLOTS, codes.astype(pair_type))
        pair_urns[first * _CATEGORY_SLOTS : stop * _CATEGORY_SLOTS] = urns.ravel()
    del mix
    qty_cat = np.array([QUANTITY_MEAN[c] for c in PRODUCT_CATEGORIES])
    qty_factor = np.array([a.quantity_factor for a in ARCHETYPES])
    # Units: 1 + Poisson(category mean x archetype factor), from a quantile table per pair.
    pair_means = (qty_cat[None, :] * qty_factor[:, None]).ravel()
    product_urns = _product_urns(products, rng)
    return _AccountTables(
        extra_lines=np.maximum(basket - 1.0, 0.0),
        pair_urns=pair_urns,
        product_by_pair=np.tile(product_urns, (len(ARCHETYPES), 1)).ravel(),
        quantity_by_pair=_poisson_table(pair_means, _QUANTITY_SLOTS).ravel(),
        product_id=products["product_id"].to_numpy().astype(np.int32),
        list_price=products["unit_price_sek"].to_numpy().astype(np.float64),
    )


def _lines_chunk(
    first: int, stop: int, seed: np.random.SeedSequence, t: _LineTables
) -> pl.DataFrame:
    """The lines of orders ``first..stop-1`` (0-based positions in order-id order).

    Every line takes one 31-bit draw: 7 bits pick a slot of the account's category urn
    (which holds archetype-and-category pair codes), 10 bits a quantity quantile and 12 bits
    a slot of the category's product urn.
    """
    a = t.accounts
    rng = np.random.default_rng(seed)
    owner = t.owner[first - t.first : stop - t.first]
    n_lines = rng.poisson(a.extra_lines[owner]) + 1
    order_id = np.repeat(np.arange(first + 1, stop + 1, dtype=np.int64), n_lines)
    # line numbers restart at 1 in every order: a cumulative sum of ones with resets
    step = np.ones(len(order_id), dtype=np.int16)  # baskets stay far below 32,767 lines
    step[np.cumsum(n_lines)[:-1]] = 1 - n_lines[:-1]
    line_no = np.cumsum(step, dtype=np.int16)
    del step
    bits = rng.integers(0, 1 << 31, len(order_id), dtype=np.int32)
    # int32 offsets while every urn slot fits (up to 16 million accounts)
    index_type = np.int32 if len(a.pair_urns) < 2**31 else np.int64
    pick = np.repeat(owner.astype(index_type), n_lines)
    pick *= _CATEGORY_SLOTS
    slot = bits & (_CATEGORY_SLOTS - 1)
    pick += slot
    pair = a.pair_urns[pick].astype(np.int32)
    del pick
    # the same buffers for both lookups (in place: these arrays have a line each)
    np.right_shift(bits, 7, out=slot)
    slot &= _QUANTITY_SLOTS - 1
    offset = pair * _QUANTITY_SLOTS
    offset += slot
    quantity = a.quantity_by_pair[offset]
    quantity += 1
    np.right_shift(bits, 17, out=slot)
    slot &= _PRODUCT_SLOTS - 1
    np.multiply(pair, _PRODUCT_SLOTS, out=offset)
    offset += slot
    product = a.product_by_pair[offset]
    del slot, offset, bits, pair
    # price paid: list price x the order's factor, to the öre, at least 0.01 (in place)
    unit_price = np.repeat(t.order_factor[first - t.first : stop - t.first], n_lines)
    unit_price *= a.list_price[product]
    unit_price *= 100.0
    np.rint(unit_price, out=unit_price)
    unit_price /= 100.0
    np.maximum(unit_price, 0.01, out=unit_price)
    return pl.DataFrame(
        {
            "order_id": order_id,
            "line_no": line_no,
            "product_id": a.product_id[product],
            "quantity": quantity,
            "unit_price_sek": unit_price,
        }
    )


def _product_urns(products: pl.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Per category, an urn of ``_PRODUCT_SLOTS`` product rows with Zipf-like popularity."""
    code = np.array([PRODUCT_CATEGORIES.index(c) for c in products["category"].to_list()])
    popularity = 1.0 / (1.0 + rng.permutation(products.height)) ** 0.6
    urns = np.zeros((len(PRODUCT_CATEGORIES), _PRODUCT_SLOTS), dtype=np.int16)
    for c in range(len(PRODUCT_CATEGORIES)):
        rows = np.flatnonzero(code == c)
        if not len(rows):
            raise ValueError(
                f"table 'products', column 'category': no product in {PRODUCT_CATEGORIES[c]!r}; "
                "fix: the catalogue must cover every category"
            )
        slots = _urn((popularity[rows] / popularity[rows].sum())[:, None], _PRODUCT_SLOTS)[0]
        urns[c] = rows[slots]
    return urns


#: Orders drawn per step of the first pass (a run of whole accounts; an account with more
#: orders than this is a step of its own): bounds the memory of drawing order days.
ORDERS_PER_STEP = 1 << 22
#: Spilled per order between the passes: account row, day and channel (7 bytes).
_SPILL = np.dtype([("owner", "<i4"), ("day", "<i2"), ("channel", "i1")])


class _MonthBuckets:
    """Each month's (owner, day, channel) records, appended in account order: in memory, or
    in one file per month under ``folder`` (the orders of the whole window then never sit in
    memory at once)."""

    def __init__(self, n_months: int, folder: Path | None):
        self.folder = folder
        self.parts: list[list[np.ndarray]] = [[] for _ in range(n_months)]
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def _path(self, month: int) -> Path:
        assert self.folder is not None
        return self.folder / f"month-{month:04d}.bin"

    def add(self, month: int, records: np.ndarray) -> None:
        if not len(records):
            return
        if self.folder is None:
            self.parts[month].append(records)
        else:
            with self._path(month).open("ab") as f:
                records.tofile(f)

    def take(self, month: int) -> np.ndarray:
        """The month's records (then forgotten), in the order they were added."""
        if self.folder is None:
            parts, self.parts[month] = self.parts[month], []
            return np.concatenate(parts) if parts else np.empty(0, dtype=_SPILL)
        path = self._path(month)
        if not path.exists():
            return np.empty(0, dtype=_SPILL)
        records = np.fromfile(path, dtype=_SPILL)
        path.unlink()
        return records


def _skip_doubles(rng: np.random.Generator, n: int) -> np.random.Generator:
    """A new generator whose stream continues where ``rng``'s would after ``n`` calls of
    ``random()``'s kind (one 64-bit output each); ``rng`` itself is not moved.

    PCG64 jumps there in O(log n) (its half-used 32-bit buffer kept); other bit generators
    draw and drop the doubles in bounded steps.
    """
    bits = rng.bit_generator
    twin = type(bits)()
    state = bits.state
    twin.state = state
    if isinstance(twin, np.random.PCG64 | np.random.PCG64DXSM):
        twin.advance(n)
        jumped = twin.state
        jumped["has_uint32"], jumped["uinteger"] = state["has_uint32"], state["uinteger"]
        twin.state = jumped
        return np.random.Generator(twin)
    out = np.random.Generator(twin)
    for done in range(0, n, ORDERS_PER_STEP):
        out.random(min(ORDERS_PER_STEP, n - done))
    return out


def generate_orders(
    hidden: pl.DataFrame,
    products: pl.DataFrame,
    *,
    window_start: dt.date,
    as_of: dt.date,
    rng: np.random.Generator,
    workers: int = 2,
    line_sink: Callable[[int, pl.DataFrame, int, np.ndarray], None] | None = None,
    order_sink: Callable[[pl.DataFrame], None] | None = None,
    spill: Path | None = None,
) -> OrderDraw:
    """Draw orders and their lines for the accounts in ``hidden``, one month at a time.

    Two passes keep memory flat in the number of orders (per-account state is
    O(accounts)). The first draws each account's number of orders over its active period,
    then, a run of accounts at a time (:data:`ORDERS_PER_STEP` orders), their days and
    channels, and files them by month (in memory, or in ``spill``). The second takes the
    months in calendar order: sorts a month's orders by (day, account), numbers them on
    from the previous month, hands them to ``order_sink`` and draws their lines. The random
    streams are those of one whole-window draw (the doubles of the order days are drawn in
    steps of the same stream; the channel stream starts where that one ends), so the tables
    do not depend on the step sizes.

    Lines are drawn in fixed blocks of :data:`ORDERS_PER_CHUNK` orders (in order-id order,
    a block may span months), each with its own child seed, on ``workers`` threads (numpy
    releases the GIL in its array loops); blocks never depend on ``workers``, so the tables
    are identical for any number of workers.

    Parameters
    ----------
    hidden : polars.DataFrame
        Per account: ``customer_id``, ``arch``, ``is_business``, ``start_day``, ``end_day``
        (days since ``window_start``), ``rate``, ``discount``, ``basket_factor``.
    products : polars.DataFrame
        The catalogue (``products`` schema).
    window_start, as_of : date
    rng : numpy.random.Generator
    workers : int
        Threads drawing the lines (1 draws them on the calling thread).
    line_sink : callable, optional
        Called as ``line_sink(block, lines, first_order_id, order_month)`` for every block
        of lines, in block order, as soon as it is drawn (``order_month[i]``: the month of
        order ``first_order_id + i``, as months since 1970-01); the lines are then not kept
        (at most ``workers + 1`` blocks are held). Without it the lines are returned.
    order_sink : callable, optional
        Called with each month's orders (the ``orders`` schema, ids continuing from the
        previous month), in calendar order; the orders are then not kept. Without it they
        are returned.
    spill : Path, optional
        A private folder for the first pass's per-month files (7 bytes an order), removed
        by the caller; without it they are held in memory.

    Returns
    -------
    OrderDraw
        Orders sorted by date with ``order_id`` from 1 (None when they went to
        ``order_sink``); lines in order-id order (None when they went to ``line_sink``); the
        last order day of every account.
    """
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"parameter 'workers' must be a positive integer, got {workers!r}")
    # independent streams, so the account tables can be drawn beside the orders
    rng_accounts, rng_lines = rng.spawn(2)
    with ThreadPoolExecutor(max_workers=workers) if workers > 1 else nullcontext() as pool:
        if pool is None:
            account_job: Future[_AccountTables] = Future()
            account_job.set_result(_account_tables(hidden, products, rng_accounts))
        else:
            account_job = pool.submit(_account_tables, hidden, products, rng_accounts)
        plan = _OrderPlan(hidden, window_start, as_of)
        buckets = _MonthBuckets(plan.n_months, spill)
        n_total, last_order_day = plan.draw(rng, buckets)
        n_blocks = max(1, -(-n_total // ORDERS_PER_CHUNK))
        seeds = np.random.SeedSequence(int(rng_lines.integers(2**63))).spawn(n_blocks)
        accounts = account_job.result()

        def draw_chunk(k: int, owner: np.ndarray, factor: np.ndarray) -> pl.DataFrame:
            first = k * ORDERS_PER_CHUNK
            tables = _LineTables(owner, factor, accounts, first)
            chunk = _lines_chunk(first, first + len(owner), seeds[k], tables)
            return chunk.select(pl.col(c.name).cast(c.dtype) for c in ORDER_LINES.columns)

        month_frames: list[pl.DataFrame] = []
        chunks: list[pl.DataFrame] = []
        # at most ``workers + 1`` blocks in memory, handed over in block order
        ahead: deque[tuple[int, np.ndarray, Future[pl.DataFrame]]] = deque()

        def hand_over(k: int, months: np.ndarray, lines: pl.DataFrame) -> None:
            if line_sink is None:
                chunks.append(lines)
            else:
                line_sink(k, lines, k * ORDERS_PER_CHUNK + 1, months)

        def submit(k: int, owner: np.ndarray, factor: np.ndarray, months: np.ndarray) -> None:
            if pool is None:
                hand_over(k, months, draw_chunk(k, owner, factor))
                return
            ahead.append((k, months, pool.submit(draw_chunk, k, owner, factor)))
            if len(ahead) > workers:
                done, done_months, job = ahead.popleft()
                hand_over(done, done_months, job.result())

        block = 0
        pending: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        for orders, owner, factor, months in plan.months(buckets):
            if order_sink is None:
                month_frames.append(orders)
            else:
                order_sink(orders)
            if pending is not None:
                owner, factor, months = (
                    np.concatenate([a, b])
                    for a, b in zip(pending, (owner, factor, months), strict=True)
                )
            while len(owner) >= ORDERS_PER_CHUNK:
                cut = ORDERS_PER_CHUNK
                submit(block, owner[:cut], factor[:cut], months[:cut])
                owner, factor, months = owner[cut:], factor[cut:], months[cut:]
                block += 1
            pending = (owner, factor, months)
        if block < n_blocks:  # the ragged last block (or the one empty block)
            assert pending is not None
            submit(block, *pending)
        for done, done_months, job in ahead:
            hand_over(done, done_months, job.result())
    order_lines = pl.concat(chunks, rechunk=False) if line_sink is None else None
    all_orders = pl.concat(month_frames) if order_sink is None else None
    return OrderDraw(all_orders, order_lines, last_order_day)


class _OrderPlan:
    """The two passes of :func:`generate_orders` over one window and set of accounts."""

    def __init__(self, hidden: pl.DataFrame, window_start: dt.date, as_of: dt.date):
        self.hidden = hidden
        self.arch = hidden["arch"].to_numpy().astype(np.int64)
        self.start = hidden["start_day"].to_numpy()
        self.end = hidden["end_day"].to_numpy()
        self.epoch = np.datetime64(window_start, "D")
        self.weights = day_weights(window_start, as_of)
        self.n_days = self.weights.shape[1]
        days = self.epoch + np.arange(self.n_days).astype("timedelta64[D]")
        month = days.astype("datetime64[M]").astype(np.int64)
        self.month_of_day = (month - month[0]).astype(np.int16)  # month index per day
        self.first_month = int(month[0])  # months since 1970-01
        self.n_months = int(month[-1] - month[0]) + 1
        # Price paid: list price x the customer's discount x the price level of the order day.
        self.price_level = 1.0 / (1 + _PRICE_GROWTH) ** (
            (self.n_days - 1 - np.arange(self.n_days)) / 365.25
        )

    def draw(self, rng: np.random.Generator, buckets: _MonthBuckets) -> tuple[int, np.ndarray]:
        """First pass: the number of orders per account, then their days and channels a run
        of accounts at a time, filed by month. Returns the number of orders and each
        account's last order day (-1: none)."""
        arch, start, end, n_days = self.arch, self.start, self.end, self.n_days
        n_customers = self.hidden.height
        # Cumulative weights, archetypes stacked end to end so one searchsorted serves all.
        cum = np.cumsum(self.weights, axis=1)
        span = cum[:, -1].max() + 1.0
        stacked = (cum + span * np.arange(len(ARCHETYPES))[:, None]).ravel()
        cum0 = np.concatenate([np.zeros((len(ARCHETYPES), 1)), cum], axis=1)
        low = cum0[arch, start]
        active_weight = cum0[arch, end + 1] - low
        expected = self.hidden["rate"].to_numpy() * active_weight / _DAYS_PER_MONTH
        n_orders = rng.poisson(expected)
        n_total = int(n_orders.sum())
        # The channel stream starts after the order days' doubles (as in one whole draw):
        # each account's channel mix (Dirichlet around its archetype's), then one urn draw
        # per order.
        rng_channel = _skip_doubles(rng, n_total)
        channel_mean = np.array([a.channel_mean for a in ARCHETYPES])
        channel_mix = rng_channel.gamma(20.0 * channel_mean[arch].T)  # (channel, account)
        channel_mix /= channel_mix.sum(axis=0)

        last_order_day = np.full(n_customers, -1, dtype=np.int64)
        ends = np.cumsum(n_orders)
        first = 0
        while first < n_customers:
            before = int(ends[first - 1]) if first else 0
            stop = int(np.searchsorted(ends, before + ORDERS_PER_STEP, side="right"))
            stop = max(stop, first + 1)
            counts = n_orders[first:stop]
            owner = np.repeat(np.arange(first, stop), counts)
            u = low[owner] + rng.random(len(owner)) * active_weight[owner] + span * arch[owner]
            flat = _search_sorted(stacked, u)
            day = np.clip(flat - arch[owner] * n_days, start[owner], end[owner])
            del u, flat
            # ``owner`` is ascending here: each account's last order day is a segment maximum
            has = counts > 0
            if len(day):
                segment_start = np.cumsum(counts) - counts
                last_order_day[first:stop][has] = np.maximum.reduceat(day, segment_start[has])
            urns = _urn(channel_mix[:, first:stop], 64)
            channel = _draw_from_urns(urns, owner - first, rng_channel)
            records = np.empty(len(owner), dtype=_SPILL)
            records["owner"], records["day"], records["channel"] = owner, day, channel
            del owner, day, channel
            # stable: within a month the records stay in account order
            month = self.month_of_day[records["day"]]
            by_month = np.argsort(month, kind="stable")
            records, month = records[by_month], month[by_month]
            cuts = np.searchsorted(month, np.arange(self.n_months + 1))
            for m in range(self.n_months):
                buckets.add(m, records[cuts[m] : cuts[m + 1]])
            del records, month, by_month
            first = stop
        return n_total, last_order_day

    def months(
        self, buckets: _MonthBuckets
    ) -> Iterator[tuple[pl.DataFrame, np.ndarray, np.ndarray, np.ndarray]]:
        """Second pass: per month in calendar order, its orders (ids continuing), and per
        order its account row, price factor and month (months since 1970-01)."""
        customer_id = self.hidden["customer_id"].to_numpy()
        discount = self.hidden["discount"].to_numpy()
        next_id = 1
        for m in range(self.n_months):
            records = buckets.take(m)
            # Order ids follow the calendar, as in a real order system. Records are in
            # account order, so a stable sort by day alone orders by (day, owner); on int16
            # days numpy uses a radix sort.
            records = records[np.argsort(records["day"], kind="stable")]
            owner = records["owner"].astype(np.int64)
            day = records["day"].astype(np.int64)
            channel = records["channel"]
            del records
            n = len(owner)
            orders = pl.DataFrame(
                {
                    "order_id": np.arange(next_id, next_id + n, dtype=np.int64),
                    "customer_id": customer_id[owner],
                    "order_date": self.epoch + day.astype("timedelta64[D]"),
                    "channel": pl.Series(channel.astype(np.uint32))
                    .cast(pl.Enum(list(CHANNELS)))
                    .cast(pl.Utf8),
                }
            ).select(pl.col(c.name).cast(c.dtype) for c in ORDERS.columns)
            next_id += n
            factor = (1.0 - discount[owner]) * self.price_level[day]
            months = np.full(n, self.first_month + m, dtype=np.int64)
            yield orders, owner, factor, months
