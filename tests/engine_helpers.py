"""Test helpers for the DuckDB engine's per-person aggregate."""

from __future__ import annotations

import pytest

from segments.engine import embedded
from segments.engine.embedded import DuckDBEngine


def record_aggregate_plans(monkeypatch: pytest.MonkeyPatch) -> list[embedded.AggregatePlan]:
    """Run DuckDB's per-person aggregate as usual, recording the plan (threads, passes) of
    every attempt, retries included, in the returned list."""
    plans: list[embedded.AggregatePlan] = []
    aggregate = DuckDBEngine._aggregate
    monkeypatch.setattr(
        DuckDBEngine,
        "_aggregate",
        lambda self, con, q, slots, params, plan: (
            plans.append(plan) or aggregate(self, con, q, slots, params, plan)
        ),
    )
    return plans
