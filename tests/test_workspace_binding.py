"""Issue 13, the holes rev13b left: what a release is charged for is bound to the workspace
it reads, whatever objects a Python caller passes.

1. A signed synthetic proof of workspace A does not open (or feed) a demo or evaluation
   ledger for workspace B.
2. Frames under ``W/.history`` are released only when a signed replay record binds them to
   this workspace's raw data.
3. A signed prepared folder of another workspace, copied in, charges no ledger (the one
   library check every release goes through: :func:`segments.provenance.signed_record`
   compares the raw files it names with ``W/raw/`` now).

Each attack charged a ledger on main before the fix; each is now refused before anything
is charged, and the same call on the genuine workspace is charged (the tests can fail).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable

import polars as pl
import pytest
from reader_jobs import (
    AS_OF,
    MONTH,
    PURPOSES,
    kanon_release,
    monthly_release,
    prepared_copy,
    private_kmeans,
)
from release_helpers import release_context

from segments.exceptions import ReleaseRefusedError
from segments.policy import Policy
from segments.privacy.ledger import Ledger
from segments.workspace import Workspace, sha256_file


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.load("alloffice")


def _other_people(raw_from: Workspace, root) -> Workspace:
    """Another dataset: the generated raw files with one customer's municipality changed
    (not what the generator makes, so not proven synthetic)."""
    ws = Workspace(root)
    shutil.copytree(raw_from.raw, ws.raw)
    path = ws.raw_table("customers")
    customers = pl.read_parquet(path)
    column = "municipality_code"
    first = customers[column][0]
    other = next(v for v in customers[column] if v != first)
    customers.with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.lit(other))
        .otherwise(pl.col(column))
        .alias(column)
    ).write_parquet(path)
    manifest = json.loads(ws.manifest.read_text(encoding="utf-8"))  # as an attacker would
    manifest["files"]["customers.parquet"] = sha256_file(path)
    ws.manifest.write_text(json.dumps(manifest), encoding="utf-8")
    return ws


@pytest.fixture(scope="module")
def genuine(small_raw, tmp_path_factory) -> Workspace:
    """Generated data, prepared for the three purposes the readers use (read-only)."""
    return prepared_copy(small_raw, tmp_path_factory.mktemp("genuine") / "ws")


OTHER_STEWARD_KEY = "the other controller's steward key, 32+ bytes"


@pytest.fixture(scope="module")
def other(genuine, tmp_path_factory) -> Workspace:
    """Another workspace's people, prepared in their own workspace (read-only)."""
    from segments.prepare import prepare

    ws = _other_people(genuine, tmp_path_factory.mktemp("other") / "ws")
    for purpose in PURPOSES:  # not proven: a steward's key
        prepare(ws, "alloffice", purpose, AS_OF, key=OTHER_STEWARD_KEY)
    return ws


def _bounds(ws: Workspace, policy: Policy, ledger: Ledger) -> object:
    from segments.privacy.policy_bounds import choose_policy_bounds

    return choose_policy_bounds(
        ws,
        policy,
        ledger,
        purpose="statistics",
        recipient="analytics",
        as_of=AS_OF,
        epsilon=0.5,
        ceilings={
            "spend_bound_sek": 1e6,
            "cell_spend_bound_sek": 1e5,
            "cell_units_bound": 1e4,
            "feature_bounds.frequency_orders": 1e3,
            "feature_bounds.avg_basket_sek": 1e5,
        },
    )


READERS: dict[str, tuple[str, Callable[[Workspace, Policy, Ledger], object]]] = {
    "monthly release": ("statistics", monthly_release),
    "k-anonymous job": ("microdata", kanon_release),
    "DP k-means job": ("segmentation", private_kmeans),
    "private policy bounds": ("statistics", _bounds),
}


def _nothing_charged(ledger: Ledger, ws: Workspace) -> None:
    assert ledger.entries() == []
    written = sorted(ws.releases.rglob("*")) if ws.releases.exists() else []
    lock = ws.releases / "archive" / ".lock"  # the archive's lock, taken before the check
    assert [p for p in written if p not in (lock, lock.parent)] == []
    assert not (ws.segments / "private").exists()


# --- 1. a proof is about one workspace's raw data ----------------------------------------------
def test_attack_a_proof_of_another_workspace_opens_no_demo_ledger(genuine, tmp_path, policy):
    from segments.privacy.synthetic import prove_synthetic

    proof = prove_synthetic(genuine)
    assert proof and proof.signed and proof.is_for(genuine)
    fake = _other_people(genuine, tmp_path / "fake")
    assert not prove_synthetic(fake) and not proof.is_for(fake)
    ids = policy.clauses_for("anonymous_release")  # every refusal cites it (r13b #5)
    for kind in ({"evaluation": True}, {}):
        with pytest.raises(ReleaseRefusedError, match="made for other raw data") as refused:
            Ledger.for_workspace(fake, policy.controller, synthetic=proof, policy=policy, **kind)
        assert ids and f"clause {', '.join(ids)})" in str(refused.value)
    with pytest.raises(ReleaseRefusedError, match="made for other raw data"):
        Ledger.open(
            tmp_path / "demo.sqlite",
            policy.controller,
            throwaway=True,
            synthetic=proof,
            workspace=fake.root,
        )
    assert not (fake.root / "ledger").exists() and not (tmp_path / "demo.sqlite").exists()
    # the same proof opens the ledger of the workspace it is about
    shutil.copytree(genuine.raw, tmp_path / "mine" / "raw")
    assert Ledger.for_workspace(
        tmp_path / "mine", policy.controller, synthetic=proof, policy=policy
    ).simulated_time


@pytest.mark.parametrize("reader", sorted(READERS))
def test_attack_a_demo_ledger_proven_for_one_workspace_charges_nothing_for_another(
    genuine, other, tmp_path, policy, reader
):
    """A demo ledger opened (without a workspace) with A's proof, handed to a release of B:
    B's real data would be dated as the caller likes (simulated time)."""
    from segments.privacy.synthetic import prove_synthetic

    _, run = READERS[reader]
    ledger = Ledger.open(
        tmp_path / "demo.sqlite",
        policy.controller,
        throwaway=True,
        synthetic=prove_synthetic(genuine),
        policy=policy,
    )
    with pytest.raises(
        ReleaseRefusedError, match="synthetic proof about other raw data"
    ) as refused:
        run(other, policy, ledger)
    ids = policy.clauses_for("anonymous_release")  # cited from the policy (r13b #5)
    assert ids and f"clause {', '.join(ids)})" in str(refused.value)
    _nothing_charged(ledger, other)


# --- 3. another workspace's signed prepared folder ----------------------------------------------
@pytest.mark.parametrize("reader", sorted(READERS))
def test_attack_another_workspaces_signed_prepared_folder_charges_no_ledger(
    genuine, tmp_path, policy, reader
):
    """B holds other raw data; A's signed folder (every hash right) is copied into B and B
    is released on the controller's ledger, as any Python caller with a ledger can."""
    purpose, run = READERS[reader]
    target = _other_people(genuine, tmp_path / "b")
    shutil.copytree(genuine.prepared_dir(purpose), target.prepared_dir(purpose))
    ledger = Ledger.for_policy(policy)
    with pytest.raises(ReleaseRefusedError, match="prepared from other raw data"):
        run(target, policy, ledger)
    _nothing_charged(ledger, target)


@pytest.mark.parametrize("reader", sorted(READERS))
def test_the_workspaces_own_prepared_frames_are_charged(genuine, tmp_path, policy, reader):
    purpose, run = READERS[reader]
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(genuine.raw, ws.raw)
    shutil.copytree(genuine.prepared_dir(purpose), ws.prepared_dir(purpose))
    ledger = Ledger.for_workspace(ws, policy.controller, synthetic=True, policy=policy)
    run(ws, policy, ledger)
    assert len(ledger.entries()) == 1


def test_raw_data_replaced_after_prepare_is_refused(genuine, tmp_path, policy):
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(genuine.raw, ws.raw)
    shutil.copytree(genuine.prepared_dir("statistics"), ws.prepared_dir("statistics"))
    (ws.raw / "notes.txt").write_text("an extract added after prepare", encoding="utf-8")
    ledger = Ledger.for_policy(policy)
    with pytest.raises(ReleaseRefusedError, match="prepared from other raw data"):
        monthly_release(ws, policy, ledger)
    _nothing_charged(ledger, ws)


# --- 2. the backfill's replay folder ---------------------------------------------------------
def _replay_release(ws: Workspace, policy: Policy, ledger: Ledger) -> object:
    from segments.privacy.archive import release_month
    from segments.privacy.specs import PrivacyParams

    return release_month(
        release_context(ledger, ws, policy, purpose="statistics", recipient="purchasing"),
        MONTH,
        as_of=dt.date(2026, 10, 1),
        params=PrivacyParams.from_policy(policy, "statistics"),
        prepared=ws.root / ".history" / "prepared" / "statistics",
    )


def test_attack_other_data_prepared_under_history_is_refused(genuine, other, tmp_path, policy):
    """Another dataset's raw files put in W/.history and prepared there (prepare signs them,
    bound to the replay's raw files) were released as this workspace's history."""
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(genuine.raw, ws.raw)
    replay = Workspace(ws.root / ".history")
    shutil.copytree(other.raw, replay.raw)
    shutil.copytree(other.prepared_dir("statistics"), replay.prepared_dir("statistics"))
    ledger = Ledger.for_workspace(ws, policy.controller, evaluation=True, synthetic=True)
    with pytest.raises(ReleaseRefusedError, match="a replay not bound to this workspace"):
        _replay_release(ws, policy, ledger)
    _nothing_charged(ledger, ws)


def test_a_replay_rewound_from_this_workspace_is_released(genuine, tmp_path, policy):
    from segments.prepare import prepare
    from segments.prepare.history import rewind_raw
    from segments.prepare.pseudonym import load_key
    from segments.privacy.synthetic import prove_synthetic
    from segments.provenance import REPLAY_FILE, verify_replay

    ws = Workspace(tmp_path / "ws")
    shutil.copytree(genuine.raw, ws.raw)
    replay = Workspace(ws.root / ".history")
    rewind_raw(ws, dt.date(2026, 9, 30), replay)
    assert verify_replay(ws, replay) is None
    # its rows are this workspace's, dated back: proven through the signed replay record
    proof = prove_synthetic(replay)
    assert proof and "rewound (signed) from" in proof.reason, proof.reason
    # as the backfill does: the rewound rows are this workspace's, so is their key
    key = load_key(workspace=ws, synthetic_proof=prove_synthetic)
    prepare(replay, policy, "statistics", dt.date(2026, 9, 30), key=key)
    ledger = Ledger.for_workspace(ws, policy.controller, evaluation=True, synthetic=True)
    _replay_release(ws, policy, ledger)
    assert len(ledger.entries()) == 1
    # an edited replay record is no longer the replay's
    path = replay.root / REPLAY_FILE
    path.write_text(path.read_text().replace("2026-09-30", "2026-09-29"), encoding="utf-8")
    assert "not signed" in str(verify_replay(ws, replay))
    assert not prove_synthetic(replay)  # nor is an unsigned replay proven synthetic


# --- the people belong to one controller name, from Python as from the CLI ---------------------
@pytest.mark.parametrize("reader", sorted(READERS))
def test_attack_a_renamed_policy_gets_no_fresh_budget_from_python(
    genuine, tmp_path, policy, reader
):
    """The CLI binds a workspace's people to the first controller name that releases on them;
    a Python caller passing a renamed copy of the policy and its (fresh) ledger skipped that."""
    from pathlib import Path

    purpose, run = READERS[reader]
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(genuine.raw, ws.raw)
    shutil.copytree(genuine.prepared_dir(purpose), ws.prepared_dir(purpose))
    first = Ledger.for_policy(policy)
    if run is monthly_release:  # another month: the archive alone refuses a month twice
        monthly_release(ws, policy, first, dt.date(2026, 8, 1))
    else:
        run(ws, policy, first)
    assert len(first.entries()) == 1
    renamed = tmp_path / "alloffice-renamed.toml"
    renamed.write_text(
        Path(policy.path)
        .read_text(encoding="utf-8")
        .replace('"AllOffice Nordic AB"', '"AllOffice Nordic Two AB"'),
        encoding="utf-8",
    )
    other_name = Policy.load(str(renamed))
    fresh = Ledger.for_policy(other_name)
    released = sorted(ws.releases.iterdir()) if ws.releases.exists() else []
    with pytest.raises(
        ReleaseRefusedError, match="already bound to controller 'AllOffice Nordic AB'"
    ):
        run(ws, other_name, fresh)
    assert fresh.entries() == []
    assert (sorted(ws.releases.iterdir()) if ws.releases.exists() else []) == released
