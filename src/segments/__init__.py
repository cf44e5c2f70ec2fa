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
from segments.schema import RAW_TABLES, SCHEMA_VERSION, validate
from segments.workspace import Workspace

# --- generate -----------------------------------------------------------------------------
# --- policy and prepare -------------------------------------------------------------------
# --- features and segmentation ------------------------------------------------------------
# --- differential privacy and the ledger -------------------------------------------------
# --- k-anonymity ---------------------------------------------------------------------------
# --- forecast -------------------------------------------------------------------------------
# --- audit ----------------------------------------------------------------------------------

__version__ = "0.1.0"

__all__ = [
    "RAW_TABLES",
    "SCHEMA_VERSION",
    "BudgetExceededError",
    "KAnonymityError",
    "PolicyError",
    "ReleaseRefusedError",
    "SchemaError",
    "Workspace",
    "WorkspaceError",
    "__version__",
    "validate",
]
