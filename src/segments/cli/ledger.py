"""``segments ledger``: a controller's privacy budget — balance, rolling totals and history.

Reads the ledger only (it never creates or changes one). Which ledger: ``--ledger PATH``, else
the default ledger of ``--policy``'s controller (or its throw-away ledger in ``--workspace``),
else every ledger in the default folder (``$SEGMENTS_LEDGER_DIR`` or the per-user data folder).
The chain and its anchors are verified on every run; ``--cards DIR`` also recomputes the
SHA-256 of every released file and card under DIR. Reservations a crash left unpublished are
reconciled first (finished if their folder is complete, else aborted, the charge still
counted) and reported. ``--adopt-policy`` records a change of the policy's privacy parameters
(only a tightening before a full period has passed). Exit status 1 when verification finds a
problem or a rolling period is over budget (on an evaluation ledger: over its stated cap,
``EVALUATION_CAP_FACTOR`` times the policy's budget).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segments.cli.common import iso_date
from segments.exceptions import WorkspaceError
from segments.privacy.composition import DPFamily
from segments.privacy.ledger import (
    Balance,
    Ledger,
    LedgerEntry,
    Verification,
    default_ledger_dir,
    default_ledger_path,
)
from segments.workspace import CARD, CERTIFICATE, Workspace

ACCOUNTING_RULE = (
    "accounting: pure ε-DP releases add in ε; zCDP releases add in ρ, and when both occur a "
    "pure ε counts as ρ = ε²/2 and the total is stated as (ε, δ) at the policy's δ with "
    "ε = ρ + 2·sqrt(ρ·ln(1/δ)) (or Σε_pure + ε(Σρ_zCDP), whichever is smaller; both are "
    "sound); that ε is compared with the budget ε for every rolling period, and ε × ⌈window / "
    "period⌉ with the policy's window, measured on the charge dates: the day a release was "
    "recorded on a controller's ledger (the simulated as-of only on evaluation and demo "
    "ledgers, synthetic data). k-anonymous releases charge nothing. Reserved and aborted "
    "charges count."
)

_CARD_NAMES = (CARD, CERTIFICATE)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "ledger",
        help="privacy budget: balance, rolling totals and history of releases",
        description="Show a controller's privacy ledger: per population the spending in the "
        "rolling budget period, over the policy's window and at its peak, the remaining "
        "budget, and (--history) every release. " + ACCOUNTING_RULE,
    )
    parser.add_argument("--policy", help="policy name or .toml path (its controller's ledger)")
    parser.add_argument("--ledger", type=Path, metavar="PATH", help="a ledger file")
    parser.add_argument(
        "--workspace",
        "-w",
        type=Path,
        metavar="DIR",
        help="show the demo's throw-away ledger(s) in DIR/ledger/",
    )
    parser.add_argument(
        "--evaluation",
        action="store_true",
        help="show the policy's evaluation ledger (synthetic data only) instead",
    )
    parser.add_argument(
        "--as-of", type=iso_date, metavar="DATE", help="balance on DATE (default: latest release)"
    )
    parser.add_argument("--history", action="store_true", help="list every release")
    parser.add_argument(
        "--cards",
        type=Path,
        metavar="DIR",
        help="verify the release cards (card.json, certificate.json) under DIR",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--adopt-policy",
        action="store_true",
        help="record --policy's privacy parameters as the ledger's (a change may only tighten "
        "before a full budget period has passed)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segments.cli.common import report_reconciliation

    policy = _load_policy(args.policy) if args.policy else None
    if args.adopt_policy and policy is None:
        raise WorkspaceError("--adopt-policy needs --policy NAME (the policy to adopt)")
    ledgers = _open_ledgers(args, policy)
    for ledger in ledgers:
        if args.adopt_policy and policy is not None:
            params = ledger.change_policy(policy)
            print(f"ledger {ledger.path} now bound to policy {policy.name!r}: {params}")
        report_reconciliation(ledger)
        if args.cards and Path(args.cards).is_dir():  # the archive is derived: repaired
            from segments.privacy.archive import rebuild_archive

            for change in rebuild_archive(args.cards, ledger):
                print(f"release archive repaired: {change}", file=sys.stderr if args.json else None)
    cards = _find_cards(args.cards) if args.cards else None
    reports = [_report(ledger, args.as_of, cards, args.cards) for ledger in ledgers]
    if args.json:
        records = [report.to_dict(args.history) for report in reports]
        print(
            json.dumps(
                records if len(records) != 1 else records[0],
                indent=2,
                default=str,
                ensure_ascii=False,
            )
        )
    else:
        print("\n\n".join(report.render(args.history) for report in reports))
    sound = all(report.verification.ok and not report.over_budget for report in reports)
    return 0 if sound else 1


def _load_policy(name: str) -> Any:
    from segments.policy import Policy

    return Policy.load(name)


def _open_ledgers(args: argparse.Namespace, policy: Any) -> list[Ledger]:
    if args.ledger:
        controller = str(policy.controller) if policy is not None else None
        return [Ledger.open(args.ledger, controller, create=False, policy=policy)]
    if args.workspace and policy is not None:
        ledger = Ledger.for_workspace(
            args.workspace,
            str(policy.controller),
            evaluation=args.evaluation,
            create=False,
            policy=policy,
        )
        return [ledger]
    if policy is not None:
        path = default_ledger_path(str(policy.controller), evaluation=args.evaluation)
        return [Ledger.open(path, str(policy.controller), create=False, policy=policy)]
    folder = Workspace(args.workspace).ledger_folder if args.workspace else default_ledger_dir()
    paths = sorted(folder.glob("*.sqlite")) + sorted(folder.glob("evaluation/*.sqlite"))
    if not paths:
        raise WorkspaceError(
            f"no privacy ledger in {folder}; ledgers are created by the first release, or "
            "pass --policy NAME or --ledger PATH"
        )
    return [Ledger.open(path, create=False) for path in paths]


def _find_cards(folder: Path) -> list[Path]:
    if not folder.exists() and folder.parent.is_dir():
        return []  # a workspace without releases has no cards: 0 checked
    if not folder.is_dir():
        raise WorkspaceError(f"--cards {folder} is not a folder; pass the releases folder")
    return sorted(path for name in _CARD_NAMES for path in folder.rglob(name))


@dataclass(frozen=True)
class _Report:
    ledger: Ledger
    head: str
    entries: list[LedgerEntry]
    balances: list[Balance]
    verification: Verification
    cards_checked: int | None
    over_budget: tuple[str, ...] = ()

    def to_dict(self, history: bool) -> dict[str, Any]:
        ledger = self.ledger
        record: dict[str, Any] = {
            "ledger": {
                "path": str(ledger.path),
                "controller": ledger.controller,
                "ledger_id": ledger.ledger_id,
                "created_at": ledger.created_at,
                "evaluation": ledger.evaluation,
                "throwaway": ledger.throwaway,
                "label": ledger.label,
                "head_hash": self.head,
                "releases": len(self.entries),
                "published": sum(e.status == "published" for e in self.entries),
                "reserved": sum(e.status == "reserved" for e in self.entries),
                "aborted": sum(e.status == "aborted" for e in self.entries),
                "bound_policy": ledger.bound_policy(),
            },
            "verification": {
                "ok": self.verification.ok,
                "problems": list(self.verification.problems),
                "events": self.verification.n_events,
                "cards_checked": self.cards_checked,
                "over_budget": list(self.over_budget),
            },
            "accounting_rule": ACCOUNTING_RULE,
            "balances": [balance.to_dict() for balance in self.balances],
        }
        if history:
            record["history"] = [entry.to_dict() for entry in self.entries]
        return record

    def render(self, history: bool) -> str:
        ledger, entries = self.ledger, self.entries
        published = sum(e.status == "published" for e in entries)
        aborted = sum(e.status == "aborted" for e in entries)
        scope = "hash chain" + (
            f" and {self.cards_checked} release cards" if self.cards_checked is not None else ""
        )
        verdict = "verified" if self.verification.ok else "FAILED verification"
        lines = [f"*** {ledger.label} ***"] if ledger.label else []
        lines += [
            f"Privacy ledger of {ledger.controller}: {ledger.path}",
            f"  {len(entries)} releases ({published} published, {aborted} aborted, "
            f"{len(entries) - published - aborted} reserved); head {self.head[:16]}…; {scope} "
            f"{verdict}",
            "  " + ACCOUNTING_RULE,
        ]
        lines += [f"  PROBLEM: {problem}" for problem in self.verification.problems]
        lines += [f"  OVER BUDGET: {problem}" for problem in self.over_budget]
        for balance in self.balances:
            lines += _render_balance(balance)
        if history and entries:
            lines.append("history (oldest first):")
            lines += [_render_entry(entry) for entry in entries]
        if ledger.label:
            lines.append(f"*** {ledger.label} ***")
        return "\n".join(lines)


def _report(
    ledger: Ledger, as_of: dt.date | None, cards: list[Path] | None, folder: Path | None = None
) -> _Report:
    if cards is None:
        verification = ledger.verify_chain()
    else:
        from segments.privacy.archive import archive_problems

        verification = ledger.verify_cards(cards, folder)
        if folder is not None:  # the archive is bound to the releases it was built from
            extra = tuple(archive_problems(folder, ledger))
            verification = Verification(
                verification.ok and not extra,
                verification.problems + extra,
                verification.n_events,
                verification.head,
            )
    return _Report(
        ledger=ledger,
        head=ledger.head_hash(),
        entries=ledger.entries(),
        balances=[ledger.balance(population, as_of) for population in ledger.populations()],
        verification=verification,
        cards_checked=None if cards is None else len(cards),
        # an evaluation ledger is checked against its stated cap (EVALUATION_CAP_FACTOR)
        over_budget=tuple(ledger.over_budget()),
    )


def _render_balance(balance: Balance) -> list[str]:
    over = balance.peak_period_total.epsilon > balance.budget_epsilon
    return [
        f"population {balance.population!r} on {balance.as_of} — budget ε = "
        f"{balance.budget_epsilon:g} per {balance.budget_period_months} months "
        f"({balance.n_published} published, {balance.n_reserved} reserved)",
        f"  rolling period ({balance.period_start}, {balance.as_of}]: "
        f"{balance.period_total.describe()}; remaining ε = {balance.remaining_epsilon:.6g}",
        f"  window of {balance.budget_window_months} months ({balance.window_start}, "
        f"{balance.as_of}]: {balance.window_total.describe()}",
        f"  peak of any rolling period (ending {balance.peak_period_end}): "
        f"{balance.peak_period_total.describe()}" + (" — OVER BUDGET" if over else ""),
    ]


def _render_entry(entry: LedgerEntry) -> str:
    request = entry.request
    loss = entry.loss
    if loss.family == DPFamily.ZCDP:
        charge = f"ρ={loss.rho:.4g}"
    elif loss.family == "none":
        charge = "no charge"
    else:
        charge = f"ε={loss.epsilon:.4g}" + (f" δ={loss.delta:.2g}" if loss.delta else "")
    return (
        f"  {entry.release_id}  {entry.status:<9} charged {entry.charged_on} (as-of "
        f"{request.as_of})  {request.population}  "
        f"{charge:<12} {request.guarantee}; {request.mechanism or '-'}; purpose "
        f"{request.purpose} → {request.recipient} ({entry.recipient_kind}, "
        f"{request.destination}); clauses {', '.join(request.clause_ids) or '-'}; "
        f"{len(entry.files)} files"
    )
