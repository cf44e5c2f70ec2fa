"""Tests of segments.prepare.pseudonym: keyed HMAC pseudonyms and key handling."""

from __future__ import annotations

import base64
import datetime as dt
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segments.exceptions import PolicyError
from segments.prepare import prepare
from segments.prepare.pseudonym import (
    KEY_ENV_VAR,
    PseudonymKey,
    demo_key,
    load_key,
    pseudonymise,
)
from segments.workspace import Workspace, sha256_file, write_json

KEY_A = PseudonymKey(b"a" * 32, "steward key (test)")
KEY_B = PseudonymKey(b"b" * 32, "steward key (test)")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=2**62), min_size=1, max_size=30, unique=True))
def test_same_key_same_pseudonyms_different_key_unlinkable(ids: list[int]) -> None:
    a1 = pseudonymise(KEY_A, "person", ids)
    assert a1 == pseudonymise(KEY_A, "person", ids)
    b = pseudonymise(KEY_B, "person", ids)
    assert not set(a1) & set(b)
    assert len(set(a1)) == len(ids)
    assert all(len(p) == 32 and int(p, 16) >= 0 and p == p.lower() for p in a1)


def test_namespaces_separate_person_and_order_pseudonyms() -> None:
    assert pseudonymise(KEY_A, "person", [5]) != pseudonymise(KEY_A, "order", [5])


def test_repr_never_shows_the_secret() -> None:
    assert "aaaa" not in repr(KEY_A)
    assert len(KEY_A.key_id) == 16 and KEY_A.key_id != KEY_B.key_id


def test_short_key_is_refused() -> None:
    with pytest.raises(PolicyError, match=r"31 bytes is too short; a key needs at least 32"):
        PseudonymKey(b"x" * 31, "steward key (test)")


def test_short_key_from_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV_VAR, "short")
    with pytest.raises(PolicyError, match=r"environment variable.*too short"):
        load_key()


def test_environment_key_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV_VAR, "k" * 64)
    key = load_key()
    assert key.secret == b"k" * 64 and "environment variable" in key.provenance


def _workspace(tmp_path: Path, manifest: dict[str, object] | None) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    ws.raw.mkdir(parents=True)
    if manifest is not None:
        write_json(ws.manifest, manifest)
    return ws


@dataclass(frozen=True)
class _Verdict:
    proven: bool
    reason: str
    signed: bool = True


def test_demo_key_only_for_data_proven_synthetic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV_VAR, raising=False)
    ws = _workspace(tmp_path, {"synthetic": True, "seed": 7})
    key = load_key(workspace=ws, synthetic_proof=lambda _ws: _Verdict(True, "regenerated"))
    assert key.is_demo and key.provenance == "demo key derived from dataset seed"
    assert key.secret == demo_key({"synthetic": True, "seed": 7}).secret
    assert key.secret != demo_key({"synthetic": True, "seed": 8}).secret


def test_attack_the_manifest_flag_alone_gives_no_demo_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """r13 #2: "synthetic": true (+ a seed) in an editable manifest used to pick the public key."""
    monkeypatch.delenv(KEY_ENV_VAR, raising=False)
    ws = _workspace(tmp_path, {"synthetic": True, "seed": 7})
    with pytest.raises(PolicyError, match=r"nothing proved the raw data synthetic"):
        load_key(workspace=ws)
    not_generated = _Verdict(False, "raw/customers.parquet is not what the generator produces")
    with pytest.raises(PolicyError, match=r"not proven synthetic \(raw/customers.parquet is not"):
        load_key(workspace=ws, synthetic_proof=lambda _ws: not_generated)
    with pytest.raises(PolicyError, match=r"not proven synthetic"):  # a verdict nobody signed
        load_key(workspace=ws, synthetic_proof=lambda _ws: _Verdict(True, "forged", signed=False))


def test_attack_edited_raw_data_is_not_pseudonymised_under_the_demo_key(
    small_raw: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """r13 #2 end to end: one raw customer row edited (no longer the generator's output, the
    manifest still says synthetic): prepare refuses the public demo key and writes nothing;
    with the steward's key no pseudonym is the demo key's (sha256 of the manifest's seed)."""
    monkeypatch.delenv(KEY_ENV_VAR, raising=False)
    ws = Workspace(tmp_path / "edited")
    shutil.copytree(small_raw.raw, ws.raw)
    customers = pl.read_parquet(ws.raw / "customers.parquet")
    first = customers["customer_id"][0]
    customers.with_columns(
        pl.when(pl.col("customer_id") == first)
        .then(pl.lit(1950))
        .otherwise(pl.col("birth_year"))
        .cast(customers.schema["birth_year"])
        .alias("birth_year")
    ).write_parquet(ws.raw / "customers.parquet")
    manifest = ws.read_manifest()  # the edit recorded as an honest data owner would
    entry = manifest["files"]["customers.parquet"]
    digest = sha256_file(ws.raw / "customers.parquet")
    if isinstance(entry, dict):
        entry.update({k: digest for k in entry if "sha" in k})
    else:
        manifest["files"]["customers.parquet"] = digest
    write_json(ws.manifest, manifest)
    assert ws.read_manifest()["synthetic"] is True
    with pytest.raises(PolicyError, match=r"not proven synthetic .*demo key is refused"):
        prepare(ws, "alloffice", "statistics", "2026-10-31")
    assert not ws.prepared_dir("statistics").exists()
    # r13b: the same public key passed in by the caller (as a key or as its bytes)
    public = demo_key(ws.read_manifest())
    # r13c: the same key zero-padded (HMAC pads short keys: same pseudonyms), in hex, or the
    # demo key of a small seed the manifest no longer names
    padded = public.secret + b"\0" * 3
    assert pseudonymise(PseudonymKey(padded, "x"), "person", [1]) == pseudonymise(
        public, "person", [1]
    )
    other_seed = demo_key({"synthetic": True, "seed": 7}).secret
    for passed in (
        public,
        public.secret,
        PseudonymKey(public.secret, "steward key (test)"),
        padded,
        public.secret.hex(),
        public.secret.hex().upper().encode(),
        "0x" + public.secret.hex(),
        base64.b64encode(public.secret),
        base64.urlsafe_b64encode(public.secret).rstrip(b"="),
        b"segments demo pseudonym key|seed=13 (the text it is hashed from)",
        other_seed,
    ):
        with pytest.raises(PolicyError, match=r"the key given is a public demo key"):
            prepare(ws, "alloffice", "statistics", "2026-10-31", key=passed)
        assert not ws.prepared_dir("statistics").exists()
    monkeypatch.setenv(KEY_ENV_VAR, public.secret.hex())  # the hint's own format
    with pytest.raises(PolicyError, match=r"the key given is a public demo key"):
        prepare(ws, "alloffice", "statistics", "2026-10-31")
    monkeypatch.delenv(KEY_ENV_VAR)
    assert not ws.prepared_dir("statistics").exists()
    prepare(ws, "alloffice", "statistics", "2026-10-31", key=KEY_A)
    person_ids = set(
        pl.read_parquet(ws.prepared_dir("statistics") / "customers.parquet")["person_id"]
    )
    demo = demo_key(ws.read_manifest())
    reversible = person_ids & set(pseudonymise(demo, "person", customers["customer_id"]))
    assert person_ids and not reversible


def _edit_raw_customers(ws: Workspace, change: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
    """Rewrite raw customers and record the new hash in the manifest, as a data owner who
    edits honestly (or an attacker who covers the edit) would."""
    change(pl.read_parquet(ws.raw / "customers.parquet")).write_parquet(
        ws.raw / "customers.parquet"
    )
    manifest = ws.read_manifest()
    manifest["files"]["customers.parquet"] = sha256_file(ws.raw / "customers.parquet")
    write_json(ws.manifest, manifest)


def _one_value_edited(frame: pl.DataFrame) -> pl.DataFrame:
    first = pl.col("customer_id") == frame["customer_id"][0]
    return frame.with_columns(
        pl.when(first).then(pl.lit("Real")).otherwise(pl.col("first_name")).alias("first_name")
    )


def _one_person_swapped(frame: pl.DataFrame) -> pl.DataFrame:
    last = frame.tail(1).with_columns(
        pl.lit("someone.real@example.se").alias("email"), pl.lit("Verklig").alias("last_name")
    )
    return pl.concat([frame.head(frame.height - 1), last])


def _a_column_added(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.lit("19500101-1234").alias("real_personnummer"))


@pytest.mark.parametrize(
    "edit", [_one_value_edited, _one_person_swapped, _a_column_added], ids=lambda f: f.__name__
)
def test_attack_prepare_on_edited_raw_through_the_cli(
    edit: Callable[[pl.DataFrame], pl.DataFrame],
    small_raw: Workspace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """r13 a8 through `segments prepare`: raw customers edited (one value, one person swapped
    for another, an extra column) with the manifest's hash updated and "synthetic": true left
    in place. None is proven synthetic; prepare refuses in one line (the demo key, or for the
    extra column the schema first) and writes nothing; with the steward's key no pseudonym is
    one anybody can recompute from the manifest's seed."""
    from segments.cli.main import main
    from segments.privacy.synthetic import prove_synthetic

    monkeypatch.delenv(KEY_ENV_VAR, raising=False)
    ws = Workspace(tmp_path / "edited")
    shutil.copytree(small_raw.raw, ws.raw)
    _edit_raw_customers(ws, edit)
    proof = prove_synthetic(ws)
    assert not proof and "raw/customers.parquet is not what the generator" in proof.reason
    before = sorted(p.relative_to(ws.root) for p in ws.root.rglob("*"))
    argv = ["prepare", "-w", str(ws.root), "--policy", "alloffice", "--purpose", "statistics"]
    argv += ["--as-of", "2026-10-31"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    if edit is _a_column_added:  # with any key, the schema refuses the column itself
        assert "real_personnummer" in err, err
    else:
        assert "raw/customers.parquet is not what the generator produces" in err, err
        assert "so the public demo key is refused" in err and KEY_ENV_VAR in err, err
    assert sorted(p.relative_to(ws.root) for p in ws.root.rglob("*")) == before
    if edit is _a_column_added:
        return
    monkeypatch.setenv(KEY_ENV_VAR, "the steward's own key, 32 bytes or more")
    assert main(argv) == 0, capsys.readouterr().err
    customers = pl.read_parquet(ws.raw / "customers.parquet")
    demo = set(pseudonymise(demo_key(ws.read_manifest()), "person", customers["customer_id"]))
    written = [
        p for p in ws.prepared.rglob("*.parquet") if "person_id" in pl.read_parquet_schema(p)
    ]
    assert written
    for path in written:
        assert not set(pl.read_parquet(path)["person_id"]) & demo, path


def test_the_demo_key_survives_the_projects_own_flows_on_synthetic_data(
    small_raw: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `subject restrict`, `subject erase`, an interrupted erasure's pending entry and
    `retention purge` leave is still only the generator's rows: the demo key stays usable
    (no steward key is needed to demo the data-subject flows), and the proof says why."""
    from segments.prepare.retention import purge
    from segments.prepare.subjects import erase, restrict
    from segments.privacy.synthetic import prove_synthetic

    monkeypatch.delenv(KEY_ENV_VAR, raising=False)
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(small_raw.raw, ws.raw)
    customers = pl.read_parquet(ws.raw / "customers.parquet")
    unflagged = customers.filter(~pl.col("erasure_requested") & ~pl.col("restriction_requested"))
    restrict(ws, "alloffice", int(unflagged["customer_id"][0]))
    erase(ws, "alloffice", int(unflagged["customer_id"][1]))
    _edit_raw_customers(  # the controller's export flags one more erasure request
        ws,
        lambda f: f.with_columns(
            pl.col("erasure_requested") | (pl.col("customer_id") == unflagged["customer_id"][2])
        ),
    )
    purge(ws, "alloffice", "2026-10-31")
    proof = prove_synthetic(ws)
    assert proof and "rows removed:" in proof.reason and "customers" in proof.reason, proof
    assert load_key(workspace=ws, synthetic_proof=prove_synthetic).is_demo


def test_no_key_on_real_data_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV_VAR, raising=False)
    ws = _workspace(tmp_path, {"synthetic": False})
    with pytest.raises(PolicyError, match=r"not marked synthetic, so the public demo key is"):
        load_key(workspace=ws, synthetic_proof=lambda _ws: _Verdict(True, "not asked"))
    with pytest.raises(PolicyError, match=r"no pseudonymisation key"):
        load_key(workspace=_workspace(tmp_path / "other", None))


def test_demo_key_on_real_data_is_refused() -> None:
    with pytest.raises(PolicyError, match=r"demo pseudonymisation key is refused"):
        demo_key({"synthetic": False, "seed": 7})
    with pytest.raises(PolicyError, match=r"has no 'seed'"):
        demo_key({"synthetic": True})


def test_key_file_outside_the_workspace_is_used(tmp_path: Path) -> None:
    ws = _workspace(tmp_path, {"synthetic": False})
    key_file = tmp_path / "steward.key"
    key_file.write_text("s" * 40 + "\n")
    key_file.chmod(0o600)  # the steward's alone (a readable key file is refused)
    key = load_key(key_file=key_file, workspace=ws)
    assert key.secret == b"s" * 40 and key.provenance == "steward key (key file)"


def test_key_file_inside_the_workspace_is_refused(tmp_path: Path) -> None:
    ws = _workspace(tmp_path, {"synthetic": False})
    for inside in (ws.root / "k.key", ws.raw / "k.key"):
        inside.write_text("s" * 40)
        with pytest.raises(PolicyError, match=r"never be kept beside the data"):
            load_key(key_file=inside, workspace=ws)


def test_key_file_in_the_data_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "k.key").write_text("s" * 40)
    with pytest.raises(PolicyError, match=r"inside data"):
        load_key(key_file="data/k.key")


def test_missing_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"does not exist"):
        load_key(key_file=tmp_path / "none.key")


def test_a_series_is_pseudonymised_a_chunk_at_a_time_with_the_same_pseudonyms(monkeypatch):
    """Issue 21: prepare's HMACs hold one chunk of ids as Python objects at a time (a whole
    column was ~120 bytes an id); the pseudonyms are those of the whole list, in order."""
    import polars as pl

    from segments.prepare import pseudonym

    key = pseudonym.PseudonymKey(b"k" * 32, "steward key (test)")
    ids = pl.Series("order_id", range(2_500))
    monkeypatch.setattr(pseudonym, "_SERIES_CHUNK", 1_000)
    series = pseudonym.pseudonymise_series(key, "order", ids, "order_pseudonym")
    assert series.name == "order_pseudonym" and series.dtype == pl.Utf8
    assert series.to_list() == pseudonym.pseudonymise(key, "order", ids.to_list())
    empty = pseudonym.pseudonymise_series(key, "order", ids.head(0), "order_pseudonym")
    assert empty.dtype == pl.Utf8 and empty.len() == 0


def test_attack_raw_swapped_while_the_proof_reads_it_is_not_proven(
    small_raw: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """r15 #1a: the proof hashes W/raw (one customer edited), regenerates, then reads the
    differing table; a second process swaps the generator's file in for that read and back
    after. The proof parses the bytes it hashed, so the swap is refused: no verdict, nothing
    cached, and the edited data is still not proven afterwards."""
    import importlib

    from segments._tables import RawChangedError
    from segments.privacy import synthetic

    ws = Workspace(tmp_path / "edited")
    shutil.copytree(small_raw.raw, ws.raw)
    _edit_raw_customers(ws, _one_value_edited)
    edited = (ws.raw / "customers.parquet").read_bytes()
    generate_module = importlib.import_module("segments.synth.generate")  # not the function
    real_generate = generate_module.generate

    def generate_then_swap(target: Workspace, **kwargs: object) -> object:
        result = real_generate(target, **kwargs)
        shutil.copyfile(result.path / "customers.parquet", ws.raw / "customers.parquet")
        return result

    monkeypatch.setattr(generate_module, "generate", generate_then_swap)
    synthetic._CACHE.clear()
    with pytest.raises(RawChangedError, match=r"customers\.parquet changed while this run"):
        synthetic.prove_synthetic(ws)
    monkeypatch.setattr(generate_module, "generate", real_generate)
    (ws.raw / "customers.parquet").write_bytes(edited)  # the attacker swaps back
    synthetic._CACHE.clear()  # as a fresh process: only the on-disk cache could vouch
    proof = synthetic.prove_synthetic(ws)
    assert not proof and "raw/customers.parquet is not what the generator" in proof.reason


def test_attack_raw_swapped_after_prepare_hashed_it_writes_nothing(
    small_raw: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """r15 #1b: prepare signs W/raw's digests, then reads customers; a second process swaps
    in other customers (the manifest's hash updated too) between the two. Prepare parses only
    the bytes its record names: it refuses in one line and writes nothing. Control: without
    the swap the same prepare succeeds."""
    import segments.provenance as provenance
    from segments._tables import RawChangedError

    ws = Workspace(tmp_path / "swapped")
    shutil.copytree(small_raw.raw, ws.raw)
    real_hashes = provenance.raw_hashes

    def hash_then_swap(workspace: Workspace) -> dict[str, str]:
        digests = real_hashes(workspace)
        _edit_raw_customers(ws, _one_person_swapped)
        return digests

    monkeypatch.setattr(provenance, "raw_hashes", hash_then_swap)
    # the manifest (rewritten by the swap) is parsed bound too, so it may be named first
    changed = r"(customers\.parquet|manifest\.json) changed while this run"
    with pytest.raises(RawChangedError, match=changed):
        prepare(ws, "alloffice", "statistics", "2026-10-31", key=KEY_A)
    assert not ws.prepared_dir("statistics").exists()
    monkeypatch.setattr(provenance, "raw_hashes", real_hashes)
    prepare(ws, "alloffice", "statistics", "2026-10-31", key=KEY_A)
    assert (ws.prepared_dir("statistics") / "customers.parquet").exists()


def test_attack_raw_file_replaced_by_a_symlink_after_prepare_hashed_it_is_refused(
    small_raw: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """r21 (after r15 #1's fix): customers.parquet replaced by a symlink to an edited file
    outside W/raw (the manifest's digest updated) once prepare hashed it. A file is bound by
    where it is named, not where the link leads, so its bytes are hashed and refused; nothing
    written."""
    import segments.provenance as provenance
    from segments._tables import RawChangedError

    ws = Workspace(tmp_path / "linked")
    shutil.copytree(small_raw.raw, ws.raw)
    outside = tmp_path / "edited-customers.parquet"
    _one_value_edited(pl.read_parquet(ws.raw / "customers.parquet")).write_parquet(outside)
    real_hashes = provenance.raw_hashes

    def hash_then_link(workspace: Workspace) -> dict[str, str]:
        digests = real_hashes(workspace)
        (ws.raw / "customers.parquet").unlink()
        (ws.raw / "customers.parquet").symlink_to(outside)
        manifest = ws.read_manifest()  # the manifest's digest covered too, as an attacker would
        manifest["files"]["customers.parquet"] = sha256_file(outside)
        write_json(ws.manifest, manifest)
        return digests

    monkeypatch.setattr(provenance, "raw_hashes", hash_then_link)
    changed = r"(customers\.parquet|manifest\.json) changed while this run"  # both swapped
    with pytest.raises(RawChangedError, match=changed):
        prepare(ws, "alloffice", "statistics", "2026-10-31", key=KEY_A)
    assert not ws.prepared_dir("statistics").exists()


@pytest.mark.parametrize("swap", ["customers edited", "a lines partition removed"])
def test_attack_raw_swapped_while_the_backfill_rewinds_it_is_refused(
    swap: str, small_raw: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """r15b #1: the rewind signs the source's raw digests into the replay's record, then reads
    the tables; a second process swapping in other customers (manifest updated) or removing a
    month of lines in between made a replay of other rows that its record vouched for, proven
    synthetic through the source. The rewind parses the bytes it hashed: refused, no replay."""
    import datetime as dt

    import segments.provenance as provenance
    from segments._tables import RawChangedError
    from segments.prepare.history import rewind_raw
    from segments.workspace import parquet_files

    ws = Workspace(tmp_path / "source")
    shutil.copytree(small_raw.raw, ws.raw)
    real_hashes = provenance.raw_hashes

    def hash_then_swap(workspace: Workspace) -> dict[str, str]:
        digests = real_hashes(workspace)
        if swap == "customers edited":
            _edit_raw_customers(ws, _one_person_swapped)
        else:
            parquet_files(ws.raw_table("order_lines"))[0].unlink()
        return digests

    monkeypatch.setattr(provenance, "raw_hashes", hash_then_swap)
    replay = Workspace(tmp_path / "replay")
    with pytest.raises(RawChangedError, match=r"(changed|removed) while this run"):
        rewind_raw(ws, dt.date(2026, 8, 31), replay)
    assert not replay.raw.exists() and not replay.root.exists()


def test_attack_raw_swapped_after_an_erasure_got_the_demo_key_changes_nothing(
    small_raw: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """r15b #2: an erasure on synthetic data is granted the demo key, then a second process
    swaps in other customers (manifest updated) before the request is looked up. The lookup
    reads the customers in one binding with a proof of the same bytes: refused, no request
    logged under the public key, the raw data untouched. Control: the same erasure without
    the swap is carried out under the demo key. (Since the key's resolution shares the
    erasure's one hashing of W/raw/, the swap is refused as a change to what it hashed.)"""
    from segments._tables import RawChangedError
    from segments.prepare import subjects

    monkeypatch.delenv(KEY_ENV_VAR, raising=False)
    ws = Workspace(tmp_path / "erase")
    shutil.copytree(small_raw.raw, ws.raw)
    first = int(pl.read_parquet(ws.raw / "customers.parquet")["customer_id"][0])
    real_keys = subjects._keys

    def key_then_swap(*args: object) -> PseudonymKey:
        granted = real_keys(*args)  # type: ignore[arg-type]
        _edit_raw_customers(ws, _one_value_edited)
        return granted

    monkeypatch.setattr(subjects, "_keys", key_then_swap)
    refused = (
        r"no longer proven synthetic.*demo key is refused"
        r"|(customers\.parquet|manifest\.json) changed while"
    )
    with pytest.raises((PolicyError, RawChangedError), match=refused):
        subjects.erase(ws, "alloffice", first, today=dt.date(2026, 11, 2))
    assert not ws.subject_log.exists()
    swapped = (ws.raw / "customers.parquet").read_bytes()
    monkeypatch.setattr(subjects, "_keys", real_keys)
    shutil.copyfile(small_raw.raw / "customers.parquet", ws.raw / "customers.parquet")
    manifest = ws.read_manifest()
    manifest["files"]["customers.parquet"] = sha256_file(ws.raw / "customers.parquet")
    write_json(ws.manifest, manifest)
    assert swapped != (ws.raw / "customers.parquet").read_bytes()
    request = subjects.erase(ws, "alloffice", first, today=dt.date(2026, 11, 2))
    assert request.key_id == demo_key(ws.read_manifest()).key_id
