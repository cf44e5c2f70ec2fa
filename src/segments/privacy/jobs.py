"""Workspace jobs of the privacy layer: open the ledger a release is charged to, and release
a specification from a workspace's prepared frames.

These are the library functions behind ``segments release`` (and the main job,
:mod:`segments.pipeline`): the command line only maps its options onto them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from segments.exceptions import PolicyError, ReleaseRefusedError, WorkspaceError
from segments.provenance import hashing_raw_once
from segments.workspace import PREPARED_CUSTOMERS, PREPARED_LINES, Workspace

if TYPE_CHECKING:
    from segments.policy import Policy
    from segments.privacy.ledger import Ledger
    from segments.privacy.publishing import ReleaseContext
    from segments.privacy.releases import ReleasePlan, ReleaseResult
    from segments.privacy.specs import PrivacyParams, ReleaseSpec

__all__ = [
    "LedgerKind",
    "SegmentsChoice",
    "ReleaseOutlook",
    "open_ledger",
    "plan_spec",
    "refuse_early",
    "release_outlook",
    "release_params",
    "release_spec",
]

#: Which ledger a release is charged to: the controller's (default), the workspace's
#: throw-away demo ledger or the evaluation ledger (both for data proven synthetic only).
LedgerKind = Literal["controller", "demo", "evaluation"]
#: Where a release's segment labels come from.
SegmentsChoice = Literal["category_rule", "fitted", "private"]


def open_ledger(
    workspace: Workspace,
    policy: Policy,
    *,
    kind: LedgerKind = "controller",
    path: str | os.PathLike[str] | None = None,
    init: bool = False,
    reconcile: bool = True,
    purpose: str | None = None,
) -> Ledger:
    """Open the ledger of ``kind``, refuse a rolled-back one and reconcile it before use.

    Evaluation and demo ledgers are opened only for data proven synthetic
    (:func:`segments.privacy.synthetic.prove_synthetic`); reservations a crash left
    unpublished are finished or aborted first.

    Parameters
    ----------
    workspace : Workspace
    policy : Policy
    kind : {'controller', 'demo', 'evaluation'}
    path : str, optional
        The controller's ledger file (default: the per-controller default path).
    init : bool
        Start (or move) the controller's ledger at ``path``.
    purpose : str, optional
        The purpose whose prepared frames the release reads: on a demo or evaluation ledger
        they must be derived from the proven raw data
        (:func:`segments.provenance.verify_prepared`).
    reconcile : bool
        Reconcile before returning; ``False`` leaves it to the caller, which reports each
        finished or aborted release (:meth:`segments.privacy.ledger.Ledger.reconcile`).

    Returns
    -------
    Ledger

    Raises
    ------
    ReleaseRefusedError
        A simulated ledger for data not proven synthetic or frames not prepared from it, the
        people's data claimed by another controller, or release cards saying the ledger lost
        events — before anything is charged.
    """
    from segments.privacy.ledger import Ledger, claim_population_data
    from segments.privacy.synthetic import prove_synthetic
    from segments.provenance import population_data_ids, verify_prepared

    if workspace.releases.exists() and not workspace.releases.is_dir():  # before any ledger
        raise WorkspaceError(
            f"release folder {workspace.releases} is a file, not a folder; nothing was charged "
            "— move or delete that file (releases are written in that folder)"
        )
    ids = tuple(policy.clauses_for("anonymous_release"))
    rule = f" (rule: the anonymity claim of every release, clause {', '.join(ids)})" if ids else ""
    if kind != "controller":
        flag = f"--{kind}-ledger"
        proof = prove_synthetic(workspace)
        if not proof:
            raise ReleaseRefusedError(
                f"{flag} refused before anything was charged: the data in "
                f"{workspace.raw} is not proven synthetic ({proof.reason}); evaluation "
                "and demo ledgers take synthetic data only — use the controller's ledger"
            )
        # what is released must be derived from what was proven
        unbound = verify_prepared(workspace, purpose) if purpose else None
        if unbound:
            raise ReleaseRefusedError(
                f"{flag} refused before anything was charged{rule}: {unbound}; releases on "
                "evaluation and demo ledgers read only frames prepared from the proven raw "
                f"data — run `segments prepare --purpose {purpose}` in this workspace"
            )
        # the workspace's cards are checked inside open, before a missing ledger is created
        ledger = Ledger.for_workspace(
            workspace,
            str(policy.controller),
            evaluation=kind == "evaluation",
            synthetic=proof,  # the signed verdict, never a flag
            policy=policy,
        )
    else:
        # released frames must be prepare's, from this workspace's raw data (signed record)
        unbound = verify_prepared(workspace, purpose) if purpose else None
        if unbound:
            raise ReleaseRefusedError(
                f"privacy ledger of {policy.controller!r} refused before anything was "
                f"charged{rule}: {unbound}; releases read only frames prepared from the "
                f"workspace's raw data — run `segments prepare --purpose {purpose}` in this "
                "workspace"
            )
        # the people's data belong to one controller name, whatever the policy file says
        data_ids = population_data_ids(workspace)
        claim_population_data(str(policy.controller), data_ids, policy, record=False)
        ledger = Ledger.for_policy(policy, path=path, init=init, releases=workspace.releases)
        claim_population_data(str(policy.controller), data_ids, policy)
    if reconcile:  # reservations a crash left unpublished: finished or aborted first
        from segments.privacy.archive import rebuild_archive

        ledger.reconcile()
        rebuild_archive(workspace.releases, ledger)  # a month killed before its archive update
    return ledger


def refuse_early(policy: Policy, purpose: str, recipient: str, destination: str) -> None:
    """The ledger's purpose, recipient and destination guards, run before any ledger file
    is opened or created, so a refused release writes nothing."""
    from segments.privacy.guards import (
        check_destination,
        check_purpose,
        check_recipient,
    )

    check_purpose(purpose, policy)
    declared = check_recipient(recipient, policy)
    for where, who in ((destination, ""), (declared.country, declared.name)):
        if where:
            check_destination(
                where,
                policy.allowed_destinations,
                who=who,
                clause_ids=policy.destination_clause_ids,
            )


def release_params(workspace: Workspace, policy: Policy, purpose: str) -> PrivacyParams:
    """The policy's public bounds for ``purpose``, keyed by the data's declared public
    domains (built-in for synthetic data)."""
    from segments.ingest import public_domains
    from segments.privacy.specs import PrivacyParams

    return PrivacyParams.from_policy(policy, purpose).with_domains(public_domains(workspace))


def _spec(spec: ReleaseSpec | str, epsilon: float | None) -> ReleaseSpec:
    from segments.privacy.specs import get_spec

    chosen = get_spec(spec) if isinstance(spec, str) else spec
    return chosen.with_epsilon(epsilon) if epsilon is not None else chosen


def _resolve(ledger: Ledger | Callable[[], Ledger]) -> Ledger:
    return ledger() if callable(ledger) else ledger


@contextlib.contextmanager
def plan_spec(
    workspace: Workspace,
    policy: Policy,
    spec: ReleaseSpec | str,
    *,
    purpose: str,
    as_of: dt.date,
    epsilon: float | None = None,
    month: dt.date | None = None,
    segments: SegmentsChoice = "category_rule",
    ledger: Ledger | Callable[[], Ledger] | None = None,
    confidence: float = 0.95,
) -> Iterator[ReleasePlan]:
    """Plan a release of ``spec`` from ``W/prepared/<purpose>/``; spend nothing.

    A monthly series spec plans the closed ``month``; otherwise ``month`` selects the survey
    month. Private segments are verified against ``ledger`` (opened only then).

    Yields
    ------
    ReleasePlan
        Valid inside the ``with`` block (its per-person aggregates are removed after).
    """
    from segments.privacy.archive import month_start, next_month
    from segments.privacy.releases import check_public_keys, plan_release
    from segments.privacy.specs import SegmentSource
    from segments.provenance import verified_frames

    chosen = _spec(spec, epsilon)
    params = release_params(workspace, policy, purpose)
    prepared = workspace.prepared_dir(purpose)
    cited = policy.cite("anonymous_release")
    if "monthly_category" in chosen.queries:
        if month is None:
            raise PolicyError(
                "--spec monthly_category needs --month: the first day of the closed month "
                "to release, e.g. 2026-09-01"
            )
        first = month_start(month)
        window = (first, next_month(first))
        # plan_release checks this too; here first, citing the policy's clause
        check_public_keys(chosen, params, window=window, segments=None, cite=cited)
        for name in (PREPARED_CUSTOMERS, PREPARED_LINES):
            workspace.require(prepared / name, "segments prepare")
        # the bytes read are hashed against prepare's signed record (no check-then-read gap)
        with (
            verified_frames(
                workspace, purpose, (PREPARED_CUSTOMERS, PREPARED_LINES), policy, window=window
            ) as copies,
            plan_release(
                chosen,
                params,
                customers=copies[PREPARED_CUSTOMERS],
                lines=copies[PREPARED_LINES],
                as_of=as_of,
                window=window,
                confidence=confidence,
                workspace=workspace,
                origins=copies.origins,
            ) as plan,
        ):
            yield plan
        return
    source = None
    if chosen.needs_segments:
        # private segments rest on a DP k-means entry of the ledger this release is charged to
        verified_in = _resolve(ledger) if segments == "private" and ledger is not None else None
        source = SegmentSource.from_workspace(workspace, segments, ledger=verified_in)
    check_public_keys(chosen, params, window=None, segments=source, cite=cited)
    surveys = None
    if any(q.frame == "survey" for q in chosen.query_defs):
        surveys = prepared / "surveys.parquet"
        if not surveys.exists():
            surveys = workspace.require(workspace.raw_table("surveys"), "segments generate")
    needs_lines = any(q.frame != "survey" for q in chosen.query_defs)
    names = []
    if needs_lines:
        for name in (PREPARED_CUSTOMERS, PREPARED_LINES):
            workspace.require(prepared / name, "segments prepare")
            names.append(name)
    if surveys is not None and surveys.parent == prepared:
        names.append(surveys.name)
    # the bytes read are hashed against prepare's signed record (no check-then-read gap)
    with (
        verified_frames(workspace, purpose, names, policy) as copies,
        plan_release(
            chosen,
            params,
            customers=copies.get(PREPARED_CUSTOMERS),
            lines=copies.get(PREPARED_LINES),
            surveys=copies.get(surveys.name, surveys) if surveys is not None else None,
            segments=source,
            as_of=as_of,
            survey_month=month_start(month) if month else None,
            confidence=confidence,
            workspace=workspace,
            origins=copies.origins,
        ) as plan,
    ):
        yield plan


@hashing_raw_once
def release_spec(
    context: ReleaseContext,
    spec: ReleaseSpec | str,
    *,
    as_of: dt.date,
    epsilon: float | None = None,
    month: dt.date | None = None,
    segments: SegmentsChoice = "category_rule",
    confidence: float = 0.95,
    on_plan: Callable[[ReleasePlan], object] | None = None,
) -> ReleaseResult:
    """Release ``spec`` from ``W/prepared/<purpose>/``, charged to the context's ledger.

    The purpose, recipient and destination were checked against the policy when the
    context was built; a context given a function opening the ledger opens it only when the
    release first needs it. A monthly series spec (``monthly_category``) releases the closed
    ``month`` and appends it to the archive (:func:`segments.privacy.archive.release_month`).

    Parameters
    ----------
    context : segments.privacy.publishing.ReleaseContext
        Ledger, workspace, policy, purpose, recipient and destination.
    spec : ReleaseSpec or str
        A specification or the name of one in :data:`segments.privacy.specs.SPECS`.
    as_of : date
        Release date recorded in the ledger; nothing on or after it is read.
    epsilon : float, optional
        Override the spec's privacy loss ε.
    month : date, optional
        The month of a monthly release, or the survey month.
    segments : {'category_rule', 'fitted', 'private'}
    confidence : float
        Level of the intervals written in the tables.
    on_plan : callable, optional
        Called with the plan (its expected accuracy) before anything is charged; not for a
        monthly series release, which plans inside the archive's lock.

    Returns
    -------
    ReleaseResult
    """
    from segments.privacy.archive import release_month

    workspace, policy, purpose = context.workspace, context.policy, context.purpose
    if not 0.0 < confidence < 1.0:
        raise PolicyError(f"--confidence={confidence!r} must lie in (0, 1), e.g. 0.95")
    chosen = _spec(spec, epsilon)
    if "monthly_category" in chosen.queries:
        if month is None:
            raise PolicyError(
                "--spec monthly_category needs --month: the first day of the closed month "
                "to release, e.g. 2026-09-01"
            )
        from segments.privacy.archive import check_month_in_data, month_start

        # refused before the ledger is opened (or created): nothing is written
        prepared = workspace.prepared_dir(purpose)
        check_month_in_data(workspace, prepared, month_start(month), purpose, policy)
        return release_month(
            context,
            month_start(month),
            as_of=as_of,
            params=release_params(workspace, policy, purpose),
            confidence=confidence,
            spec=chosen,
        )
    with plan_spec(
        workspace,
        policy,
        chosen,
        purpose=purpose,
        as_of=as_of,
        month=month,
        segments=segments,
        # the same ledger for the segments' check and the charge
        ledger=lambda: context.ledger,
        confidence=confidence,
    ) as plan:
        if on_plan is not None:
            on_plan(plan)
        return plan.execute(context)


@dataclass(frozen=True)
class ReleaseOutlook:
    """What a planned release would meet, found without charging or creating anything
    (:func:`release_outlook`, ``segments release --dry-run``)."""

    #: the guards' refusal (recipient, destination, guarantee), or None when allowed
    refusal: str | None
    recipient: str
    destination: str
    budget_epsilon: float
    period_months: int
    #: None when the ledger does not exist yet (nothing spent)
    ledger_label: str | None = None
    spent: str = ""
    period_end: dt.date | None = None
    remaining_epsilon: float | None = None
    asked_epsilon: float = 0.0
    #: a pure-ε release asking more than the period has left (zCDP: the ledger decides)
    over_budget: bool = False

    def lines(self) -> list[str]:
        """The outlook as the lines ``segments release --dry-run`` prints."""
        out = [
            f"would be REFUSED: {self.refusal}"
            if self.refusal
            else f"guards: recipient {self.recipient!r} and destination {self.destination} allowed"
        ]
        if self.ledger_label is None:
            out.append(
                f"budget: no ledger yet; the whole budget ε {self.budget_epsilon:g} per "
                f"{self.period_months} months remains"
            )
            return out
        out.append(
            f"budget: {self.ledger_label + ' — ' if self.ledger_label else ''}{self.spent} "
            f"spent of ε {self.budget_epsilon:g} in the {self.period_months}-month period "
            f"ending {self.period_end}; ε {self.remaining_epsilon:.4g} remains"
        )
        if self.over_budget:
            out.append(
                f"would be REFUSED: this release asks ε {self.asked_epsilon:.4g}, more than the "
                f"ε {self.remaining_epsilon:.4g} left; lower --epsilon or wait for earlier "
                "releases to leave the period"
            )
        else:
            out.append(
                f"this release asks ε {self.asked_epsilon:.4g}; the ledger checks every period "
                "it falls in"
            )
        return out


def release_outlook(
    workspace: Workspace,
    policy: Policy,
    plan: ReleasePlan,
    *,
    purpose: str,
    recipient: str,
    destination: str,
    kind: LedgerKind = "controller",
    path: str | os.PathLike[str] | None = None,
    synthetic: bool = False,
) -> ReleaseOutlook:
    """The guards' verdict on ``plan`` and the budget its ledger has left, read only.

    Nothing is charged and no ledger is created: a ledger that does not exist yet has
    spent nothing.
    """
    from segments.privacy.composition import DPFamily
    from segments.privacy.guards import check_release
    from segments.privacy.ledger import Ledger

    refusal = None
    try:
        check_release(
            purpose=purpose,
            recipient=recipient,
            destination=destination,
            guarantee=plan.guarantee,
            kind="dp",
            policy=policy,
        )
    except ReleaseRefusedError as refused:
        refusal = str(refused)
    budget = float(policy.privacy.budget_epsilon)
    period = int(policy.privacy.budget_period_months)
    outlook = ReleaseOutlook(refusal, recipient, destination, budget, period)
    try:
        if kind != "controller":
            ledger = Ledger.for_workspace(
                workspace,
                str(policy.controller),
                evaluation=kind == "evaluation",
                synthetic=synthetic,
                create=False,
                policy=policy,
            )
        else:
            ledger = Ledger.for_policy(policy, path=path, synthetic=synthetic, create=False)
    except Exception:  # no ledger yet: nothing has been spent
        return outlook
    balance = ledger.balance(plan.spec.population, ledger.charge_date(plan.as_of))
    asked = float(plan.loss.epsilon or 0.0)
    spent = balance.period_total.epsilon
    return ReleaseOutlook(
        refusal,
        recipient,
        destination,
        budget,
        period,
        ledger_label=ledger.label or "",
        spent=balance.period_total.describe(),
        period_end=balance.as_of,
        remaining_epsilon=balance.remaining_epsilon,
        asked_epsilon=asked,
        over_budget=policy.privacy.dp_family == DPFamily.PURE and spent + asked > budget + 1e-9,
    )
