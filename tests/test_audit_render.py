"""The audit report renders as self-contained HTML and Markdown, and shows in a real browser."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from segments.audit.browser import find_chromium, rendered_counts, screenshot
from segments.audit.render import AuditReport, Chart, Check, Section, render_html, render_markdown


@pytest.fixture
def report(tmp_path: Path) -> AuditReport:
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar(["a", "b"], [1, 2])
    fig.savefig(tmp_path / "budget.png")
    plt.close(fig)
    return AuditReport(
        policy="alloffice",
        controller="AllOffice Nordic AB",
        workspace=str(tmp_path),
        generated_at="2026-11-22T00:00:00Z",
        checks=[
            Check(
                ("AO-6",),
                "order lines older than 24 months are gone",
                "min(order_date)",
                {"oldest": "2024-11-01", "cutoff": "2024-10-31"},
                "pass",
            ),
            Check(
                ("AO-2", "OF-3"), "EU/EEA only", "destinations in ledger", {"outside": 1}, "fail"
            ),
        ],
        sections=[Section("Ledger", "Balance per period.", [{"period": "2026", "ε": 1.5}])],
        charts=[Chart("Budget spent", tmp_path / "budget.png", "rolling total")],
    )


def test_html_is_self_contained(report: AuditReport) -> None:
    html = render_html(report)
    assert "data:image/png;base64," in html
    assert "src='budget.png'" not in html
    assert "1 checks pass, 1 fail" in html
    assert "AO-2, OF-3" in html
    assert not report.passed


def test_markdown_has_the_same_checks(report: AuditReport) -> None:
    md = render_markdown(report)
    assert "| AO-6 |" in md and "| AO-2, OF-3 |" in md
    assert "![Budget spent](budget.png)" in md
    assert "| 2026 | 1.5 |" in md


def test_values_are_escaped(tmp_path: Path) -> None:
    r = AuditReport("p", "<script>alert(1)</script>", str(tmp_path), "now")
    assert "<script>alert(1)</script>" not in render_html(r)


@pytest.mark.browser
def test_report_renders_in_headless_chromium(report: AuditReport, tmp_path: Path) -> None:
    if find_chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: install Debian's chromium package")
        pytest.skip("no Chromium on this machine (make test installs it where it can)")
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    counts = rendered_counts(page)
    assert counts == {"visible-checks": 2, "charts-total": 1, "charts-visible": 1}
    shot = screenshot(page, tmp_path / "shot.png", size="1000,900")
    assert shot.stat().st_size > 10_000  # a real page with text and a chart, not a blank one
