"""Mondrian: local recoding by recursive median splits (LeFevre, DeWitt, Ramakrishnan 2006).

An alternative to full-domain generalisation: the table is split recursively, each time on
the quasi-identifier with the widest spread (in its hierarchy's leaf order, so siblings stay
adjacent), at the median, as long as both halves still satisfy the privacy model. Each final
partition then shows, per quasi-identifier, the lowest hierarchy value that covers all its
values. Partitions that end up with the same values form one released class, which only
makes classes larger, so k-anonymity and l-diversity (both closed under merging) still hold.
Nothing is suppressed; the whole table must satisfy the model to begin with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from segments._tables import as_polars, to_pandas
from segments.anonymity.hierarchies import Hierarchy
from segments.anonymity.models import PrivacyModel
from segments.exceptions import KAnonymityError

__all__ = ["mondrian"]


def _leaf_rank(h: Hierarchy) -> np.ndarray:
    """Rank of each original value when sorted by its path from the top of the hierarchy."""
    paths = [
        tuple(h.labels(lv)[h.codes(lv)[i]] for lv in range(h.height, -1, -1))
        for i in range(len(h.values))
    ]
    order = sorted(range(len(paths)), key=lambda i: paths[i])
    rank = np.empty(len(paths), dtype=np.int64)
    rank[order] = np.arange(len(paths))
    return rank


def _allowed(model: PrivacyModel, sensitive: np.ndarray | None, rows: np.ndarray) -> bool:
    if len(rows) < model.k:
        return False
    if model.l is None or sensitive is None:
        return True
    counts = np.bincount(sensitive[rows])
    counts = counts[counts > 0]
    if model.diversity == "distinct":
        return len(counts) >= model.l
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum()) >= math.log(model.l) - 1e-12


def mondrian(df: Any, hierarchies: Mapping[str, Hierarchy], model: PrivacyModel) -> pd.DataFrame:
    """Local recoding of ``df``'s quasi-identifiers so every class satisfies ``model``.

    Parameters
    ----------
    df : pandas or polars DataFrame
    hierarchies : mapping of column name to Hierarchy
        One per quasi-identifier.
    model : PrivacyModel
        Its suppression limit is ignored (Mondrian suppresses nothing).

    Returns
    -------
    pandas.DataFrame
        The quasi-identifiers (recoded, as text) and the sensitive column, in input order.

    Raises
    ------
    KAnonymityError
        If the whole table does not satisfy the model, or a value is missing from a hierarchy.

    Examples
    --------
    >>> import pandas as pd
    >>> from segments.anonymity.hierarchies import birth_year_hierarchy
    >>> df = pd.DataFrame({"birth_year": [1980, 1981, 1990, 1991]})
    >>> out = mondrian(df, {"birth_year": birth_year_hierarchy()}, PrivacyModel(k=2))
    >>> out["birth_year"].to_list()
    ['1980-1984', '1980-1984', '1990-1994', '1990-1994']
    """
    return to_pandas(_mondrian_pl(as_polars(df), hierarchies, model))


def _mondrian_pl(
    df: pl.DataFrame, hierarchies: Mapping[str, Hierarchy], model: PrivacyModel
) -> pl.DataFrame:
    """:func:`mondrian` on a polars frame."""
    qis = list(hierarchies)
    hs = [hierarchies[q] for q in qis]
    codes = [h.encode(df[q]) for q, h in zip(qis, hs, strict=True)]
    ranks = [_leaf_rank(h)[c] for h, c in zip(hs, codes, strict=True)]
    span = [max(len(h.values) - 1, 1) for h in hs]
    sensitive = None
    if model.sensitive:
        sensitive = (
            df[model.sensitive].cast(pl.Utf8).fill_null("<null>").rank("dense").to_numpy() - 1
        ).astype(np.int64)
    everyone = np.arange(df.height)
    if not _allowed(model, sensitive, everyone):
        raise KAnonymityError(
            f"the whole table ({df.height} rows) does not satisfy {model.name}, so no "
            "partition can; lower k or l, or add rows"
        )
    partitions = []
    stack = [everyone]
    while stack:
        rows = stack.pop()
        split = _split(rows, ranks, span, model, sensitive)
        if split is None:
            partitions.append(rows)
        else:
            stack.extend(split)
    out = {}
    for q, h, c in zip(qis, hs, codes, strict=True):
        labels = np.empty(df.height, dtype=object)
        for rows in partitions:
            labels[rows] = _cover(h, c[rows])
        out[q] = pl.Series(q, labels, dtype=pl.Utf8)
    frame = pl.DataFrame(out)
    if model.sensitive:
        frame = frame.with_columns(df[model.sensitive].cast(pl.Utf8))
    return frame


def _split(
    rows: np.ndarray,
    ranks: list[np.ndarray],
    span: list[int],
    model: PrivacyModel,
    sensitive: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray] | None:
    widths = [(r[rows].max() - r[rows].min()) / s for r, s in zip(ranks, span, strict=True)]
    for j in np.argsort(widths)[::-1]:
        if widths[j] == 0:
            return None
        values = ranks[j][rows]
        median = np.sort(values)[len(values) // 2]
        left = values < median
        if not left.any():
            left = values <= median
        if left.all():
            continue
        a, b = rows[left], rows[~left]
        if _allowed(model, sensitive, a) and _allowed(model, sensitive, b):
            return a, b
    return None


def _cover(h: Hierarchy, codes: np.ndarray) -> str:
    """The lowest hierarchy value that covers every original code given."""
    for level in range(h.height + 1):
        at = np.unique(h.codes(level)[codes])
        if len(at) == 1:
            return h.labels(level)[int(at[0])]
    return h.labels(h.height)[0] if len(h.labels(h.height)) == 1 else "*"
