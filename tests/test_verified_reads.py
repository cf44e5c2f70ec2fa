"""Issue 13 (task 13, items 3 and 4): every reader of prepared frames hashes the bytes it reads
against prepare's signed record, so a frame edited between prepare and the release is
refused before anything is charged — the monthly archive, the k-anonymous job, the DP
k-means and its profile release, as the releases already were — and a card names the
workspace's prepared tables and their digests, never the private scratch copy."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from reader_jobs import AS_OF, kanon_release, monthly_release, prepared_copy, private_kmeans
from release_helpers import release_context

from segments.exceptions import ReleaseRefusedError
from segments.policy import Policy
from segments.privacy.ledger import Ledger
from segments.workspace import Workspace, parquet_files, parquet_sha256


@pytest.fixture
def policy() -> Policy:
    return Policy.load("alloffice")


@pytest.fixture
def prepared(small_raw, tmp_path) -> Workspace:
    return prepared_copy(small_raw, tmp_path / "ws")


READERS: dict[str, tuple[str, Callable[[Workspace, Policy, Ledger], object]]] = {
    "monthly archive": ("statistics", monthly_release),
    "k-anonymous job": ("microdata", kanon_release),
    "DP k-means job": ("segmentation", private_kmeans),
}


#: The month :func:`reader_jobs.monthly_release` releases, as a half-open range of dates.
SEPTEMBER = (dt.date(2026, 9, 1), dt.date(2026, 10, 1))


def _edit(ws: Workspace, purpose: str, name: str) -> None:
    """The attack: a prepared frame rewritten after prepare (half its rows)."""
    path = ws.prepared_dir(purpose) / name
    if path.is_dir():  # month partitions: the file of a month every reader here reads
        [path] = parquet_files(path, SEPTEMBER)
    frame = pl.read_parquet(path)
    frame.head(frame.height // 2).write_parquet(path)


@pytest.mark.parametrize("frame", ["customers.parquet", "lines.parquet"])
@pytest.mark.parametrize("reader", sorted(READERS))
def test_attack_a_frame_edited_after_prepare_is_refused_before_any_charge(
    prepared, policy, reader, frame
):
    purpose, run = READERS[reader]
    ledger = Ledger.for_policy(policy)
    _edit(prepared, purpose, frame)
    with pytest.raises(ReleaseRefusedError, match="is not the file `segments prepare` wrote"):
        run(prepared, policy, ledger)
    assert ledger.entries() == []  # nothing charged
    assert not prepared.releases.exists() or not any(prepared.releases.iterdir())
    assert not (prepared.segments / "private").exists()
    assert not list(prepared.private.glob("*")) if prepared.private.exists() else True


def test_attack_another_purposes_signed_folder_in_its_place_is_refused(prepared, policy):
    """rev13b: the segmentation folder (signed, every hash right) copied over statistics was
    released as statistics; the record names its purpose, and a mismatch is refused."""
    from segments.provenance import verify_prepared

    target = prepared.prepared_dir("statistics")
    shutil.rmtree(target)
    shutil.copytree(prepared.prepared_dir("segmentation"), target)
    assert "for purpose 'segmentation', not 'statistics'" in verify_prepared(prepared, "statistics")
    ledger = Ledger.for_policy(policy)
    with pytest.raises(ReleaseRefusedError, match="for purpose 'segmentation', not 'statistics'"):
        monthly_release(prepared, policy, ledger)
    assert ledger.entries() == []  # nothing charged


@pytest.mark.parametrize("reader", sorted(READERS))
def test_frames_as_prepare_wrote_them_are_released(prepared, policy, reader):
    # the same reader on untouched frames is charged and published (the attack test can fail)
    purpose, run = READERS[reader]
    ledger = Ledger.for_policy(policy)
    run(prepared, policy, ledger)
    assert len(ledger.entries()) == 1


def test_the_profile_release_of_private_segments_reads_verified_frames(prepared, policy):
    from segments.privacy.kmeans import private_segment_profiles

    ledger = Ledger.for_policy(policy)
    private_kmeans(prepared, policy, ledger)
    charged = len(ledger.entries())
    _edit(prepared, "segmentation", "lines.parquet")
    with pytest.raises(ReleaseRefusedError, match="is not the file `segments prepare` wrote"):
        private_segment_profiles(
            release_context(ledger, prepared, policy, purpose="segmentation", recipient="analytics")
        )
    assert len(ledger.entries()) == charged


def test_a_card_names_the_prepared_tables_and_their_digests_not_the_scratch_copy(prepared, policy):
    from segments.provenance import signed_record

    ledger = Ledger.for_policy(policy)
    result = monthly_release(prepared, policy, ledger)
    card = json.loads((Path(result.path) / "card.json").read_text(encoding="utf-8"))
    source = card["spec"]["source"]
    folder = prepared.prepared_dir("statistics")
    assert source["customers"] == str(folder / "customers.parquet")
    assert source["lines"] == str(folder / "lines.parquet")
    assert ".private" not in json.dumps(card)
    written = signed_record(prepared, "statistics")["outputs"]
    # the lines are month partitions: one digest over every partition file's signed digest
    # the lines are month partitions: one digest over the signed digests of the partitions
    # the release read, its month's (the card's window says which)
    partitions = {k: v for k, v in written.items() if k.startswith("lines.parquet/month=2026-09/")}
    assert len(partitions) == 1
    assert source["sha256"] == {
        "customers": written["customers.parquet"],
        "lines": hashlib.sha256(json.dumps(partitions, sort_keys=True).encode()).hexdigest(),
    }
    assert source["sha256"]["lines"] == parquet_sha256(folder / "lines.parquet", SEPTEMBER)
    assert card["spec"]["window"] == [d.isoformat() for d in SEPTEMBER]
    (entry,) = ledger.entries()
    assert entry.request.population_fingerprint == written["customers.parquet"]


def test_no_public_function_signs_a_folder_of_frames() -> None:
    # only prepare's writer signs, from the bytes it serialised (issue 13, task item 2)
    import segments.privacy.synthetic as synthetic
    import segments.provenance as provenance

    for module in (provenance, synthetic):
        assert not any("sign" in name and name != "signed_record" for name in module.__all__)
        assert not hasattr(module, "prepared_provenance")


# --- task 13 item 2: no capability a caller can pass records a DP k-means entry ---------------
def test_attack_a_caller_cannot_record_a_dp_kmeans_entry(policy, monkeypatch, tmp_path) -> None:
    import dataclasses

    from segments.privacy import kmeans
    from segments.privacy import ledger as ledger_module
    from segments.privacy.guards import Guarantee
    from segments.privacy.ledger import ReleaseRequest

    ledger = Ledger.for_policy(policy)
    forged = ReleaseRequest.for_policy(
        policy,
        population="customers",
        purpose="segmentation",
        recipient="analytics",
        destination="SE",
        guarantee=Guarantee.END_TO_END,
        as_of=AS_OF,
        epsilon=0.5,
        spec={"name": "private_segments"},
    )
    assert not hasattr(ledger_module, "_JOB_CAPABILITIES")  # the importable capability is gone
    with pytest.raises(TypeError):
        ledger.reserve(forged, job=object())  # type: ignore[call-arg]

    def fit_private_segments() -> object:  # the job's name, but the caller's own code
        return ledger.reserve(forged, policy=policy)

    with pytest.raises(ReleaseRefusedError, match="recorded only by its own job"):
        fit_private_segments()
    # nor by replacing the job in its module (the replacement's code is not the job's file)
    monkeypatch.setattr(kmeans, "fit_private_segments", fit_private_segments)
    with pytest.raises(ReleaseRefusedError, match="recorded only by its own job"):
        kmeans.fit_private_segments()
    with pytest.raises(ReleaseRefusedError, match="recorded only by its own job"):
        ledger.reserve(dataclasses.replace(forged, release_id="mine"), policy=policy)
    # nor through the one publishing path the job itself uses (begin's caller is checked)
    from segments.privacy.publishing import begin

    def fit_private_segments_via_begin(tmp: Path) -> object:
        return begin(ledger, forged, policy=policy, final=tmp / "private", replaces=True)

    monkeypatch.setattr(kmeans, "fit_private_segments", fit_private_segments_via_begin)
    with pytest.raises(ReleaseRefusedError, match="recorded only by its own job"):
        kmeans.fit_private_segments(tmp_path)
    assert ledger.entries() == []


# --- task 13 item 2: "synthetic" comes from the proof, never from a caller's flag -------------
def test_attack_a_caller_cannot_declare_data_synthetic(tmp_path, small_raw, policy) -> None:
    from segments.privacy.synthetic import SyntheticProof, _verdict, prove_synthetic

    fake = Workspace(tmp_path / "fake")
    fake.raw.mkdir(parents=True)
    (fake.raw / "manifest.json").write_text(json.dumps({"synthetic": True}), encoding="utf-8")
    refused = "not proven synthetic"
    with pytest.raises(ReleaseRefusedError, match=refused):  # the flag makes the ledger prove
        Ledger.for_workspace(fake, policy.controller, synthetic=True, policy=policy)
    path = tmp_path / "demo.sqlite"
    for declared in (
        True,  # a flag, with nothing to prove it from
        SyntheticProof(True, "trust me"),  # a hand-made verdict
        SyntheticProof(True, "copied mac", "k", _verdict(True, "other").mac),  # another's MAC
        _verdict(False, "not proven"),  # a signed verdict that says no
    ):
        with pytest.raises(ReleaseRefusedError, match=refused):
            Ledger.open(path, policy.controller, throwaway=True, synthetic=declared)
        with pytest.raises(ReleaseRefusedError, match=refused):
            Ledger.for_policy(policy, evaluation=True, synthetic=declared)
    assert not path.exists() and not (fake.root / "ledger").exists()
    # generated data, proven by regenerating it: accepted, by the flag or by its proof
    real = Workspace(tmp_path / "generated")
    shutil.copytree(small_raw.raw, real.raw)
    assert Ledger.for_workspace(real, policy.controller, synthetic=True, policy=policy)
    proof = prove_synthetic(real)
    assert proof.signed and Ledger.open(path, policy.controller, throwaway=True, synthetic=proof)


def test_a_month_closing_opens_and_hashes_only_its_months_partitions(prepared, policy, monkeypatch):
    """Issue 21: a month-closing copies and hashes only the partitions of its month (the
    signed record holds each partition's digest), not the whole history — at 500 million
    lines the rest is ~35 GB read at every release. Every file the release opens under the
    prepared lines is recorded: September's partition only."""
    import builtins
    import os

    folder = prepared.prepared_frame("statistics", "lines.parquet")
    inside = parquet_files(folder, SEPTEMBER)
    assert len(inside) == 1 and len(parquet_files(folder)) >= 12
    opened: list[Path] = []
    real_open = builtins.open

    def spying_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(file, str | os.PathLike) and folder in Path(file).parents:
            opened.append(Path(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spying_open)
    ledger = Ledger.for_policy(policy)
    monthly_release(prepared, policy, ledger)
    monkeypatch.undo()
    assert opened == inside
    assert len(ledger.entries()) == 1


def test_attack_a_tampered_partition_blocks_only_the_releases_that_read_it(prepared, policy):
    """A partition of September rewritten after prepare refuses September's closing before
    anything is charged; every OTHER month's partition replaced by garbage (bytes no reader
    could parse and no digest matches) does not: a month-closing neither reads nor hashes
    them. A whole-history release still refuses them."""
    folder = prepared.prepared_frame("statistics", "lines.parquet")
    [september] = parquet_files(folder, SEPTEMBER)
    signed = september.read_bytes()
    september.write_bytes(signed[: len(signed) // 2])
    ledger = Ledger.for_policy(policy)
    with pytest.raises(ReleaseRefusedError, match="month=2026-09.*is not the file `segments prep"):
        monthly_release(prepared, policy, ledger)
    assert ledger.entries() == []  # nothing charged
    september.write_bytes(signed)
    others = [p for p in parquet_files(folder) if p != september]
    for part in others:
        part.write_bytes(b"not the lines prepare wrote")
    monthly_release(prepared, policy, ledger)
    assert len(ledger.entries()) == 1
    from segments.provenance import verified_frames

    with (  # what a release over the whole history reads
        pytest.raises(ReleaseRefusedError, match="is not the file `segments prepare` wrote"),
        verified_frames(prepared, "statistics", ["lines.parquet"], policy),
    ):
        pass


def _raw_opens(ws: Workspace, monkeypatch, action: Callable[[], object]) -> Counter[Path]:
    """How often ``action`` opens each file under ``ws/raw`` (every open() recorded)."""
    import builtins
    import os

    opened: Counter[Path] = Counter()
    real_open = builtins.open

    def spying_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(file, str | os.PathLike) and ws.raw in Path(file).parents:
            opened[Path(file)] += 1
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spying_open)
    try:
        action()
    finally:
        monkeypatch.undo()
    return opened


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_release_hashes_each_raw_file_once(prepared, policy, reader, monkeypatch):
    """Issue 21: every release binds its frames to ``W/raw/`` (prepare's signed record, the
    month's as-of, a simulated-time ledger's synthetic proof) — each reads the raw files' hash,
    and at 500 million lines one pass over them is ~35 GB. A release call hashes each raw file
    once and hands the digests on: every open() of a file under ``W/raw/`` is recorded."""
    purpose, run = READERS[reader]
    raw_files = [p for p in prepared.raw.rglob("*") if p.is_file()]
    assert len(raw_files) >= 5
    ledger = Ledger.for_workspace(prepared, policy.controller, synthetic=True, policy=policy)
    opened = _raw_opens(prepared, monkeypatch, lambda: run(prepared, policy, ledger))
    assert len(ledger.entries()) == 1
    assert opened == Counter(raw_files)  # every raw file, once each
    # the digests lived for that call only: raw data changed since is refused by the next one
    products = prepared.raw_table("products")
    products.write_bytes(products.read_bytes() + b"\0")
    with pytest.raises(ReleaseRefusedError, match="other raw data"):
        run(prepared, policy, ledger)
    assert len(ledger.entries()) == 1


def test_a_session_release_hashes_each_raw_file_once(prepared, policy, monkeypatch):
    """The same for an analyst's :class:`segments.Session`: its plan, the frames it reads
    and the release it charges bind to one hashing of ``W/raw/``."""
    import segments
    from segments.session import count

    raw_files = [p for p in prepared.raw.rglob("*") if p.is_file()]
    ledger = Ledger.for_workspace(prepared, policy.controller, synthetic=True, policy=policy)
    session = segments.Session(
        prepared, policy, "statistics", "purchasing", ledger=ledger, as_of=AS_OF
    )
    query = session.table("customers").group_by("county").agg(count())
    for step in (lambda: session.plan([query], 0.5), lambda: session.release([query], 0.5)):
        assert _raw_opens(prepared, monkeypatch, step) == Counter(raw_files)
    assert len(ledger.entries()) == 1
