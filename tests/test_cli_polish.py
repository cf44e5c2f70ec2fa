"""What a user sees first: --version, readable result objects."""

from __future__ import annotations

import datetime as dt

from prepared_frames import synthetic_proof

from segments import Ledger, Policy
from segments.cli.main import main as segments_cli


def test_version(capsys) -> None:  # type: ignore[no-untyped-def]
    try:
        code = segments_cli(["--version"])
    except SystemExit as stop:  # argparse's own exit, when the boundary lets it through
        code = stop.code
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("segments ") and out.split()[1][0].isdigit()


def test_a_balance_reads_as_a_sentence(tmp_path) -> None:  # type: ignore[no-untyped-def]
    policy = Policy.load("alloffice")
    ledger = Ledger.for_workspace(
        tmp_path, policy.controller, policy=policy, synthetic=synthetic_proof(tmp_path)
    )
    text = repr(ledger.balance("customers", dt.date(2026, 10, 31)))
    assert text.startswith("Balance(customers as of 2026-10-31: ")
    assert "of ε 4 in the 12-month period" in text and "ε 4 left" in text
    assert "THROW-AWAY DEMO LEDGER" in text and "Composition(" not in text
