"""Per-cell releases with each person's whole contribution bounded by a norm (OpenDP).

The per-cell design clipped every cell to its own bound and multiplied by the number of
cells a person may touch (L1 sensitivity ``k × U``). Here, as in the best DP systems, each
person's *vector* of contributions across the cells of a release (units or SEK per
category, or per segment × category) is scaled down to a total norm ``C`` — L1 for Laplace
noise, L2 for Gaussian noise under zCDP — the vectors are summed, and the sum is released
with OpenDP's vector noise (``then_laplace`` / ``then_gaussian`` over an integer vector
domain with L1 / L2 distance). One person moves the sum by at most ``C`` in that norm
(triangle inequality), which is the stability map of the clip-and-sum, a user
transformation (``"honest-but-curious"``) whose claim the empirical audit tests.

``C`` is a public policy fact, or chosen per release by OpenDP's private quantile of the
per-person norms (:mod:`segments.privacy.bounds`), inside the same OpenDP adaptive
compositor, so the compositor's loss (``map(1)``) is what the ledger is charged.

Per-category weights (``PrivacyParams.cell_weights``: largest bound / the category's own
bound) are applied before the norm: a chair counts as ten reams, so the furniture cells'
noise, once divided by the weight, follows the furniture bound.

*The clip's own bias, measured privately (the purchasing series).* Clipping at ``C``
drops each person's norm above it, so every released sum is biased low (3-4 % of a
monthly category on the synthetic data: the top tenth of buyers is scaled down). With
:attr:`VectorRelease.excess_losses`, the release also measures, in the same OpenDP
compositor and charged with it, the **clipped excess**: the sum over people of what the
clip at ``C`` removes from them up to a clip at ``(1 + EXCESS_SPAN) × C``, in the
categories' own units (a weighted chair counts as one chair: heavy-weight categories are
over-represented among the clipped, so converting a weighted excess by the month's mix
overstated it twice over in a backtest), at most ``EXCESS_SPAN × C`` per person (its
sensitivity), one number per aggregate with its own noise. A forecast pools it over the
released months to correct the level (segments.forecast); the mass above
``(1 + EXCESS_SPAN) × C`` is not estimated (0.2-0.35 % of a month on the synthetic data).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np
import polars as pl

import segments.privacy._opendp as dp
from segments.exceptions import PolicyError
from segments.privacy.bounds import BoundChoice, bound_candidates, make_private_bound
from segments.privacy.composition import (
    DPFamily,
    expected_half_width,
    noise_accuracy,
    noise_scale,
    privacy_measure,
    pure_epsilon_of_rho,
    pure_to_rho,
)

__all__ = [
    "BOUND_LOSS_CAP",
    "EXCESS_SHARE",
    "EXCESS_SPAN",
    "PersonVectors",
    "VectorRelease",
    "choose_mechanism",
    "clip_to_norm",
    "person_matrix",
    "repeated_invocations",
]

dp.enable_features("contrib", "honest-but-curious")

#: Most loss a private bound takes from one aggregate (ε under pure DP; ρ = ε²/2 under zCDP),
#: whatever ``contribution_bound_share`` of a large loss would be. OpenDP's quantile (the
#: exponential mechanism over ~80 candidates) at ε = 0.05 lands within about
#: 2 ln(80) / 0.05 ≈ 175 people of the target rank: under 2 percentiles of the ≥ 10,000 people
#: a useful per-cell release reads. The category mix at 50,000 customers gave 0.16 of its
#: 0.78 ε per aggregate to its bound; capped, its noise falls by 16 %
#: (benchmarks/bench_utility.py).
BOUND_LOSS_CAP: dict[str, float] = {DPFamily.PURE: 0.05, DPFamily.ZCDP: pure_to_rho(0.05)}

#: Most a segment's own private bound may exceed the median segment's (a public multiplier):
#: heavy buyers' segments get up to twice the typical bound, a small segment's noisy pick no
#: more. Measured by benchmarks/bench_utility.py (category mix, AllOffice, 50,000 customers):
#: see the module's notes on per-segment bounds in VectorRelease.
GROUP_BOUND_SPREAD = 2.0

#: The clipped excess of a person counts their norm above the bound ``C`` up to
#: ``EXCESS_SPAN × C`` more (a public multiplier): the sensitivity of the excess's sum. On the
#: synthetic data (50,000 customers, three months) 3.2-4.0 % of a month's units lie above
#: ``C`` (2 × the private p90) and 0.2-0.3 % above ``2 C``; a span of 2 would leave
#: 0.01-0.04 % out but double the excess's noise.
EXCESS_SPAN = 1.0
#: Share of each aggregate's loss the purchasing series gives its clipped excess (taken from
#: the sum's). A forecast pools the excess over its ~30 training months; its standard error
#: falls as 1 / (share x customers). At AllOffice's planned ~0.14 a month and 50,000
#: customers a share of 0.10 gives about 2 % (1 % at 100,000 customers: a month's excess
#: has noise scale ~30,000 units on ~370,000 released), against a bias of 3.5-4.5 %. 0.20
#: would halve it, but the series' sums would then need a third more ε for the same noise,
#: and the planner then left Offix's segment overview and survey out at 60,000 customers
#: (tests/test_planner.py).
EXCESS_SHARE = 0.10

#: The person frame handed to OpenDP: a LazyFrame of cells (``pid``, keys, aggregates).
CELLS_DOMAIN = dp.user_domain("PersonCellsLazyFrame", lambda x: isinstance(x, pl.LazyFrame))

#: Inside :func:`repeated_invocations`: ids of (step, input) → (step, input, step's result).
_REPEATED: ContextVar[dict[tuple[int, int], tuple[Any, Any, Any]] | None] = ContextVar(
    "segments_repeated_invocations", default=None
)
_Result = TypeVar("_Result")

#: Inside :meth:`VectorRelease.run`: (input id, aggregate) → (input, its person vectors).
_RUN_VECTORS: ContextVar[dict[tuple[int, str], tuple[Any, PersonVectors]] | None] = ContextVar(
    "segments_run_vectors", default=None
)


@contextlib.contextmanager
def repeated_invocations() -> Iterator[None]:
    """Within the block, the deterministic step of a vector query (each person's vector
    clipped to its norm and summed, the persons' norms, or the clipped excess), run again on
    the *same* input object, returns what it computed the first time; the OpenDP noise after
    it is drawn afresh at every invocation, so each output has the distribution of a fresh
    run.

    For the empirical DP audit, which invokes each resolved measurement hundreds of times on
    one in-memory frame: the step is a function of its input alone, and its polars work
    (join, group by, rank of ~40,000 rows) was most of each invocation (the main job's audit
    spent 87 of its 145 s of OpenDP calls in it). Releases invoke a measurement once and
    never enter the block. Steps and inputs are held (not only their ids) until the block
    ends, so an id is never reused for another step or frame inside it."""
    token = _REPEATED.set({})
    try:
        yield
    finally:
        _REPEATED.reset(token)


def _once_per_input(step: Callable[[pl.LazyFrame], _Result]) -> Callable[..., _Result]:
    """``step`` computed once per input object inside :func:`repeated_invocations` (a fresh
    copy of a list each time), as it is everywhere else."""

    def run(data: pl.LazyFrame) -> _Result:
        memo = _REPEATED.get()
        if memo is None:
            return step(data)
        key = (id(step), id(data))
        if key not in memo:
            memo[key] = (step, data, step(data))
        result = memo[key][2]
        return list(result) if isinstance(result, list) else result  # type: ignore[return-value]

    return run


def clip_to_norm(matrix: np.ndarray, bound: float, norm: str) -> np.ndarray:
    """Scale each row (a person's non-negative integer vector) down to ``norm`` ≤ ``bound``.

    Rows are scaled by ``min(1, bound / ‖row‖)`` and floored, so every row keeps its
    direction and its norm never exceeds ``bound``.

    Examples
    --------
    >>> clip_to_norm(np.array([[30, 10], [3, 1]]), 20, "l1").tolist()
    [[15, 5], [3, 1]]
    """
    values = np.clip(np.asarray(matrix, dtype=np.int64), 0, None)
    if norm == "l1":
        norms = values.sum(axis=1, dtype=np.float64)
    elif norm == "l2":
        norms = np.sqrt((values.astype(np.float64) ** 2).sum(axis=1))
    else:
        raise PolicyError(f"norm={norm!r} is unknown; use 'l1' or 'l2'")
    factor = np.minimum(1.0, bound / np.maximum(norms, 1e-300))
    return np.floor(values * factor[:, None]).astype(np.int64)


def person_matrix(
    frame: pl.DataFrame, keys: pl.DataFrame, by: Sequence[str], aggregate: str
) -> np.ndarray:
    """One row per person (``pid``), one column per public key row; values clipped at 0.

    Cells whose keys are not in ``keys`` are dropped (never released). The dense
    definition of a release's person vectors; releases use the sparse
    :class:`PersonVectors`, tested equal to it.
    """
    index = keys.select(list(by)).with_row_index("_cell")
    joined = frame.join(index, on=list(by), how="inner").select(
        "pid", "_cell", pl.col(aggregate).clip(0, None).cast(pl.Int64)
    )
    people = joined["pid"].rank("dense").cast(pl.Int64).to_numpy() - 1
    n_people = int(people.max()) + 1 if people.size else 0
    matrix = np.zeros((n_people, keys.height), dtype=np.int64)
    cells = joined["_cell"].cast(pl.Int64).to_numpy()
    np.add.at(matrix, (people, cells), joined[aggregate].to_numpy())
    return matrix


@dataclass(frozen=True)
class PersonVectors:
    """The persons' vectors of :func:`person_matrix`, sparse: only the entries a person has.

    A person touches a few of a release's cells (at most ``max_cells_per_person`` per
    month), while the dense matrix holds every person × every key: at 909,090 persons and
    64 keys, 465 MB per copy and five copies while clipping, most of a month-closing's
    memory at 30 million lines (``benchmarks/profile_release.py``). The arithmetic is the
    dense one, entry by entry (:meth:`norms`, :meth:`clipped_sum`; tested equal).
    """

    person: np.ndarray  # row of the dense matrix (0 .. n_people-1), one per entry
    cell: np.ndarray  # column: the public key row
    value: np.ndarray  # int64, ≥ 0 (negative contributions clipped to 0, then summed)
    n_people: int
    n_cells: int
    #: each row's ``pid`` (ascending: row ``i`` is the ``i``-th smallest key with an entry)
    people: np.ndarray | None = None

    @classmethod
    def of(
        cls,
        frame: pl.DataFrame | pl.LazyFrame,
        keys: pl.DataFrame,
        by: Sequence[str],
        aggregate: str,
    ) -> PersonVectors:
        """The entries of ``person_matrix(frame, keys, by, aggregate)`` that can be non-zero.

        Only the join to the public keys runs in polars, streamed (a LazyFrame of a Parquet
        file is read in pieces, and only ``pid``, the key row and the value are held, not
        the key columns' text); the persons' ranks and the sums per (person, cell) are a
        numpy sort of the rows by (``pid``, cell) (exact int64 sums, entries in (person,
        cell) order), instead of a polars group-by and rank
        (``benchmarks/profile_release.py``)."""
        index = keys.select(list(by)).with_row_index("_cell").lazy()
        joined = (
            frame.lazy()
            .select("pid", *by, aggregate)
            .join(index, on=list(by), how="inner")
            .select(
                "pid",
                pl.col("_cell").cast(pl.Int64),
                pl.col(aggregate).clip(0, None).cast(pl.Int64).fill_null(0).alias("_value"),
            )
            .collect(engine="streaming")
        )
        pid = joined["pid"].to_numpy()
        cell = joined["_cell"].to_numpy()
        value = joined["_value"].to_numpy()
        del joined
        # rows in (pid, cell) order, each column gathered in turn and its unsorted copy let
        # go: the three columns and one sorted copy at a time (np.unique's sort of the keys
        # and a sort of a per-(person, cell) code held twice that; issue 21)
        order = np.lexsort((cell, pid))
        pid = pid[order]
        cell = cell[order]
        value = value[order]
        del order
        new_person = np.r_[True, pid[1:] != pid[:-1]] if pid.size else np.zeros(0, bool)
        new_entry = new_person.copy()
        new_entry[1:] |= cell[1:] != cell[:-1]
        first = np.flatnonzero(new_entry)
        sums = np.add.reduceat(value, first) if value.size else value
        person = (np.cumsum(new_person, dtype=np.int64) - 1)[first]
        people = pid[new_person]
        return cls(person, cell[first], sums, int(people.size), keys.height, people)

    def norms(self, norm: str) -> np.ndarray:
        """Each person's norm (L1 or L2), as :func:`_norms` of the dense matrix: integers
        summed in float64 (exact below 2**53, so in any order)."""
        values = self.value.astype(np.float64)
        weights = values if norm == "l1" else values**2
        sums = np.bincount(self.person, weights=weights, minlength=self.n_people)
        return sums if norm == "l1" else np.sqrt(sums)

    def clipped_sum(self, bound: float, norm: str) -> np.ndarray:
        """``clip_to_norm(matrix, bound, norm).sum(axis=0)`` without the matrix: each entry
        scaled by its person's ``min(1, bound / norm)`` and floored, summed per cell in
        integers."""
        factor = np.minimum(1.0, bound / np.maximum(self.norms(norm), 1e-300))
        clipped = np.floor(self.value * factor[self.person]).astype(np.int64)
        out = np.zeros(self.n_cells, dtype=np.int64)
        np.add.at(out, self.cell, clipped)
        return out


def choose_mechanism(family: str, l1_bound: float, l2_bound: float, rho_or_eps: float) -> str:
    """The mechanism with the smaller expected error for the policy's family.

    Pure DP allows only Laplace (Gaussian noise is not ε-DP). Under zCDP both are allowed:
    Laplace at ε = √(2ρ) (an ε-DP mechanism is ε²/2-zCDP) with the L1 bound, or Gaussian at
    ρ with the L2 bound; the smaller 95 % half-width wins. (For one vector L2 ≤ L1 and
    z₀.₉₇₅ = 1.96 < ln 20 = 3.0, so under zCDP Gaussian wins even when a person touches
    one cell; a person touching k cells gains a further √k.)

    Examples
    --------
    >>> choose_mechanism("zcdp", 100.0, 100.0 / math.sqrt(10), 0.01)
    'gaussian'
    >>> choose_mechanism("pure", 100.0, 100.0 / math.sqrt(10), 0.01)
    'laplace'
    """
    if family == DPFamily.PURE:
        return "laplace"
    laplace = expected_half_width("laplace", l1_bound, pure_epsilon_of_rho(rho_or_eps), 0.05)
    gaussian = expected_half_width("gaussian", l2_bound, rho_or_eps, 0.05)
    return "gaussian" if gaussian < laplace else "laplace"


@dataclass
class VectorRelease:
    """One per-cell query as norm-bounded vector sums, one per aggregate (units, SEK).

    Parameters
    ----------
    by : tuple of str
        The query's public keys.
    keys : polars.DataFrame
        The public key rows (the vector's coordinates, in order).
    aggregates : tuple of str
    family : {'pure', 'zcdp'}
    mechanism : {'laplace', 'gaussian'}
    sum_losses : mapping
        Loss (ε under pure DP, ρ under zCDP) of each aggregate's noisy sum.
    bound_losses : mapping
        Loss of each aggregate's private bound; 0 where the bound is a public fact.
    public_bounds : mapping
        The public norm bound of each aggregate (a policy fact), or None: chosen privately.
    upper_bounds : mapping
        The public largest bound (the per-cell design's worst case): the top candidate.
    quantile : float
        The quantile of per-person norms the private bound aims at.
    factor : float
        The bound is ``factor`` × that private quantile (a public multiplier).
    where : polars.Expr, optional
        A filter on public attributes of the person, applied to the cells inside the
        measured function (a row-level transformation: one person's rows stay theirs).
    partition : str, optional
        A key whose values split the people into disjoint groups (``segment``: a person has
        one). With a private bound, each group gets its own bound, ``factor`` × its own
        private quantile (parallel composition: one person is in one group's quantile, so
        the quantiles together cost one quantile's loss), and its cells their own noise:
        a segment of heavy buyers is no longer clipped at the light buyers' bound, nor the
        light buyers' cells noised at the heavy buyers'. Implemented, as the category
        weights are, by weights: a group's cells are multiplied by ``C_max / C_group``
        before the clip at ``C_max`` (one noise scale, one stability map) and divided by it
        after the noise (post-processing, :meth:`group_weights`).
    excess_losses : mapping, optional
        Loss of each aggregate's clipped excess (the norm above the bound, up to
        :data:`EXCESS_SPAN` × the bound, summed over people and noised), measured after the
        sums in the same compositor; empty: not measured.
    """

    by: tuple[str, ...]
    keys: pl.DataFrame
    aggregates: tuple[str, ...]
    family: str
    mechanism: str
    sum_losses: Mapping[str, float]
    bound_losses: Mapping[str, float]
    public_bounds: Mapping[str, float | None]
    upper_bounds: Mapping[str, float]
    quantile: float
    factor: float = 1.0
    chosen: dict[str, BoundChoice] = field(default_factory=dict)
    where: Any = None
    partition: str | None = None
    #: per aggregate, the bound of each group of :attr:`partition` (chosen privately)
    group_bounds: dict[str, dict[str, float]] = field(default_factory=dict)
    #: per aggregate, the loss of its clipped excess's noisy sum (empty: not measured); see
    #: the module's notes and :meth:`excess_measurement`
    excess_losses: Mapping[str, float] = field(default_factory=dict)
    #: per aggregate, the released (noisy) clipped excess, once :meth:`run` has run
    excess: dict[str, int] = field(default_factory=dict)
    #: per aggregate, the weight each key row's cells were multiplied by before the release
    #: (the category weights): the excess is measured in the categories' own units
    excess_weights: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def norm(self) -> str:
        """The norm the vector is clipped in: l1 for Laplace noise, l2 for Gaussian."""
        return "l1" if self.mechanism == "laplace" else "l2"

    @property
    def measure(self) -> Any:
        """OpenDP's privacy measure of the release's family."""
        return privacy_measure(self.family)

    def private(self, aggregate: str) -> bool:
        """Whether ``aggregate``'s bound is chosen privately (no public bound given)."""
        return self.public_bounds.get(aggregate) is None

    def bound(self, aggregate: str) -> float:
        """The norm bound in force: public, chosen privately, or (before that) the top one."""
        public = self.public_bounds.get(aggregate)
        if public is not None:
            return float(public)
        if aggregate in self.chosen:
            return self.chosen[aggregate].bound
        return float(self.upper_bounds[aggregate])

    def candidates(self, aggregate: str) -> list[float]:
        """The bounds a private choice picks from, up to the aggregate's top bound."""
        return bound_candidates(float(self.upper_bounds[aggregate]))

    @property
    def partitioned(self) -> bool:
        """Whether groups get their own private bounds (a partition key and a private bound)."""
        return self.partition is not None and any(self.private(a) for a in self.aggregates)

    def group_weights(self, aggregate: str) -> np.ndarray:
        """Per key row: ``C_max / C_group`` of the row's group (1 without group bounds)."""
        bounds = self.group_bounds.get(aggregate)
        if not bounds or self.partition is None:
            return np.ones(self.keys.height)
        top = max(bounds.values())
        groups = self.keys[self.partition].to_list()
        return np.array([top / bounds[g] for g in groups], dtype=np.float64)

    # --- OpenDP pieces -------------------------------------------------------------------
    def scale(self, aggregate: str, bound: float | None = None) -> float:
        """Noise scale of an aggregate's sum at its bound and loss."""
        c = float(math.ceil(self.bound(aggregate) if bound is None else bound))
        loss = self.sum_losses[aggregate]
        if self.mechanism == "laplace":
            epsilon = loss if self.family == DPFamily.PURE else pure_epsilon_of_rho(loss)
            return noise_scale(DPFamily.PURE, c, epsilon) * (1.0 + 1e-12)
        return noise_scale(DPFamily.ZCDP, c, loss) * (1.0 + 1e-12)

    def _person_vectors(self, data: pl.LazyFrame, aggregate: str) -> PersonVectors:
        """The persons' vectors of one aggregate on ``data``; inside :meth:`run`, built once
        per input and aggregate and shared by its steps (the norms for the private bound, the
        clipped sums, the clipped excess), as :func:`repeated_invocations` shares a step's
        result: a function of the input alone, so each step computes what it computed
        alone. The run holds each aggregate's vectors (a few int64 arrays, one entry per
        person and cell) until it ends."""
        memo = _RUN_VECTORS.get()
        key = (id(data), aggregate)
        if memo is not None and key in memo:
            return memo[key][1]
        rows = data if self.where is None else data.filter(self.where)
        vectors = PersonVectors.of(rows, self.keys, self.by, aggregate)
        if memo is not None:
            memo[key] = (data, vectors)
        return vectors

    def _vectors(self, data: pl.LazyFrame, aggregate: str, weights: np.ndarray) -> PersonVectors:
        vectors = self._person_vectors(data, aggregate)
        if self.group_bounds.get(aggregate):
            # a group's cells on the largest group's scale: the clip at c is then the
            # group's own bound for a person of that group, and any row's norm stays <= c
            scaled = np.floor(vectors.value * weights[vectors.cell]).astype(np.int64)
            vectors = replace(vectors, value=scaled)
        return vectors

    def excess_span(self, aggregate: str) -> int:
        """Sensitivity of the clipped excess's sum at the bound in force: one person's
        excess is at most :data:`EXCESS_SPAN` × the (whole) bound."""
        return max(int(math.ceil(EXCESS_SPAN * math.ceil(self.bound(aggregate)))), 1)

    def excess_scale(self, aggregate: str) -> float:
        """Noise scale of the clipped excess's sum at the bound in force and its loss."""
        span, loss = float(self.excess_span(aggregate)), self.excess_losses[aggregate]
        if self.mechanism == "laplace":
            epsilon = loss if self.family == DPFamily.PURE else pure_epsilon_of_rho(loss)
            return noise_scale(DPFamily.PURE, span, epsilon) * (1.0 + 1e-12)
        return noise_scale(DPFamily.ZCDP, span, loss) * (1.0 + 1e-12)

    def _excess_measurement(self, aggregate: str) -> Any:
        """OpenDP measurement of one aggregate's clipped excess: what the clip at the bound
        ``c`` in force removes from each person, up to a clip at ``c + span``, in the
        categories' own units (each cell divided by its weight :attr:`excess_weights`, so a
        chair counts once, not as ten reams), at most ``span`` per person (rounded to whole
        units), summed, noised. One person added or removed moves the sum by at most
        ``span``."""
        c = int(math.ceil(self.bound(aggregate)))
        span = self.excess_span(aggregate)
        weights = self.group_weights(aggregate)
        own = np.asarray(self.excess_weights.get(aggregate, np.ones(self.keys.height)), float)

        def excess_sum(data: pl.LazyFrame) -> int:
            vectors = self._vectors(data, aggregate, weights)
            norms = np.maximum(vectors.norms(self.norm), 1e-300)
            kept = np.minimum(1.0, c / norms)
            kept_wider = np.minimum(1.0, (c + span) / norms)
            removed = (kept_wider - kept)[vectors.person] * vectors.value
            removed = removed / (own[vectors.cell] * weights[vectors.cell])
            per_person = np.bincount(vectors.person, weights=removed, minlength=vectors.n_people)
            return int(np.rint(np.clip(per_person, 0.0, float(span))).sum())

        metric = dp.absolute_distance(T="i64")
        chain = dp.t.make_user_transformation(
            CELLS_DOMAIN,
            dp.symmetric_distance(),
            dp.atom_domain(T="i64"),
            metric,
            function=_once_per_input(excess_sum),
            stability_map=lambda d_in: int(d_in) * span,
        )
        scale = self.excess_scale(aggregate)
        if self.mechanism == "gaussian":
            return chain >> dp.m.then_gaussian(scale)
        measurement = chain >> dp.m.then_laplace(scale)
        return (
            measurement if self.family == DPFamily.PURE else dp.c.make_pureDP_to_zCDP(measurement)
        )

    def excess_measurement(self) -> Any:
        """The clipped excesses of the aggregates with an excess loss, composed: a list of
        noisy integers in the order of :attr:`aggregates`. Its ``map(1)`` is their loss."""
        parts = [self._excess_measurement(a) for a in self.aggregates if a in self.excess_losses]
        return dp.c.make_composition(parts) if len(parts) > 1 else parts[0]

    def _sum_transformation(self, aggregate: str, bound: float) -> Any:
        c = int(math.ceil(bound))
        # i64, not Python int's default i32: a month's SEK sum over 60 M lines passes 2^31
        metric = dp.l1_distance(T="i64") if self.norm == "l1" else dp.l2_distance(T="i64")
        weights = self.group_weights(aggregate)

        def clipped_sum(data: pl.LazyFrame) -> list[int]:
            vectors = self._vectors(data, aggregate, weights)
            return [int(v) for v in vectors.clipped_sum(c, self.norm)]

        return dp.t.make_user_transformation(
            CELLS_DOMAIN,
            dp.symmetric_distance(),
            dp.vector_domain(dp.atom_domain(T="i64")),
            metric,
            function=_once_per_input(clipped_sum),
            # one person's clipped vector has norm <= c: d_in people move the sum by d_in*c
            stability_map=lambda d_in: int(d_in) * c,
        )

    def _sum_measurement(self, aggregate: str, bound: float) -> Any:
        chain = self._sum_transformation(aggregate, bound)
        scale = self.scale(aggregate, bound)
        if self.mechanism == "gaussian":
            return chain >> dp.m.then_gaussian(scale)
        measurement = chain >> dp.m.then_laplace(scale)
        return (
            measurement if self.family == DPFamily.PURE else dp.c.make_pureDP_to_zCDP(measurement)
        )

    def _norms_transformation(self, aggregate: str) -> Any:
        def norms(data: pl.LazyFrame) -> list[float]:
            vectors = self._person_vectors(data, aggregate)
            return [float(v) for v in vectors.norms(self.norm)]

        return dp.t.make_user_transformation(
            CELLS_DOMAIN,
            dp.symmetric_distance(),
            dp.vector_domain(dp.atom_domain(T=float, nan=False)),
            dp.symmetric_distance(),
            function=_once_per_input(norms),
            stability_map=lambda d_in: int(d_in),  # one value per person
        )

    def group_norms(
        self, data: pl.DataFrame | pl.LazyFrame, aggregate: str
    ) -> dict[str, np.ndarray]:
        """Each group's persons' norms, in ``pid`` order: a person is in the group of their
        first row of ``data`` (their rows in other groups dropped), so no person is in two
        groups. The :attr:`partition` is one of the keys (:attr:`by`), so a key row names its
        group.

        One build of the vectors for all groups, the one the sums use
        (:meth:`_person_vectors`, shared inside :meth:`run`), with each person's entries
        outside their group's cells dropped: a cell lies in one group, so a group's norms are
        exactly those of a build from its rows alone (tested equal). Only ``pid`` and the
        group of each row are read besides (their first row per person): at 10 million
        lines the whole frame of cells and its filtered copy were held for a second build
        (the month-closing's peak, 774-799 MB; issue 21)."""
        assert self.partition is not None
        partition = self.partition
        lazy = data.lazy()  # a LazyFrame itself: the run's vectors of it are shared
        rows = lazy if self.where is None else lazy.filter(self.where)
        first = (
            rows.group_by("pid")
            .agg(pl.col(partition).first().alias("_group"))
            .sort("pid")
            .collect()
        )
        vectors = self._person_vectors(lazy, aggregate)
        groups = list(dict.fromkeys(self.keys[partition].to_list()))
        code = {group: i for i, group in enumerate(groups)}
        of_cell = np.array([code[g] for g in self.keys[partition].to_list()], dtype=np.int64)
        # each person's group (-1: a group with no key row, so no cell of theirs is kept)
        first_group = (
            first["_group"].replace_strict(code, default=-1, return_dtype=pl.Int64).fill_null(-1)
        )
        assert vectors.people is not None
        at = np.searchsorted(first["pid"].to_numpy(), vectors.people)
        of_person = first_group.to_numpy()[at]
        kept = of_cell[vectors.cell] == of_person[vectors.person]
        people, person = np.unique(vectors.person[kept], return_inverse=True)
        own = PersonVectors(
            person.reshape(-1),
            vectors.cell[kept],
            vectors.value[kept],
            int(people.size),
            vectors.n_cells,
        )
        norms = own.norms(self.norm)
        group_of = of_person[people]
        return {group: norms[group_of == code[group]] for group in groups}

    def bound_measurement(self, aggregate: str) -> Any:
        """OpenDP measurement of an aggregate's private bound (the quantile of norms); with a
        :attr:`partition`, a dict of each group's quantile (:meth:`_group_bounds_measurement`)."""
        quantile = make_private_bound(
            self.candidates(aggregate),
            self.quantile,
            self.bound_losses[aggregate],
            self.family,
        )
        if self.partitioned:
            return self._group_bounds_measurement(aggregate, quantile)
        return self._norms_transformation(aggregate) >> quantile

    def _group_bounds_measurement(self, aggregate: str, quantile: Any) -> Any:
        """Each group's quantile of its people's norms, by OpenDP's quantile measurement run
        once per group; parallel composition: a person's rows fall in one group (the group
        of their first cell; any others are dropped here, so no person is in two groups'
        inputs), so one person changes one group's input and the loss is one quantile's."""
        assert self.partition is not None
        partition: str = self.partition
        groups = list(dict.fromkeys(self.keys[partition].to_list()))

        def per_group(data: pl.LazyFrame) -> dict[str, float]:
            norms = self.group_norms(data, aggregate)
            return {group: float(quantile([float(v) for v in norms[group]])) for group in groups}

        return dp.m.make_user_measurement(
            CELLS_DOMAIN,
            dp.symmetric_distance(),
            self.measure,
            function=per_group,
            privacy_map=lambda d_in: quantile.map(d_in),
            TO="ExtrinsicObject",
        )

    def measurement(self, bounds: Mapping[str, float] | None = None) -> Any:
        """The noisy sums at fixed bounds, composed: LazyFrame → LazyFrame of released cells.

        Default bounds: those in force (:meth:`bound`). Its ``map(1)`` is the sums' loss.
        """
        bounds = {a: (bounds or {}).get(a, self.bound(a)) for a in self.aggregates}
        parts = [self._sum_measurement(a, bounds[a]) for a in self.aggregates]
        composed = dp.c.make_composition(parts) if len(parts) > 1 else parts[0]
        single = len(parts) == 1
        return composed >> dp.new_function(
            lambda answers: self._as_frame([answers] if single else answers).lazy(),
            TO="ExtrinsicObject",
        )

    def _as_frame(self, answers: Sequence[Sequence[int]]) -> pl.DataFrame:
        return self.keys.with_columns(
            pl.Series(a, list(v), dtype=pl.Int64)
            for a, v in zip(self.aggregates, answers, strict=True)
        )

    def d_mids(self) -> list[float]:
        """Each step's privacy loss for the compositor: the private bounds, the sums, then the
        clipped excesses (if measured)."""
        bound = [self.bound_losses[a] for a in self.aggregates if self.private(a)]
        excess = [math.fsum(self.excess_losses.values())] if self.excess_losses else []
        return [*bound, math.fsum(self.sum_losses[a] for a in self.aggregates), *excess]

    def compositor(self) -> Any:
        """OpenDP's adaptive compositor of the whole query: private bounds, then sums."""
        return dp.c.make_adaptive_composition(
            CELLS_DOMAIN, dp.symmetric_distance(), self.measure, d_in=1, d_mids=self.d_mids()
        )

    @property
    def loss(self) -> float:
        """The query's loss as OpenDP's compositor computes it (ε, or ρ under zCDP)."""
        return float(self.compositor().map(1))

    def run(self, data: pl.LazyFrame) -> pl.DataFrame:
        """Choose the private bounds, then release the sums (and the clipped excesses, into
        :attr:`excess`), all inside one compositor; the persons' vectors of each aggregate
        are built once for all its steps (:meth:`_person_vectors`)."""
        token = _RUN_VECTORS.set({})
        try:
            return self._run(data)
        finally:
            _RUN_VECTORS.reset(token)

    def _run(self, data: pl.LazyFrame) -> pl.DataFrame:
        queryable = self.compositor()(data)
        for aggregate in self.aggregates:
            if self.private(aggregate):
                answer = queryable(self.bound_measurement(aggregate))
                top = float(self.upper_bounds[aggregate])
                if self.partitioned:
                    own = {g: min(max(float(q), 1.0) * self.factor, top) for g, q in answer.items()}
                    # a small segment's quantile is noisy (the exponential mechanism's rank
                    # error, ~ln(candidates)/ε people, is a good part of a few hundred) and
                    # mostly errs high, which noises its cells: no segment's bound exceeds
                    # GROUP_BOUND_SPREAD x the median segment's (post-processing)
                    cap = GROUP_BOUND_SPREAD * float(np.median(list(own.values())))
                    self.group_bounds[aggregate] = {g: min(b, cap) for g, b in own.items()}
                    quantile = max(self.group_bounds[aggregate].values()) / self.factor
                else:
                    quantile = float(answer)
                self.chosen[aggregate] = BoundChoice(
                    min(quantile * self.factor, top),
                    self.quantile,
                    self.bound_losses[aggregate],
                    self.family,
                    tuple(self.candidates(aggregate)),
                    self.factor,
                )
        released = queryable(self.measurement()).collect()
        if self.excess_losses:
            answer = queryable(self.excess_measurement())
            measured = [a for a in self.aggregates if a in self.excess_losses]
            values = answer if len(measured) > 1 else [answer]
            self.excess = {a: int(v) for a, v in zip(measured, values, strict=True)}
        return released

    def summary(self, alpha: float) -> pl.DataFrame:
        """Per aggregate: distribution, scale, accuracy at the bound in force."""
        distribution = "Integer Laplace" if self.mechanism == "laplace" else "Integer Gaussian"
        rows = []
        for a in self.aggregates:
            scale = self.scale(a)
            rows.append(
                {
                    "column": a,
                    "aggregate": "Sum",
                    "distribution": distribution,
                    "scale": scale,
                    "accuracy": noise_accuracy(distribution, scale, alpha),
                }
            )
        return pl.DataFrame(rows)
