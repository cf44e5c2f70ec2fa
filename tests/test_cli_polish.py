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


def test_an_empty_key_file_is_refused_by_name_not_read_as_a_folder(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """``--key-file "$KEY"`` with the variable unset passes an empty path: every command
    taking the steward's key refuses it as empty (exit 2), before reading anything, instead
    of auditing without the key or naming the current folder."""
    for command in (
        ["audit", "--policy", "alloffice"],
        ["prepare", "--policy", "alloffice", "--purpose", "statistics", "--as-of", "2026-10-31"],
        ["retention", "purge", "--policy", "alloffice", "--as-of", "2026-10-31"],
        ["subject", "erase", "--customer", "1", "--policy", "alloffice"],
    ):
        try:
            code = segments_cli([*command, "-w", str(tmp_path / "ws"), "--key-file", ""])
        except SystemExit as stop:
            code = stop.code
        err = capsys.readouterr().err
        assert code == 2, command
        assert "--key-file" in err and "the key file path is empty" in err, err
        assert "is a folder" not in err
    assert not (tmp_path / "ws").exists()
