"""Issue 18 items 3, 4 and 7, in-process: private intermediates stay in the workspace, names
never become paths, and a later run sweeps what a killed one left (the kill tests in
tests/test_faults.py do the same with real processes)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from segments.exceptions import PolicyError, WorkspaceError
from segments.policy import Policy
from segments.privacy._frames import write_prepared_frames
from segments.privacy.releases import plan_release
from segments.privacy.specs import SPECS, PrivacyParams, SegmentSource
from segments.workspace import Workspace, check_name

AS_OF = dt.date(2026, 3, 1)


def _frames(ws: Workspace) -> dict[str, Path]:
    return write_prepared_frames(
        ws.prepared_dir("statistics"), 300, 3000, seed=np.random.default_rng(0)
    )


def test_release_aggregates_live_in_the_private_area_not_the_system_temp(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    paths = _frames(ws)
    params = PrivacyParams.from_policy(Policy.load("alloffice"), "statistics")
    before = set(Path(tempfile.gettempdir()).iterdir())
    with plan_release(
        SPECS["category_mix"],
        params,
        customers=paths["customers"],
        lines=paths["lines"],
        segments=SegmentSource.category_rule(),
        as_of=AS_OF,
        workspace=ws,
    ) as plan:
        assert plan.folder.parent == ws.private
        assert (plan.folder / "person.parquet").is_file()
        assert plan.folder.stat().st_mode & 0o077 == 0
        assert set(Path(tempfile.gettempdir()).iterdir()) == before
    assert not ws.private.exists()  # removed on success


def test_without_a_workspace_the_aggregates_stay_beside_the_input(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    paths = _frames(ws)
    params = PrivacyParams.from_policy(Policy.load("alloffice"), "statistics")
    with plan_release(
        SPECS["category_mix"], params, customers=paths["customers"], lines=paths["lines"],
        segments=SegmentSource.category_rule(), as_of=AS_OF,
    ) as plan:  # fmt: skip
        assert plan.folder.parent == paths["customers"].parent


def test_a_failed_plan_removes_its_aggregates(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    paths = _frames(ws)
    params = PrivacyParams.from_policy(Policy.load("alloffice"), "statistics")
    with pytest.raises(PolicyError):
        plan_release(
            SPECS["survey_experience"], params, customers=paths["customers"],
            lines=paths["lines"], as_of=AS_OF, workspace=ws,
        )  # fmt: skip
    assert not ws.private.exists()


def test_a_crashed_runs_scratch_is_swept_but_a_live_ones_is_kept(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    ws.private.mkdir(parents=True)
    dead = ws.private / "scratch-release-p999999999-abc"
    live = ws.private / f"scratch-release-p{os.getppid()}-abc"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "person.parquet").write_bytes(b"x")
    staging = [
        ws.root / ".raw-staging-p999999999-x",
        ws.root / ".raw-old-p999999999-x",
        ws.prepared / ".segmentation.p999999999-x.tmp",
        ws.prepared / ".segmentation.old.999999999",
    ]
    for folder in staging:
        folder.mkdir(parents=True)
    removed = ws.sweep()
    assert sorted(removed) == sorted([dead, *staging])
    assert live.is_dir()


@pytest.mark.parametrize("name", ["../../../victim", "../raw", "a/b", ".hidden", "", "x" * 101])
def test_names_are_never_paths(name: str, tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="not a safe name"):
        check_name("purpose", name)
    with pytest.raises(WorkspaceError):
        Workspace(tmp_path).prepared_dir(name)


def test_a_policy_file_cannot_name_a_purpose_that_escapes_the_workspace(
    small_raw: Workspace, tmp_path: Path
) -> None:
    """Issue 18 item 4: prepare wrote outside the workspace and deleted a folder there."""
    from segments.prepare import prepare

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me", encoding="utf-8")
    ws = tmp_path / "deep" / "er" / "ws"
    shutil.copytree(small_raw.root, ws)
    source = Path(Policy.load("alloffice").path).read_text(encoding="utf-8")
    policy = tmp_path / "evil.toml"
    policy.write_text(
        source.replace("[purposes.segmentation]", '[purposes."../../../victim"]', 1).replace(
            "[[purposes.segmentation.", '[[purposes."../../../victim".'
        ),
        encoding="utf-8",
    )
    with pytest.raises(PolicyError, match="not a safe identifier"):
        prepare(Workspace(ws), str(policy), "../../../victim", "2026-10-31")
    assert (victim / "precious.txt").read_text(encoding="utf-8") == "keep me"


def test_paths_are_checked_to_stay_inside(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    assert ws.inside(ws.root / "prepared" / "x") == ws.root / "prepared" / "x"
    with pytest.raises(WorkspaceError, match="outside workspace"):
        ws.inside(ws.root / ".." / "elsewhere")
    (tmp_path / "outside").mkdir()
    ws.root.mkdir()
    (ws.root / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(WorkspaceError, match="outside workspace"):
        ws.inside(ws.root / "link" / "file")
