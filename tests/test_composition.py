"""Privacy accounting: composition of pure ε, zCDP ρ and approximate (ε, δ); rolling periods."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segments.privacy.composition import (
    PrivacyLoss,
    add_months,
    compose,
    epsilon_to_rho,
    in_period,
    max_period_total,
    peak_period_total,
    period_start,
    pure_to_rho,
    rho_to_epsilon,
)

DELTA = 1e-6


def test_pure_entries_add_in_epsilon_exactly():
    total = compose([PrivacyLoss(epsilon=e) for e in (0.7, 0.2, 0.1)])
    assert total.epsilon == 1.0  # fsum: an exactly spent budget is not a float overshoot
    assert total.delta == 0.0
    assert total.rho is None
    assert total.family == "pure"
    assert "pure" in total.describe()


def test_zcdp_entries_add_in_rho_and_state_epsilon_at_delta():
    total = compose([PrivacyLoss(rho=0.01, delta=DELTA), PrivacyLoss(rho=0.02)], delta=DELTA)
    assert total.rho == pytest.approx(0.03)
    assert total.epsilon == pytest.approx(0.03 + 2 * math.sqrt(0.03 * math.log(1 / DELTA)))
    assert total.delta == DELTA
    assert total.family == "zcdp"


def test_mixing_converts_pure_to_rho_and_keeps_the_smaller_sound_epsilon():
    losses = [PrivacyLoss(epsilon=0.05), PrivacyLoss(epsilon=0.05), PrivacyLoss(rho=0.02)]
    total = compose(losses, delta=DELTA)
    assert total.rho is not None
    assert total.rho == pytest.approx(0.02 + 2 * 0.05**2 / 2)
    all_in_rho = rho_to_epsilon(total.rho, DELTA)
    pure_apart = 0.1 + rho_to_epsilon(0.02, DELTA)
    assert total.epsilon == pytest.approx(min(all_in_rho, pure_apart))
    assert total.family == "mixed"
    # With large pure parts the conversion to ρ is the tighter statement, and it is chosen.
    big = compose([PrivacyLoss(epsilon=0.01)] * 200 + [PrivacyLoss(rho=0.001)], delta=DELTA)
    assert big.epsilon == pytest.approx(rho_to_epsilon(0.001 + 200 * 0.01**2 / 2, DELTA))
    assert big.epsilon < 2.0 + rho_to_epsilon(0.001, DELTA)


def test_approximate_entries_add_by_basic_composition():
    total = compose([PrivacyLoss(epsilon=0.5, delta=1e-7), PrivacyLoss(epsilon=0.25)])
    assert total.epsilon == 0.75
    assert total.delta == 1e-7


def test_k_anonymous_entries_charge_nothing_but_are_counted():
    total = compose([PrivacyLoss(), PrivacyLoss(epsilon=0.3)])
    assert (total.n_releases, total.n_charged, total.epsilon) == (2, 1, 0.3)
    assert compose([PrivacyLoss()]).family == "none"


def test_zcdp_without_delta_is_refused():
    with pytest.raises(ValueError, match="delta is needed to compare zCDP"):
        compose([PrivacyLoss(rho=0.1)])
    with pytest.raises(ValueError, match=r"delta=0.0 must lie in \(0, 1\)"):
        rho_to_epsilon(0.1, 0.0)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("epsilon", -0.1, "epsilon=-0.1 must be a finite number"),
        ("rho", math.inf, "rho=inf must be a finite number"),
        ("delta", 1.0, "delta=1.0 must be < 1"),
    ],
)
def test_invalid_losses_are_refused(field, value, match):
    with pytest.raises(ValueError, match=match):
        PrivacyLoss(**{field: value})


def test_conversions():
    assert pure_to_rho(0.2) == pytest.approx(0.02)
    rho = epsilon_to_rho(3.0, 1e-7)
    assert rho_to_epsilon(rho, 1e-7) == pytest.approx(3.0, rel=1e-12)
    assert rho_to_epsilon(rho * 1.001, 1e-7) > 3.0


def test_months_and_periods():
    assert add_months(dt.date(2024, 3, 31), -1) == dt.date(2024, 2, 29)
    assert add_months(dt.date(2025, 12, 15), 1) == dt.date(2026, 1, 15)
    assert add_months(dt.date(2025, 1, 31), -13) == dt.date(2023, 12, 31)
    assert period_start(dt.date(2026, 6, 30), 12) == dt.date(2025, 6, 30)
    end = dt.date(2026, 6, 30)
    assert not in_period(dt.date(2025, 6, 30), end, 12)  # the start is excluded
    assert in_period(dt.date(2025, 7, 1), end, 12)
    assert in_period(end, end, 12)
    assert not in_period(dt.date(2026, 7, 1), end, 12)
    with pytest.raises(ValueError, match="at least 1 month"):
        period_start(end, 0)


def test_max_period_total_looks_at_later_periods_too():
    # A backfilled release dated before an existing one shares later periods with it.
    existing = (dt.date(2026, 6, 30), PrivacyLoss(epsilon=0.8))
    new = (dt.date(2025, 9, 30), PrivacyLoss(epsilon=0.5))
    end, total = max_period_total([existing, new], new[0], 12)
    assert end == dt.date(2026, 6, 30)
    assert total.epsilon == pytest.approx(1.3)
    # Twelve months apart, they never share a period.
    far = (dt.date(2025, 6, 30), PrivacyLoss(epsilon=0.5))
    end, total = max_period_total([existing, far], far[0], 12)
    assert total.epsilon == 0.5


losses = st.one_of(
    st.builds(PrivacyLoss, epsilon=st.floats(0, 2)),
    st.builds(PrivacyLoss, rho=st.floats(0, 0.5), delta=st.just(DELTA)),
    st.just(PrivacyLoss()),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(losses, max_size=8), losses)
def test_adding_a_release_never_lowers_the_total(before, extra):
    first = compose(before, delta=DELTA)
    second = compose([*before, extra], delta=DELTA)
    assert second.epsilon >= first.epsilon - 1e-12
    # Each statement is at least as large as its largest part: nothing is composed away.
    for loss in [*before, extra]:
        own = compose([loss], delta=DELTA).epsilon
        assert second.epsilon >= own - 1e-12


@settings(max_examples=60, deadline=None)
@given(st.floats(0.01, 10), st.sampled_from([1e-5, 1e-6, 1e-7, 1e-9]))
def test_rho_budget_is_the_inverse_of_the_conversion(epsilon, delta):
    assert rho_to_epsilon(epsilon_to_rho(epsilon, delta), delta) == pytest.approx(epsilon)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 900), st.floats(0, 1)), max_size=15))
def test_peak_period_total_matches_a_brute_force_recount(items):
    base = dt.date(2024, 1, 31)
    dated = [(base + dt.timedelta(days=d), PrivacyLoss(epsilon=e)) for d, e in items]
    until = base + dt.timedelta(days=700)
    end, peak = peak_period_total(dated, 12, until)
    brute = max(
        (
            math.fsum(loss.epsilon or 0 for day, loss in dated if in_period(day, s, 12))
            for s, _ in dated
            if s <= until
        ),
        default=0.0,
    )
    assert peak.epsilon == brute
    assert (end is None) == (brute == 0.0 and not any(d <= until for d, _ in dated))
