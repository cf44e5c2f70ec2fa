"""Render an audit: a self-contained HTML page a DPO can follow clause by clause, the same
content as Markdown, and ``audit.json`` (structured results the CLI, the main job's summary and
notebook 08 read; nothing parses the rendered text).

The HTML embeds its charts as base64 PNG images and its styles inline, so a reviewer can
open it from an e-mail or an archive without the workspace. Each clause of the policy is one
section: the promise quoted (Swedish original, English gloss), its verdict, the checks that
verify it with their evidence as tables, and links to the release cards, certificates and
ledger entries it rests on. A check that verifies several clauses is counted once; its evidence
is shown under the first clause and referred to from the others. Preconditions (e.g. the
steward's key matches the frames) are shown as such, not as promises, and a part of the audit
that was not run is named in the banner.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from segments.workspace import CERTIFICATE

__all__ = [
    "AuditReport",
    "Chart",
    "ORGANISATIONAL_ROLE",
    "Check",
    "ClauseView",
    "EXIT_STATUSES",
    "NEEDS_KEY",
    "Section",
    "load_audit_json",
    "render_html",
    "render_json",
    "render_markdown",
]

#: ``inconclusive``: not refuted by a test that could not have refuted it (an empirical DP
#: audit whose power is nil at its trials): shown as such, never counted as a pass.
Status = Literal["pass", "fail", "inconclusive", "not applicable"]
#: The role of a check no file can settle (e.g. who may act as the owner of the files): shown,
#: never passed; a clause resting on one is at most "partly verified".
ORGANISATIONAL_ROLE = "the controller's organisation (not verifiable by this tool)"
#: ``segments audit``'s exit statuses (:attr:`AuditReport.exit_status`; the CLI's help and the
#: README quote them): 0 nothing fails, no check is inconclusive and every clause has a
#: passing check; 1 a check fails; 3 nothing fails but the tool did not verify everything it
#: could: a check is inconclusive (its test could not have refuted a violation at its trials)
#: or a clause is not verified (no passing check) or only partly because a check of it needs
#: the data steward's key (--reviewer mode). A clause partly verified only because part of
#: it is an organisational measure (which no file can settle) does not make it 3.
EXIT_STATUSES = {
    0: "clean: no check fails, none is inconclusive and every clause has a passing check "
    "(organisational measures aside)",
    1: "a check fails",
    3: "no check fails, but some are inconclusive or some clause is not verified (or only "
    "partly: a check of it needs the data steward's key)",
}
#: The reason a check gives when it did not run because it needs the data steward's key (the
#: reviewer's role): shown "not applicable", but it was not tested, so its clause is at most
#: "partly verified" (:meth:`AuditReport.partly_because`).
NEEDS_KEY = "not applicable — needs the data steward's key"
#: Why a clause with an organisational part is only partly verified (no file settles it).
ORGANISATIONAL_REASON = "the rest is an organisational measure this tool cannot verify"
#: "promise": verifies a clause of the policy; "precondition": a condition under which the
#: checks are meaningful (not a promise of the policy, not counted among them).
Kind = Literal["promise", "precondition"]


@dataclass(frozen=True)
class Check:
    """One check: which clauses it verifies, what was checked, the evidence, the verdict.

    ``name`` is the check's name (``budget``, ``attacks`` …); ``releases`` the release ids its
    evidence rests on (linked to their cards and ledger entries in the report).
    """

    clause_ids: tuple[str, ...]
    title: str
    method: str
    evidence: Mapping[str, Any]
    status: Status
    role: str = "reviewer"  # "data steward" when the check needs the pseudonymisation key
    name: str = ""
    kind: Kind = "promise"
    releases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClauseView:
    """One clause as the report shows it: its promise quoted and the releases citing it."""

    clause_id: str
    promise_en: str
    promise_sv: str = ""
    releases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Chart:
    """A chart of the report: its title, the PNG drawn and a caption saying what it shows."""

    title: str
    png_path: Path
    caption: str = ""


@dataclass(frozen=True)
class Section:
    """A titled block of the report: a paragraph and optional table rows.

    ``anchor`` names a column whose value gives each row an id (``<anchor>-<value>``) that
    links elsewhere in the report point to; ``folded`` rows open on a click.
    """

    title: str
    text: str
    rows: Sequence[Mapping[str, Any]] = ()
    anchor: str = ""
    folded: bool = False


@dataclass
class AuditReport:
    """The audit's results: checks, the clauses they verify, sections, charts, gaps."""

    policy: str
    controller: str
    workspace: str
    generated_at: str
    checks: list[Check] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    clauses: list[ClauseView] = field(default_factory=list)
    #: parts of the audit that did not run (named in the banner)
    not_run: list[str] = field(default_factory=list)
    #: release id → link to its card or certificate, relative to the report folder
    release_links: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"AuditReport({self.controller} ({self.policy}): {self.banner()})"

    @property
    def passed(self) -> bool:
        """No check fails (preconditions included)."""
        return all(c.status != "fail" for c in self.checks)

    @property
    def inconclusive(self) -> int:
        """How many checks (preconditions included) are inconclusive."""
        return sum(c.status == "inconclusive" for c in self.checks)

    @property
    def unverified(self) -> list[str]:
        """The clauses the tool did not verify in full although it could have: "not verified"
        (no passing check), or "partly verified" for a reason other than an organisational
        part (an inconclusive check, a check not run without the steward's key)."""
        out = []
        for v in self.clauses:
            verdict = self.clause_verdict(v.clause_id)
            reasons = self.partly_because(v.clause_id)
            if verdict == "not verified" or (
                verdict == "partly verified" and any(r != ORGANISATIONAL_REASON for r in reasons)
            ):
                out.append(v.clause_id)
        return out

    @property
    def exit_status(self) -> int:
        """``segments audit``'s exit status (:data:`EXIT_STATUSES`): 1 when a check fails, 3
        when none fails but some are inconclusive or a clause is not verified, 0 for a clean
        audit. A script gating on it tells "verified" from "could not test"; :attr:`passed`
        stays "no check fails"."""
        if not self.passed:
            return 1
        return 3 if self.inconclusive or self.unverified else 0

    @property
    def promises(self) -> list[Check]:
        """The checks that verify a promise of the policy."""
        return [c for c in self.checks if c.kind == "promise"]

    @property
    def preconditions(self) -> list[Check]:
        """The checks a promise rests on (keys, inputs) rather than promises themselves."""
        return [c for c in self.checks if c.kind == "precondition"]

    def counts(self) -> dict[str, int]:
        """Verdicts of the checks of promises, each check counted once."""
        out = {"pass": 0, "fail": 0, "inconclusive": 0, "not applicable": 0}
        for c in self.promises:
            out[c.status] += 1
        return out

    def clause_checks(self, clause_id: str) -> list[Check]:
        """The promise checks attached to ``clause_id``."""
        return [c for c in self.promises if clause_id in c.clause_ids]

    def clause_verdict(self, clause_id: str) -> str:
        """``fail`` if a check fails; ``pass`` if one passes and nothing else in the clause
        is short of verified; ``partly verified`` when a check passes but part of the promise
        is an organisational measure or a check of it is inconclusive
        (:meth:`partly_because`); else ``not verified``."""
        statuses = {c.status for c in self.clause_checks(clause_id)}
        if "fail" in statuses:
            return "fail"
        if "pass" in statuses:
            return "partly verified" if self.partly_because(clause_id) else "pass"
        return "not verified"

    def partly_because(self, clause_id: str) -> list[str]:
        """Why a clause with a passing check is not verified in full (empty when it is):
        an organisational part, or checks whose test could not have refuted a violation (an
        inconclusive check is never counted as a pass, in a check or in its clause)."""
        checks = self.clause_checks(clause_id)
        reasons = []
        if any(c.role == ORGANISATIONAL_ROLE for c in checks):
            reasons.append(ORGANISATIONAL_REASON)
        not_run = sum(
            c.status == "not applicable" and c.evidence.get("reason") == NEEDS_KEY for c in checks
        )
        if not_run:
            reasons.append(
                f"{not_run} of its checks need the data steward's key (not run in the "
                "reviewer's role)"
            )
        inconclusive = sum(c.status == "inconclusive" for c in checks)
        if inconclusive:
            reasons.append(
                f"{inconclusive} of its checks inconclusive: their tests could not have "
                "refuted a violation at their trials"
            )
        return reasons

    def check_ids(self) -> list[str]:
        """A unique, stable id per check (its name, numbered when it repeats)."""
        seen: dict[str, int] = {}
        out = []
        for c in self.checks:
            base = c.name or "check"
            seen[base] = seen.get(base, 0) + 1
            out.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
        return out

    def banner(self) -> str:
        """One line: verdicts of distinct checks, clauses, preconditions, parts not run."""
        n = self.counts()
        clauses = [v.clause_id for v in self.clauses]
        failed = [c for c in clauses if self.clause_verdict(c) == "fail"]
        unverified = [c for c in clauses if self.clause_verdict(c) == "not verified"]
        partly = [c for c in clauses if self.clause_verdict(c) == "partly verified"]
        verified = len(clauses) - len(failed) - len(unverified) - len(partly)
        parts = [
            f"{len(self.promises)} distinct checks: {n['pass']} pass, {n['fail']} fail, "
            + (f"{n['inconclusive']} inconclusive, " if n["inconclusive"] else "")
            + f"{n['not applicable']} not applicable",
            f"{verified} of {len(clauses)} clauses verified"
            + (f" ({', '.join(failed)} failing)" if failed else "")
            + (f" ({', '.join(unverified)} not verified)" if unverified else "")
            + "".join(f", {c} partly ({'; '.join(self.partly_because(c))})" for c in partly),
        ]
        pre = self.preconditions
        if pre:
            met = sum(c.status == "pass" for c in pre)
            parts.append(f"{met} of {len(pre)} preconditions met")
        if self.not_run:
            parts.append("not run: " + "; ".join(self.not_run))
        return ". ".join(parts) + "."


# --- values -------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def _evidence_text(evidence: Mapping[str, Any]) -> str:
    return "; ".join(f"{k}: {_fmt(v)}" for k, v in evidence.items())


class _Linker:
    """Escapes text and turns every release id in it into a link to its card and ledger row."""

    def __init__(self, links: Mapping[str, str], ledger_ids: Iterable[str] = ()) -> None:
        self.links = dict(links)
        self.ledger = set(ledger_ids)
        ids = sorted(set(self.links) | self.ledger, key=len, reverse=True)
        self.pattern = re.compile("|".join(re.escape(i) for i in ids)) if ids else None

    def release(self, rid: str) -> str:
        parts = [f"<code>{html.escape(rid)}</code>"]
        if rid in self.links:
            what = "certificate" if self.links[rid].endswith(CERTIFICATE) else "card"
            parts.append(f"<a class='card' href='{html.escape(self.links[rid])}'>{what}</a>")
        if rid in self.ledger:
            parts.append(f"<a class='ledger' href='#ledger-{html.escape(rid)}'>ledger entry</a>")
        return " ".join(parts)

    def __call__(self, text: str) -> str:
        if self.pattern is None:
            return html.escape(text)
        out, last = [], 0
        for m in self.pattern.finditer(text):
            out.append(html.escape(text[last : m.start()]))
            rid = m.group(0)
            target = self.links.get(rid) or f"#ledger-{rid}"
            out.append(f"<a href='{html.escape(target)}'>{html.escape(rid)}</a>")
            last = m.end()
        out.append(html.escape(text[last:]))
        return "".join(out)


def _value_html(value: Any, link: _Linker, limit: int = 12) -> str:
    """A value as a reader wants it: lists as lists, records as tables, long lists folded."""
    if isinstance(value, Mapping):
        if len(value) > limit:
            table = _kv_table(value, link)
            return f"<details><summary>{len(value)} entries</summary>{table}</details>"
        return _kv_table(value, link)
    if isinstance(value, (list, tuple)):
        if not value:
            return "none"
        if all(isinstance(v, Mapping) for v in value):
            return _html_table(list(value), link)
        items = "".join(f"<li>{link(_fmt(v))}</li>" for v in value)
        if len(value) <= limit:
            return f"<ul>{items}</ul>"
        return f"<details><summary>{len(value)} items</summary><ul>{items}</ul></details>"
    text = _fmt(value)
    if len(text) > 300:
        return f"<details><summary>{link(text[:200])}…</summary>{link(text)}</details>"
    return link(text)


def _kv_table(evidence: Mapping[str, Any], link: _Linker) -> str:
    if not evidence:
        return ""
    rows = "".join(
        f"<tr><th scope='row'>{html.escape(str(k))}</th><td>{_value_html(v, link)}</td></tr>"
        for k, v in evidence.items()
    )
    return f"<table class='evidence'><tbody>{rows}</tbody></table>"


def _html_table(
    rows: Sequence[Mapping[str, Any]], link: _Linker | None = None, anchor: str = ""
) -> str:
    if not rows:
        return ""
    link = link or _Linker({})
    cols = list(dict.fromkeys(c for r in rows for c in r))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = []
    for r in rows:
        rid = f" id='{html.escape(anchor)}-{html.escape(str(r[anchor]))}'" if anchor else ""
        cells = "".join(f"<td>{_value_html(r.get(c, ''), link)}</td>" for c in cols)
        body.append(f"<tr{rid}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:74rem;color:#222;
line-height:1.4;padding:0 1rem}
table{border-collapse:collapse;width:100%;margin:.6rem 0;font-size:.88rem}
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3} table.evidence{width:auto;min-width:50%} table.evidence th{width:14rem}
td ul{margin:0;padding-left:1.1rem}
.pass{color:#176b2c;font-weight:600} .fail{color:#b00020;font-weight:700} .na{color:#666}
.verdict{display:inline-block;padding:.1rem .55rem;border-radius:4px;font-size:.95rem;
margin-left:.6rem;border:1px solid currentColor}
.summary{font-size:1.1rem;padding:.75rem 1rem;border-radius:6px}
.ok{background:#e7f6ea} .bad{background:#fdecee} .partial{background:#fff4d6}
.clause{border:1px solid #ddd;border-radius:6px;padding:.2rem 1rem 1rem;margin:1.2rem 0}
blockquote{margin:.5rem 0;padding:.4rem .8rem;border-left:4px solid #8a9bb0;background:#f6f8fb;
font-style:italic} .gloss{margin:.3rem 0 .8rem;color:#333}
.check{margin:.8rem 0;padding:.5rem .8rem;border-left:4px solid #ccc}
.check.pass{border-left-color:#2e8b57;color:inherit;font-weight:normal}
.check.fail{border-left-color:#b00020;color:inherit;font-weight:normal}
.check h4{margin:.1rem 0 .3rem;font-size:1rem} .method{color:#444;font-size:.9rem}
.role{color:#555;font-size:.85rem} figure{margin:1.5rem 0}
img{max-width:100%;border:1px solid #ddd} nav a{margin-right:.6rem}
.releases{font-size:.9rem} .releases li{margin:.15rem 0}
"""


# After loading, the page records what a reader can actually see: per clause its verdict
# text if the clause section is visible, the visible check entries, decoded charts, and links
# whose in-page target exists. A headless browser test reads these attributes from the DOM.
_SELF_CHECK = """
window.addEventListener('load', function () {
  function visible(e) { var b = e.getBoundingClientRect(); return b.width > 0 && b.height > 0; }
  var checks = Array.from(document.querySelectorAll('.check')).filter(visible);
  var imgs = Array.from(document.querySelectorAll('#charts img'));
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0 && visible(i); });
  var verdicts = Array.from(document.querySelectorAll('section.clause')).filter(visible)
    .map(function (s) { return s.id.replace('clause-', '') + '=' +
      s.querySelector('.verdict').textContent.trim(); });
  var inner = Array.from(document.querySelectorAll('a[href^="#"]'));
  var broken = inner.filter(function (a) {
    return !document.getElementById(decodeURIComponent(a.getAttribute('href').slice(1))); });
  var b = document.body;
  b.setAttribute('data-visible-checks', String(checks.length));
  b.setAttribute('data-charts-total', String(imgs.length));
  b.setAttribute('data-charts-visible', String(ok.length));
  b.setAttribute('data-links-internal', String(inner.length));
  b.setAttribute('data-links-broken', String(broken.length));
  b.setAttribute('data-verdicts', verdicts.join('|'));
});
"""

_VERDICT_TEXT = {
    "pass": "verified",
    "fail": "FAILS",
    "not verified": "not verified",
    "partly verified": "partly verified",
    "not applicable": "not applicable",
}


def _status_class(status: str) -> str:
    return {"pass": "pass", "fail": "fail"}.get(status, "na")


def _check_html(c: Check, cid: str, link: _Linker) -> str:
    releases = (
        "<p class='releases'>Rests on: " + ", ".join(link.release(r) for r in c.releases) + "</p>"
        if c.releases
        else ""
    )
    return (
        f"<div class='check {_status_class(c.status)}' id='check-{html.escape(cid)}'>"
        f"<h4><span class='{_status_class(c.status)}'>{html.escape(c.status)}</span> — "
        f"{html.escape(c.title)} <code>[{html.escape(c.name)}]</code></h4>"
        f"<p class='method'>How: {html.escape(c.method)}</p>"
        f"{_kv_table(c.evidence, link)}{releases}"
        f"<p class='role'>Role: {html.escape(c.role)}</p></div>"
    )


def _reference_html(c: Check, cid: str, home: str) -> str:
    return (
        f"<div class='check {_status_class(c.status)} ref'>"
        f"<h4><span class='{_status_class(c.status)}'>{html.escape(c.status)}</span> — "
        f"{html.escape(c.title)} <code>[{html.escape(c.name)}]</code></h4>"
        f"<p class='method'>The same check as under {html.escape(home)}: "
        f"<a href='#check-{html.escape(cid)}'>its evidence</a>.</p></div>"
    )


def render_html(report: AuditReport, ledger_ids: Iterable[str] = ()) -> str:
    """The report as one self-contained HTML document (charts embedded).

    ``ledger_ids`` are the release ids with a row in a section anchored ``ledger``: mentions
    of them link to that row.
    """
    link = _Linker(report.release_links, ledger_ids)
    ids = dict(zip(map(id, report.checks), report.check_ids(), strict=True))
    home: dict[int, str] = {}
    clause_parts = []
    for view in report.clauses:
        verdict = report.clause_verdict(view.clause_id)
        checks = report.clause_checks(view.clause_id)
        body = []
        for c in checks:
            if id(c) in home:
                body.append(_reference_html(c, ids[id(c)], home[id(c)]))
            else:
                home[id(c)] = view.clause_id
                body.append(_check_html(c, ids[id(c)], link))
        rel = (
            "<p class='releases'>Releases citing this clause:</p><ul class='releases'>"
            + "".join(f"<li>{link.release(r)}</li>" for r in view.releases)
            + "</ul>"
            if view.releases
            else ""
        )
        sv = (
            f"<blockquote lang='sv'>“{html.escape(view.promise_sv)}”</blockquote>"
            if view.promise_sv
            else ""
        )
        n = len(checks)
        reasons = report.partly_because(view.clause_id) if verdict == "partly verified" else []
        partly = (
            f"<p class='partly'>Partly verified: {html.escape('; '.join(reasons))}.</p>"
            if reasons
            else ""
        )
        clause_parts.append(
            f"<section class='clause' id='clause-{html.escape(view.clause_id)}'>"
            f"<h3>{html.escape(view.clause_id)}<span class='verdict "
            f"{_status_class(verdict)}'>{_VERDICT_TEXT[verdict]}</span></h3>{sv}"
            f"<p class='gloss' lang='en'>{html.escape(view.promise_en)}</p>"
            f"<p>{n} check{'s' if n != 1 else ''} verify this promise.</p>{partly}"
            f"{''.join(body) or '<p class=na>No check verifies this clause.</p>'}{rel}</section>"
        )
    # checks not attached to a shown clause (a report built without clause views)
    orphans = [c for c in report.promises if id(c) not in home]
    orphan_html = "".join(_check_html(c, ids[id(c)], link) for c in orphans)
    pre = "".join(_check_html(c, ids[id(c)], link) for c in report.preconditions)
    pre_html = (
        "<section id='preconditions'><h2>Preconditions</h2><p>Not promises of the policy: "
        "conditions under which the checks above are meaningful. They are not counted among "
        f"the checks.</p>{pre}</section>"
        if pre
        else ""
    )
    sections = "".join(
        f"<section id='section-{_slug(s.title)}'><h2>{html.escape(s.title)}</h2>"
        f"<p>{link(s.text)}</p>"
        + (
            f"<details><summary>{len(s.rows)} rows</summary>"
            f"{_html_table(s.rows, link, s.anchor)}</details>"
            if s.folded and s.rows
            else _html_table(s.rows, link, s.anchor)
        )
        + "</section>"
        for s in report.sections
    )
    charts = "".join(
        f"<figure id='chart-{_slug(ch.title)}'><img alt='{html.escape(ch.title)}' "
        f"src='data:image/png;base64,{base64.b64encode(ch.png_path.read_bytes()).decode()}'>"
        f"<figcaption><b>{html.escape(ch.title)}.</b> {html.escape(ch.caption)}</figcaption>"
        "</figure>"
        for ch in report.charts
    )
    nav = "".join(
        f"<a href='#clause-{html.escape(v.clause_id)}'>{html.escape(v.clause_id)}</a>"
        for v in report.clauses
    )
    short = report.not_run or report.counts()["inconclusive"]
    state = "bad" if not report.passed else ("partial" if short else "ok")
    title = f"Privacy audit — {report.controller} ({report.policy})"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Policy audited: <b>{html.escape(report.policy)}</b>. Workspace: {html.escape(report.workspace)}.
Generated {html.escape(report.generated_at)}.</p>
<p class="summary {state}" id="banner">{html.escape(report.banner())}</p>
<nav>Clauses: {nav} <a href='#preconditions'>preconditions</a> <a href='#charts'>charts</a></nav>
<section id="checklist"><h2>Clause by clause</h2>
<p>Each clause's promise is quoted from the policy (Swedish original, English gloss), followed
by the checks that verify it. A check that verifies several clauses is shown in full once.</p>
{"".join(clause_parts)}{orphan_html}</section>
{pre_html}
{sections}
<section id="charts"><h2>Charts</h2>{charts}</section>
<script>{_SELF_CHECK}</script>
</body></html>
"""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# --- Markdown -------------------------------------------------------------------------------
def _md_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(c for r in rows for c in r))

    def cell(v: Any) -> str:
        return _fmt(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _md_check(c: Check) -> str:
    rows = [{"evidence": k, "value": v} for k, v in c.evidence.items()]
    rel = f"\nRests on: {', '.join(c.releases)}.\n" if c.releases else ""
    return (
        f"**{c.status}** — {c.title} `[{c.name}]`  \nHow: {c.method}  \nRole: {c.role}\n\n"
        + _md_table(rows)
        + rel
    )


def render_markdown(report: AuditReport) -> str:
    """The same content as Markdown; charts are linked by file name (beside the file)."""
    out = [
        f"# Privacy audit — {report.controller} ({report.policy})\n",
        f"Policy audited: **{report.policy}**. Workspace: {report.workspace}. "
        f"Generated {report.generated_at}.\n",
        f"**{report.banner()}**\n",
        "## Clause by clause\n",
    ]
    shown: set[int] = set()
    for view in report.clauses:
        verdict = report.clause_verdict(view.clause_id)
        out.append(f"### {view.clause_id} — {_VERDICT_TEXT[verdict]}\n")
        if verdict == "partly verified":
            out.append(f"Partly verified: {'; '.join(report.partly_because(view.clause_id))}.\n")
        if view.promise_sv:
            out.append(f"> {view.promise_sv}\n")
        out.append(f"{view.promise_en}\n")
        for c in report.clause_checks(view.clause_id):
            if id(c) in shown:
                out.append(f"- **{c.status}** — {c.title} `[{c.name}]` (shown above)\n")
            else:
                shown.add(id(c))
                out.append(_md_check(c))
        if view.releases:
            out.append("Releases citing this clause: " + ", ".join(view.releases) + "\n")
    out += [_md_check(c) for c in report.promises if id(c) not in shown]
    if report.preconditions:
        out.append("## Preconditions (not promises of the policy)\n")
        out += [_md_check(c) for c in report.preconditions]
    for s in report.sections:
        out += [f"## {s.title}\n", s.text + "\n", _md_table(s.rows)]
    out.append("## Charts\n")
    out += [f"![{ch.title}]({ch.png_path.name})\n\n{ch.caption}\n" for ch in report.charts]
    return "\n".join(out)


# --- JSON -----------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def render_json(report: AuditReport) -> str:
    """``audit.json``: every check with its name, clauses, verdict and evidence; the clauses
    with their promise and verdict; sections, charts and the parts not run."""
    ids = report.check_ids()
    record = {
        "policy": report.policy,
        "controller": report.controller,
        "workspace": report.workspace,
        "generated_at": report.generated_at,
        "passed": report.passed,
        "inconclusive": report.inconclusive,
        "exit_status": report.exit_status,
        "unverified_clauses": report.unverified,
        "banner": report.banner(),
        "counts": report.counts(),
        "not_run": list(report.not_run),
        "clauses": [
            {
                "id": v.clause_id,
                "promise_sv": v.promise_sv,
                "promise_en": v.promise_en,
                "verdict": report.clause_verdict(v.clause_id),
                "checks": [
                    i
                    for i, c in zip(ids, report.checks, strict=True)
                    if c.kind == "promise" and v.clause_id in c.clause_ids
                ],
                "releases": list(v.releases),
            }
            for v in report.clauses
        ],
        "checks": [
            {
                "id": i,
                "name": c.name,
                "kind": c.kind,
                "title": c.title,
                "clauses": list(c.clause_ids),
                "verdict": c.status,
                "role": c.role,
                "method": c.method,
                "evidence": _jsonable(c.evidence),
                "releases": list(c.releases),
            }
            for i, c in zip(ids, report.checks, strict=True)
        ],
        "sections": [
            {"title": s.title, "text": s.text, "rows": _jsonable(list(s.rows))}
            for s in report.sections
        ],
        "charts": [
            {"title": ch.title, "file": ch.png_path.name, "caption": ch.caption}
            for ch in report.charts
        ],
        "release_links": dict(report.release_links),
    }
    return json.dumps(record, ensure_ascii=False, indent=1, allow_nan=False) + "\n"


def load_audit_json(path: str | Path) -> dict[str, Any]:
    """Read ``audit.json`` (a report folder or the file itself).

    Examples
    --------
    >>> audit = load_audit_json("data/workspace/demo/report")  # doctest: +SKIP
    >>> audit["counts"], audit["not_run"]  # doctest: +SKIP
    ({'pass': 24, 'fail': 0, 'inconclusive': 0, 'not applicable': 1}, [])
    """
    p = Path(path)
    if p.is_dir():
        p = p / "audit.json"
    data: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    return data
