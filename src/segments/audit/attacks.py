"""Attacks on the k-anonymous releases, with realistic background knowledge.

Everything here reads the released files (``W/releases/<id>/table.parquet`` and
``certificate.json``) and measures risks the way an outsider would, independently of the
search that produced the release:

* **Re-check.** k and l are recounted from the file alone (group by the quasi-identifiers the
  certificate names) and compared with what the certificate claims; the file's SHA-256 is
  compared with the certificate's.
* **Linkage.** A neighbour knows a private person's birth year, gender and address (postcode,
  hence municipality and county); the company register knows a business's or sole trader's
  industry, size band and municipality. The generalisation scheme is public (levels in the
  certificate), so the attacker generalises what they know to the released levels. A target's
  re-identification probability is 1 / (released rows consistent with that knowledge), 0 if
  none is (suppressed or not released). The attacker is assumed to know the target is in the
  release (the prosecutor model): for people who are not, the figure overstates the risk.
* **Homogeneity.** Classes whose sensitive value is the same for every row give the value
  away without re-identifying anyone.
* **Differencing.** Two k-anonymous releases of the same people, joined on what they share,
  show each column at the finer of the two levels; people whose joint class is smaller than
  k are singled out. For DP releases the difference of two noisy answers is itself noisy, so
  :func:`attack_dp_differencing` reports the noise of the difference instead of a break.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl

from segments._tables import read_table
from segments.anonymity.hierarchies import (
    NOT_APPLICABLE,
    Hierarchy,
    birth_year_hierarchy,
    county_hierarchy,
    customer_type_hierarchy,
    flat_hierarchy,
    industry_hierarchy,
    municipality_hierarchy,
    postcode_hierarchy,
    size_band_hierarchy,
)
from segments.exceptions import WorkspaceError
from segments.geography import postcodes_pl
from segments.schema import GENDERS
from segments.workspace import (
    CERTIFICATE,
    LABELS,
    PREPARED_CUSTOMERS,
    PREPARED_LINES,
    Workspace,
    sha256_file,
)

__all__ = [
    "KNOWLEDGE",
    "RISK_THRESHOLD",
    "KAnonRelease",
    "attack_dp_differencing",
    "attack_kanon_releases",
    "attacker_knowledge",
    "differencing_attack",
    "homogeneity_attack",
    "linkage_attack",
    "load_kanon_releases",
    "recheck_release",
]

#: A record is "at risk" when its re-identification probability exceeds 1/k or this value.
RISK_THRESHOLD = 0.2

#: What the attacker knows exactly, per kind of person: a neighbour knows a private person's
#: birth year, gender and address; the company register knows a business's (or a sole
#: trader's) industry, size band and municipality. Everyone's customer type is known.
KNOWLEDGE: dict[str, tuple[str, ...]] = {
    "private": ("customer_type", "birth_year", "gender", "postcode", "municipality_code"),
    "business": ("customer_type", "industry", "size_band", "municipality_code"),
    "sole_trader": ("customer_type", "industry", "size_band", "municipality_code"),
}
#: Attributes that cannot apply to a kind of person (a company has no birth year): the
#: attacker knows they are ``n/a`` in the release.
_NOT_APPLICABLE_TO: dict[str, tuple[str, ...]] = {
    "private": ("industry", "size_band"),
    "business": ("birth_year", "gender"),
    "sole_trader": (),
}
_KNOWLEDGE_COLUMNS = (
    "customer_type",
    "birth_year",
    "gender",
    "postcode",
    "industry",
    "size_band",
    "municipality_code",
    "county_code",
)
TABLE_FILE = "table.parquet"


# --- loading ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KAnonRelease:
    """A k-anonymous release as an outsider sees it: the file and its certificate."""

    release_id: str
    folder: Path
    table: pl.DataFrame
    certificate: dict[str, Any]

    @property
    def qis(self) -> tuple[str, ...]:
        """The quasi-identifiers the certificate names."""
        return tuple(self.certificate["quasi_identifiers"])

    @property
    def sensitive(self) -> str | None:
        """The sensitive column released as is, if any."""
        return self.certificate.get("sensitive")

    @property
    def levels(self) -> dict[str, int]:
        """The generalisation level of each quasi-identifier."""
        return {c: int(v) for c, v in self.certificate["levels"].items()}

    @property
    def k(self) -> int:
        """The k the release claims."""
        return int(self.certificate["privacy_model"]["k"])

    @property
    def shown(self) -> dict[str, int]:
        """Level of every column the file shows (the sensitive column as is, level 0)."""
        return {**self.levels, **({self.sensitive: 0} if self.sensitive else {})}


def load_kanon_releases(workspace: Workspace | str | Path) -> list[KAnonRelease]:
    """Every k-anonymous release in ``W/releases/`` (folders with a ``certificate.json``).

    Raises
    ------
    WorkspaceError
        If a certificate has no table next to it or names no quasi-identifiers.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    found = []
    for cert_path in sorted(ws.releases.glob(f"*/{CERTIFICATE}")):
        folder = cert_path.parent
        certificate = json.loads(cert_path.read_text(encoding="utf-8"))
        table_path = folder / TABLE_FILE
        if not table_path.exists():
            raise WorkspaceError(
                f"release {folder.name!r}: {CERTIFICATE} has no {TABLE_FILE} beside it; "
                "a release must be complete (re-run `segments kanon`)"
            )
        if "quasi_identifiers" not in certificate or "levels" not in certificate:
            raise WorkspaceError(
                f"release {folder.name!r}: {CERTIFICATE} lacks 'quasi_identifiers' or "
                "'levels'; the release cannot be re-checked"
            )
        release_id = str(certificate.get("release_id", folder.name))
        found.append(KAnonRelease(release_id, folder, pl.read_parquet(table_path), certificate))
    return found


# --- re-check -----------------------------------------------------------------------------------
def _class_keys(qis: Sequence[str]) -> list[Any]:
    return list(qis) if qis else [pl.lit(0).alias("_all")]


def recheck_release(release: KAnonRelease) -> dict[str, Any]:
    """Recount k and l from the released file and compare them with the certificate.

    Returns
    -------
    dict
        ``k_certified``, ``k_measured``, ``l_certified``, ``l_measured`` (distinct),
        ``entropy_l_measured``, ``rows_certified``, ``rows_measured``, ``sha256_matches``,
        ``classes`` and ``ok`` (every measured value meets its certified one).
    """
    table, qis, s = release.table, release.qis, release.sensitive
    model = release.certificate.get("privacy_model", {})
    sizes = table.group_by(_class_keys(qis)).len(name="n")["n"]
    k_measured = int(sizes.min()) if table.height else 0  # type: ignore[arg-type]
    out: dict[str, Any] = {
        "k_certified": int(model.get("k", 0)),
        "k_measured": k_measured,
        "classes": sizes.len(),
        "rows_certified": release.certificate.get("released_rows"),
        "rows_measured": table.height,
    }
    l_certified = model.get("l")
    out["l_certified"] = l_certified
    if s is not None and table.height:
        per = table.group_by(_class_keys(qis)).agg(
            pl.col(s).n_unique().alias("d"),
            pl.col(s).value_counts().struct.field("count").alias("c"),
        )
        entropies = [
            -sum(c / sum(counts) * math.log(c / sum(counts)) for c in counts)
            for counts in per["c"].to_list()
        ]
        out["l_measured"] = int(per["d"].min())  # type: ignore[arg-type]
        out["entropy_l_measured"] = round(math.exp(min(entropies)), 4)
    else:
        out["l_measured"] = None
        out["entropy_l_measured"] = None
    expected = release.certificate.get("files", {}).get(TABLE_FILE)
    out["sha256_matches"] = bool(expected) and sha256_file(release.folder / TABLE_FILE) == expected
    l_ok = True
    if l_certified is not None:
        if model.get("diversity") == "entropy":
            l_ok = (out["entropy_l_measured"] or 0) >= float(l_certified) - 1e-9
        else:
            l_ok = (out["l_measured"] or 0) >= int(l_certified)
    out["ok"] = bool(
        k_measured >= out["k_certified"]
        and l_ok
        and out["rows_certified"] in (None, table.height)
        and out["sha256_matches"]
    )
    return out


# --- homogeneity ---------------------------------------------------------------------------------
def homogeneity_attack(
    table: pl.DataFrame, qis: Sequence[str], sensitive: str | None
) -> dict[str, Any]:
    """Share of classes, and of records, whose sensitive value is the same in every row.

    Whoever knows a person is in such a class learns the value without re-identifying them.

    Examples
    --------
    >>> t = pl.DataFrame({"a": ["x", "x", "y", "y"], "s": ["1", "1", "1", "2"]})
    >>> homogeneity_attack(t, ["a"], "s")["records_share"]
    0.5
    """
    if sensitive is None or table.height == 0:
        return {
            "sensitive": sensitive,
            "assessed": False,
            "note": "no sensitive column: every released column is a quasi-identifier",
        }
    per = table.group_by(_class_keys(qis)).agg(
        pl.len().alias("n"), pl.col(sensitive).n_unique().alias("d")
    )
    homogeneous = per.filter(pl.col("d") == 1)
    return {
        "sensitive": sensitive,
        "assessed": True,
        "classes": per.height,
        "homogeneous_classes": homogeneous.height,
        "classes_share": homogeneous.height / per.height,
        "records": table.height,
        "homogeneous_records": int(homogeneous["n"].sum()),
        "records_share": int(homogeneous["n"].sum()) / table.height,
    }


# --- linkage ------------------------------------------------------------------------------------
def attacker_knowledge(raw_customers: pl.DataFrame) -> pl.DataFrame:
    """What a neighbour or the company register knows, one row per person.

    Accounts are linked into persons as prepare does (a sole trader's private and business
    accounts are one person, AO-3); the personnummer is read for that and not returned, and
    no direct identifier is. A person's address (postcode, municipality, county) comes from
    the private account, the register's municipality from the business account.

    Returns
    -------
    polars.DataFrame
        ``target`` (row number), ``customer_type`` (business | private | sole_trader) and the
        known columns as text, ``n/a`` where a value does not apply.
    """
    from segments.prepare.frames import link_persons

    roots = link_persons(raw_customers)
    business_last = pl.col("customer_type") == "business"
    private_last = pl.col("customer_type") != "business"
    accounts = raw_customers.select(
        "customer_id",
        "customer_type",
        "is_sole_trader",
        *(pl.col(c).cast(pl.Utf8) for c in _KNOWLEDGE_COLUMNS if c != "customer_type"),
    ).join(roots, on="customer_id")
    persons = accounts.group_by("person_root").agg(
        pl.when(pl.col("is_sole_trader").any())
        .then(pl.lit("sole_trader"))
        .otherwise(pl.col("customer_type").first())
        .alias("customer_type"),
        *(
            pl.col(c).sort_by(business_last).drop_nulls().first()
            for c in ("birth_year", "gender", "postcode")
        ),
        *(pl.col(c).drop_nulls().first() for c in ("industry", "size_band")),
        *(
            pl.col(c).sort_by(private_last).drop_nulls().first()
            for c in ("municipality_code", "county_code")
        ),
    )
    return (
        persons.sort("person_root")
        .drop("person_root")
        .with_columns(pl.all().fill_null(NOT_APPLICABLE))
        .with_row_index("target")
    )


@cache
def _hierarchies() -> dict[str, Hierarchy]:
    """The public hierarchies of the columns an attacker knows (as the release builds them)."""
    return {
        "birth_year": birth_year_hierarchy(),
        "gender": flat_hierarchy("gender", [*GENDERS, NOT_APPLICABLE]),
        "postcode": postcode_hierarchy(),
        "municipality_code": municipality_hierarchy(),
        "county_code": county_hierarchy(),
        "customer_type": customer_type_hierarchy(),
        "size_band": size_band_hierarchy(),
        "industry": industry_hierarchy(),
    }


@cache
def _postcodes_of_municipality() -> dict[str, tuple[str, ...]]:
    pc = postcodes_pl()
    out: dict[str, list[str]] = {}
    for code, municipality in zip(pc["postcode"], pc["municipality_code"], strict=True):
        out.setdefault(municipality, []).append(code)
    return {m: tuple(codes) for m, codes in out.items()}


@cache
def _level_labels(column: str, level: int) -> dict[str, str]:
    h = _hierarchies()[column]
    return dict(zip(h.values, h.generalise(list(h.values), level), strict=True))


def _generalised(values: pl.Series, column: str, level: int) -> pl.Series:
    """``values`` at ``level`` of the column's public hierarchy; null where unknown to it."""
    labels = _level_labels(column, level)
    return values.replace_strict(labels, default=None, return_dtype=pl.Utf8)


def _municipality_postcodes(municipalities: pl.Series, level: int) -> pl.Series:
    """Every released postcode label a business in each municipality may carry."""
    at_level = _level_labels("postcode", level)
    of = _postcodes_of_municipality()
    labels = []
    for m in municipalities.to_list():
        released = {at_level[c] for c in of.get(m, ()) if c in at_level}
        labels.append(sorted(released) if released else None)
    return pl.Series("postcode", labels, dtype=pl.List(pl.Utf8))


def _constraints(
    targets: pl.DataFrame, kind: str, levels: Mapping[str, int]
) -> tuple[pl.DataFrame, list[str]]:
    """Each target's knowledge at the released levels: one column per constrained QI."""
    known = set(KNOWLEDGE[kind])
    constrained: dict[str, pl.Series] = {}
    for column, level in levels.items():
        if column in known or column in _NOT_APPLICABLE_TO[kind]:
            values = (
                targets[column]
                if column in known
                else pl.Series(column, [NOT_APPLICABLE] * targets.height)
            )
            constrained[column] = _generalised(values, column, level).alias(column)
        elif column == "postcode" and "municipality_code" in known:
            constrained[column] = _municipality_postcodes(targets["municipality_code"], level)
        elif column == "county_code" and "municipality_code" in known:
            county = targets["municipality_code"].str.slice(0, 2)
            constrained[column] = _generalised(county, column, level).alias(column)
    frame = pl.DataFrame([targets["target"], *constrained.values()])
    for column, series in constrained.items():
        if series.dtype == pl.List(pl.Utf8):
            frame = frame.explode(column)
    return frame, list(constrained)


def linkage_attack(
    release: KAnonRelease,
    knowledge: pl.DataFrame,
    *,
    threshold: float = RISK_THRESHOLD,
) -> dict[str, Any]:
    """Re-identification probabilities of every target linked against one release.

    Parameters
    ----------
    release : KAnonRelease
    knowledge : polars.DataFrame
        :func:`attacker_knowledge` (``target``, ``customer_type`` and the known columns).
    threshold : float
        Records above this probability (and above 1/k) are counted as at risk.

    Returns
    -------
    dict
        ``targets`` (people assessed), ``matched`` (with at least one consistent row),
        ``highest`` and ``average`` probability over matched targets, ``records_at_risk``
        (probability > 1/k), ``records_above_threshold``, ``threshold``, ``unique_matches``
        (exactly one consistent row), ``consistent_rows`` (targets per bin of the number of
        consistent rows) and ``attribute_disclosure`` (per released column the attacker
        does not know: targets whose consistent rows all share one value of it, so the
        attacker learns it without re-identifying them).
    """
    qi_levels = {c: lv for c, lv in release.levels.items() if c in _hierarchies()}
    parts = []
    unassessable = 0
    disclosed: dict[str, int] = {}
    for kind in KNOWLEDGE:
        targets = knowledge.filter(pl.col("customer_type") == kind)
        if targets.height == 0:
            continue
        frame, columns = _constraints(targets, kind, qi_levels)
        if not columns:  # nothing known at the released levels: every row is consistent
            m_all = release.table.height
            matches = targets.select("target", pl.lit(m_all, pl.Int64).alias("m"))
            parts.append(matches)
            continue
        bad = frame.filter(pl.any_horizontal(pl.col(columns).is_null()))["target"].unique()
        unassessable += bad.len()
        frame = frame.filter(~pl.col("target").is_in(bad.implode()))
        counts = release.table.group_by(columns).len(name="n")
        matches = (
            frame.join(counts, on=columns, how="left")
            .group_by("target")
            .agg(pl.col("n").fill_null(0).sum().cast(pl.Int64).alias("m"))
        )
        parts.append(matches)
        for column in _informative_unknowns(release.table, columns):
            disclosed[column] = disclosed.get(column, 0) + _disclosed(
                release.table, frame, columns, column
            )
    m = pl.concat(parts)["m"] if parts else pl.Series("m", [], dtype=pl.Int64)
    probability = pl.Series([1.0 / v if v > 0 else 0.0 for v in m.to_list()], dtype=pl.Float64)
    matched = probability.filter(probability > 0)
    k = release.k
    return {
        "targets": m.len(),
        "unassessable_targets": unassessable,
        "matched": matched.len(),
        "highest": float(matched.max()) if matched.len() else 0.0,  # type: ignore[arg-type]
        "average": float(matched.mean()) if matched.len() else 0.0,  # type: ignore[arg-type]
        "records_at_risk": int((probability > 1.0 / k + 1e-12).sum()),
        "threshold": threshold,
        "records_above_threshold": int((probability > threshold).sum()),
        "unique_matches": int((m == 1).sum()),
        "consistent_rows": {
            label: int(((m >= low) & (m <= high)).sum()) for label, low, high in _BINS
        },
        "attribute_disclosure": {
            column: {"targets": n, "share_of_matched": n / matched.len() if matched.len() else 0.0}
            for column, n in disclosed.items()
        },
        "assumption": "the attacker knows the target is in the release (prosecutor model); "
        "for people who are not, the probability is an overstatement",
    }


#: Bins of the number of released rows consistent with a target's knowledge.
_BINS = (
    ("0 (not found)", 0, 0),
    ("1", 1, 1),
    ("2-4", 2, 4),
    ("5-9", 5, 9),
    ("10-19", 10, 19),
    ("20+", 20, 2**62),
)


def _informative_unknowns(table: pl.DataFrame, known: Sequence[str]) -> list[str]:
    """Released columns the attacker does not know and that take more than one value."""
    return [c for c in table.columns if c not in known and table[c].n_unique() > 1]


def _disclosed(table: pl.DataFrame, frame: pl.DataFrame, known: Sequence[str], column: str) -> int:
    """Targets whose consistent rows all carry one value of ``column``: the attacker learns it
    without re-identifying them (homogeneity given background knowledge)."""
    values = table.group_by([*known, column]).len(name="n")
    per_target = (
        frame.join(values, on=list(known), how="inner")
        .group_by("target")
        .agg(pl.col(column).n_unique().alias("d"))
    )
    return int((per_target["d"] == 1).sum())


# --- differencing ---------------------------------------------------------------------------------
def _kept_by(
    people: pl.DataFrame, release: KAnonRelease, hierarchies: Mapping[str, Hierarchy]
) -> pl.Series:
    """Which people a release shows: their generalised row occurs in the released file."""
    from segments.anonymity.release import generalise_pl as generalise

    shown = release.shown
    qis = [c for c in shown if c != release.sensitive]
    view = generalise(people.select(list(shown)), hierarchies, {c: shown[c] for c in qis})
    view = view.with_columns(pl.col(list(shown)).cast(pl.Utf8))
    present = release.table.select(pl.col(list(shown)).cast(pl.Utf8)).unique()
    marked = view.with_row_index("_i").join(
        present.with_columns(pl.lit(True).alias("_in")), on=list(shown), how="left"
    )
    return marked.sort("_i")["_in"].fill_null(False)


def differencing_attack(
    people: pl.DataFrame,
    first: KAnonRelease,
    second: KAnonRelease,
    hierarchies: Mapping[str, Hierarchy] | None = None,
) -> dict[str, Any]:
    """Join two k-anonymous releases of the same people on what they share.

    A person in both releases is known, in every column either shows, at the finer of the two
    levels (the hierarchies are trees). Counted among the people both releases show (each
    membership read from the released file), classes of that joint view smaller than the
    smaller k single people out.

    Parameters
    ----------
    people : polars.DataFrame
        One row per person with every column either release shows, ungeneralised
        (``segments.anonymity.customer_release_table`` of the prepared frames).
    first, second : KAnonRelease
    hierarchies : mapping, optional
        Default: ``customer_hierarchies(people)``.

    Returns
    -------
    dict
        ``joint_levels``, ``people_in_both``, ``k`` (the smaller), ``records_below_k``,
        ``records_singled_out`` (joint class of one), ``smallest_class``, ``classes_below_k``.
    """
    from segments.anonymity.release import customer_hierarchies
    from segments.anonymity.release import generalise_pl as generalise

    hierarchies = dict(hierarchies or customer_hierarchies(people))
    a, b = first.shown, second.shown
    columns = sorted(set(a) | set(b))
    missing = [c for c in columns if c not in people.columns or c not in hierarchies]
    if missing:
        raise WorkspaceError(
            f"differencing {first.release_id!r} with {second.release_id!r}: the people table "
            f"lacks column(s) {missing}; pass the customer table with every released column"
        )
    joint = {
        c: min(a.get(c, hierarchies[c].height), b.get(c, hierarchies[c].height)) for c in columns
    }
    both = _kept_by(people, first, hierarchies) & _kept_by(people, second, hierarchies)
    k = min(first.k, second.k)
    view = generalise(people.select(columns), hierarchies, joint).filter(both)
    sizes = (
        view.group_by(columns).len(name="n")["n"] if view.height else pl.Series("n", [], pl.UInt32)
    )
    below = sizes.filter(sizes < k)
    return {
        "releases": [first.release_id, second.release_id],
        "joint_levels": joint,
        "people_in_both": view.height,
        "k": k,
        "classes": sizes.len(),
        "classes_below_k": below.len(),
        "records_below_k": int(below.sum()),
        "records_singled_out": int(sizes.filter(sizes == 1).len()),
        "smallest_class": int(sizes.min()) if sizes.len() else 0,  # type: ignore[arg-type]
    }


def _prepared_people(ws: Workspace, purpose: str, segments: str | None) -> pl.DataFrame | None:
    """The customer table of every releasable column, rebuilt from the prepared frames."""
    from segments.anonymity.release import CUSTOMER_COLUMNS
    from segments.anonymity.release import customer_release_table_pl as customer_release_table

    folder = ws.prepared_dir(purpose)
    if not (folder / PREPARED_CUSTOMERS).exists() or not (folder / PREPARED_LINES).exists():
        return None
    customers = pl.read_parquet(folder / PREPARED_CUSTOMERS)
    lines = read_table(folder / PREPARED_LINES)
    if segments == "private_model":
        path = ws.private_segments / LABELS
        if not path.exists():
            return None
        labels = pl.read_parquet(path, columns=["person_id", "segment"])
    else:
        from segments.features import category_rule_labels_pl

        labels = category_rule_labels_pl(lines)
    columns = [
        c for c in CUSTOMER_COLUMNS if c in customers.columns or c in ("segment", "spend_band")
    ]
    return customer_release_table(customers, lines, labels, columns)


def _in_prepared(knowledge: pl.DataFrame, ws: Workspace, purpose: str | None) -> pl.DataFrame:
    """Targets whose known attributes occur among the prepared people (the input population)."""
    if purpose is None:
        return knowledge
    path = ws.prepared_frame(purpose, PREPARED_CUSTOMERS)
    if not path.exists():
        return knowledge
    prepared = pl.read_parquet(path)
    on = [
        c
        for c in ("customer_type", "industry", "size_band", "birth_year", "gender", "postcode")
        if c in prepared.columns
    ]
    population = prepared.select(pl.col(on).cast(pl.Utf8).fill_null(NOT_APPLICABLE)).unique()
    return knowledge.join(population, on=on, how="semi")


def _verdict(
    recheck: Mapping[str, Any],
    linkage: Mapping[str, Any],
    homogeneity: Mapping[str, Any],
    differencing: Sequence[Mapping[str, Any]],
) -> str:
    problems = []
    if not recheck["ok"]:
        problems.append(
            f"re-check fails (k measured {recheck['k_measured']} vs certified "
            f"{recheck['k_certified']}, l {recheck['l_measured']} vs {recheck['l_certified']}, "
            f"checksum {'ok' if recheck['sha256_matches'] else 'MISMATCH'})"
        )
    if linkage["records_at_risk"]:
        problems.append(
            f"linkage: {linkage['records_at_risk']} records above 1/k (highest "
            f"{linkage['highest']:.2f})"
        )
    if homogeneity.get("assessed") and homogeneity["homogeneous_records"]:
        problems.append(
            f"homogeneity: {homogeneity['homogeneous_records']} records "
            f"({homogeneity['records_share']:.1%}) in classes with one sensitive value"
        )
    for d in differencing:
        if d.get("records_below_k"):
            problems.append(
                f"differencing with {d['releases'][1]!r}: {d['records_below_k']} records in "
                f"joint classes below k={d['k']}"
            )
    if problems:
        return "AT RISK: " + "; ".join(problems)
    return (
        f"low risk: k and l hold in the file, highest linkage probability "
        f"{linkage['highest']:.3f} (average {linkage['average']:.3f}), no homogeneous class, "
        "no joint class below k"
    )


def attack_kanon_releases(
    workspace: Workspace | str | Path,
    raw_customers: pl.DataFrame,
    *,
    prepared_purpose: str | None = None,
    threshold: float = RISK_THRESHOLD,
) -> list[dict[str, Any]]:
    """Re-check and attack every k-anonymous release in the workspace.

    Runs in the data steward's role: ``raw_customers`` is the raw customer table (the
    attacker's background knowledge is drawn from it; no identifier leaves this function).

    Parameters
    ----------
    workspace : Workspace or path
    raw_customers : polars.DataFrame
        ``W/raw/customers.parquet``.
    prepared_purpose : str, optional
        Purpose whose prepared frames were released; default: each certificate's
        ``purpose``. Used to restrict targets to the released population and to rebuild the
        people table for the differencing attack.
    threshold : float
        Probability above which a record is reported at risk (besides 1/k).

    Returns
    -------
    list of dict
        One per release, JSON-able: ``release_id``, ``k``, ``quasi_identifiers``, ``levels``,
        ``recheck`` (:func:`recheck_release`), ``linkage`` (:func:`linkage_attack`),
        ``homogeneity`` (:func:`homogeneity_attack`), ``differencing`` (a list of
        :func:`differencing_attack` results against the other releases of the same
        population; empty if there are none or the prepared frames are gone),
        ``differencing_note`` (which of these), ``verdict``.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    releases = load_kanon_releases(ws)
    knowledge = attacker_knowledge(raw_customers)
    people_cache: dict[tuple[str, str | None], pl.DataFrame | None] = {}
    results = []
    for release in releases:
        purpose = prepared_purpose or release.certificate.get("purpose")
        targets = _in_prepared(knowledge, ws, purpose)
        linkage = linkage_attack(release, targets, threshold=threshold)
        homogeneity = homogeneity_attack(release.table, release.qis, release.sensitive)
        recheck = recheck_release(release)
        differencing = []
        differencing_note = "no other k-anonymous release of the same population"
        others = [
            o
            for o in releases
            if o.release_id != release.release_id
            and o.certificate.get("population") == release.certificate.get("population")
        ]
        if others and purpose is not None:
            key = (purpose, release.certificate.get("segments"))
            if key not in people_cache:
                people_cache[key] = _prepared_people(ws, *key)
            people = people_cache[key]
            if people is not None:
                differencing = [differencing_attack(people, release, o) for o in others]
                differencing_note = f"joined with {len(others)} other release(s)"
            else:
                differencing_note = (
                    f"NOT RUN: the prepared frames of purpose {purpose!r} (or the segment "
                    "labels) are gone, so the people table cannot be rebuilt"
                )
        results.append(
            {
                "release_id": release.release_id,
                "k": release.k,
                "quasi_identifiers": list(release.qis),
                "sensitive": release.sensitive,
                "levels": release.levels,
                "recheck": recheck,
                "linkage": linkage,
                "homogeneity": homogeneity,
                "differencing": differencing,
                "differencing_note": differencing_note,
                "verdict": _verdict(recheck, linkage, homogeneity, differencing),
            }
        )
    return results


def attack_dp_differencing(workspace: Workspace | str | Path) -> list[dict[str, Any]]:
    """The noise of the difference of two DP releases of the same cells.

    Subtracting two noisy answers about the same population (e.g. before and after a person
    joined) cancels nothing: the noise is independent, so the difference has variance
    ``σ₁² + σ₂²``. Reported per pair of releases and shared aggregate, with one person's
    largest effect (the L1 sensitivity) in units of that noise.

    Returns
    -------
    list of dict
        ``releases``, ``query``, ``aggregate``, ``difference_std``, ``person_effect``,
        ``effect_in_std`` (below ~1: one person is hidden in the noise of the difference).
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    cards = []
    for path in sorted(ws.releases.glob("*/card.json")):
        card = json.loads(path.read_text(encoding="utf-8"))
        cards.append(card)
    out = []
    for i, a in enumerate(cards):
        for b in cards[i + 1 :]:
            if a.get("population") != b.get("population"):
                continue
            rows_b = {(r["query"], r["aggregate"]): r for r in b.get("aggregates", [])}
            for r in a.get("aggregates", []):
                other = rows_b.get((r["query"], r["aggregate"]))
                if other is None:
                    continue
                std = math.sqrt(_noise_variance(r) + _noise_variance(other))
                effect = float(max(r.get("sensitivity_l1") or 0, other.get("sensitivity_l1") or 0))
                out.append(
                    {
                        "releases": [a.get("release_id"), b.get("release_id")],
                        "query": r["query"],
                        "aggregate": r["aggregate"],
                        "difference_std": std,
                        "person_effect": effect,
                        "effect_in_std": effect / std if std > 0 else math.inf,
                        "verdict": "noisy: the difference is not a break (its noise is the "
                        "sum of both releases' noise)",
                    }
                )
    return out


def _noise_variance(row: Mapping[str, Any]) -> float:
    """Variance of one cell's noise from its card row (Laplace scale b: 2b²; Gaussian σ²)."""
    scale = float(row["scale"])
    return 2.0 * scale**2 if "laplace" in str(row.get("distribution", "")).lower() else scale**2
