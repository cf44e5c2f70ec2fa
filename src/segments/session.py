"""An analyst's own private questions: a session on a workspace, queries, plan, release.

A :class:`Session` is opened for one policy, purpose and recipient; its queries read like
pandas or polars and are compiled into the same query definitions the named release
specifications use (:class:`segments.privacy.specs.QueryDef`), then planned, charged and
published by the one release path (:func:`segments.privacy.releases.plan_release`,
:meth:`~segments.privacy.releases.ReleasePlan.execute`): the person as unit, a sole trader's
accounts linked, public bounds and keys, the controller's ledger, the policy's guards. Nothing
here adds noise or computes a loss.

>>> s = Session(ws, policy="alloffice", purpose="statistics", recipient="purchasing")
... # doctest: +SKIP
>>> q = s.table("customers").filter(industry="P").group_by("county").agg(
...     count(), sum("spend", bounds=(0, 50_000)), mean("spend", bounds=(0, 50_000))
... )  # doctest: +SKIP
>>> q.plan(epsilon=0.5)  # doctest: +SKIP
>>> table = q.release(epsilon=0.5)  # doctest: +SKIP

Tables
------
``customers``
    One row per person: keys ``county``, ``municipality``, ``industry``, ``size_band``,
    ``customer_type``, ``segment`` (and a geography an ingested export declared); values
    ``spend`` (policy bound), ``units`` and ``orders`` (bounds given by the caller),
    ``spend:<category>`` (the category's cell bound).
``buyers``
    The people of ``customers`` who bought in the window.
``purchases``
    A person's spend and units per product ``category`` (and ``month`` of the window),
    each person's whole vector norm-bounded; keys as ``customers`` plus ``category``
    (required) and ``month``; values ``spend`` and ``units`` (policy bounds).
``surveys``
    Anonymous responses keyed by ``county`` and ``customer_type``; value ``score``.

Filters take public attributes of the person only (``industry``, ``size_band``,
``customer_type``, ``county``, ``municipality``, ``segment``); everything else is refused
before anything runs, with the fix and the policy's clause.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
import polars as pl

from segments.exceptions import PolicyError, ReleaseRefusedError
from segments.keys import column_of, key_values, month_keys, with_labels
from segments.policy import Policy
from segments.privacy.composition import PrivacyLoss
from segments.provenance import hashing_raw_once
from segments.workspace import PREPARED_CUSTOMERS, PREPARED_LINES, Workspace

if TYPE_CHECKING:
    from segments.privacy.ledger import Ledger
    from segments.privacy.publishing import ReleaseContext


__all__ = [
    "Aggregate",
    "PlannedQueries",
    "Query",
    "Session",
    "SessionRelease",
    "QueryFile",
    "agg",
    "count",
    "load_query_file",
    "mean",
    "median",
    "quantile",
    "open_release_ledger",
    "sum",
]


# --- aggregates -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Aggregate:
    """One aggregate of a query: ``count()``, ``sum(value)`` or ``mean(value)``.

    Parameters
    ----------
    kind : {'count', 'sum', 'mean'}
    value : str, optional
        The per-person value (``spend``, ``units``, ``orders``, ``spend:<category>``,
        ``score``).
    bounds : (int, int), optional
        Clipping bounds of one person's value, given by the caller (recorded in the card);
        default: the policy's.
    q : float, optional
        A quantile's level.
    interval : float, optional
        A quantile's value interval: also release the ``q - interval`` and ``q + interval``
        quantiles (see :func:`quantile`).
    """

    kind: str
    value: str | None = None
    bounds: tuple[int, int] | None = None
    q: float | None = None
    interval: float | None = None


def count() -> Aggregate:
    """The number of people in each cell (sensitivity 1: a person is one row)."""
    return Aggregate("count")


def sum(value: str, bounds: tuple[int, int] | None = None) -> Aggregate:  # noqa: A001
    """The total of a bounded per-person value in each cell."""
    return Aggregate("sum", value, _bounds(bounds, value))


def mean(value: str, bounds: tuple[int, int] | None = None) -> Aggregate:
    """The mean of a bounded per-person value (post-processed from a noisy sum and count,
    published only where the count supports it: the policy's ``max_relative_error``)."""
    return Aggregate("mean", value, _bounds(bounds, value))


def quantile(
    value: str,
    q: float,
    bounds: tuple[int, int] | None = None,
    interval: float | None = None,
) -> Aggregate:
    """The ``q``-quantile (a whole percent, e.g. 0.5) of a bounded per-person value in each
    cell: OpenDP's quantile over 101 public candidates between the bounds (exponential noise
    on the candidates' scores under ε-DP, Gumbel noise — the exponential mechanism — under
    zCDP), of the value clipped to the bounds (people beyond a bound tie at it).

    Its data-free accuracy is a *rank* interval: the released value's rank is within ± R
    people of the exact quantile's (``quantile_<q>_<value>_rank`` in the table, ``rank ± R``
    in the plan). An interval on the value's scale needs the data: ``interval=d`` (a whole
    percent, e.g. 0.1) also releases, under the same charge, the count, the ``q - d`` and
    ``q + d`` quantiles (the interval's ends) and two guard quantiles beyond them (see
    :func:`guard_levels`), and publishes ``[quantile at q - d, quantile at q + d]`` as the
    interval of the exact ``q``-quantile ``Q`` of the clipped values where it holds with
    probability at least the confidence. The argument, for the upper end ``c`` at level
    ``a = q + d`` (the lower end is its mirror image):

    * OpenDP scores a candidate ``|f(c)|`` with ``f(c) = (1 - a) #{x < c} - a #{x > c}``
      (people tied at ``c`` count on neither side), ``f`` rising with ``c`` from
      ``f(lower bound) <= 0`` to ``f(upper bound) >= 0``; with probability ``1 - β`` the
      released ``c`` scores within ``R'`` (the ends' rank half-width) of the best candidate.
    * If ``c < Q`` then ``#{x <= c} < q n``, so ``f(c) < -d n``: every candidate scores above
      ``d n - R'``, so ``f`` jumps by more than ``2 (d n - R')`` between two neighbouring
      candidates. Where no two neighbouring candidates hold that many people apart from the
      clipped masses (the caveat; at most ``d n`` in the bottom gap, where a jump would put
      ``Q`` at the lower bound, which no ``c`` is below), the jump is at the top gap, which takes
      ``E > (1 - a) n`` people tied at the upper bound ``U`` (``f`` below ``U`` is negative).
    * The guard at level ``g > a`` then releases ``U``: a candidate below ``U`` scores at
      least ``E - (1 - g) n``, ``U`` exactly ``(1 - g)(n - E)``, so ``U`` wins (within the
      guard's own ``R_g``) once ``(2 - g) E > 2 (1 - g) n + R_g``, which ``E > (1 - a) n``
      gives whenever ``n (g (1 + a) - 2 a) >= R_g``.

    So the interval is published where the count's lower bound ``n`` has ``d n >= R'`` and
    ``n (g (1 + a) - 2 a) >= R_g`` on each side, with an end widened to its bound where its
    guard is at the bound (the bound cannot miss; the status says so), and where its ends are
    ordered and not both widened; it then fails with at most the confidence's failure
    probability (each end and guard an eighth of it, the count's lower bound a half). Choose
    bounds that hold the quantile well inside them: a widened end says little.
    """
    if not isinstance(q, int | float) or not 0.0 < q < 1.0 or round(q * 100) != q * 100:
        raise PolicyError(f"quantile q={q!r} must be a whole percent in (0, 1), e.g. 0.5 or 0.9")
    if interval is not None:
        whole = isinstance(interval, int | float) and round(interval * 100) == interval * 100
        if not whole or not 0.02 <= round(q - interval, 2) < round(q + interval, 2) <= 0.98:
            raise PolicyError(
                f"quantile interval={interval!r} must be a whole percent with q - interval "
                f">= 0.02 and q + interval <= 0.98 (q = {q}; a guard quantile goes beyond each "
                "end), e.g. interval=0.1"
            )
        interval = float(interval)
    return Aggregate("quantile", value, _bounds(bounds, value), float(q), interval)


def median(
    value: str, bounds: tuple[int, int] | None = None, interval: float | None = None
) -> Aggregate:
    """The median of a bounded per-person value (:func:`quantile` at 0.5)."""
    return quantile(value, 0.5, bounds, interval)


class agg:  # noqa: N801 - a namespace, read as segments.agg.count()
    """The aggregates as one namespace: ``segments.agg.count()``, ``.sum(...)``,
    ``.mean(...)``, ``.quantile(...)``, ``.median(...)``."""

    count = staticmethod(count)
    sum = staticmethod(sum)
    mean = staticmethod(mean)
    quantile = staticmethod(quantile)
    median = staticmethod(median)


def _bounds(bounds: Any, value: str) -> tuple[int, int] | None:
    if bounds is None:
        return None
    try:
        low, high = bounds
    except (TypeError, ValueError):
        raise PolicyError(
            f"bounds={bounds!r} of {value!r} must be a pair (lower, upper) of whole numbers, "
            "e.g. bounds=(0, 50_000)"
        ) from None
    ok = all(isinstance(b, int) and not isinstance(b, bool) for b in (low, high))
    if not ok or not 0 <= low < high:
        raise PolicyError(
            f"bounds={bounds!r} of {value!r} must be whole numbers with 0 <= lower < upper "
            "(per-person values are non-negative), e.g. bounds=(0, 50_000)"
        )
    return (int(low), int(high))


# --- what each table is -------------------------------------------------------------------
#: Public attributes of the person a query may filter on (and group by).
PERSON_ATTRIBUTES = (
    "county_code",
    "municipality_code",
    "industry",
    "size_band",
    "customer_type",
    "segment",
)
#: table -> (frame, per-person values with their internal column, extra keys)
_TABLES: dict[str, tuple[str, dict[str, str], tuple[str, ...]]] = {
    "customers": ("person", {"spend": "spend_sek", "units": "units_total", "orders": "orders"}, ()),
    "buyers": ("person", {"spend": "spend_sek", "units": "units_total", "orders": "orders"}, ()),
    "purchases": ("cells", {"spend": "sek", "units": "units"}, ("category", "month")),
    "surveys": ("survey", {"score": "score"}, ("scope",)),  # scope: one national cell
}
_SURVEY_KEYS = ("county_code", "customer_type")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _user_value(internal: str) -> str:
    names = {
        "spend_sek": "spend",
        "units_total": "units",
        "sek": "spend",
        "units": "units",
        "orders": "orders",
        "score": "score",
    }
    if internal.startswith("spend_sek_"):
        return "spend_" + internal.removeprefix("spend_sek_")
    return names.get(internal, internal)


# --- the session --------------------------------------------------------------------------
class Session:
    """Ask your own private questions of a workspace, for one purpose and recipient.

    Parameters
    ----------
    workspace : Workspace or path
        Reads ``W/prepared/<purpose>/`` (run ``segments prepare`` first); releases go to
        ``W/releases/``.
    policy : str or segments.Policy
    purpose, recipient : str
        Declared by the policy (refused otherwise, before anything runs).
    destination : str
        ISO country code of the recipient's copy (default ``SE``).
    ledger : segments.Ledger, path or None
        The ledger charged: the controller's (default, or at this path), resolved as
        ``segments release`` resolves it; or an open :class:`segments.Ledger`.
    demo_ledger, evaluation_ledger : bool
        The workspace's throw-away demo or evaluation ledger (data proven synthetic only).
    as_of : date, optional
        The release date (default today; the ledger's clock decides the charge date).
    segments : {'category_rule', 'fitted', 'private'} or SegmentSource
        Where ``segment`` keys and filters come from; ``fitted`` is "DP given a non-private
        segmentation" and goes to internal recipients only.
    confidence : float
        Level of the intervals (default 0.95).

    Raises
    ------
    PolicyError, ReleaseRefusedError
        An undeclared purpose, recipient or destination (citing the policy's clause).
    """

    def __init__(
        self,
        workspace: Workspace | str | Path,
        policy: Policy,
        purpose: str,
        recipient: str,
        destination: str = "SE",
        *,
        ledger: Ledger | None = None,
        demo_ledger: bool = False,
        evaluation_ledger: bool = False,
        as_of: dt.date | str | None = None,
        segments: Any = "category_rule",
        confidence: float = 0.95,
    ) -> None:
        from segments.ingest import public_domains
        from segments.policy import Policy
        from segments.privacy.guards import check_release
        from segments.privacy.specs import Guarantee, PrivacyParams

        self.workspace = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
        self.policy = policy if isinstance(policy, Policy) else Policy.load(policy)
        self.policy.purpose(purpose)  # an undeclared purpose: refused, citing the policy
        self.recipient = check_release(
            purpose=purpose,
            recipient=recipient,
            destination=destination,
            guarantee=Guarantee.END_TO_END,
            kind="dp",
            policy=self.policy,
        )
        if not 0.0 < confidence < 1.0:
            raise PolicyError(f"confidence={confidence!r} must lie in (0, 1), e.g. 0.95")
        if demo_ledger and evaluation_ledger:
            raise PolicyError("choose one of demo_ledger and evaluation_ledger")
        self.purpose = purpose
        self.destination = destination
        self.confidence = confidence
        self.as_of = dt.date.fromisoformat(as_of) if isinstance(as_of, str) else as_of
        self.domains = public_domains(self.workspace)
        self.params = PrivacyParams.from_policy(self.policy, purpose).with_domains(self.domains)
        self._ledger = ledger
        self._demo, self._evaluation = demo_ledger, evaluation_ledger
        self._segments = segments
        self._source: Any = None
        self._released = 0

    def __repr__(self) -> str:
        return (
            f"Session({self.workspace.root}, policy={self.policy.name!r}, "
            f"purpose={self.purpose!r}, recipient={self.recipient.name!r}, "
            f"destination={self.destination!r})"
        )

    # --- queries ----------------------------------------------------------------------------
    def table(self, name: str) -> Query:
        """Start a query on ``customers``, ``buyers``, ``purchases`` or ``surveys``."""
        if name not in _TABLES:
            raise PolicyError(f"table {name!r} is unknown; query one of {sorted(_TABLES)}")
        return Query(self, name)

    @hashing_raw_once
    def plan(
        self, queries: Sequence[Query], epsilon: float, weights: Sequence[float] | None = None
    ) -> PlannedQueries:
        """Expected accuracy of every cell of ``queries`` released together; spends nothing."""
        spec, window = self._spec(queries, epsilon, weights)
        with self._plan(spec, window, queries) as plan:
            return PlannedQueries.from_plan(plan, list(queries))

    @hashing_raw_once
    def release(
        self, queries: Sequence[Query], epsilon: float, weights: Sequence[float] | None = None
    ) -> SessionRelease:
        """Release ``queries`` together: one charge of ``epsilon`` in the ledger (split by
        ``weights``, default equal), one folder with their tables and one card."""
        spec, window = self._spec(queries, epsilon, weights)
        context = self.release_context()
        # the segments' names (in the release's segment_name column, its card and ledger
        # entry) are resolved with the source, before anything is charged
        with self._plan(spec, window, queries) as plan:
            ranks = _QuantileRanks.of(plan)
            result = plan.execute(
                context, extra_card={"session_queries": [q.describe() for q in queries]}
            )
        self._released += 1
        return SessionRelease.from_result(result, list(queries), ranks)

    # --- resolution ---------------------------------------------------------------------------
    def ledger(self) -> Any:
        """The ledger this session charges (opened on first use, reconciled)."""
        from segments.privacy.ledger import Ledger

        if not isinstance(self._ledger, Ledger):
            self._ledger = open_release_ledger(
                self.workspace,
                self.policy,
                path=self._ledger,
                demo=self._demo,
                evaluation=self._evaluation,
                purpose=self.purpose,
            )
        return self._ledger

    def release_context(self) -> ReleaseContext:
        """The release context of this session's releases: its ledger (checked against the
        policy), workspace, policy, purpose, recipient and destination."""
        from segments.privacy.publishing import ReleaseContext

        return ReleaseContext.open(
            self.ledger(),
            self.workspace,
            self.policy,
            purpose=self.purpose,
            recipient=self.recipient.name,
            destination=self.destination,
            synthetic=self._synthetic(),
        )

    def use_ledger(self, ledger: Ledger) -> None:
        """Charge this already opened (and reconciled) ledger."""
        self._ledger = ledger

    def _synthetic(self) -> bool:
        ledger = self.ledger()
        simulated = bool(
            getattr(ledger, "evaluation", False) or getattr(ledger, "throwaway", False)
        )
        if not (self._demo or self._evaluation or simulated):
            return False  # the controller's ledger takes the data as real
        from segments.privacy.synthetic import prove_synthetic

        return bool(prove_synthetic(self.workspace))

    def segment_source(self) -> Any:
        """The segment source of ``segment`` keys and filters, with the names its releases
        show (resolved on first use; :meth:`segments.privacy.specs.SegmentSource.named`)."""
        from segments.privacy.specs import SegmentSource

        if self._source is None:
            if isinstance(self._segments, SegmentSource):
                source = self._segments
            else:
                which = str(self._segments)
                ledger = self.ledger() if which == "private" else None
                source = SegmentSource.from_workspace(self.workspace, which, ledger=ledger)
            self._source = source.named()
        return self._source

    def segment_names(self) -> dict[str, str]:
        """Name of each segment key of :meth:`segment_source`, as its releases' ``segment_name``
        column shows it.

        The category rule's keys are product categories (their taxonomy labels). A model's
        names are those its segmentation signed in ``metadata.json`` (bound to its profiles,
        or to the centroids whose hash its ledger entry published); a name edited there
        afterwards is refused; without a signed record a key is shown as ``segment <key>``.
        A fitted model's names go only where its keys may (internal recipients)."""
        return dict(self.segment_source().names.names)

    def _as_of(self) -> dt.date:
        from segments.privacy.ledger import ledger_today

        return self.as_of or ledger_today()

    def _spec(
        self, queries: Sequence[Query], epsilon: float, weights: Sequence[float] | None
    ) -> tuple[Any, tuple[dt.date, dt.date] | None]:
        from segments.privacy.specs import ReleaseSpec

        queries = list(queries)
        if not queries:
            raise PolicyError("release of no queries; pass at least one query")
        if any(q.session is not self for q in queries):
            raise PolicyError("every query of a release must come from this session")
        if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon > 0):
            raise PolicyError(f"epsilon={epsilon!r} must be a positive finite number, e.g. 0.5")
        windows = {q.window for q in queries}
        if len(windows) > 1:
            raise PolicyError(
                "queries released together must share one window (.during(...)); release "
                "the others separately"
            )
        defs = tuple(q.definition() for q in queries)
        names = [d.name for d in defs]
        if len(set(names)) != len(names):
            raise PolicyError(
                f"two queries of one release are both named {names!r}; give each its own name "
                "with .named('...')"
            )
        name = queries[0].release_name if len(queries) == 1 else "session"
        spec = ReleaseSpec(
            name,
            tuple(names),
            float(epsilon),
            weights=None if weights is None else tuple(float(w) for w in weights),
            description="an analyst's session queries: "
            + "; ".join(q.describe()["text"] for q in queries),
            definitions=defs,
        )
        return spec, windows.pop()

    @contextlib.contextmanager
    def _plan(
        self, spec: Any, window: tuple[dt.date, dt.date] | None, queries: Sequence[Query]
    ) -> Iterator[Any]:
        from segments.privacy.releases import plan_release
        from segments.provenance import verified_frames

        prepared = self.workspace.prepared_dir(self.purpose)
        frames = {q.frame for q in spec.query_defs}
        needs_lines = bool(frames & {"person", "cells"})
        surveys = None
        if "survey" in frames:
            surveys = prepared / "surveys.parquet"
            if not surveys.exists():
                surveys = self.workspace.require(
                    self.workspace.raw_table("surveys"), "segments generate"
                )
        names = []
        if needs_lines:
            for name in (PREPARED_CUSTOMERS, PREPARED_LINES):
                self.workspace.require(prepared / name, "segments prepare")
                names.append(name)
        if surveys is not None and surveys.parent == prepared:
            names.append(surveys.name)
        # the bytes read are the bytes hashed against prepare's signed record, at every
        # release (the ledger's check when it was opened is not enough: frames can change)
        # (only the window's month partitions are copied, hashed and read)
        with verified_frames(
            self.workspace, self.purpose, names, self.policy, window=window
        ) as copies:
            if surveys is not None and surveys.name in copies:
                surveys = copies[surveys.name]
            with plan_release(
                spec,
                self.params,
                customers=copies.get(PREPARED_CUSTOMERS),
                lines=copies.get(PREPARED_LINES),
                surveys=surveys,
                segments=self.segment_source() if spec.needs_segments else None,
                as_of=self._as_of(),
                window=window,
                confidence=self.confidence,
                workspace=self.workspace,
                origins=copies.origins,
            ) as plan:
                yield plan


# --- queries --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    """A private question: a table, filters, keys and aggregates. Immutable; each method
    returns a new query. Nothing is read or spent until :meth:`plan` or :meth:`release`."""

    session: Session = field(repr=False)
    table: str
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()
    by: tuple[str, ...] = ()
    aggregates: tuple[Aggregate, ...] = ()
    window: tuple[dt.date, dt.date] | None = None
    name: str | None = None

    # --- building --------------------------------------------------------------------------
    def filter(self, **conditions: Any) -> Query:
        """Keep the people whose public attribute equals a value (or one of a list), e.g.
        ``filter(industry="P")``, ``filter(county=["01", "03"])``."""
        where = dict(self.where)
        for key, value in conditions.items():
            values = (value,) if isinstance(value, str | bool | int) else tuple(value)
            where[column_of(key)] = tuple(str(v) for v in values)
        query = replace(self, where=tuple(where.items()))
        query._check_filters()
        return query

    def group_by(self, *keys: str) -> Query:
        """Group by public key sets (``county``, ``municipality``, ``industry``,
        ``size_band``, ``customer_type``, ``segment``; ``category`` and ``month`` for
        purchases)."""
        query = replace(self, by=tuple(column_of(k) for k in keys))
        query._check_keys()
        return query

    def agg(self, *aggregates: Aggregate) -> Query:
        """The aggregates: :func:`count`, :func:`sum`, :func:`mean`."""
        for a in aggregates:
            if not isinstance(a, Aggregate):
                raise PolicyError(
                    f"agg() takes count(), sum(value) or mean(value), not {a!r}; e.g. "
                    "agg(count(), sum('spend'))"
                )
        query = replace(self, aggregates=tuple(aggregates))
        query._check_aggregates()
        return query

    def during(self, start: str | dt.date, end: str | dt.date | None = None) -> Query:
        """Only purchases in the months ``start`` .. ``end`` (inclusive; ``YYYY-MM``).

        The months are the public key list of ``month``."""
        first = _month(start, "start")
        last = _month(end, "end") if end is not None else first
        if last < first:
            raise PolicyError(f"window end {end} is before its start {start}; swap them")
        after = (last + dt.timedelta(days=32)).replace(day=1)
        return replace(self, window=(first, after))

    def named(self, name: str) -> Query:
        """The released table's name (``<name>.parquet``)."""
        if not _NAME.fullmatch(name):
            raise PolicyError(
                f"query name {name!r} must be lower-case letters, digits and '_' (a file name)"
            )
        return replace(self, name=name)

    # --- spending --------------------------------------------------------------------------
    def plan(self, epsilon: float) -> PlannedQueries:
        """Expected accuracy per cell and the guarantee, at ``epsilon``; spends nothing."""
        return self.session.plan([self], epsilon)

    def release(self, epsilon: float) -> pd.DataFrame:
        """Charge the ledger once, release, return the table (pandas, labelled)."""
        return self.session.release([self], epsilon)[self.definition().name]

    def estimate_typical(self, epsilon: float = 0.02) -> dict[str, float]:
        """A private estimate of this query's typical cell, for relative accuracy.

        Releases (and charges, like any release: its own folder and card) the counts and
        sums of this query's cells at a small ``epsilon``, and returns the median released
        cell of each (negative noisy cells read as 0): post-processing of that release, so
        nothing else is spent. Pass the result to :meth:`PlannedQueries.relative` to see
        the relative error of a typical cell before releasing the real query. Quantiles
        have no typical cell (their plan shows a rank interval instead).

        Returns
        -------
        dict
            Aggregate name as in the plan (``count``, ``sum_spend``...) -> typical cell.
        """
        probe = [a for a in self.aggregates if a.kind == "count" and self.frame != "cells"]
        sums = {a.value: a.bounds for a in self.aggregates if a.kind in ("sum", "mean")}
        probe += [sum(value, bounds) for value, bounds in sums.items() if value is not None]
        if any(a.kind == "mean" for a in self.aggregates) and self.frame != "cells":
            probe.append(count())
        if not probe:
            raise PolicyError(
                "estimate_typical needs a count, sum or mean in agg(); quantiles have no "
                "typical cell"
            )
        name = self.definition().name[:56] + "_typical"
        query = replace(self, aggregates=tuple(dict.fromkeys(probe)), name=name)
        table = query.release(epsilon)
        values = ["count"] if any(a.kind == "count" for a in probe) else []
        values += [f"sum_{_user_value(self._internal(str(v)))}" for v in sums]
        return {c: float(np.median(table[c].clip(lower=0))) for c in values}

    # --- compilation -----------------------------------------------------------------------
    @property
    def frame(self) -> str:
        """The planner's frame this query's table reads (``person``, ``cells``, ``survey``)."""
        return _TABLES[self.table][0]

    @property
    def release_name(self) -> str:
        """The name of this query's table in the release (and on its card)."""
        return self.definition().name

    def _facts(self) -> Policy:
        return self.session.policy

    def _purpose_columns(self) -> tuple[str, ...]:
        purpose = self.session.policy.purpose(self.session.purpose)
        return tuple(purpose.columns.get("customers", ()))

    def _public_person_columns(self) -> tuple[str, ...]:
        geography = self.session.domains.geography_column
        extra = (geography,) if geography and geography not in PERSON_ATTRIBUTES else ()
        if self.frame == "survey":
            return _SURVEY_KEYS
        return (*PERSON_ATTRIBUTES, *extra)

    def _check_column(self, column: str, role: str) -> None:
        facts = self._facts()
        if column == "segment":
            # the segment source's provenance decides whom the release may go to
            from segments.privacy.guards import check_guarantee

            source = self.session.segment_source()
            check_guarantee(source.guarantee, "dp", self.session.recipient, facts)
            return
        geography = self.session.domains.geography_column
        if column == "county_code" and geography != "county_code":
            raise ReleaseRefusedError(
                f"{role} 'county_code': this workspace's data declares "
                f"{geography or 'no geography'}, not Swedish counties; "
                + (f"use {geography!r} instead" if geography else "drop the geography key")
            )
        if self.frame != "survey" and column not in self._purpose_columns():
            raise ReleaseRefusedError(
                f"{role} {column!r}: purpose {self.session.purpose!r} does not keep this "
                f"column ({facts.cite('minimisation')}); use one of "
                f"{sorted(set(self._purpose_columns()) & set(self._public_person_columns()))}"
            )

    def _check_filters(self) -> None:
        facts = self._facts()
        for column, values in self.where:
            if column not in self._public_person_columns():
                what = (
                    "not an attribute of the person"
                    if column in ("category", "month", "order_date", "channel", "product_id")
                    else "not a public attribute of the person"
                )
                raise ReleaseRefusedError(
                    f"filter on {column!r} refused: {what}; a query may keep or drop whole "
                    f"people by public attributes only ({facts.cite('anonymous_release')}); "
                    f"filter on one of {list(self._public_person_columns())}"
                    + (
                        f", or group by {column!r} and read the rows you need"
                        if column in ("category", "month")
                        else ""
                    )
                )
            self._check_column(column, "filter")
            allowed = self._key_list(column)
            unknown = [v for v in values if v not in allowed]
            if unknown:
                raise PolicyError(
                    f"filter {column}={unknown[0]!r} is not in the public list of {column} "
                    f"({', '.join(allowed[:25])}{' …' if len(allowed) > 25 else ''}); fix the value"
                )

    def _key_list(self, column: str) -> list[str]:
        if column == "segment":
            return list(self.session.segment_source().keys)
        if column == "customer_type" and self.frame == "survey":
            from segments.schema import CUSTOMER_TYPES

            return list(CUSTOMER_TYPES)
        months = month_keys(*self.window) if self.window else None
        return list(key_values(column, domains=self.session.params, months=months))

    def _check_keys(self) -> None:
        facts = self._facts()
        extra = _TABLES[self.table][2]
        public = (*self._public_person_columns(), *extra)
        if len(set(self.by)) != len(self.by):
            raise PolicyError(f"group_by{self.by!r} names a key twice; name each once")
        for column in self.by:
            if column not in public:
                known = sorted(public)
                raise ReleaseRefusedError(
                    f"group by {column!r} refused: not a public key set of table "
                    f"{self.table!r}; released cells come from public lists, never from the "
                    f"data ({facts.cite('anonymous_release')}); group by one of {known}"
                )
            if column not in extra:
                self._check_column(column, "group by")

    def _check_aggregates(self) -> None:
        values = _TABLES[self.table][1]
        if not self.aggregates:
            raise PolicyError("agg() needs at least one aggregate, e.g. agg(count())")
        for a in self.aggregates:
            if a.kind == "count":
                if self.frame == "cells":
                    raise PolicyError(
                        "count() of purchases is refused: a person has many purchase cells; "
                        "count people with table('customers') or table('buyers')"
                    )
                continue
            value = a.value or ""
            if value.startswith("spend:") and self.frame == "person":
                category = value.removeprefix("spend:")
                if category not in self.session.params.categories:
                    raise PolicyError(
                        f"value {value!r}: {category!r} is not a product category; use one of "
                        f"{list(self.session.params.categories)}"
                    )
            elif value not in values:
                raise PolicyError(
                    f"value {value!r} is not a per-person value of table {self.table!r}; use "
                    f"one of {sorted(values)}"
                    + (" or 'spend:<category>'" if self.frame == "person" else "")
                )
            if a.kind == "quantile" and self.frame == "cells":
                raise PolicyError(
                    "quantiles of purchases are refused: a person's purchase cells are a "
                    "vector; ask a quantile of a per-person value with table('customers')"
                )
            if a.bounds is not None and self.frame != "person":
                raise PolicyError(
                    f"bounds for {value!r} of table {self.table!r} come from the policy "
                    "(per-category cell bounds and the person's norm bound; survey score "
                    "bounds); drop bounds=, or change the policy's [privacy] section"
                )
            if a.bounds is None and self._internal(value) in ("units_total", "orders"):
                raise PolicyError(
                    f"{a.kind}({value!r}) needs a public bound of one person's {value}: the "
                    f"policy has none ({self._facts().cite('anonymous_release')}); pass "
                    f"bounds=(0, N) with an N you can defend without looking at the data, "
                    f"e.g. {a.kind}({value!r}, bounds=(0, 500)); it is recorded in the card"
                )

    def _internal(self, value: str) -> str:
        if value.startswith("spend:"):
            return "spend_sek_" + value.removeprefix("spend:")
        return _TABLES[self.table][1][value]

    def definition(self) -> Any:
        """The query as a :class:`segments.privacy.specs.QueryDef` (refusals first)."""
        from segments.privacy.specs import QueryDef

        self._check_filters()
        self._check_keys()
        self._check_aggregates()
        if not self.by:
            raise PolicyError(
                "a query needs group_by(...) with at least one public key, e.g. "
                "group_by('customer_type') for totals per type"
            )
        if self.frame == "cells" and "category" not in self.by:
            raise PolicyError(
                "purchases are released per product category: add 'category' to group_by "
                "(a person's cells are bounded per category)"
            )
        key_lists: tuple[tuple[str, tuple[str, ...]], ...] = ()
        if "month" in self.by:
            if self.window is None:
                raise PolicyError(
                    "group by 'month' needs a window: add .during('2026-01', '2026-06') (its "
                    "months are the public key list)"
                )
            key_lists = (("month", month_keys(*self.window)),)
        sums: list[str] = []
        clip: dict[str, tuple[int, int]] = {}
        means: list[tuple[str, str, str]] = []
        has_count = any(a.kind == "count" for a in self.aggregates)
        for a in self.aggregates:
            if a.kind == "count":
                continue
            internal = self._internal(str(a.value))
            if a.kind == "quantile":
                for name in _quantile_names(a, internal):
                    if name not in sums:
                        sums.append(name)
                has_count = has_count or a.interval is not None  # the interval's support
            elif internal not in sums:
                sums.append(internal)
            if a.bounds is not None:
                if clip.get(internal, a.bounds) != a.bounds:
                    raise PolicyError(f"{a.value!r} is given two different bounds; give one")
                clip[internal] = a.bounds
            if a.kind == "mean":
                means.append((f"mean_{internal}", internal, "count"))
                has_count = True
        aggregates = (("count",) if has_count else ()) + tuple(sums)
        name = self.name or _default_name(self.table, self.by, self.where)
        return QueryDef(
            name,
            self.frame,  # type: ignore[arg-type]
            self.by,
            aggregates,
            means=tuple(means),
            influence=_influence(self.frame, self.table),
            active_only=self.table == "buyers",
            where=self.where,
            clip=tuple(clip.items()),
            key_values=key_lists,
        )

    def describe(self) -> dict[str, Any]:
        """The query as the analyst wrote it (recorded in the card)."""
        parts = [f"table({self.table!r})"]
        if self.where:
            parts.append("filter(" + ", ".join(f"{c}={list(v)}" for c, v in self.where) + ")")
        if self.window:
            parts.append(f"during({self.window[0]:%Y-%m} .. before {self.window[1]:%Y-%m})")
        parts.append("group_by(" + ", ".join(repr(b) for b in self.by) + ")")
        aggs = []
        for a in self.aggregates:
            inner = "" if a.value is None else repr(a.value)
            if a.q is not None:
                inner += f", {a.q}"
            if a.interval is not None:
                inner += f", interval={a.interval}"
            if a.bounds is not None:
                inner += f", bounds={a.bounds}"
            aggs.append(f"{a.kind}({inner})")
        parts.append("agg(" + ", ".join(aggs) + ")")
        return {
            "name": self.name or _default_name(self.table, self.by, self.where),
            "text": ".".join(parts),
            "caller_bounds": {
                str(a.value): list(a.bounds) for a in self.aggregates if a.bounds is not None
            },
        }


def guard_levels(q: float, interval: float) -> tuple[float, float]:
    """The levels of the two guard quantiles of ``q``'s value interval ``q ± interval``
    (see :func:`quantile`): the upper guard ``g`` beyond ``a = q + interval`` needs
    ``n (g (1 + a) - 2 a) >= R_g``; it is the lowest whole percent at which that needs no
    larger count than the end's own ``d n >= R'`` (``R_g / R' = g / max(a, 1 - a)``), so it
    withholds as few intervals as it can; at most 0.99. The lower guard mirrors it.

    Examples
    --------
    >>> guard_levels(0.5, 0.1)
    (0.16, 0.84)
    """

    def beyond(a: float) -> float:
        spread = max(a, 1.0 - a)
        level = 2.0 * a / (1.0 + a - interval / spread)
        return min(0.99, max(math.ceil(level * 100 - 1e-9) / 100, round(a + 0.01, 2)))

    return round(1.0 - beyond(round(1.0 - q + interval, 2)), 2), beyond(round(q + interval, 2))


def _quantile_names(a: Aggregate, internal: str) -> list[str]:
    """The released quantile aggregates of ``a``: its level, then (with a value interval)
    the levels ``q - interval`` and ``q + interval`` and the two guards
    (:func:`guard_levels`)."""
    levels = [float(a.q or 0)]
    if a.interval is not None:
        levels += [levels[0] - a.interval, levels[0] + a.interval]
        levels += list(guard_levels(levels[0], a.interval))
    return [f"quantile_{round(level * 100)}_{internal}" for level in levels]


def _month(value: str | dt.date, what: str) -> dt.date:
    if isinstance(value, dt.date):
        return value.replace(day=1)
    try:
        return dt.date.fromisoformat(f"{value}-01" if len(str(value)) == 7 else str(value)).replace(
            day=1
        )
    except ValueError:
        raise PolicyError(f"window {what} {value!r} is not a month; give YYYY-MM") from None


def _default_name(
    table: str, by: tuple[str, ...], where: tuple[tuple[str, tuple[str, ...]], ...]
) -> str:
    keys = "_".join(b.removesuffix("_code") for b in by) or "all"
    name = f"{table}_by_{keys}"
    for column, values in where:
        name += f"_{column.removesuffix('_code')}_" + "_".join(values)
    name = re.sub(r"[^a-z0-9_]", "", name.lower())
    return name[:64]


def _influence(frame: str, table: str) -> str:
    if frame == "person":
        return (
            "one row per person (a sole trader's accounts are one person): a count changes "
            "by 1, a sum by the value's clipping bound; filters keep or drop whole people"
            + ("; only people who bought in the window" if table == "buyers" else "")
        )
    if frame == "cells":
        return (
            "a person's vector of purchase cells (weighted per category) bounded to a norm; "
            "at most max_cells_per_person categories per person (and month), largest first"
        )
    return (
        "anonymous survey responses: at most one per account and month, at most "
        "SURVEY_ACCOUNTS_PER_PERSON accounts per person, over the release's months"
    )


# --- results ----------------------------------------------------------------------------------
def _rename(column: str, aggregates: Iterable[str]) -> str:
    """Internal column → the analyst's name (``spend_sek_lower`` → ``sum_spend_lower``)."""
    from segments.privacy.releases import quantile_of

    for internal in sorted(aggregates, key=len, reverse=True):
        quantile = quantile_of(internal)
        if quantile is not None:
            if column == internal or column.startswith(internal + "_"):
                user = f"quantile_{round(quantile[0] * 100)}_{_user_value(quantile[1])}"
                return user + column[len(internal) :]
            continue
        for prefix, out in ((f"mean_{internal}", "mean_"), (internal, "sum_")):
            if column == prefix or column.startswith(prefix + "_"):
                user = "count" if internal == "count" else out + _user_value(internal)
                if internal == "count" and out == "mean_":
                    continue
                return user + column[len(prefix) :]
    return column


class _ValueInterval(NamedTuple):
    """One quantile's value interval as the release names it (analyst's column names)."""

    column: str  # the quantile
    d: float
    low: str  # the ends
    high: str
    guard_low: str  # the guards beyond them
    guard_high: str
    bounds: tuple[int, int]  # the clipping bounds (the first and last candidates)
    end_error: float  # the ends' rank half-width R' (people)
    needed: float  # the count's lower bound at which every margin of quantile() holds


@dataclass(frozen=True)
class _QuantileRanks:
    """The rank half-widths (people) of a release's quantiles: at the plan's confidence, and
    at an eighth of its failure probability (each end and guard of a value interval); and
    the clipping bounds of each quantile (its candidates run between them)."""

    at_confidence: Mapping[tuple[str, str], float]
    at_end: Mapping[tuple[str, str], float]
    clipping: Mapping[tuple[str, str], tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, plan: Any) -> _QuantileRanks:
        end = 1.0 - (1.0 - plan.confidence) / 8.0
        clipping = {
            (name, aggregate): (int(low), int(high))
            for name, facts in plan.bounds().items()
            for aggregate, (low, high) in facts["clipping"].items()
        }
        return cls(plan.quantile_rank_accuracy(), plan.quantile_rank_accuracy(end), clipping)

    def value_intervals(self, query: Query) -> list[_ValueInterval]:
        """The value interval of each quantile of ``query`` asked with one, with the count
        its margins need (:func:`quantile`)."""
        out = []
        definition = query.definition()
        for a in query.aggregates:
            if a.kind != "quantile" or a.interval is None:
                continue
            names = _quantile_names(a, query._internal(str(a.value)))
            middle, low, high, guard_low, guard_high = names
            q, d = float(a.q or 0), a.interval
            end = max(self.at_end[(definition.name, low)], self.at_end[(definition.name, high)])
            needed = end / d
            # each side: a = the end's level seen from its bound, g = its guard's
            for level, guard in ((1.0 - q + d, guard_low), (q + d, guard_high)):
                g = _quantile_level(guard)
                g = max(g, 1.0 - g)
                margin = g * (1.0 + level) - 2.0 * level  # > 0 by guard_levels
                needed = max(needed, self.at_end[(definition.name, guard)] / margin)
            named = [_rename(c, definition.aggregates) for c in names]
            out.append(
                _ValueInterval(
                    column=named[0],
                    d=d,
                    low=named[1],
                    high=named[2],
                    guard_low=named[3],
                    guard_high=named[4],
                    bounds=self.clipping[(definition.name, middle)],
                    end_error=end,
                    needed=needed,
                )
            )
        return out


def _quantile_level(aggregate: str) -> float:
    """The level of a quantile aggregate's name (``quantile_84_spend_sek`` → 0.84)."""
    from segments.privacy.releases import quantile_of

    found = quantile_of(aggregate)
    if found is None:
        raise ValueError(f"{aggregate!r} is not a quantile aggregate")
    return found[0]


def _to_pandas(
    table: pl.DataFrame, query: Query, ranks: _QuantileRanks | None = None
) -> pd.DataFrame:
    definition = query.definition()
    frame = table.rename({c: _rename(c, definition.aggregates) for c in table.columns})
    # the release's own key labels (segment_name included): what the folder holds
    out = with_labels(frame.to_pandas(), definition.by)
    if ranks is None:
        return out
    for (name, internal), rank in ranks.at_confidence.items():
        if name == definition.name:  # data-free: the same for every cell
            out[f"{_rename(internal, definition.aggregates)}_rank"] = rank
    for v in ranks.value_intervals(query):
        # the margins of quantile()'s argument, on the count's lower bound
        supported = (out["count_lower"] >= v.needed).to_numpy()
        # a guard at its bound: so many people are tied at the bound that the end on that
        # side could miss the quantile; that end widens to the bound (which cannot miss)
        at_low = (out[v.guard_low] <= v.bounds[0]).to_numpy()
        at_high = (out[v.guard_high] >= v.bounds[1]).to_numpy()
        lower = np.where(at_low, float(v.bounds[0]), out[v.low].to_numpy(dtype=float))
        upper = np.where(at_high, float(v.bounds[1]), out[v.high].to_numpy(dtype=float))
        ordered = lower <= upper
        informative = ~(at_low & at_high)  # [lower bound, upper bound] says nothing
        published = supported & ordered & informative
        out[f"{v.column}_lower"] = np.where(published, lower, np.nan)
        out[f"{v.column}_upper"] = np.where(published, upper, np.nan)

        def widened(side: str, guard: str) -> str:
            return (
                f"published, {side} end widened to the clipping bound: its guard ({guard}) is "
                f"at the bound, so many people are there that the {side} end could miss"
            )

        out[f"{v.column}_status"] = np.select(
            [
                published & ~at_low & ~at_high,
                published & at_high,
                published & at_low,
                ~supported,
                ~informative,
            ],
            [
                "published",
                widened("upper", v.guard_high),
                widened("lower", v.guard_low),
                f"not published: the count's lower bound is below the {v.needed:,.0f} people "
                f"the interval's margins need (each end's rank error is {v.end_error:,.0f} "
                "people); ask a wider interval, a larger ε or a coarser key",
                f"not published: both guards ({v.guard_low}, {v.guard_high}) are at their "
                "clipping bounds (many people at each), so only [lower bound, upper bound] "
                "would hold; ask wider bounds",
            ],
            "not published: the ends crossed (lower > upper), a sign of many people between "
            "two neighbouring candidates; ask wider bounds or a wider interval",
        )
    return out


def _quantile_note(
    distribution: Any,
    rank: float,
    confidence: float,
    interval: _ValueInterval | None,
) -> str:
    """The plan's line for a quantile: the mechanism OpenDP runs, its rank interval and,
    when asked, where its value interval will be published."""
    mechanism = (
        "Gumbel noise on the candidates' scores (the exponential mechanism, zCDP)"
        if str(distribution).startswith("Gumbel")
        else "exponential noise on the candidates' scores (ε-DP)"
    )
    note = (
        f"a quantile: one of the public candidates between the bounds, chosen with {mechanism}; "
        f"at {confidence:.0%} its rank is within ± {rank:,.0f} people of the exact quantile's "
        "(plus the people between two neighbouring candidates)"
    )
    if interval is None:
        return note + "; for an interval in the value's unit ask quantile(..., interval=0.1)"
    v = interval
    return (
        note + f"; value interval [{v.low}, {v.high}] published where the count is at least "
        f"{v.needed:,.0f} people (d = {v.d:g}, each end's rank error {v.end_error:,.0f} "
        f"people) and its ends are ordered; an end whose guard ({v.guard_low}, "
        f"{v.guard_high}) is at its bound widens to the bound (many people tied at a bound "
        "can pull an end off the quantile: keep the quantile well inside the bounds)"
    )


@dataclass(frozen=True)
class PlannedQueries:
    """What a release of these queries would give, before anything is spent.

    Attributes
    ----------
    accuracy : pandas.DataFrame
        Per query and aggregate: cells, noise distribution and scale, ``accuracy`` (the
        half-width of each cell's interval at ``confidence``, in the value's unit) and, where
        the caller gave a typical cell size with :meth:`relative`, the relative error.
    guarantee : str
    privacy_loss : PrivacyLoss
        ε (or ρ with its (ε, δ) form), as OpenDP computes it: what the ledger would charge.
    """

    accuracy: pd.DataFrame
    guarantee: str
    privacy_loss: PrivacyLoss
    confidence: float

    @classmethod
    def from_plan(cls, plan: Any, queries: list[Query]) -> PlannedQueries:
        """The plan of the named queries as the analyst wrote them.

        Parameters
        ----------
        plan : segments.privacy.releases.ReleasePlan
            What the planner computed for the queries' release definition.
        queries : list of Query
            The queries planned, whose aggregates name the accuracy rows.

        Returns
        -------
        PlannedQueries
        """
        rows = plan.accuracy
        defs = {q.query.name: q.query for q in plan.queries}
        rows["aggregate"] = [
            _rename(a, defs[q].aggregates)
            for q, a in zip(rows["query"], rows["aggregate"], strict=True)
        ]
        bounds = plan.bounds()
        ranks = plan.quantile_rank_accuracy()
        rows["rank_accuracy"] = [
            ranks.get((q, internal), math.nan)
            for q, internal in zip(plan.accuracy["query"], plan.accuracy["aggregate"], strict=True)
        ]
        intervals = {
            (q.definition().name, v.column): v
            for q in queries
            for v in _QuantileRanks.of(plan).value_intervals(q)
        }
        ends = {
            (q, end): f"an end of {v.column}'s value interval"
            for (q, _), v in intervals.items()
            for end in (v.low, v.high)
        } | {
            (q, guard): f"a guard of {v.column}'s value interval (at its bound: that end widens)"
            for (q, _), v in intervals.items()
            for guard in (v.guard_low, v.guard_high)
        }
        rows["note"] = [
            ends[(q, aggregate)]
            if (q, aggregate) in ends
            else _quantile_note(distribution, rank, plan.confidence, intervals.get((q, aggregate)))
            if str(distribution).startswith(("Exponential", "Gumbel"))
            else "norm bound chosen privately at release (charged in ε): the accuracy shown is "
            "at the public largest bound, the released one is usually much better"
            if str(bounds[q].get("norm_bounds", {}).get(internal, {}).get("source", "")).startswith(
                "to be chosen"
            )
            else ""
            for q, internal, aggregate, distribution, rank in zip(
                plan.accuracy["query"],
                plan.accuracy["aggregate"],
                rows["aggregate"],
                plan.accuracy["distribution"],
                rows["rank_accuracy"],
                strict=True,
            )
        ]
        rows = rows[
            [
                "query",
                "aggregate",
                "cells",
                "distribution",
                "scale",
                "accuracy",
                "rank_accuracy",
                "note",
            ]
        ]
        return cls(rows, plan.guarantee, plan.loss, plan.confidence)

    def relative(self, typical: Mapping[str, float]) -> pd.DataFrame:
        """Relative error of a typical cell: ``accuracy / typical[aggregate]``.

        ``typical`` is a public scale you know without this data (e.g. last year's published
        customers per county), or the charged private estimate of
        :meth:`Query.estimate_typical`; nothing private is read here.
        """
        out = self.accuracy.copy()
        out["relative"] = [
            a / typical[g] if typical.get(g) else math.nan
            for g, a in zip(out["aggregate"], out["accuracy"], strict=True)
        ]
        return out

    def __repr__(self) -> str:
        loss = self.privacy_loss
        stated = (
            f"ε = {loss.epsilon:.4g}"
            if loss.rho is None
            else f"ρ = {loss.rho:.4g} (ε = {loss.epsilon:.4g} at δ = {loss.delta:g})"
        )
        lines = [
            f"planned: {self.guarantee}, {stated} (nothing spent yet)",
            f"expected accuracy per cell (± at {self.confidence:.0%}):",
        ]
        for row in self.accuracy.to_dict("records"):
            accuracy, rank = row["accuracy"], row["rank_accuracy"]
            shown = (
                f"± {accuracy:>12,.1f}"
                if accuracy == accuracy
                else f"{f'rank ± {rank:,.0f}':>14}"
                if rank == rank
                else f"{'(no interval)':>14}"
            )
            lines.append(
                f"  {row['query']!s:<40} {row['aggregate']!s:<18} {shown}  "
                f"({row['cells']} cells, {row['distribution']!s}, scale {row['scale']:.4g})"
            )
            if row["note"]:
                lines.append(f"    {row['note']}")
        return "\n".join(lines)


class SessionRelease(Mapping[str, pd.DataFrame]):
    """A published session release: its tables (pandas, labelled) by query name, with the
    release id, folder, card and the guarantee stated."""

    def __init__(
        self, tables: dict[str, pd.DataFrame], release_id: str, path: Path, card: dict[str, Any]
    ) -> None:
        self.tables = tables
        self.release_id = release_id
        self.path = path
        self.card = card

    @classmethod
    def from_result(
        cls,
        result: Any,
        queries: list[Query],
        ranks: _QuantileRanks | None = None,
    ) -> SessionRelease:
        """The published release's tables as pandas frames labelled for the analyst.

        Parameters
        ----------
        result : segments.privacy.releases.ReleaseResult
            What the release wrote (tables, release id, folder, card).
        queries : list of Query
            The queries released, one table each, by their release names.
        ranks : optional
            The quantile ranks' accuracy, for the quantile tables' intervals.

        Returns
        -------
        SessionRelease
        """
        by_name = {q.definition().name: q for q in queries}
        tables = {}
        for name, table in result._tables.items():
            frame = _to_pandas(table, by_name[name], ranks)
            frame.attrs.update(
                release_id=result.release_id,
                guarantee=result.card.get("guarantee"),
                privacy_loss=result.card.get("privacy_loss"),
                path=str(result.path),
            )
            tables[name] = frame
        return cls(tables, result.release_id, Path(result.path), dict(result.card))

    @property
    def guarantee(self) -> str:
        """The guarantee the card states (a :class:`segments.policy.Guarantee` value)."""
        return str(self.card.get("guarantee"))

    @property
    def privacy_loss(self) -> PrivacyLoss:
        """The privacy loss the card states, as charged to the ledger."""
        return PrivacyLoss.from_dict(self.card.get("privacy_loss") or {})

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tables)

    def __len__(self) -> int:
        return len(self.tables)

    def __repr__(self) -> str:
        loss = self.privacy_loss
        tables = ", ".join(f"{n} ({len(t)} rows)" for n, t in self.tables.items())
        return (
            f"SessionRelease({self.release_id}: {self.guarantee}, "
            f"ε = {float(loss.epsilon or 0):.4g}; {tables}; in {self.path})"
        )


# --- the ledger a session charges -------------------------------------------------------------
def open_release_ledger(
    workspace: Workspace,
    policy: Policy,
    *,
    path: str | Path | None = None,
    demo: bool = False,
    evaluation: bool = False,
    init: bool = False,
    reconcile: bool = True,
    purpose: str | None = None,
) -> Any:
    """The ledger a release is charged to, reconciled before use (``segments release``'s
    rules): the controller's (default path, or ``path``), or the workspace's demo or
    evaluation ledger for data proven synthetic only. ``reconcile=False`` leaves the
    reconciliation to the caller (the CLI reports each finished or aborted release).
    On a demo or evaluation ledger the frames of ``purpose`` must be derived from the proven
    raw data (:func:`segments.provenance.verify_prepared`); on the controller's ledger the
    workspace's data are bound to the controller's name
    (:func:`segments.privacy.ledger.claim_population_data`).

    Raises
    ------
    ReleaseRefusedError
        A demo or evaluation ledger for data not proven synthetic; a ledger contradicted by
        the cards of the workspace's releases.
    """
    from segments.privacy.jobs import LedgerKind, open_ledger

    kind: LedgerKind = "demo" if demo else "evaluation" if evaluation else "controller"
    return open_ledger(
        workspace, policy, kind=kind, path=path, init=init, reconcile=reconcile, purpose=purpose
    )


# --- a query written in a file (segments query FILE) ------------------------------------------
_FILE_KEYS = {
    "policy",
    "purpose",
    "recipient",
    "destination",
    "epsilon",
    "weights",
    "as_of",
    "segments",
    "confidence",
    "query",
}
_QUERY_KEYS = {
    "name",
    "table",
    "filter",
    "group_by",
    "aggregates",
    "bounds",
    "interval",
    "during",
}


@dataclass(frozen=True)
class QueryFile:
    """Queries written in a TOML or JSON file, so a question can be reviewed and re-run.

    The file names the policy, purpose, recipient (and destination), the privacy loss and
    one ``[[query]]`` table per query::

        policy = "alloffice"
        purpose = "statistics"
        recipient = "purchasing"
        epsilon = 0.5

        [[query]]
        name = "schools_by_county"
        table = "customers"
        filter = { industry = "P" }
        group_by = ["county"]
        aggregates = ["count", "sum:spend", "mean:spend"]
        bounds = { spend = [0, 50000] }

    Aggregates are ``count``, ``sum:<value>``, ``mean:<value>``, ``median:<value>`` and
    ``quantile<percent>:<value>``; ``interval = { spend = 0.1 }`` gives the quantiles of a
    value a value interval (:func:`quantile`); ``during`` is a month (``"2026-05"``) or
    ``[first, last]``.
    """

    path: Path
    session: dict[str, Any]
    epsilon: float
    weights: tuple[float, ...] | None
    queries: tuple[dict[str, Any], ...]

    def open(self, workspace: Workspace, **ledger_options: Any) -> Session:
        """The file's session on ``workspace`` (with :class:`Session`'s ledger options)."""
        return Session(workspace, **self.session, **ledger_options)

    def build(self, session: Session) -> list[Query]:
        """The file's queries on ``session`` (refusals name the file and the query)."""
        built = []
        for index, spec in enumerate(self.queries, start=1):
            where = f"{self.path} [[query]] #{index}"
            try:
                built.append(_query_from(session, spec))
            except (PolicyError, ReleaseRefusedError) as exc:
                raise type(exc)(f"{where}: {exc}") from None
        return built


def _fail(path: Path, key: str, problem: str, fix: str) -> PolicyError:
    return PolicyError(f"query file {path}: {key}: {problem}; {fix}")


def load_query_file(path: str | Path) -> QueryFile:
    """Read a :class:`QueryFile` (``.toml`` or ``.json``).

    Raises
    ------
    PolicyError
        A file that cannot be read or breaks a rule, naming the key and the fix.
    """
    import json
    import tomllib

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(
            f"query file {path} cannot be read ({exc.strerror}); give an existing file"
        ) from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise PolicyError(f"query file {path}: not valid {kind} ({exc}); fix the syntax") from None
    if not isinstance(data, dict):
        raise _fail(path, "(top)", "is not a table of keys", "see examples/query.toml")
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        raise _fail(path, unknown[0], "is not a known key", f"use {sorted(_FILE_KEYS)}")
    for key in ("policy", "purpose", "recipient", "epsilon", "query"):
        if key not in data:
            raise _fail(path, key, "is missing", "every query file names it")
    epsilon = data["epsilon"]
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
        raise _fail(path, "epsilon", f"{epsilon!r} is not a number", "give e.g. epsilon = 0.5")
    weights = data.get("weights")
    if weights is not None and (
        not isinstance(weights, list) or not all(isinstance(w, int | float) for w in weights)
    ):
        raise _fail(path, "weights", f"{weights!r} is not a list of numbers", "e.g. [1, 2]")
    queries = data["query"]
    if not isinstance(queries, list) or not queries:
        raise _fail(path, "query", "needs at least one [[query]] table", "add one")
    for index, query in enumerate(queries, start=1):
        if not isinstance(query, dict):
            raise _fail(path, f"query #{index}", "is not a table", "write [[query]] tables")
        extra = sorted(set(query) - _QUERY_KEYS)
        if extra:
            raise _fail(
                path, f"query #{index}.{extra[0]}", "is unknown", f"use {sorted(_QUERY_KEYS)}"
            )
        for key in ("table", "group_by", "aggregates"):
            if key not in query:
                raise _fail(path, f"query #{index}.{key}", "is missing", "every query names it")
    session = {
        k: data[k]
        for k in (
            "policy",
            "purpose",
            "recipient",
            "destination",
            "as_of",
            "segments",
            "confidence",
        )
        if k in data
    }
    return QueryFile(
        path,
        session,
        float(epsilon),
        None if weights is None else tuple(float(w) for w in weights),
        tuple(queries),
    )


def _query_from(session: Session, spec: Mapping[str, Any]) -> Query:
    query = session.table(str(spec["table"]))
    if spec.get("during"):
        during = spec["during"]
        query = query.during(*during) if isinstance(during, list) else query.during(during)
    if spec.get("filter"):
        if not isinstance(spec["filter"], dict):
            raise PolicyError('filter must be a table, e.g. filter = { industry = "P" }')
        query = query.filter(**spec["filter"])
    group_by = spec["group_by"]
    query = query.group_by(*([group_by] if isinstance(group_by, str) else group_by))
    bounds = dict(spec.get("bounds") or {})
    intervals = dict(spec.get("interval") or {})
    aggregates = []
    for text in spec["aggregates"]:
        kind, _, value = str(text).partition(":")
        if kind == "count" and not value:
            aggregates.append(count())
        elif kind in ("sum", "mean", "median") and value:
            given = bounds.get(value)
            pair = None if given is None else tuple(given)
            if kind == "median":
                aggregates.append(median(value, pair, intervals.get(value)))
            else:
                aggregates.append({"sum": sum, "mean": mean}[kind](value, pair))
        elif re.fullmatch(r"quantile\d{1,2}", kind) and value:
            given = bounds.get(value)
            pair = None if given is None else tuple(given)
            level = int(kind.removeprefix("quantile")) / 100
            aggregates.append(quantile(value, level, pair, intervals.get(value)))
        else:
            raise PolicyError(
                f"aggregate {text!r} is not count, sum:<value>, mean:<value>, median:<value> "
                "or quantile<percent>:<value>; e.g. 'sum:spend', 'quantile90:spend'"
            )
    unused = sorted(set(bounds) - {a.value for a in aggregates})
    if unused:
        raise PolicyError(f"bounds for {unused[0]!r} are given but no aggregate uses it")
    unused = sorted(set(intervals) - {a.value for a in aggregates if a.kind == "quantile"})
    if unused:
        raise PolicyError(
            f"interval for {unused[0]!r} is given but no median or quantile of it is asked"
        )
    query = query.agg(*aggregates)
    return query.named(str(spec["name"])) if spec.get("name") else query
