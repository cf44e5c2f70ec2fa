"""Vocabularies for names, streets, companies, e-mail and phone numbers, built once.

Names come from the constant lists of Faker's ``sv_SE`` providers (read, never sampled, so
the vocabularies do not depend on Faker's random state). Contact details are built so that
none can reach a real person: e-mail domains are subdomains of the reserved
``example.com/.net/.org`` (RFC 2606), and phone numbers come from the series that the Swedish
Post and Telecom Authority (PTS) reserves for fictional use.
"""

from __future__ import annotations

from functools import cache

from faker.providers.address.sv_SE import Provider as _Address
from faker.providers.person.sv_SE import Provider as _Person

__all__ = [
    "COMPANY_SUFFIXES",
    "EMAIL_DOMAINS",
    "FICTIONAL_PHONE_SERIES",
    "PUBLIC_UNITS",
    "STREET_ROOTS",
    "ascii_slug",
    "phone_numbers",
    "first_names",
    "last_names",
    "street_names",
]

#: Common roots of Swedish street names, besides Faker's.
STREET_ROOTS = (
    "Drottning",
    "Kungs",
    "Sjö",
    "Berg",
    "Tall",
    "Lind",
    "Hamn",
    "Mölle",
    "Smed",
    "Väster",
    "Öster",
    "Norr",
    "Söder",
    "Sol",
    "Bruks",
    "Hantverkar",
    "Linné",
    "Prästgårds",
    "Skepps",
    "Vall",
    "Bro",
    "Ström",
    "Mejeri",
    "Post",
    "Slotts",
    "Rådhus",
    "Lärk",
    "Syren",
    "Hassel",
    "Rönn",
    "Al",
    "Lönn",
    "Klöver",
    "Lingon",
    "Hag",
    "Dal",
    "Kärr",
    "Mosse",
    "Torp",
    "Gårds",
    "Skräddar",
    "Bagar",
)
#: Reserved example domains (RFC 2606) for private customers' e-mail addresses.
EMAIL_DOMAINS = (
    "example.com",
    "example.net",
    "example.org",
    "mail.example.com",
    "post.example.net",
)
#: Endings of company names (AB dominates among legal persons).
COMPANY_SUFFIXES = (
    "AB",
    "AB",
    "AB",
    "Konsult AB",
    "& Co AB",
    "Handel AB",
    "Service AB",
    "Gruppen AB",
    "HB",
    "i Sverige AB",
)
#: Public-sector units (for school and public-sector customers).
PUBLIC_UNITS = (
    "kommun",
    "skola",
    "grundskola",
    "gymnasium",
    "förskola",
    "vårdcentral",
    "bibliotek",
    "region, kansli",
    "socialtjänst",
    "räddningstjänst",
)
#: PTS's number series reserved for fictional use: (area code, first, last subscriber number).
FICTIONAL_PHONE_SERIES = (
    ("070", 1740605, 1740699),
    ("08", 46500400, 46500499),
    ("031", 3900600, 3900699),
    ("040", 6280400, 6280499),
    ("0980", 319200, 319299),
)

_ASCII = str.maketrans(
    {
        "å": "a",
        "ä": "a",
        "ö": "o",
        "é": "e",
        "ü": "u",
        "Å": "a",
        "Ä": "a",
        "Ö": "o",
        "É": "e",
        "Ü": "u",
    }
)


def ascii_slug(text: str) -> str:
    """Lower-case ASCII slug for e-mail addresses.

    Examples
    --------
    >>> ascii_slug("Åsa-Britt Öberg & Co")
    'asa-britt.oberg.co'
    """
    lowered = text.translate(_ASCII).lower()
    kept = "".join(ch if ch.isalnum() or ch == "-" else " " for ch in lowered)
    return ".".join(kept.split())


@cache
def first_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(female, male) Swedish first names from Faker's sv_SE provider, sorted."""
    return tuple(sorted(_Person.first_names_female)), tuple(sorted(_Person.first_names_male))


@cache
def last_names() -> tuple[str, ...]:
    """Swedish last names from Faker's sv_SE provider, sorted."""
    return tuple(sorted(_Person.last_names))


@cache
def street_names() -> tuple[str, ...]:
    """Street names: every street root (Faker sv_SE prefixes and ours) with every suffix."""
    prefixes = sorted(set(_Address.street_prefixes) | set(STREET_ROOTS))
    suffixes = sorted(set(_Address.street_suffixes))
    names = {p + s for p in prefixes for s in suffixes}
    return tuple(sorted(names))


@cache
def phone_numbers() -> tuple[str, ...]:
    """Every number of PTS's series reserved for fictional use (about 500)."""
    return tuple(
        f"{area}-{number}"
        for area, first, last in FICTIONAL_PHONE_SERIES
        for number in range(first, last + 1)
    )
