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

The stage is one package: :mod:`~segments.segmentation.selection` (model selection and the
fitted model), :mod:`~segments.segmentation.profiles` (profiles and names) and
:mod:`~segments.segmentation.job` (the workspace stage and targeting); their public names
are re-exported here.
"""

from __future__ import annotations

from segments.segmentation.job import (
    SegmentationResult,
    TargetResult,
    planted_archetypes,
    segment,
    target,
)
from segments.segmentation.profiles import (
    segment_profiles,
)
from segments.segmentation.selection import (
    DEFAULT_MODEL_CATEGORICAL,
    DEFAULT_MODEL_NUMERIC,
    MODELS,
    FeatureSpec,
    SegmentModel,
    Selection,
    fit_segments,
)

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
