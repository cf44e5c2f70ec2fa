"""Issue 13, second hostile review: each attack reproduced, now refused before any charge or
write (rollback + padding, a copied workspace over a deleted ledger, a clock set back, ...)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from ledger_helpers import TODAY, install_clock, request_for
from prepared_frames import synthetic_proof
from privacy_params import edited_policy
from release_helpers import release_context

from segments.exceptions import ReleaseRefusedError
from segments.policy import Policy
from segments.privacy import ledger as ledger_module
from segments.privacy.ledger import Ledger, ReleaseRequest, default_ledger_path


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    return install_clock(monkeypatch, TODAY)


@pytest.fixture
def policy() -> Policy:
    return Policy.load("alloffice")


def request(policy: Policy, epsilon: float = 0.5) -> ReleaseRequest:
    return request_for(policy, epsilon=epsilon)


def write_card(releases: Path, ledger: Ledger, reservation) -> Path:
    folder = releases / reservation.release_id
    folder.mkdir(parents=True)
    card = {"policy": "alloffice", "ledger_label": ledger.label, **reservation.card_fields()}
    (folder / "card.json").write_text(json.dumps(card))
    return folder / "card.json"


# --- 13.4: roll back, then pad up to the anchor's count ---------------------------------------
def test_attack_rollback_then_padding_to_the_cards_count_is_refused(tmp_path, policy):
    releases = tmp_path / "ws" / "releases"
    # opened without the workspace, so the registry does not know its release folder (a
    # known folder refuses the padding open itself: the next test)
    ledger = Ledger.for_policy(policy)
    ledger.reserve(request(policy))
    registry = ledger_module._registry_path()
    kept = (ledger.path, ledger.anchor_path, registry)
    backups = {path: tmp_path / f"backup-{path.name}" for path in kept}
    for original, backup in backups.items():
        shutil.copy(original, backup)
    seen = ledger.reserve(request(policy))  # its card records this count and head
    write_card(releases, ledger, seen)
    for original, backup in backups.items():  # roll back the file, its anchor and the registry
        shutil.copy(backup, original)
    padded = Ledger.for_policy(policy)  # without the workspace: pad with a tiny release
    padded.reserve(request(policy, epsilon=0.01))
    assert len(padded.events()) == seen.anchor["events"]  # the count matches the card's again
    before = padded.events()
    with pytest.raises(ReleaseRefusedError, match=r"clause AO-1.*rolled back and padded"):
        Ledger.for_policy(policy, releases=releases)
    assert padded.events() == before


# --- task 13 item 5: the per-user folder restored from a backup, seen from another workspace ---
def test_attack_a_restored_user_folder_is_refused_from_any_workspace_that_released(
    tmp_path, policy
):
    first, other = tmp_path / "A" / "releases", tmp_path / "B" / "releases"
    ledger = Ledger.for_policy(policy, releases=first)  # the registry now knows A's folder
    write_card(first, ledger, ledger.reserve(request(policy)))
    registry = ledger_module._registry_path()
    kept = (ledger.path, ledger.anchor_path, registry)
    backups = {path: tmp_path / f"backup-{path.name}" for path in kept}
    for original, backup in backups.items():
        shutil.copy(original, backup)
    for _ in range(3):  # spent after the backup, from workspace A
        write_card(
            first, ledger, Ledger.for_policy(policy, releases=first).reserve(request(policy))
        )
    for original, backup in backups.items():  # restore the whole per-user folder
        shutil.copy(backup, original)
    before = Ledger.open(default_ledger_path(policy.controller), create=False).events()
    # opened from workspace B (or from no workspace): A's later cards refuse the rolled-back ledger
    for releases in (other, None):
        with pytest.raises(ReleaseRefusedError, match=r"A/releases.*rolled back"):
            Ledger.for_policy(policy, releases=releases)
    assert Ledger.open(default_ledger_path(policy.controller), create=False).events() == before


# --- 13.5: a copy of the workspace over a deleted ledger and registry -------------------------
def test_attack_a_copied_workspace_over_a_deleted_ledger_creates_nothing(tmp_path, policy):
    import argparse

    from segments.cli.common import open_ledger
    from segments.workspace import Workspace

    ws = Workspace(tmp_path / "W")
    ws.raw.mkdir(parents=True)
    ws.raw_table("customers").write_bytes(b"the people")  # what identifies them (hashed)
    ledger = Ledger.for_policy(policy, releases=ws.releases)
    write_card(ws.releases, ledger, ledger.reserve(request(policy, epsilon=1.0)))
    for path in (ledger.path, ledger.anchor_path, ledger_module._registry_path()):
        path.unlink()
    copy = Workspace(tmp_path / "W2")
    shutil.copytree(ws.root, copy.root)
    args = argparse.Namespace(workspace=copy, ledger=None, demo_ledger=False)
    for attempt in range(2):  # a refusal leaves nothing behind, so the second is refused too
        with pytest.raises(ReleaseRefusedError, match="missing here: the ledger was deleted"):
            open_ledger(args, policy)
        assert not default_ledger_path(policy.controller).exists(), attempt
        assert not ledger.anchor_path.exists()
        assert not ledger_module._registry_path().exists()


# --- 13.6: the clock set back -----------------------------------------------------------------
def test_attack_a_clock_set_back_is_refused(tmp_path, policy, clock):
    ledger = Ledger.for_policy(policy)
    ledger.reserve(request(policy))
    clock.at -= dt.timedelta(days=40)  # back before the last release, to re-open as-of dates
    with pytest.raises(ReleaseRefusedError, match=r"system clock .* is earlier than the ledger"):
        ledger.reserve(request(policy))
    assert len(ledger.entries()) == 1
    clock.at += dt.timedelta(days=41)
    assert ledger.reserve(request(policy)).charged_on == TODAY + dt.timedelta(days=1)


# --- 13.1 and 13.2: what a demo ledger releases is what was proven synthetic -------------------
RELEASE = (
    "release -w {ws} --policy alloffice --purpose statistics --recipient purchasing "
    "--spec customers_by_county_segment --as-of 2026-10-31 --demo-ledger"
)


def _cli(line: str, **fields: object) -> int:
    from segments.cli.main import main

    return main(line.format(**fields).split())


@pytest.fixture
def genuine(small_raw, tmp_path):
    from segments.prepare import prepare
    from segments.workspace import Workspace

    ws = Workspace(tmp_path / "genuine")
    shutil.copytree(small_raw.raw, ws.raw)
    prepare(ws, "alloffice", "statistics", "2026-10-31")
    return ws


def _refused_and_nothing_written(ws, capsys, match: str) -> None:
    assert _cli(RELEASE, ws=ws.root) != 0
    err = capsys.readouterr().err
    assert match in err and "clause AO-1" in err, err
    assert not (ws.root / "ledger").exists() and not ws.releases.exists()


def test_attack_frames_prepared_from_edited_raw_beside_genuine_raw_are_refused(
    genuine, small_raw, tmp_path, capsys
):
    import polars as pl

    from segments.prepare import prepare
    from segments.workspace import Workspace

    edited = Workspace(tmp_path / "edited")
    shutil.copytree(small_raw.raw, edited.raw)
    from segments.workspace import sha256_file

    manifest = json.loads(edited.manifest.read_text())
    for lines in sorted(edited.raw_table("order_lines").glob("month=*/*.parquet")):
        table = pl.read_parquet(lines)
        table.with_columns(pl.col("quantity") * 3).write_parquet(lines)  # the edit
        manifest["files"][lines.relative_to(edited.raw).as_posix()] = sha256_file(lines)
    edited.manifest.write_text(json.dumps(manifest))
    # edited raw is not proven synthetic, so the public demo key is refused: a steward's key
    prepare(
        edited, "alloffice", "statistics", "2026-10-31", key="a steward's key, 32 bytes or more"
    )
    shutil.rmtree(genuine.prepared_dir("statistics"))
    shutil.copytree(edited.prepared_dir("statistics"), genuine.prepared_dir("statistics"))
    _refused_and_nothing_written(genuine, capsys, "prepared from other raw data")
    # forging the record's raw hashes breaks its signature
    record_path = genuine.prepared_dir("statistics") / "provenance.json"
    from segments.privacy.synthetic import raw_hashes

    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "raw": raw_hashes(genuine)}))
    _refused_and_nothing_written(genuine, capsys, "is not signed by `segments prepare`")
    record_path.unlink()  # no record at all
    _refused_and_nothing_written(genuine, capsys, "has no provenance.json")


def test_attack_a_prepared_frame_swapped_after_prepare_is_refused(genuine, capsys):
    frames = genuine.prepared_dir("statistics")
    import polars as pl

    customers = pl.read_parquet(frames / "customers.parquet")
    customers.head(customers.height // 2).write_parquet(frames / "customers.parquet")
    _refused_and_nothing_written(genuine, capsys, "is not the file `segments prepare` wrote")


def test_frames_prepared_from_the_proven_raw_are_released(genuine, capsys):
    assert _cli(RELEASE, ws=genuine.root) == 0, capsys.readouterr().err


def test_attack_a_forged_synthetic_proof_cache_does_not_help(small_raw, tmp_path):
    import polars as pl

    from segments.privacy import synthetic
    from segments.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    shutil.copytree(small_raw.raw, ws.raw)
    customers = ws.raw / "customers.parquet"
    edited = pl.read_parquet(customers).with_columns(  # one row not the generator's
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.lit("Edited"))
        .otherwise(pl.col("first_name"))
        .alias("first_name")
    )
    edited.write_parquet(customers)
    refused = synthetic.prove_synthetic(ws)
    assert not refused
    synthetic._CACHE.clear()
    forged = {"key": refused.key, "proven": True, "reason": "forged"}
    cache = synthetic._cache_dir() / f"{refused.key}.json"
    cache.write_text(json.dumps(forged))  # unsigned
    assert not synthetic.prove_synthetic(ws)
    synthetic._CACHE.clear()
    cache.write_text(json.dumps({**forged, "mac": "0" * 64}))  # a made-up signature
    assert not synthetic.prove_synthetic(ws)
    from segments import provenance

    assert provenance._secret_path().stat().st_mode & 0o077 == 0  # the secret is owner-only


# --- 13.1: the evaluation ledger has a stated cap and the same non-zero exit -------------------
def test_attack_unbounded_spending_on_the_evaluation_ledger_is_refused(tmp_path, capsys):
    from segments.cli.main import main
    from segments.exceptions import BudgetExceededError
    from segments.privacy.ledger import EVALUATION_CAP_FACTOR

    offix = Policy.load("offix")  # budget ε = 2 per 12 months
    ledger = Ledger.for_policy(offix, evaluation=True, synthetic=synthetic_proof())
    cap = offix.privacy.budget_epsilon * EVALUATION_CAP_FACTOR
    ledger.reserve(request(offix, epsilon=cap / 2))
    assert ledger.reserve(request(offix, epsilon=cap / 2)).over_budget  # flagged, recorded
    with pytest.raises(BudgetExceededError, match="evaluation ledger's stated cap"):
        ledger.reserve(request(offix, epsilon=0.5))
    assert len(ledger.entries()) == 2
    assert main(["ledger", "--policy", "offix", "--evaluation"]) == 0
    tight = edited_policy(tmp_path, ("budget_epsilon = 2.0", "budget_epsilon = 1.0"), name="offix")
    assert main(["ledger", "--policy", str(tight.path), "--evaluation", "--adopt-policy"]) == 1
    assert "OVER BUDGET" in capsys.readouterr().out


# --- 13.7: ledger --cards sees a deleted release, an added file and an edited archive ----------
MONTHLY = (
    "release -w {ws} --policy alloffice --purpose statistics --recipient purchasing "
    "--spec monthly_category --month 2026-09-01 --as-of 2026-10-31 --demo-ledger"
)
CARDS = "ledger -w {ws} --policy alloffice --cards {ws}/releases"


@pytest.fixture
def released(genuine, capsys):
    assert _cli(RELEASE, ws=genuine.root) == 0
    assert _cli(MONTHLY, ws=genuine.root) == 0
    assert _cli(CARDS, ws=genuine.root) == 0, capsys.readouterr().out
    capsys.readouterr()
    return genuine


def _folder(ws, prefix: str) -> Path:
    (folder,) = [p for p in ws.releases.iterdir() if p.name.startswith(prefix)]
    return folder


def _cards_fail(ws, capsys, match: str) -> None:
    assert _cli(CARDS, ws=ws.root) == 1
    out = capsys.readouterr().out
    assert match in out, out


def test_attack_a_deleted_release_folder_fails_ledger_cards(released, capsys):
    shutil.rmtree(_folder(released, "customers_by_county_segment"))
    _cards_fail(released, capsys, "a release folder or card was deleted")


def test_attack_a_deleted_release_in_a_copied_workspace_fails_ledger_cards(
    released, tmp_path, capsys
):
    from segments.workspace import Workspace

    copy = Workspace(tmp_path / "copy")
    shutil.copytree(released.root, copy.root)
    (_folder(copy, "customers_by_county_segment") / "card.json").unlink()
    _cards_fail(copy, capsys, "a release folder or card was deleted")


def test_attack_an_extra_file_in_a_release_folder_fails_ledger_cards(released, capsys):
    (_folder(released, "monthly_category") / "extra.csv").write_text("county,count\nX,1\n")
    _cards_fail(released, capsys, "extra.csv is not a file the ledger recorded")


def test_attack_an_edited_archive_fails_ledger_cards(released, capsys):
    import polars as pl

    path = released.archive
    archive = pl.read_parquet(path)
    archive.with_columns(pl.col("sek") * 2).write_parquet(path)
    _cards_fail(released, capsys, "the archive was edited")
    archive.head(0).write_parquet(path)  # rows removed: the archive is derived, so
    # `ledger --cards` rebuilds the published months from their ledger-hashed tables
    assert _cli("ledger -w {ws} --policy alloffice --cards {ws}/releases", ws=released.root) == 0
    assert "release archive repaired" in capsys.readouterr().out
    assert pl.read_parquet(path).sort("month", "category").equals(archive.sort("month", "category"))


# --- 13.9b: segment --private without --as-of after a release ---------------------------------
def test_private_segments_without_as_of_take_the_ledgers_time_after_a_release(
    genuine, policy, clock
):
    """Without --as-of the DP k-means took the data's as-of, which is behind the release the
    controller made today: refused. It now takes the ledger's clock, like a release."""
    import dataclasses

    from segments.prepare import prepare
    from segments.privacy.kmeans import fit_private_segments

    clock.at = dt.datetime(2026, 12, 4, 12, tzinfo=dt.UTC)  # after the data's as-of
    prepare(genuine, "alloffice", "segmentation", "2026-10-31")
    ledger = Ledger.for_policy(policy)
    ledger.reserve(dataclasses.replace(request(policy), as_of=dt.date(2026, 12, 4)))
    result = fit_private_segments(
        release_context(ledger, genuine, policy, purpose="segmentation", recipient="analytics"),
        seed=1,
    )
    assert result.metadata["as_of"] == "2026-12-04"
    assert len(ledger.entries()) == 2


# --- 13.3: a copy of the policy with a renamed controller --------------------------------------
#: a statistics release dated by the ledger's clock (no --as-of)
TODAYS_RELEASE = (
    "release -w {ws} --policy {policy} --purpose statistics --recipient purchasing "
    "--spec customers_by_county_segment"
)
#: AllOffice's policy copied under another controller's name (same people, same data)
RENAMED_CONTROLLER = ('"AllOffice Nordic AB"', '"AllOffice Nordic Two AB"')


def test_attack_a_renamed_controller_gets_no_fresh_budget_on_the_same_data(
    genuine, tmp_path, capsys, clock
):
    clock.at = dt.datetime(2026, 12, 4, 12, tzinfo=dt.UTC)
    assert _cli(TODAYS_RELEASE, ws=genuine.root, policy="alloffice") == 0, capsys.readouterr().err
    renamed = edited_policy(tmp_path, RENAMED_CONTROLLER).path
    assert Policy.load(str(renamed)).controller == "AllOffice Nordic Two AB"
    capsys.readouterr()
    assert _cli(TODAYS_RELEASE, ws=genuine.root, policy=str(renamed)) != 0
    err = capsys.readouterr().err
    assert "already bound to controller 'AllOffice Nordic AB'" in err and "clause AO-1" in err
    assert not default_ledger_path("AllOffice Nordic Two AB").exists()


# --- fix13.2: ... after deleting raw/customers.parquet and editing the report's key_id ----------
def test_attack_renamed_controller_after_deleting_raw_and_editing_key_id_is_refused(
    genuine, tmp_path, capsys, clock
):
    from segments.provenance import population_data_ids

    clock.at = dt.datetime(2026, 12, 4, 12, tzinfo=dt.UTC)
    assert _cli(TODAYS_RELEASE, ws=genuine.root, policy="alloffice") == 0, capsys.readouterr().err
    signed_ids = population_data_ids(genuine)
    genuine.raw_table("customers").unlink()
    report = genuine.prepared_dir("statistics") / "policy_report.json"
    edited = json.loads(report.read_text())
    edited["key_id"] = "0" * len(edited["key_id"])
    report.write_text(json.dumps(edited))
    # the ids come from prepare's signed record: neither the deletion nor the edit changes them
    ids = population_data_ids(genuine)
    assert (
        ids["pseudonymisation key of statistics"]
        == signed_ids["pseudonymisation key of statistics"]
    )
    assert ids["raw customer table of statistics"] == signed_ids["raw customer table"]
    renamed = edited_policy(tmp_path, RENAMED_CONTROLLER).path
    capsys.readouterr()
    assert _cli(TODAYS_RELEASE, ws=genuine.root, policy=str(renamed)) != 0
    err = capsys.readouterr().err
    assert "refused before anything was charged" in err and "clause AO-1" in err, err
    assert not default_ledger_path("AllOffice Nordic Two AB").exists()
    # and with the signed record removed, nothing identifies the people: refused, not skipped
    (genuine.prepared_dir("statistics") / "provenance.json").unlink()
    with pytest.raises(ReleaseRefusedError, match="no signed provenance record"):
        population_data_ids(genuine)


# --- 13.9d: the survey's "2 accounts per person" is checked on the linked data -----------------
def test_attack_a_person_with_three_accounts_refuses_the_survey_before_any_charge(
    small_raw, tmp_path, policy, clock
):
    import polars as pl

    from segments.exceptions import PolicyError
    from segments.privacy.releases import plan_release
    from segments.privacy.specs import PrivacyParams, get_spec
    from segments.workspace import Workspace

    clock.at = dt.datetime(2026, 12, 4, 12, tzinfo=dt.UTC)
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(small_raw.raw, ws.raw)
    ledger = Ledger.for_policy(policy)

    def survey_release() -> None:
        with plan_release(
            get_spec("survey_experience"),
            PrivacyParams.from_policy(policy, "statistics"),
            surveys=ws.raw_table("surveys"),
            as_of=dt.date(2026, 11, 1),
            workspace=ws,
        ) as plan:
            plan.execute(
                release_context(ledger, ws, policy, purpose="statistics", recipient="purchasing")
            )

    survey_release()  # the generated data keep the bound: released
    assert len(ledger.entries()) == 1
    customers = pl.read_parquet(ws.raw_table("customers"))
    private = customers.filter(pl.col("customer_type") == "private").head(3)
    shared = private["personnummer"][0]
    customers = customers.with_columns(
        pl.when(pl.col("customer_id").is_in(private["customer_id"].implode()))
        .then(pl.lit(shared))
        .otherwise(pl.col("personnummer"))
        .alias("personnummer")
    )
    customers.write_parquet(ws.raw_table("customers"))  # one person, three accounts
    with pytest.raises(PolicyError, match=r"accounts are one person' \(AO-3\).*more than 2"):
        survey_release()
    assert len(ledger.entries()) == 1  # nothing charged


# --- 13.9c: a Python caller cannot forge a DP k-means entry ------------------------------------
def test_attack_a_forged_dp_kmeans_entry_is_refused(tmp_path, policy):
    import dataclasses

    from segments.privacy.kmeans import PrivateModelRef, verify_private_model

    ledger = Ledger.for_policy(policy)
    forged = dataclasses.replace(request(policy), spec={"name": "private_segments"})
    with pytest.raises(ReleaseRefusedError, match="recorded only by its own job"):
        ledger.reserve(forged)  # the k-means entry cannot be declared
    assert ledger.entries() == []
    # any other entry publishing hand-made "centroids" does not carry the DP k-means job
    centroids = tmp_path / "centroids.parquet"
    centroids.write_bytes(b"hand-made centres at the biggest spenders")
    digest = ledger_module._sha256_path(centroids)
    reservation = ledger.reserve(dataclasses.replace(request(policy), spec={"name": "mine"}))
    ledger.publish(reservation, files={"centroids.parquet": digest})
    ref = PrivateModelRef(
        reservation.release_id, ledger.ledger_id, centroids, digest, (), (), {}, {}, ()
    )
    with pytest.raises(ReleaseRefusedError, match="not recorded by the DP k-means job"):
        verify_private_model(ref, ledger)


# --- 10 (issue 18): the demo ledger after an erasure -------------------------------------------
def test_the_demo_ledger_accepts_the_generated_data_after_an_erasure_not_an_edited_row(
    genuine, capsys
):
    """Rows the project's flows remove (an erasure here; a retention purge likewise) leave
    data that is still only the generator's rows; a row edited or added is not."""
    import polars as pl

    from segments.prepare import prepare
    from segments.prepare.subjects import erase
    from segments.privacy import synthetic

    erase(genuine, "alloffice", 7, today=dt.date(2026, 10, 31))
    proof = synthetic.prove_synthetic(genuine)
    assert proof and "rows removed: 1 customers" in proof.reason, proof.reason
    prepare(genuine, "alloffice", "statistics", "2026-10-31")  # the frames after the erasure
    assert _cli(RELEASE, ws=genuine.root) == 0, capsys.readouterr().err
    customers = pl.read_parquet(genuine.raw_table("customers"))
    other = pl.col("customer_id") == 8
    edits = {
        "edited": customers.with_columns(
            pl.when(other).then(pl.lit("someone.real@example.se")).otherwise("email").alias("email")
        ),
        "added": pl.concat(
            [
                customers,
                customers.filter(other).with_columns(
                    customer_id=pl.lit(10**6, dtype=customers.schema["customer_id"])
                ),
            ]
        ),
    }
    for how, frame in edits.items():
        frame.write_parquet(genuine.raw_table("customers"))
        synthetic._CACHE.clear()
        refused = synthetic.prove_synthetic(genuine)
        assert not refused and "nor a subset of its rows" in refused.reason, (how, refused.reason)
    customers.write_parquet(genuine.raw_table("customers"))  # as the erasure left it
    synthetic._CACHE.clear()
    assert synthetic.prove_synthetic(genuine)


# --- fix13.1: a copied policy file with the same name and controller --------------------------
LIFTED = (
    ('kind = "third_party_marketing"\ncountry = "US"', 'kind = "external"\ncountry = "DE"'),
    ("min_k = 10", "min_k = 2"),
)


def test_attack_copied_policy_lifting_rules_is_refused_before_any_charge(tmp_path, policy):
    ledger = Ledger.for_policy(policy, releases=tmp_path / "ws" / "releases")
    ledger.reserve(request(policy))
    copied = edited_policy(tmp_path, *LIFTED)
    assert copied.name == policy.name and copied.controller == policy.controller
    events = len(ledger.events())
    attack = dataclasses.replace(request(copied), recipient="adtech-partner", destination="DE")
    with pytest.raises(ReleaseRefusedError) as refused:
        ledger.reserve(attack, policy=copied)
    message = str(refused.value)
    assert "differs from the policy" in message and "--adopt-policy" in message
    assert "privacy.min_k 10 → 2" in message and "recipients.adtech-partner.kind" in message
    with pytest.raises(ReleaseRefusedError, match="differs from the policy"):
        Ledger.for_policy(copied, releases=tmp_path / "ws" / "releases")
    # adopting it is refused too: it loosens
    with pytest.raises(ReleaseRefusedError, match="loosens rules") as adopt:
        ledger.change_policy(copied)
    assert "privacy.min_k 10 → 2 (lower)" in str(adopt.value)
    assert len(ledger.events()) == events


def test_a_tightening_policy_change_is_adopted_and_then_binds(tmp_path, policy):
    ledger = Ledger.for_policy(policy, releases=tmp_path / "ws" / "releases")
    tighter = edited_policy(tmp_path, ("min_k = 10", "min_k = 12"))
    with pytest.raises(ReleaseRefusedError, match="differs from the policy"):
        ledger.reserve(request(tighter), policy=tighter)
    ledger.change_policy(tighter)
    ledger.reserve(request(tighter), policy=tighter)
    # and the original, looser one is now the one refused
    with pytest.raises(ReleaseRefusedError, match=r"privacy.min_k 12 → 10"):
        ledger.reserve(request(policy), policy=policy)


# --- fix13.7: the evaluation ledger's refusal banner names one ledger --------------------------
def test_the_evaluation_ledgers_refusal_banner_is_not_also_the_demo_ledgers(tmp_path, policy):
    from segments.exceptions import BudgetExceededError
    from segments.privacy.ledger import EVALUATION_LABEL
    from segments.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    ledger = Ledger.for_workspace(
        ws, policy.controller, evaluation=True, synthetic=synthetic_proof(ws), policy=policy
    )
    with pytest.raises(BudgetExceededError) as refused:
        epsilon = policy.privacy.budget_epsilon  # over the evaluation cap after 100
        for _ in range(101):
            ledger.reserve(dataclasses.replace(request(policy, epsilon=epsilon), synthetic=True))
    message = str(refused.value)
    assert message.startswith(f"[{EVALUATION_LABEL}] ") and "THROW-AWAY" not in message


# --- fix13.7: a card of another ledger is reported as such, not as truncation -----------------
def test_a_card_of_another_ledger_is_not_reported_as_truncation(tmp_path, policy):
    from segments.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    demo = Ledger.for_workspace(ws, policy.controller, synthetic=synthetic_proof(ws), policy=policy)
    demo_card = write_card(ws.releases, demo, demo.reserve(request(policy)))
    controller = Ledger.for_policy(policy)
    problems = controller.verify_cards([demo_card]).problems
    assert len(problems) == 1 and "belongs to another ledger" in problems[0], problems
    assert "truncated" not in problems[0] and "--demo-ledger" in problems[0]
    assert not any("another ledger" in p for p in demo.verify_cards([demo_card]).problems)
