"""Differential privacy and the ledger: every release is guarded and charged here first."""

from __future__ import annotations

from segments._lazy import lazy_exports

_EXPORTS: dict[str, tuple[str, ...]] = {
    "segments.privacy.archive": (
        "ARCHIVE_SCHEMA",
        "BackfillReport",
        "backfill",
        "read_archive",
        "releasable_months",
        "release_month",
    ),
    "segments.privacy.composition": (
        "Composition",
        "PrivacyLoss",
        "compose",
        "epsilon_to_rho",
        "pure_to_rho",
        "rho_to_epsilon",
    ),
    "segments.privacy.guards": (
        "EU_EEA",
        "Guarantee",
        "Recipient",
        "check_release",
    ),
    "segments.privacy.kmeans": (
        "PrivacyStep",
        "PrivateKMeans",
        "PrivateSegmentsResult",
        "fit_private_segments",
        "private_segment_profiles",
        "within_cluster_inertia",
    ),
    "segments.privacy.ledger": (
        "EVALUATION_LABEL",
        "LEDGER_DIR_ENV",
        "THROWAWAY_LABEL",
        "Balance",
        "Ledger",
        "LedgerEntry",
        "ReleaseRequest",
        "Reservation",
        "Verification",
        "default_ledger_path",
    ),
    "segments.privacy.publishing": ("ReleaseContext",),
    "segments.privacy.releases": (
        "QueryPlan",
        "ReleasePlan",
        "ReleaseResult",
        "build_shared_frames",
        "plan_release",
    ),
    "segments.privacy.specs": (
        "QUERIES",
        "SPECS",
        "PrivacyParams",
        "QueryDef",
        "ReleaseSpec",
        "SegmentSource",
        "get_spec",
    ),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
