"""The ``customers`` table: accounts, identities, geography and relationship facts.

Accounts are drawn per archetype (see :mod:`segments.synth.archetypes`). About 70-80 % are
business accounts. Personnummer come only from Skatteverket's test numbers and are kept only
where AO-3 allows it: sole traders (whose organisation number *is* the personnummer without
century) and private customers paying by invoice (credit check). Some sole traders also hold
a private account with the same personnummer, name and address, so later stages can link
the two accounts to one person. When the test pool runs out, no number is invented: extra
sole traders become partnerships and extra invoice customers keep a null personnummer; the
manifest records both counts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import polars as pl

from segments import geography
from segments.schema import CUSTOMERS, SIZE_BANDS
from segments.synth import vocab
from segments.synth.archetypes import ARCHETYPES
from segments.synth.identifiers import LEGAL_FORM_DIGIT, org_numbers, skatteverket_test_numbers

__all__ = [
    "CUSTOMERS_PER_STEP",
    "RATES",
    "AccountDraw",
    "build_customers",
    "draw_accounts",
    "finish_customers",
]

#: Realistic low rates of relationship facts (share of accounts).
RATES = {
    "private_invoice": 0.25,  # private accounts paying by invoice: personnummer kept (AO-3)
    "sole_trader_private_account": 0.4,  # sole traders who also hold a private account
    "churn_business": 0.12,
    "churn_private": 0.22,
    "signed_up_before_window": 0.6,
    "newsletter_business": 0.30,
    "newsletter_private": 0.40,
    "marketing_opt_out": 0.06,
    "survey_opt_out": 0.08,
    "profiling_objection": 0.02,
    "consent_withdrawn": 0.03,
    "erasure_requested": 0.004,
    "restriction_requested": 0.003,
}
_SOLE_TRADES = (
    "Konsult",
    "Design",
    "Redovisning",
    "Bygg & Montage",
    "Foto",
    "IT-tjänster",
    "Text & Kommunikation",
    "Hälsa",
    "Snickeri",
    "Översättningar",
)


@dataclass
class AccountDraw:
    """Everything drawn about the accounts, before their strings are built."""

    #: one row per account in customer-id order: vocabulary indices and facts
    accounts: pl.DataFrame
    industries: tuple[str, ...]
    #: customer_id, archetype index, start/end day of activity, rate factor, discount...
    hidden: pl.DataFrame
    truth: pl.DataFrame
    persons: pl.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)


def _categorical(rng: np.random.Generator, probs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One draw per entry of ``rows`` (indices into the (m, k) probability matrix ``probs``):
    an inverse-CDF search per distinct row rather than a comparison with every category."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(rows))
    out = np.empty(len(rows), dtype=np.int64)
    for r in range(len(cum)):
        at = np.flatnonzero(rows == r)
        # searchsorted (left) counts the cumulative weights below the scaled uniform
        found = np.searchsorted(cum[r], u[at] * cum[r, -1:], side="left")
        out[at] = np.minimum(found, probs.shape[1] - 1)
    return out


def _per_archetype(table: list[dict[str, float]], keys: tuple[str, ...]) -> np.ndarray:
    """Probabilities of ``keys`` per archetype, shape (n_archetypes, len(keys))."""
    matrix = np.array([[row.get(k, 0.0) for k in keys] for row in table])
    matrix[matrix.sum(axis=1) == 0, 0] = 1.0  # archetypes without business accounts
    return matrix


def _geography(rng: np.random.Generator, n: int) -> np.ndarray:
    """Row indices into :func:`_postcode_table`: municipality weighted by population, then a
    postcode uniform among that municipality's postcodes."""
    munis = geography.municipalities_pl().sort("municipality_code")
    codes = _postcode_table()
    weights = munis["population"].to_numpy().astype(float)
    muni_idx = rng.choice(munis.height, size=n, p=weights / weights.sum())
    counts = (
        codes.group_by("municipality_code")
        .len()
        .join(munis.select("municipality_code"), on="municipality_code", how="right")
        .sort("municipality_code")["len"]
        .fill_null(0)
        .to_numpy()
        .astype(np.int64)
    )
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return offsets[muni_idx] + (rng.random(n) * counts[muni_idx]).astype(np.int64)


def _postcode_table() -> pl.DataFrame:
    return geography.postcodes_pl().sort("municipality_code", "postcode")


def _personnummer_order(rng: np.random.Generator, as_of: dt.date) -> pl.DataFrame:
    """The usable test numbers (adults 18-85 at ``as_of``) in a random order that favours a
    realistic age profile: each birth year is weighted by a target density over its count."""
    pool = skatteverket_test_numbers().filter(
        pl.col("birth_year").is_between(as_of.year - 85, as_of.year - 18)
    )
    years = pool["birth_year"].to_numpy().astype(float)
    target = np.exp(-0.5 * ((years - (as_of.year - 47)) / 15.0) ** 2)
    per_year = (
        pool.group_by("birth_year")
        .len()
        .join(pool.select("birth_year"), on="birth_year", how="right")["len"]
        .to_numpy()
    )
    weight = target / per_year
    # Weighted sampling without replacement (Efraimidis-Spirakis keys).
    keys = np.log(rng.random(pool.height)) / weight
    return pool[np.argsort(-keys, kind="stable")]


def draw_accounts(
    n: int, *, window_start: dt.date, as_of: dt.date, rng: np.random.Generator
) -> AccountDraw:
    """Draw ``n`` accounts as numbers and vocabulary indices; :func:`build_customers` turns
    them into the ``customers`` table (separately, so the strings can be built while the
    orders are drawn).

    Parameters
    ----------
    n : int
        Number of accounts.
    window_start, as_of : date
        First and last day of the order history.
    rng : numpy.random.Generator

    Returns
    -------
    AccountDraw
    """
    shares = np.array([a.share for a in ARCHETYPES])
    arch = rng.choice(len(ARCHETYPES), size=n, p=shares)
    a_business = np.array([a.business_share for a in ARCHETYPES])
    a_sole = np.array([a.sole_trader_share for a in ARCHETYPES])
    is_business = rng.random(n) < a_business[arch]
    sole = is_business & (rng.random(n) < a_sole[arch])
    is_private = ~is_business

    # --- personnummer (AO-3): sole traders first, then private invoice customers ----------
    pool = _personnummer_order(rng, as_of)
    pnr = np.zeros(n, dtype=np.int64)  # 0: no personnummer kept
    birth_year = np.full(n, -1, dtype=np.int64)
    male = rng.random(n) < 0.5
    sole_idx = np.flatnonzero(sole)
    n_sole_numbers = min(len(sole_idx), pool.height)
    demoted = sole_idx[n_sole_numbers:]  # no test number left: a partnership instead
    sole[demoted] = False
    sole_idx = sole_idx[:n_sole_numbers]
    pool_pnr = pool["personnummer"].cast(pl.Int64).to_numpy()
    pool_year = pool["birth_year"].to_numpy()
    pool_male = (pool["gender"] == "M").to_numpy()
    pnr[sole_idx] = pool_pnr[:n_sole_numbers]
    birth_year[sole_idx] = pool_year[:n_sole_numbers]
    male[sole_idx] = pool_male[:n_sole_numbers]
    used = n_sole_numbers

    # Sole traders who also hold a private account: that account takes their identity.
    private_idx = np.flatnonzero(is_private)
    n_pairs = min(
        int(round(RATES["sole_trader_private_account"] * len(sole_idx))), len(private_idx)
    )
    pair_business = rng.choice(sole_idx, size=n_pairs, replace=False) if n_pairs else sole_idx[:0]
    pair_private = rng.choice(private_idx, size=n_pairs, replace=False) if n_pairs else sole_idx[:0]
    invoice = is_private & (rng.random(n) < RATES["private_invoice"])
    invoice[pair_private] = False
    invoice_idx = np.flatnonzero(invoice)
    n_invoice_numbers = min(len(invoice_idx), pool.height - used)
    take = slice(used, used + n_invoice_numbers)
    got = invoice_idx[:n_invoice_numbers]
    pnr[got] = pool_pnr[take]
    birth_year[got] = pool_year[take]
    male[got] = pool_male[take]

    # Private accounts without a number: a realistic adult age profile.
    no_year = is_private & (birth_year < 0)
    ages = np.clip(rng.normal(47, 15, n), 18, 85).astype(np.int64)
    birth_year[no_year] = as_of.year - ages[no_year]

    # --- names and addresses (indices into vocabularies; strings are built once, in polars)
    female_names, male_names = vocab.first_names()
    first = np.where(
        male,
        len(female_names) + rng.integers(0, len(male_names), n),
        rng.integers(0, len(female_names), n),
    )
    last = rng.integers(0, len(vocab.last_names()), n)
    street = rng.integers(0, len(vocab.street_names()), n)
    street_no = rng.integers(1, 120, n)
    place = _geography(rng, n)
    phone = rng.integers(0, len(vocab.phone_numbers()), n)

    # the private account of a sole trader is the same person: same identity and address
    for column in (first, last, male, street, street_no, place, pnr, birth_year, phone):
        column[pair_private] = column[pair_business]

    # --- business facts ------------------------------------------------------------------
    size_probs = _per_archetype([a.size_band for a in ARCHETYPES], SIZE_BANDS)
    size_band = _categorical(rng, size_probs, arch)
    industries = tuple(sorted({k for a in ARCHETYPES for k in a.industry}))
    industry = _categorical(rng, _per_archetype([a.industry for a in ARCHETYPES], industries), arch)
    a_public = np.array([a.public_sector_share for a in ARCHETYPES])
    public = is_business & ~sole & (rng.random(n) < a_public[arch])
    form_draw = rng.random(n)
    legal_digit = np.select(
        [public, form_draw < 0.06, form_draw < 0.10],
        [
            LEGAL_FORM_DIGIT["public_sector"],
            LEGAL_FORM_DIGIT["partnership"],
            LEGAL_FORM_DIGIT["economic_association"],
        ],
        LEGAL_FORM_DIGIT["aktiebolag"],
    )
    legal_digit[demoted] = LEGAL_FORM_DIGIT["partnership"]
    legal_idx = np.flatnonzero(is_business & ~sole)
    org = np.zeros(n, dtype=np.int64)  # 0: no organisation number
    org[legal_idx] = org_numbers(legal_digit[legal_idx], rng)
    org[sole_idx] = pnr[sole_idx] % 10**10  # a sole trader's number is the personnummer
    suffix = rng.integers(0, len(vocab.COMPANY_SUFFIXES), n)
    unit = rng.integers(0, len(vocab.PUBLIC_UNITS), n)
    trade = rng.integers(0, len(_SOLE_TRADES), n)
    second_last = rng.integers(0, len(vocab.last_names()), n)
    name_form = rng.random(n)

    # --- relationship facts ----------------------------------------------------------------
    window_days = (as_of - window_start).days + 1
    before = rng.random(n) < RATES["signed_up_before_window"]
    signup_offset = np.where(
        before,
        -rng.integers(1, 10 * 365, n),  # up to ten years before the window
        rng.integers(0, window_days, n),
    )
    churn = rng.random(n) < np.where(is_business, RATES["churn_business"], RATES["churn_private"])
    start_day = np.maximum(signup_offset, 0)
    churn &= start_day < window_days - 31
    end_offset = np.where(
        churn, start_day + (rng.random(n) * (window_days - 1 - start_day)), window_days - 1
    ).astype(np.int64)
    end_offset = np.maximum(end_offset, start_day)
    withdrawn = rng.random(n) < RATES["consent_withdrawn"]
    withdrawn_offset = signup_offset + (rng.random(n) * (end_offset - signup_offset)).astype(
        np.int64
    )
    newsletter = (
        rng.random(n)
        < np.where(is_business, RATES["newsletter_business"], RATES["newsletter_private"])
    ) & ~withdrawn
    interactions = np.where(newsletter, np.round(rng.gamma(1.2, 1.5, n), 1), 0.0)

    a_rate = np.array([a.orders_per_month for a in ARCHETYPES])
    a_shape = np.array([a.activity_shape for a in ARCHETYPES])
    rate = a_rate[arch] * rng.gamma(a_shape[arch], 1.0 / a_shape[arch])
    lo = np.array([a.discount[0] for a in ARCHETYPES])
    hi = np.array([a.discount[1] for a in ARCHETYPES])
    discount = np.round(lo[arch] + rng.random(n) * (hi[arch] - lo[arch]), 2)
    basket_factor = rng.gamma(6.0, 1 / 6.0, n)

    person = np.arange(n)
    person[pair_private] = pair_business
    # customer ids follow signup order, as in a real customer register
    order = np.lexsort((person, signup_offset))
    epoch = np.datetime64(window_start, "D")

    def days(offset: np.ndarray, keep: np.ndarray | None = None) -> pl.Series:
        dates = pl.Series(epoch + offset[order].astype("timedelta64[D]"))
        return (
            dates
            if keep is None
            else pl.select(pl.when(pl.Series(keep[order])).then(dates)).to_series()
        )

    columns = {
        "arch": arch.astype(np.int8),
        "is_business": is_business,
        "sole": sole,
        "public": public,
        "pnr": pnr,
        "org": org,
        "first": first,
        "last": last,
        "second_last": second_last,
        "suffix": suffix,
        "unit": unit,
        "trade": trade,
        "name_form": name_form,
        "size": size_band,
        "industry": industry,
        "email_no": rng.integers(1, 100, n),
        "email_domain": rng.integers(0, len(vocab.EMAIL_DOMAINS), n),
        "phone": phone,
        "street": street,
        "street_no": street_no,
        "place": place,
        "birth_year": birth_year,
        "male": male,
        "newsletter": newsletter,
        "interactions": interactions,
        "marketing_opt_out": (rng.random(n) < RATES["marketing_opt_out"]) | withdrawn,
        "survey_opt_out": rng.random(n) < RATES["survey_opt_out"],
        "profiling_objection": rng.random(n) < RATES["profiling_objection"],
        "erasure": rng.random(n) < RATES["erasure_requested"],
        "restriction": rng.random(n) < RATES["restriction_requested"],
        # hidden drivers of behaviour
        "start_day": start_day,
        "end_day": end_offset,
        "rate": rate,
        "discount": discount,
        "basket_factor": basket_factor,
        "person": person,
    }
    # one gather per column, run by polars on all cores
    frame = (
        pl.DataFrame(columns)
        .select(pl.all().gather(order))
        .with_columns(
            signup=days(signup_offset),
            end=days(end_offset, churn),
            withdrawn=days(withdrawn_offset, withdrawn),
        )
        .with_row_index("customer_id", offset=1)
    )
    hidden = frame.select(
        pl.col("customer_id").cast(pl.Int64),
        "arch",
        "is_business",
        "start_day",
        "end_day",
        "rate",
        "discount",
        "basket_factor",
    )
    names = pl.Series([a.name for a in ARCHETYPES])
    truth = frame.select(
        pl.col("customer_id").cast(pl.Int64),
        names.gather(frame["arch"]).alias("archetype"),
    )
    persons = frame.select(
        pl.col("customer_id").cast(pl.Int64),
        pl.col("person").rank("dense").cast(pl.Int64).alias("person_id"),
    )
    stats = {
        "personnummer_pool_usable": pool.height,
        "personnummer_assigned": int(n_sole_numbers + n_invoice_numbers),
        "sole_traders": int(n_sole_numbers),
        "sole_traders_with_private_account": int(n_pairs),
        "sole_traders_without_test_number_made_partnerships": len(demoted),
        "invoice_customers_without_test_number": int(len(invoice_idx) - n_invoice_numbers),
    }
    return AccountDraw(frame, industries, hidden, truth, persons, stats)


#: Accounts whose strings are built in one step: bounds the intermediate string columns
#: (vocabulary lookups, e-mail slugs) to this many rows; every column is a function of its
#: own row, so the table is the same for any step.
CUSTOMERS_PER_STEP = 1 << 18


def build_customers(draw: AccountDraw) -> pl.DataFrame:
    """The ``customers`` table of ``draw`` (``last_contact_date`` still the signup date),
    built :data:`CUSTOMERS_PER_STEP` accounts at a time."""
    f, step = draw.accounts, CUSTOMERS_PER_STEP
    if f.height <= step:
        return _customer_columns(f, draw.industries)
    parts = [_customer_columns(f.slice(i, step), draw.industries) for i in range(0, f.height, step)]
    return pl.concat(parts, rechunk=False)


@cache
def _slugs(values: tuple[str, ...]) -> list[str]:
    """E-mail slugs of a vocabulary, computed once per vocabulary rather than per row."""
    return [vocab.ascii_slug(v) for v in values]


def _vocab(values: tuple[str, ...] | list[str], index: str) -> pl.Expr:
    """Strings from a vocabulary by an integer index column (gathered in polars, fast)."""
    return pl.lit(pl.Series(list(values), dtype=pl.Utf8)).gather(pl.col(index))


def _customer_columns(f: pl.DataFrame, industries: tuple[str, ...]) -> pl.DataFrame:
    female_names, male_names = vocab.first_names()
    places = _postcode_table()
    # (column, vocabulary, also build its e-mail slug?)
    sources: list[tuple[str, tuple[str, ...] | list[str], bool]] = [
        ("first", female_names + male_names, True),
        ("last", vocab.last_names(), True),
        ("second_last", vocab.last_names(), True),
        ("suffix", vocab.COMPANY_SUFFIXES, True),
        ("unit", vocab.PUBLIC_UNITS, True),
        ("trade", _SOLE_TRADES, True),
        ("size", SIZE_BANDS, False),
        ("industry", industries, False),
        ("email_domain", vocab.EMAIL_DOMAINS, False),
        ("phone", vocab.phone_numbers(), False),
        ("street", vocab.street_names(), False),
    ]
    exprs = []
    for name, values, slug in sources:
        exprs.append(_vocab(values, name).alias(name))
        if slug:  # slugs are computed once per vocabulary entry, not per row
            exprs.append(_vocab(_slugs(tuple(values)), name).alias(f"{name}_slug"))
    localities = places["locality"].to_list()
    exprs.append(_vocab(_slugs(tuple(localities)), "place").alias("locality_slug"))
    exprs.extend(
        _vocab(places[c].to_list(), "place").alias(c)
        for c in ("postcode", "locality", "municipality_code", "county_code")
    )
    f = f.with_columns(exprs)
    business = pl.col("is_business")
    company = (
        pl.when(pl.col("sole"))
        .then(pl.concat_str([pl.col("last"), pl.col("trade")], separator=" "))
        .when(pl.col("public"))
        .then(pl.concat_str([pl.col("locality"), pl.col("unit")], separator=" "))
        .when(pl.col("name_form") < 0.15)
        .then(
            pl.concat_str(
                [pl.col("last"), pl.lit("&"), pl.col("second_last"), pl.col("suffix")],
                separator=" ",
            )
        )
        .otherwise(pl.concat_str([pl.col("second_last"), pl.col("suffix")], separator=" "))
    )
    company_slug = (
        pl.when(pl.col("sole"))
        .then(pl.concat_str([pl.col("last_slug"), pl.col("trade_slug")], separator="."))
        .when(pl.col("public"))
        .then(pl.concat_str([pl.col("locality_slug"), pl.col("unit_slug")], separator="."))
        .when(pl.col("name_form") < 0.15)
        .then(pl.concat_str([pl.col("last_slug"), pl.col("second_last_slug")], separator="."))
        .otherwise(
            pl.concat_str([pl.col("second_last_slug"), pl.col("suffix_slug")], separator=".")
        )
    )
    local = pl.concat_str([pl.col("first_slug"), pl.col("last_slug")], separator=".")
    email = (
        pl.when(business)
        .then(pl.concat_str([local, pl.lit("@"), company_slug, pl.lit(".example.com")]))
        .otherwise(
            pl.concat_str(
                [local, pl.col("email_no").cast(pl.Utf8), pl.lit("@"), pl.col("email_domain")]
            )
        )
    )
    person_facts = pl.col("sole") | ~business
    out = f.with_columns(company.alias("company_name")).select(
        pl.col("customer_id").cast(pl.Int64),
        pl.when(business)
        .then(pl.lit("business"))
        .otherwise(pl.lit("private"))
        .alias("customer_type"),
        pl.col("sole").alias("is_sole_trader"),
        pl.when(pl.col("pnr") > 0).then(pl.col("pnr").cast(pl.Utf8)).alias("personnummer"),
        pl.when(pl.col("org") > 0)
        .then(pl.col("org").cast(pl.Utf8).str.zfill(10))
        .alias("org_number"),
        pl.when(business).then(pl.col("company_name")).alias("company_name"),
        pl.when(business).then(pl.col("industry")).alias("industry"),
        pl.when(business).then(pl.col("size")).alias("size_band"),
        pl.col("first").alias("first_name"),
        pl.col("last").alias("last_name"),
        email.alias("email"),
        "phone",
        pl.concat_str([pl.col("street"), pl.col("street_no").cast(pl.Utf8)], separator=" ").alias(
            "street"
        ),
        "postcode",
        "locality",
        "municipality_code",
        "county_code",
        pl.when(person_facts).then(pl.col("birth_year")).alias("birth_year"),
        pl.when(person_facts)
        .then(pl.when(pl.col("male")).then(pl.lit("M")).otherwise(pl.lit("F")))
        .alias("gender"),
        pl.col("signup").alias("signup_date"),
        pl.col("signup").alias("last_contact_date"),  # completed by finish_customers
        pl.col("end").alias("end_date"),
        pl.col("newsletter").alias("newsletter_subscriber"),
        pl.col("interactions").alias("newsletter_interactions_per_month"),
        "marketing_opt_out",
        "survey_opt_out",
        "profiling_objection",
        pl.col("withdrawn").alias("consent_withdrawn_date"),
        pl.col("erasure").alias("erasure_requested"),
        pl.col("restriction").alias("restriction_requested"),
    )
    return out.select(pl.col(c.name).cast(c.dtype) for c in CUSTOMERS.columns)


def finish_customers(
    customers: pl.DataFrame,
    last_order_day: np.ndarray,
    *,
    window_start: dt.date,
    as_of: dt.date,
    rng: np.random.Generator,
) -> pl.DataFrame:
    """Set ``last_contact_date``: a little after the last order (or signup), never after the
    end of the relationship or ``as_of``.

    Parameters
    ----------
    customers : polars.DataFrame
    last_order_day : numpy.ndarray
        Per row of ``customers``: day of the last order since ``window_start``, -1 if none.
    window_start, as_of : date
    rng : numpy.random.Generator
    """
    if len(last_order_day) != customers.height:
        raise ValueError(
            f"parameter 'last_order_day': {len(last_order_day)} values for "
            f"{customers.height} customers; fix: pass one value per customer row"
        )
    lag = rng.integers(0, 90, customers.height)
    epoch = np.datetime64(window_start, "D")
    last_order = pl.Series(epoch + last_order_day.astype("timedelta64[D]"))
    return (
        customers.with_columns(
            pl.when(pl.Series(last_order_day >= 0)).then(last_order).alias("last_order_date")
        )
        .with_columns(
            pl.max_horizontal("signup_date", "last_order_date").alias("_base"),
            pl.min_horizontal(pl.col("end_date").fill_null(as_of), pl.lit(as_of)).alias("_cap"),
        )
        .with_columns(
            pl.max_horizontal(
                "signup_date",
                pl.min_horizontal(
                    pl.col("_base") + pl.duration(days=pl.lit(pl.Series(lag))), "_cap"
                ),
            ).alias("last_contact_date")
        )
        .select(CUSTOMERS.names)
    )
