"""Calendar-month arithmetic, in one place: every stage that counts months (retention
cutoffs, rolling budget periods, the monthly series, the generated history) uses these.

Examples
--------
>>> add_months(dt.date(2026, 3, 31), -1)
datetime.date(2026, 2, 28)
>>> next_month(dt.date(2026, 12, 1))
datetime.date(2027, 1, 1)
>>> months_between(dt.date(2025, 11, 1), dt.date(2026, 2, 1))
3
"""

from __future__ import annotations

import calendar
import datetime as dt

__all__ = ["add_months", "month_start", "months_between", "next_month"]


def add_months(day: dt.date, months: int) -> dt.date:
    """``day`` moved by ``months`` calendar months, clamped to the month's last day.

    Examples
    --------
    >>> add_months(dt.date(2026, 6, 30), -14)
    datetime.date(2025, 4, 30)
    """
    year, month = divmod(day.year * 12 + (day.month - 1) + months, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return dt.date(year, month + 1, min(day.day, last))


def month_start(day: dt.date) -> dt.date:
    """First day of the month of ``day``."""
    return day.replace(day=1)


def next_month(month: dt.date) -> dt.date:
    """First day of the month after the month of ``month``."""
    return add_months(month_start(month), 1)


def months_between(first: dt.date, end: dt.date) -> int:
    """Whole calendar months from ``first``'s month to ``end``'s month (``end`` later)."""
    return (end.year - first.year) * 12 + end.month - first.month
