"""The accuracy planner: targets to ε, inside every policy's budget, refusals, the probe."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from prepared_frames import sign_prepared, synthetic_proof
from release_helpers import release_context

from segments.exceptions import PolicyError, ReleaseRefusedError
from segments.policy import POLICY_NAMES, Policy
from segments.privacy.planner import (
    CLIP_BIAS,
    PRIORITY,
    AccuracyTarget,
    Scale,
    _allocate,
    _Need,
    default_targets,
    plan_by_accuracy,
    probe_scale,
    survey_scale,
)

DEMO = Scale(customers=40_000, mean_spend_sek=40_000, monthly_buyers=15_000, segments=6)
TINY = Scale(customers=800, mean_spend_sek=40_000, monthly_buyers=300, segments=6)


def _fixed(policy: Policy) -> dict[str, float]:
    return {"private_segments": policy.privacy.private_segments_epsilon, "scale_probe": 0.04}


@pytest.mark.parametrize("name", POLICY_NAMES)
@pytest.mark.parametrize("scale", [DEMO, TINY], ids=["50k", "tiny"])
def test_every_policy_plan_fits_its_budget_or_names_what_it_cannot_meet(name, scale):
    policy = Policy.load(name)
    plan = plan_by_accuracy(policy, scale, fixed_epsilon=_fixed(policy))
    assert plan.total_epsilon <= policy.privacy.budget_epsilon * (1 + 1e-9)
    assert set(plan.releases) == {"monthly_category", "category_mix", "segment_overview"}
    unmet = plan.unmet()
    assert len(unmet) == sum(not r.meets_target for r in plan.releases.values())
    for release in plan.releases.values():
        assert release.epsilon > 0
        if not release.meets_target:
            assert any(line.startswith(release.release) and "target" in line for line in unmet)
    if scale is TINY:  # 300 buyers a month cannot give ±10 % at any of these budgets
        assert not plan.fits and plan.releases["monthly_category"].refused


def test_targets_met_when_the_budget_allows_and_the_spare_budget_is_used():
    policy = Policy.load("alocenter")  # zCDP, ε 5 a period
    big = Scale(customers=400_000, mean_spend_sek=40_000, monthly_buyers=150_000, segments=6)
    plan = plan_by_accuracy(policy, big, fixed_epsilon=_fixed(policy))
    assert plan.fits and not plan.unmet()
    usable = 0.95 * policy.privacy.budget_epsilon
    assert plan.total_epsilon == pytest.approx(usable, rel=1e-6)
    for release in plan.releases.values():
        assert release.expected_relative_error < release.target


#: ±10 % on nine releases in ten (3.3x the ε of the default median targets): more than fits
STRICT = tuple(AccuracyTarget(t.release, t.relative_error, 0.90) for t in default_targets())


def test_when_targets_cannot_all_be_met_the_purchasing_series_comes_first():
    policy = Policy.load("alloffice")
    plan = plan_by_accuracy(policy, DEMO, STRICT, fixed_epsilon=_fixed(policy))
    errors = {name: r.expected_relative_error for name, r in plan.releases.items()}
    # none met: the fractions of their needs follow the priority weights (3 : 2 : 1)
    assert not plan.fits and "priority" in plan.unmet()[0]
    assert errors["monthly_category"] < errors["segment_overview"] < errors["category_mix"]
    assert plan.total_epsilon == pytest.approx(0.95 * policy.privacy.budget_epsilon, rel=1e-6)
    # with more buyers a month the series' target is met first and the rest share what is left
    more = Scale(customers=40_000, mean_spend_sek=40_000, monthly_buyers=60_000, segments=6)
    plan = plan_by_accuracy(policy, more, STRICT, fixed_epsilon=_fixed(policy))
    assert plan.releases["monthly_category"].meets_target
    assert not plan.releases["category_mix"].meets_target


def test_a_refused_release_needs_an_explicit_override():
    policy = Policy.load("offix")
    plan = plan_by_accuracy(policy, TINY, fixed_epsilon=_fixed(policy))
    with pytest.raises(ReleaseRefusedError, match="max_relative_error"):
        plan.check("monthly_category")
    plan.check("monthly_category", override=True)
    assert "REFUSED" in plan.describe()


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_the_loss_a_target_needs_gives_exactly_that_error(mechanism):
    need = _Need("x", 1, mechanism, 3.7, AccuracyTarget("x", 0.1, 0.9))
    assert need.error(need.loss_for(0.07)) == pytest.approx(0.07, rel=1e-9)
    assert need.error(2.0) < need.error(1.0)


def test_bad_targets_and_budgets_are_refused():
    with pytest.raises(PolicyError, match="relative_error"):
        AccuracyTarget("monthly_category", 0.0)
    policy = Policy.load("offix")
    with pytest.raises(PolicyError, match="leaves nothing"):
        plan_by_accuracy(policy, DEMO, fixed_epsilon={"private_segments": 5.0})
    assert {t.release for t in default_targets()} >= {"monthly_category", "segment_overview"}


def test_the_probe_is_charged_and_sizes_the_cells(tmp_path):
    from segments.privacy._frames import write_prepared_frames
    from segments.privacy.ledger import Ledger
    from segments.workspace import Workspace

    ws = Workspace(tmp_path / "ws").create()
    folder = ws.prepared_dir("statistics")
    folder.mkdir(parents=True)
    write_prepared_frames(folder, 3_000, 30_000, seed=np.random.default_rng(2))
    sign_prepared(ws, "statistics", dt.date(2026, 3, 1))  # as `segments prepare` signs
    policy = Policy.load("alloffice")
    ledger = Ledger.for_workspace(
        ws, policy.controller, evaluation=True, synthetic=synthetic_proof(ws)
    )
    scale, charged = probe_scale(
        release_context(
            ledger, ws, policy, purpose="statistics", recipient="purchasing", synthetic=True
        ),
        as_of=dt.date(2026, 3, 1),
        segments=6,
    )
    assert len(ledger.entries()) == 2
    assert charged == pytest.approx({"scale_probe": 0.02, "scale_probe_month": 0.02})
    assert 2_000 < scale.customers < 4_000
    assert 0 < scale.monthly_buyers < scale.customers
    assert scale.mean_spend_sek >= 0  # 3,000 people: the spend sum may drown in its noise


def test_default_targets_are_the_goals_medians_and_refusal_stays_at_90_percent():
    """The goals are median errors; the refusal still holds the 90 % interval against
    max_relative_error, so planning at the median never lets a noisier release through."""
    policy = Policy.load("alloffice")
    assert {t.confidence for t in default_targets()} == {0.5}
    median = plan_by_accuracy(policy, DEMO, fixed_epsilon=_fixed(policy))
    strict = plan_by_accuracy(policy, DEMO, STRICT, fixed_epsilon=_fixed(policy))
    for planned in median.releases.values():
        # the noise's 90 % half-width is ln 10 / ln 2 = 3.3 times its median under Laplace
        # noise; the clip's bias is the same at both levels
        bias = CLIP_BIAS.get(planned.release, 0.0)
        assert planned.refusal_error - bias == pytest.approx(
            (planned.expected_relative_error - bias) * np.log(10) / np.log(2), rel=1e-9
        )
        assert planned.refused == (planned.refusal_error > median.max_relative_error)
    assert median.fits and not strict.fits
    tiny = plan_by_accuracy(policy, TINY, fixed_epsilon=_fixed(policy))
    assert tiny.releases["monthly_category"].refused
    with pytest.raises(ReleaseRefusedError, match="at 90% confidence"):
        tiny.check("monthly_category")


def test_a_series_that_fits_alone_still_leaves_the_segment_tables_their_share():
    """Meeting the purchasing series in full first left the mix 11 % of its need at 20,000
    customers (72 % median error); now every release gets a priority-weighted fraction."""
    policy = Policy.load("alloffice")
    mid = Scale(customers=16_000, mean_spend_sek=40_000, monthly_buyers=6_400, segments=10)
    # override: the mix, refused at its share, keeps it (else it is left out, see below)
    plan = plan_by_accuracy(policy, mid, fixed_epsilon=_fixed(policy), override=True)
    assert not plan.fits
    fraction = {
        name: r.loss / plan._needs[name].loss_for(r.target) for name, r in plan.releases.items()
    }  # the fraction of the need granted
    assert fraction["monthly_category"] == pytest.approx(3 * fraction["category_mix"], rel=1e-6)
    assert fraction["segment_overview"] == pytest.approx(2 * fraction["category_mix"], rel=1e-6)
    assert plan.total_epsilon == pytest.approx(0.95 * policy.privacy.budget_epsilon, rel=1e-6)


@pytest.mark.parametrize("name", ["alloffice", "allkontor"])
def test_error_curve_falls_with_epsilon_and_passes_through_the_plan(name):
    policy = Policy.load(name)
    plan = plan_by_accuracy(policy, DEMO, fixed_epsilon=_fixed(policy))
    curve = plan.error_curve("category_mix")
    planned = plan.releases["category_mix"]
    assert curve["epsilon"].is_sorted() and curve["expected_relative_error"].is_sorted(
        descending=True
    )
    row = curve.filter("planned")
    assert row.height == 1 and row["epsilon"][0] == planned.epsilon
    # ε was rounded to 6 digits in the plan: the curve's error there is the plan's
    assert row["expected_relative_error"][0] == pytest.approx(
        planned.expected_relative_error, rel=1e-4
    )
    assert row["expected_relative_error_90"][0] == pytest.approx(planned.refusal_error, rel=1e-4)
    with pytest.raises(PolicyError, match="not in this accuracy plan"):
        plan.error_curve("survey_experience")
    with pytest.raises(PolicyError, match="positive"):
        plan.error_curve("category_mix", [0.0, 1.0])


def test_the_plan_states_what_it_cannot_meet_and_why_for_the_small_budgets_at_50k():
    """Offix and AllCall (ε 2 a period) at the demo's size: the category mix cannot meet its
    target and is refused; the statement (the demo summary's accuracy lines) names both, with
    the expected error, the budget share and the policy's max_relative_error."""
    probe = Scale(customers=40_000, mean_spend_sek=37_000, monthly_buyers=15_800, segments=6)
    for name in ("offix", "allcall"):
        policy = Policy.load(name)
        plan = plan_by_accuracy(policy, probe, fixed_epsilon=_fixed(policy))
        lines = plan.statement()
        assert any(
            line.startswith("cannot meet category_mix") and "of the loss its target needs" in line
            for line in lines
        ), lines
        # and what would meet it: the ε it needs against what it can have, or more customers
        mix = plan.releases["category_mix"]
        import re

        (line,) = [x for x in lines if x.startswith("cannot meet category_mix")]
        needed, granted, customers = (
            float(v)
            for v in re.search(
                r"needs ε ([\d.]+) per release against the ([\d.]+) it can have, or about "
                r"([\d.]+) x the customers",
                line,
            ).groups()
        )
        assert granted == pytest.approx(mix.epsilon, rel=1e-2) and needed > 2 * granted
        bigger = Scale(probe.customers * customers, 37_000, probe.monthly_buyers * customers, 6)
        grown = plan_by_accuracy(policy, bigger, fixed_epsilon=_fixed(policy), override=True)
        assert (
            grown.releases["category_mix"].expected_relative_error == pytest.approx(0.10, abs=0.01)
            or grown.releases["category_mix"].meets_target
        )
        refused = [line for line in lines if line.startswith("refused category_mix")]
        assert refused and "max_relative_error=0.5" in refused[0] and "left out" in refused[0]
        with pytest.raises(ReleaseRefusedError):
            plan.check("category_mix")
        assert "released anyway" in " ".join(plan.statement(override=True))
    alloffice = Policy.load("alloffice")
    plan = plan_by_accuracy(alloffice, probe, fixed_epsilon=_fixed(alloffice))
    lines = plan.statement()
    assert lines[0] == "every target met within the 4 ε budget per period"
    # and it says how its error model counts the clip's bias, rather than a bare "met"
    mix_bias = f"category_mix low by about {CLIP_BIAS['category_mix']:.1%}"
    assert "clip's bias" in lines[-1] and mix_bias in lines[-1]
    # and that the mix's ±10 % is a typical cell's, not a small segment's (marked per cell)
    small = [line for line in lines if line.startswith("category_mix: the expected error")]
    assert small and "sek_reliable" in small[0] and "max_relative_error=0.5" in small[0]


def test_the_survey_is_planned_and_a_refused_release_gives_its_budget_to_the_others():
    """Issue 14: the survey release was outside the plan (a fixed eighth of the budget). Now
    it is sized from the probe's monthly buyers and the survey's public design, and planned
    like the others. At 50,000 customers its 42 county × type cells, with a sensitivity of 2
    responses per month of the window, cannot reach ±50 % at 90 %, so the planner plans the
    coarser national table (the same sensitivity, one cell), which meets ±20 % on
    its one cell. Where even that is refused (3,000 buyers a month) the survey is left out
    unless the caller overrides, and its ε goes to the other releases."""
    policy = Policy.load("alloffice")
    sized = survey_scale(DEMO, policy)
    from segments.privacy.specs import SPECS, PrivacyParams

    months = PrivacyParams.from_policy(policy, "statistics").retention_months
    assert sized.survey_months == months  # the survey release's window: the retention
    assert sized.survey_responses == pytest.approx(0.05 * 15_000 * months)
    plan = plan_by_accuracy(policy, sized, fixed_epsilon=_fixed(policy))
    survey = plan.releases["survey"]
    assert survey.spec == "survey_national" and survey.spec in SPECS
    assert survey.meets_target and not survey.refused and not survey.left_out
    assert survey.expected_relative_error <= 0.20 and survey.refusal_error <= 0.5
    assert "survey_experience table (42 cells) would be off by" in survey.note
    assert any(line.startswith("survey: planned as the coarser") for line in plan.statement())
    plan.check("survey")  # not refused
    assert plan.fits and plan.total_epsilon <= policy.privacy.budget_epsilon

    kontor, small = Policy.load("allkontor"), Scale(8_000, 40_000, 3_000, 6)
    without = plan_by_accuracy(kontor, small, fixed_epsilon=_fixed(kontor))
    plan = plan_by_accuracy(kontor, survey_scale(small, kontor), fixed_epsilon=_fixed(kontor))
    survey = plan.releases["survey"]
    assert survey.spec == "survey_national"  # the coarser table was tried first
    assert survey.refused and survey.left_out and not survey.meets_target
    assert "survey" not in plan.planned and "left out" in plan.describe()
    assert any(line.startswith("refused survey") for line in plan.statement())
    with pytest.raises(ReleaseRefusedError, match="survey"):
        plan.check("survey")
    # the budget is spent in full by the three others, as without a survey
    assert plan.total_epsilon == pytest.approx(without.total_epsilon, rel=1e-9)
    assert plan.total_epsilon <= kontor.privacy.budget_epsilon
    # with the override the survey keeps a share, and the others have less
    kept = plan_by_accuracy(
        kontor, survey_scale(small, kontor), fixed_epsilon=_fixed(kontor), override=True
    )
    assert not kept.releases["survey"].left_out and "survey" in kept.planned
    assert kept.releases["survey"].spec == "survey_experience"  # nothing refused: finest
    assert kept.total_epsilon == pytest.approx(plan.total_epsilon, rel=1e-9)
    for name in ("monthly_category", "category_mix"):
        assert kept.epsilon(name) < plan.epsilon(name)
    # the survey's error falls with the window's responses: 20x the buyers keeps the finest
    crowd = Scale(800_000, 40_000, 300_000, 6)
    big = plan_by_accuracy(kontor, survey_scale(crowd, kontor), fixed_epsilon=_fixed(kontor))
    assert big.releases["survey"].spec == "survey_experience"
    assert not big.releases["survey"].left_out


def test_a_release_is_given_at_least_the_loss_that_keeps_it_from_refusal():
    """A ±20 % median target is ±66 % at 90 % under Laplace noise, above a policy's
    max_relative_error of 0.5: a plan sized to the target alone would meet it and then be
    refused. Each release's need is the larger of the two."""
    from segments.privacy.planner import _allocate

    need = _Need("survey", 1, "laplace", 0.05, AccuracyTarget("survey", 0.20, 0.5))
    assert need.error(need.loss_for(0.20), 0.90) > 0.5  # the target alone would be refused
    ((_, loss, _),) = _allocate(
        [need], available=need.loss_for(0.5, 0.90) * 0.999, max_relative_error=0.5
    )
    assert need.error(loss, 0.90) > 0.5  # short of it: the fraction granted stays < 1
    ((_, loss, _),) = _allocate([need], available=10.0, max_relative_error=0.5)
    ((_, exact, stretch),) = _allocate(
        [need], available=need.loss_for(0.5, 0.90), max_relative_error=0.5
    )
    assert stretch == pytest.approx(1.0) and need.error(exact, 0.90) == pytest.approx(0.5)


def test_a_left_out_release_leaves_the_smallest_budgets_one_release_at_a_time():
    """Leaving refused releases out one at a time, the last by priority: Offix at about
    60,000 customers loses the survey, then the category mix; the series and the overview
    then meet their targets with what those freed, and the survey, cheap as the national
    table, is taken back once the mix is out (it was left out only because the mix was in).
    (At 50,000 customers the overview is left out too since the series' clip bias is planned
    at its measured 3.5 %: test_every_policy_plan_fits_its_budget_or_names_what_it_cannot_meet.)"""
    policy = Policy.load("offix")
    probe = survey_scale(Scale(50_000, 37_000, 19_750, 6), policy)
    plan = plan_by_accuracy(policy, probe, fixed_epsilon=_fixed(policy))
    assert {k for k, r in plan.releases.items() if r.left_out} == {"category_mix"}
    survey = plan.releases["survey"]
    assert survey.spec == "survey_national" and survey.meets_target and not survey.refused
    assert plan.releases["monthly_category"].meets_target
    assert plan.releases["segment_overview"].meets_target
    assert plan.total_epsilon == pytest.approx(0.95 * policy.privacy.budget_epsilon, rel=1e-6)


def test_small_needs_are_met_first_where_that_meets_more_targets_and_refuses_nothing():
    """Issue 14: sharing a shortfall by priority spread it over every release, so AllKontor
    at 50,000 customers and ten segments met only the series: the category mix (134 % of the
    budget on its own) took the segment overview and the survey below their targets. Meeting
    those two in full first costs the mix 3 % of its share (±14.5 % -> ±15 %) and meets three
    targets instead of one."""
    kontor = Policy.load("allkontor")
    scale = survey_scale(Scale(45_000, 37_000, 15_800, 10), kontor)
    plan = plan_by_accuracy(kontor, scale, fixed_epsilon=_fixed(kontor))
    check = plan.split_check
    assert check is not None
    # the same needs shared by priority alone (the allocation before this pass)
    by_priority = {
        a[0].release: a for a in _allocate(list(plan._needs.values()), check.available, 0.5)
    }
    assert (
        sum(
            n.error(loss) <= n.target.relative_error * (1 + 1e-9)
            for n, loss, _ in by_priority.values()
        )
        == 1
    )
    met = {r.release for r in plan.releases.values() if r.meets_target}
    assert met == {"monthly_category", "segment_overview", "survey"}
    assert set(plan.met_first) == met
    mix_need, mix_loss, _ = by_priority["category_mix"]
    mix = plan.releases["category_mix"]
    assert not mix.refused and mix.expected_relative_error < 1.1 * mix_need.error(mix_loss)
    assert "after meeting monthly_category, segment_overview, survey in full" in mix.note
    assert plan.total_epsilon <= kontor.privacy.budget_epsilon
    assert check is not None and len(check.most) == len(met)
    assert any("no other split meets more targets" in line for line in plan.statement())
    assert plan.to_dict()["split_check"]["needs"]["category_mix"] > check.available
    assert plan.to_dict()["met_first"] == ["monthly_category", "segment_overview", "survey"]


@pytest.mark.parametrize("name", ["alloffice", "allkontor", "offix", "alocenter", "allcall"])
@pytest.mark.parametrize("customers", [8_000, 20_000, 50_000, 100_000])
def test_no_release_the_priority_split_publishes_is_refused_to_meet_another(name, customers):
    """Meeting small needs first never trades a published table for a met target: every
    release the priority split (override, nothing left out) would publish is still planned
    and not refused, and at least as many targets are met; the split check's best is never
    more than the plan meets unless the plan says why."""
    policy = Policy.load(name)
    scale = survey_scale(Scale(customers, 37_000, customers * 0.35, 10), policy)
    plan = plan_by_accuracy(policy, scale, fixed_epsilon=_fixed(policy))
    assert plan.total_epsilon <= policy.privacy.budget_epsilon + 1e-9
    if not plan.met_first:
        return
    check = plan.split_check
    shared = _allocate(
        [n for n in plan._needs.values() if n.release in plan.planned], check.available, 0.5
    )
    met = sum(r.meets_target for r in plan.releases.values())
    assert met > sum(n.error(loss) <= n.target.relative_error * (1 + 1e-9) for n, loss, _ in shared)
    for need, loss, _ in shared:  # published by the priority split: still published
        if need.error(loss, 0.9) <= 0.5:
            assert not plan.releases[need.release].refused, need.release
    first_new = min(PRIORITY.index(r) for r in plan.met_first)
    for need, loss, _ in shared:  # nothing taken from a release before the ones met first
        if PRIORITY.index(need.release) < first_new and need.release not in plan.met_first:
            assert plan.releases[need.release].loss >= loss * (1 - 1e-9)
