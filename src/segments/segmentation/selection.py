"""Model selection and the fitted exploratory model.

KMeans (or a diagonal GaussianMixture) after the public-bound feature transformer of
:mod:`segments.features`; k is chosen over a range on a stated random subsample by
split-half held-out Davies-Bouldin among the stable k (:class:`Selection`), and the final
fit (:func:`fit_segments`) starts from the chosen model's centres and uses everyone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import t as student_t
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.metrics import adjusted_rand_score, davies_bouldin_score, silhouette_score
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from segments.features import (
    CATEGORY_SHARE_FEATURES,
    CHANNEL_SHARE_FEATURES,
    FEATURE_GROUPS,
    LINE_SHARE_FEATURES,
    LOG_FEATURES,
    RFM_FEATURES,
    make_feature_transformer,
)
from segments.policy import Guarantee
from segments.progress import progress
from segments.schema import require_columns

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
        """The feature specification as a JSON-able dict (recorded in ``metadata.json``)."""
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
        """The selection's scores and decision as a JSON-able dict."""

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
            # what a DP release keyed by these labels may claim (plain text, as in the JSON)
            "release_guarantee": Guarantee.GIVEN_SEGMENTATION.value,
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
    fix = (
        "build the frame with segments.customer_features, or leave the feature out of the "
        "FeatureSpec"
    )
    require_columns(features.columns, [*spec.numeric, *spec.categorical], "features", fix)


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
