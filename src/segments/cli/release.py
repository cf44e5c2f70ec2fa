"""``segments release``: differentially private releases (OpenDP), charged to the ledger.

``segments release --workspace W --policy NAME --spec NAME --purpose P --recipient R``
plans the release, prints the expected accuracy of every released number, charges the ledger
and writes ``W/releases/<release-id>/`` (tables + ``card.json``). ``--dry-run`` prints the
accuracy only and spends nothing. ``segments release backfill ...`` builds the monthly
purchasing archive for the synthetic history (evaluation or demo ledger only).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from segments.cli.common import (
    add_as_of_option,
    add_ledger_options,
    add_policy_option,
    add_release_parties,
    add_workspace_option,
    epsilon_value,
    is_synthetic,
    iso_date,
    ledger_when_needed,
    open_fraction,
    open_ledger,
    print_ledger_label,
    refuse_early,
    safe_name,
    wants_simulated_ledger,
)
from segments.exceptions import PolicyError
from segments.privacy.planner import REFUSAL_CONFIDENCE
from segments.workspace import Workspace

if TYPE_CHECKING:
    from segments.privacy.ledger import Ledger


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "release",
        help="differentially private release (OpenDP), charged to the privacy ledger",
        description="Plan a DP release, show its expected accuracy, charge the ledger and "
        "publish it. `segments release backfill` builds the monthly series archive for the "
        "synthetic history.",
    )
    parser.add_argument(
        "action", nargs="?", choices=["backfill"], help="backfill the monthly series archive"
    )
    add_workspace_option(parser)
    add_policy_option(parser, "policy name (e.g. alloffice)")
    parser.add_argument(
        "--spec",
        default="segment_overview",
        type=safe_name,
        help="release specification name (see SPECS)",
    )
    add_release_parties(parser)
    parser.add_argument(
        "--confidence",
        type=open_fraction,
        default=0.95,
        help="level of the intervals shown (the reliable marks are judged at "
        f"{REFUSAL_CONFIDENCE * 100:.0f} %% whatever it is)",
    )
    parser.add_argument("--epsilon", type=epsilon_value, help="override the spec's privacy loss ε")
    add_as_of_option(parser)
    parser.add_argument("--month", type=iso_date, help="month (first day) of a monthly release")
    parser.add_argument(
        "--segments",
        default="category_rule",
        choices=["category_rule", "fitted", "private"],
        help="segment source (fitted: DP given a non-private segmentation, internal only)",
    )
    parser.add_argument("--dry-run", action="store_true", help="show expected accuracy only")
    add_ledger_options(parser)
    parser.set_defaults(func=run)


def _print_plan(plan: Any) -> None:
    loss = plan.loss
    stated = (
        f"ε = {loss.epsilon:.6g}"
        if loss.rho is None
        else f"ρ = {loss.rho:.6g} (ε = {loss.epsilon:.6g} at δ = {loss.delta:g})"
    )
    print(f"release {plan.spec.name}: {plan.guarantee}, {plan.mechanism} noise, {stated}")
    print(f"expected accuracy (± half-width at {plan.confidence:.0%} confidence), per cell:")
    for row in plan.accuracy.to_dict("records"):
        print(
            f"  {row['query']:<28} {row['aggregate']:<10} {row['distribution']:<17} "
            f"scale {row['scale']:>12.6g}  ± {row['accuracy']:>12.6g}  "
            f"cells {row['cells']:>4}  sensitivity L1 {row['sensitivity_l1']:g}"
        )


def run(args: argparse.Namespace) -> int:
    from segments.policy import Policy
    from segments.privacy.archive import backfill
    from segments.privacy.jobs import (
        LedgerKind,
        plan_spec,
        release_outlook,
        release_params,
        release_spec,
    )
    from segments.privacy.publishing import ReleaseContext
    from segments.privacy.specs import get_spec

    workspace: Workspace = args.workspace
    policy = Policy.load(args.policy)
    policy.purpose(args.purpose)  # AO-10: an undeclared purpose is refused before anything
    refuse_early(policy, args.purpose, args.recipient, args.destination)
    params = release_params(workspace, policy, args.purpose)
    from segments.privacy.ledger import ledger_today

    as_of = args.as_of or ledger_today()  # the ledger's clock (UTC), not the local date
    synthetic = is_synthetic(workspace) if wants_simulated_ledger(args) else False
    if not 0.0 < args.confidence < 1.0:
        raise PolicyError(f"--confidence={args.confidence!r} must lie in (0, 1), e.g. 0.95")
    parties: dict[str, Any] = {"purpose": args.purpose, "recipient": args.recipient}
    parties |= {"destination": args.destination, "synthetic": synthetic}

    if args.action == "backfill":
        if args.dry_run:
            raise PolicyError("--dry-run does not apply to backfill; plan a single month instead")
        ledger = open_ledger(args, policy, synthetic)
        report = backfill(
            ReleaseContext.open(ledger, workspace, policy, **parties),
            until=as_of,
            params=params,
            confidence=args.confidence,
            spec=get_spec("monthly_category").with_epsilon(args.epsilon)
            if args.epsilon is not None
            else None,
        )
        print_ledger_label(ledger.label)
        for released, release_id in report.released.items():
            print(f"released {released}: {release_id}")
        for skipped, why in report.skipped.items():
            print(f"skipped {skipped}: {why}")
        return 0

    charged = ledger_when_needed(args, policy, synthetic)
    spec = get_spec(args.spec)
    options: dict[str, Any] = {"purpose": args.purpose, "as_of": as_of, "epsilon": args.epsilon}
    options |= {"month": args.month, "segments": args.segments, "confidence": args.confidence}
    if args.dry_run:
        with plan_spec(workspace, policy, spec, ledger=charged, **options) as plan:
            _print_plan(plan)
            kind: LedgerKind = "controller"
            if args.demo_ledger or args.evaluation_ledger:
                kind = "evaluation" if args.evaluation_ledger else "demo"
            outlook = release_outlook(
                workspace,
                policy,
                plan,
                purpose=args.purpose,
                recipient=args.recipient,
                destination=args.destination,
                kind=kind,
                path=args.ledger,
                synthetic=synthetic,
            )
            print("\n".join(outlook.lines()))
        print("dry run: nothing was charged or released")
        return 0
    options.pop("purpose")
    result = release_spec(
        ReleaseContext.open(charged, workspace, policy, **parties),
        spec,
        on_plan=_print_plan,  # the expected accuracy, shown before anything is charged
        **options,
    )
    _report(result, charged())
    return 0


def _report(result: Any, ledger: Ledger) -> None:
    print_ledger_label(ledger.label)
    print(f"released {result.release_id} -> {result.path}")
    print(f"ledger head hash {result.card['ledger_head_hash']}")


__all__ = ["register", "run"]
