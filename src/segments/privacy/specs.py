"""Declarative, frozen specifications of differentially private releases.

A :class:`ReleaseSpec` says *what* is released (which queries, at which privacy loss and
confidence level); :class:`PrivacyParams` holds the public facts from the policy (mechanism
family, clipping bounds, contribution limits); a :class:`SegmentSource` says where segment
labels come from and what that allows a release to claim (see ``docs/architecture.md``,
"Segment labels and their provenance"). Execution lives in :mod:`segments.privacy.releases`.

Every query states how it bounds one person's influence (:data:`QUERIES`):

* ``per_person`` queries read one row per person (a per-person aggregate) — a person changes
  one row, so a count has sensitivity 1 and a sum clipped to ``[0, U]`` has sensitivity ``U``;
* ``per_cell`` queries (histograms and the monthly series) read at most
  ``max_cells_per_person`` rows per person, one per cell, each clipped per cell — L1
  sensitivity ``k · U``, L2 sensitivity ``sqrt(k) · U``;
* ``per_response`` queries (surveys) read anonymous responses: a person gives at most one
  response per account and month and holds at most :data:`SURVEY_ACCOUNTS_PER_PERSON`
  accounts, so over the release's public window of ``m`` months a person changes at most
  ``m x SURVEY_ACCOUNTS_PER_PERSON`` rows, possibly in one cell — the unit is the person.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from segments.exceptions import PolicyError
from segments.policy import CELL_BOUND_TABLES, Guarantee
from segments.privacy.composition import DP_FAMILIES, DPFamily
from segments.schema import PRODUCT_CATEGORIES

__all__ = [
    "Guarantee",
    "QUERIES",
    "SPECS",
    "SURVEY_ACCOUNTS_PER_PERSON",
    "PrivacyParams",
    "QueryDef",
    "ReleaseSpec",
    "SegmentSource",
    "get_spec",
]


#: Accounts one person may hold, each of which may be sampled for the survey in a month: a
#: private account and a sole trader's business account share the personnummer and are one
#: person (prepare's linkage). A public fact of the account model, not read from the data.
SURVEY_ACCOUNTS_PER_PERSON = 2

Provenance = Literal["category_rule", "private_model", "fitted_model"]
_PROVENANCES = ("category_rule", "private_model", "fitted_model")


@dataclass(frozen=True)
class PrivacyParams:
    """The public privacy parameters a release reads (the policy's ``privacy`` section).

    Parameters
    ----------
    dp_family : {'pure', 'zcdp'}
        Laplace noise and ε-DP, or Gaussian noise and ρ-zCDP.
    delta : float
        δ used to state a zCDP loss as (ε, δ); unused for pure DP.
    budget_epsilon : float
        Budget per period, charged by the ledger.
    budget_period_months, budget_window_months : int
        Budget period and the rolling window over which a population's losses are totalled.
    max_cells_per_person : int
        Cells one person may touch in a histogram or series release.
    spend_bound_sek : int
        Clipping bound of one person's total spend in a release.
    cell_spend_bound_sek, cell_units_bound : int
        Clipping bounds of one person's spend and units in one cell: the largest per-cell
        bound, and the bound of every category without its own.
    cell_spend_sek_by_category, cell_units_by_category : tuple of (str, int)
        Smaller per-category cell bounds (a chair is not bought by the hundred); each must
        divide the largest bound. Each category's cells are released on the largest bound's
        scale (value x largest / own bound), so its noise, once scaled back, is proportional
        to its own bound (:meth:`cell_weights`).
    survey_score_bounds : tuple of int
        Bounds of a survey score (AC-2).
    retention_months : int
        Months of data inside retention (AO-4: 14); a month older than this is not released.
    contribution_quantile : float
        Per-cell releases bound each person's whole vector of cells (units or SEK, weighted
        by :meth:`cell_weights`) to a norm (L1 for Laplace, L2 for Gaussian); where no public
        norm bound is given, the bound is this quantile of the per-person norms, chosen by
        OpenDP's private quantile (:mod:`segments.privacy.bounds`) and charged, times
        ``contribution_bound_factor`` (public). A middle quantile is found reliably at a
        small ε (the exponential mechanism's score gap is ``(1 - q) × people``); the factor
        carries it to the tail (measured: 2 × the 90th percentile of a month's units is
        near the 98th).
    contribution_bound_factor : float
        See ``contribution_quantile``.
    contribution_bound_share : float
        Share of such a query's loss spent on choosing its bounds privately.
    units_norm_bound, sek_norm_bound : int
        Public norm bounds of a person's weighted units / SEK vector in one release (a policy
        fact); 0 = choose privately per release.
    max_relative_error : float
        A mean is published only where its noisy count's relative half-width is at most
        this; the accuracy planner refuses a release whose typical cell is expected to be
        worse (:mod:`segments.privacy.planner`).
    categories : tuple of str
        The public product taxonomy cells are keyed by: the built-in one for synthetic data,
        the mapping's declared one for an ingested export (:meth:`with_domains`).
    geography_column : str or None
        The column geographic keys come from (``county_code``), or None when the data
        declares no geography (an ingested export without one).
    geography_values : tuple of str
        The public list of its codes (empty: the 21 Swedish counties).

    Examples
    --------
    >>> PrivacyParams().dp_family
    'pure'
    """

    dp_family: str = DPFamily.PURE.value
    delta: float = 1e-7
    budget_epsilon: float = 10.0
    budget_period_months: int = 12
    budget_window_months: int = 14
    max_cells_per_person: int = 4
    spend_bound_sek: int = 50_000
    cell_spend_bound_sek: int = 10_000
    cell_units_bound: int = 100
    cell_spend_sek_by_category: tuple[tuple[str, int], ...] = ()
    cell_units_by_category: tuple[tuple[str, int], ...] = ()
    survey_score_bounds: tuple[int, int] = (0, 10)
    retention_months: int = 14
    contribution_quantile: float = 0.9
    contribution_bound_factor: float = 2.0
    contribution_bound_share: float = 0.2
    units_norm_bound: int = 0
    sek_norm_bound: int = 0
    max_relative_error: float = 0.5
    categories: tuple[str, ...] = PRODUCT_CATEGORIES
    geography_column: str | None = "county_code"
    geography_values: tuple[str, ...] = ()

    def with_domains(self, domains: Any) -> PrivacyParams:
        """These parameters keyed by a workspace's public domains
        (:func:`segments.ingest.public_domains`): its taxonomy and geography."""
        return replace(
            self,
            categories=tuple(domains.categories),
            geography_column=domains.geography_column,
            geography_values=tuple(domains.geography_values),
        )

    def __post_init__(self) -> None:
        if self.dp_family not in DP_FAMILIES:
            raise PolicyError(
                f"privacy.dp_family={self.dp_family!r} is not a known mechanism family; "
                f"use one of {DP_FAMILIES}"
            )
        if not 0.0 <= self.delta < 1.0 or (self.dp_family == DPFamily.ZCDP and self.delta == 0.0):
            raise PolicyError(
                f"privacy.delta={self.delta!r} must lie in [0, 1), and in (0, 1) under zCDP "
                "(it states ρ as (ε, δ)); fix the policy's [privacy] section"
            )
        for name in (
            "max_cells_per_person",
            "spend_bound_sek",
            "cell_spend_bound_sek",
            "cell_units_bound",
            "retention_months",
            "budget_period_months",
            "budget_window_months",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise PolicyError(
                    f"privacy.{name}={value!r} must be a positive integer (a public bound); "
                    "fix the policy's [privacy] section"
                )
        for name in CELL_BOUND_TABLES:
            self._check_category_bounds(name)
        if not 0.5 <= self.contribution_quantile < 1.0:
            raise PolicyError(
                f"privacy.contribution_quantile={self.contribution_quantile!r} must lie in "
                "[0.5, 1), e.g. 0.9; fix the policy's [privacy] section"
            )
        if not 1.0 <= self.contribution_bound_factor <= 100.0:
            raise PolicyError(
                f"privacy.contribution_bound_factor={self.contribution_bound_factor!r} must "
                "lie in [1, 100], e.g. 2; fix the policy's [privacy] section"
            )
        if not 0.0 < self.contribution_bound_share < 1.0:
            raise PolicyError(
                f"privacy.contribution_bound_share={self.contribution_bound_share!r} must lie "
                "in (0, 1), e.g. 0.1; fix the policy's [privacy] section"
            )
        if not self.max_relative_error > 0:
            raise PolicyError(
                f"privacy.max_relative_error={self.max_relative_error!r} must be positive, "
                "e.g. 0.5; fix the policy's [privacy] section"
            )
        for name in ("units_norm_bound", "sek_norm_bound"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise PolicyError(
                    f"privacy.{name}={value!r} must be a non-negative integer (0: chosen "
                    "privately per release); fix the policy's [privacy] section"
                )
        low, high = self.survey_score_bounds
        if not low < high:
            raise PolicyError(
                f"privacy.survey_score_bounds={self.survey_score_bounds!r} must be (lower, "
                "upper) with lower < upper"
            )

    def _check_category_bounds(self, name: str) -> None:
        top = getattr(self, CELL_BOUND_TABLES[name])
        for category, bound in getattr(self, name):
            if category not in self.categories:
                raise PolicyError(
                    f"privacy.{name}: category {category!r} is not a product category; use "
                    f"one of {list(self.categories)}"
                )
            if not isinstance(bound, int) or bound < 1 or top % bound:
                raise PolicyError(
                    f"privacy.{name}.{category}={bound!r} must be a positive integer that "
                    f"divides privacy.{CELL_BOUND_TABLES[name]}={top} (cells are released on "
                    "that bound's scale); fix the policy's [privacy] section"
                )

    def cell_bounds(self, aggregate: str) -> dict[str, int]:
        """Per-cell clipping bound of ``aggregate`` (``"units"`` or ``"sek"``) per category.

        Examples
        --------
        >>> p = PrivacyParams(cell_units_by_category=(("furniture", 10),))
        >>> p.cell_bounds("units")["furniture"], p.cell_bounds("units")["paper"]
        (10, 100)
        """
        name = {"units": "cell_units_by_category", "sek": "cell_spend_sek_by_category"}[aggregate]
        top = getattr(self, CELL_BOUND_TABLES[name])
        own = dict(getattr(self, name))
        return {c: own.get(c, top) for c in self.categories}

    def cell_weights(self, aggregate: str) -> dict[str, int]:
        """Largest bound / category bound: the factor a category's cells are released at.

        Examples
        --------
        >>> PrivacyParams(cell_units_by_category=(("furniture", 10),)).cell_weights("units")[
        ...     "furniture"]
        10
        """
        bounds = self.cell_bounds(aggregate)
        top = max(bounds.values())
        return {c: top // b for c, b in bounds.items()}

    @classmethod
    def from_policy(cls, policy: Any, purpose: str | None = None) -> PrivacyParams:
        """Read the parameters from a ``segments.Policy`` (its ``privacy`` section).

        Parameters
        ----------
        policy : segments.Policy
        purpose : str, optional
            ``retention_months`` is the purpose's longest retention window (default 14).
        """
        privacy = getattr(policy, "privacy", policy)
        values: dict[str, Any] = {}
        purposes = getattr(policy, "purposes", {}) or {}
        if purpose is not None and purpose in purposes:
            window = getattr(purposes[purpose], "longest_window_months", None)
            window = window() if callable(window) else window
            if isinstance(window, int) and window > 0:
                values["retention_months"] = window
        for name in cls.__dataclass_fields__:
            if hasattr(privacy, name):
                values[name] = getattr(privacy, name)
        if "survey_score_bounds" in values:
            values["survey_score_bounds"] = tuple(int(v) for v in values["survey_score_bounds"])
        for name in (
            "max_cells_per_person",
            "spend_bound_sek",
            "cell_spend_bound_sek",
            "cell_units_bound",
            "units_norm_bound",
            "sek_norm_bound",
        ):
            if name in values and float(values[name]).is_integer():
                values[name] = int(values[name])
        for name in CELL_BOUND_TABLES:
            if name in values:
                values[name] = tuple(
                    (str(c), int(b) if float(b).is_integer() else b)
                    for c, b in sorted(dict(values[name]).items())
                )
        named = {c for name in CELL_BOUND_TABLES for c, _ in values.get(name, ())}
        if named and not named & set(PRODUCT_CATEGORIES):
            # bounds of a new business's own taxonomy only: checked against the workspace's
            # declared categories by with_domains before any release keys by them (a mix
            # with built-in names is a typo, refused here)
            values.setdefault("categories", tuple(sorted(named)))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QueryDef:
    """One query of a release: its frame, its grouping keys and its aggregates.

    Parameters
    ----------
    name : str
        Table name of the released query (``<name>.parquet``).
    frame : {'person', 'cells', 'survey'}
        Which shared aggregate it reads.
    by : tuple of str
        Public grouping keys.
    aggregates : tuple of str
        ``count`` or the column summed: ``spend_sek``, ``sek``, ``units``, ``score``.
    means : tuple of (str, str, str)
        Post-processed means: (output name, sum aggregate, count aggregate).
    influence : str
        How one person's influence is bounded, in words (goes in the card).
    active_only : bool
        Only people who bought in the window (positive spend) are counted.
    where : tuple of (str, tuple of str)
        Filters on public attributes of the person (column, allowed values): a row-level
        transformation inside the measurement, so one person still changes at most their
        own rows (:class:`segments.Session`).
    clip : tuple of (str, (int, int))
        Clipping bounds a caller gave for an aggregate (recorded in the card); the policy's
        bound is used for every aggregate not listed.
    key_values : tuple of (str, tuple of str)
        Public key lists the caller declared (the months of a window).
    """

    name: str
    frame: Literal["person", "cells", "survey"]
    by: tuple[str, ...]
    aggregates: tuple[str, ...]
    means: tuple[tuple[str, str, str], ...] = ()
    influence: str = ""
    active_only: bool = False
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()
    clip: tuple[tuple[str, tuple[int, int]], ...] = ()
    key_values: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def filter_expression(self) -> Any:
        """The ``where`` filters as one polars expression (None without filters): within a
        column any listed value, across columns all (OpenDP's polars plan takes ``==``/``|``,
        not ``is_in``)."""
        import functools
        import operator

        import polars as pl

        if not self.where:
            return None
        per_column = [
            functools.reduce(operator.or_, [pl.col(c) == v for v in values])
            for c, values in self.where
        ]
        return functools.reduce(operator.and_, per_column)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QueryDef:
        """The definition :meth:`to_dict` recorded (e.g. in a card, to re-plan it)."""
        return cls(
            str(data["name"]),
            data["frame"],
            tuple(data["by"]),
            tuple(data["aggregates"]),
            means=tuple(tuple(m) for m in data.get("means", ())),
            influence=str(data.get("influence", "")),
            active_only=bool(data.get("active_only", False)),
            where=tuple((c, tuple(v)) for c, v in (data.get("where") or {}).items()),
            clip=tuple((a, (int(b[0]), int(b[1]))) for a, b in (data.get("clip") or {}).items()),
            key_values=tuple((c, tuple(v)) for c, v in (data.get("key_values") or {}).items()),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able definition (recorded in the ledger and the card of an ad-hoc query)."""
        return {
            "name": self.name,
            "frame": self.frame,
            "by": list(self.by),
            "aggregates": list(self.aggregates),
            "means": [list(m) for m in self.means],
            "active_only": self.active_only,
            "where": {c: list(v) for c, v in self.where},
            "clip": {a: list(b) for a, b in self.clip},
            "key_values": {c: list(v) for c, v in self.key_values},
            "influence": self.influence,
        }


#: Every query a release may contain, by name.
QUERIES: dict[str, QueryDef] = {
    q.name: q
    for q in (
        QueryDef(
            "customers_by_county",
            "person",
            ("county_code",),
            ("count",),
            influence="one row per person (per-person aggregate): a person changes one count by 1",
        ),
        QueryDef(
            "customers_by_county_segment",
            "person",
            ("county_code", "segment"),
            ("count",),
            influence="one row per person (per-person aggregate): a person changes one count by 1",
        ),
        QueryDef(
            "spend_by_segment",
            "person",
            ("segment",),
            ("count", "spend_sek"),
            means=(("mean_spend_sek", "spend_sek", "count"),),
            influence="one row per person; total spend in the window clipped to "
            "[0, spend_bound_sek]",
        ),
        QueryDef(
            "spend_by_county_segment",
            "person",
            ("county_code", "segment"),
            ("count", "spend_sek"),
            means=(("mean_spend_sek", "spend_sek", "count"),),
            influence="one row per person; total spend in the window clipped to "
            "[0, spend_bound_sek]",
        ),
        QueryDef(
            "category_by_segment",
            "cells",
            ("segment", "category"),
            ("sek", "units"),
            influence="per person at most max_cells_per_person categories (largest spend "
            "first), one row per cell, spend and units clipped per cell to their category's "
            "bound (cell_spend_sek_by_category, cell_units_by_category; at most "
            "cell_spend_bound_sek and cell_units_bound)",
        ),
        QueryDef(
            "monthly_category",
            "cells",
            ("category",),
            ("units", "sek"),
            influence="per person at most max_cells_per_person categories in the month "
            "(largest spend first), one row per cell, units and spend clipped per cell to "
            "their category's bound (cell_units_by_category, cell_spend_sek_by_category; at "
            "most cell_units_bound and cell_spend_bound_sek)",
        ),
        QueryDef(
            "customers_by_type",
            "person",
            ("customer_type",),
            ("count", "spend_sek"),
            means=(("mean_spend_sek", "spend_sek", "count"),),
            influence="one row per person; total spend in the window clipped to "
            "[0, spend_bound_sek] (the accuracy planner's scale probe)",
        ),
        QueryDef(
            "buyers_by_type",
            "person",
            ("customer_type",),
            ("count",),
            influence="one row per person, counted if they bought in the window (the accuracy "
            "planner's scale probe of a month)",
            active_only=True,
        ),
        QueryDef(
            "survey_by_county_type",
            "survey",
            ("county_code", "customer_type"),
            ("count", "score"),
            means=(("mean_score", "score", "count"),),
            influence="one row per survey response; responses carry no customer id, so one "
            "person's influence is bounded by the survey's public design: at most one response "
            "per account and month, at most SURVEY_ACCOUNTS_PER_PERSON accounts per person (a "
            "sole trader's accounts are one person), over the release's public window of "
            "months (one month, or the retention window); score clipped to survey_score_bounds",
        ),
    )
}


@dataclass(frozen=True)
class SegmentSource:
    """Where segment labels come from, and what that allows a release to claim.

    Provenance is derived, never declared: the category rule is computed inside the release
    from each person's own purchases; private-model labels are computed inside the release
    from DP centroids whose ledger entry was found and hash-checked
    (:meth:`private_model`); labels a caller passes in (:meth:`from_labels`) are only "DP
    given a non-private segmentation" and go to internal recipients only.

    Parameters
    ----------
    provenance : {'category_rule', 'private_model', 'fitted_model'}
    keys : tuple of str
        The public list of segment labels (for the category rule: the product categories).
    labels_path : Path, optional
        Parquet with ``person_id`` and ``segment`` (``fitted_model`` only).
    model : PrivateModelRef, optional
        The verified DP k-means entry (``private_model`` only).

    Examples
    --------
    >>> SegmentSource.category_rule().guarantee
    'end-to-end ε-DP'
    """

    provenance: str
    keys: tuple[str, ...]
    labels_path: Path | None = None
    model: Any = None

    def __post_init__(self) -> None:
        if self.provenance not in _PROVENANCES:
            raise PolicyError(
                f"segment source provenance={self.provenance!r} is unknown; use one of "
                f"{_PROVENANCES}"
            )
        if not self.keys:
            raise PolicyError("segment source has no segment keys; pass the public label list")
        if self.provenance == "fitted_model" and self.labels_path is None:
            raise PolicyError(
                "segment source with provenance 'fitted_model' needs labels_path "
                "(a parquet with person_id, segment)"
            )
        from segments.privacy.kmeans import PrivateModelRef

        if self.provenance == "private_model" and (
            not isinstance(self.model, PrivateModelRef) or self.labels_path is not None
        ):
            raise PolicyError(
                "provenance 'private_model' cannot be declared: it is derived from a DP "
                "k-means entry of the ledger (SegmentSource.private_model(workspace, ledger)); "
                "labels passed in are 'DP given a non-private segmentation' (fitted_model)"
            )
        if self.provenance == "category_rule" and (self.labels_path or self.model):
            raise PolicyError(
                "the category rule is computed inside the release; it takes no labels file"
            )

    @classmethod
    def category_rule(cls, categories: tuple[str, ...] | None = None) -> SegmentSource:
        """The category rule: segment = the category with the largest spend (computed inside
        the release from the person's own purchases); the keys are the public taxonomy
        (default :data:`segments.schema.PRODUCT_CATEGORIES`)."""
        from segments.schema import PRODUCT_CATEGORIES

        return cls("category_rule", tuple(categories or PRODUCT_CATEGORIES))

    @classmethod
    def private_model(cls, workspace: Any, ledger: Any) -> SegmentSource:
        """Private segments of ``workspace``, resting on their DP k-means entry in ``ledger``.

        Raises
        ------
        ReleaseRefusedError
            Unless ``ledger`` holds the published DP k-means entry named beside the centroids
            and the centroids' SHA-256 matches it.
        """
        from segments.privacy.kmeans import private_model_ref

        ref = private_model_ref(workspace, ledger)
        return cls("private_model", ref.keys, model=ref)

    @classmethod
    def from_labels(
        cls,
        labels_path: str | os.PathLike[str],
        provenance: str = "fitted_model",
        keys: tuple[str, ...] | list[str] = (),
    ) -> SegmentSource:
        """Labels from a file (``person_id``, ``segment``) with their public key list.

        Labels a caller passes in are "DP given a non-private segmentation" whatever their
        origin: ``provenance`` may only be ``'fitted_model'``.

        Raises
        ------
        PolicyError
            For any other provenance (it would be declared, not derived).
        """
        if provenance != "fitted_model":
            raise PolicyError(
                f"provenance {provenance!r} cannot be declared for labels passed in; they are "
                "'DP given a non-private segmentation' (fitted_model); for private segments "
                "use SegmentSource.private_model(workspace, ledger), for the category rule "
                "SegmentSource.category_rule()"
            )
        return cls(provenance, tuple(str(k) for k in keys), Path(labels_path))

    @classmethod
    def from_workspace(
        cls, workspace: Any, which: str, private_k: int | None = None, ledger: Any = None
    ) -> SegmentSource:
        """The segment source of a workspace by name.

        Parameters
        ----------
        workspace : Workspace
        which : {'category_rule', 'fitted', 'private'}
            ``fitted``: ``W/segments/labels.parquet`` (an exploratory model fitted on the
            private data: "DP given a non-private segmentation"); ``private``: the DP k-means
            of ``W/segments/private/``, verified against ``ledger``.
        private_k : int, optional
            Unused (kept for callers); the private model's keys come from its ledger entry.
        ledger : Ledger
            Needed for ``private``: the ledger the release will be charged to.
        """
        import json

        if which == "category_rule":
            from segments.ingest import public_domains

            return cls.category_rule(public_domains(workspace).categories)
        if which not in ("fitted", "private"):
            raise PolicyError(
                f"--segments {which!r} is unknown; use category_rule, fitted or private"
            )
        if which == "private":
            if ledger is None:
                raise PolicyError(
                    "--segments private needs the ledger the release is charged to (its DP "
                    "k-means entry is checked there)"
                )
            return cls.private_model(workspace, ledger)
        labels = workspace.labels
        if not labels.exists():
            raise PolicyError(
                f"segment labels {labels} do not exist; run the segmentation first or use "
                "--segments category_rule"
            )
        meta_path = workspace.segment_metadata
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
        keys = meta.get("segments") or meta.get("labels")
        if not keys:
            # A fitted model is already "DP given a non-private segmentation": its label
            # list may come from the labels themselves.
            import polars as pl

            keys = sorted(
                pl.read_parquet(labels, columns=["segment"])["segment"].cast(pl.Utf8).unique()
            )
        return cls.from_labels(labels, "fitted_model", [str(k) for k in keys])

    @property
    def guarantee(self) -> str:
        """The guarantee a release keyed by these segments may claim."""
        if self.provenance == "fitted_model":
            return Guarantee.GIVEN_SEGMENTATION
        return Guarantee.END_TO_END

    def to_dict(self) -> dict[str, Any]:
        return {
            "provenance": self.provenance,
            "keys": list(self.keys),
            "labels_path": None if self.labels_path is None else str(self.labels_path),
            "guarantee": self.guarantee,
            "rests_on": None if self.model is None else self.model.to_dict(),
        }


@dataclass(frozen=True)
class ReleaseSpec:
    """What one release publishes.

    Parameters
    ----------
    name : str
    queries : tuple of str
        Names from :data:`QUERIES`.
    epsilon : float
        The privacy loss of the whole release, as ε. Under zCDP it is turned into the
        largest ρ whose (ε, δ) statement at the policy's δ is at most ``epsilon``.
    weights : tuple of float, optional
        Share of the loss per query (default: equal). Inside a query the aggregates share
        its loss equally.
    population : str
        Whose budget is charged (the ledger's population).
    clause_ids : tuple of str
        Policy clauses that allow the release; empty (the default) means the policy's own
        (:meth:`segments.Policy.release_clause_ids` of the release's purpose), so a card never
        cites another controller's promise.
    description : str
    definitions : tuple of QueryDef, optional
        Ad-hoc queries (a :class:`segments.Session`'s), one per name in ``queries``; default:
        the named queries of :data:`QUERIES`.

    Examples
    --------
    >>> ReleaseSpec("x", ("spend_by_segment",), epsilon=1.0).query_epsilons()
    (1.0,)
    """

    name: str
    queries: tuple[str, ...]
    epsilon: float
    weights: tuple[float, ...] | None = None
    population: str = "customers"
    clause_ids: tuple[str, ...] = ()
    description: str = ""
    definitions: tuple[QueryDef, ...] = field(default=(), repr=False)
    _defs: tuple[QueryDef, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.queries:
            raise PolicyError(f"release spec {self.name!r} has no queries; name at least one")
        if self.definitions:
            names = tuple(d.name for d in self.definitions)
            if names != tuple(self.queries) or len(set(names)) != len(names):
                raise PolicyError(
                    f"release spec {self.name!r}: definitions {list(names)} must give one "
                    f"query per name in queries={list(self.queries)}, each name once"
                )
        unknown = [q for q in self.queries if q not in QUERIES and not self.definitions]
        if unknown:
            raise PolicyError(
                f"release spec {self.name!r}: unknown queries {unknown}; known queries are "
                f"{sorted(QUERIES)}"
            )
        if not (isinstance(self.epsilon, int | float) and math.isfinite(self.epsilon)) or (
            self.epsilon <= 0
        ):
            raise PolicyError(
                f"release spec {self.name!r}: epsilon={self.epsilon!r} must be a positive "
                "finite number"
            )
        if self.weights is not None and (
            len(self.weights) != len(self.queries) or any(w <= 0 for w in self.weights)
        ):
            raise PolicyError(
                f"release spec {self.name!r}: weights={self.weights!r} must give one "
                f"positive weight per query ({len(self.queries)})"
            )
        defs = self.definitions or tuple(QUERIES[q] for q in self.queries)
        object.__setattr__(self, "_defs", defs)

    @property
    def query_defs(self) -> tuple[QueryDef, ...]:
        return self._defs

    @property
    def needs_segments(self) -> bool:
        return any("segment" in (*q.by, *(c for c, _ in q.where)) for q in self._defs)

    def query_epsilons(self) -> tuple[float, ...]:
        """ε of each query (the release's ε split by the weights)."""
        weights = self.weights or (1.0,) * len(self.queries)
        total = math.fsum(weights)
        return tuple(self.epsilon * w / total for w in weights)

    def with_epsilon(self, epsilon: float) -> ReleaseSpec:
        """The same spec at another privacy loss (for privacy-utility curves)."""
        return ReleaseSpec(
            self.name,
            self.queries,
            epsilon,
            self.weights,
            self.population,
            self.clause_ids,
            self.description,
            self.definitions,
        )

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "queries": list(self.queries),
            "epsilon": self.epsilon,
            "weights": None if self.weights is None else list(self.weights),
            "population": self.population,
            "clause_ids": list(self.clause_ids),
            "description": self.description,
        }
        if self.definitions:
            out["definitions"] = [d.to_dict() for d in self.definitions]
        return out


#: Named specifications, selectable with ``segments release --spec NAME``.
SPECS: dict[str, ReleaseSpec] = {
    s.name: s
    for s in (
        ReleaseSpec(
            "segment_overview",
            (
                "customers_by_county",
                "customers_by_county_segment",
                "spend_by_segment",
                "spend_by_county_segment",
            ),
            epsilon=1.0,
            weights=(1.0, 2.0, 1.0, 1.0),
            description="customers per county and per county × segment; total and mean spend "
            "per segment and per county × segment",
        ),
        ReleaseSpec(
            "month_closing",
            (
                "customers_by_county_segment",
                "spend_by_segment",
                "spend_by_county_segment",
                "category_by_segment",
            ),
            epsilon=1.5,
            weights=(2.0, 1.0, 1.0, 2.0),
            description="the segment releases of a month-closing from one shared per-person "
            "aggregate: customers per county × segment, spend per segment and county × "
            "segment, spend and units per category per segment",
        ),
        ReleaseSpec(
            "spend_by_segment",
            ("spend_by_segment",),
            epsilon=0.5,
            description="total and mean spend per segment",
        ),
        ReleaseSpec(
            "customers_by_county_segment",
            ("customers_by_county_segment",),
            epsilon=1.0,
            description="customers per county × segment",
        ),
        ReleaseSpec(
            "category_mix",
            ("category_by_segment",),
            epsilon=0.5,
            description="spend and units per product category per segment",
        ),
        ReleaseSpec(
            "monthly_category",
            ("monthly_category",),
            epsilon=0.25,
            description="units and SEK per product category for one closed month (the "
            "purchasing series; see segments.privacy.archive)",
        ),
        ReleaseSpec(
            "scale_probe",
            ("customers_by_type",),
            epsilon=0.02,
            description="customers and their total spend per customer type: the typical cell "
            "sizes the accuracy planner needs (segments.privacy.planner)",
        ),
        ReleaseSpec(
            "scale_probe_month",
            ("buyers_by_type",),
            epsilon=0.02,
            description="people who bought in one closed month, per customer type: the typical "
            "monthly cell size the accuracy planner needs",
        ),
        ReleaseSpec(
            "survey_experience",
            ("survey_by_county_type",),
            epsilon=0.5,
            description="mean survey score per county and customer type; the unit is the "
            "person (all responses one person can give in the release's months)",
        ),
    )
}


def get_spec(name: str) -> ReleaseSpec:
    """The named specification from :data:`SPECS`; raises with the known names."""
    try:
        return SPECS[name]
    except KeyError:
        raise PolicyError(
            f"--spec {name!r} is not a known release specification; choose one of {sorted(SPECS)}"
        ) from None
