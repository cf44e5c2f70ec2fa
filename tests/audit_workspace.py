"""Workspaces for the audit tests, built once per test session from the default dataset.

``alloffice`` gets the whole flow (prepare every purpose, a DP release, a year of the monthly
archive, a forecast, a k-anonymous release, a fitted segmentation and a target list); the other
four policies get the frames of their statistics purpose and one DP release. All
releases go to the workspace's throw-away ledger (``Ledger.for_workspace``), so copying a
workspace copies its ledger.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from release_helpers import proven_ledger, release_context

from segments import (
    RELEASE_SPECS,
    RFM_FEATURES,
    FeatureSpec,
    Ledger,
    Policy,
    PrivacyParams,
    SegmentSource,
    Workspace,
    copy_default_dataset,
    forecast_purchasing,
    plan_release,
    prepare,
    release_kanon,
    release_month,
    segment,
    target,
)

AS_OF = dt.date(2026, 10, 31)
_BUILT: dict[str, Workspace] = {}


def _dp_release(ws: Workspace, policy: Policy, ledger: Ledger, purpose: str) -> None:
    params = PrivacyParams.from_policy(policy, purpose)
    with plan_release(
        RELEASE_SPECS["segment_overview"].with_epsilon(0.5),
        params,
        workspace=ws,
        purpose=purpose,
        segments=SegmentSource.category_rule(),
        as_of=AS_OF,
    ) as plan:
        plan.execute(release_context(ledger, ws, policy, purpose=purpose, recipient="purchasing"))


def _full_flow(ws: Workspace, policy: Policy, ledger: Ledger) -> None:
    params = PrivacyParams.from_policy(policy, "statistics")
    spec = RELEASE_SPECS["monthly_category"].with_epsilon(0.1)
    month = dt.date(2025, 9, 1)
    for _ in range(13):
        release_month(
            release_context(
                ledger, ws, policy, purpose="statistics", recipient="purchasing", synthetic=True
            ),
            month,
            as_of=AS_OF,
            params=params,
            spec=spec,
        )
        month = dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)
    forecast_purchasing(ws, horizon=3, model="seasonal-naive")
    release_kanon(
        release_context(ledger, ws, policy, purpose="microdata", recipient="purchasing"),
        k=policy.privacy.min_k,
        seed=6,
        as_of=AS_OF,
    )
    # RFM features only: their public bounds are in every policy
    spec = FeatureSpec(bounds=policy.privacy.feature_bounds, numeric=RFM_FEATURES)
    segment(ws, policy, purpose="offers", k_range=range(3, 5), seed=0, spec=spec)
    target(ws, 0)


def audit_workspace(policy_name: str, root: Path) -> Workspace:
    """The workspace of ``policy_name`` (built under ``root`` on first use; read-only)."""
    if policy_name in _BUILT:
        return _BUILT[policy_name]
    ws = Workspace(root / policy_name)
    shutil.rmtree(ws.root, ignore_errors=True)
    copy_default_dataset(ws)
    policy = Policy.load(policy_name)
    for purpose in policy.purposes if policy_name == "alloffice" else ("statistics",):
        prepare(ws, policy, purpose, AS_OF)
    ledger = proven_ledger(ws, policy)
    _dp_release(ws, policy, ledger, "statistics")
    if policy_name == "alloffice":
        _full_flow(ws, policy, ledger)
    _BUILT[policy_name] = ws
    return ws


def copy_workspace(ws: Workspace, dest: Path) -> Workspace:
    """A private copy of a built workspace (with its ledger) to break on purpose."""
    shutil.copytree(ws.root, dest)
    return Workspace(dest)
