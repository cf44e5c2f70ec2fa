"""Test helpers for releases: the release context a test charges, a ledger opened with a
synthetic proof, the query the DP audits attack, and a plan's measurements run outside any
ledger (for calibration tests only; no library code releases without one)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl
from prepared_frames import synthetic_proof

from segments.policy import Policy
from segments.privacy.ledger import Ledger
from segments.privacy.publishing import ReleaseContext
from segments.privacy.releases import ReleasePlan, _run_query
from segments.session import Session, count
from segments.session import sum as total
from segments.workspace import Workspace

if TYPE_CHECKING:  # only named in a signature: the audit package is not imported for it
    from segments.audit.mechanisms import PersonNeighbours

#: The release context of a test: :meth:`ReleaseContext.open`, the one constructor (the
#: same parameters, so the tests build contexts exactly as the library's callers do).
release_context = ReleaseContext.open


def proven_ledger(workspace: Workspace, policy: Policy, *, evaluation: bool = False) -> Ledger:
    """The ledger of ``workspace`` for ``policy``, opened with a signed "proven synthetic"
    verdict about its raw files now (:func:`prepared_frames.synthetic_proof`): a demo ledger,
    or with ``evaluation`` an evaluation ledger (releases may go over the budget)."""
    return Ledger.for_workspace(
        workspace,
        policy.controller,
        evaluation=evaluation,
        synthetic=synthetic_proof(workspace),
        policy=policy,
    )


def run_unaccounted(plan: ReleasePlan) -> dict[str, pl.DataFrame]:
    """Run every measurement of ``plan`` once, outside any ledger (raw noisy answers), for
    calibration tests and benchmarks on synthetic data; the release path is
    :meth:`ReleasePlan.execute`, which needs a ledger."""
    return {
        q.query.name: _run_query(q)
        if q.vector is not None
        else q.measurement(pl.scan_parquet(q.data_path)).collect()
        for q in plan.queries
    }


def person_cell_query(
    session: Session, person: PersonNeighbours, bound: int = 50_000, name: str = "q"
) -> Any:
    """The query definition the DP audits attack: count and spend (clipped at ``bound``) per
    county of the removed ``person``'s own customer type and industry, a filtered, grouped
    session query whose cells the person's removal changes."""
    me = pl.read_parquet(person.with_person["customers"]).filter(
        pl.col("person_id") == person.person_id
    )
    kind, industry = me["customer_type"].item(), me["industry"].item()
    where = {"customer_type": kind, **({"industry": industry} if industry else {})}
    query = session.table("customers").filter(**where).group_by("county")
    return query.agg(count(), total("spend", bounds=(0, bound))).named(name).definition()
