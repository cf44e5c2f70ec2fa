"""Render an audit as one self-contained HTML file and the same content as Markdown.

The HTML embeds its charts as base64 PNG images and its styles inline, so a reviewer can
open it from an e-mail or an archive without the workspace; the Markdown refers to the same
charts as PNG files beside it.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["AuditReport", "Check", "Chart", "Section", "render_html", "render_markdown"]

Status = Literal["pass", "fail", "not applicable"]


@dataclass(frozen=True)
class Check:
    """One verified promise: which clauses, what was checked, the evidence, the verdict."""

    clause_ids: tuple[str, ...]
    title: str
    method: str
    evidence: Mapping[str, Any]
    status: Status
    role: str = "reviewer"  # "data steward" when the check needs the pseudonymisation key


@dataclass(frozen=True)
class Chart:
    title: str
    png_path: Path
    caption: str = ""


@dataclass(frozen=True)
class Section:
    """A titled block of the report: a paragraph and optional table rows."""

    title: str
    text: str
    rows: Sequence[Mapping[str, Any]] = ()


@dataclass
class AuditReport:
    policy: str
    controller: str
    workspace: str
    generated_at: str
    checks: list[Check] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def counts(self) -> dict[str, int]:
        out = {"pass": 0, "fail": 0, "not applicable": 0}
        for c in self.checks:
            out[c.status] += 1
        return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _evidence_text(evidence: Mapping[str, Any]) -> str:
    return "; ".join(f"{k}: {_fmt(v)}" for k, v in evidence.items())


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:72rem;color:#222}
table{border-collapse:collapse;width:100%;margin:1rem 0;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3} .pass{color:#176b2c;font-weight:600} .fail{color:#b00020;font-weight:700}
.na{color:#777} figure{margin:1.5rem 0} img{max-width:100%;border:1px solid #ddd}
.summary{font-size:1.1rem;padding:.75rem;border-radius:6px}
.ok{background:#e7f6ea} .bad{background:#fdecee}
"""


# After loading, the page records what a reader can actually see: how many checklist rows
# are rendered with a non-zero size and how many chart images decoded. A headless browser
# test reads these attributes from the DOM.
_SELF_CHECK = """
window.addEventListener('load', function () {
  var rows = Array.from(document.querySelectorAll('#checklist tbody tr'))
    .filter(function (r) {
      var b = r.getBoundingClientRect(); return b.width > 0 && b.height > 0;
    });
  var imgs = Array.from(document.querySelectorAll('#charts img'));
  var ok = imgs.filter(function (i) {
    var b = i.getBoundingClientRect();
    return i.complete && i.naturalWidth > 0 && b.width > 0 && b.height > 0;
  });
  document.body.setAttribute('data-visible-checks', String(rows.length));
  document.body.setAttribute('data-charts-total', String(imgs.length));
  document.body.setAttribute('data-charts-visible', String(ok.length));
});
"""


def _evidence_html(text: str, limit: int = 300) -> str:
    """Long evidence (per-file hashes, per-release lists) folds open on a click."""
    if len(text) <= limit:
        return html.escape(text)
    return f"<details><summary>{html.escape(text[:limit])}…</summary>{html.escape(text)}</details>"


def _html_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0].keys())
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c, '')))}</td>" for c in cols) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: AuditReport) -> str:
    """The report as one self-contained HTML document (charts embedded)."""
    counts = report.counts()
    verdict = "ok" if report.passed else "bad"
    checklist = "".join(
        "<tr>"
        f"<td>{html.escape(', '.join(c.clause_ids))}</td>"
        f"<td>{html.escape(c.title)}</td>"
        f"<td>{html.escape(c.method)}</td>"
        f"<td>{_evidence_html(_evidence_text(c.evidence))}</td>"
        f"<td>{html.escape(c.role)}</td>"
        f"<td class='{'na' if c.status == 'not applicable' else c.status}'>"
        f"{html.escape(c.status)}</td></tr>"
        for c in report.checks
    )
    sections = "".join(
        f"<section><h2>{html.escape(s.title)}</h2><p>{html.escape(s.text)}</p>"
        f"{_html_table(s.rows)}</section>"
        for s in report.sections
    )
    charts = "".join(
        f"<figure><img alt='{html.escape(ch.title)}' src='data:image/png;base64,"
        f"{base64.b64encode(ch.png_path.read_bytes()).decode()}'>"
        f"<figcaption>{html.escape(ch.title)}. {html.escape(ch.caption)}</figcaption></figure>"
        for ch in report.charts
    )
    title = f"Privacy audit — {report.controller} ({report.policy})"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Policy audited: <b>{html.escape(report.policy)}</b>. Workspace: {html.escape(report.workspace)}.
Generated {html.escape(report.generated_at)}.</p>
<p class="summary {verdict}">{counts["pass"]} checks pass, {counts["fail"]} fail,
{counts["not applicable"]} not applicable.</p>
<section id="checklist"><h2>Checklist by clause</h2>
<table><thead><tr><th>Clause</th><th>Promise</th><th>Check</th><th>Evidence</th>
<th>Role</th><th>Result</th></tr></thead><tbody>{checklist}</tbody></table></section>
{sections}
<section id="charts"><h2>Charts</h2>{charts}</section>
<script>{_SELF_CHECK}</script>
</body></html>
"""


def _md_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0].keys())

    def cell(v: Any) -> str:
        return _fmt(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render_markdown(report: AuditReport) -> str:
    """The same content as Markdown; charts are linked by file name (beside the file)."""
    counts = report.counts()
    out = [
        f"# Privacy audit — {report.controller} ({report.policy})\n",
        f"Policy audited: **{report.policy}**. Workspace: {report.workspace}. "
        f"Generated {report.generated_at}.\n",
        f"**{counts['pass']} checks pass, {counts['fail']} fail, "
        f"{counts['not applicable']} not applicable.**\n",
        "## Checklist by clause\n",
        _md_table(
            [
                {
                    "Clause": ", ".join(c.clause_ids),
                    "Promise": c.title,
                    "Check": c.method,
                    "Evidence": _evidence_text(c.evidence),
                    "Role": c.role,
                    "Result": c.status,
                }
                for c in report.checks
            ]
        ),
    ]
    for s in report.sections:
        out += [f"## {s.title}\n", s.text + "\n", _md_table(s.rows)]
    out.append("## Charts\n")
    out += [f"![{ch.title}]({ch.png_path.name})\n\n{ch.caption}\n" for ch in report.charts]
    return "\n".join(out)
