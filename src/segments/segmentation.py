"""Exploratory customer segmentation: model selection, stability, profiles, names, targeting.

The pipeline is the public-bound feature transformer of :mod:`segments.features` followed by
KMeans (or a diagonal GaussianMixture). The number of segments is chosen over a range by
silhouette and BIC on a stated random subsample (all scores reported, with bootstrap
adjusted-Rand stability); the final fit starts from the chosen model's centres and uses
everyone. Segment ids are ordered by size (0 is the largest), so they do not depend on the
order in which the model happened to number its clusters.

The fitted model depends on every customer it saw, so its labels, profiles and names are
personal-data-derived: they stay in the sandbox, and ``metadata.json`` marks them
``"fitted_on_private_data": true`` with provenance ``"fitted_model"``, so a release keyed by
them can only claim "DP given a non-private segmentation". Only people the policy lets be
profiled (prepared ``profiling_eligible``; AO-5, AL-3, AK-4) get a per-person label; the
category rule (:func:`segments.features.category_rule_labels`, AL-2) is the alternative that
may key end-to-end DP releases.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from segments.exceptions import SchemaError, WorkspaceError
from segments.features import (
    CATEGORY_SHARE_FEATURES,
    CHANNEL_SHARE_FEATURES,
    FEATURE_GROUPS,
    LINE_SHARE_FEATURES,
    LOG_FEATURES,
    RFM_FEATURES,
    customer_features,
    make_feature_transformer,
)
from segments.geography import counties
from segments.workspace import Workspace, atomic_write_with, write_json

__all__ = [
    "DEFAULT_MODEL_CATEGORICAL",
    "DEFAULT_MODEL_NUMERIC",
    "MODELS",
    "FeatureSpec",
    "SegmentModel",
    "SegmentationResult",
    "TargetResult",
    "fit_segments",
    "segment",
    "segment_profiles",
    "target",
]

MODELS = ("kmeans", "gmm")
#: RFM, the category mix as share of order lines and the channel mix (standardised, each
#: group weighted as one feature), plus customer type and size band (one-hot, weight 1).
#: Left out by default, but available through ``FeatureSpec``: the share of spend per
#: category (a few expensive items swamp it; the line shares measure the same mix without
#: the price), the quarter shares (a person's few orders make them mostly noise) and
#: geography (it describes the segments in profiles and names).
DEFAULT_MODEL_NUMERIC = RFM_FEATURES + LINE_SHARE_FEATURES + CHANNEL_SHARE_FEATURES
DEFAULT_MODEL_CATEGORICAL = ("customer_type", "size_band")
PROVENANCE = "fitted_model"
#: What a DP release keyed by these labels may claim (docs/architecture.md).
RELEASE_GUARANTEE = "DP given a non-private segmentation"
_CLAUSES = ("AO-4", "AO-5", "AL-3", "AK-4")
#: Restarts of each candidate model: with few restarts a poor local optimum at one k can decide
#: the selection. Bootstrap refits use one: they only measure stability.
_N_INIT = 10


@dataclass(frozen=True)
class FeatureSpec:
    """The public description of the model's input: which features, their bounds, weights.

    Parameters
    ----------
    bounds : mapping of str to (float, float)
        Public clipping bounds of the numeric features (the policy's
        ``privacy.feature_bounds``, or the caller's), never computed from data.
    numeric, categorical : tuple of str
        Feature names from :mod:`segments.features`.
    log_features : tuple of str
        Numeric features scaled on a log1p scale.
    categorical_weight : float
        Weight of each one-hot block relative to a numeric feature (or group).
    standardize : bool
        Standardise the numeric features after public-bound scaling (see
        :func:`segments.features.make_feature_transformer`).
    block_weighting : bool
        Weight each group of :data:`segments.features.FEATURE_GROUPS` as one feature, so a
        mix measured by ten shares does not outvote one measured by three.
    """

    bounds: Mapping[str, tuple[float, float]]
    numeric: tuple[str, ...] = DEFAULT_MODEL_NUMERIC
    categorical: tuple[str, ...] = DEFAULT_MODEL_CATEGORICAL
    log_features: tuple[str, ...] = LOG_FEATURES
    categorical_weight: float = 1.0
    standardize: bool = True
    block_weighting: bool = True

    def transformer(self) -> ColumnTransformer:
        """A fresh (unfitted) column transformer for these features."""
        return make_feature_transformer(
            self.bounds,
            numeric=self.numeric,
            categorical=self.categorical,
            log_features=self.log_features,
            categorical_weight=self.categorical_weight,
            standardize=self.standardize,
            groups=FEATURE_GROUPS if self.block_weighting else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "numeric": list(self.numeric),
            "categorical": list(self.categorical),
            "log_features": [f for f in self.log_features if f in self.numeric],
            "categorical_weight": self.categorical_weight,
            "standardize": self.standardize,
            "block_weighting": self.block_weighting,
            "bounds": {f: list(self.bounds[f]) for f in self.numeric if f in self.bounds},
        }


# --- model selection ----------------------------------------------------------------------
def _estimator(
    model: str, k: int, random_state: int, init: np.ndarray | None = None, n_init: int = 1
) -> Any:
    if model == "kmeans":
        if init is not None:
            return KMeans(n_clusters=k, init=init, n_init=1, random_state=random_state)
        return KMeans(n_clusters=k, n_init=n_init, random_state=random_state)
    return GaussianMixture(
        n_components=k,
        covariance_type="diag",
        reg_covar=1e-4,
        n_init=n_init if init is None else 1,
        means_init=init,
        random_state=random_state,
    )


def _centres(fitted: Any) -> np.ndarray:
    return np.asarray(
        fitted.cluster_centers_ if hasattr(fitted, "cluster_centers_") else fitted.means_
    )


def _kmeans_bic(X: np.ndarray, labels: np.ndarray, inertia: float, k: int) -> float:
    """BIC of k-means read as a spherical Gaussian mixture with one shared variance.

    Pelleg & Moore (2000), X-means: log-likelihood of the hard assignment, with
    ``k - 1 + k * d + 1`` free parameters.
    """
    n, d = X.shape
    variance = max(inertia / (d * max(n - k, 1)), 1e-12)
    counts = np.bincount(labels, minlength=k)
    counts = counts[counts > 0]
    loglik = (
        float(np.sum(counts * np.log(counts / n)))
        - n * d / 2 * np.log(2 * np.pi * variance)
        - d * (n - k) / 2
    )
    n_params = k - 1 + k * d + 1
    return float(-2 * loglik + n_params * np.log(n))


def _bic(fitted: Any, X: np.ndarray, labels: np.ndarray, k: int) -> float:
    if isinstance(fitted, GaussianMixture):
        return float(fitted.bic(X))
    return _kmeans_bic(X, labels, float(fitted.inertia_), k)


def _stability(
    X: np.ndarray, model: str, k: int, reference: np.ndarray, rng: np.random.Generator, n: int
) -> list[float]:
    """Adjusted Rand index between the reference labels and refits on bootstrap resamples."""
    scores = []
    for _ in range(n):
        idx = rng.integers(0, X.shape[0], X.shape[0])
        refit = _estimator(model, k, int(rng.integers(2**31))).fit(X[idx])
        scores.append(float(adjusted_rand_score(reference, refit.predict(X))))
    return scores


#: Bootstrap stability (mean adjusted Rand index) a k needs to be a candidate.
MIN_STABILITY = 0.75
#: Silhouettes closer than this count as a tie.
SILHOUETTE_TIE = 0.002
SELECTION_RULE = (
    f"highest silhouette among the k whose mean bootstrap stability (ARI) is at least "
    f"{MIN_STABILITY} (all k if none is); silhouettes within {SILHOUETTE_TIE} of the best tie, "
    "and the lowest BIC among them wins if BIC has a minimum inside the range; if BIC still "
    "falls at the largest k it says nothing about k within the range, and the smallest tied k "
    "wins (parsimony)"
)


def _bic_has_interior_minimum(scores: pd.DataFrame) -> bool:
    """Whether BIC over the whole range is lowest below its largest k."""
    bic = scores.dropna(subset=["bic"]).sort_values("k")
    return len(bic) > 1 and int(bic["bic"].to_numpy().argmin()) < len(bic) - 1


def _select_k(scores: pd.DataFrame) -> int:
    """Apply :data:`SELECTION_RULE` to the score table."""
    stable = scores[scores["stability_ari_mean"].fillna(0) >= MIN_STABILITY]
    candidates = stable if len(stable) else scores
    candidates = (
        candidates[candidates["silhouette"].notna()]
        if candidates["silhouette"].notna().any()
        else candidates
    )
    if candidates["silhouette"].notna().any():
        best = candidates["silhouette"].max()
        candidates = candidates[candidates["silhouette"] >= best - SILHOUETTE_TIE]
    order = ["bic", "k"] if _bic_has_interior_minimum(scores) else ["k"]
    return int(candidates.sort_values(order)["k"].iloc[0])


def _score_range(
    X: np.ndarray,
    ks: Sequence[int],
    model: str,
    rng: np.random.Generator,
    silhouette_sample: int,
    n_bootstrap: int,
) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    rows, centres = [], {}
    for k in ks:
        fitted = _estimator(model, k, int(rng.integers(2**31)), n_init=_N_INIT).fit(X)
        labels = np.asarray(fitted.predict(X))
        n_used = int(np.unique(labels).size)
        silhouette = (
            float(
                silhouette_score(
                    X,
                    labels,
                    sample_size=min(silhouette_sample, X.shape[0]),
                    random_state=int(rng.integers(2**31)),
                )
            )
            if n_used > 1
            else float("nan")
        )
        stability = _stability(X, model, k, labels, rng, n_bootstrap)
        rows.append(
            {
                "k": k,
                "silhouette": silhouette,
                "bic": _bic(fitted, X, labels, k),
                "inertia": float(getattr(fitted, "inertia_", np.nan)),
                "stability_ari_mean": float(np.mean(stability)) if stability else np.nan,
                "stability_ari_min": float(np.min(stability)) if stability else np.nan,
            }
        )
        centres[k] = _centres(fitted)
    return pd.DataFrame(rows), centres


# --- the fitted model -----------------------------------------------------------------------
@dataclass
class SegmentModel:
    """A fitted segmentation: transformer, model, and segment ids ordered by size.

    Attributes
    ----------
    spec : FeatureSpec
    model : {'kmeans', 'gmm'}
    k : int
    transformer : sklearn ColumnTransformer (fitted; learns nothing from the data)
    estimator : fitted KMeans or GaussianMixture
    order : ndarray of int
        ``order[raw_label]`` is the segment id (0 = largest segment at fit time).
    scores : pandas.DataFrame
        Per k in the range: silhouette, BIC, inertia, bootstrap ARI stability.
    sizes : dict
        ``n_customers``, ``selection_sample_size``, ``silhouette_sample_size``,
        ``n_bootstrap``.
    seed : int or None
    """

    spec: FeatureSpec
    model: str
    k: int
    transformer: ColumnTransformer
    estimator: Any
    order: np.ndarray
    scores: pd.DataFrame
    sizes: dict[str, int]
    seed: int | None = None
    selection_rule: str = SELECTION_RULE
    labels_: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int32))

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """Segment id of each row of a feature frame (same columns as at fit time)."""
        _check_feature_columns(features, self.spec)
        raw = self.estimator.predict(self.transformer.transform(features))
        return self.order[np.asarray(raw)].astype(np.int32)

    def metadata(self) -> dict[str, Any]:
        """JSON-able description: features, bounds, k, scores, seed, sample sizes."""
        return {
            "fitted_on_private_data": True,
            "provenance": PROVENANCE,
            "release_guarantee": RELEASE_GUARANTEE,
            "model": self.model,
            "k": self.k,
            "features": self.spec.to_dict(),
            "bounds": self.spec.to_dict()["bounds"],
            "selection_rule": self.selection_rule,
            "scores": json.loads(self.scores.to_json(orient="records")),
            "seed": self.seed,
            **self.sizes,
        }


def _check_feature_columns(features: pd.DataFrame, spec: FeatureSpec) -> None:
    needed = [*spec.numeric, *spec.categorical]
    missing = [c for c in needed if c not in features.columns]
    if missing:
        raise SchemaError(
            f"table 'features', column {missing[0]!r}: rule 'required column' — missing "
            f"{missing}; fix: build the frame with segments.customer_features, or leave the "
            "feature out of the FeatureSpec"
        )


def _check_inputs(features: pd.DataFrame, spec: FeatureSpec, ks: list[int], model: str) -> None:
    if model not in MODELS:
        raise ValueError(f"parameter 'model' is {model!r}; fix: choose one of {list(MODELS)}")
    if not ks or min(ks) < 2:
        raise ValueError(
            f"parameter 'k_range' is {ks}; rule: at least one k, every k >= 2; fix: pass e.g. "
            "range(3, 11)"
        )
    _check_feature_columns(features, spec)
    n = len(features)
    if n == 0:
        raise ValueError(
            "table 'features' has 0 customers; rule: segmentation needs customers with "
            "purchases; fix: check the prepared frames' retention window and exclusions"
        )
    if n <= max(ks):
        raise ValueError(
            f"table 'features' has {n} customer(s) but k_range goes up to {max(ks)}; rule: "
            "more customers than segments; fix: lower k_range or segment more customers"
        )
    constant = [c for c in spec.numeric if features[c].nunique(dropna=False) <= 1]
    if constant:
        raise ValueError(
            f"table 'features': feature(s) {constant} have no variance (value "
            f"{features[constant[0]].iloc[0]!s} for everyone); rule: a feature that does not "
            "vary cannot separate segments; fix: leave them out of FeatureSpec.numeric"
        )


def _order_by_size(raw: np.ndarray, k: int) -> np.ndarray:
    counts = np.bincount(raw, minlength=k)
    ranked = sorted(range(k), key=lambda c: (-counts[c], c))
    order = np.empty(k, dtype=np.int32)
    order[ranked] = np.arange(k, dtype=np.int32)
    return order


def fit_segments(
    features: pd.DataFrame,
    spec: FeatureSpec,
    *,
    k_range: Iterable[int] = range(3, 11),
    model: str = "kmeans",
    seed: int | np.random.Generator = 0,
    selection_sample: int | None = 20_000,
    silhouette_sample: int = 5_000,
    n_bootstrap: int = 5,
) -> SegmentModel:
    """Choose the number of segments, then fit on everyone.

    Parameters
    ----------
    features : pandas.DataFrame
        One row per person, e.g. ``customer_features(...).to_pandas()``.
    spec : FeatureSpec
        The features used and their public bounds.
    k_range : iterable of int, default range(3, 11)
        Candidate numbers of segments.
    model : {'kmeans', 'gmm'}, default 'kmeans'
    seed : int or numpy.random.Generator, default 0
        Drives the subsample, every model's initialisation and the bootstrap.
    selection_sample : int or None, default 20000
        Model selection runs on a random subsample of this many people (None: everyone);
        the final fit and the labels use everyone.
    silhouette_sample : int, default 5000
        People sampled (from the selection sample) for each silhouette score.
    n_bootstrap : int, default 5
        Bootstrap refits per k for the adjusted-Rand stability score.

    Returns
    -------
    SegmentModel
        With ``labels_`` (segment id of each row of ``features``) and the selection scores.

    Raises
    ------
    ValueError
        No customers, no more customers than the largest k, a feature without variance, an
        empty or invalid ``k_range`` or an unknown ``model``.
    SchemaError
        A feature column is missing.
    """
    ks = sorted(set(int(k) for k in k_range))
    _check_inputs(features, spec, ks, model)
    rng = np.random.default_rng(seed)
    transformer = spec.transformer().fit(features)
    X = np.ascontiguousarray(transformer.transform(features), dtype=np.float64)
    n = X.shape[0]
    n_sel = n if selection_sample is None else min(int(selection_sample), n)
    sample = np.sort(rng.choice(n, size=n_sel, replace=False)) if n_sel < n else np.arange(n)
    X_sel = X[sample]
    ks = [k for k in ks if k < n_sel] or ks[:1]
    # Many small fits: one thread each avoids OpenMP oversubscription on a shared machine.
    with threadpool_limits(limits=1):
        scores, centres = _score_range(X_sel, ks, model, rng, silhouette_sample, n_bootstrap)
    k = _select_k(scores)
    # The final fit starts from the chosen model's centres; threads pay off only on big data.
    with threadpool_limits(limits=1 if n < 200_000 else None):
        estimator = _estimator(model, k, int(rng.integers(2**31)), init=centres[k]).fit(X)
        raw = np.asarray(estimator.predict(X))
    order = _order_by_size(raw, k)
    fitted = SegmentModel(
        spec=spec,
        model=model,
        k=k,
        transformer=transformer,
        estimator=estimator,
        order=order,
        scores=scores,
        sizes={
            "n_customers": n,
            "selection_sample_size": n_sel,
            "silhouette_sample_size": min(silhouette_sample, n_sel),
            "n_bootstrap": n_bootstrap,
        },
        seed=seed if isinstance(seed, int) else None,
    )
    fitted.labels_ = order[raw].astype(np.int32)
    return fitted


# --- profiles and names ---------------------------------------------------------------------
#: Short words for names ("frequent paper & toner buyers, Stockholm").
CATEGORY_WORDS = {
    "paper": "paper",
    "toner_ink": "toner",
    "writing": "writing",
    "filing_archiving": "filing",
    "desk_accessories": "desk",
    "coffee_pantry": "pantry",
    "cleaning_hygiene": "cleaning",
    "furniture": "furniture",
    "it_accessories": "IT",
    "packaging_shipping": "packaging",
}
_TYPE_WORDS = {"business": "business", "private": "private", "sole_trader": "sole-trader"}


def _county_names() -> dict[str, str]:
    c = counties()
    return dict(zip(c["county_code"].to_list(), c["county_name_short"].to_list(), strict=True))


def _mix(values: pd.Series, top: int = 3) -> list[tuple[str, float]]:
    shares = values.value_counts(normalize=True, sort=True)
    return [(str(k), float(v)) for k, v in shares.head(top).items()]


def _frequency_word(median: float, overall: float) -> str:
    if median >= 1.5 * overall:
        return "frequent"
    if median <= overall / 1.5:
        return "occasional"
    return "regular"


def _recency_word(median: float, overall: float) -> str | None:
    if median >= 2 * max(overall, 1.0):
        return "lapsed"
    if median <= overall / 2:
        return "recent"
    return None


def _category_of(column: str) -> str:
    return column.removeprefix("line_").removeprefix("share_")


def _mix_columns(frame: pd.DataFrame) -> list[str]:
    """The category mix that names and profiles use: shares of order lines when present (what
    a segment buys, whatever the price: one chair would outweigh a year of pens in spend),
    else shares of spend."""
    lines = [c for c in LINE_SHARE_FEATURES if c in frame]
    return lines or [c for c in CATEGORY_SHARE_FEATURES if c in frame]


def _categories_phrase(mean_shares: pd.Series) -> str:
    ranked = mean_shares.sort_values(ascending=False, kind="stable")
    first, second = ranked.index[0], ranked.index[1]
    words = [CATEGORY_WORDS[_category_of(first)]]
    if ranked.iloc[1] >= 0.5 * ranked.iloc[0]:
        words.append(CATEGORY_WORDS[_category_of(second)])
    return " & ".join(words)


def _distinct_level(segment: pd.Series, overall: pd.Series) -> str | None:
    """The level over-represented in the segment (>= 40 % of it and >= 1.5x its overall share)."""
    seg = segment.value_counts(normalize=True)
    ref = overall.value_counts(normalize=True)
    lift = seg / ref.reindex(seg.index)
    eligible = lift[(seg >= 0.4) & (lift >= 1.5)]
    return None if eligible.empty else str(eligible.sort_values(ascending=False).index[0])


def _segment_name(
    group: pd.DataFrame, everyone: pd.DataFrame, county_names: Mapping[str, str]
) -> str:
    words = [
        _frequency_word(
            float(group["frequency_orders"].median()), float(everyone["frequency_orders"].median())
        )
    ]
    recency = _recency_word(
        float(group["recency_days"].median()), float(everyone["recency_days"].median())
    )
    if recency:
        words.insert(0, recency)
    spend = float(group["monetary_sek"].median()) / max(
        float(everyone["monetary_sek"].median()), 1e-9
    )
    if spend >= 2 or spend <= 0.5:
        words.append("high-spend" if spend >= 2 else "low-spend")
    if "customer_type" in group:
        kind = _distinct_level(group["customer_type"], everyone["customer_type"])
        if kind is not None:
            words.append(_TYPE_WORDS.get(kind, kind))
    share_cols = _mix_columns(group)
    if share_cols:
        words.append(_categories_phrase(group[share_cols].mean()))
    name = " ".join([*words, "buyers"])
    if "county_code" in group:
        county = _distinct_level(group["county_code"], everyone["county_code"])
        if county is not None:
            name += f", {county_names.get(county, county)}"
    return name


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def segment_profiles(features: pd.DataFrame, segments: np.ndarray | pd.Series) -> pd.DataFrame:
    """Aggregate profile and a short readable name per segment.

    Parameters
    ----------
    features : pandas.DataFrame
        The feature frame (RFM columns required; category shares, channel shares,
        ``county_code`` and ``customer_type`` used when present).
    segments : array-like of int
        The segment of each row.

    Returns
    -------
    pandas.DataFrame
        One row per segment: ``segment``, ``name``, ``size``, ``share``, the median of each
        RFM feature (``<feature>_median``), the mean category and channel shares
        (``<feature>_mean``), ``top_categories`` (share of order lines when the features
        have it, else of spend), ``top_counties`` and ``customer_types`` (readable mixes
        such as ``"Stockholm 31%, Skåne 12%"``). Personal-data-derived:
        for use inside the sandbox.
    """
    frame = features.reset_index(drop=True).assign(segment=np.asarray(segments))
    county_names = _county_names()
    rows = []
    for seg, group in frame.groupby("segment", sort=True):
        row: dict[str, Any] = {
            "segment": int(str(seg)),
            "size": len(group),
            "share": len(group) / len(frame),
        }
        row.update({f"{c}_median": float(group[c].median()) for c in RFM_FEATURES if c in group})
        mixes = (*CATEGORY_SHARE_FEATURES, *LINE_SHARE_FEATURES, *CHANNEL_SHARE_FEATURES)
        row.update({f"{c}_mean": float(group[c].mean()) for c in mixes if c in group})
        cats = _mix_columns(group)
        if cats:
            top = group[cats].mean().sort_values(ascending=False, kind="stable").head(3)
            row["top_categories"] = ", ".join(
                f"{_category_of(str(c))} {v:.0%}" for c, v in top.items()
            )
        if "county_code" in group:
            row["top_counties"] = ", ".join(
                f"{county_names.get(c, c)} {v:.0%}" for c, v in _mix(group["county_code"])
            )
        if "customer_type" in group:
            row["customer_types"] = ", ".join(
                f"{t} {v:.0%}" for t, v in _mix(group["customer_type"])
            )
        row["name"] = _segment_name(group, frame, county_names)
        rows.append(row)
    profiles = pd.DataFrame(rows)
    profiles["name"] = _unique_names(profiles["name"].tolist())
    first = ["segment", "name", "size", "share"]
    return profiles[first + [c for c in profiles.columns if c not in first]]


# --- the workspace stage ----------------------------------------------------------------------
@dataclass(frozen=True)
class SegmentationResult:
    """What :func:`segment` wrote, and the fitted model."""

    model: SegmentModel
    labels: pl.DataFrame
    profiles: pd.DataFrame
    metadata: dict[str, Any]
    paths: dict[str, Path]


def _load_policy(policy: Any) -> Any:
    if isinstance(policy, str | Path):
        from segments.policy import Policy

        return Policy.load(policy)
    return policy


def _policy_bounds(policy: Any) -> dict[str, tuple[float, float]]:
    bounds = getattr(getattr(policy, "privacy", None), "feature_bounds", None)
    if not bounds:
        raise SchemaError(
            f"policy {getattr(policy, 'name', policy)!r}: key 'privacy.feature_bounds' is "
            "missing or empty; rule: segmentation features are clipped to public bounds; fix: "
            "add the bounds of docs/architecture.md to the policy file"
        )
    return {str(k): (float(v[0]), float(v[1])) for k, v in dict(bounds).items()}


def _prepared_as_of(prepared: Path) -> dt.date:
    report = prepared / "policy_report.json"
    if report.exists():
        value = json.loads(report.read_text(encoding="utf-8")).get("as_of")
        if value:
            return dt.date.fromisoformat(str(value)[:10])
    raise WorkspaceError(
        f"{report}: no 'as_of' recorded for the prepared frames; fix: pass as_of "
        "(`--as-of YYYY-MM-DD`) or re-run `segments prepare`"
    )


def _read_prepared(ws: Workspace, purpose: str) -> tuple[Path, pl.LazyFrame, pl.LazyFrame]:
    folder = ws.prepared_dir(purpose)
    made_by = f"segments prepare --workspace {ws.root} --purpose {purpose}"
    lines = pl.scan_parquet(ws.require(folder / "lines.parquet", made_by))
    customers = pl.scan_parquet(ws.require(folder / "customers.parquet", made_by))
    return folder, lines, customers


def _eligible(customers: pl.LazyFrame, purpose: str) -> pl.DataFrame:
    if "profiling_eligible" not in customers.collect_schema().names():
        raise SchemaError(
            f"table 'customers' (prepared for {purpose!r}), column 'profiling_eligible': rule "
            "'only profiling-eligible people get a label' (AO-5, AL-3) — column missing; fix: "
            "prepare frames for a purpose whose columns include profiling_eligible"
        )
    return customers.select("person_id", "profiling_eligible").collect()


def segment(
    workspace: Workspace | str | Path,
    policy: Any,
    purpose: str = "segmentation",
    *,
    as_of: dt.date | None = None,
    k_range: Iterable[int] = range(3, 11),
    model: str = "kmeans",
    seed: int = 0,
    selection_sample: int | None = 20_000,
    n_bootstrap: int = 5,
    spec: FeatureSpec | None = None,
) -> SegmentationResult:
    """Segment the prepared customers; write labels, profiles and metadata to ``W/segments/``.

    Features are computed for everyone with purchases in the prepared frames (the purpose
    allows the analysis, AO-4); the model is fitted on them; only people with
    ``profiling_eligible`` get a row in ``labels.parquet`` (AO-5, AL-3, AK-4). Everything
    is computed before anything is written, and each file is written atomically.

    Parameters
    ----------
    workspace : Workspace or path
    policy : Policy or str
        A policy (or its name); its ``privacy.feature_bounds`` are the public bounds.
    purpose : str, default 'segmentation'
        Which prepared frames to read (``W/prepared/<purpose>/``).
    as_of : datetime.date, optional
        Reference date for recency; default: the ``as_of`` in the prepared
        ``policy_report.json``.
    k_range, model, seed, selection_sample, n_bootstrap
        As in :func:`fit_segments`.
    spec : FeatureSpec, optional
        Default: :data:`DEFAULT_MODEL_NUMERIC` and :data:`DEFAULT_MODEL_CATEGORICAL` with the
        policy's bounds.

    Returns
    -------
    SegmentationResult

    Raises
    ------
    WorkspaceError
        The prepared frames are missing, or no ``as_of`` is known.
    SchemaError
        A prepared column is missing or the policy has no feature bounds.
    ValueError
        As in :func:`fit_segments`.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    policy = _load_policy(policy)
    folder, lines, customers = _read_prepared(ws, purpose)
    as_of = as_of or _prepared_as_of(folder)
    spec = spec or FeatureSpec(bounds=_policy_bounds(policy))
    features = customer_features(lines, customers, as_of=as_of).to_pandas()
    fitted = fit_segments(
        features,
        spec,
        k_range=k_range,
        model=model,
        seed=seed,
        selection_sample=selection_sample,
        n_bootstrap=n_bootstrap,
    )
    everyone = pl.DataFrame({"person_id": features["person_id"], "segment": fitted.labels_})
    eligible = _eligible(customers, purpose)
    labels = (
        everyone.join(eligible, on="person_id", how="inner")
        .filter(pl.col("profiling_eligible"))
        .select("person_id", "segment")
        .sort("person_id")
    )
    profiles = segment_profiles(features, fitted.labels_)
    labelled = labels.group_by("segment").len().to_pandas().set_index("segment")["len"]
    profiles["labelled"] = profiles["segment"].map(labelled).fillna(0).astype("int64")
    n_customers = eligible.height
    metadata = {
        **fitted.metadata(),
        "policy": str(getattr(policy, "name", policy)),
        "purpose": purpose,
        "as_of": as_of.isoformat(),
        "clause_ids": list(_CLAUSES),
        "k_range": [int(k) for k in fitted.scores["k"]],
        "n_prepared_customers": n_customers,
        "n_without_purchases": n_customers - len(features),
        "n_labelled": labels.height,
        "n_not_profiling_eligible": len(features) - labels.height,
        "segments": {str(s): n for s, n in zip(profiles["segment"], profiles["name"], strict=True)},
    }
    paths = _write_segments(ws, labels, profiles, metadata)
    return SegmentationResult(fitted, labels, profiles, metadata, paths)


def _write_segments(
    ws: Workspace, labels: pl.DataFrame, profiles: pd.DataFrame, metadata: dict[str, Any]
) -> dict[str, Path]:
    folder = ws.segments
    paths = {
        "labels": folder / "labels.parquet",
        "profiles": folder / "profiles.parquet",
        "metadata": folder / "metadata.json",
    }
    atomic_write_with(paths["labels"], labels.write_parquet)
    atomic_write_with(paths["profiles"], lambda p: profiles.to_parquet(p, index=False))
    write_json(paths["metadata"], metadata)  # last: its presence marks a complete run
    return paths


# --- targeting (AO-5, AO-7) ---------------------------------------------------------------------
@dataclass(frozen=True)
class TargetResult:
    """The offer list written for the data steward, and what was excluded."""

    segment: int
    name: str
    path: Path
    n_targeted: int
    n_in_segment: int
    excluded: dict[str, int]


def _resolve_segment(value: int | str, names: Mapping[str, str]) -> int:
    text = str(value).strip()
    if re.fullmatch(r"\d+", text) and text in names:
        return int(text)
    matches = [int(s) for s, n in names.items() if n == text]
    if matches:
        return matches[0]
    choices = "; ".join(f"{s}: {n}" for s, n in names.items())
    raise ValueError(
        f"parameter 'segment' is {value!r}, which is not a segment of the current "
        f"segmentation; fix: pass a segment id or exact name ({choices})"
    )


def target(workspace: Workspace | str | Path, segment: int | str) -> TargetResult:
    """Write the pseudonyms of the people to offer in one segment, for the data steward.

    A person is targeted if they have a label in the segment, are still in the prepared
    customers, are still ``profiling_eligible`` (AO-5, AL-3, AK-4; a withdrawal since the
    segmentation takes effect now, AO-8) and have not opted out of marketing (AO-7, AK-4).

    Parameters
    ----------
    workspace : Workspace or path
    segment : int or str
        Segment id, or its exact name from ``W/segments/metadata.json``.

    Returns
    -------
    TargetResult
        Written to ``W/segments/targets/segment-<id>.parquet`` (``person_id`` only) with a
        summary ``segment-<id>.json`` (counts excluded per rule, clause ids).

    Raises
    ------
    WorkspaceError
        No segmentation in the workspace.
    ValueError
        Unknown segment.
    SchemaError
        The prepared customers lack ``marketing_opt_out`` or ``profiling_eligible``.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    made_by = f"segments segment --workspace {ws.root}"
    meta_path = ws.require(ws.segments / "metadata.json", made_by)
    metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    seg = _resolve_segment(segment, metadata["segments"])
    purpose = metadata["purpose"]
    members = (
        pl.read_parquet(ws.require(ws.segments / "labels.parquet", made_by))
        .filter(pl.col("segment") == seg)
        .select("person_id")
    )
    _, _, customers = _read_prepared(ws, purpose)
    flags = ("profiling_eligible", "marketing_opt_out")
    missing = [c for c in flags if c not in customers.collect_schema().names()]
    if missing:
        raise SchemaError(
            f"table 'customers' (prepared for {purpose!r}), column {missing[0]!r}: rule "
            "'offers respect eligibility and marketing opt-outs' (AO-5, AO-7) — column missing; "
            "fix: prepare frames for a purpose whose columns include both flags"
        )
    current = members.join(
        customers.select("person_id", *flags).collect(), on="person_id", how="left"
    )
    gone = current.filter(pl.col("profiling_eligible").is_null())
    not_eligible = current.filter(pl.col("profiling_eligible") == False)  # noqa: E712
    opted_out = current.filter(pl.col("profiling_eligible") & pl.col("marketing_opt_out"))
    targeted = current.filter(pl.col("profiling_eligible") & ~pl.col("marketing_opt_out"))
    folder = ws.segments / "targets"
    path = folder / f"segment-{seg}.parquet"
    excluded = {
        "no_longer_in_prepared_customers": gone.height,
        "not_profiling_eligible (AO-5, AL-3, AK-4)": not_eligible.height,
        "marketing_opt_out (AO-7, AK-4)": opted_out.height,
    }
    summary = {
        "segment": seg,
        "name": metadata["segments"][str(seg)],
        "purpose": purpose,
        "clause_ids": ["AO-5", "AO-7", "AL-3", "AK-4"],
        "n_in_segment": members.height,
        "n_targeted": targeted.height,
        "excluded": excluded,
        "recipient": "data steward (holds the pseudonymisation key, AO-9)",
    }
    atomic_write_with(path, targeted.select("person_id").sort("person_id").write_parquet)
    write_json(folder / f"segment-{seg}.json", summary)
    return TargetResult(seg, summary["name"], path, targeted.height, members.height, excluded)
