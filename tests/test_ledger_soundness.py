"""Issue 13 (items 1, 4, 5, 8) and issue 18 (item 2): every attack on the ledger's soundness,
reproduced, now refused before anything is charged; reconciliation of interrupted releases."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from ledger_helpers import CONTROLLER, TODAY, demo_policy, install_clock, request_for, run_cli
from prepared_frames import synthetic_proof
from privacy_params import edited_policy

from segments.exceptions import BudgetExceededError, ReleaseRefusedError, WorkspaceError
from segments.policy import Policy
from segments.privacy import ledger as ledger_module
from segments.privacy.ledger import Ledger, ReleaseRequest, default_ledger_path
from segments.privacy.publishing import begin
from segments.workspace import sha256_file

DEMO = demo_policy()


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    return install_clock(monkeypatch, TODAY)


def request(**changes) -> ReleaseRequest:
    return request_for(DEMO, **{"epsilon": 0.25, "mechanism": "laplace", **changes})


def controller_ledger(tmp_path: Path, policy: Policy = DEMO) -> Ledger:
    return Ledger.open(tmp_path / "l.sqlite", CONTROLLER, policy=policy, init=True)


def _without_triggers(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER events_append_only_update")
    conn.execute("DROP TRIGGER events_append_only_delete")
    return conn


# --- 13.5: a tampered, missing or rolled-back ledger never spends ----------------------------
def test_attack_moving_the_date_column_frees_nothing(tmp_path):
    """The budget query summed an unhashed as_of column: moving it freed a full budget."""
    ledger = controller_ledger(tmp_path)
    for _ in range(4):
        ledger.reserve(request())
    with contextlib.closing(_without_triggers(ledger.path)) as conn:
        conn.execute("UPDATE events SET charged_on = '2020-01-01', as_of = '2020-01-01'")
    for fresh in (ledger, Ledger.open(ledger.path, CONTROLLER, policy=DEMO)):
        with pytest.raises(ReleaseRefusedError, match="not sound, so nothing is charged"):
            fresh.reserve(request())
    assert run_cli("--ledger", str(ledger.path)) == 1


def test_attack_an_edited_loss_in_an_old_event_is_refused(tmp_path):
    ledger = controller_ledger(tmp_path)
    for _ in range(4):
        ledger.reserve(request())
    with contextlib.closing(_without_triggers(ledger.path)) as conn:
        body = conn.execute("SELECT body FROM events WHERE seq = 2").fetchone()[0]
        conn.execute(
            "UPDATE events SET body = ? WHERE seq = 2",
            (body.replace('"epsilon":0.25', '"epsilon":0.0'),),
        )
    with pytest.raises(ReleaseRefusedError, match="event 2 .*was edited"):
        ledger.reserve(request())


def test_attack_a_rolled_back_ledger_file_is_refused(tmp_path):
    ledger = controller_ledger(tmp_path)
    ledger.reserve(request(epsilon=0.5))
    backup = tmp_path / "backup.sqlite"
    shutil.copy(ledger.path, backup)
    ledger.reserve(request(epsilon=0.5))  # the budget is now spent
    shutil.copy(backup, ledger.path)  # roll the file back to free it
    with pytest.raises(ReleaseRefusedError, match="truncated or rolled back"):
        Ledger.open(ledger.path, CONTROLLER, policy=DEMO).reserve(request(epsilon=0.5))
    assert run_cli("--ledger", str(ledger.path)) == 1


def test_attack_a_deleted_ledger_is_not_recreated(tmp_path):
    ledger = controller_ledger(tmp_path)
    ledger.reserve(request(epsilon=1.0))
    ledger.path.unlink()
    with pytest.raises(ReleaseRefusedError, match="missing but its anchor"):
        controller_ledger(tmp_path)
    with pytest.raises(ReleaseRefusedError, match="missing but its anchor"):
        run_cli("--ledger", str(ledger.path))
    assert not ledger.path.exists()


def test_attack_over_budget_ledger_exits_non_zero(tmp_path, capsys):
    """`segments ledger` printed OVER BUDGET and exited 0: a tightened policy leaves the
    spending above the new budget, and the command now fails."""
    policy = Policy.load("offix")
    ledger = Ledger.for_policy(policy)
    ledger.reserve(request_for(policy, epsilon=1.5))
    assert run_cli("--policy", "offix") == 0
    tight = edited_policy(tmp_path, ("budget_epsilon = 2.0", "budget_epsilon = 1.0"), name="offix")
    assert run_cli("--policy", str(tight.path), "--adopt-policy") == 1  # a tightening is recorded
    out = capsys.readouterr().out
    assert "OVER BUDGET" in out


def _cites_anonymity_clause(error: BaseException, policy: Policy) -> bool:
    """The refusal names ``policy``'s own anonymity clause ids (never a literal id)."""
    ids = policy.clauses_for("anonymous_release")
    return bool(ids) and f"clause {', '.join(ids)})" in str(error)


# --- 13.4: one ledger per controller, bound to its policy -------------------------------------
def test_attack_a_new_ledger_file_for_the_controller_is_refused(tmp_path):
    policy = Policy.load("offix")
    Ledger.for_policy(policy)  # the controller's ledger, at its default path, registered
    new = tmp_path / "fresh.sqlite"
    with pytest.raises(ReleaseRefusedError, match=r"already has one: .*offix-ab\.sqlite") as e:
        Ledger.for_policy(policy, path=new)
    assert _cites_anonymity_clause(e.value, policy)  # the rule it protects, from the policy
    with pytest.raises(ReleaseRefusedError, match="already has one"):
        Ledger.for_policy(policy, path=new, init=True)  # not even explicitly
    assert not new.exists()


def test_a_first_ledger_at_another_path_needs_explicit_initialisation(tmp_path):
    policy = Policy.load("offix")
    new = tmp_path / "elsewhere.sqlite"
    with pytest.raises(ReleaseRefusedError, match="initialised explicitly"):
        Ledger.for_policy(policy, path=new)
    ledger = Ledger.for_policy(policy, path=new, init=True)
    with pytest.raises(ReleaseRefusedError, match=r"already has one: .*elsewhere\.sqlite"):
        Ledger.for_policy(policy)  # the default path is no way around it either
    moved = tmp_path / "moved.sqlite"
    shutil.copy(ledger.path, moved)
    with pytest.raises(ReleaseRefusedError, match="registered at") as e:
        Ledger.for_policy(policy, path=moved)
    assert _cites_anonymity_clause(e.value, policy)
    assert Ledger.for_policy(policy, path=moved, init=True).ledger_id == ledger.ledger_id


def test_attack_the_ledger_dir_variable_does_not_move_the_registry(tmp_path, monkeypatch):
    policy = Policy.load("offix")
    Ledger.for_policy(policy)
    monkeypatch.setenv(ledger_module.LEDGER_DIR_ENV, str(tmp_path / "elsewhere"))
    with pytest.raises(ReleaseRefusedError, match="already has one"):
        Ledger.for_policy(policy)


@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        ("alloffice", "budget_epsilon = 4.0", "budget_epsilon = 1000.0"),
        ("alloffice", "budget_period_months = 12", "budget_period_months = 1"),
        ("allkontor", "delta = 1e-7", "delta = 1e-4"),
    ],
)
def test_attack_a_loosened_copy_of_the_policy_is_refused(tmp_path, name, old, new):
    """A copy of the policy naming the same controller with a looser budget or δ."""
    policy = Policy.load(name)
    ledger = Ledger.for_policy(policy)
    ledger.reserve(request_for(policy, epsilon=0.5))
    copy = edited_policy(tmp_path, (old, new), name=name)
    assert copy.controller == policy.controller and copy.name == policy.name
    with pytest.raises(ReleaseRefusedError, match="is bound to") as opened:
        Ledger.for_policy(copy)
    with pytest.raises(ReleaseRefusedError, match="is bound to") as reserved:
        ledger.reserve(request_for(copy, epsilon=0.5), policy=copy)
    with pytest.raises(ReleaseRefusedError, match="may only tighten") as adopted:
        ledger.change_policy(copy)
    # each refusal cites the policy's own anonymity clause (r13b #5), as the others do
    for refused in (opened, reserved, adopted):
        assert _cites_anonymity_clause(refused.value, policy), refused.value
    assert len(ledger.entries()) == 1


def test_the_private_segments_k_and_iterations_are_adopted_not_refused_as_a_loosening(tmp_path):
    """Offix's private segments moved from k 5 / 5 iterations to k 6 / 3 (issue 14): a
    controller's ledger bound to the earlier file refused the shipped one, and --adopt-policy
    refused it as a loosening, though neither parameter moves any privacy loss (each fit is
    charged at private_segments_epsilon). The change is now adopted and recorded; until then
    the ledger still refuses the changed file; the segmentation's ε is still a loosening."""
    policy = Policy.load("offix")
    ledger = Ledger.for_policy(policy)
    ledger.reserve(request_for(policy, epsilon=0.1))
    earlier = edited_policy(
        tmp_path,
        ("private_segments_k = 6", "private_segments_k = 5"),
        ("private_segments_iterations = 3", "private_segments_iterations = 5"),
        name="offix",
    )
    with pytest.raises(ReleaseRefusedError, match="differs from the policy") as refused:
        Ledger.for_policy(earlier)
    assert "privacy.private_segments_k 6 → 5" in str(refused.value)
    assert "privacy.private_segments_iterations 3 → 5" in str(refused.value)
    events = len([e for e in ledger.events() if e["event"] == "policy"])
    ledger.change_policy(earlier)
    assert len([e for e in ledger.events() if e["event"] == "policy"]) == events + 1
    ledger.reserve(request_for(earlier, epsilon=0.1), policy=earlier)
    assert Ledger.for_policy(earlier).ledger_id == ledger.ledger_id
    with pytest.raises(ReleaseRefusedError, match="differs from the policy"):
        ledger.reserve(request_for(policy, epsilon=0.1), policy=policy)  # not silently mixed
    (tmp_path / "eps").mkdir()
    louder = edited_policy(
        tmp_path / "eps", ("private_segments_epsilon = 0.5", "private_segments_epsilon = 1.0"),
        name="offix",
    )  # fmt: skip
    with pytest.raises(ReleaseRefusedError, match="loosens rules"):
        ledger.change_policy(louder)


def test_a_policy_may_loosen_once_a_full_period_has_passed(tmp_path, clock):
    policy = Policy.load("alloffice")
    ledger = Ledger.for_policy(policy)
    looser = edited_policy(tmp_path, ("budget_epsilon = 4.0", "budget_epsilon = 5.0")).path
    with pytest.raises(ReleaseRefusedError, match="is bound to"):
        Ledger.for_policy(Policy.load(str(looser)))
    with pytest.raises(ReleaseRefusedError, match="may only tighten"):
        ledger.change_policy(Policy.load(str(looser)))
    clock.set(dt.date(2027, 7, 1))
    assert ledger.change_policy(Policy.load(str(looser)))["budget_epsilon"] == 5.0
    events = [e for e in ledger.events() if e["event"] == "policy"]
    assert len(events) == 2 and events[-1]["data"]["policy_sha256"] == sha256_file(looser)


def test_attack_a_throwaway_ledger_deleted_in_a_workspace_with_cards(tmp_path, monkeypatch):
    """Deleting W/ledger reset the demo ledger; its release cards now refuse a fresh one."""
    from segments.cli.common import open_ledger
    from segments.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    policy = Policy.load("alloffice")
    ledger = Ledger.for_workspace(
        ws, policy.controller, policy=policy, synthetic=synthetic_proof(ws)
    )
    reservation = ledger.reserve(request_for(policy, epsilon=1.0))
    folder = ws.releases / reservation.release_id
    folder.mkdir(parents=True)
    card = {"policy": "alloffice", "ledger_label": ledger.label, **reservation.card_fields()}
    (folder / "card.json").write_text(json.dumps(card))
    shutil.rmtree(ws.root / "ledger")

    class Args:
        workspace = ws
        demo_ledger = True
        evaluation_ledger = False
        ledger = None

    from segments.privacy import synthetic

    proven = synthetic_proof(ws)  # signed, as prove_synthetic would for generated data
    monkeypatch.setattr(synthetic, "prove_synthetic", lambda _ws: proven)
    with pytest.raises(ReleaseRefusedError, match="deleted or replaced"):
        open_ledger(Args, policy)


# --- 13.8: the window -------------------------------------------------------------------------
def test_the_window_is_enforced_and_stated(tmp_path, clock):
    """A window of 18 months at ε = 1 per 12: at most ε = 1.5 over any 18 months."""
    policy = demo_policy(privacy=dataclasses.replace(DEMO.privacy, budget_window_months=18))
    clock.set(dt.date(2025, 1, 1))
    ledger = controller_ledger(tmp_path, policy)  # binds the policy on this day
    first = ledger.reserve(
        request_for(policy, mechanism="laplace", epsilon=1.0, as_of="2025-01-01")
    )
    assert first.window_total.epsilon == 1.0
    assert "over the 18-month window" in first.card_fields()["population_total_loss"]["text"]
    clock.set(dt.date(2026, 1, 2))  # a new 12-month period, inside the 18-month window
    with pytest.raises(BudgetExceededError, match="18-month window .* at most ε = 1.5"):
        ledger.reserve(request_for(policy, mechanism="laplace", epsilon=1.0, as_of="2026-01-02"))
    second = ledger.reserve(
        request_for(policy, mechanism="laplace", epsilon=0.5, as_of="2026-01-02")
    )
    assert second.window_total.epsilon == 1.5


# --- issue 18.2: complete or clearly not -------------------------------------------------------
def _crash_after(tmp_path: Path, stage: str) -> tuple[Path, str]:
    """Reserve and stage a release in a child process that dies at ``stage``."""
    import multiprocessing

    path = tmp_path / "l.sqlite"
    controller_ledger(tmp_path)
    final = tmp_path / "releases" / "r1"

    def child() -> None:
        code = 1
        try:
            ledger = Ledger.open(path, CONTROLLER, policy=DEMO)
            publication = begin(ledger, request(release_id="r1"), policy=DEMO, final=final)
            (publication.staging / "table.parquet").write_bytes(b"table")
            (publication.staging / "card.json").write_text(json.dumps({"release_id": "r1"}))
            if stage == "renamed":
                publication.ledger = None  # die between the rename and the publication
                with contextlib.suppress(AttributeError):
                    publication.complete()
            code = 0
        finally:
            os._exit(code)  # no cleanup: as if killed

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == 0
    return path, "r1"


def test_a_release_killed_before_its_folder_was_complete_is_aborted(tmp_path, capsys):
    path, release_id = _crash_after(tmp_path, "staged")
    assert list((tmp_path / "releases").glob(".r1.*.tmp"))  # the staging folder is left
    assert run_cli("--ledger", str(path)) == 0
    out = capsys.readouterr().out
    assert "release r1 aborted" in out and "the charge still counts" in out
    ledger = Ledger.open(path, CONTROLLER, policy=DEMO)
    entry = ledger.entry(release_id)
    assert entry.status == "aborted"
    assert ledger.balance("customers").period_total.epsilon == 0.25  # still counted
    assert not list((tmp_path / "releases").glob(".r1.*.tmp"))  # swept
    assert ledger.reconcile() == []  # reported once


def test_a_release_killed_after_its_folder_was_complete_is_published(tmp_path):
    path, release_id = _crash_after(tmp_path, "renamed")
    final = tmp_path / "releases" / "r1"
    assert (final / "card.json").exists()
    ledger = Ledger.open(path, CONTROLLER, policy=DEMO)
    assert ledger.entry(release_id).status == "reserved"
    (done,) = ledger.reconcile()
    assert done["action"] == "published"
    entry = ledger.entry(release_id)
    assert entry.status == "published" and entry.card == "card.json"
    assert entry.files["table.parquet"] == sha256_file(final / "table.parquet")
    assert ledger.verify_cards([final / "card.json"])


def test_an_unwritable_release_folder_is_refused_before_any_charge(tmp_path):
    ledger = controller_ledger(tmp_path)
    blocked = tmp_path / "releases"
    blocked.write_text("a file where the releases folder should be")
    with pytest.raises(WorkspaceError, match="is a file, not a folder; nothing was charged"):
        begin(ledger, request(), policy=DEMO, final=blocked / "r")
    assert ledger.entries() == []


def test_too_little_free_space_is_refused_before_any_charge(tmp_path, monkeypatch):
    from segments.privacy import publishing

    ledger = controller_ledger(tmp_path)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        publishing.shutil, "disk_usage", lambda _p: usage._replace(free=1024 * 1024)
    )
    with pytest.raises(WorkspaceError, match="MiB free.*nothing was charged"):
        begin(ledger, request(), policy=DEMO, final=tmp_path / "releases" / "r")
    assert ledger.entries() == []


def test_a_failure_after_the_reservation_aborts_at_once(tmp_path):
    ledger = controller_ledger(tmp_path)
    publication = begin(ledger, request(), policy=DEMO, final=tmp_path / "releases" / "r")
    publication.fail(RuntimeError("the query failed"))
    entry = ledger.entry(publication.release_id)
    assert entry.status == "aborted" and "the query failed" in str(entry.abort_reason)
    assert not publication.staging.exists()
    with pytest.raises(ReleaseRefusedError, match="already aborted"):
        ledger.publish(publication.release_id, files={"t": "a" * 64})


def test_entry_lookup_by_id_and_hash(tmp_path):
    """The API provenance uses: a release id and the hash a derived artefact carries."""
    ledger = controller_ledger(tmp_path)
    reservation = ledger.reserve(request())
    assert ledger.entry(reservation.release_id, entry_hash=reservation.hash).status == "reserved"
    with pytest.raises(KeyError, match="another hash"):
        ledger.entry(reservation.release_id, entry_hash="0" * 64)
    with pytest.raises(KeyError, match="not in ledger"):
        ledger.entry("nope")
    assert default_ledger_path(CONTROLLER) != ledger.path


# --- 13.4: "synthetic" is proven by regenerating the data --------------------------------------
def test_synthetic_is_proven_by_regeneration_not_declared(small_raw, tmp_path):
    from segments.privacy import synthetic
    from segments.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    shutil.copytree(small_raw.raw, ws.raw)
    proof = synthetic.prove_synthetic(ws)
    assert proof and "seed" in proof.reason
    assert not list(ws.root.glob(".synthetic-proof-*"))  # the scratch copy is gone
    synthetic._CACHE.clear()
    assert synthetic.prove_synthetic(ws).key == proof.key  # from the on-disk cache
    # editing the manifest does not help: other parameters give other bytes
    manifest = json.loads(ws.manifest.read_text())
    ws.manifest.write_text(json.dumps({**manifest, "seed": manifest["seed"] + 1}))
    assert not synthetic.prove_synthetic(ws)
    ws.manifest.write_text(json.dumps({**manifest, "synthetic": True}))
    assert synthetic.prove_synthetic(ws)
    # other data under a synthetic manifest fails, whatever the manifest's own hashes say
    orders = ws.raw / "orders.parquet"
    import polars as pl

    table = pl.read_parquet(orders)  # one order moved to another customer
    another = next(c for c in table["customer_id"] if c != table["customer_id"][0])
    moved = pl.when(pl.int_range(pl.len()) == 0).then(another)
    table.with_columns(moved.otherwise(pl.col("customer_id")).alias("customer_id")).write_parquet(
        orders
    )
    files = {**manifest["files"], "orders.parquet": sha256_file(orders)}
    ws.manifest.write_text(json.dumps({**manifest, "files": files}))
    refused = synthetic.prove_synthetic(ws)
    assert not refused and "orders.parquet is not what the generator produces" in refused.reason
    (ws.raw / "manifest.json").unlink()
    assert not synthetic.prove_synthetic(ws)
