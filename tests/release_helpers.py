"""Test helpers for releases: the release context a test charges, and a plan's measurements
run outside any ledger (for calibration tests only; no library code releases without one)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import polars as pl

from segments.policy import Policy
from segments.privacy.ledger import Ledger
from segments.privacy.publishing import ReleaseContext
from segments.privacy.releases import ReleasePlan, _run_query
from segments.workspace import Workspace


def release_context(
    ledger: Ledger | Callable[[], Ledger],
    workspace: Workspace | str,
    policy: Policy | str,
    *,
    purpose: str,
    recipient: str,
    destination: str = "SE",
    synthetic: bool | None = None,
    clause_ids: Sequence[str] | None = None,
) -> ReleaseContext:
    """The release context of a test: :meth:`ReleaseContext.open`, the one constructor."""
    return ReleaseContext.open(
        ledger,
        workspace,
        policy,
        purpose=purpose,
        recipient=recipient,
        destination=destination,
        synthetic=synthetic,
        clause_ids=clause_ids,
    )


def run_unaccounted(plan: ReleasePlan) -> dict[str, pl.DataFrame]:
    """Run every measurement of ``plan`` once, outside any ledger (raw noisy answers), for
    calibration tests and benchmarks on synthetic data; the release path is
    :meth:`ReleasePlan.execute`, which needs a ledger."""
    return {
        q.query.name: _run_query(q)
        if q.vector is not None
        else q.measurement(pl.scan_parquet(q.data_path)).collect()
        for q in plan.queries
    }
