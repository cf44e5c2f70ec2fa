"""Exploratory customer segmentation: model selection, stability, profiles, names, targeting.

The pipeline is the public-bound feature transformer of :mod:`segments.features` followed by
KMeans (or a diagonal GaussianMixture). The number of segments is chosen over a range on a
stated random subsample by what generalises: the sample is split into halves several times,
each half is clustered, and each k is judged by the Davies-Bouldin index of one half's
partition scored on the other half (held out) among the k whose two halves agree (split-half
adjusted Rand stability); when two k are within the uncertainty of those splits the smaller
wins, and the margin is reported (:class:`Selection`). Silhouette and BIC are reported too.
The final fit starts from the chosen model's centres and uses everyone. Segment ids are
ordered by size (0 is the largest), so they do not depend on the order in which the model
happened to number its clusters.

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
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from scipy.stats import t as student_t
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.metrics import adjusted_rand_score, davies_bouldin_score, silhouette_score
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
from segments.progress import progress
from segments.workspace import Workspace, atomic_write_with, make_private, write_json

__all__ = [
    "DEFAULT_MODEL_CATEGORICAL",
    "DEFAULT_MODEL_NUMERIC",
    "MODELS",
    "planted_archetypes",
    "FeatureSpec",
    "SegmentModel",
    "SegmentationResult",
    "Selection",
    "TargetResult",
    "fit_segments",
    "segment",
    "segment_profiles",
    "target",
]

MODELS = ("kmeans", "gmm")
#: RFM, the category mix as shares of order lines and as shares of spend, and the channel mix
#: (standardised, each group weighted as one feature, so none dominates by its range or its
#: number of columns), plus customer type and size band (one-hot, weight 1). The two mixes
#: differ by price (a chair outweighs a year of pens in spend, not in lines); together they
#: separate the planted archetypes better than either (ARI at the planted k 0.835-0.859
#: instead of 0.796-0.830 on the tuning datasets, benchmarks/bench_segments_heldout.py).
#: Left out by default, but available through ``FeatureSpec``: the quarter shares (a
#: person's few orders make them mostly noise) and geography (it describes the segments in
#: profiles and names).
DEFAULT_MODEL_NUMERIC = (
    RFM_FEATURES + LINE_SHARE_FEATURES + CATEGORY_SHARE_FEATURES + CHANNEL_SHARE_FEATURES
)
DEFAULT_MODEL_CATEGORICAL = ("customer_type", "size_band")
PROVENANCE = "fitted_model"
#: What a DP release keyed by these labels may claim (docs/architecture.md).
RELEASE_GUARANTEE = "DP given a non-private segmentation"
#: Restarts of each candidate model: with few restarts a poor local optimum at one k can decide
#: the selection. Split-half refits use two starts (see ``_fit_half``).
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
    #: the groups block weighting uses; default FEATURE_GROUPS (another taxonomy: its own)
    groups: Mapping[str, tuple[str, ...]] | None = None

    def transformer(self) -> ColumnTransformer:
        """A fresh (unfitted) column transformer for these features."""
        return make_feature_transformer(
            self.bounds,
            numeric=self.numeric,
            categorical=self.categorical,
            log_features=self.log_features,
            categorical_weight=self.categorical_weight,
            standardize=self.standardize,
            groups=(self.groups or FEATURE_GROUPS) if self.block_weighting else None,
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


def _split_halves(n: int, n_splits: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n_splits`` random splits of ``range(n)`` into two halves, shared by every k so that
    the k are compared on the same splits (paired)."""
    return [rng.permutation(n) for _ in range(n_splits)]


def _fit_half(model: str, X: np.ndarray, k: int, reference: np.ndarray, seed: int) -> Any:
    """The better (by the model's own objective) of two fits on a half: one started from the
    reference centres, one from k-means++. A k whose optimum is unique lands on it from
    either start; at a k that only splits a group arbitrarily the fresh start finds another
    split about as good, so the halves disagree. One start alone would measure the luck of
    the initialisation instead (a bad local optimum at the right k)."""
    warm = _estimator(model, k, seed, init=reference).fit(X)
    fresh = _estimator(model, k, seed).fit(X)
    if isinstance(warm, GaussianMixture):
        return warm if warm.score(X) >= fresh.score(X) else fresh
    return warm if warm.inertia_ <= fresh.inertia_ else fresh


def _held_out_davies_bouldin(X: np.ndarray, labels: np.ndarray) -> float:
    """Davies-Bouldin index of ``labels`` on ``X`` (nan with fewer than two groups)."""
    if np.unique(labels).size < 2:
        return float("nan")
    return float(davies_bouldin_score(X, labels))


def _split_half_evidence(
    X: np.ndarray,
    model: str,
    k: int,
    reference: np.ndarray,
    splits: Sequence[np.ndarray],
    rng: np.random.Generator,
) -> tuple[list[float], list[float]]:
    """Per split: the ARI between the two halves' partitions of the whole sample, and the
    held-out Davies-Bouldin index both ways (fitted on one half, scored on the other)."""
    half = X.shape[0] // 2
    stability, davies_bouldin = [], []
    for order in splits:
        a, b = order[:half], order[half:]
        fit_a = _fit_half(model, X[a], k, reference, int(rng.integers(2**31)))
        fit_b = _fit_half(model, X[b], k, reference, int(rng.integers(2**31)))
        labels_a, labels_b = np.asarray(fit_a.predict(X)), np.asarray(fit_b.predict(X))
        stability.append(float(adjusted_rand_score(labels_a, labels_b)))
        davies_bouldin += [
            _held_out_davies_bouldin(X[b], labels_a[b]),
            _held_out_davies_bouldin(X[a], labels_b[a]),
        ]
    return stability, davies_bouldin


#: Split-half stability (mean ARI between the halves' partitions) a k needs to be a candidate.
MIN_STABILITY = 0.75
#: Share of the selection sample the smallest segment of a candidate k must hold: a segment of
#: 1 % is too small to act on or to publish with useful noise, and such splits (e.g. the
#: one-order customers) come and go with the restarts.
MIN_SEGMENT_SHARE = 0.02
#: A difference between two k counts as evidence only when this two-sided confidence interval
#: of the paired difference over the splits (Student t, so few splits give wide intervals)
#: excludes zero; otherwise they are too close to call.
CONFIDENCE = 0.95
#: A loss of split-half stability (ARI) smaller than this is immaterial, however consistent.
STABILITY_TOLERANCE = 0.02
SELECTION_RULE = (
    "every k is judged on the same n_splits random splits of the selection sample into halves: "
    "the held-out Davies-Bouldin index (fit on one half, score on the other, both ways; lower "
    "is better) and the split-half stability (ARI between the two halves' partitions). "
    f"Candidates: the k whose mean stability is at least {MIN_STABILITY} and whose smallest "
    f"segment holds at least {MIN_SEGMENT_SHARE:.0%} of the sample (all k if none does). "
    "Starting from the smallest candidate, move to the smallest larger k that beats it: a "
    f"held-out index lower beyond the {CONFIDENCE:.0%} t interval of the paired difference, "
    f"and a stability not lower beyond it and by more than {STABILITY_TOLERANCE} ARI. "
    "Otherwise the smaller k stands "
    "(parsimony); the margin to the runner-up is reported"
)


@dataclass(frozen=True)
class Selection:
    """How k was chosen: the evidence against its competitors and the margin.

    Attributes
    ----------
    k : int
        The chosen number of segments.
    best_k : int
        The candidate with the lowest mean held-out Davies-Bouldin index.
    too_close_to_call : tuple of int
        Other candidates whose held-out index is within the noise of ``k``'s.
    less_reproducible : tuple of int
        Larger candidates with a clearly lower index whose halves agree clearly less.
    runner_up : int or None
        The other candidate nearest to ``k`` in mean held-out index.
    margin : float
        Mean paired difference of the held-out index, runner-up minus ``k`` (positive: ``k``
        scores better), nan without a runner-up.
    margin_se : float
        Standard error of that difference over the splits.
    margin_half_width : float
        Half-width of its :data:`CONFIDENCE` interval.
    candidates : tuple of int
        The k that passed the stability and segment-size requirements.
    """

    k: int
    best_k: int
    too_close_to_call: tuple[int, ...]
    less_reproducible: tuple[int, ...]
    runner_up: int | None
    margin: float
    margin_se: float
    margin_half_width: float
    candidates: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        def number(x: float) -> float | None:
            return None if not np.isfinite(x) else round(float(x), 6)

        return {
            "k": self.k,
            "best_k": self.best_k,
            "too_close_to_call": list(self.too_close_to_call),
            "less_reproducible": list(self.less_reproducible),
            "runner_up": self.runner_up,
            "margin": number(self.margin),
            "margin_se": number(self.margin_se),
            "margin_half_width": number(self.margin_half_width),
            "candidates": list(self.candidates),
        }

    def summary(self) -> str:
        """One or two sentences for an analyst."""
        if self.runner_up is None:
            return f"k = {self.k}: the only candidate"
        diff = f"{self.margin:+.3f} ± {self.margin_half_width:.3f}"
        if self.too_close_to_call:
            others = ", ".join(str(k) for k in self.too_close_to_call)
            text = (
                f"k = {self.k} and k = {others} are too close to call (held-out Davies-Bouldin "
                f"difference to k = {self.runner_up}: {diff}); the evidence does not separate "
                f"them, so k = {self.k} is chosen"
            )
        else:
            text = (
                f"k = {self.k} is separated from the runner-up k = {self.runner_up} (held-out "
                f"Davies-Bouldin difference {diff})"
            )
        if self.less_reproducible:
            others = ", ".join(str(k) for k in self.less_reproducible)
            text += (
                f"; k = {others} scores a lower held-out index, but its halves agree clearly "
                "less (split-half stability), so it is not chosen"
            )
        return text


def _paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Mean, standard error and :data:`CONFIDENCE` half-width (Student t) of ``a - b`` over
    the splits where both are defined."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    diff = diff[np.isfinite(diff)]
    if diff.size == 0:
        return float("nan"), float("nan"), float("nan")
    if diff.size == 1:
        return float(diff[0]), float("inf"), float("inf")
    se = float(diff.std(ddof=1) / np.sqrt(diff.size))
    return float(diff.mean()), se, se * _t_quantile(diff.size - 1)


def _t_quantile(dof: int) -> float:
    return float(student_t.ppf(0.5 + CONFIDENCE / 2, dof))


def _clearly_positive(mean: float, se: float, half_width: float) -> bool:
    return bool(np.isfinite(mean) and mean > half_width)


def _select_k(
    scores: pd.DataFrame,
    davies_bouldin: Mapping[int, np.ndarray],
    stability: Mapping[int, np.ndarray],
) -> Selection:
    """Apply :data:`SELECTION_RULE`. ``davies_bouldin[k]`` holds k's held-out indices (two per
    split) and ``stability[k]`` its split-half ARIs (one per split), aligned over the same
    splits for every k."""
    stable = scores[
        (scores["stability_ari_mean"].fillna(0) >= MIN_STABILITY)
        & (scores.get("smallest_segment_share", 1.0) >= MIN_SEGMENT_SHARE)
    ]
    pool = stable if len(stable) else scores
    means = {int(k): float(np.nanmean(davies_bouldin[int(k)])) for k in pool["k"]}
    finite = {k: m for k, m in means.items() if np.isfinite(m)}
    if not finite:  # no index anywhere (e.g. a single group in every half): parsimony
        smallest = int(pool["k"].min())
        nan = float("nan")
        return Selection(smallest, smallest, (), (), None, nan, nan, nan, (smallest,))
    candidates = sorted(finite)

    def lower_index(large: int, small: int) -> bool:
        return _clearly_positive(*_paired_difference(davies_bouldin[small], davies_bouldin[large]))

    def less_stable(large: int, small: int) -> bool:
        loss, se, half_width = _paired_difference(stability[small], stability[large])
        return _clearly_positive(loss, se, max(half_width, STABILITY_TOLERANCE))

    chosen = candidates[0]
    while True:
        beaters = [
            k
            for k in candidates
            if k > chosen and lower_index(k, chosen) and not less_stable(k, chosen)
        ]
        if not beaters:
            break
        chosen = beaters[0]
    others = [k for k in candidates if k != chosen]
    tied = tuple(k for k in others if not lower_index(k, chosen) and not lower_index(chosen, k))
    less_reproducible = tuple(
        k for k in others if k > chosen and lower_index(k, chosen) and less_stable(k, chosen)
    )
    runner_up, margin, margin_se, half_width = None, float("nan"), float("nan"), float("nan")
    if others:
        runner_up = min(others, key=lambda k: (abs(finite[k] - finite[chosen]), k))
        margin, margin_se, half_width = _paired_difference(
            davies_bouldin[runner_up], davies_bouldin[chosen]
        )
    return Selection(
        k=chosen,
        best_k=min(finite, key=lambda k: (finite[k], k)),
        too_close_to_call=tied,
        less_reproducible=less_reproducible,
        runner_up=runner_up,
        margin=margin,
        margin_se=margin_se,
        margin_half_width=half_width,
        candidates=tuple(candidates),
    )


def _interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and its :data:`CONFIDENCE` interval (Student t; nan-safe, a point for one value)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    half = float(v.std(ddof=1) / np.sqrt(v.size)) * _t_quantile(v.size - 1) if v.size > 1 else 0.0
    return mean, mean - half, mean + half


def _score_range(
    X: np.ndarray,
    ks: Sequence[int],
    model: str,
    rng: np.random.Generator,
    silhouette_sample: int,
    n_splits: int,
) -> tuple[pd.DataFrame, dict[int, np.ndarray], dict[int, np.ndarray], dict[int, np.ndarray]]:
    rows, centres, davies_bouldin, stabilities = [], {}, {}, {}
    splits = _split_halves(X.shape[0], n_splits, rng)
    for k in progress(ks, desc="choosing k", unit="k"):
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
        stability, held_out = _split_half_evidence(X, model, k, _centres(fitted), splits, rng)
        stab_mean, stab_low, stab_high = _interval(stability)
        db_mean, db_low, db_high = _interval(held_out)
        rows.append(
            {
                "k": k,
                "davies_bouldin": db_mean,
                "davies_bouldin_low": db_low,
                "davies_bouldin_high": db_high,
                "stability_ari_mean": stab_mean,
                "stability_ari_low": stab_low,
                "stability_ari_high": stab_high,
                "stability_ari_min": float(np.min(stability)) if stability else np.nan,
                "smallest_segment_share": float(
                    np.bincount(labels, minlength=k).min() / X.shape[0]
                ),
                "silhouette": silhouette,
                "bic": _bic(fitted, X, labels, k),
                "inertia": float(getattr(fitted, "inertia_", np.nan)),
            }
        )
        centres[k] = _centres(fitted)
        davies_bouldin[k] = np.asarray(held_out, dtype=float)
        stabilities[k] = np.asarray(stability, dtype=float)
    return pd.DataFrame(rows), centres, davies_bouldin, stabilities


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
        Per k in the range: held-out Davies-Bouldin index (mean and interval), split-half
        ARI stability (mean, interval, minimum), the smallest segment's share, silhouette, BIC,
        inertia.
    sizes : dict
        ``n_customers``, ``selection_sample_size``, ``silhouette_sample_size``,
        ``n_splits``.
    seed : int or None
    selection : Selection or None
        The chosen k, the ties and the margin.
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
    selection: Selection | None = None
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
            "selection": None if self.selection is None else self.selection.to_dict(),
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
    silhouette_sample: int = 2_000,
    n_splits: int = 5,
    n_bootstrap: int | None = None,
) -> SegmentModel:
    """Choose the number of segments, then fit on everyone.

    Parameters
    ----------
    features : pandas.DataFrame
        One row per person, e.g. ``customer_features(...)``.
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
    silhouette_sample : int, default 2000
        People sampled (from the selection sample) for each silhouette score (reported,
        not used by the rule; its cost grows with the square of this number).
    n_splits : int, default 5
        Random splits of the selection sample into halves; every k is judged on the same
        splits (:data:`SELECTION_RULE`).
    n_bootstrap : int, optional
        Former name of ``n_splits`` (the resampling is now split-half); overrides it.

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
    n_splits = int(n_bootstrap if n_bootstrap is not None else n_splits)
    _check_inputs(features, spec, ks, model)
    if n_splits < 1:
        raise ValueError(f"parameter 'n_splits' is {n_splits}; rule: at least 1; fix: pass 5")
    rng = np.random.default_rng(seed)
    transformer = spec.transformer().fit(features)
    X = np.ascontiguousarray(transformer.transform(features), dtype=np.float64)
    n = X.shape[0]
    n_sel = n if selection_sample is None else min(int(selection_sample), n)
    sample = np.sort(rng.choice(n, size=n_sel, replace=False)) if n_sel < n else np.arange(n)
    X_sel = X[sample]
    ks = [k for k in ks if k < n_sel // 2] or ks[:1]  # each half must hold more people than k
    # Many small fits: one thread each avoids OpenMP oversubscription on a shared machine.
    with threadpool_limits(limits=1):
        scores, centres, held_out, stability = _score_range(
            X_sel, ks, model, rng, silhouette_sample, n_splits
        )
    selection = _select_k(scores, held_out, stability)
    k = selection.k
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
            "n_splits": n_splits,
        },
        seed=seed if isinstance(seed, int) else None,
        selection=selection,
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
    """What :func:`segment` wrote, and the fitted model.

    ``labels`` (``person_id``, ``segment``) and ``profiles`` are pandas, as every table the
    public API returns.
    """

    model: SegmentModel
    labels: pd.DataFrame
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
    lines_path = ws.require(folder / "lines.parquet", made_by)
    customers_path = ws.require(folder / "customers.parquet", made_by)
    # Read whole under the shared workspace lock: an erasure rewrites these frames under the
    # exclusive one, and a lazy scan during the fit read them half-replaced ("Invalid
    # thrift"); an erasure recorded meanwhile refuses the write (Workspace.publishing).
    with ws.lock(exclusive=False):
        lines = pl.read_parquet(lines_path).lazy()
        customers = pl.read_parquet(customers_path).lazy()
    return folder, lines, customers


def _eligible(customers: pl.LazyFrame, purpose: str, clause_ids: Sequence[str]) -> pl.DataFrame:
    if "profiling_eligible" not in customers.collect_schema().names():
        raise SchemaError(
            f"table 'customers' (prepared for {purpose!r}), column 'profiling_eligible': rule "
            f"'only profiling-eligible people get a label' ({', '.join(clause_ids)}) — column "
            "missing; fix: prepare frames for a purpose whose columns include profiling_eligible"
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
    n_splits: int = 5,
    spec: FeatureSpec | None = None,
    n_bootstrap: int | None = None,
    groups: Sequence[str] | None = None,
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
    k_range, model, seed, selection_sample, n_splits, n_bootstrap
        As in :func:`fit_segments`.
    spec : FeatureSpec, optional
        Default: :data:`DEFAULT_MODEL_NUMERIC` and :data:`DEFAULT_MODEL_CATEGORICAL` with the
        policy's bounds, the category shares following the data's declared taxonomy
        (:func:`segments.ingest.public_domains`). Features that are the same for everyone
        (one channel, one category) are dropped with a note in the metadata, not refused.
    groups : sequence of str, optional
        Build the default spec from these groups of :func:`segments.features.feature_groups`
        (``rfm``, ``category_spend``, ``category_lines``, ``channel``, ``season``) instead.

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
    log_state = ws.erasure_log_state()  # an erasure after this point refuses the write
    policy = _load_policy(policy)
    folder, lines, customers = _read_prepared(ws, purpose)
    as_of = as_of or _prepared_as_of(folder)
    from segments.ingest import public_domains

    categories = public_domains(ws).categories
    with progress(total=3, desc="segment", unit="stage") as bar:
        bar.set_postfix_str("features", refresh=True)
        features = customer_features(lines, customers, as_of=as_of, categories=categories)
        bar.update()
        bar.set_postfix_str("choosing k, fitting", refresh=True)
        fitted, spec, notes = _fit(
            features, spec, policy, categories, groups, k_range, model, seed,
            selection_sample, n_splits, n_bootstrap,
        )  # fmt: skip
        bar.update()
        bar.set_postfix_str("profiles and writing", refresh=True)
        result = _finish(ws, log_state, policy, purpose, as_of, customers, features, fitted, notes)
        bar.update()
    return result


def _fit(
    features: pd.DataFrame,
    spec: FeatureSpec | None,
    policy: Any,
    categories: Sequence[str],
    groups: Sequence[str] | None,
    k_range: Iterable[int],
    model: str,
    seed: int,
    selection_sample: int | None,
    n_splits: int,
    n_bootstrap: int | None,
) -> tuple[SegmentModel, FeatureSpec, list[str]]:
    """The default spec (constant features dropped, with notes) and the fitted model."""
    notes: list[str] = []
    if spec is None:
        spec, notes = _spec_for(features, _policy_bounds(policy), categories, groups)
    fitted = fit_segments(
        features,
        spec,
        k_range=k_range,
        model=model,
        seed=seed,
        selection_sample=selection_sample,
        n_splits=n_splits,
        n_bootstrap=n_bootstrap,
    )
    return fitted, spec, notes


def _finish(
    ws: Workspace,
    log_state: Any,
    policy: Any,
    purpose: str,
    as_of: dt.date,
    customers: pl.LazyFrame,
    features: pd.DataFrame,
    fitted: SegmentModel,
    notes: list[str],
) -> SegmentationResult:
    """Labels of the profiling-eligible, profiles and metadata, written atomically."""
    everyone = pl.DataFrame({"person_id": features["person_id"], "segment": fitted.labels_})
    eligible = _eligible(customers, purpose, policy.profiling_eligibility.clause_ids)
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
        # the policy's own clauses: the purpose's and who may be profiled
        "clause_ids": list(
            dict.fromkeys(
                (*policy.purpose(purpose).clause_ids, *policy.profiling_eligibility.clause_ids)
            )
        ),
        "k_range": [int(k) for k in fitted.scores["k"]],
        "n_prepared_customers": n_customers,
        "n_without_purchases": n_customers - len(features),
        "n_labelled": labels.height,
        "n_not_profiling_eligible": len(features) - labels.height,
        "segments": {str(s): n for s, n in zip(profiles["segment"], profiles["name"], strict=True)},
        "feature_notes": notes,
    }
    with ws.publishing(log_state, "segment"):
        paths = _write_segments(ws, labels, profiles, metadata)
    return SegmentationResult(fitted, labels.to_pandas(), profiles, metadata, paths)


def _spec_for(
    features: pd.DataFrame,
    bounds: Mapping[str, tuple[float, float]],
    categories: Sequence[str],
    groups: Sequence[str] | None,
) -> tuple[FeatureSpec, list[str]]:
    """The default spec for this taxonomy (or the chosen groups), constant features dropped.

    A feature that is the same for everyone (every order on one channel, one category, one
    customer type) cannot separate segments; it is left out and the note says so.
    """
    from segments.features import feature_groups

    by_group = feature_groups(categories)
    if groups is None:  # the groups of the default model, in the declared taxonomy
        chosen = tuple(
            g for g, fs in FEATURE_GROUPS.items() if set(fs) & set(DEFAULT_MODEL_NUMERIC)
        )
    else:
        unknown = [g for g in groups if g not in by_group]
        if unknown:
            raise ValueError(
                f"parameter 'features' has unknown group(s) {unknown}; fix: choose from "
                f"{list(by_group)}"
            )
        chosen = tuple(groups)
    numeric = [f for g in chosen for f in by_group[g]]
    categorical = list(DEFAULT_MODEL_CATEGORICAL)
    constant = [c for c in [*numeric, *categorical] if features[c].nunique(dropna=False) <= 1]
    notes = [
        f"feature {c!r} dropped: the same value ({features[c].iloc[0]!s}) for everyone, so it "
        "cannot separate segments"
        for c in constant
    ]
    numeric = [c for c in numeric if c not in constant]
    categorical = [c for c in categorical if c not in constant]
    if not numeric and not categorical:
        raise ValueError(
            f"table 'features': every chosen feature {chosen} is constant; rule: segmentation "
            "needs a feature that varies; fix: choose other groups with --features"
        )
    # a share lies in [0, 1] by definition: the declared categories' shares need no entry
    bounds = {
        **{f: (0.0, 1.0) for f in numeric if f.startswith(("share_", "line_share_"))},
        **bounds,
    }
    missing = [f for f in numeric if f not in bounds]
    if missing:
        raise SchemaError(
            f"policy: key 'privacy.feature_bounds.{missing[0]}' is missing; rule: segmentation "
            "features are clipped to public bounds; fix: add it to the policy file"
        )
    spec = FeatureSpec(
        bounds=bounds,
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        groups={g: tuple(f for f in by_group[g] if f in numeric) for g in chosen},
    )
    return spec, notes


def _write_segments(
    ws: Workspace, labels: pl.DataFrame, profiles: pd.DataFrame, metadata: dict[str, Any]
) -> dict[str, Path]:
    folder = ws.segments
    paths = {
        "labels": folder / "labels.parquet",
        "profiles": folder / "profiles.parquet",
        "metadata": folder / "metadata.json",
    }
    # Target lists name segments of the previous segmentation: stale now, and they would
    # keep people who have since objected or been erased (issue 18). `segments target`
    # writes fresh ones.
    shutil.rmtree(ws.targets, ignore_errors=True)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)  # pseudonymous labels: owner-only whatever the umask
    atomic_write_with(paths["labels"], labels.write_parquet)
    atomic_write_with(paths["profiles"], lambda p: profiles.to_parquet(p, index=False))
    for path in (paths["labels"], paths["profiles"]):
        make_private(path)
    write_json(paths["metadata"], metadata)  # last: its presence marks a complete run
    make_private(paths["metadata"])
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


def _targeting_clauses(metadata: Mapping[str, Any]) -> str:
    """The clause ids behind targeting, cited from the policy the segmentation recorded."""
    from segments.exceptions import PolicyError
    from segments.policy import Policy

    try:
        policy = Policy.load(metadata["policy"])
    except (KeyError, PolicyError):
        return "the policy's profiling_eligibility and marketing_opt_out"
    opt_out = policy.exclusions.get("marketing_opt_out")
    ids = (*policy.profiling_eligibility.clause_ids, *(opt_out.clause_ids if opt_out else ()))
    return ", ".join(dict.fromkeys(ids))


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
    log_state = ws.erasure_log_state()  # an erasure after this point refuses the write
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
            f"'offers respect eligibility and marketing opt-outs' ({_targeting_clauses(metadata)})"
            " — column missing; "
            "fix: prepare frames for a purpose whose columns include both flags"
        )
    current = members.join(
        customers.select("person_id", *flags).collect(), on="person_id", how="left"
    )
    gone = current.filter(pl.col("profiling_eligible").is_null())
    not_eligible = current.filter(pl.col("profiling_eligible") == False)  # noqa: E712
    opted_out = current.filter(pl.col("profiling_eligible") & pl.col("marketing_opt_out"))
    targeted = current.filter(pl.col("profiling_eligible") & ~pl.col("marketing_opt_out"))
    folder = ws.targets
    path = folder / f"segment-{seg}.parquet"
    excluded = {
        "no_longer_in_prepared_customers": gone.height,
        "not_profiling_eligible": not_eligible.height,
        "marketing_opt_out": opted_out.height,
    }
    summary = {
        "segment": seg,
        "name": metadata["segments"][str(seg)],
        "purpose": purpose,
        "clause_ids": list(metadata.get("clause_ids", [])),  # the segmentation's policy
        "n_in_segment": members.height,
        "n_targeted": targeted.height,
        "excluded": excluded,
        "recipient": "data steward (holds the pseudonymisation key)",
    }
    with ws.publishing(log_state, f"target --segment {seg}"):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)  # pseudonyms of people to contact: owner-only whatever the umask
        atomic_write_with(path, targeted.select("person_id").sort("person_id").write_parquet)
        write_json(folder / f"segment-{seg}.json", summary)
        make_private(folder)
    return TargetResult(seg, summary["name"], path, targeted.height, members.height, excluded)


def planted_archetypes(workspace: Workspace, person_ids: pl.Series) -> np.ndarray:
    """Planted archetype per prepared pseudonym, for evaluating a segmentation on synthetic data.

    Reads the planted truth (``W/raw/truth/``), which only evaluations may read. The truth is
    per account; a person with two accounts (a sole trader's private and business account,
    AO-3) is segmented on the purchases of both, so their archetype is that of the account
    with most of their order lines — the buying the features describe.

    Parameters
    ----------
    workspace : Workspace
        With synthetic raw data and its truth tables.
    person_ids : polars.Series
        Pseudonyms as ``prepare`` wrote them (the demo key of the synthetic dataset).

    Returns
    -------
    numpy.ndarray
        The archetype of each person, in the order of ``person_ids`` (None where unknown).
    """
    from segments.prepare.frames import link_persons
    from segments.prepare.pseudonym import load_key, pseudonymise_series

    raw = workspace.raw
    lines_per_account = (
        pl.scan_parquet(raw / "order_lines.parquet")
        .join(pl.scan_parquet(raw / "orders.parquet"), on="order_id")
        .group_by("customer_id")
        .agg(pl.len().alias("n_lines"))
        .collect()
    )
    dominant = (
        link_persons(pl.read_parquet(raw / "customers.parquet"))
        .select("customer_id", "person_root")
        .join(lines_per_account, on="customer_id", how="left")
        .with_columns(pl.col("n_lines").fill_null(0))
        .sort(["person_root", "n_lines", "customer_id"], descending=[False, True, False])
        .unique("person_root", keep="first")
        .join(pl.read_parquet(workspace.truth / "archetypes.parquet"), on="customer_id")
    )
    key = load_key(workspace=workspace)
    dominant = dominant.with_columns(
        pseudonymise_series(key, "person", dominant["person_root"], "person_id")
    )
    return (
        pl.DataFrame({"person_id": person_ids})
        .join(dominant.select("person_id", "archetype"), on="person_id", how="left")["archetype"]
        .to_numpy()
    )
