"""Run the reviewer's audit of one workspace under one policy and write ``W/report/``.

:func:`run_audit` runs every check of :mod:`segments.audit.checks`, attaches them to the
clause ids of the audited controller (:data:`~segments.audit.checks.CLAUSE_CHECKS`: every
clause gets at least one row), adds the attacks and the empirical DP audit of
:mod:`segments.audit.attacks` and :mod:`segments.audit.mechanisms` when those modules are
present, draws the charts (budget spent over time and rolling totals, class sizes and
re-identification risk of the k-anonymous releases) and writes ``audit.html`` (self-contained)
and ``audit.md`` atomically. The rendered report is scanned for personal data once more before
it is written; a hit fails the audit.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
from matplotlib.figure import Figure

from segments.audit.checks import (
    CHECKS,
    CLAUSE_CHECKS,
    CORE_CHECKS,
    NEEDS_KEY,
    STEWARD,
    AuditContext,
    Finding,
    clause_prefix,
    spending,
)
from segments.audit.pii import scan_text
from segments.audit.render import (
    AuditReport,
    Chart,
    Check,
    Section,
    render_html,
    render_markdown,
)
from segments.exceptions import PolicyError
from segments.policy import Policy
from segments.pseudonym import PseudonymKey, load_key, read_manifest
from segments.workspace import Workspace, atomic_write, write_json

__all__ = ["clause_rows", "run_audit"]

_NOTEBOOKS = Path(__file__).resolve().parents[3] / "notebooks"


def clause_rows(policy: Policy, findings: dict[str, Finding]) -> list[Check]:
    """One checklist row per (clause id of the controller, check that verifies it).

    Clauses come from :data:`CLAUSE_CHECKS`, so every clause of the controller has at least
    one row even when the policy file does not cite it.
    """
    prefix = clause_prefix(policy)
    rows = []
    for clause, (promise, names) in CLAUSE_CHECKS.items():
        if not clause.startswith(prefix + "-"):
            continue
        for name in names:
            f = findings[name]
            rows.append(
                Check((clause,), promise, f"[{name}] {f.method}", f.evidence, f.status, f.role)
            )
    if not rows:  # a controller's own policy (bring your own data): its clauses, core checks
        own = tuple(dict.fromkeys(c for p in policy.purposes.values() for c in p.clause_ids))
        for name in CORE_CHECKS:
            f = findings[name]
            rows.append(
                Check(
                    own,
                    "Core check (the policy's own clause ids have no catalogue of promises)",
                    f"[{name}] {f.method}",
                    f.evidence,
                    f.status,
                    f.role,
                )
            )
    return rows


def _resolve_key(
    ws: Workspace, key: PseudonymKey | bytes | str | None, steward: bool
) -> PseudonymKey | None:
    if not steward:
        return None
    try:
        return load_key(key, workspace=ws)
    except PolicyError:
        return None


def _resolve_ledger(ws: Workspace, policy: Policy, ledger: Any) -> Any:
    from segments.privacy.ledger import Ledger, controller_slug, default_ledger_path

    if ledger is not None and not isinstance(ledger, str | os.PathLike):
        return ledger
    if ledger is not None:
        return Ledger.open(Path(ledger), policy.controller, create=False, policy=policy)
    demo = ws.root / "ledger" / f"{controller_slug(policy.controller)}.sqlite"
    if demo.is_file():
        return Ledger.for_workspace(ws, policy.controller, create=False, policy=policy)
    default = default_ledger_path(policy.controller)
    if default.is_file():
        return Ledger.open(default, policy.controller, create=False, policy=policy)
    return None


def _default_as_of(ws: Workspace) -> dt.date:
    dates = []
    for report in sorted(ws.prepared.glob("*/policy_report.json")):
        dates.append(dt.date.fromisoformat(json.loads(report.read_text())["as_of"]))
    if dates:
        return max(dates)
    as_of = read_manifest(ws).get("parameters", {}).get("as_of")
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


def _key_matches(ctx: AuditContext) -> Finding:
    """The steward's key is the one the frames were pseudonymised with (else the steward's
    look-ups would find nobody and pass vacuously)."""
    if ctx.key is None:
        return Finding("key_matches", "key id", {"reason": NEEDS_KEY}, "not applicable", STEWARD)
    ids = {}
    for purpose in ctx.prepared_purposes():
        report = ctx.workspace.prepared_dir(purpose) / "policy_report.json"
        if report.is_file():
            ids[purpose] = json.loads(report.read_text(encoding="utf-8")).get("key_id")
    wrong = sorted(p for p, k in ids.items() if k != ctx.key.key_id)
    return Finding(
        "key_matches",
        "the keyed fingerprint of the steward's key equals the key id every prepared frame "
        "records, so the re-pseudonymised look-ups can find the people",
        {"key id": ctx.key.key_id, "frames": len(ids), "other key": wrong or "none"},
        "pass" if not wrong else "fail",
        STEWARD,
    )


# --- charts -------------------------------------------------------------------------------
def _save(fig: Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    with atomic_write(path, "wb") as fh:
        fh.write(buf.getvalue())
    return path


def _budget_chart(ctx: AuditContext, folder: Path) -> Chart | None:
    if ctx.ledger is None:
        return None
    frame = spending(ctx)
    if frame.is_empty():
        return None
    p = ctx.policy.privacy
    fig = Figure(figsize=(11, 3.6))
    left, right = fig.subplots(1, 2)
    by_policy: dict[str, list[tuple[dt.date, float]]] = {}
    for e in sorted(ctx.ledger.entries(), key=lambda e: e.request.as_of):
        if e.request.kind == "dp":
            by_policy.setdefault(e.request.policy, []).append(
                (e.request.as_of, float(e.request.epsilon or 0.0))
            )
    for name, points in by_policy.items():
        total, xs, ys = 0.0, [], []
        for day, eps in points:
            total += eps
            xs.append(day)
            ys.append(total)
        left.step(xs, ys, where="post", marker="o", label=name)
    left.set_title("ε spent over time (cumulative, per policy)")
    left.set_ylabel("ε")
    left.legend(fontsize=8)
    for population, part in frame.group_by("population", maintain_order=True):
        right.plot(
            part["date"].to_list(), part["period_epsilon"].to_list(), "o-", label=str(population[0])
        )
    right.axhline(p.budget_epsilon, color="tab:red", linestyle="--", label="budget")
    right.set_title(f"rolling {p.budget_period_months}-month total at each release")
    right.set_ylabel("ε")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=30)
    path = _save(fig, folder / "budget.png")
    return Chart(
        "Privacy budget",
        path,
        f"Recomputed from the ledger entries; budget ε = {p.budget_epsilon} per "
        f"{p.budget_period_months} months.",
    )


def _class_sizes(ctx: AuditContext) -> dict[str, pl.Series]:
    out = {}
    for path, cert in ctx.cards():
        if path.name == "certificate.json":
            try:
                table = pl.read_parquet(path.parent / "table.parquet")
            except Exception:  # unreadable: the checks fail it; there is nothing to draw
                continue
            qis = list(cert["quasi_identifiers"])
            # one value per released record: the size of its equivalence class
            out[str(cert["release_id"])] = table.select(pl.len().over(qis).alias("n"))["n"]
    return out


def _kanon_charts(ctx: AuditContext, folder: Path) -> list[Chart]:
    per_record = _class_sizes(ctx)
    if not per_record:
        return []
    k = ctx.policy.privacy.min_k
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    for rid, sizes in per_record.items():
        ax.hist(sizes.to_numpy(), bins=30, alpha=0.6, label=rid)
    ax.axvline(k, color="tab:red", linestyle="--", label=f"min k = {k}")
    ax.set_xlabel("size of the record's equivalence class")
    ax.set_ylabel("records")
    ax.legend(fontsize=7)
    sizes_chart = Chart(
        "Class sizes of the k-anonymous releases",
        _save(fig, folder / "class_sizes.png"),
        "Recounted from the released files.",
    )
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    for rid, sizes in per_record.items():
        ax.hist((1.0 / sizes.cast(pl.Float64)).to_numpy(), bins=30, alpha=0.6, label=rid)
    ax.axvline(1 / k, color="tab:red", linestyle="--", label=f"1/min k = {1 / k:.3g}")
    ax.set_xlabel("prosecutor re-identification risk of a record (1 / class size)")
    ax.set_ylabel("records")
    ax.legend(fontsize=7)
    risk_chart = Chart(
        "Re-identification risk distribution",
        _save(fig, folder / "risk.png"),
        "Risk against an attacker who knows a record is in the release.",
    )
    return [sizes_chart, risk_chart]


# --- sections -----------------------------------------------------------------------------
def _release_rows(ctx: AuditContext) -> list[dict[str, Any]]:
    rows = []
    for e in ctx.entries():
        r = e.request
        rows.append(
            {
                "release": e.release_id,
                "status": e.status,
                "as of": r.as_of.isoformat(),
                "guarantee": r.guarantee,
                "ε": r.epsilon if r.epsilon is not None else "",
                "ρ": r.rho if r.rho is not None else "",
                "purpose": r.purpose,
                "recipient": r.recipient,
                "destination": r.destination,
                "clauses": ", ".join(r.clause_ids),
                "files": ", ".join(f"{n} {h[:12]}…" for n, h in e.files.items()),
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
    rows += [{"item": "gap", "value": g} for g in external_gaps]
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
    promise = "A k-anonymous release resists linkage, homogeneity and differencing attacks."
    if raw is None:
        return [
            Check(
                (clause,),
                promise,
                "[attacks] needs the raw customer table",
                {"reason": "no raw customers: the attacker's knowledge cannot be built"},
                "not applicable",
                STEWARD,
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
                promise,
                "[attacks] recount k and l from the file; link with what a neighbour or the "
                "company register knows (birth year, gender, postcode; industry, size, "
                "municipality); homogeneity of the sensitive attribute; differencing across "
                "releases of the same people",
                evidence,
                "pass" if r["verdict"].startswith("low risk") else "fail",
                STEWARD,
            )
        )
    if not results:
        checks.append(
            Check(
                (clause,),
                promise,
                "[attacks] k-anonymous releases",
                {"releases": 0},
                "not applicable",
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
    promise = "Each release mechanism keeps the ε it claims (empirical lower bound)."
    checks = [
        Check(
            (clause,),
            promise,
            "[dp_audit] run the resolved OpenDP measurement on neighbouring datasets (with "
            "and without one heavy person); Clopper-Pearson lower bound on ε",
            r.record(clause)["evidence"] | {"mechanism": r.name},
            "pass" if r.passed else "fail",
        )
        for r in results
    ]
    records = [r.record(clause) for r in results]
    if mechanisms is None:
        person_checks, person_records = _person_audit(ctx, clause, trials)
        checks += person_checks
        records += person_records
    fig = Figure(figsize=(8, 0.6 + 0.45 * len(results)))
    ax = fig.subplots()
    names = [r.name[:48] for r in results]
    y = np.arange(len(results))
    ax.barh(y - 0.2, [r.claimed_epsilon for r in results], 0.4, label="claimed ε")
    ax.barh(
        y + 0.2,
        [max(r.epsilon_lower_bound, 0.0) for r in results],
        0.4,
        label=f"empirical lower bound ({results[0].confidence:.0%})" if results else "",
    )
    ax.set_yticks(y, names, fontsize=7)
    ax.set_xlabel("ε")
    ax.legend(fontsize=7)
    chart = Chart(
        "Empirical DP audit",
        _save(fig, ctx.workspace.report / "dp_audit.png"),
        "A lower bound above the claim refutes the claim.",
    )
    section = Section(
        "Empirical DP audit",
        f"{trials} trials per dataset and mechanism; each row states the smallest violation "
        "it detects with 95 % probability at these trials.",
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
            ctx.policy, ctx.cards(), Path(tmp), seed=np.random.default_rng(0)
        )
        rows, sequences = sequence_cases(ctx.policy, ctx.entries(), cases)
        cases += sequences
        results = audit_cases([c.case for c in cases], trials=trials)
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
        else:
            ok = result.passed
            title = "Each release in the workspace keeps the ε its card states for a person."
        record["verdict"] = "pass" if ok else "fail"
        record["kind"] = audited.kind
        records.append(record)
        checks.append(
            Check(
                (clause,),
                title,
                f"[dp_audit_person] {result.name}: resolved measurement on the real prepare's "
                "output with and without one person removed from the raw data",
                evidence,
                "pass" if ok else "fail",
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
                "[dp_audit_budget] the most ε charged within any budget period of recorded "
                "time, from the ledger",
                row,
                "pass" if ok else "fail",
            )
        )
    return checks, records


def _crashed(clause: str, part: str, exc: Exception) -> Check:
    return Check(
        (clause,),
        f"The {part} part of the audit ran.",
        f"[{part}] could not run",
        {"error": f"{type(exc).__name__}: {str(exc)[:200]}"},
        "fail",
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
    except ImportError:
        gaps.append("segments.audit.attacks is not available: no attacks were run")
    except Exception as exc:  # the attacks could not read a release: it cannot be verified
        checks.append(_crashed(clause, "attacks", exc))
    if dp_trials is None:
        gaps.append("the empirical DP audit was not run (dp_trials=None)")
    else:
        try:
            c, s, ch = _mechanism_part(ctx, clause, dp_trials, mechanisms)
            checks, sections, charts = checks + c, sections + s, charts + ch
        except ImportError:
            gaps.append("segments.audit.mechanisms is not available: no empirical DP audit")
        except Exception as exc:
            checks.append(_crashed(clause, "dp_audit", exc))
    return checks, sections, charts, gaps


def run_audit(
    workspace: Workspace | str | os.PathLike[str],
    policy: Policy | str,
    *,
    ledger: Any = None,
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
        The steward's key. Default: as :func:`segments.pseudonym.load_key` resolves it (the
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
    {'pass': 61, 'fail': 0, 'not applicable': 3}
    """
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
        ledger=_resolve_ledger(ws, pol, ledger),
        key=_resolve_key(ws, key, steward),
        notebooks=nbs,
    )
    findings = {name: _safe(name, check, ctx) for name, check in CHECKS.items()}
    findings["key_matches"] = _key_matches(ctx)
    rows = clause_rows(pol, findings)
    prefix = clause_prefix(pol)
    rows += [
        Check(
            (f"{prefix}-9",) if f"{prefix}-9" in CLAUSE_CHECKS else (f"{prefix}-1",),
            "The steward's key matches the frames audited.",
            f"[key_matches] {findings['key_matches'].method}",
            findings["key_matches"].evidence,
            findings["key_matches"].status,
            STEWARD,
        )
    ]
    ext_checks, ext_sections, ext_charts, gaps = _external(ctx, dp_trials, mechanisms)
    folder = ws.report
    charts = [c for c in (_budget_chart(ctx, folder),) if c is not None]
    charts += _kanon_charts(ctx, folder) + ext_charts
    pii = findings["pii_scan"]
    report = AuditReport(
        policy=pol.name,
        controller=pol.controller,
        workspace=str(ws.root),
        generated_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        checks=rows + ext_checks,
        sections=[
            _scope(ctx, gaps),
            Section(
                "Releases in the ledger",
                "Every release of this policy the ledger "
                "records, with its guarantee, privacy loss and file hashes.",
                _release_rows(ctx),
            ),
            Section(
                "PII scan",
                f"{pii.evidence.get('files scanned', 0)} files scanned (releases, forecasts, "
                "report, notebook outputs); hits are redacted. "
                + str(pii.evidence.get("error", "")),
                [{"hit": h} for h in pii.evidence.get("hits") or []],
            ),
            *ext_sections,
        ],
        charts=charts,
    )
    return _write(report, ctx)


def _write(report: AuditReport, ctx: AuditContext) -> AuditReport:
    """Render, scan the rendered text itself for personal data, then write atomically."""
    folder = ctx.workspace.report
    raw = ctx.raw_customers()
    from segments.audit.pii import KnownIdentifiers

    known = KnownIdentifiers.from_customers(raw) if raw is not None else None
    markdown = render_markdown(report)
    hits = scan_text(markdown, "audit.md", known)
    if hits:  # the report itself must not carry personal data: fail, showing only redactions
        report.checks.append(
            Check(
                report.checks[0].clause_ids,
                "The report itself holds no personal data.",
                "[pii_scan] scan of the rendered report",
                {"hits": [f"{h.kind} {h.redacted}" for h in hits]},
                "fail",
                STEWARD if known else "reviewer",
            )
        )
        markdown = render_markdown(report)
    with atomic_write(folder / "audit.md", "w") as fh:
        fh.write(markdown)
    with atomic_write(folder / "audit.html", "w") as fh:
        fh.write(render_html(report))
    return report
