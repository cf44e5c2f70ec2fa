"""The reviewer's checks: one small function per promise, computed from the actual outputs.

Every check takes an :class:`AuditContext` (the workspace, the policy audited, the report's
as-of date, the ledger and — in the data steward's role only — the pseudonymisation key) and
returns a :class:`Finding`: what was checked, the evidence (numbers, dates, file hashes) and
``pass``, ``fail`` or ``not applicable``. A check never trusts a stage's own report: cutoffs
are recomputed from the policy and the as-of date, budgets from the ledger entries, file
hashes from the files' bytes. A check that needs the key or the raw customer table runs in
the data steward's role and says so; without the key it is "not applicable — needs the data
steward's key", never a pass.

:func:`clause_checks` reads, from the audited policy file's ``[promises]``, the checks that
verify each clause (clause ids are data, never code); :func:`segments.audit.run.run_audit`
turns that table into the report's checklist.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec

import polars as pl

from segments._tables import table_schema
from segments.audit.context import (
    NEEDS_KEY,
    REVIEWER,
    STEWARD,
    AuditContext,
    Finding,
    Status,
)
from segments.audit.pii import KnownIdentifiers, luhn_valid, scan_paths
from segments.audit.render import ORGANISATIONAL_ROLE
from segments.exceptions import PolicyError, ReleaseRefusedError
from segments.policy import EU_EEA, Guarantee, Policy, months_before
from segments.privacy.composition import DPFamily, pure_to_rho
from segments.provenance import recorded_as_of, recorded_key_id
from segments.schema import (
    CATEGORIES,
    PREPARED_TABLES,
    RAW_TABLES,
    SURVEYS,
    TableSchema,
)
from segments.workspace import CERTIFICATE, LABELS, sha256_file

__all__ = [
    "CHECKS",
    "CORE_CHECKS",
    "NEEDS_KEY",
    "AuditContext",
    "Finding",
    "clause_checks",
]

#: Column names that are direct identifiers anywhere (raw schema, plus internal account ids).
DIRECT_IDENTIFIERS = frozenset(
    {c for t in RAW_TABLES.values() for c in t.direct_identifiers} | {"customer_id"}
)


@dataclass(frozen=True)
class _Outcome:
    """What one check found; :func:`_check` names it (the check's name is written once)."""

    method: str
    evidence: Mapping[str, Any]
    status: Status
    role: str = REVIEWER


def _found(method: str, evidence: Mapping[str, Any], ok: bool, role: str = REVIEWER) -> _Outcome:
    """A verdict: ``pass`` when ``ok``, else ``fail``."""
    return _Outcome(method, evidence, "pass" if ok else "fail", role)


def _problems(
    method: str,
    evidence: Mapping[str, Any],
    problems: Any,
    key: str = "problems",
    role: str = REVIEWER,
) -> _Outcome:
    """A verdict read off the problems found: ``pass`` exactly when there are none; they
    are the evidence's last entry, under ``key`` ("none" when empty)."""
    return _found(method, {**evidence, key: problems or "none"}, not problems, role)


def _not_applicable(subject: str, evidence: Mapping[str, Any], role: str = REVIEWER) -> _Outcome:
    """Nothing to check (no frames, no releases...): never a pass."""
    return _Outcome(subject, evidence, "not applicable", role)


def _needs_key(subject: str) -> _Outcome:
    """The check runs in the data steward's role only: without the key it is not applicable."""
    return _not_applicable(subject, {"reason": NEEDS_KEY}, STEWARD)


def _no_ledger(ctx: AuditContext) -> _Outcome:
    """Without a ledger the release checks have nothing to recompute from (each finding its
    own evidence, never one shared mapping) — unless the workspace holds release cards: they
    were charged to a ledger that is now missing (deleted or moved), which fails, never a
    neutral "not applicable" (review r11a F5)."""
    cards = ctx.cards()
    if not cards:
        from segments.privacy.ledger import missing_ledgers

        # no cards either: still fail where an anchor or the registry shows a ledger that
        # was there (W/releases deleted along with it; review r11a F5 residual)
        missing = missing_ledgers(ctx.policy.controller, ctx.workspace)
        if not missing:
            return _not_applicable("ledger", {"reason": "no ledger given or found"})
        return _problems(
            "the anchors and the registry of controller ledgers",
            {"ledger given or found": "none"},
            [
                f"{line}: a deleted or moved ledger; fix: restore it from a backup, or pass "
                "--ledger PATH"
                for line in missing
            ],
        )
    ids = sorted(
        {
            str((card.get("ledger_anchor") or {}).get("ledger_id") or card.get("ledger_label"))
            for _, card in cards
            if isinstance(card, dict)
        }
    )
    return _problems(
        "the ledger the release cards name",
        {"release cards": len(cards), "ledger given or found": "none"},
        [
            f"{len(cards)} release card(s) in W/releases name ledger(s) {', '.join(ids[:3])}, "
            "which was not found: a deleted or moved ledger; fix: pass --ledger PATH, the "
            "ledger the releases were charged to"
        ],
    )


#: Every check by name, in report order (the order they are defined in below).
CHECKS: dict[str, Callable[[AuditContext], Finding]] = {}

_P = ParamSpec("_P")


def _check(
    name: str, listed: bool = True
) -> Callable[
    [Callable[Concatenate[AuditContext, _P], _Outcome]],
    Callable[Concatenate[AuditContext, _P], Finding],
]:
    """Register a check under ``name``: it returns an :class:`_Outcome`, callers get the
    named :class:`Finding` (its docstring's first sentence is the report's title). A check
    not ``listed`` is left out of :data:`CHECKS` (the report shows it apart from the
    clauses' checklist)."""

    def register(
        check: Callable[Concatenate[AuditContext, _P], _Outcome],
    ) -> Callable[Concatenate[AuditContext, _P], Finding]:
        @functools.wraps(check)
        def run(ctx: AuditContext, /, *args: _P.args, **kwargs: _P.kwargs) -> Finding:
            out = check(ctx, *args, **kwargs)
            return Finding(name, out.method, out.evidence, out.status, out.role)

        if listed:
            CHECKS[name] = run
        return run

    return register


def _rel(ctx: AuditContext, path: Path) -> str:
    return str(path.relative_to(ctx.workspace.root))


# --- retention -----------------------------------------------------------------------------
@_check("retention_rows")
def check_retention_rows(ctx: AuditContext) -> _Outcome:
    """No order line older than any transaction rule's cutoff; no person kept past a
    last-order cutoff (visible from the frames: their last order precedes the cutoff)."""
    rows: list[str] = []
    bad: list[str] = []
    for purpose in ctx.prepared_purposes():
        rules = (
            ctx.policy.purposes[purpose].rules_for("transactions")
            if _declared(ctx, purpose)
            else ()
        )
        lines = ctx.prepared(purpose, "lines", ["person_id", "order_date"])
        customers = ctx.prepared(purpose, "customers", ["person_id", "signup_date"])
        for rule in rules:
            cutoff = rule.cutoff(ctx.as_of)
            if cutoff is None:
                continue
            if rule.anchor == "collection":
                old = lines.filter(pl.col("order_date") < cutoff)
                oldest = lines["order_date"].min()
                rows.append(
                    f"{purpose}: {rule.months} mo ({','.join(rule.clause_ids)}) "
                    f"cutoff {cutoff}, oldest {oldest!s}, older rows {old.height}"
                )
                if old.height:
                    bad.append(f"{purpose}: {old.height} lines before {cutoff}")
            elif rule.anchor == "last_order":
                last = lines.group_by("person_id").agg(pl.col("order_date").max().alias("last"))
                if "signup_date" in customers.columns:
                    last = last.join(customers, on="person_id", how="left").with_columns(
                        pl.max_horizontal("last", "signup_date").alias("last")
                    )
                stale = last.filter(pl.col("last") < cutoff)
                rows.append(
                    f"{purpose}: last order + {rule.months} mo cutoff {cutoff}, "
                    f"persons past it {stale.height}"
                )
                if stale.height:
                    bad.append(
                        f"{purpose}: {stale.height} persons whose last order precedes {cutoff}"
                    )
    if not rows:
        return _not_applicable("recompute transaction cutoffs", {"frames": 0})
    return _problems(
        "recompute every transaction rule's cutoff from the policy and as_of; compare with "
        "the order dates in every prepared frame",
        {"as_of": ctx.as_of.isoformat(), "rules": rows},
        bad,
        key="violations",
    )


def _declared(ctx: AuditContext, purpose: str) -> bool:
    return purpose in ctx.policy.purposes


_ANCHORS = {
    "last_order": pl.col("last_order_or_signup"),
    "last_contact": pl.col("last_contact"),
    "end_of_relationship": pl.col("end_date").fill_null(dt.date(9999, 12, 31)),
}


@_check("retention_persons")
def check_retention_persons(ctx: AuditContext) -> _Outcome:
    """Every person in a prepared frame is inside each customer rule's window (steward)."""
    persons = ctx.persons()
    if persons is None:  # without the key it did not run (its clause is then partly verified)
        return _not_applicable(
            "customer retention rules against raw anchors",
            {"reason": NEEDS_KEY if ctx.key is None else "needs the raw tables"},
            STEWARD,
        )
    rows: list[str] = []
    bad: list[str] = []
    for purpose in [p for p in ctx.prepared_purposes() if _declared(ctx, p)]:
        ids = ctx.prepared(purpose, "customers", ["person_id"])
        kept = persons.join(ids, on="person_id", how="inner")
        for rule in ctx.policy.purposes[purpose].rules_for("customer"):
            cutoff = rule.cutoff(ctx.as_of)
            if cutoff is None or rule.anchor not in _ANCHORS:
                continue
            stale = kept.filter(_ANCHORS[rule.anchor] < cutoff).height
            rows.append(
                f"{purpose}: {rule.anchor} + {rule.months} mo "
                f"({','.join(rule.clause_ids)}) cutoff {cutoff}: {stale} past it"
            )
            if stale:
                bad.append(f"{purpose}: {stale} persons past {cutoff}")
    return _problems(
        "recompute each person's anchor date (last order, last contact, end of relationship) "
        "from the raw tables, re-pseudonymise, and compare with each customer rule's cutoff",
        {"as_of": ctx.as_of.isoformat(), "rules": rows},
        bad,
        key="violations",
        role=STEWARD,
    )


@_check("retention_applied")
def check_retention_applied(ctx: AuditContext) -> _Outcome:
    """Every prepared frame was made by a run that applied all of its purpose's retention
    rules, on a date not after the audit's as_of (OF-2: the check runs on every load)."""
    rows, bad = [], []
    for purpose in ctx.prepared_purposes():
        path = ctx.workspace.policy_report(purpose)
        if not path.is_file() or not _declared(ctx, purpose):
            bad.append(f"{purpose}: no policy_report.json or undeclared purpose")
            continue
        report = json.loads(path.read_text(encoding="utf-8"))
        applied = {r["rule"] for r in report.get("rules", []) if r.get("kind") == "retention"}
        expected = {f"retention: {r.name}" for r in ctx.policy.purposes[purpose].retention}
        missing = sorted(expected - applied)
        run_on = dt.date.fromisoformat(report["as_of"])
        # the report is editable: its date must be prepare's signed record's
        try:
            signed = recorded_as_of(ctx.workspace, purpose)
        except ReleaseRefusedError as exc:
            bad.append(f"{purpose}: {exc}")
            signed = None
        if signed is not None and signed != run_on:
            bad.append(
                f"{purpose}: policy_report.json states as_of {run_on}, prepare's signed "
                f"record {signed}"
            )
        rows.append(
            f"{purpose}: prepared as of {signed or run_on}, {len(expected)} rules, missing "
            f"{len(missing)}"
        )
        if missing or run_on > ctx.as_of or report.get("policy") != ctx.policy.name:
            bad.append(
                f"{purpose}: missing {missing}, as_of {run_on}, policy {report.get('policy')}"
            )
    if not rows and not bad:
        return _not_applicable("prepare evidence per frame", {"frames": 0})
    return _problems(
        "every prepared folder's evidence lists each retention rule of its purpose, "
        "for the audited policy, as of a date not after the report's",
        {"frames": rows},
        bad,
    )


@_check("retention_categories")
def check_retention_categories(ctx: AuditContext) -> _Outcome:
    """Retention per data category (AC-3): every category in a frame has a retention rule."""
    rows, bad = [], []
    for purpose in [p for p in ctx.prepared_purposes() if _declared(ctx, p)]:
        rules = ctx.policy.purposes[purpose].retention
        covered = {c for r in rules for c in r.categories}
        present: set[str] = set()
        for table, schema in PREPARED_TABLES.items():
            cols = table_schema(ctx.workspace.prepared_frame(purpose, f"{table}.parquet"))
            present |= {schema.column(c).category or "" for c in cols if c in schema.names}
        present.discard("")
        uncovered = sorted(present - covered)
        rows.append(f"{purpose}: categories {sorted(present)}, rules cover {sorted(covered)}")
        if uncovered or any(not r.categories for r in rules):
            bad.append(f"{purpose}: no retention rule for categories {uncovered}")
    if not rows:
        return _not_applicable("categories per frame", {"frames": 0})
    return _problems(
        "the data categories (A-E) of each frame's columns are all covered by a retention "
        "rule of its purpose that names the category",
        {"purposes": rows},
        bad,
    )


# --- exclusions (steward) --------------------------------------------------------------------
def _absent(ctx: AuditContext, excluded: set[str], kinds: Callable[[str], bool]) -> list[str]:
    found = []
    for name, (kind, ids) in ctx.person_sets().items():
        if kinds(kind):
            hit = excluded.intersection(ids)
            if hit:
                found.append(f"{name}: {len(hit)}")
    return found


@_check("erased_restricted_absent")
def check_erased_restricted_absent(ctx: AuditContext) -> _Outcome:
    """No erased or restricted person in any prepared frame or label file (AK-5)."""
    persons = ctx.persons()
    if persons is None:
        return _needs_key("erasure/restriction")
    flagged = persons.filter(pl.col("erasure_requested") | pl.col("restriction_requested"))
    found = _absent(ctx, set(flagged["person_id"]), lambda kind: True)
    return _problems(
        "re-pseudonymise every person with an erasure or restriction request and look for "
        "them in every prepared frame, label and target list (the inputs of every release)",
        {
            "persons flagged": flagged.height,
            "places searched": len(ctx.person_sets()),
        },
        found,
        key="found",
        role=STEWARD,
    )


@_check("erasures_carried_out")
def check_erasures_carried_out(ctx: AuditContext) -> _Outcome:
    """Every logged erasure holds against the raw data; every restriction is still flagged.

    Re-hashes every raw account with the steward's key and looks for it among the keyed
    hashes of ``W/subjects/requests.json`` (AK-5): an erased account back in the raw data, a
    restricted one no longer flagged, or a request started but not finished, fails.
    """
    from segments.prepare.subject_log import account_hashes, log_key_problem

    if ctx.key is None:
        return _needs_key("erasure log")
    wrong_key = log_key_problem(ctx.workspace, ctx.key)
    if wrong_key is not None:  # its hashes would match nobody: a pass would be a lie
        return _found(
            "the erasure log can only be checked with the key it was written with",
            {"problem": wrong_key, "fix": "run the audit with the steward key of the log"},
            False,
            STEWARD,
        )
    log = ctx.workspace.subject_log
    entries = json.loads(log.read_text(encoding="utf-8")) if log.is_file() else []
    customers = ctx.raw_customers()
    if customers is None:
        customers = pl.DataFrame(
            {"customer_id": [], "erasure_requested": [], "restriction_requested": []},
            schema={
                "customer_id": pl.Int64,
                "erasure_requested": pl.Boolean,
                "restriction_requested": pl.Boolean,
            },
        )
    raw_path = ctx.workspace.raw_table("customers")
    # hashed as the log hashes them (an ingested export by its own customer id); the widened
    # frame keeps the raw rows in order
    hashes = (
        account_hashes(ctx.key, pl.read_parquet(raw_path))
        if raw_path.is_file()
        else pl.Series("hash", [], pl.Utf8)
    )
    hashed = customers.select("customer_id", "restriction_requested").with_columns(hashes)

    def logged(action: str) -> set[str]:
        return {h for e in entries if e.get("action") == action for h in e["subject_hashes"]}

    back = hashed.filter(pl.col("hash").is_in(list(logged("erasure"))))
    unflagged = hashed.filter(
        pl.col("hash").is_in(list(logged("restriction"))) & ~pl.col("restriction_requested")
    )
    unfinished = [e["requested_on"] for e in entries if not e.get("completed", False)]
    late = [e["requested_on"] for e in entries if not e.get("on_time", True)]
    return _found(
        "re-hash every raw account with the steward's key and compare with the keyed hashes "
        "of W/subjects/requests.json: erased accounts must be gone, restricted ones flagged",
        {
            "requests logged": len(entries),
            "erased accounts back in the raw data": back.height,
            "restricted accounts no longer flagged": unflagged.height,
            "requests not finished": len(unfinished),
            "requests carried out after their deadline": len(late),
            "accounts flagged erasure_requested, awaiting `retention purge`": int(
                customers["erasure_requested"].sum()
            ),
        },
        back.height == 0 and unflagged.height == 0 and not unfinished,
        STEWARD,
    )


@_check("objectors_absent")
def check_objectors_absent(ctx: AuditContext) -> _Outcome:
    """Objectors absent from every purpose that excludes them and from all labels."""
    persons = ctx.persons()
    if persons is None:
        return _needs_key("objection")
    objectors = set(persons.filter(pl.col("profiling_objection"))["person_id"])
    excluding = {p for p, pur in ctx.policy.purposes.items() if pur.exclude_objectors}
    found = _absent(ctx, objectors, lambda kind: kind in excluding or kind == "labels")
    return _problems(
        "re-pseudonymise every objecting person and look for them in the frames of purposes "
        f"that exclude objectors ({', '.join(sorted(excluding)) or 'none'}) and in all labels",
        {"objectors": len(objectors)},
        found,
        key="found",
        role=STEWARD,
    )


@_check("consent_withdrawal")
def check_consent_withdrawal(ctx: AuditContext) -> _Outcome:
    """No order line dated after a person's consent withdrawal (AO-8, AK-1)."""
    persons = ctx.persons()
    if persons is None:
        return _needs_key("withdrawal")
    withdrawn = persons.filter(pl.col("consent_withdrawn_date").is_not_null()).select(
        "person_id", "consent_withdrawn_date"
    )
    rows, bad = [], []
    for purpose in [p for p in ctx.prepared_purposes() if _declared(ctx, p)]:
        if not ctx.policy.purposes[purpose].stop_at_consent_withdrawal:
            continue
        lines = ctx.prepared(purpose, "lines", ["person_id", "order_date"])
        late = lines.join(withdrawn, on="person_id").filter(
            pl.col("order_date") > pl.col("consent_withdrawn_date")
        )
        rows.append(f"{purpose}: {late.height} lines after withdrawal")
        if late.height:
            bad.append(purpose)
    return _problems(
        "re-pseudonymise every person who withdrew consent; no line of theirs dated after the "
        "withdrawal in purposes that stop at withdrawal",
        {
            "persons withdrawn": withdrawn.height,
            "frames": rows or "none checked",
        },
        bad,
        key="violations",
        role=STEWARD,
    )


@_check("key_matches", listed=False)
def check_key_matches(ctx: AuditContext) -> _Outcome:
    """The steward's key is the one the frames were pseudonymised with (else the steward's
    look-ups would find nobody and pass vacuously).

    The key id each folder was made with is read from prepare's signed record, never from
    the editable ``policy_report.json``, and only from a record bound to the frames beside
    it as releases check it (:func:`segments.provenance.recorded_key_id`: every file in the
    folder, the report included, has the SHA-256 the record gives, and its raw files are
    ``W/raw/`` now). A folder without such a record fails, naming why: a report edited to
    state another key id, or a signed record copied in from another workspace.
    """
    if ctx.key is None:
        return _needs_key("key id")
    recorded: dict[str, str | None] = {}
    problems: list[str] = []
    for purpose in ctx.prepared_purposes():
        try:
            recorded[purpose] = recorded_key_id(ctx.workspace, purpose)
        except ReleaseRefusedError as exc:
            problems.append(f"{purpose}: {exc}")
    wrong = sorted(p for p, k in recorded.items() if k != ctx.key.key_id)
    return _found(
        "the keyed fingerprint of the steward's key equals the key id prepare's signed record "
        "gives every prepared frame, so the re-pseudonymised look-ups can find the people",
        {
            "key id": ctx.key.key_id,
            "frames": len(recorded),
            "other key": wrong or "none",
            "problems": problems or "none",
        },
        not wrong and not problems,
        STEWARD,
    )


def _eligible_ids(ctx: AuditContext, persons: pl.DataFrame) -> set[str]:
    """Recomputed from the raw flags with prepare's own formula (the frames' flag unread)."""
    from segments.prepare.frames import eligibility_expr

    return set(persons.filter(eligibility_expr(ctx.policy, ctx.as_of))["person_id"])


@_check("profiling_labels")
def check_profiling_labels(ctx: AuditContext) -> _Outcome:
    """Per-person labels and profiling frames hold only eligible people (AO-5, AL-3).

    With the key, eligibility is recomputed from the raw flags and the policy's rule; without
    it, the flag in the prepared frame is checked (reviewer role, weaker evidence).
    """
    persons = ctx.persons()
    places: dict[str, list[str]] = {}
    for path in ctx.label_files():
        places[_rel(ctx, path)] = pl.read_parquet(path, columns=["person_id"])[
            "person_id"
        ].to_list()
    for purpose in [p for p in ctx.prepared_purposes() if _declared(ctx, p)]:
        if ctx.policy.purposes[purpose].profiling:
            ids = ctx.prepared(purpose, "customers", ["person_id"])["person_id"].to_list()
            places[f"prepared/{purpose}/customers"] = ids
    if not places:
        return _not_applicable("eligibility", {"labels": "none in workspace"})
    if persons is not None:
        eligible = _eligible_ids(ctx, persons)
        role, source = (
            STEWARD,
            "recomputed from the raw flags: " + (ctx.policy.profiling_eligibility.describe()),
        )
    else:
        seg_purpose = ctx.segment_purpose()
        if seg_purpose is None or seg_purpose not in ctx.prepared_purposes():
            return _needs_key("eligibility")
        frame = ctx.prepared(seg_purpose, "customers", ["person_id", "profiling_eligible"])
        eligible = set(frame.filter(pl.col("profiling_eligible"))["person_id"])
        role, source = REVIEWER, f"profiling_eligible flag of prepared/{seg_purpose}"
    found = {k: len(set(v) - eligible) for k, v in places.items()}
    bad = {k: v for k, v in found.items() if v}
    return _problems(
        f"every person in a label file or profiling frame is eligible ({source})",
        {"places": {k: len(v) for k, v in places.items()}},
        bad,
        key="ineligible",
        role=role,
    )


@_check("targets_opt_out")
def check_targets_opt_out(ctx: AuditContext) -> _Outcome:
    """No marketing opt-out in any target list (AO-7, AK-4)."""
    folder = ctx.workspace.targets
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return _not_applicable("target lists", {"target lists": 0})
    persons = ctx.persons()
    if persons is not None:
        opted = set(persons.filter(pl.col("marketing_opt_out"))["person_id"])
        role = STEWARD
    else:
        purpose = ctx.segment_purpose()
        if purpose is None or purpose not in ctx.prepared_purposes():
            return _needs_key("target lists")
        frame = ctx.prepared(purpose, "customers", ["person_id", "marketing_opt_out"])
        opted = set(frame.filter(pl.col("marketing_opt_out"))["person_id"])
        role = REVIEWER
    found = {}
    for f in files:
        ids = set(pl.read_parquet(f, columns=["person_id"])["person_id"])
        found[f.name] = len(ids & opted)
    return _found(
        "intersect every target list with the people who opted out of marketing",
        {"target lists": len(files), "opted out": len(opted), "opt-outs targeted": found},
        not any(found.values()),
        role,
    )


# --- identifiers and the key -----------------------------------------------------------------
@_check("no_direct_identifiers")
def check_no_direct_identifiers(ctx: AuditContext) -> _Outcome:
    """No direct-identifier column in any prepared, segment, release or forecast frame."""
    frames = ctx.frames()
    found = [
        f"{_rel(ctx, f)}: {sorted(set(pl.read_parquet_schema(f)) & DIRECT_IDENTIFIERS)}"
        for f in frames
        if set(pl.read_parquet_schema(f)) & DIRECT_IDENTIFIERS
    ]
    return _problems(
        "read the column names of every frame under prepared/, segments/, releases/, "
        "forecasts/ and compare with the schema's direct identifiers (and customer_id)",
        {
            "frames": len(frames),
            "identifiers looked for": sorted(DIRECT_IDENTIFIERS),
        },
        found,
        key="found",
    )


def _personnummer_like(values: pl.Series) -> int:
    """Values that are a personnummer or organisation number with a valid check digit."""
    digits = values.drop_nulls().str.replace_all(r"[ +-]", "")
    candidates = digits.filter(digits.str.contains(r"^(\d{10}|\d{12})$")).unique()
    return sum(luhn_valid(v[-10:]) for v in candidates.to_list())


@_check("no_personnummer")
def check_no_personnummer(ctx: AuditContext) -> _Outcome:
    """Personnummer never in any frame: no such column, no value of that shape (AO-3)."""
    frames = ctx.frames()
    found = []
    for f in frames:
        schema = pl.read_parquet_schema(f)
        if {"personnummer", "org_number"} & set(schema):
            found.append(f"{_rel(ctx, f)}: column")
            continue
        text_cols = [c for c, t in schema.items() if t == pl.Utf8]
        if not text_cols:
            continue
        frame = pl.read_parquet(f, columns=text_cols)
        hits = sum(_personnummer_like(frame[c]) for c in text_cols)
        if hits:
            found.append(f"{_rel(ctx, f)}: {hits} values")
    return _problems(
        "every text column of every frame: values of 10 or 12 digits (hyphen allowed) with a "
        "valid Luhn check digit",
        {"frames": len(frames)},
        found,
        key="found",
    )


@_check("pseudonymised")
def check_pseudonymised(ctx: AuditContext) -> _Outcome:
    """Every person and order id in the frames is a keyed pseudonym (32 hex digits)."""
    bad, n = [], 0
    for f in ctx.frames():
        schema = pl.read_parquet_schema(f)
        for col in ("person_id", "order_id"):
            if col in schema:
                n += 1
                values = pl.read_parquet(f, columns=[str(col)])[col]
                ok = values.dtype == pl.Utf8 and bool(values.str.contains(r"^[0-9a-f]{32}$").all())
                if not ok:
                    bad.append(f"{_rel(ctx, f)}:{col}")
    if not n:
        return _not_applicable("pseudonyms", {"id columns": 0})
    return _problems(
        "every person_id and order_id column is a 32-hex-digit keyed HMAC pseudonym",
        {"id columns checked": n},
        bad,
        key="not pseudonymised",
    )


@_check("minimised")
def check_minimised(ctx: AuditContext) -> _Outcome:
    """Prepared frames hold only the purpose's declared columns (AL-5)."""
    rows, bad = [], []
    for purpose in ctx.prepared_purposes():
        if not _declared(ctx, purpose):
            bad.append(f"{purpose}: undeclared purpose")
            continue
        declared = ctx.policy.purposes[purpose].columns
        for table, extra in (
            ("customers", {"person_id", "profiling_eligible"}),
            ("lines", {"person_id"}),
        ):
            cols = set(table_schema(ctx.workspace.prepared_frame(purpose, f"{table}.parquet")))
            surplus = sorted(cols - set(declared[table]) - extra)
            rows.append(f"{purpose}/{table}: {len(cols)} columns")
            if surplus:
                bad.append(f"{purpose}/{table}: {surplus}")
    if not rows and not bad:
        return _not_applicable("columns", {"frames": 0})
    return _problems(
        "compare each prepared frame's columns with its purpose's declared columns",
        {"frames": rows},
        bad,
        key="surplus",
    )


def _key_forms(secret: bytes) -> dict[str, bytes]:
    forms = {
        "raw": secret,
        "hex": secret.hex().encode(),
        "HEX": secret.hex().upper().encode(),
        "base64": base64.b64encode(secret).rstrip(b"="),
        "base64url": base64.urlsafe_b64encode(secret).rstrip(b"="),
    }
    return {k: v for k, v in forms.items() if v}


def _files_under(root: Path) -> Iterator[Path]:
    return (p for p in sorted(root.rglob("*")) if p.is_file())


@_check("key_not_stored")
def check_key_not_stored(ctx: AuditContext) -> _Outcome:
    """The key is stored nowhere in the workspace, in raw, hex or base64 form (AO-9)."""
    if ctx.key is None:
        return _needs_key("search for the key")
    forms = _key_forms(ctx.key.secret)
    files = list(_files_under(ctx.workspace.root))
    found = []
    for f in files:
        data = f.read_bytes()
        for name, form in forms.items():
            if form in data:
                found.append(f"{_rel(ctx, f)} ({name})")
    return _problems(
        "search every file's bytes under the workspace for the key in raw, hex (both cases) "
        "and base64 (standard and URL-safe) forms",
        {
            "files searched": len(files),
            "key id": ctx.key.key_id,
            "key provenance": ctx.key.provenance,
        },
        found,
        key="found",
        role=STEWARD,
    )


#: What the access checks cannot see: who may act as the files' owner.
ORGANISATIONAL = (
    "not verifiable by this tool — organisational measure: who may log in as the account "
    "that owns the workspace, who holds the steward's key and who receives each release's "
    "files are decided by the controller's access management, outside these files"
)


def _personal_data_areas(ctx: AuditContext) -> list[Path]:
    """Where personal data lives: raw tables, prepared frames, labels and target lists,
    the erasure log, the private scratch area and the ledger the releases were charged to."""
    ws = ctx.workspace
    areas = [ws.raw, ws.prepared, ws.segments, ws.subject_log.parent, ws.private]
    ledger_path = getattr(ctx.ledger, "path", None)
    if ledger_path is not None:
        areas.append(Path(ledger_path))
    return [a for a in areas if a.exists()]


@_check("access_owner_only")
def check_access_owner_only(ctx: AuditContext) -> _Outcome:
    """Personal data is readable by its owner only (AO-9): no file or folder of the raw
    tables, prepared frames, labels, erasure log, private area or ledger grants group or
    other access, and all belong to the workspace's owner."""
    import stat

    owner = ctx.workspace.root.stat().st_uid
    areas = _personal_data_areas(ctx)
    seen = 0
    open_to_others: list[str] = []
    foreign: list[str] = []
    for area in areas:
        paths = [area, *(sorted(area.rglob("*")) if area.is_dir() else [])]
        for path in paths:
            info = path.lstat()  # a link is judged itself, not what it points to
            seen += 1
            where = (
                str(path.relative_to(ctx.workspace.root))
                if path.is_relative_to(ctx.workspace.root)
                else str(path)
            )
            if stat.S_IMODE(info.st_mode) & 0o077 and not stat.S_ISLNK(info.st_mode):
                open_to_others.append(f"{where} ({stat.filemode(info.st_mode)})")
            if info.st_uid != owner:
                foreign.append(f"{where} (uid {info.st_uid})")
    if not areas:
        return _not_applicable("file permissions", {"personal data areas": 0})
    return _found(
        "walk the raw tables, prepared frames, labels and target lists, erasure log, private "
        "area and ledger; every file and folder must grant no group or other access "
        "(mode xxx------) and belong to the workspace's owner",
        {
            "areas": [
                str(a.relative_to(ctx.workspace.root))
                if a.is_relative_to(ctx.workspace.root)
                else f"ledger {a.name}"
                for a in areas
            ],
            "files and folders checked": seen,
            "open to group or others": open_to_others[:10] or "none",
            "owned by another account": foreign[:10] or "none",
            "not checked": ORGANISATIONAL,
        },
        not open_to_others and not foreign,
    )


@_check("access_organisational")
def check_access_organisational(ctx: AuditContext) -> _Outcome:
    """Access beyond the files (who may act as their owner, who holds the key, who reads a
    release) is an organisational measure this tool cannot verify: shown, never passed."""
    recipients = {
        name: f"{r.kind}: {r.description}" if getattr(r, "description", "") else r.kind
        for name, r in ctx.policy.recipients.items()
    }
    return _not_applicable(
        ORGANISATIONAL,
        {"recipients the policy declares": recipients or "none"},
        ORGANISATIONAL_ROLE,
    )


@_check("schema_categories")
def check_schema_categories(ctx: AuditContext) -> _Outcome:
    """The schema marks every personal column with its AC-1 category; identifiers are A."""
    personal = [t for n, t in RAW_TABLES.items() if n != "products"] + list(
        PREPARED_TABLES.values()
    )
    missing = [
        f"{t.name}.{c.name}"
        for t in personal
        for c in t.columns
        if c.category not in CATEGORIES and c.name not in {"product_id", "category"}
    ]
    not_a = [
        f"{t.name}.{c.name}"
        for t in personal
        for c in t.columns
        if c.direct_identifier and c.category != "A"
    ]
    unknown = []
    for purpose in ctx.prepared_purposes():
        for table, schema in PREPARED_TABLES.items():
            path = ctx.workspace.prepared_frame(purpose, f"{table}.parquet")
            unknown += [
                f"{purpose}/{table}.{c}" for c in table_schema(path) if c not in schema.names
            ]
    counts: dict[str, int] = {}
    for t in personal:
        for c in t.columns:
            counts[c.category or "none"] = counts.get(c.category or "none", 0) + 1
    problems = missing + not_a + unknown
    return _problems(
        "every column of the personal tables (raw and prepared) carries a data category (A-E), "
        "every direct identifier is category A, every frame column is in the schema",
        {"columns per category": counts},
        problems,
    )


def _survey_schema_ok(schema: TableSchema, cols: set[str]) -> list[str]:
    return sorted(cols & (DIRECT_IDENTIFIERS | {"person_id"})) + sorted(cols - set(schema.names))


@_check("survey_anonymous")
def check_survey_anonymous(ctx: AuditContext) -> _Outcome:
    """The survey table carries no identifier (AC-2): respondents are anonymous."""
    paths = [ctx.workspace.raw_table("surveys")]
    paths += sorted(ctx.workspace.prepared.glob("*/surveys.parquet"))
    paths = [p for p in paths if p.is_file()]
    if not paths:
        return _not_applicable("surveys", {"survey tables": 0})
    bad = {}
    for p in paths:
        problems = _survey_schema_ok(SURVEYS, set(pl.read_parquet_schema(p)))
        if problems:
            bad[_rel(ctx, p)] = problems
    return _problems(
        "the survey tables' columns are the survey schema's (month, county, customer type, "
        "score): no customer id, pseudonym or direct identifier",
        {"tables": [_rel(ctx, p) for p in paths]},
        bad,
        key="identifier columns",
    )


# --- releases and the ledger -----------------------------------------------------------------
@_check("release_checksums")
def check_release_checksums(ctx: AuditContext) -> _Outcome:
    """Every release file matches the SHA-256 in its ledger entry; every card has an entry."""
    cards = ctx.cards()
    if not cards:
        return _not_applicable("release files", {"releases": 0})
    if ctx.ledger is None:
        return _no_ledger(ctx)
    by_id = {e.release_id: e for e in ctx.ledger.entries()}
    evidence: dict[str, str] = {}
    bad = []
    for path, card in cards:
        rid = str(card.get("release_id"))
        entry = by_id.get(rid)
        if entry is None or entry.status != "published":
            bad.append(f"{rid}: no published ledger entry")
            continue
        for name, digest in entry.files.items():
            f = path.parent / name
            actual = sha256_file(f) if f.is_file() else "missing"
            evidence[f"{rid}/{name}"] = actual[:16]
            if actual != digest:
                bad.append(f"{rid}/{name}: ledger {digest[:12]}…, file {actual[:12]}…")
        # the ledger also holds the card's own SHA-256 (checked above); the card lists the rest
        data_files = {k: v for k, v in entry.files.items() if k != getattr(entry, "card", None)}
        if dict(card.get("files", {})) != data_files:
            bad.append(f"{rid}: card files differ from the ledger entry")
        extra = sorted(
            p.name
            for p in path.parent.glob("*.parquet")
            if p.name not in entry.files and p.name != LABELS
        )
        if extra:
            bad.append(f"{rid}: files not in the ledger: {extra}")
        bad += card_claim_differences(card, entry)
    return _problems(
        "hash every release file and compare with the SHA-256 its ledger entry recorded",
        {"releases": len(cards), "files (sha256 prefix)": evidence},
        bad,
        key="mismatches",
    )


def card_claim_differences(card: dict[str, Any], entry: Any) -> list[str]:
    """Where a card's statement (its spec and privacy loss) differs from what the ledger
    recorded for the release: an edited card (e.g. to a smaller ε) fails, even one whose own
    SHA-256 the ledger could not record (the DP k-means card, written after publication)."""
    rid = str(card.get("release_id"))
    request = entry.request
    out = []
    if isinstance(card.get("spec"), dict) and request.spec and card["spec"] != request.spec:
        out.append(f"{rid}: the card's spec differs from the one recorded in the ledger")
    loss = card.get("privacy_loss")
    if isinstance(loss, dict):
        for key in ("epsilon", "delta", "rho"):
            stated, recorded = loss.get(key), getattr(request, key, None)
            if stated is None or recorded is None:
                differs = (stated is None) != (recorded is None)
            else:
                differs = not math.isclose(float(stated), float(recorded))
            if differs:
                out.append(
                    f"{rid}: the card states {key} = {stated}, the ledger recorded {recorded}"
                )
    return out


@_check("ledger_chain")
def check_ledger_chain(ctx: AuditContext) -> _Outcome:
    """The ledger's hash chain verifies and every card's head hash is in it."""
    if ctx.ledger is None:
        return _no_ledger(ctx)
    chain = ctx.ledger.verify_chain()
    cards = ctx.ledger.verify_cards([str(p) for p, _ in ctx.cards()])
    problems = list(dict.fromkeys([*chain.problems, *cards.problems]))
    return _problems(
        "recompute the ledger's hash chain (verify_chain) and find every card's ledger head "
        "hash in it (verify_cards)",
        {
            "ledger": str(ctx.ledger.path.name),
            "label": ctx.ledger.label or "controller ledger",
            "events": chain.n_events,
            "head": chain.head[:16],
            "cards": len(ctx.cards()),
        },
        problems,
    )


def spending(ctx: AuditContext) -> pl.DataFrame:
    """Per release: date, population, ε, ρ and the total ε of the rolling budget period
    ending on that date, recomputed from the ledger entries (reserved charges count)."""
    p = ctx.policy.privacy
    rows = []
    entries = sorted(ctx.entries(), key=lambda e: (e.request.as_of, e.reserved_at))
    for e in entries:
        r = e.request
        if r.kind != "dp":
            continue
        rho = r.rho if r.rho is not None else pure_to_rho(r.epsilon or 0.0)
        rows.append(
            {
                "release_id": e.release_id,
                "date": r.as_of,
                "population": r.population,
                "epsilon": float(r.epsilon or 0.0),
                "rho": float(rho),
                "pure_dp": r.rho is None,
            }
        )
    frame = pl.DataFrame(
        rows,
        schema={
            "release_id": pl.Utf8,
            "date": pl.Date,
            "population": pl.Utf8,
            "epsilon": pl.Float64,
            "rho": pl.Float64,
            "pure_dp": pl.Boolean,
        },
    )
    totals = []
    for row in frame.iter_rows(named=True):
        start = months_before(row["date"], p.budget_period_months)
        inside = frame.filter(
            (pl.col("population") == row["population"])
            & (pl.col("date") > start)
            & (pl.col("date") <= row["date"])
        )
        totals.append(_period_epsilon(inside, p.dp_family, p.delta))
    return frame.with_columns(pl.Series("period_epsilon", totals, dtype=pl.Float64))


def _period_epsilon(inside: pl.DataFrame, family: str, delta: float) -> float:
    if inside.is_empty():
        return 0.0
    if bool(inside["pure_dp"].all()):
        return float(inside["epsilon"].sum())
    rho = float(inside["rho"].sum())
    # zCDP stated as (ε, δ) at the policy's δ (Bun & Steinke 2016, Prop. 1.3)
    import math

    from segments.privacy.composition import rho_to_epsilon

    return rho_to_epsilon(rho, delta) if delta > 0 else math.inf


@_check("budget")
def check_budget(ctx: AuditContext) -> _Outcome:
    """The budget is never exceeded over any rolling period (recomputed from the entries)."""
    if ctx.ledger is None:
        return _no_ledger(ctx)
    p = ctx.policy.privacy
    frame = spending(ctx)
    if frame.is_empty():
        return _not_applicable("rolling budget", {"DP releases": 0})
    worst = frame.sort("period_epsilon", descending=True).row(0, named=True)
    over = frame.filter(pl.col("period_epsilon") > p.budget_epsilon + 1e-9)
    return _found(
        f"sum the privacy loss of every DP release per population over every rolling "
        f"{p.budget_period_months}-month period ending on a release date "
        f"({'pure ε adds' if p.dp_family == DPFamily.PURE else 'ρ adds, stated as ε at δ'}) and "
        "compare with the budget",
        {
            "DP releases": frame.height,
            "budget ε": p.budget_epsilon,
            "worst period": f"{worst['population']} ending {worst['date']}: "
            f"ε = {worst['period_epsilon']:.4g}",
            "periods over budget": over.height,
            "ledger": ctx.ledger.label or "controller ledger",
        },
        over.is_empty(),
    )


@_check("destinations")
def check_destinations(ctx: AuditContext) -> _Outcome:
    """Every release's destination and recipient country lie in the EU/EEA (AO-2, OF-3)."""
    if ctx.ledger is None:
        return _no_ledger(ctx)
    entries = ctx.entries()
    allowed = ctx.policy.allowed_destinations & EU_EEA
    bad = []
    for e in entries:
        dest = e.request.destination
        rec = ctx.policy.recipients.get(e.request.recipient)
        if dest not in allowed or (rec is not None and rec.country not in EU_EEA):
            bad.append(f"{e.release_id}: {dest}")
    for _, card in ctx.cards():
        if str(card.get("destination", "")).upper() not in allowed:
            bad.append(f"{card.get('release_id')}: card destination {card.get('destination')}")
    dests = sorted({e.request.destination for e in entries})
    if not entries:
        return _not_applicable("destinations", {"releases": 0})
    return _problems(
        "every ledger entry's and card's destination, and the recipient's country, is an "
        "EU/EEA country the policy allows",
        {"releases": len(entries), "destinations": dests},
        bad,
        key="outside",
    )


@_check("guarantee_recipient")
def check_guarantee_recipient(ctx: AuditContext) -> _Outcome:
    """Each release states its guarantee; its recipient is declared and allowed for it
    (external recipients only for end-to-end guarantees; never third-party marketing)."""
    if ctx.ledger is None:
        return _no_ledger(ctx)
    entries = ctx.entries()
    if not entries:
        return _not_applicable("guarantees", {"releases": 0})
    bad: list[str] = []
    kinds: dict[str, int] = {}
    cards = {str(c.get("release_id")): c for _, c in ctx.cards()}
    for e in entries:
        g = e.request.guarantee
        kinds[g] = kinds.get(g, 0) + 1
        rec = ctx.policy.recipients.get(e.request.recipient)
        stated = Guarantee(g) if g in tuple(Guarantee) else None
        if stated is None:
            bad.append(f"{e.release_id}: guarantee {g!r} not stated")
        if rec is None:
            bad.append(f"{e.release_id}: recipient {e.request.recipient!r} undeclared")
        elif rec.kind == "third_party_marketing":
            bad.append(f"{e.release_id}: third-party marketing recipient {rec.name}")
        elif rec.kind != "internal" and not (stated is not None and stated.end_to_end):
            bad.append(f"{e.release_id}: {g!r} to external {rec.name}")
        card = cards.get(e.release_id)
        if card is not None and card.get("guarantee") != g:
            bad.append(f"{e.release_id}: card states {card.get('guarantee')!r}")
    return _problems(
        "each ledger entry's guarantee is one of the stated ones and matches its card; its "
        "recipient is declared, never a third party for marketing, and external only for "
        "end-to-end guarantees",
        {"releases by guarantee": kinds},
        bad,
    )


@_check("purposes_declared")
def check_purposes_declared(ctx: AuditContext) -> _Outcome:
    """Every frame and release carries a purpose the policy declares (AO-10)."""
    declared = set(ctx.policy.purposes)
    used: dict[str, str] = {}
    for purpose in ctx.prepared_purposes():
        used[f"prepared/{purpose}"] = purpose
    for e in ctx.entries():
        used[f"release {e.release_id}"] = e.request.purpose
    for _, card in ctx.cards():
        used[f"card {card.get('release_id')}"] = str(card.get("purpose"))
    seg = ctx.segment_purpose()
    if seg is not None:
        used["segments/metadata.json"] = seg
    if not used:
        return _not_applicable("purposes", {"frames and releases": 0})
    bad = sorted(f"{k}: {v}" for k, v in used.items() if v not in declared)
    return _problems(
        "the purpose of every prepared folder, ledger entry, card and segmentation is declared "
        "by the policy",
        {"declared": sorted(declared), "checked": len(used)},
        bad,
        key="undeclared",
    )


@_check("forecasts_from_archive")
def check_forecasts_from_archive(ctx: AuditContext) -> _Outcome:
    """Forecasts read only the DP release archive (AO-4)."""
    card_path = ctx.workspace.forecasts / "forecast_card.json"
    if not card_path.is_file():
        return _not_applicable("forecasts", {"forecasts": 0})
    card = json.loads(card_path.read_text(encoding="utf-8"))
    archive = ctx.workspace.archive
    bad = []
    if card.get("source") != "releases/archive/monthly_category.parquet":
        bad.append(f"source {card.get('source')}")
    released = set()
    if archive.is_file():
        released = set(pl.read_parquet(archive, columns=["release_id"])["release_id"])
    ledger_ids = {e.release_id for e in ctx.entries()} if ctx.ledger is not None else released
    unknown = sorted(set(card.get("release_ids", [])) - (released & ledger_ids))
    if unknown:
        bad.append(f"release ids not in the archive and ledger: {unknown[:3]}")
    for f in sorted(ctx.workspace.forecasts.glob("*.parquet")):
        if "person_id" in pl.read_parquet_schema(f):
            bad.append(f"{f.name} has person_id")
    stale = archive.is_file() and card.get("source_sha256") != sha256_file(archive)
    if ctx.ledger is not None:
        from segments.privacy.archive import archive_problems

        bad += archive_problems(ctx.workspace.releases, ctx.ledger)[:3]
    return _problems(
        "the forecast card names the release archive as its only source; every release id it "
        "used is in the archive and the ledger; no forecast frame has a person id",
        {
            "source": card.get("source"),
            "release ids used": len(card.get("release_ids", [])),
            "archive changed since": bool(stale),
        },
        bad,
    )


@_check("kanon_recount")
def check_kanon_recount(ctx: AuditContext) -> _Outcome:
    """Each k-anonymous release: k (and l) recounted from its file alone."""
    rows, bad = [], []
    for path, cert in ctx.cards():
        if path.name != CERTIFICATE:
            continue
        table = pl.read_parquet(path.parent / "table.parquet")
        qis = list(cert["quasi_identifiers"])
        sizes = table.group_by(qis).len()["len"]
        k = int(sizes.min() or 0) if sizes.len() else 0  # type: ignore[arg-type]
        claimed = int(cert["privacy_model"]["k"])
        line = (
            f"{cert['release_id']}: k = {k} (claimed {claimed}, policy {ctx.policy.privacy.min_k})"
        )
        ok = k >= claimed >= ctx.policy.privacy.min_k
        sensitive = cert.get("sensitive")
        if sensitive:
            l_found = int(table.group_by(qis).agg(pl.col(sensitive).n_unique())[sensitive].min())
            l_claimed = int(cert["privacy_model"].get("l") or 1)
            line += f", l = {l_found} (claimed {l_claimed})"
            ok = ok and l_found >= l_claimed
        rows.append(line)
        if not ok:
            bad.append(line)
    if not rows:
        return _not_applicable("k-anonymous releases", {"releases": 0})
    return _problems(
        "group each released table by its quasi-identifiers and count the smallest class "
        "(and distinct sensitive values), from the file alone",
        {"releases": rows},
        bad,
        key="below claim",
    )


@_check("pii_scan")
def check_pii_scan(ctx: AuditContext, extra: tuple[Path, ...] = ()) -> _Outcome:
    """PII scan of every release, the report folder and every notebook's outputs."""
    raw = ctx.raw_customers()
    known = KnownIdentifiers.from_customers(raw) if raw is not None else None
    paths = [
        p
        for p in (ctx.workspace.releases, ctx.workspace.report, ctx.workspace.forecasts)
        if p.exists()
    ]
    paths += [p for p in (*ctx.notebooks, *extra) if p.exists()]
    hits, scanned = scan_paths(paths, known)
    return _found(
        "scan every release, forecast, report file and notebook output for e-mail addresses, "
        "phone numbers, personnummer and organisation numbers with a valid check digit"
        + (", and the raw table's known identifiers and full names" if known else ""),
        {
            "files scanned": len(scanned),
            "hits": [f"{Path(h.source).name}: {h.kind} {h.redacted}" for h in hits[:20]] or 0,
        },
        not hits,
        STEWARD if known else REVIEWER,
    )


#: Checks every controller's checklist contains (the rest verify one controller's promise).
CORE_CHECKS = tuple(
    c
    for c in CHECKS
    if c
    not in (
        "schema_categories",
        "survey_anonymous",
        "retention_categories",
        "access_owner_only",
        "access_organisational",
    )
)


def clause_checks(policy: Policy) -> dict[str, tuple[str, ...]]:
    """Clause id -> the checks that verify its promise, from the policy file's ``[promises]``.

    In file order; clauses whose promise names no check are left out (a controller's own
    policy may name none: the report then files the core checks under its clauses).

    Raises
    ------
    PolicyError
        When a promise names a check the audit does not have.

    Examples
    --------
    >>> len(clause_checks(Policy.load("offix"))), "destinations" in CHECKS
    (4, True)
    """
    table = {c: p.checks for c, p in policy.promises.items() if p.checks}
    for clause, names in table.items():
        unknown = sorted(set(names) - set(CHECKS))
        if unknown:
            raise PolicyError(
                f"policy {policy.name!r}, promises.{clause}.checks: unknown check "
                f"{unknown[0]!r}; fix: use one of {sorted(CHECKS)}"
            )
    return table
