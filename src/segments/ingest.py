"""Real transaction exports into ``W/raw`` (``segments ingest``, bring your own data).

:func:`ingest` reads an export (CSV with any separator and declared encoding, whitespace
text, gzip, Parquet) with an :class:`IngestMapping` (a small TOML file: columns, date format,
currency and public rate, how returns are marked, non-product codes, the product taxonomy, an
optional public geography hierarchy, optional customer attributes), nets returns per
customer, month and product (:func:`net_returns`, clipped at zero), drops and counts rows
without a customer and non-product codes, and writes the raw tables of the real schema
(:data:`segments.schema.REAL_CUSTOMERS`, ``REAL_PRODUCTS``, ``ORDERS``, ``ORDER_LINES``) with a
manifest that says ``synthetic: false``. :func:`public_domains` gives later stages the
declared domains (categories, geography) they key features and releases by; prepare reads the
tables through :func:`load_real_raw`. docs/bring-your-own-data.md describes every key.

:func:`load_transactions` is the older in-memory conversion kept for callers of the public
API (no netting, no drops; it writes nothing and later stages do not read its result); it
reads the file and checks the mapped columns through the same :func:`read_export` and
mapped-column check as :func:`ingest`, so an export is parsed one way.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pandas as pd
import polars as pl

from segments._tables import read_table
from segments.exceptions import PolicyError, SchemaError, WorkspaceError
from segments.prepare.pseudonym import KEY_ENV_VAR, PseudonymKey, load_key
from segments.schema import (
    CHANNELS,
    CUSTOMER_TYPES,
    CUSTOMERS,
    ORDER_LINES,
    ORDERS,
    REAL_CUSTOMERS,
    REAL_PRODUCTS,
    SCHEMA_VERSION,
    check_foreign_key,
    validate,
)
from segments.workspace import MANIFEST, Workspace, parquet_digests, sha256_file, write_json

# The stage's polars steps (read_export, net_returns, load_real_raw, geography_table) are
# internal: an analyst calls ingest, load_transactions and public_domains (pandas out).
__all__ = [
    "GEOGRAPHY_HIERARCHIES",
    "IngestMapping",
    "IngestResult",
    "TransactionMapping",
    "Transactions",
    "ingest",
    "load_transactions",
    "public_domains",
    "PublicDomains",
    "read_real_manifest",
]


@dataclass(frozen=True)
class _ExportColumns:
    """The source columns every mapping of an export names (both readers' first fields)."""

    customer_id: str
    order_date: str
    quantity: str
    amount: str | None = None
    unit_price: str | None = None
    order_id: str | None = None
    product_id: str | None = None


@dataclass(frozen=True)
class _ExportFormat:
    """How an export's file is read (:func:`read_export`): the reading options an
    :class:`IngestMapping` carries, for a reader that has no ingest mapping."""

    format: str = "csv"
    separator: str = ","
    encoding: str = "utf-8"
    header: bool = True
    column_names: tuple[str, ...] | None = None
    date_format: str = "%Y-%m-%d"
    #: A blank line of a whitespace text file is no row (what load_transactions always did;
    #: segments ingest reads it as a row without a customer, dropped and counted).
    skip_blank_lines: bool = False


@dataclass(frozen=True)
class TransactionMapping(_ExportColumns):
    """Which source column holds which field, and how to read the file.

    Parameters
    ----------
    customer_id, order_date, quantity : str
        Source columns (required).
    amount : str, optional
        Line total in the source currency; ``unit_price`` is then ``amount / quantity``.
    unit_price : str, optional
        Unit price in the source currency (give ``amount`` or ``unit_price``).
    order_id : str, optional
        Source order id; without it, one order per customer and day.
    product_id : str, optional
        Source product id; without it every line is product 1 (unknown product).
    channel : str, optional
        Source channel column (values web, store, phone); else ``default_channel``.
    default_channel : str
    date_format : str
        ``strptime`` format of ``order_date``.
    separator : str
        Field separator, or ``"whitespace"`` for runs of spaces (CDNOW).
    has_header : bool
    column_names : tuple of str, optional
        Column names for a file without a header.
    sek_per_unit : float
        SEK per unit of the source currency: an exchange rate the caller states (public).

    Examples
    --------
    >>> TransactionMapping(customer_id="id", order_date="date", quantity="n", amount="usd",
    ...                    sek_per_unit=10.5).default_channel
    'web'
    """

    channel: str | None = None
    default_channel: str = "web"
    date_format: str = "%Y%m%d"
    separator: str = "whitespace"
    has_header: bool = True
    column_names: tuple[str, ...] | None = None
    sek_per_unit: float = 1.0

    def __post_init__(self) -> None:
        if (self.amount is None) == (self.unit_price is None):
            raise ValueError(
                "mapping: give exactly one of 'amount' (line total) or "
                "'unit_price'; fix: name the source column that holds prices"
            )
        if self.default_channel not in CHANNELS:
            raise ValueError(
                f"mapping: 'default_channel' must be one of {CHANNELS}, got "
                f"{self.default_channel!r}"
            )
        if not self.sek_per_unit > 0:
            raise ValueError(
                f"mapping: 'sek_per_unit' must be positive, got "
                f"{self.sek_per_unit!r}; fix: pass the exchange rate to SEK"
            )


@dataclass(frozen=True)
class Transactions:
    """A real export in the raw schema.

    Attributes
    ----------
    orders, order_lines : pandas.DataFrame
        Validated against :data:`segments.schema.ORDERS` and ``ORDER_LINES``.
    customers : pandas.DataFrame
        ``customer_id``, ``source_customer_id``, ``geography_known`` (False),
        ``postcode``, ``municipality_code``, ``county_code`` (null: unknown).
    products : pandas.DataFrame
        ``product_id`` and ``source_product_id`` (categories unknown).
    source : str
        The file read.
    geography : str
        ``"unknown"``: real exports carry no geography.
    """

    orders: pd.DataFrame
    order_lines: pd.DataFrame
    customers: pd.DataFrame
    products: pd.DataFrame
    source: str
    geography: str = "unknown"


def _parse(df: pl.DataFrame, column: str, dtype: Any, source: str, what: str) -> pl.Series:
    parsed = df[column].str.strip_chars().cast(dtype, strict=False)
    bad = df.filter(parsed.is_null() & df[column].is_not_null())[column]
    if len(bad):
        raise SchemaError(
            f"table 'transactions' ({source}), column {column!r}: rule '{what}' fails for "
            f"{len(bad)} value(s) (first: {bad[0]!r}); fix: clean the export or the mapping"
        )
    return parsed


def _dense_ids(values: pl.Series) -> pl.Series:
    """Integer ids >= 1: the values themselves if all are positive integers, else ranks."""
    as_int = values.str.strip_chars().cast(pl.Int64, strict=False)
    if as_int.null_count() == 0 and (as_int >= 1).all():
        return as_int
    return values.rank("dense").cast(pl.Int64)


def load_transactions(
    path: str | os.PathLike[str],
    mapping: TransactionMapping | dict[str, Any],
    *,
    as_of: dt.date | None = None,
) -> Transactions:
    r"""Read a real transaction export into the ``orders`` / ``order_lines`` schema.

    Parameters
    ----------
    path : path
        The export (CSV, or whitespace-separated text such as CDNOW's).
    mapping : TransactionMapping or dict
        Source columns and reading options (a dict is passed to :class:`TransactionMapping`).
    as_of : date, optional
        Refuse dates after it.

    Returns
    -------
    Transactions
        Orders and lines validated against the raw schema; geography marked unknown.

    Raises
    ------
    SchemaError
        Naming the table, column, rule, an offending value and the fix (missing mapped
        column, unparseable date or number, negative quantity, date after ``as_of``...).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.txt"
    >>> _ = p.write_text("id date n usd\r\n 00001 19970101 2 11.50\r\n")
    >>> t = load_transactions(p, {"customer_id": "id", "order_date": "date",
    ...                           "quantity": "n", "amount": "usd"})
    >>> t.order_lines["unit_price_sek"].to_list(), t.geography
    ([5.75], 'unknown')
    """
    m = mapping if isinstance(mapping, TransactionMapping) else TransactionMapping(**mapping)
    path = Path(path)
    source = path.name
    text = m.separator == "whitespace"
    df = read_export(  # the one reader of an export's file, as segments ingest reads it
        path,
        _ExportFormat(
            format="text" if text else "csv",
            separator=" " if text else m.separator,
            header=m.has_header,
            column_names=m.column_names,
            date_format=m.date_format,
            skip_blank_lines=True,
        ),
    )
    _require_mapped_columns(df, m, f"'transactions' ({source})")
    date = df[m.order_date].str.strip_chars().str.to_date(m.date_format, strict=False)
    bad = df.filter(date.is_null())[m.order_date]
    if len(bad):
        raise SchemaError(
            f"table 'transactions' ({source}), column {m.order_date!r}: rule 'date in format "
            f"{m.date_format}' fails for {len(bad)} value(s) (first: {bad[0]!r}); fix: clean "
            "the export or set mapping.date_format"
        )
    quantity = _parse(df, m.quantity, pl.Int64, source, "integer quantity")
    price_col = m.amount if m.amount is not None else m.unit_price
    assert price_col is not None
    price = _parse(df, price_col, pl.Float64, source, "number")
    unit = price / quantity if m.amount is not None else price
    lines = pl.DataFrame(
        {
            "source_customer_id": df[m.customer_id].str.strip_chars(),
            "customer_id": _dense_ids(df[m.customer_id]),
            "order_date": date,
            "quantity": quantity,
            "unit_price_sek": (unit * m.sek_per_unit).round(2),
            "source_product_id": (
                df[m.product_id].str.strip_chars()
                if m.product_id
                else pl.repeat("unknown", df.height, eager=True)
            ),
            "channel": (
                df[m.channel].str.strip_chars().str.to_lowercase()
                if m.channel
                else pl.repeat(m.default_channel, df.height, eager=True)
            ),
            "source_order": (
                df[m.order_id].str.strip_chars()
                if m.order_id
                else pl.repeat(None, df.height, dtype=pl.Utf8, eager=True)
            ),
        }
    ).with_row_index("_row")
    # order ids follow the calendar; a source order id splits same-day orders further
    order_key = ["order_date", "customer_id", *(["source_order"] if m.order_id else [])]
    lines = (
        lines.with_columns(
            pl.col("source_product_id").rank("dense").cast(pl.Int32).alias("product_id"),
            pl.struct(order_key).rank("dense").cast(pl.Int64).alias("order_id"),
        )
        .sort("order_id", "_row")
        .with_columns((pl.int_range(pl.len()).over("order_id") + 1).cast(pl.Int16).alias("line_no"))
    )
    orders = (
        lines.group_by("order_id", maintain_order=True)
        .agg(pl.col("customer_id").first(), pl.col("order_date").first(), pl.col("channel").first())
        .select(pl.col(c.name).cast(c.dtype) for c in ORDERS.columns)
    )
    order_lines = lines.select(
        pl.col(c.name).cast(c.dtype, strict=False) for c in ORDER_LINES.columns
    )
    validate(orders, ORDERS, as_of=as_of)
    validate(order_lines, ORDER_LINES, as_of=as_of)
    customers = (
        lines.group_by("customer_id")
        .agg(pl.col("source_customer_id").first())
        .sort("customer_id")
        .with_columns(
            pl.lit(False).alias("geography_known"),
            *(
                pl.lit(None, pl.Utf8).alias(c)
                for c in ("postcode", "municipality_code", "county_code")
            ),
        )
    )
    products = (
        lines.group_by("product_id").agg(pl.col("source_product_id").first()).sort("product_id")
    )
    # validated in polars; handed over as pandas, the API's one table type
    return Transactions(
        orders.to_pandas(),
        order_lines.to_pandas(),
        customers.to_pandas(),
        products.to_pandas(),
        str(path),
    )


# =========================================================================================
# segments ingest: a real export + a TOML mapping → W/raw (synthetic: false)
# =========================================================================================
#: Geography hierarchies a mapping may declare; each is a public table shipped with segments.
GEOGRAPHY_HIERARCHIES = ("country", "sweden_municipality", "sweden_county")
_FORMATS = ("csv", "text", "parquet")
_PERIODS = ("month",)
#: Raw tables of real data (the synthetic generator's surveys and truth have no counterpart).
REAL_RAW_TABLES = ("customers", "products", "orders", "order_lines")


def _fail(column: str, rule: str, rows: int, fix: str, first: object = None) -> SchemaError:
    example = f" (first: {first!r})" if first is not None else ""
    return SchemaError(
        f"table 'export', column {column!r}: rule '{rule}' fails for {rows} row(s){example}; "
        f"fix: {fix}"
    )


def _refuse_any(bad: pl.Series, column: str, rule: str, fix: str) -> None:
    """Refuse ``column`` when ``bad`` (its values that break ``rule``) is not empty, counting
    them and naming the first."""
    if len(bad):
        raise _fail(column, rule, len(bad), fix, first=bad[0])


def _mapping_error(key: str, problem: str, fix: str) -> SchemaError:
    return SchemaError(f"mapping, key {key!r}: {problem}; fix: {fix}")


#: Where the mapping file writes each :class:`IngestMapping` field: per ``[section]``, its
#: keys, ``key=field`` where the field has another name (the field's type converts the value).
_MAPPING_KEYS = {
    "source": "format separator encoding decimal header column_names date_format",
    "columns": "customer_id order_date quantity amount unit_price order_id product_id "
    "description channel",
    "currency": "code=currency sek_per_unit rate_source",
    "returns": "negative_quantity=returns_negative_quantity cancellation_prefix",
    "products": "non_product_codes categories category category_file default_category",
    "channels": "column=channel values=channels default=default_channel",
    "geography": "column=geography hierarchy=geography_hierarchy values=geography_values",
    "customers": "type=customer_type id_type=customer_id_type birth_year gender gender_values",
}


def _mapping_sections() -> dict[str, dict[str, str]]:
    """Section -> key -> field, from :data:`_MAPPING_KEYS`."""
    return {
        section: {k: f or k for k, _, f in (item.partition("=") for item in keys.split())}
        for section, keys in _MAPPING_KEYS.items()
    }


def _convert(annotation: Any, value: Any) -> Any:
    """A TOML value as the field's declared type (``tuple[str, ...] | None`` -> tuple)."""
    text = str(annotation)
    for prefix, convert in (("tuple", tuple), ("dict", dict), ("bool", bool), ("float", float)):
        if text.startswith(prefix):
            return convert(value)
    return str(value)


@dataclass(frozen=True)
class IngestMapping(_ExportColumns):
    """How to read one real export: a small TOML file the controller writes (public facts).

    Everything here is about the *format* of the export or a public fact (an exchange rate, a
    product taxonomy, a geography hierarchy); nothing is learnt from the private rows. The
    public domains (categories, regions, channels) later stages key their releases by are
    taken from here, never from the values the data happens to contain.

    Parameters
    ----------
    customer_id, order_date, quantity : str
        Source columns (required).
    amount, unit_price : str, optional
        Line total or unit price in the source currency (exactly one).
    order_id, product_id, description, channel, geography : str, optional
        Source columns.
    format : {'csv', 'text', 'parquet'}
        ``text`` is whitespace-separated (CDNOW); ``.gz`` files are decompressed.
    separator, encoding, decimal : str
        CSV field separator, text encoding (any Python codec) and decimal mark.
    header : bool
    column_names : tuple of str, optional
        Names of the columns of a file without a header.
    date_format : str
        ``strptime`` format of ``order_date`` (a time part is allowed and dropped).
    currency : str
        ISO code of the source currency.
    sek_per_unit : float
        SEK per unit of the source currency: a public rate the controller states.
    rate_source : str
        Where the rate comes from (recorded in the manifest).
    returns_negative_quantity : bool
        A negative quantity marks a return (netted, see :func:`net_returns`).
    cancellation_prefix : str, optional
        An order id starting with it marks a cancellation (netted like a return).
    non_product_codes : tuple of str
        Product codes that are not products (postage, fees, discounts): dropped, counted.
    categories : tuple of str
        The public product taxonomy (the domain of ``category``).
    category : str, optional
        The one category of every product (a shop selling one kind of thing).
    category_file : str, optional
        CSV ``product_code,category`` (a public catalogue file, relative to the mapping).
    default_category : str, optional
        Category of products not in ``category_file``.
    channels : dict, optional
        Source channel value → ``web`` | ``store`` | ``phone``.
    default_channel : str
        Channel of every order when ``channel`` is not mapped.
    geography_hierarchy : str, optional
        ``country`` (ISO alpha-2 → UN M49 region), ``sweden_municipality`` (municipality →
        county) or ``sweden_county``.
    geography_values : dict, optional
        Source value → code of the hierarchy (``"United Kingdom" = "GB"``).
    customer_type : {'private', 'business'}
        Every customer's type (exports rarely say).
    customer_id_type : {'text', 'integer', 'text-casefold'}
        How customer ids compare across exports (``[customers] id_type``): ``integer`` by
        value, so "00007" and "7" are one person (and one erasure).
    birth_year, gender : str, optional
        Optional customer attributes: source columns (a person's latest non-empty value).
    gender_values : dict, optional
        Source value → ``F`` | ``M`` (others are unknown).
    source_path : str, optional
        The mapping file (for relative paths and the manifest).
    """

    description: str | None = None
    channel: str | None = None
    geography: str | None = None
    # the reading options' defaults have one owner: _ExportFormat (read_export reads both)
    format: str = _ExportFormat.format
    separator: str = _ExportFormat.separator
    encoding: str = _ExportFormat.encoding
    decimal: str = "."
    header: bool = _ExportFormat.header
    column_names: tuple[str, ...] | None = _ExportFormat.column_names
    date_format: str = _ExportFormat.date_format
    currency: str = "SEK"
    sek_per_unit: float = 1.0
    rate_source: str = ""
    returns_negative_quantity: bool = True
    cancellation_prefix: str | None = None
    non_product_codes: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    category: str | None = None
    category_file: str | None = None
    default_category: str | None = None
    channels: dict[str, str] = field(default_factory=dict)
    default_channel: str = "web"
    geography_hierarchy: str | None = None
    geography_values: dict[str, str] = field(default_factory=dict)
    customer_type: str = "private"
    customer_id_type: str = "text"
    birth_year: str | None = None
    gender: str | None = None
    gender_values: dict[str, str] = field(default_factory=dict)
    source_path: str | None = None

    def __post_init__(self) -> None:
        if (self.amount is None) == (self.unit_price is None):
            raise _mapping_error(
                "columns.amount / columns.unit_price",
                "give exactly one of them",
                "name the source column holding the line total or the unit price",
            )
        if self.format not in _FORMATS:
            raise _mapping_error(
                "source.format", f"{self.format!r} is not one of {_FORMATS}", "choose one"
            )
        if not self.sek_per_unit > 0:
            raise _mapping_error(
                "currency.sek_per_unit",
                f"must be positive, got {self.sek_per_unit!r}",
                "state the public exchange rate to SEK",
            )
        if self.currency != "SEK" and not self.rate_source:
            raise _mapping_error(
                "currency.rate_source",
                f"currency {self.currency} needs the source of its public rate",
                "name it (e.g. 'Riksbank annual average 1997')",
            )
        if not self.categories:
            raise _mapping_error(
                "products.categories",
                "the public product taxonomy is empty",
                "list the categories (the data's own taxonomy or a public one)",
            )
        repeated = sorted({c for c in self.categories if self.categories.count(c) > 1})
        if repeated:  # a release's per-person bound counts the public categories
            raise _mapping_error(
                "products.categories",
                f"rule 'each public category listed once' (a release's per-person bound "
                f"counts the categories) fails for {len(repeated)} value(s) "
                f"(first: {repeated[0]!r})",
                "list each category once",
            )
        if self.category is None and self.category_file is None:
            raise _mapping_error(
                "products.category / products.category_file",
                "no way to give a product its category",
                "set one category for all products or a public code → category file",
            )
        for key, value in (
            ("category", self.category),
            ("default_category", self.default_category),
        ):
            if value is not None and value not in self.categories:
                raise _mapping_error(
                    f"products.{key}",
                    f"{value!r} is not in products.categories {list(self.categories)}",
                    "add it to the taxonomy or correct it",
                )
        bad_channels = {v for v in [*self.channels.values(), self.default_channel]} - set(CHANNELS)
        if bad_channels:
            raise _mapping_error(
                "channels", f"{sorted(bad_channels)} not in {list(CHANNELS)}", "map onto those"
            )
        if self.geography_hierarchy is not None and self.geography_hierarchy not in (
            GEOGRAPHY_HIERARCHIES
        ):
            raise _mapping_error(
                "geography.hierarchy",
                f"{self.geography_hierarchy!r} is not one of {GEOGRAPHY_HIERARCHIES}",
                "choose one (or leave geography out)",
            )
        if (self.geography is None) != (self.geography_hierarchy is None):
            raise _mapping_error(
                "geography",
                "give both the column and the hierarchy, or neither",
                "set geography.column and geography.hierarchy",
            )
        from segments.prepare.subject_log import SOURCE_ID_TYPES

        if self.customer_id_type not in SOURCE_ID_TYPES:
            raise _mapping_error(
                "customers.id_type",
                f"{self.customer_id_type!r} not in {SOURCE_ID_TYPES}",
                "choose how the export's customer ids compare (integer: by value)",
            )
        if self.customer_type not in CUSTOMER_TYPES:
            raise _mapping_error(
                "customers.type", f"{self.customer_type!r} not in {CUSTOMER_TYPES}", "choose one"
            )

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> IngestMapping:
        """Read a mapping file (see ``docs/bring-your-own-data.md`` for every key).

        Raises
        ------
        SchemaError
            For an unreadable file, an unknown section or key, or a broken rule above.
        """
        import tomllib

        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise _mapping_error(
                str(p), f"cannot be read as TOML ({exc})", "fix the file"
            ) from None
        return cls.from_dict(data, source_path=str(p))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source_path: str | None = None) -> IngestMapping:
        """Build from the TOML's sections (``source``, ``columns``, ``currency``, ``returns``,
        ``products``, ``channels``, ``geography``, ``customers``)."""
        sections = _mapping_sections()
        kwargs: dict[str, Any] = {"source_path": source_path}
        for section, body in data.items():
            if section not in sections or not isinstance(body, dict):
                raise _mapping_error(
                    section, "unknown section", f"use only [{'], ['.join(sections)}]"
                )
            for key, value in body.items():
                if key not in sections[section]:
                    raise _mapping_error(
                        f"{section}.{key}",
                        "unknown key",
                        f"use one of {sorted(sections[section])}",
                    )
                name = sections[section][key]
                kwargs[name] = _convert(cls.__dataclass_fields__[name].type, value)
        for required in ("customer_id", "order_date", "quantity"):
            if required not in kwargs:
                raise _mapping_error(
                    f"columns.{required}", "missing", "name the source column that holds it"
                )
        return cls(**kwargs)

    def relative(self, name: str) -> Path:
        """A path named in the mapping, relative to the mapping file."""
        base = Path(self.source_path).parent if self.source_path else Path.cwd()
        return (base / name).resolve()


def read_export(
    path: str | os.PathLike[str], mapping: IngestMapping | _ExportFormat
) -> pl.DataFrame:
    """Read an export as strings (CSV with any separator and declared encoding, whitespace
    text, gzip, Parquet), one row per source line: the one reader of an export's file, for
    ``segments ingest`` and :func:`load_transactions` alike.

    ``mapping`` needs only the reading options (``format``, ``separator``, ``encoding``,
    ``header``, ``column_names``, ``date_format``): an :class:`IngestMapping`, or the
    :class:`_ExportFormat` :func:`load_transactions` derives from a
    :class:`TransactionMapping`.

    Raises
    ------
    SchemaError
        The file cannot be decoded with the declared encoding or parsed with the declared
        separator, naming the rule and the fix (never a raw parser error).
    """
    p = Path(path)
    if mapping.format == "parquet":
        try:
            frame = pl.read_parquet(p)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise _fail(p.name, "readable Parquet", 0, f"re-export the file ({exc})") from None
        return frame.with_columns(
            pl.col(c).dt.strftime(mapping.date_format)
            if frame.schema[c].is_temporal()
            else pl.col(c).cast(pl.Utf8)
            for c in frame.columns
        )
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    try:
        text = raw.decode(mapping.encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _fail(
            "(file)",
            f"text in the declared encoding {mapping.encoding}",
            1,
            f"declare the export's encoding in [source] encoding (byte {exc.start}, line "
            f"{line} is not {mapping.encoding})",
        ) from None
    except LookupError:
        raise _mapping_error(
            "source.encoding", f"{mapping.encoding!r} is not a known encoding", "use e.g. utf-8"
        ) from None
    separator = mapping.separator
    if mapping.format == "text":  # runs of blanks separate fields; leading blanks are padding
        lines = (" ".join(line.split()) for line in text.splitlines())
        if getattr(mapping, "skip_blank_lines", False):  # load_transactions' reading
            lines = (line for line in lines if line)
        text = "\n".join(lines)
        separator = " "
    names = list(mapping.column_names) if mapping.column_names else None
    try:
        frame = pl.read_csv(
            io.StringIO(text).read().encode("utf-8"),
            separator=separator,
            has_header=mapping.header,
            infer_schema=False,
            new_columns=names,
            quote_char='"',
        )
    except pl.exceptions.PolarsError as exc:
        first = str(exc).splitlines()[0][:160]
        raise _fail(
            "(file)",
            f"rows of equal width split on {separator!r}",
            1,
            f"declare the export's separator in [source] separator ({first})",
        ) from None
    if frame.width == 1 and mapping.format == "csv":
        raise _fail(
            frame.columns[0],
            f"fields separated by {separator!r}",
            frame.height,
            "the file has a single column: declare its separator in [source] separator "
            "(';' or ',')",
        )
    return frame


def _require_mapped_columns(
    frame: pl.DataFrame, m: IngestMapping | TransactionMapping, table: str = "'export'"
) -> None:
    """Refuse an export lacking a column the mapping names (``table``: how the refusal
    names the export)."""
    mapped = {
        key: getattr(m, key, None)
        for key in (
            "customer_id",
            "order_date",
            "quantity",
            "amount",
            "unit_price",
            "order_id",
            "product_id",
            "description",
            "channel",
            "geography",
            "birth_year",
            "gender",
        )
        if getattr(m, key, None) is not None
    }
    for key, column in mapped.items():
        if column not in frame.columns:
            raise SchemaError(
                f"table {table}, column {column!r}: rule 'mapped column present' fails for "
                f"every row (mapping {key} = {column!r}; the file has {frame.columns}); fix: "
                "correct the mapping's [columns] or the export's separator"
            )


def _strip(frame: pl.DataFrame, column: str | None) -> pl.Series | None:
    if column is None:
        return None
    values = frame[column].str.strip_chars()
    return values.set(values == "", None)


def _number(values: pl.Series, column: str, dtype: Any, decimal: str, rule: str) -> pl.Series:
    text = values.str.strip_chars()
    if decimal != ".":
        text = text.str.replace_all(".", "", literal=True).str.replace(decimal, ".", literal=True)
    parsed = text.cast(dtype, strict=False)
    bad = values.filter(parsed.is_null() & text.is_not_null() & (text != ""))
    _refuse_any(bad, column, rule, "clean the export or set [source] decimal")
    missing = int((text.is_null() | (text == "")).sum())
    if missing:
        raise _fail(column, f"{rule}, not empty", missing, "fill or drop those rows in the export")
    return parsed


def _dates(values: pl.Series, column: str, fmt: str) -> pl.Series:
    text = values.str.strip_chars()
    if any(code in fmt for code in ("%H", "%M", "%S", "%I", "%p")):
        parsed = text.str.to_datetime(fmt, strict=False).dt.date()
    else:
        parsed = text.str.to_date(fmt, strict=False)
    _refuse_any(
        values.filter(parsed.is_null()),
        column,
        f"date in format {fmt}",
        "set [source] date_format to the export's format",
    )
    return parsed


def _birth_years(frame: pl.DataFrame, column: str) -> pl.Series:
    values = _strip(frame, column)
    assert values is not None
    years = values.cast(pl.Int16, strict=False)
    _refuse_any(
        values.filter(values.is_not_null() & (years.is_null() | (years < 1890) | (years > 2030))),
        column,
        "birth year between 1890 and 2030",
        "clean the column or leave [customers] birth_year out",
    )
    return years


def _genders(frame: pl.DataFrame, m: IngestMapping) -> pl.Series:
    assert m.gender is not None
    values = _strip(frame, m.gender)
    assert values is not None
    lookup = m.gender_values or {"F": "F", "M": "M"}
    coded = values.replace_strict(lookup, default=None, return_dtype=pl.Utf8)
    _refuse_any(
        values.filter(values.is_not_null() & coded.is_null()),
        m.gender,
        "value listed in [customers] gender_values",
        'map every value onto F or M (e.g. gender_values = {female = "F"})',
    )
    return coded


def _category_of(codes: pl.Series, m: IngestMapping) -> pl.Series:
    if m.category_file is None:
        return pl.repeat(m.category, len(codes), dtype=pl.Utf8, eager=True)
    path = m.relative(m.category_file)
    try:
        table = pl.read_csv(path, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise _mapping_error(
            "products.category_file", f"cannot read {path} ({exc})", "give a CSV"
        ) from None
    if table.columns[:2] != ["product_code", "category"]:
        raise _mapping_error(
            "products.category_file",
            f"{path.name} has columns {table.columns}",
            "give a CSV with header product_code,category",
        )
    outside = sorted(set(table["category"]) - set(m.categories))
    if outside:
        raise _mapping_error(
            "products.category_file",
            f"categories {outside[:5]} are not in products.categories",
            "add them to the taxonomy or correct the file",
        )
    lookup = dict(zip(table["product_code"], table["category"], strict=True))
    mapped = codes.replace_strict(lookup, default=m.default_category, return_dtype=pl.Utf8)
    unmapped = codes.filter(mapped.is_null())
    if len(unmapped):
        raise _fail(
            "product_id",
            f"product code listed in {path.name}",
            len(unmapped),
            "add the codes to the category file, or set products.default_category",
            first=unmapped[0],
        )
    return mapped


def geography_table(hierarchy: str) -> pl.DataFrame:
    """The public table of a declared geography hierarchy: ``code`` (level 0) and ``parent``
    (level 1; the top level is ``*``).

    Examples
    --------
    >>> geography_table("country").filter(pl.col("code") == "SE")["parent"].item()
    'Northern Europe'
    """
    from segments.geography import REGION_OF_COUNTY, counties_pl, municipalities_pl, reference_path

    if hierarchy == "country":
        table = pl.read_csv(reference_path("countries.csv"), infer_schema=False)
        return table.select(pl.col("country_code").alias("code"), pl.col("region").alias("parent"))
    if hierarchy == "sweden_municipality":
        return municipalities_pl().select(
            pl.col("municipality_code").alias("code"), pl.col("county_code").alias("parent")
        )
    if hierarchy == "sweden_county":
        return counties_pl().select(
            pl.col("county_code").alias("code"),
            pl.col("county_code").replace_strict(REGION_OF_COUNTY).alias("parent"),
        )
    raise _mapping_error("geography.hierarchy", f"unknown {hierarchy!r}", "see the docs")


def _geography(values: pl.Series, m: IngestMapping) -> pl.Series:
    assert m.geography is not None and m.geography_hierarchy is not None
    coded = values.replace(m.geography_values) if m.geography_values else values
    known = set(geography_table(m.geography_hierarchy)["code"])
    outside = coded.filter(coded.is_not_null() & ~coded.is_in(list(known)))
    if len(outside):
        raise _fail(
            m.geography,
            f"value in the declared {m.geography_hierarchy} hierarchy",
            len(outside),
            'map the value to a code in [geography] values (e.g. "United Kingdom" = '
            '"GB"), or leave the column out',
            first=outside[0],
        )
    return coded


def net_returns(lines: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Net returns against purchases per customer, month and product; clip at zero.

    A return (or cancellation) of ``q`` units cancels ``q`` units of the same customer's
    purchases of that product in the same calendar month, latest purchase first, at the
    purchase's price. Units returned beyond what was bought that month (goods bought before
    the export or in an earlier month) cannot be matched: the net is **clipped at zero**, so
    a person's spend in a period is never negative; those units and their value are counted.

    Parameters
    ----------
    lines : polars.DataFrame
        ``customer``, ``order_date``, ``product_code``, ``quantity`` (> 0), ``value``
        (quantity × unit price, ≥ 0), ``is_return`` and any other columns (kept).

    Returns
    -------
    (polars.DataFrame, dict)
        The purchase lines left (quantities reduced, fully returned lines dropped) and
        ``{"return_rows", "units_netted", "value_netted", "units_clipped",
        "value_clipped", "lines_cancelled"}``.

    Examples
    --------
    >>> import datetime as dt
    >>> d = dt.date(2020, 1, 5)
    >>> lines = pl.DataFrame({"customer": ["a", "a", "a"], "order_date": [d, d, d],
    ...     "product_code": ["x", "x", "x"], "quantity": [2, 3, 4],
    ...     "value": [20.0, 30.0, 40.0], "is_return": [False, False, True]})
    >>> kept, summary = net_returns(lines)
    >>> kept["quantity"].to_list(), summary["units_netted"], summary["units_clipped"]
    ([1], 4, 0)
    """
    key = ["customer", "_month", "product_code"]
    lines = lines.with_columns(pl.col("order_date").dt.truncate("1mo").alias("_month"))
    returns = (
        lines.filter(pl.col("is_return"))
        .group_by(key)
        .agg(pl.col("quantity").sum().alias("_returned"), pl.col("value").sum().alias("_rvalue"))
    )
    buys = lines.filter(~pl.col("is_return")).with_row_index("_pos")
    if returns.height == 0:
        return buys.drop("_pos", "_month"), {
            "return_rows": 0,
            "units_netted": 0,
            "value_netted": 0.0,
            "units_clipped": 0,
            "value_clipped": 0.0,
            "lines_cancelled": 0,
        }
    latest_first = (
        buys.join(returns, on=key, how="left")
        .with_columns(pl.col("_returned").fill_null(0))
        .sort([*key, "order_date", "_pos"], descending=[False, False, False, True, True])
    )
    # units of later purchases in the group (already used up by the return before this line)
    before = pl.col("quantity").cum_sum().over(key) - pl.col("quantity")
    cancelled = (pl.col("_returned") - before).clip(0, None)
    cancelled = pl.min_horizontal(cancelled, pl.col("quantity"))
    netted = latest_first.with_columns(cancelled.alias("_cancelled")).with_columns(
        (pl.col("quantity") - pl.col("_cancelled")).alias("_left"),
        (pl.col("value") / pl.col("quantity")).alias("_unit"),
    )
    units_netted = int(netted["_cancelled"].sum())
    value_netted = float((netted["_cancelled"] * netted["_unit"]).sum())
    matched = netted.group_by(key).agg(pl.col("_cancelled").sum())
    unmatched = returns.join(matched, on=key, how="left").with_columns(
        pl.col("_cancelled").fill_null(0)
    )
    excess = unmatched["_returned"] - unmatched["_cancelled"]
    per_unit = unmatched["_rvalue"] / unmatched["_returned"]
    kept = (
        netted.filter(pl.col("_left") > 0)
        .with_columns(
            pl.col("_left").alias("quantity"), (pl.col("_left") * pl.col("_unit")).alias("value")
        )
        .sort("_pos")
        .drop("_pos", "_month", "_returned", "_rvalue", "_cancelled", "_left", "_unit")
    )
    return kept, {
        "return_rows": int(lines["is_return"].sum()),
        "units_netted": units_netted,
        "value_netted": round(value_netted, 2),
        "units_clipped": int(excess.sum()),
        "value_clipped": round(float((excess * per_unit).sum()), 2),
        "lines_cancelled": int((netted["_left"] == 0).sum()),
    }


def _dense(values: pl.Series) -> pl.Series:
    """Integer ids >= 1: the values themselves when all are positive integers, else ranks."""
    as_int = values.cast(pl.Int64, strict=False)
    if as_int.null_count() == 0 and bool((as_int >= 1).all()):
        return as_int
    return values.rank("dense").cast(pl.Int64)


@dataclass(frozen=True)
class IngestResult:
    """What :func:`ingest` wrote: the manifest (also ``W/raw/manifest.json``)."""

    manifest: dict[str, Any]

    @property
    def dropped(self) -> dict[str, Any]:
        """Rows dropped, by reason: how many and their value (the manifest's ``dropped``)."""
        return dict(self.manifest["dropped"])

    def summary(self) -> str:
        """A few lines for the CLI."""
        rows = self.manifest["rows"]
        out = [
            f"read {rows['read']} rows of {self.manifest['source']['file']} "
            f"(sha256 {self.manifest['source']['sha256'][:12]}…); wrote {rows['order_lines']} "
            f"order lines, {rows['orders']} orders, {rows['customers']} customers, "
            f"{rows['products']} products to W/raw (synthetic: false)"
        ]
        for reason, d in self.manifest["dropped"].items():
            out.append(
                f"  dropped {d['rows']} rows ({d['value_sek']:.2f} SEK) — {reason}: {d['why']}"
            )
        r = self.manifest["returns"]
        out.append(
            f"  returns: {r['return_rows']} rows netted per customer, month and product "
            f"({r['value_netted']:.2f} SEK); {r['units_clipped']} units ({r['value_clipped']:.2f}"
            " SEK) had no purchase to net against that month: clipped at zero"
        )
        return "\n".join(out)


def _dropped(frame: pl.DataFrame, mask: pl.Series, why: str, rate: float) -> dict[str, Any]:
    part = frame.filter(mask)
    return {
        "rows": part.height,
        "value_source": round(float(part["value"].sum()), 2),
        "value_sek": round(float(part["value"].sum()) * rate, 2),
        "why": why,
    }


def ingest(
    source: str | os.PathLike[str],
    mapping: IngestMapping | str | os.PathLike[str],
    workspace: Workspace | str | os.PathLike[str],
    *,
    as_of: dt.date | None = None,
    force: bool = False,
    key: PseudonymKey | bytes | str | None = None,
    key_file: str | os.PathLike[str] | None = None,
) -> IngestResult:
    """Turn a real export into ``W/raw`` (``customers``, ``products``, ``orders``,
    ``order_lines``) with a manifest that says ``synthetic: false``.

    Rows without a customer and rows whose product code is not a product (postage, fees,
    discounts) are dropped and counted in rows and value; returns and cancellations are netted
    per customer, month and product (:func:`net_returns`). The manifest records the source's
    SHA-256, the mapping, every count, and the public domains later stages key releases by.

    Parameters
    ----------
    source : path
        The export (CSV, whitespace text, either gzipped, or Parquet).
    mapping : IngestMapping or path of its TOML file
    workspace : Workspace or path
    as_of : date, optional
        The day of the extract; dates after it are refused (default: the last order date).
    force : bool
        Replace an existing ``W/raw``.
    key, key_file : optional
        The steward's pseudonymisation key (:func:`segments.prepare.pseudonym.load_key`), needed
        when the workspace's request log records erasures: the rows of every erased person
        are left out (counted, never named), so a new export never brings them back (AK-5).

    Returns
    -------
    IngestResult

    Raises
    ------
    SchemaError
        One line naming the column, the rule, the count in rows and the fix. Nothing is
        written.
    WorkspaceError
        ``W/raw`` exists and ``force`` is not set.
    PolicyError
        The request log records erasures and no key, or another key than the log's, is
        given (nothing is read or written).
    """
    m = mapping if isinstance(mapping, IngestMapping) else IngestMapping.from_toml(mapping)
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    src = Path(source)
    if not src.is_file():
        raise WorkspaceError(f"export {src} does not exist; fix: give the path of the export")
    if ws.raw.exists() and any(ws.raw.iterdir()) and not force:
        raise WorkspaceError(
            f"{ws.raw} already holds raw data; fix: pass --force to replace it or use a new "
            "workspace"
        )
    erased = _erased_hashes(ws, key, key_file)
    frame = read_export(src, m)
    _require_mapped_columns(frame, m)
    n_read = frame.height

    quantity = _number(frame[m.quantity], m.quantity, pl.Int64, ".", "integer quantity")
    price_column = m.amount if m.amount is not None else m.unit_price
    assert price_column is not None
    price = _number(frame[price_column], price_column, pl.Float64, m.decimal, "number")
    value = price.abs() if m.amount is not None else price * quantity.abs()
    order_ref = _strip(frame, m.order_id)
    is_return = (
        quantity < 0 if m.returns_negative_quantity else pl.repeat(False, n_read, eager=True)
    )
    if m.cancellation_prefix is not None and order_ref is not None:
        is_return = is_return | order_ref.str.starts_with(m.cancellation_prefix).fill_null(False)
    product_code = (
        _strip(frame, m.product_id)
        if m.product_id
        else pl.repeat(m.category or "all", n_read, dtype=pl.Utf8, eager=True)
    )
    lines = pl.DataFrame(
        {
            "customer": _strip(frame, m.customer_id),
            "order_ref": order_ref
            if order_ref is not None
            else pl.repeat(None, n_read, dtype=pl.Utf8, eager=True),
            "product_code": product_code,
            "description": _strip(frame, m.description)
            if m.description
            else pl.repeat(None, n_read, dtype=pl.Utf8, eager=True),
            "quantity": quantity,
            "value": value,
            "is_return": is_return,
            "_date_text": frame[m.order_date],
            "_channel": _strip(frame, m.channel)
            if m.channel
            else pl.repeat(m.default_channel, n_read, dtype=pl.Utf8, eager=True),
            "_geo": _strip(frame, m.geography)
            if m.geography
            else pl.repeat(None, n_read, dtype=pl.Utf8, eager=True),
            "_birth_year": _birth_years(frame, m.birth_year)
            if m.birth_year
            else pl.repeat(None, n_read, dtype=pl.Int16, eager=True),
            "_gender": _genders(frame, m)
            if m.gender
            else pl.repeat(None, n_read, dtype=pl.Utf8, eager=True),
        }
    )
    rate = m.sek_per_unit
    dropped: dict[str, Any] = {}
    no_customer = lines["customer"].is_null()
    dropped["no_customer"] = _dropped(
        lines,
        no_customer,
        "a row without a customer id cannot be linked to a person (counted per row)",
        rate,
    )
    lines = lines.filter(~no_customer)
    from segments.prepare.subject_log import canonical_source_ids, source_hashes

    as_written = lines["customer"]
    canonical = canonical_source_ids(as_written, m.customer_id_type)
    _refuse_any(
        as_written.filter(canonical.is_null()),
        m.customer_id,
        f"id_type {m.customer_id_type}",
        'correct the ids or declare [customers] id_type = "text" in the mapping',
    )
    lines = lines.with_columns(canonical.alias("customer"))
    if erased is not None:
        pkey, gone = erased
        # the id as written too: logs from before ids were canonical hashed it that way
        was_erased = source_hashes(pkey, canonical).is_in(list(gone)) | source_hashes(
            pkey, as_written
        ).is_in(list(gone))
        people = lines.filter(was_erased)["customer"].n_unique()
        dropped["erased"] = _dropped(
            lines,
            was_erased,
            f"{people} customer(s) erased earlier: their keyed hash is in "
            "W/subjects/requests.json; they never come back",
            rate,
        )
        dropped["erased"]["customers"] = people
        lines = lines.filter(~was_erased)
    fees = lines["product_code"].is_in(list(m.non_product_codes)).fill_null(False)
    dropped["non_product_codes"] = _dropped(
        lines,
        fees,
        "codes declared not to be products (postage, fees, discounts): "
        f"{list(m.non_product_codes)}",
        rate,
    )
    lines = lines.filter(~fees)
    if not m.returns_negative_quantity:
        negative = lines.filter(pl.col("quantity") < 0)
        if negative.height:
            raise _fail(
                m.quantity,
                "quantity >= 0 (returns are not marked by a negative quantity)",
                negative.height,
                "set [returns] negative_quantity = true if they are returns",
                first=negative["quantity"][0],
            )
    zero = lines["quantity"] == 0
    dropped["zero_quantity"] = _dropped(lines, zero, "a line of zero units is no purchase", rate)
    lines = lines.filter(~zero)
    if m.amount is None:
        negative_price = lines.filter(pl.col("value") < 0)
        if negative_price.height:
            raise _fail(
                price_column,
                "unit price >= 0",
                negative_price.height,
                "declare the adjustment codes in [products] non_product_codes",
                first=negative_price["product_code"][0],
            )
    lines = lines.with_columns(
        _dates(lines["_date_text"], m.order_date, m.date_format).alias("order_date"),
        pl.col("quantity").abs(),
    ).drop("_date_text")
    last_day = cast("dt.date | None", lines["order_date"].max()) if lines.height else None
    day = as_of or last_day
    if day is not None and last_day is not None and last_day > day:
        late = lines.filter(pl.col("order_date") > day)
        raise _fail(
            m.order_date,
            f"not after as_of {day}",
            late.height,
            "pass the extract's day as --as-of or cut the export",
            first=str(late["order_date"][0]),
        )
    if m.channel:
        channel = lines["_channel"].replace_strict(m.channels, default=None, return_dtype=pl.Utf8)
        unknown = lines.filter(channel.is_null())["_channel"]
        if len(unknown):
            raise _fail(
                m.channel,
                "value listed in [channels] values",
                len(unknown),
                "map every source channel onto web, store or phone",
                first=unknown[0],
            )
        lines = lines.with_columns(channel.alias("_channel"))
    if m.geography:
        lines = lines.with_columns(_geography(lines["_geo"], m).alias("_geo"))
    lines = lines.with_columns(_category_of(lines["product_code"], m).alias("category"))
    if lines.height == 0:
        raise _fail(m.customer_id, "at least one purchase left", 0, "check the mapping")

    lines, returns = net_returns(lines)
    returns["value_netted_sek"] = round(returns["value_netted"] * rate, 2)
    returns["value_clipped_sek"] = round(returns["value_clipped"] * rate, 2)
    returns["rule"] = (
        "a return cancels the same customer's purchases of that product in the same calendar "
        "month, latest first; a net below zero is clipped at zero"
    )
    tables = _raw_tables(lines, m)
    manifest = _manifest(src, m, ws, tables, dropped, returns, n_read, day)
    _write_raw(ws, tables, manifest)
    return IngestResult(manifest)


def _erased_hashes(
    ws: Workspace, key: PseudonymKey | bytes | str | None, key_file: Any
) -> tuple[PseudonymKey, set[str]] | None:
    """The key and the keyed hashes of every erased account, when the log records any."""
    from segments.prepare.subject_log import check_log_key, logged_hashes

    if not ws.subject_log.is_file():
        return None
    gone = logged_hashes(ws, "erasure")
    if not gone:
        return None
    try:
        pkey = load_key(key, key_file=key_file)  # never the demo key: the export is real
    except PolicyError:
        raise PolicyError(
            f"ingest: the request log {ws.subject_log} records erasures and the new export "
            "may hold those people again; nothing was read or written. Fix: give the steward "
            f"key the log was written with ({KEY_ENV_VAR} or --key-file)"
        ) from None
    check_log_key(ws, pkey, "ingest")
    return pkey, gone


def _raw_tables(lines: pl.DataFrame, m: IngestMapping) -> dict[str, pl.DataFrame]:
    lines = lines.with_columns(
        _dense(lines["customer"]).alias("customer_id"),
        pl.col("product_code").rank("dense").cast(pl.Int32).alias("product_id"),
    ).with_row_index("_row")
    order_key = ["order_date", "customer_id", "order_ref"]
    lines = (
        lines.with_columns(pl.struct(order_key).rank("dense").cast(pl.Int64).alias("order_id"))
        .sort("order_id", "_row")
        .with_columns((pl.int_range(pl.len()).over("order_id") + 1).cast(pl.Int16).alias("line_no"))
    )
    orders = (
        lines.group_by("order_id")
        .agg(
            pl.col("customer_id").first(),
            pl.col("order_date").first(),
            pl.col("_channel").first().alias("channel"),
        )
        .sort("order_id")
        .select(pl.col(c.name).cast(c.dtype) for c in ORDERS.columns)
    )
    order_lines = lines.select(
        "order_id",
        "line_no",
        "product_id",
        pl.col("quantity").cast(pl.Int32),
        (pl.col("value") / pl.col("quantity") * m.sek_per_unit).round(2).alias("unit_price_sek"),
    ).select(pl.col(c.name).cast(c.dtype) for c in ORDER_LINES.columns)
    geo = {
        "country": "country" if m.geography_hierarchy == "country" else None,
        "municipality_code": "municipality_code"
        if m.geography_hierarchy == "sweden_municipality"
        else None,
    }
    customers = (
        lines.sort("order_date", "_row")
        .group_by("customer_id")
        .agg(
            pl.col("customer").first().alias("source_customer_id"),
            pl.col("_geo").drop_nulls().last().alias("_geo"),
            pl.col("_birth_year").drop_nulls().last().alias("birth_year"),
            pl.col("_gender").drop_nulls().last().alias("gender"),
            pl.col("order_date").min().alias("signup_date"),
            pl.col("order_date").max().alias("last_contact_date"),
        )
        .sort("customer_id")
        .with_columns(
            pl.lit(m.customer_type).alias("customer_type"),
            (pl.col("_geo") if geo["country"] else pl.lit(None, pl.Utf8)).alias("country"),
            (pl.col("_geo") if geo["municipality_code"] else pl.lit(None, pl.Utf8)).alias(
                "municipality_code"
            ),
        )
    )
    if m.geography_hierarchy == "sweden_municipality":
        parent = dict(geography_table("sweden_municipality").iter_rows())
        customers = customers.with_columns(
            pl.col("municipality_code").replace_strict(parent, default=None).alias("county_code")
        )
    elif m.geography_hierarchy == "sweden_county":
        customers = customers.with_columns(pl.col("_geo").alias("county_code"))
    else:
        customers = customers.with_columns(pl.lit(None, pl.Utf8).alias("county_code"))
    customers = customers.select(pl.col(c.name).cast(c.dtype) for c in REAL_CUSTOMERS.columns)
    products = (
        lines.group_by("product_id")
        .agg(
            pl.col("product_code").first().alias("sku"),
            pl.col("description").drop_nulls().first().alias("name"),
            pl.col("category").first(),
        )
        .sort("product_id")
        .select(pl.col(c.name).cast(c.dtype) for c in REAL_PRODUCTS.columns)
    )
    return {
        "customers": customers,
        "products": products,
        "orders": orders,
        "order_lines": order_lines,
    }


def _manifest(
    src: Path,
    m: IngestMapping,
    ws: Workspace,
    tables: dict[str, pl.DataFrame],
    dropped: dict[str, Any],
    returns: dict[str, Any],
    n_read: int,
    day: dt.date | None,
) -> dict[str, Any]:
    lines = tables["order_lines"]
    value_sek = float((lines["quantity"] * lines["unit_price_sek"]).sum())
    geography = None
    if m.geography_hierarchy is not None:
        table = geography_table(m.geography_hierarchy)
        geography = {
            "hierarchy": m.geography_hierarchy,
            "column": {"country": "country", "sweden_municipality": "municipality_code"}.get(
                m.geography_hierarchy, "county_code"
            ),
            "values": table["code"].to_list(),
            "parents": sorted(set(table["parent"])),
            "customers_unknown": int(
                tables["customers"]
                .select(pl.coalesce("country", "municipality_code", "county_code").is_null().sum())
                .item()
            ),
        }
    mapping_doc: dict[str, Any] = {
        "file": Path(m.source_path).name if m.source_path else None,
        "sha256": sha256_file(m.source_path) if m.source_path else None,
        "customer_id_type": m.customer_id_type,
    }
    return {
        "synthetic": False,
        "schema": "real",
        "schema_version": SCHEMA_VERSION,
        "source": {
            "file": src.name,
            "sha256": sha256_file(src),
            "bytes": src.stat().st_size,
            "format": m.format,
            "encoding": m.encoding,
        },
        "mapping": mapping_doc,
        "parameters": {"as_of": day.isoformat() if day else None},
        "currency": {
            "source": m.currency,
            "sek_per_unit": m.sek_per_unit,
            "rate_source": m.rate_source or "none needed (SEK)",
        },
        "rows": {
            "read": n_read,
            "order_lines": lines.height,
            "orders": tables["orders"].height,
            "customers": tables["customers"].height,
            "products": tables["products"].height,
        },
        "value_sek": round(value_sek, 2),
        "dropped": dropped,
        "returns": returns,
        "domains": {
            "categories": list(m.categories),
            "channels": list(CHANNELS),
            "geography": geography,
            "source": "declared in the mapping file (public), never read from the data",
        },
        "not_in_export": (
            "identity and contact columns, consent, objection, erasure and restriction flags: "
            "the controller applies data-subject requests before exporting (segments subject "
            "works on the raw tables afterwards)"
        ),
        "files": {},
    }


def _write_raw(ws: Workspace, tables: dict[str, pl.DataFrame], manifest: dict[str, Any]) -> None:
    """Validate, then write the tables and manifest into a fresh folder swapped into place."""
    schemas = {
        "customers": REAL_CUSTOMERS,
        "products": REAL_PRODUCTS,
        "orders": ORDERS,
        "order_lines": ORDER_LINES,
    }
    as_of = manifest["parameters"]["as_of"]
    day = dt.date.fromisoformat(as_of) if as_of else None
    for name, frame in tables.items():
        validate(frame, schemas[name], as_of=day)
    ws.root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=ws.root, prefix=f".raw.p{os.getpid()}-", suffix=".tmp"))
    try:
        for name, frame in tables.items():
            frame.write_parquet(tmp / f"{name}.parquet")
            manifest["files"][f"{name}.parquet"] = sha256_file(tmp / f"{name}.parquet")
        write_json(tmp / MANIFEST, manifest)
        old = None
        if ws.raw.exists():
            old = ws.root / f".raw.old.{os.getpid()}"
            os.replace(ws.raw, old)
        os.replace(tmp, ws.raw)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_real_manifest(ws: Workspace) -> dict[str, Any] | None:
    """The raw manifest when it marks real (ingested) data, else None."""
    manifest = ws.read_manifest()
    if manifest.get("synthetic") is False and manifest.get("schema") == "real":
        return dict(manifest)
    return None


#: The raw tables of an ingested export, in the order they are checked.
_REAL_TABLES = ("customers", "products", "orders", "order_lines")


def load_real_raw(
    ws: Workspace, as_of: dt.date, tables: tuple[str, ...] = _REAL_TABLES
) -> dict[str, pl.DataFrame]:
    """Read ingested raw tables for prepare, checked against the manifest's hashes, the real
    schema and its declared domains; customers are widened to the full raw customer columns
    with identity columns null and no request flags set (the export carries none). Only
    ``tables`` are read (prepare reads the order lines one file at a time itself,
    :mod:`segments.prepare.raw_lines`), and the foreign keys between them checked.

    Raises
    ------
    WorkspaceError
        A table is missing or differs from its SHA-256 in the manifest.
    SchemaError
        A table breaks the real schema or a category is outside the declared taxonomy.
    """
    manifest = read_real_manifest(ws)
    if manifest is None:
        raise WorkspaceError(f"{ws.manifest} does not describe ingested data; run segments ingest")
    schemas = {
        "customers": REAL_CUSTOMERS,
        "products": REAL_PRODUCTS,
        "orders": ORDERS,
        "order_lines": ORDER_LINES,
    }
    frames = {}
    for name, schema in schemas.items():
        if name not in tables:
            continue
        path = ws.require(ws.raw_table(name), "segments ingest")
        rel = f"{name}.parquet"
        listed = {k: v for k, v in manifest["files"].items() if k == rel or k.startswith(rel + "/")}
        if not listed or parquet_digests(path, rel) != listed:  # every partition file too
            raise WorkspaceError(
                f"table {name!r}: {path} does not match its SHA-256 in {ws.manifest}; fix: "
                "ingest the export again instead of editing raw files"
            )
        frames[name] = read_table(path)
        validate(frames[name], schema, as_of=as_of)
    declared = pl.col("category").is_in(manifest["domains"]["categories"])
    outside = frames["products"].filter(~declared) if "products" in frames else None
    if outside is not None and outside.height:
        raise SchemaError(
            f"table 'products', column 'category': rule 'in the declared taxonomy' fails for "
            f"{outside.height} row(s) (first: {outside['category'][0]!r}); fix: ingest again"
        )
    for child, parent, column in (
        ("orders", "customers", "customer_id"),
        ("order_lines", "orders", "order_id"),
        ("order_lines", "products", "product_id"),
    ):
        if child in frames and parent in frames:
            check_foreign_key(frames[child], child, frames[parent], parent, column)
    if "customers" in frames:
        frames["customers"] = widen_customers(frames["customers"])
    if "products" in frames:
        frames["products"] = frames["products"].with_columns(pl.lit(0.01).alias("unit_price_sek"))
    return frames


def widen_customers(customers: pl.DataFrame) -> pl.DataFrame:
    """Real customers in the full raw customer columns prepare reads: identity and contact
    columns null (prepare drops them anyway), flags false, no end date."""
    n = customers.height
    filled: dict[str, pl.Series] = {}
    for col in CUSTOMERS.columns:
        if col.name in customers.columns:
            filled[col.name] = customers[col.name].cast(col.dtype)
        elif col.dtype == pl.Boolean:
            filled[col.name] = pl.repeat(False, n, dtype=pl.Boolean, eager=True)
        elif col.name == "newsletter_interactions_per_month":
            filled[col.name] = pl.repeat(0.0, n, dtype=pl.Float32, eager=True)
        else:
            filled[col.name] = pl.repeat(None, n, dtype=col.dtype, eager=True)
    return pl.DataFrame(filled).with_columns(customers["country"])


@dataclass(frozen=True)
class PublicDomains:
    """The public domains later stages key features and releases by.

    For synthetic data they are the built-in ones (:data:`segments.schema.PRODUCT_CATEGORIES`,
    the 21 Swedish counties); for an ingested export they are what its mapping declared
    (recorded in the raw manifest), never the distinct values the private rows contain.

    Attributes
    ----------
    categories : tuple of str
    channels : tuple of str
    geography_column : str or None
        ``county_code`` (synthetic), the declared hierarchy's column, or None (no geography).
    geography_values : tuple of str
        Every code of the declared hierarchy (the public table's, not the data's).
    synthetic : bool
    """

    categories: tuple[str, ...]
    channels: tuple[str, ...]
    geography_column: str | None
    geography_values: tuple[str, ...]
    synthetic: bool

    def geography_parent(self) -> dict[str, str]:
        """Level-1 parent of each geography code (country → region, municipality → county)."""
        if self.synthetic:
            from segments.geography import REGION_OF_COUNTY

            return dict(REGION_OF_COUNTY)
        hierarchy = {
            "country": "country",
            "municipality_code": "sweden_municipality",
            "county_code": "sweden_county",
        }.get(self.geography_column or "")
        if hierarchy is None:
            return {}
        return dict(geography_table(hierarchy).iter_rows())


def public_domains(workspace: Workspace | str | os.PathLike[str]) -> PublicDomains:
    """The public domains of a workspace's data (see :class:`PublicDomains`).

    Examples
    --------
    >>> public_domains("/nonexistent").categories[:2]
    ('paper', 'toner_ink')
    """
    from segments.schema import PRODUCT_CATEGORIES

    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    manifest = read_real_manifest(ws)
    if manifest is None:
        from segments.geography import counties_pl

        return PublicDomains(
            PRODUCT_CATEGORIES,
            CHANNELS,
            "county_code",
            tuple(counties_pl()["county_code"].to_list()),
            synthetic=True,
        )
    domains = manifest["domains"]
    geo = domains.get("geography")
    return PublicDomains(
        tuple(domains["categories"]),
        tuple(domains["channels"]),
        geo["column"] if geo else None,
        tuple(geo["values"]) if geo else (),
        synthetic=False,
    )
