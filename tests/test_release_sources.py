"""A release is charged only for the verified prepared frames of its workspace and purpose.

rev13 finding 3: ``plan_release(customers=..., lines=...)`` followed by ``execute(ledger)``
charged a controller's ledger for Parquet files from anywhere (/tmp, another purpose's
folder) and the card claimed end-to-end ε-DP over them; the scale probe of the demo's
accuracy plan read ``W/prepared`` without checking the bytes. Each attack here must be
refused before anything is charged or written.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pytest
from prepared_frames import install_prepared, verified_plan
from release_helpers import proven_ledger, release_context

from segments.exceptions import ReleaseRefusedError
from segments.policy import Policy
from segments.privacy._frames import write_prepared_frames
from segments.privacy.ledger import Ledger
from segments.privacy.releases import plan_release
from segments.privacy.specs import SPECS, PrivacyParams, SegmentSource
from segments.workspace import Workspace, parquet_sha256, sha256_file

AS_OF = dt.date(2026, 3, 1)
PURPOSE = "statistics"
SPEC = SPECS["customers_by_county_segment"].with_epsilon(0.1)


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("frames")
    return write_prepared_frames(folder, 300, 3_000, seed=np.random.default_rng(13))


@pytest.fixture()
def workspace(tmp_path: Path, frames: dict) -> Workspace:
    ws = Workspace(tmp_path / "ws").create()
    install_prepared(ws, frames, PURPOSE, AS_OF)
    return ws


@pytest.fixture()
def policy() -> Policy:
    return Policy.load("alloffice")


def _controller_ledger(tmp_path: Path, policy: Policy) -> Ledger:
    return Ledger.open(tmp_path / "l.sqlite", policy.controller, policy=policy, init=True)


def _execute(plan, ledger, workspace, policy, purpose=PURPOSE):
    return plan.execute(
        release_context(ledger, workspace, policy, purpose=purpose, recipient="purchasing")
    )


def _nothing_released(ledger: Ledger, workspace: Workspace) -> None:
    assert ledger.entries() == []
    assert not [p for p in workspace.releases.iterdir() if p.name != "archive"]


def _plan(customers, lines, **kw):
    params = PrivacyParams.from_policy(Policy.load("alloffice"), PURPOSE)
    segments = SegmentSource.category_rule()
    return plan_release(
        SPEC, params, customers=customers, lines=lines, segments=segments, as_of=AS_OF, **kw
    )


def test_frames_from_anywhere_are_refused_on_a_controllers_ledger(
    workspace, policy, frames, tmp_path
):
    """The reviewer's attack: Parquet files outside the workspace (here the very same data,
    in /tmp) planned and executed on the controller's ledger."""
    ledger = _controller_ledger(tmp_path, policy)
    with (
        _plan(frames["customers"], frames["lines"], workspace=workspace) as plan,
        pytest.raises(ReleaseRefusedError, match="refused before anything was charged") as e,
    ):
        _execute(plan, ledger, workspace, policy)
    message = str(e.value)
    assert "not a copy of" in message and "prepared/statistics/customers.parquet" in message
    assert str(frames["customers"]) in message and "fix:" in message
    assert "\n" not in message
    _nothing_released(ledger, workspace)


def test_frames_from_anywhere_are_refused_on_an_evaluation_ledger_too(workspace, policy, frames):
    """An evaluation ledger lets releases go over budget for data proven synthetic: data
    from outside the proven workspace must not ride on it."""
    ledger = proven_ledger(workspace, policy, evaluation=True)
    with (
        _plan(frames["customers"], frames["lines"], workspace=workspace) as plan,
        pytest.raises(ReleaseRefusedError, match="checked against prepare.s signed record"),
    ):
        _execute(plan, ledger, workspace, policy)
    _nothing_released(ledger, workspace)


def test_the_workspaces_own_files_read_unverified_are_refused(workspace, policy, tmp_path):
    """W/prepared/<purpose>/*.parquet given as paths (what the scale probe did): the bytes
    were never hashed against prepare's signed record, so an edit would go unseen."""
    ledger = _controller_ledger(tmp_path, policy)
    prepared = workspace.prepared_dir(PURPOSE)
    with (
        _plan(prepared / "customers.parquet", prepared / "lines.parquet") as plan,
        pytest.raises(ReleaseRefusedError, match="checked against prepare.s signed record"),
    ):
        _execute(plan, ledger, workspace, policy)
    _nothing_released(ledger, workspace)


def test_another_purposes_frames_are_refused(workspace, policy, frames, tmp_path):
    """Verified frames of purpose 'segmentation' charged as a 'statistics' release."""
    install_prepared(workspace, frames, "segmentation", AS_OF)
    ledger = _controller_ledger(tmp_path, policy)
    params = PrivacyParams.from_policy(policy, PURPOSE)
    with (
        verified_plan(
            workspace,
            SPEC,
            params,
            "segmentation",
            segments=SegmentSource.category_rule(),
            as_of=AS_OF,
        ) as plan,
        pytest.raises(ReleaseRefusedError, match=r"read from .*prepared/segmentation/customers"),
    ):
        _execute(plan, ledger, workspace, policy, PURPOSE)
    _nothing_released(ledger, workspace)


def test_another_workspaces_frames_are_refused(workspace, policy, frames, tmp_path):
    other = Workspace(tmp_path / "other").create()
    install_prepared(other, frames, PURPOSE, AS_OF)
    ledger = _controller_ledger(tmp_path, policy)
    params = PrivacyParams.from_policy(policy, PURPOSE)
    with (
        verified_plan(
            other, SPEC, params, PURPOSE, segments=SegmentSource.category_rule(), as_of=AS_OF
        ) as plan,
        pytest.raises(ReleaseRefusedError, match="checked against prepare.s signed record"),
    ):
        _execute(plan, ledger, workspace, policy)
    _nothing_released(ledger, workspace)


def test_forged_origins_are_refused_when_planning(workspace, policy, frames, tmp_path):
    """The caller's ``origins`` mapping cannot vouch for a file: /tmp files stated to be
    copies of the workspace's prepared frames (with their true digests) are refused."""
    prepared = workspace.prepared_dir(PURPOSE)
    origins = {
        str(frames[name]): (
            str(prepared / f"{name}.parquet"),
            parquet_sha256(prepared / f"{name}.parquet"),
        )
        for name in ("customers", "lines")
    }
    with pytest.raises(ReleaseRefusedError, match="parameter 'origins'.*not a copy"):
        _plan(frames["customers"], frames["lines"], origins=origins)


def test_a_verified_plan_is_released_and_its_card_names_the_signed_bytes(
    workspace, policy, tmp_path
):
    ledger = _controller_ledger(tmp_path, policy)
    params = PrivacyParams.from_policy(policy, PURPOSE)
    prepared = workspace.prepared_dir(PURPOSE)
    with verified_plan(
        workspace, SPEC, params, PURPOSE, segments=SegmentSource.category_rule(), as_of=AS_OF
    ) as plan:
        result = _execute(plan, ledger, workspace, policy)
    [entry] = ledger.entries()
    source = result.card["spec"]["source"]
    assert source["lines"] == str(prepared / "lines.parquet")
    # the lines are month partitions: one digest over every partition file's digest
    assert source["sha256"]["lines"] == parquet_sha256(prepared / "lines.parquet")
    assert entry.request.population_fingerprint == sha256_file(prepared / "customers.parquet")


def test_the_scale_probe_refuses_edited_frames_before_charging(workspace, policy, tmp_path):
    """rev13 finding 3, planner.probe_scale: it read W/prepared/<purpose>/*.parquet without
    checking the bytes; an edited lines file must be refused before either probe charges."""
    from segments.privacy.planner import probe_scale

    lines = workspace.prepared_dir(PURPOSE) / "lines.parquet"
    shutil.copyfile(lines, tmp_path / "signed.parquet")
    import polars as pl

    pl.read_parquet(lines).with_columns(pl.col("amount_sek") * 100).write_parquet(lines)
    ledger = _controller_ledger(tmp_path, policy)
    with pytest.raises(ReleaseRefusedError, match="lines.parquet is not the file"):
        probe_scale(
            release_context(ledger, workspace, policy, purpose=PURPOSE, recipient="purchasing"),
            as_of=AS_OF,
            segments=4,
        )
    _nothing_released(ledger, workspace)
    # the bytes prepare signed restored: the probes run (and are charged) as before
    shutil.copyfile(tmp_path / "signed.parquet", lines)
    scale, charged = probe_scale(
        release_context(ledger, workspace, policy, purpose=PURPOSE, recipient="purchasing"),
        as_of=AS_OF,
        segments=4,
    )
    assert len(ledger.entries()) == 2 and scale.customers > 0


def test_planning_from_a_workspace_and_purpose_reads_verified_bytes(workspace, policy, tmp_path):
    """plan_release(workspace=, purpose=) (the notebooks' way): an edited lines file is
    refused while planning; the untouched frames are released."""
    import polars as pl

    params = PrivacyParams.from_policy(policy, PURPOSE)
    kw = {"segments": SegmentSource.category_rule(), "as_of": AS_OF, "workspace": workspace}
    ledger = _controller_ledger(tmp_path, policy)
    with plan_release(SPEC, params, purpose=PURPOSE, **kw) as plan:
        _execute(plan, ledger, workspace, policy)
    assert len(ledger.entries()) == 1
    lines = workspace.prepared_dir(PURPOSE) / "lines.parquet"
    pl.read_parquet(lines).with_columns(pl.col("quantity") * 50).write_parquet(lines)
    with pytest.raises(ReleaseRefusedError, match="lines.parquet is not the file"):
        plan_release(SPEC, params, purpose=PURPOSE, **kw)
    assert len(ledger.entries()) == 1
