"""Public key sets and their human labels: the one registry every output reads names from.

A released table may be keyed only by a *public* key set — a list fixed before the data are
read (the 21 counties, the 290 municipalities, the SNI 2007 sections, the product taxonomy,
the size bands, the customer types, the segment labels of a segment source, the months of a
window the caller names, or the geography and taxonomy an ingested export's mapping
declared). This module lists each set and its labels (industry letter → section name,
county code → county name), so tables, plots and notebooks show names, not codes.

Examples
--------
>>> key_labels("industry")["P"]
'Education'
>>> key_labels("county_code")["01"]
'Stockholm'
>>> column_of("county")
'county_code'
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from segments.exceptions import PolicyError
from segments.months import month_start, next_month
from segments.schema import INDUSTRIES, PERSON_TYPES, PRODUCT_CATEGORIES, SIZE_BANDS

__all__ = [
    "INDUSTRY_NAMES",
    "KEY_COLUMNS",
    "KEY_SETS",
    "column_of",
    "key_labels",
    "key_values",
    "label_column",
    "month_keys",
    "with_labels",
]

#: SNI 2007 sections (Statistics Sweden's Swedish Standard Industrial Classification, the
#: NACE Rev. 2 sections), by letter.
INDUSTRY_NAMES: dict[str, str] = {
    "A": "Agriculture, forestry and fishing",
    "B": "Mining and quarrying",
    "C": "Manufacturing",
    "D": "Electricity, gas, steam and air conditioning supply",
    "E": "Water supply, sewerage, waste management",
    "F": "Construction",
    "G": "Wholesale and retail trade",
    "H": "Transportation and storage",
    "I": "Accommodation and food service",
    "J": "Information and communication",
    "K": "Financial and insurance activities",
    "L": "Real estate activities",
    "M": "Professional, scientific and technical activities",
    "N": "Administrative and support service activities",
    "O": "Public administration and defence",
    "P": "Education",
    "Q": "Human health and social work",
    "R": "Arts, entertainment and recreation",
    "S": "Other service activities",
    "T": "Households as employers",
    "U": "Extraterritorial organisations",
}
assert tuple(INDUSTRY_NAMES) == INDUSTRIES

#: The key sets a release may be grouped by (column name → what it is).
KEY_SETS: dict[str, str] = {
    "county_code": "the 21 Swedish counties (or the geography an ingested export declared)",
    "municipality_code": "the 290 Swedish municipalities",
    "industry": "SNI 2007 sections A-U (business customers and sole traders)",
    "size_band": "company size bands by employees",
    "customer_type": "business, private or sole trader (a person)",
    "category": "the product taxonomy (built-in, or an ingested export's declared one)",
    "segment": "the labels of the release's segment source",
    "month": "the months of the window the caller names (YYYY-MM)",
    "scope": "one cell for everyone in the release: a national total (the value 'all')",
}
#: Short names an analyst may use for a key column.
_ALIASES = {"county": "county_code", "municipality": "municipality_code", "type": "customer_type"}
KEY_COLUMNS = tuple(KEY_SETS)


#: The one key of ``scope``: a table of national totals has one cell.
NATIONAL = ("all",)


def column_of(name: str) -> str:
    """The key column an analyst's name stands for (``county`` → ``county_code``)."""
    return _ALIASES.get(name, name)


def month_keys(start: dt.date, end: dt.date) -> tuple[str, ...]:
    """The months ``YYYY-MM`` of the half-open window ``[start, end)`` (a public list).

    Examples
    --------
    >>> month_keys(dt.date(2026, 1, 1), dt.date(2026, 3, 1))
    ('2026-01', '2026-02')
    """
    months = []
    month = month_start(start)
    while month < end:
        months.append(f"{month.year:04d}-{month.month:02d}")
        month = next_month(month)
    return tuple(months)


def key_values(
    column: str,
    *,
    domains: Any = None,
    segment_keys: Iterable[str] | None = None,
    months: Iterable[str] | None = None,
) -> tuple[str, ...]:
    """The public list of one key column.

    Parameters
    ----------
    column : str
        A key column of :data:`KEY_SETS`, or the geography column an ingested export declared.
    domains : segments.PublicDomains, optional
        The workspace's declared taxonomy and geography (default: the built-in ones).
    segment_keys : iterable of str, optional
        The segment source's label list (needed for ``segment``).
    months : iterable of str, optional
        The months of the window (needed for ``month``).

    Raises
    ------
    PolicyError
        For a column with no public list.
    """
    geography = getattr(domains, "geography_column", "county_code")
    if column == geography and domains is not None and domains.geography_values:
        return tuple(domains.geography_values)
    if column == "county_code":
        from segments.geography import counties_pl

        return tuple(counties_pl()["county_code"].to_list())
    if column == "municipality_code":
        from segments.geography import municipalities_pl

        return tuple(municipalities_pl()["municipality_code"].to_list())
    if column == "category":
        return tuple(domains.categories) if domains is not None else PRODUCT_CATEGORIES
    fixed = {"industry": INDUSTRIES, "size_band": SIZE_BANDS, "customer_type": PERSON_TYPES}
    if column in fixed:
        return fixed[column]
    if column == "segment" and segment_keys is not None:
        return tuple(segment_keys)
    if column == "month" and months is not None:
        return tuple(months)
    if column == "scope":
        return NATIONAL
    raise PolicyError(
        f"key {column!r} has no public list; group by one of {sorted(KEY_SETS)} "
        "(month needs a window, segment a segment source)"
    )


@cache
def _geography_labels(column: str) -> dict[str, str]:
    from segments.geography import counties_pl, municipalities_pl, reference_path

    if column == "country":
        import polars as pl

        table = pl.read_csv(reference_path("countries.csv"), infer_schema=False)
        return dict(table.select("country_code", "country_name").iter_rows())
    if column == "county_code":
        return dict(counties_pl().select("county_code", "county_name_short").iter_rows())
    return dict(municipalities_pl().select("municipality_code", "municipality_name").iter_rows())


def key_labels(column: str) -> dict[str, str]:
    """Human labels of a key column's values (empty when the codes are their own names).

    Examples
    --------
    >>> key_labels("category")["toner_ink"]
    'Toner ink'
    """
    if column in ("county_code", "municipality_code", "country"):
        return _geography_labels(column)
    if column == "industry":
        return dict(INDUSTRY_NAMES)
    if column == "category":
        return {c: c.replace("_", " ").capitalize() for c in PRODUCT_CATEGORIES}
    if column in ("customer_type", "size_band"):
        return {v: v.replace("_", " ") for v in (*PERSON_TYPES, *SIZE_BANDS)}
    return {}


def label_column(column: str) -> str:
    """The name of a key column's label column (``county_code`` → ``county_name``).

    Examples
    --------
    >>> label_column("county_code"), label_column("industry")
    ('county_name', 'industry_name')
    """
    return column.removesuffix("_code") + "_name"


def with_labels(frame: Any, columns: Iterable[str] | None = None) -> Any:
    """A pandas frame with a ``<key>_name`` column beside each labelled key column.

    Parameters
    ----------
    frame : pandas.DataFrame
    columns : iterable of str, optional
        Key columns to label (default: every column of :data:`KEY_SETS` present).
    """
    columns = [c for c in (columns or (*KEY_COLUMNS, "country")) if c in frame.columns]
    out = frame.copy()
    for column in columns:
        labels: Mapping[str, str] = key_labels(column)
        if not labels:
            continue
        named = out[column].map(lambda v, lab=labels: lab.get(v, v) if v is not None else v)
        name = label_column(column)
        if name in out.columns:
            continue
        out.insert(list(out.columns).index(column) + 1, name, named)
    return out
