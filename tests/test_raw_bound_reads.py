"""r15b's LOW findings on reading W/raw/: every run that hashes the raw files reads what it
hashed, and enumerates them as every reader does.

1. A symlinked month folder (or part file) under a raw table was hashed by one enumeration
   (``rglob``: not into a linked folder) and read by another (``parquet_files``: into it),
   so prepare refused it with a misleading "was added while this run read the table". One
   enumeration (``workspace.folder_files``) now serves both, and a link is refused in one
   line naming the table, the link, the rule and the fix.
2. The manifest was read outside the hashed bytes by the key resolution (``load_key``), the
   synthetic proof and the rewind: a manifest swapped between the hashing and the reading
   chose what was trusted (a demo key's seed, a proof's parameters, a replay's manifest).
   It is now parsed from the bytes the run hashed, read once.

Each attack test fails on the code before the fix (noted per test) and has a control.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import polars as pl
import pytest

from segments._tables import RawChangedError
from segments.exceptions import WorkspaceError
from segments.prepare import prepare
from segments.prepare.pseudonym import KEY_ENV_VAR, PseudonymKey, demo_key, load_key
from segments.workspace import (
    PREPARED_LINES,
    Workspace,
    folder_files,
    parquet_files,
    raw_hashes,
    sha256_file,
    write_json,
)

KEY = PseudonymKey(b"k" * 32, "steward key (test)")
AS_OF = "2026-10-31"
LINK_ERROR = (
    r"table .*order_lines\.parquet: .*month=2025-03.* is a symbolic link .*rule: a workspace "
    r"table holds its own files.*fix: replace the link"
)


def _copy(small_raw: Workspace, root: Path) -> Workspace:
    ws = Workspace(root)
    shutil.copytree(small_raw.raw, ws.raw)
    return ws


def _link_month_folder(ws: Workspace, outside: Path) -> Path:
    """Move one month of raw order lines out of W/raw and link it back in place."""
    month = ws.raw_table("order_lines") / "month=2025-03"
    shutil.move(month, outside)
    month.symlink_to(outside, target_is_directory=True)
    return month


# --- 1. one enumeration of a raw table's files; links refused -----------------------------
def test_raw_hashes_and_parquet_files_enumerate_the_same_files(small_raw: Workspace) -> None:
    """Control: on a workspace without links the one enumeration lists every raw file
    (what ``rglob`` listed) and a table's Parquet files are among the hashed ones."""
    every = {
        p.relative_to(small_raw.raw).as_posix() for p in small_raw.raw.rglob("*") if p.is_file()
    }
    hashed = raw_hashes(small_raw)
    assert set(hashed) == every
    lines = parquet_files(small_raw.raw_table("order_lines"))
    assert len(lines) > 12
    assert {p.relative_to(small_raw.raw).as_posix() for p in lines} <= set(hashed)


def test_attack_a_symlinked_raw_month_folder_is_refused_as_a_link(
    small_raw: Workspace, tmp_path: Path
) -> None:
    """r15b #1: raw/order_lines.parquet/month=2025-03 -> a folder elsewhere. Before the fix
    prepare refused with "raw file ... was added while this run read the table" (the hashing
    skipped the linked folder, the reader went in); now the hashing, the table reader and
    prepare refuse the link itself, in one line, and nothing is written."""
    ws = _copy(small_raw, tmp_path / "ws")
    link = _link_month_folder(ws, tmp_path / "elsewhere")
    with pytest.raises(WorkspaceError, match=LINK_ERROR):
        raw_hashes(ws)
    with pytest.raises(WorkspaceError, match=LINK_ERROR):
        parquet_files(ws.raw_table("order_lines"))
    with pytest.raises(WorkspaceError, match=LINK_ERROR) as refused:
        prepare(ws, "alloffice", "statistics", AS_OF, key=KEY)
    assert "added" not in str(refused.value)
    assert "\n" not in str(refused.value)
    assert not ws.prepared_dir("statistics").exists()
    # control: the same files as a real folder again are prepared
    link.unlink()
    shutil.move(tmp_path / "elsewhere", link)
    prepare(ws, "alloffice", "statistics", AS_OF, key=KEY)
    assert ws.prepared_dir("statistics").is_dir()


def test_attack_a_symlinked_month_folder_through_the_cli_is_one_line(
    small_raw: Workspace,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from segments.cli.main import main

    ws = _copy(small_raw, tmp_path / "ws")
    _link_month_folder(ws, tmp_path / "elsewhere")
    argv = ["prepare", "-w", str(ws.root), "--policy", "alloffice", "--purpose", "statistics"]
    monkeypatch.setenv(KEY_ENV_VAR, "k" * 40)
    assert main([*argv, "--as-of", AS_OF]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "is a symbolic link" in err and "month=2025-03" in err and "fix:" in err, err


def test_attack_a_raw_part_file_linked_to_identical_bytes_is_refused(
    small_raw: Workspace, tmp_path: Path
) -> None:
    """A part file replaced by a link to a copy of the very same bytes is refused too: what
    the link leads to can change after the hashing without W/raw/ changing."""
    ws = _copy(small_raw, tmp_path / "ws")
    part = parquet_files(ws.raw_table("order_lines"))[3]
    copy = tmp_path / "copy.parquet"
    shutil.copyfile(part, copy)
    part.unlink()
    part.symlink_to(copy)
    with pytest.raises(WorkspaceError, match=r"order_lines\.parquet: .* is a symbolic link"):
        raw_hashes(ws)
    with pytest.raises(WorkspaceError, match=r"is a symbolic link"):
        parquet_files(ws.raw_table("order_lines"))


def test_attack_a_symlinked_prepared_month_folder_is_not_prepares_output(
    small_raw: Workspace, tmp_path: Path
) -> None:
    """The prepared frames' check enumerates the same way: a prepared month folder moved
    out and linked back is refused by name (before the fix ``rglob`` skipped the linked
    folder, so its files counted as missing)."""
    from segments.provenance import verify_prepared

    ws = _copy(small_raw, tmp_path / "ws")
    prepare(ws, "alloffice", "statistics", AS_OF, key=KEY)
    assert verify_prepared(ws, "statistics") is None  # control
    lines = ws.prepared_dir("statistics") / "lines.parquet"
    month = sorted(p for p in lines.iterdir() if p.name.startswith("month="))[0]
    shutil.move(month, tmp_path / "elsewhere")
    month.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    why = verify_prepared(ws, "statistics")
    assert why is not None and "is a symbolic link" in why and month.name in why, why


def test_folder_files_refuses_a_linked_folder_of_a_table(tmp_path: Path) -> None:
    (tmp_path / "t.parquet" / "month=2024-01").mkdir(parents=True)
    (tmp_path / "t.parquet" / "month=2024-01" / "part-00000.parquet").write_bytes(b"x")
    assert folder_files(tmp_path) == [tmp_path / "t.parquet/month=2024-01/part-00000.parquet"]
    (tmp_path / "other").mkdir()
    (tmp_path / "t.parquet" / "month=2024-02").symlink_to(tmp_path / "other")
    with pytest.raises(WorkspaceError, match=r"table .*t\.parquet: .*month=2024-02 is a"):
        folder_files(tmp_path, holds_tables=True)


# --- 2. the manifest is parsed from the bytes hashed --------------------------------------
def _manifest_with(ws: Workspace, **changes: object) -> bytes:
    manifest = ws.read_manifest()
    manifest.update(changes)
    path = ws.root / "other-manifest.json"
    write_json(path, manifest)
    data = path.read_bytes()
    path.unlink()
    return data


def test_attack_manifest_swapped_under_the_demo_key_resolution(
    small_raw: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """r15b #2 (load_key): the manifest on disk names another seed (synthetic: true) when
    the key is resolved; the genuine manifest is put back just before the proof hashes the
    raw files. Before the fix the proof proved the genuine data and load_key returned the
    demo key of the OTHER seed, which no proof covered. Now the seed is parsed from the
    manifest bytes the proof hashed: the swap is refused. Control: no swap, the demo key of
    the proven seed."""
    from segments.privacy.synthetic import prove_synthetic

    monkeypatch.delenv(KEY_ENV_VAR, raising=False)
    ws = _copy(small_raw, tmp_path / "ws")
    genuine = ws.manifest.read_bytes()
    assert load_key(workspace=ws, synthetic_proof=prove_synthetic) == demo_key(
        ws.read_manifest()
    )  # control
    evil = _manifest_with(ws, seed=4242)
    ws.manifest.write_bytes(evil)

    def swap_back_then_prove(workspace: Workspace):  # the second process's timing
        ws.manifest.write_bytes(genuine)
        return prove_synthetic(workspace)

    try:
        key = load_key(workspace=ws, synthetic_proof=swap_back_then_prove)
    except RawChangedError as refused:
        assert "manifest.json changed while this run" in str(refused)
    else:
        pytest.fail(f"a manifest swapped under the proof chose the key: {key.provenance}")


def test_attack_manifest_swapped_after_the_proof_hashed_it(
    small_raw: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """r15b #2 (prove_synthetic): W/raw/ holds the generator's files under a manifest with
    another seed; just after the proof hashed them, the genuine manifest is swapped in.
    Before the fix the proof read the genuine manifest from disk, proved the data and signed
    a verdict about the hashed state (the other seed's manifest), so that state was "proven".
    Now the manifest is parsed from the bytes hashed: refused, no verdict cached."""
    import segments.privacy.synthetic as synthetic

    ws = _copy(small_raw, tmp_path / "ws")
    genuine = ws.manifest.read_bytes()
    ws.manifest.write_bytes(_manifest_with(ws, seed=4242))
    real = synthetic.raw_hashes

    def hash_then_swap(workspace: Workspace) -> dict[str, str]:
        digests = real(workspace)
        ws.manifest.write_bytes(genuine)
        return digests

    monkeypatch.setattr(synthetic, "raw_hashes", hash_then_swap)
    with pytest.raises(RawChangedError, match=r"manifest\.json changed while this run"):
        synthetic.prove_synthetic(ws)
    monkeypatch.setattr(synthetic, "raw_hashes", real)
    assert synthetic.prove_synthetic(ws).proven  # control: the genuine manifest, unswapped


def test_attack_manifest_swapped_while_the_rewind_hashes_the_source(
    small_raw: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """r15b #2 (rewind_raw): the replay's manifest is built from the source's manifest, and
    its signed record names the source's digests. Before the fix the manifest was read before
    the hashing, so one swapped in between was not the one the record vouched for (here the
    replay carried a marker of the manifest that was never hashed). Now: a swap before the
    hashing is what the replay carries; a swap after it is refused."""
    import datetime as dt

    import segments.provenance as provenance
    from segments.prepare.history import rewind_raw

    ws = _copy(small_raw, tmp_path / "ws")
    first = _manifest_with(ws, note="read")
    hashed = _manifest_with(ws, note="hashed")
    ws.manifest.write_bytes(first)
    real = provenance.raw_hashes

    def swap_then_hash(workspace: Workspace) -> dict[str, str]:
        ws.manifest.write_bytes(hashed)
        return real(workspace)

    monkeypatch.setattr(provenance, "raw_hashes", swap_then_hash)
    replay = rewind_raw(ws, dt.date(2026, 6, 30), Workspace(tmp_path / "replay"))
    assert replay.read_manifest()["note"] == "hashed"
    assert sha256_file(ws.manifest) == real(ws)["manifest.json"]

    def hash_then_swap(workspace: Workspace) -> dict[str, str]:
        digests = real(workspace)
        ws.manifest.write_bytes(first)
        return digests

    monkeypatch.setattr(provenance, "raw_hashes", hash_then_swap)
    with pytest.raises(RawChangedError, match=r"manifest\.json changed while this run"):
        rewind_raw(ws, dt.date(2026, 6, 30), Workspace(tmp_path / "replay2"))
    assert not (tmp_path / "replay2" / "raw").exists()


# --- 4. purge, subject export and the truth evaluation read what they hashed ---------------
def _edit_in_place(path: Path, column: str) -> None:
    """A second process's edit: one value of a row changed, the row count kept."""
    import polars as pl

    frame = pl.read_parquet(path)
    first = pl.int_range(pl.len()) == 0
    edited = pl.when(first).then(pl.col(column) + 1).otherwise(pl.col(column)).alias(column)
    frame.with_columns(edited).write_parquet(path)


def test_attack_raw_partition_edited_while_the_purge_runs_is_refused(
    small_raw: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """r15b #4 (retention purge): a month of order lines edited (one quantity, same row
    count) after the purge parsed W/raw/ and before it rewrote the tables. Before the fix the
    purge re-read the partitions from disk when staging them, so the edit was written into
    the purged raw data and the manifest's digests updated to vouch for it. Now the purge is
    bound to one hashing: refused, nothing written (manifest and log untouched). Control:
    the same purge without the edit logs as 'before' the digests it read."""
    import importlib

    retention = importlib.import_module("segments.prepare.retention")
    from segments.workspace import parquet_sha256

    ws = _copy(small_raw, tmp_path / "ws")
    target = parquet_files(ws.raw_table("order_lines"))[-2]
    real = retention._retained

    def edit_then_retain(*args, **kwargs):  # type: ignore[no-untyped-def]
        _edit_in_place(target, "quantity")
        return real(*args, **kwargs)

    monkeypatch.setattr(retention, "_retained", edit_then_retain)
    with pytest.raises(RawChangedError, match=r"changed while this run"):
        retention.purge(ws, "alloffice", "2027-06-30", key=KEY)
    # (the erasure of flagged persons, a step before, may have completed and been recorded)
    listed = ws.read_manifest()["files"][target.relative_to(ws.raw).as_posix()]
    assert listed != sha256_file(target)  # the edit is not vouched for
    assert not (ws.raw / "purge_log.json").exists()
    assert not list(ws.raw.glob(".*.tmp"))

    control = _copy(small_raw, tmp_path / "control")
    before: dict[str, str] = {}

    def look_then_retain(*args, **kwargs):  # type: ignore[no-untyped-def]
        before.update({t: parquet_sha256(control.raw_table(t)) for t in ("orders", "order_lines")})
        return real(*args, **kwargs)

    monkeypatch.setattr(retention, "_retained", look_then_retain)
    result = retention.purge(control, "alloffice", "2027-06-30", key=KEY)
    assert result.total_removed > 0 and result.log_path is not None
    import json

    logged = json.loads(result.log_path.read_text(encoding="utf-8"))[-1]["sha256_before"]
    assert {t: logged[t] for t in before} == before


def test_attack_orders_swapped_while_a_subject_export_reads_them_is_refused(
    small_raw: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """r15b #4 (subject export): the orders table rewritten (another account's orders given
    to the requester) between the export's read of the customers and of the orders. Before
    the fix the extract mixed the two states; now every table of it is parsed from one
    hashing of W/raw/: refused. Control: the export without the swap."""
    import importlib

    import polars as pl

    subjects = importlib.import_module("segments.prepare.subjects")

    ws = _copy(small_raw, tmp_path / "ws")
    orders = pl.read_parquet(ws.raw_table("orders"))
    requester, other = orders["customer_id"].unique(maintain_order=True).to_list()[:2]
    mine = subjects.subject_export(ws, requester)  # control
    assert mine["orders"] and all(o["customer_id"] == requester for o in mine["orders"])
    real = subjects._link

    def link_then_swap(customers):  # type: ignore[no-untyped-def]
        taken = pl.col("customer_id") == other
        orders.with_columns(
            pl.when(taken)
            .then(pl.lit(requester))
            .otherwise(pl.col("customer_id"))
            .cast(orders.schema["customer_id"])
            .alias("customer_id")
        ).write_parquet(ws.raw_table("orders"))
        return real(customers)

    monkeypatch.setattr(subjects, "_link", link_then_swap)
    with pytest.raises(RawChangedError, match=r"orders\.parquet changed while this run"):
        subjects.subject_export(ws, requester)


def test_attack_truth_restored_under_the_evaluations_proof_is_refused(
    small_raw: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """r15b #4 (truth evaluation): planted_archetypes read the raw tables and the planted
    truth, then proved the data synthetic for the demo key in a separate pass. An edited
    truth put back just before the proof was evaluated under a proof of the genuine files
    (on main: the edited archetypes returned). Now the reads and the proof share one
    hashing: refused. Control: the genuine truth's archetypes."""
    import polars as pl

    import segments.privacy.synthetic as synthetic
    from segments.prepare.frames import link_persons
    from segments.prepare.pseudonym import pseudonymise_series
    from segments.segmentation import planted_archetypes

    monkeypatch.delenv(KEY_ENV_VAR, raising=False)
    ws = _copy(small_raw, tmp_path / "ws")
    roots = link_persons(pl.read_parquet(ws.raw_table("customers")))["person_root"].unique()
    ids = pseudonymise_series(demo_key(ws.read_manifest()), "person", roots, "person_id")
    genuine = planted_archetypes(ws, ids)  # control
    assert sum(a is not None for a in genuine) == len(ids)
    assert "edited" not in set(genuine)
    truth = ws.truth / "archetypes.parquet"
    original = truth.read_bytes()
    pl.read_parquet(truth).with_columns(pl.lit("edited").alias("archetype")).write_parquet(truth)
    real = synthetic.prove_synthetic

    def restore_then_prove(workspace: Workspace):  # type: ignore[no-untyped-def]
        truth.write_bytes(original)
        return real(workspace)

    monkeypatch.setattr(synthetic, "prove_synthetic", restore_then_prove)
    try:
        found = planted_archetypes(ws, ids)
    except RawChangedError as refused:
        assert "archetypes.parquet changed while this run" in str(refused)
    else:
        pytest.fail(f"evaluated an edited truth: {sorted(set(found))[:3]}")


def test_attack_raw_partition_edited_while_an_erasure_runs_is_refused(
    small_raw: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The erasure the purge starts with (and `subject erase`) has the same shape: it looked
    a person up, then re-read the orders and lines from disk when rewriting them, so a month
    edited in between was written into the erased raw data and the manifest updated to vouch
    for it. Now the request is carried out on the bytes of one hashing: refused, the raw data
    not rewritten, the request left pending (a rerun finishes it). Control: the rerun."""
    import importlib

    import polars as pl

    subjects = importlib.import_module("segments.prepare.subjects")
    ws = _copy(small_raw, tmp_path / "ws")
    orders = pl.read_parquet(ws.raw_table("orders"))
    requester = int(orders["customer_id"][0])
    target = parquet_files(ws.raw_table("order_lines"))[-2]
    real = subjects._remove_from_derived

    def remove_then_edit(*args, **kwargs):  # type: ignore[no-untyped-def]
        _edit_in_place(target, "quantity")
        return real(*args, **kwargs)

    monkeypatch.setattr(subjects, "_remove_from_derived", remove_then_edit)
    with pytest.raises(RawChangedError, match=r"changed while this run"):
        subjects.erase(ws, "alloffice", requester, key=KEY)
    listed = ws.read_manifest()["files"][target.relative_to(ws.raw).as_posix()]
    assert listed != sha256_file(target)  # the edit is not vouched for
    assert pl.read_parquet(ws.raw_table("orders")).equals(orders)  # nothing rewritten
    import json

    entries = json.loads(ws.subject_log.read_text(encoding="utf-8"))
    assert [e["completed"] for e in entries] == [False]  # pending: a rerun finishes it


def test_attack_replay_raw_swapped_between_the_proofs_two_readings(
    small_raw: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """r9a M1: a replay's proof hashed W/raw for its verdict and again in verify_replay. A
    writer that puts the genuine files back only while verify_replay hashes them got a signed
    "proven synthetic" verdict naming the digest of tampered files (and so an evaluation or
    demo ledger on them). Now the proof hashes each folder once: the tampered rows are judged."""
    import segments.provenance as provenance
    from segments.prepare.history import rewind_raw
    from segments.privacy.synthetic import prove_synthetic, raw_digest

    ws = _copy(small_raw, tmp_path / "ws")
    replay = rewind_raw(ws, dt.date(2026, 6, 30), Workspace(tmp_path / "replay"))
    genuine = tmp_path / "genuine-raw"
    shutil.copytree(replay.raw, genuine)
    assert prove_synthetic(replay).proven  # control: the genuine replay is proven
    customers = replay.raw_table("customers")
    frame = pl.read_parquet(customers)
    frame.with_columns(pl.col("email").str.replace("@", "+real@")).write_parquet(customers)
    tampered = tmp_path / "tampered-raw"
    shutil.copytree(replay.raw, tampered)
    assert not prove_synthetic(replay).proven  # control: no race, refused

    hashes = provenance.raw_hashes

    def racing(workspace: Workspace | str | Path) -> dict[str, str]:
        folder = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace))
        if folder.root.resolve() != replay.root.resolve():
            return hashes(workspace)
        shutil.rmtree(replay.raw)
        shutil.copytree(genuine, replay.raw)  # the genuine files, only while this reading runs
        try:
            return hashes(workspace)
        finally:
            shutil.rmtree(replay.raw)
            shutil.copytree(tampered, replay.raw)

    monkeypatch.setattr(provenance, "raw_hashes", racing)
    raced = prove_synthetic(replay)
    monkeypatch.undo()
    assert raced.raw == raw_digest(replay)  # the verdict is about the tampered files...
    assert not raced.proven, raced.reason  # ...and does not prove them


def test_a_stray_file_in_a_partitioned_raw_table_is_named_not_called_removed(
    small_raw: Workspace, tmp_path: Path
) -> None:
    """r9a L1: a file in a partitioned table's folder that is not a partition (a ``.crc`` a
    Hadoop copy leaves) was hashed but never read, and prepare refused it as "removed while
    prepare read W/raw; fix: run prepare again", a fix that never works. Now one line names
    the file, the rule and the real fix, and nothing is written."""
    ws = _copy(small_raw, tmp_path / "ws")
    month = sorted(ws.raw_table("order_lines").glob("month=*"))[0]
    stray = month / ".part-00000.parquet.crc"
    stray.write_bytes(b"crc")
    with pytest.raises(WorkspaceError, match=r"is not one of its month partitions.*Fix: move") as e:
        prepare(
            ws,
            "alloffice",
            "segmentation",
            dt.date(2026, 10, 31),
            key=PseudonymKey(b"k" * 32, "test key"),
        )
    assert "\n" not in str(e.value) and str(stray) in str(e.value)
    assert not ws.prepared_frame("segmentation", PREPARED_LINES).exists()
