"""Swedish identity numbers: Luhn check digits, organisation numbers and test personnummer.

Personnummer (``YYYYMMDDNNNC``) are drawn only from Skatteverket's list of test numbers
shipped in ``segments/reference/sweden_test_personnummer.csv``, so no generated number can
belong to a real person. The check digit ``C`` is the Luhn digit of the ten digits
``YYMMDDNNN``; the 11th digit (``N`` before ``C``) is odd for men and even for women.

Organisation numbers of legal persons are ten digits ``GNXXXXXXXC``: the first digit gives the
legal form (2 public sector, 5 aktiebolag, 7 economic association, 9 partnership), the third
digit is at least 2 (so it can never be read as a birth month), and ``C`` is the Luhn digit
of the first nine. A sole trader's organisation number is the owner's personnummer without
the century (AO-3).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
import polars as pl

from segments.geography import reference_path

__all__ = [
    "LEGAL_FORM_DIGIT",
    "is_valid_org_number",
    "is_valid_personnummer",
    "luhn_check_digit",
    "luhn_check_digits",
    "org_numbers",
    "skatteverket_test_numbers",
]

#: First digit of an organisation number by legal form (Bolagsverket's numbering).
LEGAL_FORM_DIGIT = {
    "public_sector": 2,
    "aktiebolag": 5,
    "economic_association": 7,
    "partnership": 9,
}

_LUHN_DOUBLE = np.array([0, 2, 4, 6, 8, 1, 3, 5, 7, 9], dtype=np.int64)


def luhn_check_digit(digits: str) -> int:
    """Luhn check digit for a string of digits (the digit to append).

    Examples
    --------
    >>> luhn_check_digit("811218987")
    6
    """
    return int(luhn_check_digits(np.array([[int(d) for d in digits]]))[0])


def luhn_check_digits(digits: np.ndarray) -> np.ndarray:
    """Vectorised Luhn check digits for a 2-D array of digits (one number per row).

    The rightmost digit of each row is doubled first, as when the check digit is appended.
    """
    digits = np.asarray(digits, dtype=np.int64)
    n = digits.shape[1]
    doubled = (np.arange(n) % 2) == ((n - 1) % 2)  # rightmost position is doubled
    total = np.where(doubled, _LUHN_DOUBLE[digits], digits).sum(axis=1)
    return (10 - total % 10) % 10


def _luhn_of_number(prefix: np.ndarray, n_digits: int) -> np.ndarray:
    """Luhn check digits of integers with ``n_digits`` digits, without building digit arrays."""
    total = np.zeros(len(prefix), dtype=np.int64)
    rest = prefix.copy()
    for position in range(n_digits):  # position 0 is the rightmost digit: doubled
        digit = rest % 10
        rest //= 10
        total += _LUHN_DOUBLE[digit] if position % 2 == 0 else digit
    return (10 - total % 10) % 10


def _luhn_valid(numbers: pl.Series) -> pl.Series:
    digits = np.frombuffer("".join(numbers.to_list()).encode(), dtype=np.uint8) - ord("0")
    digits = digits.reshape(len(numbers), 10).astype(np.int64)
    ok = luhn_check_digits(digits[:, :9]) == digits[:, 9]
    return pl.Series(numbers.name, ok)


def is_valid_personnummer(numbers: pl.Series) -> pl.Series:
    """True where a 12-digit personnummer has a valid date and check digit.

    Examples
    --------
    >>> is_valid_personnummer(pl.Series(["189001019802", "189001019803"])).to_list()
    [True, False]
    """

    def dated_and_luhn(good: pl.Series) -> pl.Series:
        dated = good.str.slice(0, 8).str.to_date("%Y%m%d", strict=False).is_not_null()
        return dated & _luhn_valid(good.str.slice(2, 10))

    return _valid_where_shaped(numbers, 12, dated_and_luhn)


def is_valid_org_number(numbers: pl.Series) -> pl.Series:
    """True where a 10-digit organisation number has a valid Luhn check digit.

    A legal person's number also needs its third digit to be at least 2; a sole trader's
    number (a personnummer without century) is valid when its date is.

    Examples
    --------
    >>> is_valid_org_number(pl.Series(["5560360793", "5560360794"])).to_list()
    [True, False]
    """
    return _valid_where_shaped(numbers, 10, _luhn_valid)


def _valid_where_shaped(
    numbers: pl.Series, n_digits: int, valid: Callable[[pl.Series], pl.Series]
) -> pl.Series:
    """``valid`` on the numbers of exactly ``n_digits`` digits; False for any other shape or
    a null (``valid`` sees only well-shaped numbers, so it may slice and parse freely)."""
    numbers = numbers.cast(pl.Utf8)
    shaped = numbers.str.contains(rf"^\d{{{n_digits}}}$").fill_null(False)
    out = np.zeros(len(numbers), dtype=bool)
    good = numbers.filter(shaped)
    if len(good):
        out[np.flatnonzero(shaped.to_numpy())] = valid(good).to_numpy()
    return pl.Series(numbers.name, out)


def org_numbers(
    legal_form_digit: np.ndarray, rng: np.random.Generator, *, taken: np.ndarray | None = None
) -> np.ndarray:
    """Draw distinct organisation numbers of legal persons, one per entry of ``legal_form_digit``.

    Parameters
    ----------
    legal_form_digit : ndarray of int
        First digit of each number (see :data:`LEGAL_FORM_DIGIT`).
    rng : numpy.random.Generator
    taken : ndarray of int64, optional
        Numbers that must not be drawn (for example sole traders' numbers).

    Returns
    -------
    ndarray of int64
        Ten-digit numbers (first digit >= 2, so no leading zero is lost) with a Luhn check
        digit and third digit >= 2, all distinct.

    Examples
    --------
    >>> numbers = org_numbers(np.array([5, 2]), np.random.default_rng(0))
    >>> [str(n)[0] for n in numbers], is_valid_org_number(pl.Series(numbers.astype(str))).all()
    (['5', '2'], True)
    """
    legal_form_digit = np.asarray(legal_form_digit, dtype=np.int64)
    n = len(legal_form_digit)
    out = np.zeros(n, dtype=np.int64)
    taken_set = np.asarray(taken if taken is not None else [], dtype=np.int64)
    todo = np.arange(n)
    while len(todo):
        m = len(todo)
        prefix = (
            legal_form_digit[todo] * 10**8
            + rng.integers(0, 10, m) * 10**7
            + rng.integers(2, 10, m) * 10**6
            + rng.integers(0, 10**6, m)
        )
        out[todo] = prefix * 10 + _luhn_of_number(prefix, 9)
        # keep the first occurrence of every number; redraw later duplicates and taken ones
        _, first = np.unique(out, return_index=True)
        keep = np.zeros(n, dtype=bool)
        keep[first] = True
        keep &= ~np.isin(out, taken_set)
        todo = np.flatnonzero(~keep)
    return out


@cache
def skatteverket_test_numbers() -> pl.DataFrame:
    """Skatteverket's test personnummer with birth date, birth year and gender.

    Returns
    -------
    polars.DataFrame
        ``personnummer`` (str), ``birth_date`` (Date), ``birth_year`` (Int16),
        ``gender`` ('M' if the 11th digit is odd, else 'F'), in file order.
    """
    df = pl.read_csv(reference_path("sweden_test_personnummer.csv"), infer_schema=False)
    return df.select(
        "personnummer",
        pl.col("personnummer").str.slice(0, 8).str.to_date("%Y%m%d").alias("birth_date"),
        pl.col("personnummer").str.slice(0, 4).cast(pl.Int16).alias("birth_year"),
        pl.when(pl.col("personnummer").str.slice(10, 1).cast(pl.Int8) % 2 == 1)
        .then(pl.lit("M"))
        .otherwise(pl.lit("F"))
        .alias("gender"),
    )
