"""Declarative, frozen specifications of differentially private releases.

A :class:`ReleaseSpec` says *what* is released (which queries, at which privacy loss and
confidence level); :class:`~segments.policy.PrivacyParameters` (``PrivacyParams``) holds the
public facts from the policy (mechanism family, clipping bounds, contribution limits); a
:class:`SegmentSource` says where segment labels come from and what that allows a release
to claim (see ``docs/architecture.md``, "Segment labels and their provenance"). Execution
lives in :mod:`segments.privacy.releases`.

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from segments.exceptions import PolicyError
from segments.policy import Guarantee, PrivacyParameters
from segments.schema import PRODUCT_CATEGORIES

if TYPE_CHECKING:
    from segments.privacy.ledger import Ledger
    from segments.workspace import Workspace


__all__ = [
    "Guarantee",
    "QUERIES",
    "SERIES_QUERIES",
    "SPECS",
    "SURVEY_ACCOUNTS_PER_PERSON",
    "PrivacyParams",
    "QueryDef",
    "ReleaseSpec",
    "SegmentNames",
    "SegmentSource",
    "get_spec",
]


#: Accounts one person may hold, each of which may be sampled for the survey in a month: a
#: private account and a sole trader's business account share the personnummer and are one
#: person (prepare's linkage). A public fact of the account model, not read from the data.
SURVEY_ACCOUNTS_PER_PERSON = 2

Provenance = Literal["category_rule", "private_model", "fitted_model"]
_PROVENANCES = ("category_rule", "private_model", "fitted_model")


#: The public parameters a release reads: the policy's own dataclass (one owner of the fields,
#: their defaults and their checks), by the name the release code has always used.
PrivacyParams = PrivacyParameters


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


# What the person-level queries share: how much one person can change them, and the mean
# spend they publish (post-processed from the noisy spend and count).
_ONE_COUNT_PER_PERSON = "one row per person (per-person aggregate): a person changes one count by 1"
_CLIPPED_SPEND_PER_PERSON = (
    "one row per person; total spend in the window clipped to [0, spend_bound_sek]"
)
_MEAN_SPEND = (("mean_spend_sek", "spend_sek", "count"),)

#: Every query a release may contain, by name.
QUERIES: dict[str, QueryDef] = {
    q.name: q
    for q in (
        QueryDef(
            "customers_by_county",
            "person",
            ("county_code",),
            ("count",),
            influence=_ONE_COUNT_PER_PERSON,
        ),
        QueryDef(
            "customers_by_county_segment",
            "person",
            ("county_code", "segment"),
            ("count",),
            influence=_ONE_COUNT_PER_PERSON,
        ),
        QueryDef(
            "spend_by_segment",
            "person",
            ("segment",),
            ("count", "spend_sek"),
            means=_MEAN_SPEND,
            influence=_CLIPPED_SPEND_PER_PERSON,
        ),
        QueryDef(
            "spend_by_county_segment",
            "person",
            ("county_code", "segment"),
            ("count", "spend_sek"),
            means=_MEAN_SPEND,
            influence=_CLIPPED_SPEND_PER_PERSON,
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
            means=_MEAN_SPEND,
            influence=f"{_CLIPPED_SPEND_PER_PERSON} (the accuracy planner's scale probe)",
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
        QueryDef(
            "survey_national",
            "survey",
            ("scope",),
            ("count", "score"),
            means=(("mean_score", "score", "count"),),
            influence="one row per survey response, bounded as survey_by_county_type's: at most "
            "one response per account and month, at most SURVEY_ACCOUNTS_PER_PERSON accounts "
            "per person, over the release's public window of months; score clipped to "
            "survey_score_bounds (one national cell instead of 42: every response of the "
            "window in it, for the same sensitivity)",
        ),
    )
}


@dataclass(frozen=True)
class SegmentNames:
    """The names a release shows beside its segment keys, and where they came from.

    Built by :meth:`SegmentSource.named` only: the taxonomy's labels for the category rule; a
    model's names only from the record its segmentation signed (bound to the profiles or the
    ledger-verified centroids it describes); ``segment <key>`` where no signed record exists.
    The release writes them as its ``segment_name`` column, its card states them with their
    origin, and its ledger entry records their SHA-256.
    """

    pairs: tuple[tuple[str, str], ...]  # (key, name): hashable, as the source is
    names_from: str
    signed: bool

    @classmethod
    def of(cls, names: dict[str, str], names_from: str, signed: bool) -> SegmentNames:
        """Names from a key → name mapping, with where they came from and whether signed."""
        return cls(tuple(names.items()), names_from, signed)

    @property
    def names(self) -> dict[str, str]:
        """Key → name."""
        return dict(self.pairs)

    @property
    def sha256(self) -> str:
        """SHA-256 of the names as canonical JSON (key order fixed)."""
        import hashlib
        import json

        body = json.dumps(self.names, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(body.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able names with their origin and SHA-256, as the card states them."""
        return {
            "names": dict(self.names),
            "names_from": self.names_from,
            "signed": self.signed,
            "names_sha256": self.sha256,
        }


def _refuse_names(where: Path, key: str, problem: str, fix: str) -> Exception:
    from segments.exceptions import ReleaseRefusedError

    return ReleaseRefusedError(
        f"segment names refused: {where}, key {key!r}: {problem}; rule: a release shows the "
        f"names its segmentation signed, bound to the model they describe; fix: {fix}; nothing "
        "was charged"
    )


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
    >>> print(SegmentSource.category_rule().guarantee)
    end-to-end ε-DP
    """

    provenance: str
    keys: tuple[str, ...]
    labels_path: Path | None = None
    model: Any = None
    #: The names shown beside the keys (:meth:`named`); None: keys only.
    names: SegmentNames | None = None

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
        if self.provenance == "private_model":
            # imported only here: the k-means module loads scikit-learn and SciPy (~50 MB
            # resident, ~1 s), which a release by the category rule or labels never uses
            from segments.privacy.kmeans import PrivateModelRef

            if not isinstance(self.model, PrivateModelRef) or self.labels_path is not None:
                raise PolicyError(
                    "provenance 'private_model' cannot be declared: it is derived from a DP "
                    "k-means entry of the ledger (SegmentSource.private_model(workspace, "
                    "ledger)); labels passed in are 'DP given a non-private segmentation' "
                    "(fitted_model)"
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
        return cls("category_rule", tuple(categories or PRODUCT_CATEGORIES))

    @classmethod
    def private_model(cls, workspace: Workspace, ledger: Ledger) -> SegmentSource:
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
        cls,
        workspace: Workspace,
        which: str,
        private_k: int | None = None,
        ledger: Ledger | None = None,
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
    def guarantee(self) -> Guarantee:
        """The guarantee a release keyed by these segments may claim."""
        if self.provenance == "fitted_model":
            return Guarantee.GIVEN_SEGMENTATION
        return Guarantee.END_TO_END

    def to_dict(self) -> dict[str, Any]:
        """JSON-able source (provenance, keys, labels file), as the card and ledger record it."""
        out = {
            "provenance": self.provenance,
            "keys": list(self.keys),
            "labels_path": None if self.labels_path is None else str(self.labels_path),
            "guarantee": self.guarantee,
            "rests_on": None if self.model is None else self.model.to_dict(),
        }
        if self.names is not None:  # recorded in the ledger entry's spec: the names' hash
            out["names"] = self.names.to_dict()
        return out

    def named(self) -> SegmentSource:
        """The source with the names a release shows beside its keys (:class:`SegmentNames`).

        Raises
        ------
        ReleaseRefusedError
            A names record that is not signed for this user, describes another model (its
            profiles' or centroids' SHA-256 differs), or disagrees with the names in
            ``metadata.json`` (a name edited after fitting) — before anything is charged.
        """
        import json

        from segments.workspace import CENTROIDS, SEGMENT_METADATA, SEGMENT_PROFILES, sha256_file

        if self.names is not None:
            return self
        if self.provenance == "category_rule":
            from segments.keys import key_labels

            labels = key_labels("category")
            names = {k: labels.get(k, k.replace("_", " ").capitalize()) for k in self.keys}
            found = SegmentNames.of(names, "the public product taxonomy's labels", signed=True)
            return replace(self, names=found)
        if self.provenance == "private_model":
            folder = self.model.centroids_path.parent
            bound = {CENTROIDS: str(self.model.centroids_sha256)}  # verified in the ledger
        else:
            assert self.labels_path is not None
            folder = self.labels_path.parent
            profiles = folder / SEGMENT_PROFILES
            bound = {SEGMENT_PROFILES: sha256_file(profiles) if profiles.is_file() else ""}
        meta_path = folder / SEGMENT_METADATA
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        record = meta.get("names_signed") if isinstance(meta, dict) else None
        unnamed = {k: f"segment {k}" for k in self.keys}
        if record is None:  # no names were signed beside these labels: keys only
            found = SegmentNames.of(unnamed, f"no signed names in {meta_path}: keys only", False)
            return replace(self, names=found)
        return replace(self, names=_verified_names(self.keys, meta, record, bound, meta_path))


def _verified_names(
    keys: tuple[str, ...],
    meta: dict[str, Any],
    record: Any,
    bound: dict[str, str],
    meta_path: Path,
) -> SegmentNames:
    """The signed names of ``keys``, refusing a forged, foreign or contradicted record."""
    from segments.provenance import verify_segment_names

    rerun = "run the segmentation again (`segments segment`, or `segments segment --private`)"
    if not verify_segment_names(record):
        raise _refuse_names(
            meta_path,
            "names_signed",
            "the record is not signed by a segmentation for this user",
            rerun,
        )
    if dict(record["bound_to"]) != bound:
        raise _refuse_names(
            meta_path,
            "names_signed",
            f"the names describe another model (bound to {record['bound_to']}, these "
            f"segments are {bound})",
            rerun,
        )
    signed = {str(k): str(v) for k, v in record["segments"].items()}
    shown = meta.get("segments")
    shown = {str(k): str(v) for k, v in shown.items()} if isinstance(shown, dict) else {}
    for key in sorted(set(signed) | set(shown)):
        if shown.get(key) != signed.get(key):
            raise _refuse_names(
                meta_path,
                "segments",
                f"segment {key!r} is named {shown.get(key)!r} in 'segments' but the "
                f"segmentation signed {signed.get(key)!r} (a name edited after fitting)",
                f"restore the signed name or {rerun}",
            )
    names = {k: signed.get(k) or f"segment {k}" for k in keys}
    return SegmentNames.of(names, str(record.get("names_from", "")), signed=True)


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
        """The queries' definitions: the spec's own, else the catalogue's (``QUERIES``)."""
        return self._defs

    @property
    def needs_segments(self) -> bool:
        """Whether a query groups or filters by segment, so the release needs segment labels."""
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
        """JSON-able spec, as the ledger and the card record it."""
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
#: Queries of the monthly purchasing series (segments.privacy.archive): each is released once
#: per population and closed month, a rule ReleasePlan.execute derives and the ledger enforces.
SERIES_QUERIES: tuple[str, ...] = ("monthly_category",)


def is_series_query(query: QueryDef) -> bool:
    """Whether ``query`` is a series query, by its definition (frame, keys, aggregates...),
    whatever it is called: a renamed copy is still the series.

    Examples
    --------
    >>> import dataclasses
    >>> is_series_query(dataclasses.replace(QUERIES["monthly_category"], name="copy"))
    True
    >>> is_series_query(QUERIES["customers_by_type"])
    False
    >>> is_series_query(dataclasses.replace(QUERIES["monthly_category"], influence="worded"))
    True
    """
    # by what it computes: its name and its prose (``influence``, which a session query
    # words its own way) are not part of the definition
    return any(
        replace(query, name=name, influence=QUERIES[name].influence) == QUERIES[name]
        for name in SERIES_QUERIES
    )


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
        ReleaseSpec(
            "survey_national",
            ("survey_national",),
            epsilon=0.5,
            description="the national mean survey score: the coarser survey table the accuracy "
            "planner falls back to when the county × type table would be refused; the unit "
            "is the person (all responses one person can give in the release's months)",
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
