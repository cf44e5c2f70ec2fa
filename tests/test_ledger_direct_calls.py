"""Issue 13 leftovers: a hand-built ReleaseRequest handed straight to ``Ledger.reserve`` is held
to the policy the ledger recorded, as ``ReleasePlan.execute`` is: clause ids, the loss's δ, and
(on a demo ledger) time that only moves forward. Each attack is refused before any charge; each
has a twin the ledger accepts, so the test can fail."""

from __future__ import annotations

from pathlib import Path

import pytest
from ledger_helpers import TODAY, install_clock, request_for
from prepared_frames import synthetic_proof

from segments.exceptions import BudgetExceededError, ReleaseRefusedError
from segments.policy import Policy
from segments.privacy.composition import epsilon_to_rho, rho_to_epsilon
from segments.privacy.ledger import Ledger, ReleaseRequest


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    return install_clock(monkeypatch, TODAY)


def request(policy: Policy, **changes) -> ReleaseRequest:
    return request_for(policy, **{"epsilon": 0.5, "mechanism": "laplace", **changes})


def simulated_ledger(folder: Path, policy: Policy, kind: str) -> Ledger:
    """A ``demo`` (throw-away) or ``evaluation`` ledger of ``policy`` in ``folder``, for data
    proven synthetic: the ledgers on simulated time."""
    label = {"throwaway": True} if kind == "demo" else {"evaluation": True}
    return Ledger.open(
        folder / f"{kind}.sqlite",
        policy.controller,
        policy=policy,
        synthetic=synthetic_proof(),
        **label,
    )


def charges(ledger: Ledger) -> int:
    return sum(event["event"] == "reserve" for event in ledger.events())


# --- clause ids: only the recorded policy's, for the release's purpose -------------------------
@pytest.mark.parametrize(
    ("name", "foreign"),
    [
        ("offix", ("AO-1",)),  # another controller's anonymity promise on an Offix release
        ("alloffice", ("AO-5", "AO-7")),  # AllOffice's own clauses, but of purpose "offers"
        ("alloffice", ("AO-1", "AK-2")),  # one own id does not carry a foreign one through
    ],
)
def test_attack_a_direct_reserve_citing_clauses_the_policy_does_not_list_is_refused(
    tmp_path, name, foreign
):
    policy = Policy.load(name)
    ledger = Ledger.for_policy(policy, path=tmp_path / "l.sqlite", init=True)
    own = policy.release_clause_ids("statistics")
    before = charges(ledger)
    with pytest.raises(ReleaseRefusedError) as refused:
        ledger.reserve(request(policy, clause_ids=foreign))
    message = str(refused.value)
    assert "refused before anything was charged" in message and "\n" not in message
    assert f"clause {', '.join(policy.clauses_for('anonymous_release'))}" in message
    assert f"its own: {list(own)}" in message
    assert charges(ledger) == before
    # the policy's own ids are recorded as given; none given, the ledger records its own
    for given in (own, (), own[:1]):
        entry = ledger.entry(ledger.reserve(request(policy, clause_ids=given)).release_id)
        assert list(entry.request.clause_ids) == list(given or own)
    assert charges(ledger) == before + 3


def test_attack_a_direct_reserve_stating_no_loss_is_refused() -> None:
    """r13b: a hand-built request with ε = 0 and guarantee "end-to-end ε-DP" was recorded
    as a DP release that cost nothing."""
    policy = Policy.load("alloffice")
    for nothing in ({"epsilon": 0.0}, {"epsilon": None, "rho": 0.0}):
        with pytest.raises(ValueError, match=r"kind 'dp' states no privacy loss"):
            request(policy, **nothing)


def test_the_clause_list_is_the_ledgers_record_not_the_policy_object_passed(tmp_path):
    """A caller who passes an edited policy object (its purpose given another clause) is
    refused: the ledger compares it with the policy it recorded, and reads the clauses from
    that record."""
    import dataclasses

    policy = Policy.load("offix")
    ledger = Ledger.for_policy(policy, path=tmp_path / "l.sqlite", init=True)
    ledger.reserve(request(policy))
    statistics = dataclasses.replace(policy.purposes["statistics"], clause_ids=("AO-1",))
    edited = dataclasses.replace(policy, purposes={**policy.purposes, "statistics": statistics})
    with pytest.raises(ReleaseRefusedError, match="differs from the policy ledger") as refused:
        ledger.reserve(request(edited, clause_ids=("AO-1",)), policy=edited)
    ids = policy.clauses_for("anonymous_release")  # cited from the policy (r13b #5)
    assert ids and f"clause {', '.join(ids)})" in str(refused.value)
    assert charges(ledger) == 1


# --- the loss's δ: the policy's, never the caller's --------------------------------------------
def test_attack_a_caller_chosen_delta_states_rho_as_a_smaller_epsilon_and_is_refused(tmp_path):
    policy = Policy.load("allkontor")  # zCDP, δ = 1e-7, budget ε = 3
    ledger = Ledger.for_policy(policy, path=tmp_path / "l.sqlite", init=True)
    rho = epsilon_to_rho(3.0, 1e-7)  # the whole budget at the policy's δ
    # stated at δ = 0.5 the same ρ reads as ε ≈ 0.72: the whole budget looks like a quarter
    assert rho_to_epsilon(rho, 0.5) < 3.0 / 2
    for loose in ({"policy_delta": 0.5}, {"policy_delta": 0.5, "delta": 0.5}):
        with pytest.raises(ReleaseRefusedError, match=r"policy_delta=0.5 .* δ = 1e-07"):
            ledger.reserve(request(policy, epsilon=None, rho=rho, mechanism="gaussian", **loose))
    with pytest.raises(ReleaseRefusedError, match=r"ReleaseRequest.delta=0.5 .* δ = 1e-07"):
        ledger.reserve(request(policy, epsilon=None, rho=rho, delta=0.5, policy_delta=None))
    assert charges(ledger) == 0
    ledger.reserve(request(policy, epsilon=None, rho=rho / 2, delta=1e-7, mechanism="gaussian"))
    assert charges(ledger) == 1


def test_attack_rho_on_a_pure_dp_policy_is_refused(tmp_path):
    """Under a pure-DP policy (δ = 0) a ρ has no δ to be stated at but the caller's."""
    policy = Policy.load("alloffice")
    ledger = Ledger.for_policy(policy, path=tmp_path / "l.sqlite", init=True)
    with pytest.raises(ReleaseRefusedError, match=r"states pure ε-DP \(δ = 0\).*ρ = 2"):
        ledger.reserve(request(policy, epsilon=None, rho=2.0, delta=0.9, mechanism="gaussian"))
    with pytest.raises(ReleaseRefusedError, match=r"approximate \(ε, δ\) loss \(δ = 0.9\)"):
        ledger.reserve(request(policy, epsilon=0.01, delta=0.9))
    assert charges(ledger) == 0
    ledger.reserve(request(policy, epsilon=0.01))
    assert charges(ledger) == 1


# --- demo ledger: simulated time only moves forward (r17 #6) -----------------------------------
@pytest.mark.parametrize("kind", ["demo", "evaluation"])
def test_attack_a_simulated_ledger_dated_back_gives_no_fresh_budget(tmp_path, kind):
    """r17 #6: after ε 3 at today was refused on a demo ledger (1.8 of 4 spent), as-of
    2020-01-01 and 2022-06-01 each released ε 3 in a period of its own. Now both are refused
    before any charge; moving forward (a period later) is still a simulation's right."""
    policy = Policy.load("alloffice")  # budget ε = 4 per 12 months
    ledger = simulated_ledger(tmp_path, policy, kind)
    ledger.reserve(request(policy, epsilon=1.8))
    if kind == "demo":
        with pytest.raises(BudgetExceededError):
            ledger.reserve(request(policy, epsilon=3.0))
    before = charges(ledger)
    for day in ("2020-01-01", "2022-06-01", "2026-06-29"):
        with pytest.raises(ReleaseRefusedError) as refused:
            ledger.reserve(request(policy, epsilon=3.0, as_of=day))
        message = str(refused.value)
        assert f"as-of {day} is behind the population's latest release" in message
        assert "(as of 2026-06-30)" in message and "clause AO-1" in message
        assert "simulated time only moves forward" in message and "\n" not in message
    assert charges(ledger) == before
    ledger.reserve(request(policy, epsilon=0.1))  # the same day again
    ledger.reserve(request(policy, epsilon=3.0, as_of="2027-07-01"))  # a period later
    assert charges(ledger) == before + 2


def test_a_simulated_history_replayed_oldest_first_is_charged(tmp_path):
    """The twin: months replayed in order, then today, as the main job's backfill does."""
    policy = Policy.load("alloffice")
    ledger = simulated_ledger(tmp_path, policy, "demo")
    for day in ("2025-08-01", "2025-09-01", "2025-10-01", "2026-06-01", "2026-06-30"):
        ledger.reserve(request(policy, epsilon=0.2, as_of=day))
    assert [entry.request.as_of.isoformat() for entry in ledger.entries()] == [
        "2025-08-01",
        "2025-09-01",
        "2025-10-01",
        "2026-06-01",
        "2026-06-30",
    ]


def test_a_closed_month_of_a_series_is_replayed_behind_once_dated_at_its_close(tmp_path):
    """The one release a simulated ledger takes behind its latest: the backfill of a closed
    month of the monthly series (once-only key, dated the day the month closed), as the main
    job does after its charged scale probe. Each month once; any other date is refused."""
    policy = Policy.load("alloffice")
    ledger = simulated_ledger(tmp_path, policy, "demo")
    ledger.reserve(request(policy, epsilon=0.2))  # today's release first
    month = {"once_key": "monthly_category/2025-09", "epsilon": 0.1}
    with pytest.raises(ReleaseRefusedError, match="simulated time only moves forward"):
        ledger.reserve(request(policy, as_of="2025-11-01", **month))  # not its close
    with pytest.raises(ReleaseRefusedError, match="simulated time only moves forward"):
        ledger.reserve(request(policy, as_of="2025-10-01", epsilon=0.1, once_key="x/y"))
    ledger.reserve(request(policy, as_of="2025-10-01", **month))
    with pytest.raises(ReleaseRefusedError, match="released once"):
        ledger.reserve(request(policy, as_of="2025-10-01", **month))
    assert charges(ledger) == 2
