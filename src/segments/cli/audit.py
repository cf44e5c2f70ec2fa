"""``segments audit``: the reviewer's report of one workspace under one policy (W/report/).

``segments audit --workspace W --policy NAME [--key-file F] [--ledger PATH]`` runs every check
(a checklist row per clause id of the controller), the PII scan, and the attacks and empirical
DP audit when available, and writes ``W/report/audit.html`` (self-contained), ``audit.md`` and
``audit.json`` (structured results).
With the steward's key (``--key-file``, the environment variable, or the demo key of synthetic
data) the checks that re-pseudonymise excluded people run in the data steward's role;
``--reviewer`` runs without the key (those checks are then not applicable, never passed).
Exit status (:data:`segments.audit.render.EXIT_STATUSES`): 0 clean, 1 a check fails, 3 no
check fails but some are inconclusive or some clause is not verified (a CI job that needs
every clause verified fails on 3).
"""

from __future__ import annotations

import argparse
from typing import Any

from segments.cli.common import (
    add_as_of_option,
    add_key_file_option,
    add_policy_option,
    add_workspace_option,
    non_negative_int,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="reviewer's audit: checklist per policy clause, PII scan, charts (W/report/)",
        description="Verify every promise of a policy against what the workspace produced and "
        "write W/report/audit.html, audit.md and audit.json.",
        epilog="exit status: "
        + "; ".join(f"{code} {meaning}" for code, meaning in _exit_statuses().items())
        + ". A CI job that must have every clause verified treats 3 as a failure; one that "
        "gates only on broken promises accepts 0 and 3.",
    )
    add_workspace_option(parser)
    add_policy_option(parser, "policy audited (e.g. alloffice)")
    add_key_file_option(parser, "(outside the workspace)")
    parser.add_argument(
        "--ledger", help="ledger file (default: the workspace's demo ledger, else the controller's)"
    )
    add_as_of_option(
        parser, "reference date of retention cutoffs (default: the latest prepare run's)"
    )
    parser.add_argument(
        "--dp-trials",
        type=_dp_trials,
        default=500,
        help="trials per dataset of the empirical DP audit (default 500, at least 100; 0 skips "
        "it, which the report states)",
    )
    parser.add_argument(
        "--reviewer",
        action="store_true",
        help="run without the key: the steward's checks are reported not applicable",
    )
    parser.set_defaults(func=run)


def _dp_trials(text: str) -> int:
    """0 (skip the DP audit) or at least the audit's minimum trials, checked at the edge: a
    count too small to bound anything is a bad argument, not a failing clause."""
    from segments.audit.mechanisms import MIN_TRIALS

    value = non_negative_int(text)
    if 0 < value < MIN_TRIALS:
        raise argparse.ArgumentTypeError(
            f"{value} is too few trials for a meaningful bound; give at least {MIN_TRIALS}, "
            "or 0 to skip the DP audit"
        )
    return value


def _exit_statuses() -> dict[int, str]:
    from segments.audit.render import EXIT_STATUSES

    return EXIT_STATUSES


def run(args: argparse.Namespace) -> int:
    from segments.audit.run import run_audit
    from segments.prepare.pseudonym import load_key

    key = None
    if args.key_file and not args.reviewer:
        key = load_key(key_file=args.key_file, workspace=args.workspace)
    run_audit(
        args.workspace,
        args.policy,
        ledger=args.ledger,
        key=key,
        as_of=args.as_of,
        steward=not args.reviewer,
        dp_trials=args.dp_trials or None,
    )
    from segments.audit.render import load_audit_json

    audit = load_audit_json(args.workspace.report)  # what was written, not what was meant
    print(f"audit of {audit['controller']} ({audit['policy']}): {audit['banner']}")
    for check in audit["checks"]:
        if check["verdict"] == "fail":
            clauses = ", ".join(check["clauses"]) or check["kind"]
            print(f"  FAIL {clauses}: [{check['name']}] {check['title'][:90]}")
    inconclusive = sum(check["verdict"] == "inconclusive" for check in audit["checks"])
    if inconclusive:
        print(
            f"  {inconclusive} checks inconclusive: their tests could not have refuted a "
            "violation at their trials, so they count as no pass (the report says which)"
        )
    print(f"report: {args.workspace.report / 'audit.html'} (and audit.md, audit.json)")
    status = int(audit["exit_status"])
    if status == 3:
        unverified = audit.get("unverified_clauses") or []
        print(
            f"exit status 3: {_exit_statuses()[3]}"
            + (f" (not verified in full: {', '.join(unverified)})" if unverified else "")
        )
    return status


__all__ = ["register", "run"]
