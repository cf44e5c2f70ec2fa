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
import json
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from segments._tables import read_table, scan_table
from segments.audit.dp_audit import (
    DpAuditResult,
    audit_mechanism,
    family_confidence,
    laplace_likelihood_ratio,
)
from segments.engine.base import person_key_of
from segments.privacy.composition import DPFamily, PrivacyLoss
from segments.schema import CHANNELS, PRODUCT_CATEGORIES
from segments.workspace import PREPARED_CUSTOMERS, PREPARED_LINES, Workspace

if TYPE_CHECKING:
    from segments.policy import Policy


__all__ = [
    "AuditedCase",
    "MechanismCase",
    "PersonNeighbours",
    "audit_cases",
    "audit_private_model_source",
    "MIN_TRIALS",
    "charged_composition",
    "recorded_composition",
    "clip_excess_case",
    "person_release_cases",
    "raw_person_neighbours",
    "sequence_cases",
    "survey_person_case",
    "workspace_release_cases",
    "audit_release_mechanisms",
    "release_mechanism_cases",
    "unbounded_contribution_case",
    "with_likelihood_ratio",
]

#: The fewest trials per dataset the empirical DP audit runs: fewer give no meaningful bound
#: (``segments audit --dp-trials`` and :func:`segments.audit.run.run_audit` refuse them up
#: front; 0 / None skips the DP audit, which the report states).
MIN_TRIALS = 100

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
    #: Every released number the removed person moves (their cells' aggregates), for
    #: :func:`with_likelihood_ratio`; None where the case has one number.
    numbers: Callable[[Any], np.ndarray] | None = None
    #: For the first case of a planned release: :func:`charged_composition` of the plan.
    composition: dict[str, Any] | None = None
    #: Runs of one release each invocation composes (a sequence; its power is calibrated so).
    copies: int = 1


def _claimed(loss: float, family: str, delta: float) -> tuple[float, float]:
    """(ε, δ) of a loss OpenDP computed: ε itself, or ρ stated at the policy's δ."""
    from segments.privacy.composition import stated_epsilon

    if family == DPFamily.PURE:
        return float(loss), 0.0
    return stated_epsilon(family, loss, delta), float(delta)


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
    lines = read_table(without["lines"])
    heavy = pl.DataFrame(
        {"person_id": [HEAVY_ID], "customer_type": ["business"], "county_code": [HEAVY_COUNTY]},
        schema=customers.schema,
    )
    (folder / "with").mkdir()
    paths = {
        "customers": folder / "with" / PREPARED_CUSTOMERS,
        "lines": folder / "with" / PREPARED_LINES,
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
        scan_table(paths["lines"]),
        source,
        params,
        folder,
        window,
    )
    return shared[frame]


def _invoke(measurement: Any) -> Callable[[Path], pl.DataFrame]:
    """The resolved measurement as a plain function of a shared-frame file (read once)."""
    frames: dict[Path, pl.LazyFrame] = {}

    def run(path: Path) -> pl.DataFrame:
        if path not in frames:
            frames[path] = pl.read_parquet(path).lazy()
        return measurement(frames[path]).collect()

    return run


def _invoke_value(measurement: Any) -> Callable[[Path], Any]:
    """A measurement whose output is a number or a list, as a function of a frame file."""
    frames: dict[Path, pl.LazyFrame] = {}

    def run(path: Path) -> Any:
        if path not in frames:
            frames[path] = pl.read_parquet(path).lazy()
        return measurement(frames[path])

    return run


_RELEASE_QUERIES = (
    ("customers per county × segment", "customers_by_county_segment", "count", False),
    ("clipped spend sum per segment", "spend_by_segment", "spend_sek", False),
    ("category histogram with per-cell caps", "category_mix", "sek", False),
    ("monthly category series", "monthly_category", "sek", True),
)


def _release_cases(
    policy: Policy, data: dict[str, dict[str, Path]], folder: Path
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
    heavy = frame.filter(pl.col("pid") == person_key_of(HEAVY_ID))
    return {column: set(heavy[column].to_list()) for column in by if column in heavy.columns}


def _survey_case(policy: Policy, surveys: dict[str, Path]) -> MechanismCase:
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
    policy: Policy, data: dict[str, dict[str, Path]], seed: np.random.Generator
) -> MechanismCase:
    """One Lloyd iteration (noisy counts and clipped sums per cluster) of the private model."""
    from segments.privacy import kmeans_estimator as km
    from segments.privacy.kmeans import private_features

    privacy = policy.privacy
    family = str(privacy.dp_family)
    bounds = {
        "frequency_orders": privacy.feature_bounds["frequency_orders"],
        "monetary_sek": privacy.feature_bounds["monetary_sek"],
    }
    _, warped = private_features(
        _rfm(data["without"]),
        bounds,
        features=tuple(bounds),
        log_features=tuple(bounds),
        categorical=(),
    )
    budget = float(privacy.private_segments_epsilon)
    from segments.privacy.composition import loss_parameter

    budget = loss_parameter(family, budget, float(privacy.delta))
    model = km.PrivateKMeans(
        int(privacy.private_segments_k),
        bounds=warped,
        epsilon=budget if family == DPFamily.PURE else None,
        rho=None if family == DPFamily.PURE else budget,
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
        frame, _ = private_features(
            _rfm(path_set),
            bounds,
            features=tuple(bounds),
            log_features=tuple(bounds),
            categorical=(),
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
    lines = read_table(paths["lines"])
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
    policy: Policy, folder: Path, *, seed: np.random.Generator
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
    policy: Policy, folder: Path, *, seed: np.random.Generator
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
    heavy = frame.filter(pl.col("pid") == person_key_of(HEAVY_ID))
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
    """Audit each case with :func:`segments.audit.dp_audit.audit_mechanism`.

    ``confidence`` holds for the cases together: each is tested at
    :func:`~segments.audit.dp_audit.family_confidence` (Bonferroni), so a sound release is
    refuted by chance in at most 5 % of audits however many releases are audited.

    The runs share each case's deterministic per-person step on the same input
    (:func:`segments.privacy.vectors.repeated_invocations`): every run still draws its own
    OpenDP noise, so the outputs, and the test's power, are those of fresh runs.
    """
    from segments.privacy.vectors import repeated_invocations

    confidence = family_confidence(confidence, len(cases))
    with repeated_invocations():
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
                copies=c.copies,
            )
            for c in cases
        ]


def audit_release_mechanisms(
    policy: Policy,
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
    if trials < MIN_TRIALS:
        raise ValueError(
            f"trials={trials!r} is too few for a meaningful bound; use at least {MIN_TRIALS}"
        )
    seed = seed if seed is not None else np.random.default_rng(0)
    with _scratch() as folder:
        return audit_cases(
            release_mechanism_cases(policy, folder, seed=seed), trials=trials, confidence=confidence
        )


# --- person-level neighbours: one person removed from the RAW data, through the real prepare ---
#: The raw dataset the person-level audit generates (public, fixed; never the controller's data).
RAW_CUSTOMERS = 400
RAW_MONTHS = 14
RAW_AS_OF = dt.date(2026, 3, 1)
RAW_SEED = 20261204
#: The audit's own pseudonymisation key (public: the audit's data are synthetic).
_AUDIT_KEY = b"segments-dp-audit-public-key-0001"
_RAW_TABLES = ("customers", "products", "orders", "order_lines", "surveys")


@dataclass
class PersonNeighbours:
    """Prepared frames of a raw dataset with and without every account of one person."""

    label: str
    accounts: tuple[int, ...]
    with_person: dict[str, Path]
    without_person: dict[str, Path]
    person_id: str


def _write_raw(ws: Any, tables: dict[str, pl.DataFrame]) -> None:
    """The neighbour's raw tables and a manifest recording their digests, as every writer of
    W/raw/ records them (prepare refuses a table its manifest has no digest for)."""
    from segments.workspace import sha256_file, write_json

    files = {}
    for name, frame in tables.items():
        path = ws.raw_table(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(path)
        files[path.relative_to(ws.raw).as_posix()] = sha256_file(path)
    write_json(ws.manifest, {"files": files})


def _prepare_copy(root: Path, tables: dict[str, pl.DataFrame], policy: Policy, purpose: str) -> Any:
    """Run the real prepare (exclusions, retention, sole-trader linkage, pseudonyms)."""
    from segments.prepare.frames import prepare
    from segments.workspace import Workspace

    ws = Workspace(root).create()
    _write_raw(ws, tables)
    prepare(ws, policy, purpose, RAW_AS_OF, key=_AUDIT_KEY)
    folder = ws.prepared_dir(purpose)
    return {"customers": folder / PREPARED_CUSTOMERS, "lines": folder / PREPARED_LINES}


def _chosen_people(tables: dict[str, pl.DataFrame]) -> dict[str, tuple[int, ...]]:
    """The people whose removal the audit tries: a sole trader with two accounts (the one with
    most order lines) and the heaviest buyer (largest spend over all their accounts)."""
    from segments.prepare.frames import link_persons

    roots = link_persons(tables["customers"])
    lines = tables["order_lines"].join(
        tables["orders"].select("order_id", "customer_id"), on="order_id"
    )
    spend = (
        lines.join(roots, on="customer_id")
        .group_by("person_root")
        .agg(
            (pl.col("quantity") * pl.col("unit_price_sek")).sum().alias("spend"),
            pl.len().alias("n_lines"),
        )
    )
    accounts = roots.group_by("person_root").agg(pl.col("customer_id"))
    people = spend.join(accounts, on="person_root")
    two = people.filter(pl.col("customer_id").list.len() >= 2).sort("n_lines", descending=True)
    chosen = {"the heaviest buyer": people.sort("spend", descending=True)["customer_id"][0]}
    if two.height:
        chosen["a sole trader with two accounts"] = two["customer_id"][0]
    return {label: tuple(int(c) for c in ids) for label, ids in chosen.items()}


def _without_accounts(tables: dict[str, pl.DataFrame], accounts: tuple[int, ...]) -> dict:
    gone = pl.col("customer_id").is_in(list(accounts))
    orders = tables["orders"].filter(~gone)
    return {
        **tables,
        "customers": tables["customers"].filter(~gone),
        "orders": orders,
        "order_lines": tables["order_lines"].filter(
            pl.col("order_id").is_in(orders["order_id"].implode())
        ),
    }


def raw_person_neighbours(
    policy: Policy, folder: Path, *, purpose: str = "statistics"
) -> list[PersonNeighbours]:
    """Neighbouring datasets that differ by one PERSON in the raw data.

    A small synthetic dataset is generated; for each chosen person (a sole trader with two
    accounts, the heaviest buyer) every account, order and order line of theirs is removed
    from the raw tables, and both versions go through the real :func:`segments.prepare.prepare`
    — so the neighbours are what the releases actually read, linkage included.
    """
    from segments.synth.generate import generate
    from segments.workspace import Workspace

    source = Workspace(folder / "generated").create()
    generate(
        source, customers=RAW_CUSTOMERS, months=RAW_MONTHS, as_of=RAW_AS_OF, seed=RAW_SEED,
        progress=False, workers=1,
    )  # fmt: skip
    tables = {name: read_table(source.raw_table(name)) for name in _RAW_TABLES}
    full = _prepare_copy(folder / "with", tables, policy, purpose)
    everyone = set(pl.read_parquet(full["customers"], columns=["person_id"])["person_id"])
    out = []
    for i, (label, accounts) in enumerate(_chosen_people(tables).items()):
        without = _prepare_copy(
            folder / f"without-{i}", _without_accounts(tables, accounts), policy, purpose
        )
        rest = set(pl.read_parquet(without["customers"], columns=["person_id"])["person_id"])
        removed = everyone - rest
        if len(removed) != 1:  # the linkage must make the accounts one person
            raise RuntimeError(
                f"removing {label} ({len(accounts)} accounts) removed {len(removed)} people "
                "from the prepared frames; the per-person bound would not hold"
            )
        out.append(PersonNeighbours(label, accounts, full, without, removed.pop()))
    return out


def _person_keys(with_path: Path, person_id: str, query: Any) -> dict[str, set[Any]]:
    frame = pl.read_parquet(with_path)
    mine = frame.filter(pl.col("pid") == person_key_of(person_id))
    return {c: set(mine[c].to_list()) for c in query.by if c in mine.columns}


def _person_statistic(with_path: Path, person_id: str, query: Any, aggregate: str) -> Callable:
    return _cell_statistic(_person_keys(with_path, person_id, query), aggregate)


def _person_numbers(with_path: Path, person_id: str, query: Any) -> Callable:
    """Every aggregate of the removed person's cells, as one vector."""
    keys = _person_keys(with_path, person_id, query)
    cells = [_cell_statistic(keys, a) for a in query.aggregates]
    return lambda answer: np.array([cell(answer) for cell in cells])


def with_likelihood_ratio(case: MechanismCase, pilot_trials: int) -> MechanismCase:
    """``case`` audited through the likelihood ratio of all the numbers the person moves
    (:func:`segments.audit.dp_audit.laplace_likelihood_ratio`), fitted on ``pilot_trials``
    extra runs per dataset that the audit never sees."""
    numbers = case.numbers
    if numbers is None:
        raise ValueError(f"case {case.name!r} has one released number: no ratio to form")
    pilot_d = np.array([numbers(case.mechanism(case.dataset)) for _ in range(pilot_trials)])
    pilot_n = np.array([numbers(case.mechanism(case.neighbour)) for _ in range(pilot_trials)])
    ratio = laplace_likelihood_ratio(pilot_d, pilot_n)
    return replace(
        case,
        name=case.name + " (likelihood ratio of its cell)",
        statistic=lambda answer: ratio(numbers(answer)),
    )


def person_release_cases(
    policy: Policy,
    neighbours: list[PersonNeighbours],
    folder: Path,
    specs: list[tuple[str, Any, Any]],
    window: tuple[dt.date, dt.date] | None = None,
) -> list[MechanismCase]:
    """One case per (release spec, query, removed person): the spec's resolved measurement,
    run on the real prepared frames with and without the person.

    ``specs`` holds ``(label, ReleaseSpec, SegmentSource or None)``; the claimed ε of each
    query is the loss OpenDP maps for it (the card's ``privacy_loss_per_query``). ``window``
    is the order dates read (default: all before the audit data's date).
    """
    from segments.privacy.releases import build_shared_frames, plan_release, shared_frame_options
    from segments.privacy.specs import PrivacyParams

    params = PrivacyParams.from_policy(policy, "statistics")
    cases = []
    for n, person in enumerate(neighbours):
        for s, (label, spec, source) in enumerate(specs):
            segments = source if spec.needs_segments else None
            window = window or (dt.date(1900, 1, 1), RAW_AS_OF)
            if "monthly_category" in spec.queries:
                window = (dt.date(2026, 1, 1), dt.date(2026, 2, 1))
            with plan_release(
                spec,
                params,
                customers=person.with_person["customers"],
                lines=person.with_person["lines"],
                segments=segments,
                as_of=RAW_AS_OF,
                window=window,
            ) as plan:
                keep = folder / f"person{n}-spec{s}"
                keep.mkdir(parents=True)
                copies = {
                    q.query.frame: Path(shutil.copy(q.data_path, keep / q.data_path.name))
                    for q in plan.queries
                }
                (folder / f"person{n}-spec{s}-without").mkdir(parents=True)
                without = build_shared_frames(
                    pl.scan_parquet(person.without_person["customers"]),
                    scan_table(person.without_person["lines"]),
                    segments,
                    params,
                    folder / f"person{n}-spec{s}-without",
                    window,
                    **shared_frame_options(spec),  # a session query's filters and keys
                )
                composition = charged_composition(plan) if n == 0 else None
                for q in plan.queries:
                    aggregate = next(a for a in q.query.aggregates if a != "count") if (
                        q.query.frame == "cells") else q.query.aggregates[-1]  # fmt: skip
                    # the step audited claims its own loss (OpenDP's map), not the query's
                    # total: a vector query's private bound and clip excess are other steps,
                    # audited or composed on their own (charged_composition)
                    own = float(q.measurement.map(q.d_in))
                    claimed, delta = _claimed(own, params.dp_family, params.delta)
                    cases.append(
                        MechanismCase(
                            f"{label}: {q.query.name} without {person.label}",
                            _invoke(q.measurement),
                            copies[q.query.frame],
                            without[q.query.frame],
                            claimed,
                            delta,
                            _person_statistic(
                                copies[q.query.frame], person.person_id, q.query, aggregate
                            ),
                            _person_numbers(copies[q.query.frame], person.person_id, q.query),
                            composition,
                        )
                    )
                    composition = None  # stated once per planned release
                    if q.vector is not None and q.vector.excess_losses:
                        excess = clip_excess_case(
                            f"{label}: {q.query.name} without {person.label}",
                            q.vector,
                            copies[q.query.frame],
                            without[q.query.frame],
                            person.person_id,
                            params,
                        )
                        if excess is not None:
                            cases.append(excess)
    return cases


def clip_excess_case(
    name: str,
    vector: Any,
    with_path: Path,
    without_path: Path,
    person_id: str,
    params: Any,
    pilot_trials: int = 200,
) -> MechanismCase | None:
    """The clip excess of a series query (:meth:`VectorRelease.excess_measurement`, the
    second OpenDP measurement of each month) on neighbours that differ by one person.

    The release measures the excess at its privately chosen bound ``C``; any fixed ``C``
    gives a mechanism whose loss OpenDP's map states, so the audit fixes each aggregate's
    ``C`` where the removed person moves the excess most: their norm is at least
    ``(1 + EXCESS_SPAN) C``, so their excess is the whole span, the sensitivity the noise
    is calibrated to (for a person whose vector lies in categories of weight 1; a weighted
    chair counts once in the excess). The statistic is the likelihood ratio of every
    aggregate's excess (:func:`with_likelihood_ratio`, ``pilot_trials`` runs per dataset
    kept out of the audit). Claimed: the step's own loss (its map). None when the person
    bought nothing inside the query's filter: the neighbours then release alike.
    """
    from segments.privacy.vectors import EXCESS_SPAN, PersonVectors

    frame = pl.read_parquet(with_path)
    mine = frame.filter(pl.col("pid") == person_key_of(person_id))
    if mine.is_empty():
        # without the removed person's rows every C would fall to 1 and the case would test
        # a neighbour nobody removed: a check that cannot fail (review r10a F6)
        raise RuntimeError(
            f"clip excess case {name!r}: the removed person has no rows in {with_path.name}; "
            "the audit's neighbours must differ by a person the frame holds"
        )
    if vector.where is not None:
        mine = mine.filter(vector.where)
        if mine.is_empty():
            return None  # they bought nothing this release counts: the neighbours release alike
    bounds: dict[str, float] = {}
    for a in vector.excess_losses:
        rows = mine.select("pid", *vector.by, a)
        norms = PersonVectors.of(rows, vector.keys, vector.by, a).norms(vector.norm)
        top = float(norms.max()) if norms.size else 0.0
        bounds[a] = float(max(math.floor(top / (1.0 + EXCESS_SPAN)), 1))
    worst = replace(
        vector,
        public_bounds={**vector.public_bounds, **bounds},
        chosen={},
        group_bounds={},
        excess={},
    )
    measurement = worst.excess_measurement()
    measured = [a for a in worst.aggregates if a in worst.excess_losses]

    def numbers(answer: Any) -> np.ndarray:
        return np.atleast_1d(np.asarray(answer, dtype=float))

    claimed, delta = _claimed(float(measurement.map(1)), params.dp_family, params.delta)
    case = MechanismCase(
        f"{name}, its clip excess at C = " + ", ".join(f"{a} {bounds[a]:.0f}" for a in measured),
        _invoke_value(measurement),
        with_path,
        without_path,
        claimed,
        delta,
        lambda answer: float(numbers(answer)[0]),
        numbers,
    )
    from segments.privacy.vectors import repeated_invocations

    # the person moves every aggregate's excess: the likelihood ratio of all of them (each
    # alone carries a share of the loss; a sum of their noises hides the tail a threshold
    # needs), fitted on pilot runs the audit never sees
    with repeated_invocations():
        return with_likelihood_ratio(case, pilot_trials)


def charged_composition(plan: Any) -> dict[str, Any]:
    """OpenDP's own composition of every step a planned release measures, beside the loss
    the release is charged (:attr:`ReleasePlan.loss`, what the ledger records).

    Per query, the steps (a vector query's private bounds, its noisy sums and, for the
    purchasing series, its clip excess) are composed by ``make_composition`` and mapped at
    one person; the queries add up (sequential composition), as ε or, under zCDP, ρ. A
    release whose charge is below this composition spends more than it is charged.
    """
    import segments.privacy._opendp as dp

    steps: dict[str, float] = {}
    per_query: list[float] = []
    for q in plan.queries:
        name = q.query.name
        if q.vector is None:
            parts = {name: q.measurement}
        else:
            v = q.vector
            parts = {
                f"{name}: private bound of {a}": v.bound_measurement(a)
                for a in v.aggregates
                if v.private(a)
            }
            parts[f"{name}: noisy sums"] = v.measurement()
            if v.excess_losses:
                parts[f"{name}: clip excess"] = v.excess_measurement()
        d_in = q.d_in if q.vector is None else 1
        for step, m in parts.items():
            steps[step] = float(m.map(d_in))
        measurements = list(parts.values())
        composed = dp.c.make_composition(measurements) if len(measurements) > 1 else measurements[0]
        per_query.append(float(composed.map(d_in)))
    loss = plan.loss
    family = plan.params.dp_family
    return {
        "family": family,
        "composed": math.fsum(per_query),
        "charged": float(loss.rho if family == DPFamily.ZCDP else loss.epsilon),
        "steps": steps,
    }


def recorded_composition(bounds: Mapping[str, Any]) -> dict[str, Any]:
    """OpenDP's composition of the steps a release's ledger entry RECORDED (its ``bounds``,
    :func:`segments.privacy.releases.recorded_steps`), rebuilt from those facts alone: never
    a re-plan by today's code, never the card (which can be edited).

    Each step is rebuilt as OpenDP measures it: a bounded sum whose stability for one person
    is the recorded sensitivity, followed by integer Laplace or Gaussian noise at the recorded
    scale (Laplace converted to ρ under zCDP), or OpenDP's quantile at the recorded candidates,
    alpha and scale; a query's steps are composed by ``make_composition`` and mapped at one
    person, and the queries add up.

    Returns
    -------
    dict
        ``family``, ``composed`` (ε, or ρ under zCDP) and ``steps`` (each step's loss); or, when
        the entry does not record enough to rebuild a step, ``insufficient`` saying what is
        missing (a release charged by older code): inconclusive, never a pass.
    """
    import segments.privacy._opendp as dp
    from segments.privacy.bounds import quantile_measurement

    # the rebuilt sums are user transformations, as the releases' own (privacy/vectors.py)
    dp.enable_features("contrib", "honest-but-curious")

    def short(why: str) -> dict[str, Any]:
        return {"insufficient": f"recorded facts insufficient: {why}"}

    if not bounds:
        return short("the ledger entry records no contribution bounds")
    steps: dict[str, float] = {}
    per_query: list[float] = []
    families = set()
    domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    for name, facts in sorted(bounds.items()):
        recorded = facts.get("steps") if isinstance(facts, Mapping) else None
        family = facts.get("family") if isinstance(facts, Mapping) else None
        if not recorded or family not in (DPFamily.PURE, DPFamily.ZCDP):
            return short(f"query {name!r} records no steps (noise, scale, sensitivity)")
        families.add(family)
        parts = []
        for step in recorded:
            noise, scale = step.get("noise"), step.get("scale")
            sensitivity = step.get("sensitivity")
            label = f"{name}: {step.get('step')}"
            if not isinstance(scale, (int, float)) or not scale > 0:
                return short(f"step {label!r} records no noise scale")
            if noise == "quantile":
                m = quantile_measurement(step["candidates"], step["alpha"], family, scale)
            elif noise in ("laplace", "gaussian"):
                if not isinstance(sensitivity, (int, float)) or sensitivity != int(sensitivity):
                    return short(f"step {label!r} records no whole-number sensitivity")
                width = int(sensitivity)
                clipped_sum = dp.t.make_user_transformation(
                    domain,
                    dp.symmetric_distance(),
                    dp.atom_domain(T="i64"),
                    dp.absolute_distance(T="i64"),
                    # one value per person, clipped to the step's sensitivity, summed
                    function=lambda xs, w=width: int(sum(min(max(x, -w), w) for x in xs)),
                    stability_map=lambda d_in, w=width: int(d_in) * w,
                )
                if noise == "gaussian":
                    m = clipped_sum >> dp.m.then_gaussian(float(scale))
                else:
                    m = clipped_sum >> dp.m.then_laplace(float(scale))
                    if family == DPFamily.ZCDP:
                        m = dp.c.make_pureDP_to_zCDP(m)
            else:
                return short(f"step {label!r} has noise {noise!r}, which the audit cannot rebuild")
            steps[label] = float(m.map(1))
            parts.append(m)
        composed = dp.c.make_composition(parts) if len(parts) > 1 else parts[0]
        per_query.append(float(composed.map(1)))
    if len(families) != 1:
        return short("its queries record different DP families")
    return {"family": families.pop(), "composed": math.fsum(per_query), "steps": steps}


def survey_person_case(
    policy: Policy,
    folder: Path,
    *,
    epsilon: float,
    survey_month: dt.date | None,
    seed: np.random.Generator,
    broken: bool = False,
    spec_name: str = "survey_experience",
) -> MechanismCase:
    """The survey release (``spec_name``: the county × type table or the national one)
    against a person who gives every response the public rule allows.

    Survey responses carry no customer id, so a person cannot be located in them; the
    neighbour is the worst case the release's sensitivity must cover: the person's
    ``months x accounts`` responses, all at the top score in one cell. ``broken=True`` builds
    the old per-response measurement (one row per unit) as a control the audit must refute.
    """
    from segments.privacy._frames import write_survey_frame
    from segments.privacy.releases import (
        build_query,
        survey_months,
        survey_responses_per_person,
    )
    from segments.privacy.specs import SPECS, PrivacyParams

    params = PrivacyParams.from_policy(policy, "statistics")
    spec = SPECS[spec_name].with_epsilon(epsilon)
    window = survey_months(AS_OF, survey_month, params)
    rows = survey_responses_per_person(window)
    # a folder of its own: the measurement reads its files when the audit runs, after every
    # case was built, so a later case (another window, the broken control) must not rewrite
    # them (it did: the month case was then measured on 48 responses and another base)
    folder = Path(tempfile.mkdtemp(dir=folder, prefix=f"survey-{rows}-"))
    from segments.keys import NATIONAL

    # the columns a release's survey frame has (releases._survey_frame), scope included
    base = pl.read_parquet(
        write_survey_frame(folder / "survey_base.parquet", N_PEOPLE * 5, seed=seed)
    ).select(
        "county_code",
        "customer_type",
        pl.lit(NATIONAL[0]).alias("scope"),
        pl.col("score").cast(pl.Int64),
    )
    person = pl.DataFrame(
        {"county_code": [HEAVY_COUNTY] * rows, "customer_type": ["business"] * rows,
         "scope": [NATIONAL[0]] * rows, "score": [10] * rows},
        schema=base.schema,
    )  # fmt: skip
    paths = {"with": folder / "survey_person_with.parquet", "without": folder / "survey_b.parquet"}
    pl.concat([base, person]).write_parquet(paths["with"])
    base.write_parquet(paths["without"])
    from segments.privacy.composition import loss_parameter

    loss = loss_parameter(params.dp_family, spec.epsilon, params.delta)
    query = build_query(
        spec.query_defs[0], loss, params, paths["with"], None, 0.05, 1 if broken else rows
    )
    claimed, delta = _claimed(query.loss, params.dp_family, params.delta)
    name = f"{spec_name} ({rows} responses of one person, one cell)"
    if broken:
        name = "BROKEN control: survey measured per response, one person answering " + str(rows)
    return MechanismCase(
        name,
        _invoke(query.measurement),
        paths["with"],
        paths["without"],
        claimed,
        delta,
        _cell_statistic(
            {
                c: v
                for c, v in {
                    "county_code": {HEAVY_COUNTY},
                    "customer_type": {"business"},
                    "scope": set(NATIONAL),
                }.items()
                if c in spec.query_defs[0].by
            },
            "score",
        ),
    )


def audit_private_model_source(policy: Policy, folder: Path, *, seed: np.random.Generator) -> Any:
    """A private-segment source resting on fixed, public centroids (for the audit only).

    A release keyed by private segments is DP *given* the DP centroids (its own ε); the
    segmentation's ε is audited separately (the k-means case). The centroids here are
    seeded points inside the policy's public feature bounds; no ledger entry is involved,
    so this source can be planned but never executed.
    """
    from segments.privacy.kmeans import (
        PRIVATE_FEATURES,
        PRIVATE_LOG_FEATURES,
        PrivateModelRef,
    )
    from segments.privacy.specs import SegmentSource
    from segments.workspace import sha256_file

    bounds = {f: policy.privacy.feature_bounds[f] for f in PRIVATE_FEATURES}
    k = int(policy.privacy.private_segments_k)
    centroids = pl.DataFrame(
        {"segment": [str(j) for j in range(k)]}
        | {
            f: seed.uniform(lo, lo + (hi - lo) * (0.05 if f in PRIVATE_LOG_FEATURES else 1.0), k)
            for f, (lo, hi) in bounds.items()
        }
    )
    path = folder / "audit_centroids.parquet"
    centroids.write_parquet(path)
    ref = PrivateModelRef(
        release_id="audit-fixed-centroids",
        ledger_id="",
        centroids_path=path,
        centroids_sha256=sha256_file(path),
        features=tuple(PRIVATE_FEATURES),
        log_features=tuple(PRIVATE_LOG_FEATURES),
        feature_bounds=bounds,
        loss=PrivacyLoss(epsilon=0.0, delta=0.0),
        keys=tuple(str(j) for j in range(k)),
    )
    return SegmentSource("private_model", ref.keys, model=ref)


# --- the releases in the workspace, at the ε their cards state ---------------------------------
@dataclass
class AuditedCase:
    """A mechanism case with what the report needs: which kind of check it is, the release
    ids it stands for, and the verdict expected of a sound system (a broken control must be
    refuted)."""

    case: MechanismCase
    kind: str  # "release", "control" or "sequence"
    release_ids: tuple[str, ...] = ()
    note: str = ""


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _dp_cards(cards: list[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [
        c
        for _, c in cards
        if isinstance(c.get("spec"), dict) and c["spec"].get("queries") and "privacy_loss" in c
    ]


def _spec_of(card: dict[str, Any]) -> Any:
    """The card's specification, with a session's ad-hoc query definitions; month keys are
    moved onto the audit data's last months (same number of months: same mechanism)."""
    from segments.keys import month_keys
    from segments.policy import months_before
    from segments.privacy.specs import QueryDef, ReleaseSpec

    spec = card["spec"]
    weights = spec.get("weights")
    definitions = []
    for data in spec.get("definitions") or ():
        query = QueryDef.from_dict(data)
        months = dict(query.key_values).get("month")
        if months:
            moved = month_keys(months_before(RAW_AS_OF, len(months)), RAW_AS_OF)
            query = replace(
                query,
                key_values=tuple((c, moved if c == "month" else v) for c, v in query.key_values),
            )
        definitions.append(query)
    return ReleaseSpec(
        str(spec["name"]),
        tuple(spec["queries"]),
        float(spec["epsilon"]),
        None if weights is None else tuple(float(w) for w in weights),
        definitions=tuple(definitions),
    )


def _session_window(spec: Any) -> tuple[dt.date, dt.date] | None:
    """The audit data's window for a session spec keyed by month (its moved months)."""
    from segments.policy import months_before

    for query in spec.query_defs:
        months = dict(query.key_values).get("month")
        if months:
            return months_before(RAW_AS_OF, len(months)), RAW_AS_OF
    return None


def workspace_release_cases(
    policy: Policy,
    cards: list[tuple[Path, dict[str, Any]]],
    folder: Path,
    *,
    seed: np.random.Generator,
) -> list[AuditedCase]:
    """Every DP release in the workspace, audited at the ε its card states.

    Each distinct (specification, ε, segment provenance, survey month) of the cards is
    re-planned on the person-level neighbours (:func:`raw_person_neighbours`: a sole trader
    with two accounts and the heaviest buyer removed from the raw data and run through the
    real prepare) or, for a survey release, against the person giving every response the
    public rule allows. Each query's claimed ε is the card's ``privacy_loss_per_query``;
    a release whose measurement maps to more than its card states is reported with its real
    loss (and fails). Two deliberately broken releases are added as controls: the audit must
    refute them.
    """
    from segments.privacy.specs import QUERIES, SPECS, SegmentSource

    dp_cards = _dp_cards(cards)
    neighbours = raw_person_neighbours(policy, Workspace(folder).raw) if dp_cards else []
    out: list[AuditedCase] = []
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for card in dp_cards:
        source = (card["spec"].get("source") or {}) if isinstance(card["spec"], dict) else {}
        segments = card["spec"].get("segments") or {}
        key = (
            card["spec"]["name"],
            tuple(card["spec"]["queries"]),
            float(card["spec"]["epsilon"]),
            segments.get("provenance"),
            source.get("survey_month"),
            json.dumps(card["spec"].get("definitions"), sort_keys=True),  # a session's queries
        )
        groups.setdefault(key, []).append(card)
    private_source = None
    for n, ((name, queries, epsilon, provenance, month, _), members) in enumerate(groups.items()):
        ids = tuple(str(c.get("release_id", "")) for c in members)
        card = members[0]
        frames = {d.get("frame") for d in card["spec"].get("definitions") or ()}
        surveyed = any(q in QUERIES and QUERIES[q].frame == "survey" for q in queries)
        if surveyed or frames == {"survey"}:
            survey_month = None if month in (None, "None") else dt.date.fromisoformat(month)
            case = survey_person_case(
                policy,
                folder,
                epsilon=epsilon,
                survey_month=survey_month,
                seed=seed,
                spec_name=name if name in SPECS else "survey_experience",
            )
            out.append(AuditedCase(case, "release", ids, f"{len(ids)} release(s) of {name}"))
            continue
        if provenance == "private_model":
            if private_source is None:
                private_source = audit_private_model_source(policy, folder, seed=seed)
            source = private_source
        else:  # the category rule; fitted labels are given, audited with a rule as stand-in
            source = SegmentSource.category_rule()
        spec = _spec_of(card)
        stated = card.get("privacy_loss_per_query") or {}
        (folder / f"release-{n}").mkdir()
        for case in person_release_cases(
            policy,
            neighbours,
            folder / f"release-{n}",
            [(name, spec, source)],
            window=_session_window(spec),
        ):
            query = case.name.split(": ", 1)[1].split(" without ")[0]
            if query in stated:
                family = policy.privacy.dp_family
                card_eps, _ = _claimed(float(stated[query]), family, float(policy.privacy.delta))
                # the card's statement is the claim; OpenDP's real map must not exceed it
                case.claimed_epsilon = min(case.claimed_epsilon, card_eps)
            out.append(AuditedCase(case, "release", ids, f"{len(ids)} release(s) of {name}"))
    if dp_cards:
        out.append(
            AuditedCase(
                unbounded_contribution_case(policy, _made(folder / "control"), seed=seed),
                "control",
                note="no per-person aggregation: one row per order line",
            )
        )
        out.append(
            AuditedCase(
                survey_person_case(
                    policy, folder, epsilon=0.5, survey_month=None, seed=seed, broken=True
                ),
                "control",
                note="survey measured per response while one person answers many times",
            )
        )
    return out


def _charge_date(entry: Any) -> dt.date:
    charged = getattr(entry, "charged_on", None)
    if isinstance(charged, dt.date) and charged != dt.date.min:
        return charged
    return dt.date.fromisoformat(str(entry.reserved_at)[:10])


def _budget_periods(entries: list[Any], months: int) -> list[tuple[str, float, list[str]]]:
    """Per population: the largest ε charged inside any window of ``months`` months of
    recorded time (one window ending at each release)."""
    from segments.policy import months_before

    out = []
    by_population: dict[str, list[Any]] = {}
    for e in entries:
        by_population.setdefault(e.request.population, []).append(e)
    for population, items in by_population.items():
        # the ledger's charge date: the recorded day on a controller's ledger, the simulated
        # as-of on an evaluation or demo ledger (synthetic data)
        times = [(_charge_date(e), e) for e in items]
        worst: tuple[float, list[str]] = (0.0, [])
        for end, _ in times:
            start = months_before(end, months)
            inside = [e for t, e in times if start < t <= end]
            total = math.fsum(float(e.request.epsilon or 0.0) for e in inside)
            if total > worst[0]:
                worst = (total, [e.release_id for e in inside])
        out.append((population, worst[0], worst[1]))
    return out


def sequence_cases(
    policy: Policy,
    entries: list[Any],
    release_cases: list[AuditedCase],
    *,
    trials: int | None = None,
    confidence: float = 0.95,
) -> tuple[list[dict[str, Any]], list[AuditedCase]]:
    """The accepted sequence of each population's releases against the budget.

    Returns the arithmetic check per population (the most ε charged within any budget
    period of recorded time, against ``budget_epsilon``) and, for the release audited with
    most copies in the ledger, an empirical case composing runs of its measurement (the
    averaging attack), claimed at their composed ε. Without ``trials``: as many copies as fit
    one budget period. With the audit's ``trials`` (and its family ``confidence``, shared
    with ``release_cases`` and this case by Bonferroni): the number of copies, up to those,
    whose composed claim this test refutes at the smallest violation
    (:func:`~segments.audit.dp_audit.detectable_violation`). A test of ``trials`` runs
    cannot bound ε above about ln(trials): composing every copy a period admits (ε ≈ 4 at
    200 trials) gave a check that could not fail.
    """
    budget = float(policy.privacy.budget_epsilon)
    period = int(policy.privacy.budget_period_months)
    rows = [
        {
            "population": population,
            "largest_epsilon_in_a_period": round(total, 6),
            "budget_epsilon": budget,
            "budget_period_months": period,
            "releases": len(ids),
            "verdict": "pass" if total <= budget * (1 + 1e-9) else "fail",
        }
        for population, total, ids in _budget_periods(entries, period)
    ]
    recorded = {e.release_id for e in entries}
    candidates = [c for c in release_cases if c.kind == "release" and recorded & set(c.release_ids)]
    if not candidates:
        return rows, []
    top = max(candidates, key=lambda c: len(c.release_ids))
    one = top.case
    # The copies run on the same data, so they compose to copies × ε exactly; the ledger lets
    # at most budget / ε of them into one budget period (each copy charged the release's whole
    # ε; the audited step may claim less: a series' sums are one of its steps), and the claim
    # is the copies' true total (capping it at the budget while composing more, as before,
    # claimed less than the composed mechanism really spends).
    charged = [float(e.request.epsilon or 0.0) for e in entries if e.release_id in top.release_ids]
    per_release = max([one.claimed_epsilon, *charged])
    fit = math.floor(budget / per_release * (1 + 1e-9)) if per_release else 0
    admitted = min(len(top.release_ids), fit)
    if admitted < 2:
        return rows, []
    copies, note = admitted, f"composed: {admitted} copies, as many as one budget period admits"
    if trials is not None and one.claimed_epsilon > 0:
        from segments.audit.dp_audit import detectable_violation, family_confidence

        each = family_confidence(confidence, len(release_cases) + 1)
        # the test sums the copies' statistics; that sum's noise has thin tails, so its power
        # is best at a composed claim of about 1-2 (calibrated: 200 trials refute ~10x at 8
        # copies of ε 0.13 with 95 % probability, none at the 30 a period admits)
        tried = sorted(
            {min(max(round(x / one.claimed_epsilon), 2), admitted) for x in (0.75, 1.0, 1.5, 2.0)}
        )
        power = {
            k: detectable_violation(trials, k * one.claimed_epsilon, confidence=each, copies=k)
            for k in tried
        }
        best = min(power, key=lambda k: (power[k], -k))
        if math.isfinite(power[best]):
            copies = best
            note = (
                f"composed: {copies} of the {admitted} copies one budget period admits, the "
                f"number (of {', '.join(map(str, tried))} tried) whose composed claim {trials} "
                f"trials refute at the smallest violation, {power[best]:g} x the claim; the sum "
                "of many copies' noise hides a composed violation from any test of this size "
                "(the budget itself is checked from the ledger)"
            )

    def sequence(dataset: Any) -> list[Any]:
        return [one.mechanism(dataset) for _ in range(copies)]

    def statistic(outputs: list[Any]) -> float:
        return math.fsum(one.statistic(o) for o in outputs)

    composed = MechanismCase(
        f"sequence of {copies} accepted releases: {one.name}",
        sequence,
        one.dataset,
        one.neighbour,
        copies * one.claimed_epsilon,
        one.delta * copies,
        statistic,
        copies=copies,
    )
    return rows, [AuditedCase(composed, "sequence", top.release_ids, note)]
