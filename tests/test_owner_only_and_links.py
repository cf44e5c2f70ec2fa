"""Issue 18 review, items 5 and 6: what the library creates is owner-only whatever the umask
(not only through the CLI's umask), and a symbolic link inside the workspace that points out
of it is refused instead of followed."""

from __future__ import annotations

import inspect
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from test_ledger import CONTROLLER, DEMO

from segments.exceptions import WorkspaceError
from segments.privacy.ledger import Ledger
from segments.segmentation.job import _write_segments
from segments.workspace import Workspace


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A umask that would make every new file world-readable."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("loose_umask")
def test_a_new_ledger_and_its_folder_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "ledgers" / "demo.sqlite"
    # a controller's ledger at a chosen path needs an explicit init where the API has one
    init = {"init": True} if "init" in inspect.signature(Ledger.open).parameters else {}
    Ledger.open(path, CONTROLLER, policy=DEMO, **init)
    assert _mode(path.parent) == 0o700
    assert _mode(path) == 0o600
    assert [p.name for p in path.parent.iterdir() if _mode(p) & 0o077] == []


@pytest.mark.usefixtures("loose_umask")
def test_segment_labels_and_target_folder_are_owner_only(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    labels = pl.DataFrame({"person_id": ["a" * 32, "b" * 32], "segment": [0, 1]})
    paths = _write_segments(ws, labels, pd.DataFrame({"segment": [0, 1]}), {"segments": {}})
    assert _mode(ws.segments) == 0o700
    assert {p.name: _mode(p) for p in paths.values()} == {p.name: 0o600 for p in paths.values()}


@pytest.mark.parametrize("inner", [".private", "segments", "segments/targets", "subjects", "raw"])
def test_a_link_out_of_the_workspace_is_refused(tmp_path: Path, inner: str) -> None:
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    if inner == "segments/targets":
        (ws.root / "segments").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws.root / inner).symlink_to(outside, target_is_directory=True)
    accessor = {
        ".private": lambda: ws.private,
        "segments": lambda: ws.targets,
        "segments/targets": lambda: ws.targets,
        "subjects": lambda: ws.subject_log,
        "raw": lambda: ws.raw_table("customers"),
    }[inner]
    refusal = "is a symbolic link" if inner == ".private" else "outside workspace.*symbolic link"
    with pytest.raises(WorkspaceError, match=refusal):
        accessor()


def test_a_private_area_linked_inside_the_workspace_is_refused(tmp_path: Path) -> None:
    """r9a L3: W/.private linked to a published folder of the same workspace would put
    person-level scratch there (and a crash's leftovers are never swept): every use of the
    private area refuses the link before writing anything."""
    ws = Workspace(tmp_path / "ws")
    published = ws.root / "releases" / "shared"
    published.mkdir(parents=True)
    (ws.root / ".private").symlink_to(published, target_is_directory=True)
    for use in (
        lambda: ws.private,
        lambda: ws.scratch("features").__enter__(),
        lambda: ws.lock(exclusive=False).__enter__(),
    ):
        with pytest.raises(WorkspaceError, match=r"\.private is a symbolic link.*Fix: remove"):
            use()
    assert list(published.iterdir()) == []


def test_erase_refuses_a_subject_log_linked_out_of_the_workspace(
    small_raw: Workspace, tmp_path: Path
) -> None:
    import shutil

    from segments.prepare.subjects import erase

    ws = Workspace(tmp_path / "ws")
    shutil.copytree(small_raw.root, ws.root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws.root / "subjects").symlink_to(outside, target_is_directory=True)
    before = ws.raw_table("customers").read_bytes()
    cid = int(pl.read_parquet(ws.raw_table("customers"))["customer_id"][0])
    with pytest.raises(WorkspaceError, match="outside workspace"):
        erase(ws, "alloffice", cid)
    assert list(outside.iterdir()) == []
    assert ws.raw_table("customers").read_bytes() == before


@pytest.mark.usefixtures("loose_umask")
def test_the_ledgers_anchor_and_registry_are_owner_only(tmp_path: Path) -> None:
    """Issue 18 item 5: the anchor JSON beside the ledger (and the per-user registry of
    controller ledgers with its lock) no longer follow the umask."""
    from test_ledger import make_request

    from segments.privacy.ledger import _registry_path

    path = tmp_path / "ledgers" / "demo.sqlite"
    init = {"init": True} if "init" in inspect.signature(Ledger.open).parameters else {}
    ledger = Ledger.open(path, CONTROLLER, policy=DEMO, **init)
    reservation = ledger.reserve(make_request())
    ledger.publish(reservation, files={"counts.parquet": "ab" * 32})
    assert ledger.anchor_path.is_file()
    registry = _registry_path()
    assert registry.is_file()
    written = [*path.parent.iterdir(), *registry.parent.iterdir()]
    assert {p.name: oct(_mode(p) & 0o077) for p in written} == {p.name: "0o0" for p in written}
    assert _mode(registry.parent) & 0o077 == 0
