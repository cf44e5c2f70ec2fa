"""Errors raised by segments.

Every error subclasses a built-in so callers may catch either. Messages name the table or
parameter, the column, the rule (with its policy clause id when a policy rule is broken), the
offending value and the fix.
"""

from __future__ import annotations

__all__ = [
    "BudgetExceededError",
    "KAnonymityError",
    "PolicyError",
    "ReleaseRefusedError",
    "SchemaError",
    "WorkspaceError",
]


class SchemaError(ValueError):
    """A table does not match its declared schema (missing column, wrong dtype, bad value)."""


class PolicyError(ValueError):
    """A policy file is invalid, or an operation would break a policy rule."""


class WorkspaceError(RuntimeError):
    """The workspace is missing a stage, a write would overwrite existing output, or a job
    there lacks room: the disk under its private area cannot hold what an engine spills, or
    the engine's memory limit what it must hold in memory."""


class BudgetExceededError(RuntimeError):
    """A release would spend more privacy budget than the ledger has left."""


class ReleaseRefusedError(PermissionError):
    """A release is refused for its recipient, destination, purpose or guarantee."""


class KAnonymityError(ValueError):
    """A k-anonymous release cannot be built or would not be k-anonymous."""
