"""Calibration: released errors follow the noise distribution OpenDP declares.

Repeated releases on small synthetic data are compared with an independent exact recount
(clipped at the public bounds). Pooled over cells and repetitions, the errors must have mean
zero and the variance of the declared distribution (discrete Laplace or discrete Gaussian at
the declared scale) within statistical tolerance, so an understated sensitivity, a missing
clip or a wrong split of the budget fails here. Also the utility target of the issue.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from prepared_frames import install_prepared, verified_plan
from privacy_params import privacy_params
from release_helpers import proven_ledger, release_context, run_unaccounted

from segments.policy import Policy
from segments.privacy._frames import write_prepared_frames
from segments.privacy.releases import QueryPlan, plan_release
from segments.privacy.specs import SPECS, PrivacyParams, ReleaseSpec, SegmentSource
from segments.workspace import Workspace

AS_OF = dt.date(2026, 3, 1)
Z = 5.0  # tolerance in standard errors: a false failure has probability ~1e-6 per check


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibration")
    return write_prepared_frames(folder, 600, 8_000, seed=np.random.default_rng(11))


def _params(family: str) -> PrivacyParams:
    return privacy_params(
        dp_family=family,
        delta=1e-7 if family == "zcdp" else 0.0,
        max_cells_per_person=3,
        spend_bound_sek=20_000,
        cell_spend_bound_sek=5_000,
        cell_units_bound=40,
        # public norm bounds of a person's weighted vector: the truth is fixed across runs
        units_norm_bound=60,
        sek_norm_bound=8_000,
    )


def _norm_clipped(data: pl.DataFrame, by: list[str], agg: str, norm: str, bound: float):
    """Independent recount of a norm-bounded sum: each person's vector scaled to the norm
    bound and floored, then summed per cell."""
    value = pl.col(agg).clip(lower_bound=0).cast(pl.Float64)
    size = value.sum() if norm == "l1" else (value**2).sum().sqrt()
    factor = pl.min_horizontal(pl.lit(1.0), bound / size.over("pid"))
    return (
        data.with_columns((value * factor).floor().cast(pl.Int64).alias(agg))
        .group_by(by)
        .agg(pl.col(agg).sum())
    )


def _exact(query: QueryPlan, params: PrivacyParams, clip: bool = True) -> pl.DataFrame:
    """Independent recount of one query's aggregates, clipped at the public bounds."""
    from segments.privacy.releases import _aggregate_bounds

    data = pl.read_parquet(query.data_path)
    by = list(query.query.by)
    if query.vector is not None:
        exact = query._keys
        for agg in query.query.aggregates:
            bound = math.ceil(query.vector.bound(agg)) if clip else math.inf
            part = _norm_clipped(data, by, agg, query.vector.norm, bound)
            exact = exact.join(part, on=by, how="left")
        return exact.fill_null(0)
    aggs = []
    for agg in query.query.aggregates:
        if agg == "count":
            aggs.append(pl.len().cast(pl.Int64).alias("count"))
        else:
            low, high = _aggregate_bounds(query.query, agg, params)
            column = pl.col(agg).clip(low, high) if clip else pl.col(agg)
            aggs.append(column.sum().cast(pl.Int64).alias(agg))
    exact = data.group_by(by).agg(aggs)
    return query._keys.join(exact, on=by, how="left").fill_null(0)


def _discrete_laplace_var(scale: float) -> float:
    q = math.exp(-1.0 / scale)
    return 2.0 * q / (1.0 - q) ** 2


def _discrete_gaussian_var(sigma: float) -> float:
    k = np.arange(-int(60 * sigma) - 10, int(60 * sigma) + 11, dtype=float)
    w = np.exp(-(k**2) / (2.0 * sigma**2))
    return float((k**2 * w).sum() / w.sum())


def _check(errors: np.ndarray, scale: float, distribution: str) -> tuple[float, float]:
    """Return (z of the mean, z of the variance ratio) of standardised errors."""
    gaussian = "Gaussian" in distribution
    var = _discrete_gaussian_var(scale) if gaussian else _discrete_laplace_var(scale)
    kurtosis = 3.0 if gaussian else 6.0
    n = errors.size
    z_mean = errors.mean() / math.sqrt(var / n)
    ratio = errors.var() / var
    z_var = (ratio - 1.0) / math.sqrt((kurtosis - 1.0) / n)
    return float(z_mean), float(z_var)


def _errors(plan, params, answers_list, clip=True) -> dict[tuple[str, str], np.ndarray]:
    out: dict[tuple[str, str], list[np.ndarray]] = {}
    for query in plan.queries:
        exact = _exact(query, params, clip)
        by = list(query.query.by)
        for answers in answers_list:
            joined = exact.join(answers[query.query.name], on=by, suffix="_dp", nulls_equal=True)
            for agg in query.query.aggregates:
                err = (joined[f"{agg}_dp"] - joined[agg]).to_numpy().astype(float)
                out.setdefault((query.query.name, agg), []).append(err)
    return {k: np.concatenate(v) for k, v in out.items()}


def _plan(
    spec: ReleaseSpec,
    params: PrivacyParams,
    frames: dict,
    *,
    category_segments: bool = True,
):
    """The plan of ``spec`` over the hand-made ``frames`` (segmented by the category rule
    unless ``category_segments`` is false), whose measurements these tests run outside any
    ledger."""
    return plan_release(
        spec,
        params,
        customers=frames["customers"],
        lines=frames["lines"],
        segments=SegmentSource.category_rule() if category_segments else None,
        as_of=AS_OF,
    )


SPEC = ReleaseSpec(
    "calibration",
    ("spend_by_county_segment", "category_by_segment", "monthly_category"),
    epsilon=3.0,
)


@pytest.mark.parametrize("family", ["pure", "zcdp"])
def test_errors_match_the_declared_noise(family, frames):
    params = _params(family)
    with _plan(SPEC, params, frames) as plan:
        answers = [run_unaccounted(plan) for _ in range(40 if family == "pure" else 25)]
        errors = _errors(plan, params, answers)
        summary = {
            (r["query"], r["aggregate"]): r for r in plan._accuracy_pl().iter_rows(named=True)
        }
    for key, err in errors.items():
        row = summary[key]
        z_mean, z_var = _check(err, row["scale"], row["distribution"])
        assert abs(z_mean) < Z, (key, z_mean)
        assert abs(z_var) < Z, (key, z_var, err.var(), row["scale"])


def test_the_calibration_check_detects_a_bounding_bug(frames):
    """Comparing with the unclipped truth (what a release without clipping would centre on)
    fails the check: the test has power against bounding bugs."""
    params = privacy_params(**{**_params("pure").to_dict(), "spend_bound_sek": 2_000})
    spec = ReleaseSpec("clip", ("spend_by_segment",), epsilon=3.0)
    with _plan(spec, params, frames) as plan:
        answers = [run_unaccounted(plan) for _ in range(20)]
        errors = _errors(plan, params, answers, clip=False)
        row = plan._accuracy_pl().filter(pl.col("aggregate") == "spend_sek").row(0, named=True)
    z_mean, z_var = _check(
        errors[("spend_by_segment", "spend_sek")], row["scale"], row["distribution"]
    )
    assert abs(z_mean) > Z or abs(z_var) > Z


def test_a_wrong_scale_is_detected(frames):
    """Errors at the declared scale checked against half the scale (a sensitivity stated
    twice too small) fail the variance check."""
    params = _params("pure")
    spec = ReleaseSpec("scale", ("customers_by_county_segment",), epsilon=1.0)
    with _plan(spec, params, frames) as plan:
        answers = [run_unaccounted(plan) for _ in range(20)]
        errors = _errors(plan, params, answers)[("customers_by_county_segment", "count")]
        scale = plan._accuracy_pl()["scale"][0]
    assert abs(_check(errors, scale, "Integer Laplace")[1]) < Z
    assert abs(_check(errors, scale / 2, "Integer Laplace")[1]) > Z


def test_released_tables_through_the_evaluation_ledger_are_calibrated(frames, tmp_path):
    """Full releases (reserve, run, publish) on the evaluation ledger; the published tables'
    errors follow the declared distribution."""
    policy = Policy.load("alloffice")
    params = _params("pure")
    workspace = Workspace(tmp_path / "ws").create()
    ledger = proven_ledger(workspace, policy, evaluation=True)
    params = privacy_params(
        **{
            **params.to_dict(),
            "budget_epsilon": policy.privacy.budget_epsilon,
            "budget_period_months": policy.privacy.budget_period_months,
            "budget_window_months": policy.privacy.budget_window_months,
        }
    )
    spec = SPECS["customers_by_county_segment"].with_epsilon(0.5)
    install_prepared(workspace, frames)  # a release charges only for verified prepared frames
    with verified_plan(
        workspace,
        spec,
        params,
        segments=SegmentSource.category_rule(),
        as_of=AS_OF,
    ) as plan:
        results = [
            plan.execute(
                release_context(
                    ledger,
                    workspace,
                    policy,
                    purpose="statistics",
                    recipient="analytics",
                    synthetic=True,
                )
            )
            for _ in range(12)
        ]
        answers = [
            {
                # the unbiased noisy value (published values are post-processed)
                "customers_by_county_segment": pl.read_parquet(
                    r.path / "customers_by_county_segment.parquet"
                ).select("county_code", "segment", pl.col("count_noisy").alias("count"))
            }
            for r in results
        ]
        errors = _errors(plan, params, answers)[("customers_by_county_segment", "count")]
        scale = plan._accuracy_pl()["scale"][0]
    assert len(ledger.entries()) == 12
    z_mean, z_var = _check(errors, scale, "Integer Laplace")
    assert abs(z_mean) < Z and abs(z_var) < Z


@pytest.mark.slow
def test_utility_100k_customers_county_segment_counts(tmp_path):
    """Issue target: 100 000 customers, ε = 1, median relative error over cells with at
    least 100 customers ≤ 5 %."""
    paths = write_prepared_frames(tmp_path, 100_000, 250_000, seed=np.random.default_rng(5))
    params = privacy_params()
    spec = SPECS["customers_by_county_segment"].with_epsilon(1.0)
    with _plan(spec, params, paths) as plan:
        query = plan.queries[0]
        exact = _exact(query, params)
        released = run_unaccounted(plan)[query.query.name]
    joined = exact.join(released, on=["county_code", "segment"], suffix="_dp")
    big = joined.filter(pl.col("count") >= 100)
    rel = ((big["count_dp"] - big["count"]).abs() / big["count"]).median()
    assert big.height > 50
    assert rel <= 0.05, rel


def _clipped_category_truth(lines_path, params: PrivacyParams, norm: str) -> pl.DataFrame:
    """Independent recount of monthly_category units: each person's largest-spend cells,
    weighted by the category's weight, the vector clipped to the public norm bound."""
    weights = params.cell_weights("units")
    w = pl.DataFrame({"category": list(weights), "w": list(weights.values())})
    cells = (
        pl.read_parquet(lines_path)
        .group_by("person_id", "category")
        .agg(pl.col("amount_sek").sum().round(0).alias("sek"), pl.col("quantity").sum())
        .sort("person_id", "sek", descending=[False, True])
        .filter(pl.int_range(pl.len()).over("person_id") < params.max_cells_per_person)
        .join(w, on="category")
        .with_columns(
            (pl.col("quantity") * pl.col("w")).alias("units"), pl.col("person_id").alias("pid")
        )
    )
    truth = _norm_clipped(cells, ["category"], "units", norm, params.units_norm_bound)
    return truth.join(w, on="category").select(
        "category", (pl.col("units") / pl.col("w")).alias("truth")
    )


def test_each_category_is_noised_at_its_own_bound(frames):
    """Per-category weights: each released category is centred on the truth (each person's
    weighted vector clipped to the norm bound), with the per-row scale it declares — the
    vector's scale divided by the category's weight — so furniture is less noisy than paper."""
    own = (("furniture", 4), ("paper", 20), ("writing", 10))
    params = privacy_params(**{**_params("zcdp").to_dict(), "cell_units_by_category": own})
    spec = ReleaseSpec("own-bounds", ("monthly_category",), epsilon=3.0)
    with _plan(spec, params, frames, category_segments=False) as plan:
        tables = [plan._tables_pl(run_unaccounted(plan))["monthly_category"] for _ in range(30)]
        top = plan._accuracy_pl().filter(pl.col("aggregate") == "units").row(0, named=True)
        norm = plan.queries[0].vector.norm
    truth = _clipped_category_truth(frames["lines"], params, norm)
    released = pl.concat(tables).with_columns(pl.col("units_noisy").alias("units"))
    released = released.join(truth, on="category")
    weights = params.cell_weights("units")
    on_top_scale = []
    for (category,), rows in released.group_by("category"):
        weight = weights[str(category)]
        assert rows["units_scale"].to_list() == pytest.approx([top["scale"] / weight] * 30)
        on_top_scale.append(((rows["units"] - rows["truth"]) * weight).to_numpy().astype(float))
        if category == "furniture":  # bound 4 against the largest, 40: a tenth of the noise
            assert float((rows["units"] - rows["truth"]).std()) < top["scale"] / 5
    z_mean, z_var = _check(np.concatenate(on_top_scale), top["scale"], top["distribution"])
    assert abs(z_mean) < Z and abs(z_var) < Z, (z_mean, z_var)


def test_post_processed_intervals_still_cover_the_truth(frames):
    """After non-negativity and the margin fit, the published 95 % intervals still cover the
    exact counts at least 95 % of the time (pooled over cells and repetitions)."""
    params = _params("pure")
    spec = ReleaseSpec(
        "coverage", ("customers_by_county", "customers_by_county_segment"), epsilon=0.3
    )
    with _plan(spec, params, frames) as plan:
        exact = {q.query.name: _exact(q, params) for q in plan.queries}
        covered = []
        keys = {q.query.name: list(q.query.by) for q in plan.queries}
        for _ in range(12):
            tables = plan._tables_pl(run_unaccounted(plan))
            for name, truth in exact.items():
                by = keys[name]
                joined = tables[name].join(truth, on=by, suffix="_true")
                hit = (joined["count_lower"] <= joined["count_true"]) & (
                    joined["count_true"] <= joined["count_upper"]
                )
                assert (joined["count"] >= 0).all()
                # whole-number ends (rounded inward) and the same coverage
                assert (joined["count_lower"] % 1 == 0).all()
                assert (joined["count_upper"] % 1 == 0).all()
                covered.append(hit.to_numpy())
    rate = float(np.concatenate(covered).mean())
    n = np.concatenate(covered).size
    assert rate >= 0.95 - Z * math.sqrt(0.95 * 0.05 / n), rate
