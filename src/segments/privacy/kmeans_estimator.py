"""Differentially private k-means: segments whose definitions are themselves a DP release.

A count per segment is ε-DP end to end only if the segment definitions do not depend on any
one person. :class:`PrivateKMeans` learns the centroids under differential privacy, so that
labels computed from them are post-processing and releases keyed by them stay ε-DP end to end
(with the segmentation's own ε added to each card).

The algorithm (DPLloyd, Su et al. 2016, "Differentially private k-means clustering", with a
private initialisation in the spirit of their grid-based EUGkM):

1. **Public geometry.** Each feature is clipped to its public bounds and scaled by them to
   [0, 1] (never by a fitted scaler), then rounded to an integer grid ``[-R, R]`` centred on the
   box (``R = resolution``). One person is one row; a row's integer sum contribution is at most
   ``d·R`` in L1 and ``√d·R`` in L2, so sums are exact integers and the sensitivity is exact.
2. **Initialisation.** ``init="private"`` (default): a public, seeded set of candidate points
   (a scrambled Sobol design in the box) is drawn without looking at the data; every row is
   assigned to its nearest candidate and the histogram of those assignments is released with
   OpenDP (sensitivity 1 per person); weighted k-means on the candidates with the noisy
   weights (post-processing, many restarts for free) gives the initial centroids.
   ``init="random"``: centroids drawn from the seed alone, charged nothing.
3. **Lloyd iterations.** Each iteration assigns every row to its nearest current centroid (a
   public function of the row and of earlier releases), then releases noisy per-cluster counts
   and clipped per-cluster sums; the new centroid is sum / count (post-processing).

Every release is an OpenDP measurement (``make_laplace`` for ``dp_family="pure"``,
``make_gaussian`` for ``"zcdp"``) chained after a transformation whose stability map states the
one-row contribution bound, and all of them are queries to one OpenDP adaptive compositor, so
the total privacy loss is what OpenDP's ``map(d_in=1)`` returns. Neighbouring datasets differ by
adding or removing one person (symmetric distance 1); a substitution is ``d_in=2``.

The transformations are user-defined OpenDP transformations (the assignment to the nearest
centroid is not among OpenDP's built-ins), which needs the ``"honest-but-curious"`` feature: the
stability maps below are the proof obligation, and the tests check them empirically.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial import cKDTree
from scipy.stats import qmc
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

import segments.privacy._opendp as dp
from segments.privacy.composition import (
    DP_FAMILIES,
    DPFamily,
    noise_scale,
    privacy_measure,
    stated_epsilon,
)
from segments.progress import progress

__all__ = [
    "INITS",
    "PrivacyStep",
    "PrivateKMeans",
    "SeedLike",
    "nearest_centroid",
    "nonnegative_counts",
    "scale_to_unit",
    "within_cluster_inertia",
]

INITS = ("private", "groups", "random")
#: At most this many public groups for ``init="groups"``.
_MAX_GROUPS = 4096
# Rows per block when computing distances, so 100 000 x 1 024 candidates stays small in memory.
_BLOCK_ROWS = 8192
_KDTREE_MIN_CENTERS = 64
# Noisy candidate weights below this many noise scales are treated as empty (post-processing
# that removes most of the mass the noise spreads over empty candidates).
_WEIGHT_THRESHOLD_SCALES = 2.0
# A group's noisy mean is used for the initialisation only when its count is at least this
# many times the sum noise per unit of R: its mean is then off by ~1/(2 x this) per feature
# (in [0, 1]), and an empty group whose count noise happens to pass cannot bring a garbage
# mean far from every real one (which k-means on a handful of points would give a centre).
_GROUP_MEAN_NOISE = 10.0

SeedLike = int | np.random.Generator | None


@dataclass(frozen=True)
class PrivacyStep:
    """One OpenDP release inside a private k-means fit.

    Attributes
    ----------
    name : str
        ``"init histogram"``, ``"init group counts"`` / ``"init group sums"`` or
        ``"iteration t counts"`` / ``"iteration t sums"``.
    iteration : int
        0 for the initialisation, 1..T for Lloyd iterations.
    sensitivity : float
        The bound on one person's contribution (L1 for Laplace, L2 for Gaussian), in the
        units of the released integers.
    scale : float
        The noise scale OpenDP uses.
    loss : float
        ``ε`` (pure) or ``ρ`` (zCDP) as OpenDP's ``map(d_in=1)`` computed it.
    """

    name: str
    iteration: int
    sensitivity: float
    scale: float
    loss: float


# --- public row-level functions -----------------------------------------------------------
def _as_generator(seed: SeedLike) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _bounds_arrays(
    bounds: Mapping[str, tuple[float, float]] | Sequence[tuple[float, float]],
) -> tuple[list[str] | None, np.ndarray, np.ndarray]:
    """Split public bounds into (feature names or None, lower, upper), checking each pair."""
    names = list(bounds) if isinstance(bounds, Mapping) else None
    pairs: list[Any] = (
        [bounds[n] for n in names] if isinstance(bounds, Mapping) and names else list(bounds)
    )
    if not pairs:
        raise ValueError("bounds is empty; pass a public (lower, upper) pair for every feature")
    lo = np.array([float(p[0]) for p in pairs])
    hi = np.array([float(p[1]) for p in pairs])
    bad = np.flatnonzero(~(np.isfinite(lo) & np.isfinite(hi) & (hi > lo)))
    if bad.size:
        i = int(bad[0])
        label = names[i] if names else f"feature {i}"
        raise ValueError(
            f"bounds for {label!r} are ({lo[i]}, {hi[i]}); each feature needs finite public "
            "bounds with lower < upper (fix privacy.feature_bounds in the policy)"
        )
    return names, lo, hi


def scale_to_unit(X: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Clip each column to its public bounds and scale it to [0, 1] by them.

    Missing values become the lower bound (a public default), so no row is dropped.

    Examples
    --------
    >>> scale_to_unit(np.array([[-5.0, 50.0], [5.0, 500.0]]), np.array([0.0, 0.0]),
    ...               np.array([10.0, 100.0]))
    array([[0. , 0.5],
           [0.5, 1. ]])
    """
    X = np.asarray(X, dtype=float)
    X = np.where(np.isnan(X), lower, X)
    return (np.clip(X, lower, upper) - lower) / (upper - lower)


def nearest_centroid(X01: np.ndarray, centers01: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (Euclidean; ties broken deterministically) per row.

    A public function of one row and of the (released) centres.

    Examples
    --------
    >>> nearest_centroid(np.array([[0.1, 0.1], [0.9, 0.8]]), np.array([[0.0, 0.0], [1.0, 1.0]]))
    array([0, 1])
    """
    X01 = np.asarray(X01, dtype=float)
    centers01 = np.asarray(centers01, dtype=float)
    if len(centers01) > _KDTREE_MIN_CENTERS:  # many candidates: a k-d tree is far faster
        return np.asarray(cKDTree(centers01).query(X01, workers=1)[1], dtype=np.int64)
    c_sq = np.einsum("ij,ij->i", centers01, centers01)
    labels = np.empty(len(X01), dtype=np.int64)
    for start in range(0, len(X01), _BLOCK_ROWS):
        block = X01[start : start + _BLOCK_ROWS]
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 is the same for every c.
        labels[start : start + _BLOCK_ROWS] = np.argmin(c_sq - 2.0 * block @ centers01.T, axis=1)
    return labels


def within_cluster_inertia(X01: np.ndarray, centers01: np.ndarray) -> float:
    """Sum of squared distances of rows to their nearest centre (an evaluation, not a release).

    Examples
    --------
    >>> within_cluster_inertia(np.array([[0.0], [1.0]]), np.array([[0.5]]))
    0.5
    """
    labels = nearest_centroid(X01, centers01)
    return float(np.sum((np.asarray(X01, dtype=float) - centers01[labels]) ** 2))


# --- OpenDP building blocks -------------------------------------------------------------
def _rows_domain(n_features: int, resolution: int) -> Any:
    """The input domain: an int64 matrix of clipped, gridded rows, one per person."""

    def member(x: Any) -> bool:
        return (
            isinstance(x, np.ndarray)
            and x.ndim == 2
            and x.shape[1] == n_features
            and x.dtype == np.int64
            and (x.size == 0 or int(np.abs(x).max()) <= resolution)
        )

    return dp.user_domain(f"GridRows(d={n_features}, R={resolution})", member)


def _int_vector_space(family: str) -> tuple[Any, Any]:
    metric = dp.l1_distance(T=dp.i64) if family == DPFamily.PURE else dp.l2_distance(T=dp.i64)
    return dp.vector_domain(dp.atom_domain(T=dp.i64)), metric


def _noise(family: str, scale: float) -> Any:
    """OpenDP's integer noise: discrete Laplace (pure) or discrete Gaussian (zCDP)."""
    return dp.m.then_laplace(scale) if family == DPFamily.PURE else dp.m.then_gaussian(scale)


def _release(
    domain: Any,
    family: str,
    function: Callable[[np.ndarray], list[int]],
    sensitivity: int,
    scale: float,
) -> Any:
    """A measurement: ``function`` (one person moves the output by at most ``sensitivity``
    per unit of symmetric distance, by triangle inequality) followed by OpenDP noise."""
    out_domain, out_metric = _int_vector_space(family)
    transformation = dp.t.make_user_transformation(
        domain,
        dp.symmetric_distance(),
        out_domain,
        out_metric,
        function=function,
        stability_map=lambda d_in: int(d_in) * sensitivity,
    )
    return transformation >> _noise(family, scale)


def _counts_by_label(labels: np.ndarray, n_labels: int) -> list[int]:
    return [int(v) for v in np.bincount(labels, minlength=n_labels)]


def _sums_by_label(Z: np.ndarray, labels: np.ndarray, n_labels: int) -> list[int]:
    sums = np.zeros((n_labels, Z.shape[1]), dtype=np.int64)
    np.add.at(sums, labels, Z)  # exact integer sums: no floating-point sensitivity penalty
    return [int(v) for v in sums.ravel()]


def _enable_opendp_features() -> None:
    # "contrib": OpenDP's non-vetted constructors; "honest-but-curious": user-defined
    # transformations whose stability maps (see _release) are ours to prove.
    dp.enable_features("contrib", "honest-but-curious")


# --- the estimator ------------------------------------------------------------------------
class PrivateKMeans(ClusterMixin, BaseEstimator):
    """k-means whose centroids are released under differential privacy with OpenDP.

    Parameters
    ----------
    n_clusters : int, default 5
        Number of segments (public).
    bounds : mapping of str to (float, float), or sequence of (float, float)
        Public clipping bounds per feature (``privacy.feature_bounds`` of the policy). With a
        mapping and a DataFrame, the columns are taken in the mapping's order.
    epsilon : float, optional
        Total privacy loss for ``dp_family="pure"`` (ε-DP, Laplace noise).
    rho : float, optional
        Total privacy loss for ``dp_family="zcdp"`` (ρ-zCDP, Gaussian noise).
    dp_family : {"pure", "zcdp"}, default "pure"
    iterations : int, default 5
        Lloyd iterations (public); the Lloyd share of the budget is split evenly over them.
    init : {"private", "groups", "random"}, default "private"
        ``"private"``: DP histogram over public candidate points, charged ``init_share`` of
        the budget. ``"groups"``: noisy counts and sums per public group of rows (the
        combination of the largest column of each block of ``init_group_columns``, e.g.
        the level of the one-hot customer type and of the size band), whose noisy means,
        weighted by the noisy counts, are clustered into the initial centroids; charged
        ``init_share`` (a Lloyd step from a public partition: in many dimensions far closer
        to the data than candidates spread over the whole box). ``"random"``: centroids
        drawn from ``seed`` alone, charged nothing.
    init_share : float, default 0.3
        Share of the budget spent on the private initialisation.
    init_group_columns : sequence of sequence of int, default ()
        Blocks of column indices (one per one-hot feature) defining the public groups of
        ``init="groups"``: one group per combination of levels (at most 4096).
    count_share : float, optional
        Share of each iteration's budget spent on the counts (the rest on the sums). Default
        ``1 / (1 + (5 d²)^(1/3))``: the split that minimises the centroid's squared error
        when sums have L1 sensitivity ``d/2`` and centroids lie about 0.22 from the box's
        centre per feature (the reasoning of Su et al. 2016): 0.27 for d = 2, 0.13 for d = 8.
    n_candidates : int, default 4096
        Number of public candidate points for ``init="private"``.
    resolution : int, default 1000
        Half-width ``R`` of the integer grid each scaled feature is rounded to.
    seed : int or numpy.random.Generator, optional
        Seeds the public, data-independent parts (candidates, random init, restarts of the
        post-processing k-means). OpenDP's noise cannot be seeded.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        The released centroids, in the units of the input features.
    centers_unit_ : ndarray of shape (n_clusters, n_features)
        The same, scaled to [0, 1] by the public bounds.
    initial_centers_unit_ : ndarray
        Starting centroids (post-processing of a DP release, or public).
    candidates_ : ndarray of shape (n_candidates, n_features)
        The public candidate points of ``init="private"``, in [0, 1].
    noisy_counts_ : ndarray of shape (n_clusters,)
        The noisy per-cluster counts of the last iteration (a DP release).
    published_counts_ : ndarray of int of shape (n_clusters,)
        The same, post-processed to what may be published: non-negative integers whose total
        is the (rounded, non-negative) total of the noisy counts; the closest such vector to
        the noisy counts in Euclidean distance, rounded by largest remainder.
    privacy_steps_ : list of PrivacyStep
        Every OpenDP release in order, with its loss.
    iteration_losses_ : list of float
        Loss per iteration: index 0 is the initialisation (0 for ``init="random"``), then
        counts + sums of each Lloyd iteration.
    privacy_loss_ : float
        Total ε (pure) or ρ (zCDP), as OpenDP's adaptive compositor maps ``d_in=1``.
    feature_names_in_ : ndarray of str
        When ``bounds`` is a mapping.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(20, 5, (5000, 2)), rng.normal(80, 5, (5000, 2))])
    >>> km = PrivateKMeans(2, bounds=[(0, 100), (0, 100)], epsilon=1.0, seed=1).fit(X)
    >>> km.privacy_loss_ <= 1.0, round(km.privacy_loss_, 6)
    (True, 1.0)
    >>> bool(np.abs(np.sort(km.cluster_centers_[:, 0]) - [20, 80]).max() < 2)  # noise: ~0.3
    True
    """

    def __init__(
        self,
        n_clusters: int = 5,
        *,
        bounds: Mapping[str, tuple[float, float]] | Sequence[tuple[float, float]] = (),
        epsilon: float | None = None,
        rho: float | None = None,
        dp_family: str = DPFamily.PURE.value,
        iterations: int = 5,
        init: str = "private",
        init_share: float = 0.3,
        count_share: float | None = None,
        n_candidates: int = 4096,
        resolution: int = 1000,
        seed: SeedLike = None,
        init_group_columns: Sequence[Sequence[int]] = (),
    ) -> None:
        self.n_clusters = n_clusters
        self.bounds = bounds
        self.epsilon = epsilon
        self.rho = rho
        self.dp_family = dp_family
        self.iterations = iterations
        self.init = init
        self.init_share = init_share
        self.count_share = count_share
        self.n_candidates = n_candidates
        self.resolution = resolution
        self.seed = seed
        self.init_group_columns = init_group_columns

    # --- parameters and the privacy plan (public: computed before any data is touched) --
    def _check_params(self) -> tuple[list[str] | None, np.ndarray, np.ndarray, float]:
        if self.dp_family not in DP_FAMILIES:
            raise ValueError(
                f"dp_family={self.dp_family!r} is not one of {DP_FAMILIES}; "
                "fix privacy.dp_family in the policy"
            )
        key, budget = (
            ("epsilon", self.epsilon) if self.dp_family == DPFamily.PURE else ("rho", self.rho)
        )
        other = self.rho if self.dp_family == DPFamily.PURE else self.epsilon
        if budget is None or not (math.isfinite(budget) and budget > 0):
            raise ValueError(
                f"{key}={budget!r} for dp_family={self.dp_family!r}; pass a positive, finite "
                f"{key} (privacy.private_segments_epsilon in the policy)"
            )
        if other is not None:
            raise ValueError(
                f"dp_family={self.dp_family!r} takes {key} only; drop the other parameter"
            )
        integers = (
            ("n_clusters", self.n_clusters, 2),
            ("iterations", self.iterations, 1),
            ("resolution", self.resolution, 1),
            ("n_candidates", self.n_candidates, 2),
        )
        for name, value, low in integers:
            if not isinstance(value, int | np.integer) or value < low:
                raise ValueError(f"{name}={value!r}; pass an integer >= {low}")
        if self.init not in INITS:
            raise ValueError(f"init={self.init!r} is not one of {INITS}")
        if self.init == "groups":
            blocks = [list(b) for b in self.init_group_columns]
            if not blocks or any(not b for b in blocks) or self._n_groups() > _MAX_GROUPS:
                raise ValueError(
                    f"init_group_columns={blocks!r} for init='groups'; pass blocks of column "
                    f"indices (e.g. the one-hot customer type), at most {_MAX_GROUPS} groups"
                )
        if self.init == "private" and self.n_candidates < self.n_clusters:
            raise ValueError(
                f"n_candidates={self.n_candidates} < n_clusters={self.n_clusters}; "
                "pass at least as many candidates as clusters"
            )
        for name, share in (("init_share", self.init_share), ("count_share", self.count_share)):
            if share is not None and not 0 < share < 1:
                raise ValueError(f"{name}={share!r}; pass a share strictly between 0 and 1")
        names, lo, hi = _bounds_arrays(self.bounds)
        bad = [c for b in self.init_group_columns for c in b if not 0 <= int(c) < len(lo)]
        if self.init == "groups" and bad:
            raise ValueError(
                f"init_group_columns has {bad[0]!r}, not a column of the {len(lo)} features"
            )
        return names, lo, hi, float(budget)

    def _count_share(self, n_features: int) -> float:
        if self.count_share is not None:
            return float(self.count_share)
        return 1.0 / (1.0 + (5.0 * n_features**2) ** (1.0 / 3.0))

    def plan(self) -> list[PrivacyStep]:
        """The releases a fit will make and their losses, from public parameters only.

        Use it to charge the ledger before :meth:`fit` touches the data; the fit's
        ``privacy_loss_`` equals the sum of these losses.

        Returns
        -------
        list of PrivacyStep
        """
        _, lo, _, budget = self._check_params()
        count_share = self._count_share(len(lo))
        return list(
            _plan(
                self.dp_family, budget, len(lo), int(self.n_clusters), int(self.iterations),
                self.init, float(self.init_share), count_share, int(self.resolution),
            )
        )  # fmt: skip

    def planned_privacy_loss(self) -> float:
        """Total ε (pure) or ρ (zCDP) a fit will spend, as OpenDP composes the plan."""
        plan = self.plan()
        domain = _rows_domain(len(_bounds_arrays(self.bounds)[1]), int(self.resolution))
        return float(_compositor(domain, self.dp_family, plan).map(1))

    # --- fitting ------------------------------------------------------------------------
    def _matrix(self, X: Any, names: list[str] | None, n_features: int) -> np.ndarray:
        if names is not None and hasattr(X, "columns"):
            missing = [n for n in names if n not in X.columns]
            if missing:
                raise ValueError(
                    f"X has no column {missing[0]!r}, which bounds names; pass the feature "
                    "frame from segments.features or bounds for its columns"
                )
            X = X[names]
        M = np.asarray(X, dtype=float)
        if M.ndim != 2 or M.shape[1] != n_features:
            raise ValueError(
                f"X has shape {M.shape}; bounds give {n_features} features, so X needs "
                f"shape (n_people, {n_features})"
            )
        return M

    def _grid(self, X01: np.ndarray) -> np.ndarray:
        R = int(self.resolution)
        return np.rint((X01 - 0.5) * (2 * R)).astype(np.int64)

    def _ungrid(self, Z: np.ndarray) -> np.ndarray:
        return Z / (2.0 * int(self.resolution)) + 0.5

    def fit(self, X: Any, y: Any = None) -> PrivateKMeans:
        """Release DP centroids of ``X`` (one row per person).

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_people, n_features)
            Raw feature values; they are clipped to and scaled by the public bounds.
        y : ignored

        Returns
        -------
        self
        """
        _enable_opendp_features()
        names, lo, hi, _ = self._check_params()
        d = len(lo)
        rng = _as_generator(self.seed)
        Z = self._grid(scale_to_unit(self._matrix(X, names, d), lo, hi))
        domain = _rows_domain(d, int(self.resolution))
        plan = self.plan()
        compositor = _compositor(domain, self.dp_family, plan)
        queryable = compositor(Z)  # refuses any query beyond the plan
        steps = iter(plan)

        if self.init == "private":
            centers = self._private_init(queryable, domain, next(steps), d, rng)
        elif self.init == "groups":
            centers = self._group_init(queryable, domain, next(steps), next(steps), rng)
        else:
            centers = rng.uniform(0.0, 1.0, size=(int(self.n_clusters), d))
        self.initial_centers_unit_ = centers.copy()
        counts = np.zeros(int(self.n_clusters))
        for _ in progress(range(int(self.iterations)), desc="DP k-means", unit="iteration"):
            centers, counts = self._lloyd_step(queryable, domain, centers, next(steps), next(steps))

        self.centers_unit_ = centers
        self.cluster_centers_ = lo + centers * (hi - lo)
        self.noisy_counts_ = counts
        self.published_counts_ = nonnegative_counts(counts)
        self.privacy_steps_ = plan
        self.iteration_losses_ = [
            math.fsum(s.loss for s in plan if s.iteration == t)
            for t in range(int(self.iterations) + 1)
        ]
        self.privacy_loss_ = float(compositor.map(1))
        self.n_features_in_ = d
        if names is not None:
            self.feature_names_in_ = np.array(names, dtype=object)
        return self

    def _private_init(
        self, queryable: Any, domain: Any, step: PrivacyStep, d: int, rng: np.random.Generator
    ) -> np.ndarray:
        """Release a DP histogram of nearest public candidates; cluster the candidates."""
        candidates = qmc.Sobol(d, scramble=True, seed=rng).random(int(self.n_candidates))
        self.candidates_ = candidates  # public: drawn from the seed alone

        def histogram(Z: np.ndarray) -> list[int]:
            return _counts_by_label(nearest_centroid(self._ungrid(Z), candidates), len(candidates))

        release = _release(domain, self.dp_family, histogram, int(step.sensitivity), step.scale)
        weights = np.asarray(queryable(release), dtype=np.float64)
        weights -= _WEIGHT_THRESHOLD_SCALES * step.scale
        return _centers_from_weighted_candidates(candidates, weights, int(self.n_clusters), rng)

    def _n_groups(self) -> int:
        return int(np.prod([len(b) for b in self.init_group_columns]))

    def _groups(self, Z: np.ndarray) -> np.ndarray:
        """Public group of each gridded row: the index of its largest column in each block,
        combined in mixed radix (a public function of the row)."""
        group = np.zeros(len(Z), dtype=np.int64)
        for block in self.init_group_columns:
            columns = [int(c) for c in block]
            group = group * len(columns) + np.argmax(Z[:, columns], axis=1)
        return group

    def _group_init(
        self,
        queryable: Any,
        domain: Any,
        count_step: PrivacyStep,
        sum_step: PrivacyStep,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Release noisy counts and sums per public group; cluster the noisy group means."""
        n_groups = self._n_groups()

        def counts_of(Z: np.ndarray) -> list[int]:
            return _counts_by_label(self._groups(Z), n_groups)

        def sums_of(Z: np.ndarray) -> list[int]:
            return _sums_by_label(Z, self._groups(Z), n_groups)

        counts = np.asarray(
            queryable(
                _release(
                    domain, self.dp_family, counts_of, int(count_step.sensitivity), count_step.scale
                )
            ),
            dtype=np.float64,
        )
        sums = np.asarray(
            queryable(
                _release(domain, self.dp_family, sums_of, int(sum_step.sensitivity), sum_step.scale)
            ),
            dtype=np.float64,
        ).reshape(n_groups, -1)
        # post-processing: groups whose noisy count does not clearly exceed the noise carry
        # no usable mean; the others' means (clipped to the box) are weighted by their counts
        reliable = counts > max(
            _WEIGHT_THRESHOLD_SCALES * count_step.scale,
            _GROUP_MEAN_NOISE * sum_step.scale / int(self.resolution),
        )
        means = np.clip(self._ungrid(sums[reliable] / np.maximum(counts[reliable, None], 1)), 0, 1)
        if reliable.sum() < int(self.n_clusters):  # too few groups: spread with a public start
            extra = rng.uniform(0.0, 1.0, size=(int(self.n_clusters), means.shape[1]))
            return np.vstack([means, extra])[: int(self.n_clusters)]
        return _centers_from_weighted_candidates(means, counts[reliable], int(self.n_clusters), rng)

    def _lloyd_step(
        self,
        queryable: Any,
        domain: Any,
        centers: np.ndarray,
        count_step: PrivacyStep,
        sum_step: PrivacyStep,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Assign rows to ``centers``; release noisy counts and sums; return new centres."""
        k, d = centers.shape
        current = centers.copy()

        def counts_of(Z: np.ndarray) -> list[int]:
            return _counts_by_label(nearest_centroid(self._ungrid(Z), current), k)

        def sums_of(Z: np.ndarray) -> list[int]:
            return _sums_by_label(Z, nearest_centroid(self._ungrid(Z), current), k)

        count_release = _release(
            domain, self.dp_family, counts_of, int(count_step.sensitivity), count_step.scale
        )
        sum_release = _release(
            domain, self.dp_family, sums_of, int(sum_step.sensitivity), sum_step.scale
        )
        counts = np.asarray(queryable(count_release), dtype=np.float64)
        sums = np.asarray(queryable(sum_release), dtype=np.float64).reshape(k, d)
        new = _update_centers(current, counts, sums, int(self.resolution), sum_step.scale)
        return new, counts

    # --- post-processing ------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "centers_unit_"):
            raise ValueError("this PrivateKMeans is not fitted yet; call fit(X) first")

    def scale(self, X: Any) -> np.ndarray:
        """``X`` clipped to and scaled by the public bounds (the space the centroids live in)."""
        names, lo, hi = _bounds_arrays(self.bounds)
        return scale_to_unit(self._matrix(X, names, len(lo)), lo, hi)

    def predict(self, X: Any) -> np.ndarray:
        """Segment of each row: its nearest released centroid (post-processing)."""
        self._check_fitted()
        return nearest_centroid(self.scale(X), self.centers_unit_)

    def fit_predict(self, X: Any, y: Any = None, **kwargs: Any) -> np.ndarray:
        """Fit, then label ``X`` with the released centroids."""
        return self.fit(X).predict(X)

    def epsilon_delta(self, delta: float) -> tuple[float, float]:
        """The fit's loss as (ε, δ): exact ε for pure DP; zCDP converted by OpenDP.

        Parameters
        ----------
        delta : float
            The policy's δ (used only for ``dp_family="zcdp"``).
        """
        self._check_fitted()
        if self.dp_family == DPFamily.PURE:
            return self.privacy_loss_, 0.0
        return stated_epsilon(self.dp_family, self.privacy_loss_, delta), delta


@functools.lru_cache(maxsize=64)
def _plan(
    family: str,
    budget: float,
    d: int,
    k: int,
    iterations: int,
    init: str,
    init_share: float,
    count_share: float,
    resolution: int,
) -> tuple[PrivacyStep, ...]:
    """Every release of a fit with its sensitivity, noise scale and OpenDP loss.

    Public parameters only (cached: many fits with the same parameters share one plan).
    OpenDP rounds each loss and their sum upwards; the shares shrink by a few ulps until the
    composed total is within ``budget``, so the ledger is never overdrawn by rounding.
    """
    _enable_opendp_features()
    domain = _rows_domain(d, resolution)
    shares = [("init histogram", 0, init_share)] if init == "private" else []
    if init == "groups":
        shares = [
            ("init group counts", 0, init_share * count_share),
            ("init group sums", 0, init_share * (1.0 - count_share)),
        ]
    lloyd = 1.0 - init_share if init in ("private", "groups") else 1.0
    for t in range(1, iterations + 1):
        shares.append((f"iteration {t} counts", t, lloyd / iterations * count_share))
        shares.append((f"iteration {t} sums", t, lloyd / iterations * (1.0 - count_share)))
    for attempt in range(60):
        shrink = 1.0 - 2.0**attempt * 1e-13
        plan = []
        for name, iteration, share in shares:
            sensitivity = _sensitivity(family, name, d, resolution)
            loss_share = budget * share * shrink
            scale = noise_scale(family, sensitivity, loss_share)
            loss = _release(domain, family, _no_function, sensitivity, scale).map(1)
            plan.append(PrivacyStep(name, iteration, float(sensitivity), scale, float(loss)))
        if _compositor(domain, family, plan).map(1) <= budget:
            return tuple(plan)
    raise RuntimeError(f"could not fit the releases within budget {budget}")  # unreachable


def _sensitivity(family: str, name: str, d: int, resolution: int) -> int:
    """One person's contribution bound to a release, in released integer units.

    A row adds 1 to one count (histogram or cluster counts); it adds its gridded row, with
    |z_f| <= R, to one cluster's sums: at most d*R in L1, ceil(sqrt(d)*R) in L2.
    """
    if not name.endswith("sums"):
        return 1
    if family == DPFamily.PURE:
        return d * resolution
    return math.ceil(math.sqrt(d) * resolution)


def _compositor(domain: Any, family: str, plan: Sequence[PrivacyStep]) -> Any:
    """OpenDP's adaptive composition of the plan's releases, for neighbours at d_in = 1."""
    measure = privacy_measure(family)
    return dp.c.make_adaptive_composition(
        domain, dp.symmetric_distance(), measure, d_in=1, d_mids=[s.loss for s in plan]
    )


def _no_function(Z: np.ndarray) -> list[int]:
    """Placeholder function for measurements built only to read their privacy map."""
    raise RuntimeError("a planning measurement was invoked on data")


def _centers_from_weighted_candidates(
    candidates: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Weighted k-means on public candidates with noisy weights: pure post-processing."""
    weights = np.clip(weights, 0.0, None)
    if np.count_nonzero(weights) < k:  # hardly any signal: fall back to a public start
        return rng.uniform(0.0, 1.0, size=(k, candidates.shape[1]))
    model = KMeans(k, n_init=10, random_state=int(rng.integers(2**31 - 1)))
    # one thread: a few thousand points gain nothing from OpenMP, and on a busy machine
    # its threads oversubscribe the cores (measured: 24 s instead of 0.6 s)
    with threadpool_limits(1):
        model.fit(candidates, sample_weight=weights)
    return np.asarray(model.cluster_centers_, dtype=float)


def nonnegative_counts(noisy: np.ndarray) -> np.ndarray:
    """Non-negative integer counts closest to ``noisy`` with the same (rounded) total.

    Post-processing of a DP release: the Euclidean projection onto ``{c >= 0, sum(c) = T}``
    with ``T = max(round(sum(noisy)), 0)``, then rounded by largest remainder so the total is
    kept exactly.

    Examples
    --------
    >>> nonnegative_counts(np.array([120.4, -21.0, 35.2, -3.0]))
    array([109,   0,  23,   0])
    """
    noisy = np.asarray(noisy, dtype=float)
    total = max(int(round(float(noisy.sum()))), 0)
    if total == 0 or noisy.size == 0:
        return np.zeros(noisy.size, dtype=np.int64)
    # projection onto the scaled simplex (Held et al.; Duchi et al. 2008)
    ordered = np.sort(noisy)[::-1]
    cumulative = np.cumsum(ordered) - total
    index = np.arange(1, noisy.size + 1)
    rho = int(np.flatnonzero(ordered - cumulative / index > 0)[-1])
    projected = np.maximum(noisy - cumulative[rho] / (rho + 1), 0.0)
    floors = np.floor(projected).astype(np.int64)
    remainder = total - int(floors.sum())
    if remainder > 0:
        order = np.argsort(-(projected - floors), kind="stable")
        floors[order[:remainder]] += 1
    return floors


def _update_centers(
    current: np.ndarray, counts: np.ndarray, sums: np.ndarray, resolution: int, sum_scale: float
) -> np.ndarray:
    """New centroids = noisy sum / noisy count, in [0, 1]; a cluster whose noisy count is
    too small to give a meaningful mean keeps its current centroid (post-processing)."""
    centers = current.copy()
    # a mean is unreliable when the count is not well above the sum noise per unit of R
    reliable = counts > max(1.0, 2.0 * sum_scale / resolution)
    means = sums[reliable] / (2.0 * resolution * counts[reliable, None]) + 0.5
    centers[reliable] = np.clip(means, 0.0, 1.0)
    return centers
