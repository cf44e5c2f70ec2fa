"""The library jobs that read prepared frames, called as the tests of verified reads
(test_verified_reads) and of workspace binding (test_workspace_binding) attack them: each
takes a workspace, the policy and the ledger to charge, with its purpose's release context."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from release_helpers import release_context

from segments.policy import Policy
from segments.privacy.ledger import Ledger
from segments.workspace import Workspace

#: The as-of the frames are prepared for, and the month the monthly release closes.
AS_OF = dt.date(2026, 10, 31)
MONTH = dt.date(2026, 9, 1)
#: The purposes whose prepared frames the jobs read.
PURPOSES = ("statistics", "microdata", "segmentation")


def prepared_copy(raw_from: Workspace, root: Path, key: str | None = None) -> Workspace:
    """A workspace at ``root`` with ``raw_from``'s raw files, prepared for :data:`PURPOSES`
    as of :data:`AS_OF` (pseudonymised with a steward's ``key`` if given)."""
    from segments.prepare import prepare

    ws = Workspace(root)
    shutil.copytree(raw_from.raw, ws.raw)
    for purpose in PURPOSES:
        prepare(ws, "alloffice", purpose, AS_OF, key=key)
    return ws


def monthly_release(
    ws: Workspace, policy: Policy, ledger: Ledger, month: dt.date = MONTH
) -> object:
    """The monthly category release of ``month`` for the purchasing team."""
    from segments.privacy.jobs import release_spec

    return release_spec(
        release_context(ledger, ws, policy, purpose="statistics", recipient="purchasing"),
        "monthly_category",
        as_of=AS_OF,
        month=month,
    )


def kanon_release(ws: Workspace, policy: Policy, ledger: Ledger) -> object:
    """A 10-anonymous release of county and spend band for the DPO's review."""
    from segments.anonymity.job import release_kanon

    return release_kanon(
        release_context(ledger, ws, policy, purpose="microdata", recipient="dpo-review"),
        k=10,
        columns=["county_code", "spend_band"],
        max_fully_generalised=2,
        as_of=AS_OF,
        seed=0,
    )


def private_kmeans(ws: Workspace, policy: Policy, ledger: Ledger) -> object:
    """The DP k-means fit for the internal analysts (seed 0)."""
    from segments.privacy.kmeans import fit_private_segments

    return fit_private_segments(
        release_context(ledger, ws, policy, purpose="segmentation", recipient="analytics"),
        as_of=AS_OF,
        seed=0,
    )
