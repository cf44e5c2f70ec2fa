"""The private segmentation job: DP k-means on a workspace, charged to the ledger.

:func:`fit_private_segments` reads the verified prepared frames, builds the model's input on
its public scale (:func:`private_features`), reserves the centroid release in the ledger,
fits :class:`~segments.privacy.kmeans_estimator.PrivateKMeans` (the estimator and its
privacy proof live there) and publishes the centroids, card and post-processed labels in
``W/segments/private/``. :class:`PrivateModelRef` names a published model for the releases
keyed by it (:func:`private_model_ref`, :func:`verify_private_model`,
:func:`private_model_labels`). The DP profiles and names of the segments are a release of
their own (:mod:`segments.privacy.kmeans_profiles`).

The estimator's and the profiles' public names are re-exported here, so
``from segments.privacy.kmeans import PrivateKMeans, private_segment_profiles`` keeps working.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from segments.exceptions import PolicyError
from segments.privacy.composition import (
    DPFamily,
    PrivacyLoss,
    loss_parameter,
    stated_epsilon,
)
from segments.privacy.kmeans_estimator import (
    PrivacyStep,
    PrivateKMeans,
    SeedLike,
    nearest_centroid,
    nonnegative_counts,
    scale_to_unit,
    within_cluster_inertia,
)
from segments.privacy.kmeans_profiles import PROFILE_QUERIES, private_segment_profiles
from segments.privacy.publishing import begin
from segments.provenance import _sign_segment_names, hashing_raw_once
from segments.schema import CHANNELS, PRODUCT_CATEGORIES
from segments.workspace import (
    CARD,
    CENTROIDS,
    LABELS,
    PREPARED_CUSTOMERS,
    PREPARED_LINES,
    SEGMENT_METADATA,
    Workspace,
    atomic_write_with,
    sha256_file,
    write_json,
)

if TYPE_CHECKING:
    from segments.policy import Policy
    from segments.privacy.ledger import Ledger, LedgerEntry, ReleaseRequest
    from segments.privacy.publishing import Publication, ReleaseContext

__all__ = [
    "PRIVATE_FEATURES",
    "PRIVATE_LOG_FEATURES",
    "PRIVATE_PROVENANCE",
    "PROFILE_QUERIES",
    "PrivacyStep",
    "PrivateKMeans",
    "PrivateModelRef",
    "PrivateSegmentsResult",
    "fit_private_segments",
    "nearest_centroid",
    "nonnegative_counts",
    "private_feature_names",
    "private_features",
    "private_model",
    "private_model_labels",
    "private_model_ref",
    "private_segment_profiles",
    "scale_to_unit",
    "verify_private_model",
    "within_cluster_inertia",
]

# --- workspace integration --------------------------------------------------------------------
#: Features of the private model: purchase behaviour (as the exploratory model's numeric part).
#: The exploratory model's features (segments.segmentation), on a public scale: RFM, the
#: category mix as shares of order lines and of spend, and the channel mix, each clipped and
#: scaled to [0, 1] by the policy's bounds (no fitted standardisation), plus the one-hot
#: customer type and size band weighted :data:`PRIVATE_CATEGORICAL_WEIGHT`. On the
#: benchmark's datasets non-private k-means in this space agrees with the exploratory model
#: (ARI 0.92-0.93); in the purchase features alone it agreed 0.40.
PRIVATE_FEATURES = (
    "recency_days",
    "frequency_orders",
    "monetary_sek",
    "avg_basket_sek",
    *(f"line_share_{c}" for c in PRODUCT_CATEGORIES),
    *(f"share_{c}" for c in PRODUCT_CATEGORIES),
    *(f"share_{c}" for c in CHANNELS),
)


def private_features_for(categories: Sequence[str]) -> tuple[str, ...]:
    """:data:`PRIVATE_FEATURES` with the category shares of ``categories``: the taxonomy an
    ingest declared (:func:`segments.ingest.public_domains`), public like the built-in one.

    Examples
    --------
    >>> [f for f in private_features_for(["music"]) if "music" in f]
    ['line_share_music', 'share_music']
    """
    return (
        "recency_days",
        "frequency_orders",
        "monetary_sek",
        "avg_basket_sek",
        *(f"line_share_{c}" for c in categories),
        *(f"share_{c}" for c in categories),
        *(f"share_{c}" for c in CHANNELS),
    )


def _with_share_bounds(
    bounds: Mapping[str, Any], features: Sequence[str]
) -> dict[str, tuple[float, float]]:
    """The policy's feature bounds, plus [0, 1] for every share feature it leaves out: a share
    lies in [0, 1] by definition (a public fact), whatever the taxonomy."""
    out = {name: (float(lo), float(hi)) for name, (lo, hi) in bounds.items()}
    for name in features:
        if name.startswith(("share_", "line_share_")):
            out.setdefault(name, (0.0, 1.0))
    return out


#: Heavy-tailed features scaled on a log1p scale (public transform, as in segments.features).
PRIVATE_LOG_FEATURES = ("frequency_orders", "monetary_sek", "avg_basket_sek")
#: Categorical features of the private model (one-hot over their public levels); they also
#: define the public groups of the private initialisation (``init="groups"``).
PRIVATE_CATEGORICAL = ("customer_type", "size_band")
#: Weight of a one-hot column relative to a [0, 1]-scaled numeric feature (a public constant).
PRIVATE_CATEGORICAL_WEIGHT = 0.5
PRIVATE_PROVENANCE = "private_model"


@dataclass(frozen=True)
class PrivateSegmentsResult:
    """What :func:`fit_private_segments` released and wrote.

    Attributes
    ----------
    model : PrivateKMeans
        The fitted estimator (its centroids are the release).
    release_id : str
        The ledger entry of the centroid release.
    centroids : pandas.DataFrame
        One row per segment: the released centroid in feature units and its noisy count.
    labels : pandas.DataFrame
        ``person_id``, ``segment`` for profiling-eligible people (post-processing).
    card, metadata : dict
    paths : dict of str to Path
    """

    model: PrivateKMeans
    release_id: str
    centroids: pd.DataFrame
    labels: pd.DataFrame
    card: dict[str, Any]
    metadata: dict[str, Any]
    paths: dict[str, Path]


def _warp_bounds(
    bounds: Mapping[str, tuple[float, float]], features: Sequence[str], log: Sequence[str]
) -> dict[str, tuple[float, float]]:
    """Public bounds on the model's scale: log1p for heavy-tailed features."""
    out = {}
    for name in features:
        if name not in bounds:
            raise PolicyError(
                f"privacy.feature_bounds has no bound for feature {name!r}; rule: the private "
                "model clips every feature to public bounds; fix: add it to the policy"
            )
        lo, hi = (float(v) for v in bounds[name])
        out[name] = (math.log1p(lo), math.log1p(hi)) if name in log else (lo, hi)
    return out


def private_feature_names(
    features: Sequence[str] = PRIVATE_FEATURES, categorical: Sequence[str] = PRIVATE_CATEGORICAL
) -> list[str]:
    """Columns of :func:`private_features`, from public facts only (the public levels)."""
    from segments.features import categorical_levels

    levels = categorical_levels()
    return [*features, *(f"{c}_{level}" for c in categorical for level in levels[c])]


def private_features(
    frame: Any,
    feature_bounds: Mapping[str, tuple[float, float]],
    features: Sequence[str] = PRIVATE_FEATURES,
    log_features: Sequence[str] = PRIVATE_LOG_FEATURES,
    categorical: Sequence[str] = PRIVATE_CATEGORICAL,
) -> tuple[Any, dict[str, tuple[float, float]]]:
    """The private model's input on its public scale, and its bounds (``(0, 1)`` per column).

    Numeric features are clipped to the policy's bounds and scaled to [0, 1] by them (log1p
    first for ``log_features``); categorical ones are one-hot over their public levels,
    weighted :data:`PRIVATE_CATEGORICAL_WEIGHT`. Nothing is learned from the data.

    Parameters
    ----------
    frame : pandas.DataFrame
        Output of :func:`segments.features.customer_features` (as pandas).
    feature_bounds : mapping
        The policy's ``privacy.feature_bounds``.
    features, log_features : sequence of str
        Numeric model features, and those taken on a log1p scale (a public transform).
    categorical : sequence of str
        Categorical model features (empty: numeric only).

    Returns
    -------
    (pandas.DataFrame, dict)
        Columns named as :func:`private_feature_names`.
    """
    from segments.features import make_feature_transformer

    _warp_bounds(feature_bounds, features, log_features)  # every feature has a public bound
    transformer = make_feature_transformer(
        feature_bounds,
        numeric=features,
        categorical=categorical,
        log_features=log_features,
        categorical_weight=PRIVATE_CATEGORICAL_WEIGHT,
    )
    names = private_feature_names(features, categorical)
    values = transformer.fit(frame).transform(frame)  # public bounds and levels: learns nothing
    out = pd.DataFrame(np.asarray(values, dtype=float), columns=names, index=frame.index)
    return out, dict.fromkeys(names, (0.0, 1.0))


def _unwarp_centroids(
    centers: np.ndarray,
    features: Sequence[str],
    log: Sequence[str],
    feature_bounds: Mapping[str, tuple[float, float]],
    categorical: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """Centroids in feature units: numeric features back through their public scale, each
    one-hot level as its share of the segment."""
    warped = _warp_bounds(feature_bounds, features, log)
    out = {}
    for i, name in enumerate(features):
        lo, hi = warped[name]
        value = lo + centers[:, i] * (hi - lo)
        out[name] = np.expm1(value) if name in log else value
    levels = private_feature_names((), categorical)
    for j, name in enumerate(levels, start=len(features)):
        out[f"share_of_{name}"] = centers[:, j] / PRIVATE_CATEGORICAL_WEIGHT
    return out


def _centroids_to_unit(
    centroids: Any,
    features: Sequence[str],
    log: Sequence[str],
    feature_bounds: Mapping[str, tuple[float, float]],
    categorical: Sequence[str] = (),
) -> np.ndarray:
    """The inverse of :func:`_unwarp_centroids`: the centroid table back in the model's space."""
    warped = _warp_bounds(feature_bounds, features, log)
    columns = []
    for name in features:
        lo, hi = warped[name]
        value = centroids[name].to_numpy(dtype=float)
        value = np.log1p(np.maximum(value, 0.0)) if name in log else value
        columns.append((value - lo) / (hi - lo))
    for name in private_feature_names((), categorical):
        columns.append(
            centroids[f"share_of_{name}"].to_numpy(dtype=float) * PRIVATE_CATEGORICAL_WEIGHT
        )
    return np.clip(np.column_stack(columns), 0.0, 1.0)


def _read_verified(
    ws: Workspace, purpose: str, policy: Policy
) -> tuple[Path, Any, Any, dict[str, str]]:
    """The prepared frames (lazy), read from bytes hashed against prepare's signed record
    (:func:`segments.provenance.read_verified`) under the shared workspace lock (an erasure
    rewrites them under the exclusive one): a frame edited after prepare is refused before
    the ledger is charged. Also returns the SHA-256 of the bytes read."""
    from segments.provenance import read_verified

    folder = ws.prepared_dir(purpose)
    made_by = f"segments prepare --workspace {ws.root} --purpose {purpose}"
    names = (PREPARED_LINES, PREPARED_CUSTOMERS)
    for name in names:
        ws.require(folder / name, made_by)
    with ws.lock(exclusive=False):
        frames, read_sha256 = read_verified(ws, purpose, names, policy)
    return folder, frames[PREPARED_LINES].lazy(), frames[PREPARED_CUSTOMERS].lazy(), read_sha256


def _segment_names_from_centroids(
    centroids: Any, categories: Sequence[str] = PRODUCT_CATEGORIES
) -> dict[str, str]:
    """Names from the released centroids only (post-processing of a DP release): the (up to)
    two categories with the largest spend share, and the typical spend."""
    names = {}
    shares = [c for c in centroids.columns if c.startswith("share_") and c[6:] in categories]
    for _, row in centroids.iterrows():
        top = [c[6:] for c in sorted(shares, key=lambda c: -row[c])[:2]]
        spend = row["monetary_sek"]
        what = " & ".join(top) or "all"
        amount = f"{spend:,.0f}".replace(",", " ")
        names[str(row["segment"])] = f"{what} buyers, ~{amount} SEK"
    return names


def _check_categories(lines: Any, categories: Sequence[str]) -> None:
    """Refuse, before the ledger is charged, order lines (a polars frame) whose category is
    not in the declared taxonomy (the features would fail after the charge)."""
    import polars as pl

    lazy = lines.lazy()
    unknown = (
        lazy.filter(~pl.col("category").is_in(list(categories)))
        .select(pl.len().alias("n"), pl.col("category").first().alias("first"))
        .collect()
    )
    if unknown["n"][0]:
        raise PolicyError(
            f"table 'lines', column 'category': {unknown['n'][0]} order line(s) outside the "
            f"declared taxonomy {list(categories)} (first: {unknown['first'][0]!r}); rule: "
            "segments are keyed by public categories only; fix: declare the category in the "
            "mapping's [products] categories and ingest again, or re-run prepare; nothing was "
            "charged"
        )


def private_model(
    privacy: Any,
    features: Sequence[str] = PRIVATE_FEATURES,
    categorical: Sequence[str] = PRIVATE_CATEGORICAL,
    seed: SeedLike = 0,
) -> PrivateKMeans:
    """The policy's DP k-means (unfitted) for the columns of :func:`private_features`.

    Every parameter is public: k, iterations and ε from ``privacy.private_segments_*`` (under
    ``dp_family="zcdp"`` the largest ρ whose (ε, δ) statement at ``privacy.delta`` is within
    ε); the initialisation from noisy means of the public groups the categorical columns
    define (``init="groups"``), or the candidate histogram without categorical columns.
    """
    from segments.features import categorical_levels

    levels = categorical_levels()
    group_columns, start = [], len(features)
    for name in categorical:  # one block of one-hot columns per categorical feature
        group_columns.append(list(range(start, start + len(levels[name]))))
        start += len(levels[name])
    names = private_feature_names(features, categorical)
    family = privacy.dp_family
    budget = float(privacy.private_segments_epsilon)
    return PrivateKMeans(
        int(privacy.private_segments_k),
        bounds=dict.fromkeys(names, (0.0, 1.0)),
        dp_family=family,
        epsilon=budget if family == DPFamily.PURE else None,
        rho=None
        if family == DPFamily.PURE
        else loss_parameter(family, budget, float(privacy.delta)),
        iterations=int(privacy.private_segments_iterations),
        init="groups" if group_columns else "private",
        init_group_columns=group_columns,
        seed=seed,
    )


@hashing_raw_once
def fit_private_segments(
    context: ReleaseContext,
    *,
    as_of: dt.date | None = None,
    features: Sequence[str] = PRIVATE_FEATURES,
    log_features: Sequence[str] = PRIVATE_LOG_FEATURES,
    seed: SeedLike = 0,
    categorical: Sequence[str] = PRIVATE_CATEGORICAL,
) -> PrivateSegmentsResult:
    """Learn segments with DP k-means, charge the ledger first, write ``W/segments/private/``.

    The policy supplies every public parameter: ``privacy.private_segments_k``,
    ``_iterations`` and ``_epsilon`` (under ``dp_family="zcdp"`` converted to the largest ρ
    whose (ε, δ) statement at ``privacy.delta`` is within it), ``feature_bounds`` and
    ``dp_family``. The release (the centroids and their noisy counts) is reserved in the ledger
    with guarantee "end-to-end ε-DP" *before* the data is read; then the model is fitted on
    everyone with purchases in the prepared frames, labels are computed for the
    profiling-eligible people only (AO-5, AL-3, AK-4; post-processing), and
    ``centroids.parquet``, ``labels.parquet``, ``card.json`` and ``metadata.json``
    (provenance ``private_model``) replace the folder in one rename.

    Parameters
    ----------
    context : segments.privacy.publishing.ReleaseContext
        The ledger charged, the workspace, the policy, the purpose (the prepared frames to
        read, usually ``segmentation``), and who receives the centroids (recipient and
        destination, recorded and guarded by the ledger).
    as_of : date, optional
        Default: the ledger's date for a release now (:meth:`Ledger.charge_date`): today on a
        controller's ledger, the prepared frames' ``as_of`` on an evaluation or demo ledger.
    features, log_features : sequence of str
        Numeric model features (names from :mod:`segments.features`) and those on a log1p
        scale.
    categorical : sequence of str
        Categorical model features; they also define the public groups of the private
        initialisation (``init="groups"``; with none, ``init="private"``).
    seed : int or numpy.random.Generator
        The public, data-independent parts.

    Returns
    -------
    PrivateSegmentsResult

    Raises
    ------
    BudgetExceededError, ReleaseRefusedError
        From the ledger, before the data is touched; or prepare's signed record is missing,
        or ``policy_report.json`` states another as-of than it (nothing charged).
    WorkspaceError, PolicyError, SchemaError
        Missing prepared frames, bounds or columns.
    """
    import polars as pl

    from segments.features import customer_features
    from segments.ingest import public_domains
    from segments.privacy.guards import Guarantee
    from segments.provenance import prepared_as_of
    from segments.segmentation.job import profiling_flags

    ws, policy, purpose = context.workspace, context.policy, context.purpose
    # The declared taxonomy of an ingested export (the built-in one otherwise): public, read
    # from the raw manifest, never from the data; checked before anything is charged.
    categories = tuple(public_domains(ws).categories)
    if tuple(features) == PRIVATE_FEATURES:
        features = private_features_for(categories)
    log_state = ws.erasure_log_state()  # an erasure after this point refuses the labels
    privacy = policy.privacy
    folder, lines, customers, read_sha256 = _read_verified(ws, purpose, policy)
    # the data's as-of is prepare's SIGNED record's (a policy_report.json that disagrees is
    # refused): an edited report must not move the charge's date or the features' recency
    data_as_of = prepared_as_of(ws, purpose, policy)
    if as_of is None:
        # like a release: the ledger's time (its clock on a controller's ledger, which also
        # refuses an as-of behind the population's latest release), the data's on a demo one
        as_of = context.ledger.charge_date(data_as_of)
    if as_of < data_as_of:
        # Checked before the ledger is charged, from the public date prepare ran for: the
        # features would otherwise fail on orders after as_of (and name a private date).
        raise PolicyError(
            f"--as-of {as_of} is earlier than the prepared frames' as_of {data_as_of} "
            f"(prepare's signed record of W/prepared/{purpose}); rule: a private model reads "
            f"no order after its as_of; fix: use --as-of {data_as_of} or later, or re-run "
            "`segments prepare` for the earlier date; nothing was charged"
        )
    lines = lines.filter(pl.col("order_date") <= as_of)
    bounds = _with_share_bounds(privacy.feature_bounds, features)
    _warp_bounds(bounds, features, log_features)  # refused before any charge
    _check_categories(lines, categories)  # an undeclared code is refused before any charge
    family = privacy.dp_family
    model = private_model(privacy, features, categorical, seed)
    total = model.planned_privacy_loss()
    rho = total if family == DPFamily.ZCDP else None
    epsilon = stated_epsilon(family, total, float(privacy.delta))
    spec = {
        "name": "private_segments",
        "model": (
            "DP k-means (DPLloyd with a private initialisation from noisy means of public "
            "groups of rows)"
            if model.init == "groups"
            else "DP k-means (DPLloyd with a private candidate-histogram initialisation)"
        ),
        "n_clusters": model.n_clusters,
        "iterations": model.iterations,
        "init": model.init,
        "features": list(features),
        "log_features": [f for f in log_features if f in features],
        "categorical": list(categorical),
        "categorical_weight": PRIVATE_CATEGORICAL_WEIGHT,
        "releases": [vars(s) for s in model.plan()],
        "seed": seed if isinstance(seed, int) else None,
    }
    request = context.request(
        spec=spec,
        guarantee=Guarantee.END_TO_END,
        mechanism="laplace" if family == DPFamily.PURE else "gaussian",
        bounds={
            "privacy_unit": "one person (one row); neighbours add or remove a person",
            "feature_bounds": {f: list(bounds[f]) for f in features},
            "per_release_sensitivity": {s.name: s.sensitivity for s in model.plan()},
        },
        epsilon=epsilon,
        delta=None if family == DPFamily.PURE else float(privacy.delta),
        rho=rho,
        as_of=as_of,
        kind="dp",
        population_fingerprint=read_sha256[PREPARED_CUSTOMERS],
    )
    ledger = context.ledger
    # a demo or evaluation ledger takes the data its synthetic proof was about, only
    ledger.check_workspace(ws)
    # charged before the model runs, through the one publishing path (the ledger records a
    # "private_segments" entry only when this function calls begin: privacy.ledger's
    # _JOB_FUNCTIONS); the folder each fit replaces is staged beside it
    publication = begin(ledger, request, policy=policy, final=ws.private_segments, replaces=True)
    try:
        frame = customer_features(lines, customers, as_of=as_of, categories=categories)
        X, _ = private_features(frame, bounds, features, log_features, categorical)
        model.fit(X)
        assert model.privacy_loss_ == total  # what was charged is what OpenDP spent
        k = int(model.n_clusters)
        keys = [str(j) for j in range(k)]
        centroids = pd.DataFrame(
            {
                "segment": keys,
                **_unwarp_centroids(
                    model.centers_unit_, features, log_features, bounds, categorical
                ),
                "noisy_count": model.published_counts_,
            }
        )
        everyone = pl.DataFrame(
            {"person_id": frame["person_id"].to_numpy(), "segment": model.predict(X).astype(str)}
        )  # fmt: skip
        labels = (
            everyone.join(
                profiling_flags(customers, purpose, policy.profiling_eligibility.clause_ids),
                on="person_id",
                how="inner",
            )
            .filter(pl.col("profiling_eligible"))
            .select("person_id", "segment")
            .sort("person_id")
        )
        names = _segment_names_from_centroids(centroids, categories)
        metadata = _stage_private_segments(
            publication, model, centroids, labels, names, request, as_of
        )
    except BaseException as exc:
        publication.fail(exc)
        raise
    completing = False
    try:
        with ws.publishing(log_state, "segment --private"):  # charged, never published if refused
            completing = True  # from here the publication fails (or finishes) by itself
            _, card = publication.complete(
                CARD,
                released=(CENTROIDS,),  # the labels are personal data, never released
                replaced=ws.private_segments_replaced(publication.release_id),
            )
    except BaseException as exc:
        if not completing:
            publication.fail(exc)
        raise
    final = publication.final
    paths = {n: final / n for n in (CENTROIDS, LABELS, CARD, SEGMENT_METADATA)}
    return PrivateSegmentsResult(
        model, publication.release_id, centroids, labels.to_pandas(), card, metadata, paths
    )


def _stage_private_segments(
    publication: Publication,
    model: PrivateKMeans,
    centroids: Any,
    labels: Any,
    names: dict[str, str],
    request: ReleaseRequest,
    as_of: dt.date,
) -> dict[str, Any]:
    """Write the centroids (the release), the labels (post-processing, personal data), the
    card and the metadata into the publication's staging folder; returns the metadata."""
    staging, release_id = publication.staging, publication.release_id
    atomic_write_with(staging / CENTROIDS, lambda p: centroids.to_parquet(p, index=False))
    atomic_write_with(staging / LABELS, labels.write_parquet)
    card = {
        "guarantee": request.guarantee,
        "mechanism": request.mechanism,
        "privacy_loss": request.loss.to_dict(),
        "privacy_loss_per_iteration": model.iteration_losses_,
        "privacy_loss_per_release": {s.name: s.loss for s in model.privacy_steps_},
        "noise_scale_per_release": {s.name: s.scale for s in model.privacy_steps_},
        "contribution_bounds": dict(request.bounds),
        "spec": dict(request.spec),
        "as_of": as_of.isoformat(),
        "note": "the centroids and noisy counts are the release; labels.parquet is "
        "post-processing (personal data, never released, never trusted by a release); a "
        "release keyed by these segments recomputes each person's nearest centroid itself, "
        "after checking this entry and the centroids' hash in its own ledger, and states "
        "its end-to-end loss as its own plus this release's",
    }
    write_json(staging / CARD, card)  # the ledger's fields, parties and hashes: complete()
    metadata = {
        "provenance": PRIVATE_PROVENANCE,
        "fitted_on_private_data": False,
        "release_guarantee": request.guarantee,
        "release_id": release_id,
        "ledger_id": publication.ledger.ledger_id,
        "centroids_sha256": sha256_file(staging / CENTROIDS),
        "segments": names,
        "privacy_loss": request.loss.to_dict(),
        "purpose": request.purpose,
        "as_of": as_of.isoformat(),
        "names_from": "the released centroids (post-processing of the DP release)",
    }
    # the names, signed and bound to the centroids the ledger entry publishes
    metadata["names_signed"] = _sign_segment_names(
        names,
        names_from=str(metadata["names_from"]),
        bound_to={CENTROIDS: str(metadata["centroids_sha256"])},
    )
    write_json(staging / SEGMENT_METADATA, metadata)
    return metadata


# --- provenance: what a release keyed by private segments rests on -------------------------
@dataclass(frozen=True)
class PrivateModelRef:
    """The DP k-means release private segments rest on, as a ledger recorded it.

    Built only by :func:`private_model_ref`, which reads the entry from the ledger: the
    entry's id, the SHA-256 of the centroids it published, and the public facts needed to
    label a person (features, their log scale and bounds), all from the entry, never from a
    file a caller could edit.
    """

    release_id: str
    ledger_id: str
    centroids_path: Path
    centroids_sha256: str
    features: tuple[str, ...]
    log_features: tuple[str, ...]
    feature_bounds: Mapping[str, tuple[float, float]]
    loss: PrivacyLoss
    keys: tuple[str, ...]
    categorical: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The release, ledger, centroids' hash and loss the reference rests on, as a dict."""
        return {
            "release_id": self.release_id,
            "ledger_id": self.ledger_id,
            "centroids_sha256": self.centroids_sha256,
            "privacy_loss": self.loss.to_dict(),
        }


def _refuse_provenance(problem: str) -> Exception:
    from segments.exceptions import ReleaseRefusedError

    return ReleaseRefusedError(
        f"private segments refused: {problem}; rule: a release keyed by private segments rests "
        "on a DP k-means entry of the same ledger whose centroids' hash matches; fix: run "
        "`segments segment --private` with the ledger this release is charged to, or key the "
        "release by --segments category_rule; nothing was charged"
    )


def _find_entry(ledger: Ledger, release_id: str) -> LedgerEntry | None:
    try:
        return ledger.entry(release_id)
    except Exception:  # noqa: BLE001 - a missing id is reported by the caller
        return None


def private_model_ref(
    workspace: Workspace | str | os.PathLike[str], ledger: Ledger | None
) -> PrivateModelRef:
    """The DP k-means entry behind ``W/segments/private/``, verified against ``ledger``.

    Raises
    ------
    ReleaseRefusedError
        No metadata, no such published DP k-means entry in this ledger, or centroids whose
        SHA-256 differs from the one the entry published (hand-written labels or centroids,
        or a model charged to another ledger).
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    folder = ws.private_segments
    meta_path, centroids = folder / SEGMENT_METADATA, folder / CENTROIDS
    if not meta_path.exists() or not centroids.exists():
        raise _refuse_provenance(f"{folder} has no metadata.json and centroids.parquet")
    release_id = str(json.loads(meta_path.read_text(encoding="utf-8")).get("release_id", ""))
    entry = _find_entry(ledger, release_id) if release_id and ledger is not None else None
    if entry is None:
        raise _refuse_provenance(
            f"the ledger {getattr(ledger, 'path', '')} has no entry {release_id or '(none named)'}"
        )
    spec = dict(entry.request.spec)
    if entry.status != "published" or spec.get("name") != "private_segments":
        raise _refuse_provenance(f"ledger entry {release_id} is not a published DP k-means")
    digest = sha256_file(centroids)
    if dict(entry.files).get(CENTROIDS) != digest:
        raise _refuse_provenance(
            f"{centroids} does not have the SHA-256 ledger entry {release_id} published"
        )
    bounds = dict(entry.request.bounds).get("feature_bounds", {})
    n_clusters = int(spec.get("n_clusters", 0))
    return PrivateModelRef(
        release_id=release_id,
        ledger_id=str(getattr(entry, "ledger_id", "")),
        centroids_path=centroids,
        centroids_sha256=digest,
        features=tuple(spec["features"]),
        log_features=tuple(spec.get("log_features", ())),
        feature_bounds={f: (float(lo), float(hi)) for f, (lo, hi) in bounds.items()},
        loss=entry.request.loss,
        keys=tuple(str(j) for j in range(n_clusters)),
        categorical=tuple(spec.get("categorical", ())),
    )


def verify_private_model(ref: PrivateModelRef, ledger: Ledger) -> None:
    """Refuse unless ``ledger`` (the one a release is charged to) holds ``ref``'s entry with
    the centroids' hash the labels were computed from."""
    entry = _find_entry(ledger, ref.release_id)
    if entry is None or entry.status != "published":
        raise _refuse_provenance(
            f"DP k-means entry {ref.release_id} is not in the ledger this release is charged "
            f"to ({getattr(ledger, 'path', '')}); the segmentation's loss must be in the same "
            "ledger"
        )
    if getattr(entry, "job", None) != "dp-kmeans":
        raise _refuse_provenance(
            f"ledger entry {ref.release_id} was not recorded by the DP k-means job (a caller "
            "declared it); private segments rest only on a fitted DP k-means"
        )
    if dict(entry.files).get(CENTROIDS) != ref.centroids_sha256:
        raise _refuse_provenance(
            f"the centroids the labels were computed from are not those entry {ref.release_id} "
            "published"
        )


def private_model_labels(ref: PrivateModelRef, customers: Any, lines: Any, as_of: dt.date) -> Any:
    """Each person's private segment: the nearest released centroid to their own features.

    A row-level function of one person's purchases and of the DP centroids (post-processing),
    computed inside the release from the centroids ``ref`` verified — the labels file beside
    the model is never read, so no hand-written label can key a release.

    Returns
    -------
    polars.LazyFrame
        ``person_id``, ``segment``.
    """
    import polars as pl

    from segments.features import customer_features

    frame = customer_features(lines.filter(pl.col("order_date") <= as_of), customers, as_of=as_of)
    people, _ = private_features(
        frame, ref.feature_bounds, ref.features, ref.log_features, ref.categorical
    )
    centroids = pd.read_parquet(ref.centroids_path)
    if sha256_file(ref.centroids_path) != ref.centroids_sha256:
        raise _refuse_provenance(f"{ref.centroids_path} changed after it was verified")
    centers = _centroids_to_unit(
        centroids, ref.features, ref.log_features, ref.feature_bounds, ref.categorical
    )
    people = people.to_numpy()
    segment = centroids["segment"].astype(str).to_numpy()[nearest_centroid(people, centers)]
    return pl.DataFrame({"person_id": frame["person_id"].to_numpy(), "segment": segment}).lazy()
