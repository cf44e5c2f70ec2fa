"""The audit's charts: privacy loss against the budget, class sizes and re-identification
risk of the k-anonymous releases, and the empirical DP audit.

Each chart is recomputed from what the audit read (ledger entries, released files, the DP
audit's records) and written as a PNG into the report folder; :mod:`segments.audit.run`
places them in the report.
"""

from __future__ import annotations

import datetime as dt
import io
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from matplotlib.figure import Figure

from segments.audit.checks import spending
from segments.audit.context import AuditContext, release_type
from segments.audit.render import Chart
from segments.privacy.composition import DPFamily
from segments.workspace import CERTIFICATE, atomic_write

__all__ = ["budget_chart", "dp_audit_chart", "dp_audit_figure", "kanon_charts"]


def _save(fig: Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    with atomic_write(path, "wb") as fh:
        fh.write(buf.getvalue())
    return path


def budget_chart(ctx: AuditContext, folder: Path) -> Chart | None:
    """The privacy loss per month by release type, and each rolling period's total against
    the budget, recomputed from the ledger entries (None without a ledger or releases)."""
    if ctx.ledger is None:
        return None
    frame = spending(ctx)
    if frame.is_empty():
        return None
    import numpy as np

    p = ctx.policy.privacy
    pure = p.dp_family == DPFamily.PURE
    unit = "ε" if pure else "ρ"
    fig = Figure(figsize=(12, 4.2))
    left, right = fig.subplots(1, 2)
    # left: what each month's releases charged, stacked by release type
    types = {e.release_id: release_type(e) for e in ctx.entries()}
    per = frame.with_columns(
        pl.col("release_id").replace_strict(types, default="other").alias("type"),
        pl.col("date").dt.truncate("1mo").alias("month"),
        pl.col("epsilon" if pure else "rho").alias("charge"),
    )
    months = sorted(per["month"].unique().to_list())
    x = np.arange(len(months))
    bottom = np.zeros(len(months))
    for name in sorted(per["type"].unique().to_list()):
        part = per.filter(pl.col("type") == name).group_by("month").agg(pl.col("charge").sum())
        by_month = dict(zip(part["month"].to_list(), part["charge"].to_list(), strict=True))
        heights = np.array([by_month.get(m, 0.0) for m in months])
        left.bar(x, heights, 0.8, bottom=bottom, label=name)
        bottom += heights
    step = max(1, len(months) // 12)
    left.set_xticks(x[::step], [m.strftime("%Y-%m") for m in months][::step], rotation=45)
    left.set_title(f"{unit} charged per month (as-of month), by release type")
    left.set_ylabel(unit)
    left.legend(fontsize=8)
    # right: the rolling period's total at each release, against the budget
    for population, part in frame.group_by("population", maintain_order=True):
        right.plot(
            part["date"].to_list(),
            part["period_epsilon"].to_list(),
            "o-",
            ms=4,
            label=f"{population[0]}: rolling total",
        )
    right.axhline(
        p.budget_epsilon, color="tab:red", linestyle="--", label=f"budget ε = {p.budget_epsilon:g}"
    )
    top = max(p.budget_epsilon, float(frame["period_epsilon"].fill_nan(0.0).max() or 0.0))  # type: ignore[arg-type]
    right.set_ylim(0, top * 1.15)
    first, last = frame["date"].min(), frame["date"].max()
    if first == last:  # one release day: a year around it, not matplotlib's default decade
        right.set_xlim(first - dt.timedelta(days=183), last + dt.timedelta(days=183))  # type: ignore[operator]
    right.set_title(f"ε of the {p.budget_period_months}-month period ending at each release")
    right.set_ylabel("ε" + ("" if pure else f" at δ = {p.delta:g}"))
    right.legend(fontsize=8)
    right.tick_params(axis="x", labelrotation=45)
    fig.tight_layout()
    path = _save(fig, folder / "budget.png")
    return Chart(
        "Privacy budget",
        path,
        f"Recomputed from the ledger entries. Left: the loss of each month's releases by type. "
        f"Right: the total of the rolling {p.budget_period_months}-month period, which the "
        f"budget (ε = {p.budget_epsilon:g}) bounds.",
    )


def _class_sizes(ctx: AuditContext) -> dict[str, pl.Series]:
    out = {}
    for path, cert in ctx.cards():
        if path.name == CERTIFICATE:
            try:
                table = pl.read_parquet(path.parent / "table.parquet")
            except Exception:  # unreadable: the checks fail it; there is nothing to draw
                continue
            qis = list(cert["quasi_identifiers"])
            # one value per released record: the size of its equivalence class
            out[str(cert["release_id"])] = table.select(pl.len().over(qis).alias("n"))["n"]
    return out


def _histogram_per_release(
    values: Mapping[str, Any], line: tuple[float, str], xlabel: str, ylabel: str
) -> tuple[Figure, Any]:
    """One histogram per release on shared axes, with the policy's threshold ``line``
    (value, label) dashed in red."""
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    for rid, release_values in values.items():
        ax.hist(release_values, bins=30, alpha=0.6, label=rid)
    ax.axvline(line[0], color="tab:red", linestyle="--", label=line[1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    return fig, ax


def kanon_charts(ctx: AuditContext, folder: Path) -> list[Chart]:
    """Class sizes and the prosecutor re-identification risk of every k-anonymous release,
    recounted from the released tables ([] without one)."""
    per_record = _class_sizes(ctx)
    if not per_record:
        return []
    k = ctx.policy.privacy.min_k
    fig, _ = _histogram_per_release(
        {rid: sizes.to_numpy() for rid, sizes in per_record.items()},
        (k, f"min k = {k}"),
        "size of the record's equivalence class",
        "records",
    )
    sizes_chart = Chart(
        "Class sizes of the k-anonymous releases",
        _save(fig, folder / "class_sizes.png"),
        "Recounted from the released files.",
    )
    risks = {rid: (1.0 / sizes.cast(pl.Float64)).to_numpy() for rid, sizes in per_record.items()}
    fig, ax = _histogram_per_release(
        risks,
        (1 / k, f"1/min k = {1 / k:.3g}"),
        "prosecutor re-identification risk of a record (1 / class size)",
        "records (log scale)",
    )
    for risk in risks.values():
        worst = float(risk.max())  # the worst-off records: marked, however few they are
        ax.plot([worst], [1], "v", ms=7, color="black", clip_on=False)
        note = f"highest {worst:.3g}: {int((risk == worst).sum())} records"
        ax.annotate(note, (worst, 1), xytext=(-4, 10), textcoords="offset points", ha="right",
                    fontsize=8)  # fmt: skip
    ax.set_yscale("log")  # a handful of records at the highest risk stay visible
    risk_chart = Chart(
        "Re-identification risk distribution",
        _save(fig, folder / "risk.png"),
        "Risk against an attacker who knows a record is in the release (records on a log "
        "scale, so the few at the highest risk stay visible; the triangle marks the highest).",
    )
    return [sizes_chart, risk_chart]


_AUDIT_PANELS = (
    (
        ("release", "control", "sequence"),
        "The releases in this workspace, at the ε their ledger entries state "
        "(neighbours differ by one person in the raw data)",
    ),
    (
        ("mechanism",),
        "Mechanism self-test at fixed test settings (ε chosen for the test, not the releases')",
    ),
)


def dp_audit_chart(records: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Draw :func:`dp_audit_figure` into the PNG at ``path``."""
    return _save(dp_audit_figure(records), path)


def dp_audit_figure(records: Sequence[Mapping[str, Any]]) -> Figure:
    """The empirical DP audit as two labelled panels, every bar and its power written out.

    Top: the person-level audit of the workspace's own releases at the ε their ledger entries
    state, the deliberately broken controls (which must be refuted) and each population's
    accepted sequence. Bottom: the mechanism self-test at fixed ε. Each row shows the claimed
    ε and the empirical lower bound as bars (a diamond marks the lower bound, so a zero stays
    visible) and, at the right, the numbers and the audit's power: the smallest true ε, as a
    multiple of the claim, that it detects with 95 % probability.

    Parameters
    ----------
    records : sequence of mapping
        The records of ``dp_audit.json`` (``name``, ``kind``, ``verdict``, ``evidence``);
        records without a claimed ε (the budget rows) are left out.
    """
    import numpy as np

    from segments.audit.dp_audit import detectable_violation

    panels = []
    for kinds, heading in _AUDIT_PANELS:
        rows = [
            r
            for r in records
            if r.get("kind", "mechanism") in kinds and "claimed_epsilon" in r["evidence"]
        ]
        if rows:
            panels.append((heading, rows))
    heights = [sum(0.6 + 0.18 * _wrapped(r).count("\n") for r in rows) for _, rows in panels]
    height = 1.0 + sum(heights) + 0.9 * len(panels)
    fig = Figure(figsize=(10.5, height))
    axes = fig.subplots(len(panels) or 1, 1, height_ratios=heights or None, squeeze=False)[:, 0]
    for ax, (heading, rows) in zip(axes, panels, strict=False):
        y = np.arange(len(rows))[::-1].astype(float)
        claimed = [float(r["evidence"]["claimed_epsilon"]) for r in rows]
        lower = [max(float(r["evidence"]["epsilon_lower_bound"]), 0.0) for r in rows]
        ax.barh(y + 0.18, claimed, 0.34, color="tab:blue", label="claimed ε (ledger / test)")
        ax.barh(y - 0.18, lower, 0.34, color="tab:orange", label="empirical lower bound")
        ax.plot(lower, y - 0.18, "D", ms=4, color="tab:orange", clip_on=False)
        for yi, r, c, lo in zip(y, rows, claimed, lower, strict=True):
            trials = int(r["evidence"].get("trials_per_dataset", 0))
            confidence = float(r["evidence"].get("confidence", 0.95))
            copies = int(r["evidence"].get("copies_composed", 1))
            power = (
                detectable_violation(trials, c, confidence=confidence, copies=copies)
                if trials and c > 0
                else float("inf")
            )
            detects = f"detects ≥ {power:.3g}× the claim" if np.isfinite(power) else "no power"
            verdict = (
                "refuted" if lo > c else "not refuted" if np.isfinite(power) else "inconclusive"
            )
            ax.text(
                1.01,
                yi,
                f"claim {c:.3g} · bound {lo:.3g} · {verdict}\n{detects} (95 %, {trials} trials)",
                transform=ax.get_yaxis_transform(),
                va="center",
                fontsize=8.5,
            )
        ax.set_yticks(y, [_wrapped(r) for r in rows], fontsize=8.5)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_xlim(0, max([*claimed, *lower, 1e-9]) * 1.05)
        ax.set_xlabel("ε")
        ax.set_title(heading, fontsize=10, loc="left")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=9)
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1))
    return fig


def _wrapped(record: Mapping[str, Any]) -> str:
    prefix = {"control": "[control] ", "sequence": "[sequence] "}.get(record.get("kind", ""), "")
    return "\n".join(textwrap.wrap(prefix + str(record["name"]), 40))
