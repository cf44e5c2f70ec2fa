"""Progress bars for the steps that take more than a couple of seconds.

One helper, :func:`progress`, wraps :class:`tqdm.tqdm`: a bar on standard error when it is a
terminal, nothing at all otherwise (logs, CI, notebooks, pipes stay clean). ``SEGMENTS_PROGRESS``
overrides the choice: ``1`` always shows bars, ``0`` never does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

__all__ = ["progress", "progress_enabled"]

T = TypeVar("T")


def progress_enabled() -> bool:
    """True when bars should be drawn: ``SEGMENTS_PROGRESS`` if set, else stderr is a TTY."""
    forced = os.environ.get("SEGMENTS_PROGRESS", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "step",
    leave: bool = False,
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual one of ``total`` steps), quiet off a terminal.

    Parameters
    ----------
    iterable : iterable, optional
        What to iterate over; omit it for a manual bar (call ``update``).
    total : int, optional
        Number of steps (taken from ``len(iterable)`` when it has one).
    desc, unit : str
        Label and unit shown on the bar.
    leave : bool
        Keep the finished bar on screen (default: erase it; the step prints its own result).

    Examples
    --------
    >>> for month in progress(["2026-01", "2026-02"], desc="backfill", unit="month"):
    ...     pass
    """
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        leave=leave,
        disable=not progress_enabled(),
        dynamic_ncols=True,
        **kwargs,
    )
