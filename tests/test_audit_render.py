"""The audit report renders as self-contained HTML and Markdown, and shows in a real browser."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from segments.audit.browser import find_chromium, rendered_counts, screenshot
from segments.audit.render import (
    ORGANISATIONAL_ROLE,
    AuditReport,
    Chart,
    Check,
    ClauseView,
    Section,
    render_html,
    render_json,
    render_markdown,
)


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
                {"oldest": "2024-11-01", "cutoff": "2024-10-31", "files": ["a", "b"]},
                "pass",
                name="retention_rows",
            ),
            Check(
                ("AO-2", "AO-6"),
                "EU/EEA only",
                "destinations in ledger",
                {"outside": [{"release": "r-1", "country": "US"}]},
                "fail",
                name="destinations",
                releases=("r-1",),
            ),
            Check(
                (), "key matches", "key id", {"frames": 3}, "pass", name="key", kind="precondition"
            ),
        ],
        clauses=[
            ClauseView("AO-2", "Processed only within the EU/EEA.", "Enbart inom EU/EES."),
            ClauseView("AO-6", "Order data kept 24 months.", "24 månader efter avslutat köp."),
        ],
        not_run=["the empirical DP audit (0 trials asked)"],
        release_links={"r-1": "../releases/r-1/card.json"},
        sections=[Section("Ledger", "Balance per period.", [{"period": "2026", "ε": 1.5}])],
        charts=[Chart("Budget spent", tmp_path / "budget.png", "rolling total")],
    )


def test_html_is_self_contained(report: AuditReport) -> None:
    html = render_html(report)
    assert "data:image/png;base64," in html
    assert "src='budget.png'" not in html
    assert not report.passed


def test_checks_are_counted_once_and_the_banner_names_what_did_not_run(report: AuditReport) -> None:
    # three Check objects: two promises (one verifying two clauses) and one precondition
    assert report.counts() == {"pass": 1, "fail": 1, "inconclusive": 0, "not applicable": 0}
    banner = report.banner()
    assert banner.startswith("2 distinct checks: 1 pass, 1 fail")
    assert "1 of 1 preconditions met" in banner
    assert "not run: the empirical DP audit (0 trials asked)" in banner
    assert report.clause_verdict("AO-2") == "fail" and report.clause_verdict("AO-6") == "fail"
    html = render_html(report)
    assert banner.replace("(", "").split(".")[0] in html.replace("(", "")
    # the second clause refers to the check shown in full under the first
    assert html.count("id='check-destinations'") == 1
    assert "The same check as under AO-2" in html
    assert "<blockquote lang='sv'>“Enbart inom EU/EES.”</blockquote>" in html
    assert "href='../releases/r-1/card.json'" in html
    assert "Preconditions" in html and "not counted among" in html


def test_a_clause_resting_partly_on_an_organisational_measure_is_never_verified(
    tmp_path: Path,
) -> None:
    """AO-9 ("only people who need it have access"): the file checks pass, but who may act as
    the owner of the files is the organisation's to show; the clause reads "partly verified"."""
    files = Check(("AO-9",), "owner only", "modes", {"open": "none"}, "pass", name="access")
    people = Check(
        ("AO-9",), "who has access", "not verifiable by this tool", {}, "not applicable",
        ORGANISATIONAL_ROLE, name="access_organisational",
    )  # fmt: skip
    report = AuditReport(
        policy="alloffice",
        controller="AllOffice Nordic AB",
        workspace=str(tmp_path),
        generated_at="2026-11-22T00:00:00Z",
        checks=[files, people],
        clauses=[ClauseView("AO-9", "Only people who need it have access.", "Endast…")],
    )
    assert report.clause_verdict("AO-9") == "partly verified"
    assert "0 of 1 clauses verified, AO-9 partly (the rest is an organisational" in report.banner()
    assert "partly verified</span>" in render_html(report)
    assert "### AO-9 — partly verified" in render_markdown(report)
    assert json.loads(render_json(report))["clauses"][0]["verdict"] == "partly verified"
    # without the organisational part, the same passing check verifies the clause
    alone = AuditReport(**{**report.__dict__, "checks": [files]})
    assert alone.clause_verdict("AO-9") == "pass"


def test_an_inconclusive_check_never_verifies_its_clause(tmp_path: Path) -> None:
    """A DP audit case that could not have refuted anything at its trials (review r10a F4):
    beside a passing check, the clause reads "partly verified" with the reason, in the
    banner, the HTML, the Markdown and the JSON; alone, the clause is not verified."""
    attacks = Check(("AO-1",), "attacks fail", "replayed", {}, "pass", name="attacks")
    sequence = Check(
        ("AO-1",), "a sequence of releases", "empirical DP audit", {}, "inconclusive",
        name="dp_sequence",
    )  # fmt: skip
    report = AuditReport(
        policy="alloffice",
        controller="AllOffice Nordic AB",
        workspace=str(tmp_path),
        generated_at="2026-11-22T00:00:00Z",
        checks=[attacks, sequence],
        clauses=[ClauseView("AO-1", "Aggregates identify no one.", "Ingen kan identifieras.")],
    )
    assert report.passed  # nothing fails ...
    assert report.clause_verdict("AO-1") == "partly verified"  # ... and nothing is claimed
    assert "0 of 1 clauses verified, AO-1 partly (1 of its checks inconclusive" in report.banner()
    html = render_html(report)
    assert "partly verified</span>" in html and 'class="summary partial"' in html
    assert "Partly verified: 1 of its checks inconclusive" in html
    assert "### AO-1 — partly verified" in render_markdown(report)
    assert json.loads(render_json(report))["clauses"][0]["verdict"] == "partly verified"
    alone = AuditReport(**{**report.__dict__, "checks": [sequence]})
    assert alone.clause_verdict("AO-1") == "not verified"
    both = AuditReport(**{**report.__dict__, "checks": [attacks]})
    assert both.clause_verdict("AO-1") == "pass"


def test_the_exit_status_tells_verified_from_could_not_test(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """Review r10a F4 residual: `segments audit` exited 0 with inconclusive checks, so a CI
    job gating on it could not tell "verified" from "could not test". 0 clean, 1 a failure
    (whatever else), 3 no failure but an inconclusive check; audit.json records it and the
    CLI returns what was written, and its help lists the statuses."""
    import segments.audit.run as audit_run
    from segments.audit.render import EXIT_STATUSES
    from segments.cli.main import main

    attacks = Check(("AO-1",), "attacks fail", "replayed", {}, "pass", name="attacks")
    sequence = Check(
        ("AO-1",), "a sequence of releases", "empirical DP audit", {}, "inconclusive",
        name="dp_sequence",
    )  # fmt: skip
    broken = Check(("AO-1",), "checksums", "sha256", {}, "fail", name="release_checksums")
    base = AuditReport(
        policy="alloffice",
        controller="AllOffice Nordic AB",
        workspace=str(tmp_path),
        generated_at="2026-11-22T00:00:00Z",
        checks=[attacks],
        clauses=[ClauseView("AO-1", "Aggregates identify no one.", "Ingen kan identifieras.")],
    )
    unsure = AuditReport(**{**base.__dict__, "checks": [attacks, sequence]})
    failing = AuditReport(**{**base.__dict__, "checks": [attacks, sequence, broken]})
    assert (base.exit_status, unsure.exit_status, failing.exit_status) == (0, 3, 1)
    assert unsure.passed and unsure.inconclusive == 1  # "passed" stays "no check fails"
    # r11a F1: a clause no check verifies (the steward's checks not applicable in reviewer
    # mode) is not a clean audit either; an organisational part alone does not count
    steward = Check(("AO-7",), "erased people absent", "re-pseudonymise", {}, "not applicable")
    owner = Check(("AO-9",), "who may act as owner", "", {}, "not applicable",
                  role=ORGANISATIONAL_ROLE)  # fmt: skip
    files = Check(("AO-9",), "files owner-only", "stat", {}, "pass", name="file_modes")
    clauses = [
        *base.clauses,
        ClauseView("AO-7", "Erased people are gone.", "Raderade finns inte kvar."),
        ClauseView("AO-9", "Only those who need it have access.", "Endast behöriga."),
    ]
    reviewer = AuditReport(
        **{**base.__dict__, "checks": [attacks, steward, owner, files], "clauses": clauses}
    )
    assert reviewer.passed and reviewer.inconclusive == 0 and reviewer.unverified == ["AO-7"]
    assert reviewer.exit_status == 3
    assert json.loads(render_json(reviewer))["unverified_clauses"] == ["AO-7"]
    # r11a F4: a clause with a pass whose steward-only check did not run (reviewer's role) is
    # partly verified, never "pass", and the audit is not clean
    from segments.audit.render import NEEDS_KEY

    objectors = Check(("AO-1",), "objectors absent", "re-pseudonymise",
                      {"reason": NEEDS_KEY}, "not applicable")  # fmt: skip
    keyless = AuditReport(**{**base.__dict__, "checks": [attacks, objectors]})
    assert keyless.clause_verdict("AO-1") == "partly verified"
    assert "need the data steward's key" in keyless.banner()
    assert keyless.unverified == ["AO-1"] and keyless.exit_status == 3
    nothing = Check(("AO-1",), "no kanon release", "", {"reason": "nothing released"},
                    "not applicable")  # fmt: skip
    assert AuditReport(**{**base.__dict__, "checks": [attacks, nothing]}).exit_status == 0
    organisational = AuditReport(
        **{**reviewer.__dict__, "checks": [attacks, owner, files], "clauses": clauses[::2]}
    )
    assert organisational.clause_verdict("AO-9") == "partly verified"
    assert organisational.exit_status == 0
    assert json.loads(render_json(unsure))["exit_status"] == 3
    assert set(EXIT_STATUSES) == {0, 1, 3}
    # the command returns the status of the report it wrote
    ws = tmp_path / "ws"
    for made, code in ((base, 0), (unsure, 3), (failing, 1), (reviewer, 3)):

        def fake(workspace, *_, made=made, **__):  # writes audit.json as run_audit does
            folder = workspace.report
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "audit.json").write_text(render_json(made), encoding="utf-8")
            return made

        monkeypatch.setattr(audit_run, "run_audit", fake)
        assert main(["audit", "-w", str(ws), "--policy", "alloffice", "--dp-trials", "0"]) == code
        out = capsys.readouterr().out
        assert ("exit status 3" in out) == (code == 3)
    assert main(["audit", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "exit status: 0 clean" in shown
    assert "3 no check fails, but some are inconclusive or some clause is not verified" in shown


def test_evidence_is_a_table_not_a_blob(report: AuditReport) -> None:
    html = render_html(report)
    assert "<th scope='row'>cutoff</th><td>2024-10-31</td>" in html
    assert "<ul><li>a</li><li>b</li></ul>" in html  # a list is a list
    assert "<th>release</th><th>country</th>" in html  # records are a table
    assert "{&quot;" not in html and '{"' not in html.split("<script>")[0]


def test_json_holds_every_check_with_clause_verdict_and_evidence(report: AuditReport) -> None:
    data = json.loads(render_json(report))
    assert [c["id"] for c in data["checks"]] == ["retention_rows", "destinations", "key"]
    dest = data["checks"][1]
    assert dest["clauses"] == ["AO-2", "AO-6"] and dest["verdict"] == "fail"
    assert dest["evidence"]["outside"][0]["country"] == "US"
    assert data["clauses"][1] == {
        "id": "AO-6",
        "promise_sv": "24 månader efter avslutat köp.",
        "promise_en": "Order data kept 24 months.",
        "verdict": "fail",
        "checks": ["retention_rows", "destinations"],
        "releases": [],
    }
    assert data["counts"] == report.counts() and data["not_run"] == report.not_run


def test_markdown_has_the_same_checks(report: AuditReport) -> None:
    md = render_markdown(report)
    assert "### AO-2 — FAILS" in md and "> Enbart inom EU/EES." in md
    assert "(shown above)" in md
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
    assert counts["visible-checks"] == 4  # two in full, one reference, one precondition
    assert counts["charts-total"] == counts["charts-visible"] == 1
    assert counts["links-broken"] == 0 < counts["links-internal"]
    shot = screenshot(page, tmp_path / "shot.png", size="1000,900")
    assert shot.stat().st_size > 10_000  # a real page with text and a chart, not a blank one


def test_an_inconclusive_check_is_shown_as_such_and_never_counted_as_a_pass(
    tmp_path: Path,
) -> None:
    """An empirical DP case whose test could not have refuted its claim (no power at its
    trials) is 'inconclusive' in the counts, the banner, the HTML, the Markdown and the JSON;
    a clause resting only on it is not verified."""
    check = Check(
        ("AO-1",),
        "A population's accepted sequence of releases stays within the budget.",
        "sequence of 30 accepted releases",
        {"detects_with_95_percent": "inconclusive: consistent with the claim, but ..."},
        "inconclusive",
        name="dp_audit_person",
    )
    report = AuditReport(
        policy="alloffice",
        controller="AllOffice Nordic AB",
        workspace=str(tmp_path),
        generated_at="2026-11-22T00:00:00Z",
        checks=[check],
        clauses=[ClauseView("AO-1", "Statistics identify no one.", "Ingen kan identifieras.")],
    )
    assert report.passed  # not a failure ...
    assert report.counts() == {"pass": 0, "fail": 0, "inconclusive": 1, "not applicable": 0}
    assert report.clause_verdict("AO-1") == "not verified"  # ... and not a pass either
    assert "1 inconclusive" in report.banner()
    html = render_html(report)
    assert "<span class='na'>inconclusive</span>" in html
    assert "**inconclusive**" in render_markdown(report)
    data = json.loads(render_json(report))
    assert data["counts"]["inconclusive"] == 1
    assert [c["verdict"] for c in data["checks"]] == ["inconclusive"]
