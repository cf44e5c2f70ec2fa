"""Run the reviewer's audit of one workspace under one policy and write ``W/report/``.

:func:`run_audit` runs every check of :mod:`segments.audit.checks` once, attaches each to
every clause id of the audited controller it verifies (the policy file's ``[promises]``,
read by :func:`~segments.audit.checks.clause_checks`), quotes each clause's promise from the
policy file, adds the attacks and the empirical DP audit of :mod:`segments.audit.attacks` and
:mod:`segments.audit.mechanisms` when those modules are present, draws the charts of
:mod:`segments.audit.plots` (privacy loss per month and rolling totals against the budget,
class sizes and re-identification risk of the k-anonymous releases, the DP audit) and writes
``audit.html`` (self-contained), ``audit.md`` and ``audit.json`` (structured results)
atomically. The rendered report is scanned for personal data once more before it is
written; a hit fails the audit.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segments.audit.checks import CHECKS, CORE_CHECKS, check_key_matches, clause_checks
from segments.audit.context import STEWARD, AuditContext, Finding, release_type
from segments.audit.pii import scan_text
from segments.audit.plots import budget_chart, dp_audit_chart, dp_audit_figure, kanon_charts
from segments.audit.render import (
    AuditReport,
    Chart,
    Check,
    ClauseView,
    Section,
    Status,
    render_html,
    render_json,
    render_markdown,
)
from segments.exceptions import PolicyError
from segments.policy import Policy
from segments.prepare.pseudonym import PseudonymKey, load_key
from segments.privacy.synthetic import prove_synthetic
from segments.progress import progress
from segments.workspace import POLICY_REPORT, SAFE_NAME, Workspace, atomic_write, write_json

if TYPE_CHECKING:
    from segments.privacy.ledger import Ledger

__all__ = ["clause_rows", "clause_views", "dp_audit_chart", "dp_audit_figure", "run_audit"]

_NOTEBOOKS = Path(__file__).resolve().parents[3] / "notebooks"


def _title(check: Any) -> str:
    """A check's one-line title: the first sentence of its docstring, without clause ids."""
    doc = " ".join((check.__doc__ or "").split())
    first = re.split(r"(?<=[.:])\s", doc, maxsplit=1)[0].rstrip(".:")
    return re.sub(r"\s*\((?:[A-Z]{2}-\d+(?:,\s*)?)+\)|\s*\(steward\)", "", first)


def _mentioned(evidence: Any, release_ids: Sequence[str]) -> tuple[str, ...]:
    text = json.dumps(evidence, ensure_ascii=False, default=str)
    return tuple(r for r in release_ids if r in text)


def clause_rows(
    policy: Policy, findings: dict[str, Finding], release_ids: Sequence[str] = ()
) -> list[Check]:
    """One check per finding, attached to every clause of the controller it verifies.

    Clauses come from the policy file (:func:`clause_checks`); a check listed under several
    clauses is one :class:`Check` with all of them (counted once).
    """
    clauses_of: dict[str, list[str]] = {}
    for clause, names in clause_checks(policy).items():
        for name in names:
            clauses_of.setdefault(name, []).append(clause)

    def row(name: str, clauses: Sequence[str]) -> Check:
        f = findings[name]
        releases = _mentioned(f.evidence, release_ids)
        return Check(
            tuple(clauses), _title(CHECKS[name]), f.method, f.evidence, f.status, f.role,
            name=name, releases=releases,
        )  # fmt: skip

    rows = [row(name, clauses_of[name]) for name in CHECKS if name in clauses_of]
    if not rows:  # a controller's own policy (bring your own data): its clauses, core checks
        own = tuple(dict.fromkeys(c for p in policy.purposes.values() for c in p.clause_ids))
        rows = [row(name, own) for name in CORE_CHECKS]
    return rows


def clause_views(ctx: AuditContext) -> list[ClauseView]:
    """Every clause of the audited controller that names its checks, its promise quoted from
    the policy file, and the releases whose card or ledger entry cites it."""
    citing: dict[str, list[str]] = {}
    for _, card in ctx.cards():
        for clause in card.get("clause_ids") or ():
            citing.setdefault(str(clause), []).append(str(card.get("release_id")))
    for e in ctx.entries():
        for clause in e.request.clause_ids:
            citing.setdefault(clause, []).append(e.release_id)
    views = []
    for clause in clause_checks(ctx.policy):
        promise = ctx.policy.promises[clause]
        views.append(
            ClauseView(clause, promise.en, promise.sv, tuple(dict.fromkeys(citing.get(clause, ()))))
        )
    if not views:  # a controller's own policy (bring your own data): its own clause ids
        own = dict.fromkeys(c for p in ctx.policy.purposes.values() for c in p.clause_ids)
        for clause in own:
            quoted = ctx.policy.promises.get(clause)
            views.append(
                ClauseView(
                    clause,
                    quoted.en if quoted else "(the policy file quotes no promise for this clause)",
                    quoted.sv if quoted else "",
                    tuple(dict.fromkeys(citing.get(clause, ()))),
                )
            )
    return views


def _resolve_key(
    ws: Workspace, key: PseudonymKey | bytes | str | None, steward: bool
) -> PseudonymKey | None:
    if not steward:
        return None
    try:
        return load_key(key, workspace=ws, synthetic_proof=prove_synthetic)
    except PolicyError:
        return None


def _resolve_ledger(
    ws: Workspace, policy: Policy, ledger: Ledger | None, cards: Sequence[Any]
) -> Any:
    """The ledger given, else the one the release cards name: of the workspace's throw-away
    ledger and the controller's (real and evaluation) ledgers, the one that holds the most of
    the cards' releases (the workspace's on a tie, or when there are no cards)."""
    from segments.privacy.ledger import Ledger, controller_slug, default_ledger_path

    if ledger is not None and not isinstance(ledger, str | os.PathLike):
        return ledger
    if ledger is not None:
        return Ledger.open(Path(ledger), policy.controller, create=False, policy=policy)
    candidates = []
    demo = ws.ledger_folder / f"{controller_slug(policy.controller)}.sqlite"
    if demo.is_file():
        candidates.append(Ledger.for_workspace(ws, policy.controller, create=False, policy=policy))
    for evaluation in (False, True):
        default = default_ledger_path(policy.controller, evaluation=evaluation)
        if default.is_file():
            candidates.append(
                Ledger.open(
                    default, policy.controller, evaluation=evaluation, create=False, policy=policy
                )
            )
    if not candidates:
        return None
    named = {str(card.get("release_id")) for _, card in cards}

    def held(candidate: Any) -> int:
        return len(named & {e.release_id for e in candidate.entries()})

    return max(candidates, key=held)  # max keeps the first (the workspace's) on a tie


def _default_as_of(ws: Workspace) -> dt.date:
    """The latest day a purpose was prepared as of (prepare's signed record; the editable
    report only for hand-made frames without one), else the raw data's as-of, else today."""
    from segments.exceptions import ReleaseRefusedError
    from segments.provenance import recorded_as_of

    purposes = sorted(report.parent.name for report in ws.prepared.glob(f"*/{POLICY_REPORT}"))
    dates = []
    for purpose in (p for p in purposes if SAFE_NAME.fullmatch(p)):
        try:
            signed = recorded_as_of(ws, purpose)
        except ReleaseRefusedError:
            continue  # a record prepare did not sign dates nothing (retention_applied fails it)
        dates.append(signed if signed is not None else ws.prepared_as_of(purpose))
    if dates:
        return max(dates)
    as_of = ws.read_manifest().get("parameters", {}).get("as_of")
    return dt.date.fromisoformat(as_of) if as_of else dt.date.today()


def _safe(name: str, check: Any, ctx: AuditContext) -> Finding:
    """Run one check; a check that cannot read what it must verify fails, naming why."""
    try:
        finding: Finding = check(ctx)
    except Exception as exc:  # an unreadable or malformed output cannot be verified
        return Finding(
            name,
            "the check could not read the outputs it verifies",
            {"error": f"{type(exc).__name__}: {str(exc)[:200]}"},
            "fail",
        )
    return finding


# --- sections -----------------------------------------------------------------------------
def kanon_information(ctx: AuditContext) -> Section | None:
    """Per k-anonymous release and column: its generalisation level and how many values the
    file still shows; a column with one value left carries no information."""
    rows, empty = [], []
    for _, cert in ctx.cards():
        if "quasi_identifiers" not in cert:
            continue
        rid = str(cert.get("release_id"))
        levels = cert.get("levels") or {}
        shown = cert.get("released_values") or {}
        loss = {c["column"]: c for c in cert.get("column_loss") or ()}
        for q in cert["quasi_identifiers"]:
            values = len(shown.get(q, ()))
            useless = values <= 1
            if useless:
                empty.append(f"{rid}: {q}")
            rows.append(
                {
                    "release": rid,
                    "column": q,
                    "level": f"{levels.get(q, '?')}/{loss[q]['height']}"
                    if q in loss
                    else levels.get(q, "?"),
                    "values before": loss[q]["values before"] if q in loss else "",
                    "released values": values,
                    "information": "none: one value in every row" if useless else "kept",
                }
            )
    if not rows:
        return None
    text = (
        "What each column of a k-anonymous release still says after generalisation (level of "
        "its hierarchy, as ARX shows it). Low re-identification risk is not the whole story: "
        "a column generalised to one value carries no information."
    )
    if empty:
        text += f" Warning: {len(empty)} column(s) carry no information ({'; '.join(empty)})."
    return Section("Information kept in the k-anonymous releases", text, rows)


def _release_rows(ctx: AuditContext) -> list[dict[str, Any]]:
    """Every release of the audited policy in the ledger, one row each (anchored by id)."""
    rows = []
    for e in sorted(ctx.entries(), key=lambda e: (e.request.as_of, e.reserved_at)):
        r = e.request
        rows.append(
            {
                "ledger": e.release_id,
                "type": release_type(e),
                "status": e.status,
                "as of": r.as_of.isoformat(),
                "recorded": (e.published_at or e.reserved_at)[:16].replace("T", " "),
                "guarantee": r.guarantee,
                "ε": r.epsilon if r.epsilon is not None else "",
                "ρ": r.rho if r.rho is not None else "",
                "purpose": r.purpose,
                "recipient": r.recipient,
                "destination": r.destination,
                "clauses": ", ".join(r.clause_ids),
                "files": [f"{n} (SHA-256 {h[:12]}…)" for n, h in e.files.items()],
            }
        )
    return rows


def ledger_summary(ctx: AuditContext) -> list[dict[str, Any]]:
    """The ledger by release type: how many, their guarantee, total loss, as-of range and when
    they were recorded."""
    groups: dict[str, list[Any]] = {}
    for e in ctx.entries():
        groups.setdefault(release_type(e), []).append(e)
    rows = []
    for name, entries in sorted(groups.items(), key=lambda kv: min(e.reserved_at for e in kv[1])):
        eps = [e.request.epsilon for e in entries if e.request.epsilon is not None]
        rhos = [e.request.rho for e in entries if e.request.rho is not None]
        as_of = sorted(e.request.as_of for e in entries)
        recorded = sorted((e.published_at or e.reserved_at) for e in entries)
        rows.append(
            {
                "release type": name,
                "releases": len(entries),
                "published": sum(e.status == "published" for e in entries),
                "guarantee": ", ".join(sorted({e.request.guarantee for e in entries})),
                "total ε": round(sum(eps), 6) if eps else "",
                "total ρ": round(sum(rhos), 6) if rhos else "",
                "as of": as_of[0].isoformat()
                if as_of[0] == as_of[-1]
                else f"{as_of[0].isoformat()} … {as_of[-1].isoformat()}",
                "recorded": recorded[0][:16].replace("T", " ")
                if len(recorded) == 1
                else f"{recorded[0][:16]} … {recorded[-1][:16]}".replace("T", " "),
            }
        )
    return rows


def _scope(ctx: AuditContext, external_gaps: list[str]) -> Section:
    ledger = ctx.ledger
    rows = [
        {"item": "policy audited", "value": f"{ctx.policy.name} ({ctx.policy.controller})"},
        {"item": "as of (retention cutoffs)", "value": ctx.as_of.isoformat()},
        {
            "item": "ledger",
            "value": "none found"
            if ledger is None
            else f"{ledger.path.name}; {ledger.label or 'the controller ledger'}",
        },
        {
            "item": "data steward's role",
            "value": "yes: key id " + ctx.key.key_id + " (" + ctx.key.provenance + ")"
            if ctx.key
            else "no key: steward checks not applicable",
        },
    ]
    rows += [{"item": "not run", "value": g} for g in external_gaps]
    return Section(
        "Scope",
        "What this audit covers. Checks marked 'data steward' re-pseudonymise the excluded "
        "people with the steward's key; the key itself is never written to the report.",
        rows,
    )


def _attack_part(ctx: AuditContext, clause: str) -> tuple[list[Check], list[Section]]:
    """Re-checks and attacks on the k-anonymous releases (:mod:`segments.audit.attacks`)."""
    from segments.audit.attacks import attack_dp_differencing, attack_kanon_releases

    raw = ctx.raw_customers()
    promise = "A k-anonymous release resists linkage, homogeneity and differencing attacks"
    if raw is None:
        return [
            Check(
                (clause,),
                promise,
                "needs the raw customer table",
                {"reason": "no raw customers: the attacker's knowledge cannot be built"},
                "not applicable",
                STEWARD,
                name="attacks",
            )
        ], []
    results = attack_kanon_releases(ctx.workspace, raw)
    checks, rows = [], []
    for r in results:
        link, re = r["linkage"], r["recheck"]
        evidence = {
            "release": r["release_id"],
            "k certified": re["k_certified"],
            "k measured": re["k_measured"],
            "highest risk": link["highest"],
            "average risk": link["average"],
            "records at risk": link["records_at_risk"],
            "homogeneous records": r["homogeneity"].get("homogeneous_records", "n/a"),
            "differencing pairs": len(r["differencing"]),
        }
        rows.append({**evidence, "verdict": r["verdict"]})
        checks.append(
            Check(
                (clause,),
                f"{promise}: {r['release_id']}",
                "recount k and l from the file; link with what a neighbour or the "
                "company register knows (birth year, gender, postcode; industry, size, "
                "municipality); homogeneity of the sensitive attribute; differencing across "
                "releases of the same people",
                evidence,
                "pass" if r["verdict"].startswith("low risk") else "fail",
                STEWARD,
                name="attacks",
                releases=(str(r["release_id"]),),
            )
        )
    if not results:
        checks.append(
            Check(
                (clause,),
                promise,
                "k-anonymous releases",
                {"releases": 0},
                "not applicable",
                name="attacks",
            )
        )
    diffs = attack_dp_differencing(ctx.workspace)
    worst = max(diffs, key=lambda d: d["effect_in_std"], default=None)
    sections = [
        Section(
            "Attacks on the k-anonymous releases",
            "Measured risks with realistic background knowledge (prosecutor model: the "
            "attacker knows the target is in the release).",
            rows,
        ),
        Section(
            "Differencing of DP releases",
            f"{len(diffs)} pairs of DP releases share a query; the difference of two noisy "
            "answers carries both noises."
            + (
                f" Largest effect of one person: {worst['effect_in_std']:.3g} standard "
                f"deviations of the difference ({worst['query']}, {worst['aggregate']})."
                if worst
                else ""
            ),
        ),
    ]
    return checks, sections


def _mechanism_part(
    ctx: AuditContext, clause: str, trials: int, mechanisms: Sequence[Any] | None
) -> tuple[list[Check], list[Section], list[Chart]]:
    """Empirical ε lower bounds of every release mechanism (:mod:`segments.audit.mechanisms`)."""
    import numpy as np

    from segments.audit.mechanisms import audit_cases, audit_release_mechanisms

    if mechanisms is None:
        results = audit_release_mechanisms(ctx.policy, trials=trials, seed=np.random.default_rng(0))
    else:
        results = audit_cases(list(mechanisms), trials=trials)
    checks = [
        Check(
            (clause,),
            f"The mechanism keeps the ε it claims: {r.name}",
            "run the resolved OpenDP measurement on neighbouring datasets (with "
            "and without one heavy person); Clopper-Pearson lower bound on ε",
            r.record(clause)["evidence"] | {"mechanism": r.name},
            r.verdict,
            name="dp_audit",
        )
        for r in results
    ]
    records = [r.record(clause) | {"kind": "mechanism"} for r in results]
    if mechanisms is None:
        person_checks, person_records = _person_audit(ctx, clause, trials)
        checks += person_checks
        records += person_records
    chart = Chart(
        "Empirical DP audit",
        dp_audit_chart(records, ctx.workspace.report / "dp_audit.png"),
        "Top: each release in this workspace audited at the ε its ledger entry states, on "
        "neighbours that differ by one person in the raw data, with the broken controls "
        "(which must be refuted) and each population's accepted sequence. Bottom: the "
        "mechanism self-test at fixed test settings, not the releases' ε. Bars: claimed ε "
        "and the empirical lower bound (a diamond marks it, so a bound of 0 stays visible); "
        "a bound above the claim refutes it. At the right of each row: the numbers and the "
        "power, the smallest true ε (as a multiple of the claim) detected with 95 % "
        "probability at these trials.",
    )
    section = Section(
        "Empirical DP audit",
        f"{trials} trials per dataset and mechanism; the rows of each panel keep 95 % "
        "confidence together (Bonferroni: a sound release is refuted by chance in at most "
        "5 % of audits); each row states the smallest violation it detects with 95 % "
        "probability at these trials and that confidence, calibrated on simulated runs of "
        "this very test on a Laplace release (benchmarks/bench_audit_power.py checks it on "
        "OpenDP's releases). A pass says only that no violation of that size is present.",
        [r.as_dict() for r in results],
    )
    write_json(ctx.workspace.report / "dp_audit.json", {"trials": trials, "checks": records})
    return checks, [section], [chart]


def _person_audit(ctx: AuditContext, clause: str, trials: int) -> tuple[list[Check], list[dict]]:
    """The releases in the workspace at their cards' ε, on neighbours that differ by one
    person in the raw data; broken controls that must be refuted; each population's accepted
    sequence against the budget."""
    import tempfile

    import numpy as np

    from segments.audit.mechanisms import audit_cases, sequence_cases, workspace_release_cases

    checks: list[Check] = []
    records: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="segments-person-audit-") as tmp:
        cases = workspace_release_cases(
            ctx.policy, _as_recorded(ctx), Path(tmp), seed=np.random.default_rng(0)
        )
        rows, sequences = sequence_cases(ctx.policy, ctx.entries(), cases, trials=trials)
        cases += sequences
        results = audit_cases([c.case for c in cases], trials=trials)
    for audited in cases:
        if audited.case.composition is not None:
            check, record = _composition_check(ctx, clause, audited)
            checks.append(check)
            records.append(record)
    for audited, result in zip(cases, results, strict=True):
        record = result.record(clause)
        evidence = {**record["evidence"], "release_ids": list(audited.release_ids)[:5]}
        if audited.kind == "control":
            ok = not result.passed  # a broken release must be refuted
            title = "The DP audit refutes a deliberately broken release."
            evidence["expected"] = f"refuted ({audited.note})"
        elif audited.kind == "sequence":
            ok = result.passed
            title = "A population's accepted sequence of releases stays within the budget."
            evidence["composed"] = audited.note
        else:
            ok = result.passed
            title = "Each release in the workspace keeps the ε its card states for a person."
        # a sound case the test could not have refuted is inconclusive, never a pass
        status: Status = ("pass" if ok else "fail") if audited.kind == "control" else result.verdict
        record["verdict"] = status
        record["kind"] = audited.kind
        records.append(record)
        checks.append(
            Check(
                (clause,),
                title,
                f"{result.name}: resolved measurement on the real prepare's "
                "output with and without one person removed from the raw data",
                evidence,
                status,
                name="dp_audit_person",
                releases=tuple(audited.release_ids),
            )
        )
    for row in rows:
        ok = row["verdict"] == "pass"
        records.append({"name": f"budget of {row['population']}", "clause": clause,
                        "verdict": row["verdict"], "evidence": row, "kind": "budget"})  # fmt: skip
        checks.append(
            Check(
                (clause,),
                "A population's accepted sequence of releases stays within the budget.",
                "the most ε charged within any budget period of recorded time, from the ledger",
                row,
                "pass" if ok else "fail",
                name="dp_audit_budget",
            )
        )
    return checks, records


def _composition_check(ctx: AuditContext, clause: str, audited: Any) -> tuple[Check, dict]:
    """Each release's charge against OpenDP's composition of every step it measures (its
    private bounds, sums and, for the purchasing series, clip excess), rebuilt from the facts
    its ledger entry RECORDED (:func:`segments.audit.mechanisms.recorded_composition`): not a
    re-plan by today's code (a release charged by older code does not fail spuriously) and
    never the card (an edited card changes nothing). An entry that records too little to
    rebuild its steps is inconclusive, never a pass."""
    from segments.audit.mechanisms import recorded_composition
    from segments.privacy.composition import DPFamily

    ids = set(audited.release_ids)
    entries = {e.release_id: e for e in ctx.entries() if e.release_id in ids}
    charged: dict[str, float] = {}
    composed: dict[str, float] = {}
    short: dict[str, str] = {}
    steps: dict[str, float] = {}
    family = audited.case.composition["family"]
    for rid, entry in sorted(entries.items()):
        recorded = recorded_composition(entry.request.bounds or {})
        if "insufficient" in recorded:
            short[rid] = recorded["insufficient"]
            continue
        family = recorded["family"]
        zcdp = family == DPFamily.ZCDP
        charged[rid] = float((entry.request.rho if zcdp else entry.request.epsilon) or 0.0)
        composed[rid] = float(recorded["composed"])
        steps = steps or recorded["steps"]
    unit = "ρ" if family == DPFamily.ZCDP else "ε"
    # charged less than the composition: it spends more than it is charged (to the last
    # digits: the scales carry a margin); charged more: a step charged but not measured
    off = {
        r: c
        for r, c in charged.items()
        if composed[r] > c * (1 + 1e-9) or composed[r] < c * (1 - 1e-6)
    }
    status: Status = "fail" if off or not entries else "inconclusive" if short else "pass"
    evidence: dict[str, Any] = {
        f"composed {unit} (OpenDP, from the ledger's recorded steps)": sorted(
            {round(c, 9) for c in composed.values()}
        ),
        f"{unit} of each step": {k: round(v, 9) for k, v in steps.items()},
        f"charged {unit} (ledger)": sorted({round(c, 9) for c in charged.values()}),
        "releases": len(entries),
        "release_ids": sorted(ids)[:5],
    }
    if off:
        evidence["charged otherwise"] = {
            r: f"charged {round(c, 9)}, composed {round(composed[r], 9)}"
            for r, c in list(off.items())[:5]
        }
    if short:
        evidence["inconclusive"] = (
            f"{len(short)} release(s) not rebuilt, e.g. {next(iter(short))}: "
            f"{next(iter(short.values()))}"
        )
    if not entries:
        evidence["charged otherwise"] = "no release of this group is in the ledger"
    title = "Each release is charged OpenDP's composition of every step it measures."
    record = {
        "name": f"composition of {audited.note}",
        "clause": clause,
        "verdict": status,
        "evidence": evidence,
        "kind": "composition",
    }
    check = Check(
        (clause,),
        title,
        "each step rebuilt from what the ledger recorded for the release (noise, scale, "
        "sensitivity; a private bound's candidates and alpha), composed by OpenDP "
        "(make_composition, mapped at one person), the queries added up; compared with the "
        "loss the ledger charged the release",
        evidence,
        status,
        name="dp_audit_composition",
        releases=tuple(sorted(ids)),
    )
    return check, record


def _as_recorded(ctx: AuditContext) -> list[tuple[Path, dict[str, Any]]]:
    """The workspace's cards with the specification the ledger recorded for each release: the
    audit re-plans what was charged, never what a card (which can be edited) says."""
    by_id = {e.release_id: e for e in ctx.entries()} if ctx.ledger is not None else {}
    out = []
    for path, card in ctx.cards():
        entry = by_id.get(str(card.get("release_id")))
        if entry is not None and isinstance(entry.request.spec, dict) and entry.request.spec:
            card = {**card, "spec": entry.request.spec}
        out.append((path, card))
    return out


def _crashed(clause: str, part: str, exc: Exception) -> Check:
    return Check(
        (clause,),
        f"The {part} part of the audit ran",
        "could not run",
        {"error": f"{type(exc).__name__}: {str(exc)[:200]}"},
        "fail",
        name=part,
    )


def _external(
    ctx: AuditContext, dp_trials: int | None, mechanisms: Sequence[Any] | None
) -> tuple[list[Check], list[Section], list[Chart], list[str]]:
    """Attacks and the empirical DP audit; a part that cannot run is reported as a gap."""
    # the attacks and the DP audit are listed under the policy's own anonymity clause
    clause = ctx.policy.clauses_for("anonymous_release")[0]
    checks: list[Check] = []
    sections: list[Section] = []
    charts: list[Chart] = []
    gaps: list[str] = []
    try:
        c, s = _attack_part(ctx, clause)
        checks, sections = checks + c, sections + s
    except Exception as exc:  # the attacks could not read a release: it cannot be verified
        checks.append(_crashed(clause, "attacks", exc))
    if not dp_trials:
        gaps.append("the empirical DP audit (0 trials asked)")
    else:
        try:
            c, s, ch = _mechanism_part(ctx, clause, dp_trials, mechanisms)
            checks, sections, charts = checks + c, sections + s, charts + ch
        except Exception as exc:
            checks.append(_crashed(clause, "dp_audit", exc))
    return checks, sections, charts, gaps


def run_audit(
    workspace: Workspace | str | os.PathLike[str],
    policy: Policy | str,
    *,
    ledger: Ledger | None = None,
    key: PseudonymKey | bytes | str | None = None,
    as_of: dt.date | str | None = None,
    steward: bool = True,
    notebooks: Sequence[str | os.PathLike[str]] | None = None,
    dp_trials: int | None = 500,
    mechanisms: Sequence[Any] | None = None,
) -> AuditReport:
    """Audit ``workspace`` under ``policy``; write ``W/report/audit.html`` and ``audit.md``.

    Parameters
    ----------
    workspace : Workspace or path
    policy : Policy or str
        The policy audited (its controller's clause ids make the checklist).
    ledger : Ledger or path, optional
        Default: the workspace's throw-away ledger if there is one, else the controller's.
    key : PseudonymKey, bytes or str, optional
        The steward's key. Default: as :func:`segments.prepare.pseudonym.load_key` resolves it (the
        environment variable, or the demo key of synthetic data).
    as_of : date or str, optional
        Reference date of the retention cutoffs. Default: the latest prepare run's as_of.
    steward : bool
        False runs in the reviewer's role only: checks that need the key are not applicable.
    notebooks : sequence of paths, optional
        Notebooks whose outputs are scanned for personal data. Default: ``notebooks/*.ipynb``
        of the project, if present.
    dp_trials : int or None
        Trials per dataset of the empirical DP audit; None skips it (reported as a gap).
    mechanisms : sequence of MechanismCase, optional
        The mechanisms the empirical DP audit runs; default: every release mechanism under
        the policy's parameters (:func:`segments.audit.mechanisms.audit_release_mechanisms`).

    Returns
    -------
    AuditReport
        ``report.passed`` is False if any check fails.

    Examples
    --------
    >>> report = run_audit("data/workspace", "alloffice")  # doctest: +SKIP
    >>> report.counts()  # doctest: +SKIP
    {'pass': 61, 'fail': 0, 'inconclusive': 0, 'not applicable': 3}
    """
    from segments.audit.mechanisms import MIN_TRIALS

    if dp_trials is not None and dp_trials < MIN_TRIALS:  # before anything runs or is written
        raise PolicyError(
            f"--dp-trials={dp_trials}: the empirical DP audit needs at least {MIN_TRIALS} "
            "trials per dataset for a meaningful bound; give 0 to skip it (the report says so)"
        )
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    pol = policy if isinstance(policy, Policy) else Policy.load(policy)
    day = dt.date.fromisoformat(as_of) if isinstance(as_of, str) else as_of
    if notebooks is None:
        nbs = tuple(sorted(_NOTEBOOKS.glob("*.ipynb"))) if _NOTEBOOKS.is_dir() else ()
    else:
        nbs = tuple(Path(n) for n in notebooks)
    ctx = AuditContext(
        workspace=ws,
        policy=pol,
        as_of=day or _default_as_of(ws),
        key=_resolve_key(ws, key, steward),
        notebooks=nbs,
    )
    ctx.ledger = _resolve_ledger(ws, pol, ledger, ctx.cards())
    sections = progress(total=5, desc="audit", unit="part")
    findings = {}
    for name, check in CHECKS.items():
        sections.set_postfix_str(name)
        findings[name] = _safe(name, check, ctx)
    findings["key_matches"] = check_key_matches(ctx)
    sections.update()
    links = _release_links(ctx)
    known = sorted(set(links) | {e.release_id for e in ctx.entries()})
    rows = clause_rows(pol, findings, known)
    key_check = findings["key_matches"]
    rows.append(
        Check(
            (),
            "The steward's key is the one the frames were pseudonymised with",
            key_check.method,
            key_check.evidence,
            key_check.status,
            STEWARD,
            name="key_matches",
            kind="precondition",
        )
    )
    sections.set_postfix_str("attacks and DP audit")
    ext_checks, ext_sections, ext_charts, gaps = _external(ctx, dp_trials, mechanisms)
    sections.update(2)
    sections.set_postfix_str("charts")
    folder = ws.report
    charts = [c for c in (budget_chart(ctx, folder),) if c is not None]
    charts += kanon_charts(ctx, folder) + ext_charts
    sections.update()
    pii = findings["pii_scan"]
    releases = _release_rows(ctx)
    report = AuditReport(
        policy=pol.name,
        controller=pol.controller,
        workspace=str(ws.root),
        generated_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        checks=rows + ext_checks,
        clauses=clause_views(ctx),
        not_run=gaps,
        release_links=links,
        sections=[
            _scope(ctx, gaps),
            Section(
                "The ledger by release type",
                f"Ledger {_ledger_name(ctx)}: every release of this policy it records, grouped "
                "by type, with the release's as-of date (its place in the budget) and when the "
                "ledger recorded it.",
                ledger_summary(ctx),
            ),
            Section(
                "Every release in the ledger",
                f"{len(releases)} releases with their guarantee, privacy loss, destination and "
                "file hashes.",
                releases,
                anchor="ledger",
                folded=len(releases) > 12,
            ),
            Section(
                "PII scan",
                f"{pii.evidence.get('files scanned', 0)} files scanned (releases, forecasts, "
                "report, notebook outputs); hits are redacted. "
                + str(pii.evidence.get("error", "")),
                [{"hit": h} for h in pii.evidence.get("hits") or []],
            ),
            *[x for x in (kanon_information(ctx),) if x is not None],
            *ext_sections,
        ],
        charts=charts,
    )
    written = _write(report, ctx)
    sections.update()
    sections.close()
    return written


def _ledger_name(ctx: AuditContext) -> str:
    if ctx.ledger is None:
        return "(none found)"
    return f"{ctx.ledger.path.name} ({ctx.ledger.label or 'the controller ledger'})"


def _release_links(ctx: AuditContext) -> dict[str, str]:
    """Release id → its card or certificate, relative to the report folder."""
    out = {}
    for path, card in ctx.cards():
        rel = os.path.relpath(path, ctx.workspace.report)
        out[str(card.get("release_id"))] = Path(rel).as_posix()
    return out


def _write(report: AuditReport, ctx: AuditContext) -> AuditReport:
    """Render, scan the rendered text itself for personal data, then write atomically."""
    folder = ctx.workspace.report
    raw = ctx.raw_customers()
    from segments.audit.pii import KnownIdentifiers

    known = KnownIdentifiers.from_customers(raw) if raw is not None else None
    markdown = render_markdown(report)
    hits = scan_text(markdown, "audit.md", known)
    if hits:  # the report itself must not carry personal data: fail, showing only redactions
        pii_clauses = next((c.clause_ids for c in report.checks if c.name == "pii_scan"), ())
        report.checks.append(
            Check(
                pii_clauses or report.checks[0].clause_ids,
                "The report itself holds no personal data",
                "scan of the rendered report",
                {"hits": [f"{h.kind} {h.redacted}" for h in hits]},
                "fail",
                STEWARD if known else "reviewer",
                name="pii_scan_report",
            )
        )
        markdown = render_markdown(report)
    with atomic_write(folder / "audit.md", "w") as fh:
        fh.write(markdown)
    ledger_ids = [e.release_id for e in ctx.entries()]
    with atomic_write(folder / "audit.html", "w") as fh:
        fh.write(render_html(report, ledger_ids))
    with atomic_write(folder / "audit.json", "w") as fh:
        fh.write(render_json(report))
    return report
