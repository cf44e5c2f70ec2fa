"""The API boundary's one table type: pandas out, pandas or polars in.

Every public function or property that returns a table returns a pandas DataFrame (issue 17:
an analyst should not meet polars in one place and pandas in another); the work inside stays
in polars, in private ``_..._pl`` helpers that internal callers use. Public functions that
take tables accept either kind, so what one returns can be passed to the next.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import polars as pl

__all__ = ["as_polars", "to_pandas"]


def as_polars(frame: Any) -> Any:
    """``frame`` as polars: a pandas frame is converted (its index dropped), a polars
    DataFrame or LazyFrame passes through unchanged.

    Examples
    --------
    >>> as_polars(pd.DataFrame({"a": [1, 2]})).shape
    (2, 1)
    """
    if isinstance(frame, pd.DataFrame):
        return pl.from_pandas(frame.reset_index(drop=True))
    return frame


def to_pandas(frame: pl.DataFrame | pl.LazyFrame) -> pd.DataFrame:
    """A polars table as the pandas frame the public API returns (a LazyFrame is collected).

    Examples
    --------
    >>> to_pandas(pl.DataFrame({"a": [1]})).to_dict("list")
    {'a': [1]}
    """
    if isinstance(frame, pl.LazyFrame):
        frame = frame.collect()
    return frame.to_pandas()
