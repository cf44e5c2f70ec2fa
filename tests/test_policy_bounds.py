"""Bounds for another business chosen privately (DP quantiles), charged to the ledger."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from segments.exceptions import BudgetExceededError, PolicyError
from segments.policy import Policy
from segments.privacy.ledger import Ledger
from segments.privacy.policy_bounds import BOUNDED_QUANTITIES, choose_policy_bounds
from segments.workspace import Workspace

POLICY = Path(__file__).resolve().parents[1] / "examples" / "cdnow" / "policy.toml"
CEILINGS = {
    "spend_bound_sek": 1e6,
    "cell_spend_bound_sek": 1e5,
    "cell_units_bound": 1e4,
    "feature_bounds.frequency_orders": 1e4,
    "feature_bounds.avg_basket_sek": 1e5,
}


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    rng = np.random.default_rng(3)
    n = 4000
    persons = [f"{i:016x}" for i in range(n)]
    orders = rng.integers(1, 6, n)
    rows = []
    for p, k in zip(persons, orders, strict=True):
        for o in range(int(k)):
            units = int(rng.integers(1, 30))
            amount = float(units * rng.lognormal(4.5, 0.5))  # spread values, no point masses
            rows.append((p, f"{p}{o:04d}", dt.date(2024, 1 + o, 3), "music", units, amount))
    lines = pl.DataFrame(
        rows,
        schema=["person_id", "order_id", "order_date", "category", "quantity", "amount_sek"],
        orient="row",
    )
    ws = Workspace(tmp_path / "ws")
    ws.prepared_dir("statistics").mkdir(parents=True)
    lines.write_parquet(ws.prepared_dir("statistics") / "lines.parquet")
    return ws


def _choose(ws: Workspace, ledger: Ledger, **kw: object) -> object:
    args = {
        "purpose": "statistics",
        "recipient": "analytics",
        "as_of": dt.date(2024, 7, 1),
        "epsilon": 2.5,
        "ceilings": CEILINGS,
        "quantile": 0.9,
        **kw,
    }
    return choose_policy_bounds(ws, Policy.load(POLICY), ledger, **args)  # type: ignore[arg-type]


def test_bounds_near_the_true_quantile_and_charged(workspace: Workspace, tmp_path: Path) -> None:
    policy = Policy.load(POLICY)
    ledger = Ledger.open(tmp_path / "l.sqlite", policy.controller, policy=policy, init=True)
    result = _choose(workspace, ledger)
    lines = pl.read_parquet(workspace.prepared_dir("statistics") / "lines.parquet")
    people = lines.group_by("person_id").agg(
        pl.col("amount_sek").sum(), pl.col("amount_sek").max().alias("cell")
    )
    # OpenDP's noise cannot be seeded: a generous band around the true 90th percentiles
    for key, column in (("spend_bound_sek", "amount_sek"), ("cell_spend_bound_sek", "cell")):
        truth = float(people[column].quantile(0.9))
        assert 0.7 * truth <= result.bounds[key] <= 1.5 * truth, (key, truth)
    assert set(result.bounds) == set(BOUNDED_QUANTITIES)
    entries = ledger.entries()
    assert [e.release_id for e in entries] == [result.release_id]
    assert entries[0].request.epsilon == pytest.approx(2.5)
    assert "[privacy.feature_bounds]" in result.toml()


def test_missing_public_ceiling_refused_before_charging(
    workspace: Workspace, tmp_path: Path
) -> None:
    policy = Policy.load(POLICY)
    ledger = Ledger.open(tmp_path / "l.sqlite", policy.controller, policy=policy, init=True)
    ceilings = {k: v for k, v in CEILINGS.items() if k != "cell_units_bound"}
    with pytest.raises(PolicyError, match="cell_units_bound"):
        _choose(workspace, ledger, ceilings=ceilings)
    assert ledger.entries() == []


def test_over_budget_refused_by_the_ledger(workspace: Workspace, tmp_path: Path) -> None:
    policy = Policy.load(POLICY)
    ledger = Ledger.open(tmp_path / "l.sqlite", policy.controller, policy=policy, init=True)
    with pytest.raises(BudgetExceededError):
        _choose(workspace, ledger, epsilon=policy.privacy.budget_epsilon * 2)
    assert not list((workspace.root / "releases").glob("policy-bounds-*/bounds.json"))
