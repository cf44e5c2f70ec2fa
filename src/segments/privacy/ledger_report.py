"""A controller's privacy ledger as a report: balances, rolling totals, history, verification.

:func:`ledger_report` verifies the hash chain (and, given the releases folder, every card and
the archive against it) and totals each population's spending; :class:`LedgerReport` holds
the result as structured data (:meth:`~LedgerReport.to_dict`) and renders it as text
(:meth:`~LedgerReport.render`). :func:`open_ledgers` finds the ledgers to report on. The
``segments ledger`` command only maps its options onto these and prints.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from segments.workspace import CARD_NAMES, Workspace

if TYPE_CHECKING:
    from segments.policy import Policy

__all__ = ["ACCOUNTING_RULE", "LedgerReport", "find_cards", "ledger_report", "open_ledgers"]

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


def open_ledgers(
    *,
    policy: Policy | None = None,
    path: str | Path | None = None,
    workspace: str | Path | None = None,
    evaluation: bool = False,
) -> list[Ledger]:
    """The ledgers to report on, opened read-only (never created).

    ``path`` names one ledger file; else the ``workspace``'s throw-away ledger of
    ``policy``'s controller; else that controller's default ledger; else every ledger in the
    workspace's ledger folder or the default folder.
    """
    if path:
        controller = str(policy.controller) if policy is not None else None
        return [Ledger.open(Path(path), controller, create=False, policy=policy)]
    if workspace and policy is not None:
        ledger = Ledger.for_workspace(
            Path(workspace),
            str(policy.controller),
            evaluation=evaluation,
            create=False,
            policy=policy,
        )
        return [ledger]
    if policy is not None:
        default = default_ledger_path(str(policy.controller), evaluation=evaluation)
        return [Ledger.open(default, str(policy.controller), create=False, policy=policy)]
    folder = Workspace(workspace).ledger_folder if workspace else default_ledger_dir()
    paths = sorted(folder.glob("*.sqlite")) + sorted(folder.glob("evaluation/*.sqlite"))
    if not paths:
        raise WorkspaceError(
            f"no privacy ledger in {folder}; ledgers are created by the first release, or "
            "pass --policy NAME or --ledger PATH"
        )
    return [Ledger.open(p, create=False) for p in paths]


def find_cards(folder: Path) -> list[Path]:
    """Every release card (``card.json``, ``certificate.json``) under ``folder``."""
    if not folder.exists() and folder.parent.is_dir():
        return []  # a workspace without releases has no cards: 0 checked
    if not folder.is_dir():
        raise WorkspaceError(f"--cards {folder} is not a folder; pass the releases folder")
    return sorted(path for name in CARD_NAMES for path in folder.rglob(name))


@dataclass(frozen=True)
class LedgerReport:
    """One ledger's verification, balances and entries (:func:`ledger_report`)."""

    ledger: Ledger
    head: str
    entries: list[LedgerEntry]
    balances: list[Balance]
    verification: Verification
    cards_checked: int | None
    over_budget: tuple[str, ...] = ()

    def to_dict(self, history: bool) -> dict[str, Any]:
        """The report as JSON-able data (``segments ledger --json``); ``history``: every entry."""
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
        """The report as text (``segments ledger``); ``history`` adds every entry."""
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


def ledger_report(
    ledger: Ledger, as_of: dt.date | None, cards: list[Path] | None, folder: Path | None = None
) -> LedgerReport:
    """Verify ``ledger`` (its chain; with ``cards``, every card and the archive of the
    releases ``folder``) and total each population's spending on ``as_of``."""
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
    return LedgerReport(
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
