"""The privacy ledger: reservation before release, budgets that cannot be reset or overspent
(also by several processes at once), crash safety, tamper evidence and the CLI."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_helpers import (
    CONTROLLER,
    TODAY,
    Clock,
    demo_policy,
    install_clock,
    request_for,
    run_cli,
)
from prepared_frames import synthetic_proof

from segments.exceptions import BudgetExceededError, ReleaseRefusedError, WorkspaceError
from segments.policy import Policy
from segments.privacy import ledger as ledger_module
from segments.privacy.composition import add_months, epsilon_to_rho, rho_to_epsilon
from segments.privacy.guards import Guarantee
from segments.privacy.ledger import (
    EVALUATION_LABEL,
    LEDGER_DIR_ENV,
    Ledger,
    ReleaseRequest,
    default_ledger_path,
)
from segments.workspace import sha256_file

DEMO = demo_policy()
BUDGET = DEMO.privacy.budget_epsilon
AS_OF = TODAY
SHA = "ab" * 32
FORK = multiprocessing.get_context("fork")


def make_request(**changes) -> ReleaseRequest:
    fields = {
        "epsilon": 0.25,
        "mechanism": "laplace",
        "clause_ids": ("AO-4",),
        "spec": {"query": "count", "keys": ["county", "segment"]},
        "bounds": {"rows_per_person": 1},
    }
    return request_for(DEMO, **{**fields, **changes})


def open_simulated(path: Path) -> Ledger:
    """A throw-away (demo) ledger: simulated time, for data proven synthetic."""
    return Ledger.open(path, CONTROLLER, policy=DEMO, throwaway=True, synthetic=synthetic_proof())


def open_ledger(path: Path, **kwargs) -> Ledger:
    kwargs.setdefault("init", not path.exists())
    return Ledger.open(path, CONTROLLER, policy=DEMO, **kwargs)


@pytest.fixture(autouse=True)
def clock(monkeypatch) -> Clock:
    """Today is AS_OF unless a test moves the clock."""
    return install_clock(monkeypatch, AS_OF)


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    return open_ledger(tmp_path / "ledger.sqlite")


def card_for(entry) -> dict:
    return {"release_id": entry.release_id, "ledger_head": entry.head_hash}


def spent(ledger: Ledger, as_of=AS_OF) -> float:
    return ledger.balance("customers", as_of).period_total.epsilon


# --- recording ----------------------------------------------------------------------------------
def test_reserve_then_publish_records_every_field(ledger):
    reservation = ledger.reserve(make_request(population_fingerprint="f" * 64))
    entry = ledger.entry(reservation.release_id)
    assert entry.status == "reserved" and entry.files == {}
    published = ledger.publish(reservation, files={"counts.parquet": SHA})
    assert published.status == "published"
    assert published.head_hash == ledger.head_hash() != reservation.hash
    record = published.to_dict()
    for field, value in {
        "controller": CONTROLLER,
        "policy": "demo",
        "population": "customers",
        "population_fingerprint": "f" * 64,
        "purpose": "statistics",
        "recipient": "purchasing",
        "recipient_kind": "internal",
        "destination": "SE",
        "clause_ids": ["AO-4"],
        "spec": {"query": "count", "keys": ["county", "segment"]},
        "guarantee": Guarantee.END_TO_END,
        "mechanism": "laplace",
        "bounds": {"rows_per_person": 1},
        "epsilon": 0.25,
        "files": {"counts.parquet": SHA},
        "evaluation": False,
        "as_of": "2026-06-30",
        "charged": True,
    }.items():
        assert record[field] == value, field
    assert record["reserved_at"] <= record["published_at"]
    assert json.loads(json.dumps(record)) == record


def test_k_anonymous_releases_charge_nothing_but_appear_in_history(ledger):
    kanon = make_request(guarantee=Guarantee.K_ANONYMOUS, epsilon=None, mechanism="mondrian")
    assert kanon.kind == "kanon"
    entry = ledger.publish(ledger.reserve(kanon), files={"table.parquet": SHA})
    assert entry.to_dict()["charged"] is False
    assert spent(ledger) == 0.0
    assert ledger.balance("customers").period_total.n_releases == 1
    with pytest.raises(ValueError, match="k-anonymous microdata has no ε"):
        make_request(guarantee=Guarantee.K_ANONYMOUS, epsilon=0.1)
    for nothing in ({"epsilon": None}, {"epsilon": 0.0}, {"epsilon": None, "rho": 0.0}):
        with pytest.raises(ValueError, match="kind 'dp' states no privacy loss"):
            make_request(**nothing)


def test_publish_is_checked(ledger):
    reservation = ledger.reserve(make_request(release_id="counts-20260630"))
    assert reservation.release_id == "counts-20260630"
    with pytest.raises(ValueError, match="digest 'abc'; pass the SHA-256"):
        ledger.publish(reservation, files={"x.parquet": "abc"})
    with pytest.raises(ValueError, match="got no files"):
        ledger.publish(reservation, files={})
    ledger.publish(reservation, files={"x.parquet": SHA})
    with pytest.raises(ReleaseRefusedError, match="already published"):
        ledger.publish(reservation, files={"x.parquet": SHA})
    with pytest.raises(ReleaseRefusedError, match="has no reservation"):
        ledger.publish("never-reserved", files={"x.parquet": SHA})
    with pytest.raises(ReleaseRefusedError, match="already reserved"):
        ledger.reserve(make_request(release_id="counts-20260630"))
    with pytest.raises(ValueError, match="release_id='../x' must be"):
        make_request(release_id="../x")


def test_request_values_are_validated():
    with pytest.raises(ValueError, match="as_of='June' is not a date"):
        make_request(as_of="June")
    with pytest.raises(ValueError, match="budget_epsilon=0.0 must be > 0"):
        make_request(budget_epsilon=0)
    with pytest.raises(ValueError, match="budget_period_months=0 must be a whole number"):
        make_request(budget_period_months=0)
    with pytest.raises(ValueError, match=r"spec\['rng'\] of type Generator cannot be stored"):
        make_request(spec={"rng": np.random.default_rng(0)})
    with pytest.raises(ValueError, match="purpose is empty"):
        make_request(purpose=" ")


# --- the budget ---------------------------------------------------------------------------------
def test_over_budget_is_refused_before_anything_runs_with_spent_requested_remaining(ledger):
    for _ in range(3):
        ledger.reserve(make_request(epsilon=0.3))
    head = ledger.head_hash()
    with pytest.raises(BudgetExceededError, match=r"spent ε = 0\.9 of the budget ε = 1") as info:
        ledger.reserve(make_request(epsilon=0.25))
    message = str(info.value)
    assert "requested ε = 0.25" in message and "remaining ε = 0.1" in message
    assert "(2025-06-30, 2026-06-30]" in message
    assert info.value.remaining_epsilon == pytest.approx(0.1)  # type: ignore[attr-defined]
    assert ledger.head_hash() == head and len(ledger.entries()) == 3  # nothing recorded
    ledger.reserve(make_request(epsilon=0.1))  # the budget can be spent exactly
    assert spent(ledger) == pytest.approx(1.0)


def test_a_refused_first_release_leaves_the_ledger_usable(tmp_path):
    """A ledger opened without a policy binds it inside the first reservation; when that
    reservation is refused (over budget), the binding rolls back with it, and the next
    reservation must not mistake the rolled-back event for a rewritten ledger."""
    policy = Policy.load("alloffice")
    ledger = Ledger.open(tmp_path / "l.sqlite", policy.controller, init=True)
    budget = policy.privacy.budget_epsilon
    with pytest.raises(BudgetExceededError):
        ledger.reserve(request_for(policy, epsilon=budget * 2))
    assert ledger.entries() == [] and ledger.verify_chain()
    ledger.reserve(request_for(policy, epsilon=budget / 2))
    assert spent(ledger) == pytest.approx(budget / 2)


def test_rolling_period_edges_on_a_simulated_history(tmp_path):
    """Evaluation and demo ledgers (synthetic data) charge on the simulated as-of."""
    ledger = Ledger.for_workspace(
        tmp_path / "ws", CONTROLLER, policy=DEMO, synthetic=synthetic_proof(tmp_path / "ws")
    )
    ledger.reserve(make_request(epsilon=0.5, as_of="2025-05-31"))  # a month replayed first
    ledger.reserve(make_request(epsilon=0.5, as_of="2025-06-30"))
    with pytest.raises(BudgetExceededError):  # 2026-05-30 still has 2025-05-31 in its period
        ledger.reserve(make_request(epsilon=0.01, as_of="2026-05-30"))
    ledger.reserve(make_request(epsilon=0.5, as_of="2026-05-31"))  # 2025-05-31 has left
    with pytest.raises(BudgetExceededError):  # 2026-06-29 still has 2025-06-30 in its period
        ledger.reserve(make_request(epsilon=0.01, as_of="2026-06-29"))
    ledger.reserve(make_request(epsilon=0.5, as_of="2026-06-30"))  # twelve months later
    # simulated time only moves forward: twelve months earlier is no fresh period
    with pytest.raises(ReleaseRefusedError, match="simulated time only moves forward"):
        ledger.reserve(make_request(epsilon=1.0, as_of="2024-06-30"))
    balance = ledger.balance("customers", "2026-06-30")
    assert balance.period_total.epsilon == 1.0
    assert balance.window_total.epsilon == 2.0  # (2024-06-30, 2026-06-30]
    assert balance.peak_period_total.epsilon == 1.0


def test_rolling_period_edges_on_the_recorded_time(tmp_path, clock):
    clock.set("2025-06-30")
    ledger = open_ledger(tmp_path / "ledger.sqlite")  # binds the policy on this day
    ledger.reserve(make_request(epsilon=1.0, as_of="2025-06-30"))
    clock.set("2026-06-29")  # 2026-06-29 still has 2025-06-30 in its period
    with pytest.raises(BudgetExceededError, match=r"\(2025-06-29, 2026-06-29\]"):
        ledger.reserve(make_request(epsilon=0.01, as_of="2026-06-29"))
    clock.set("2026-06-30")
    reservation = ledger.reserve(make_request(epsilon=1.0, as_of="2026-06-01"))
    assert reservation.charged_on == dt.date(2026, 6, 30)  # the recording date, not the as-of
    balance = ledger.balance("customers", "2026-06-30")
    assert balance.period_total.epsilon == 1.0 and balance.window_total.epsilon == 2.0


def test_attack_as_of_dates_spread_over_years_are_charged_today(ledger, clock):
    """Issue 13.1: eight releases dated 2026-11…2031 went through a 4-per-12-months budget.
    On a controller's ledger the charge counts on the recording date, and the as-of can
    neither run ahead of today nor behind the population's latest release."""
    clock.set("2026-12-04")
    ledger.reserve(make_request(epsilon=0.5, as_of="2026-11-01"))
    ledger.reserve(make_request(epsilon=0.5, as_of="2026-11-02"))
    head = ledger.head_hash()
    for as_of in ("2027-11-06", "2028-11-07", "2031-01-01"):
        with pytest.raises(ReleaseRefusedError, match="runs ahead of today"):
            ledger.reserve(make_request(epsilon=0.5, as_of=as_of))
    with pytest.raises(ReleaseRefusedError, match="behind the population's latest release"):
        ledger.reserve(make_request(epsilon=0.5, as_of="2019-06-01"))
    with pytest.raises(BudgetExceededError, match=r"spent ε = 1 of the budget ε = 1"):
        ledger.reserve(make_request(epsilon=0.5, as_of="2026-11-04"))
    assert ledger.head_hash() == head  # nothing charged by any refused attempt


def test_attack_a_new_population_name_gets_no_fresh_budget(ledger):
    """r13 finding 1: the same people released as "customers-z" got a second budget."""
    ledger.reserve(make_request(epsilon=1.0))
    head = ledger.head_hash()
    for name in ("customers-z", "survey_respondents", "Customers"):
        with pytest.raises(ReleaseRefusedError, match=f"population '{name}' refused before"):
            ledger.reserve(make_request(epsilon=0.5, population=name))
    assert ledger.head_hash() == head  # nothing charged
    assert ledger.populations() == ["customers"]


def test_zcdp_budget_is_compared_in_epsilon_at_the_policy_delta(tmp_path):
    policy = Policy.load("allkontor")  # zCDP, δ = 1e-7, budget ε = 3
    assert policy.privacy.dp_family == "zcdp"
    ledger = Ledger.for_policy(policy, path=tmp_path / "l.sqlite", init=True)
    rho_budget = epsilon_to_rho(policy.privacy.budget_epsilon, policy.privacy.delta)

    def zcdp(rho):
        return request_for(policy, rho=rho, mechanism="gaussian")

    ledger.reserve(zcdp(0.6 * rho_budget))
    with pytest.raises(BudgetExceededError, match=r"requested ρ = .* \(ε = .* at δ = 1e-07\)"):
        ledger.reserve(zcdp(0.41 * rho_budget))
    ledger.reserve(zcdp(0.39 * rho_budget))
    balance = ledger.balance("customers")
    assert balance.period_total.rho == pytest.approx(0.99 * rho_budget)
    assert balance.period_total.epsilon < 3.0
    assert "ρ =" in balance.period_total.describe()


def test_pure_and_zcdp_releases_compose_soundly_in_one_ledger(tmp_path):
    policy = Policy.load("allkontor")  # zCDP, δ = 1e-7, budget ε = 3
    ledger = Ledger.for_policy(policy, path=tmp_path / "l.sqlite", init=True)
    ledger.reserve(request_for(policy, epsilon=1.0, mechanism="laplace"))
    ledger.reserve(request_for(policy, rho=0.01, mechanism="gaussian"))
    total = ledger.balance("customers").period_total
    assert total.family == "mixed"
    assert total.rho == pytest.approx(0.51)  # 1²/2 + 0.01
    expected = min(rho_to_epsilon(0.51, 1e-7), 1.0 + rho_to_epsilon(0.01, 1e-7))
    assert total.epsilon == pytest.approx(expected) and total.delta == 1e-7
    with pytest.raises(BudgetExceededError, match="requested ε = 1.2"):
        ledger.reserve(request_for(policy, epsilon=1.2))


def test_the_budget_comes_from_the_policy(tmp_path):
    policy = Policy.load("offix")
    ledger = Ledger.for_policy(policy, path=tmp_path / "l.sqlite", init=True)
    request = request_for(policy, epsilon=0.5, budget_epsilon=100.0)
    with pytest.raises(ReleaseRefusedError, match="budget_epsilon=100.0 but policy 'offix'"):
        ledger.reserve(request)
    with pytest.raises(ReleaseRefusedError, match="names policy 'alloffice'"):
        ledger.reserve(request_for(Policy.load("alloffice"), epsilon=0.5))


# --- whose budget: the controller's, not a workspace's -------------------------------------------
def test_a_fresh_workspace_or_new_as_of_does_not_reset_the_budget(tmp_path, monkeypatch, clock):
    monkeypatch.setenv(LEDGER_DIR_ENV, str(tmp_path / "controller-ledgers"))
    policy = Policy.load("offix")  # budget ε = 2 per 12 months
    first = Ledger.for_policy(policy)  # e.g. from workspace A, prepared as of June
    first.reserve(request_for(policy, as_of=AS_OF, epsilon=1.5))
    again = Ledger.for_policy(policy)  # workspace B, new key, prepared a month later
    assert again.path == first.path == tmp_path / "controller-ledgers" / "offix-ab.sqlite"
    clock.set("2026-07-31")
    with pytest.raises(BudgetExceededError, match="spent ε = 1.5"):
        again.reserve(request_for(policy, as_of="2026-07-31", epsilon=1.5))
    with pytest.raises(BudgetExceededError, match="spent ε = 1.5"):
        again.reserve(request_for(policy, as_of=AS_OF, epsilon=1.5, purpose="segmentation"))


def test_default_location_is_the_per_user_data_dir(monkeypatch):
    import platformdirs

    monkeypatch.delenv(LEDGER_DIR_ENV, raising=False)
    expected = Path(platformdirs.user_data_dir("segments")) / "ledgers"
    assert default_ledger_path("AllOffice Nordic AB") == expected / "alloffice-nordic-ab.sqlite"
    assert default_ledger_path("Offix AB", evaluation=True).parent == expected / "evaluation"


def test_another_controllers_ledger_is_refused(tmp_path):
    path = tmp_path / "l.sqlite"
    open_ledger(path)
    with pytest.raises(ReleaseRefusedError, match="belongs to controller 'Demo AB', not 'Other'"):
        Ledger.open(path, "Other")
    with pytest.raises(ReleaseRefusedError, match="policy 'alloffice' belongs to controller"):
        Ledger.open(path, CONTROLLER, policy=Policy.load("alloffice"))
    assert Ledger.open(path).controller == CONTROLLER  # reading without naming it


def test_missing_or_foreign_files(tmp_path):
    with pytest.raises(WorkspaceError, match="no privacy ledger at"):
        Ledger.open(tmp_path / "none.sqlite", CONTROLLER, create=False)
    other = tmp_path / "other.sqlite"
    with contextlib.closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
    with pytest.raises(WorkspaceError, match="is not a segments privacy ledger"):
        Ledger.open(other, CONTROLLER)
    text = tmp_path / "text.sqlite"
    text.write_text("not a database at all, just some text to fill a page" * 40)
    with pytest.raises(WorkspaceError, match="is not a segments privacy ledger"):
        Ledger.open(text, CONTROLLER)


def test_there_is_no_way_to_delete_or_reset(ledger):
    ledger.reserve(make_request())
    assert not any(hasattr(Ledger, name) for name in ("delete", "reset", "clear", "remove"))
    with contextlib.closing(sqlite3.connect(ledger.path)) as conn:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM events")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE events SET body = '{}'")
        with pytest.raises(sqlite3.DatabaseError, match="identity cannot be changed"):
            conn.execute("UPDATE meta SET value = 'true' WHERE key = 'evaluation'")
    assert spent(ledger) == 0.25


def test_throwaway_demo_ledger_lives_in_the_workspace_and_says_so(tmp_path):
    ledger = Ledger.for_workspace(
        tmp_path / "ws", CONTROLLER, policy=DEMO, synthetic=synthetic_proof(tmp_path / "ws")
    )
    assert ledger.path == tmp_path / "ws" / "ledger" / "demo-ab.sqlite"
    assert ledger.throwaway and "THROW-AWAY DEMO LEDGER" in ledger.label
    entry = ledger.publish(ledger.reserve(make_request()), files={"a": SHA})
    assert "THROW-AWAY" in entry.label and entry.throwaway
    with pytest.raises(BudgetExceededError, match=r"^\[THROW-AWAY DEMO LEDGER"):
        ledger.reserve(make_request(epsilon=0.9))
    assert "THROW-AWAY" in ledger.balance("customers").label
    assert Ledger.open(ledger.path).throwaway  # the flag is stored in the file


# --- evaluation ledgers ---------------------------------------------------------------------------
def test_evaluation_ledger_only_for_synthetic_data_and_labelled(tmp_path):
    path = tmp_path / "eval.sqlite"
    with pytest.raises(ReleaseRefusedError, match="proven synthetic only.*not proven synthetic"):
        open_ledger(path, evaluation=True)
    ledger = open_ledger(path, evaluation=True, synthetic=synthetic_proof())
    assert ledger.label == EVALUATION_LABEL and "EVALUATION" in repr(ledger)
    reservations = [ledger.reserve(make_request(epsilon=0.5)) for _ in range(5)]
    assert [r.over_budget for r in reservations] == [False, False, True, True, True]
    assert all(r.label == EVALUATION_LABEL for r in reservations)
    assert ledger.balance("customers").period_total.epsilon == 2.5
    assert ledger.balance("customers").label == EVALUATION_LABEL
    assert all(entry.evaluation for entry in ledger.entries())
    with pytest.raises(ReleaseRefusedError, match="not proven synthetic"):
        ledger.reserve(make_request(synthetic=False))
    with pytest.raises(ReleaseRefusedError, match="is an evaluation ledger but a real ledger"):
        open_ledger(path)
    real = tmp_path / "real.sqlite"
    open_ledger(real)
    with pytest.raises(ReleaseRefusedError, match="is a real ledger but an evaluation ledger"):
        open_ledger(real, evaluation=True, synthetic=synthetic_proof())


# --- tamper evidence ------------------------------------------------------------------------------
def _publish_three(ledger: Ledger) -> list[dict]:
    return [
        card_for(ledger.publish(ledger.reserve(make_request(epsilon=0.1)), files={"t": SHA}))
        for _ in range(3)
    ]


def _without_triggers(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for name in ("events_append_only_update", "events_append_only_delete", "meta_fixed_update"):
        conn.execute(f"DROP TRIGGER {name}")
    return conn


def test_the_chain_and_cards_verify(ledger):
    cards = _publish_three(ledger)
    assert ledger.verify_chain() and ledger.verify_cards(cards)
    assert ledger.verify_chain().n_events == 7  # the policy binding, then 3 × reserve, publish
    legacy = [{"release_id": c["release_id"], "ledger_head_hash": c["ledger_head"]} for c in cards]
    assert ledger.verify_cards(legacy)  # the DP release card's key name


def test_an_edited_entry_breaks_the_chain(ledger):
    _publish_three(ledger)
    with contextlib.closing(_without_triggers(ledger.path)) as conn:
        body = conn.execute("SELECT body FROM events WHERE seq = 4").fetchone()[0]
        edited = body.replace('"epsilon":0.1', '"epsilon":0.01')
        assert edited != body
        conn.execute("UPDATE events SET body = ? WHERE seq = 4", (edited,))
    result = ledger.verify_chain()
    assert not result
    assert any("event 4" in p and "was edited" in p for p in result.problems)
    with pytest.raises(ReleaseRefusedError, match="is not sound, so nothing is charged"):
        ledger.reserve(make_request(epsilon=0.01))


def test_edited_columns_and_identity_are_detected(ledger):
    _publish_three(ledger)
    with contextlib.closing(_without_triggers(ledger.path)) as conn:
        conn.execute("UPDATE events SET population = 'nobody' WHERE seq = 1")
        conn.execute("UPDATE meta SET value = 'true' WHERE key = 'evaluation'")
    problems = " | ".join(ledger.verify_chain().problems)
    assert "differ from its hashed content" in problems
    assert "ledger identity" in problems


def test_a_truncated_ledger_is_detected_against_the_cards(ledger):
    cards = _publish_three(ledger)
    with contextlib.closing(_without_triggers(ledger.path)) as conn:
        conn.execute("DELETE FROM events WHERE seq > 4")
    chain = ledger.verify_chain()  # a clean prefix, but the anchors remember the head
    assert not chain and any("truncated or rolled back" in p for p in chain.problems)
    result = ledger.verify_cards(cards)
    assert not result
    assert any("truncated or replaced" in p for p in result.problems)


def test_a_deleted_middle_event_is_detected(ledger):
    _publish_three(ledger)
    with contextlib.closing(_without_triggers(ledger.path)) as conn:
        conn.execute("DELETE FROM events WHERE seq = 2")
    problems = " | ".join(ledger.verify_chain().problems)
    assert "events were removed" in problems and "does not link" in problems


def test_a_replaced_ledger_is_detected_against_the_cards(tmp_path):
    path = tmp_path / "l.sqlite"
    cards = _publish_three(open_ledger(path))
    path.unlink()  # start over: refused while the anchor beside it remembers the ledger ...
    # each refusal cites the policy's own anonymity clause (r13b #5), as the others do
    cited = demo_policy(clauses={**DEMO.clauses, "anonymous_release": ("DEMO-1",)})
    anchored = "is missing but its anchor .* records 7 events"
    with pytest.raises(ReleaseRefusedError, match=anchored) as refused:
        Ledger.open(path, CONTROLLER, policy=cited, init=True)
    assert "clause DEMO-1)" in str(refused.value)
    path.with_name(path.name + ".anchor.json").unlink()  # ... and while the registry does
    with pytest.raises(
        ReleaseRefusedError, match="already has one: .*l.sqlite .*MISSING"
    ) as refused:
        Ledger.open(path, CONTROLLER, policy=cited, init=True)
    assert "clause DEMO-1)" in str(refused.value)
    ledger_module._registry_path().unlink()  # a controller deleting every anchor it has
    fresh = open_ledger(path)
    for card in cards:  # ... and even replay the same release ids
        fresh.publish(fresh.reserve(make_request(release_id=card["release_id"])), {"t": SHA})
    result = fresh.verify_cards(cards)
    assert not result
    assert sum("not in the chain" in p for p in result.problems) == 3
    assert not fresh.verify_cards([{"release_id": "x"}])


# --- concurrency and crashes --------------------------------------------------------------------
def test_threads_sharing_one_ledger_get_anchors_of_their_own_event(tmp_path, monkeypatch):
    """r15 #2: a reservation's anchor (event count, head) was read after the transaction, from
    state another thread sharing the Ledger had moved on; its card then named one event's count
    with another's head, and reopening the ledger with the releases called it rolled back."""
    policy = Policy.load("alloffice")
    releases = tmp_path / "releases"
    ledger = Ledger.for_policy(policy, path=tmp_path / "l.sqlite", init=True, releases=releases)
    write_anchors = Ledger._write_anchors

    def slow_anchors(self, events: int, head: str) -> None:
        time.sleep(0.002)  # a thread pre-empted between its commit and its return
        write_anchors(self, events, head)

    monkeypatch.setattr(Ledger, "_write_anchors", slow_anchors)
    reservations: list = []

    def reserve_twenty() -> None:
        for _ in range(20):
            reservations.append(ledger.reserve(request_for(policy, epsilon=0.001)))

    threads = [threading.Thread(target=reserve_twenty) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(reservations) == 40
    hashes = {event["seq"]: event["hash"] for event in ledger.events()}
    for reservation in reservations:
        anchor = reservation.anchor
        assert hashes[anchor["events"]] == anchor["head"] == reservation.hash
        folder = releases / reservation.release_id
        folder.mkdir(parents=True)
        card = {**reservation.card_fields(), "policy": policy.name, "ledger_label": ""}
        (folder / "card.json").write_text(json.dumps(card, default=str))
    Ledger.for_policy(policy, path=tmp_path / "l.sqlite", releases=releases)  # not refused


def _spend_repeatedly(path: str, sizes: list[float], days: list[int], out) -> None:
    ledger = Ledger.open(
        Path(path), CONTROLLER, policy=DEMO, synthetic=synthetic_proof(), init=True
    )
    granted = 0
    for size, day in zip(sizes, days, strict=True):
        as_of = AS_OF + dt.timedelta(days=day)
        try:
            ledger.reserve(make_request(epsilon=size, as_of=as_of))
        except BudgetExceededError:
            continue
        except ReleaseRefusedError as refused:  # behind another process's latest release
            if "simulated time only moves forward" not in str(refused):
                raise
            continue
        granted += 1
    out.put(granted)


def _run_processes(path: Path, plans: list[tuple[list[float], list[int]]]) -> list[int]:
    out = FORK.Queue()
    procs = [
        FORK.Process(target=_spend_repeatedly, args=(str(path), sizes, days, out))
        for sizes, days in plans
    ]
    for proc in procs:
        proc.start()
    granted = [out.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    return granted


def _assert_no_period_over_budget(ledger: Ledger) -> None:
    """Independent recount: every rolling period ending on any release date."""
    entries = [(e.charged_on, e.request.epsilon or 0.0) for e in ledger.entries()]
    for end, _ in entries:
        start = add_months(end, -12)
        total = math.fsum(eps for day, eps in entries if start < day <= end)
        assert total <= BUDGET, f"period ending {end} spent {total}"


def test_two_processes_cannot_overspend_together(tmp_path):
    path = tmp_path / "l.sqlite"
    open_ledger(path)  # created before the race, as a controller's ledger is
    granted = _run_processes(path, [([0.1] * 14, [0] * 14)] * 2)
    assert sum(granted) == 10  # exactly the budget: 10 × 0.1, no more, none lost
    assert spent(open_ledger(path)) == pytest.approx(1.0)


def test_processes_creating_the_same_new_ledger_share_it(tmp_path):
    path = tmp_path / "new" / "l.sqlite"
    granted = _run_processes(path, [([0.1] * 3, [0] * 3)] * 3)
    assert granted == [3, 3, 3]
    ledger = open_ledger(path)
    assert len(ledger.entries()) == 9 and ledger.verify_chain()


@pytest.mark.parametrize("seed", [1, 2])
def test_processes_with_random_sizes_and_dates_never_overspend(tmp_path, seed):
    rng = np.random.default_rng(seed)
    plans = [
        (rng.uniform(0.02, 0.4, 15).round(3).tolist(), rng.integers(-500, 500, 15).tolist())
        for _ in range(3)
    ]
    path = tmp_path / "l.sqlite"
    open_simulated(path)  # arbitrary dates: a simulated history (synthetic data)
    granted = _run_processes(path, plans)
    ledger = open_ledger(path)
    assert sum(granted) == len(ledger.entries()) > 0
    _assert_no_period_over_budget(ledger)
    assert ledger.verify_chain()


def _reserve_then_hang(path: str, ready) -> None:
    reservation = open_ledger(Path(path)).reserve(make_request(epsilon=0.75))
    ready.put(reservation.release_id)
    time.sleep(120)  # the "query" that never finishes: killed before publication


def _hold_the_write_lock(path: str, ready) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT INTO events VALUES (99, 'half', 'reserve', 'now', 'customers', '2026-06-30',"
        " '2026-06-30', NULL, '{}', 'x', 'y')"
    )
    ready.put("locked")
    time.sleep(120)


def _kill_child(target, path: Path) -> str:
    ready = FORK.Queue()
    child = FORK.Process(target=target, args=(str(path), ready))
    child.start()
    try:
        message = ready.get(timeout=60)
    finally:
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(timeout=30)
    assert child.exitcode == -signal.SIGKILL
    return message


def test_a_crash_between_reservation_and_publication_leaves_the_charge_counted(tmp_path):
    path = tmp_path / "l.sqlite"
    open_ledger(path)
    release_id = _kill_child(_reserve_then_hang, path)
    ledger = open_ledger(path)
    assert ledger.entry(release_id).status == "reserved"
    assert spent(ledger) == 0.75
    with pytest.raises(BudgetExceededError, match="spent ε = 0.75"):
        ledger.reserve(make_request(epsilon=0.5))
    assert ledger.verify_chain()


def test_a_crash_inside_the_transaction_leaves_nothing_half_written(tmp_path):
    path = tmp_path / "l.sqlite"
    open_ledger(path)
    assert _kill_child(_hold_the_write_lock, path) == "locked"
    ledger = open_ledger(path)
    assert ledger.entries() == [] and ledger.verify_chain()
    ledger.reserve(make_request())  # the lock died with the process
    assert len(ledger.entries()) == 1


# --- the property: no sequence of releases spends more than the budget ---------------------------
edge_days = st.sampled_from([0, 1, 28, 29, 30, 31, 181, 364, 365, 366, -1, -365, -366])
requests = st.lists(
    st.tuples(
        st.one_of(st.floats(0.01, 0.6), st.sampled_from([0.1, 0.25, 0.5, 1.0])),
        st.one_of(st.integers(-800, 800), edge_days),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(requests)
def test_property_no_sequence_of_releases_overspends(tmp_path_factory, sequence):
    ledger = open_simulated(tmp_path_factory.mktemp("prop") / "l.sqlite")
    accepted: list[tuple[dt.date, float]] = []
    for size, day in sequence:
        as_of = dt.date(2026, 1, 31) + dt.timedelta(days=day)
        if accepted and as_of < max(d for d, _ in accepted):
            # simulated time only moves forward: behind the latest release is refused
            with pytest.raises(ReleaseRefusedError, match="simulated time only moves forward"):
                ledger.reserve(make_request(epsilon=size, as_of=as_of))
            continue
        candidate = [*accepted, (as_of, size)]
        # The model: the new release fits iff every period containing it stays in budget.
        fits = all(
            math.fsum(e for d, e in candidate if add_months(end, -12) < d <= end) <= BUDGET
            for end, _ in candidate
            if end >= as_of and add_months(end, -12) < as_of
        )
        try:
            ledger.reserve(make_request(epsilon=size, as_of=as_of))
        except BudgetExceededError:
            assert not fits
        else:
            assert fits
            accepted.append((as_of, size))
    _assert_no_period_over_budget(ledger)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(
        st.lists(st.tuples(st.floats(0.05, 0.5), st.integers(-400, 400)), min_size=1, max_size=8),
        min_size=2,
        max_size=3,
    )
)
def test_property_several_processes_never_overspend(tmp_path_factory, plans):
    path = tmp_path_factory.mktemp("procs") / "l.sqlite"
    open_simulated(path)
    split = [([size for size, _ in plan], [day for _, day in plan]) for plan in plans]
    granted = _run_processes(path, split)
    ledger = open_ledger(path)
    assert sum(granted) == len(ledger.entries()) >= 1  # the first request always fits
    _assert_no_period_over_budget(ledger)


# --- the CLI ------------------------------------------------------------------------------------
def test_cli_shows_balance_rolling_totals_and_history(tmp_path, capsys, clock):
    clock.set("2025-01-31")
    ledger = open_ledger(tmp_path / "ledger.sqlite")  # binds the policy on this day
    ledger.reserve(make_request(epsilon=0.2, as_of="2025-01-31"))
    clock.set(AS_OF)
    ledger.publish(ledger.reserve(make_request(epsilon=0.3)), files={"t": SHA})
    assert run_cli("--ledger", str(ledger.path), "--history") == 0
    out = capsys.readouterr().out
    assert "Privacy ledger of Demo AB" in out and "hash chain verified" in out
    assert "rolling period (2025-06-30, 2026-06-30]: ε = 0.3" in out
    assert "window of 24 months (2024-06-30, 2026-06-30]: ε = 0.5" in out
    assert "remaining ε = 0.7" in out
    assert "zCDP releases add in ρ" in out  # the accounting rule is stated
    assert out.count("published") >= 2 and "reserved" in out and "laplace" in out
    assert (
        run_cli("--ledger", str(ledger.path), "--json", "--history", "--as-of", "2025-02-01") == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["balances"][0]["period_total"]["epsilon"] == 0.2
    assert len(report["history"]) == 2 and report["verification"]["ok"]


def test_cli_labels_evaluation_ledgers_and_checks_cards(tmp_path, capsys):
    ledger = open_ledger(tmp_path / "eval.sqlite", evaluation=True, synthetic=synthetic_proof())
    reservation = ledger.reserve(make_request())
    cards = tmp_path / "releases" / reservation.release_id
    cards.mkdir(parents=True)
    (cards / "t").write_text("released table")
    card = {"release_id": reservation.release_id, "ledger_head_hash": reservation.hash}
    (cards / "card.json").write_text(json.dumps(card))
    files = {name: sha256_file(cards / name) for name in ("t", "card.json")}
    ledger.publish(reservation, files=files, card="card.json")
    assert run_cli("--ledger", str(ledger.path), "--cards", str(tmp_path / "releases")) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert EVALUATION_LABEL in lines[0] and EVALUATION_LABEL in lines[-1]
    assert "hash chain and 1 release cards verified" in out
    (cards / "card.json").write_text(json.dumps({**card, "ledger_head_hash": "0" * 64}))
    assert run_cli("--ledger", str(ledger.path), "--cards", str(tmp_path / "releases")) == 1
    out = capsys.readouterr().out
    assert "PROBLEM" in out and "card.json differs from what was published" in out


def test_cli_finds_the_policy_ledger_and_explains_a_missing_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(LEDGER_DIR_ENV, str(tmp_path))
    with pytest.raises(WorkspaceError, match="no privacy ledger at"):
        run_cli("--policy", "offix")
    with pytest.raises(WorkspaceError, match="no privacy ledger in"):
        run_cli()
    policy = Policy.load("offix")
    Ledger.for_policy(policy)
    assert run_cli("--policy", "offix") == 0
    assert "Offix AB" in capsys.readouterr().out
    assert run_cli() == 0  # every ledger in the folder
    assert "Offix AB" in capsys.readouterr().out
    workspace = tmp_path / "ws"
    Ledger.for_workspace(workspace, CONTROLLER, synthetic=synthetic_proof(workspace))
    assert run_cli("--workspace", str(workspace), "--json") == 0
    assert json.loads(capsys.readouterr().out)["ledger"]["throwaway"] is True
