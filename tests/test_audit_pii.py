"""The PII scanner finds identifiers by shape and by known value, and reports them redacted."""

from __future__ import annotations

import json

import polars as pl
import pytest

from segments.audit.pii import KnownIdentifiers, luhn_valid, redact, scan_paths, scan_text


@pytest.fixture
def customers() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "personnummer": ["198112189876", None],
            "org_number": [None, "5560360793"],
            "email": ["anna.svensson@exempel.se", "info@foretaget.se"],
            "phone": ["070-123 45 67", "08-555 123 45"],
            "first_name": ["Anna", "Per Erik"],
            "last_name": ["Svensson", "Lindqvist"],
        }
    )


@pytest.mark.parametrize(
    ("digits", "valid"),
    [("8112189876", True), ("8112189875", False), ("5560360793", True), ("123", False)],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("kund: anna@exempel.se", "e-mail address"),
        ("ring 070-123 45 67", "phone number"),
        ("ring +46 70 123 45 67", "phone number"),
        ("pnr 19811218-9876", "personnummer"),
        ("pnr 811218-9876", "personnummer"),
        ("orgnr 556036-0793", "organisation number"),
    ],
)
def test_shapes_are_found(text: str, kind: str) -> None:
    assert [h.kind for h in scan_text(text, "t")] == [kind]


@pytest.mark.parametrize(
    "text",
    [
        "811218-9875",  # wrong check digit
        "total 1234567890 SEK",  # a bare ten-digit number is not flagged on shape alone
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "share 0.0701234567 and 0.123",
        "2026-10-31 and 2026-11-01",
    ],
)
def test_harmless_numbers_are_not_flagged(text: str) -> None:
    assert scan_text(text, "t") == []


def test_known_values_in_any_spelling(customers: pl.DataFrame) -> None:
    known = KnownIdentifiers.from_customers(customers)
    text = "ids 198112189876 and 5560360793; Erik Lindqvist bought; call 0701234567"
    kinds = sorted(h.kind for h in scan_text(text, "t", known))
    assert kinds.count("known personnummer/organisation number") == 2
    assert "customer full name" in kinds
    assert "known phone number" in kinds


def test_single_name_is_not_a_full_name(customers: pl.DataFrame) -> None:
    known = KnownIdentifiers.from_customers(customers)
    assert scan_text("Svensson & co; Anna went home", "t", known) == []


def test_hits_are_redacted(customers: pl.DataFrame) -> None:
    known = KnownIdentifiers.from_customers(customers)
    hits = scan_text("mail anna.svensson@exempel.se", "t", known)
    assert hits and all("anna.svensson" not in h.redacted for h in hits)
    assert redact("Anna Svensson") == "A***a S***n"


def test_scan_paths_reads_parquet_and_notebook_outputs(tmp_path, customers) -> None:
    pl.DataFrame({"segment": ["a"], "note": ["contact anna.svensson@exempel.se"]}).write_parquet(
        tmp_path / "rel.parquet"
    )
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "source": "print('source is not scanned: bo@x.se')",
                "outputs": [{"output_type": "stream", "text": ["Anna Svensson\n"]}],
            }
        ]
    }
    (tmp_path / "n.ipynb").write_text(json.dumps(nb))
    (tmp_path / "chart.png").write_bytes(b"\x89PNG")
    hits, scanned = scan_paths([tmp_path], KnownIdentifiers.from_customers(customers))
    assert len(scanned) == 2  # the PNG has no text to scan
    kinds = {(h.source.rsplit("/", 1)[-1], h.kind) for h in hits}
    assert ("rel.parquet", "e-mail address") in kinds
    assert ("n.ipynb", "customer full name") in kinds
    assert not any("bo@x.se" in h.redacted for h in hits)
