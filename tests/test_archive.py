"""Tests of segments.privacy.archive: the monthly purchasing series, released once per month."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import sqlite3

import numpy as np
import polars as pl
import pytest
from prepared_frames import install_prepared, synthetic_proof
from privacy_params import privacy_params
from release_helpers import proven_ledger, release_context

from segments.exceptions import PolicyError, ReleaseRefusedError, WorkspaceError
from segments.policy import Policy
from segments.privacy._frames import write_prepared_frames
from segments.privacy.archive import (
    ARCHIVE_SCHEMA,
    _read_archive_pl,
    backfill,
    next_month,
    releasable_months,
    release_month,
)
from segments.privacy.ledger import Ledger, ReleaseRequest
from segments.privacy.specs import SPECS, PrivacyParams
from segments.schema import PRODUCT_CATEGORIES
from segments.workspace import Workspace

PURPOSE = "statistics"


@pytest.fixture(scope="module")
def policy():
    return Policy.load("alloffice")


@pytest.fixture()
def params(policy):
    return PrivacyParams.from_policy(policy, PURPOSE)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    folder = tmp_path_factory.mktemp("archive")
    return write_prepared_frames(
        folder, 400, 5_000, seed=np.random.default_rng(2), start=dt.date(2025, 9, 10), months=5
    )


@pytest.fixture()
def workspace(tmp_path, frames):
    ws = Workspace(tmp_path / "ws").create()
    install_prepared(ws, frames, PURPOSE, DATA_AS_OF, report=True)
    return ws


#: The fixture's frames hold orders from 2025-09-10 for 5 months; prepared as of this day.
DATA_AS_OF = dt.date(2026, 2, 10)


def _release(ws, month, as_of, params, ledger, policy):
    return release_month(
        release_context(
            ledger, ws, policy, purpose=PURPOSE, recipient="purchasing", synthetic=True
        ),
        month,
        as_of=as_of,
        params=params,
    )


def test_releasable_months_are_closed_and_inside_retention():
    params = privacy_params(retention_months=2)
    assert releasable_months(dt.date(2026, 3, 1), params) == [
        dt.date(2026, 1, 1),
        dt.date(2026, 2, 1),
    ]
    # A month closes at its end: March is not releasable on 31 March.
    assert dt.date(2026, 3, 1) not in releasable_months(dt.date(2026, 3, 31), params)
    # Only months fully covered by the data.
    months = releasable_months(dt.date(2026, 3, 1), privacy_params(), dt.date(2026, 1, 5))
    assert months == [dt.date(2026, 2, 1)]
    assert next_month(dt.date(2025, 12, 1)) == dt.date(2026, 1, 1)


def test_release_month_appends_once_with_the_archive_columns(workspace, params, policy):
    ledger = proven_ledger(workspace, policy, evaluation=True)
    result = _release(workspace, dt.date(2025, 12, 1), dt.date(2026, 1, 1), params, ledger, policy)
    archive = _read_archive_pl(workspace)
    assert archive.schema == pl.Schema(ARCHIVE_SCHEMA)
    assert archive.height == len(PRODUCT_CATEGORIES)
    assert set(archive["release_id"]) == {result.release_id}
    assert archive["mechanism"][0] == "laplace"
    assert archive["epsilon"][0] == pytest.approx(result.card["privacy_loss"]["epsilon"])
    assert (archive["units_scale"] > 0).all() and (archive["sek_scale"] > 0).all()
    assert result.card["month"] == "2025-12-01"
    with pytest.raises(ReleaseRefusedError, match="already released"):
        _release(workspace, dt.date(2025, 12, 1), dt.date(2026, 2, 1), params, ledger, policy)
    assert _read_archive_pl(workspace).height == len(PRODUCT_CATEGORIES)


def test_release_month_refuses_open_and_expired_months(workspace, params, policy):
    ledger = proven_ledger(workspace, policy, evaluation=True)
    with pytest.raises(ReleaseRefusedError, match="has not closed"):
        _release(workspace, dt.date(2026, 1, 1), dt.date(2026, 1, 31), params, ledger, policy)
    with pytest.raises(ReleaseRefusedError, match="outside the .*retention window"):
        _release(workspace, dt.date(2023, 1, 1), dt.date(2026, 1, 31), params, ledger, policy)
    with pytest.raises(ReleaseRefusedError, match="first day of a month"):
        _release(workspace, dt.date(2025, 12, 5), dt.date(2026, 1, 31), params, ledger, policy)
    assert not workspace.archive.exists()


def test_a_month_charged_in_the_ledger_is_never_re_released(workspace, params, policy):
    ledger = proven_ledger(workspace, policy, evaluation=True)
    first = _release(workspace, dt.date(2025, 11, 1), dt.date(2025, 12, 1), params, ledger, policy)
    workspace.archive.unlink()  # a lost archive is rebuilt from the published table
    with pytest.raises(ReleaseRefusedError, match="2025-11 was already released") as refused:
        _release(workspace, dt.date(2025, 11, 1), dt.date(2026, 1, 1), params, ledger, policy)
    # the refusal cites the policy's own anonymity clause (r13b #5), as the other refusals do
    assert policy.clauses_for("anonymous_release")
    assert f"clause {', '.join(policy.clauses_for('anonymous_release'))})" in str(refused.value)
    workspace.archive.unlink()  # and without the table, the ledger still refuses
    shutil.rmtree(first.path)
    with pytest.raises(ReleaseRefusedError, match="2025-11 .*already charged in ledger"):
        _release(workspace, dt.date(2025, 11, 1), dt.date(2026, 1, 1), params, ledger, policy)


def test_attack_two_workspaces_sharing_a_ledger_cannot_both_release_a_month(
    workspace, params, policy, tmp_path
):
    """Issue 13.6: the archive lock is per workspace; the ledger's unique key on
    (population, series, month) is checked in the reserving transaction."""
    other = Workspace(tmp_path / "other").create()
    shutil.copytree(workspace.prepared_dir(PURPOSE), other.prepared_dir(PURPOSE))
    ledger = proven_ledger(workspace, policy, evaluation=True)
    _release(workspace, dt.date(2025, 11, 1), dt.date(2025, 12, 1), params, ledger, policy)
    head = ledger.head_hash()
    with pytest.raises(ReleaseRefusedError, match="already charged"):
        _release(other, dt.date(2025, 11, 1), dt.date(2025, 12, 1), params, ledger, policy)
    assert ledger.head_hash() == head  # refused before any charge
    assert not other.archive.exists()


def test_the_once_key_is_unique_under_concurrent_reservations(workspace, params, policy):
    """Two reservations racing past the check still meet the UNIQUE key in the ledger."""
    ledger = proven_ledger(workspace, policy, evaluation=True)
    with contextlib.closing(sqlite3.connect(ledger.path)) as conn:
        row = conn.execute("PRAGMA index_list(events)").fetchall()
    assert any("autoindex" in str(r) for r in row)  # once_key UNIQUE
    _release(workspace, dt.date(2025, 11, 1), dt.date(2025, 12, 1), params, ledger, policy)
    with contextlib.closing(sqlite3.connect(ledger.path)) as conn:
        key = conn.execute("SELECT once_key FROM events WHERE once_key IS NOT NULL").fetchone()[0]
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            conn.execute(
                "INSERT INTO events VALUES (999, 'race', 'reserve', 'now', 'customers',"
                " '2025-12-01', '2025-12-01', ?, '{}', 'x', 'y')",
                (key,),
            )


def test_an_aborted_month_may_be_retried_and_is_charged_again(workspace, params, policy):
    """Issue 18.2: a killed monthly release no longer makes its month unreleasable."""
    ledger = proven_ledger(workspace, policy, evaluation=True)
    month, closed = dt.date(2025, 11, 1), dt.date(2025, 12, 1)
    spec = SPECS["monthly_category"]
    first = _release(workspace, dt.date(2025, 10, 1), dt.date(2025, 11, 1), params, ledger, policy)
    # a crash after the reservation: reserved, no folder, the process gone
    request = ReleaseRequest.for_policy(
        policy,
        population="customers",
        purpose=PURPOSE,
        recipient="purchasing",
        destination="SE",
        guarantee=first.card["guarantee"],
        as_of=closed,
        epsilon=first.card["privacy_loss"]["epsilon"],
        mechanism="laplace",
        once_key=f"{spec.name}/{month:%Y-%m}",
        synthetic=True,
    )
    crashed = ledger.reserve(request, output=workspace.release_dir("crashed"))
    with pytest.raises(ReleaseRefusedError, match="reserved but not published .*reconcile"):
        _release(workspace, month, closed, params, ledger, policy)
    ledger.abort(crashed.release_id, "killed")  # what reconciliation records
    retried = _release(workspace, month, closed, params, ledger, policy)
    statuses = {e.release_id: e.status for e in ledger.entries()}
    assert statuses[crashed.release_id] == "aborted" and statuses[retried.release_id] == "published"
    # both charges count; the month has one value in the archive
    epsilon = first.card["privacy_loss"]["epsilon"]
    assert ledger.balance("customers", closed).period_total.epsilon == pytest.approx(3 * epsilon)
    assert _read_archive_pl(workspace).filter(pl.col("month") == month).height == len(
        PRODUCT_CATEGORIES
    )
    with pytest.raises(ReleaseRefusedError, match="already"):
        _release(workspace, month, closed, params, ledger, policy)


def test_backfill_steps_through_the_history(workspace, params, policy):
    ledger = proven_ledger(workspace, policy, evaluation=True)
    report = backfill(
        release_context(
            ledger, workspace, policy, purpose=PURPOSE, recipient="purchasing", synthetic=True
        ),
        until=dt.date(2026, 2, 15),
        params=params,
    )
    # Data start on 2025-09-10: September is partial; October to January have closed.
    assert list(report.released) == ["2025-10-01", "2025-11-01", "2025-12-01", "2026-01-01"]
    assert report.skipped == {"2025-09-01": "only partly covered by the prepared data"}
    archive = _read_archive_pl(workspace)
    assert archive["month"].n_unique() == 4
    # Each month was released when it closed.
    as_ofs = {e.request.as_of for e in ledger.entries()}
    assert as_ofs == {
        dt.date(2025, 11, 1),
        dt.date(2025, 12, 1),
        dt.date(2026, 1, 1),
        dt.date(2026, 2, 1),
    }
    again = backfill(
        release_context(
            ledger, workspace, policy, purpose=PURPOSE, recipient="purchasing", synthetic=True
        ),
        until=dt.date(2026, 2, 15),
        params=params,
    )
    assert again.released == {}
    assert len(ledger.entries()) == 4


def test_backfill_refuses_the_controllers_real_ledger(workspace, params, policy, tmp_path):
    ledger = Ledger.open(tmp_path / "real.sqlite", policy.controller, policy=policy, init=True)
    with pytest.raises(ReleaseRefusedError, match="evaluation ledger or the demo"):
        backfill(
            release_context(ledger, workspace, policy, purpose=PURPOSE, recipient="purchasing"),
            until=dt.date(2026, 2, 1),
            params=params,
        )


def test_backfill_replays_months_before_the_prepared_window(tmp_path):
    """Months older than today's retention window are released from the raw data rewound
    and prepared as of each month's close — never from data that had left retention."""
    from segments import copy_default_dataset, prepare

    ws = Workspace(tmp_path / "ws")
    copy_default_dataset(ws)
    policy = Policy.load("alloffice")
    prepare(ws, policy, "statistics", dt.date(2026, 10, 31))
    ledger = Ledger.for_workspace(
        ws, policy.controller, evaluation=True, synthetic=synthetic_proof(ws)
    )
    report = backfill(
        release_context(
            ledger, ws, policy, purpose="statistics", recipient="purchasing", synthetic=True
        ),
        until=dt.date(2024, 2, 1),
        params=PrivacyParams.from_policy(policy, "statistics"),
    )
    # the default history starts 2023-11-01; today's prepared frames start in 2025
    assert list(report.released) == ["2023-11-01", "2023-12-01", "2024-01-01"]
    assert {e.request.as_of for e in ledger.entries()} == {
        dt.date(2023, 12, 1),
        dt.date(2024, 1, 1),
        dt.date(2024, 2, 1),
    }
    assert _read_archive_pl(ws)["month"].n_unique() == 3
    assert not (ws.root / ".history").exists()  # the replay folder is removed


def test_history_cannot_be_replayed_for_real_data(tmp_path):
    from segments import copy_default_dataset
    from segments.prepare.history import rewind_raw

    ws = Workspace(tmp_path / "ws")
    copy_default_dataset(ws)
    manifest = json.loads(ws.manifest.read_text())
    ws.manifest.write_text(json.dumps({**manifest, "synthetic": False}))
    with pytest.raises(PolicyError, match="only synthetic data can be rewound"):
        rewind_raw(ws, dt.date(2024, 1, 31), Workspace(tmp_path / "replay"))


def test_backfill_schedule_of_real_data_does_not_depend_on_private_dates(
    workspace, params, tmp_path
):
    """Issue 13 item 10: the schedule and the "skipped" message followed the earliest
    private order date. For data not proven synthetic, the schedule is the public rule
    (closed months inside retention), the same whatever the data hold."""
    import polars as pl

    from segments.privacy.archive import backfill_schedule, releasable_months

    lines = workspace.prepared_dir(PURPOSE) / "lines.parquet"
    frame = pl.read_parquet(lines)
    later = tmp_path / "later.parquet"
    frame.filter(pl.col("order_date") >= dt.date(2025, 12, 3)).write_parquet(later)
    until = dt.date(2026, 2, 15)
    public = releasable_months(until, params)[0]
    for data in (lines, later):
        first, covered, skipped = backfill_schedule(workspace, data, until, params, False)
        assert (first, covered, skipped) == (public, public, {})
    # synthetic data may follow the data (and say so)
    _, _, skipped = backfill_schedule(workspace, later, until, params, True)
    assert skipped == {"2025-12-01": "only partly covered by the prepared data"}


def test_attack_a_month_after_the_prepared_datas_as_of_is_refused(workspace, params, policy):
    """The release's as-of ran ahead of the data: February (ends 2026-02-28) was accepted on
    data prepared as of 2026-02-10 — an incomplete month released as a whole one."""
    ledger = proven_ledger(workspace, policy, evaluation=True)
    with pytest.raises(ReleaseRefusedError, match=r"clause AO-1.*after the prepared data's as-of"):
        _release(workspace, dt.date(2026, 2, 1), dt.date(2026, 3, 15), params, ledger, policy)
    assert ledger.entries() == [] and not workspace.archive.exists()
    # a month that ends on or before the data's as-of is released
    _release(workspace, dt.date(2026, 1, 1), dt.date(2026, 3, 15), params, ledger, policy)


def test_attack_an_edited_report_as_of_does_not_move_the_datas_as_of(workspace, params, policy):
    """fix13.4: policy_report.json is editable; its as_of moved past February must not let a
    month with no data be released (and its "once" key burned): the as-of is the signed
    record's."""
    report = workspace.prepared_dir(PURPOSE) / "policy_report.json"
    edited = json.loads(report.read_text())
    edited["as_of"] = "2026-12-31"
    report.write_text(json.dumps(edited))
    ledger = proven_ledger(workspace, policy, evaluation=True)
    with pytest.raises(ReleaseRefusedError, match=r"after the prepared data's as-of 2026-02-10"):
        _release(workspace, dt.date(2026, 2, 1), dt.date(2026, 3, 15), params, ledger, policy)
    assert ledger.entries() == [] and not workspace.archive.exists()


def test_cli_refuses_a_month_after_the_data_before_any_ledger_exists(workspace, capsys):
    from segments.cli.main import main

    argv = (
        f"release -w {workspace.root} --policy alloffice --purpose {PURPOSE} --recipient "
        "purchasing --spec monthly_category --month 2026-02-01 --as-of 2026-03-15 --demo-ledger"
    )
    assert main(argv.split()) == 2
    assert "after the prepared data's as-of" in capsys.readouterr().err
    assert not (workspace.root / "ledger").exists()


_KILLED_BEFORE_APPEND = r"""
import datetime as dt, os, signal, sys
from segments.policy import Policy
from segments.privacy import archive
from segments.privacy.ledger import Ledger
from segments.privacy.specs import PrivacyParams
from segments.workspace import Workspace

def die(*args, **kwargs):  # kill -9 right after the ledger recorded "published"
    os.kill(os.getpid(), signal.SIGKILL)

archive._append = die
# the test session's provenance-signing secret (the frames' signed record is checked)
from pathlib import Path
from segments import provenance
provenance._secret_path = lambda: Path(os.environ["SEGMENTS_TEST_PROOF_SECRET"])
ws, policy = Workspace(sys.argv[1]), Policy.load("alloffice")
# hand-made frames: a signed verdict about this workspace's raw files, as tests do
from segments.privacy.synthetic import _verdict, raw_digest
ledger = Ledger.for_workspace(ws, policy.controller, evaluation=True,
                              synthetic=_verdict(True, "hand-made test frames", "tests",
                                                 raw_digest(ws)),
                              policy=policy)
from segments.privacy.publishing import ReleaseContext
context = ReleaseContext.open(ledger, ws, policy, purpose="statistics", recipient="purchasing",
                              synthetic=True)
archive.release_month(context, dt.date(2025, 11, 1), as_of=dt.date(2025, 12, 1),
                      params=PrivacyParams.from_policy(policy, "statistics"))
"""


def test_attack_a_kill_between_published_and_the_archive_update_loses_no_month(
    workspace, params, policy, capsys
):
    """Issue 18 review: ``kill -9`` after the ledger's "published" and before the archive
    update left the month out of the archive for good (the retry is refused as charged).
    The archive is derived: a forecast, the next monthly release and ``segments ledger
    --cards`` rebuild it from the published table (a forecast without a ledger refuses)."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from segments.cli.main import main
    from segments.forecast import load_archive
    from segments.privacy.archive import archive_problems, rebuild_archive

    ledger = proven_ledger(workspace, policy, evaluation=True)
    _release(workspace, dt.date(2025, 10, 1), dt.date(2025, 11, 1), params, ledger, policy)
    src = str(Path(__file__).parents[1] / "src")
    from segments import provenance

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    env["SEGMENTS_TEST_PROOF_SECRET"] = str(provenance._secret_path())
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_BEFORE_APPEND, str(workspace.root)], env=env, timeout=300
    )
    assert child.returncode == -signal.SIGKILL
    lost = [e for e in ledger.entries() if e.status == "published"][-1]
    assert set(_read_archive_pl(workspace)["month"]) == {dt.date(2025, 10, 1)}  # the month lost
    assert any("missing from it" in p for p in archive_problems(workspace.releases, ledger))
    saved = workspace.archive.read_bytes()
    hidden = workspace.root.parent / "ledger-elsewhere"
    (workspace.root / "ledger").rename(hidden)  # no ledger to rebuild from: refused
    with pytest.raises(WorkspaceError, match=r"lacks 1 published month.*2025-11.*ledger --cards"):
        load_archive(workspace)
    hidden.rename(workspace.root / "ledger")
    assert len(load_archive(workspace)) == 2 * len(PRODUCT_CATEGORIES)  # rebuilt from it

    workspace.archive.write_bytes(saved)
    assert main(["ledger", "-w", str(workspace.root), "--cards", str(workspace.releases)]) == 0
    assert f"restored month 2025-11 ({lost.release_id})" in capsys.readouterr().out
    archive = _read_archive_pl(workspace)
    assert archive.filter(pl.col("month") == dt.date(2025, 11, 1))["release_id"].to_list() == [
        lost.release_id
    ] * len(PRODUCT_CATEGORIES)
    assert archive_problems(workspace.releases, ledger) == []
    assert rebuild_archive(workspace.releases, ledger) == []  # nothing left to restore
    assert len(load_archive(workspace)) == 2 * len(PRODUCT_CATEGORIES)

    workspace.archive.write_bytes(saved)  # the lost state again: a release repairs it
    with pytest.raises(ReleaseRefusedError, match="2025-11 was already released"):
        _release(workspace, dt.date(2025, 11, 1), dt.date(2025, 12, 1), params, ledger, policy)
    assert set(_read_archive_pl(workspace)["month"]) == {dt.date(2025, 10, 1), dt.date(2025, 11, 1)}


@pytest.mark.parametrize("month", [dt.date(2024, 1, 1), dt.date(2024, 9, 1)])
def test_a_replayed_month_prepares_the_frames_of_a_full_rewind(tmp_path, month):
    """The backfill rewinds only the closed month's order lines (issue 14, main job within 3
    minutes): prepared as of the month's close, the replay's customers frame, the month's
    lines partition and the per-person cells a month-closing reads are those of the full
    rewind (the same bytes, the same digests in prepare's signed record), and no other
    month's partition is written."""
    from segments import copy_default_dataset
    from segments.engine.inmemory import PolarsEngine
    from segments.prepare.frames import prepare
    from segments.prepare.history import rewind_raw
    from segments.privacy.archive import _prepared_as_of, _replay_key
    from segments.provenance import signed_record

    ws = Workspace(tmp_path / "ws")
    copy_default_dataset(ws)
    policy = Policy.load("alloffice")
    key = _replay_key(ws)
    closed = next_month(month)
    day = closed - dt.timedelta(days=1)
    full = Workspace(tmp_path / "full")
    rewind_raw(ws, day, full)
    prepare(full, policy, PURPOSE, day, key=key)
    windowed = Workspace(tmp_path / "windowed")
    folder = _prepared_as_of(ws, windowed, policy, PURPOSE, closed, key)

    part = f"lines.parquet/month={month:%Y-%m}/part-00000.parquet"
    assert sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*.parquet") if p.is_file()
    ) == [
        "customers.parquet",
        part,
    ]
    before, after = full.prepared_dir(PURPOSE), folder
    for name in ("customers.parquet", part):
        assert (before / name).read_bytes() == (after / name).read_bytes(), name
        recorded = (signed_record(full, PURPOSE), signed_record(windowed, PURPOSE))
        assert recorded[0]["outputs"][name] == recorded[1]["outputs"][name]
    assert signed_record(windowed, PURPOSE)["as_of"] == day.isoformat()
    window = (month, closed)
    cells = [
        PolarsEngine().person_cells(
            f / "lines.parquet", window, PRODUCT_CATEGORIES, by_month=False, scratch=tmp_path
        )
        for f in (before, after)
    ]
    assert cells[0].height > 100 and cells[0].equals(cells[1])
    manifest = json.loads(windowed.manifest.read_text())
    assert manifest["lines_window"] == [month.isoformat(), closed.isoformat()]
    # r9a L2: the replay holds this month's lines only, so no other month is released from it
    from segments.privacy.archive import check_month_in_data

    check_month_in_data(ws, folder, month, PURPOSE, policy)
    previous = (month - dt.timedelta(days=1)).replace(day=1)
    with pytest.raises(ReleaseRefusedError, match=r"order lines of \[.*\) only.*backfill"):
        check_month_in_data(ws, folder, previous, PURPOSE, policy)
