"""Generalisation hierarchies: one per quasi-identifier, level 0 = the original value.

A :class:`Hierarchy` is a tree written as a table: one row per original value, one column per
level, the last level usually ``*``. Every level must be a function of the level below it
(a value never has two parents), so a full-domain generalisation is a vector of levels, one
per quasi-identifier. Hierarchies are built here for the customer table (birth year,
postcode, municipality, county, customer type, company size band, industry, gender, segment,
spend band) or read from CSV in the common one-row-per-value, one-column-per-level format
(ARX's, ``;``-separated, no header), as in ``../shared/data/real/adult/``.

Values are compared as strings, so ``1984`` and ``"1984"`` are the same value; a missing
value (null) must be mapped to a value such as ``"n/a"`` before generalising.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path

import numpy as np
import polars as pl

from segments.exceptions import KAnonymityError
from segments.geography import (
    REGION_OF_COUNTY,
    counties_pl,
    municipalities_pl,
    postcodes_pl,
    reference_path,
)
from segments.schema import INDUSTRIES, PERSON_TYPES, PRODUCT_CATEGORIES, SIZE_BANDS

__all__ = [
    "NOT_APPLICABLE",
    "SPEND_BANDS",
    "Hierarchy",
    "birth_year_hierarchy",
    "country_hierarchy",
    "county_hierarchy",
    "date_hierarchy",
    "customer_type_hierarchy",
    "flat_hierarchy",
    "industry_hierarchy",
    "municipality_hierarchy",
    "number_hierarchy",
    "postcode_hierarchy",
    "read_hierarchies",
    "segment_hierarchy",
    "size_band_hierarchy",
    "spend_band_hierarchy",
]

#: Stands for a value that does not apply (a private customer's industry, a company's
#: birth year); it is generalised like any other value.
NOT_APPLICABLE = "n/a"
TOP = "*"

#: Spend bands (SEK in the window) used by the customer table; public, fixed cut points.
SPEND_BANDS = ("0-999", "1000-4999", "5000-19999", "20000-99999", "100000+")


class Hierarchy:
    """A generalisation hierarchy for one quasi-identifier.

    Parameters
    ----------
    name : str
        The column it generalises.
    rows : sequence of sequences of str
        One row per original value; column ``j`` is the value at level ``j``. All rows have
        the same length (the height plus one).

    Raises
    ------
    KAnonymityError
        If rows are empty or ragged, an original value repeats, or a value at some level has
        two different parents (the table is not a tree).

    Examples
    --------
    >>> h = Hierarchy("sex", [["Male", "*"], ["Female", "*"]])
    >>> h.height, h.generalise(["Female", "Male"], 1)
    (1, ['*', '*'])
    """

    def __init__(self, name: str, rows: Sequence[Sequence[object]]) -> None:
        table = [[str(v) for v in row] for row in rows]
        if not table:
            raise KAnonymityError(f"hierarchy {name!r} has no rows; give one row per value")
        width = len(table[0])
        ragged = next((r for r in table if len(r) != width), None)
        if ragged is not None or width < 1:
            raise KAnonymityError(
                f"hierarchy {name!r}: every row must have {width} levels, but row for "
                f"{ragged[0] if ragged else '?'!r} has {len(ragged or [])}; fix the table"
            )
        self.name = name
        self.values: tuple[str, ...] = tuple(r[0] for r in table)
        if len(set(self.values)) != len(self.values):
            dup = next(v for v in self.values if self.values.count(v) > 1)
            raise KAnonymityError(f"hierarchy {name!r}: value {dup!r} appears twice at level 0")
        self._labels: list[tuple[str, ...]] = []
        self._codes: list[np.ndarray] = []
        for level in range(width):
            column = [r[level] for r in table]
            labels = tuple(dict.fromkeys(column))
            index = {v: i for i, v in enumerate(labels)}
            self._labels.append(labels)
            self._codes.append(np.array([index[v] for v in column], dtype=np.int64))
        self._check_tree(table)
        self._index = {v: i for i, v in enumerate(self.values)}

    def _check_tree(self, table: list[list[str]]) -> None:
        for level in range(1, self.height + 1):
            parent: dict[str, str] = {}
            for row in table:
                seen = parent.setdefault(row[level - 1], row[level])
                if seen != row[level]:
                    raise KAnonymityError(
                        f"hierarchy {self.name!r}: level-{level - 1} value {row[level - 1]!r} "
                        f"has two parents at level {level} ({seen!r} and {row[level]!r}); "
                        "each value must generalise to exactly one value"
                    )

    # --- construction --------------------------------------------------------------------
    @classmethod
    def from_functions(
        cls, name: str, values: Iterable[object], levels: Sequence[Callable[[str], str]]
    ) -> Hierarchy:
        """Build from the original values and one function per level above 0."""
        rows = []
        for value in dict.fromkeys(str(v) for v in values):
            rows.append([value, *(f(value) for f in levels)])
        return cls(name, rows)

    @classmethod
    def from_csv(
        cls, path: str | os.PathLike[str], name: str | None = None, *, sep: str = ";"
    ) -> Hierarchy:
        """Read a hierarchy in the one-row-per-value, one-column-per-level format (ARX).

        Parameters
        ----------
        path : path
            A ``sep``-separated file without header.
        name : str, optional
            Column name; defaults to the file name after ``hierarchy_`` (ARX's convention
            ``<dataset>_hierarchy_<column>.csv``) or the stem.
        """
        p = Path(path)
        with open(p, encoding="utf-8", newline="") as fh:
            rows = [r for r in csv.reader(fh, delimiter=sep) if r]
        if name is None:
            name = p.stem.split("hierarchy_", 1)[-1]
        return cls(name, rows)

    # --- structure -----------------------------------------------------------------------
    @property
    def height(self) -> int:
        """The highest level (levels run from 0 to ``height``)."""
        return len(self._labels) - 1

    def labels(self, level: int) -> tuple[str, ...]:
        """The distinct values at ``level``, in code order."""
        return self._labels[self._check_level(level)]

    def codes(self, level: int) -> np.ndarray:
        """Integer code at ``level`` of each original value (indexed by original code)."""
        return self._codes[self._check_level(level)]

    def leaf_counts(self, level: int) -> np.ndarray:
        """How many original values each value at ``level`` covers (indexed by its code)."""
        return np.bincount(self.codes(level), minlength=len(self.labels(level)))

    def map_between(self, lower: int, upper: int) -> np.ndarray:
        """Code at ``upper`` of each code at ``lower`` (a lookup array)."""
        out = np.empty(len(self.labels(lower)), dtype=np.int64)
        out[self.codes(lower)] = self.codes(upper)
        return out

    def rows(self) -> list[list[str]]:
        """The hierarchy as a table, one row per original value."""
        return [
            [self._labels[j][self._codes[j][i]] for j in range(self.height + 1)]
            for i in range(len(self.values))
        ]

    def _check_level(self, level: int) -> int:
        if not 0 <= level <= self.height:
            raise KAnonymityError(
                f"hierarchy {self.name!r}: level {level} does not exist; levels are "
                f"0 to {self.height}"
            )
        return level

    # --- use -----------------------------------------------------------------------------
    def encode(self, column: pl.Series | Sequence[object]) -> np.ndarray:
        """Original codes of a column's values.

        Raises
        ------
        KAnonymityError
            If a value is null or not in the hierarchy (names the column and the value).
        """
        series = column if isinstance(column, pl.Series) else pl.Series(self.name, column)
        text = series.cast(pl.Utf8)
        codes = text.cast(pl.Enum(list(self.values)), strict=False).to_physical()
        if codes.null_count():
            bad = text.filter(codes.is_null())
            first = bad[0]
            raise KAnonymityError(
                f"column {self.name!r}: {bad.len()} value(s) are missing from its hierarchy "
                f"(first: {first!r}); add them to the hierarchy"
                + (" or fill nulls with 'n/a'" if first is None else "")
            )
        return codes.to_numpy().astype(np.int64)

    def generalise(self, values: Sequence[object] | pl.Series, level: int) -> list[str]:
        """Each value generalised to ``level``."""
        labels = np.array(self.labels(level), dtype=object)
        return list(labels[self.codes(level)[self.encode(values)]])

    def __repr__(self) -> str:
        return f"Hierarchy({self.name!r}, {len(self.values)} values, height {self.height})"


def read_hierarchies(folder: str | os.PathLike[str], *, sep: str = ";") -> dict[str, Hierarchy]:
    """Read every ``*hierarchy_<column>.csv`` in ``folder``, keyed by column name."""
    found = sorted(Path(folder).glob("*hierarchy_*.csv"))
    if not found:
        raise KAnonymityError(f"no '*hierarchy_<column>.csv' files in {folder}")
    return {h.name: h for h in (Hierarchy.from_csv(p, sep=sep) for p in found)}


# --- hierarchies for the customer table ------------------------------------------------------
def _band(width: int) -> Callable[[str], str]:
    def band(value: str) -> str:
        if value == NOT_APPLICABLE:
            return value
        low = int(value) // width * width
        return f"{low}-{low + width - 1}"

    return band


def _top(_: str) -> str:
    return TOP


def birth_year_hierarchy(first: int = 1900, last: int = 2029) -> Hierarchy:
    """Birth year → 5 → 10 → 20 years → ``*``; ``n/a`` (companies) stays apart until ``*``.

    Examples
    --------
    >>> birth_year_hierarchy().generalise([1984], 3)
    ['1980-1999']
    """
    years = [str(y) for y in range(first, last + 1)] + [NOT_APPLICABLE]
    return Hierarchy.from_functions("birth_year", years, [_band(5), _band(10), _band(20), _top])


@cache
def _prefix2_county() -> dict[str, str]:
    """Two-digit postcode prefix → the county holding most of its codes (reference data)."""
    table = pl.read_csv(reference_path("sweden_counties.csv"), infer_schema=False)
    out: dict[str, str] = {}
    for code, ranges in zip(table["county_code"], table["postal_prefix2_majority"], strict=True):
        for part in ranges.split(";"):
            lo, _, hi = part.partition("-")
            for p in range(int(lo), int(hi or lo) + 1):
                out[f"{p:02d}"] = code
    return out


@cache
def _county_names() -> dict[str, str]:
    c = counties_pl()
    return dict(zip(c["county_code"], c["county_name_short"], strict=True))


def postcode_hierarchy(values: Iterable[object] | None = None) -> Hierarchy:
    """Postcode: 5 digits → 3 → 2 digits → county → region (Götaland, Svealand, Norrland) → ``*``.

    A two-digit prefix can span counties; it generalises to the county that holds most of its
    codes (reference data, ``postal_prefix2_majority``), so the levels form a tree.

    Parameters
    ----------
    values : iterable, optional
        The postcodes to cover; default: every five-digit postcode in the reference data.

    Raises
    ------
    KAnonymityError
        If a postcode is not five digits or its two-digit prefix has no county.

    Examples
    --------
    >>> postcode_hierarchy(["11120"]).rows()
    [['11120', '111**', '11***', 'Stockholm', 'Svealand', '*']]
    """
    codes = postcodes_pl()["postcode"].to_list() if values is None else [str(v) for v in values]
    county_of = _prefix2_county()
    names = _county_names()
    rows = []
    for pc in dict.fromkeys(codes):
        if len(pc) != 5 or not pc.isdigit() or pc[:2] not in county_of:
            raise KAnonymityError(
                f"column 'postcode': value {pc!r} is not a Swedish five-digit postcode with a "
                "known two-digit prefix; correct the value or drop the row"
            )
        county = county_of[pc[:2]]
        rows.append(
            [pc, pc[:3] + "**", pc[:2] + "***", names[county], REGION_OF_COUNTY[county], TOP]
        )
    return Hierarchy("postcode", rows)


def municipality_hierarchy() -> Hierarchy:
    """Municipality code → county → region → ``*`` (all 290 municipalities)."""
    m = municipalities_pl()
    names = _county_names()
    rows = [
        [code, names[county], REGION_OF_COUNTY[county], TOP]
        for code, county in zip(m["municipality_code"], m["county_code"], strict=True)
    ]
    return Hierarchy("municipality_code", rows)


def county_hierarchy() -> Hierarchy:
    """County code → region → ``*`` (all 21 counties)."""
    return Hierarchy(
        "county_code", [[code, region, TOP] for code, region in REGION_OF_COUNTY.items()]
    )


#: SNI 2007 sections grouped into broad sectors.
_SECTORS = {
    **dict.fromkeys("A", "primary"),
    **dict.fromkeys("BCDE", "industry"),
    **dict.fromkeys("F", "construction"),
    **dict.fromkeys("GHI", "trade_transport_hospitality"),
    **dict.fromkeys("JKLMN", "business_services"),
    **dict.fromkeys("OPQ", "public_education_health"),
    **dict.fromkeys("RSTU", "other_services"),
}


def industry_hierarchy() -> Hierarchy:
    """SNI section → broad sector → ``*``; ``n/a`` (private customers) until ``*``."""
    rows = [[s, _SECTORS[s], TOP] for s in INDUSTRIES]
    return Hierarchy("industry", [*rows, [NOT_APPLICABLE, NOT_APPLICABLE, TOP]])


def size_band_hierarchy() -> Hierarchy:
    """Employees: 0, 1-9 → 0-9; 10-49, 50-249 → 10-249; 250+ → 250+; then ``*``."""
    coarse = {"0": "0-9", "1-9": "0-9", "10-49": "10-249", "50-249": "10-249", "250+": "250+"}
    rows = [[b, coarse[b], TOP] for b in SIZE_BANDS]
    return Hierarchy("size_band", [*rows, [NOT_APPLICABLE, NOT_APPLICABLE, TOP]])


def customer_type_hierarchy() -> Hierarchy:
    """business, sole_trader → business; private → private; then ``*``."""
    coarse = {"business": "business", "sole_trader": "business", "private": "private"}
    return Hierarchy("customer_type", [[t, coarse[t], TOP] for t in PERSON_TYPES])


def spend_band_hierarchy() -> Hierarchy:
    """Spend band → below/above 20 000 SEK → ``*``."""
    rows = [[b, "0-19999" if i < 3 else "20000+", TOP] for i, b in enumerate(SPEND_BANDS)]
    return Hierarchy("spend_band", rows)


def flat_hierarchy(name: str, values: Iterable[object]) -> Hierarchy:
    """Value → ``*`` (gender, segment, any attribute without a natural grouping).

    Examples
    --------
    >>> flat_hierarchy("segment", ["paper", "toner_ink"]).labels(1)
    ('*',)
    """
    return Hierarchy.from_functions(name, values, [_top])


def segment_hierarchy() -> Hierarchy:
    """Segment (a product category, AL-2) → ``*``."""
    return flat_hierarchy("segment", PRODUCT_CATEGORIES)


# --- built-in hierarchies for declared columns of a real export (segments ingest) ----------
#: Dates a date hierarchy covers: a public, fixed range (never the data's own first and last).
DATE_RANGE = (dt.date(1970, 1, 1), dt.date(2039, 12, 31))


def date_hierarchy(
    name: str, first: dt.date = DATE_RANGE[0], last: dt.date = DATE_RANGE[1]
) -> Hierarchy:
    """ISO date → month → quarter → year → ``*`` over a public range; ``n/a`` apart.

    Examples
    --------
    >>> date_hierarchy("signup_date").generalise(["1997-05-17"], 2)
    ['1997-Q2']
    """
    days = (last - first).days + 1
    values = [(first + dt.timedelta(days=d)).isoformat() for d in range(days)]

    def month(v: str) -> str:
        return v if v == NOT_APPLICABLE else v[:7]

    def quarter(v: str) -> str:
        return v if v == NOT_APPLICABLE else f"{v[:4]}-Q{(int(v[5:7]) - 1) // 3 + 1}"

    def year(v: str) -> str:
        return v if v == NOT_APPLICABLE else v[:4]

    return Hierarchy.from_functions(name, [*values, NOT_APPLICABLE], [month, quarter, year, _top])


def number_hierarchy(
    name: str, low: int, high: int, widths: Sequence[int] = (10, 100, 1000)
) -> Hierarchy:
    """Integer → bands of each width (public cut points) → ``*``; ``n/a`` apart.

    Examples
    --------
    >>> number_hierarchy("orders", 0, 999).generalise(["42"], 2)
    ['0-99']
    """
    values = [str(v) for v in range(low, high + 1)] + [NOT_APPLICABLE]
    return Hierarchy.from_functions(name, values, [*(_band(w) for w in widths), _top])


@cache
def country_hierarchy() -> Hierarchy:
    """ISO 3166 alpha-2 country → UN M49 region → ``*`` (the public table of
    ``segments/reference/countries.csv``, not the countries the data contains); ``n/a``
    (unknown) apart until ``*``."""
    table = pl.read_csv(reference_path("countries.csv"), infer_schema=False)
    rows = [[c, r, TOP] for c, r in zip(table["country_code"], table["region"], strict=True)]
    return Hierarchy("country", [*rows, [NOT_APPLICABLE, NOT_APPLICABLE, TOP]])
