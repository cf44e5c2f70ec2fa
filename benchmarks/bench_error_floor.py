"""How far issue 14's "10x lower median error" is from what any clip-and-noise release can reach.

The monthly purchasing series (units and SEK per category, the last 12 closed months) is
evaluated ANALYTICALLY, no noise drawn: for each cell the released value is the clipped sum
plus noise of a known distribution (Laplace under pure DP, Gaussian (or Laplace) under zCDP,
as the library chooses), so ``P(|bias(C) + noise| <= m × truth)`` is a difference of two CDF
values, and the median relative error pooled over the cells (as bench_utility pools them) is
the ``m`` at which the mean of those probabilities over the cells is one half (bisection).
Publishing ``max(0, value)`` (the series' post-processing) changes no error below 100 %, so it
changes no median below 100 %.

For each dataset × policy the data are prepared as the main job prepares them (statistics
purpose); each month's persons' vectors are built by the library itself (``plan_release`` of
the ``monthly_category`` spec: the shared cells frame, the category weights, the vector
release with its loss split; :class:`~segments.privacy.vectors.PersonVectors`), the truth is
the unclipped sum of the prepared lines (bench_utility's ``_true_month``). Per aggregate:

* **baseline** (the per-cell design bench_utility measures): each cell clipped at its
  category's bound, L1 = cells × bound, half the baseline ε (``pipeline.plan_budget``) per
  aggregate; its noise scale is read from the library's own per-cell query
  (``releases._build_polars_query``);
* **(a) the design as it runs**: the planned ε (the accuracy planner on the scale probe, as
  bench_utility), its split (units / SEK, the private bound's and the clip excess's shares)
  as the release splits it; the bound ``factor × `` OpenDP's private quantile of the persons'
  norms, whose distribution over the candidates is computed exactly from OpenDP's own scores
  (permute-and-flip under pure DP, Gumbel max under zCDP; checked against draws by
  ``--check-quantile``) — (a), and at the noiseless pick (the candidate with the best score) —
  (a0);
* **(b) the family's floor at the planned ε**: the release's WHOLE per-month loss on this one
  aggregate, no bound cost, no excess, the bound ``C`` picked by an oracle (the truth: the
  multiple of each month's exact 90th percentile of the persons' norms that gives the lowest
  pooled median, over a grid 2^(k/8), 1/4 to 64);
* **(c)** (b) at the baseline's ε per month;
* **(b2)** the whole per-month loss on one aggregate at the design's own bound rule
  (``factor`` × the exact p90: the split's cost apart from the bound's), and the design's
  rule with no noise at all (the clip's bias alone: the floor no ε takes the design below);
* with ``--factors``, the design with other public multipliers of its private quantile.

Then the 10x target (the baseline's analytic median / 10), and the per-month ε at which the
oracle of (b) and the design (a) reach it (bisection), as a share of the policy's yearly
budget (pure: 12 ε over the budget; zCDP: 12 ρ over the budget's ρ at δ); for both
aggregates, the oracle's two losses added, the design's larger need (one release).
``--committed`` runs on the committed 5,000-customer dataset (issue 14's own data).
``--mix`` does the category mix per segment instead (the whole window's vectors, one bound
per segment): the baseline, the design with each segment's quantile at its best-scored
candidate (a0; capped as the release caps), the oracle floor (b), (c) and the oracle's share
of the year for 10x on both aggregates.

Seeds are drawn at run time (printed and stored; ``--seed`` replays a master seed).

    PYTHONPATH=src nice -n 10 python benchmarks/bench_error_floor.py --customers 50000 100000 \
        --policy all
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.special import ndtr

import segments.privacy._opendp as dp
from segments.pipeline import plan_budget
from segments.policy import POLICY_NAMES, Policy
from segments.privacy import releases
from segments.privacy.archive import month_start, next_month
from segments.privacy.bounds import make_private_bound
from segments.privacy.composition import (
    DPFamily,
    epsilon_to_rho,
    loss_parameter,
    rho_to_epsilon,
)
from segments.privacy.releases import plan_release
from segments.privacy.specs import QUERIES, SPECS, PrivacyParams, SegmentSource
from segments.privacy.vectors import PersonVectors, VectorRelease

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utility import COMMITTED, _plan, _prepare, _probe, _true_month  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "bench_error_floor.json"
AGGREGATES = ("units", "sek")
#: the oracle's bounds: multiples of each month's exact 90th percentile of the persons' norms
MULTIPLES = 2.0 ** (np.arange(-16, 49) / 8.0)


# --- noise distributions ------------------------------------------------------------------
def _cdf(distribution: str, x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """CDF of zero-mean noise of ``scale`` (Laplace b, or Gaussian σ) at ``x``."""
    z = x / scale
    if distribution == "laplace":
        return np.where(z < 0, 0.5 * np.exp(np.minimum(z, 0)), 1 - 0.5 * np.exp(-np.maximum(z, 0)))
    return ndtr(z)


def _within(m: float, cells: list[tuple[np.ndarray, np.ndarray, np.ndarray, str, np.ndarray]]):
    """Mean over every cell of P(|bias + noise| <= m × truth): ``cells`` is a list of
    (truth, bias, scale, distribution, weight of the row) groups; bias may hold several
    rows (bound choices) per cell, weighted by ``weight`` (summing to 1 per cell)."""
    total, count = 0.0, 0
    for truth, bias, scale, distribution, weight in cells:
        p = _cdf(distribution, m * truth - bias, scale) - _cdf(
            distribution, -m * truth - bias, scale
        )
        total += float((p * weight).sum())
        count += truth.shape[-1]
    return total / count


def pooled_median(cells: list[tuple[np.ndarray, ...]]) -> float:
    """The median relative error pooled over ``cells`` (see :func:`_within`), by bisection
    on a log scale between 1e-6 and 1e4."""
    lo, hi = math.log(1e-6), math.log(1e4)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _within(math.exp(mid), cells) >= 0.5:  # type: ignore[arg-type]
            hi = mid
        else:
            lo = mid
    return math.exp(hi)


def _group(truth, bias, scale, distribution, weight=None):
    """One group of cells for :func:`pooled_median`, cells with a zero truth left out (as
    bench_utility's relative error leaves them out)."""
    keep = truth > 0
    bias = np.atleast_2d(bias)
    scale = np.atleast_2d(scale)
    weight = np.ones((bias.shape[0], 1)) if weight is None else np.asarray(weight)[:, None]
    return (truth[keep], bias[:, keep], scale[:, keep], distribution, weight)


# --- OpenDP's private quantile: its exact distribution over the candidates ---------------
#: (id of the norms, candidates, alpha) -> (the norms, held so the id stays theirs, OpenDP's
#: scores of the candidates, the scores' sensitivity)
_SCORES: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray, float]] = {}


def quantile_choice_probabilities(
    norms: np.ndarray, candidates: list[float], alpha: float, family: str, loss: float
) -> np.ndarray:
    """Probability that OpenDP's private quantile (``bounds.make_private_bound``) picks each
    candidate on these ``norms``: OpenDP's own scores (``make_quantile_score_candidates``),
    the noise scale the loss gives them; under pure DP the lowest score after
    exponential noise is subtracted (permute-and-flip), under zCDP after Gumbel noise
    (a softmax). Integrated numerically (midpoint rule)."""
    key = (id(norms), tuple(candidates), alpha)
    if key not in _SCORES:
        score = dp.t.make_quantile_score_candidates(
            dp.vector_domain(dp.atom_domain(T=float, nan=False)),
            dp.symmetric_distance(),
            [float(c) for c in candidates],
            alpha,
        )
        scores = np.asarray(score([float(v) for v in norms]), dtype=np.float64)
        _SCORES[key] = (norms, scores, float(score.map(1)))
    _, s, sensitivity = _SCORES[key]
    # the scores' noise scale, from the loss OpenDP maps (composition.quantile_rank_halfwidth):
    # ε = 2 Δ / scale under pure DP, √(8ρ) = 2 Δ / scale under zCDP, Δ the scores' sensitivity
    epsilon = loss if family == DPFamily.PURE else math.sqrt(8.0 * loss)
    b = 2.0 * sensitivity / epsilon
    d = (s - s.min()) / b
    if family != DPFamily.PURE:
        w = np.exp(-d)
        return w / w.sum()
    # argmin(s_i - E_i), E ~ Exp(b): P(i) = ∫_0^∞ e^{-(d_i + t)} Π_{j≠i} (1 - e^{-(d_j + t)}) dt
    dt_ = 0.002
    t = (np.arange(int(60 / dt_)) + 0.5) * dt_
    live = d < 60
    dl = d[live]
    log_one_minus = np.log1p(-np.exp(-(dl[:, None] + t[None, :])))
    log_all = log_one_minus.sum(axis=0)
    p_live = (np.exp(-(dl[:, None] + t[None, :]) + log_all[None, :] - log_one_minus)).sum(
        axis=1
    ) * dt_
    p = np.zeros_like(d)
    p[live] = p_live
    return p / p.sum()


def check_quantile(m: MonthAggregate, draws: int) -> dict[str, Any]:
    """The analytic choice distribution against ``draws`` runs of OpenDP's measurement:
    the total variation distance between them."""
    v = m.vector
    candidates = v.candidates(m.aggregate)
    args = (v.quantile, v.family, v.bound_losses[m.aggregate])
    p = quantile_choice_probabilities(m.norms, candidates, *args)
    measurement = make_private_bound(candidates, v.quantile, v.bound_losses[m.aggregate], v.family)
    values = [float(x) for x in m.norms]
    index = {c: i for i, c in enumerate(candidates)}
    counts = np.zeros(len(candidates))
    for _ in range(draws):
        counts[index[float(measurement(values))]] += 1
    return {
        "month": m.month,
        "aggregate": m.aggregate,
        "draws": draws,
        "total_variation": float(0.5 * np.abs(counts / draws - p).sum()),
        "analytic_mean_candidate": float((p * np.asarray(candidates)).sum()),
        "drawn_mean_candidate": float((counts / draws * np.asarray(candidates)).sum()),
    }


# --- one month's inputs -----------------------------------------------------------------
@dataclass
class MonthAggregate:
    """One month × aggregate: what every design's error is computed from."""

    month: str
    aggregate: str
    truth: np.ndarray  # per key row (category), the categories' own units
    weights: np.ndarray  # per key row, the category weight of the release
    vectors: PersonVectors  # the release's persons' (weighted) vectors
    norms: np.ndarray
    p90: float
    vector: VectorRelease
    baseline_clipped: np.ndarray  # per-cell design: each cell clipped at its bound, summed
    baseline_scale: float  # on the weighted scale
    baseline_distribution: str
    _bias: dict[float, np.ndarray] = field(default_factory=dict)

    def bias_at(self, bound: float) -> np.ndarray:
        """``clipped(bound) - truth``, remembered per whole bound (the oracle asks often)."""
        c = float(math.ceil(bound))
        if c not in self._bias:
            self._bias[c] = self.clipped(c) - self.truth
        return self._bias[c]

    def clipped(self, bound: float) -> np.ndarray:
        """The clipped sum at norm bound ``bound`` (as the release: ceil), in own units."""
        c = float(math.ceil(bound))
        return self.vectors.clipped_sum(c, self.vector.norm) / self.weights


def _distribution(mechanism: str) -> str:
    return "laplace" if mechanism == "laplace" else "gaussian"


def month_aggregates(
    prepared: Path, params: PrivacyParams, as_of: dt.date, month: dt.date, eps_now, eps_base
) -> list[MonthAggregate]:
    spec = SPECS["monthly_category"].with_epsilon(eps_now)
    base_spec = SPECS["monthly_category"].with_epsilon(eps_base)
    truth = _true_month(prepared / "lines.parquet", month)
    out = []
    with plan_release(
        spec,
        params,
        customers=prepared / "customers.parquet",
        lines=prepared / "lines.parquet",
        as_of=as_of,
        window=(month, next_month(month)),
    ) as plan:
        query = plan.queries[0]
        vector = query.vector
        assert vector is not None
        cells = pl.scan_parquet(query.data_path)
        rows = cells if vector.where is None else cells.filter(vector.where)
        base = releases._build_polars_query(
            QUERIES["monthly_category"],
            releases._query_losses(base_spec, params)[0],
            params,
            query.data_path,
            None,
            0.05,
        )
        summary = base._summary
        keys = vector.keys.select("category")
        joined = keys.join(truth, on="category", how="left").fill_null(0)
        for agg in AGGREGATES:
            vectors = PersonVectors.of(rows, vector.keys, vector.by, agg)
            weights = releases._key_weights(vector.keys, params, agg)
            norms = vectors.norms(vector.norm)
            low, high = releases._aggregate_bounds(QUERIES["monthly_category"], agg, params)
            per_cell = (
                rows.group_by("category")
                .agg(pl.col(agg).clip(low, high).cast(pl.Int64).sum().alias("_c"))
                .collect()
            )
            clipped = keys.join(per_cell, on="category", how="left").fill_null(0)["_c"]
            row = summary.filter(pl.col("column") == agg).row(0, named=True)
            out.append(
                MonthAggregate(
                    month.isoformat(),
                    agg,
                    joined[f"{agg}_true"].to_numpy().astype(float),
                    weights,
                    vectors,
                    norms,
                    float(np.quantile(norms, params.contribution_quantile)),
                    vector,
                    clipped.to_numpy().astype(float) / weights,
                    float(row["scale"]),
                    "laplace" if "laplace" in str(row["distribution"]).lower() else "gaussian",
                )
            )
    return out


# --- the designs --------------------------------------------------------------------------
def baseline_group(m: MonthAggregate):
    return _group(
        m.truth, m.baseline_clipped - m.truth, m.baseline_scale / m.weights, m.baseline_distribution
    )


def design_groups(
    m: MonthAggregate, params: PrivacyParams, noiseless: bool, v: VectorRelease | None = None
):
    """(a): the release as it runs (or as ``v``, the release at another loss, would run); the
    bound's distribution from OpenDP's quantile (or, with ``noiseless``, its best-scored
    candidate)."""
    v = m.vector if v is None else v
    if not v.private(m.aggregate):
        bound = v.bound(m.aggregate)
        bias = m.bias_at(bound)
        return _group(
            m.truth, bias, v.scale(m.aggregate, bound) / m.weights, _distribution(v.mechanism)
        )
    candidates = v.candidates(m.aggregate)
    p = quantile_choice_probabilities(
        m.norms, candidates, v.quantile, v.family, v.bound_losses[m.aggregate]
    )
    if noiseless:
        p = np.eye(len(candidates))[int(np.argmax(p))]
    keep = p > 1e-9
    top = float(v.upper_bounds[m.aggregate])
    bounds = [min(c * v.factor, top) for c in np.asarray(candidates)[keep]]
    bias = np.stack([m.bias_at(c) for c in bounds])
    scale = np.stack([np.full(m.truth.shape, v.scale(m.aggregate, c)) / m.weights for c in bounds])
    return _group(m.truth, bias, scale, _distribution(v.mechanism), p[keep] / p[keep].sum())


def whole_loss_vector(m: MonthAggregate, params: PrivacyParams, loss: float) -> VectorRelease:
    """The release's vector with the whole per-month ``loss`` on this one aggregate: no
    bound cost, no excess; the release's own mechanism (the one ``choose_mechanism`` picks
    for the family: Laplace under pure DP, Gaussian under zCDP, whatever the loss)."""
    return replace(
        m.vector,
        sum_losses={m.aggregate: loss},
        bound_losses={m.aggregate: 0.0},
        excess_losses={},
    )


def oracle(months: list[MonthAggregate], params: PrivacyParams, loss: float) -> dict[str, Any]:
    """(b)/(c): the whole ``loss`` per month on one aggregate, the bound a multiple of each
    month's exact p90 of the norms, the multiple that gives the lowest pooled median."""
    best: dict[str, Any] = {"median": math.inf}
    for multiple in MULTIPLES:

        def at_multiple(m: MonthAggregate, v: VectorRelease, multiple: float = multiple) -> float:
            return max(multiple * m.p90, 1.0)

        median = _whole_loss_median(months, params, loss, at_multiple)
        if median < best["median"]:
            best = {"median": median, "multiple_of_p90": float(multiple)}
    bias_alone = _group(
        np.concatenate([m.truth for m in months]),
        np.concatenate([m.bias_at(max(best["multiple_of_p90"] * m.p90, 1.0)) for m in months]),
        np.full(sum(m.truth.size for m in months), 1e-9),
        "gaussian",
    )
    best["clip_bias_alone_median"] = pooled_median([bias_alone])
    return best


def design_at(
    months: list[MonthAggregate], params: PrivacyParams, epsilon: float, factor: float | None = None
) -> float:
    """(a) at another per-month ε: the release rebuilt by the library at that ε
    (``releases._vector_release``: its own split, the bound's cap included); ``factor``
    replaces the public multiplier of the private quantile (a lever, evaluation only)."""
    loss = releases._query_losses(SPECS["monthly_category"].with_epsilon(epsilon), params)[0]
    vector = releases._vector_release(QUERIES["monthly_category"], loss, params, None, 1)
    if factor is not None:
        vector = replace(vector, factor=factor)
    return pooled_median([design_groups(m, params, False, vector) for m in months])


def design_epsilon_for_target(
    months: list[MonthAggregate],
    params: PrivacyParams,
    target: float,
    factor: float | None = None,
) -> float | None:
    """The per-month ε at which the design as it runs (a) reaches ``target``; None where
    even 100 a month does not (the clip's bias at the design's bound is above it)."""
    lo, hi = math.log(1e-3), math.log(1e2)
    if design_at(months, params, math.exp(hi), factor) > target:
        return None
    for _ in range(25):
        mid = 0.5 * (lo + hi)
        if design_at(months, params, math.exp(mid), factor) <= target:
            hi = mid
        else:
            lo = mid
    return math.exp(hi)


def whole_loss_at_design_rule(
    months: list[MonthAggregate], params: PrivacyParams, loss: float
) -> float:
    """The whole per-month loss on one aggregate at the design's own rule for the bound
    (factor × the exact 90th percentile: the private quantile without its noise or cost)."""
    return _whole_loss_median(
        months,
        params,
        loss,
        lambda m, v: min(max(v.factor * m.p90, 1.0), float(v.upper_bounds[m.aggregate])),
    )


def _whole_loss_median(
    months: list[MonthAggregate],
    params: PrivacyParams,
    loss: float,
    bound_of: Callable[[MonthAggregate, VectorRelease], float],
) -> float:
    """The pooled median with the whole ``loss`` per month on one aggregate, each month
    clipped at ``bound_of(month, its whole-loss release)``."""
    truth, bias, scale = [], [], []
    for m in months:
        v = whole_loss_vector(m, params, loss)
        bound = bound_of(m, v)
        truth.append(m.truth)
        bias.append(m.bias_at(bound))
        scale.append(v.scale(m.aggregate, bound) / m.weights)
    group = _group(
        np.concatenate(truth),
        np.concatenate(bias),
        np.concatenate(scale),
        _distribution(months[0].vector.mechanism),
    )
    return pooled_median([group])


def epsilon_for_target(
    months: list[MonthAggregate], params: PrivacyParams, target: float
) -> float | None:
    """The per-month ε at which :func:`oracle` reaches ``target`` (bisection on log ε)."""
    lo, hi = math.log(1e-3), math.log(1e3)
    if (
        oracle(months, params, loss_parameter(params.dp_family, math.exp(hi), params.delta))[
            "median"
        ]
        > target
    ):
        return None
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        loss = loss_parameter(params.dp_family, math.exp(mid), params.delta)
        if oracle(months, params, loss)["median"] <= target:
            hi = mid
        else:
            lo = mid
    return math.exp(hi)


def share_of_budget(policy: Policy, params: PrivacyParams, eps_month: float) -> float:
    """Twelve months at ``eps_month`` as a share of the yearly budget (ρ under zCDP)."""
    budget = float(policy.privacy.budget_epsilon)
    if params.dp_family == DPFamily.PURE:
        return 12 * eps_month / budget
    return 12 * epsilon_to_rho(eps_month, params.delta) / epsilon_to_rho(budget, params.delta)


def run(
    customers: int,
    policy_name: str,
    seed: int | str,
    n_months: int = 12,
    check_draws: int = 0,
    factors: tuple[float, ...] = (),
) -> dict[str, Any]:
    policy = Policy.load(policy_name)
    params = PrivacyParams.from_policy(policy, "statistics")
    k = len(SegmentSource.category_rule().keys)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-error-floor-") as folder:
        prepared, as_of = _prepare(Path(folder), customers, policy, seed)
        scale = _probe(prepared, params, as_of, k)
        accuracy = _plan(policy, scale)
        eps_now = accuracy.epsilon("monthly_category")
        eps_base = plan_budget(policy).monthly
        months = []
        month = month_start(as_of)
        for _ in range(n_months):
            month = month_start(month - dt.timedelta(days=1))
            months.append(month)
        data = [
            a
            for month in months
            for a in month_aggregates(prepared, params, as_of, month, eps_now, eps_base)
        ]
    report: dict[str, Any] = {
        "customers": customers,
        "dataset_seed": seed,
        "policy": policy_name,
        "family": params.dp_family,
        "budget_epsilon": float(policy.privacy.budget_epsilon),
        "epsilon_per_month": {"planned": eps_now, "baseline": eps_base},
        "share_of_yearly_budget": {
            "planned": share_of_budget(policy, params, eps_now),
            "baseline": share_of_budget(policy, params, eps_base),
        },
        "months": [m.isoformat() for m in months],
        "scale_probe": scale.__dict__,
    }
    for agg in AGGREGATES:
        ms = [a for a in data if a.aggregate == agg]
        v = ms[0].vector
        baseline = pooled_median([baseline_group(m) for m in ms])
        design = pooled_median([design_groups(m, params, noiseless=False) for m in ms])
        design0 = pooled_median([design_groups(m, params, noiseless=True) for m in ms])
        loss_now = loss_parameter(params.dp_family, eps_now, params.delta)
        loss_base = loss_parameter(params.dp_family, eps_base, params.delta)
        floor_now = oracle(ms, params, loss_now)
        floor_base = oracle(ms, params, loss_base)
        target = baseline / 10.0
        needed = epsilon_for_target(ms, params, target)
        design_needed = design_epsilon_for_target(ms, params, target)
        report[agg] = {
            "baseline_median": baseline,
            "target_10x": target,
            "a_design_median": design,
            "a0_design_noiseless_bound_median": design0,
            "b_oracle_at_planned_epsilon": floor_now,
            "c_oracle_at_baseline_epsilon": floor_base,
            "b2_whole_loss_design_rule_bound_at_planned_epsilon": whole_loss_at_design_rule(
                ms, params, loss_now
            ),
            "design_epsilon_per_month_for_10x": design_needed,
            # the design's rule for the bound (2 x the exact p90) with no noise at all: the
            # clip's bias alone, the floor no ε takes the design below
            "design_rule_clip_bias_alone_median": whole_loss_at_design_rule(ms, params, 1e12),
            "gain_a": baseline / design,
            "gain_b": baseline / floor_now["median"],
            "gain_c": baseline / floor_base["median"],
            "epsilon_per_month_for_10x": needed,
            "share_of_yearly_budget_for_10x": None
            if needed is None
            else share_of_budget(policy, params, needed),
            "design_split": {
                "mechanism": v.mechanism,
                "loss_of_sum": v.sum_losses[agg],
                "loss_of_bound": v.bound_losses[agg],
                "loss_of_excess": v.excess_losses.get(agg, 0.0),
                "quantile": v.quantile,
                "factor": v.factor,
            },
            "baseline_distribution": ms[0].baseline_distribution,
            "mean_p90_norm": float(np.mean([m.p90 for m in ms])),
        }
    # the lever: the design with another public multiplier of its private quantile
    for factor in factors:
        needs = []
        for agg in AGGREGATES:
            ms = [a for a in data if a.aggregate == agg]
            eps = design_epsilon_for_target(ms, params, report[agg]["target_10x"], factor)
            report[agg].setdefault("factors", {})[f"{factor:g}"] = {
                "a_design_median": design_at(ms, params, eps_now, factor),
                "design_epsilon_per_month_for_10x": eps,
            }
            needs.append(eps)
        report.setdefault("both_aggregates_10x_by_factor", {})[f"{factor:g}"] = (
            None
            if None in needs
            else {
                "epsilon_per_month": max(n for n in needs if n is not None),
                "share": share_of_budget(policy, params, max(n for n in needs if n is not None)),
            }
        )
    # both aggregates at their 10x: the oracle releases each on its own loss (losses add:
    # ε under pure DP, ρ under zCDP); the design releases both in one release (the larger ε)
    oracle_needs = [report[a]["epsilon_per_month_for_10x"] for a in AGGREGATES]
    design_needs = [report[a]["design_epsilon_per_month_for_10x"] for a in AGGREGATES]
    both: dict[str, Any] = {"oracle": None, "design": None}
    if None not in oracle_needs:
        losses = [loss_parameter(params.dp_family, e, params.delta) for e in oracle_needs]
        total = sum(losses)
        eps = total if params.dp_family == DPFamily.PURE else rho_to_epsilon(total, params.delta)
        both["oracle"] = {"epsilon_per_month": eps, "share": share_of_budget(policy, params, eps)}
    if None not in design_needs:
        eps = max(design_needs)
        both["design"] = {"epsilon_per_month": eps, "share": share_of_budget(policy, params, eps)}
    report["both_aggregates_10x"] = both
    if check_draws:
        report["quantile_check"] = [check_quantile(data[0], check_draws)]
    report["seconds"] = time.perf_counter() - started
    return report


# --- the category mix per segment (a whole window's vectors, one bound per segment) -------
@dataclass
class MixAggregate:
    """One aggregate of the category mix per segment: the release's vectors and truth."""

    aggregate: str
    truth: np.ndarray  # per key row (segment x category), own units (the cells' unclipped sums)
    weights: np.ndarray  # per key row, the category weight
    vector: VectorRelease
    data: pl.LazyFrame
    group_p90: dict[str, float]  # each segment's exact p90 of its persons' norms
    group_norms: dict[str, np.ndarray]
    baseline_clipped: np.ndarray
    baseline_scale: float
    baseline_distribution: str
    _vectors: PersonVectors | None = None

    def at(self, group_bounds: dict[str, float], loss: float) -> tuple[np.ndarray, np.ndarray]:
        """(bias, noise scale) per key row with each segment clipped at its own bound, as the
        release does it (cells scaled by C_max / C_group, clipped at C_max, one noise scale,
        divided back): the whole ``loss`` on this aggregate's sum."""
        v = replace(self.vector, group_bounds={self.aggregate: dict(group_bounds)})
        v = replace(v, sum_losses={self.aggregate: loss}, bound_losses={self.aggregate: 0.0})
        top = max(group_bounds.values())
        gw = v.group_weights(self.aggregate)
        if self._vectors is None:  # the release's own build, once (VectorRelease._vectors)
            self._vectors = v._person_vectors(self.data, self.aggregate)
        base = self._vectors
        vectors = replace(base, value=np.floor(base.value * gw[base.cell]).astype(np.int64))
        clipped = vectors.clipped_sum(float(math.ceil(top)), v.norm) / gw / self.weights
        scale = np.full(self.truth.shape, v.scale(self.aggregate, top)) / gw / self.weights
        return clipped - self.truth, scale


def mix_aggregates(prepared: Path, params: PrivacyParams, as_of: dt.date, eps_mix, eps_base):
    """The category mix's inputs per aggregate (category-rule segments, as bench_utility)."""
    source = SegmentSource.category_rule()
    spec = SPECS["category_mix"].with_epsilon(eps_mix)
    base_spec = SPECS["category_mix"].with_epsilon(eps_base)
    query_def = QUERIES["category_by_segment"]
    out = []
    with plan_release(
        spec,
        params,
        customers=prepared / "customers.parquet",
        lines=prepared / "lines.parquet",
        segments=source,
        as_of=as_of,
    ) as plan:
        query = plan.queries[0]
        vector = query.vector
        assert vector is not None
        cells = pl.read_parquet(query.data_path)
        rows = cells if vector.where is None else cells.filter(vector.where)
        data = rows.lazy()
        keys = vector.keys.select("segment", "category")
        base = releases._build_polars_query(
            query_def,
            releases._query_losses(base_spec, params)[0],
            params,
            query.data_path,
            source,
            0.05,
        )
        for agg in AGGREGATES:
            weights = releases._key_weights(vector.keys, params, agg)
            sums = rows.group_by("segment", "category").agg(pl.col(agg).sum().alias("_t"))
            truth = keys.join(sums, on=["segment", "category"], how="left").fill_null(0)
            low, high = releases._aggregate_bounds(query_def, agg, params)
            per_cell = rows.group_by("segment", "category").agg(
                pl.col(agg).clip(low, high).cast(pl.Int64).sum().alias("_c")
            )
            clipped = keys.join(per_cell, on=["segment", "category"], how="left").fill_null(0)
            norms = vector.group_norms(data, agg)
            row = base._summary.filter(pl.col("column") == agg).row(0, named=True)
            out.append(
                MixAggregate(
                    agg,
                    truth["_t"].to_numpy().astype(float) / weights,
                    weights,
                    vector,
                    data,
                    {
                        g: float(np.quantile(n, params.contribution_quantile)) if n.size else 1.0
                        for g, n in norms.items()
                    },
                    norms,
                    clipped["_c"].to_numpy().astype(float) / weights,
                    float(row["scale"]),
                    "laplace" if "laplace" in str(row["distribution"]).lower() else "gaussian",
                )
            )
    return out


def _mix_median(m: MixAggregate, group_bounds: dict[str, float], loss: float) -> float:
    bias, scale = m.at(group_bounds, loss)
    return pooled_median([_group(m.truth, bias, scale, _distribution(m.vector.mechanism))])


def mix_design_noiseless(m: MixAggregate, loss_of_sum: float) -> float:
    """(a0) for the mix: each segment's bound from the best-scored candidate of its own
    quantile (the private quantile without its noise), times the factor, capped at the top
    and at GROUP_BOUND_SPREAD x the median segment's, as the release caps them."""
    from segments.privacy.vectors import GROUP_BOUND_SPREAD

    v = m.vector
    candidates = v.candidates(m.aggregate)
    top = float(v.upper_bounds[m.aggregate])
    own = {}
    for group, norms in m.group_norms.items():
        p = quantile_choice_probabilities(
            norms, candidates, v.quantile, v.family, max(v.bound_losses[m.aggregate], 1e-6)
        )
        own[group] = min(max(candidates[int(np.argmax(p))], 1.0) * v.factor, top)
    cap = GROUP_BOUND_SPREAD * float(np.median(list(own.values())))
    return _mix_median(m, {g: min(b, cap) for g, b in own.items()}, loss_of_sum)


def mix_oracle(m: MixAggregate, loss: float) -> dict[str, Any]:
    """(b) for the mix: the whole loss on this aggregate, each segment clipped at one
    multiple of its own exact p90, the multiple (grid) with the lowest pooled median."""
    best: dict[str, Any] = {"median": math.inf}
    for multiple in MULTIPLES[::2]:
        bounds = {g: max(multiple * q, 1.0) for g, q in m.group_p90.items()}
        median = _mix_median(m, bounds, loss)
        if median < best["median"]:
            best = {"median": median, "multiple_of_p90": float(multiple)}
    return best


def mix_epsilon_for_target(m: MixAggregate, params: PrivacyParams, target: float):
    lo, hi = math.log(1e-3), math.log(1e3)
    at = lambda e: mix_oracle(m, loss_parameter(params.dp_family, e, params.delta))["median"]  # noqa: E731
    if at(math.exp(hi)) > target:
        return None
    for _ in range(20):
        mid = 0.5 * (lo + hi)
        if at(math.exp(mid)) <= target:
            hi = mid
        else:
            lo = mid
    return math.exp(hi)


def run_mix(customers: int, policy_name: str, seed: int | str) -> dict[str, Any]:
    """The category mix per segment: baseline, the design with noiseless per-segment
    quantiles (a0), the oracle floor (b), (c), and the oracle's ε for 10x on both."""
    policy = Policy.load(policy_name)
    params = PrivacyParams.from_policy(policy, "statistics")
    k = len(SegmentSource.category_rule().keys)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-error-floor-") as folder:
        prepared, as_of = _prepare(Path(folder), customers, policy, seed)
        accuracy = _plan(policy, _probe(prepared, params, as_of, k))
        eps_mix = accuracy.epsilon("category_mix")
        eps_base = plan_budget(policy).profiles
        data = mix_aggregates(prepared, params, as_of, eps_mix, eps_base)
        report: dict[str, Any] = {
            "customers": customers,
            "dataset_seed": seed,
            "policy": policy_name,
            "family": params.dp_family,
            "epsilon_mix": {"planned": eps_mix, "baseline": eps_base},
            "mix_left_out_by_plan": bool(accuracy.releases["category_mix"].left_out),
        }
        losses = []
        for m in data:
            base = pooled_median(
                [
                    _group(
                        m.truth,
                        m.baseline_clipped - m.truth,
                        m.baseline_scale / m.weights,
                        m.baseline_distribution,
                    )
                ]
            )
            loss_now = loss_parameter(params.dp_family, eps_mix, params.delta)
            loss_base = loss_parameter(params.dp_family, eps_base, params.delta)
            need = mix_epsilon_for_target(m, params, base / 10)
            report[m.aggregate] = {
                "baseline_median": base,
                "target_10x": base / 10,
                "a0_design_noiseless_bounds_median": mix_design_noiseless(
                    m, m.vector.sum_losses[m.aggregate]
                ),
                "b_oracle_at_planned_epsilon": mix_oracle(m, loss_now),
                "c_oracle_at_baseline_epsilon": mix_oracle(m, loss_base),
                "epsilon_for_10x_oracle": need,
            }
            losses.append(
                None if need is None else loss_parameter(params.dp_family, need, params.delta)
            )
        if None not in losses:
            total = sum(x for x in losses if x is not None)
            budget = loss_parameter(
                params.dp_family, float(policy.privacy.budget_epsilon), params.delta
            )
            report["both_10x_oracle_share_of_year"] = total / budget
        else:
            report["both_10x_oracle_share_of_year"] = None
        report["planned_share_of_year"] = loss_parameter(
            params.dp_family, eps_mix, params.delta
        ) / loss_parameter(params.dp_family, float(policy.privacy.budget_epsilon), params.delta)
    report["seconds"] = time.perf_counter() - started
    return report


def mix_table(reports: list[dict[str, Any]]) -> str:
    lines = [
        "| policy, customers (seed) | mix ε planned (share of year), baseline | baseline | 10x "
        "target | (a0) design, noiseless quantiles | (b) oracle, planned ε | (c) oracle, "
        "baseline ε | 10x on both: oracle, share of year |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        u, s = r["units"], r["sek"]
        both = r["both_10x_oracle_share_of_year"]
        lines.append(
            f"| {r['policy']}, {r['customers']:,} ({r['dataset_seed']}) | "
            f"{r['epsilon_mix']['planned']:.3g} ({r['planned_share_of_year']:.0%}), "
            f"{r['epsilon_mix']['baseline']:.3g} | "
            f"{u['baseline_median']:.1%} / {s['baseline_median']:.1%} | "
            f"{u['target_10x']:.1%} / {s['target_10x']:.1%} | "
            f"{u['a0_design_noiseless_bounds_median']:.1%} / "
            f"{s['a0_design_noiseless_bounds_median']:.1%} | "
            f"{u['b_oracle_at_planned_epsilon']['median']:.1%} / "
            f"{s['b_oracle_at_planned_epsilon']['median']:.1%} | "
            f"{u['c_oracle_at_baseline_epsilon']['median']:.1%} / "
            f"{s['c_oracle_at_baseline_epsilon']['median']:.1%} | "
            + ("unreachable" if both is None else f"{both:.0%}")
            + " |"
        )
    return "\n".join(lines)


def _need(eps: float | None, share: float | None) -> str:
    return "unreachable" if eps is None or share is None else f"{eps:.3g} ({share:.1%})"


def table(reports: list[dict[str, Any]]) -> str:
    """Median relative error of the monthly series' cells (12 months x 10 categories)."""
    lines = [
        "| policy, customers (seed) | agg | ε/month planned (share of year), baseline | baseline "
        "| 10x target | (a) design | (a0) noiseless bound | (b2) whole ε, 2 x exact p90 "
        "| (b) oracle, planned ε | (c) oracle, baseline ε | ε/month for 10x: oracle "
        "| ε/month for 10x: design |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        policy = r["policy"]
        eps = r["epsilon_per_month"]
        share = r["share_of_yearly_budget"]
        for agg in AGGREGATES:
            x = r[agg]
            design_need = x["design_epsilon_per_month_for_10x"]
            lines.append(
                f"| {policy}, {r['customers']:,} ({r['dataset_seed']}) | {agg} | "
                f"{eps['planned']:.4g} ({share['planned']:.1%}), {eps['baseline']:.4g} | "
                f"{x['baseline_median']:.1%} | {x['target_10x']:.2%} | "
                f"{x['a_design_median']:.1%} | "
                f"{x['a0_design_noiseless_bound_median']:.1%} | "
                f"{x['b2_whole_loss_design_rule_bound_at_planned_epsilon']:.1%} | "
                f"{x['b_oracle_at_planned_epsilon']['median']:.1%} "
                f"(C {x['b_oracle_at_planned_epsilon']['multiple_of_p90']:.2g} p90) | "
                f"{x['c_oracle_at_baseline_epsilon']['median']:.1%} "
                f"(C {x['c_oracle_at_baseline_epsilon']['multiple_of_p90']:.2g} p90) | "
                f"{_need(x['epsilon_per_month_for_10x'], x['share_of_yearly_budget_for_10x'])} | "
                + (
                    "unreachable"
                    if design_need is None
                    else _need(design_need, share_of_budget_of(r, design_need))
                )
                + " |"
            )
        both = r["both_aggregates_10x"]
        lines.append(
            f"| {policy}, {r['customers']:,} | both | | | | | | | | | "
            + (
                _need(both["oracle"]["epsilon_per_month"], both["oracle"]["share"])
                if both["oracle"]
                else "unreachable"
            )
            + " | "
            + (
                _need(both["design"]["epsilon_per_month"], both["design"]["share"])
                if both["design"]
                else "unreachable"
            )
            + " |"
        )
    return "\n".join(lines)


def share_of_budget_of(report: dict[str, Any], eps_month: float) -> float:
    policy = Policy.load(report["policy"])
    return share_of_budget(policy, PrivacyParams.from_policy(policy, "statistics"), eps_month)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[50_000, 100_000])
    parser.add_argument("--policy", default="all", help="a policy name, a,b,... or 'all'")
    parser.add_argument("--seed", type=int, default=None, help="master seed (default: drawn)")
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument(
        "--mix",
        action="store_true",
        help="the category mix per segment instead of the monthly series (baseline, the "
        "design with noiseless per-segment quantiles, the oracle floor)",
    )
    parser.add_argument(
        "--factors",
        type=float,
        nargs="*",
        default=[],
        help="also the design with these public multipliers of its private quantile instead "
        "of the policy's contribution_bound_factor (a lever; evaluation only)",
    )
    parser.add_argument(
        "--committed",
        action="store_true",
        help="the committed 5,000-customer dataset (seed 7, issue 14's own data) instead of "
        "generated ones; printed in the output",
    )
    parser.add_argument(
        "--dataset-seed",
        type=int,
        default=None,
        help="replay one dataset seed (e.g. a bench_utility run's, to compare with its "
        "measured medians) instead of drawing one per dataset",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--check-quantile",
        type=int,
        default=0,
        metavar="DRAWS",
        help="also check the analytic quantile distribution against DRAWS OpenDP draws "
        "on each dataset's last closed month (units)",
    )
    args = parser.parse_args(argv)
    master = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    print(f"master seed {master} (replay with --seed {master})", flush=True)
    rng = np.random.default_rng(master)
    names = POLICY_NAMES if args.policy == "all" else tuple(args.policy.split(","))
    reports = []
    if args.committed:
        args.customers = [5_000]  # the committed dataset's size (--customers ignored)
    for customers in args.customers:
        for name in names:
            drawn = int(rng.integers(8, 2**31))  # never the committed dataset's 7
            seed: int | str = args.dataset_seed if args.dataset_seed is not None else drawn
            if args.committed:
                seed = COMMITTED
                print("dataset: the COMMITTED dataset (5,000 customers, seed 7)", flush=True)
            print(f"{name}, {customers:,} customers, dataset seed {seed}", flush=True)
            if args.mix:
                mix = run_mix(customers, name, seed) | {"master_seed": master}
                reports.append(mix)
                print(mix_table([mix]), flush=True)
                existing = json.loads(args.out.read_text()) if args.out.exists() else {}
                existing[f"mix-{name}-{customers}-{seed}"] = mix
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(existing, indent=1, default=str) + "\n")
                continue
            report = run(
                customers, name, seed, args.months, args.check_quantile, tuple(args.factors)
            )
            report["master_seed"] = master
            reports.append(report)
            print(table([report]), flush=True)
            existing = json.loads(args.out.read_text()) if args.out.exists() else {}
            existing[f"{name}-{customers}-{seed}"] = report
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(existing, indent=1, default=str) + "\n")
    print(mix_table(reports) if args.mix else table(reports))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
