"""What the ledger and guard tests share: a small real policy of a demo controller, the
ledger's clock set by the test, a release request under a policy, and `segments ledger`."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from segments.cli import ledger as ledger_cli
from segments.policy import CLAUSE_KINDS, EU_EEA, Guarantee, Policy, Recipient
from segments.privacy import ledger as ledger_module
from segments.privacy.ledger import ReleaseRequest

CONTROLLER = "Demo AB"
TODAY = dt.date(2026, 6, 30)


def demo_policy(**changes: Any) -> Policy:
    """A :class:`Policy` of controller ``Demo AB`` (policy ``demo``), made from AllOffice's
    parsed policy (its rules and clause ids) with two recipients (``purchasing``, internal in
    SE; ``processor``, external in FI), destinations in the whole EU/EEA, one purpose
    (``statistics``) and a budget of ε = 1 per 12 months (24-month window). ``changes``
    replace any field, as ``dataclasses.replace`` does; the clause kinds a ``clauses`` table
    leaves out have no clause (their refusals say the rule is the project's)."""
    shipped = Policy.load("alloffice")
    fields: dict[str, Any] = {
        "name": "demo",
        "controller": CONTROLLER,
        "org_number": None,
        "joint_controllers": {},
        "path": Path("demo.toml"),  # no file: the ledger hashes its name and parameters
        "recipients": {
            "purchasing": Recipient("purchasing", "internal", "SE"),
            "processor": Recipient("processor", "external", "FI"),
        },
        "allowed_destinations": EU_EEA,
        "purposes": {"statistics": shipped.purposes["statistics"]},
        "privacy": dataclasses.replace(
            shipped.privacy, budget_epsilon=1.0, budget_period_months=12, budget_window_months=24
        ),
        **changes,
    }
    if "clauses" in changes:
        fields["clauses"] = {kind: () for kind in CLAUSE_KINDS} | dict(changes["clauses"])
    return dataclasses.replace(shipped, **fields)


def request_for(policy: Policy, **changes: Any) -> ReleaseRequest:
    """A request under ``policy`` (its name and budget) for an end-to-end DP release of the
    population ``customers`` for purpose ``statistics`` to ``purchasing`` in SE, as of
    :data:`TODAY`; ``changes`` add the loss (``epsilon`` or ``rho``, ``mechanism``) and
    replace any field."""
    fields = {
        "population": "customers",
        "purpose": "statistics",
        "recipient": "purchasing",
        "destination": "SE",
        "guarantee": Guarantee.END_TO_END,
        "as_of": TODAY,
        **changes,
    }
    return ReleaseRequest.for_policy(policy, **fields)


class Clock:
    """The ledger's clock, set by the test (a caller of the library cannot pass a time): noon
    UTC of a day, or any moment (``at``)."""

    def __init__(self, day: dt.date) -> None:
        self.at = _noon(day)

    def set(self, day: str | dt.date) -> None:
        self.at = _noon(dt.date.fromisoformat(day) if isinstance(day, str) else day)

    def __call__(self) -> dt.datetime:
        return self.at


def install_clock(monkeypatch: pytest.MonkeyPatch, day: dt.date = TODAY) -> Clock:
    """Make the ledger's today ``day`` until the test moves the returned clock."""
    clock = Clock(day)
    monkeypatch.setattr(ledger_module, "_clock", clock)
    return clock


def run_cli(*argv: str) -> int:
    """``segments ledger ARGV``'s exit code; a refusal raises (as the command's own function
    does, before the CLI's top level turns it into a message)."""
    parser = argparse.ArgumentParser(prog="segments")
    ledger_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["ledger", *argv])
    return int(args.func(args))


def _noon(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
