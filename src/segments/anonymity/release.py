"""Building a k-anonymous release: generalise, suppress, shuffle, certify, check linkage.

:func:`anonymise` finds the optimal levels (or takes given ones), generalises every
quasi-identifier, removes the rows of classes that fail the privacy model (recounted from the
generalised table, not taken from the search), keeps only the quasi-identifiers and the
sensitive column (no pseudonym or id ever leaves), and puts the rows in a random order from a
seeded permutation so the file order says nothing about the source order.

:func:`write_release` writes ``table.parquet`` and ``certificate.json`` (model, parameters,
levels, suppression, risk and utility metrics, the SHA-256 of the table file) atomically.

:func:`check_linkage` guards against the intersection of releases: two full-domain
generalisations of the same people, joined, generalise each column to the *lower* of the two
levels (the hierarchies are trees), so their joint classes are the classes of the meet node;
if any joint class among the people in both releases is smaller than k, the new release is
refused.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from segments._tables import as_polars, to_pandas
from segments.anonymity.hierarchies import (
    NOT_APPLICABLE,
    SPEND_BANDS,
    Hierarchy,
    birth_year_hierarchy,
    country_hierarchy,
    county_hierarchy,
    customer_type_hierarchy,
    date_hierarchy,
    flat_hierarchy,
    industry_hierarchy,
    municipality_hierarchy,
    postcode_hierarchy,
    size_band_hierarchy,
    spend_band_hierarchy,
)
from segments.anonymity.metrics import risk_metrics, utility_metrics
from segments.anonymity.models import PrivacyModel
from segments.anonymity.search import Loss, SearchResult, optimal_generalisation
from segments.exceptions import KAnonymityError, WorkspaceError
from segments.schema import GENDERS, PRODUCT_CATEGORIES
from segments.workspace import CERTIFICATE, atomic_write_with, sha256_file, write_json

__all__ = [
    "EarlierRelease",
    "CUSTOMER_COLUMNS",
    "DEFAULT_COLUMNS",
    "RELEASE_COLUMNS",
    "KAnonymousTable",
    "anonymise",
    "check_linkage",
    "customer_hierarchies",
    "customer_release_table",
    "generalise",
    "write_certificate",
    "write_table",
]

#: Columns of the customer-level table, in release order.
CUSTOMER_COLUMNS = (
    "birth_year",
    "gender",
    "postcode",
    "municipality_code",
    "county_code",
    "country",
    "signup_date",
    "customer_type",
    "size_band",
    "industry",
    "segment",
    "spend_band",
)
#: The default columns: postcode is the area (it generalises to county and region), so
#: municipality and county are left out unless asked for.
DEFAULT_COLUMNS = (
    "birth_year",
    "gender",
    "postcode",
    "customer_type",
    "size_band",
    "industry",
    "segment",
    "spend_band",
)
#: What ``segments kanon`` releases unless told otherwise: the columns purchasing needs (the
#: area, the segment and the spend band). Every column added takes detail from the others;
#: with all of :data:`DEFAULT_COLUMNS` most end up one value in every row.
RELEASE_COLUMNS = ("county_code", "segment", "spend_band")
#: Public cut points (SEK spent in the window) of the spend bands.
SPEND_CUTS = (1000, 5000, 20000, 100000)

TABLE_FILE = "table.parquet"


def generalise(
    df: Any, hierarchies: Mapping[str, Hierarchy], levels: Mapping[str, int]
) -> pd.DataFrame:
    """Replace each quasi-identifier by its value at the given level (as text).

    ``df`` is a pandas or polars frame; the result is pandas.

    Examples
    --------
    >>> import pandas as pd
    >>> from segments.anonymity.hierarchies import birth_year_hierarchy
    >>> generalise(pd.DataFrame({"birth_year": [1984]}), {"birth_year": birth_year_hierarchy()},
    ...            {"birth_year": 2})["birth_year"].to_list()
    ['1980-1989']
    """
    return to_pandas(generalise_pl(as_polars(df), hierarchies, levels))


def generalise_pl(
    df: pl.DataFrame, hierarchies: Mapping[str, Hierarchy], levels: Mapping[str, int]
) -> pl.DataFrame:
    """:func:`generalise` on a polars frame (for internal callers)."""
    replaced = []
    for column, level in levels.items():
        h = hierarchies[column]
        labels = np.array(h.labels(level), dtype=object)[h.codes(level)]
        replaced.append(pl.Series(column, labels[h.encode(df[column])], dtype=pl.Utf8))
    return df.with_columns(replaced)


def _failing_rows(table: pl.DataFrame, qis: Sequence[str], model: PrivacyModel) -> pl.Series:
    """Boolean mask of rows in classes that fail the model, recounted with polars."""
    keys: list[str | pl.Expr] = [*qis] if qis else [pl.lit(0).alias("_all")]
    ok = pl.len().over(keys) >= model.k
    if model.sensitive is not None and model.l is not None:
        s = model.sensitive
        if model.diversity == "distinct":
            ok &= pl.col(s).n_unique().over(keys) >= model.l
        else:
            per_value = pl.len().over([*keys, pl.col(s)]) / pl.len().over(keys)
            # entropy of the class = mean over its rows of -log p(value)
            ok &= (-per_value.log()).mean().over(keys) >= np.log(model.l) - 1e-12
    return table.select((~ok).alias("fail"))["fail"]


@dataclass(frozen=True)
class KAnonymousTable:
    """A table ready for release and the facts its certificate states.

    :attr:`table` is the released table as pandas (the API's one table type); the polars
    frame written to ``table.parquet`` is kept internal.
    """

    _table: pl.DataFrame
    qis: tuple[str, ...]
    model: PrivacyModel
    levels: dict[str, int]
    suppressed: int
    n_input_rows: int
    search: SearchResult | None
    metrics: dict[str, Any]
    hierarchy_labels: dict[str, list[str]]
    #: per quasi-identifier, what generalisation cost it (as ARX shows it): see column_loss
    column_loss: tuple[dict[str, Any], ...] = ()

    @property
    def table(self) -> pd.DataFrame:
        """The released table (generalised, suppressed rows removed, rows shuffled)."""
        return to_pandas(self._table)

    @property
    def rows(self) -> int:
        """Rows released."""
        return self._table.height

    @property
    def fully_generalised(self) -> tuple[str, ...]:
        """Columns that carry no information any more: one value (``*``) in every row."""
        return tuple(c["column"] for c in self.column_loss if c["fully generalised"])

    def warnings(self) -> list[str]:
        """What a recipient should know before using the table (empty when nothing)."""
        if not self.fully_generalised:
            return []
        return [
            f"column(s) {', '.join(self.fully_generalised)} fully generalised to one value in "
            f"every row: they carry no information; release only the columns the purpose needs "
            f"(fewer columns keep more detail in each), or lower k if the policy allows"
        ]

    def __repr__(self) -> str:
        kept = ", ".join(f"{c['column']} {c['released values']}" for c in self.column_loss)
        return (
            f"KAnonymousTable({self.model.name}: {self.rows} rows, {self.suppressed} "
            f"suppressed; values per column: {kept})"
        )

    def certificate(self) -> dict[str, Any]:
        """The certificate without the file checksum (added when written)."""
        return {
            "privacy_model": self.model.to_dict(),
            "quasi_identifiers": list(self.qis),
            "sensitive": self.model.sensitive,
            "levels": dict(self.levels),
            "released_values": self.hierarchy_labels,
            "input_rows": self.n_input_rows,
            "released_rows": self.rows,
            "suppressed_rows": self.suppressed,
            "suppression_limit": self.model.suppression_limit,
            "search": None if self.search is None else self.search.to_dict(),
            "metrics": self.metrics,
            "column_loss": [dict(c) for c in self.column_loss],
            "warnings": self.warnings(),
            "row_order": "random (seeded permutation)",
        }


def anonymise(
    df: Any,
    hierarchies: Mapping[str, Hierarchy],
    model: PrivacyModel,
    *,
    seed: np.random.Generator,
    loss: Loss = "discernibility",
    levels: Mapping[str, int] | None = None,
    population: Any = None,
    max_fully_generalised: int | None = None,
    threshold_rule: str = "",
) -> KAnonymousTable:
    """Generalise ``df`` optimally (or at ``levels``), suppress, shuffle and measure.

    Parameters
    ----------
    df : polars.DataFrame
        One row per person; columns other than the quasi-identifiers (keys of
        ``hierarchies``) and ``model.sensitive`` are dropped.
    hierarchies : mapping of column name to Hierarchy
    model : PrivacyModel
    seed : numpy.random.Generator
        For the row permutation.
    loss : str
        Loss the search minimises.
    levels : mapping, optional
        Use these levels instead of searching (they must satisfy the model).
    population : polars.DataFrame, optional
        A population table with the quasi-identifier columns, for journalist risk.
    max_fully_generalised : int, optional
        Refuse a table with more columns than this generalised to one value in every row
        (default: allow, with a warning in :meth:`KAnonymousTable.warnings`).
    threshold_rule : str, optional
        Where the threshold comes from, for the refusal (e.g. the policy field and its
        clause ids).

    Raises
    ------
    KAnonymityError
        From the search; if given levels suppress more rows than allowed; or if more columns
        than ``max_fully_generalised`` carry no information.
    """
    df = as_polars(df)  # pandas too, as the public functions return it
    qis = tuple(hierarchies)
    search = None
    if levels is None:
        search = optimal_generalisation(df, hierarchies, model, loss=loss)
        levels = search.levels
    missing = [q for q in qis if q not in levels]
    if missing:
        raise KAnonymityError(f"levels lack the quasi-identifier(s) {missing}; give one each")
    keep = [*qis, *([model.sensitive] if model.sensitive else [])]
    base = df.select(keep)
    if model.sensitive:
        base = base.with_columns(pl.col(model.sensitive).cast(pl.Utf8))
    generalised = generalise_pl(base, hierarchies, levels)
    fail = _failing_rows(generalised, qis, model)
    suppressed = int(fail.sum())
    if suppressed > model.max_suppressed(df.height):
        raise KAnonymityError(
            f"levels {dict(levels)} leave {suppressed} rows in classes failing {model.name}, "
            f"more than the suppression limit allows ({model.max_suppressed(df.height)} of "
            f"{df.height}); choose higher levels or let the search choose"
        )
    if search is not None and suppressed != search.suppressed:
        raise KAnonymityError(  # a bug guard: the recount must agree with the search
            f"internal check failed: the search suppressed {search.suppressed} rows but the "
            f"generalised table has {suppressed} failing rows; please report this"
        )
    kept = generalised.filter(~fail)
    shuffled = kept[seed.permutation(kept.height).tolist()] if kept.height else kept
    pop = None
    if population is not None:
        pop = generalise_pl(as_polars(population).select(qis), hierarchies, levels)
    before = risk_metrics(base.select(qis).with_columns(pl.all().cast(pl.Utf8)), qis)
    metrics = {
        "risk_before": before,
        "risk": risk_metrics(shuffled, qis, pop),
        "utility": utility_metrics(shuffled, qis, suppressed=suppressed, k=model.k),
    }
    # the values the file shows (not the hierarchy's whole level: that could name values
    # whose people were suppressed)
    labels = {q: sorted(shuffled[q].unique().to_list()) for q in qis}
    column_loss = _column_loss(base, shuffled, hierarchies, levels)
    useless = [c["column"] for c in column_loss if c["fully generalised"]]
    if max_fully_generalised is not None and len(useless) > max_fully_generalised:
        rule = f" by {threshold_rule}" if threshold_rule else ""
        raise KAnonymityError(
            f"{model.name} generalises {', '.join(useless)} to one value in every row "
            f"({len(useless)} columns, at most {max_fully_generalised} allowed{rule}): the "
            "table would carry no information in them; release only the columns the purpose "
            "needs (e.g. --columns county_code,segment,spend_band) so the others keep their "
            "detail"
        )
    return KAnonymousTable(
        _table=shuffled,
        qis=qis,
        model=model,
        levels={q: int(levels[q]) for q in qis},
        suppressed=suppressed,
        n_input_rows=df.height,
        search=search,
        metrics=metrics,
        hierarchy_labels=labels,
        column_loss=tuple(column_loss),
    )


def _column_loss(
    before: pl.DataFrame,
    after: pl.DataFrame,
    hierarchies: Mapping[str, Hierarchy],
    levels: Mapping[str, int],
) -> list[dict[str, Any]]:
    """Per quasi-identifier: its level of the hierarchy's height, the precision loss
    (level / height, as ARX's generalisation intensity), distinct values before and after, and
    whether it ended fully generalised (one value left)."""
    out = []
    for q, h in hierarchies.items():
        level = int(levels[q])
        released = after[q].n_unique() if after.height else 0
        out.append(
            {
                "column": q,
                "level": level,
                "height": int(h.height),
                "precision loss": round(level / h.height, 4) if h.height else 0.0,
                "values before": int(before[q].n_unique()),
                "released values": int(released),
                "fully generalised": released <= 1 and before[q].n_unique() > 1,
            }
        )
    return out


def write_table(folder: str | os.PathLike[str], anon: KAnonymousTable) -> str:
    """Write ``table.parquet`` into ``folder`` atomically; return its SHA-256.

    Raises
    ------
    WorkspaceError
        If the folder already holds a release (a release is never overwritten).
    """
    out = Path(folder)
    if (out / CERTIFICATE).exists() or (out / TABLE_FILE).exists():
        raise WorkspaceError(
            f"release folder {out} already holds a release; releases are never overwritten, "
            "use a new release id"
        )
    atomic_write_with(out / TABLE_FILE, anon._table.write_parquet)
    return sha256_file(out / TABLE_FILE)


def write_certificate(
    folder: str | os.PathLike[str],
    anon: KAnonymousTable,
    table_sha256: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``certificate.json`` (the table's facts, ``extra`` and the file checksum)."""
    certificate = {
        **anon.certificate(),
        **(dict(extra) if extra else {}),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "files": {TABLE_FILE: table_sha256},
    }
    write_json(Path(folder) / CERTIFICATE, certificate)
    return certificate


@dataclass(frozen=True)
class EarlierRelease:
    """What linkage needs to know of an earlier k-anonymous release of the same people."""

    release_id: str
    levels: Mapping[str, int]
    k: int
    sensitive: str | None = None
    l: int | None = None  # noqa: E741 (the l of l-diversity)
    diversity: str = "distinct"

    def model(self) -> PrivacyModel:
        """The privacy model these settings release under."""
        return PrivacyModel(
            k=self.k,
            l=self.l if self.sensitive else None,
            sensitive=self.sensitive if self.l else None,
            diversity="entropy" if self.diversity == "entropy" else "distinct",
        )


def _kept(
    df: pl.DataFrame,
    hierarchies: Mapping[str, Hierarchy],
    levels: Mapping[str, int],
    model: PrivacyModel,
) -> pl.Series:
    """Rows a release with these levels and model keeps (its suppression recomputed)."""
    qis = list(levels)
    generalised = generalise_pl(df.select(qis), hierarchies, levels)
    if model.sensitive:
        generalised = generalised.with_columns(df[model.sensitive].cast(pl.Utf8))
    return ~_failing_rows(generalised, qis, model)


def _release_view(anon_levels: Mapping[str, int], sensitive: str | None) -> dict[str, int]:
    """Level of every column a release shows (its sensitive column is shown as is)."""
    return {**anon_levels, **({sensitive: 0} if sensitive else {})}


def check_linkage(
    df: Any,
    hierarchies: Mapping[str, Hierarchy],
    anon: KAnonymousTable,
    earlier: Sequence[EarlierRelease],
    clause_ids: Sequence[str] = (),
) -> None:
    """Refuse if joining ``anon`` with any earlier release would leave a class below k.

    ``clause_ids`` (the policy's ``anonymous_release`` clauses) are cited in the refusal.

    A person appears in both releases with every column of either; a column both show is
    known at the lower of the two levels (the hierarchies are trees), a sensitive column
    counts as shown at level 0. Among the people kept by both releases (each release's
    suppression recomputed on ``df``), each class of this joint view must hold at least the
    smaller of the two k: the join must not be weaker than either release alone.

    Parameters
    ----------
    df : polars.DataFrame
        The people, with every column either release shows.
    hierarchies : mapping
        A hierarchy for every such column.

    Raises
    ------
    KAnonymityError
        Naming the earlier release, the levels of both, the smallest joint class and the fix.
    """
    df = as_polars(df)
    now = _release_view(anon.levels, anon.model.sensitive)
    kept_now = _kept(df, hierarchies, anon.levels, anon.model)
    for old in earlier:
        then = _release_view(old.levels, old.sensitive)
        columns = sorted(set(now) | set(then))
        missing = [c for c in columns if c not in df.columns or c not in hierarchies]
        if missing:
            raise KAnonymityError(
                f"earlier release {old.release_id!r} shows column(s) {missing} that the "
                "linkage check cannot rebuild; give the table and hierarchies with every column"
            )
        meet = {
            c: min(now.get(c, hierarchies[c].height), then.get(c, hierarchies[c].height))
            for c in columns
        }
        shown = {c: lv for c, lv in meet.items() if lv < hierarchies[c].height}
        both = kept_now & _kept(df, hierarchies, dict(old.levels), old.model())
        if not both.any() or not shown:
            continue
        joint = generalise_pl(df.select(list(shown)), hierarchies, shown).filter(both)
        need = min(anon.model.k, old.k)
        small = joint.group_by(list(shown)).len(name="n").filter(pl.col("n") < need)
        if small.height:
            people = int(small["n"].sum())
            smallest = int(small["n"].min())  # type: ignore[arg-type]
            raise KAnonymityError(
                f"joining this release (levels {now}) with earlier release "
                f"{old.release_id!r} (levels {then}, k={old.k}) of the same people would "
                f"single out smaller groups: the joint view (levels {shown}) puts {people} "
                f"people in {small.height} classes below k={need} (smallest: {smallest}); "
                "anonymity must hold with other information "
                f"({', '.join(clause_ids) or 'the anonymity rule'}), so the release is "
                f"refused. Fix: release with the levels of {old.release_id!r}, or levels at "
                "least as high in every column it shows"
            )


# --- the customer-level table ----------------------------------------------------------------
def customer_release_table(
    customers: Any,
    lines: Any,
    segments: Any,
    columns: Sequence[str] = DEFAULT_COLUMNS,
) -> pd.DataFrame:
    """One row per person with the descriptive columns of a k-anonymous release.

    Parameters
    ----------
    customers, lines : pandas or polars DataFrame
        Prepared frames (docs/architecture.md).
    segments : pandas or polars DataFrame
        ``person_id``, ``segment`` from the category rule or the private model (AO-5: never
        from a model fitted on the same data). People without a label get ``"none"``.
    columns : sequence of str
        Which of :data:`CUSTOMER_COLUMNS` to keep.

    Returns
    -------
    pandas.DataFrame
        Text columns, nulls as ``"n/a"``; no ``person_id`` (the release must not carry it).
    """
    return to_pandas(
        customer_release_table_pl(
            as_polars(customers), as_polars(lines), as_polars(segments), columns
        )
    )


def customer_release_table_pl(
    customers: pl.DataFrame,
    lines: pl.DataFrame,
    segments: pl.DataFrame,
    columns: Sequence[str] = DEFAULT_COLUMNS,
) -> pl.DataFrame:
    """:func:`customer_release_table` on polars frames (for internal callers)."""
    unknown = [c for c in columns if c not in CUSTOMER_COLUMNS]
    if unknown:
        raise KAnonymityError(
            f"unknown release column(s) {unknown}; choose from {list(CUSTOMER_COLUMNS)}"
        )
    derived = ("segment", "spend_band")
    absent = [c for c in columns if c not in derived and c not in customers.columns]
    if absent:
        present = [c for c in CUSTOMER_COLUMNS if c in customers.columns or c in derived]
        raise KAnonymityError(
            f"the prepared customers of this purpose have no column(s) {absent}: the purpose "
            "does not carry that microdata; prepare and release the purpose whose "
            f"customer_columns list them, or pass --columns from {present}"
        )
    spend = lines.group_by("person_id").agg(pl.col("amount_sek").sum().alias("_spend"))
    cuts = [float(c) for c in SPEND_CUTS]
    table = (
        customers.join(spend, on="person_id", how="left")
        .join(
            segments.select("person_id", pl.col("segment").cast(pl.Utf8)),
            on="person_id",
            how="left",
        )
        .with_columns(
            pl.col("_spend")
            .fill_null(0.0)
            .cut(cuts, labels=list(SPEND_BANDS), left_closed=True)
            .cast(pl.Utf8)
            .alias("spend_band"),
            pl.col("segment").fill_null("none"),
        )
    )
    return table.select([pl.col(c).cast(pl.Utf8).fill_null(NOT_APPLICABLE) for c in columns])


def customer_hierarchies(
    table: Any,
    sensitive: str | None = None,
    *,
    categories: Sequence[str] = PRODUCT_CATEGORIES,
    declared: Mapping[str, Hierarchy] | None = None,
) -> dict[str, Hierarchy]:
    """The hierarchy of every column of a customer release table (pandas or polars) except
    ``sensitive``.

    Built-in ones for the customer columns (dates and countries included); ``declared``
    hierarchies (ARX-style CSV files, :func:`segments.anonymity.read_hierarchies`) take
    precedence. ``categories`` is the public taxonomy category-rule segments come from.
    """
    builders: dict[str, Callable[[], Hierarchy]] = {
        "birth_year": birth_year_hierarchy,
        "postcode": lambda: postcode_hierarchy(),  # every public postcode, not the data's
        "municipality_code": municipality_hierarchy,
        "county_code": county_hierarchy,
        "customer_type": customer_type_hierarchy,
        "size_band": size_band_hierarchy,
        "industry": industry_hierarchy,
        "spend_band": spend_band_hierarchy,
        "gender": lambda: flat_hierarchy("gender", [*GENDERS, NOT_APPLICABLE]),
        "segment": lambda: flat_hierarchy(
            "segment", sorted({*categories, "none", *table["segment"].unique()})
        ),
        "country": country_hierarchy,
        "signup_date": lambda: date_hierarchy("signup_date"),
    }
    for name, hierarchy in (declared or {}).items():
        builders[name] = lambda h=hierarchy: h  # type: ignore[misc]
    missing = [c for c in table.columns if c != sensitive and c not in builders]
    if missing:
        raise KAnonymityError(
            f"column {missing[0]!r} has no generalisation hierarchy; fix: give one as an "
            f"ARX-style CSV (hierarchy_{missing[0]}.csv) with --hierarchies"
        )
    return {c: builders[c]() for c in table.columns if c != sensitive}
