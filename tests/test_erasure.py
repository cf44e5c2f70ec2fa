"""Issue 18 item 1: an erasure erases (AK-5), a restriction restricts, and both are recorded.

Each test plays the attacker's check from the issue: after the request, look for the person
(by account id in the raw data, by pseudonym in every derived frame, by id in clear in the
log) and fail on any trace.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from small_exports import write_export

from segments._tables import read_table
from segments.cli.main import main
from segments.exceptions import PolicyError, WorkspaceError
from segments.policy import Policy
from segments.prepare import prepare
from segments.prepare.frames import link_persons
from segments.prepare.pseudonym import KEY_ENV_VAR, PseudonymKey, load_key, pseudonymise
from segments.prepare.retention import purge
from segments.prepare.subjects import erase, restrict, subject_export
from segments.privacy.synthetic import prove_synthetic
from segments.workspace import Workspace

AS_OF = "2026-10-31"
POLICY = "alloffice"


@pytest.fixture(autouse=True)
def _no_steward_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV_VAR, raising=False)


@pytest.fixture
def ws(small_raw: Workspace, tmp_path: Path) -> Workspace:
    """A copy of the small generated workspace, prepared for two purposes, with labels and
    an old target list (the leftovers the issue found)."""
    root = tmp_path / "ws"
    shutil.copytree(small_raw.root, root)
    work = Workspace(root)
    for purpose in ("segmentation", "offers"):
        prepare(work, POLICY, purpose, AS_OF)
    customers = pl.read_parquet(work.prepared_dir("segmentation") / "customers.parquet")
    labels = customers.select("person_id", (pl.int_range(pl.len()) % 3).alias("segment"))
    work.segments.mkdir(parents=True, exist_ok=True)
    labels.write_parquet(work.segments / "labels.parquet")
    (work.segments / "targets").mkdir()
    labels.filter(pl.col("segment") == 0).select("person_id").write_parquet(
        work.segments / "targets" / "segment-0.parquet"
    )
    return work


def _person(work: Workspace, customer_id: int) -> tuple[list[int], str]:
    """All account ids of the person behind ``customer_id`` and their pseudonym."""
    roots = link_persons(pl.read_parquet(work.raw_table("customers")))
    root = roots.filter(pl.col("customer_id") == customer_id)["person_root"][0]
    accounts = roots.filter(pl.col("person_root") == root)["customer_id"].to_list()
    key = load_key(workspace=work, synthetic_proof=prove_synthetic)
    return accounts, pseudonymise(key, "person", [root])[0]


def _in_segmentation(work: Workspace) -> int:
    """A customer id whose person is in the prepared segmentation frame and the labels."""
    roots = link_persons(pl.read_parquet(work.raw_table("customers")))
    key = load_key(workspace=work, synthetic_proof=prove_synthetic)
    ids = set(pl.read_parquet(work.segments / "labels.parquet")["person_id"])
    for cid, root in roots.iter_rows():
        if cid == root and pseudonymise(key, "person", [root])[0] in ids:
            return int(cid)
    raise AssertionError("no labelled person")  # pragma: no cover


def _labelled_person(work: Workspace) -> tuple[int, list[int], str]:
    """:func:`_in_segmentation`'s customer id, with :func:`_person`'s accounts and pseudonym."""
    customer_id = _in_segmentation(work)
    return (customer_id, *_person(work, customer_id))


def _traces(work: Workspace, accounts: list[int], person_id: str) -> list[str]:
    """Every file that still holds the person (raw by id, derived by pseudonym)."""
    found = []
    for path in sorted(work.root.rglob("*.parquet")):
        if "releases" in path.parts:
            continue
        cols = pl.read_parquet_schema(path)
        frame = pl.read_parquet(path)
        if (
            cols.get("customer_id", pl.Utf8).is_integer()
            and frame.filter(pl.col("customer_id").is_in(accounts)).height
        ):
            found.append(str(path))
        pseudonymous = cols.get("person_id") == pl.Utf8
        if pseudonymous and frame.filter(pl.col("person_id") == person_id).height:
            found.append(str(path))
    orders = pl.read_parquet(work.raw_table("orders"))
    theirs = orders.filter(pl.col("customer_id").is_in(accounts))["order_id"]
    lines = read_table(work.raw_table("order_lines"))
    if lines.filter(pl.col("order_id").is_in(theirs.implode())).height:
        found.append("order_lines")
    return found


def test_erase_removes_the_person_everywhere_and_logs_no_identity(ws: Workspace) -> None:
    cid, accounts, pid = _labelled_person(ws)
    emails = pl.read_parquet(ws.raw_table("customers")).filter(
        pl.col("customer_id").is_in(accounts)
    )["email"]
    assert _traces(ws, accounts, pid)  # the check can fail: the person is there before

    done = erase(ws, POLICY, cid, requested_on=None)

    assert _traces(ws, accounts, pid) == []
    log = ws.subject_log.read_text(encoding="utf-8")
    for token in [str(a) for a in accounts] + list(emails) + [pid]:
        assert f'"{token}"' not in log and f" {token}," not in log
    entry = json.loads(log)[-1]
    assert entry["action"] == "erasure" and entry["completed"] is True
    assert tuple(entry["clause_ids"]) == Policy.load(POLICY).exclusions["erasure"].clause_ids
    assert done.on_time and entry["deadline"] >= entry["done_on"]
    assert ws.subject_log.stat().st_mode & 0o077 == 0
    # subject export reflects the erasure instead of returning their data
    extract = subject_export(ws, cid)
    assert extract["accounts"] == [] and extract["erasure"]["erased_on"] == entry["done_on"]


def test_later_prepare_never_brings_an_erased_person_back(
    ws: Workspace, small_raw: Workspace
) -> None:
    cid, accounts, pid = _labelled_person(ws)
    erase(ws, POLICY, cid)
    prepare(ws, POLICY, "segmentation", AS_OF)
    assert _traces(ws, accounts, pid) == []
    # even if the raw data that still holds them is loaded again
    shutil.rmtree(ws.raw)
    shutil.copytree(small_raw.raw, ws.raw)
    report = prepare(ws, POLICY, "segmentation", AS_OF)
    frame = pl.read_parquet(ws.prepared_dir("segmentation") / "customers.parquet")
    assert pid not in set(frame["person_id"])
    assert any(r.rule.startswith("erased earlier") and r.persons_removed == 1 for r in report.rules)


def test_purge_erases_every_flagged_person(ws: Workspace) -> None:
    customers = pl.read_parquet(ws.raw_table("customers"))
    flagged = customers.filter(pl.col("erasure_requested"))["customer_id"].to_list()
    assert len(flagged) >= 1
    people = [_person(ws, c) for c in flagged]
    result = purge(ws, POLICY, AS_OF)
    assert result.erased_accounts == len(flagged)
    for accounts, pid in people:
        assert _traces(ws, accounts, pid) == []
    assert not pl.read_parquet(ws.raw_table("customers"))["erasure_requested"].any()


def test_restrict_keeps_the_data_stored_but_out_of_every_frame(ws: Workspace) -> None:
    cid, accounts, pid = _labelled_person(ws)
    restrict(ws, POLICY, cid)
    raw = pl.read_parquet(ws.raw_table("customers")).filter(pl.col("customer_id").is_in(accounts))
    assert raw.height == len(accounts) and raw["restriction_requested"].all()
    derived = [t for t in _traces(ws, accounts, pid) if "raw" not in Path(t).parts]
    assert derived == [] or derived == ["order_lines"]
    prepare(ws, POLICY, "segmentation", AS_OF)
    frame = pl.read_parquet(ws.prepared_dir("segmentation") / "customers.parquet")
    assert pid not in set(frame["person_id"])
    assert json.loads(ws.subject_log.read_text(encoding="utf-8"))[-1]["action"] == "restriction"


def test_cli_erase_and_restrict(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    cid, accounts, pid = _labelled_person(ws)
    assert (
        main(["subject", "erase", "-w", str(ws.root), "--policy", POLICY, "--customer", str(cid)])
        == 0
    )
    out = capsys.readouterr().out
    assert "erasure of customer" in out and "keyed hash" in out
    assert _traces(ws, accounts, pid) == []
    # a second erasure of the same id: one line, status 2, no traceback
    assert (
        main(["subject", "erase", "-w", str(ws.root), "--policy", POLICY, "--customer", str(cid)])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and f"no customer {cid}" in err


def _audit(work: Workspace) -> str:
    import datetime as dt

    from segments.audit.checks import check_erasures_carried_out
    from segments.audit.context import AuditContext

    ctx = AuditContext(
        work,
        Policy.load(POLICY),
        dt.date.fromisoformat(AS_OF),
        key=load_key(workspace=work, synthetic_proof=prove_synthetic),
    )
    return check_erasures_carried_out(ctx).status


def test_audit_check_finds_an_erasure_left_undone(ws: Workspace) -> None:
    assert _audit(ws) == "pass"
    customers = pl.read_parquet(ws.raw_table("customers"))
    flagged = customers.filter(pl.col("erasure_requested"))
    assert flagged.height
    assert _audit(ws) == "pass"  # flagged, awaiting the purge
    # an erasure whose raw rows came back
    cid = _in_segmentation(ws)
    backup = ws.raw_table("customers").read_bytes()
    erase(ws, POLICY, cid)
    assert _audit(ws) == "pass"
    ws.raw_table("customers").write_bytes(backup)
    assert _audit(ws) == "fail"


def test_a_new_segmentation_removes_the_old_target_lists(ws: Workspace) -> None:
    import pandas as pd

    from segments.segmentation.job import _write_segments

    labels = pl.read_parquet(ws.segments / "labels.parquet")
    assert (ws.segments / "targets" / "segment-0.parquet").is_file()
    _write_segments(ws, labels, pd.DataFrame({"segment": [0]}), {"segments": {"0": "x"}})
    assert not (ws.segments / "targets").exists()


# --- races, regeneration, leftovers and interrupted erasures (issue 18 review) ----------------
def test_a_prepare_running_during_an_erasure_never_publishes_the_person(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    prep = importlib.import_module("segments.prepare.frames")

    cid, accounts, pid = _labelled_person(ws)
    real = prep._check_minimised

    def erase_meanwhile(customers: pl.DataFrame, lines: pl.DataFrame) -> None:
        # prepare has read the raw data and the erasure log; the erasure lands now
        real(customers, lines)
        if pid in set(customers["person_id"]):
            erase(ws, POLICY, cid)

    monkeypatch.setattr(prep, "_check_minimised", erase_meanwhile)
    with pytest.raises(WorkspaceError, match="erasure or restriction was recorded"):
        prepare(ws, POLICY, "segmentation", AS_OF)
    assert _traces(ws, accounts, pid) == []
    monkeypatch.setattr(prep, "_check_minimised", real)
    prepare(ws, POLICY, "segmentation", AS_OF)  # a re-run publishes without them
    assert _traces(ws, accounts, pid) == []


@contextlib.contextmanager
def _lock_held_elsewhere(ws: Workspace) -> Iterator[None]:
    """Another process holding the workspace lock shared (a prepare publishing) meanwhile."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from segments.workspace import Workspace\n"
            f"with Workspace({str(ws.root)!r}).lock(exclusive=False):\n"
            "    print('held', flush=True); time.sleep(30)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_erase_refuses_while_another_process_writes(ws: Workspace) -> None:
    cid, accounts, pid = _labelled_person(ws)
    with _lock_held_elsewhere(ws):
        before = ws.raw_table("customers").read_bytes()
        with pytest.raises(WorkspaceError, match="another segments command"):
            erase(ws, POLICY, cid)
        assert ws.raw_table("customers").read_bytes() == before
        assert not ws.subject_log.exists()
    erase(ws, POLICY, cid)
    assert _traces(ws, accounts, pid) == []


@pytest.mark.parametrize("default", [False, True])
def test_generate_force_refuses_to_bring_erased_people_back(
    ws: Workspace, default: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    cid, accounts, pid = _labelled_person(ws)
    erase(ws, POLICY, cid)
    before = ws.raw_table("customers").read_bytes()
    args = ["--default"] if default else ["--customers", "300", "--months", "6"]
    assert main(["generate", "-w", str(ws.root), *args, "--force"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "erasure log" in err and "new --workspace" in err
    assert ws.raw_table("customers").read_bytes() == before
    assert _traces(ws, accounts, pid) == []


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_erase_sweeps_hidden_copies_of_the_person(ws: Workspace) -> None:
    cid, accounts, pid = _labelled_person(ws)
    dead = _dead_pid()
    customers = pl.read_parquet(ws.raw_table("customers"))
    frame = pl.read_parquet(ws.prepared_dir("segmentation") / "customers.parquet")
    leftovers = {
        ws.private / f"scratch-release-p{dead}-x1" / "person.parquet": frame,
        ws.prepared / f".segmentation.p{dead}-x2.tmp" / "customers.parquet": frame,
        ws.root / f".raw-staging-p{dead}-x3" / "customers.parquet": customers,
        ws.raw / ".customers.parquet.x4.tmp": customers,  # no pid: only an erasure removes it
        ws.segments / ".labels.parquet.x5.tmp": frame,
        ws.segments / ".private-r1" / "labels.parquet": frame,  # killed private k-means
        ws.releases / f".kanon-1.p{dead}-x6.tmp" / "rows.parquet": frame,  # killed kanon
        ws.releases / ".kanon-2.x7.tmp" / "rows.parquet": frame,  # no pid: erasure only
        ws.root / f".synthetic-proof-p{dead}-x8" / "raw" / "customers.parquet": customers,
        ws.root / f".raw.old.{dead}" / "customers.parquet": customers,  # killed ingest
    }
    # a killed rewrite of one month partition (raw and prepared order lines)
    for table in (
        ws.raw / "order_lines.parquet",
        ws.prepared_dir("segmentation") / "lines.parquet",
    ):
        month = sorted(table.glob("month=*"))[0]
        leftovers[month / f".part-00000.parquet.p{dead}-x9.tmp"] = frame
    for path, data in leftovers.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        data.write_parquet(path)
    # any command first sweeps what dead writers left; a leftover without a pid stays
    assert main(["ledger", "-w", str(ws.root)]) in (0, 1, 2)
    assert not (ws.private / f"scratch-release-p{dead}-x1").exists()
    assert not (ws.root / f".raw-staging-p{dead}-x3").exists()
    assert (ws.raw / ".customers.parquet.x4.tmp").exists()
    assert (ws.segments / ".private-r1").exists()
    assert not (ws.releases / f".kanon-1.p{dead}-x6.tmp").exists()
    assert not (ws.root / f".synthetic-proof-p{dead}-x8").exists()
    assert (ws.releases / ".kanon-2.x7.tmp").exists()
    assert not list(ws.root.rglob(f".part-00000.parquet.p{dead}-x9.tmp"))
    erase(ws, POLICY, cid)
    assert [p for p in leftovers if p.exists()] == []
    assert _traces(ws, accounts, pid) == []


def test_an_interrupted_erasure_is_completed_by_a_rerun(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    retention = importlib.import_module("segments.prepare.retention")
    cid, accounts, pid = _labelled_person(ws)

    def killed(*_: object) -> None:
        raise KeyboardInterrupt  # the run dies after the derived frames, before raw

    real = retention.replace_raw_tables
    monkeypatch.setattr(retention, "replace_raw_tables", killed)
    with pytest.raises(KeyboardInterrupt):
        erase(ws, POLICY, cid)
    entries = json.loads(ws.subject_log.read_text(encoding="utf-8"))
    assert [e["completed"] for e in entries] == [False]
    assert _traces(ws, accounts, pid)  # raw still holds them
    extract = subject_export(ws, cid)
    assert extract["accounts"] == [] and extract["orders"] == []
    assert extract["erasure"]["pending"] is True
    assert _audit(ws) == "fail"

    monkeypatch.setattr(retention, "replace_raw_tables", real)
    done = erase(ws, POLICY, cid)
    entries = json.loads(ws.subject_log.read_text(encoding="utf-8"))
    assert [e["completed"] for e in entries] == [True]  # the same entry, not a second one
    assert done.subject_hashes == tuple(entries[0]["subject_hashes"])
    assert _traces(ws, accounts, pid) == []
    assert _audit(ws) == "pass"
    assert subject_export(ws, cid)["erasure"]["erased_on"] == entries[0]["done_on"]


def test_a_target_list_written_during_an_erasure_never_holds_the_person(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    seg = importlib.import_module("segments.segmentation.job")
    cid, accounts, pid = _labelled_person(ws)
    labels = pl.read_parquet(ws.segments / "labels.parquet").with_columns(segment=pl.lit(0))
    meta = {"segments": {"0": "all"}, "purpose": "offers", "clause_ids": []}
    seg._write_segments(ws, labels, pd.DataFrame({"segment": [0]}), meta)
    real = seg._read_prepared_customers

    def erase_meanwhile(work: Workspace, purpose: str):  # type: ignore[no-untyped-def]
        found = real(work, purpose)  # target has read the labels and the frame
        erase(ws, POLICY, cid)
        return found

    monkeypatch.setattr(seg, "_read_prepared_customers", erase_meanwhile)
    with pytest.raises(WorkspaceError, match="erasure or restriction was recorded"):
        seg.target(ws, 0)
    assert not (ws.targets / "segment-0.parquet").exists()
    assert _traces(ws, accounts, pid) == []
    monkeypatch.setattr(seg, "_read_prepared_customers", real)
    assert seg.target(ws, 0).n_targeted > 0
    assert _traces(ws, accounts, pid) == []


OTHER_KEY = "another steward key, 32 bytes or more, not the log's"


def test_another_key_cannot_hide_an_erasure(
    ws: Workspace, small_raw: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18 item 1: the log records its key's id; prepare, export, audit, erase and purge
    under another key refuse (before changing anything) instead of missing the erased person."""
    import datetime as dt

    from segments.audit.checks import check_erasures_carried_out
    from segments.audit.context import AuditContext

    cid, accounts, pid = _labelled_person(ws)
    erase(ws, POLICY, cid)
    entry = json.loads(ws.subject_log.read_text(encoding="utf-8"))[-1]
    assert entry["key_id"] == load_key(workspace=ws, synthetic_proof=prove_synthetic).key_id
    shutil.rmtree(ws.raw)  # the raw data that still holds them comes back
    shutil.copytree(small_raw.raw, ws.raw)
    prepared = ws.prepared_dir("segmentation") / "customers.parquet"
    before = prepared.read_bytes()

    monkeypatch.setenv(KEY_ENV_VAR, OTHER_KEY)
    with pytest.raises(PolicyError, match="written with the pseudonymisation key whose id"):
        prepare(ws, POLICY, "segmentation", AS_OF)
    assert prepared.read_bytes() == before
    with pytest.raises(PolicyError, match="use the key the log was written with"):
        subject_export(ws, cid)
    with pytest.raises(PolicyError, match="subject erasure"):
        erase(ws, POLICY, cid)  # back in the restored raw data
    log_before = ws.subject_log.read_bytes()
    with pytest.raises(PolicyError, match="retention purge: .* written with the"):
        purge(ws, POLICY, AS_OF)  # the demo data has flagged accounts: an erasure under key 2
    assert ws.subject_log.read_bytes() == log_before
    ctx = AuditContext(
        ws,
        Policy.load(POLICY),
        dt.date.fromisoformat(AS_OF),
        key=load_key(workspace=ws, synthetic_proof=prove_synthetic),
    )
    finding = check_erasures_carried_out(ctx)
    assert finding.status == "fail" and "key" in str(finding.evidence)

    monkeypatch.delenv(KEY_ENV_VAR)  # the right key: the person stays out
    prepare(ws, POLICY, "segmentation", AS_OF)
    assert pid not in set(pl.read_parquet(prepared)["person_id"])


def test_cli_prepare_under_another_key_says_which_key(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    erase(ws, POLICY, _in_segmentation(ws))
    monkeypatch.setenv(KEY_ENV_VAR, OTHER_KEY)
    argv = ["prepare", "-w", str(ws.root), "--policy", POLICY, "--purpose", "segmentation"]
    assert main([*argv, "--as-of", AS_OF]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "key the log was written with" in err and "nothing was changed" in err


_EXPORT = (
    "kund;datum;antal;pris;art\n"
    "A1;2026-01-03;2;10.0;P1\nA1;2026-02-03;1;5.0;P2\n"
    "B2;2026-01-05;1;10.0;P1\nC3;2026-03-01;3;5.0;P2\n"
)
STEWARD_KEY = "the steward's key for the ingested export, 32+ bytes"


def _ingested(tmp_path: Path) -> tuple[Workspace, Path, Path]:
    from segments.ingest import ingest

    src, mapping = write_export(tmp_path, _EXPORT, names=("export.csv", "mapping.toml"))
    work = Workspace(tmp_path / "real")
    ingest(src, mapping, work)
    return work, src, mapping


def test_ingest_after_an_erasure_leaves_the_person_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 18 item 2: an ingested export's customer is erased by the export's own id, and
    a later ingest of an export that still holds them drops their rows (counted, not named)
    instead of bringing them back; without the log's key it refuses before writing."""
    from segments.ingest import ingest

    monkeypatch.setenv(KEY_ENV_VAR, STEWARD_KEY)
    work, src, mapping = _ingested(tmp_path)
    backup = tmp_path / "raw-backup"
    shutil.copytree(work.raw, backup)
    done = erase(work, POLICY, "A1")
    assert done.rows["raw/customers.parquet"] == 1 and done.rows["raw/orders.parquet"] == 2
    assert "A1" not in work.subject_log.read_text(encoding="utf-8")

    result = ingest(src, mapping, work, force=True)  # the same export, A1 still in it
    customers = pl.read_parquet(work.raw_table("customers"))
    assert sorted(customers["source_customer_id"]) == ["B2", "C3"]
    assert result.dropped["erased"] == {
        **result.dropped["erased"],
        "rows": 2,
        "customers": 1,
        "value_sek": 25.0,
    }
    manifest = work.manifest.read_text(encoding="utf-8")
    assert '"A1"' not in manifest

    before = work.raw_table("customers").read_bytes()
    monkeypatch.delenv(KEY_ENV_VAR)
    with pytest.raises(PolicyError, match="records erasures"):
        ingest(src, mapping, work, force=True)
    monkeypatch.setenv(KEY_ENV_VAR, OTHER_KEY)
    with pytest.raises(PolicyError, match="written with the pseudonymisation key"):
        ingest(src, mapping, work, force=True)
    assert work.raw_table("customers").read_bytes() == before

    monkeypatch.setenv(KEY_ENV_VAR, STEWARD_KEY)  # the audit re-hashes by the export's id
    import datetime as dt

    from segments.audit.checks import check_erasures_carried_out
    from segments.audit.context import AuditContext

    ctx = AuditContext(work, Policy.load(POLICY), dt.date(2026, 3, 31), key=load_key())
    assert check_erasures_carried_out(ctx).status == "pass"
    shutil.rmtree(work.raw)
    shutil.copytree(backup, work.raw)  # a backup of raw from before the erasure is restored
    assert check_erasures_carried_out(ctx).status == "fail"


def test_restrict_on_an_ingested_export_is_refused_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(KEY_ENV_VAR, STEWARD_KEY)
    work, _, _ = _ingested(tmp_path)
    before = work.raw_table("customers").read_bytes()
    argv = ["subject", "restrict", "-w", str(work.root), "--policy", POLICY, "--customer", "B2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no restriction flag" in err and "nothing was changed" in err
    assert work.raw_table("customers").read_bytes() == before and not work.subject_log.exists()


def test_purge_deletes_under_the_workspace_lock(ws: Workspace) -> None:
    """Issue 18 item 4: the retention deletions (not only the erasure) wait for no one and
    race no one: while a writer holds the lock, purge refuses and changes nothing."""
    policy = Policy.load(POLICY)
    purge(ws, policy, AS_OF)  # nobody flagged any more: only retention deletions are left
    assert not pl.read_parquet(ws.raw_table("customers"))["erasure_requested"].any()
    assert purge(ws, policy, "2030-01-01", dry_run=True).removed["orders"] > 0
    raw = {p.name: p.read_bytes() for p in ws.raw.iterdir() if p.is_file()}
    with _lock_held_elsewhere(ws):
        with pytest.raises(WorkspaceError, match="another segments command"):
            purge(ws, policy, "2030-01-01")
        assert {p.name: p.read_bytes() for p in ws.raw.iterdir() if p.is_file()} == raw
        assert purge(ws, policy, "2030-01-01", dry_run=True).dry_run  # a dry run only reads
    assert purge(ws, policy, "2030-01-01").removed["orders"] > 0


def test_purge_counts_every_linked_account_and_row_it_erases(ws: Workspace) -> None:
    """Issue 18 item 4: a flagged sole trader's private and business accounts both go, and
    the report counts persons, accounts and rows (it counted flagged accounts only)."""
    customers = pl.read_parquet(ws.raw_table("customers"))
    roots = link_persons(customers)
    linked = roots.filter(pl.col("person_root").is_duplicated())
    assert linked.height >= 2
    one = int(linked["customer_id"][0])
    root = int(linked["person_root"][0])
    both = roots.filter(pl.col("person_root") == root)["customer_id"].to_list()
    # only one of the two accounts carries the flag; nobody else is flagged
    flagged = customers.with_columns(erasure_requested=pl.col("customer_id") == one)
    flagged.write_parquet(ws.raw_table("customers"))
    manifest = json.loads(ws.manifest.read_text(encoding="utf-8"))
    from segments.workspace import sha256_file

    manifest["files"]["customers.parquet"] = sha256_file(ws.raw_table("customers"))
    ws.manifest.write_text(json.dumps(manifest), encoding="utf-8")
    orders = pl.read_parquet(ws.raw_table("orders")).filter(pl.col("customer_id").is_in(both))
    lines = read_table(ws.raw_table("order_lines")).filter(
        pl.col("order_id").is_in(orders["order_id"].implode())
    )
    expected = {"customers": len(both), "orders": orders.height, "order_lines": lines.height}

    preview = purge(ws, POLICY, AS_OF, dry_run=True)
    result = purge(ws, POLICY, AS_OF)
    for counted in (preview, result):
        assert counted.erased_persons == 1 and counted.erased_accounts == len(both) == 2
        assert dict(counted.erased_rows) == expected
        assert counted.total_removed == sum(counted.removed.values()) + sum(expected.values())
    assert preview.removed == result.removed
    left = pl.read_parquet(ws.raw_table("customers"))
    assert left.filter(pl.col("customer_id").is_in(both)).height == 0


def test_subject_export_of_an_ingested_export_by_its_own_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The register extract works on an ingested export (it demanded the synthetic schema's
    personnummer), by the export's own customer id; after an erasure it says so."""
    monkeypatch.setenv(KEY_ENV_VAR, STEWARD_KEY)
    work, _, _ = _ingested(tmp_path)
    extract = subject_export(work, "A1")
    assert [a["source_customer_id"] for a in extract["accounts"]] == ["A1"]
    assert len(extract["orders"]) == 2 and extract["orders"][0]["lines"]
    erase(work, POLICY, "A1")
    assert subject_export(work, "A1")["erasure"]["erased_on"]
    argv = ["subject", "export", "-w", str(work.root), "--customer", "ZZ9"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "column 'source_customer_id': no customer ZZ9" in err and err.count("\n") == 1


_CDNOW = """ customer_id  date number_of_cds  dollar_value
 00007 19970101  1   11.77
 00007 19970210  2   20.00
 00012 19970112  1   12.00
 00013 19970305  3   30.50
"""


def test_an_erased_id_written_differently_by_the_next_export_stays_erased(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 18 review: an erasure of CDNOW's "00007" must also keep out the "7" of the next
    export (the mapping declares integer ids, compared by value), and the export's own id in
    either spelling finds the erasure."""
    from segments.ingest import ingest

    monkeypatch.setenv(KEY_ENV_VAR, STEWARD_KEY)
    mapping = Path(__file__).parents[1] / "examples" / "cdnow" / "mapping.toml"
    cdnow_policy = Path(__file__).parents[1] / "examples" / "cdnow" / "policy.toml"
    src = tmp_path / "cdnow.txt"
    src.write_text(_CDNOW, encoding="utf-8")
    work = Workspace(tmp_path / "cdnow")
    ingest(src, mapping, work)
    assert sorted(pl.read_parquet(work.raw_table("customers"))["source_customer_id"]) == [
        "12",
        "13",
        "7",
    ]
    argv = ["subject", "erase", "-w", str(work.root), "--customer", "00007"]
    assert main([*argv, "--policy", str(cdnow_policy)]) == 0
    capsys.readouterr()

    src.write_text(_CDNOW.replace(" 000", " "), encoding="utf-8")  # "7", "12", "13"
    result = ingest(src, mapping, work, force=True)
    assert sorted(pl.read_parquet(work.raw_table("customers"))["source_customer_id"]) == [
        "12",
        "13",
    ]
    assert result.dropped["erased"]["customers"] == 1
    assert subject_export(work, "7")["erasure"]["erased_on"]
    assert subject_export(work, " 0007 ")["erasure"]["erased_on"]
    assert main(["subject", "export", "-w", str(work.root), "--customer", "12"]) == 0
    assert json.loads(capsys.readouterr().out)["accounts"][0]["source_customer_id"] == "12"
    assert main(["subject", "export", "-w", str(work.root), "--customer", "x7"]) == 2
    err = capsys.readouterr().err
    assert "'x7' is not a customer id" in err and err.count("\n") == 1


def test_a_restored_backup_is_reported_not_hidden_and_purge_erases_again(
    ws: Workspace, small_raw: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 18 review: after a raw backup from before an erasure is restored, the register
    extract said "All your data was erased" while raw held the person again, and prepare
    said nothing. Now the extract lists what raw holds and says the erasure must be re-run,
    prepare warns in one line (counted, not named) with the fix, and `retention purge`
    erases the person again."""
    cid, accounts, pid = _labelled_person(ws)
    erase(ws, POLICY, cid)
    assert subject_export(ws, cid)["accounts"] == []
    shutil.rmtree(ws.raw)
    shutil.copytree(small_raw.raw, ws.raw)  # the backup from before the erasure

    extract = subject_export(ws, cid)
    assert sorted(a["customer_id"] for a in extract["accounts"]) == sorted(accounts)
    assert extract["erasure"]["returned"] and "carried out again" in extract["erasure"]["note"]

    argv = ["prepare", "-w", str(ws.root), "--policy", POLICY, "--purpose", "segmentation"]
    assert main([*argv, "--as-of", AS_OF]) == 0
    err = capsys.readouterr().err
    assert "warning: 1 person(s) erased earlier are in the raw data again" in err
    assert err.replace(str(ws.root), "W") == (  # counted, never named
        "warning: 1 person(s) erased earlier are in the raw data again (a backup restored "
        "after the erasure?); they were kept out of these frames, but their raw rows must go: "
        f"run `segments retention purge -w W --policy {POLICY}` (or `segments subject erase` "
        "again)\n"
    )

    purge_argv = ["retention", "purge", "-w", str(ws.root), "--policy", POLICY]
    assert main([*purge_argv, "--as-of", AS_OF]) == 0
    left = pl.read_parquet(ws.raw_table("customers"))
    assert left.filter(pl.col("customer_id").is_in(accounts)).height == 0
    assert subject_export(ws, cid)["accounts"] == []

    # an unknown policy is refused first, also for an erased customer
    capsys.readouterr()
    bad = ["subject", "export", "-w", str(ws.root), "--customer", str(cid), "--policy", "nosuch"]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "nosuch" in err and err.count("\n") == 1


def test_a_segment_running_during_an_erasure_says_to_run_it_again(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18 review: ``segment`` running while ``subject erase`` rewrote the prepared
    frames failed with "could not be read as Parquet (Invalid thrift) … damaged" (its lazy
    scan read them half-replaced). It now reads them (the features) under the shared
    workspace lock, and the erasure recorded meanwhile refuses the write with "run it
    again"."""
    seg = importlib.import_module("segments.segmentation.job")
    cid, accounts, pid = _labelled_person(ws)
    labels_before = (ws.segments / "labels.parquet").read_bytes()
    real = seg._fit

    def erase_meanwhile(*args):  # type: ignore[no-untyped-def]
        erase(ws, POLICY, cid)  # segment has read the frames and the lock; the fit is to come
        return real(*args)

    monkeypatch.setattr(seg, "_fit", erase_meanwhile)
    with pytest.raises(WorkspaceError, match="erasure or restriction was recorded.*run it again"):
        seg.segment(ws, POLICY, k_range=range(3, 4), n_splits=2)
    assert _traces(ws, accounts, pid) == []
    assert (
        not (ws.segments / "labels.parquet").exists()
        or (ws.segments / "labels.parquet").read_bytes() != labels_before
    )


def test_an_erasure_stopped_by_a_full_disk_says_it_is_pending_and_a_rerun_finishes_it(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 18 review: erase on a full disk said only "the disk is full"; it now says the
    request is logged as pending (the person is already kept out) and that a rerun of the
    same command finishes it — which it does."""
    import errno

    from segments.prepare import retention

    cid, accounts, pid = _labelled_person(ws)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(retention, "replace_raw_tables", disk_full)
    argv = ["subject", "erase", "-w", str(ws.root), "--policy", POLICY, "--customer", str(cid)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert "logged as pending" in err and "run the same `segments subject erase`" in err
    assert json.loads(ws.subject_log.read_text(encoding="utf-8"))[-1]["completed"] is False
    monkeypatch.undo()
    assert main(argv) == 0
    assert json.loads(ws.subject_log.read_text(encoding="utf-8"))[-1]["completed"] is True
    assert _traces(ws, accounts, pid) == []


def test_attack_an_erasure_never_launders_a_hand_edited_raw_table(ws: Workspace) -> None:
    """Review r10a F5: rows injected into W/raw/customers.parquet are refused by prepare,
    but an erasure (of anyone) used to rewrite the edited table and record its new digest in
    the manifest, after which prepare accepted it. The erasure now checks W/raw/ against its
    manifest first and refuses in one line, writing nothing."""
    cid, _, _ = _labelled_person(ws)
    path = ws.raw_table("customers")
    customers = pl.read_parquet(path)
    fake = customers.head(1).with_columns(
        (pl.col("customer_id") + customers["customer_id"].max() + 1000).alias("customer_id")
    )
    pl.concat([customers, fake]).write_parquet(path)
    edited = path.read_bytes()
    manifest = ws.manifest.read_bytes()
    # a steward's key (real data: no synthetic proof stands in the way of the edit)
    steward = PseudonymKey(b"k" * 32, "steward key (test)")
    with pytest.raises(WorkspaceError, match=r"customers\.parquet does not match its SHA-256"):
        erase(ws, POLICY, cid, requested_on=None, key=steward)
    assert path.read_bytes() == edited and ws.manifest.read_bytes() == manifest
    assert not ws.subject_log.exists()
    with pytest.raises(WorkspaceError, match="does not match its SHA-256"):
        prepare(ws, POLICY, "segmentation", AS_OF, steward)  # still refused: nothing vouches


def test_attack_a_manifest_without_digests_vouches_for_nothing(ws: Workspace) -> None:
    """Review r10a F9: with its 'files' removed from W/raw/manifest.json, prepare read raw
    tables unchecked and an erasure wrote a new 'files' vouching for a hand-edited table. A
    manifest that records no digest for a table is now refused by every reader."""
    cid, _, _ = _labelled_person(ws)
    manifest = json.loads(ws.manifest.read_text(encoding="utf-8"))
    del manifest["files"]
    ws.manifest.write_text(json.dumps(manifest), encoding="utf-8")
    steward = PseudonymKey(b"k" * 32, "steward key (test)")
    with pytest.raises(WorkspaceError, match="records no SHA-256|does not match its SHA-256"):
        prepare(ws, POLICY, "segmentation", AS_OF, steward)
    with pytest.raises(WorkspaceError, match="does not match its SHA-256"):
        erase(ws, POLICY, cid, requested_on=None, key=steward)
    assert "files" not in json.loads(ws.manifest.read_text(encoding="utf-8"))
