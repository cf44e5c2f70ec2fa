"""The empirical DP audit of the release mechanisms passes them and catches a broken one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segments.audit.mechanisms import (
    audit_cases,
    audit_release_mechanisms,
    release_mechanism_cases,
    unbounded_contribution_case,
)
from segments.policy import Policy

EXPECTED = (
    "customers_by_county_segment",
    "spend_by_segment",
    "category_mix",
    "monthly_category",
    "survey",
    "k-means",
)


def test_every_release_mechanism_passes_under_pure_dp() -> None:
    results = audit_release_mechanisms(Policy.load("alloffice"), trials=200)
    assert len(results) == len(EXPECTED)
    for result, name in zip(results, EXPECTED, strict=True):
        assert name in result.name
        assert result.passed, result.as_dict()
        assert result.claimed_epsilon > 0
        assert result.delta == 0.0


def test_zcdp_policy_states_epsilon_at_its_delta(tmp_path: Path) -> None:
    policy = Policy.load("allkontor")
    cases = release_mechanism_cases(policy, tmp_path, seed=np.random.default_rng(3))
    assert {c.delta for c in cases} == {float(policy.privacy.delta)}
    # ε at δ exceeds ρ: the (ε, δ) statement of a ρ-zCDP loss
    (count,) = audit_cases(cases[:1], trials=150)
    assert count.passed
    assert count.claimed_epsilon > 0.5


def test_missing_contribution_bound_is_flagged(tmp_path: Path) -> None:
    case = unbounded_contribution_case(
        Policy.load("alloffice"), tmp_path, seed=np.random.default_rng(1)
    )
    (result,) = audit_cases([case], trials=200)
    assert not result.passed
    assert result.epsilon_lower_bound > 2 * result.claimed_epsilon
    assert result.as_dict()["result"].startswith("FAIL")


def test_too_few_trials_are_refused() -> None:
    with pytest.raises(ValueError, match="trials=10 is too few"):
        audit_release_mechanisms(Policy.load("alloffice"), trials=10)


def test_statistic_refuses_a_release_without_the_heavy_cell() -> None:
    import polars as pl

    from segments.audit.mechanisms import _cell_statistic

    statistic = _cell_statistic({"county_code": {"99"}}, "count")
    assert statistic(pl.DataFrame({"county_code": ["99", "01"], "count": [3, 1]})) == 3.0
    with pytest.raises(RuntimeError, match="no cell for the heavy person's keys"):
        statistic(pl.DataFrame({"county_code": ["01"], "count": [1]}))
