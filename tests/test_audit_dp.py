"""The empirical DP audit passes sound OpenDP mechanisms and catches a broken one."""

from __future__ import annotations

import math

import numpy as np
import opendp.prelude as dp
import pytest
from scipy import stats

from segments.audit.dp_audit import (
    DpAuditResult,
    _lower_bounds,
    audit_mechanism,
    epsilon_lower_bound,
)

dp.enable_features("contrib")


def _bounded_sum(upper: float, scale: float) -> dp.Measurement:
    domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    return (
        dp.t.make_clamp(domain, dp.symmetric_distance(), bounds=(0.0, upper))
        >> dp.t.then_sum()
        >> dp.m.then_laplace(scale=scale)
    )


def test_sound_mechanism_passes() -> None:
    meas = _bounded_sum(10.0, 10.0)
    claimed = meas.map(1)
    result = audit_mechanism(
        "sum", meas, [1.0] * 30 + [10.0], [1.0] * 30, claimed_epsilon=claimed, trials=2000
    )
    assert claimed == pytest.approx(1.0, rel=1e-6)
    assert result.passed
    assert 0.0 <= result.epsilon_lower_bound <= claimed


def test_missing_contribution_bound_is_flagged() -> None:
    # noise calibrated for a bound of 10, but nothing clamps the heavy person's 1000
    broken = _bounded_sum(1e6, 10.0)
    result = audit_mechanism(
        "sum without bound",
        broken,
        [1.0] * 30 + [1000.0],
        [1.0] * 30,
        claimed_epsilon=1.0,
        trials=1000,
    )
    assert not result.passed
    assert result.epsilon_lower_bound > 3
    assert result.as_dict()["result"].startswith("FAIL")


def test_identical_distributions_give_small_bound() -> None:
    rng = np.random.default_rng(1)
    lb, _, _ = epsilon_lower_bound(rng.laplace(size=4000), rng.laplace(size=4000))
    assert lb < 0.25


def test_delta_loosens_the_bound() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.5, 1, 4000), rng.normal(0, 1, 4000)
    strict, _, _ = epsilon_lower_bound(a, b)
    loose, _, _ = epsilon_lower_bound(a, b, delta=0.05)
    assert loose < strict


def test_releases_audited_together_keep_the_confidence_as_a_family() -> None:
    # dozens of releases are audited at once: each is tested at the family's Bonferroni
    # confidence, and the power each row states is the power at that confidence
    from segments.audit.dp_audit import family_confidence
    from segments.audit.mechanisms import MechanismCase, audit_cases

    rng = np.random.default_rng(20261204)  # simulated releases (numpy), to test the auditor

    def exactly_at_its_claim(data: str) -> float:
        return (1.0 if data == "D" else 0.0) + rng.laplace(scale=1.0)

    cases = [
        MechanismCase(f"sound {i}", exactly_at_its_claim, "D", "D'", 1.0, 0.0, float)
        for i in range(40)
    ]
    together = audit_cases(cases, trials=600)
    assert all(r.passed for r in together)
    assert [r.confidence for r in together] == pytest.approx([family_confidence(0.95, 40)] * 40)
    alone = audit_cases(cases[:1], trials=600)[0]
    assert alone.confidence == pytest.approx(0.95)
    assert together[0].power > alone.power
    assert (
        f"confidence {together[0].confidence:.4g}"
        in together[0].record("X")["evidence"]["detects_with_95_percent"]
    )


def test_a_release_no_audit_of_this_size_can_catch_says_so() -> None:
    """At ε = 0.02 and 200 trials no violation is caught 95 % of the time: the report says
    that in words instead of 'inf x the claim'."""
    weak = DpAuditResult("tiny ε", 0.02, 0.0, 0.0, 0.9975, 200, 0.0, ">")
    strong = DpAuditResult("ε = 1", 1.0, 0.0, 0.0, 0.9975, 200, 0.0, ">")
    assert weak.record("X")["evidence"]["detects_with_95_percent"].startswith(
        "inconclusive: consistent with the claim, but this test cannot refute it: no "
        "violation of any size"
    )
    assert strong.record("X")["evidence"]["detects_with_95_percent"].startswith("a true ε of ")
    # a test that could not have failed does not pass (h14a: the sequence case read "pass")
    assert weak.passed and weak.verdict == "inconclusive"
    assert weak.record("X")["verdict"] == "inconclusive"
    assert weak.as_dict()["result"].startswith("INCONCLUSIVE")
    assert strong.verdict == "pass" and strong.record("X")["verdict"] == "pass"
    refuted = DpAuditResult("refuted", 0.02, 0.0, 0.5, 0.9975, 200, 0.0, ">")
    assert refuted.verdict == "fail"


def test_a_sequence_is_calibrated_on_the_sum_of_its_copies() -> None:
    """The sequence case sums its copies' statistics: the sum of k Laplace noises has thin
    tails, so the same composed claim is far harder to refute than one release at that ε
    (the single-release calibration overstated the sequence's power), and beyond a composed
    claim of about ln(trials) nothing is refuted at all."""
    from segments.audit.dp_audit import detectable_violation

    one = detectable_violation(200, 1.0)
    eight = detectable_violation(200, 1.0, copies=8)
    assert 1.0 < one < eight < math.inf
    assert detectable_violation(200, 4.0, copies=30) == math.inf
    composed = DpAuditResult("seq", 4.0, 0.0, 0.0, 0.998, 200, 0.0, ">", copies=30)
    assert composed.verdict == "inconclusive"
    assert "the sum of 30 Laplace releases" in composed.power_statement()
    assert composed.record("X")["evidence"]["copies_composed"] == 30


def test_the_stated_power_holds_when_measured_on_opendp_releases() -> None:
    # issue 13: the Laplace model stated factors the real test reached in only 35–66 % of
    # runs. A release whose true ε is the stated factor x the claim must be refuted by the
    # real test in about 95 % of audits (OpenDP noise: statistical, with a margin for 250
    # audits), and one at 60 % of that factor must not be caught that often (not vacuous).
    import opendp.prelude as dp

    from segments.audit.dp_audit import detectable_violation

    dp.enable_features("contrib")
    trials, claimed, audits = 200, 1.0, 250
    factor = detectable_violation(trials, claimed)
    assert 1.5 < factor < 5.0

    def refuted_share(true_epsilon: float) -> float:
        space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l1_distance(T=float)
        laplace = dp.m.make_laplace(*space, scale=1.0 / true_epsilon)
        # one OpenDP call per side gives every audit's independent draws
        on_d = np.asarray(laplace([1.0] * (trials * audits))).reshape(audits, trials)
        on_neighbour = np.asarray(laplace([0.0] * (trials * audits))).reshape(audits, trials)
        hits = sum(
            epsilon_lower_bound(a, b)[0] > claimed for a, b in zip(on_d, on_neighbour, strict=True)
        )
        return hits / audits

    assert refuted_share(factor * claimed) >= 0.91  # P(< 0.91 | rate 0.95) ≈ 0.2 %
    assert refuted_share(0.6 * factor * claimed) < 0.9


def test_the_power_calibration_is_a_pure_function_of_its_arguments() -> None:
    from segments.audit.dp_audit import _bound_quantile, detectable_violation

    first = detectable_violation(200, 1.5, confidence=0.99)
    detectable_violation.cache_clear()
    _bound_quantile.cache_clear()
    assert detectable_violation(200, 1.5, confidence=0.99) == first
    # more trials or a looser confidence detect smaller violations; no power at ε = 0
    assert detectable_violation(800, 1.5, confidence=0.99) < first
    assert detectable_violation(200, 1.5, confidence=0.95) <= first
    assert detectable_violation(200, 0.0) == float("inf")


def test_the_batched_test_is_the_per_audit_test_to_the_bit() -> None:
    # the power calibration runs 400 simulated audits in one numpy pass; each must give what
    # the test gives on its own (continuous and tied outputs, δ > 0, Bonferroni confidence)
    from segments.audit.dp_audit import _CALIBRATION_REPS, _bound_quantile, _calibration_noise

    rng = np.random.default_rng(7)
    for n, delta, confidence in ((200, 0.0, 0.95), (61, 1e-3, 0.998), (500, 0.05, 0.99)):
        a = np.round(rng.laplace(0.7, 1.0, (30, n)), 1)  # ties: a discrete release
        b = np.round(rng.laplace(0.0, 1.0, (30, n)), 1)
        single = [
            epsilon_lower_bound(x, y, delta=delta, confidence=confidence)
            for x, y in zip(a, b, strict=True)
        ]
        bounds, thresholds, above = _lower_bounds(a, b, delta, confidence)
        assert bounds == [s[0] for s in single]
        assert list(thresholds) == [s[1] for s in single]
        assert [">" if g else "<" for g in above] == [s[2] for s in single]
    # the calibration's quantile is the order statistic of the per-audit bounds
    on_d, on_neighbour = _calibration_noise(200)
    step, true_epsilon = 16, 2.0
    per_audit = sorted(
        epsilon_lower_bound(true_epsilon + x, y)[0] for x, y in zip(on_d, on_neighbour, strict=True)
    )
    assert len(per_audit) == _CALIBRATION_REPS
    # power 95 %: the 5 % quantile, taken conservatively (below it with 95 % confidence)
    rank = int(stats.binom.ppf(0.05, _CALIBRATION_REPS, 0.05))
    assert _bound_quantile(200, step, 0.95, 0.95) == per_audit[rank - 1]


def test_the_candidate_thresholds_are_numpys_percentiles() -> None:
    from segments.audit.dp_audit import _LEVELS, _percentiles

    rng = np.random.default_rng(3)
    for n in (2, 3, 99, 100, 101, 400):
        rows = np.sort(np.round(rng.normal(0, 3, (20, n)), 1), axis=1)
        assert np.array_equal(_percentiles(rows), np.quantile(rows, _LEVELS, axis=1).T)
