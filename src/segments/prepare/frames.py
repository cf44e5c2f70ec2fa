"""prepare: apply a policy to the raw tables and write pseudonymised frames for one purpose.

``prepare(workspace, policy, purpose, as_of)`` reads ``W/raw``, validates it, and writes
``W/prepared/<purpose>/`` with ``customers.parquet`` (one row per person), ``lines.parquet``
(one row per order line) and ``policy_report.json`` (the evidence). In order:

1. **person linkage** (AO-3): a sole trader's private and business accounts share a
   personnummer (the business's organisation number is its last ten digits); they become one
   person, so every later bound on one customer's contribution bounds one person's. The
   personnummer is used for this join only and never enters an output frame.
2. **exclusions**: erased and restricted persons never appear (AK-5); objectors leave the
   purposes that exclude them (AK-4, AL-3, OF-4); survey opt-outs leave survey frames (AC-2);
   profiling purposes keep only profiling-eligible persons (AL-3); marketing opt-outs are
   kept as a flag so they are never targeted (AO-7).
3. **retention**: customer rules drop persons whose anchor date (last order, last contact,
   end of relationship) is before the cutoff; transaction rules drop order lines; a consent
   withdrawal stops the use of data after its date (AK-1, AO-8).
4. **minimisation** (AL-5): only the purpose's columns survive; no direct identifier does.
5. **pseudonymisation**: keyed HMAC-SHA256 pseudonyms for persons and orders
   (:mod:`segments.prepare.pseudonym`).

Each rule's clause ids, cutoff date and the rows, accounts and persons it removed go to the
:class:`PolicyReport`. The output folder is written beside the target and renamed into place,
so a failure leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl

from segments._tables import read_table, reads_bound_to, to_pandas
from segments.engine import Engine, get_engine
from segments.exceptions import PolicyError, SchemaError
from segments.policy import Policy, Purpose, RetentionRule
from segments.prepare.chunked import CHANNEL as _CHANNEL
from segments.prepare.chunked import COMPACT as _COMPACT
from segments.prepare.pseudonym import (
    DEMO_PROVENANCE,
    PseudonymKey,
    load_key,
    pseudonymise_series,
)
from segments.prepare.raw_lines import RawLines, read_raw_lines
from segments.privacy.synthetic import prove_synthetic
from segments.progress import progress
from segments.schema import (
    CUSTOMERS,
    PREPARED_CUSTOMERS,
    PREPARED_LINES,
    RAW_TABLES,
    REAL_CUSTOMERS,
    TableSchema,
    check_foreign_key,
    validate,
)
from segments.workspace import (
    POLICY_REPORT,
    Workspace,
    make_private,
    month_partition,
    write_json,
)
from segments.workspace import (
    PREPARED_CUSTOMERS as CUSTOMERS_FILE,
)
from segments.workspace import (
    PREPARED_LINES as LINES_FILE,
)

__all__ = [
    "PolicyReport",
    "RuleOutcome",
    "link_persons",
    "load_raw_tables",
    "person_table",
    "prepare",
    "read_prepared",
]

#: Raw tables prepare reads (surveys carry no customer and are not prepared per person).
_INPUT_TABLES = ("customers", "products", "orders", "order_lines")
_FAR_FUTURE = dt.date(9999, 12, 31)


# --- evidence ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RuleOutcome:
    """What one rule did: its clause ids, cutoff, and how much it removed."""

    rule: str
    kind: str
    clause_ids: tuple[str, ...]
    cutoff: dt.date | None = None
    anchor: str | None = None
    months: int | None = None
    rows_removed: int = 0
    customers_removed: int = 0
    persons_removed: int = 0
    persons_flagged: int = 0
    note: str = ""


@dataclass(frozen=True)
class PolicyReport:
    """The evidence of one prepare run (written as ``policy_report.json``).

    ``customers_removed`` counts raw accounts, ``persons_removed`` people (a sole trader's two
    accounts are one person), ``rows_removed`` order lines. Rules are applied in the order
    listed; each counts what it removed from what the rules before it left. The key appears
    only as its provenance and a keyed fingerprint, never itself.
    """

    policy: str
    controller: str
    purpose: str
    purpose_clause_ids: tuple[str, ...]
    as_of: dt.date
    key_provenance: str
    key_id: str
    input_counts: Mapping[str, int]
    output_counts: Mapping[str, int]
    columns: Mapping[str, tuple[str, ...]]
    rules: tuple[RuleOutcome, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (dates as ISO strings)."""
        out = asdict(self)
        out["as_of"] = self.as_of.isoformat()
        out["input_counts"] = dict(self.input_counts)
        out["output_counts"] = dict(self.output_counts)
        out["columns"] = {k: list(v) for k, v in self.columns.items()}
        out["purpose_clause_ids"] = list(self.purpose_clause_ids)
        for rule in out["rules"]:
            rule["clause_ids"] = list(rule["clause_ids"])
            rule["cutoff"] = rule["cutoff"].isoformat() if rule["cutoff"] else None
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyReport:
        """Inverse of :meth:`to_dict`."""
        rules = tuple(
            RuleOutcome(
                **{
                    **r,
                    "clause_ids": tuple(r["clause_ids"]),
                    "cutoff": dt.date.fromisoformat(r["cutoff"]) if r["cutoff"] else None,
                }
            )
            for r in data["rules"]
        )
        return cls(
            policy=data["policy"],
            controller=data["controller"],
            purpose=data["purpose"],
            purpose_clause_ids=tuple(data["purpose_clause_ids"]),
            as_of=dt.date.fromisoformat(data["as_of"]),
            key_provenance=data["key_provenance"],
            key_id=data["key_id"],
            input_counts=dict(data["input_counts"]),
            output_counts=dict(data["output_counts"]),
            columns={k: tuple(v) for k, v in data["columns"].items()},
            rules=rules,
        )

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> PolicyReport:
        """Read a ``policy_report.json``."""
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    def to_frame(self) -> pd.DataFrame:
        """One row per rule: kind, clause ids, cutoff and what it removed."""
        return to_pandas(self._to_frame_pl())

    def _to_frame_pl(self) -> pl.DataFrame:
        rows = [{**asdict(r), "clause_ids": ", ".join(r.clause_ids)} for r in self.rules]
        return pl.DataFrame(rows, schema_overrides={"cutoff": pl.Date, "months": pl.Int64})

    def by_clause(self) -> pd.DataFrame:
        """Rows, accounts and persons removed per clause id (a rule citing two clauses
        counts under both)."""
        return to_pandas(
            self._to_frame_pl()
            .with_columns(pl.col("clause_ids").str.split(", "))
            .explode("clause_ids")
            .rename({"clause_ids": "clause_id"})
            .group_by("clause_id")
            .agg(
                pl.col("rule").len().alias("rules"),
                pl.col("rows_removed").sum(),
                pl.col("customers_removed").sum(),
                pl.col("persons_removed").sum(),
                pl.col("persons_flagged").sum(),
            )
            .sort("clause_id")
        )


# --- loading -----------------------------------------------------------------------------
_FOREIGN_KEYS = (
    ("orders", "customers", "customer_id"),
    ("order_lines", "orders", "order_id"),
    ("order_lines", "products", "product_id"),
)


def _synth_loader() -> Any:
    try:
        from segments.synth.generate import load_raw_pl
    except ImportError:  # generator not installed: validate here
        return None
    return load_raw_pl


def load_raw_tables(
    workspace: Workspace, as_of: dt.date, tables: tuple[str, ...] = _INPUT_TABLES
) -> dict[str, pl.DataFrame]:
    """Read and validate raw tables: schema, keys, dates not after ``as_of``, foreign keys.

    Raises
    ------
    WorkspaceError
        If a table is missing (naming the command that makes it).
    SchemaError
        If a table breaks its schema.
    """
    from segments.ingest import load_real_raw, read_real_manifest

    if read_real_manifest(workspace) is not None:  # a real export written by segments ingest
        real = load_real_raw(workspace, as_of, tables)
        return {name: real[name] for name in tables}
    synth_loader = _synth_loader()
    if synth_loader is not None:  # the generator's loader also checks the manifest's hashes
        return {name: synth_loader(workspace, name, as_of) for name in tables}
    frames = {}
    for name in tables:
        path = workspace.require(workspace.raw_table(name), "segments generate")
        frames[name] = read_table(path)
        validate(frames[name], RAW_TABLES[name], as_of=as_of)
    for child, parent, column in _FOREIGN_KEYS:
        if child in frames and parent in frames:
            check_foreign_key(frames[child], child, frames[parent], parent, column)
    return frames


# --- persons -----------------------------------------------------------------------------
def link_persons(customers: pl.DataFrame) -> pl.DataFrame:
    """Map each account to its person: ``customer_id`` → ``person_root``.

    A private account and a sole trader's business account with the same personnummer (the
    business's organisation number is the personnummer without the century, AO-3) are one
    person; ``person_root`` is the smallest customer id of the person. The personnummer is
    read here and not returned.

    Examples
    --------
    >>> accounts = pl.DataFrame({"customer_id": [1, 2, 3],
    ...     "customer_type": ["private", "business", "business"],
    ...     "is_sole_trader": [False, True, False],
    ...     "personnummer": ["194910062386", None, None],
    ...     "org_number": [None, "4910062386", "5560000000"]})
    >>> link_persons(accounts)["person_root"].to_list()
    [1, 1, 3]
    """
    ten = pl.col("personnummer").str.slice(2)
    link = (
        pl.when(pl.col("customer_type") == "private")
        .then(ten)
        .when(pl.col("is_sole_trader"))
        .then(pl.coalesce(ten, pl.col("org_number")))
        .otherwise(None)
    )
    return customers.select("customer_id", link.alias("_link")).select(
        "customer_id",
        pl.when(pl.col("_link").is_null())
        .then(pl.col("customer_id"))
        .otherwise(pl.col("customer_id").min().over("_link"))
        .alias("person_root"),
    )


def _merge_accounts(accounts: pl.LazyFrame) -> pl.LazyFrame:
    """Aggregate the accounts of persons with several accounts (sole traders) to one row."""
    private_first = pl.col("customer_type") == "business"
    return accounts.group_by("person_root").agg(
        pl.len().cast(pl.UInt32).alias("n_accounts"),
        pl.lit("sole_trader").alias("customer_type"),
        pl.col("industry").drop_nulls().first(),
        pl.col("size_band").drop_nulls().first(),
        *(
            pl.col(c).sort_by(private_first).first()
            for c in ("postcode", "municipality_code", "county_code")
        ),
        pl.col("birth_year").sort_by(private_first).drop_nulls().first(),
        pl.col("gender").sort_by(private_first).drop_nulls().first(),
        pl.col("signup_date").min(),
        pl.col("last_contact_date").max(),
        pl.when(pl.col("end_date").null_count() > 0)
        .then(None)
        .otherwise(pl.col("end_date").max())
        .alias("end_date"),
        pl.col("newsletter_subscriber").any(),
        pl.col("newsletter_interactions_per_month").sum(),
        *(pl.col(c).any() for c in _FLAGS),
        pl.col("consent_withdrawn_date").min(),
    )


_FLAGS = (
    "marketing_opt_out",
    "survey_opt_out",
    "profiling_objection",
    "erasure_requested",
    "restriction_requested",
)
_PERSON_COLUMNS = (
    "person_root",
    "n_accounts",
    "customer_type",
    "industry",
    "size_band",
    "postcode",
    "municipality_code",
    "county_code",
    "birth_year",
    "gender",
    "signup_date",
    "last_contact_date",
    "end_date",
    "newsletter_subscriber",
    "newsletter_interactions_per_month",
    *_FLAGS,
    "consent_withdrawn_date",
)


def person_table(
    customers: pl.DataFrame, orders: pl.DataFrame, roots: pl.DataFrame | None = None
) -> pl.DataFrame:
    """One row per person with the attributes, flags and anchor dates the rules need.

    Flags hold for the person if they hold for any of their accounts (an erasure or objection
    by a person covers all their accounts); ``last_order`` and ``last_contact`` are over all
    accounts; ``end_date`` is null while any account is active. A sole trader's attributes
    come from the private account (geography, birth year, gender) and the business account
    (industry, size band). ``roots`` is :func:`link_persons` of ``customers`` if already known.
    """
    return _person_query(customers, orders, roots).collect()


def _person_query(
    customers: pl.DataFrame, orders: pl.DataFrame, roots: pl.DataFrame | None = None
) -> pl.LazyFrame:
    """:func:`person_table` as one query: collected once, no intermediate frame (the
    accounts with their roots, the single and the linked ones, the persons before their last
    order) is held by a caller while the next is built (issue 21: prepare's peak)."""
    roots = link_persons(customers) if roots is None else roots
    accounts = (
        customers.lazy().drop("personnummer", "org_number").join(roots.lazy(), on="customer_id")
    )
    multi = accounts.filter(pl.col("person_root").is_duplicated())
    # Most persons hold one account: copy those rows, aggregate only the linked ones.
    single = accounts.filter(~pl.col("person_root").is_duplicated()).with_columns(
        pl.lit(1, pl.UInt32).alias("n_accounts"),
        pl.when(pl.col("is_sole_trader"))
        .then(pl.lit("sole_trader"))
        .otherwise(pl.col("customer_type"))
        .alias("customer_type"),
    )
    # a real export's declared country (segments ingest) has no synthetic counterpart
    extra = [c for c in ("country",) if c in customers.columns]
    persons = pl.concat(
        [
            single.select(*_PERSON_COLUMNS, *extra),
            _merge_accounts(multi).select(_PERSON_COLUMNS),
        ],
        how="diagonal_relaxed",
    )
    last_order = (
        orders.lazy()
        .select("customer_id", "order_date")
        .join(roots.lazy(), on="customer_id")
        .group_by("person_root")
        .agg(pl.col("order_date").max().alias("last_order"))
    )
    return persons.join(last_order, on="person_root", how="left").with_columns(
        pl.max_horizontal("last_order", "signup_date").alias("last_order_or_signup"),
        pl.max_horizontal("last_order", "last_contact_date", "signup_date").alias("last_contact"),
    )


def eligibility_expr(policy: Policy, as_of: dt.date) -> pl.Expr:
    """True for a person the policy's ``profiling_eligibility`` lets be profiled on ``as_of``,
    over the raw flags (``profiling_objection``, ``newsletter_subscriber``,
    ``consent_withdrawn_date``, ``marketing_opt_out``): prepare's ``profiling_eligible``
    column, and what the audit recomputes it from."""
    rule = policy.profiling_eligibility
    ok = ~pl.col("profiling_objection")
    if rule.newsletter_subscribers_only:
        ok = ok & pl.col("newsletter_subscriber")
    if rule.exclude_consent_withdrawn:
        ok = ok & (
            pl.col("consent_withdrawn_date").is_null() | (pl.col("consent_withdrawn_date") > as_of)
        )
    if rule.exclude_marketing_opt_out:
        ok = ok & ~pl.col("marketing_opt_out")
    return ok


def person_anchor(anchor: str) -> pl.Expr:
    """A person's anchor date; active customers' end of relationship lies in the far future."""
    if anchor == "last_order":
        return pl.col("last_order_or_signup")
    if anchor == "last_contact":
        return pl.col("last_contact")
    if anchor == "end_of_relationship":
        return pl.col("end_date").fill_null(_FAR_FUTURE)
    raise PolicyError(
        f"retention anchor {anchor!r} does not apply to a person; use last_order, "
        "last_contact or end_of_relationship"
    )


def row_anchor(anchor: str) -> pl.Expr:
    """An order line's anchor date: its order date (``collection``) or its person's."""
    return pl.col("order_date") if anchor == "collection" else person_anchor(anchor)


# --- the run -----------------------------------------------------------------------------
#: The person anchors an order rule may read (:func:`row_anchor`, the consent withdrawal).
_ANCHOR_COLUMNS = ("last_order_or_signup", "last_contact", "end_date", "consent_withdrawn_date")


class _Run:
    """Applies the rules one by one, recording what each removed.

    Rules act on persons and on orders (every rule is a function of the order date or the
    person, never of a single line), carrying each order's line count, so 20 million lines
    are joined only once, at the end.
    """

    def __init__(self, persons: pl.DataFrame, orders: pl.DataFrame) -> None:
        self.persons = persons
        self.orders = orders
        self.outcomes: list[RuleOutcome] = []

    def drop_persons(self, keep: pl.Expr, **outcome: Any) -> None:
        removed = self.persons.filter(~keep)
        self.outcomes.append(
            RuleOutcome(
                rows_removed=int(removed["n_lines"].sum()),
                customers_removed=int(removed["n_accounts"].sum()),
                persons_removed=removed.height,
                **outcome,
            )
        )
        if removed.height:
            self.persons = self.persons.filter(keep)

    def attach_person_anchors(self, columns: Iterable[str] = _ANCHOR_COLUMNS) -> None:
        """Join each order to its (remaining) person's anchor dates ``columns`` (those the
        order rules read; none: a semi-join); drops removed persons' orders."""
        anchors = self.persons.select("person_root", *dict.fromkeys(columns))
        if anchors.width > 1:
            self.orders = self.orders.join(anchors, on="person_root")
        else:
            self.orders = self.orders.join(anchors, on="person_root", how="semi")

    def release(self) -> None:
        """Let go of the orders and the persons (the line plan holds the kept orders, the
        prepared customers and the plan the kept persons' pseudonyms): one copy per order and
        per person on the driver through the write, not two."""
        self.orders = self.orders.clear()
        self.persons = self.persons.clear()

    def drop_orders(self, keep: pl.Expr, **outcome: Any) -> None:
        before = int(self.orders["n_lines"].sum())
        self.orders = self.orders.filter(keep)
        removed = before - int(self.orders["n_lines"].sum())
        self.outcomes.append(RuleOutcome(rows_removed=removed, **outcome))

    def apply_order_rules(
        self, columns: Iterable[str], rules: list[tuple[pl.Expr, dict[str, Any]]]
    ) -> None:
        """The order rules ``rules`` ((keep, outcome) pairs) in turn, on the orders joined to
        their persons' anchor dates ``columns`` (:meth:`attach_person_anchors`)."""
        self.attach_person_anchors(columns)
        for keep, done in rules:
            self.drop_orders(keep, **done)

    def kept_orders(
        self, persons: pl.DataFrame, whole: bool
    ) -> tuple[pl.DataFrame, int, Mapping[dt.date, Path]]:
        """The kept orders of the kept ``persons`` (order_id, person_root, order_date,
        channel), the lines they hold, and no month files (held on the driver)."""
        orders = self.orders.select("order_id", "person_root", "order_date", "channel", "n_lines")
        orders = orders.join(persons.select("person_root"), on="person_root", how="semi")
        return orders.drop("n_lines"), int(orders["n_lines"].sum()), {}

    def note(self, **outcome: Any) -> None:
        self.outcomes.append(RuleOutcome(**outcome))


class _MonthlyRun(_Run):
    """:class:`_Run` with the orders one file per month (:mod:`segments.prepare.chunked`):
    the person rules as in :class:`_Run`, the order rules one month at a time, each rule's
    rows summed over the months (each month's orders seeing what the rules before it left
    of them, as the whole table would), the kept orders written back one file per month. The
    driver holds the persons and one month's orders (issue 21)."""

    def __init__(
        self, persons: pl.DataFrame, months: Mapping[dt.date, Path], empty: pl.DataFrame
    ) -> None:
        super().__init__(persons, empty)
        self.months = dict(months)
        self.kept_lines = 0

    def apply_order_rules(
        self, columns: Iterable[str], rules: list[tuple[pl.Expr, dict[str, Any]]]
    ) -> None:
        anchors = self.persons.select("person_root", *dict.fromkeys(columns))
        removed = [0] * len(rules)
        kept: dict[dt.date, Path] = {}
        for month, path in sorted(self.months.items()):
            orders = pl.read_parquet(path)
            path.unlink()
            if anchors.width > 1:
                orders = orders.join(anchors, on="person_root")
            else:
                orders = orders.join(anchors, on="person_root", how="semi")
            for number, (keep, _) in enumerate(rules):
                before = int(orders["n_lines"].sum())
                orders = orders.filter(keep)
                removed[number] += before - int(orders["n_lines"].sum())
            if orders.height:
                self.kept_lines += int(orders["n_lines"].sum())
                kept[month] = path.with_name(f"kept-{path.name}")
                orders.select(_COMPACT).write_parquet(kept[month])
            del orders
        for (_, done), rows in zip(rules, removed, strict=True):
            self.outcomes.append(RuleOutcome(rows_removed=rows, **done))
        self.months = kept

    def kept_orders(
        self, persons: pl.DataFrame, whole: bool
    ) -> tuple[pl.DataFrame, int, Mapping[dt.date, Path]]:
        """The kept orders as month files (the persons were last cut before the order rules
        ran, so every kept order's person is kept), or (``whole``: lines without an order
        date are one file) read back into one frame."""
        empty = self.orders.select(_COMPACT)
        if whole:
            frames = [pl.read_parquet(p) for _, p in sorted(self.months.items())]
            return pl.concat([empty, *frames]), self.kept_lines, {}
        return empty, self.kept_lines, self.months


def _orders_with_persons(
    orders: pl.DataFrame, n_lines: pl.DataFrame, roots: pl.DataFrame
) -> pl.DataFrame:
    """Orders with their person and their number of lines (``n_lines``: order_id, n_lines),
    the channel as an enum (4 bytes an order instead of a 16-byte string view: the driver
    holds this frame until the lines are written; :meth:`_LinePlan._keyed` hands the engine
    strings again)."""
    counted = n_lines.get_column("order_id")
    if counted.len() and counted.is_sorted() and counted.n_unique() == counted.len():
        # the counts come in key order (as the lines are generated and most extracts are):
        # each order's count is found by binary search, with no hash table of every order
        # built beside the orders (issue 21)
        ids = orders.get_column("order_id")
        at = counted.search_sorted(ids).clip(upper_bound=counted.len() - 1)
        found = counted.gather(at) == ids
        counts = n_lines.get_column("n_lines").gather(at)
        del at
        n_lines = pl.DataFrame(
            {"n_lines": pl.select(pl.when(found).then(counts).otherwise(0)).to_series()}
        )
        del found, counts
        return (
            orders.lazy()
            .with_columns(n_lines.get_column("n_lines"))
            .join(roots.lazy(), on="customer_id")
            .select(
                "order_id",
                "person_root",
                "order_date",
                pl.col("channel").cast(_CHANNEL),
                "n_lines",
            )
            .collect()
        )
    return (
        orders.lazy()
        .join(roots.lazy(), on="customer_id")
        .join(n_lines.lazy(), on="order_id", how="left")
        .select(
            "order_id",
            "person_root",
            "order_date",
            pl.col("channel").cast(_CHANNEL),
            pl.col("n_lines").fill_null(0),
        )
        .collect()
    )


#: Every raw table's direct identifier columns (synthetic and real customers alike).
_IDENTIFIERS = tuple(
    dict.fromkeys(
        c for schema in (*RAW_TABLES.values(), REAL_CUSTOMERS) for c in schema.direct_identifiers
    )
)
#: The identifiers person linkage reads (:func:`link_persons`; never in an output frame).
_LINKAGE_KEYS = ("personnummer", "org_number")


#: The prepare rule that keeps out persons the request log erased (the CLI warns on it:
#: such a person in the raw data again means a backup was restored after the erasure).
ERASED_EARLIER = "erased earlier (subject request log)"


def _drop_logged_erasures(
    run: _Run,
    ws: Workspace,
    policy: Policy,
    key: PseudonymKey,
    customer_ids: pl.Series,
    roots: pl.DataFrame,
) -> None:
    """Keep out persons erased earlier (``W/subjects/requests.json``), even if raw data that
    still holds them was loaded again after the erasure (AK-5)."""
    from segments.prepare.subjects import erased_accounts

    erased = erased_accounts(ws, key, customer_ids)
    if erased.len() == 0:
        return
    gone = roots.filter(pl.col("customer_id").is_in(erased.implode()))["person_root"]
    rule = policy.exclusions["erasure"]
    run.drop_persons(
        ~pl.col("person_root").is_in(gone.implode()),
        rule=ERASED_EARLIER,
        kind="exclusion",
        clause_ids=rule.clause_ids,
        note="accounts whose keyed hash is in W/subjects/requests.json never come back",
    )


def _apply_exclusions(run: _Run, policy: Policy, purpose: Purpose, as_of: dt.date) -> None:
    # (the policy's exclusion rule, the raw flag that leaves a person out, the log's label,
    # whether this purpose applies it); every rule is validated by Policy.load
    for exclusion, flag, label, applies in (
        ("erasure", "erasure_requested", "erasure requested", True),
        ("restriction", "restriction_requested", "restriction of processing", True),
        ("objection", "profiling_objection", "objection", purpose.exclude_objectors),
        ("survey_opt_out", "survey_opt_out", "survey opt-out", purpose.exclude_survey_opt_outs),
    ):
        if applies:
            rule = policy.exclusions[exclusion]
            run.drop_persons(
                ~pl.col(flag),
                rule=label,
                kind="exclusion",
                clause_ids=rule.clause_ids,
                note=rule.note,
            )
    elig = policy.profiling_eligibility
    if purpose.profiling:
        run.drop_persons(
            pl.col("profiling_eligible"),
            rule="not eligible for profiling",
            kind="eligibility",
            clause_ids=elig.clause_ids,
            note=elig.describe(),
        )
    else:
        run.note(
            rule="profiling eligibility (flag only)",
            kind="eligibility",
            clause_ids=elig.clause_ids,
            note=elig.describe(),
            persons_flagged=int((~run.persons["profiling_eligible"]).sum()),
        )
    opt = policy.exclusions["marketing_opt_out"]
    run.note(
        rule="marketing opt-out (flag, never targeted)",
        kind="flag",
        clause_ids=opt.clause_ids,
        note=opt.note,
        persons_flagged=int(run.persons["marketing_opt_out"].sum()),
    )


def _apply_retention(run: _Run, policy: Policy, purpose: Purpose, as_of: dt.date) -> None:
    def outcome(r: RetentionRule) -> dict[str, Any]:
        return {
            "rule": f"retention: {r.name}",
            "kind": "retention",
            "clause_ids": r.clause_ids,
            "cutoff": r.cutoff(as_of),
            "anchor": r.anchor,
            "months": r.months,
            "note": r.note,
        }

    for rule in purpose.rules_for("customer"):
        cutoff = rule.cutoff(as_of)
        keep = pl.lit(True) if cutoff is None else person_anchor(rule.anchor) >= cutoff
        run.drop_persons(keep, **outcome(rule))
    order_rules: list[tuple[pl.Expr, dict[str, Any]]] = []
    for rule in purpose.rules_for("transactions"):
        cutoff = rule.cutoff(as_of)
        keep = pl.lit(True) if cutoff is None else row_anchor(rule.anchor) >= cutoff
        order_rules.append((keep, outcome(rule)))
    if purpose.stop_at_consent_withdrawal:
        withdrawal = policy.exclusions["consent_withdrawal"]
        withdrawn = pl.col("consent_withdrawn_date")
        order_rules.append(
            (
                withdrawn.is_null() | (pl.col("order_date") <= withdrawn),
                {
                    "rule": "consent withdrawn: no data after the withdrawal date",
                    "kind": "exclusion",
                    "clause_ids": withdrawal.clause_ids,
                    "note": withdrawal.note,
                },
            )
        )
    # only the anchors these rules read are joined to every order
    read = {name for keep, _ in order_rules for name in keep.meta.root_names()}
    run.apply_order_rules([c for c in _ANCHOR_COLUMNS if c in read], order_rules)


def _hex_rank(column: str) -> pl.Expr:
    """The first 15 hex digits as an integer: sorts like the pseudonym, ~10x cheaper."""
    return pl.col(column).str.slice(0, 15).str.to_integer(base=16)


def _pseudonymise(
    run: _Run,
    products: pl.DataFrame,
    raw_lines: RawLines,
    purpose: Purpose,
    key: PseudonymKey,
) -> tuple[pl.DataFrame, _LinePlan]:
    persons = run.persons.with_columns(
        pseudonymise_series(key, "person", run.persons["person_root"], "person_id")
    )
    # the kept persons' orders; their lines (every line has its product: a foreign key
    # checked) are what the partitions will hold
    line_schema = PREPARED_LINES.subset(list(purpose.columns["lines"]))
    orders, height, months = run.kept_orders(persons, "order_date" not in line_schema.names)
    customer_cols = list(purpose.columns["customers"])
    if "profiling_eligible" not in customer_cols:
        customer_cols.append("profiling_eligible")
    customer_schema = PREPARED_CUSTOMERS.subset(
        [c for c in PREPARED_CUSTOMERS.names if c in customer_cols]
    )
    customers = persons.select(
        # a nullable column the raw data does not have (a declared country on synthetic
        # data, a birth year on an export without one) is unknown: null, not invented
        (
            pl.col(c)
            if c in persons.columns or not customer_schema.column(c).nullable
            else pl.lit(None)
        )
        .cast(customer_schema.column(c).dtype)
        .alias(c)
        for c in customer_schema.names
    ).sort("person_id")
    # Rows are ordered by pseudonym, never by an internal id whose rank could re-identify.
    person_ids = persons.select(
        "person_root", "person_id", _hex_rank("person_id").alias("_person_rank")
    )
    categories = products.select("product_id", "category")
    plan = _LinePlan(raw_lines, orders, person_ids, key, categories, line_schema, height, months)
    return customers, plan


#: The prepared lines' order: by pseudonym, then date, then the order's pseudonym and line.
_LINE_ORDER = ("_person_rank", "order_date", "_order_rank", "line_no")
#: The order columns the engine's join gets besides the raw order id (what the sort reads).
_SORT_COLUMNS = ("order_date", "_person_rank", "_order_rank")


@dataclass(frozen=True)
class _LinePlan:
    """The prepared lines before they are built: the raw lines (checked private copies), the
    kept orders, the persons' pseudonyms and sort ranks, the key, the products' categories
    and the purpose's columns. Built one month partition at a time by the engine the setting
    selects (:meth:`partitions`), from the raw files holding that month's orders, so only one
    month's lines — and one month's order pseudonyms — are ever held, never the whole table
    sorted."""

    raw: RawLines
    orders: pl.DataFrame  # order_id, person_root, order_date, channel
    persons: pl.DataFrame  # person_root, person_id, _person_rank
    key: PseudonymKey = field(repr=False)
    categories: pl.DataFrame
    schema: TableSchema
    height: int  # lines the partitions hold, known before any is built (the report's count)
    #: the kept orders one private file per month (:meth:`spill`): then ``orders`` is empty
    months: Mapping[dt.date, Path] = field(default_factory=dict)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.schema.names)

    def spill(self, folder: Path) -> _LinePlan:
        """The plan with its kept orders written one Parquet file per month (first day) into
        ``folder`` (created owner-only: prepare's private scratch) and no longer held, so the
        driver holds one month's orders while it builds and writes that month's lines, not
        every order (issue 21). Unchanged when the lines carry no order date (one file)."""
        if "order_date" not in self.columns or self.orders.height == 0:
            return self
        orders = self.orders
        if not orders.get_column("order_date").is_sorted():
            orders = orders.sort("order_date")
        folder.mkdir(mode=0o700)
        months: dict[dt.date, Path] = {}
        offset = 0
        runs = orders.get_column("order_date").dt.truncate("1mo").rle().struct.unnest()
        for length, first in runs.iter_rows():  # a run per month, the dates being sorted
            months[first] = folder / f"orders-{first:%Y-%m}.parquet"
            orders.slice(offset, length).write_parquet(months[first])
            offset += length
        return replace(self, orders=self.orders.clear(), months=months)

    def build(
        self, orders: pl.DataFrame, files: tuple[Path, ...], engine: Engine, scratch: Path
    ) -> pl.DataFrame:
        """The prepared lines of ``orders`` (a subset of the plan's) from the raw ``files``
        that hold them, sorted, in the purpose's columns and types."""
        keyed = self._keyed(orders)
        # the engine joins and sorts the lines with the orders' numeric columns only; the
        # wide ones (two 64-hex pseudonyms and the channel) are gathered once into the sorted
        # lines, not carried through the join and copied again by the sort (issue 21)
        joined = engine.join_order_lines(
            files,
            keyed.select("order_id", *_SORT_COLUMNS),
            self.categories,
            order_by=_LINE_ORDER,
            scratch=scratch,
        )
        wide = keyed.drop(*_SORT_COLUMNS).rename({"order_id": "_raw_id"})
        wide = wide.rename({"order_pseudonym": "order_id"})
        del keyed
        # each line's row of ``wide`` (its order's), then the frame built one column at a
        # time: a wide column gathered by that row, a joined column taken and let go from the
        # joined lines, so the month is not held twice, joined and prepared (issue 21)
        at = (
            joined.select(pl.col("order_id").alias("_raw_id"))
            .join(
                wide.select("_raw_id").with_row_index("_at"),
                on="_raw_id",
                how="left",
                maintain_order="left",
            )
            .get_column("_at")
        )
        joined = joined.drop("order_id")
        columns: list[pl.Series] = []
        for name in self.schema.names:
            if name in wide.columns:
                column = wide.get_column(name).gather(at)
            else:
                column = joined.get_column(name)
                joined = joined.drop(name)
            columns.append(column.cast(self.schema.column(name).dtype))
            del column
        return pl.DataFrame(columns)

    def _keyed(self, orders: pl.DataFrame) -> pl.DataFrame:
        """``orders`` keyed: the raw id (the join key with the raw lines), date, channel, the
        keyed pseudonyms and their sort ranks — no person key. The HMACs run here, on the
        driver (the key never enters an engine), one per order, not per line: a fifth of the
        work on typical baskets. The engine gets the id, the date and the ranks
        (:meth:`build`)."""
        pseudonyms = pseudonymise_series(self.key, "order", orders["order_id"], "order_pseudonym")
        return (
            orders.with_columns(pseudonyms)
            .join(self.persons, on="person_root")
            .select(
                "order_id",
                "order_date",
                pl.col("channel").cast(pl.String),
                "order_pseudonym",
                "person_id",
                "_person_rank",
                _hex_rank("order_pseudonym").alias("_order_rank"),
            )
        )

    def partitions(
        self, as_of: dt.date, engine: Engine, scratch: Path
    ) -> Iterator[tuple[str, pl.DataFrame]]:
        """The prepared lines as month partitions (``lines.parquet/month=YYYY-MM/
        part-00000``), in name order, each built from its month's orders alone and in the
        frame's order (by pseudonym, never by an internal id): a month-closing reads only
        its months' files, and a month's file is the same bytes whenever its rows are.
        Lines without an order date (a purpose that drops it) are one file."""
        if "order_date" not in self.columns:
            yield LINES_FILE, self.build(self.orders, self.raw.files, engine, scratch)
            return
        if self.height == 0:  # the schema must survive: one empty partition of the as-of month
            name = f"{LINES_FILE}/{month_partition(as_of)}/part-00000.parquet"
            yield name, self.build(self.orders.clear(), self.raw.files, engine, scratch)
            return
        month = pl.col("order_date").dt.truncate("1mo")
        firsts = sorted(self.months) or self.orders.select(month.unique().sort()).to_series()
        for first in firsts:
            files = self.raw.files_of(first)
            if not files:  # orders without lines make no partition
                continue
            if self.months:  # spilled: read back this month's alone
                orders = pl.read_parquet(self.months[first])
            else:
                orders = self.orders.filter(month == first)
            lines = self.build(orders, files, engine, scratch)
            del orders
            if lines.height:
                yield f"{LINES_FILE}/{month_partition(first)}/part-00000.parquet", lines
            del lines  # not held while the next month is built (one month at a time)


def _first_then(
    name: str, frame: pl.DataFrame, rest: Iterable[tuple[str, pl.DataFrame]]
) -> Iterator[tuple[str, pl.DataFrame]]:
    """``(name, frame)``, then ``rest``; once the consumer moves past ``frame`` nothing here
    holds it."""
    first = [(name, frame)]
    del frame
    yield first.pop()
    yield from rest


def _write_atomically(
    target: Path,
    frames: Iterable[tuple[str, pl.DataFrame]],
    report: PolicyReport,
    raw: Mapping[str, str] | None = None,
) -> None:
    """Write the frames (``frames``: (file name, frame) pairs, the customers first, then one
    month partition at a time) and the report into a fresh folder beside ``target``, then
    swap it into place.

    With ``raw`` (the SHA-256 of the raw files read), a signed provenance record binds the
    frames to that raw data (:func:`segments.provenance.verify_prepared`): it records the
    SHA-256 of the bytes this function serialised and wrote, not of whatever the folder holds
    when it is signed, and this is the only place that signs one."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pid = os.getpid()
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.p{pid}-", suffix=".tmp"))
    written: dict[str, str] = {}

    def write(name: str, data: bytes | memoryview) -> None:
        with open(tmp / name, "xb") as handle:
            handle.write(data)
        written[name] = hashlib.sha256(data).hexdigest()

    try:
        for name, frame in frames:
            buffer = io.BytesIO()
            frame.write_parquet(buffer)
            del frame  # a month's frame is let go before the next one is built
            (tmp / name).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with buffer.getbuffer() as data:  # the bytes serialised, not a copy of them
                write(name, data)
            del buffer
        text = json.dumps(
            report.to_dict(), indent=2, sort_keys=True, ensure_ascii=False, default=str
        )
        write(POLICY_REPORT, (text + "\n").encode("utf-8"))
        if raw is not None:
            from segments.provenance import PROVENANCE_FILE, _sign_prepared

            record = _sign_prepared(
                dict(raw),
                written,
                purpose=report.purpose,
                as_of=report.as_of,
                key_id=report.key_id,
                demo_key=report.key_provenance == DEMO_PROVENANCE,
            )
            write_json(tmp / PROVENANCE_FILE, record)
        make_private(tmp)  # pseudonymised personal data: owner-only whatever the umask
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old.{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
        raise


def prepare(
    workspace: Workspace | str | os.PathLike[str],
    policy: Policy | str,
    purpose: str,
    as_of: dt.date | str,
    key: PseudonymKey | bytes | str | None = None,
    *,
    key_file: str | os.PathLike[str] | None = None,
) -> PolicyReport:
    """Apply ``policy`` for ``purpose`` on ``as_of`` and write ``W/prepared/<purpose>/``.

    Parameters
    ----------
    workspace : Workspace or path
        Reads ``raw/``; writes ``prepared/<purpose>/{customers,lines}.parquet`` and
        ``policy_report.json``.
    policy : Policy or str
        A :class:`Policy` or the name/path of one.
    purpose : str
        A purpose the policy declares (refused otherwise, AO-10).
    as_of : date or 'YYYY-MM-DD'
        The day the rules are evaluated on; raw dates after it are an error.
    key : PseudonymKey, bytes or str, optional
        The steward's pseudonymisation key; see :func:`segments.prepare.pseudonym.load_key` for the
        fallbacks (key file, environment variable, demo key for synthetic data only).
    key_file : path, optional
        A key file outside the workspace and the data folder.

    Returns
    -------
    PolicyReport
        The evidence, also written as ``policy_report.json``.

    Raises
    ------
    PolicyError
        Unknown policy or purpose, missing or too-short key, demo key on real data.
    SchemaError
        A raw table breaks its schema (missing column, wrong dtype, duplicate id, date after
        ``as_of``, orphaned row). Nothing is written.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    pol = policy if isinstance(policy, Policy) else Policy.load(policy)
    spec = pol.purpose(purpose)
    day = as_of_date(as_of)
    ws.check_usable().sweep()  # leftovers of a killed prepare or generate
    log_state = ws.erasure_log_state()  # read before the raw data and the erasure log

    def key_of() -> PseudonymKey:
        return load_key(key, key_file=key_file, workspace=ws, synthetic_proof=prove_synthetic)

    from segments.provenance import raw_hashed_once

    with (
        raw_hashed_once(),  # the record's digests and the demo key's proof: one pass over W/raw
        ws.scratch("prepare") as scratch,  # private: the raw lines' copies, the engine's spill
        progress(total=len(_PREPARE_STAGES), desc="prepare", unit="stage") as bar,
    ):
        return _prepare(ws, pol, spec, day, key_of, log_state, bar, scratch)


#: What :func:`prepare` shows on its progress bar, in order.
_PREPARE_STAGES = (
    "reading raw tables",
    "linking persons",
    "erasures and exclusions",
    "retention",
    "pseudonymising",
    "writing frames",
)


def _prepare(
    ws: Workspace,
    pol: Policy,
    spec: Purpose,
    day: dt.date,
    key_of: Callable[[], PseudonymKey],
    log_state: Any,
    bar: Any,
    scratch: Path,
) -> PolicyReport:
    """The body of :func:`prepare`, advancing ``bar`` through :data:`_PREPARE_STAGES`
    (``scratch``: its private folder).

    The key is resolved (``key_of``) once the raw tables passed their schema: broken raw data
    is reported as such, not as the demo key refused because the data is not the generator's.
    """

    def stage(done: int) -> None:
        bar.update(done - bar.n)
        bar.set_postfix_str(_PREPARE_STAGES[done], refresh=True)

    stage(0)
    from segments.provenance import raw_hashes

    raw = raw_hashes(ws)  # what this run reads, for the frames' provenance record
    # the order lines are read one file at a time into private copies (segments.prepare.
    # raw_lines), never whole: the other tables are one row per account, order or product,
    # parsed from the very bytes the record's digests name (as is the demo key's proof).
    # The orders too are read in chunks and held one month at a time when the raw data
    # allows it to be done exactly (segments.prepare.chunked); otherwise whole, as before.
    with reads_bound_to(ws.raw, raw):
        by_month = _read_by_month(ws, day, raw, scratch)
        if by_month is None:
            frames = load_raw_tables(ws, day, ("customers", "products", "orders"))
            raw_lines = read_raw_lines(ws, day, frames["orders"], frames["products"], raw, scratch)
        else:
            frames = {"customers": by_month.customers, "products": by_month.products}
            raw_lines = by_month.lines
            # the accounts held once (``frames``), so they go when dropped below
            by_month = replace(by_month, customers=by_month.customers.clear())
        pkey = key_of()
    stage(1)

    # the raw accounts' direct identifiers were validated; only the personnummer and the
    # organisation number (the linkage's keys) are read from here on, so the others are let
    # go now, and the accounts themselves once the persons are built (issue 21: the driver
    # holds no raw account through the write)
    accounts = frames.pop("customers")
    accounts = accounts.drop(set(_IDENTIFIERS) - set(_LINKAGE_KEYS), strict=False)
    run: _Run
    if by_month is None:
        roots = link_persons(accounts)
        # the raw orders are read once more here, then dropped: from now on the driver holds
        # the kept orders once (_Run.orders, then the line plan's), in compact columns, and
        # nothing else per order (issue 21)
        raw_orders = frames.pop("orders")
        n_orders = raw_orders.height
        orders = _orders_with_persons(raw_orders, raw_lines.lines_per_order, roots)
        raw_lines = raw_lines.without_counts()
        last_orders = raw_orders.group_by("customer_id").agg(pl.col("order_date").max())
        del raw_orders
        persons = _persons(pol, day, accounts, last_orders, roots, orders)
        run = _Run(persons, orders)
        del orders, last_orders
    else:  # the orders are month files: only per-account and per-person facts held here
        roots, n_orders = by_month.roots, by_month.n_orders
        persons = _persons(pol, day, accounts, by_month.last_orders, roots, by_month.person_lines)
        run = _MonthlyRun(persons, by_month.months, by_month.empty)
        del by_month
    customer_ids = accounts.get_column("customer_id")
    del accounts
    input_counts = {
        "customers": customer_ids.len(),
        "persons": persons.height,
        "orders": n_orders,
        "lines": raw_lines.count,
    }
    merged = persons.filter(pl.col("n_accounts") > 1)
    run.note(
        rule="person linkage: a sole trader's accounts are one person",
        kind="linkage",
        clause_ids=pol.clauses_for("person_linkage"),
        persons_flagged=merged.height,
        note=f"{int(merged['n_accounts'].sum())} accounts joined into {merged.height} persons "
        "by personnummer; the personnummer is then dropped",
    )
    # the rules cut run.persons from here on: the table as linked is not held through them
    # and the write (issue 21: prepare's resident floor when the month build starts)
    del persons, merged
    stage(2)
    _drop_logged_erasures(run, ws, pol, pkey, customer_ids, roots)
    del customer_ids, roots
    _apply_exclusions(run, pol, spec, day)
    stage(3)
    _apply_retention(run, pol, spec, day)
    stage(4)
    customers, lines = _pseudonymise(run, frames["products"], raw_lines, spec, pkey)
    run.release()  # the line plan holds the kept orders and the persons' pseudonyms now
    lines = lines.spill(scratch / "kept-orders")  # one file per month, read back per month
    dropped = sorted(set(CUSTOMERS.names) - set(customers.columns))
    run.note(
        rule="minimisation: only the purpose's columns",
        kind="minimisation",
        clause_ids=pol.clauses_for("minimisation"),
        note="direct identifiers and personnummer never enter a frame; dropped: "
        + ", ".join(dropped),
    )
    _check_minimised(customers, lines)

    report = PolicyReport(
        policy=pol.name,
        controller=pol.controller,
        purpose=spec.name,
        purpose_clause_ids=spec.clause_ids,
        as_of=day,
        key_provenance=pkey.provenance,
        key_id=pkey.key_id,
        input_counts=input_counts,
        output_counts={"persons": customers.height, "lines": lines.height},
        columns={"customers": tuple(customers.columns), "lines": lines.columns},
        rules=tuple(run.outcomes),
    )
    stage(5)
    # the lines are built month by month on the engine the setting selects (polars on the
    # driver, or DuckDB spilling into the workspace's private area)
    engine = get_engine(sources=[ws.raw_table("order_lines")])
    with ws.publishing(log_state, f"prepare --purpose {spec.name}"):
        partitions = lines.partitions(report.as_of, engine, scratch)
        # the customers' frame is held by the write alone, so it goes once its file is
        # written, before the first month is built (issue 21)
        files = _first_then(CUSTOMERS_FILE, customers, partitions)
        del customers
        _write_atomically(ws.prepared_dir(spec.name), files, report, raw)
    bar.update(len(_PREPARE_STAGES) - bar.n)
    return report


def _read_by_month(ws: Workspace, day: dt.date, raw: Mapping[str, str], scratch: Path) -> Any:
    """The raw tables read with the orders in chunks and spilled per month
    (:func:`segments.prepare.chunked.read_by_month`), or None when the raw data is not in a
    shape that pass reads exactly, or a check failed: then the caller reads them whole, as
    before, and so reports a failure with today's message (its spill is removed first)."""
    from segments.prepare import chunked

    if not _CHUNKED or not chunked.worth_chunking(ws.raw_table("orders")):
        return None
    folder = scratch / "by-month"
    try:
        return chunked.read_by_month(ws, day, raw, folder, link_persons)
    except chunked.Unusual:
        chunked.discard(folder)
        return None


#: Whether prepare tries the chunked pass over the orders (tests compare it with the whole).
_CHUNKED = True


def _persons(
    pol: Policy,
    day: dt.date,
    accounts: pl.DataFrame,
    last_orders: pl.DataFrame,
    roots: pl.DataFrame,
    lines: pl.DataFrame,
) -> pl.DataFrame:
    """The persons (:func:`person_table`) with their profiling eligibility and their lines
    (``n_lines``, 0 for a person without orders), from the orders' or persons' ``lines``
    (person_root, n_lines: summed per person here)."""
    return (
        _person_query(accounts, last_orders, roots)
        .with_columns(eligibility_expr(pol, day).alias("profiling_eligible"))
        .join(
            lines.lazy().group_by("person_root").agg(pl.col("n_lines").sum()),
            on="person_root",
            how="left",
        )
        .with_columns(pl.col("n_lines").fill_null(0))
        .collect()  # one query: no intermediate person frame held beside the next
    )


def _check_minimised(customers: pl.DataFrame, lines: pl.DataFrame | _LinePlan) -> None:
    """Last guard (AL-5): no direct identifier column may reach an output frame."""
    identifiers = {c for schema in RAW_TABLES.values() for c in schema.direct_identifiers}
    leaked = identifiers & (set(customers.columns) | set(lines.columns))
    if leaked:  # pragma: no cover - the schemas make this unreachable; kept as a tripwire
        raise PolicyError(
            f"direct identifier column(s) {sorted(leaked)} reached a prepared frame (minimisation)"
        )


def as_of_date(value: dt.date | str) -> dt.date:
    """The ``as_of`` parameter as a date (a date, a datetime or ``YYYY-MM-DD``)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise SchemaError(f"parameter 'as_of': {value!r} is not a date; give YYYY-MM-DD") from None


def read_prepared(workspace: Workspace | str | os.PathLike[str], purpose: str) -> dict[str, Any]:
    """Read ``W/prepared/<purpose>/`` as ``{"customers", "lines", "report"}`` (the frames as
    pandas)."""
    out = _read_prepared_pl(workspace, purpose)
    return {**out, "customers": to_pandas(out["customers"]), "lines": to_pandas(out["lines"])}


def _read_prepared_pl(
    workspace: Workspace | str | os.PathLike[str], purpose: str
) -> dict[str, Any]:
    """:func:`read_prepared` with polars frames (for internal callers)."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    ws.require(ws.prepared_dir(purpose), f"segments prepare --purpose {purpose}")
    return {
        "customers": pl.read_parquet(ws.prepared_frame(purpose, CUSTOMERS_FILE)),
        "lines": read_table(ws.prepared_frame(purpose, LINES_FILE)),
        "report": PolicyReport.read(ws.policy_report(purpose)),
    }
