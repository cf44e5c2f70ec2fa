"""Scan outputs for personal data: e-mail addresses, phone numbers, personnummer and
organisation numbers with a valid check digit, and full names of customers.

Two complementary detectors run on every text:

* **shape detectors** find anything that looks like an e-mail address, a Swedish phone
  number, or a personnummer / organisation number whose Luhn check digit is valid (and, for
  a personnummer, whose date exists) — whether or not it belongs to a known customer;
* **known-value detectors** look for the exact identifiers of the raw customer table in any
  spelling (digits only, with or without hyphens; first and last name together), so a value
  that slipped out in an unusual format is still caught.

A hit is reported with its file, kind and a *redacted* excerpt, so the scan report itself
never repeats the personal data it found (AO-3, AO-1).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

__all__ = [
    "KnownIdentifiers",
    "PiiHit",
    "luhn_valid",
    "redact",
    "scan_paths",
    "scan_text",
    "text_of_file",
]

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# Swedish numbers: +46 / 0046 / leading 0, then 7-10 more digits with optional separators.
# Not inside a hyphenated token: release ids like "overview-20261031-07734230" end in digits.
_PHONE = re.compile(r"(?<![\w.-])(?:\+46|0046|0)[ -]?[1-9](?:[ -]?\d){6,9}(?![\w.])")
# 12 digits (century included) or 10 digits with optional -/+ before the last four.
_PNR12 = re.compile(r"(?<![\w.])((?:18|19|20)\d{6})[-+]?(\d{4})(?![\w.])")
_NR10 = re.compile(r"(?<![\w.])(\d{6})([-+]?)(\d{4})(?![\w.])")
_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*", re.UNICODE)


def luhn_valid(digits: str) -> bool:
    """True if the 10-digit string passes the Luhn check used by personnummer and
    organisation numbers.

    Examples
    --------
    >>> luhn_valid("8112189876"), luhn_valid("8112189875")
    (True, False)
    """
    if len(digits) != 10 or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(digits):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _valid_date(yyyymmdd: str) -> bool:
    try:
        day = int(yyyymmdd[6:8])
        # samordningsnummer add 60 to the day
        dt.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), day - 60 if day > 60 else day)
    except ValueError:
        return False
    return True


def redact(value: str) -> str:
    """Keep the first and last character of each part, hide the rest.

    Examples
    --------
    >>> redact("anna.svensson@example.se")
    'a***n@e***e'
    """

    def part(text: str) -> str:
        return text if len(text) <= 2 else f"{text[0]}***{text[-1]}"

    if "@" in value:
        local, domain = value.split("@", 1)
        return f"{part(local)}@{part(domain)}"
    return " ".join(part(w) for w in value.split())


@dataclass(frozen=True)
class PiiHit:
    """One finding: where, what kind, and a redacted excerpt (never the value itself)."""

    source: str
    kind: str
    redacted: str


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


@dataclass(frozen=True)
class KnownIdentifiers:
    """Identifiers from the raw customer table, normalised for matching.

    Build it with :meth:`from_customers` in the data steward's role; it holds personal data,
    so it lives only in memory for the duration of a scan.
    """

    numbers: frozenset[str] = field(default_factory=frozenset)  # digits only, 10 and 12 long
    emails: frozenset[str] = field(default_factory=frozenset)
    phones: frozenset[str] = field(default_factory=frozenset)  # digits only, national form
    names: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # (first, last), lower

    @classmethod
    def from_customers(cls, customers: pl.DataFrame) -> KnownIdentifiers:
        """Collect personnummer, organisation numbers, e-mails, phones and full names."""
        numbers: set[str] = set()
        for col in ("personnummer", "org_number"):
            if col in customers.columns:
                for v in customers[col].drop_nulls().to_list():
                    d = _digits(v)
                    numbers.update({d, d[-10:]})
        emails = set()
        if "email" in customers.columns:
            emails = {e.lower() for e in customers["email"].drop_nulls().to_list()}
        phones = set()
        if "phone" in customers.columns:
            phones = {_national(_digits(p)) for p in customers["phone"].drop_nulls().to_list()}
        names = set()
        if {"first_name", "last_name"} <= set(customers.columns):
            pairs = customers.select("first_name", "last_name").drop_nulls().unique()
            for first, last in pairs.iter_rows():
                # a double first name ("Anna Maria") matches on its last word + surname
                names.add((first.split()[-1].lower(), last.split()[0].lower()))
        return cls(frozenset(numbers), frozenset(emails), frozenset(phones), frozenset(names))


def _national(digits: str) -> str:
    if digits.startswith("0046"):
        return "0" + digits[4:]
    if digits.startswith("46") and len(digits) >= 10:
        return "0" + digits[2:]
    return digits


def _shape_hits(text: str) -> Iterator[tuple[str, str]]:
    for m in _EMAIL.finditer(text):
        yield "e-mail address", m.group(0)
    for m in _PHONE.finditer(text):
        yield "phone number", m.group(0)
    for m in _PNR12.finditer(text):
        date, tail = m.group(1), m.group(2)
        if _valid_date(date) and luhn_valid(date[2:] + tail):
            yield "personnummer", m.group(0)
    for m in _NR10.finditer(text):
        first, sep, tail = m.groups()
        digits = first + tail
        if not luhn_valid(digits):
            continue
        if _valid_date(("19" if sep != "+" else "18") + first) or _valid_date("20" + first):
            # a bare run of ten digits is too common (ids, timestamps) to flag on shape
            # alone; the known-value detector covers those
            if sep:
                yield "personnummer", m.group(0)
        elif int(first[2]) >= 2 and sep:
            yield "organisation number", m.group(0)


def _known_hits(text: str, known: KnownIdentifiers) -> Iterator[tuple[str, str]]:
    if known.numbers:
        for m in re.finditer(r"(?<!\d)\d[\d -]{8,14}\d(?!\d)", text):
            d = _digits(m.group(0))
            if d in known.numbers:
                yield "known personnummer/organisation number", m.group(0)
    if known.emails:
        for m in _EMAIL.finditer(text):
            if m.group(0).lower() in known.emails:
                yield "known e-mail address", m.group(0)
    if known.phones:
        for m in re.finditer(r"(?<![\w.])\+?\d[\d -]{6,14}\d(?![\w.])", text):
            if _national(_digits(m.group(0))) in known.phones:
                yield "known phone number", m.group(0)
    if known.names:
        words = [w.lower() for w in _WORD.findall(text)]
        for first, last in zip(words, words[1:], strict=False):
            if (first, last) in known.names:
                yield "customer full name", f"{first} {last}"


def scan_text(text: str, source: str, known: KnownIdentifiers | None = None) -> list[PiiHit]:
    """Find personal data in ``text``.

    Examples
    --------
    >>> [h.kind for h in scan_text("contact: anna@example.se, 811218-9876", "x")]
    ['e-mail address', 'personnummer']
    >>> scan_text("total 1234567890 SEK, ratio 0.0701234567", "x")
    []
    """
    found = list(_shape_hits(text))
    if known is not None:
        found += list(_known_hits(text, known))
    seen: set[tuple[str, str]] = set()
    hits = []
    for kind, value in found:
        if (kind, value) not in seen:
            seen.add((kind, value))
            hits.append(PiiHit(source, kind, redact(value)))
    return hits


def _notebook_outputs(path: Path) -> str:
    """Only what a notebook shows: its outputs (text, HTML, errors), not its source."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    parts: list[str] = []
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            if "text" in out:
                parts.append("".join(out["text"]))
            for mime, data in out.get("data", {}).items():
                if mime.startswith("text/") or mime == "application/json":
                    parts.append(data if isinstance(data, str) else "".join(data))
            parts.extend(out.get("traceback", []))
    return "\n".join(parts)


def text_of_file(path: Path) -> str | None:
    """The scannable text of a file, or None for binary formats without text (images)."""
    suffix = path.suffix.lower()
    if suffix == ".ipynb":
        return _notebook_outputs(path)
    if suffix == ".parquet":
        df = pl.read_parquet(path)
        cols = [pl.col(c).cast(pl.Utf8) for c in df.columns]
        # cells are tab-separated: a space would join two numeric cells ("0", "1234567")
        # into one phone-number-shaped string
        header = "\t".join(df.columns)
        return (
            header
            + "\n"
            + "\n".join(
                "\t".join("" if v is None else v for v in row)
                for row in df.select(cols).iter_rows()
            )
        )
    if suffix in {".png", ".jpg", ".jpeg", ".gif", ".sqlite", ".db"}:
        return None
    return path.read_text(encoding="utf-8", errors="replace")


def scan_paths(
    paths: Iterable[Path], known: KnownIdentifiers | None = None
) -> tuple[list[PiiHit], list[str]]:
    """Scan every file under ``paths``; returns (hits, files scanned)."""
    hits: list[PiiHit] = []
    scanned: list[str] = []
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for f in files:
            text = text_of_file(f)
            if text is None:
                continue
            scanned.append(str(f))
            hits += scan_text(text, str(f), known)
    return hits, scanned
