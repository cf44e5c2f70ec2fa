"""Empirical DP audit of every release mechanism the project uses.

Each mechanism is built through the project's own code path — the per-person aggregation of
:func:`segments.privacy.releases.build_shared_frames` and the OpenDP measurement
:func:`segments.privacy.releases.plan_release` resolves, or the Lloyd step of
:class:`segments.privacy.kmeans.PrivateKMeans` — once, on SMALL neighbouring datasets: a few
dozen people with and without one heavy person who has thousands of order lines across every
product category. The resolved measurement is then invoked ``trials`` times on each dataset
and :func:`segments.audit.dp_audit.audit_mechanism` bounds its ε from below, beside the ε
OpenDP's own privacy map claims (for zCDP: ρ stated as (ε, δ) at the policy's δ).

A sound mechanism's bound stays below its claim; :func:`unbounded_contribution_case` builds a
deliberately broken one (the heavy person's order lines handed to the measurement without the
per-person aggregation) so the audit can be seen to fail.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from segments.audit.dp_audit import DpAuditResult, audit_mechanism
from segments.schema import CHANNELS, PRODUCT_CATEGORIES

__all__ = [
    "MechanismCase",
    "audit_cases",
    "audit_release_mechanisms",
    "release_mechanism_cases",
    "unbounded_contribution_case",
]

#: The audit's small datasets: public, fixed sizes (the audit never reads real data).
N_PEOPLE = 40
N_LINES = 400
HEAVY_LINES_PER_CATEGORY = 300
AS_OF = dt.date(2026, 3, 1)
MONTH = (dt.date(2026, 1, 1), dt.date(2026, 2, 1))
HEAVY_ID = "f" * 64
HEAVY_COUNTY = "01"


@dataclass
class MechanismCase:
    """One mechanism ready to audit: a callable and its two neighbouring inputs."""

    name: str
    mechanism: Callable[[Any], Any]
    dataset: Any
    neighbour: Any
    claimed_epsilon: float
    delta: float
    statistic: Callable[[Any], float]


def _claimed(loss: float, family: str, delta: float) -> tuple[float, float]:
    """(ε, δ) of a loss OpenDP computed: ε itself, or ρ stated at the policy's δ."""
    if family == "pure":
        return float(loss), 0.0
    return float(loss + 2.0 * math.sqrt(loss * math.log(1.0 / delta))), float(delta)


# --- the neighbouring datasets ----------------------------------------------------------------
def _heavy_lines(columns: dict[str, pl.DataType]) -> pl.DataFrame:
    """The heavy person: HEAVY_LINES_PER_CATEGORY lines in every category, inside MONTH."""
    n = HEAVY_LINES_PER_CATEGORY * len(PRODUCT_CATEGORIES)
    days = np.arange(n) % (MONTH[1] - MONTH[0]).days
    frame = pl.DataFrame(
        {
            "person_id": [HEAVY_ID] * n,
            "order_id": [f"{i:064x}" for i in range(n)],
            "order_date": [MONTH[0] + dt.timedelta(days=int(d)) for d in days],
            "channel": [CHANNELS[i % len(CHANNELS)] for i in range(n)],
            "product_id": np.arange(n) % 400 + 1,
            "category": [PRODUCT_CATEGORIES[i % len(PRODUCT_CATEGORIES)] for i in range(n)],
            "quantity": [50] * n,
            "amount_sek": [5000.0] * n,
        }
    )
    return frame.select(pl.col(c).cast(t) for c, t in columns.items())


def _write_neighbours(folder: Path, seed: np.random.Generator) -> dict[str, dict[str, Path]]:
    """``{"with": paths, "without": paths}`` of prepared frames differing by the heavy person."""
    from segments.privacy._frames import write_prepared_frames

    without = write_prepared_frames(folder / "without", N_PEOPLE, N_LINES, seed=seed)
    customers = pl.read_parquet(without["customers"])
    lines = pl.read_parquet(without["lines"])
    heavy = pl.DataFrame(
        {"person_id": [HEAVY_ID], "customer_type": ["business"], "county_code": [HEAVY_COUNTY]},
        schema=customers.schema,
    )
    (folder / "with").mkdir()
    paths = {
        "customers": folder / "with" / "customers.parquet",
        "lines": folder / "with" / "lines.parquet",
    }
    pl.concat([customers, heavy]).write_parquet(paths["customers"])
    pl.concat([lines, _heavy_lines(dict(lines.schema))]).write_parquet(paths["lines"])
    return {"with": paths, "without": without}


def _write_surveys(folder: Path, seed: np.random.Generator) -> dict[str, Path]:
    """Survey responses with and without one extra response at the top score."""
    from segments.privacy._frames import write_survey_frame

    without = write_survey_frame(folder / "survey_without.parquet", N_PEOPLE, seed=seed)
    frame = pl.read_parquet(without)
    extra = pl.DataFrame(
        {
            "survey_month": [frame["survey_month"][0]],
            "county_code": [HEAVY_COUNTY],
            "customer_type": ["business"],
            "score": [10],
        },
        schema=frame.schema,
    )
    with_path = folder / "survey_with.parquet"
    pl.concat([frame, extra]).write_parquet(with_path)
    return {"with": with_path, "without": without}


# --- release-engine mechanisms ------------------------------------------------------------------
def _cell_statistic(keys: dict[str, Any], aggregate: str) -> Callable[[pl.DataFrame], float]:
    """The released value (summed over matching rows) in the heavy person's cells."""
    condition = pl.lit(True)
    for column, values in keys.items():
        condition &= pl.col(column).is_in(list(values))

    def statistic(answer: pl.DataFrame) -> float:
        cells = answer.filter(condition)
        if cells.height == 0:
            raise RuntimeError(f"the release has no cell for the heavy person's keys {keys}")
        return float(cells[aggregate].fill_null(0).sum())

    return statistic


def _shared_path(
    paths: dict[str, Path],
    source: Any,
    params: Any,
    folder: Path,
    frame: str,
    window: tuple[dt.date, dt.date],
) -> Path:
    from segments.privacy.releases import build_shared_frames

    folder.mkdir(parents=True, exist_ok=True)
    shared = build_shared_frames(
        pl.scan_parquet(paths["customers"]),
        pl.scan_parquet(paths["lines"]),
        source,
        params,
        folder,
        window,
    )
    return shared[frame]


def _invoke(measurement: Any) -> Callable[[Path], pl.DataFrame]:
    def run(path: Path) -> pl.DataFrame:
        return measurement(pl.scan_parquet(path)).collect()

    return run


_RELEASE_QUERIES = (
    ("customers per county × segment", "customers_by_county_segment", "count", False),
    ("clipped spend sum per segment", "spend_by_segment", "spend_sek", False),
    ("category histogram with per-cell caps", "category_mix", "sek", False),
    ("monthly category series", "monthly_category", "sek", True),
)


def _release_cases(
    policy: Any, data: dict[str, dict[str, Path]], folder: Path
) -> Iterator[MechanismCase]:
    from segments.privacy.releases import plan_release
    from segments.privacy.specs import SPECS, PrivacyParams, SegmentSource

    params = PrivacyParams.from_policy(policy)
    source = SegmentSource.category_rule()
    for label, spec_name, aggregate, monthly in _RELEASE_QUERIES:
        spec = SPECS[spec_name]
        window = MONTH if monthly else (dt.date(1900, 1, 1), AS_OF)
        plan = plan_release(
            spec,
            params,
            customers=data["with"]["customers"],
            lines=data["with"]["lines"],
            segments=source if spec.needs_segments else None,
            as_of=AS_OF,
            window=window,
        )
        query = plan.queries[0]
        keep = folder / f"{spec_name}_with"
        keep.mkdir()
        with_path = Path(shutil.copy(query.data_path, keep / query.data_path.name))
        plan.close()
        without_path = _shared_path(
            data["without"],
            source if spec.needs_segments else None,
            params,
            folder / f"{spec_name}_without",
            query.query.frame,
            window,
        )
        by = query.query.by if query.query.frame == "person" else ("segment", "category")
        keys = _keys_from(with_path, by)
        claimed, delta = _claimed(query.loss, params.dp_family, params.delta)
        yield MechanismCase(
            f"{label} ({spec_name})",
            _invoke(query.measurement),
            with_path,
            without_path,
            claimed,
            delta,
            _cell_statistic({c: v for c, v in keys.items() if c in query.query.by}, aggregate),
        )


def _keys_from(path: Path, by: tuple[str, ...]) -> dict[str, set[Any]]:
    frame = pl.read_parquet(path)
    heavy = frame.filter(pl.col("pid") == pl.Series([HEAVY_ID]).hash()[0])
    return {column: set(heavy[column].to_list()) for column in by if column in heavy.columns}


def _survey_case(policy: Any, surveys: dict[str, Path]) -> MechanismCase:
    from segments.privacy.releases import plan_release
    from segments.privacy.specs import SPECS, PrivacyParams

    params = PrivacyParams.from_policy(policy)
    plan = plan_release(SPECS["survey_experience"], params, surveys=surveys["with"], as_of=AS_OF)
    query = plan.queries[0]
    folder = surveys["with"].parent
    shared = {}
    for side in ("with", "without"):
        path = folder / f"survey_frame_{side}.parquet"
        pl.read_parquet(surveys[side]).select(
            "county_code", "customer_type", pl.col("score").cast(pl.Int64)
        ).write_parquet(path)
        shared[side] = path
    plan.close()
    claimed, delta = _claimed(query.loss, params.dp_family, params.delta)
    return MechanismCase(
        "survey mean: score sum per county × type (survey_experience)",
        _invoke(query.measurement),
        shared["with"],
        shared["without"],
        claimed,
        delta,
        _cell_statistic({"county_code": {HEAVY_COUNTY}, "customer_type": {"business"}}, "score"),
    )


# --- DP k-means ------------------------------------------------------------------------------
def _kmeans_case(
    policy: Any, data: dict[str, dict[str, Path]], seed: np.random.Generator
) -> MechanismCase:
    """One Lloyd iteration (noisy counts and clipped sums per cluster) of the private model."""
    from segments.privacy import kmeans as km

    privacy = policy.privacy
    family = str(privacy.dp_family)
    bounds = {
        "frequency_orders": tuple(privacy.feature_bounds["frequency_orders"]),
        "monetary_sek": tuple(privacy.feature_bounds["monetary_sek"]),
    }
    _, warped = km.private_features(
        _rfm(data["without"]), bounds, features=tuple(bounds), log_features=tuple(bounds)
    )
    budget = float(privacy.private_segments_epsilon)
    if family != "pure":
        from segments.privacy.releases import epsilon_to_rho

        budget = epsilon_to_rho(budget, float(privacy.delta))
    model = km.PrivateKMeans(
        int(privacy.private_segments_k),
        bounds=warped,
        epsilon=budget if family == "pure" else None,
        rho=None if family == "pure" else budget,
        dp_family=family,
        iterations=int(privacy.private_segments_iterations),
        init="random",
        seed=seed,
    )
    steps = [s for s in model.plan() if s.iteration == 1]
    counts_step, sums_step = steps
    lo = np.array([w[0] for w in warped.values()])
    hi = np.array([w[1] for w in warped.values()])

    def grid(path_set: dict[str, Path]) -> np.ndarray:
        frame, _ = km.private_features(
            _rfm(path_set), bounds, features=tuple(bounds), log_features=tuple(bounds)
        )
        return model._grid(km.scale_to_unit(frame.to_numpy(), lo, hi))

    with_rows, without_rows = grid(data["with"]), grid(data["without"])
    centers = seed.uniform(0.0, 1.0, size=(int(privacy.private_segments_k), len(bounds)))
    km._enable_opendp_features()
    domain = km._rows_domain(len(bounds), int(model.resolution))
    k = len(centers)

    def counts_of(Z: np.ndarray) -> list[int]:
        return km._counts_by_label(km.nearest_centroid(model._ungrid(Z), centers), k)

    def sums_of(Z: np.ndarray) -> list[int]:
        return km._sums_by_label(Z, km.nearest_centroid(model._ungrid(Z), centers), k)

    count_release = km._release(
        domain, family, counts_of, int(counts_step.sensitivity), counts_step.scale
    )
    sum_release = km._release(domain, family, sums_of, int(sums_step.sensitivity), sums_step.scale)
    heavy_cluster = int(km.nearest_centroid(model._ungrid(with_rows[-1:]), centers)[0])
    d = len(bounds)

    def iteration(Z: np.ndarray) -> tuple[list[int], list[int]]:
        return count_release(Z), sum_release(Z)

    def statistic(out: tuple[list[int], list[int]]) -> float:
        counts, sums = out
        return float(sum(sums[heavy_cluster * d : (heavy_cluster + 1) * d]))

    rho_or_eps = counts_step.loss + sums_step.loss
    claimed, delta = _claimed(rho_or_eps, family, float(privacy.delta))
    return MechanismCase(
        "DP k-means: one Lloyd iteration (counts and clipped sums)",
        iteration,
        with_rows,
        without_rows,
        claimed,
        delta,
        statistic,
    )


def _rfm(paths: dict[str, Path]) -> Any:
    """Orders and spend per person (the per-person aggregation), heavy person last."""
    lines = pl.read_parquet(paths["lines"])
    per_person = lines.group_by("person_id").agg(
        pl.col("order_id").n_unique().cast(pl.Float64).alias("frequency_orders"),
        pl.col("amount_sek").sum().alias("monetary_sek"),
    )
    return per_person.sort(pl.col("person_id") == HEAVY_ID, "person_id").to_pandas()


# --- entry points -----------------------------------------------------------------------------
@contextmanager
def _scratch() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="segments-dp-audit-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def release_mechanism_cases(
    policy: Any, folder: Path, *, seed: np.random.Generator
) -> list[MechanismCase]:
    """Build every release mechanism on small neighbouring datasets written into ``folder``.

    Parameters
    ----------
    policy : segments.Policy
        Public bounds, mechanism family and δ.
    folder : Path
        An empty private folder; it must outlive the cases (they read files in it).
    seed : numpy.random.Generator
        Seeds the synthetic datasets and the k-means starting centroids (not the noise).
    """
    data = _write_neighbours(folder, seed)
    cases = list(_release_cases(policy, data, folder))
    cases.append(_survey_case(policy, _write_surveys(folder, seed)))
    cases.append(_kmeans_case(policy, data, seed))
    return cases


def unbounded_contribution_case(
    policy: Any, folder: Path, *, seed: np.random.Generator
) -> MechanismCase:
    """A deliberately broken mechanism: no per-person contribution bound.

    The count per county × segment measurement is resolved as the release engine resolves it
    (for one row per person), but handed the heavy person once per order line, as if the
    per-person aggregation had been skipped. Its claimed ε is what OpenDP's map states; the
    audit must refute it.
    """
    data = _write_neighbours(folder, seed)
    case = next(iter(_release_cases(policy, data, folder)))
    frame = pl.read_parquet(case.dataset)
    heavy = frame.filter(pl.col("pid") == pl.Series([HEAVY_ID]).hash()[0])
    lines = HEAVY_LINES_PER_CATEGORY * len(PRODUCT_CATEGORIES)
    broken = folder / "unaggregated.parquet"
    pl.concat([frame.filter(pl.col("pid") != heavy["pid"][0]), *([heavy] * lines)]).write_parquet(
        broken
    )
    case.name = "BROKEN control: county × segment count without the per-person aggregation"
    case.dataset = broken
    return case


def audit_cases(
    cases: list[MechanismCase], *, trials: int, confidence: float = 0.95
) -> list[DpAuditResult]:
    """Audit each case with :func:`segments.audit.dp_audit.audit_mechanism`."""
    return [
        audit_mechanism(
            c.name,
            c.mechanism,
            c.dataset,
            c.neighbour,
            claimed_epsilon=c.claimed_epsilon,
            delta=c.delta,
            trials=trials,
            confidence=confidence,
            statistic=c.statistic,
        )
        for c in cases
    ]


def audit_release_mechanisms(
    policy: Any,
    *,
    trials: int = 400,
    confidence: float = 0.95,
    seed: np.random.Generator | None = None,
) -> list[DpAuditResult]:
    """Empirically audit every release mechanism under ``policy``'s parameters.

    Parameters
    ----------
    policy : segments.Policy
    trials : int
        Runs per dataset and mechanism (each resolved measurement is invoked 2·trials times).
    confidence : float
        Confidence of each ε lower bound.
    seed : numpy.random.Generator, optional
        For the synthetic datasets (default ``default_rng(0)``: the audit's data are fixed).

    Returns
    -------
    list of DpAuditResult
        One per mechanism: the customers count per county × segment, the clipped spend sum
        per segment, the category histogram with per-cell caps, the monthly category series,
        the survey mean, and one DP k-means iteration; ``passed`` is False when the
        empirical bound refutes the claimed ε.
    """
    if trials < 100:
        raise ValueError(f"trials={trials!r} is too few for a meaningful bound; use at least 100")
    seed = seed if seed is not None else np.random.default_rng(0)
    with _scratch() as folder:
        return audit_cases(
            release_mechanism_cases(policy, folder, seed=seed), trials=trials, confidence=confidence
        )
