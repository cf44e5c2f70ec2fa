"""segments: a privacy-first customer segmentation sandbox.

Synthetic Swedish retail data, policy as code, segments, k-anonymous and differentially
private releases (OpenDP), purchasing forecasts from private releases, and a reviewer audit.
The public API is re-exported here, in data-flow order.
"""

from __future__ import annotations

# --- foundation ---------------------------------------------------------------------------
from segments.exceptions import (
    BudgetExceededError,
    KAnonymityError,
    PolicyError,
    ReleaseRefusedError,
    SchemaError,
    WorkspaceError,
)

# --- generate -----------------------------------------------------------------------------
from segments.ingest import TransactionMapping, Transactions, load_transactions
from segments.schema import RAW_TABLES, SCHEMA_VERSION, validate
from segments.synth import DEFAULT_DATASET, copy_default_dataset, generate, load_raw
from segments.workspace import Workspace

# --- policy and prepare -------------------------------------------------------------------
# isort: split
from segments.policy import POLICY_NAMES, Policy
from segments.prepare import PolicyReport, prepare, read_prepared
from segments.pseudonym import PseudonymKey, load_key
from segments.retention import PurgeResult, purge
from segments.subjects import subject_export

# --- features and segmentation ------------------------------------------------------------
# isort: split
from segments.features import (
    CATEGORICAL_FEATURES,
    DEFAULT_FEATURE_BOUNDS,
    FEATURE_GROUPS,
    LINE_SHARE_FEATURES,
    NUMERIC_FEATURES,
    RFM_FEATURES,
    BoundedScaler,
    FeatureClipper,
    category_rule_labels,
    customer_features,
    make_feature_transformer,
    rfm_features,
)
from segments.plots import plot_profile_heatmap, plot_segments_2d, plot_selection_scores
from segments.segmentation import (
    FeatureSpec,
    SegmentationResult,
    SegmentModel,
    TargetResult,
    fit_segments,
    segment,
    segment_profiles,
    target,
)

# --- differential privacy and the ledger -------------------------------------------------
# isort: split
from segments.privacy.kmeans import (
    PrivateKMeans,
    PrivateSegmentsResult,
    fit_private_segments,
    private_segment_profiles,
    within_cluster_inertia,
)

# isort: split
# --- k-anonymity ---------------------------------------------------------------------------
from segments.anonymity import (
    CUSTOMER_COLUMNS,
    EarlierRelease,
    Hierarchy,
    KAnonymousTable,
    PrivacyModel,
    SearchResult,
    anonymise,
    check_linkage,
    customer_hierarchies,
    customer_release_table,
    distinct_l_of,
    entropy_l_of,
    generalise,
    k_of,
    mondrian,
    optimal_generalisation,
    read_hierarchies,
    risk_metrics,
    utility_metrics,
    write_release,
)

# --- forecast -------------------------------------------------------------------------------
from segments.forecast import (
    FORECAST_MODELS,
    SeriesForecast,
    backtest_table,
    forecast_archive,
    forecast_panel,
    forecast_series,
    load_archive,
    mape,
    noise_variance,
    reconcile,
    validate_archive,
)
from segments.plots import plot_forecast_fan, plot_forecast_fans, plot_privacy_cost
from segments.privacy.archive import backfill as backfill_archive
from segments.privacy.archive import read_archive, release_month
from segments.privacy.ledger import Balance, Ledger, LedgerEntry, ReleaseRequest, Reservation
from segments.privacy.releases import ReleasePlan, ReleaseResult, plan_release
from segments.privacy.specs import SPECS as RELEASE_SPECS
from segments.privacy.specs import PrivacyParams, ReleaseSpec, SegmentSource

# --- audit ----------------------------------------------------------------------------------
# isort: split
from segments.audit.checks import CLAUSE_CHECKS
from segments.audit.render import AuditReport
from segments.audit.run import run_audit

__version__ = "0.1.0"

__all__ = [
    "POLICY_NAMES",
    "Policy",
    "PolicyReport",
    "PseudonymKey",
    "PurgeResult",
    "load_key",
    "prepare",
    "purge",
    "read_prepared",
    "subject_export",
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
    "plot_profile_heatmap",
    "plot_segments_2d",
    "plot_selection_scores",
    "FeatureSpec",
    "SegmentationResult",
    "SegmentModel",
    "TargetResult",
    "fit_segments",
    "segment",
    "segment_profiles",
    "target",
    "Balance",
    "Ledger",
    "LedgerEntry",
    "ReleaseRequest",
    "Reservation",
    "RELEASE_SPECS",
    "PrivacyParams",
    "ReleasePlan",
    "ReleaseResult",
    "ReleaseSpec",
    "SegmentSource",
    "backfill_archive",
    "plan_release",
    "read_archive",
    "release_month",
    "DEFAULT_DATASET",
    "RAW_TABLES",
    "SCHEMA_VERSION",
    "BudgetExceededError",
    "KAnonymityError",
    "PolicyError",
    "ReleaseRefusedError",
    "SchemaError",
    "TransactionMapping",
    "Transactions",
    "Workspace",
    "WorkspaceError",
    "__version__",
    "copy_default_dataset",
    "generate",
    "load_raw",
    "load_transactions",
    "validate",
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
    "plot_forecast_fan",
    "plot_forecast_fans",
    "plot_privacy_cost",
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
    "write_release",
    "PrivateKMeans",
    "PrivateSegmentsResult",
    "fit_private_segments",
    "private_segment_profiles",
    "within_cluster_inertia",
    "CLAUSE_CHECKS",
    "AuditReport",
    "run_audit",
]
