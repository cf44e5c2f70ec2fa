"""The last LOW findings on rewriting W/raw/ (erasure and retention purge).

1. ``replace_raw_tables`` renamed the staged tables into place one by one (a partitioned
   table: the old folder aside first, then the new one in) and the manifest was updated
   after. A ``kill -9`` between two of those steps left W/raw/ neither as it was nor as the
   run meant to leave it: some tables rewritten and others not, a partitioned table missing
   (its old folder then swept as a dead writer's leftover), or new data under the old
   manifest. The replacement is now one journalled transaction: before its journal is
   written, the next start sweeps the staging (rolled back); after, it renames what is left
   (rolled forward). Tested with a real SIGKILL of a subprocess at every step.
2. Resuming an interrupted erasure looked the request up, and rewrote W/raw/, outside any
   hashing: a table edited meanwhile was copied into the rewritten raw data.
3. ``load_key`` with a steward's key read the manifest outside the run's hashing of W/raw/.

Each attack test fails on main 3fa20ec (noted per test) and has a control.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from segments._tables import RawChangedError
from segments.exceptions import PolicyError, WorkspaceError
from segments.prepare.pseudonym import PseudonymKey, demo_key, load_key
from segments.workspace import (
    Workspace,
    folder_files,
    parquet_files,
    raw_hashes,
    sha256_file,
    write_json,
)

KEY = PseudonymKey(b"k" * 32, "steward key (test)")
SRC = str(Path(__file__).parents[1] / "src")


def _copy(small_raw: Workspace, root: Path) -> Workspace:
    ws = Workspace(root)
    shutil.copytree(small_raw.raw, ws.raw)
    return ws


def _tables_state(ws: Workspace) -> dict[str, str]:
    """SHA-256 of every table file under W/raw/ (not the manifest nor the logs)."""
    return {
        p.relative_to(ws.raw).as_posix(): sha256_file(p)
        for p in folder_files(ws.raw, holds_tables=True)
        if p.suffix == ".parquet"
    }


def _manifest_matches(ws: Workspace) -> bool:
    return bool(ws.read_manifest()["files"] == _tables_state(ws))


# --- 1. a kill -9 at any step of the replacement -------------------------------------------
#: The erasure of one customer in a subprocess, killed (SIGKILL, no cleanup) at its n-th
#: rename once the raw tables' replacement has begun (renames of the journal, the tables, the
#: manifest and the request log all count). With n = 0 it runs to the end and prints how many
#: renames there were.
_KILLED_ERASURE = r"""
import os, signal, sys
from segments.prepare import retention, subjects
from segments.prepare.pseudonym import PseudonymKey

root, kill_at, customer = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
calls, active = [0], [False]

def counted(real):
    def op(*args, **kwargs):
        if active[0]:
            calls[0] += 1
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return op

os.replace, os.rename = counted(os.replace), counted(os.rename)
real = retention.replace_raw_tables

def replacing(*args, **kwargs):
    active[0] = True  # and stays on: the manifest and the log come after
    return real(*args, **kwargs)

retention.replace_raw_tables = replacing
subjects.erase(root, "alloffice", customer, key=PseudonymKey(b"k" * 32, "steward key (test)"))
print("renames", calls[0])
"""


def _erase_in_child(root: Path, kill_at: int, customer: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-c", _KILLED_ERASURE, str(root), str(kill_at), str(customer)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def erasure_states(small_raw: Workspace, tmp_path_factory: pytest.TempPathFactory):
    """W/raw/ before and after the erasure of one customer, and how many renames it made."""
    ws = _copy(small_raw, tmp_path_factory.mktemp("erasure-control") / "ws")
    customer = int(pl.read_parquet(ws.raw_table("orders"))["customer_id"][0])
    before = _tables_state(ws)
    assert _manifest_matches(ws)
    done = _erase_in_child(ws.root, 0, customer)
    assert done.returncode == 0, done.stderr
    renames = int(done.stdout.split()[-1])
    after = _tables_state(ws)
    assert after != before and _manifest_matches(ws)
    return customer, before, after, renames


def _kill_and_check(
    small_raw: Workspace, tmp_path: Path, erasure_states, kill_points: list[int]
) -> None:
    """Item 1: SIGKILL at each rename of an erasure's raw replacement (and of the manifest
    and request-log updates after it), then the next start (every command sweeps first).
    W/raw/ must be exactly as before or exactly as after, its manifest must list exactly its
    files, and a rerun of the erasure must finish with W/raw/ as after, one log entry.

    On main 3fa20ec: killed between moving the old order-lines folder aside and moving the
    new one in, the table was gone and the sweep then deleted the old folder (the table
    lost); killed between two tables, customers were rewritten and orders not; killed after
    the renames, the manifest still listed the old digests."""
    from segments.prepare import subjects

    customer, before, after, renames = erasure_states
    assert renames >= 5
    seen: list[str] = []
    for kill_at in kill_points:
        ws = _copy(small_raw, tmp_path / f"k{kill_at}")
        child = _erase_in_child(ws.root, kill_at, customer)
        assert child.returncode == -signal.SIGKILL, (kill_at, child.stderr[-2000:])
        ws.sweep()  # what every command does first (the CLI's main, prepare, erase, ...)
        state = _tables_state(ws)
        where = f"killed at rename {kill_at} of {renames}"
        assert state in (before, after), f"{where}: W/raw/ is neither before nor after"
        seen.append("before" if state == before else "after")
        assert _manifest_matches(ws), f"{where}: the manifest does not list W/raw/'s files"
        assert not [p for p in ws.raw.rglob(".*") if p.name != ".gitkeep"], where
        subjects.erase(ws, "alloffice", customer, key=KEY)  # the rerun finishes it
        assert _tables_state(ws) == after and _manifest_matches(ws), where
        entries = json.loads(ws.subject_log.read_text(encoding="utf-8"))
        assert [e["completed"] for e in entries] == [True], where
    # killed before the commit (the journal's rename): rolled back; after it: rolled forward
    assert seen[0] == "before" and set(seen[1:]) == {"after"}, seen
    print(f"{renames} renames; killed at {kill_points}: {seen}")


def test_attack_a_kill_between_steps_of_the_raw_replacement_leaves_before_or_after(
    small_raw: Workspace, tmp_path: Path, erasure_states
) -> None:
    """Item 1, the fast run: killed at the journal's rename (nothing committed), between the
    first two tables, and with the order-lines folder moved aside but the new one not in.
    On main 3fa20ec the second and third left W/raw/ neither before nor after."""
    _kill_and_check(small_raw, tmp_path, erasure_states, [1, 2, 4])


@pytest.mark.slow
def test_attack_a_kill_at_every_step_of_the_raw_replacement_leaves_before_or_after(
    small_raw: Workspace, tmp_path: Path, erasure_states
) -> None:
    """Item 1, every step: killed at each rename of the erasure (about 80 s)."""
    _kill_and_check(small_raw, tmp_path, erasure_states, list(range(1, erasure_states[3] + 1)))


def test_a_killed_replacement_is_finished_by_any_reader_of_w_raw(
    small_raw: Workspace, tmp_path: Path, erasure_states
) -> None:
    """Rolled forward by the first hashing of W/raw/ too (a library caller that never swept):
    killed right after its journal was written, the raw data read is the state after."""
    customer, before, after, _ = erasure_states
    ws = _copy(small_raw, tmp_path / "ws")
    child = _erase_in_child(ws.root, 2, customer)  # after the journal, before the last rename
    assert child.returncode == -signal.SIGKILL
    digests = raw_hashes(ws)
    assert {k: v for k, v in digests.items() if k.endswith(".parquet")} == after
    assert _manifest_matches(ws)


# --- the journal is a file in the workspace: it names nothing outside W/raw/ (r10a F1, F2) ---
_DEAD = 2**22 - 7  # no such process here (pids this high are unused): "its writer was killed"


@pytest.mark.parametrize(
    "step",
    [
        # an absolute target: a file outside the workspace (the controller's ledger) replaced
        {"staged": "fresh.sqlite", "target": "{outside}/ledger.sqlite", "old": None},
        # a relative escape
        {"staged": "raw/.customers.parquet.p{pid}-x.tmp", "target": "../outside/x", "old": None},
        # "old" is removed once the moves are done: never a path it does not derive itself
        {"staged": "nothing", "target": "raw/customers.parquet", "old": "../outside"},
        # a staged file that is not the writer's own sibling of the target
        {"staged": "fresh.sqlite", "target": "raw/customers.parquet", "old": None},
    ],
)
def test_attack_an_edited_journal_moves_or_removes_nothing_outside_w_raw(
    small_raw: Workspace, tmp_path: Path, step: dict[str, str | None]
) -> None:
    """On 3da7834 a journal naming the ledger swapped it for the attacker's file and removed
    any folder its "old" named, on any run that swept or hashed W/raw/. Now every path must be
    one the rewrite writes: the journal is refused in one line and nothing moves."""
    ws = _copy(small_raw, tmp_path / "ws")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "ledger.sqlite").write_bytes(b"the real ledger, with spending")
    (ws.root / "fresh.sqlite").write_bytes(b"a fresh ledger, nothing spent")
    named = {
        k: None if v is None else v.format(outside=outside, pid=_DEAD) for k, v in step.items()
    }
    write_json(ws.root / ".raw-journal.json", {"pid": _DEAD, "steps": [named]})
    before = _tables_state(ws)
    for run in (ws.sweep, lambda: raw_hashes(ws)):
        with pytest.raises(
            WorkspaceError, match=r"raw-journal\.json: step 1.*rule: .*fix: .*remove"
        ):
            run()
    assert (outside / "ledger.sqlite").read_bytes() == b"the real ledger, with spending"
    assert (ws.root / "fresh.sqlite").exists() and _tables_state(ws) == before


@pytest.mark.parametrize(
    "text",
    [
        '{"pid": 1',
        '{"steps": []}',
        '{"pid": "x", "steps": []}',
        '{"pid": 9, "steps": [3]}',
        '{"pid": 2147483648, "steps": []}',  # beyond any pid (os.kill overflowed: r10a F2b)
    ],
)
def test_a_damaged_journal_is_refused_in_one_line(
    small_raw: Workspace, tmp_path: Path, text: str
) -> None:
    ws = _copy(small_raw, tmp_path / "ws")
    (ws.root / ".raw-journal.json").write_text(text)
    with pytest.raises(WorkspaceError) as refused:
        raw_hashes(ws)
    message = str(refused.value)
    assert "\n" not in message and ".raw-journal.json" in message and "remove" in message


def test_a_sweep_keeps_what_a_journal_committed_meanwhile_needs(
    small_raw: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review r10a F8: the sweep finished committed replacements, then removed dead writers'
    raw leftovers; a writer that committed and died in between lost its staged files (its
    table then gone). Simulated: the finisher found the writer alive (a no-op), the writer is
    dead by the time its leftovers are looked at. Also: a leftover whose pid is beyond any
    pid is a dead writer's, not a crash (r10a F2b)."""
    import segments.workspace as workspace

    ws = _copy(small_raw, tmp_path / "ws")
    staged = ws.raw / f".customers.parquet.p{_DEAD}-abc.tmp"
    shutil.copyfile(ws.raw / "customers.parquet", staged)
    step = {"staged": staged.relative_to(ws.root).as_posix(), "target": "raw/customers.parquet"}
    write_json(ws.root / ".raw-journal.json", {"pid": _DEAD, "steps": [{**step, "old": None}]})
    monkeypatch.setattr(workspace, "finish_raw_replacement", lambda ws: False)
    assert staged not in ws.sweep() and staged.exists()
    monkeypatch.undo()
    huge = ws.raw / ".orders.parquet.p99999999999-abc.tmp"
    huge.write_bytes(b"x")
    ws.sweep()  # rolls the journal forward, then sweeps the huge pid's leftover
    assert not staged.exists() and not huge.exists()
    assert not (ws.root / ".raw-journal.json").exists()


# --- 2. a resumed erasure is bound to one hashing -----------------------------------------
def _edit_in_place(path: Path, column: str) -> None:
    """A second process's edit: one value of a row changed, the row count kept."""
    frame = pl.read_parquet(path)
    first = pl.int_range(pl.len()) == 0
    edited = pl.when(first).then(pl.col(column) + 1).otherwise(pl.col(column)).alias(column)
    frame.with_columns(edited).write_parquet(path)


def test_attack_raw_partition_edited_while_an_interrupted_erasure_resumes_is_refused(
    small_raw: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 2: an erasure dies before its raw rewrite (pending in the log); the rerun resumes
    it, and a month of order lines is edited after the resume looked the person up. On main
    3fa20ec the resume read W/raw/ outside any hashing: the edit was copied into the rewritten
    raw data and the manifest updated to vouch for it. Now the resume is bound to one hashing:
    refused, nothing rewritten, the request still pending. Control: a rerun finishes it."""
    subjects = importlib.import_module("segments.prepare.subjects")
    retention = importlib.import_module("segments.prepare.retention")
    ws = _copy(small_raw, tmp_path / "ws")
    orders = pl.read_parquet(ws.raw_table("orders"))
    requester = int(orders["customer_id"][0])
    real_replace = retention.replace_raw_tables

    def killed(*_: object) -> None:
        raise KeyboardInterrupt  # the first run dies before its raw rewrite

    monkeypatch.setattr(retention, "replace_raw_tables", killed)
    with pytest.raises(KeyboardInterrupt):
        subjects.erase(ws, "alloffice", requester, key=KEY)
    monkeypatch.setattr(retention, "replace_raw_tables", real_replace)

    target = parquet_files(ws.raw_table("order_lines"))[-2]
    real = subjects._remove_from_derived
    edits = []

    def remove_then_edit(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not edits:
            _edit_in_place(target, "quantity")
            edits.append(target)
        return real(*args, **kwargs)

    monkeypatch.setattr(subjects, "_remove_from_derived", remove_then_edit)
    with pytest.raises(RawChangedError, match=r"changed while this run"):
        subjects.erase(ws, "alloffice", requester, key=KEY)
    listed = ws.read_manifest()["files"][target.relative_to(ws.raw).as_posix()]
    assert listed != sha256_file(target)  # the edit is not vouched for
    assert pl.read_parquet(ws.raw_table("orders")).equals(orders)  # nothing rewritten
    entries = json.loads(ws.subject_log.read_text(encoding="utf-8"))
    assert [e["completed"] for e in entries] == [False]  # still pending

    # control: the edit taken into the manifest (as a re-ingest would), the rerun finishes
    manifest = ws.read_manifest()
    manifest["files"][target.relative_to(ws.raw).as_posix()] = sha256_file(target)
    write_json(ws.manifest, manifest)
    subjects.erase(ws, "alloffice", requester, key=KEY)
    entries = json.loads(ws.subject_log.read_text(encoding="utf-8"))
    assert [e["completed"] for e in entries] == [True]
    assert requester not in pl.read_parquet(ws.raw_table("orders"))["customer_id"].to_list()


# --- 3. load_key with a steward's key: the manifest the run hashed -------------------------
def test_attack_manifest_swapped_under_a_given_keys_demo_check_is_refused(
    small_raw: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 3: a "steward's" key that is in fact the demo key of the data's seed (public: the
    seed is in the manifest) must be refused. The manifest on disk names another seed while
    the key is resolved, and the genuine one is back when the erasure hashes W/raw/. On main
    3fa20ec load_key read the manifest outside the run's hashing, did not recognise the demo
    key, and the erasure logged and carried out the request under a key anyone can derive.
    Now the key is checked against the manifest bytes of the run's one hashing of W/raw/:
    refused, nothing written. Control: without the swap the demo key is refused as such."""
    subjects = importlib.import_module("segments.prepare.subjects")
    ws = _copy(small_raw, tmp_path / "ws")
    genuine = {**ws.read_manifest(), "seed": 987_654}  # a seed outside the small public ones
    write_json(ws.manifest, genuine)
    public = demo_key(genuine).secret  # anyone can derive it from the manifest's seed
    requester = int(pl.read_parquet(ws.raw_table("orders"))["customer_id"][0])
    with pytest.raises(PolicyError, match="public demo key"):  # control
        subjects.erase(ws, "alloffice", requester, key=public)
    assert load_key(KEY, workspace=ws) == KEY  # control: a steward's key

    write_json(ws.manifest, {**genuine, "seed": 4242})  # on disk while the key is resolved
    real = subjects.check_log_key

    def swap_back_then_check(*args, **kwargs):  # type: ignore[no-untyped-def]
        write_json(ws.manifest, genuine)  # the second process's timing
        return real(*args, **kwargs)

    monkeypatch.setattr(subjects, "check_log_key", swap_back_then_check)
    with pytest.raises((PolicyError, RawChangedError)):
        subjects.erase(ws, "alloffice", requester, key=public)
    assert not ws.subject_log.exists()  # no request logged under the public key
    assert requester in pl.read_parquet(ws.raw_table("orders"))["customer_id"].to_list()
