"""Privacy models for microdata: k-anonymity, distinct and entropy l-diversity.

:class:`PrivacyModel` is what the search must satisfy: every equivalence class (rows equal on
all quasi-identifiers) has at least ``k`` rows and, with a sensitive attribute, at least ``l``
distinct sensitive values (distinct l-diversity) or a sensitive-value entropy of at least
``log(l)`` (entropy l-diversity); classes that fail are suppressed, at most
``suppression_limit`` of the rows. All three criteria are monotone under full-domain
generalisation (merging classes never breaks them; the entropy of a mixture is at least the
smallest entropy mixed), which is what lets the search prune.

The ``*_of`` functions measure a finished table directly with polars, independently of the
search, so a released file can be checked from its contents alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import polars as pl

from segments._tables import as_polars, to_pandas
from segments.exceptions import KAnonymityError

__all__ = [
    "PrivacyModel",
    "class_sizes",
    "distinct_l_of",
    "entropy_l_of",
    "k_of",
]

Diversity = Literal["distinct", "entropy"]


@dataclass(frozen=True)
class PrivacyModel:
    """k-anonymity with optional l-diversity and a suppression limit.

    Parameters
    ----------
    k : int
        Smallest allowed class size (at least 1).
    suppression_limit : float
        Largest share of rows that may be suppressed, in [0, 1).
    l : int, optional
        Required diversity of the sensitive attribute (at least 2); needs ``sensitive``.
    sensitive : str, optional
        The sensitive column (released as is, never generalised).
    diversity : {'distinct', 'entropy'}
        Which l-diversity.

    Examples
    --------
    >>> PrivacyModel(k=5, suppression_limit=0.05).name
    '5-anonymity'
    >>> PrivacyModel(k=5, l=2, sensitive="spend_band", diversity="entropy").name
    '5-anonymity + entropy-2-diversity on spend_band'
    """

    k: int
    suppression_limit: float = 0.0
    l: int | None = None  # noqa: E741 (the l of l-diversity)
    sensitive: str | None = None
    diversity: Diversity = "distinct"

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int | np.integer) or self.k < 1:
            raise KAnonymityError(f"parameter 'k' must be an integer >= 1, got {self.k!r}")
        if not 0.0 <= float(self.suppression_limit) < 1.0:
            raise KAnonymityError(
                "parameter 'suppression_limit' must be a share in [0, 1), got "
                f"{self.suppression_limit!r}; 0.05 allows 5 % of rows to be suppressed"
            )
        if (self.l is None) != (self.sensitive is None):
            raise KAnonymityError(
                f"l-diversity needs both 'l' and 'sensitive' (got l={self.l!r}, "
                f"sensitive={self.sensitive!r}); give both or neither"
            )
        if self.l is not None and (not isinstance(self.l, int | np.integer) or self.l < 2):
            raise KAnonymityError(f"parameter 'l' must be an integer >= 2, got {self.l!r}")
        if self.diversity not in ("distinct", "entropy"):
            raise KAnonymityError(
                f"parameter 'diversity' must be 'distinct' or 'entropy', got {self.diversity!r}"
            )

    @property
    def name(self) -> str:
        """The model's name, e.g. ``10-anonymity + distinct-3-diversity on spend_band``."""
        text = f"{self.k}-anonymity"
        if self.l is not None:
            text += f" + {self.diversity}-{self.l}-diversity on {self.sensitive}"
        return text

    def max_suppressed(self, n_rows: int) -> int:
        """Rows that may be suppressed in a table of ``n_rows``."""
        return math.floor(self.suppression_limit * n_rows + 1e-9)

    def classes_ok(
        self, sizes: np.ndarray, distinct: np.ndarray | None, entropy: np.ndarray | None
    ) -> np.ndarray:
        """Which classes satisfy the model, from their sizes and sensitive-value statistics."""
        ok = sizes >= self.k
        if self.l is not None:
            if self.diversity == "distinct":
                assert distinct is not None
                ok &= distinct >= self.l
            else:
                assert entropy is not None
                ok &= entropy >= math.log(self.l) - 1e-12
        return ok

    def to_dict(self) -> dict[str, Any]:
        """The model's parameters as recorded on a certificate."""
        return {
            "model": self.name,
            "k": int(self.k),
            "suppression_limit": float(self.suppression_limit),
            "l": None if self.l is None else int(self.l),
            "sensitive": self.sensitive,
            "diversity": self.diversity if self.l is not None else None,
        }


def _check_columns(df: pl.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KAnonymityError(f"table has no column(s) {missing}; its columns are {df.columns}")


def class_sizes(df: Any, qis: Sequence[str]) -> pd.DataFrame:
    """Each equivalence class (distinct combination of ``qis``) with its size in ``n``."""
    return to_pandas(class_sizes_pl(as_polars(df), qis))


def class_sizes_pl(df: pl.DataFrame, qis: Sequence[str]) -> pl.DataFrame:
    """:func:`class_sizes` on a polars frame (for internal callers)."""
    _check_columns(df, qis)
    if not qis:
        return pl.DataFrame({"n": [df.height]})
    return df.group_by(list(qis)).len(name="n")


def k_of(df: Any, qis: Sequence[str]) -> int:
    """The k the table achieves: its smallest class size (0 for an empty table).

    Examples
    --------
    >>> import polars as pl
    >>> k_of(pl.DataFrame({"a": ["x", "x", "y"]}), ["a"])
    1
    """
    df = as_polars(df)
    if df.height == 0:
        return 0
    return int(class_sizes_pl(df, qis)["n"].min())  # type: ignore[arg-type]


def distinct_l_of(df: Any, qis: Sequence[str], sensitive: str) -> int:
    """The distinct l the table achieves: fewest distinct sensitive values in a class."""
    df = as_polars(df)
    _check_columns(df, [*qis, sensitive])
    if df.height == 0:
        return 0
    if not qis:
        return int(df[sensitive].n_unique())
    per = df.group_by(list(qis)).agg(pl.col(sensitive).n_unique().alias("d"))
    return int(per["d"].min())


def entropy_l_of(df: Any, qis: Sequence[str], sensitive: str) -> float:
    """The entropy l the table achieves: ``exp`` of the smallest sensitive-value entropy."""
    df = as_polars(df)
    _check_columns(df, [*qis, sensitive])
    if df.height == 0:
        return 0.0
    keys: list[str | pl.Expr] = [*qis] if qis else [pl.lit(0).alias("_all")]
    counts = df.group_by([*keys, sensitive]).len(name="n")
    group = list(qis) or ["_all"]
    ent = counts.group_by(group).agg(
        (-(pl.col("n") / pl.col("n").sum()) * (pl.col("n") / pl.col("n").sum()).log())
        .sum()
        .alias("h")
    )
    return float(math.exp(ent["h"].min()))
