"""The DP-audit chart shows the releases at their ledger's ε, apart from the fixed-ε self-test."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg

from segments.audit.dp_audit import detectable_violation
from segments.audit.plots import dp_audit_chart, dp_audit_figure


def _record(name: str, kind: str | None, claimed: float, bound: float) -> dict:
    evidence = {"claimed_epsilon": claimed, "epsilon_lower_bound": bound, "trials_per_dataset": 200}
    record = {"name": name, "clause": "AO-1", "verdict": "pass", "evidence": evidence}
    return record if kind is None else record | {"kind": kind}


RECORDS = [
    _record("customers per county × segment (customers_by_county_segment)", "mechanism", 1.0, 0.0),
    _record(
        "segment_overview: customers_by_county without the heaviest buyer", "release", 0.0946, 0
    ),
    _record("monthly_category: monthly_category without the heaviest buyer", "release", 0.1424, 0),
    _record("BROKEN control: county × segment count", "control", 1.0, 3.28),
    _record("sequence of 35 accepted releases", "sequence", 4.0, 0.0),
    {"name": "budget of customers", "kind": "budget", "verdict": "pass", "evidence": {}},
]


def test_releases_are_shown_at_their_own_epsilon_apart_from_the_fixed_self_test() -> None:
    fig = dp_audit_figure(RECORDS)
    top, bottom = fig.axes
    assert "at the ε their ledger entries state" in top.get_title(loc="left")
    assert "fixed test settings" in bottom.get_title(loc="left")
    assert "not the releases'" in bottom.get_title(loc="left")
    top_labels = " ".join(t.get_text().replace("\n", " ") for t in top.get_yticklabels())
    assert "customers_by_county without" in top_labels and "[control]" in top_labels
    assert "[sequence]" in top_labels and "budget" not in top_labels
    assert "customers_by_county_segment" in bottom.get_yticklabels()[0].get_text()
    # each bar pair is labelled with its numbers and the audit's power at those trials
    notes = [t.get_text() for t in top.texts]
    assert any("claim 0.0946 · bound 0 · not refuted" in n for n in notes)
    power = detectable_violation(200, 0.0946)
    assert any(f"detects ≥ {power:.3g}× the claim (95 %, 200 trials)" in n for n in notes)
    assert any("claim 1 · bound 3.28 · refuted" in n for n in notes)
    # the claimed bars are the ledger's ε, not the self-test's 1 / 0.5 / ...
    claimed = sorted(round(b.get_width(), 4) for b in top.patches[: len(top.get_yticks())])
    assert claimed == [0.0946, 0.1424, 1.0, 4.0]
    # a lower bound of 0 stays visible: a marker is drawn at it, not only a zero-width bar
    markers = [line for line in top.lines if line.get_marker() == "D"]
    assert markers and 0.0 in list(markers[0].get_xdata())


def test_the_chart_is_written_as_a_png(tmp_path: Path) -> None:
    path = dp_audit_chart(RECORDS, tmp_path / "dp_audit.png")
    image = mpimg.imread(path)
    assert image.shape[0] > 500 and image.shape[1] > 800
    assert (image[..., :3] < 0.9).any()  # something was drawn


def test_the_few_records_at_the_highest_risk_stay_visible(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Ten records in classes of exactly k beside 3,200 safer ones: a linear axis draws them
    one pixel high; the risk chart uses a log axis and names the highest risk and its count."""
    import polars as pl
    from matplotlib.figure import Figure

    import segments.audit.plots as plots
    from segments import Policy

    sizes = pl.Series([10] * 10 + [50] * 2000 + [120] * 1200)
    monkeypatch.setattr(plots, "_class_sizes", lambda ctx: {"kanon-x": sizes})
    drawn: list[Figure] = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig) or path)
    ctx = type("Ctx", (), {"policy": Policy.load("alloffice")})()
    charts = plots.kanon_charts(ctx, tmp_path)  # type: ignore[arg-type]
    assert [c.title for c in charts][1] == "Re-identification risk distribution"
    (ax,) = drawn[1].axes
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.texts] == ["highest 0.1: 10 records"]
    tallest_at_risk = max(p.get_height() for p in ax.patches if p.get_x() > 0.09)
    assert tallest_at_risk == 10
