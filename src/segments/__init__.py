"""segments: a privacy-first customer segmentation sandbox.

Synthetic Swedish retail data, policy as code, segments, k-anonymous and differentially
private releases (OpenDP), purchasing forecasts from private releases, and a reviewer audit.

The public API is listed here once, in data-flow order, and loaded lazily (as scikit-learn
does): ``import segments`` and ``segments --help`` stay fast, and a name's module is imported
the first time the name is used.
"""

from __future__ import annotations

import os as _os

from segments._lazy import lazy_exports

__version__ = "0.1.0"

#: polars' allocator (jemalloc) settings, unless the caller set their own: freed pages go
#: back to the system within a second, by a background thread. polars' own defaults (put
#: before these when it loads) never purge "muzzy" pages (muzzy_decay_ms:-1): freed but
#: counted as resident until the kernel runs short, so a process's resident memory was the
#: sum of every stage's passing peak, not its largest (issue 21, at 10 M lines: prepare
#: 2.0 GB -> 1.6 GB, a month-closing 1.65 GB -> 1.17 GB). Read once, when polars is first
#: loaded: set here, before any segments module imports it. One arena (``narenas:1``, jemalloc's
#: default being four per core): a page freed by one of polars' threads is reused by the next
#: allocation of any thread, not kept in that thread's arena half-used (issue 21: prepare at
#: 10.2 M lines peaked ~30 MB lower, the same CPU; polars' threads keep their own caches).
POLARS_ALLOCATOR = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:1"
_os.environ.setdefault("_RJEM_MALLOC_CONF", POLARS_ALLOCATOR)

# module -> the public names it provides, in data-flow order.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "segments.exceptions": (
        "BudgetExceededError",
        "KAnonymityError",
        "PolicyError",
        "ReleaseRefusedError",
        "SchemaError",
        "WorkspaceError",
    ),
    "segments.ingest": (
        "IngestMapping",
        "PublicDomains",
        "TransactionMapping",
        "Transactions",
        "ingest",
        "load_transactions",
        "public_domains",
    ),
    "segments.schema": (
        "RAW_TABLES",
        "SCHEMA_VERSION",
        "validate",
    ),
    "segments.synth": (
        "DEFAULT_DATASET",
        "copy_default_dataset",
        "generate",
        "load_raw",
    ),
    "segments.workspace": ("Workspace",),
    "segments.policy": (
        "POLICY_NAMES",
        "Guarantee",
        "Policy",
        "PrivacyParameters",
    ),
    "segments.prepare": (
        "PolicyReport",
        "prepare",
        "read_prepared",
    ),
    "segments.prepare.pseudonym": (
        "PseudonymKey",
        "load_key",
    ),
    "segments.prepare.retention": (
        "PurgeResult",
        "purge",
    ),
    "segments.prepare.subjects": ("subject_export",),
    "segments.features": (
        "CATEGORICAL_FEATURES",
        "DEFAULT_FEATURE_BOUNDS",
        "FEATURE_GROUPS",
        "LINE_SHARE_FEATURES",
        "NUMERIC_FEATURES",
        "RFM_FEATURES",
        "BoundedScaler",
        "FeatureClipper",
        "category_rule_labels",
        "customer_features",
        "make_feature_transformer",
        "rfm_features",
    ),
    "segments.plots": (
        "plot_profile_heatmap",
        "plot_segments_2d",
        "plot_selection_scores",
        "plot_forecast_fan",
        "plot_forecast_fans",
        "plot_privacy_cost",
        "plot_privacy_utility",
        "plot_county_map",
        "plot_intervals_by_key",
        "plot_interval_panels",
        "plot_rows_removed",
        "plot_class_sizes",
        "plot_category_mix",
        "plot_orders_per_month",
        "plot_selection_evidence",
    ),
    "segments.segmentation": (
        "FeatureSpec",
        "SegmentationResult",
        "SegmentModel",
        "TargetResult",
        "fit_segments",
        "segment",
        "segment_profiles",
        "target",
    ),
    "segments.privacy.kmeans": (
        "PrivateKMeans",
        "PrivateSegmentsResult",
        "fit_private_segments",
        "private_segment_profiles",
        "within_cluster_inertia",
    ),
    "segments.anonymity": (
        "CUSTOMER_COLUMNS",
        "EarlierRelease",
        "Hierarchy",
        "KAnonymousTable",
        "PrivacyModel",
        "SearchResult",
        "anonymise",
        "check_linkage",
        "customer_hierarchies",
        "customer_release_table",
        "distinct_l_of",
        "entropy_l_of",
        "generalise",
        "k_of",
        "mondrian",
        "optimal_generalisation",
        "read_hierarchies",
        "risk_metrics",
        "utility_metrics",
    ),
    "segments.anonymity.job": ("KAnonymousRelease", "release_kanon"),
    "segments.forecast": (
        "FORECAST_MODELS",
        "SeriesForecast",
        "backtest_table",
        "forecast_archive",
        "forecast_panel",
        "forecast_series",
        "load_archive",
        "mape",
        "noise_variance",
        "reconcile",
        "validate_archive",
    ),
    "segments.purchasing": (
        "PurchasingForecast",
        "forecast_purchasing",
        "mark_unreliable_forecast",
        "purchasing_export",
    ),
    "segments.privacy.archive": (
        "read_archive",
        "release_month",
    ),
    "segments.privacy.ledger": (
        "Balance",
        "Ledger",
        "LedgerEntry",
        "ReleaseRequest",
        "Reservation",
    ),
    "segments.privacy.publishing": ("ReleaseContext",),
    "segments.privacy.releases": (
        "ReleasePlan",
        "ReleaseResult",
        "plan_release",
    ),
    "segments.privacy.specs": (
        "PrivacyParams",
        "ReleaseSpec",
        "SegmentSource",
    ),
    "segments.keys": (
        "INDUSTRY_NAMES",
        "KEY_SETS",
        "key_labels",
        "key_values",
        "with_labels",
    ),
    "segments.session": (
        "Session",
        "SessionRelease",
        "PlannedQueries",
        "agg",
    ),
    "segments.privacy.jobs": ("open_ledger", "release_spec"),
    "segments.audit.checks": ("clause_checks",),
    "segments.audit.render": ("AuditReport", "load_audit_json"),
    "segments.audit.run": ("run_audit",),
}

# public name -> (module, name in that module), where the two differ.
_RENAMED: dict[str, tuple[str, str]] = {
    "backfill_archive": ("segments.privacy.archive", "backfill"),
    "RELEASE_SPECS": ("segments.privacy.specs", "SPECS"),
}

__getattr__, __dir__, _names = lazy_exports(__name__, _EXPORTS, _RENAMED)
__all__ = ["__version__", *_names]
